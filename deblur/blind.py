"""Kernel-aware restoration: a blind camera-shake kernel estimate and a non-blind deconvolution (torch only).

For blur that is the same across the image (a camera shake while the shutter is open), finding the
kernel and inverting it recovers far more than the shipped network does on 2 CPU cores (README, "Shipped
model"). The estimate works coarse to fine, alternating an L0-gradient latent image (Xu, Zheng & Jia
2013; Pan et al. 2014), one per colour channel, with a least-squares kernel from all their gradients,
pruned to its main connected trajectory; the deconvolution has a sparse gradient prior (Krishnan & Fergus
2009), in linear light, solved by half-quadratic splitting in the Fourier domain.

It fails on photos without edges in many directions (a smooth fruit) and on nearly sharp photos, so a
result is used only when the estimate passes ``KernelGate``; the pipeline falls back to the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GAMMA = 2.2  # the blur happens in (approximately) linear light: a camera integrates light, not sRGB values


@dataclass(frozen=True)
class EstimatorSettings:
    kernel_size: int = 41  # support searched (odd); mass-centred 11–33 px shakes reach 41 px
    iterations: int = 5  # per coarser scale
    # At full resolution, where the kernel gets its detail, 5 more: +0.24 dB on the validation mean
    # (docs/shipped_model_log.md)
    finest_iterations: int = 10
    latent_weight: float = 4e-3  # λ of the L0 gradient prior at the start of each scale
    latent_weight_min: float = 1e-4  # λ shrinks by 1.1 per iteration down to this
    splitting_rate: float = 4.0  # growth of the half-quadratic penalty β per inner step (2 is finer, 2× slower)
    kernel_weight: float = 0.2  # Tikhonov weight on the kernel, relative to the mean gradient energy
    prune_below: float = 0.05  # kernel values under this share of the peak are dropped
    minor_component: float = 0.1  # connected parts with less mass than this share of the heaviest are dropped
    # Estimate on the centre crop of at most this side: the blur is uniform, the cost is not. On the
    # validation mean 1024 beat 768 by 0.23 dB and 1280 by 0.04 dB (docs/shipped_model_log.md)
    crop: int = 1024
    # An estimate the gate turns away is made once more on this larger centre crop, where the image reaches past
    # the first: more edges, and a fresh start for an estimate that depends chaotically on its input. Judged on
    # the first crop as before. On 53 shaken 720p frames of the training photos it rescued 3 of the 15
    # turned away (+0.25 dB mean); the validation sets, whose images fit the first crop, are unchanged
    # (docs/shipped_model_log.md)
    retry_crop: int | None = 1280
    # Data-term weight of the final (sparse-prior) deconvolution. Re-picked once the kernel was placed to a
    # fraction of a pixel: validation mean +3.54 / +3.82 / +3.91 / +3.91 / +3.83 dB at 250 / 400 / 550 / 700 /
    # 1000 (docs/shipped_model_log.md)
    restore_fidelity: float = 550.0
    # Estimate from the three linear channels together (a latent each, one kernel from all their normal
    # equations) instead of their mean, where edges between colours of equal brightness vanish. On 231
    # development frames, first estimates through the gate: +0.37 ± 0.10 dB per frame (104 better, 56 worse;
    # ungated +3.67 vs +2.05 dB), for about 3× the estimate's time (docs/shipped_model_log.md)
    joint_channels: bool = True


def kernel_otf(kernel: torch.Tensor, shape: tuple[int, int], half: bool = False) -> torch.Tensor:
    """FFT of ``kernel`` zero-padded to ``shape`` with its centre moved to the origin (rfft2's half if ``half``)."""
    padded = torch.zeros(shape, dtype=kernel.dtype)
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel
    centred = torch.roll(padded, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), (0, 1))
    return torch.fft.rfft2(centred) if half else torch.fft.fft2(centred)


def kernel_centroid(kernel: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the kernel's centre of mass, relative to its centre pixel."""
    offsets = torch.arange(kernel.shape[0], dtype=kernel.dtype) - kernel.shape[0] // 2
    total = kernel.sum()
    return float((kernel.sum(1) * offsets).sum() / total), float((kernel.sum(0) * offsets).sum() / total)


def mass_centred_otf(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 half-spectrum of ``kernel`` zero-padded to ``shape`` with its centre of mass, not its centre pixel,
    moved to the origin (a phase ramp: the shift may be a fraction of a pixel).

    The shake moves the photo by its centre of mass (train.synth blurs with mass-centred kernels, so the
    blurred photo sits where the sharp one does on average). An estimate is centred on its mass only to the
    nearest pixel; left there, the restored photo lands up to half a pixel off, which costs several dB on a
    sharp result (dev frames with the estimated kernels, docs/shipped_model_log.md).
    """
    row, column = kernel_centroid(kernel.double())
    fy = torch.fft.fftfreq(shape[0], dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(shape[1], dtype=torch.float64)[None, :]
    ramp = torch.polar(torch.ones((), dtype=torch.float64), 2 * math.pi * (fy * row + fx * column))
    otf = kernel_otf(kernel, shape, half=True)
    return otf * ramp.to(otf.dtype)


def gradient_energy(shape: tuple[int, int]) -> torch.Tensor:
    """|F(∂x)|² + |F(∂y)|² for backward differences, the spectrum of the gradient prior."""
    fy = torch.fft.fftfreq(shape[0], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=torch.float64)[None, :]
    return (2 - 2 * torch.cos(2 * math.pi * fx)) + (2 - 2 * torch.cos(2 * math.pi * fy))


def circular_difference(image: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """image − roll(image, step, axis) for step ±1, from slices: torch.roll copies the whole image first."""
    out = torch.empty_like(image)
    ahead, behind = image.narrow(axis, 1, image.shape[axis] - 1), image.narrow(axis, 0, image.shape[axis] - 1)
    first, last = image.narrow(axis, 0, 1), image.narrow(axis, -1, 1)
    if step == 1:  # out[i] = x[i] − x[i−1], wrapping at 0
        torch.sub(ahead, behind, out=out.narrow(axis, 1, image.shape[axis] - 1))
        torch.sub(first, last, out=out.narrow(axis, 0, 1))
    else:  # out[i] = x[i] − x[i+1], wrapping at the end
        torch.sub(behind, ahead, out=out.narrow(axis, 0, image.shape[axis] - 1))
        torch.sub(last, first, out=out.narrow(axis, -1, 1))
    return out


def gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward differences along x and y, wrapping around (the FFT's boundary)."""
    return circular_difference(image, -1, 1), circular_difference(image, -2, 1)


def divergence(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """∇ᵀ(gx, gy): the adjoint of ``gradients``."""
    return circular_difference(gx, -1, -1).add_(circular_difference(gy, -2, -1))


def shrink_gradients_(gx: torch.Tensor, gy: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's gradient vector (gx, gy) shortened by ``threshold`` (to zero if shorter), in place: the
    proximal step of the isotropic total variation Σ|∇x|, which does not prefer edges along the axes."""
    scale = torch.hypot(gx, gy).clamp_(min=threshold).reciprocal_().mul_(-threshold).add_(1)
    return gx.mul_(scale), gy.mul_(scale)


def fft_length(n: int) -> int:
    """The smallest length ≥ n with no prime factor above 5: pocketfft is fastest there (2160 vs 2130: 1.5×)."""
    while True:
        m = n
        for prime in (2, 3, 5):
            while m % prime == 0:
                m //= prime
        if m == 1:
            return n
        n += 1


# Rounds of the deconvolution's splitting. 8 instead of 6 brings the result closer to the minimum: with the same
# kernels, +0.07 dB on the validation mean and +0.12 / +0.12 dB on 159 shaken frames of the training photos;
# 10 added nothing more (docs/shipped_model_log.md)
RESTORE_ROUNDS = 8


def deconvolve_sparse(
    blurred: torch.Tensor,
    kernel: torch.Tensor,
    fidelity: float,
    rounds: int = RESTORE_ROUNDS,
    observed: torch.Tensor | None = None,
) -> torch.Tensor:
    """argmin fidelity/2·‖k ∗ x − y‖² + Σ|∇x| over the last two axes, by half-quadratic splitting, with k's
    centre of mass at the origin (``mass_centred_otf``).

    Natural images have sparse gradients (Krishnan & Fergus 2009): this prior keeps edges and flattens the
    ringing and amplified noise a Gaussian (least-squares) gradient prior lets through. Each round shrinks the
    gradients (``shrink_gradients_``), then solves the quadratic step exactly in the Fourier domain; the
    splitting penalty β grows from 1 by 2√2 per round.

    ``observed`` (a mask of the last two axes, True on the image) makes the rest unknown: the padding around
    an image stands for scene outside the frame, so instead of holding it to the padding's made-up values,
    each round refills it with the current estimate blurred by the kernel (the missing data's best guess),
    and only the image's own pixels pull the answer. Reflected padding held as data is wrong wherever the
    kernel is not symmetric and costs the frame's border band (the true kernel on 12 shaken 1280×720
    frames: +8.43 → +8.64 dB; docs/shipped_model_log.md).
    """
    shape = blurred.shape[-2:]
    half = shape[-1] // 2 + 1  # real input: the half spectrum of rfft2 holds everything, for half the work
    otf = mass_centred_otf(kernel.to(blurred.dtype), shape)
    adjoint = fidelity * torch.conj(otf)
    data_term = adjoint * torch.fft.rfft2(blurred)
    kernel_energy = fidelity * otf.abs() ** 2
    prior_energy = gradient_energy(shape)[:, :half].to(blurred.dtype)
    latent, beta = blurred, 1.0
    for round_ in range(rounds):
        gx, gy = shrink_gradients_(*gradients(latent), 1 / beta)
        spectrum = torch.fft.rfft2(divergence(gx, gy)).mul_(beta).add_(data_term)
        spectrum = spectrum.div_(prior_energy * beta + kernel_energy)
        latent = torch.fft.irfft2(spectrum, s=shape)
        if observed is not None and round_ < rounds - 1:  # the last round's refill would go unused
            data_term = adjoint * torch.fft.rfft2(fill_unobserved(observed, blurred, spectrum.mul_(otf), shape))
        beta *= 2 * math.sqrt(2)
    return latent


def wrap_smoothly(image: torch.Tensor, pad: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Reflect-pad by ``pad`` before each axis and up to ``shape`` after (by ``pad`` if None), cross-fading the
    padding so the FFT's wrap-around has no seam."""
    height, width = image.shape
    shape = shape or (height + 2 * pad, width + 2 * pad)
    afters = (shape[0] - height - pad, shape[1] - width - pad)
    out = F.pad(image[None, None], (pad, afters[1], pad, afters[0]), mode="reflect")[0, 0]
    for after in afters:  # rows, then (transposed) columns
        size = pad + after
        ramp = torch.linspace(0, 1, size, dtype=image.dtype)[:, None]
        # 0 where the padding meets the image, rising to 1 at the seam between the two sides
        weight = torch.minimum(ramp * (size / after), (1 - ramp) * (size / pad))
        band = torch.cat([out[-after:], out[:pad]])  # the padding on both sides of the wrap
        straight = band[:1] + ramp * (band[-1:] - band[:1])
        band = band * (1 - weight) + straight * weight
        out = torch.cat([band[after:], out[pad:-after], band[:after]]).T
    return out


def wrap_each_smoothly(images: torch.Tensor, pad: int, shape: tuple[int, int]) -> torch.Tensor:
    """``wrap_smoothly`` for each (H, W) image of a (…, H, W) stack, to ``shape``."""
    flat = images.reshape(-1, *images.shape[-2:])
    return torch.stack([wrap_smoothly(image, pad, shape) for image in flat]).reshape(*images.shape[:-2], *shape)


def interior(shape: tuple[int, ...], kernel_size: int) -> torch.Tensor:
    """True away from the border, where a kernel of ``kernel_size`` sees no wrapped-around pixels."""
    border = kernel_size // 2 + 1
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[border:-border, border:-border] = True
    return inside


def tidy_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Non-negative, small values dropped, unit sum, centred on its mass to the nearest pixel (a delta if
    nothing is left)."""
    kernel = kernel.clamp(min=0)
    kernel = torch.where(kernel < kernel.max() / 20, torch.zeros_like(kernel), kernel)
    if kernel.sum() <= 0:
        kernel = torch.zeros_like(kernel)
        kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1
        return kernel
    kernel = kernel / kernel.sum()
    row, column = kernel_centroid(kernel)
    return torch.roll(kernel, (-round(row), -round(column)), (0, 1))


def fill_unobserved(
    observed: torch.Tensor, data: torch.Tensor, estimate_spectrum: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """``data`` where ``observed``, elsewhere the image whose rfft2 half-spectrum is ``estimate_spectrum``: what
    the current estimate predicts for data that is missing (the scene past an image's or a crop's edge)."""
    return torch.where(observed, data, torch.fft.irfft2(estimate_spectrum, s=shape))


def kernel_from_gradients(
    latent: tuple[torch.Tensor, torch.Tensor],
    blurred: tuple[torch.Tensor, torch.Tensor],
    size: int,
    weight: float,
    refill: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """argmin Σ‖k ∗ ∂x − ∂y‖² + w‖k‖² in the Fourier domain, cropped to ``size`` and tidied.

    The gradients are (…, H, W): the sum runs over every leading index too (the channels), one kernel for all.

    ``refill`` = (current kernel, mask of the pixels that are data): elsewhere the blurred gradients are
    replaced by the latent's blurred by the current kernel. Near the crop's edge the blur reached past it, so
    the blurred gradients there are no evidence. Set to zero (as before 2026-12-07) they pulled the kernel
    toward predicting nothing at the edge; refilled, they agree with the current kernel and pull nowhere, as
    the deconvolution's unknown borders do (``deconvolve_sparse``). Validation mean as served +4.09 → +4.40
    dB, every set up (docs/shipped_model_log.md).
    """
    shape = latent[0].shape[-2:]
    latent_spectra = [torch.fft.rfft2(g) for g in latent]
    if refill is not None:
        current, inside = refill
        otf = kernel_otf(current, tuple(shape), half=True)
        blurred = tuple(  # type: ignore[assignment]
            fill_unobserved(inside, observed, spectrum * otf, shape)
            for observed, spectrum in zip(blurred, latent_spectra, strict=True)
        )
    spectra = [s.reshape(-1, shape[0], shape[1] // 2 + 1) for s in (*latent_spectra, *map(torch.fft.rfft2, blurred))]
    numerator = (torch.conj(spectra[0]) * spectra[2] + torch.conj(spectra[1]) * spectra[3]).sum(0)
    energy = (spectra[0].abs() ** 2 + spectra[1].abs() ** 2).sum(0)
    # The mean of |F(∂x)|² + |F(∂y)|² over the full spectrum is Σ∂x² + Σ∂y² (Parseval): no full FFT needed
    mean_energy = float(sum((g * g).sum() for g in latent))
    if mean_energy == 0:  # a latent without edges (a flat image) constrains nothing: 0/0 below; no blur, then
        return tidy_kernel(torch.zeros(size, size, dtype=latent[0].dtype))
    kernel = torch.fft.irfft2(numerator / (energy + weight * mean_energy), s=shape)
    return tidy_kernel(torch.roll(kernel, (size // 2, size // 2), (0, 1))[:size, :size])


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(…, H, W) → (…, *shape), bilinear with antialiasing."""
    flat = image.reshape(1, -1, *image.shape[-2:])
    out = F.interpolate(flat, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*image.shape[:-2], *shape)


def l0_latent(blurred: torch.Tensor, kernel: torch.Tensor, weight: float, rate: float) -> torch.Tensor:
    """argmin ‖k ∗ x − y‖² + weight·‖∇x‖₀ by half-quadratic splitting (Xu et al. 2013), in the Fourier domain,
    for each (H, W) image of a (…, H, W) stack.

    The L0 prior keeps the strong edges the kernel is estimated from and flattens everything else.
    """
    (height, width), pad = blurred.shape[-2:], kernel.shape[0]
    shape = (fft_length(height + 2 * pad), fft_length(width + 2 * pad))
    padded = wrap_each_smoothly(blurred, pad, shape)
    otf = kernel_otf(kernel, shape, half=True)
    data_term, kernel_energy = torch.conj(otf) * torch.fft.rfft2(padded), otf.abs() ** 2
    prior_energy = gradient_energy(shape)[:, : shape[1] // 2 + 1].to(blurred.dtype)
    latent, beta = padded, 2 * weight
    while beta < 1e5:
        gx, gy = gradients(latent)
        weak = (gx * gx).add_(gy * gy) < weight / beta  # cheaper to flatten than to keep: the L0 step
        spectrum = torch.fft.rfft2(divergence(gx.masked_fill_(weak, 0), gy.masked_fill_(weak, 0)))
        spectrum = spectrum.mul_(beta).add_(data_term).div_(prior_energy * beta + kernel_energy)
        latent, beta = torch.fft.irfft2(spectrum, s=shape), beta * rate
    return latent[..., pad : pad + height, pad : pad + width]


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Labels (0 = background) of the 8-connected parts of a 2-D mask, by max-label propagation."""
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float32).view(mask.shape) * mask
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def prune_kernel(kernel: torch.Tensor, settings: EstimatorSettings) -> torch.Tensor:
    """Drop faint values and the small specks apart from the trajectory, then tidy."""
    kernel = torch.where(kernel < kernel.max() * settings.prune_below, torch.zeros_like(kernel), kernel)
    labels = connected_components(kernel > 0)
    mass = torch.zeros(int(labels.max()) + 1, dtype=kernel.dtype).scatter_add_(0, labels.flatten(), kernel.flatten())
    mass[0] = 0
    return tidy_kernel(kernel * (mass[labels] >= mass.max() * settings.minor_component))


def centre_crop(image: torch.Tensor, side: int) -> torch.Tensor:
    """The (at most) side × side centre of the last two axes."""
    height, width = image.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[..., top : top + side, left : left + side]


def estimate_kernel(image: torch.Tensor, settings: EstimatorSettings) -> torch.Tensor:
    """Blind kernel estimate from a linear-light (H, W) or (C, H, W) image, coarse to fine by √2 per scale
    (float32 inside); with ``settings.joint_channels`` the channels get a latent each and share one kernel,
    else their mean is estimated from."""
    image = centre_crop(image, settings.crop)
    if image.dim() == 2 or not settings.joint_channels:
        image = image.reshape(-1, *image.shape[-2:]).mean(0, keepdim=True)
    image = image.float()
    height, width = image.shape[-2:]
    scales = math.ceil(math.log(settings.kernel_size / 5) / math.log(math.sqrt(2))) + 1
    kernel: torch.Tensor | None = None
    for level in range(scales - 1, -1, -1):
        factor = math.sqrt(2) ** -level
        size = max(3, round(settings.kernel_size * factor) | 1)
        shape = (max(16, round(height * factor)), max(16, round(width * factor)))
        blurred = resize(image, shape) if level else image
        if kernel is None:
            kernel = torch.zeros(size, size, dtype=image.dtype)
            kernel[size // 2 - 1 : size // 2 + 2, size // 2] = 1 / 3
        else:
            kernel = tidy_kernel(resize(kernel, (size, size)))
        inside = interior(shape, size)
        blurred_gradients = gradients(blurred)
        weight = settings.latent_weight
        for _ in range(settings.finest_iterations if level == 0 else settings.iterations):
            latent_gradients = gradients(l0_latent(blurred, kernel, weight, settings.splitting_rate))
            kernel = kernel_from_gradients(
                latent_gradients, blurred_gradients, size, settings.kernel_weight, refill=(kernel, inside)
            )
            kernel = prune_kernel(kernel, settings)
            weight = max(weight / 1.1, settings.latent_weight_min)
    assert kernel is not None
    return kernel.double()


def kernel_spread(kernel: torch.Tensor) -> float:
    """Root-mean-square distance of the kernel's mass from its centre, in px (0 for a delta)."""
    offsets = torch.arange(kernel.shape[0], dtype=kernel.dtype) - kernel.shape[0] // 2
    return float((kernel * (offsets[:, None] ** 2 + offsets[None, :] ** 2)).sum().sqrt())


def kernel_support(kernel: torch.Tensor) -> float:
    """Pixels the kernel's mass effectively covers, 1 / Σk² (1 for a delta, n for n equal values)."""
    return float(1 / (kernel**2).sum())


@dataclass(frozen=True)
class KernelGate:
    """When an estimate is trusted; picked on four validation sets (docs/shipped_model_log.md)."""

    min_spread: float = 2.5  # px; below it the photo is nearly sharp and deconvolution loses more than it gains
    # A shake concentrates its mass on a path; failed estimates are diffuse (peak 0.003-0.008 on the
    # textureless validation fruit). Long true shakes also have low peaks (0.010-0.02), so the peak only
    # screens; the overshoot below decides.
    min_peak: float = 0.010
    # Light is in [0, 1]: deconvolving with a wrong kernel rings past both ends. On the validation sets, of
    # the estimates past spread and peak that beat the network, 62 of 64 left less than 7e-4 mean excess per
    # value (median 9e-5); of those that lost to it, 9 of 16 left more (median 1e-3). With the 8-round
    # isotropic deconvolution, 8 of 231 development estimates fall between 7e-4 and 1e-3: 7 beat the network
    # by 0.7-9.4 dB, one lost 5.6 dB; the validation sets do not move. At 1.5e-3 a nearly sharp frame
    # passes and loses 9.3 dB.
    max_overshoot: float = 1e-3
    # Smaller images hold too few edges: on a 192×160 crop every estimate failed, at every shake size.
    min_side: int = 384


@dataclass(frozen=True)
class KernelEstimate:
    kernel: torch.Tensor  # (K, K) float64, unit sum, centred on its mass to the nearest pixel
    spread: float
    peak: float
    trusted: bool
    overshoot: float | None = None  # of the centre crop's deconvolution, measured only when spread and peak passed
    attempts: int = 1  # 2 when the first estimate was turned away and this one comes from ``retry_crop``

    def report(self) -> dict[str, float | bool | None]:
        overshoot = None if self.overshoot is None else float(f"{self.overshoot:.3g}")
        return {
            "used": self.trusted,
            "spread_px": round(self.spread, 2),
            "peak": round(self.peak, 4),
            "overshoot": overshoot,
            "attempts": self.attempts,
        }


def judge_kernel(
    crop: torch.Tensor, kernel: torch.Tensor, settings: EstimatorSettings, gate: KernelGate
) -> tuple[KernelEstimate, torch.Tensor | None]:
    """Trust a kernel if it looks like a shake and deconvolving the (C, H, W) linear-light crop with it stays
    (nearly) inside the range of light; returns the crop's deconvolution too (None if it was not needed).

    Judging on the estimate's own centre crop costs a fraction of deconvolving the whole image, which only a
    trusted estimate pays for.
    """
    spread, peak = kernel_spread(kernel), float(kernel.max())
    if spread < gate.min_spread or peak < gate.min_peak:
        return KernelEstimate(kernel, spread, peak, trusted=False), None
    deconvolved = deconvolve_linear(crop, kernel, settings.restore_fidelity)
    ringing = overshoot(deconvolved)
    return KernelEstimate(kernel, spread, peak, ringing < gate.max_overshoot, ringing), deconvolved


def to_linear(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] sRGB-ish values → [0, 1] linear light (float32: half the FFT time of float64, same 8-bit answer)."""
    return ((pixels.float() + 1) / 2).clamp(0, 1) ** GAMMA


def from_linear(linear: torch.Tensor) -> torch.Tensor:
    """[0, 1] linear light → [-1, 1] model range (float32), clamped."""
    return (linear.clamp(0, 1) ** (1 / GAMMA) * 2 - 1).float()


def overshoot(linear: torch.Tensor) -> float:
    """Mean amount by which linear light leaves [0, 1], per value: ringing from a wrong kernel."""
    return float((linear - linear.clamp(0, 1)).abs().mean())


def deconvolve_linear(linear: torch.Tensor, kernel: torch.Tensor, fidelity: float) -> torch.Tensor:
    """Sparse-prior deconvolution of a (C, H, W) linear-light image; beyond its borders the scene is unknown
    (padded by a smooth wrap to start from, then refilled by the estimate: ``deconvolve_sparse``)."""
    (height, width), pad = linear.shape[-2:], kernel.shape[0]
    shape = (fft_length(height + 2 * pad), fft_length(width + 2 * pad))
    wrapped = wrap_each_smoothly(linear, pad, shape)
    observed = torch.zeros(shape, dtype=torch.bool)
    observed[pad : pad + height, pad : pad + width] = True
    return deconvolve_sparse(wrapped, kernel, fidelity, observed=observed)[:, pad : pad + height, pad : pad + width]


def can_estimate(shape: tuple[int, ...], settings: EstimatorSettings, gate: KernelGate) -> bool:
    """Whether an image of ``shape`` (…, H, W) is large enough to estimate a kernel from (``gate.min_side``)."""
    return min(shape[-2:]) >= max(gate.min_side, 2 * settings.kernel_size + 1)


def deconvolve_whole(
    linear: torch.Tensor, kernel: torch.Tensor, judged: torch.Tensor, settings: EstimatorSettings
) -> torch.Tensor:
    """The whole image's deconvolution: the judged crop's where the crop was the whole image, else made anew."""
    if judged.shape == linear.shape:
        return judged
    return deconvolve_linear(linear, kernel, settings.restore_fidelity)


def estimate_and_judge(
    linear: torch.Tensor, settings: EstimatorSettings, gate: KernelGate
) -> tuple[KernelEstimate, torch.Tensor | None]:
    """The estimate for a (3, H, W) linear-light image and its verdict, with the centre crop's deconvolution
    (``judge_kernel``); one retry on ``settings.retry_crop`` when the first is not trusted."""
    crop = centre_crop(linear, settings.crop)
    estimate, deconvolved = judge_kernel(crop, estimate_kernel(linear, settings), settings, gate)
    retry = settings.retry_crop
    # Where the larger crop is the same crop, a retry would repeat the same estimate
    if estimate.trusted or retry is None or centre_crop(linear, retry).shape == crop.shape:
        return estimate, deconvolved
    wider = dataclasses.replace(settings, crop=retry)
    estimate, deconvolved = judge_kernel(crop, estimate_kernel(linear, wider), settings, gate)
    return dataclasses.replace(estimate, attempts=2), deconvolved


def blind_deconvolution(
    pixels: torch.Tensor, settings: EstimatorSettings = EstimatorSettings(), gate: KernelGate = KernelGate()
) -> tuple[torch.Tensor | None, KernelEstimate | None]:
    """(3, H, W) in [-1, 1] → (deconvolved image in [-1, 1], or None when the estimate is not trusted; the estimate).

    The estimate is None when the image is too small to estimate a kernel from.
    """
    if not can_estimate(pixels.shape, settings, gate):
        return None, None
    linear = to_linear(pixels)
    estimate, deconvolved = estimate_and_judge(linear, settings, gate)
    if deconvolved is None or not estimate.trusted:
        return None, estimate
    return from_linear(deconvolve_whole(linear, estimate.kernel, deconvolved, settings)), estimate
