"""Training configuration: one dataclass, exposed as argparse flags, optionally seeded from YAML.

Defaults follow seed 001's final configuration (AdamW 2e-4, weight decay 1e-4, cosine to 1e-6,
clip 1.0, MS-SSIM+Charbonnier, 256 px patches, 512/64 validation tiling) and, for ``--model
nafnet``, NAFNet-GoPro's block counts (seed 002's "default").
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from deblur.model import ARCHITECTURES, ModelConfig

LOSSES = ("combined", "charbonnier", "psnr")
BLUR_KINDS = ("blur", "blur_gamma")
CHOICES = {"loss": LOSSES, "model": ARCHITECTURES, "blur_kind": BLUR_KINDS}
TLC_SCALE = 1.5  # NAFNet's TLC window: 1.5 × the training patch size (384 for 256)


@dataclass
class TrainConfig:
    data: Path = Path("data")
    out_dir: Path = Path("outputs")
    # data: <data>/train plus validation from <data>/<val_dir>; layouts in train/data.py
    blur_kind: str = "blur"  # GOPRO_Large only: "blur" or "blur_gamma"
    val_dir: str = "val"  # "train" with --val-fraction holds out part of train
    val_fraction: float = 0.0  # > 0: validate on this seeded fraction of val_dir (seed 002 halves GoPro test)
    # More validation sets (split folders, e.g. mildly and heavily blurred frames), scored and logged under
    # their label (see val_label). With any, the best checkpoint is the one with the highest mean PSNR
    # gain over all sets, so that a model cannot win on one kind of blur by damaging another.
    extra_val: tuple[Path, ...] = ()
    # model
    model: str = "deblur_unet"
    base_ch: int = 32  # DeblurUNet base channels / NAFNet width
    residual: bool = False  # DeblurUNet only
    bottleneck_blocks: int = 0  # DeblurUNet only: residual blocks after the bottleneck (0 = seed spec)
    enc_blocks: tuple[int, ...] = (1, 1, 1, 28)  # NAFNet only
    middle_blocks: int = 1  # NAFNet only
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)  # NAFNet only
    tlc: bool = False  # NAFNet only: validate and export with TLC (local statistics)
    # optimisation
    epochs: int = 200
    batch_size: int = 8
    patch_size: int = 256
    repeat: int = 1  # patches drawn per image per epoch (small photo sets need > 1)
    lr: float = 2e-4
    weight_decay: float = 1e-4
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): validate and export a moving average of the weights
    loss: str = "combined"
    amp: bool = False  # bf16 autocast on CPU, fp16 + GradScaler on CUDA
    patience: int = 50
    # validation (same tiling as serving)
    val_every: int = 1
    val_tile: int = 512
    val_overlap: int = 64
    max_val_images: int = 0  # 0: all
    num_samples: int = 3  # before/after/ground-truth images logged per validation
    # checkpoints and tracking
    checkpoint_every: int = 10  # epochs between resumable checkpoints (last.pt)
    resume: Path | None = None
    init_from: Path | None = None  # start from this checkpoint's weights (same architecture), fresh schedule
    experiment: str = "deblur"
    run_name: str = ""
    registered_model_name: str = ""  # register the best model under this name ("" = don't)
    # runtime
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "patch_size", "repeat", "val_every", "val_tile", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_dir == "train" and self.val_fraction == 0:
            raise ValueError("val_dir 'train' needs --val-fraction > 0 (the share of train held out)")
        if self.resume and self.init_from:
            raise ValueError("--resume continues a run; --init-from starts a new one from weights: pick one")
        if self.tlc and self.model != "nafnet":
            raise ValueError("--tlc applies to --model nafnet only")
        if self.bottleneck_blocks and self.model != "deblur_unet":
            raise ValueError("--bottleneck-blocks applies to --model deblur_unet only")
        if self.bottleneck_blocks < 0:
            raise ValueError(f"bottleneck_blocks must be ≥ 0, got {self.bottleneck_blocks}")
        self.enc_blocks, self.dec_blocks = tuple(self.enc_blocks), tuple(self.dec_blocks)
        self.extra_val = tuple(Path(path) for path in self.extra_val)
        labels = [val_label(path) for path in self.extra_val]
        if len(set(labels)) < len(labels):
            raise ValueError(f"extra_val labels must differ (the last two folder names): {labels}")

    @property
    def selection_metric(self) -> str:
        """What picks the best checkpoint: validation PSNR, or the mean gain over all validation sets."""
        return "mean_gain" if self.extra_val else "psnr"

    def model_config(self, *, inference: bool = False) -> ModelConfig:
        """The architecture to train, or with ``inference=True`` the one to validate and export (TLC)."""
        tlc_window = round(TLC_SCALE * self.patch_size) if inference and self.tlc else 0
        return ModelConfig(
            arch=self.model,
            base_ch=self.base_ch,
            residual=self.residual,
            bottleneck_blocks=self.bottleneck_blocks,
            enc_blocks=self.enc_blocks,
            middle_blocks=self.middle_blocks,
            dec_blocks=self.dec_blocks,
            tlc_window=tlc_window,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/checkpoint types: paths as strings, tuples as lists."""
        values = dataclasses.asdict(self)
        return {k: _plain(v) for k, v in values.items()}

    def to_yaml(self) -> str:
        """The resolved config; ``--config`` accepts it back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return {k: str(v) for k, v in self.to_dict().items()}


def val_label(path: Path) -> str:
    """An extra validation set's name in metrics: its last two folder names (``/tmp/mild/val`` → ``mild/val``)."""
    return "/".join(Path(path).parts[-2:])


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train a deblurring model on paired data.")
    parser.add_argument("--config", type=Path, help="YAML file whose keys become defaults (flags override)")
    hints = get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        kind, flag = hints[field.name], _flag(field.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        elif kind == Path | None:
            parser.add_argument(flag, type=Path, default=field.default)
        elif kind == tuple[int, ...]:
            parser.add_argument(flag, type=int, nargs="+", default=field.default, metavar="N")
        elif kind == tuple[Path, ...]:
            parser.add_argument(flag, type=Path, nargs="+", default=field.default, metavar="DIR")
        else:
            parser.add_argument(flag, type=kind, default=field.default, choices=CHOICES.get(field.name))
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
    paths = {k: Path(v) for k, v in data.items() if hints[k] in (Path, Path | None) and v is not None}
    path_lists = {k: tuple(Path(item) for item in v) for k, v in data.items() if hints[k] == tuple[Path, ...]}
    return data | paths | path_lists
