"""One TorchServe request row → a validated ``DeblurRequest`` (pure Python: no torch, no ``ts``).

A row carries the image as raw bytes (``body``), as a multipart field (``data`` or ``file``), as a
base64 string (optionally a data URL), or as a JSON object (see ``JSON_FIELDS``). Raw, multipart and
base64 requests are answered with the image itself; JSON requests with a JSON document. Anything
malformed raises ``RequestError`` with a message that names the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deblur.imageio import DEFAULT_MAX_PIXELS, OUTPUT_FORMATS
from deblur.runtime import PRECISIONS

PAYLOAD_KEYS = ("data", "body", "file")  # raw body → "body"; multipart fields keep their form names
JSON_FIELDS: dict[str, type] = {
    "image": str,
    "ground_truth": str,
    "tile_size": int,
    "overlap": int,
    "format": str,
    "self_ensemble": bool,
    "kernel_aware": bool,
}
TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}
RESPONSE_FORMATS = ("png", "jpeg", "webp")
ACCEPT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}
KEEP_TYPE = ("precision", "kernel_aware", "refiner")  # handler settings that are not integers
TILE_SIZE_RANGE = (32, 2048)  # below 32 px the model sees almost no context; above 2048 memory explodes


class RequestError(ValueError):
    """A request that cannot be served as sent; ``status`` is the HTTP code to answer with."""

    status = 400


@dataclass(frozen=True)
class ServingDefaults:
    """The archive's ``handler:`` section of model-config.yaml (keys and defaults)."""

    tile_size: int = 512
    overlap: int = 64
    tile_batch: int = 0  # tiles per forward pass; 0: automatic (1 on CPU, 4 on GPU; see resolve_tile_batch)
    max_pixels: int = DEFAULT_MAX_PIXELS
    ensemble_max_pixels: int = 2048 * 2048  # largest image self_ensemble accepts (8× the compute)
    precision: str = "auto"  # "auto": bf16/fp16 where the device runs it natively; "fp32" forces full precision
    kernel_aware: bool = False  # the default of the request field kernel_aware
    refiner: str = ""  # file in the archive of a network that refines trusted deconvolutions ("" = none)

    @classmethod
    def from_yaml(cls, model_yaml_config: Mapping[str, Any] | None) -> ServingDefaults:
        section = (model_yaml_config or {}).get("handler") or {}
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown keys in model-config.yaml handler section: {unknown}")
        if not isinstance(section.get("kernel_aware", False), bool):
            raise ValueError(f"handler kernel_aware must be true or false, got {section['kernel_aware']!r}")
        if not isinstance(section.get("refiner", ""), str):
            raise ValueError(f"handler refiner must be a file name, got {section['refiner']!r}")
        defaults = cls(**{name: value if name in KEEP_TYPE else int(value) for name, value in section.items()})
        if defaults.precision not in PRECISIONS:
            raise ValueError(f"handler precision must be one of {PRECISIONS}, got {defaults.precision!r}")
        check_tiling(defaults.tile_size, defaults.overlap)
        if defaults.tile_batch < 0 or defaults.max_pixels < 1:
            raise ValueError(f"tile_batch must be ≥ 0 (0 = automatic) and max_pixels ≥ 1, got {defaults}")
        return defaults


@dataclass(frozen=True)
class RestoreOptions:
    tile_size: int
    overlap: int
    self_ensemble: bool = False
    kernel_aware: bool = False  # estimate the camera shake and deconvolve it where the estimate is trusted


@dataclass(frozen=True)
class DeblurRequest:
    image: bytes
    ground_truth: bytes | None
    options: RestoreOptions
    output_format: str  # one of RESPONSE_FORMATS
    json_response: bool


def check_tiling(tile_size: int, overlap: int) -> None:
    """Reject tile sizes and overlaps that make no sense, naming the field."""
    low, high = TILE_SIZE_RANGE
    if not low <= tile_size <= high:
        raise RequestError(f"field 'tile_size' must be between {low} and {high}, got {tile_size}")
    if not 0 <= overlap <= tile_size // 2:
        raise RequestError(f"field 'overlap' must be between 0 and tile_size/2 = {tile_size // 2}, got {overlap}")


def parse_row(
    row: Mapping[str, Any], content_type: str | None, accept: str | None, defaults: ServingDefaults
) -> DeblurRequest:
    """Validate one request row; ``content_type`` is the row's, ``accept`` the request's Accept header."""
    value = row_payload(row)
    document = json_document(value, content_type)
    if document is not None:
        return from_json(document, accept, defaults)
    options = RestoreOptions(defaults.tile_size, defaults.overlap, kernel_aware=defaults.kernel_aware)
    return DeblurRequest(image_bytes(value), None, options, format_from_accept(accept), json_response=False)


def row_payload(row: Mapping[str, Any]) -> Any:
    key = next((k for k in PAYLOAD_KEYS if row.get(k) is not None), None)
    if key is None:
        raise RequestError("no image in the request: send the bytes as the body or as a multipart field 'data'")
    return row[key]


def json_document(value: Any, content_type: str | None) -> dict[str, Any] | None:
    """The JSON object a payload carries, None for image bytes or a bare base64 string."""
    if isinstance(value, dict):  # TorchServe already parsed an application/json body
        return value
    if isinstance(value, list | int | float | bool):
        raise RequestError('the JSON body must be an object like {"image": "<base64>"}')
    is_json_type = (content_type or "").split(";")[0].strip().lower() == "application/json"
    if not (is_json_type or value[:64].lstrip()[:1] in (b"{", "{")):
        return None
    try:
        document = json.loads(value)  # str, bytes or bytearray; UTF-8 is detected
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser allows
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RequestError('the JSON body must be an object like {"image": "<base64>"}')
    return document


def image_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return decode_base64(value, "body")
    raise RequestError('unsupported payload: send image bytes, a base64 string or JSON {"image": "<base64>"}')


def from_json(document: Mapping[str, Any], accept: str | None, defaults: ServingDefaults) -> DeblurRequest:
    check_fields(document)
    if document.get("image") is None:
        raise RequestError("field 'image' is required: the base64 of the blurred image")
    tile_size = document.get("tile_size", defaults.tile_size)
    tile_size = defaults.tile_size if tile_size is None else tile_size
    overlap = document.get("overlap")
    if overlap is None:  # the archive's default overlap, shrunk to fit a small requested tile
        overlap = min(defaults.overlap, tile_size // 2)
    check_tiling(tile_size, overlap)
    truth = document.get("ground_truth")
    kernel_aware = document.get("kernel_aware")
    kernel_aware = defaults.kernel_aware if kernel_aware is None else kernel_aware
    return DeblurRequest(
        image=decode_base64(document["image"], "image"),
        ground_truth=None if truth is None else decode_base64(truth, "ground_truth"),
        options=RestoreOptions(tile_size, overlap, bool(document.get("self_ensemble") or False), kernel_aware),
        output_format=format_field(document.get("format")) or format_from_accept(accept),
        json_response=True,
    )


def check_fields(document: Mapping[str, Any]) -> None:
    """Unknown fields and wrong types → RequestError naming the field; null means "not sent"."""
    unknown = sorted(set(document) - set(JSON_FIELDS))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}: the fields are {', '.join(JSON_FIELDS)}")
    for name, value in document.items():
        expected = JSON_FIELDS[name]
        if value is None:
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise RequestError(f"field {name!r} must be {TYPE_NAMES[expected]}, got {json_type(value)}")


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object")


def format_field(value: str | None) -> str | None:
    if value is None:
        return None
    fmt = value.lower()
    if fmt not in OUTPUT_FORMATS:
        raise RequestError(f"field 'format' must be one of {', '.join(RESPONSE_FORMATS)}, got {value!r}")
    return "jpeg" if fmt == "jpg" else fmt


def format_from_accept(accept: str | None) -> str:
    """The image format the Accept header prefers (q-values honoured); PNG when it names none we make."""
    ranked = []
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        quality = next((quality_value(p[2:]) for p in params if p.startswith("q=")), 1.0)
        if media in ACCEPT_FORMATS and quality > 0:
            ranked.append((-quality, position, ACCEPT_FORMATS[media]))
    return min(ranked)[2] if ranked else "png"


def quality_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def decode_base64(text: str, field: str) -> bytes:
    """Base64 (optionally a ``data:...;base64,`` URL, line-wrapped or not) → bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"field {field!r} is not valid base64: {exc}") from exc
    if not data:
        raise RequestError(f"field {field!r} is empty")
    return data
