"""TorchServe handler: an adapter from request rows to the serving pipeline and back.

``preprocess`` validates, decodes and plans each row (``handler.request``, ``handler.pipeline``),
``inference`` restores it (``deblur.restore.restore_image``), ``postprocess`` encodes it and
answers with the image, or with a JSON document when the request was JSON. Bad input becomes that
row's 4xx answer ``{"code", "error", "message"}`` (``Refusal``), so clients never see a bare 503, other
rows of a batch are served and the worker keeps running. Per-request data flows through return values,
never through ``self``.

Inside the .mar this file sits at the archive root next to the ``deblur/`` and ``handler/``
packages, so the imports below resolve the same way there as in the repository. TorchServe
instantiates the single class defined in this module: define no other class here.
"""

from __future__ import annotations

import base64
import json
import logging
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from ts.context import Context
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from deblur.model import load_model
from deblur.restore import Network
from deblur.runtime import make_predictor, resolve_precision, resolve_tile_batch
from deblur.settings import ServingSettings
from handler.pipeline import Answer, Job, Refusal, Result, encode, prepare, refusing, response_document, restore
from handler.request import parse_row

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Deblur-Version"  # the model version that answered
PATH_HEADER = "X-Deblur-Path"  # what answered: "deconvolution", "network" or "input"

# Custom metrics (counters, so Prometheus can derive rates and per-request means).
METRIC_TILES = "DeblurTiles"
METRIC_MEGAPIXELS = "DeblurMegapixels"
METRIC_INFERENCE_MS = "DeblurInferenceMs"


class DeblurHandler(BaseHandler):
    """Rows → decoded requests → restored tensors → encoded answers."""

    def initialize(self, context: Context) -> None:
        # BaseHandler.initialize would try to load the checkpoint as TorchScript: use our own loader.
        properties = context.system_properties
        self.manifest = context.manifest
        self.model_yaml_config = context.model_yaml_config or {}
        self.model_name, self.model_version = model_identity(context)
        self.device = select_device(properties.get("gpu_id"))
        self.settings = ServingSettings.from_yaml(self.model_yaml_config)
        serialized = checkpoint_path(properties["model_dir"], context.manifest)
        model = load_network(serialized, self.settings.model_format, self.device)
        # The fastest safe arithmetic for this device (bf16 on CPUs with native bf16) unless forced to fp32.
        predict = make_predictor(model, self.device, self.settings.precision)
        tile_batch = resolve_tile_batch(self.settings.tile_batch, self.device)
        self.network = Network(predict, tile_batch, self.device)
        dtype = resolve_precision(self.settings.precision, self.device) or torch.float32
        log.info(
            "deblur %s (%s) on %s: %s arithmetic, %d intra-op threads, tiles %d/%d in batches of %d, kernel_aware %s",
            self.model_version, self.settings.model_format, self.device, dtype, torch.get_num_threads(),
            self.settings.tile_size, self.settings.overlap, tile_batch, self.settings.kernel_aware,
        )  # fmt: skip
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> list[Job | Refusal]:
        return [refusing(self.prepare_row, idx, row) for idx, row in enumerate(data)]

    def prepare_row(self, idx: int, row: dict[str, Any]) -> Job:
        accept, request_type = header(self.context, idx, "accept"), header(self.context, idx, "content-type")
        request = parse_row(row, row_content_type(self.context, idx), accept, self.settings, request_type)
        return prepare(request, self.settings)

    def inference(self, data: list[Job | Refusal], *args: Any, **kwargs: Any) -> list[tuple[Job, Result] | Refusal]:
        with torch.inference_mode():
            return [job if isinstance(job, Refusal) else (job, restore(job, self.network)) for job in data]

    def postprocess(self, data: list[tuple[Job, Result] | Refusal]) -> list[bytes]:
        replies = []
        for idx, item in enumerate(data):
            answer = item if isinstance(item, Refusal) else refusing(encode, *item)
            if isinstance(answer, Refusal):
                replies.append(self.refuse(idx, answer))
                continue
            job, result = item
            emit_metrics(self.context, idx, job, result, self.model_version)
            replies.append(self.answer(idx, job, result, answer))
        return replies

    def answer(self, idx: int, job: Job, result: Result, answer: Answer) -> bytes:
        """The image itself, or the JSON document when the request was JSON; sets the content type, and headers
        naming the version and the path that answered (an image answer has no other place for them)."""
        self.context.set_response_header(idx, VERSION_HEADER, self.model_version)
        self.context.set_response_header(idx, PATH_HEADER, result.report.path)
        if not job.json_response:
            self.context.set_response_content_type(idx, job.mime_type)
            return answer.data
        self.context.set_response_content_type(idx, "application/json")
        image = base64.b64encode(answer.data).decode("ascii")
        document = response_document(job, result, answer, image, self.model_name, self.model_version)
        return json.dumps(document, allow_nan=False).encode()

    def refuse(self, idx: int, refusal: Refusal) -> bytes:
        """A request's own fault, answered for that row alone: its status and ``{"code", "error", "message"}``."""
        log.info("request refused: %d %s: %s", refusal.status, refusal.error, refusal.message)
        self.context.set_response_status(refusal.status, HTTPStatus(refusal.status).phrase, idx)
        self.context.set_response_content_type(idx, "application/json")
        return json.dumps(refusal.document(), ensure_ascii=False).encode()


def emit_metrics(context: Context, idx: int, job: Job, result: Result, version: str) -> None:
    """Tiles, megapixels and inference time of one request, as TorchServe custom metrics."""
    width, height = job.image.size
    dimensions = [Dimension("ModelVersion", version)]
    values = (
        (METRIC_TILES, result.report.tiles, "count"),
        (METRIC_MEGAPIXELS, width * height / 1e6, "MP"),
        (METRIC_INFERENCE_MS, result.inference_ms, "ms"),
    )
    for name, value, unit in values:
        context.metrics.add_metric(name, value, unit, idx, list(dimensions), MetricTypes.COUNTER)


def model_identity(context: Context) -> tuple[str, str]:
    model = context.manifest.get("model", {})
    return model.get("modelName", context.model_name), str(model.get("modelVersion", "unknown"))


def header(context: Context, idx: int, name: str) -> str | None:
    """A request header, case-insensitively (TorchServe keeps the client's spelling)."""
    headers = context.get_all_request_header(idx) or {}
    return next((v for k, v in headers.items() if k.lower() == name and isinstance(v, str)), None)


def row_content_type(context: Context, idx: int) -> str | None:
    """The content type of the row's payload parameter (TorchServe files it under the parameter name)."""
    headers = context.get_all_request_header(idx) or {}
    for key in ("data", "body", "file"):
        entry = headers.get(key)
        if isinstance(entry, dict):
            return entry.get("content-type")
    return None


def select_device(gpu_id: int | None) -> torch.device:
    """The GPU TorchServe assigned to this worker, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def load_network(path: Path, model_format: str, device: torch.device) -> torch.nn.Module:
    """The archive's network: its TorchScript export as traced, or the checkpoint's model rebuilt."""
    if model_format == "torchscript":
        return torch.jit.load(str(path), map_location=device).eval()
    return load_model(path, device)


def checkpoint_path(model_dir: str, manifest: dict[str, Any]) -> Path:
    """The archive's serialized file (the checkpoint or its TorchScript export), extracted into ``model_dir``."""
    serialized = manifest.get("model", {}).get("serializedFile")
    if not serialized:
        raise RuntimeError("the model archive has no serialized file: build it with `python -m model_archive`")
    return archive_file(model_dir, serialized)


def archive_file(model_dir: str, name: str) -> Path:
    """A checkpoint extracted from the archive into ``model_dir``; a missing one fails the worker's start."""
    path = Path(model_dir) / name
    if not path.is_file():
        raise RuntimeError(f"checkpoint {name!r} is missing from the extracted archive {model_dir}")
    return path
