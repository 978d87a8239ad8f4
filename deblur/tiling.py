"""Restore an image of any size with overlapping tiles and linear feathered blending.

The layout is fitted to the image: along each axis the fewest tiles that keep at least the
requested overlap, each shrunk to the smallest size that still covers the axis, spread evenly so
the first starts at 0 and the last ends at the image edge (never padded beyond the image). Blend
weights are separable linear ramps normalised per axis, so the weights of all tiles covering a
pixel sum to one and the output needs no weight buffer: memory is the output image plus one
batch of tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_ALIGN = 16  # the architectures pad to a multiple of 2**4 inside forward


@dataclass(frozen=True)
class AxisLayout:
    """Tile placement along one axis: start offsets, the tile length, and per-tile weights."""

    starts: tuple[int, ...]
    tile: int
    weights: torch.Tensor  # (n_tiles, tile) float32; columns sum to one where tiles overlap


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Evenly spaced starts covering ``length`` with tiles of ``tile`` px overlapping ≥ ``overlap``."""
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile ≥ 1 and 0 ≤ overlap < tile, got tile={tile} overlap={overlap}")
    if length <= tile:
        return (0,)
    count = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    return tuple(round(i * span / (count - 1)) for i in range(count))


def feather_weights(length: int, starts: tuple[int, ...], tile: int) -> torch.Tensor:
    """Per-tile 1-D weights: linear ramps across each overlap, flat elsewhere, normalised to sum 1."""
    n = len(starts)
    position = torch.arange(tile, dtype=torch.float64) + 0.5
    raw = torch.ones(n, tile, dtype=torch.float64)
    for i in range(n):
        left = starts[i - 1] + tile - starts[i] if i > 0 else 0
        right = starts[i] + tile - starts[i + 1] if i < n - 1 else 0
        if left > 0:  # ramp up across the overlap with the previous tile
            raw[i] = torch.minimum(raw[i], position / left)
        if right > 0:  # ramp down across the overlap with the next tile
            raw[i] = torch.minimum(raw[i], (tile - position) / right)
    total = torch.zeros(length, dtype=torch.float64)
    for i, start in enumerate(starts):
        total[start : start + tile] += raw[i]
    normalised = torch.stack([raw[i] / total[s : s + tile] for i, s in enumerate(starts)])
    return normalised.float()


def fitted_tile(length: int, tile: int, overlap: int, align: int) -> int:
    """The smallest tile (a multiple of ``align``, at most ``tile``) that covers ``length`` with the same
    number of tiles and at least ``overlap``: no pixel is computed more often than the overlap needs.

    ``align=0`` keeps ``tile``. Aligning to the model's padding multiple avoids padding each tile.
    """
    count = len(tile_starts(length, tile, overlap))
    if count == 1 or align < 1:
        return tile
    needed = math.ceil((length + (count - 1) * overlap) / count)
    return min(tile, math.ceil(needed / align) * align)


def axis_layout(length: int, tile: int, overlap: int, align: int = DEFAULT_ALIGN) -> AxisLayout:
    tile = min(tile, length)
    overlap = min(overlap, tile - 1)
    tile = fitted_tile(length, tile, overlap, align)
    starts = tile_starts(length, tile, overlap)
    return AxisLayout(starts, tile, feather_weights(length, starts, tile))


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of an image go: one ``AxisLayout`` per axis."""

    rows: AxisLayout
    cols: AxisLayout

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image the layout covers."""
        return self.rows.starts[-1] + self.rows.tile, self.cols.starts[-1] + self.cols.tile

    def transposed(self) -> TileLayout:
        """The layout of the image turned by 90° (each axis's layout depends only on its length)."""
        return TileLayout(self.cols, self.rows)


def tile_layout(height: int, width: int, tile: int = 512, overlap: int = 64, align: int = DEFAULT_ALIGN) -> TileLayout:
    return TileLayout(axis_layout(height, tile, overlap, align), axis_layout(width, tile, overlap, align))


def count_tiles(height: int, width: int, tile: int = 512, overlap: int = 64) -> int:
    return tile_layout(height, width, tile, overlap).count


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.inference_mode()
def restore_tiled(
    predict: Predictor,
    image: torch.Tensor,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    align: int = DEFAULT_ALIGN,
    layout: TileLayout | None = None,
) -> torch.Tensor:
    """Run ``predict`` over overlapping tiles of ``image`` (C, H, W) and blend the results.

    ``predict`` maps (B, C, th, tw) → (B, C_out, th, tw) on ``device`` (default: the image's).
    Tiles are at most ``tile`` px, shrunk to fit the image (see ``fitted_tile``; ``align=0``: never); a
    ``layout`` computed beforehand (``tile_layout``) replaces ``tile``, ``overlap`` and ``align``.
    Returns a float32 (C_out, H, W) tensor on the image's device, not clamped.
    """
    if image.dim() != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    _, height, width = image.shape
    layout = layout or tile_layout(height, width, tile, overlap, align)
    if layout.shape != (height, width):
        raise ValueError(f"the tile layout covers {layout.shape}, the image is {(height, width)}")
    rows, cols = layout.rows, layout.cols
    run_device = torch.device(device) if device is not None else image.device
    row_w = rows.weights.to(image.device)
    col_w = cols.weights.to(image.device)
    grid = [(r, c) for r in range(len(rows.starts)) for c in range(len(cols.starts))]
    output: torch.Tensor | None = None
    for chunk in _batches(grid, batch_size):
        tiles = torch.stack(
            [
                image[:, rows.starts[r] : rows.starts[r] + rows.tile, cols.starts[c] : cols.starts[c] + cols.tile]
                for r, c in chunk
            ]
        )
        restored = predict(tiles.to(run_device)).to(image.device, torch.float32)  # (B, C_out, th, tw)
        if output is None:
            output = torch.zeros(restored.shape[1], height, width, dtype=torch.float32, device=image.device)
        for (r, c), result in zip(chunk, restored, strict=True):
            weight = row_w[r][:, None] * col_w[c][None, :]  # (th, tw), separable feathering
            y, x = rows.starts[r], cols.starts[c]
            output[:, y : y + rows.tile, x : x + cols.tile] += result * weight
    assert output is not None  # the grid always has at least one tile
    return output
