"""Whether a blind deconvolution may answer: the blur model chosen per photo, and checked before it is used.

For each photo the kernel is estimated in every candidate domain (``settings.gammas``: the blur mixing
stored values, or light) on a crop, and the domain whose estimate best explains the crop is kept: the
crop deconvolved with it and blurred again must come back to the photo (the RMS residual in stored
values). Then the estimate must be plausible and consistent before it answers:

- no blur worth undoing (a nearly point-like kernel, or one that leaves much of the light within a pixel of
  where it was): the photo is kept as it is;
- a diffuse kernel, a deconvolution that explains the crop much worse than the crop explains itself (the
  residual against that of the same deconvolution with no blur), or one whose light leaves [0, 1] (ringing
  from a wrong kernel): refused;
- where the image holds a second, disjoint crop, the kernel is estimated there too, and each crop's kernel
  must explain the other crop nearly as well as that crop's own kernel does. A uniform shake passes; an
  estimate that took in the photo's own structure, or a blur that varies across the frame, does not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from deblur.blind.deconvolve import deconvolve_linear, from_linear, overshoot, to_linear
from deblur.blind.estimate import estimate_kernel, kernel_spread
from deblur.blind.fourier import mass_centred_otf, padded_shape, wrap_each_smoothly
from deblur.blind.settings import BlindSettings

DECONVOLVED = "deconvolved"
NO_BLUR = "no blur"  # the photo is kept: nothing worth deconvolving
REFUSED = ("diffuse kernel", "does not explain the photo", "rings out of range", "inconsistent across the frame")


@dataclass(frozen=True)
class KernelEstimate:
    kernel: torch.Tensor  # (K, K) float64, unit sum, centred on its mass to the nearest pixel
    gamma: float  # the domain the blur was found to mix: stored values raised to this power
    spread: float  # RMS radius of the kernel, px
    peak: float
    decision: str  # DECONVOLVED, NO_BLUR or one of REFUSED
    overshoot: float | None = None  # mean excess of the crop's deconvolution outside [0, 1]
    residual: float | None = None  # RMS of the reblurred crop deconvolution against the photo, stored values in [0, 1]
    relative_residual: float | None = None  # that residual over the one with no blur assumed (a delta kernel)
    disagreement: float | None = None  # worst ratio of a crop's residual under the other crop's kernel to its own

    @property
    def trusted(self) -> bool:
        return self.decision == DECONVOLVED

    def report(self) -> dict[str, float | bool | str | int | None]:
        """The JSON answer's ``kernel`` object."""

        def short(value: float | None) -> float | None:
            return None if value is None else float(f"{value:.3g}")

        return {
            "used": self.trusted,
            "decision": self.decision,
            "gamma": self.gamma,
            "support_px": self.kernel.shape[0],
            "spread_px": round(self.spread, 2),
            "peak": round(self.peak, 4),
            "overshoot": short(self.overshoot),
            "residual": short(self.residual),
            "relative_residual": short(self.relative_residual),
            "disagreement": short(self.disagreement),
        }


@dataclass(frozen=True)
class Explanation:
    """One kernel in one domain applied to one crop."""

    kernel: torch.Tensor
    gamma: float
    deconvolved: torch.Tensor  # the crop's deconvolution, (C, h, w) in [0, 1]-ish light of ``gamma``
    residual: float
    overshoot: float


def reblur(linear: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``linear`` blurred by ``kernel`` placed by its centre of mass, as the deconvolution models the blur."""
    (height, width), pad = linear.shape[-2:], kernel.shape[0]
    shape = padded_shape(linear.shape, pad)
    spectrum = torch.fft.rfft2(wrap_each_smoothly(linear, pad, shape)) * mass_centred_otf(
        kernel.to(linear.dtype), shape
    )
    return torch.fft.irfft2(spectrum, s=shape)[..., pad : pad + height, pad : pad + width]


def explain(crop: torch.Tensor, kernel: torch.Tensor, gamma: float, settings: BlindSettings) -> Explanation:
    """Deconvolve the (3, h, w) crop in [-1, 1] with ``kernel`` in the domain of ``gamma``, blur the result again
    and measure how far it lands from the crop (in stored values, away from the border the blur reaches past)."""
    linear = to_linear(crop, gamma)
    deconvolved = deconvolve_linear(linear, kernel, settings)
    again = from_linear(reblur(deconvolved.clamp(0, 1), kernel), gamma)
    border = kernel.shape[0] // 2
    inner = (slice(None), slice(border, crop.shape[-2] - border), slice(border, crop.shape[-1] - border))
    residual = float(((again - crop.float())[inner] / 2).pow(2).mean().sqrt())
    return Explanation(kernel, gamma, deconvolved, residual, overshoot(deconvolved))


def core_mass(kernel: torch.Tensor) -> float:
    """The share of the kernel's light within one pixel of its peak: what a blur leaves in place."""
    row, column = divmod(int(kernel.argmax()), kernel.shape[1])
    return float(kernel[max(0, row - 1) : row + 2, max(0, column - 1) : column + 2].sum() / kernel.sum())


def delta_kernel(size: int) -> torch.Tensor:
    """No blur: all the mass at the centre of a ``size``-px kernel."""
    kernel = torch.zeros(size, size, dtype=torch.float64)
    kernel[size // 2, size // 2] = 1
    return kernel


def crop_boxes(shape: tuple[int, ...], settings: BlindSettings) -> list[tuple[slice, slice]]:
    """Where the kernel is estimated: the centre crop (at most ``settings.crop`` px on a side), or, where the
    image is large enough, two crops as far apart as the image allows along its longer axis, so that a blur
    that varies across the frame shows as two kernels that do not agree."""
    height, width = shape[-2:]
    side = settings.crop
    along_width = width >= height
    long, short = (width, height) if along_width else (height, width)
    size, span = min(side, long // 2), min(side, short)
    if not settings.consistency_crops or min(size, span) < settings.min_consistency_crop:
        top, left = (height - min(side, height)) // 2, (width - min(side, width)) // 2
        return [(slice(top, top + min(side, height)), slice(left, left + min(side, width)))]
    margin = (long - 2 * size) // 4  # a little in from the edges, where vignetting and frames live
    across = slice((short - span) // 2, (short - span) // 2 + span)
    boxes = []
    for start in (margin, long - margin - size):
        along = slice(start, start + size)
        boxes.append((across, along) if along_width else (along, across))
    return boxes


def support_for(box: tuple[slice, slice], settings: BlindSettings) -> BlindSettings:
    """The settings with the kernel support capped at a third of the crop's shorter side (odd)."""
    shorter = min(box[0].stop - box[0].start, box[1].stop - box[1].start)
    return dataclasses.replace(settings, kernel_size=min(settings.kernel_size, (shorter // 3) | 1))


def best_domain(crop: torch.Tensor, settings: BlindSettings) -> Explanation:
    """Estimate in every candidate domain; keep the estimate that explains the crop best among those that
    found a blur (a point-like kernel explains any photo trivially, so it only wins where no domain finds one)."""
    candidates = []
    for gamma in settings.gammas:
        kernel = estimate_kernel(to_linear(crop, gamma), settings)
        candidates.append(explain(crop, kernel, gamma, settings))
    blurs = [candidate for candidate in candidates if kernel_spread(candidate.kernel) >= settings.min_spread]
    return min(blurs or candidates, key=lambda candidate: candidate.residual)


def estimate_and_judge(pixels: torch.Tensor, settings: BlindSettings) -> tuple[KernelEstimate, torch.Tensor | None]:
    """The blur model of a (3, H, W) image in [-1, 1] and the verdict; with a trusted one, the whole image
    deconvolved in [-1, 1] (None otherwise)."""
    boxes = crop_boxes(pixels.shape, settings)
    settings = support_for(boxes[0], settings)
    crops = [pixels[(slice(None), *box)] for box in boxes]
    first = best_domain(crops[0], settings)
    kernel, gamma = first.kernel, first.gamma
    verdict = dict(gamma=gamma, spread=kernel_spread(kernel), peak=float(kernel.max()), overshoot=first.overshoot)
    verdict["residual"] = first.residual
    if verdict["spread"] < settings.min_spread or core_mass(kernel) > settings.max_core_mass:
        return KernelEstimate(kernel, decision=NO_BLUR, **verdict), None
    if verdict["peak"] < settings.min_peak:
        return KernelEstimate(kernel, decision=REFUSED[0], **verdict), None
    unblurred = explain(crops[0], delta_kernel(kernel.shape[0]), gamma, settings)
    verdict["relative_residual"] = first.residual / max(unblurred.residual, 1e-6)
    if verdict["relative_residual"] > settings.max_relative_residual:
        return KernelEstimate(kernel, decision=REFUSED[1], **verdict), None
    if first.overshoot > settings.max_overshoot:
        return KernelEstimate(kernel, decision=REFUSED[2], **verdict), None
    chosen = first
    if len(crops) == 2:
        second = explain(crops[1], estimate_kernel(to_linear(crops[1], gamma), settings), gamma, settings)
        crossed = (explain(crops[1], kernel, gamma, settings), explain(crops[0], second.kernel, gamma, settings))
        verdict["disagreement"] = max(crossed[0].residual / second.residual, crossed[1].residual / first.residual)
        if verdict["disagreement"] > settings.max_disagreement:
            return KernelEstimate(kernel, decision=REFUSED[3], **verdict), None
        if second.residual + crossed[1].residual < first.residual + crossed[0].residual:
            chosen = second  # the kernel that explains both crops better
    kernel = chosen.kernel
    verdict |= dict(spread=kernel_spread(kernel), peak=float(kernel.max()))
    estimate = KernelEstimate(kernel, decision=DECONVOLVED, **verdict)
    if len(crops) == 1 and crops[0].shape == pixels.shape:
        return estimate, from_linear(chosen.deconvolved, gamma)
    return estimate, from_linear(deconvolve_linear(to_linear(pixels, gamma), kernel, settings), gamma)


def can_estimate(shape: tuple[int, ...], settings: BlindSettings) -> bool:
    """Whether an image of ``shape`` (…, H, W) is large enough to estimate a kernel from."""
    return min(shape[-2:]) >= settings.min_side


def blind_deconvolution(
    pixels: torch.Tensor, settings: BlindSettings = BlindSettings()
) -> tuple[torch.Tensor | None, KernelEstimate | None]:
    """(3, H, W) in [-1, 1] → (deconvolved image in [-1, 1], or None when the estimate is not trusted; the estimate).

    The estimate is None when the image is too small to estimate a kernel from.
    """
    if not can_estimate(pixels.shape, settings):
        return None, None
    estimate, deconvolved = estimate_and_judge(pixels, settings)
    return deconvolved, estimate
