"""Whether to trust an estimate: the gate, and the blind deconvolution that answers only when it passes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from deblur.blind.deconvolve import deconvolve_linear, from_linear, overshoot, to_linear
from deblur.blind.estimate import estimate_kernel, kernel_spread
from deblur.blind.fourier import centre_crop
from deblur.blind.settings import BlindSettings


@dataclass(frozen=True)
class KernelEstimate:
    kernel: torch.Tensor  # (K, K) float64, unit sum, centred on its mass to the nearest pixel
    spread: float
    peak: float
    trusted: bool
    overshoot: float | None = None  # of the centre crop's deconvolution, measured only when spread and peak passed
    attempts: int = 1  # 2 when the first estimate was turned away and this one comes from ``retry_crop``

    def report(self) -> dict[str, float | bool | None]:
        """The JSON answer's ``kernel`` object."""
        overshoot = None if self.overshoot is None else float(f"{self.overshoot:.3g}")
        return {
            "used": self.trusted,
            "spread_px": round(self.spread, 2),
            "peak": round(self.peak, 4),
            "overshoot": overshoot,
            "attempts": self.attempts,
        }


def judge_kernel(
    crop: torch.Tensor, kernel: torch.Tensor, settings: BlindSettings
) -> tuple[KernelEstimate, torch.Tensor | None]:
    """Trust a kernel if it looks like a shake and deconvolving the (C, H, W) linear-light crop with it stays
    (nearly) inside the range of light; returns the crop's deconvolution too (None if it was not needed).

    Judging on the estimate's own centre crop costs a fraction of deconvolving the whole image, which only a
    trusted estimate pays for.
    """
    spread, peak = kernel_spread(kernel), float(kernel.max())
    if spread < settings.min_spread or peak < settings.min_peak:
        return KernelEstimate(kernel, spread, peak, trusted=False), None
    deconvolved = deconvolve_linear(crop, kernel, settings)
    ringing = overshoot(deconvolved)
    return KernelEstimate(kernel, spread, peak, ringing < settings.max_overshoot, ringing), deconvolved


def can_estimate(shape: tuple[int, ...], settings: BlindSettings) -> bool:
    """Whether an image of ``shape`` (…, H, W) is large enough to estimate a kernel from."""
    return min(shape[-2:]) >= max(settings.min_side, 2 * settings.kernel_size + 1)


def deconvolve_whole(
    linear: torch.Tensor, kernel: torch.Tensor, judged: torch.Tensor, settings: BlindSettings
) -> torch.Tensor:
    """The whole image's deconvolution: the judged crop's where the crop was the whole image, else made anew."""
    if judged.shape == linear.shape:
        return judged
    return deconvolve_linear(linear, kernel, settings)


def estimate_and_judge(linear: torch.Tensor, settings: BlindSettings) -> tuple[KernelEstimate, torch.Tensor | None]:
    """The estimate for a (3, H, W) linear-light image and its verdict, with the centre crop's deconvolution
    (``judge_kernel``); one retry on ``settings.retry_crop`` when the first is not trusted."""
    crop = centre_crop(linear, settings.crop)
    estimate, deconvolved = judge_kernel(crop, estimate_kernel(linear, settings), settings)
    retry = settings.retry_crop
    # Where the larger crop is the same crop, a retry would repeat the same estimate
    if estimate.trusted or retry is None or centre_crop(linear, retry).shape == crop.shape:
        return estimate, deconvolved
    wider = dataclasses.replace(settings, crop=retry)
    estimate, deconvolved = judge_kernel(crop, estimate_kernel(linear, wider), settings)
    return dataclasses.replace(estimate, attempts=2), deconvolved


def blind_deconvolution(
    pixels: torch.Tensor, settings: BlindSettings = BlindSettings()
) -> tuple[torch.Tensor | None, KernelEstimate | None]:
    """(3, H, W) in [-1, 1] → (deconvolved image in [-1, 1], or None when the estimate is not trusted; the estimate).

    The estimate is None when the image is too small to estimate a kernel from.
    """
    if not can_estimate(pixels.shape, settings):
        return None, None
    linear = to_linear(pixels, settings.gamma)
    estimate, deconvolved = estimate_and_judge(linear, settings)
    if deconvolved is None or not estimate.trusted:
        return None, estimate
    return from_linear(deconvolve_whole(linear, estimate.kernel, deconvolved, settings), settings.gamma), estimate
