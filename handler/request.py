"""Every check of a request, in one place (pure Python: no torch, no ``ts``).

``parse_row`` turns one TorchServe request row into a ``Request``: the image as raw bytes (``body``), as
a multipart field (``data`` or ``file``), as a base64 string (optionally a data URL), or as a JSON object
(see ``JSON_FIELDS``). Raw, multipart and base64 requests are answered with the image itself; JSON
requests with a JSON document. ``check_sizes`` checks what needs the decoded image sizes. Anything
malformed raises ``RequestError`` with a message that names the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deblur.settings import (
    RESPONSE_FORMATS,
    TILE_SIZE_RANGE,
    RestoreOptions,
    ServingSettings,
)

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
FORMAT_ALIASES = {"jpg": "jpeg"}
ACCEPT_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}


class RequestError(ValueError):
    """A request that cannot be served as sent; ``status`` is the HTTP code to answer with."""

    status = 400


class OverBudgetError(RequestError):
    """A request whose estimated compute is over the archive's budget (422: 413 would become TorchServe's 507)."""

    status = 422


@dataclass(frozen=True)
class Request:
    """One validated request: the encoded images, how to restore, how to answer."""

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
    row: Mapping[str, Any], content_type: str | None, accept: str | None, settings: ServingSettings
) -> Request:
    """Validate one request row; ``content_type`` is the row's, ``accept`` the request's Accept header."""
    value = row_payload(row)
    document = json_document(value, content_type)
    if document is not None:
        return from_json(document, accept, settings)
    return Request(image_bytes(value), None, settings.options(), format_from_accept(accept), json_response=False)


def check_sizes(
    options: RestoreOptions, image_size: tuple[int, int], truth_size: tuple[int, int] | None, settings: ServingSettings
) -> None:
    """The checks that need the decoded (upright) sizes, (width, height): the ground truth must match the
    image, and self-ensemble (8 restorations) is limited to ``settings.ensemble_max_pixels``."""
    width, height = image_size
    if options.self_ensemble and width * height > settings.ensemble_max_pixels:
        raise RequestError(
            f"field 'self_ensemble' is limited to images of at most {settings.ensemble_max_pixels} pixels "
            f"(it runs the model 8 times); this one is {width}×{height}: send it without self_ensemble"
        )
    if truth_size is not None and truth_size != image_size:
        raise RequestError(
            f"field 'ground_truth' is {truth_size[0]}×{truth_size[1]} but the image is "
            f"{width}×{height} (after EXIF orientation): send the sharp version of the same image"
        )


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


def check_budget(cost_s: float, what: str, settings: ServingSettings) -> None:
    """Refuse a request whose estimated compute (``cost_s``, in reference-CPU seconds, for ``what``) is over budget."""
    if cost_s > settings.compute_budget_s:
        raise OverBudgetError(
            f"this request would take about {cost_s:,.0f} s of compute ({what}; estimated for the reference 2-core "
            f"CPU), over the limit of {settings.compute_budget_s:,.0f} s per request: send a smaller image, a larger "
            "tile_size, or no self_ensemble / kernel_aware"
        )


def from_json(document: Mapping[str, Any], accept: str | None, settings: ServingSettings) -> Request:
    check_fields(document)
    if document.get("image") is None:
        raise RequestError("field 'image' is required: the base64 of the blurred image")
    sent = {name: document.get(name) for name in ("tile_size", "overlap", "self_ensemble", "kernel_aware")}
    sent = {name: value for name, value in sent.items() if value is not None}  # null means "not sent"
    tile_size = sent.get("tile_size", settings.tile_size)
    # The archive's default overlap, shrunk to fit a small requested tile
    sent.setdefault("overlap", min(settings.overlap, tile_size // 2))
    options = settings.options(**sent)
    check_tiling(options.tile_size, options.overlap)
    truth = document.get("ground_truth")
    return Request(
        image=decode_base64(document["image"], "image"),
        ground_truth=None if truth is None else decode_base64(truth, "ground_truth"),
        options=options,
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
    fmt = FORMAT_ALIASES.get(value.lower(), value.lower())
    if fmt not in RESPONSE_FORMATS:
        raise RequestError(f"field 'format' must be one of {', '.join(RESPONSE_FORMATS)}, got {value!r}")
    return fmt


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
