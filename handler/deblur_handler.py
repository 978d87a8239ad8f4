"""TorchServe handler: one request row in, one deblurred PNG out, using the inference core unchanged.

A row carries the image as raw bytes (``body``), as a multipart field (``data`` or ``file``), as a
base64 string, or as a JSON object ``{"image": "<base64>"}``. Bad input becomes a
``PredictionException`` with the core's 4xx status, so clients never see a bare 503.

Inside the .mar this file sits at the archive root next to the ``deblur/`` package, so the imports
below resolve the same way there as in the repository. TorchServe instantiates the single class
defined in this module: define no other class here.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import torch
from ts.context import Context
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from deblur.imageio import DEFAULT_MAX_PIXELS, DecodedImage, ImageError, decode_image, encode_image, to_image
from deblur.model import load_model
from deblur.tiling import restore_tiled

# Overridable from the archive's model-config.yaml, section ``handler:``.
HANDLER_DEFAULTS: dict[str, int] = {"tile_size": 512, "overlap": 64, "tile_batch": 4, "max_pixels": DEFAULT_MAX_PIXELS}
PAYLOAD_KEYS = ("data", "body", "file")  # raw body → "body"; multipart fields keep their form names
RESPONSE_TYPE = "image/png"

Restored = tuple[torch.Tensor, DecodedImage]  # (3, H, W) unclamped output, and what to put back


class DeblurHandler(BaseHandler):
    """Decode → tiled restoration → PNG; all per-request data flows through return values."""

    def initialize(self, context: Context) -> None:
        # BaseHandler.initialize would try to load the checkpoint as TorchScript: use our own loader.
        properties = context.system_properties
        self.manifest = context.manifest
        self.model_yaml_config = context.model_yaml_config or {}
        self.device = select_device(properties.get("gpu_id"))
        self.model = load_model(checkpoint_path(properties["model_dir"], context.manifest), self.device)
        settings = handler_settings(self.model_yaml_config)
        self.tile_size = settings["tile_size"]
        self.overlap = settings["overlap"]
        self.tile_batch = settings["tile_batch"]
        self.max_pixels = settings["max_pixels"]
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> list[DecodedImage]:
        try:
            return [decode_image(row_payload(row), self.max_pixels) for row in data]
        except ImageError as exc:
            # TorchServe fails the whole batch with this status; batchSize is 1 in our archive.
            raise PredictionException(str(exc), exc.status) from exc

    def inference(self, data: list[DecodedImage], *args: Any, **kwargs: Any) -> list[Restored]:
        with torch.inference_mode():
            return [(self.restore(image.pixels), image) for image in data]

    def postprocess(self, data: list[Restored]) -> list[bytes]:
        outputs = []
        for idx, (restored, decoded) in enumerate(data):
            outputs.append(encode_image(to_image(restored.clamp(-1, 1), decoded), "png"))
            # self.context is the current request batch's context, set by BaseHandler.handle.
            self.context.set_response_content_type(idx, RESPONSE_TYPE)
        return outputs

    def restore(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [-1, 1] → (3, H, W) float32, not clamped."""
        return restore_tiled(
            self.model,
            pixels,
            tile=self.tile_size,
            overlap=self.overlap,
            batch_size=self.tile_batch,
            device=self.device,
        )


def select_device(gpu_id: int | None) -> torch.device:
    """The GPU TorchServe assigned to this worker, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def checkpoint_path(model_dir: str, manifest: dict[str, Any]) -> Path:
    """The archive's serialized file (the checkpoint), extracted into ``model_dir``."""
    serialized = manifest.get("model", {}).get("serializedFile")
    if not serialized:
        raise RuntimeError("the model archive has no serialized file: build it with `python -m model_archive`")
    path = Path(model_dir) / serialized
    if not path.is_file():
        raise RuntimeError(f"checkpoint {serialized!r} is missing from the extracted archive {model_dir}")
    return path


def handler_settings(model_yaml_config: dict[str, Any]) -> dict[str, int]:
    """HANDLER_DEFAULTS updated with the known keys of the archive's ``handler:`` section."""
    section = model_yaml_config.get("handler") or {}
    return {name: int(section.get(name, default)) for name, default in HANDLER_DEFAULTS.items()}


def row_payload(row: dict[str, Any]) -> bytes:
    """The image bytes carried by one request row, whatever way the client sent them."""
    key = next((k for k in PAYLOAD_KEYS if row.get(k) is not None), None)
    if key is None:
        raise ImageError("no image in the request: send the bytes as the body or as a multipart field 'data'")
    value = row[key]
    if isinstance(value, dict):  # TorchServe already parsed an application/json body
        value = value.get("image")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return decode_base64(value)
    raise ImageError('unsupported payload: send image bytes, a base64 string or JSON {"image": "<base64>"}')


def decode_base64(text: str) -> bytes:
    """Base64 (optionally a ``data:...;base64,`` URL, line-wrapped or not) → bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"text payload is not valid base64: {exc}") from exc
