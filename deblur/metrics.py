"""PSNR and SSIM with one rule everywhere (serving, training validation, evaluation, benchmarks).

The rule (``score_restoration``): RGB, the full image, values in [0, 1]; the restored image is first
clamped and rounded to 8 bits, as an 8-bit answer holds it; the ground truth and the blurred input are
taken as decoded. SSIM is pytorch-msssim's (Gaussian window 11, σ 1.5); images smaller than the window
use the largest odd window that fits, so tiny images still get a score. Identical images have an
infinite PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pytorch_msssim import ssim as _ssim

from deblur.imageio import to_model_range, to_uint8


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model range → [0, 1], clamped."""
    return pixels.float().add(1).div(2).clamp(0, 1)


def _batched(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 3:
        return image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"expected (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
    return image


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR in dB over the batch of [0, 1] images; identical images give +inf."""
    output, target = _batched(output).float(), _batched(target).float()
    _check_same_shape(output, target)
    mse = (output - target).pow(2).flatten(1).mean(dim=1)
    values = [math.inf if m == 0 else -10.0 * math.log10(m) for m in mse.tolist()]
    return sum(values) / len(values)


def ssim(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM over the batch of [0, 1] images (pytorch-msssim, data_range 1)."""
    output, target = _batched(output).float(), _batched(target).float()
    _check_same_shape(output, target)
    smallest = min(output.shape[-2:])
    window = max(1, min(11, smallest if smallest % 2 else smallest - 1))
    if smallest == 1:
        # pytorch-msssim squeezes size-1 axes away; with a 1-px window SSIM is a per-pixel mean,
        # so repeating the pixels along the thin axis leaves the score unchanged.
        repeats = (1, 1, 2 if output.shape[-2] == 1 else 1, 2 if output.shape[-1] == 1 else 1)
        output, target = output.repeat(repeats), target.repeat(repeats)
    return float(_ssim(output, target, data_range=1.0, size_average=True, win_size=window))


def quantised(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] → [0, 1] on the 8-bit grid: what an 8-bit answer holds."""
    return to_unit_range(to_model_range(to_uint8(pixels)))


@dataclass(frozen=True)
class Scores:
    """PSNR (dB) and SSIM of the restored image and of the blurred input, both against the ground truth."""

    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float

    @property
    def gain(self) -> float:
        return self.psnr - self.input_psnr


def score_restoration(restored: torch.Tensor, target: torch.Tensor, blurred: torch.Tensor) -> Scores:
    """The module's rule for (3, H, W) images in [-1, 1]: ``restored`` is rounded to 8 bits first."""
    output, truth, before = quantised(restored), to_unit_range(target), to_unit_range(blurred)
    return Scores(psnr(output, truth), ssim(output, truth), psnr(before, truth), ssim(before, truth))
