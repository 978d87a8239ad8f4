"""DeblurHandler with TorchServe's own Context objects, no server: rows in, PNG bytes out."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from ts.context import Context, RequestProcessor
from ts.metrics.metrics_store import MetricsStore
from ts.utils.util import PredictionException

from handler.deblur_handler import HANDLER_DEFAULTS, DeblurHandler
from tests.conftest import png_bytes, textured_image


def make_context(model_dir: Path, yaml_config: dict[str, Any] | None = None) -> Context:
    manifest = {"model": {"modelName": "deblur", "serializedFile": "tiny.pt", "handler": "deblur_handler.py"}}
    metrics = MetricsStore({0: "request-0"}, "deblur")
    return Context("deblur", str(model_dir), manifest, 1, None, "0.12.0", True, metrics, yaml_config or {})


def start_batch(context: Context, rows: list[dict[str, Any]]) -> None:
    """What TorchServe's Service.predict sets before calling the handler."""
    context.request_ids = {idx: f"request-{idx}" for idx in range(len(rows))}
    context.request_processor = [RequestProcessor({}) for _ in rows]


def run(handler: DeblurHandler, context: Context, rows: list[dict[str, Any]]) -> list[bytes]:
    start_batch(context, rows)
    return handler.handle(rows, context)


@pytest.fixture
def model_dir(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    shutil.copy(tiny_checkpoint, tmp_path / "tiny.pt")  # as TorchServe extracts the .mar
    return tmp_path


@pytest.fixture
def context(model_dir: Path) -> Context:
    return make_context(model_dir)


@pytest.fixture
def handler(context: Context) -> DeblurHandler:
    handler = DeblurHandler()
    handler.initialize(context)
    return handler


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_initialize_uses_defaults_and_cpu(handler: DeblurHandler) -> None:
    assert handler.initialized
    assert handler.device.type == "cpu"
    assert (handler.tile_size, handler.overlap, handler.tile_batch, handler.max_pixels) == tuple(
        HANDLER_DEFAULTS.values()
    )
    assert not handler.model.training


def test_png_in_same_size_png_out(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    [output] = run(handler, context, [{"body": sample_png}])
    assert decode_png(output).size == Image.open(io.BytesIO(sample_png)).size
    assert context.get_response_content_type(0) == "image/png"


@pytest.mark.parametrize("key", ["data", "file"])
def test_multipart_field_is_accepted(handler: DeblurHandler, context: Context, sample_png: bytes, key: str) -> None:
    [output] = run(handler, context, [{key: bytearray(sample_png)}])
    assert decode_png(output).size == (96, 64)


def test_base64_and_json_payloads(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    encoded = base64.b64encode(sample_png).decode()
    rows = [{"body": encoded}, {"body": {"image": f"data:image/png;base64,{encoded}"}}]
    outputs = run(handler, context, rows)
    assert [decode_png(out).size for out in outputs] == [(96, 64), (96, 64)]
    assert [context.get_response_content_type(idx) for idx in range(2)] == ["image/png", "image/png"]


def test_alpha_channel_is_kept(handler: DeblurHandler, context: Context) -> None:
    rgba = np.dstack([textured_image(40, 30), np.full((30, 40), 128, np.uint8)])
    [output] = run(handler, context, [{"body": png_bytes(rgba)}])
    image = decode_png(output)
    assert image.mode == "RGBA"
    assert np.all(np.asarray(image)[:, :, 3] == 128)


def test_yaml_settings_override_defaults(model_dir: Path) -> None:
    context = make_context(model_dir, {"handler": {"tile_size": 32, "overlap": 8, "tile_batch": 3}})
    handler = DeblurHandler()
    handler.initialize(context)
    assert (handler.tile_size, handler.overlap, handler.tile_batch) == (32, 8, 3)
    [output] = run(handler, context, [{"data": png_bytes(textured_image(70, 50))}])  # several tiles
    assert decode_png(output).size == (70, 50)


@pytest.mark.parametrize(
    ("row", "status", "words"),
    [
        ({"body": b"definitely not an image"}, 415, "not a supported image"),
        ({"body": b""}, 400, "empty body"),
        ({"body": png_bytes(textured_image(64, 48))[:200]}, 400, "corrupt"),
        ({"body": "@@not base64@@"}, 400, "base64"),
        ({"body": {"other": 1}}, 400, "unsupported payload"),
        ({}, 400, "no image"),
    ],
)
def test_bad_input_is_a_4xx_prediction_exception(
    handler: DeblurHandler, context: Context, row: dict[str, Any], status: int, words: str
) -> None:
    with pytest.raises(PredictionException) as caught:
        run(handler, context, [row])
    assert caught.value.error_code == status
    assert words in caught.value.message


def test_pixel_cap_from_yaml_gives_413(model_dir: Path, sample_png: bytes) -> None:
    context = make_context(model_dir, {"handler": {"max_pixels": 1000}})
    handler = DeblurHandler()
    handler.initialize(context)
    with pytest.raises(PredictionException) as caught:
        run(handler, context, [{"body": sample_png}])
    assert caught.value.error_code == 413


def test_missing_checkpoint_fails_initialize(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing"):
        DeblurHandler().initialize(make_context(tmp_path))
