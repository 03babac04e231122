"""Neo4j Browser, driven in real headless Chromium against the test server (auth on).

Connects with the printed URL, applies the shipped style by pasting it after ``:style``, pastes
the starter block that ``cnngraph browse`` prints, and runs its query alone: no error frame, a
drawn graph with exactly the arcs the query returns (Browser's "Connect result nodes" is off, set
by the launcher's ``browser.post_connect_cmd``), position captions ``L{layer} ({i},{j})``, arc
captions with rounded weights and nodes of several sizes. Screenshots go to the test's tmp dir.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and Selenium;
skipped, with the reason, where they are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_loader import synthetic_network

from cnngraph.cli.browse_cmd import browser_url, starter_query
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.queries import style_path
from cnngraph.queries.scoring import compute_scores
from cnngraph.settings import Neo4jSettings

README = Path(__file__).resolve().parents[1] / "README.md"
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
# The newest frame's command, text, drawn nodes/arcs, captions and node radii.
NEWEST = """
const frame = document.querySelector('[data-testid="frame"]');
if (!frame) { return null; }
const svg = frame.querySelector('svg.neod3viz, svg');
const texts = (sel) => Array.from(frame.querySelectorAll(sel)).map((t) => t.textContent);
return {
  command: (frame.querySelector('[data-testid="frameCommand"]') || {}).textContent || '',
  text: frame.innerText,
  nodes: frame.querySelectorAll('g.node').length,
  arcs: frame.querySelectorAll('g.relationship').length,
  node_captions: Array.from(frame.querySelectorAll('g.node')).map(
    (g) => Array.from(g.querySelectorAll('text')).map((t) => t.textContent.trim()).join(' ')),
  arc_captions: texts('g.relationship text'),
  radii: Array.from(frame.querySelectorAll('g.node')).map(
    (g) => Math.min(...Array.from(g.querySelectorAll('circle')).map((c) => Number(c.getAttribute('r'))))),
  statuses: Array.from(frame.querySelectorAll('[data-testid="multi-statement-list-icon"]')).map(
    (s) => s.getAttribute('title')),
  svg: !!svg,
};
"""

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


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    webdriver = _selenium()
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}")
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _http_port(driver: Any) -> int:
    records, _, _ = driver.execute_query(
        "SHOW SETTINGS YIELD name, value WHERE name = 'server.http.listen_address' RETURN value"
    )
    return int(str(records[0]["value"]).rsplit(":", 1)[1])


def _wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"Browser: timed out waiting for {what}")


def _act(browser: Any, testid: str, action: Callable[[Any], Any]) -> None:
    """Do ``action`` on the element ``[data-testid=testid]`` once it takes input (it may still be
    rendering or animating: Browser's forms appear in stages)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        try:
            element = browser.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
            if not (element.is_displayed() and element.is_enabled()):
                return False
            action(element)
        except WebDriverException:
            return False
        return True

    _wait(attempt, f"'{testid}' to take input")


def _run(browser: Any, text: str, shot: Path, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Paste ``text`` into the editor, run it, wait for its frame; a screenshot either way."""
    from selenium.webdriver.common.by import By

    before = browser.execute_script(NEWEST)
    browser.execute_script(PASTE, text)
    _act(browser, "editor-Run", lambda e: e.click())

    def finished() -> dict[str, Any] | None:
        frame = browser.execute_script(NEWEST)
        return frame if frame and frame != before and done(frame) else None

    try:
        frame = _wait(finished, f"the frame of {text[:40]!r}")
    finally:
        frames = browser.find_elements(By.CSS_SELECTOR, '[data-testid="frame"]')
        if frames:
            frames[0].screenshot(str(shot))
        else:
            browser.save_screenshot(str(shot))
    assert not re.search(r"\bError\b|\berror\b", frame["text"]), frame["text"][:500]
    return frame


def test_browser_draws_the_styled_starter_view(
    chrome: Any, neo4j_settings: Neo4jSettings, neo4j_driver: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    model = f"browser-{uuid.uuid4().hex[:8]}"
    net = synthetic_network([(6, 6), (6, 6), (3, 3)], classes=3, seed=4)
    load_network(neo4j_driver, net, model)
    compute_scores(neo4j_driver, model)
    try:
        auth = neo4j_settings.password is not None
        url = browser_url(neo4j_settings.uri, _http_port(neo4j_driver), auth=auth)
        chrome.get(url)
        if neo4j_settings.password is not None:
            _act(chrome, "username", lambda e: (e.clear(), e.send_keys(neo4j_settings.user)))
            _act(chrome, "password", lambda e: (e.clear(), e.send_keys(neo4j_settings.password)))
            _act(chrome, "connect", lambda e: e.click())
        # The launcher's browser.post_connect_cmd turns "Connect result nodes" off on connecting.
        _wait(
            lambda: '"autoComplete": false' in chrome.find_element(By.TAG_NAME, "body").text,
            "the post-connect ':config autoComplete: false'",
        )
        chrome.save_screenshot(str(tmp_path / "1-connected.png"))

        grass = Path(style_path()).read_text()
        assert "/*" not in grass and "//" not in grass
        style = _run(chrome, f":style {grass}", tmp_path / "2-style.png", lambda f: ":style" in f["command"])
        assert ":style" in style["command"]

        # The style Browser now uses (it keeps it in localStorage): every rule survived parsing,
        # the base node rule included.
        def stored() -> dict[str, Any] | None:
            text = chrome.execute_script("return localStorage.getItem('neo4j.grass')")
            grass = json.loads(text) if text else None
            return grass if isinstance(grass, dict) and "relationship.ARC" in grass else None

        used = _wait(stored, "Browser to store the style")
        assert used["node"]["diameter"] == "30px" and used["relationship"]["caption"] == "<type>"
        assert used["node.Position"]["caption"] == "L{layer} ({i},{j})"
        assert used["relationship.ARC"]["caption"] == "{w}"
        assert [used[f"node.D{k}"]["diameter"] for k in range(5)] == ["42px", "48px", "55px", "63px", "72px"]

        block = starter_query(model)
        frame = _run(chrome, block, tmp_path / "3-starter-block.png", lambda f: len(f["statuses"]) == 2)
        # Pasted as printed, both statements run (the ':param' line ends with ';').
        _wait(
            lambda: chrome.execute_script(NEWEST)["statuses"] == ["Status: success"] * 2,
            "both statements of the starter block to succeed",
        )

        query = block.split(";", 1)[1].strip()
        expected, _, _ = neo4j_driver.execute_query(
            f"CALL () {{ {query.rstrip(';')} }} WITH collect(path) AS paths "
            "UNWIND paths AS path UNWIND relationships(path) AS r WITH paths, count(DISTINCT r) AS arcs "
            "UNWIND paths AS path UNWIND nodes(path) AS n RETURN arcs, count(DISTINCT n) AS nodes",
            model=model,
        )
        arcs, nodes = expected[0]["arcs"], expected[0]["nodes"]
        assert arcs > 0
        frame = _run(chrome, query, tmp_path / "4-graph.png", lambda f: f["arcs"] > 0 and f["nodes"] > 0)
        assert frame["arcs"] == arcs  # only the returned class-0 arcs: no auto-connected classes
        assert frame["nodes"] == nodes
        captions = [c.strip() for c in frame["node_captions"] if c.strip()]
        odd = [c for c in captions if not re.fullmatch(r"L\d+ \(\d+,\d+\)", c)]
        assert captions and not odd, odd
        weights = [c.strip() for c in frame["arc_captions"] if c.strip()]
        odd = [c for c in weights if not re.fullmatch(r"-?\d+(\.\d{1,3})?", c)]
        assert weights and not odd, odd
        assert len(set(frame["radii"])) > 1, frame["radii"]  # D0..D4 sizes

        # The README's queries paste as they are: query 2 with its ':param' lines, query 3 alone.
        blocks = re.findall(r"```cypher\n(.*?)```", README.read_text(), flags=re.S)
        neighbourhood = "\n".join(line.strip() for line in blocks[1].splitlines())
        count = neighbourhood.count(";")
        _run(chrome, neighbourhood, tmp_path / "5-readme-2.png", lambda f: len(f["statuses"]) == count)
        _wait(
            lambda: chrome.execute_script(NEWEST)["statuses"] == ["Status: success"] * count,
            "every statement of README query 2 to succeed",
        )
        top = "\n".join(line.strip() for line in blocks[2].splitlines())
        frame = _run(chrome, top, tmp_path / "6-readme-3.png", lambda f: f["arcs"] > 0)
        assert frame["nodes"] > 0
    finally:
        drop_model(neo4j_driver, model)


def test_url_connects_by_itself_when_auth_is_off(
    chrome: Any, cli_app: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``cnngraph browse`` against a server with auth off prints a URL that needs no typing."""
    from typer.testing import CliRunner

    from cnngraph.server import local

    config = local.ServerConfig(
        state_dir=tmp_path_factory.mktemp("neo4j-no-auth"),
        bolt_port=local.free_port(),
        http_port=local.free_port(),
        heap="512m",
        pagecache="64m",
        auth=False,
    )
    local.start(config, timeout=240)
    try:
        env = {
            "NEO4J_URI": config.bolt_uri,
            "NEO4J_PASSWORD": "",
            "CNNGRAPH_STATE_DIR": str(config.state_dir),
        }
        result = CliRunner().invoke(cli_app, ["browse"], env=env)
        assert result.exit_code == 0, result.output
        url = result.output.split("Neo4j Browser: ")[1].split()[0]
        assert url.endswith("&preselectAuthMethod=NO_AUTH") and f":{config.http_port}/" in url
        chrome.get(url)
        shots = tmp_path_factory.mktemp("no-auth-shots")
        try:
            _wait(
                lambda: '"autoComplete": false' in chrome.execute_script("return document.body.innerText"),
                "Browser to connect by itself and run the post-connect command",
            )
        finally:
            chrome.save_screenshot(str(shots / "connected.png"))
        frame = _run(chrome, "RETURN 40 + 2 AS answer;", shots / "query.png", lambda f: "42" in f["text"])
        assert "answer" in frame["text"]
    finally:
        local.stop(config)
