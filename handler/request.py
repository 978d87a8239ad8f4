"""Every check of a request, in one place (pure Python: no torch, no ``ts``).

``parse_row`` turns one TorchServe request row into a ``Request``: the image as raw bytes (``body``), as
a multipart field (``data`` or ``file``), as a base64 string (optionally a data URL), or as a JSON object
(see ``JSON_FIELDS``). Raw, multipart and base64 requests are answered with the image itself; JSON
requests with a JSON document. ``check_sizes`` checks what needs the decoded image sizes. Anything
malformed raises ``RequestError`` with a message that names the offending field and a stable ``code``
(``ERROR_CODES``; the handler answers ``{"code": status, "error": code, "message": ...}``).
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


# Every "error" a refusal can carry (stable: apps branch on it), with its HTTP status and when it is sent.
# An image over the pixel cap is 422, not 413: TorchServe 0.12's frontend turns a backend 413 into 507.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "no_image": (400, "the request has no image: no body, or no form field 'data', 'body' or 'file'"),
    "empty_image": (400, "the image (body or field) is empty"),
    "not_an_image": (400, "text that is neither an image, base64 nor a JSON object"),
    "invalid_json": (400, "a JSON body that does not parse or is not an object"),
    "unknown_field": (400, "a JSON field the contract does not have"),
    "missing_field": (400, "the JSON field 'image' is missing"),
    "wrong_type": (400, "a JSON field of the wrong type"),
    "invalid_base64": (400, "a base64 field that does not decode"),
    "invalid_value": (400, "tile_size, overlap or format out of range"),
    "size_mismatch": (400, "ground_truth of another size than the image"),
    "ensemble_too_large": (400, "self_ensemble on an image above its pixel limit"),
    "unreadable_image": (400, "a truncated or corrupt image, or corrupt EXIF data"),
    "unsupported_format": (415, "not PNG, JPEG, WebP, BMP or TIFF"),
    "image_too_large": (422, "more pixels than the archive's cap"),
    "over_budget": (422, "an estimated compute over the archive's budget"),
}


class RequestError(ValueError):
    """A request that cannot be served as sent; ``code`` is one of ``ERROR_CODES``, which gives the status."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]


class OverBudgetError(RequestError):
    """A request whose estimated compute is over the archive's budget (422: 413 would become TorchServe's 507)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "over_budget")


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
        raise RequestError(f"field 'tile_size' must be between {low} and {high}, got {tile_size}", "invalid_value")
    if not 0 <= overlap <= tile_size // 2:
        raise RequestError(
            f"field 'overlap' must be between 0 and tile_size/2 = {tile_size // 2}, got {overlap}", "invalid_value"
        )


def parse_row(
    row: Mapping[str, Any],
    content_type: str | None,
    accept: str | None,
    settings: ServingSettings,
    request_type: str | None = None,
) -> Request:
    """Validate one request row; ``content_type`` is the row's payload's, ``accept`` the request's Accept
    header and ``request_type`` its Content-Type header (named in the message when no image is found)."""
    key, value = row_payload(row, request_type)
    document = json_document(value, content_type)
    if document is not None:
        return from_json(document, accept, settings)
    return Request(image_bytes(value, key), None, settings.options(), format_from_accept(accept), json_response=False)


def check_sizes(
    options: RestoreOptions, image_size: tuple[int, int], truth_size: tuple[int, int] | None, settings: ServingSettings
) -> None:
    """The checks that need the decoded (upright) sizes, (width, height): the ground truth must match the
    image, and self-ensemble (8 restorations) is limited to ``settings.ensemble_max_pixels``."""
    width, height = image_size
    if options.self_ensemble and width * height > settings.ensemble_max_pixels:
        raise RequestError(
            f"field 'self_ensemble' is limited to images of at most {settings.ensemble_max_pixels} pixels "
            f"(it runs the model 8 times); this one is {width}×{height}: send it without self_ensemble",
            "ensemble_too_large",
        )
    if truth_size is not None and truth_size != image_size:
        raise RequestError(
            f"field 'ground_truth' is {truth_size[0]}×{truth_size[1]} but the image is "
            f"{width}×{height} (after EXIF orientation): send the sharp version of the same image",
            "size_mismatch",
        )


def row_payload(row: Mapping[str, Any], request_type: str | None = None) -> tuple[str, Any]:
    """(the payload's field name, its value); no such field is a RequestError naming what was sent."""
    key = next((k for k in PAYLOAD_KEYS if row.get(k) is not None), None)
    if key is not None:
        return key, row[key]
    if any(k in row for k in PAYLOAD_KEYS):  # TorchServe parsed a JSON body of null
        raise RequestError('the JSON body must be an object like {"image": "<base64>"}, got null', "invalid_json")
    hint = "send the image bytes as the body or as a multipart field 'data'"
    if media_type(request_type) == "application/x-www-form-urlencoded":
        hint = (
            "the body was sent as a form (Content-Type application/x-www-form-urlencoded, curl's default for "
            "--data-binary): send it with Content-Type application/octet-stream (or image/png...), or as a "
            "multipart field 'data' (curl -F data=@photo.png)"
        )
    elif row:
        hint = f"the request has the field(s) {field_names(row)}, but the image goes in a multipart field 'data'"
    raise RequestError(f"no image in the request: {hint}", "no_image")


def field_names(row: Mapping[str, Any], shown: int = 3) -> str:
    """The row's field names as the sender would recognise them: printable, short, at most ``shown``."""
    names = [repr(name[:40]) for name in row if isinstance(name, str) and name.isprintable()][:shown]
    rest = len(row) - len(names)
    return ", ".join(names + ([f"{rest} other(s)"] if rest else []))


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case, without its parameters ("" when absent)."""
    return (content_type or "").split(";")[0].strip().lower()


def json_document(value: Any, content_type: str | None) -> dict[str, Any] | None:
    """The JSON object a payload carries, None for image bytes or a bare base64 string."""
    if isinstance(value, dict):  # TorchServe already parsed an application/json body
        return value
    if isinstance(value, list | int | float | bool):
        raise RequestError('the JSON body must be an object like {"image": "<base64>"}', "invalid_json")
    if not (media_type(content_type) == "application/json" or value[:64].lstrip()[:1] in (b"{", "{")):
        return None
    try:
        document = json.loads(value)  # str, bytes or bytearray; UTF-8 is detected
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser allows
        raise RequestError(f"the body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(document, dict):
        raise RequestError('the JSON body must be an object like {"image": "<base64>"}', "invalid_json")
    return document


def image_bytes(value: Any, key: str) -> bytes:
    """The image bytes of a non-JSON payload in field ``key`` ("body" for a raw body): bytes as they are, text
    as base64 (TorchServe hands text parts over as text)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        where = "the body" if key == "body" else f"field {key!r}"
        if not value.strip():
            raise RequestError(f"{where} is empty: send the image bytes (PNG, JPEG, WebP, BMP or TIFF)", "empty_image")
        try:
            return decode_base64(value, key)
        except RequestError as exc:
            raise RequestError(
                f"{where} holds text ({len(value)} characters) that is not an image, nor base64, nor a JSON object: "
                'send the image file (PNG, JPEG, WebP, BMP or TIFF), its base64, or JSON {"image": "<base64>"}',
                "not_an_image",
            ) from exc
    raise RequestError(
        'unsupported payload: send image bytes, a base64 string or JSON {"image": "<base64>"}', "not_an_image"
    )


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
        raise RequestError("field 'image' is required: the base64 of the blurred image", "missing_field")
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
        raise RequestError(f"unknown field {unknown[0]!r}: the fields are {', '.join(JSON_FIELDS)}", "unknown_field")
    for name, value in document.items():
        expected = JSON_FIELDS[name]
        if value is None:
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise RequestError(f"field {name!r} must be {TYPE_NAMES[expected]}, got {json_type(value)}", "wrong_type")


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object")


def format_field(value: str | None) -> str | None:
    if value is None:
        return None
    fmt = FORMAT_ALIASES.get(value.lower(), value.lower())
    if fmt not in RESPONSE_FORMATS:
        raise RequestError(
            f"field 'format' must be one of {', '.join(RESPONSE_FORMATS)}, got {value!r}", "invalid_value"
        )
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
        raise RequestError(f"field {field!r} is not valid base64: {exc}", "invalid_base64") from exc
    if not data:
        raise RequestError(f"field {field!r} is empty", "empty_image")
    return data
