"""The serving pipeline, one function per arrow: decode → restore → encode (+ quality metrics).

Shared by the TorchServe handler and the folder CLI so both restore an image the same way. No
``ts`` import here; per-request data lives in the frozen dataclasses passed from step to step.

Metric protocol (the response's ``metrics``): PSNR and SSIM from ``deblur.metrics`` on RGB, over
the full image, in [0, 1]; SSIM is pytorch-msssim's (Gaussian window 11, σ 1.5). The output is the
model's RGB result clamped and rounded to 8 bits (what an RGB PNG answer holds), before gray,
alpha or format conversion; the ground truth and the input are decoded like any request image
(EXIF orientation applied, alpha ignored, gray replicated to RGB).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from deblur.blind import KernelEstimate, blind_deconvolution
from deblur.imageio import DecodedImage, decode_image, encode_array, to_array, to_model_range, to_uint8
from deblur.metrics import psnr, ssim, to_unit_range
from deblur.tiling import count_tiles, restore_tiled
from handler.request import DeblurRequest, RequestError, RestoreOptions

Predictor = Callable[[torch.Tensor], torch.Tensor]
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ENSEMBLE_MAX_PIXELS = 2048 * 2048  # 8 passes of a 4 MP image stay well inside the 600 s response timeout
ENSEMBLE = tuple((turns, flip) for turns in range(4) for flip in (False, True))  # the 8 dihedral variants


@dataclass(frozen=True)
class DecodedRequest:
    request: DeblurRequest
    image: DecodedImage
    ground_truth: DecodedImage | None
    decode_ms: float


@dataclass(frozen=True)
class Restored:
    decoded: DecodedRequest
    pixels: torch.Tensor  # (3, H, W) float32 in [-1, 1], clamped
    tiles: int  # tiles run through a network (8× with self-ensemble; 0 when an unrefined deconvolution answered)
    inference_ms: float
    kernel: KernelEstimate | None = None  # the blind estimate, when the request asked for kernel_aware


@dataclass(frozen=True)
class Encoded:
    restored: Restored
    data: bytes
    encode_ms: float

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.restored.decoded.request.output_format]


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def decode_request(
    request: DeblurRequest, max_pixels: int, ensemble_max_pixels: int = ENSEMBLE_MAX_PIXELS
) -> DecodedRequest:
    """Decode the image and the optional ground truth, which must have the same size."""
    start = time.perf_counter()
    image = decode_image(request.image, max_pixels)
    check_ensemble_size(request, image, ensemble_max_pixels)
    truth = None if request.ground_truth is None else decode_image(request.ground_truth, max_pixels)
    if truth is not None and truth.size != image.size:
        raise RequestError(
            f"field 'ground_truth' is {truth.size[0]}×{truth.size[1]} but the image is "
            f"{image.size[0]}×{image.size[1]} (after EXIF orientation): send the sharp version of the same image"
        )
    return DecodedRequest(request, image, truth, elapsed_ms(start))


def check_ensemble_size(request: DeblurRequest, image: DecodedImage, ensemble_max_pixels: int) -> None:
    """Self-ensemble costs 8 restorations: refuse it where that would outlast the response timeout."""
    width, height = image.size
    if request.options.self_ensemble and width * height > ensemble_max_pixels:
        raise RequestError(
            f"field 'self_ensemble' is limited to images of at most {ensemble_max_pixels} pixels "
            f"(it runs the model 8 times); this one is {width}×{height}: send it without self_ensemble"
        )


def restore_request(
    decoded: DecodedRequest,
    model: Predictor,
    tile_batch: int,
    device: torch.device | None = None,
    refiner: Predictor | None = None,
) -> Restored:
    """The network's restoration; with ``kernel_aware``, a trusted blind deconvolution replaces it.

    With a ``refiner`` (a network trained on deconvolutions) the deconvolution is refined by it; the
    network then runs only where the estimate is not trusted.
    """
    start = time.perf_counter()
    options = decoded.request.options
    deconvolved, estimate = blind_deconvolution(decoded.image.pixels) if options.kernel_aware else (None, None)
    if deconvolved is not None and refiner is None:
        return Restored(decoded, deconvolved, 0, elapsed_ms(start), estimate)
    network, source = (model, decoded.image.pixels) if deconvolved is None else (refiner, deconvolved)
    assert network is not None
    pixels = restore(network, source, options, tile_batch, device)
    _, height, width = pixels.shape
    tiles = count_tiles(height, width, options.tile_size, options.overlap) * (8 if options.self_ensemble else 1)
    return Restored(decoded, pixels, tiles, elapsed_ms(start), estimate)


def restore(
    model: Predictor,
    pixels: torch.Tensor,
    options: RestoreOptions,
    tile_batch: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(3, H, W) in [-1, 1] → restored (3, H, W), clamped to [-1, 1]."""

    def run(image: torch.Tensor) -> torch.Tensor:
        return restore_tiled(model, image, options.tile_size, options.overlap, tile_batch, device)

    restored = self_ensemble(run, pixels) if options.self_ensemble else run(pixels)
    return restored.clamp_(-1, 1)


def self_ensemble(run: Predictor, pixels: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over the 8 flips/rotations of ``pixels``, each mapped back (BasicSR's x8)."""
    total = torch.zeros_like(pixels, dtype=torch.float32)
    for turns, flip in ENSEMBLE:
        variant = torch.rot90(pixels.flip(-1) if flip else pixels, turns, dims=(-2, -1)).contiguous()
        back = torch.rot90(run(variant), -turns, dims=(-2, -1))
        total += back.flip(-1) if flip else back
    return total / len(ENSEMBLE)


def encode_restored(restored: Restored) -> Encoded:
    start = time.perf_counter()
    array = to_array(restored.pixels, restored.decoded.image)
    data = encode_array(array, restored.decoded.request.output_format)
    return Encoded(restored, data, elapsed_ms(start))


def quality_metrics(restored: Restored) -> dict[str, float | None] | None:
    """PSNR/SSIM of the output and of the input against the ground truth (see the module docstring)."""
    truth = restored.decoded.ground_truth
    if truth is None:
        return None
    output = to_unit_range(to_model_range(to_uint8(restored.pixels)))
    target = to_unit_range(truth.pixels)
    blurred = to_unit_range(restored.decoded.image.pixels)
    return {
        "psnr": finite(psnr(output, target)),
        "ssim": ssim(output, target),
        "input_psnr": finite(psnr(blurred, target)),
        "input_ssim": ssim(blurred, target),
    }


def finite(value: float) -> float | None:
    """JSON has no infinity: identical images (PSNR = +inf) are reported as null."""
    return None if np.isinf(value) else value


def response_document(encoded: Encoded, image_base64: str, model_name: str, model_version: str) -> dict[str, object]:
    """The JSON answer to a JSON request (the REST contract in README.md, "Serving")."""
    restored = encoded.restored
    width, height = restored.decoded.image.size
    document: dict[str, object] = {
        "image": image_base64,
        "format": restored.decoded.request.output_format,
        "width": width,
        "height": height,
        "model": {"name": model_name, "version": model_version},
        "timing_ms": {
            "decode": restored.decoded.decode_ms,
            "inference": restored.inference_ms,
            "encode": encoded.encode_ms,
        },
        "tiles": restored.tiles,
    }
    if restored.decoded.request.options.kernel_aware:  # what the blind estimate found and whether it was used
        document["kernel"] = None if restored.kernel is None else restored.kernel.report()
    metrics = quality_metrics(restored)
    if metrics is not None:
        document["metrics"] = metrics
    return document
