"""How much a kernel-aware method could gain: `python -m bench.deconv_ceiling PHOTO_DIR [--frames 12]`.

Shakes 1280×720 frames of each photo with ``train.synth``'s camera-shake kernels (11–33 px, noise
σ = 1/255, as the held-out set) and prints, for the centre 512×512 tile (the serving tile) of each and on
average, the PSNR gain of two deconvolutions that know the blur model (uniform blur in linear light):

- **true kernel**: regularised least squares (a gradient prior, solved in the Fourier domain) with the
  kernel that made the blur: the ceiling of any method that first finds the kernel;
- **estimated kernel**: the same, with a kernel estimated blindly from the blurred tile (or frame): coarse
  to fine, alternating an L0-gradient latent image (Xu, Zheng & Jia 2013; Pan et al. 2014) with a
  least-squares kernel from its gradients, pruned to its main connected trajectory.

``--pairs DIR`` scores the estimated kernel on existing blur/sharp pairs instead (``DIR/blur``,
``DIR/sharp``, as ``train.evaluate`` reads them), over the whole image as ``train.evaluate`` does, and
prints the estimated kernel's spread and peak, the statistics a gate would decide on.

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
from train.data import find_pairs
from train.synth import GAMMA, BlurSettings, blur_image, crop_to_frame, random_kernel, to_linear


@dataclass(frozen=True)
class EstimatorSettings:
    kernel_size: int = 41  # support searched (odd); mass-centred 11–33 px shakes reach 41 px
    iterations: int = 5  # per scale
    latent_weight: float = 4e-3  # λ of the L0 gradient prior at the start of each scale
    latent_weight_min: float = 1e-4  # λ shrinks by 1.1 per iteration down to this
    splitting_rate: float = 4.0  # growth of the half-quadratic penalty β per inner step (2 is finer, 2× slower)
    kernel_weight: float = 0.2  # Tikhonov weight on the kernel, relative to the mean gradient energy
    prune_below: float = 0.05  # kernel values under this share of the peak are dropped
    minor_component: float = 0.1  # connected parts with less mass than this share of the heaviest are dropped
    crop: int = 768  # estimate on the centre crop of at most this side: the blur is uniform, the cost is not
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


def interior(shape: tuple[int, ...], kernel_size: int) -> torch.Tensor:
    """True away from the border, where a kernel of ``kernel_size`` sees no wrapped-around pixels."""
    border = kernel_size // 2 + 1
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[border:-border, border:-border] = True
    return inside


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


def l0_latent(blurred: torch.Tensor, kernel: torch.Tensor, weight: float, rate: float) -> torch.Tensor:
    """argmin ‖k ∗ x − y‖² + weight·‖∇x‖₀ by half-quadratic splitting (Xu et al. 2013), in the Fourier domain.

    The L0 prior keeps the strong edges the kernel is estimated from and flattens everything else.
    """
    pad = kernel.shape[0]
    padded = wrap_smoothly(blurred, pad)
    otf = kernel_otf(kernel, padded.shape)
    data_term, kernel_energy = torch.conj(otf) * torch.fft.fft2(padded), otf.abs() ** 2
    prior_energy = gradient_energy(padded.shape).to(blurred.dtype)
    latent, beta = padded, 2 * weight
    while beta < 1e5:
        gx, gy = gradients(latent)
        weak = gx**2 + gy**2 < weight / beta  # cheaper to flatten than to keep: the L0 step
        gx, gy = gx.masked_fill(weak, 0), gy.masked_fill(weak, 0)
        divergence = (gx - torch.roll(gx, -1, -1)) + (gy - torch.roll(gy, -1, -2))  # ∇ᵀ(gx, gy)
        spectrum = (data_term + beta * torch.fft.fft2(divergence)) / (kernel_energy + beta * prior_energy)
        latent, beta = torch.fft.ifft2(spectrum).real, beta * rate
    return latent[pad:-pad, pad:-pad]


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
    height, width = image.shape
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[top : top + side, left : left + side]


def estimate_kernel(gray: torch.Tensor, settings: EstimatorSettings) -> torch.Tensor:
    """Blind kernel estimate from a linear-light gray image, coarse to fine by √2 per scale (float32 inside)."""
    gray = centre_crop(gray.float(), settings.crop)
    scales = math.ceil(math.log(settings.kernel_size / 5) / math.log(math.sqrt(2))) + 1
    kernel: torch.Tensor | None = None
    for level in range(scales - 1, -1, -1):
        factor = math.sqrt(2) ** -level
        size = max(3, round(settings.kernel_size * factor) | 1)
        shape = (max(16, round(gray.shape[0] * factor)), max(16, round(gray.shape[1] * factor)))
        blurred = resize(gray, shape) if level else gray
        if kernel is None:
            kernel = torch.zeros(size, size, dtype=gray.dtype)
            kernel[size // 2 - 1 : size // 2 + 2, size // 2] = 1 / 3
        else:
            kernel = tidy_kernel(resize(kernel, (size, size)))
        inside = interior(blurred.shape, size)
        blurred_gradients = tuple(g * inside for g in gradients(blurred))
        weight = settings.latent_weight
        for _ in range(settings.iterations):
            latent = l0_latent(blurred, kernel, weight, settings.splitting_rate)
            kernel = kernel_from_gradients(gradients(latent), blurred_gradients, size, settings.kernel_weight)
            kernel = prune_kernel(kernel, settings)
            weight = max(weight / 1.1, settings.latent_weight_min)
    assert kernel is not None
    return kernel.double()


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


def kernel_spread(kernel: torch.Tensor) -> float:
    """Root-mean-square distance of the kernel's mass from its centre, in px (0 for a delta)."""
    offsets = torch.arange(kernel.shape[0], dtype=kernel.dtype) - kernel.shape[0] // 2
    return float((kernel * (offsets[:, None] ** 2 + offsets[None, :] ** 2)).sum().sqrt())


def kernel_support(kernel: torch.Tensor) -> float:
    """Pixels the kernel's mass effectively covers, 1 / Σk² (1 for a delta, n for n equal values)."""
    return float(1 / (kernel**2).sum())


def score_pairs(pair_dir: Path, settings: EstimatorSettings) -> list[float]:
    """Whole-image gain of the estimated-kernel deconvolution on each blur/sharp pair, one row each."""
    gains = []
    print("| image | input dB | estimated kernel | kernel spread px | kernel peak | kernel support px |\n"
          "|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for pair in find_pairs(pair_dir):
        with Image.open(pair.blur) as blur_file, Image.open(pair.sharp) as sharp_file:
            blurred, sharp = np.asarray(blur_file.convert("RGB")), np.asarray(sharp_file.convert("RGB"))
        linear = torch.from_numpy(to_linear(blurred))
        kernel = estimate_kernel(linear.mean(-1), settings)
        before = psnr_u8(blurred, sharp)
        gains.append(psnr_u8(restore(linear, kernel, settings.restore_weight), sharp) - before)
        print(f"| {pair.blur.stem} | {before:.2f} | {gains[-1]:+.2f} | {kernel_spread(kernel):.2f} | "
              f"{float(kernel.max()):.3f} | {kernel_support(kernel):.1f} |", flush=True)  # fmt: skip
    return gains


def score_photos(args: argparse.Namespace, settings: EstimatorSettings) -> dict[str, list[float]]:
    """Centre-tile gains of both deconvolutions on seeded shakes of the photos, one row each."""
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
    return gains


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deconv_ceiling", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("photo_dir", type=Path, nargs="?", help="sharp photos (training or validation ones)")
    source.add_argument("--pairs", type=Path, help="a folder of blur/ and sharp/ pairs to score instead")
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
    gains = {"estimated kernel": score_pairs(args.pairs, settings)} if args.pairs else score_photos(args, settings)
    for method, values in gains.items():
        print(f"{method}: mean {statistics.mean(values):+.2f} dB, min {min(values):+.2f}, max {max(values):+.2f}")


if __name__ == "__main__":
    main()
