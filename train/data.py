"""Paired blur/sharp datasets: layouts, splits, random synchronised patches, full frames.

Layouts of a split folder (``<data>/train``, ``<data>/val``, ``<data>/test``):

- flat / generic: ``SPLIT/blur/**`` and ``SPLIT/sharp/**`` matched by relative path (GoPro as in
  seed 002's DBlur download, the output of ``python -m train.synth``, any other paired folder);
- GOPRO_Large: ``SPLIT/<sequence>/{blur,blur_gamma,sharp}/*.png``; ``blur_kind`` picks the input.
"""

from __future__ import annotations

import itertools
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, Sampler

from deblur.files import list_images
from deblur.imageio import to_model_range


class PairingError(ValueError):
    """The blur and sharp folders do not pair up; the message names the files."""


@dataclass(frozen=True)
class Pair:
    blur: Path
    sharp: Path


def _images_by_relative_path(folder: Path) -> dict[Path, Path]:
    return {p.relative_to(folder): p for p in list_images(folder)}


def _pair_folders(blur_dir: Path, sharp_dir: Path) -> list[Pair]:
    """Pairs of ``blur_dir/X`` and ``sharp_dir/X`` matched by relative path; unpaired files are an error."""
    blurs, sharps = _images_by_relative_path(blur_dir), _images_by_relative_path(sharp_dir)
    only_blur, only_sharp = sorted(set(blurs) - set(sharps)), sorted(set(sharps) - set(blurs))
    if only_blur or only_sharp:
        details = [f"{blur_dir / p} has no sharp partner" for p in only_blur[:10]]
        details += [f"{sharp_dir / p} has no blur partner" for p in only_sharp[:10]]
        raise PairingError("unpaired images:\n  " + "\n  ".join(details))
    return [Pair(blurs[key], sharps[key]) for key in sorted(blurs)]


def _gopro_sequences(split_dir: Path) -> list[Path]:
    """Sub-folders holding a ``sharp/`` folder: the sequences of GOPRO_Large."""
    if not split_dir.is_dir():
        return []
    return sorted(d for d in split_dir.iterdir() if (d / "sharp").is_dir())


def find_pairs(split_dir: Path, blur_kind: str = "blur") -> list[Pair]:
    """All pairs of a split folder in either layout (see the module docstring), sorted."""
    blur_dir, sharp_dir = split_dir / blur_kind, split_dir / "sharp"
    sequences = _gopro_sequences(split_dir)
    if blur_dir.is_dir() and sharp_dir.is_dir():
        pairs = _pair_folders(blur_dir, sharp_dir)
    elif sequences and not sharp_dir.is_dir():
        missing = [str(seq / blur_kind) for seq in sequences if not (seq / blur_kind).is_dir()]
        if missing:
            raise PairingError(f"GOPRO_Large sequences without a {blur_kind}/ folder:\n  " + "\n  ".join(missing))
        pairs = [pair for seq in sequences for pair in _pair_folders(seq / blur_kind, seq / "sharp")]
    else:
        raise PairingError(
            f"missing folder: expected {blur_dir} and {sharp_dir} (paired layout) "
            f"or {split_dir}/<sequence>/{{{blur_kind},sharp}} (GOPRO_Large)"
        )
    if not pairs:
        raise PairingError(f"no images under {split_dir}")
    return pairs


def split_off(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded ``fraction`` of ``pairs`` and the rest, each sorted; the same for the same inputs."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(pairs) < 2:
        raise PairingError(f"cannot split {len(pairs)} pair(s) into two non-empty parts")
    order = sorted(pairs, key=lambda p: str(p.blur))
    random.Random(seed).shuffle(order)
    count = min(max(1, round(len(order) * fraction)), len(order) - 1)
    key = lambda p: str(p.blur)  # noqa: E731
    return sorted(order[:count], key=key), sorted(order[count:], key=key)


def training_splits(
    root: Path, val_dir: str = "val", val_fraction: float = 0.0, blur_kind: str = "blur", seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, val) pairs of a dataset root, as chosen by ``val_dir`` and ``val_fraction``.

    ``val_dir="val"``: the val folder. ``val_dir="test", val_fraction=0.5``: half of the test
    folder (seed 002; evaluate on the other half with ``train.evaluate --skip-fraction 0.5``).
    ``val_dir="train", val_fraction=0.1``: a tenth of train, removed from training.
    """
    train = find_pairs(root / "train", blur_kind)
    if val_dir == "train":
        return split_off(train, val_fraction, seed)[::-1]
    try:
        val = find_pairs(root / val_dir, blur_kind)
    except PairingError as exc:
        hint = "choose the validation split with --val-dir test, or --val-dir train --val-fraction 0.1"
        raise PairingError(f"{exc}\n{hint}") from exc
    return train, split_off(val, val_fraction, seed)[0] if val_fraction else val


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

    Items are addressed by ``(epoch, index)`` (``EpochSampler`` yields such keys) and all
    randomness comes from (seed, epoch, index): a run is reproducible whatever the worker count,
    persistent workers need no epoch update, and a resumed run replays the same patches.
    """

    def __init__(self, pairs: list[Pair], patch_size: int, repeat: int = 1, seed: int = 0) -> None:
        self.pairs, self.patch_size, self.repeat, self.seed = pairs, patch_size, repeat, seed

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        pair = self.pairs[index % len(self.pairs)]
        rng = random.Random(f"{self.seed}-{epoch}-{index}")
        with Image.open(pair.blur) as blur, Image.open(pair.sharp) as sharp:
            blur_patch, sharp_patch = random_patch_pair(blur, sharp, self.patch_size, rng)
        return augment_pair(to_model_range(blur_patch), to_model_range(sharp_patch), rng)


class EpochSampler(Sampler[tuple[int, int]]):
    """DistributedSampler's seeded per-epoch shuffle and shard, yielding ``(epoch, index)`` keys.

    ``set_epoch(epoch, skip)`` starts the epoch after its first ``skip`` samples, so a run
    interrupted mid-epoch resumes exactly where it stopped.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in itertools.islice(iter(self.inner), self.skip, None))

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def init_worker(worker_id: int) -> None:
    """DataLoader worker setup: seed Python and NumPy from the torch seed the loader gave it, ignore SIGTERM.

    ``pkill -f``, a batch scheduler or a process-group kill sends SIGTERM to the workers too. A worker that
    died of it made the main process fail on its next batch ("DataLoader worker is killed by signal")
    before it could write its resumable checkpoint (seen here); ignored, the signal is handled by the main
    process alone, which stops the run cleanly and shuts the workers down.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class FrameDataset(Dataset):
    """Whole frames (validation/evaluation), as [-1, 1] tensors."""

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        return to_model_range(load_rgb(pair.blur)), to_model_range(load_rgb(pair.sharp))

    def name(self, index: int) -> str:
        """A file-name-safe label for samples: the blur path below its split folder."""
        pair = self.pairs[index]
        return "_".join(pair.blur.with_suffix("").parts[-3:])
