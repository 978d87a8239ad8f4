"""The blind kernel estimate: coarse to fine, alternating an L0-gradient latent image (Xu, Zheng & Jia 2013;
Pan et al. 2014), one per colour channel, with one least-squares kernel from all their gradients, pruned to
its main connected trajectory."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from deblur.blind.fourier import (
    centre_crop,
    divergence,
    fill_unobserved,
    gradient_energy,
    gradients,
    interior,
    kernel_centroid,
    kernel_otf,
    padded_shape,
    resize,
    wrap_each_smoothly,
)
from deblur.blind.settings import BlindSettings


def tidy_kernel(kernel: torch.Tensor, floor: float) -> torch.Tensor:
    """Non-negative, values under ``floor`` × the peak dropped, unit sum, centred on its mass to the nearest
    pixel (a delta if nothing is left)."""
    kernel = kernel.clamp(min=0)
    kernel = torch.where(kernel < kernel.max() * floor, torch.zeros_like(kernel), kernel)
    if kernel.sum() <= 0:
        kernel = torch.zeros_like(kernel)
        kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1
        return kernel
    kernel = kernel / kernel.sum()
    row, column = kernel_centroid(kernel)
    return torch.roll(kernel, (-round(row), -round(column)), (0, 1))


def kernel_from_gradients(
    latent: tuple[torch.Tensor, torch.Tensor],
    blurred: tuple[torch.Tensor, torch.Tensor],
    size: int,
    settings: BlindSettings,
    refill: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """argmin Σ‖k ∗ ∂x − ∂y‖² + w‖k‖² in the Fourier domain, cropped to ``size`` and tidied.

    The gradients are (…, H, W): the sum runs over every leading index too (the channels), one kernel for all.
    ``refill`` = (current kernel, mask of the pixels that are data): elsewhere the blurred gradients are
    replaced by the latent's blurred by the current kernel. Near the crop's edge the blur reached past it, so
    the blurred gradients there are no evidence; refilled, they agree with the current kernel and pull nowhere.
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
        return tidy_kernel(torch.zeros(size, size, dtype=latent[0].dtype), settings.prune_below)
    kernel = torch.fft.irfft2(numerator / (energy + settings.kernel_weight * mean_energy), s=shape)
    return tidy_kernel(torch.roll(kernel, (size // 2, size // 2), (0, 1))[:size, :size], settings.prune_below)


def l0_latent(blurred: torch.Tensor, kernel: torch.Tensor, weight: float, settings: BlindSettings) -> torch.Tensor:
    """argmin ‖k ∗ x − y‖² + weight·‖∇x‖₀ by half-quadratic splitting (Xu et al. 2013), in the Fourier domain,
    for each (H, W) image of a (…, H, W) stack.

    The L0 prior keeps the strong edges the kernel is estimated from and flattens everything else.
    """
    (height, width), pad = blurred.shape[-2:], kernel.shape[0]
    shape = padded_shape(blurred.shape, pad)
    padded = wrap_each_smoothly(blurred, pad, shape)
    otf = kernel_otf(kernel, shape, half=True)
    data_term, kernel_energy = torch.conj(otf) * torch.fft.rfft2(padded), otf.abs() ** 2
    prior_energy = gradient_energy(shape)[:, : shape[1] // 2 + 1].to(blurred.dtype)
    latent, beta = padded, settings.latent_beta_start * weight
    while beta < settings.latent_beta_max:
        gx, gy = gradients(latent)
        weak = (gx * gx).add_(gy * gy) < weight / beta  # cheaper to flatten than to keep: the L0 step
        spectrum = torch.fft.rfft2(divergence(gx.masked_fill_(weak, 0), gy.masked_fill_(weak, 0)))
        spectrum = spectrum.mul_(beta).add_(data_term).div_(prior_energy * beta + kernel_energy)
        latent, beta = torch.fft.irfft2(spectrum, s=shape), beta * settings.splitting_rate
    return latent[..., pad : pad + height, pad : pad + width]


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Labels (0 = background) of the 8-connected parts of a 2-D mask, by max-label propagation."""
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float32).view(mask.shape) * mask
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def prune_kernel(kernel: torch.Tensor, settings: BlindSettings) -> torch.Tensor:
    """Drop faint values and the small specks apart from the trajectory, then tidy."""
    kernel = torch.where(kernel < kernel.max() * settings.prune_below, torch.zeros_like(kernel), kernel)
    labels = connected_components(kernel > 0)
    mass = torch.zeros(int(labels.max()) + 1, dtype=kernel.dtype).scatter_add_(0, labels.flatten(), kernel.flatten())
    mass[0] = 0
    return tidy_kernel(kernel * (mass[labels] >= mass.max() * settings.minor_component), settings.prune_below)


def initial_kernel(size: int, settings: BlindSettings) -> torch.Tensor:
    """The coarsest scale's starting kernel: a short vertical line through the centre."""
    kernel = torch.zeros(size, size)
    centre, half = size // 2, settings.initial_line // 2
    kernel[centre - half : centre + half + 1, centre] = 1 / settings.initial_line
    return kernel


def scale_count(settings: BlindSettings) -> int:
    """Scales from ``coarsest_kernel`` up to ``kernel_size``, by ``scale_factor`` each."""
    return math.ceil(math.log(settings.kernel_size / settings.coarsest_kernel) / math.log(settings.scale_factor)) + 1


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """A square odd kernel zero-padded about its centre pixel to ``size`` (odd, not smaller)."""
    margin = (size - kernel.shape[0]) // 2
    return F.pad(kernel, (margin, margin, margin, margin))


def alternate(blurred: torch.Tensor, kernel: torch.Tensor, iterations: int, settings: BlindSettings) -> torch.Tensor:
    """``iterations`` rounds of latent (L0) then kernel (least squares, pruned) at one scale; the support is the
    kernel's side."""
    size = kernel.shape[0]
    inside = interior(blurred.shape[-2:], size)
    blurred_gradients = gradients(blurred)
    weight = settings.latent_weight
    for _ in range(iterations):
        latent_gradients = gradients(l0_latent(blurred, kernel, weight, settings))
        kernel = kernel_from_gradients(latent_gradients, blurred_gradients, size, settings, (kernel, inside))
        kernel = prune_kernel(kernel, settings)
        weight = max(weight / settings.latent_weight_decay, settings.latent_weight_min)
    return kernel


def coarse_to_fine(image: torch.Tensor, settings: BlindSettings) -> torch.Tensor:
    """The pyramid estimate of a (1 or C, h, w) float32 crop with a support of ``settings.kernel_size``."""
    height, width = image.shape[-2:]
    kernel: torch.Tensor | None = None
    for level in range(scale_count(settings) - 1, -1, -1):
        factor = settings.scale_factor**-level
        size = max(3, round(settings.kernel_size * factor) | 1)
        side = settings.coarsest_side
        shape = (max(side, round(height * factor)), max(side, round(width * factor)))
        blurred = resize(image, shape) if level else image
        if kernel is None:
            kernel = initial_kernel(size, settings).to(image.dtype)
        else:
            kernel = tidy_kernel(resize(kernel, (size, size)), settings.prune_below)
        kernel = alternate(blurred, kernel, settings.finest_iterations if level == 0 else settings.iterations, settings)
    assert kernel is not None
    return kernel


def estimate_kernel(image: torch.Tensor, settings: BlindSettings) -> torch.Tensor:
    """Blind kernel estimate from a linear-light (H, W) or (C, H, W) image's centre crop (float32 inside); with
    ``settings.joint_channels`` the channels get a latent each and share one kernel, else their mean is
    estimated from.

    With ``first_support`` set, the pyramid runs on that support, then the kernel is widened to ``kernel_size``
    and refined at full resolution (``growth_iterations``); else the pyramid runs on ``kernel_size``.
    """
    image = centre_crop(image, settings.crop)
    if image.dim() == 2 or not settings.joint_channels:
        image = image.reshape(-1, *image.shape[-2:]).mean(0, keepdim=True)
    image = image.float()
    first = min(settings.first_support or settings.kernel_size, settings.kernel_size) | 1
    kernel = coarse_to_fine(image, dataclasses.replace(settings, kernel_size=first))
    if first < settings.kernel_size:
        kernel = alternate(image, pad_kernel(kernel, settings.kernel_size), settings.growth_iterations, settings)
    return kernel.double()


def kernel_spread(kernel: torch.Tensor) -> float:
    """Root-mean-square distance of the kernel's mass from its centre, in px (0 for a delta)."""
    offsets = torch.arange(kernel.shape[0], dtype=kernel.dtype) - kernel.shape[0] // 2
    return float((kernel * (offsets[:, None] ** 2 + offsets[None, :] ** 2)).sum().sqrt())


def kernel_support(kernel: torch.Tensor) -> float:
    """Pixels the kernel's mass effectively covers, 1 / Σk² (1 for a delta, n for n equal values)."""
    return float(1 / (kernel**2).sum())
