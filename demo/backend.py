"""The demo's conversation with TorchServe: one restoration request, and the backend's health and versions.

The request speaks the serving JSON contract (base64 image + options in, base64 image + model, timing,
tiles and metrics out); any other answer is a ``ValueError``. Nothing here touches Gradio (or torch):
errors are ``BackendError`` or ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from serve.client import MODEL_NAME, BackendError, TorchServeClient

HEALTH_TIMEOUT_S = 5.0  # a health line that hangs for the full inference timeout tells nobody anything
RESPONSE_FORMAT = "png"  # lossless, keeps alpha and 16 bits: the slider and the download start from it


# The page's restoration paths → the request's kernel_aware (None: not sent, the archive's default decides).
PATHS: dict[str, bool | None] = {"default": None, "kernel-aware": True, "network": False}


@dataclass(frozen=True)
class RestoreSettings:
    """What the person chose: model version (None → the server's default), the tiling options and the path
    (a key of ``PATHS``)."""

    version: str | None = None
    tile_size: int = 768
    overlap: int = 32
    self_ensemble: bool = False
    path: str = "default"

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"the restoration path must be one of {', '.join(PATHS)}, got {self.path!r}")

    def payload_options(self) -> dict[str, Any]:
        options = {"tile_size": self.tile_size, "overlap": self.overlap, "self_ensemble": self.self_ensemble}
        kernel_aware = PATHS[self.path]
        return options if kernel_aware is None else options | {"kernel_aware": kernel_aware}


@dataclass(frozen=True)
class QualityReport:
    """PSNR (dB) and SSIM of the blurred input and of the output, both against the ground truth."""

    psnr_input: float
    psnr_output: float
    ssim_input: float
    ssim_output: float

    @property
    def psnr_gain(self) -> float:
        return self.psnr_output - self.psnr_input

    @property
    def ssim_gain(self) -> float:
        return self.ssim_output - self.ssim_input


@dataclass(frozen=True)
class Restoration:
    """The server's answer: the restored image's encoded bytes and what it reported with them."""

    image: bytes
    round_trip_ms: float
    model_version: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    tiles: int | None = None
    metrics: QualityReport | None = None
    path: str | None = None  # what answered: "deconvolution", "network" or "input"
    kernel: dict[str, Any] | None = None  # kernel_aware's report: "used", "decision", "spread_px", ... (README)
    kernel_picture: bytes | None = None  # the estimated kernel as a small PNG
    kernel_aware: bool = False  # whether the kernel-aware path ran (its report, or null for a small image)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def build_payload(image: bytes, ground_truth: bytes | None, settings: RestoreSettings) -> dict[str, Any]:
    payload: dict[str, Any] = {"image": b64(image), "format": RESPONSE_FORMAT, **settings.payload_options()}
    if ground_truth is not None:
        payload["ground_truth"] = b64(ground_truth)
    return payload


def restore(
    client: TorchServeClient, image: bytes, ground_truth: bytes | None, settings: RestoreSettings
) -> Restoration:
    """Send one restoration request; raises ``BackendError`` (server) or ``ValueError`` (unreadable answer)."""
    started = time.perf_counter()
    response = client.post_json(build_payload(image, ground_truth, settings), version=settings.version)
    elapsed_ms = (time.perf_counter() - started) * 1000
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type:
        raise ValueError(f"it answered {content_type or 'without a content type'}, not the JSON contract")
    try:
        body = response.json()
    except ValueError as exc:
        raise ValueError(f"its answer is not valid JSON ({exc})") from exc
    return parse_answer(body, elapsed_ms)


def parse_answer(body: Any, round_trip_ms: float) -> Restoration:
    """The contract's JSON answer → ``Restoration``; a missing or undecodable image is a ``ValueError``."""
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise ValueError("its JSON answer has no base64 'image'")
    try:
        image = base64.b64decode(body["image"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"its 'image' is not valid base64 ({exc})") from exc
    model = body.get("model") if isinstance(body.get("model"), dict) else {}
    timing = body.get("timing_ms") if isinstance(body.get("timing_ms"), dict) else {}
    tiles = body.get("tiles")
    kernel = body["kernel"] if isinstance(body.get("kernel"), dict) and "used" in body["kernel"] else None
    return Restoration(
        image=image,
        round_trip_ms=round_trip_ms,
        model_version=str(model["version"]) if model.get("version") is not None else None,
        timing_ms={str(k): float(v) for k, v in timing.items() if isinstance(v, int | float)},
        tiles=tiles if isinstance(tiles, int) else None,
        metrics=parse_metrics(body.get("metrics")),
        path=body["path"] if isinstance(body.get("path"), str) else None,
        kernel=kernel,
        kernel_picture=decode_picture(kernel.get("png")) if kernel else None,
        kernel_aware="kernel" in body,
    )


def decode_picture(text: Any) -> bytes | None:
    """The kernel report's base64 PNG; None when absent or not base64 (the page then shows no picture)."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def parse_metrics(metrics: Any) -> QualityReport | None:
    """The contract's ``metrics`` object, or None when absent or incomplete."""
    if not isinstance(metrics, dict):
        return None
    # JSON has no infinity: the contract reports the PSNR of an image identical to its ground truth as null.
    psnrs = [math.inf if metrics.get(name, 0) is None else metrics.get(name) for name in ("input_psnr", "psnr")]
    values = [*psnrs, metrics.get("input_ssim"), metrics.get("ssim")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) for v in values):
        return None
    psnr_input, psnr_output, ssim_input, ssim_output = (float(v) for v in values)
    return QualityReport(psnr_input, psnr_output, ssim_input, ssim_output)


# --- health and versions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    version: str
    is_default: bool
    ready_workers: int


@dataclass(frozen=True)
class BackendStatus:
    """``state`` is "ok", "no workers" or "down"; ``detail`` says why in one sentence."""

    state: str
    detail: str
    versions: tuple[ModelVersion, ...] = ()

    @property
    def default_version(self) -> str | None:
        return next((v.version for v in self.versions if v.is_default), None)


def ready_workers(description: dict[str, Any]) -> int:
    workers = description.get("workers") or []
    return sum(1 for worker in workers if isinstance(worker, dict) and worker.get("status") == "READY")


def list_versions(client: TorchServeClient, model: str = MODEL_NAME) -> tuple[ModelVersion, ...]:
    """Every registered version from the management API, the default one marked.

    TorchServe 0.12's describe JSON has no "isDefault" field: ``/models/<m>`` describes the default
    version and ``/models/<m>/all`` every version. An explicit ``isDefault`` is honoured if present.
    """
    described = client.management("GET", f"/models/{model}/all")
    if not isinstance(described, list):
        raise ValueError("the management API's version list is not a JSON list")
    marked = [d for d in described if isinstance(d, dict) and d.get("isDefault")]
    if marked:
        default = str(marked[0].get("modelVersion"))
    else:
        current = client.management("GET", f"/models/{model}")
        default = str(current[0].get("modelVersion")) if isinstance(current, list) and current else ""
    return tuple(
        ModelVersion(str(d.get("modelVersion")), str(d.get("modelVersion")) == default, ready_workers(d))
        for d in described
        if isinstance(d, dict) and d.get("modelVersion") is not None
    )


def backend_status(client: TorchServeClient) -> BackendStatus:
    """Ping the inference API, then ask the management API for versions and workers (short timeout)."""
    quick = replace(client, timeout=HEALTH_TIMEOUT_S)
    try:
        ping = quick.ping()
    except BackendError as exc:
        return BackendStatus("down", str(exc))
    if ping != "Healthy":
        return BackendStatus("down", f"TorchServe at {client.inference_url} reports {ping!r}")
    try:
        versions = list_versions(quick)
    except (BackendError, ValueError) as exc:
        return BackendStatus("ok", f"TorchServe is healthy; model versions unavailable ({exc})")
    if not versions:
        return BackendStatus("no workers", f"the model {MODEL_NAME!r} is not registered on TorchServe")
    default = next((v for v in versions if v.is_default), versions[0])
    if default.ready_workers == 0:
        return BackendStatus("no workers", f"version {default.version} has no ready worker yet", versions)
    count = f"{len(versions)} version" + ("s" if len(versions) != 1 else "")
    return BackendStatus("ok", f"{count}, default {default.version} with {default.ready_workers} ready", versions)
