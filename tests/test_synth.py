"""Synthetic camera-shake blur: kernels, determinism, dataset layout."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from conftest import textured_image
from PIL import Image

from train.data import find_pairs
from train.synth import BlurSettings, blur_image, convolve, parse_frame, random_kernel, synthesize


def test_kernels_are_normalised_centred_on_their_mass_and_not_all_straight() -> None:
    settings = BlurSettings(min_extent=9, max_extent=35)
    kernels = [random_kernel(np.random.default_rng(seed), settings) for seed in range(20)]
    for kernel in kernels:
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert abs(kernel.sum() - 1) < 1e-5 and kernel.min() >= 0
        assert kernel.shape[0] <= 2 * 35 + 3  # centred on its mass, a path can reach a whole extent out
        support = np.argwhere(kernel > 0)
        assert np.ptp(support, axis=0).max() <= 35 + 1  # the path's extent, plus splatting's pixel
        rows, cols = np.indices(kernel.shape)
        centre = (kernel.shape[0] - 1) / 2
        assert abs((kernel * rows).sum() - centre) < 1e-3 and abs((kernel * cols).sum() - centre) < 1e-3
    # A straight-line kernel has rank ~1 support along one direction; curved paths fill more rows and columns.
    spreads = [min((k > 0).any(axis=0).sum(), (k > 0).any(axis=1).sum()) for k in kernels]
    assert max(spreads) > 5


def test_convolution_with_delta_is_identity() -> None:
    image = np.random.default_rng(0).random((20, 30, 3))
    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1
    np.testing.assert_allclose(convolve(image, delta), image, atol=1e-6)


def test_blur_lowers_sharpness_and_is_deterministic() -> None:
    sharp = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # all high frequencies
    settings = BlurSettings(min_extent=15, max_extent=15, noise_sigma=0)
    first = blur_image(sharp, random_kernel(np.random.default_rng(1), settings), np.random.default_rng(2), settings)
    again = blur_image(sharp, random_kernel(np.random.default_rng(1), settings), np.random.default_rng(2), settings)
    assert np.array_equal(first, again)
    gradient = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert gradient(first) < 0.5 * gradient(sharp)


def test_synthesize_writes_paired_layout(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(5):
        Image.fromarray(textured_image(80, 60, seed=i)).save(src / f"p{i}.jpg")
    assert synthesize(src, tmp_path / "out", seed=3, val_fraction=0.2, variants=2) == 10
    train, val = find_pairs(tmp_path / "out" / "train"), find_pairs(tmp_path / "out" / "val")
    assert (len(train), len(val)) == (8, 2)
    assert len(list((tmp_path / "out" / "train" / "kernels").glob("*.png"))) == 8
    synthesize(src, tmp_path / "again", seed=3, val_fraction=0.2, variants=2)
    for pair in train:
        twin = tmp_path / "again" / "train" / "blur" / pair.blur.name
        assert np.array_equal(np.asarray(Image.open(pair.blur)), np.asarray(Image.open(twin)))


def test_workers_and_bmp_output_give_the_same_pairs(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        Image.fromarray(textured_image(70, 50, seed=i)).save(src / f"p{i}.png")
    assert synthesize(src, tmp_path / "one", seed=4, val_fraction=0.34, variants=2, previews=False) == 6
    synthesize(src, tmp_path / "two", seed=4, val_fraction=0.34, variants=2, image_format="bmp", workers=2)
    for split in ("train", "val"):
        pngs, bmps = find_pairs(tmp_path / "one" / split), find_pairs(tmp_path / "two" / split)
        assert [p.blur.stem for p in pngs] == [p.blur.stem for p in bmps] and all(p.blur.suffix == ".bmp" for p in bmps)
        for png, bmp in zip(pngs, bmps, strict=True):
            assert np.array_equal(np.asarray(Image.open(png.blur)), np.asarray(Image.open(bmp.blur)))
    with pytest.raises(ValueError, match="image_format"):
        synthesize(src, tmp_path / "bad", image_format="gif")


def test_frames_are_cropped_to_an_exact_size(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(textured_image(100, 90, seed=1)).save(src / "tall.png")  # 10:9, wider frame → crop rows
    Image.fromarray(textured_image(30, 12, seed=2)).save(src / "small.png")  # scaled up to cover the frame
    assert synthesize(src, tmp_path / "out", val_fraction=0, variants=1, previews=False, frame=(64, 36)) == 2
    for pair in find_pairs(tmp_path / "out" / "train"):
        assert Image.open(pair.blur).size == Image.open(pair.sharp).size == (64, 36)
    assert parse_frame("1280x720") == (1280, 720)
    for bad in ("1280", "0x720", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_frame(bad)


def test_unreadable_photos_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(textured_image(40, 30, seed=1)).save(src / "ok.png")
    (src / "broken.png").write_bytes(b"not really a png")
    Image.fromarray(textured_image(12, 9, seed=2)).save(src / "tiny.png")  # smaller than --min-side
    assert synthesize(src, tmp_path / "out", val_fraction=0, previews=False, min_side=20) == 1
    assert [p.blur.name for p in find_pairs(tmp_path / "out" / "train")] == ["ok_0001_0.png"]
