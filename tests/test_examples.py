"""The page's bundled examples and the README's JSON example say what the shipped archive really answers.

``demo/examples/outcomes.json`` (written by ``python -m demo.make_examples --outcomes``) records, per
example, the path, the kernel decision and the metrics of the shipped checkpoint with kernel-aware on, as
``make serve`` packs it. The page's example labels and the README's JSON answer come from it; the last test
restores every example again (about 3 s each) and compares, so a change of the restoration that changes a caption fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from demo.app import example_pairs
from demo.make_examples import EXAMPLES_DIR, OUTCOMES_FILE, example_outcome

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = json.loads((EXAMPLES_DIR / OUTCOMES_FILE).read_text())


def readme_answer() -> dict:
    """The README's example JSON answer (the block after "JSON in, JSON out")."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```json\n(\{.*?\})\n```", text, re.S)
    assert block, "the README has no JSON answer example"
    return json.loads(block.group(1))


def test_every_example_has_a_recorded_outcome_and_a_label_from_it() -> None:
    pairs, labels = example_pairs()
    names = [Path(blurred).name.split("_blurred")[0] for blurred, _ in pairs]
    assert sorted(names) == sorted(OUTCOMES)
    for name, label in zip(names, labels, strict=True):
        outcome = OUTCOMES[name]
        assert label.startswith(name.capitalize() + " · ")
        if outcome["path"] == "input":
            assert f"kept as it is ({outcome['kernel']['decision']})" in label
        else:
            gain = outcome["metrics"]["psnr"] - outcome["metrics"]["input_psnr"]
            assert f"{gain:+.2f} dB" in label


def test_the_readme_json_answer_is_the_recorded_astronaut_answer() -> None:
    answer, recorded = readme_answer(), OUTCOMES["astronaut"]
    assert answer["path"] == recorded["path"]
    assert {k: v for k, v in answer["kernel"].items() if k != "png"} == recorded["kernel"]
    assert answer["metrics"] == pytest.approx(recorded["metrics"], abs=1e-3)


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_a_fresh_restoration_gives_the_recorded_outcome(name: str) -> None:
    """The shipped checkpoint restores the example again (in-process, the handler's pipeline): same path and
    kernel decision, metrics within 0.05 dB / 0.002 (bf16 arithmetic may differ across CPUs)."""
    fresh = example_outcome(EXAMPLES_DIR / f"{name}_blurred.jpg", EXAMPLES_DIR / f"{name}_sharp.jpg")
    recorded = OUTCOMES[name]
    assert fresh["path"] == recorded["path"]
    assert (fresh["kernel"] or {}).get("decision") == (recorded["kernel"] or {}).get("decision")
    assert fresh["metrics"]["psnr"] == pytest.approx(recorded["metrics"]["psnr"], abs=0.05)
    assert fresh["metrics"]["ssim"] == pytest.approx(recorded["metrics"]["ssim"], abs=0.002)
    assert fresh["metrics"]["input_psnr"] == pytest.approx(recorded["metrics"]["input_psnr"], abs=1e-3)
