"""The benchmark scripts run end to end on tiny inputs (their figures are measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench.__main__ as speed
import bench.deconv_ceiling as deconv
import bench.models as model_costs
from tests.conftest import textured_image
from train.synth import BlurSettings, blur_image, rasterise_kernel, shake_trajectory


def test_speed_benchmark_writes_every_table_in_process(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    speed.main([
        "--checkpoint", str(tiny_checkpoint), "--sizes", "96x80", "--memory-sizes", "", "--variant-size", "128x96",
        "--repeats", "1", "--tile", "64", "--overlap", "16", "--no-rest", "--json", str(out),
    ])  # fmt: skip
    results = json.loads(out.read_text())
    assert [r["size"] for r in results["sizes"]] == ["96x80"] and results["sizes"][0]["compute_s"] > 0
    assert len(results["variants"]) == 8 and results["variants"][-3]["speedup_vs_seed"] > 0
    stages = {r["stage"]: r for r in results["stages"]}
    assert "encode PNG (handler's writer)" in stages and stages["model (tiles, batches)"]["share_of_model"] == 1


def test_model_cost_table_lists_every_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    model_costs.main(["--tile", "32", "--batch", "1", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(model_costs.CANDIDATES)  # header + one measured row each
    assert all(float(row.split("|")[3]) > 0 for row in rows[1:])


def test_pairs_mode_scores_each_pair_with_its_kernel_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sharp = textured_image(160, 128, seed=5)
    kernel = rasterise_kernel(shake_trajectory(np.random.default_rng(5)), 9)
    blurred = blur_image(sharp, kernel, np.random.default_rng(5), BlurSettings())
    for folder, image in (("sharp", sharp), ("blur", blurred)):
        (tmp_path / folder).mkdir()
        Image.fromarray(image).save(tmp_path / folder / "texture.png")
    deconv.main(["--pairs", str(tmp_path), "--threads", "1"])
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| texture")]
    assert len(rows) == 1 and float(rows[0][4]) > 0 and 0 < float(rows[0][5]) <= 1, out  # spread, peak
    assert "estimated kernel: mean" in out


@pytest.mark.parametrize("estimate_on", ["tile", "frame"])
def test_deconvolution_ceiling_prints_both_methods(
    estimate_on: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(textured_image(1280, 720)).save(tmp_path / "texture.png")
    deconv.main([str(tmp_path), "--frames", "2", "--tile", "256", "--threads", "1", "--estimate-on", estimate_on])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| texture_")]
    assert len(rows) == 2
    true_gains = [float(row.split("|")[4]) for row in rows]
    assert min(true_gains) > 0.5, out  # knowing the kernel must beat the blurred input (measured +5.3, +0.8)
    assert "estimated kernel: mean" in out
