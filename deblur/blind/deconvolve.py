"""The non-blind step: a sparse-gradient-prior deconvolution (isotropic total variation, Krishnan & Fergus
2009) by half-quadratic splitting in the Fourier domain, with the scene past the image's edges unknown."""

from __future__ import annotations

import torch

from deblur.blind.fourier import (
    divergence,
    fill_unobserved,
    gradient_energy,
    gradients,
    mass_centred_otf,
    padded_shape,
    wrap_each_smoothly,
)
from deblur.blind.settings import BlindSettings


def shrink_gradients_(gx: torch.Tensor, gy: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's gradient vector (gx, gy) shortened by ``threshold`` (to zero if shorter), in place: the
    proximal step of the isotropic total variation Σ|∇x|, which does not prefer edges along the axes."""
    scale = torch.hypot(gx, gy).clamp_(min=threshold).reciprocal_().mul_(-threshold).add_(1)
    return gx.mul_(scale), gy.mul_(scale)


def deconvolve_sparse(
    blurred: torch.Tensor,
    kernel: torch.Tensor,
    settings: BlindSettings,
    observed: torch.Tensor | None = None,
    fidelity: float | None = None,
) -> torch.Tensor:
    """argmin fidelity/2·‖k ∗ x − y‖² + Σ|∇x| over the last two axes, by half-quadratic splitting, with k's
    centre of mass at the origin (``mass_centred_otf``); ``fidelity`` defaults to ``settings.restore_fidelity``.

    Each round shrinks the gradients, then solves the quadratic step exactly in the Fourier domain.
    ``observed`` (a mask of the last two axes, True on the image) makes the rest unknown: the padding stands for
    scene outside the frame, so each round refills it with the current estimate blurred by the kernel, and only
    the image's own pixels pull the answer.
    """
    fidelity = settings.restore_fidelity if fidelity is None else fidelity
    shape = blurred.shape[-2:]
    half = shape[-1] // 2 + 1  # real input: the half spectrum of rfft2 holds everything, for half the work
    otf = mass_centred_otf(kernel.to(blurred.dtype), shape)
    adjoint = fidelity * torch.conj(otf)
    data_term = adjoint * torch.fft.rfft2(blurred)
    kernel_energy = fidelity * otf.abs() ** 2
    prior_energy = gradient_energy(shape)[:, :half].to(blurred.dtype)
    latent, beta = blurred, settings.restore_beta_start
    rounds = settings.restore_rounds
    for round_ in range(rounds):
        gx, gy = shrink_gradients_(*gradients(latent), 1 / beta)
        spectrum = torch.fft.rfft2(divergence(gx, gy)).mul_(beta).add_(data_term)
        spectrum = spectrum.div_(prior_energy * beta + kernel_energy)
        latent = torch.fft.irfft2(spectrum, s=shape)
        if observed is not None and round_ < rounds - 1:  # the last round's refill would go unused
            data_term = adjoint * torch.fft.rfft2(fill_unobserved(observed, blurred, spectrum.mul_(otf), shape))
        beta *= settings.restore_beta_growth
    return latent


def deconvolve_linear(
    linear: torch.Tensor, kernel: torch.Tensor, settings: BlindSettings, fidelity: float | None = None
) -> torch.Tensor:
    """Sparse-prior deconvolution of a (C, H, W) linear-light image; beyond its borders the scene is unknown
    (padded by a smooth wrap to start from, then refilled by the estimate: ``deconvolve_sparse``)."""
    (height, width), pad = linear.shape[-2:], kernel.shape[0]
    shape = padded_shape(linear.shape, pad)
    wrapped = wrap_each_smoothly(linear, pad, shape)
    observed = torch.zeros(shape, dtype=torch.bool)
    observed[pad : pad + height, pad : pad + width] = True
    restored = deconvolve_sparse(wrapped, kernel, settings, observed, fidelity)
    return restored[:, pad : pad + height, pad : pad + width]


def to_linear(pixels: torch.Tensor, gamma: float) -> torch.Tensor:
    """[-1, 1] stored values → [0, 1] light, assuming ``gamma`` (float32: half the FFT time of float64)."""
    return ((pixels.float() + 1) / 2).clamp(0, 1) ** gamma


def from_linear(linear: torch.Tensor, gamma: float) -> torch.Tensor:
    """[0, 1] light → [-1, 1] model range (float32), clamped."""
    return (linear.clamp(0, 1) ** (1 / gamma) * 2 - 1).float()


def overshoot(linear: torch.Tensor) -> float:
    """Mean amount by which light leaves [0, 1], per value: ringing from a wrong kernel."""
    return float((linear - linear.clamp(0, 1)).abs().mean())
