"""Tiling properties: exact reconstruction with an identity model, weights summing to one, layout."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deblur.imageio import to_model_range, to_uint8
from deblur.tiling import axis_layout, count_tiles, feather_weights, fitted_tile, restore_tiled, tile_starts


def identity(batch: torch.Tensor) -> torch.Tensor:
    return batch.clone()


def assert_reconstructs(height: int, width: int, tile: int, overlap: int, batch_size: int = 3) -> None:
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8)
    image = to_model_range(pixels.numpy())  # as the handler decodes a real 8-bit image
    out = restore_tiled(identity, image, tile=tile, overlap=overlap, batch_size=batch_size)
    assert out.shape == image.shape
    # Weights sum to one, so the only error is float rounding of the blend (≪ one 8-bit level) ...
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
    # ... and the encoded result is bit-exact.
    assert np.array_equal(to_uint8(out), pixels.numpy())


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(1, 1, 512, 64), (513, 511, 512, 64), (1080, 2048, 512, 64), (300, 200, 64, 16), (5, 900, 128, 127)],
)
def test_identity_reconstructs_named_sizes(height: int, width: int, tile: int, overlap: int) -> None:
    assert_reconstructs(height, width, tile, overlap)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    tile=st.integers(2, 96),
    overlap_fraction=st.floats(0, 0.9),
    batch_size=st.integers(1, 5),
)
def test_identity_reconstructs_random_layouts(
    height: int, width: int, tile: int, overlap_fraction: float, batch_size: int
) -> None:
    overlap = int(tile * overlap_fraction)
    assert_reconstructs(height, width, tile, overlap, batch_size)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 5000), tile=st.integers(2, 600), overlap_fraction=st.floats(0, 0.95))
def test_layout_covers_axis_and_weights_sum_to_one(length: int, tile: int, overlap_fraction: float) -> None:
    layout = axis_layout(length, tile, int(tile * overlap_fraction))
    starts = layout.starts
    assert starts[0] == 0 and starts[-1] + layout.tile == length  # last tile shifted to the edge
    assert all(b > a for a, b in itertools.pairwise(starts))
    total = torch.zeros(length, dtype=torch.float64)
    for start, weight in zip(starts, layout.weights, strict=True):
        assert weight.min() > 0
        total[start : start + layout.tile] += weight.double()
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64), atol=1e-6, rtol=0)


def test_overlaps_are_at_least_requested_and_tiles_are_few() -> None:
    starts = tile_starts(2048, 512, 64)
    assert len(starts) == 5  # ceil((2048 - 64) / 448)
    overlaps = [a + 512 - b for a, b in itertools.pairwise(starts)]
    assert min(overlaps) >= 64 - 1  # even spacing, rounding may take one pixel
    assert count_tiles(2048, 2048) == 25
    assert count_tiles(720, 1280) == 2 * 3


def test_feathering_is_linear_across_overlap() -> None:
    weights = feather_weights(length=250, starts=(0, 100), tile=150)  # 50 px overlap
    ramp = weights[1][:50]
    steps = ramp[1:] - ramp[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 1 / 50), atol=1e-6, rtol=0)
    assert torch.all(weights[0][:100] == 1) and torch.all(weights[1][50:] == 1)


def test_model_sees_only_real_pixels_in_small_batches() -> None:
    seen: list[tuple[int, ...]] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        return batch

    restore_tiled(recording, torch.zeros(3, 700, 1000), tile=512, overlap=64, batch_size=2)
    # 2×3 tiles, each shrunk to 384 px (the smallest multiple of 16 that keeps ≥ 64 px overlap), no padding
    assert seen == [(2, 3, 384, 384), (2, 3, 384, 384), (2, 3, 384, 384)]
    seen.clear()
    restore_tiled(recording, torch.zeros(3, 700, 1000), tile=512, overlap=64, batch_size=6, align=0)
    assert seen == [(6, 3, 512, 512)]  # align=0 keeps the requested tile size
    seen.clear()
    restore_tiled(recording, torch.zeros(3, 40, 30), tile=512, overlap=64)
    assert seen == [(1, 3, 40, 30)]  # a small image is one tile of its own size


def test_predictor_output_channels_and_device_are_respected() -> None:
    gray = restore_tiled(lambda b: b.mean(dim=1, keepdim=True), torch.rand(3, 90, 70), tile=32, overlap=8)
    assert gray.shape == (1, 90, 70) and gray.dtype == torch.float32


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (64, 64), (64, -1)])
def test_nonsense_layouts_are_rejected(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        tile_starts(100, tile, overlap)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 9000), tile=st.integers(32, 1024), overlap_fraction=st.floats(0, 0.5))
def test_fitted_tiles_keep_count_and_overlap_and_never_grow(length: int, tile: int, overlap_fraction: float) -> None:
    overlap = int(tile * overlap_fraction)
    full = axis_layout(length, tile, overlap, align=0)
    fitted = axis_layout(length, tile, overlap, align=16)
    assert len(fitted.starts) == len(full.starts)
    assert fitted.tile <= full.tile
    if len(fitted.starts) > 1:
        assert fitted.tile % 16 == 0 or fitted.tile == full.tile
        gaps = [a + fitted.tile - b for a, b in itertools.pairwise(fitted.starts)]
        assert min(gaps) >= min(overlap, full.tile - 1) - 1  # even spacing may round one pixel away
    assert fitted_tile(length, full.tile, min(overlap, full.tile - 1), 0) == full.tile
