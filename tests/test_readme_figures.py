"""The README's ``make demo`` paragraph quotes no figure that a real demo run does not give.

A shortened demo (``scripts/demo.sh`` itself: 2 training epochs, no fine-tuning, a lower gamma so
that a barely trained model never loses every layer) runs against the session's Neo4j and writes
``figures.json``; every number in the paragraph must be one of the figures checked here, against
that file, ``scripts/demo.sh``'s own defaults or scikit-learn's dataset.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def demo_paragraph() -> str:
    """The paragraph of README.md's "Two commands" section about ``make demo``, on one line."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands\n", 1)[1].split("\n## ", 1)[0]
    (paragraph,) = [p for p in section.split("\n\n") if p.startswith("`make demo` (`scripts/demo.sh`)")]
    return " ".join(paragraph.split())


def demo_default(name: str) -> str:
    """The default of ``${NAME:-default}`` in scripts/demo.sh."""
    match = re.search(rf"\$\{{{name}:-([^}}]*)\}}", (ROOT / "scripts" / "demo.sh").read_text())
    assert match, name
    return match[1]


@pytest.mark.neo4j
@pytest.mark.slow
def test_the_demo_paragraph_quotes_only_figures_of_a_real_run(
    neo4j_server: Any, neo4j_env: dict[str, str], model_id: str, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    env = {
        **os.environ,
        **neo4j_env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DEMO_OUT": str(out),
        "DEMO_MODEL_NAME": model_id,
        "DEMO_EPOCHS": "2",
        "DEMO_FT_EPOCHS": "0",
        "DEMO_GAMMA": "0.5",
        "CNNGRAPH_PROGRESS": "0",
        "OMP_NUM_THREADS": "2",
    }
    if neo4j_server is not None:  # as 'make demo' finds a local server: NEO4J_URI unset, a non-default port
        for name in ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE"):
            env.pop(name, None)
        env["CNNGRAPH_STATE_DIR"] = str(neo4j_server.state_dir)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if neo4j_server is not None:
        assert f"already running at {neo4j_server.bolt_uri}" in proc.stdout
    figures = json.loads((out / "figures.json").read_text())
    assert f"figures in {out / 'figures.json'}" in proc.stdout
    assert figures["finetune_epochs"] == 0 and figures["gamma"] == 0.5
    assert 0 < figures["accuracy"]["original"] <= 1 and figures["cnngraph_version"]
    assert figures["macs"]["pruned"] <= figures["macs"]["original"] and figures["units_removed"] >= 0
    from sklearn.datasets import load_digits

    checks = [  # (the text in the README, whether the run or the script confirms it)
        ("1,797", figures["images"] == 1797),
        ("8x8", load_digits().images.shape[1:] == (8, 8)),
        ("16x16", figures["input_shape"][1:] == [16, 16]),
        ("5 convolutions", figures["convolutions"] == 5 and figures["model"] == "small_cnn"),
        ("656 nodes", figures["nodes"] == 656),
        ("4,936 arcs per class", figures["arcs_per_class"] == 4936),
        ("10 class networks", figures["classes"] == 10),
        ("ln 10", figures["classes"] == 10),
        ("`gamma = 1`", float(demo_default("DEMO_GAMMA")) == 1.0),
        ("`--rule fraction:0.5`", demo_default("DEMO_RULE") == "fraction:0.5"),
        ("`DEMO_KEEP_SERVER=1 make demo`", True),  # a command, not a figure
    ]
    paragraph = demo_paragraph()
    for text, confirmed in checks:
        assert text in paragraph, f"the README no longer says '{text}': update this test"
        assert confirmed, f"the README says '{text}', the demo run gives {figures}"
        paragraph = paragraph.replace(text, "")
    typed = re.findall(r"(?<!\w)\d[\d,.]*%?", paragraph)
    assert not typed, f"the README's demo paragraph quotes figures no demo run confirms: {typed}"
