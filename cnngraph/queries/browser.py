"""What Neo4j Browser shows of a model: the query menu, the style sheet and the guide of ``cnngraph browse``.

Every query is one statement with the model's name inlined as a Cypher string literal, so that it
draws its picture when pasted into Browser as it is (Browser runs a paste of several statements,
``:param`` lines included, as a script frame that draws nothing). The style colours positions by
layer with a palette that cycles (light colours, dark captions), sizes them by ``D0``..``D4`` and
captions them with the layer's name and position; ``FEEDS`` arcs are captioned by ``via``.

The guide is one HTML page for Browser's ``:guide URL`` (a sidebar) or ``:play URL`` (a frame):
each query a runnable block (its play icon runs it), the style one click, the legend with colours.
``cnngraph browse`` writes it where the project's own server serves it (``/cnngraph/guides/``).
"""

from __future__ import annotations

import colorsys
import hashlib
import hmac
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnngraph.files import write_bytes

__all__ = [
    "BROWSER_GREY",
    "CLASS_COLOUR",
    "LAYER_COLOUR",
    "STATIC_LAYERS",
    "MenuItem",
    "ModelView",
    "cypher_string",
    "grass",
    "guide_html",
    "guide_token",
    "layer_colour",
    "legend_lines",
    "menu",
    "palette",
    "write_guide",
]

BROWSER_GREY = "#A5ABB6"
"""Browser's colour for a label without a style rule."""
CLASS_COLOUR = "#F79767"
LAYER_COLOUR = "#57C7E3"
MODEL_COLOUR = "#222222"
EXPLANATION_COLOUR = "#6B4C9A"
CAPTION_DARK = "#1B1B1B"
PALETTE_SIZE = 24
STATIC_LAYERS = 256
"""Layers the shipped ``style.grass`` colours (``L0``..``L255``); ``browse`` writes one per model."""
D_DIAMETERS = (58, 64, 70, 77, 85)
DESCRIPTOR_KEYS = ("mean", "median", "max", "sum")
_AVOID_HUES = (20.0, 192.0, 200.0)  # Class (orange), Layer (cyan) and Browser's own blue-grey
_SAFE_CAPTION = re.compile(r"[^A-Za-z0-9_.\-\[\]()/+#@!?=<>, ]")


# ------------------------------------------------------------------------------------------ colours
def _hex(hue: float, saturation: float, lightness: float) -> str:
    r, g, b = colorsys.hls_to_rgb((hue % 360.0) / 360.0, lightness, saturation)
    return f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}"


def palette(size: int = PALETTE_SIZE) -> tuple[str, ...]:
    """``size`` light, saturated, distinct colours; neighbours differ in hue by the golden angle.

    Hues near the Class, Layer and Browser-grey colours are skipped; lightness alternates between
    two light levels so that dark captions read on every one of them.
    """
    colours: list[str] = []
    hue, step = 8.0, 137.508
    while len(colours) < size:
        if min(abs((hue - h + 180.0) % 360.0 - 180.0) for h in _AVOID_HUES) > 14.0:
            lightness = 0.74 if len(colours) % 2 == 0 else 0.84
            colour = _hex(hue, 0.78, lightness)
            if colour not in colours:
                colours.append(colour)
        hue += step
    return tuple(colours)


def layer_colour(k: int) -> tuple[str, str]:
    """``(fill, border)`` of layer ``k``: the palette, cycling; the border a darker shade."""
    fill = palette()[k % PALETTE_SIZE]
    r, g, b = (int(fill[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    return fill, _hex(hue * 360.0, saturation, max(0.0, lightness - 0.28))


def contrast(foreground: str, background: str) -> float:
    """The WCAG contrast ratio of two ``#RRGGBB`` colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    hi, lo = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# -------------------------------------------------------------------------------------------- style
def caption_text(name: str) -> str:
    """``name`` as literal text in a style caption: the characters Browser's style parser splits on
    (``:`` ``;`` quotes) or fills in (``{`` ``}``) become ``_``."""
    return _SAFE_CAPTION.sub("_", name)[:60]


def grass(layers: int | Sequence[str]) -> str:
    """The Browser style sheet: ``layers`` is a count (captions ``L<k> i,j``) or one model's layer
    names (captions ``L<k> <name> i,j`` for its layers). Either way ``L0`` .. ``L255`` (or more) are
    coloured, so that another model shown under this style keeps its colours (and, by ``L<k>``,
    its layer numbers). Rules apply in order, so the size bands come last."""
    given: list[str | None] = [None] * layers if isinstance(layers, int) else list(layers)
    names = given + [None] * max(0, STATIC_LAYERS - len(given))
    lines = [
        "node {",
        "  diameter: 30px;",
        f"  color: {MODEL_COLOUR};",
        "  border-color: #000000;",
        "  border-width: 1px;",
        "  text-color-internal: #FFFFFF;",
        "  font-size: 9px;",
        "}",
        "relationship {",
        "  color: #7F8C8D;",
        "  shaft-width: 1px;",
        "  font-size: 9px;",
        "  padding: 3px;",
        "  text-color-external: #000000;",
        "  text-color-internal: #FFFFFF;",
        '  caption: "<type>";',
        "}",
        f"node.Model {{ color: {MODEL_COLOUR}; border-color: #000000; diameter: 80px; "
        'caption: "{name}"; }',
        f"node.Layer {{ color: {LAYER_COLOUR}; border-color: #23B3D7; diameter: 90px; "
        f'text-color-internal: {CAPTION_DARK}; font-size: 8px; caption: "{{index}} {{name}}"; }}',
        f"node.Class {{ color: {CLASS_COLOUR}; border-color: #F36924; diameter: 55px; "
        f'text-color-internal: {CAPTION_DARK}; caption: "{{name}}"; }}',
        f"node.Explanation {{ color: {EXPLANATION_COLOUR}; border-color: #45316A; diameter: 70px; "
        'text-color-internal: #FFFFFF; caption: "{image}"; }',
        f"node.Position {{ diameter: 64px; color: #FFFFFF; border-color: #555555; "
        f'text-color-internal: {CAPTION_DARK}; font-size: 7px; caption: "L{{layer}} {{i}},{{j}}"; }}',
    ]
    for k, name in enumerate(names):
        fill, border = layer_colour(k)
        caption = "" if name is None else f' caption: "L{{layer}} {caption_text(name)} {{i}},{{j}}";'
        text = f"text-color-internal: {CAPTION_DARK};"
        lines.append(f"node.L{k} {{ color: {fill}; border-color: {border}; {text}{caption} }}")
    lines += [f"node.D{band} {{ diameter: {d}px; }}" for band, d in enumerate(D_DIAMETERS)]
    lines += [
        'relationship.ARC { color: #7F8C8D; caption: "c{class} {w}"; }',
        'relationship.FEEDS { color: #3B4A5A; shaft-width: 2px; font-size: 10px; caption: "{via}"; }',
        'relationship.HIGHLIGHTS { color: #8E6CC0; caption: "{score}"; }',
        'relationship.HAS_LAYER { caption: ""; }',
        'relationship.HAS_CLASS { caption: ""; }',
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ queries
SERVER_SETTINGS = (
    "SHOW SETTINGS YIELD name, value WHERE name IN "
    "['server.http.advertised_address', 'server.http.enabled', 'server.directories.neo4j_home', "
    "'server.unmanaged_extension_classes'] RETURN name, value"
)


def server_settings(driver: Any) -> dict[str, str] | None:
    """The server settings ``browse`` needs, or None where they cannot be read (reading settings
    needs an admin; another server may refuse)."""
    from neo4j import exceptions as neo4j_exc

    try:
        records, _, _ = driver.execute_query(SERVER_SETTINGS)
    except (neo4j_exc.Neo4jError, neo4j_exc.DriverError, OSError):
        return None
    return {str(r["name"]): str(r["value"]) for r in records}


def cypher_string(value: str) -> str:
    """``value`` as a single-quoted Cypher string literal (backslashes and quotes escaped)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f"'{escaped}'"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(value)
    return cypher_string(str(value))


@dataclass(frozen=True)
class ModelView:
    """What the menu needs to know of one loaded model."""

    name: str
    layout: str = "per-class"
    descriptor: str = "mean"
    class_names: tuple[str, ...] = ()
    layers: tuple[tuple[int, str, int, int], ...] = ()  # (index, name, height, width)
    scored: bool = False
    specific_layer: int = 0
    explanation: dict[str, Any] | None = None
    explanations: int = 0

    @property
    def compact(self) -> bool:
        return self.layout == "compact"

    @property
    def focus(self) -> tuple[int, int, int]:
        """``(layer, i, j)``: the centre of the second layer (the first of a one-layer model)."""
        if not self.layers:
            return 0, 0, 0
        index, _, height, width = self.layers[1 if len(self.layers) > 1 else 0]
        return index, height // 2, width // 2

    def layer_name(self, k: int) -> str:
        return next((name for index, name, _, _ in self.layers if index == k), f"layer {k}")

    def class_label(self, h: int) -> str:
        """``3``, or ``3 ('cat')`` when the class has a name other than its number."""
        name = self.class_names[h] if h < len(self.class_names) else str(h)
        return str(h) if name == str(h) else f"{h} ({name!r})"


@dataclass(frozen=True)
class MenuItem:
    """One query of the menu: what it shows, the query (one statement), and a note."""

    key: str
    title: str
    query: str
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def menu(view: ModelView) -> list[MenuItem]:
    """The starter queries for ``view``'s model, each one statement that draws at least one node."""
    m = cypher_string(view.name)
    w = view.descriptor if view.descriptor in DESCRIPTOR_KEYS else "mean"
    two = [0, 1] if len(view.class_names) != 1 else [0]
    layer, i, j = view.focus
    at = f"{{model: {m}, layer: {layer}, i: {i}, j: {j}}}"
    where = f"{view.layer_name(layer)} ({i},{j})"
    if view.compact:
        strongest = (
            f"MATCH (p:Position {{model: {m}}})-[r:ARC]-()\n"
            f"WITH p, sum(r.{w}[0]) AS strength ORDER BY strength DESC LIMIT 6\n"
            "MATCH path = (p)-[r:ARC]-(:Position)\n"
            f"WITH p, path ORDER BY r.{w}[0] DESC\n"
            "WITH p, collect(path)[..4] AS paths\n"
            "UNWIND paths AS path\n"
            "RETURN path"
        )
        weights = ", ".join(f"r.{w}[{h}] AS class_{h}" for h in two)
        neighbourhood = (
            f"MATCH (p:Position {at})\nOPTIONAL MATCH (p)-[r:ARC]-(q:Position)\nRETURN p, r, q, {weights}"
        )
        expand = (
            f"MATCH (p:Position {at})\nOPTIONAL MATCH path = (p)-[r:ARC]-(:Position)\n"
            f"RETURN p, path, r.{w}[0] AS weight"
        )
    else:
        strongest = (
            f"MATCH (p:Position {{model: {m}}})-[r:ARC {{class: 0}}]-()\n"
            f"WITH p, sum(r.{w}) AS strength ORDER BY strength DESC LIMIT 6\n"
            "MATCH path = (p)-[r:ARC {class: 0}]-(:Position)\n"
            f"WITH p, path ORDER BY r.{w} DESC\n"
            "WITH p, collect(path)[..4] AS paths\n"
            "UNWIND paths AS path\n"
            "RETURN path"
        )
        neighbourhood = (
            f"MATCH (p:Position {at})\nOPTIONAL MATCH (p)-[r:ARC]-(q:Position)\n"
            f"WHERE r.class IN {two}\nRETURN p, r, q"
        )
        expand = (
            f"MATCH (p:Position {at})\n"
            "OPTIONAL MATCH path = (p)-[:ARC {class: 0}]-(:Position)\nRETURN p, path"
        )
    k = view.specific_layer
    items = [
        MenuItem(
            "strongest",
            f"Class {view.class_label(0)}: its 6 strongest positions (largest class-0 degree) and "
            "their 4 heaviest class-0 arcs each",
            strongest,
            "compact layout: every arc is in every class network; the order uses the class-0 weights"
            if view.compact
            else "",
        ),
        MenuItem(
            "neighbourhood",
            f"One node's neighbourhood in classes {' and '.join(view.class_label(h) for h in two)}: "
            f"{where}, each arc drawn once per class (captioned c<class> <weight>)",
            neighbourhood,
            "compact layout: one arc per pair; the table view gives each class's weight"
            if view.compact
            else "",
        ),
        MenuItem(
            "dag",
            "The layer DAG: every convolution and the FEEDS arcs between them, captioned by 'via' "
            "('cnngraph plot dag' draws it in execution order)",
            f"MATCH (l:Layer {{model: {m}}})\nOPTIONAL MATCH path = (l)-[:FEEDS]->(:Layer)\nRETURN l, path",
        ),
        MenuItem(
            "specific",
            f"Layer {k} ({view.layer_name(k)}): its 12 most class-specific positions (lowest delta)",
            f"MATCH (p:Position {{model: {m}, layer: {k}}})\nWITH p ORDER BY p.delta LIMIT 12\n"
            "RETURN p, p.delta AS delta",
            ""
            if view.scored
            else f"not scored yet: run 'cnngraph score --model {view.name}' first for delta",
        ),
    ]
    if view.explanation is not None:
        image, label = view.explanation.get("image"), view.explanation.get("label")
        what = f"image {image}, class {label}"
        if view.explanation.get("predicted") is not None:
            what += f", predicted {view.explanation.get('predicted')}"
        items.append(
            MenuItem(
                "explanation",
                f"An explanation ({what}): per layer, the {EXPLANATION_TOP} positions it highlights most",
                explanation_query(view.name, image, label),
                f"{view.explanations} explanations stored; change the image and class to see another"
                if view.explanations > 1
                else "",
            )
        )
    items.append(
        MenuItem(
            "expand",
            f"Expand a node within class 0 (double-clicking pulls in every class): {where}; put the "
            "layer, i and j of the node you clicked",
            expand,
        )
    )
    return items


EXPLANATION_TOP = 12


def explanation_query(model: str, image: Any, label: Any, top: int = EXPLANATION_TOP) -> str:
    """``explanation.cypher`` (written with 'cnngraph explain') as one statement, its values inlined
    as Cypher literals in one pass (a value that contains ``$image`` is not substituted again)."""
    from importlib import resources

    text = resources.files(__package__).joinpath("explanation.cypher").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    query = "\n".join(lines).strip()
    values = {
        "$model": cypher_string(model),
        "$image": _literal(image),
        "$label": _literal(label),
        "$top": str(top),
    }
    return re.sub(r"\$(model|image|label|top)\b", lambda m: values[m.group(0)], query)


# ------------------------------------------------------------------------------------------- legend
def legend_lines(view: ModelView) -> list[str]:
    """The L and D labels in words, one line per layer after a line for the size bands."""
    lines = [
        "D0..D4: node size, the fifth of its own layer that a position's delta ranks in "
        "(D0 the lowest fifth: class-specific; D4 the highest: shared by all classes); "
        "set by 'cnngraph score'",
    ]
    for index, name, height, width in view.layers:
        fill, _ = layer_colour(index)
        lines.append(f"L{index}: {fill} {name} ({height}x{width})")
    return lines


# -------------------------------------------------------------------------------------------- guide
def guide_token(model: str, secret: str | None) -> str:
    """The file name (without suffix) of ``model``'s guide: a digest keyed with ``secret`` (the
    server's password), so that the guide's address cannot be guessed from the model's name."""
    key = (secret or "").encode("utf-8")
    return hmac.new(key, b"cnngraph-guide\0" + model.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def guide_html(view: ModelView, items: Sequence[MenuItem], style_url: str | None) -> str:
    """The guide page: the style (one click), each query as a runnable block, the legend."""
    e = html.escape
    parts = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>cnngraph: {e(view.name)}</title></head><body>",
        f"<h3>cnngraph: model {e(view.name)}</h3>",
        f"<p>{e(view.layout)} layout, {len(view.layers)} layers, {len(view.class_names)} classes. "
        "Click the &#9654; icon beside a query to run it; click the query itself to put it into "
        "the editor.</p>",
    ]
    if style_url is not None:
        parts.append(
            f"<p><a exec-topic='style {e(style_url, quote=True)}'>Apply the style for this model</a> "
            "(colours by layer, sizes by delta, captions with layer names).</p>"
        )
    for n, item in enumerate(items, 1):
        parts.append(f"<h4>{n}. {e(item.title)}</h4>")
        parts.append(f"<pre class='runnable'>{e(item.query)}</pre>")
        if item.note:
            parts.append(f"<p><small>{e(item.note)}</small></p>")
    parts.append("<h4>Legend</h4>")
    parts.append(
        "<p>Sizes: D0 (smallest) to D4 (largest), the fifth of its own layer that a position's delta "
        "ranks in; D0 is the most class-specific fifth.</p><table>"
    )
    for index, name, height, width in view.layers:
        fill, border = layer_colour(index)
        parts.append(
            f"<tr><td style='background:{fill};border:1px solid {border};color:{CAPTION_DARK};"
            f"padding:0 6px'>L{index}</td><td>{e(name)}</td><td>{height}x{width}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write_guide(folder: Path, token: str, page: str, style: str) -> tuple[Path, Path]:
    """Write ``<token>.html`` and ``<token>.grass`` into ``folder`` (created owner-only), each
    through a temporary file renamed into place."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".html", page), (".grass", style)):
        path = folder / f"{token}{suffix}"
        written.append(write_bytes(path, text.encode("utf-8")))
    return written[0], written[1]


# ----------------------------------------------------------------------------------------- database
LAYERS = (
    "MATCH (l:Layer {model: $model}) "
    "RETURN l.index AS index, l.name AS name, l.height AS height, l.width AS width ORDER BY index"
)
MOST_SPECIFIC_LAYER = (
    "MATCH (p:Position {model: $model}) WHERE p.delta IS NOT NULL "
    "RETURN p.layer AS layer, avg(p.delta) AS mean ORDER BY mean, layer LIMIT 1"
)
EXPLANATIONS = (
    "MATCH (e:Explanation {model: $model}) "
    "WITH e ORDER BY toString(e.image), toString(e.label) "
    "RETURN count(e) AS count, head(collect(e {.image, .label, .predicted})) AS first"
)


def model_view(driver: Any, model: str, database: str | None = None) -> ModelView:
    """Read what the menu needs of ``model`` (which must be completely loaded) under the read guard
    (``cnngraph.loader.guard``): refused when the model changes while it is read."""
    from cnngraph.loader.guard import neo4j_errors, quiet_session, unchanged_model

    with unchanged_model(driver, model, database) as snap:
        props = snap.props
        with neo4j_errors(driver), quiet_session(driver, database) as session:
            layers = tuple(
                (int(r["index"]), str(r["name"]), int(r["height"]), int(r["width"]))
                for r in session.run(LAYERS, model=model)
            )
            scored = props.get("scored_descriptor") is not None
            specific = layers[-1][0] if layers else 0
            if scored:
                record = session.run(MOST_SPECIFIC_LAYER, model=model).single()
                if record is not None:
                    specific = int(record["layer"])
            found = session.run(EXPLANATIONS, model=model).single()
    count = int(found["count"]) if found is not None else 0
    first = found["first"] if found is not None else None
    return ModelView(
        name=model,
        layout=str(props.get("layout") or "per-class"),
        descriptor=str(props.get("descriptor") or "mean"),
        class_names=tuple(str(c) for c in props.get("class_names") or ()),
        layers=layers,
        scored=scored,
        specific_layer=specific,
        explanation=dict(first) if count and first is not None else None,
        explanations=count,
    )
