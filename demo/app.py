"""The deblur page: upload a blurred image, get the restored one from TorchServe, compare before/after.

The logic functions (``deblur_images``, ``backend_health``, ...) take a ``TorchServeClient`` and plain
values, so tests call them without a browser; ``build_demo`` only wires them to components. Every
failure the user can cause or meet (bad file, size mismatch, server down or refusing) becomes a
``gr.Error`` with one readable sentence.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageOps

from deblur.imageio import ImageError, open_image
from deblur.metrics import psnr, ssim
from serve.client import BackendError, TorchServeClient

log = logging.getLogger(__name__)

MAX_FILE_SIZE = "50mb"
# TorchServe does the heavy work; a couple of requests in flight keep it busy without piling up here.
QUEUE_CONCURRENCY = 2
QUEUE_MAX_SIZE = 20
HEALTH_TIMEOUT_S = 5.0  # a health line that hangs for the full inference timeout tells nobody anything
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
NO_GROUND_TRUTH_NOTE = "*Add the sharp original as ground truth to see how much the image improved.*"

SliderValue = tuple[Image.Image, Image.Image]


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


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` for an expected failure: logged in one line, shown as escaped text, no traceback."""
    log.warning("demo request failed: %s", message)
    return gr.Error(html.escape(message), print_exception=False)


def load_upload(path: str | Path, role: str) -> tuple[bytes, Image.Image]:
    """The uploaded file's original bytes (what TorchServe receives) and its upright decoded image."""
    data = Path(path).read_bytes()
    try:
        image = open_image(data)
        # The server applies EXIF orientation before restoring, so the "before" side must too.
        return data, ImageOps.exif_transpose(image)
    except (ImageError, OSError, ValueError, SyntaxError) as exc:  # SyntaxError: malformed EXIF
        raise user_error(f"The {role} image cannot be read: {exc}") from exc


def backend_message(exc: BackendError) -> str:
    """One sentence for the person at the page, by what went wrong on the server side."""
    if exc.status is None:
        return f"The deblurring server is unavailable right now. {exc}"
    if 400 <= exc.status < 500:
        return f"The deblurring server refused this image. {exc}"
    return f"The deblurring server failed to process this image; please try again later. {exc}"


def request_deblur(client: TorchServeClient, data: bytes) -> Image.Image:
    """Send the image bytes to TorchServe and decode the restored image it answers with."""
    try:
        response = client.predict(data)
    except BackendError as exc:
        raise user_error(backend_message(exc)) from exc
    try:
        return open_image(response.content)
    except ImageError as exc:
        raise user_error(f"The deblurring server did not answer with an image: {exc}") from exc


def check_same_size(image: Image.Image, reference: Image.Image, message: str) -> None:
    if image.size != reference.size:
        (w, h), (rw, rh) = image.size, reference.size
        raise user_error(f"{message} ({w}×{h} vs {rw}×{rh} pixels).")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit gray is scaled down rather than clipped (Pillow's convert would clip at 255)."""
    if image.mode in SIXTEEN_BIT_MODES:
        gray = (np.asarray(image, dtype=np.float32) / 257.0).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def to_unit_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image → (3, H, W) float32 RGB in [0, 1], the protocol of ``deblur.metrics``."""
    return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1).float().div(255.0)


def compare_to_ground_truth(blurred: Image.Image, output: Image.Image, ground_truth: Image.Image) -> QualityReport:
    target, before, after = (to_unit_tensor(image) for image in (ground_truth, blurred, output))
    return QualityReport(
        psnr_input=psnr(before, target),
        psnr_output=psnr(after, target),
        ssim_input=ssim(before, target),
        ssim_output=ssim(after, target),
    )


def format_number(value: float, digits: int, signed: bool = False) -> str:
    if math.isnan(value):  # e.g. a gain of ∞ - ∞ when both images equal the ground truth
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_report(report: QualityReport) -> str:
    """The report as a small Markdown table: input and output against the ground truth, and the gain."""
    rows = [
        ("PSNR (dB)", report.psnr_input, report.psnr_output, report.psnr_gain, 2),
        ("SSIM", report.ssim_input, report.ssim_output, report.ssim_gain, 4),
    ]
    lines = ["| | input vs ground truth | output vs ground truth | gain |", "|---|---:|---:|---:|"]
    for name, before, after, gain, digits in rows:
        cells = [format_number(before, digits), format_number(after, digits), format_number(gain, digits, signed=True)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def displayable(image: Image.Image) -> Image.Image:
    """Browsers show 8-bit images reliably; alpha and gray are kept as they are."""
    return to_rgb(image) if image.mode in SIXTEEN_BIT_MODES else image


def deblur_images(
    client: TorchServeClient, blurred: str | Path | None, ground_truth: str | Path | None = None
) -> tuple[SliderValue, str]:
    """Deblur the uploaded file; returns (before, after) for the slider and the metrics (Markdown)."""
    if not blurred:
        raise user_error("Upload a blurred image first.")
    data, before = load_upload(blurred, "blurred")
    target = load_upload(ground_truth, "ground-truth")[1] if ground_truth else None
    if target is not None:  # checked before the request so a wrong pair costs no inference
        check_same_size(target, before, "The ground truth must have the same size as the blurred image")
    after = request_deblur(client, data)
    check_same_size(after, before, "The deblurring server returned an image of another size")
    shown = (displayable(before), displayable(after))
    if target is None:
        return shown, NO_GROUND_TRUTH_NOTE
    return shown, format_report(compare_to_ground_truth(before, after, target))


def backend_health(client: TorchServeClient) -> str:
    """One Markdown line: ``ok`` when TorchServe answers /ping as Healthy, ``down`` with the reason otherwise."""
    try:
        status = replace(client, timeout=HEALTH_TIMEOUT_S).ping()
    except BackendError as exc:
        return f"Backend: **down** — {exc}"
    if status != "Healthy":
        return f"Backend: **down** — TorchServe at {client.inference_url} reports {status!r}"
    return f"Backend: **ok** — TorchServe at {client.inference_url} is healthy"


def build_demo(client: TorchServeClient) -> gr.Blocks:
    """The page, wired to ``client``; ``/deblur`` and ``/health`` are also API endpoints."""

    def deblur(blurred: str | None, ground_truth: str | None = None) -> tuple[SliderValue, str]:
        """Deblur an image; with a ground truth of the same size, also report PSNR and SSIM."""
        return deblur_images(client, blurred, ground_truth)

    def health() -> str:
        """Whether the TorchServe backend is reachable and healthy."""
        return backend_health(client)

    # delete_cache: uploads and results are per-request temp files; drop those older than 2 h every hour.
    with gr.Blocks(title="Deblur", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown("# Deblur\nUpload a blurred photo and compare it with the restored one.")
        with gr.Row():
            health_line = gr.Markdown(label="backend")
            refresh = gr.Button("Check backend", size="sm", scale=0)
        with gr.Row():
            with gr.Column():
                # filepath + image_mode=None: Gradio hands over the uploaded file untouched, so the
                # server sees the original bytes (format, EXIF, alpha, bit depth), not a re-encode.
                blurred = gr.Image(
                    label="Blurred image", type="filepath", image_mode=None, sources=["upload", "clipboard"]
                )
                ground_truth = gr.Image(
                    label="Ground truth (optional, same size)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                )
                run = gr.Button("Deblur", variant="primary")
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", format="png", interactive=False)
                metrics = gr.Markdown(label="metrics")
        run.click(deblur, [blurred, ground_truth], [slider, metrics], api_name="deblur")
        demo.load(health, None, health_line, api_name="health", queue=False)
        refresh.click(health, None, health_line, api_visibility="private", queue=False)
    return demo


def launch_demo(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = MAX_FILE_SIZE,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> str:
    """Serve ``demo`` with a bounded queue and an upload size cap; returns the local URL."""
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    _, local_url, _ = demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=max_file_size,
        prevent_thread_lock=prevent_thread_lock,
        share=False,
        quiet=quiet,
    )
    return local_url
