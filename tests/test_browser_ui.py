"""Neo4j Browser 5.24 in real headless Chromium, against the test server, used as a person would.

One Browser session for the module: open the URL ``cnngraph browse`` prints (the user is filled
in; the launcher's opener turns "Connect result nodes" off, so no settings frame follows the
login), type the password, connect; apply the printed ``:style URL``; then paste EXACTLY each
query block ``browse`` prints, for a VGG and a ResNet on builtin:digits in both graph layouts, run
it and count the nodes Browser draws. Also: the 21 layers of resnet20 drawn in 21 distinct
non-grey colours, the guide's runnable queries run by clicking their play icons, and the queries
of the README's and docs/GRAPH.md's Browser sections pasted as printed. Screenshots of every frame
go to the module's temporary folder (its path is printed with ``-s``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and Selenium (the
dev extra); skipped, with the reason, only where they are missing.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_browse_cmd import (
    HOSTILE,
    MODELS,
    RESNET20_LAYERS,
    drawn_nodes,
    loaded,
    mapped,
    query_blocks,
    run_browse,
)

from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.loader.writer import load_network
from cnngraph.queries import browser
from cnngraph.queries.scoring import compute_scores
from cnngraph.settings import Neo4jSettings

__all__ = ["loaded"]  # the module-scoped fixture, shared with test_browse_cmd

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GRAPH_DOC = ROOT / "docs" / "GRAPH.md"
DOC_MODEL = "digits-cnn"  # the model name the README's and GRAPH.md's Browser queries use
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)  # fmt: skip

# Monaco (Browser's editor) takes text as a real paste: the same path as a user's Ctrl+V.
PASTE = """
const area = document.querySelector('[data-testid="activeEditor"] textarea');
area.focus();
const data = new DataTransfer();
data.setData('text/plain', arguments[0]);
area.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
"""
# The newest frame: its command, text, drawn nodes / relationships, node fills and captions.
NEWEST = """
const frame = document.querySelector('[data-testid="frame"]');
if (!frame) { return null; }
return {
  seen: frame.hasAttribute('data-cnngraph-seen'),
  command: (frame.querySelector('[data-testid="frameCommand"]') || {}).textContent || '',
  text: frame.innerText,
  nodes: frame.querySelectorAll('g.node').length,
  arcs: frame.querySelectorAll('g.relationship').length,
  fills: Array.from(frame.querySelectorAll('g.node circle.b-outline')).map((c) => c.getAttribute('fill')),
  captions: Array.from(frame.querySelectorAll('g.node')).map(
    (g) => Array.from(g.querySelectorAll('text')).map((t) => t.textContent.trim()).join(' ')),
  arc_captions: Array.from(frame.querySelectorAll('g.relationship text')).map((t) => t.textContent.trim()),
};
"""
# Marks every frame there is, so that the next one is told apart (Browser keeps at most 15).
MARK = (
    "document.querySelectorAll('[data-testid=\"frame\"]')"
    ".forEach((f) => f.setAttribute('data-cnngraph-seen', '1'))"
)

Done = Callable[[dict[str, Any]], bool]

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]


def _selenium() -> Any:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("Selenium is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver

    return webdriver


def _wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"Browser: timed out waiting for {what}")


def _act(browser_: Any, css: str, action: Callable[[Any], Any]) -> None:
    """Do ``action`` on the element ``css`` once it takes input (Browser's forms appear in stages)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            element = browser_.find_element(By.CSS_SELECTOR, css)
            if not (element.is_displayed() and element.is_enabled()):
                return False
            action(element)
        except WebDriverException:
            return False
        return True

    _wait(attempt, f"'{css}' to take input")


class Session:
    """One logged-in Browser: paste and run, wait for the new frame, screenshot it."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.count = 0

    def newest(self) -> dict[str, Any] | None:
        return self.driver.execute_script(NEWEST)  # type: ignore[no-any-return]

    def run(self, text: str, name: str, done: Done | None = None, errors: bool = False) -> dict[str, Any]:
        """Paste ``text`` into the editor exactly, run it, wait for its frame to draw (``done``)."""
        self.driver.execute_script(MARK)
        self.driver.execute_script(PASTE, text)
        _act(self.driver, '[data-testid="editor-Run"]', lambda e: e.click())
        return self.frame(name, done, errors)

    def frame(self, name: str, done: Done | None, errors: bool = False) -> dict[str, Any]:
        """The first frame newer than the last :data:`MARK`, once ``done`` (default: nodes drawn)."""
        from selenium.webdriver.common.by import By

        check = done or (lambda f: f["nodes"] > 0)

        def finished() -> dict[str, Any] | None:
            frame = self.newest()
            if not frame or frame["seen"]:
                return None
            if re.search(r"\bError\b|ERROR", frame["text"]):
                return frame
            return frame if check(frame) else None

        self.count += 1
        try:
            frame = _wait(finished, f"the frame of {name}")
            time.sleep(0.5)  # let the layout settle for the screenshot
            frame = self.newest() or frame
        finally:
            shot = self.shots / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.png"
            found = self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="frame"]')
            (found[0].screenshot if found else self.driver.save_screenshot)(str(shot))
        if not errors:
            assert not re.search(r"\bError\b|ERROR", frame["text"]), frame["text"][:500]
        return frame


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser-shots")
    print(f"\nBrowser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def session(
    cli_app: Any, neo4j_settings: Neo4jSettings, loaded: dict[str, str], shots: Path
) -> Iterator[tuple[Session, str]]:
    """Browser opened at the URL ``browse`` prints, logged in as a person would; the printed
    output of ``browse`` for the VGG comes along."""
    _selenium()
    result = run_browse(cli_app, _env(neo4j_settings), "--model", loaded["vgg"])
    assert result.exit_code == 0, result.output
    url = re.search(r"Neo4j Browser: (\S+)", result.output)
    assert url is not None
    driver = _chrome(shots)
    try:
        driver.get(url[1])
        if neo4j_settings.password is not None:
            # The user is filled in from the URL; a person types the password only.
            _wait(
                lambda: (
                    driver.execute_script(
                        "const u = document.querySelector('[data-testid=\"username\"]'); return u && u.value"
                    )
                    == neo4j_settings.user
                ),
                "the user name filled in from the URL",
            )
            _act(driver, '[data-testid="password"]', lambda e: e.send_keys(neo4j_settings.password))
            _act(driver, '[data-testid="connect"]', lambda e: e.click())
        _wait(lambda: "You are connected as user" in driver.execute_script("return document.body.innerText"),
              "the connection")  # fmt: skip
        driver.save_screenshot(str(shots / "00-connected.png"))
        yield Session(driver, shots), result.output
    finally:
        driver.quit()


def _chrome(folder: Path) -> Any:
    """A headless Chromium with a fresh profile in ``folder`` (skips the test without Chromium)."""
    webdriver = _selenium()
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=folder)}")
    options.binary_location = str(CHROMIUM)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _env(settings: Neo4jSettings) -> dict[str, str]:
    return {"NEO4J_URI": settings.uri, "NEO4J_USER": settings.user, "NEO4J_PASSWORD": settings.password or ""}


def test_login_shows_no_settings_frame_and_connect_result_nodes_is_off(session: tuple[Session, str]) -> None:
    browser_, _ = session
    text = browser_.driver.execute_script("return document.body.innerText")
    assert '"autoComplete"' not in text and "maxNeighbours" not in text  # no settings dump
    settings = browser_.driver.execute_script("return JSON.parse(localStorage.getItem('neo4j.settings'))")
    assert settings["autoComplete"] is False


def apply_style(browser_: Session, output: str) -> str:
    """Run the ``:style URL`` line that ``browse`` printed; the style Browser stores."""
    style = re.search(r"run '(:style http\S+)'", output)
    assert style is not None, output
    # Browser reads the server's allow-list of hosts for remote styles once it has connected; a
    # style asked for in the same second may still meet Browser's default list (a person retries).
    for _ in range(20):
        frame = browser_.run(style[1], "style", lambda f: ":style" in f["command"], errors=True)
        if "not allowed" not in frame["text"]:
            break
        time.sleep(1.0)
    assert not re.search(r"\bError\b|ERROR", frame["text"]), frame["text"]
    stored = browser_.driver.execute_script("return localStorage.getItem('neo4j.grass')")
    return str(stored)


def test_printed_style_url_applies_the_model_style(session: tuple[Session, str]) -> None:
    browser_, output = session
    stored = _wait(lambda: apply_style(browser_, output), "the style")
    assert '"node.L0"' in stored and "L{layer} features.0 {i},{j}" in stored  # the layer's name
    assert '"node.D4":{"diameter":"85px"}' in stored and '"caption":"{via}"' in stored


@pytest.mark.parametrize("key", list(MODELS))
def test_every_printed_query_draws_when_pasted_as_printed(
    session: tuple[Session, str],
    cli_app: Any,
    neo4j_settings: Neo4jSettings,
    neo4j_driver: Any,
    loaded: dict[str, str],
    key: str,
) -> None:
    browser_, _ = session
    output = run_browse(cli_app, _env(neo4j_settings), "--model", loaded[key]).output
    apply_style(browser_, output)  # as its user would: the style printed for this model
    blocks = query_blocks(output)
    assert len(blocks) == 5, output
    for n, block in enumerate(blocks, 1):
        frame = browser_.run(block, f"{key}-query-{n}")
        assert frame["nodes"] > 0, block
        expected = drawn_nodes(neo4j_driver, block)
        assert frame["nodes"] == len(expected), (block, frame["nodes"], len(expected))
        if n == 1 and MODELS[key][2] == "per-class":
            # Only the returned class-0 arcs: "Connect result nodes" is off.
            records, _, _ = neo4j_driver.execute_query(block)
            assert frame["arcs"] == len({r["path"].relationships[0].element_id for r in records})
        if n == 3:  # the layer DAG: FEEDS captioned by via
            assert set(frame["arc_captions"]) <= {"direct", "add", "cat", "pool", "add+pool", "pool+add"}
            assert frame["arc_captions"], frame


def test_resnet20_layers_have_21_distinct_colours(
    session: tuple[Session, str],
    cli_app: Any,
    neo4j_settings: Neo4jSettings,
    neo4j_driver: Any,
    loaded: dict[str, str],
) -> None:
    browser_, _ = session
    apply_style(browser_, run_browse(cli_app, _env(neo4j_settings), "--model", loaded["resnet"]).output)
    query = f"MATCH (p:Position {{model: {browser.cypher_string(loaded['resnet'])}, i: 0, j: 0}}) RETURN p"
    frame = browser_.run(query, "resnet20-one-position-per-layer", lambda f: f["nodes"] == RESNET20_LAYERS)
    fills = [f.upper() for f in frame["fills"]]
    assert len(fills) == RESNET20_LAYERS and len(set(fills)) == RESNET20_LAYERS, fills
    for fill in fills:
        r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 60, fill  # not a grey
    assert not {browser.BROWSER_GREY, browser.CLASS_COLOUR, browser.LAYER_COLOUR} & set(fills)
    names = {name for _, name, _, _ in browser.model_view(neo4j_driver, loaded["resnet"]).layers}
    # Each position captioned "L<k> <layer name> i,j"; Browser ends a name that does not fit its
    # circle with "…" (layer2.0.shortcut.0 on the smallest size band).
    captions = sorted(c.split(" ") for c in frame["captions"])
    assert sorted(int(c[0][1:]) for c in captions) == list(range(RESNET20_LAYERS)), captions
    for _, name, *_ in captions:
        assert name in names or any(n.startswith(name.rstrip("…")) for n in names if name.endswith("…")), name


def test_guide_queries_run_with_one_click(session: tuple[Session, str], loaded: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    browser_, output = session
    guide = re.search(r"run '(:guide http\S+)'", output)
    assert guide is not None
    browser_.driver.execute_script(PASTE, guide[1])
    _act(browser_.driver, '[data-testid="editor-Run"]', lambda e: e.click())
    runnable = _wait(lambda: browser_.driver.find_elements(By.CSS_SELECTOR, "pre.runnable"), "the guide")
    browser_.driver.save_screenshot(str(browser_.shots / "guide.png"))
    assert len(runnable) == len(query_blocks(output))
    for n in range(len(runnable)):
        browser_.driver.execute_script(MARK)
        icons = browser_.driver.find_elements(By.CSS_SELECTOR, "pre.runnable i.fa-play-circle-o")
        browser_.driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", icons[n])
        frame = browser_.frame(f"guide-query-{n + 1}", None)
        assert frame["nodes"] > 0
    link = browser_.driver.find_element(By.CSS_SELECTOR, "a[exec-topic^='style http']")
    browser_.driver.execute_script(MARK)
    browser_.driver.execute_script("arguments[0].click();", link)
    browser_.frame("guide-style", lambda f: ":style" in f["command"])


def _doc_blocks(path: Path, section: str) -> list[str]:
    text = path.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    body = text[start : end if end > 0 else len(text)]
    return [
        "\n".join(line.strip() for line in b.splitlines())
        for b in re.findall(r"```cypher\n(.*?)```", body, re.S)
    ]


@pytest.fixture(scope="module")
def doc_model(neo4j_driver: Any) -> Iterator[str]:
    """A small VGG loaded and scored as 'digits-cnn' (the docs' queries' name), unless one is there."""
    if get_model(neo4j_driver, DOC_MODEL) is not None:
        yield DOC_MODEL
        return
    load_network(neo4j_driver, mapped("small_cnn", 16), DOC_MODEL)
    compute_scores(neo4j_driver, DOC_MODEL)
    try:
        yield DOC_MODEL
    finally:
        drop_model(neo4j_driver, DOC_MODEL)


def test_readme_and_graph_doc_queries_draw_as_printed(session: tuple[Session, str], doc_model: str) -> None:
    browser_, _ = session
    blocks = _doc_blocks(README, "## Explore in Neo4j Browser") + _doc_blocks(
        GRAPH_DOC, "## Explore in Neo4j Browser"
    )
    assert len(blocks) >= 6
    for n, block in enumerate(blocks, 1):
        assert ":param" not in block and (f"'{doc_model}'" in block or block.startswith("MATCH (m:Model)"))
        frame = browser_.run(block, f"doc-query-{n}")
        assert frame["nodes"] > 0, block


def test_a_hostile_model_name_pastes_and_draws(
    session: tuple[Session, str], cli_app: Any, neo4j_settings: Neo4jSettings, neo4j_driver: Any
) -> None:
    """A name with a quote, a ';' (Browser splits a paste on it before parsing), Cypher, braces, a
    backslash and '$': each printed query is still one statement that draws the model."""
    name = f"{HOSTILE} ui"
    load_network(neo4j_driver, mapped("small_cnn", 16), name)
    try:
        browser_, _ = session
        output = run_browse(cli_app, _env(neo4j_settings), "--model", name).output
        for n, block in enumerate(query_blocks(output), 1):
            frame = browser_.run(block, f"hostile-query-{n}")
            assert frame["nodes"] == len(drawn_nodes(neo4j_driver, block)) > 0, block
            assert "multi-statement" not in frame["text"].lower()
    finally:
        drop_model(neo4j_driver, name)


def test_url_connects_by_itself_when_auth_is_off(
    cli_app: Any, tmp_path_factory: pytest.TempPathFactory, shots: Path
) -> None:
    """Against a server with auth off, the URL ``browse`` prints connects by itself: no typing, no
    settings frame, "Connect result nodes" off."""
    from cnngraph.server import local

    _selenium()
    config = local.ServerConfig(
        state_dir=tmp_path_factory.mktemp("neo4j-no-auth"),
        bolt_port=local.free_port(),
        http_port=local.free_port(),
        heap="512m",
        pagecache="64m",
        auth=False,
    )
    local.start(config, timeout=240)
    driver = None
    try:
        env = {
            "NEO4J_URI": config.bolt_uri,
            "NEO4J_PASSWORD": "",
            "CNNGRAPH_STATE_DIR": str(config.state_dir),
        }
        result = run_browse(cli_app, env)
        assert result.exit_code == 0, result.output
        url = result.output.split("Neo4j Browser: ")[1].split()[0]
        assert url == (
            f"http://127.0.0.1:{config.http_port}/cnngraph/browser?dbms=bolt://127.0.0.1:{config.bolt_port}"
            "&preselectAuthMethod=NO_AUTH"
        )
        driver = _chrome(shots)
        driver.get(url)
        try:
            _wait(
                lambda: "server auth is disabled" in driver.execute_script("return document.body.innerText"),
                "Browser to connect by itself",
            )
        finally:
            driver.save_screenshot(str(shots / "no-auth-connected.png"))
        assert '"autoComplete"' not in driver.execute_script("return document.body.innerText")
        assert (
            driver.execute_script("return JSON.parse(localStorage.getItem('neo4j.settings')).autoComplete")
            is False
        )
        frame = Session(driver, shots).run(
            "RETURN 40 + 2 AS answer", "no-auth-query", lambda f: "42" in f["text"]
        )
        assert "answer" in frame["text"]
    finally:
        if driver is not None:
            driver.quit()
        local.stop(config)
