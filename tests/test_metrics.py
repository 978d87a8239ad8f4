"""PSNR/SSIM protocol: [0, 1] RGB, full image."""

from __future__ import annotations

import math

import pytest
import torch

from deblur.metrics import psnr, ssim, to_unit_range


def test_psnr_matches_definition() -> None:
    a = torch.zeros(3, 10, 10)
    b = torch.full((3, 10, 10), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # -10·log10(0.01)
    assert psnr(a, a) == math.inf


def test_ssim_is_one_for_identical_and_lower_for_noisy() -> None:
    torch.manual_seed(0)
    clean = torch.rand(3, 64, 64)
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-5)
    assert ssim(noisy, clean) < 0.9


def test_tiny_images_still_get_a_score() -> None:
    assert ssim(torch.rand(3, 4, 6), torch.rand(3, 4, 6)) <= 1.0
    assert ssim(torch.rand(3, 1, 1), torch.rand(3, 1, 1)) <= 1.0


def test_shape_mismatch_is_an_error_and_range_maps() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))
    assert torch.equal(to_unit_range(torch.tensor([-1.0, 0.0, 1.0, 3.0])), torch.tensor([0.0, 0.5, 1.0, 1.0]))
