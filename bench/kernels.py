"""Camera-shake kernels for the quality matrix, independent of ``train.synth`` (whose kernels tuned the product).

Three generators, each a path of sub-pixel points with exposure weights, rasterised by bilinear splatting:

- ``acceleration_path``: smooth random-acceleration camera motion: white 2-D acceleration, low-pass filtered
  (Gaussian in time), integrated twice from a random initial velocity; the exposure weight along the path
  is a smooth random positive function (the shutter's light is not uniform in time);
- ``linear_path``: a straight motion at a random angle, uniform exposure;
- ``arc_path``: constant angular velocity along a circular arc (a random radius and swept angle).

``kernel`` scales a path so that its bounding box's longer side spans ``extent - 1`` px (an ``extent``-px
kernel), splats it, normalises it to unit sum and centres it on its mass: bilinear splatting keeps the
weighted mean of the points, so the centre of mass sits exactly on the centre pixel of an odd-sized square.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d

GENERATORS = ("acceleration", "linear", "arc")
STEPS = 600  # points along a path


def acceleration_path(rng: np.random.Generator, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 2) as (x, y), weights (N,)) of a smooth random-acceleration path (arbitrary scale)."""
    smoothing = rng.uniform(0.02, 0.08) * steps  # the acceleration's correlation time, in steps
    acceleration = gaussian_filter1d(rng.normal(size=(steps, 2)), smoothing, axis=0, mode="nearest")
    acceleration /= acceleration.std() + 1e-12
    velocity = np.cumsum(acceleration, axis=0) / steps + rng.normal(size=2) * rng.uniform(0, 1.5)
    points = np.cumsum(velocity, axis=0)
    exposure = gaussian_filter1d(rng.normal(size=steps), steps / 8, mode="nearest")
    exposure = 1 + 0.6 * exposure / (np.abs(exposure).max() + 1e-12)
    return points, exposure.clip(0.2, None)


def linear_path(rng: np.random.Generator, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """A straight segment at a random angle, uniform exposure."""
    angle = rng.uniform(0, math.pi)
    t = np.linspace(-0.5, 0.5, steps)
    return np.stack([t * math.cos(angle), t * math.sin(angle)], axis=1), np.ones(steps)


def arc_path(rng: np.random.Generator, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Constant angular velocity along a circle arc sweeping 40°–270° from a random start."""
    sweep, start = math.radians(rng.uniform(40, 270)), rng.uniform(0, 2 * math.pi)
    theta = start + np.linspace(0, sweep, steps)
    return np.stack([np.cos(theta), np.sin(theta)], axis=1), np.ones(steps)


PATHS = {"acceleration": acceleration_path, "linear": linear_path, "arc": arc_path}


def splat(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinear splat of (x, y) ``points`` with ``weights`` into the smallest odd square centred on their
    weighted mean; unit sum, its centre of mass on the centre pixel."""
    weights = weights / weights.sum()
    centred = points - (points * weights[:, None]).sum(0)
    half = math.ceil(np.abs(centred).max() + 1e-9)
    side = 2 * half + 1
    kernel = np.zeros((side, side))
    x, y = centred[:, 0] + half, centred[:, 1] + half
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, side - 1), np.clip(x0 + dx, 0, side - 1)), weights * share)
    return kernel / kernel.sum()


def kernel(kind: str, extent: float, rng: np.random.Generator) -> np.ndarray:
    """An ``extent``-px kernel from generator ``kind`` (see the module docstring): odd square, unit sum,
    mass-centred. ``extent`` ≤ 1 gives the 1×1 identity."""
    if extent <= 1:
        return np.ones((1, 1))
    points, weights = PATHS[kind](rng)
    span = (points.max(0) - points.min(0)).max()
    if span < 1e-9:  # a path that did not move
        return np.ones((1, 1))
    return splat(points * ((extent - 1) / span), weights)


def kernel_extent(k: np.ndarray, share: float = 1e-3) -> int:
    """The longer side of the bounding box of the kernel's values above ``share`` of its peak, in px."""
    rows, cols = np.nonzero(k > share * k.max())
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def centre_of_mass(k: np.ndarray) -> tuple[float, float]:
    """(row, column) of the kernel's centre of mass relative to its centre pixel."""
    rows, cols = np.arange(k.shape[0]) - k.shape[0] // 2, np.arange(k.shape[1]) - k.shape[1] // 2
    total = k.sum()
    return float((k.sum(1) * rows).sum() / total), float((k.sum(0) * cols).sum() / total)


def odd_square(k: np.ndarray) -> np.ndarray:
    """``k`` zero-padded (after its last row/column) to a square of odd side, as the product's code assumes."""
    side = max(k.shape)
    side += 1 - side % 2
    out = np.zeros((side, side), dtype=k.dtype)
    out[: k.shape[0], : k.shape[1]] = k
    return out
