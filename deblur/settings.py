"""Serving settings: the one home of the defaults an archive carries (torch-free, so the archive builder,
the handler, the CLIs and the demo all read the same values).

An archive's ``model-config.yaml`` has a ``handler:`` section with these keys; ``from_mapping`` reads it,
coercing each value to its field's type, and refuses unknown keys or values out of range.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
MODEL_FORMATS: tuple[str, ...] = ("checkpoint", "torchscript")  # what an archive's serialized file is
RESPONSE_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
TILE_SIZE_RANGE = (128, 2048)  # tile edges a request may ask for, in px
MAX_PIXELS = 4096 * 4096  # the default pixel cap per image

Settings = TypeVar("Settings")


class SettingsError(ValueError):
    """A settings file or section that cannot be used; the message names the key."""


@dataclass(frozen=True)
class RestoreOptions:
    """How one image is restored (a request's options, after the archive's defaults were applied)."""

    tile_size: int = 512  # tile edge in px
    overlap: int = 64  # minimum tile overlap in px
    self_ensemble: bool = False  # average the network over the 8 flips/rotations
    kernel_aware: bool = False  # estimate the camera shake and deconvolve it where the estimate is trusted


@dataclass(frozen=True)
class ServingSettings:
    """The ``handler:`` section of an archive's model-config.yaml."""

    tile_size: int = 768  # tile edge in px (why 768 and 32: docs/performance.md, "Tile layout")
    overlap: int = 32  # minimum overlap between neighbouring tiles in px
    tile_batch: int = 0  # tiles per forward pass; 0: automatic (1 on CPU, 4 on GPU)
    max_pixels: int = MAX_PIXELS  # largest width × height accepted, for an image and for its ground truth
    ensemble_max_pixels: int = 2048 * 2048  # largest width × height accepted with self_ensemble (8 passes)
    precision: str = "auto"  # "auto": bf16/fp16 where the device runs it natively; "fp32" forces full precision
    kernel_aware: bool = False  # the default of the request field kernel_aware
    compute_budget_s: float = 60.0  # largest estimated compute of one request, in seconds of the reference CPU
    model_format: str = "checkpoint"  # the serialized file: a training checkpoint, or its TorchScript export
    # The cost model behind that estimate, in seconds of the reference CPU (2 cores, docs/compute_budget.md)
    tile_call_s: float = 0.008  # per tile through the network: the call and its blending
    tile_pixel_s: float = 5e-7  # per pixel of a network tile, padded to the model's multiple of 16
    estimate_pixel_s: float = 1e-5  # per pixel of each centre crop the kernel is estimated on
    deconvolve_pixel_s: float = 1e-6  # per pixel of a deconvolution's padded Fourier grid

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.model_format not in MODEL_FORMATS:
            raise SettingsError(f"model_format must be one of {', '.join(MODEL_FORMATS)}, got {self.model_format!r}")
        low, high = TILE_SIZE_RANGE
        if not low <= self.tile_size <= high or not 0 <= self.overlap <= self.tile_size // 2:
            raise SettingsError(
                f"tile_size must be in {low}..{high} and overlap in 0..tile_size/2, got {self.tile_size}/{self.overlap}"
            )
        if self.tile_batch < 0 or self.max_pixels < 1 or self.ensemble_max_pixels < 0:
            raise SettingsError(f"tile_batch must be ≥ 0 and the pixel caps positive, got {self}")
        if self.compute_budget_s <= 0:
            raise SettingsError(f"compute_budget_s must be positive, got {self.compute_budget_s}")

    def options(self, **overrides: Any) -> RestoreOptions:
        """The archive's default request options, with ``overrides`` (e.g. a request's fields)."""
        defaults = {"tile_size": self.tile_size, "overlap": self.overlap, "kernel_aware": self.kernel_aware}
        return RestoreOptions(**(defaults | overrides))

    @classmethod
    def from_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> ServingSettings:
        """The ``handler:`` section of a parsed model-config.yaml (absent: the defaults)."""
        return from_mapping(cls, (model_yaml_config or {}).get("handler") or {})


def from_mapping(cls: type[Settings], values: Mapping[str, Any]) -> Settings:
    """A frozen settings dataclass from ``values`` (e.g. parsed YAML): each value is coerced to its field's
    declared type (int, float, bool, str, or None where the type allows it); unknown keys are refused."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"unknown {cls.__name__} keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**{name: coerce(name, value, hints[name]) for name, value in values.items()})


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (int, float, bool, str, ``X | None``); a value that does not fit is a SettingsError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise SettingsError(f"{name} must not be empty")
    kind = next(option for option in options if option is not type(None))
    if typing.get_origin(kind) is tuple:  # tuple[X, ...]: a list of X
        if not isinstance(value, list | tuple) or not value:
            raise SettingsError(f"{name} must be a non-empty list, got {value!r}")
        return tuple(coerce(name, item, typing.get_args(kind)[0]) for item in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SettingsError(f"{name} must be a number, got {value!r}")
        try:
            number = float(value)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number, got {value!r}") from exc
        if kind is int:
            if not number.is_integer():
                raise SettingsError(f"{name} must be a whole number, got {value!r}")
            return int(number)
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise SettingsError(f"{name} must be a string, got {value!r}")
    raise SettingsError(f"{name}: settings of type {kind} cannot be read from a file")
