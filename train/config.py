"""Training configuration: one dataclass, exposed as argparse flags, optionally seeded from YAML.

Defaults follow seed 001's final configuration (AdamW 2e-4, weight decay 1e-4, cosine to 1e-6,
clip 1.0, MS-SSIM+Charbonnier, 256 px patches, 512/64 validation tiling).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

LOSSES = ("combined", "charbonnier")


@dataclass
class TrainConfig:
    data: Path = Path("data")
    out_dir: Path = Path("outputs")
    # model
    base_ch: int = 32
    residual: bool = False
    # optimisation
    epochs: int = 200
    batch_size: int = 8
    patch_size: int = 256
    repeat: int = 1  # patches drawn per image per epoch (small photo sets need > 1)
    lr: float = 2e-4
    weight_decay: float = 1e-4
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    loss: str = "combined"
    amp: bool = False  # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    patience: int = 50
    # validation (same tiling as serving)
    val_every: int = 1
    val_tile: int = 512
    val_overlap: int = 64
    max_val_images: int = 0  # 0: all
    # runtime
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0
    experiment: str = "deblur"
    run_name: str = ""
    resume: Path | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("epochs", "batch_size", "patch_size", "repeat", "val_every", "val_tile"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train a deblurring model on paired data.")
    parser.add_argument("--config", type=Path, help="YAML file whose keys become defaults (flags override)")
    hints = get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, default=field.default)
        elif kind == Path | None:
            parser.add_argument(_flag(field.name), type=Path, default=field.default)
        else:
            choices = LOSSES if field.name == "loss" else None
            parser.add_argument(_flag(field.name), type=kind, default=field.default, choices=choices)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config is not None:
        parser.set_defaults(**load_yaml_defaults(known.config))
    args = vars(parser.parse_args(argv))
    args.pop("config")
    return TrainConfig(**args)


def load_yaml_defaults(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(data) - names
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}")
    hints = get_type_hints(TrainConfig)
    return {k: Path(v) if hints[k] in (Path, Path | None) and v is not None else v for k, v in data.items()}
