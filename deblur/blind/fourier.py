"""Fourier-domain helpers of the kernel-aware path: kernels as transfer functions, gradients with the FFT's
wrap-around boundary, padding that wraps without a seam, and FFT-friendly sizes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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

    A blur moves the photo by its kernel's centre of mass, and an estimate is centred only to the nearest
    pixel: placed exactly, the restored photo lands where the sharp one is.
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


def fft_length(n: int) -> int:
    """The smallest length ≥ n with no prime factor above 5: pocketfft is fastest there."""
    while True:
        m = n
        for prime in (2, 3, 5):
            while m % prime == 0:
                m //= prime
        if m == 1:
            return n
        n += 1


def padded_shape(shape: tuple[int, ...], pad: int) -> tuple[int, int]:
    """The FFT size for an (…, H, W) image padded by ``pad`` on every side, rounded up to ``fft_length``."""
    return fft_length(shape[-2] + 2 * pad), fft_length(shape[-1] + 2 * pad)


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


def fill_unobserved(
    observed: torch.Tensor, data: torch.Tensor, estimate_spectrum: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """``data`` where ``observed``, elsewhere the image whose rfft2 half-spectrum is ``estimate_spectrum``: what
    the current estimate predicts for data that is missing (the scene past an image's or a crop's edge)."""
    return torch.where(observed, data, torch.fft.irfft2(estimate_spectrum, s=shape))


def interior(shape: tuple[int, ...], kernel_size: int) -> torch.Tensor:
    """True away from the border, where a kernel of ``kernel_size`` sees no wrapped-around pixels."""
    border = kernel_size // 2 + 1
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[border:-border, border:-border] = True
    return inside


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(…, H, W) → (…, *shape), bilinear with antialiasing."""
    flat = image.reshape(1, -1, *image.shape[-2:])
    out = F.interpolate(flat, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*image.shape[:-2], *shape)


def centre_crop(image: torch.Tensor, side: int) -> torch.Tensor:
    """The (at most) side × side centre of the last two axes."""
    height, width = image.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[..., top : top + side, left : left + side]
