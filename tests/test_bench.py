"""The benchmark scripts run end to end on tiny inputs (their figures are measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_deconvolution_with_the_true_kernel_inverts_the_blur() -> None:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((64, 80)))
    kernel = torch.from_numpy(rasterise_kernel(shake_trajectory(rng), 9).astype(np.float64))
    blurred = torch.fft.ifft2(torch.fft.fft2(image) * deconv.kernel_otf(kernel, (64, 80))).real  # circular blur
    restored = deconv.deconvolve(blurred, kernel, weight=1e-12)
    assert (restored - image).abs().max() < 1e-3 < 0.1 < (blurred - image).abs().max()


def test_smooth_wrap_keeps_the_image_and_removes_the_seam() -> None:
    image = torch.linspace(0, 1, 40 * 30, dtype=torch.float64).reshape(40, 30)  # opposite edges differ by ~1
    wrapped = deconv.wrap_smoothly(image, 8)
    assert torch.equal(wrapped[8:-8, 8:-8], image)
    reflected = torch.nn.functional.pad(image[None, None], (8, 8, 8, 8), mode="reflect")[0, 0]
    for padded, limit in ((wrapped, 0.15), (reflected, 0.5)):  # a ramp across the seam, or a jump of ~1
        seam = max((padded[0] - padded[-1]).abs().max(), (padded[:, 0] - padded[:, -1]).abs().max())
        assert (seam < limit) == (padded is wrapped), f"seam {seam:.3f}"


def test_components_are_8_connected_and_pruning_drops_specks() -> None:
    kernel = torch.zeros(9, 9, dtype=torch.float64)
    kernel[2, 2:6] = 1.0  # the trajectory: a horizontal stroke...
    kernel[3, 6] = 1.0  # ...that goes on diagonally
    kernel[7, 0] = 0.2  # a faint speck apart from it
    labels = deconv.connected_components(kernel > 0)
    assert labels[2, 2] == labels[3, 6] != labels[7, 0] and int((labels > 0).sum()) == 6
    pruned = deconv.prune_kernel(kernel, deconv.EstimatorSettings())
    assert int((pruned > 0).sum()) == 5 and float(pruned.sum()) == pytest.approx(1.0)


def discs(size: int, seed: int) -> torch.Tensor:
    """Flat discs on gray: edges in every direction, which a blind kernel estimate needs (rectangles are not enough)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    image = np.full((size, size), 0.5)
    for _ in range(40):
        cy, cx, radius = *rng.uniform(0, size, 2), rng.uniform(4, size / 6)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0, 1)
    return torch.from_numpy(image)


def test_blind_estimate_finds_the_shake_and_its_deconvolution_beats_the_input() -> None:
    sharp = discs(192, seed=0)
    true_kernel = torch.from_numpy(rasterise_kernel(shake_trajectory(np.random.default_rng(0)), 11).astype(np.float64))
    blurred = torch.fft.ifft2(torch.fft.fft2(sharp) * deconv.kernel_otf(true_kernel, sharp.shape)).real
    settings = deconv.EstimatorSettings(kernel_size=true_kernel.shape[0], iterations=4)
    estimate = deconv.estimate_kernel(blurred, settings)
    delta = torch.zeros_like(true_kernel)  # what "no blur" assumes
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1
    assert (estimate - true_kernel).norm() < 0.25 * (delta - true_kernel).norm()  # measured 0.06
    restored = deconv.deconvolve(blurred, estimate, settings.restore_weight)
    inner = (slice(16, -16), slice(16, -16))
    assert (restored - sharp)[inner].abs().mean() < 0.7 * (blurred - sharp)[inner].abs().mean()  # measured 0.45


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
