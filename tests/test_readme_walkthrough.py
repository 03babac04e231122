"""README.md works top to bottom: its blocks run in order in an empty folder against a real Neo4j.

``scripts/readme_walkthrough.py`` extracts every ``bash`` and ``python`` block of README.md itself
(a block whose first line is ``# Not run by the README test`` excepted) into one shell script;
this test runs it in an empty temporary folder against the session's Neo4j, stops at the first
failing command, and then checks what the page promises around it: every query of its Browser
section and of docs/GRAPH.md runs on the models the walkthrough loaded (per-class and compact
layout) and returns rows, and the figures its prose quotes are the ones a run gives.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GRAPH_MD = ROOT / "docs" / "GRAPH.md"
PER_CLASS, COMPACT = "digits-cnn", "digits-r20"  # the walkthrough's models in each layout
MAX_SKIPPED = 3


def _walkthrough() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readme_walkthrough", ROOT / "scripts" / "readme_walkthrough.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("readme_walkthrough", module)
    spec.loader.exec_module(module)
    return module


walk = _walkthrough()


def section(text: str, title: str) -> str:
    """The text of the section headed ``title`` (any level) up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert match, f"README.md has no section '{title}'"
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{len(match[1])}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def commands(block_text: str) -> list[list[str]]:
    """The ``cnngraph`` command lines of a shell block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block_text)
    found = []
    for line in joined.splitlines():
        for part in re.split(r"&&|;|\|\||\|", line.split(" #")[0]):
            words = shlex.split(part, comments=True)
            while words and words[0] in ("then", "do", "else"):
                words = words[1:]
            if ">" in words:
                words = words[: words.index(">")]
            if words and words[0] == "cnngraph":
                found.append(words)
    return found


def runnable() -> list[Any]:
    return [b for b in walk.blocks(README.read_text()) if b.runnable]


# ------------------------------------------------------------------ the extractor, without a database
def test_blocks_are_found_with_their_lines_and_skips() -> None:
    text = (
        "# t\n\n```bash\necho one\n```\n\n1. item\n   ```python\n   print(2)\n   ```\n"
        "````text\n```bash\nnot a block\n```\n````\n"
        "```bash\n# Not run by the README test: needs a GPU\nnvidia-smi\n```\n"
    )
    found = walk.blocks(text)
    assert [(b.language, b.line, b.runnable) for b in found] == [
        ("bash", 4, True),
        ("python", 9, True),
        ("text", 12, False),
        ("bash", 17, False),
    ]
    assert found[1].text == "print(2)\n" and found[2].text == "```bash\nnot a block\n```\n"
    with pytest.raises(ValueError, match="line 1 is never closed"):
        walk.blocks("```bash\necho\n")


def test_a_failing_command_stops_the_run_and_names_its_readme_line(tmp_path: Path) -> None:
    page = tmp_path / "PAGE.md"
    page.write_text(
        "```bash\necho first > first.txt\n```\n\n```python\nprint('python ran')\n```\n\n"
        "```bash\ntrue\nfalse\necho never > never.txt\n```\n"
    )
    folder = tmp_path / "run"
    folder.mkdir()
    code, output, line = walk.run(page, folder, dict(os.environ))
    assert code == 1 and line == "PAGE.md line 11", output
    assert "python ran" in output and (folder / "first.txt").is_file() and not (folder / "never.txt").exists()


def test_the_readme_walkthrough_covers_every_step_with_distinct_names() -> None:
    blocks = runnable()
    skipped = [b for b in walk.blocks(README.read_text()) if b.skipped]
    assert 0 < len(skipped) <= MAX_SKIPPED, [b.line for b in skipped]
    for block in skipped:  # each says why it is not run
        assert re.match(rf"{re.escape(walk.SKIP)}[^\n]*: \S", block.text.lstrip()), block.text[:120]
    lines = [c for b in blocks if b.language != "python" for c in commands(b.text)]
    used = {(c[1], "--dry-run" in c) for c in lines if len(c) > 1}
    for step in ("train", "map", "inspect", "export", "load", "score", "degrees", "sweep", "browse", "plot",
                 "explain", "faithfulness", "models", "drop", "method"):  # fmt: skip
        assert any(name == step for name, _ in used), f"the walkthrough never runs 'cnngraph {step}'"
    assert ("prune", True) in used and ("prune", False) in used
    assert any(c[1] == "explain" and "--load" in c for c in lines)
    assert any(c[1] == "drop" and "--yes" in c for c in lines)
    assert any(c[1] == "load" and "compact" in c for c in lines)
    assert any(c[1] == "train" and "resnet20" in c for c in lines)
    assert any(c[1] == "map" and any(w.endswith(".py:build") for w in c) for c in lines)
    python = "\n".join(b.text for b in blocks if b.language == "python")
    assert "cnngraph.load_pruned(" in python and "cnngraph.map_model(" in python
    # every file or folder a command writes is written once: no step overwrites another's output
    outputs = [c[c.index(flag) + 1] for c in lines for flag in ("--out", "-o") if flag in c]
    outputs += re.findall(r"> ([\w.-]+)", "\n".join(b.text for b in blocks if b.language != "python"))
    assert outputs and len(outputs) == len(set(outputs)), sorted(outputs)
    loaded = [next(w for w in c[2:] if w.endswith(".npz")) for c in lines if c[1] == "load"]
    assert len(loaded) == len(set(loaded))


def test_every_command_of_the_readme_parses(cli_app: typer.Typer) -> None:
    """Every ``cnngraph`` command of every shell block, run or not: its command exists and Typer accepts
    its options and values (the required ones included)."""
    group = typer.main.get_command(cli_app)
    seen = 0
    for block in walk.blocks(README.read_text()):
        if block.language not in walk.SHELLS:
            continue
        for words in commands(block.text):
            args = words[1:]
            if not args or args[0].startswith("-"):
                continue  # cnngraph --version
            command, rest = group.commands.get(args[0]), args[1:]  # type: ignore[attr-defined]
            assert command is not None, f"README.md line {block.line}: no command 'cnngraph {args[0]}'"
            if hasattr(command, "commands"):  # cnngraph server start
                command, rest = command.commands[rest[0]], rest[1:]
            try:
                command.make_context(args[0], list(rest))
            except Exception as e:  # the parser's own error says which option
                raise AssertionError(f"README.md line {block.line}: {' '.join(words)}: {e}") from None
            seen += 1
    assert seen >= 30, seen


def test_a_factory_is_called_with_no_arguments_as_the_readme_says(tmp_path: Path) -> None:
    from cnngraph.models import ModelSpec, build_model

    assert "calls with no arguments" in " ".join(README.read_text().split())
    (tmp_path / "net_factory.py").write_text(
        "import torch.nn as nn\n\ndef build(*args, **kwargs):\n"
        "    assert not args and not kwargs, (args, kwargs)\n"
        "    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))\n"
    )
    model = build_model(ModelSpec(f"{tmp_path / 'net_factory.py'}:build", 3, 1, 8))
    assert sum(1 for m in model.modules() if type(m).__name__ == "Conv2d") == 1


# ------------------------------------------------------------------ the walkthrough, against Neo4j
@pytest.fixture(scope="module")
def walked(
    neo4j_settings: Any, neo4j_driver: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The walkthrough run once in an empty folder; its models are dropped afterwards."""
    from cnngraph.loader.catalog import drop_model, list_models

    folder = tmp_path_factory.mktemp("readme-walkthrough")
    before = {m["id"] for m in list_models(neo4j_driver)}
    clash = before & {PER_CLASS, COMPACT, "my-net", "digits-api"}
    assert not clash, f"models {clash} exist before the walkthrough loads them"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "NEO4J_URI": neo4j_settings.uri,
        "NEO4J_USER": neo4j_settings.user,
        "NEO4J_PASSWORD": neo4j_settings.password or "",
        "CNNGRAPH_STATE_DIR": str(tmp_path_factory.mktemp("no-local-server")),
        "CNNGRAPH_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    env.pop("NEO4J_DATABASE", None)
    try:
        code, output, line = walk.run(README, folder, env, timeout=1500)
        (folder.parent / "walkthrough.log").write_text(output)
        assert code == 0, f"README.md fails at {line} (exit {code}):\n{output[-6000:]}"
        yield folder
    finally:
        for model in {m["id"] for m in list_models(neo4j_driver)} - before:
            drop_model(neo4j_driver, model)


@pytest.mark.neo4j
@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(walked: Path, neo4j_driver: Any) -> None:
    from cnngraph.loader.catalog import list_models

    for name in ("digits-cnn.pt", "digits-cnn.npz", "digits-cnn.gexf", "digits-cnn-scores.csv",
                 "digits-cnn-degrees.csv", "digits-cnn-sweep/sweep.json", "digits-cnn-pruned/report.json",
                 "digits-cnn-figures/dag.png", "digits-cnn-faithfulness.json", "digits-r20.npz",
                 "my-net-pruned/pruned.pt", "digits-api.npz"):  # fmt: skip
        assert (walked / name).exists(), name
    assert len(list((walked / "digits-cnn-explanations").glob("*.png"))) == 4
    report = json.loads((walked / "digits-cnn-pruned" / "report.json").read_text())
    rates = [r for r in report["comparison"] if r["unit"] == "pct"]
    assert rates and all(r["change_pp"] == pytest.approx(100 * (r["pruned"] - r["original"])) for r in rates)
    models = {m["id"]: m for m in list_models(neo4j_driver)}
    assert models[PER_CLASS]["layout"] == "per-class" and models[COMPACT]["layout"] == "compact"
    assert "digits-api" not in models  # dropped by step 10
    explained = neo4j_driver.execute_query(
        "MATCH (e:Explanation {model: $m}) RETURN count(e) AS n", m=PER_CLASS
    ).records[0]["n"]
    assert explained == 4


def cypher_blocks(text: str) -> list[tuple[str, str]]:
    """``(what the text says about it, query)`` for every ``cypher`` block of ``text``."""
    lines = text.splitlines()
    found = []
    for block in walk.blocks(text):
        if block.language != "cypher":
            continue
        lead = [ln for ln in lines[: block.line - 2] if ln.strip()][-3:]
        found.append((" ".join(ln.strip() for ln in lead), block.text))
    return found


def run_query(driver: Any, query: str, params: dict[str, Any] | None = None) -> list[Any]:
    with driver.session() as session:  # auto-commit, as Browser runs a pasted query
        return list(session.run(query, params or {}))


def promised_positions(lead: str) -> int | None:
    match = re.search(r"\bThe (\d+) positions\b", lead)
    return int(match[1]) if match else None


def distinct_positions(records: list[Any]) -> int:
    """Distinct positions a query returns: its ``p`` column, else the first node of its paths."""
    ids = set()
    for record in records:
        columns = record.keys()  # (a Record is a tuple: 'in record' looks at its values)
        if "p" in columns:
            ids.add(record["p"].element_id)
            continue
        ids.update(v.start_node.element_id for v in record.values() if hasattr(v, "start_node"))
    return len(ids)


@pytest.mark.neo4j
@pytest.mark.slow
@pytest.mark.parametrize("model", [PER_CLASS, COMPACT])
@pytest.mark.parametrize("page", ["README.md", "docs/GRAPH.md"])
def test_every_query_to_paste_runs_and_returns_rows(
    walked: Path, neo4j_driver: Any, model: str, page: str
) -> None:
    text = (ROOT / page).read_text()
    queries = cypher_blocks(section(text, "Explore in Neo4j Browser"))
    assert queries, f"{page} has no query to paste"
    for lead, query in queries:
        mine = query.replace("'digits-cnn'", f"'{model}'")
        records = run_query(neo4j_driver, mine)
        assert records, f"{page}: no rows on {model}: {lead}\n{mine}"
        promised = promised_positions(lead)
        if promised is not None:
            assert distinct_positions(records) == promised, f"{page}: {lead}"


@pytest.mark.neo4j
@pytest.mark.slow
@pytest.mark.parametrize("model", [PER_CLASS, COMPACT])
def test_the_query_files_run_with_the_params_graph_md_gives(
    walked: Path, neo4j_driver: Any, model: str
) -> None:
    """docs/GRAPH.md's ``:param`` lines, then each query file of its table, as Browser would run them."""
    from cnngraph.queries import scoring

    text = GRAPH_MD.read_text()
    queries = section(text, "Queries")
    params: dict[str, Any] = {}
    for name, value in re.findall(r"^:param (\w+) => (.+)$", queries, re.M):
        params[name] = json.loads(value.replace("'", '"'))
    assert {"model", "descriptor", "k", "layer", "i", "j", "class"} <= set(params)
    params.update(model=model, layer=1, i=2, j=2)  # a position both walkthrough models have
    files = re.findall(r"^\| `(\w+\.cypher)` \|", queries, re.M)
    assert len(files) >= 9, files
    compact = model == COMPACT
    for file in files:
        variant = file.endswith("_compact.cypher")
        if variant != compact and (variant or file.replace(".cypher", "_compact.cypher") in files):
            continue  # the table's other layout's file
        query = (Path(scoring.__file__).parent / file).read_text()
        records = run_query(neo4j_driver, query, params)
        if file in ("scores.cypher", "scores_compact.cypher", "size_labels.cypher"):
            continue  # they write; that they ran without error is the check
        assert records, f"{file} returns no rows on {model}"
        if file == "top_nodes.cypher":
            assert len(records) == params["k"], "top_nodes promises k rows"


@pytest.mark.neo4j
@pytest.mark.slow
def test_figures_in_the_prose_come_from_a_run(walked: Path, cli_app: typer.Typer) -> None:
    from cnngraph.models import ModelSpec, build_model
    from cnngraph.pruner.units import find_units

    prose = " ".join(README.read_text().split())
    result = CliRunner().invoke(cli_app, ["inspect", "torchvision:resnet18", "--input-size", "64", "--json"])
    assert result.exit_code == 0, result.output
    topology = json.loads(result.stdout)
    quoted = "a ResNet-18 at 64x64 has 20 layers joined by 35 pairs (2,468 nodes, 36,242 arcs per class)"
    assert quoted in prose, "update this test with the README"
    assert (topology["layers_count"], topology["layer_pairs"]) == (20, 35)
    assert (topology["nodes"], topology["arcs_per_class"]) == (2468, 36242)
    shown = section(README.read_text(), "Branching networks")
    (edges,) = [b.text for b in walk.blocks(shown) if b.language == "text" and '"src"' in b.text]
    for line, edge in zip(edges.splitlines(), topology["edges"], strict=False):
        assert json.loads(line[: line.index("}") + 1]) == edge
    assert len(edges.splitlines()) == 3

    units = find_units(build_model(ModelSpec("resnet20", 10, 1, 16, 0.5)))
    kinds = [u.kind for u in units]
    assert "that is 9 residual branches and 3 convolutions that stay" in prose
    assert kinds.count("residual-branch") == 9 and len(kinds) - kinds.count("residual-branch") == 3

    assert "VGG16 at 32x32 with 10 classes is 0.23M" in prose
    result = CliRunner().invoke(cli_app, ["inspect", "vgg16", "--input-size", "32", "--json"])
    assert result.exit_code == 0, result.output
    assert round(json.loads(result.stdout)["arcs_per_class"] * 10 / 1e6, 2) == 0.23
