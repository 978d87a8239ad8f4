"""The serving pipeline, one function per arrow: prepare (decode, check) → restore → encode (+ quality metrics).

Shared by the TorchServe handler and the folder CLI so both restore an image the same way. No ``ts``
import here. Each step returns a small frozen record, and later steps take the records they need.
The metrics follow ``deblur.metrics``'s rule; the ground truth and the input are decoded like any
request image (EXIF orientation applied, alpha ignored, gray replicated to RGB).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from deblur.blind.settings import BlindSettings
from deblur.imageio import DecodedImage, ImageError, decode_image, encode_array, kernel_picture, to_array
from deblur.metrics import score_restoration
from deblur.restore import Network, Plan, RestoreReport, plan_restoration, restore_image
from deblur.settings import MIME_TYPES, RestoreOptions, ServingSettings
from handler.request import ERROR_CODES, Request, RequestError, check_budget, check_sizes


@dataclass(frozen=True)
class Job:
    """A request decoded, checked and planned: everything the restoration and the answer need."""

    image: DecodedImage
    ground_truth: DecodedImage | None
    options: RestoreOptions
    plan: Plan
    output_format: str
    json_response: bool
    decode_ms: float

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.output_format]


@dataclass(frozen=True)
class Result:
    pixels: torch.Tensor  # (3, H, W) float32 in [-1, 1], clamped
    report: RestoreReport
    inference_ms: float


@dataclass(frozen=True)
class Answer:
    data: bytes  # the encoded image
    encode_ms: float


@dataclass(frozen=True)
class Refusal:
    """A row that is not served: the HTTP status, the stable error code and the message."""

    status: int
    error: str
    message: str

    def document(self) -> dict[str, object]:
        return {"code": self.status, "error": self.error, "message": self.message}


def refusing(step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``, or the Refusal for the request's own faults (bad input, over a limit); anything else
    is a server fault and propagates."""
    try:
        return step(*args)
    except (ImageError, RequestError) as exc:
        return Refusal(ERROR_CODES[exc.code][0], exc.code, str(exc))


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def prepare(request: Request, settings: ServingSettings, blind: BlindSettings = BlindSettings()) -> Job:
    """Decode the image and the optional ground truth, check their sizes, plan the restoration and check its
    cost against the budget, all before any model runs."""
    start = time.perf_counter()
    image = decode_image(request.image, settings.max_pixels)
    truth = None if request.ground_truth is None else decode_image(request.ground_truth, settings.max_pixels)
    check_sizes(request.options, image.size, None if truth is None else truth.size, settings)
    width, height = image.size
    plan = plan_restoration(height, width, request.options, blind)
    check_budget(plan.cost_s(settings), describe(plan), settings)
    return Job(image, truth, request.options, plan, request.output_format, request.json_response, elapsed_ms(start))


def describe(plan: Plan) -> str:
    """What a plan runs, in words, for the over-budget message."""
    rows, cols = plan.layout.rows, plan.layout.cols
    parts = [
        f"{plan.layout.count} tiles of {rows.tile}×{cols.tile} px" + (f" × {plan.passes} passes" * (plan.passes > 1))
    ]
    if plan.crops:
        parts.append(f"{len(plan.crops)} kernel estimate(s)")
    return ", ".join(parts)


def restore(job: Job, network: Network, blind: BlindSettings = BlindSettings()) -> Result:
    start = time.perf_counter()
    pixels, report = restore_image(job.image.pixels, job.options, network, blind, job.plan)
    return Result(pixels, report, elapsed_ms(start))


def encode(job: Job, result: Result) -> Answer:
    start = time.perf_counter()
    data = encode_array(to_array(result.pixels, job.image), job.output_format)
    return Answer(data, elapsed_ms(start))


def quality_metrics(job: Job, result: Result) -> dict[str, float | None] | None:
    """PSNR/SSIM of the output and of the input against the ground truth; JSON has no infinity, so the
    PSNR of identical images is reported as null."""
    if job.ground_truth is None:
        return None
    scores = score_restoration(result.pixels, job.ground_truth.pixels, job.image.pixels)
    return {
        "psnr": finite(scores.psnr),
        "ssim": scores.ssim,
        "input_psnr": finite(scores.input_psnr),
        "input_ssim": scores.input_ssim,
    }


def finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def response_document(
    job: Job, result: Result, answer: Answer, image_base64: str, model_name: str, model_version: str
) -> dict[str, object]:
    """The JSON answer to a JSON request (the REST contract in README.md, "Serving")."""
    width, height = job.image.size
    document: dict[str, object] = {
        "image": image_base64,
        "format": job.output_format,
        "width": width,
        "height": height,
        "model": {"name": model_name, "version": model_version},
        "timing_ms": {"decode": job.decode_ms, "inference": result.inference_ms, "encode": answer.encode_ms},
        "tiles": result.report.tiles,
        "path": result.report.path,
    }
    if job.options.kernel_aware:  # what the blind estimate found and whether it was used
        kernel = result.report.kernel
        document["kernel"] = None
        if kernel is not None:
            picture = base64.b64encode(kernel_picture(kernel.kernel)).decode("ascii")
            document["kernel"] = kernel.report() | {"png": picture}
    metrics = quality_metrics(job, result)
    if metrics is not None:
        document["metrics"] = metrics
    return document
