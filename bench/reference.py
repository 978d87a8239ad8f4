"""Seed 001's tiling loop as that document writes it, kept only as the benchmark's baseline.

Fixed-stride grid (stride = tile − overlap) starting at 0, edge tiles cut short by slicing,
one tile per forward call in fp32, a feather weight map built for every tile, and a weight
buffer the size of the image to normalise by.
"""

from __future__ import annotations

import torch
from torch import nn


def tile_tensor(image: torch.Tensor, tile_size: int = 512, overlap: int = 64):
    stride = tile_size - overlap
    _, _, height, width = image.shape
    tiles, coords = [], []
    for y in range(0, height, stride):
        for x in range(0, width, stride):
            tile = image[:, :, y : y + tile_size, x : x + tile_size]
            tiles.append(tile)
            coords.append((x, y, x + tile.shape[-1], y + tile.shape[-2]))
    return tiles, coords


def create_blend_weight(shape: torch.Size, overlap: int) -> torch.Tensor:
    """Linear ramps of ``overlap`` px on all four sides (never zero, so the division is safe)."""
    height, width = shape[-2:]
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    wy, wx = torch.ones(height), torch.ones(width)
    ny, nx = min(overlap, height), min(overlap, width)
    wy[:ny] = torch.minimum(wy[:ny], ramp[:ny])
    wy[height - ny :] = torch.minimum(wy[height - ny :], ramp[:ny].flip(0))
    wx[:nx] = torch.minimum(wx[:nx], ramp[:nx])
    wx[width - nx :] = torch.minimum(wx[width - nx :], ramp[:nx].flip(0))
    return wy[:, None] * wx[None, :]


def stitch_tiles(tiles, coords, image_shape, overlap: int = 64) -> torch.Tensor:
    output = torch.zeros(image_shape[1:], device=tiles[0].device)
    weight = torch.zeros(image_shape[1:], device=tiles[0].device)
    for tile, (x1, y1, x2, y2) in zip(tiles, coords, strict=True):
        tile_weight = create_blend_weight(tile.shape, overlap).to(tile.device)
        output[:, y1:y2, x1:x2] += tile[0] * tile_weight
        weight[:, y1:y2, x1:x2] += tile_weight
    return output / weight


@torch.no_grad()
def run_inference(image: torch.Tensor, model: nn.Module, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """(1, 3, H, W) → (3, H, W), clamped, exactly the seed's pipeline."""
    tiles, coords = tile_tensor(image, tile_size, overlap)
    outputs = [model(tile) for tile in tiles]
    return stitch_tiles(outputs, coords, image.shape, overlap).clamp(-1, 1)
