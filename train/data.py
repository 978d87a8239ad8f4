"""Paired blur/sharp datasets: random synchronised patches for training, full frames for validation."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from deblur.imageio import to_model_range

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class PairingError(ValueError):
    """The blur and sharp folders do not pair up; the message names the files."""


@dataclass(frozen=True)
class Pair:
    blur: Path
    sharp: Path


def _images_by_relative_path(folder: Path) -> dict[Path, Path]:
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return {p.relative_to(folder): p for p in files}


def find_pairs(split_dir: Path) -> list[Pair]:
    """Pairs of ``split_dir/blur/X`` and ``split_dir/sharp/X`` matched by relative path."""
    blur_dir, sharp_dir = split_dir / "blur", split_dir / "sharp"
    for folder in (blur_dir, sharp_dir):
        if not folder.is_dir():
            raise PairingError(f"missing folder {folder} (expected {split_dir}/blur and {split_dir}/sharp)")
    blurs, sharps = _images_by_relative_path(blur_dir), _images_by_relative_path(sharp_dir)
    only_blur, only_sharp = sorted(set(blurs) - set(sharps)), sorted(set(sharps) - set(blurs))
    if only_blur or only_sharp:
        details = [f"{blur_dir / p} has no sharp partner" for p in only_blur[:10]]
        details += [f"{sharp_dir / p} has no blur partner" for p in only_sharp[:10]]
        raise PairingError("unpaired images:\n  " + "\n  ".join(details))
    if not blurs:
        raise PairingError(f"no images in {blur_dir}")
    return [Pair(blurs[key], sharps[key]) for key in sorted(blurs)]


def check_pairs(pairs: list[Pair], min_side: int = 1) -> None:
    """Open every pair's headers before training starts: unreadable, mismatched or too small pairs fail here."""
    problems = []
    for pair in pairs:
        try:
            with Image.open(pair.blur) as blur, Image.open(pair.sharp) as sharp:
                if blur.size != sharp.size:
                    problems.append(f"{pair.blur} is {blur.size} but {pair.sharp} is {sharp.size}")
                elif min(blur.size) < min_side:
                    problems.append(f"{pair.blur} is {blur.size}, smaller than the {min_side} px patch")
        except (OSError, SyntaxError) as exc:
            problems.append(f"cannot read {pair.blur} / {pair.sharp}: {exc}")
    if problems:
        raise PairingError("bad pairs:\n  " + "\n  ".join(problems[:20]))


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def random_patch_pair(
    blur: Image.Image, sharp: Image.Image, size: int, rng: random.Random
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the same random window from both (before decoding the rest of a big frame into arrays)."""
    width, height = blur.size
    pw, ph = min(size, width), min(size, height)
    x, y = rng.randint(0, width - pw), rng.randint(0, height - ph)
    box = (x, y, x + pw, y + ph)
    return np.asarray(blur.crop(box).convert("RGB")), np.asarray(sharp.crop(box).convert("RGB"))


def augment_pair(blur: torch.Tensor, sharp: torch.Tensor, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random h-flip, v-flip and 90° rotation on both (C, H, W) tensors."""
    if rng.random() < 0.5:
        blur, sharp = blur.flip(-1), sharp.flip(-1)
    if rng.random() < 0.5:
        blur, sharp = blur.flip(-2), sharp.flip(-2)
    k = rng.randint(0, 3)
    if k:
        blur, sharp = torch.rot90(blur, k, dims=(-2, -1)), torch.rot90(sharp, k, dims=(-2, -1))
    return blur.contiguous(), sharp.contiguous()


class PatchDataset(Dataset):
    """One random patch per image per pass (``repeat`` passes per epoch), augmented in sync.

    Randomness comes from (seed, epoch, index), so a run is reproducible whatever the worker
    count and resuming at an epoch boundary replays the same patches.
    """

    def __init__(self, pairs: list[Pair], patch_size: int, repeat: int = 1, seed: int = 0) -> None:
        self.pairs, self.patch_size, self.repeat, self.seed = pairs, patch_size, repeat, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index % len(self.pairs)]
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}")
        with Image.open(pair.blur) as blur, Image.open(pair.sharp) as sharp:
            blur_patch, sharp_patch = random_patch_pair(blur, sharp, self.patch_size, rng)
        return augment_pair(to_model_range(blur_patch), to_model_range(sharp_patch), rng)


class FrameDataset(Dataset):
    """Whole frames (validation/evaluation), as [-1, 1] tensors, with the pair for naming samples."""

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        return to_model_range(load_rgb(pair.blur)), to_model_range(load_rgb(pair.sharp))
