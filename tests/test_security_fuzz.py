"""Fuzzing the two functions every request goes through before the model: request parsing
(``handler.request.parse_row``) and image decoding (``deblur.imageio.decode_image``).

Whatever the bytes or the JSON, they either succeed or raise the handler's own error types
(``RequestError``, ``ImageError`` and its subclasses), which the handler turns into a 4xx. Any other
exception would reach TorchServe as a 503 "Prediction failed".
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deblur.imageio import DecodedImage, ImageError, decode_image
from deblur.settings import ServingSettings
from handler.pipeline import prepare
from handler.request import JSON_FIELDS, Request, RequestError, parse_row

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_CAP = 256 * 256  # keeps a mutated header that declares a large image cheap to refuse or decode
DEFAULTS = ServingSettings(max_pixels=SMALL_CAP)


def seed_images() -> list[bytes]:
    """One small image per allow-listed format and mode, plus a refused format (GIF)."""
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    cases: list[tuple[Image.Image, str, dict[str, Any]]] = [
        (Image.fromarray(rgb), "PNG", {}),
        (Image.fromarray(rgb), "JPEG", {"quality": 80}),
        (Image.fromarray(rgb), "WEBP", {}),
        (Image.fromarray(rgb), "BMP", {}),
        (Image.fromarray(rgb), "TIFF", {"compression": "tiff_lzw"}),
        (Image.fromarray(rgb).convert("RGBA"), "PNG", {}),
        (Image.fromarray(rgb).convert("P"), "PNG", {"transparency": 0}),
        (Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG", {}),
        (Image.fromarray(rgb).convert("CMYK"), "JPEG", {}),
        (Image.fromarray(rgb), "GIF", {}),
    ]
    encoded = []
    for image, fmt, options in cases:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        encoded.append(buffer.getvalue())
    return encoded


SEEDS = seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A seed image with a few bytes overwritten, optionally truncated or extended."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    tail = draw(st.binary(max_size=16))
    return bytes(data[:cut]) + tail


image_bytes = st.one_of(st.binary(max_size=512), mutated_images())


def assert_handled(data: bytes) -> DecodedImage | None:
    """decode_image either decodes within the cap or raises an ImageError with a 4xx status."""
    try:
        decoded = decode_image(data, SMALL_CAP)
    except ImageError as exc:
        assert 400 <= exc.status < 500 and str(exc)
        return None
    width, height = decoded.size
    assert 1 <= width * height <= SMALL_CAP
    assert decoded.pixels.shape == (3, height, width)
    return decoded


@EXAMPLES
@given(image_bytes)
def test_decode_image_raises_only_image_errors(data: bytes) -> None:
    assert_handled(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(json_values, st.sampled_from(["png", "jpeg", "webp", "data:image/png;base64,"]))
documents = st.dictionaries(st.sampled_from([*JSON_FIELDS, "extra"]), field_values, max_size=5)
payloads = st.one_of(
    documents,
    json_values,
    image_bytes,
    st.text(max_size=64),
    documents.map(lambda d: json.dumps(d).encode()),
    image_bytes.map(lambda b: {"image": base64.b64encode(b).decode()}),
)
content_types = st.sampled_from([None, "application/json", "text/plain", "image/png", "application/json; x=1"])
accepts = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["image/webp;q=0.5, image/jpeg", "*/*"]))


@EXAMPLES
@given(st.sampled_from(["body", "data", "file", "other"]), payloads, content_types, accepts)
def test_request_parsing_and_decoding_raise_only_handler_errors(
    key: str, payload: Any, content_type: str | None, accept: str | None
) -> None:
    try:
        request = parse_row({key: payload}, content_type, accept, DEFAULTS)
    except RequestError as exc:
        assert exc.status == 400 and str(exc)
        return
    assert isinstance(request, Request) and request.output_format in ("png", "jpeg", "webp")
    try:
        prepare(request, DEFAULTS)
    except (RequestError, ImageError) as exc:
        assert 400 <= exc.status < 500 and str(exc)
