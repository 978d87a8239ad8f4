"""How much a kernel-aware method could gain: `python -m bench.deconv_ceiling PHOTO_DIR [--frames 12]`.

Shakes 1280×720 frames of each photo with ``train.synth``'s camera-shake kernels (11–33 px, noise
σ = 1/255, as the held-out set) and prints, for the centre 512×512 tile (the serving tile) of each and on
average, the PSNR gain of two deconvolutions that know the blur model (uniform blur in linear light):

- **true kernel**: the served sparse-gradient-prior deconvolution (``deblur.blind.deconvolve``),
  with the kernel that made the blur and a data weight of 3000 (the best of 300–3000 on training photos):
  the ceiling of any method that first finds the kernel;
- **estimated kernel**: the same at the served weight, with a kernel estimated blindly from the blurred
  tile (or frame): coarse to fine, alternating an L0-gradient latent image (Xu, Zheng & Jia 2013; Pan et
  al. 2014) with a least-squares kernel from its gradients, pruned to its main connected trajectory.

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
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblur.blind.deconvolve import deconvolve_linear, from_linear
from deblur.blind.estimate import estimate_kernel, kernel_spread, kernel_support
from deblur.blind.settings import BlindSettings
from deblur.files import list_images
from deblur.imageio import to_model_range, to_uint8
from deblur.metrics import psnr, to_unit_range
from train.data import find_pairs
from train.synth import BlurSettings, blur_image, crop_to_frame, random_kernel, to_linear


def restore(linear: torch.Tensor, kernel: torch.Tensor, settings: BlindSettings, fidelity: float) -> np.ndarray:
    """Deconvolve an (H, W, 3) linear-light image as the server does; uint8 out."""
    restored = deconvolve_linear(linear.permute(2, 0, 1).float(), kernel.float(), settings, fidelity)
    return to_uint8(from_linear(restored, settings.gamma))


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


def score_pairs(pair_dir: Path, settings: BlindSettings) -> list[float]:
    """Whole-image gain of the estimated-kernel deconvolution on each blur/sharp pair, one row each."""
    gains = []
    print("| image | input dB | estimated kernel | kernel spread px | kernel peak | kernel support px |\n"
          "|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for pair in find_pairs(pair_dir):
        with Image.open(pair.blur) as blur_file, Image.open(pair.sharp) as sharp_file:
            blurred, sharp = np.asarray(blur_file.convert("RGB")), np.asarray(sharp_file.convert("RGB"))
        linear = torch.from_numpy(to_linear(blurred, settings.gamma))
        kernel = estimate_kernel(linear.permute(2, 0, 1), settings)
        before = psnr_u8(blurred, sharp)
        gains.append(psnr_u8(restore(linear, kernel, settings, settings.restore_fidelity), sharp) - before)
        print(f"| {pair.blur.stem} | {before:.2f} | {gains[-1]:+.2f} | {kernel_spread(kernel):.2f} | "
              f"{float(kernel.max()):.3f} | {kernel_support(kernel):.1f} |", flush=True)  # fmt: skip
    return gains


def score_photos(args: argparse.Namespace, settings: BlindSettings) -> dict[str, list[float]]:
    """Centre-tile gains of both deconvolutions on seeded shakes of the photos, one row each."""
    gains: dict[str, list[float]] = {"true kernel": [], "estimated kernel": []}
    print("| tile | kernel px | input dB | true kernel | estimated kernel |\n|---|---:|---:|---:|---:|")
    for name, sharp, blurred, kernel in shaken_frames(args.photo_dir, args.frames, args.seed):
        window = centre_window(sharp.shape, args.tile)
        if args.estimate_on == "tile":  # deconvolve the tile alone; else the frame, scored on the tile
            sharp, blurred, window = sharp[window], blurred[window], (slice(None), slice(None))
        before = psnr_u8(blurred[window], sharp[window])
        linear = torch.from_numpy(to_linear(blurred, settings.gamma))
        candidates = {
            "true kernel": restore(linear, torch.from_numpy(kernel), settings, fidelity=3000.0),
            "estimated kernel": restore(
                linear, estimate_kernel(linear.permute(2, 0, 1), settings), settings, settings.restore_fidelity
            ),
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
    settings = BlindSettings()
    gains = {"estimated kernel": score_pairs(args.pairs, settings)} if args.pairs else score_photos(args, settings)
    for method, values in gains.items():
        print(f"{method}: mean {statistics.mean(values):+.2f} dB, min {min(values):+.2f}, max {max(values):+.2f}")


if __name__ == "__main__":
    main()
