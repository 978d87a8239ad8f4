"""The quality matrix's parts: scoring, kernels, the set writer and the runner (tiny images, no shipped model)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import kernels, quality, quality_sets
from deblur.restore import Network

LEVIN = Path("/work/shared/benchmarks/levin2009")
IDENTITY = Network(lambda batch: batch.clone())


def smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = 0.5 + 0.2 * np.sin(x / 5 + rng.uniform(0, 6)) * np.cos(y / 7) + 0.1 * rng.uniform(size=(height, width))
    return torch.from_numpy(image[None].clip(0, 1)).float()


def test_shift_search_finds_a_known_integer_shift_and_its_psnr():
    truth = smooth_image(80, 90)
    shifted = torch.roll(truth, shifts=(3, -4), dims=(-2, -1))  # image[y + 3] = truth[y]... read at crop + shift
    result = quality.score(shifted, truth)
    assert result.shift == (3, -4)
    assert math.isinf(result.psnr) and result.ssim == pytest.approx(1.0)
    noisy = shifted + 0.01  # a constant error of 0.01: PSNR 40 dB at the found shift
    assert quality.score(noisy, truth).psnr == pytest.approx(40.0, abs=1e-4)
    assert quality.score(noisy, truth).shift == (3, -4)


def test_crop_rule_twenty_px_or_ten_percent_under_200_px():
    assert quality.border(255, 255) == 20
    assert quality.border(200, 800) == 20
    assert quality.border(150, 300) == 15
    assert quality.border(128, 128) == 13
    assert quality.border(40, 40) == quality.MAX_SHIFT  # never less than the shift searched
    truth = smooth_image(60, 60)
    spoiled = truth.clone()
    spoiled[:, :5] = 0  # inside the 6-px border: not scored
    assert math.isinf(quality.score(spoiled, truth).psnr)


@pytest.mark.parametrize("kind", kernels.GENERATORS)
@pytest.mark.parametrize("extent", [5, 21, 61])
def test_kernels_are_normalised_mass_centred_odd_and_of_the_asked_extent(kind, extent):
    kernel = kernels.kernel(kind, extent, np.random.default_rng(extent))
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.sum() == pytest.approx(1.0) and kernel.min() >= 0
    assert kernels.centre_of_mass(kernel) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert extent - 1 <= kernels.kernel_extent(kernel) <= extent + 2


def test_odd_square_pads_even_kernels():
    assert kernels.odd_square(np.ones((4, 6))).shape == (7, 7)
    assert kernels.odd_square(np.ones((5, 5))).shape == (5, 5)


def test_stored_value_and_linear_light_blur_differ_on_a_step_edge():
    step = np.zeros((1, 40, 1))
    step[:, 20:] = 1.0
    box = np.ones((1, 9)) / 9

    def blur(x):
        return quality_sets.convolve_valid(x, box)

    stored = quality_sets.blur_in(step, blur, 1.0)[0, :, 0]
    linear = quality_sets.blur_in(step, blur, 2.2)[0, :, 0]
    edge = (stored > 1e-6) & (stored < 1 - 1e-6)
    assert edge.sum() == 8  # the ramp's inner values
    assert np.allclose(stored[edge], np.arange(1, 9) / 9)  # a straight ramp in stored values
    assert np.all(linear[edge] > stored[edge])  # light mixed, then γ-encoded: brighter mid-tones
    assert linear[edge][3] == pytest.approx((4 / 9) ** (1 / 2.2))


def test_set_writer_and_matrix_run_on_a_tiny_set(tmp_path, monkeypatch):
    small = tuple(dataclasses.replace(r, sizes=((120, 100),)) for r in quality_sets.SETS)
    monkeypatch.setattr(quality_sets, "SETS", small)
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        array = (np.random.default_rng(seed).uniform(size=(96, 96, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(photos / f"photo{seed}.png")
    out = tmp_path / "sets"
    names = ["shake_stored_values", "gray", "jpeg", "spatially_varying", "unblurred"]
    quality_sets.main([str(out), "--photos", str(photos), "--no-split", "--count", "1", "--sets", *names])
    for name in names:
        recipe = json.loads((out / name / "set.json").read_text())
        assert recipe["recipe"]["seed"] and len(recipe["images"]) == 1
        assert len(list((out / name / "blur").iterdir())) == len(list((out / name / "sharp").iterdir())) == 1
    assert Image.open(next((out / "gray" / "sharp").iterdir())).mode == "L"
    assert next((out / "jpeg" / "blur").iterdir()).suffix == ".jpg"
    # Photos smaller than a frame are upscaled: the sizes are the recipes'
    assert Image.open(next((out / "shake_stored_values" / "blur").iterdir())).size == (120, 100)
    report = tmp_path / "report.json"
    result = quality.main(["--sets", str(out), "--json", str(report), "--no-kernel-aware"], network=IDENTITY)
    written = json.loads(report.read_text())
    assert written == json.loads(json.dumps(result))
    assert {s["set"] for s in written["sets"]} == set(names)
    assert written["overall"]["images"] == len(names)
    row = written["rows"][0]
    expected = {"name", "set", "input_psnr", "input_ssim", "psnr", "ssim", "gain", "path", "kernel", "seconds"}
    assert expected <= set(row)
    unblurred = next(r for r in written["rows"] if r["set"] == "unblurred")
    assert unblurred["gain"] == pytest.approx(0.0, abs=1e-6)  # the identity network returns its input


@pytest.mark.skipif(not LEVIN.is_dir(), reason="the shared Levin et al. 2009 set is not on this machine")
def test_levin_loader_pairs_32_images_and_reads_estimates():
    pairs = quality.levin_pairs(LEVIN)
    assert len(pairs) == 32 and len({p.sharp for p in pairs}) == 4
    kernel = quality.levin_estimate(LEVIN, "pan_cvpr_2016", pairs[0].name)
    assert kernel is not None and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.sum() == pytest.approx(1.0)
    blurred, gray = quality.load_unit(pairs[0].blur)
    assert gray and blurred.shape[0] == 1
