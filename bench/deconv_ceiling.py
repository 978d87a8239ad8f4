"""How much a kernel-aware method could gain: `python -m bench.deconv_ceiling PHOTO_DIR [--frames 12]`.

Shakes 1280×720 frames of each photo with ``train.synth``'s camera-shake kernels (11–33 px, noise
σ = 1/255, as the held-out set) and prints, for the centre 512×512 tile (the serving tile) of each and on
average, the PSNR gain of two deconvolutions that know the blur model (uniform blur in linear light):

- **true kernel**: regularised least squares (a gradient prior, solved in the Fourier domain) with the
  kernel that made the blur: the ceiling of any method that first finds the kernel;
- **estimated kernel**: the same, with a kernel estimated blindly from the blurred tile (or frame) in the style of
  Cho & Lee (2009): coarse to fine, alternating a shock-filtered latent image, a least-squares kernel
  from its strongest gradients, and a regularised deconvolution.

It measures headroom for the shipped network's design (no network is involved); point it at training or
validation photos, never at the held-out set. The estimator's settings were picked on training photos.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deblur.files import list_images
from deblur.imageio import to_model_range
from deblur.metrics import psnr, to_unit_range
from train.synth import GAMMA, BlurSettings, blur_image, crop_to_frame, random_kernel, to_linear


@dataclass(frozen=True)
class EstimatorSettings:
    kernel_size: int = 41  # support searched (odd); mass-centred 11–33 px shakes reach 41 px (47 measured worse)
    iterations: int = 7  # per scale
    latent_weight: float = 1e-2  # gradient prior of the latent image while estimating
    kernel_weight: float = 0.05  # Tikhonov weight on the kernel, relative to the mean gradient energy
    gradient_share: float = 2.0  # Cho & Lee's r: keep ≥ r·√(pixels·kernel pixels) gradients per direction
    restore_weight: float = 3e-2  # gradient prior of the final deconvolution with an estimated kernel


def kernel_otf(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """FFT of ``kernel`` zero-padded to ``shape`` with its centre moved to the origin."""
    padded = torch.zeros(shape, dtype=kernel.dtype)
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel
    return torch.fft.fft2(torch.roll(padded, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), (0, 1)))


def gradient_energy(shape: tuple[int, int]) -> torch.Tensor:
    """|F(∂x)|² + |F(∂y)|² for backward differences, the spectrum of the gradient prior."""
    fy = torch.fft.fftfreq(shape[0], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=torch.float64)[None, :]
    return (2 - 2 * torch.cos(2 * math.pi * fx)) + (2 - 2 * torch.cos(2 * math.pi * fy))


def gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image - torch.roll(image, 1, -1), image - torch.roll(image, 1, -2)


def deconvolve(blurred: torch.Tensor, kernel: torch.Tensor, weight: float) -> torch.Tensor:
    """argmin ‖k ∗ x − y‖² + weight·‖∇x‖², exact for circular convolution."""
    otf = kernel_otf(kernel, blurred.shape)
    spectrum = torch.conj(otf) * torch.fft.fft2(blurred) / (otf.abs() ** 2 + weight * gradient_energy(blurred.shape))
    return torch.fft.ifft2(spectrum).real


def wrap_smoothly(image: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad both axes by ``pad`` and cross-fade the padding so the FFT's wrap-around has no seam."""
    ramp = torch.linspace(0, 1, 2 * pad, dtype=image.dtype)
    weight = (2 * torch.minimum(ramp, 1 - ramp))[:, None]  # 0 where the padding meets the image, 1 at the seam
    out = F.pad(image[None, None], (pad, pad, pad, pad), mode="reflect")[0, 0]
    for _ in range(2):  # rows, then (transposed) columns
        band = torch.cat([out[-pad:], out[:pad]])  # the padding on both sides of the wrap
        straight = band[:1] + ramp[:, None] * (band[-1:] - band[:1])
        band = band * (1 - weight) + straight * weight
        out = torch.cat([band[pad:], out[pad:-pad], band[:pad]]).T
    return out


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=image.dtype) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    out = F.pad(image[None, None], (radius,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(out, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))[0, 0]


def shock_filter(image: torch.Tensor, step: float = 0.5) -> torch.Tensor:
    """One step of Osher–Rudin's shock filter: restores step edges that a blur made ramps."""
    p = F.pad(image[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    gx, gy = (p[1:-1, 2:] - p[1:-1, :-2]) / 2, (p[2:, 1:-1] - p[:-2, 1:-1]) / 2
    laplacian = p[1:-1, 2:] + p[1:-1, :-2] + p[2:, 1:-1] + p[:-2, 1:-1] - 4 * image
    return image - torch.sign(laplacian) * torch.sqrt(gx**2 + gy**2) * step


def interior(shape: tuple[int, ...], kernel_size: int) -> torch.Tensor:
    """True away from the border, where a kernel of ``kernel_size`` sees no wrapped-around pixels."""
    border = kernel_size // 2 + 1
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[border:-border, border:-border] = True
    return inside


def strongest_gradients(image: torch.Tensor, kernel_size: int, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``image`` with all but the strongest few per direction (4 bins) set to zero, borders too."""
    gx, gy = gradients(image)
    magnitude = torch.sqrt(gx**2 + gy**2)
    direction = ((torch.atan2(gy, gx) % math.pi) / (math.pi / 4)).long().clamp(max=3)
    inside = interior(magnitude.shape, kernel_size)
    wanted = int(share * math.sqrt(magnitude.numel() * kernel_size**2))
    keep = torch.zeros_like(inside)
    for bin_index in range(4):
        members = inside & (direction == bin_index)
        values = magnitude[members]
        if values.numel():
            keep |= members & (magnitude >= torch.topk(values, min(wanted, values.numel())).values[-1])
    return gx * keep, gy * keep


def tidy_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Non-negative, small values dropped, unit sum, centred on its mass (a delta if nothing is left)."""
    kernel = kernel.clamp(min=0)
    kernel = torch.where(kernel < kernel.max() / 20, torch.zeros_like(kernel), kernel)
    if kernel.sum() <= 0:
        kernel = torch.zeros_like(kernel)
        kernel[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1
        return kernel
    kernel = kernel / kernel.sum()
    index = torch.arange(kernel.shape[0], dtype=kernel.dtype)
    centre = kernel.shape[0] // 2
    shift = (round(centre - float((kernel.sum(1) * index).sum())), round(centre - float((kernel.sum(0) * index).sum())))
    return torch.roll(kernel, shift, (0, 1))


def kernel_from_gradients(
    latent: tuple[torch.Tensor, torch.Tensor], blurred: tuple[torch.Tensor, torch.Tensor], size: int, weight: float
) -> torch.Tensor:
    """argmin Σ‖k ∗ ∂x − ∂y‖² + w‖k‖² in the Fourier domain, cropped to ``size`` and tidied."""
    spectra = [torch.fft.fft2(g) for g in (*latent, *blurred)]
    numerator = torch.conj(spectra[0]) * spectra[2] + torch.conj(spectra[1]) * spectra[3]
    energy = spectra[0].abs() ** 2 + spectra[1].abs() ** 2
    kernel = torch.fft.ifft2(numerator / (energy + weight * energy.mean())).real
    return tidy_kernel(torch.roll(kernel, (size // 2, size // 2), (0, 1))[:size, :size])


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image[None, None], size=shape, mode="bilinear", align_corners=False, antialias=True)[0, 0]


def estimate_kernel(gray: torch.Tensor, settings: EstimatorSettings) -> torch.Tensor:
    """Blind kernel estimate from a linear-light gray image, coarse to fine by √2 per scale."""
    scales = math.ceil(math.log(settings.kernel_size / 5) / math.log(math.sqrt(2))) + 1
    kernel: torch.Tensor | None = None
    latent = gray
    for level in range(scales - 1, -1, -1):
        factor = math.sqrt(2) ** -level
        size = max(3, round(settings.kernel_size * factor) | 1)
        shape = (max(16, round(gray.shape[0] * factor)), max(16, round(gray.shape[1] * factor)))
        blurred = resize(gray, shape) if level else gray
        if kernel is None:
            kernel = torch.zeros(size, size, dtype=gray.dtype)
            kernel[size // 2 - 1 : size // 2 + 2, size // 2] = 1 / 3
            latent = blurred
        else:
            kernel, latent = tidy_kernel(resize(kernel, (size, size))), resize(latent, shape)
        inside = interior(blurred.shape, size)
        blurred_gradients = tuple(g * inside for g in gradients(blurred))
        for iteration in range(settings.iterations):
            sharpened = shock_filter(gaussian_blur(latent, 0.7))
            share = settings.gradient_share * 1.1**iteration  # more, weaker edges once the kernel is rough
            edges = strongest_gradients(sharpened, size, share)
            kernel = kernel_from_gradients(edges, blurred_gradients, size, settings.kernel_weight)
            latent = deconvolve(blurred, kernel, settings.latent_weight)
    assert kernel is not None
    return kernel


def restore(linear: torch.Tensor, kernel: torch.Tensor, weight: float) -> np.ndarray:
    """Deconvolve an (H, W, 3) linear-light image channel by channel; uint8 out."""
    pad = kernel.shape[0]
    channels = [deconvolve(wrap_smoothly(linear[..., c], pad), kernel, weight)[pad:-pad, pad:-pad] for c in range(3)]
    out = torch.stack(channels, -1).clamp(0, 1).numpy() ** (1 / GAMMA)
    return (out * 255).round().astype(np.uint8)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two (H, W, 3) uint8 images by the conversions and metric of train.evaluate and the server."""
    return psnr(to_unit_range(to_model_range(a)), to_unit_range(to_model_range(b)))


def shaken_frames(photo_dir: Path, frames: int, seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, sharp, blurred, kernel) for seeded 1280×720 frames, two shakes per photo."""
    blur = BlurSettings(min_extent=11, max_extent=33)
    for index, path in enumerate(list_images(photo_dir)[: math.ceil(frames / 2)]):
        with Image.open(path) as image:
            sharp = np.asarray(crop_to_frame(image, (1280, 720)))
        for variant in range(2):
            rng = np.random.default_rng([seed, index, variant])
            kernel = random_kernel(rng, blur)
            yield f"{path.stem}_{variant}", sharp, blur_image(sharp, kernel, rng, blur), kernel


def centre_window(shape: tuple[int, ...], tile: int) -> tuple[slice, slice]:
    top, left = (shape[0] - tile) // 2, (shape[1] - tile) // 2
    return slice(top, top + tile), slice(left, left + tile)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deconv_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("photo_dir", type=Path, help="sharp photos (training or validation ones)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--tile", type=int, default=512, help="side of the centre tile that is scored")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--estimate-on", choices=("tile", "frame"), default="tile",
        help="deconvolve the tile alone, estimating its kernel from it (as a tiled server would), "
        "or the whole frame, estimating the kernel from the frame; the centre tile is scored either way",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = EstimatorSettings()
    gains: dict[str, list[float]] = {"true kernel": [], "estimated kernel": []}
    print("| tile | kernel px | input dB | true kernel | estimated kernel |\n|---|---:|---:|---:|---:|")
    for name, sharp, blurred, kernel in shaken_frames(args.photo_dir, args.frames, args.seed):
        window = centre_window(sharp.shape, args.tile)
        if args.estimate_on == "tile":  # deconvolve the tile alone; else the frame, scored on the tile
            sharp, blurred, window = sharp[window], blurred[window], (slice(None), slice(None))
        before = psnr_u8(blurred[window], sharp[window])
        linear = torch.from_numpy(to_linear(blurred))
        candidates = {
            "true kernel": restore(linear, torch.from_numpy(kernel.astype(np.float64)), weight=3e-3),
            "estimated kernel": restore(linear, estimate_kernel(linear.mean(-1), settings), settings.restore_weight),
        }
        for method, restored in candidates.items():
            gains[method].append(psnr_u8(restored[window], sharp[window]) - before)
        print(f"| {name} | {kernel.shape[0]} | {before:.2f} | {gains['true kernel'][-1]:+.2f} | "
              f"{gains['estimated kernel'][-1]:+.2f} |", flush=True)  # fmt: skip
    for method, values in gains.items():
        print(f"{method}: mean {statistics.mean(values):+.2f} dB, min {min(values):+.2f}, max {max(values):+.2f}")


if __name__ == "__main__":
    main()
