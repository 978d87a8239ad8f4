"""Synthetic camera-shake blur: turn a folder of sharp photos into a paired blur/sharp dataset.

Kernels come from random camera trajectories (a damped random walk with inertia, sometimes a
sudden jerk), rasterised with sub-pixel splatting, so they are curved like real hand shake and
not only straight lines. Blur is applied in linear light-ish space (gamma 2.2) as a camera
integrates photons, then mild Gaussian noise and optional JPEG. Deterministic per seed.

    python -m train.synth SRC_DIR OUT_DIR [--val-fraction 0.1] [--seed 0] [--max-side 1280] [--min-side 256]
    python -m train.synth EVAL_PHOTOS OUT_DIR --val-fraction 0 --frame 1280x720 --min-extent 11 --max-extent 33
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deblur.files import IMAGE_SUFFIXES, list_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlurSettings:
    min_extent: int = 7  # kernel extent in px (longest side of the trajectory's bounding box)
    max_extent: int = 35
    noise_sigma: float = 1.0 / 255  # on [0, 1] values
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (70, 95)
    gamma: float = 2.2  # the blur mixes stored values raised to this power (light, approximately; 1: stored values)


def shake_trajectory(rng: np.random.Generator, steps: int = 64) -> np.ndarray:
    """(steps, 2) points of a hand-shake path: velocity with inertia plus random kicks."""
    velocity = rng.normal(size=2)
    points = np.zeros((steps, 2))
    momentum = rng.uniform(0.6, 0.95)  # high momentum → near-linear motion, low → wiggly
    jerk_at = rng.integers(steps) if rng.random() < 0.3 else -1
    for i in range(1, steps):
        kick = rng.normal(size=2) * (4.0 if i == jerk_at else 1.0)
        velocity = momentum * velocity + (1 - momentum) * kick
        points[i] = points[i - 1] + velocity
    return points


def rasterise_kernel(points: np.ndarray, extent: int) -> np.ndarray:
    """Scale the path to ``extent`` px and splat it bilinearly into a normalised odd-sized kernel.

    ``extent`` is the longer side of the path's bounding box. The kernel's centre of mass is its centre
    pixel, so blurring does not move the photo on average: the shift a kernel adds cannot be told from the
    blurred photo, and a network trained against shifted targets learns to hedge by smoothing.
    """
    span = np.ptp(points, axis=0).max()
    points = points * ((extent - 1) / span if span > 0 else 0.0)
    # Oversample the path (equal exposure per step) so fast segments still draw continuous strokes.
    dense = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in itertools.pairwise(points)])
    dense -= dense.mean(axis=0)  # bilinear splatting keeps this mean: it becomes the kernel's centroid
    radius = int(np.ceil(np.abs(dense).max())) + 1  # a pixel of margin for splatting
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float64)
    for x, y in dense + radius:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return (kernel / kernel.sum()).astype(np.float32)


def random_kernel(rng: np.random.Generator, settings: BlurSettings) -> np.ndarray:
    extent = int(rng.integers(settings.min_extent, settings.max_extent + 1))
    return rasterise_kernel(shake_trajectory(rng), extent)


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution of an (H, W, C) float image via FFT, with reflected borders (same size)."""
    pad = kernel.shape[0] // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = padded.shape[:2]
    kernel_fft = np.fft.rfft2(kernel, s=(height, width))
    out = np.fft.irfft2(np.fft.rfft2(padded, axes=(0, 1)) * kernel_fft[..., None], s=(height, width), axes=(0, 1))
    # The kernel's centre sits at (pad, pad), so the valid region starts at 2·pad.
    return out[2 * pad : 2 * pad + image.shape[0], 2 * pad : 2 * pad + image.shape[1]]


def to_linear(image: np.ndarray, gamma: float) -> np.ndarray:
    """uint8 sRGB-like values → float64 linear light in [0, 1], the space the blur is applied in."""
    return (image.astype(np.float64) / 255.0) ** gamma


def blur_image(sharp: np.ndarray, kernel: np.ndarray, rng: np.random.Generator, settings: BlurSettings) -> np.ndarray:
    """(H, W, 3) uint8 sharp → uint8 blurred with ``kernel``, noise and optional JPEG."""
    blurred = np.clip(convolve(to_linear(sharp, settings.gamma), kernel), 0, 1) ** (1 / settings.gamma)
    blurred = blurred + rng.normal(0, settings.noise_sigma, blurred.shape)
    result = (np.clip(blurred, 0, 1) * 255).round().astype(np.uint8)
    if rng.random() < settings.jpeg_probability:
        buffer = io.BytesIO()
        Image.fromarray(result).save(buffer, format="JPEG", quality=int(rng.integers(*settings.jpeg_quality)))
        result = np.asarray(Image.open(buffer).convert("RGB"))
    return result


def kernel_preview(kernel: np.ndarray, size: int = 64) -> Image.Image:
    scaled = (kernel / kernel.max() * 255).astype(np.uint8)
    return Image.fromarray(scaled).resize((size, size), Image.Resampling.NEAREST)


def fit_image(image: Image.Image, max_side: int | None) -> Image.Image:
    """RGB, downscaled so the longer side is at most ``max_side`` (photos' own blur shrinks too)."""
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def crop_to_frame(image: Image.Image, frame: tuple[int, int]) -> Image.Image:
    """RGB, scaled to cover ``frame`` (width, height) and centre-cropped to it: fixed-size evaluation frames."""
    image = image.convert("RGB")
    scale = max(frame[0] / image.width, frame[1] / image.height)
    size = (max(frame[0], round(image.width * scale)), max(frame[1], round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - frame[0]) // 2, (size[1] - frame[1]) // 2
    return image.crop((left, top, left + frame[0], top + frame[1]))


def load_photo(
    path: Path, max_side: int | None, min_side: int = 0, frame: tuple[int, int] | None = None
) -> np.ndarray | None:
    """The photo as (H, W, 3) uint8, or None (with a warning) if unreadable or smaller than ``min_side``.

    With ``frame`` the photo is cropped to exactly that (width, height) instead of fitted to ``max_side``.
    """
    try:
        with Image.open(path) as image:
            photo = np.asarray(crop_to_frame(image, frame) if frame else fit_image(image, max_side))
    except OSError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
    if min(photo.shape[:2]) < min_side:
        log.warning("skipping %s: %dx%d is smaller than %d px", path, photo.shape[1], photo.shape[0], min_side)
        return None
    return photo


IMAGE_FORMATS = ("png", "bmp")  # bmp: uncompressed, ~20× cheaper to read back for training patches


@dataclass(frozen=True)
class PhotoJob:
    """What every photo of one ``synthesize`` call shares (picklable, for worker processes)."""

    out_dir: Path
    seed: int
    max_side: int | None
    min_side: int
    variants: int
    settings: BlurSettings
    previews: bool
    frame: tuple[int, int] | None
    image_format: str


def write_pair(job: PhotoJob, split: str, name: str, sharp: np.ndarray, blurred: np.ndarray) -> None:
    for kind, array in (("sharp", sharp), ("blur", blurred)):
        target = job.out_dir / split / kind / f"{name}.{job.image_format}"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(target)


def synthesize_photo(job: PhotoJob, index: int, path: Path, split: str) -> int:
    """Write the blurred variants of one photo; returns the pairs written (0 if it was skipped)."""
    sharp = load_photo(path, job.max_side, job.min_side, job.frame)
    if sharp is None:
        return 0
    for variant in range(job.variants):
        # One generator per (photo, variant): output does not depend on processing order or workers.
        rng = np.random.default_rng([job.seed, index, variant])
        kernel = random_kernel(rng, job.settings)
        name = f"{path.stem}_{index:04d}_{variant}"
        write_pair(job, split, name, sharp, blur_image(sharp, kernel, rng, job.settings))
        if job.previews:
            target = job.out_dir / split / "kernels" / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            kernel_preview(kernel).save(target)
    return job.variants


def synthesize(
    src_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_side: int | None = 1280,
    min_side: int = 0,
    variants: int = 1,
    settings: BlurSettings = BlurSettings(),
    previews: bool = True,
    frame: tuple[int, int] | None = None,
    image_format: str = "png",
    workers: int = 1,
) -> int:
    """Write ``out_dir/{train,val}/{blur,sharp}/*.<format>`` from the photos in ``src_dir``; returns pairs written."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    sources = list_images(src_dir)
    if not sources:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {src_dir}")
    order = list(range(len(sources)))
    random.Random(seed).shuffle(order)
    n_val = round(len(sources) * val_fraction) if len(sources) > 1 else 0
    val_indices = set(order[:n_val])
    splits = ["val" if index in val_indices else "train" for index in range(len(sources))]
    job = PhotoJob(out_dir, seed, max_side, min_side, variants, settings, previews, frame, image_format)
    jobs = [job] * len(sources)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = sum(pool.map(synthesize_photo, jobs, range(len(sources)), sources, splits))
    else:
        written = sum(map(synthesize_photo, jobs, range(len(sources)), sources, splits))
    log.info("wrote %d pairs from %d photos to %s", written, len(sources), out_dir)
    return written


def parse_frame(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"frame must be positive, got {text!r}")
    return width, height


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("src_dir", type=Path, help="folder of sharp photos (searched recursively)")
    parser.add_argument("out_dir", type=Path, help="where {train,val}/{blur,sharp}/ are written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--max-side", type=int, default=1280, help="downscale photos to this longer side (0: keep)")
    parser.add_argument("--min-side", type=int, default=0, help="skip photos smaller than this (e.g. the patch size)")
    parser.add_argument("--variants", type=int, default=1, help="blurred versions per photo")
    parser.add_argument("--min-extent", type=int, default=BlurSettings.min_extent)
    parser.add_argument("--max-extent", type=int, default=BlurSettings.max_extent)
    parser.add_argument("--noise-sigma", type=float, default=BlurSettings.noise_sigma)
    parser.add_argument("--jpeg-probability", type=float, default=BlurSettings.jpeg_probability)
    parser.add_argument("--no-previews", action="store_true", help="skip the kernel preview images")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png", help="bmp: larger, much faster to train on")
    parser.add_argument("--workers", type=int, default=1, help="photos processed in parallel")
    parser.add_argument(
        "--frame", type=parse_frame, default=None, help="crop every photo to WIDTHxHEIGHT (e.g. 1280x720)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    settings = BlurSettings(args.min_extent, args.max_extent, args.noise_sigma, args.jpeg_probability)
    synthesize(
        args.src_dir,
        args.out_dir,
        seed=args.seed,
        val_fraction=args.val_fraction,
        max_side=args.max_side or None,
        min_side=args.min_side,
        variants=args.variants,
        settings=settings,
        previews=not args.no_previews,
        frame=args.frame,
        image_format=args.format,
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
