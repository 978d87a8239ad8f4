"""The deblur page: upload a blurred image (or pick an example), get the restored one from TorchServe.

The logic functions (``deblur_images``, ``backend_health``, ``record_feedback``...) take a
``TorchServeClient`` and plain values, so tests call them without a browser; ``build_demo`` only wires
them to components. Every failure the user can cause or meet (bad file, size mismatch, server down or
refusing, timeout) becomes a ``gr.Error`` with one readable sentence.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image, ImageOps
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo.backend import (
    BackendStatus,
    QualityReport,
    Restoration,
    RestoreSettings,
    backend_status,
    restore,
)
from demo.feedback import FeedbackCase, FeedbackStore, default_db_path
from demo.images import ImageError, open_image
from demo.limits import MAX_FILE_SIZE, MULTIPART_SLACK_BYTES, Limits, make_room, megabytes
from demo.make_examples import OUTCOMES_FILE
from serve.client import BackendError, TorchServeClient

__all__ = ["MAX_FILE_SIZE", "Limits", "QualityReport", "build_demo", "deblur_images", "launch_demo"]

log = logging.getLogger(__name__)

# TorchServe does the heavy work; a couple of requests in flight keep it busy without piling up here.
QUEUE_CONCURRENCY = 2
QUEUE_MAX_SIZE = 20
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
NO_GROUND_TRUTH_NOTE = "*Add the sharp original as ground truth to see how much the image improved.*"
NO_SERVER_METRICS_NOTE = "*The server sent no PSNR/SSIM for this ground truth.*"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# Encoder options for the download in the upload's own format (PNG is the server's bytes, untouched).
SAVE_OPTIONS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}, "TIFF": {}, "BMP": {}}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp"}

SliderValue = tuple[Image.Image, Image.Image]
ProgressFn = Callable[..., object]


def no_progress(*_: object, **__: object) -> None:
    """Stand-in for ``gr.Progress`` when the logic runs outside a Gradio event."""


@dataclass(frozen=True)
class Upload:
    path: Path
    data: bytes  # the file as uploaded: what TorchServe receives
    image: Image.Image  # decoded and upright (EXIF orientation applied, as the server does)
    format: str  # Pillow's name: PNG, JPEG, WEBP, BMP, TIFF


@dataclass(frozen=True)
class FeedbackDraft:
    """What a Good/Bad rating of the current result refers to: files in this request's temp dirs, and the settings."""

    input_path: str
    output_path: str
    ground_truth_path: str | None
    model_version: str | None
    settings: dict[str, Any]

    def case(self, verdict: str, comment: str) -> FeedbackCase:
        return FeedbackCase(
            verdict=verdict,
            input_name=Path(self.input_path).name,
            input=Path(self.input_path).read_bytes(),
            output=Path(self.output_path).read_bytes(),
            settings=self.settings,
            model_version=self.model_version,
            comment=comment,
            ground_truth=Path(self.ground_truth_path).read_bytes() if self.ground_truth_path else None,
        )


@dataclass(frozen=True)
class DeblurOutcome:
    slider: SliderValue
    metrics: str  # Markdown: the quality table, or a hint when there is no ground truth
    details: str  # Markdown: model version, the path that answered and why, server timing
    download: Path  # the restored image in the upload's format and size
    draft: FeedbackDraft
    kernel: Path | None = None  # the estimated kernel's picture when a deconvolution answered


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` for an expected failure: logged in one line, shown as escaped text, no traceback."""
    log.warning("demo request failed: %s", message)
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def load_upload(path: str | Path, role: str) -> Upload:
    """The uploaded file's original bytes and its upright decoded image."""
    data = Path(path).read_bytes()
    try:
        image = open_image(data)
        # The server applies EXIF orientation before restoring, so the "before" side must too.
        return Upload(Path(path), data, ImageOps.exif_transpose(image), image.format or "PNG")
    except (ImageError, OSError, ValueError, SyntaxError) as exc:  # SyntaxError: malformed EXIF
        raise user_error(f"The {role} image cannot be read: {exc}") from exc


def backend_message(exc: BackendError, version: str | None) -> str:
    """One sentence for the person at the page, by what went wrong on the server side."""
    if exc.status is None:
        return f"The deblurring server is unavailable right now. {exc}"
    if exc.status == 404 and version:
        return f"The deblurring server has no model version {version!r}; pick another one. {exc}"
    if 400 <= exc.status < 500:
        return f"The deblurring server refused the request. {exc}"
    return f"The deblurring server failed to process this image; please try again later. {exc}"


def request_restoration(
    client: TorchServeClient, blurred: Upload, target: Upload | None, settings: RestoreSettings
) -> tuple[Restoration, Image.Image]:
    """Ask TorchServe to restore ``blurred``; returns its answer and the decoded restored image."""
    try:
        answer = restore(client, blurred.data, target.data if target else None, settings)
    except BackendError as exc:
        raise user_error(backend_message(exc, settings.version)) from exc
    except ValueError as exc:  # e.g. a JSON body that is not the contract
        raise user_error(f"The deblurring server gave an answer this page cannot read: {exc}") from exc
    try:
        return answer, open_image(answer.image)
    except ImageError as exc:
        raise user_error(f"The deblurring server did not answer with an image: {exc}") from exc


def check_request_budget(paths: list[str | Path], limits: Limits) -> None:
    """The uploads of one restoration (blurred image + ground truth) against the per-request budget."""
    total = sum(Path(path).stat().st_size for path in paths)
    if total > limits.request_bytes:
        raise user_error(
            f"The images of this request are {megabytes(total)} in all (blurred image and ground truth); "
            f"one request may carry at most {megabytes(limits.request_bytes)}: send smaller files."
        )


def storage_full(limits: Limits) -> gr.Error:
    return user_error(
        f"The demo's temporary storage is full ({megabytes(limits.temp_bytes)} of uploads and results "
        "still in use); please try again in a few minutes."
    )


def check_settings(settings: RestoreSettings) -> None:
    """The server's tiling rule, checked here so the sentence can talk about the sliders."""
    if not 0 <= settings.overlap <= settings.tile_size // 2:
        raise user_error(
            f"The tile overlap ({settings.overlap} px) must be at most half the tile size"
            f" ({settings.tile_size // 2} px for {settings.tile_size}-px tiles)."
        )


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


def format_number(value: float, digits: int, signed: bool = False) -> str:
    """A table cell; "—" where there is no finite value (a PSNR or gain against an identical ground truth)."""
    if not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


IDENTICAL_NOTE = "*The input already equals the ground truth: its PSNR is unbounded, so there is no gain to show.*"
EXACT_NOTE = "*The output equals the ground truth exactly (unbounded PSNR).*"


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
    if math.isinf(report.psnr_input):
        lines += ["", IDENTICAL_NOTE]
    elif math.isinf(report.psnr_output):
        lines += ["", EXACT_NOTE]
    return "\n".join(lines)


def path_phrase(answer: Restoration, settings: RestoreSettings) -> str:
    """Which path answered and why, in words: the kernel report's decision, else the path the server named."""
    kernel = answer.kernel or {}
    decision = kernel.get("decision")
    network = f"**network** ({tiles_phrase(answer.tiles or 0)} of {settings.tile_size} px, overlap {settings.overlap})"
    if answer.path == "deconvolution" or kernel.get("used"):
        domain = "stored values" if kernel.get("gamma") == 1 else "light"
        shake = f"spread {kernel.get('spread_px')} px, support {kernel.get('support_px')} px, blur in {domain}"
        return f"**deconvolved** with the estimated camera shake ({shake})"
    if answer.path == "input":
        if decision == "no blur":
            return "**kept as it is**: no camera shake worth undoing was found"
        return (
            f"**kept as it is**: the shake estimate was refused ({decision or 'not trusted'}), so nothing was changed"
        )
    if decision is not None:
        return f"{network}: the shake estimate was refused ({decision})"
    if answer.kernel_aware and answer.kernel is None:
        return f"{network}: the image is too small for a shake estimate"
    return network


def format_details(answer: Restoration, settings: RestoreSettings, metrics_source: str | None) -> str:
    """One Markdown paragraph: which model ran, which path answered and why, and how long each step took."""
    version = answer.model_version or settings.version or "default"
    parts = [f"**Model** {version}", path_phrase(answer, settings)]
    if settings.self_ensemble and answer.path == "network":
        parts.append("self-ensemble ×8")
    timing = answer.timing_ms
    if timing:
        steps = " · ".join(f"{name} {ms:,.0f}" for name, ms in timing.items())
        parts.append(f"**server** {sum(timing.values()):,.0f} ms ({steps})")
    parts.append(f"round trip {answer.round_trip_ms:,.0f} ms")
    lines = [" · ".join(parts)]
    if metrics_source:
        lines.append(f"*Metrics computed {metrics_source}.*")
    return "\n\n".join(lines)


def tiles_phrase(tiles: int) -> str:
    return f"{tiles} tile" if tiles == 1 else f"{tiles} tiles"


def displayable(image: Image.Image) -> Image.Image:
    """Browsers show 8-bit images reliably; alpha and gray are kept as they are."""
    return to_rgb(image) if image.mode in SIXTEEN_BIT_MODES else image


def encode_like(image: Image.Image, fmt: str) -> bytes:
    """``image`` encoded as ``fmt``; modes the format cannot hold (alpha in JPEG, 16 bits) become RGB."""
    for candidate in (image, to_rgb(image)):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
            return buffer.getvalue()
        except (OSError, ValueError, KeyError):
            continue
    raise user_error(f"The restored image cannot be saved as {fmt}.")


def write_results(
    blurred: Upload, target: Upload | None, answer: Restoration, restored: Image.Image, limits: Limits
) -> tuple[Path, Path]:
    """(restored image as the server sent it, download in the upload's format) in a fresh temp dir.

    Room is made first: the temp folder's oldest uploads and results go (not this request's uploads).
    """
    root = Path(ensure_dir(get_upload_folder()))
    keep = [blurred.path] + ([target.path] if target else [])
    if not make_room(root, 2 * len(answer.image), limits.temp_bytes, keep):
        raise storage_full(limits)
    folder = Path(tempfile.mkdtemp(prefix="deblur-", dir=root))
    as_sent = folder / f"restored.{(restored.format or 'png').lower()}"
    as_sent.write_bytes(answer.image)
    fmt = blurred.format if blurred.format in EXTENSIONS else "PNG"
    download = folder / f"{blurred.path.stem}_deblurred.{EXTENSIONS[fmt]}"
    download.write_bytes(answer.image if fmt == restored.format else encode_like(restored, fmt))
    return as_sent, download


def ensure_dir(path: str) -> str:
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def quality_markdown(target: Upload | None, answer: Restoration) -> tuple[str, str | None]:
    """(metrics Markdown, where they were computed): the server measures, the page only shows."""
    if target is None:
        return NO_GROUND_TRUTH_NOTE, None
    if answer.metrics is None:
        return NO_SERVER_METRICS_NOTE, None
    return format_report(answer.metrics), "by the server"


def deblur_images(
    client: TorchServeClient,
    blurred_path: str | Path | None,
    ground_truth_path: str | Path | None = None,
    settings: RestoreSettings | None = None,
    progress: ProgressFn = no_progress,
    limits: Limits | None = None,
) -> DeblurOutcome:
    """Deblur the uploaded file; with a ground truth of the same size, also report PSNR and SSIM."""
    settings, limits = settings or RestoreSettings(), limits or Limits()
    if not blurred_path:
        raise user_error("Upload a blurred image first (or pick one of the examples).")
    check_request_budget([blurred_path, *([ground_truth_path] if ground_truth_path else [])], limits)
    progress(0.05, desc="Reading the images")
    blurred = load_upload(blurred_path, "blurred")
    target = load_upload(ground_truth_path, "ground-truth") if ground_truth_path else None
    check_settings(settings)
    if target is not None:  # checked before the request so a wrong pair costs no inference
        check_same_size(target.image, blurred.image, "The ground truth must have the same size as the blurred image")
    width, height = blurred.image.size
    progress(0.15, desc=f"Restoring {width}×{height} px on the server")
    answer, restored = request_restoration(client, blurred, target, settings)
    check_same_size(restored, blurred.image, "The deblurring server returned an image of another size")
    metrics, source = quality_markdown(target, answer)
    as_sent, download = write_results(blurred, target, answer, restored, limits)
    draft = FeedbackDraft(
        input_path=str(blurred.path),
        output_path=str(as_sent),
        ground_truth_path=str(target.path) if target else None,
        model_version=answer.model_version or settings.version,
        settings=asdict(settings),
    )
    slider = (displayable(blurred.image), displayable(restored))
    details = format_details(answer, settings, source)
    kernel = None
    if answer.path == "deconvolution" and answer.kernel_picture:
        kernel = download.with_name("kernel.png")
        kernel.write_bytes(answer.kernel_picture)
    return DeblurOutcome(slider, metrics, details, download, draft, kernel)


def backend_health(status: BackendStatus) -> str:
    """One Markdown line: ``ok``, ``no workers`` or ``down``, and why."""
    return f"Backend: **{status.state}** — {html.escape(status.detail)}"


def version_choices(status: BackendStatus) -> tuple[list[tuple[str, str]], str]:
    """Dropdown (label, value) pairs with the default version marked, and the value to select."""
    if not status.versions:
        return [("server default", "")], ""
    choices = [(f"{v.version} (default)" if v.is_default else v.version, v.version) for v in status.versions]
    return choices, status.default_version or status.versions[0].version


def record_feedback(store: FeedbackStore, draft: FeedbackDraft | None, verdict: str, comment: str) -> str:
    """Store the verdict on the current result; returns the thank-you line."""
    if draft is None:
        raise user_error("Deblur an image first, then rate the result.")
    try:
        case_id = store.add(draft.case(verdict, comment or ""))
    except (OSError, ValueError) as exc:
        raise user_error(f"The feedback could not be saved: {exc}") from exc
    rating = "good" if verdict == "up" else "bad"
    return f"Thanks: rated {rating}, saved as case #{case_id}." + (
        " It will be part of the next retraining set." if verdict == "down" else ""
    )


def example_pairs(folder: Path = EXAMPLES_DIR) -> tuple[list[list[str]], list[str]]:
    """[[blurred, sharp], ...] of the bundled examples, and their labels: the name and what the shipped model
    answers for it (from ``outcomes.json``, which a test checks against a fresh restoration)."""
    pairs = [(p, p.with_name(p.name.replace("_blurred", "_sharp"))) for p in sorted(folder.glob("*_blurred.*"))]
    pairs = [(b, s) for b, s in pairs if s.is_file()]
    outcomes = read_outcomes(folder)
    labels = []
    for blurred, _ in pairs:
        name = blurred.name.split("_blurred")[0]
        outcome = outcomes.get(name)
        labels.append(name.capitalize() + (f" · {outcome_phrase(outcome)}" if outcome else ""))
    return [[str(b), str(s)] for b, s in pairs], labels


def read_outcomes(folder: Path) -> dict[str, Any]:
    try:
        outcomes = json.loads((folder / OUTCOMES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return outcomes if isinstance(outcomes, dict) else {}


def outcome_phrase(outcome: dict[str, Any]) -> str:
    """'deconvolved, +0.97 dB' / 'kept as it is (diffuse kernel)' / 'network, +0.12 dB'."""
    metrics, kernel = outcome.get("metrics") or {}, outcome.get("kernel") or {}
    if outcome.get("path") == "input":
        return f"kept as it is ({kernel.get('decision', 'no blur')})"
    word = "deconvolved" if outcome.get("path") == "deconvolution" else "network"
    gain = (metrics.get("psnr") or 0) - (metrics.get("input_psnr") or 0)
    return f"{word}, {gain:+.2f} dB"


INTRO = """# Deblur
Upload a photo spoiled by camera shake — or pick an example below — and compare it with the restored one.
Add the sharp original as ground truth to measure the improvement."""

CSS = """
#deblur-run { margin-top: 0.5rem; }
#metrics table { width: 100%; font-variant-numeric: tabular-nums; }
#slider-sides { display: flex; justify-content: space-between; margin-bottom: -0.4rem; }
#slider-sides span { background: #374151; color: #fff; padding: 0.1rem 0.6rem; border-radius: 0.3rem;
  font-size: 0.85rem; }
"""
SLIDER_SIDES = (
    '<div id="slider-sides"><span id="side-before">left: blurred</span>'
    '<span id="side-after">right: restored</span></div>'
)
PATH_CHOICES = [
    ("archive default", "default"),
    ("undo the camera shake where the estimate is trusted (kernel-aware)", "kernel-aware"),
    ("network only (moving objects, non-uniform blur)", "network"),
]


def build_demo(
    client: TorchServeClient, feedback_store: FeedbackStore | None = None, limits: Limits | None = None
) -> gr.Blocks:
    """The page, wired to ``client``; ``/deblur`` and ``/health`` are also API endpoints."""
    store = feedback_store or FeedbackStore(default_db_path())
    limits = limits or Limits()

    def deblur(
        blurred: str | None,
        ground_truth: str | None = None,
        version: str | None = None,
        tile_size: float = 768,
        overlap: float = 32,
        self_ensemble: bool = False,
        path: str = "default",
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's documented way to ask for progress)
    ) -> tuple[SliderValue, str, str, str, str | None, FeedbackDraft]:
        """Deblur an image; with a ground truth of the same size, also report PSNR and SSIM. ``path``:
        "default" (the archive decides), "kernel-aware" or "network"."""
        try:
            settings = RestoreSettings(version or None, int(tile_size), int(overlap), bool(self_ensemble), path)
        except ValueError as exc:  # an unknown path from a direct call (the page's radio offers only PATHS)
            message = str(exc)
            raise user_error(message[:1].upper() + message[1:] + ".") from exc
        outcome = deblur_images(client, blurred, ground_truth, settings, progress, limits)
        kernel = str(outcome.kernel) if outcome.kernel else None
        return outcome.slider, outcome.metrics, outcome.details, str(outcome.download), kernel, outcome.draft

    def health() -> tuple[str, gr.Dropdown]:
        """Whether the TorchServe backend is reachable, has ready workers, and which model versions it has."""
        status = backend_status(client)
        choices, value = version_choices(status)
        return backend_health(status), gr.Dropdown(choices=choices, value=value)

    def after_run(kernel_picture: str | None) -> tuple[gr.Button, gr.Button, str, str, gr.Image]:
        # Feedback opens for the new result; the kernel picture shows only when a deconvolution answered.
        shown = gr.Image(visible=kernel_picture is not None)
        return gr.Button(interactive=True), gr.Button(interactive=True), "", "", shown

    def rate(verdict: str) -> Callable[[FeedbackDraft | None, str], tuple[str, gr.Button, gr.Button]]:
        def handler(draft: FeedbackDraft | None, comment: str) -> tuple[str, gr.Button, gr.Button]:
            message = record_feedback(store, draft, verdict, comment)
            return message, gr.Button(interactive=False), gr.Button(interactive=False)

        return handler

    # delete_cache: uploads and results are per-request temp files; drop those older than 2 h every hour.
    with gr.Blocks(title="Deblur", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            health_line = gr.Markdown("Backend: checking…", elem_id="health")
            refresh = gr.Button("Check backend", size="sm", scale=0, min_width=140)
        with gr.Row():
            with gr.Column(scale=2):
                # filepath + image_mode=None: Gradio hands over the uploaded file untouched, so the
                # server sees the original bytes (format, EXIF, alpha, bit depth), not a re-encode.
                blurred = gr.Image(
                    label="Blurred image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="blurred",
                )
                ground_truth = gr.Image(
                    label="Ground truth (optional, same size)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=200,
                    elem_id="ground-truth",
                )
                version = gr.Dropdown(
                    label="Model version",
                    choices=[("server default", "")],
                    value="",
                    allow_custom_value=True,  # API callers may name a version the page has not listed yet
                    info="Compare versions on the same image",
                    elem_id="version",
                )
                with gr.Accordion("Advanced", open=False):
                    tile_size = gr.Slider(128, 1024, value=768, step=64, label="Tile size (px)")
                    overlap = gr.Slider(0, 256, value=32, step=16, label="Tile overlap (px)")
                    self_ensemble = gr.Checkbox(label="Self-ensemble (8 flips/rotations, slower, a bit sharper)")
                    path = gr.Radio(
                        PATH_CHOICES,
                        value="default",
                        label="Restoration path",
                        info="Kernel-aware suits camera shake; the network suits moving objects",
                        elem_id="path",
                    )
                run = gr.Button("Deblur", variant="primary", elem_id="deblur-run")
                pairs, labels = example_pairs()
                if pairs:
                    gr.Examples(
                        pairs,
                        [blurred, ground_truth],
                        label="Examples (synthetic camera shake, with the sharp original; what the shipped model does)",
                        example_labels=labels,
                    )
            with gr.Column(scale=3):
                gr.HTML(SLIDER_SIDES, padding=False)
                slider = gr.ImageSlider(
                    label="Before / after", format="png", interactive=False, max_height=640, elem_id="result"
                )
                metrics = gr.Markdown(elem_id="metrics")
                details = gr.Markdown(elem_id="details")
                kernel = gr.Image(
                    label="Estimated blur kernel (brightest = most weight)",
                    type="filepath",
                    interactive=False,
                    visible=False,
                    height=120,
                    width=160,
                    buttons=[],
                    elem_id="kernel",
                )
                download = gr.File(label="Restored image (original format and size)", interactive=False)
                with gr.Group():
                    comment = gr.Textbox(label="How did it do? (optional comment)", lines=1, max_length=2000)
                    with gr.Row():
                        thumbs_up = gr.Button("Good", interactive=False, elem_id="thumbs-up")
                        thumbs_down = gr.Button("Bad", interactive=False, elem_id="thumbs-down")
                feedback_status = gr.Markdown(elem_id="feedback-status")
        draft = gr.State(None)

        inputs = [blurred, ground_truth, version, tile_size, overlap, self_ensemble, path]
        outputs = [slider, metrics, details, download, kernel, draft]
        event = run.click(deblur, inputs, outputs, api_name="deblur", show_progress_on=slider)
        event.success(
            after_run,
            kernel,
            [thumbs_up, thumbs_down, feedback_status, comment, kernel],
            api_visibility="private",
            queue=False,
        )
        for button, verdict in ((thumbs_up, "up"), (thumbs_down, "down")):
            button.click(
                rate(verdict), [draft, comment], [feedback_status, thumbs_up, thumbs_down], api_visibility="private"
            )
        demo.load(health, None, [health_line, version], api_name="health", queue=False)
        refresh.click(health, None, [health_line, version], api_visibility="private", queue=False)
    return demo


class UploadBudget:
    """ASGI middleware in front of Gradio: a request body over the per-request budget gets 413 before
    any of it is stored, and an upload first makes room in the temp folder (507 when it stays full)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        budget = self.limits.request_bytes + MULTIPART_SLACK_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > budget:
            message = f"One request may carry at most {megabytes(self.limits.request_bytes)} of files."
            await PlainTextResponse(message, status_code=413)(scope, receive, send)
            return
        if scope["path"].rstrip("/").endswith("/upload"):
            root = Path(get_upload_folder())
            if not await run_in_threadpool(make_room, root, length or 0, self.limits.temp_bytes):
                await PlainTextResponse(storage_full(self.limits).message, status_code=507)(scope, receive, send)
                return
        if length is not None:
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:  # no Content-Length (chunked): stop reading past the budget
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > budget:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, send)


def launch_demo(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = MAX_FILE_SIZE,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    blocked_paths: list[str] | None = None,
    limits: Limits | None = None,
) -> str:
    """Serve ``demo`` with a bounded queue, a per-file and a per-request upload cap; returns the local URL.

    Gradio serves only its upload/cache folder (plus ``allowed_paths``, which we leave empty);
    ``blocked_paths`` additionally fences off folders such as TorchServe's key file and the feedback DB.
    """
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    _, local_url, _ = demo.launch(
        app_kwargs={"middleware": [Middleware(UploadBudget, limits=limits or Limits())]},
        server_name=host,
        server_port=port,
        max_file_size=max_file_size,
        prevent_thread_lock=prevent_thread_lock,
        share=False,
        quiet=quiet,
        blocked_paths=blocked_paths or [],
        allowed_paths=[],
        css=CSS,
    )
    return local_url
