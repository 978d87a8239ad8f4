"""The Gradio demo: its logic against a stub TorchServe, the launched page through gradio_client, and
(``e2e``) the logic against a real TorchServe.

The stub is a tiny HTTP server speaking the REST subset the demo uses, with TorchServe's token auth
read from a key_file.json: GET /ping; the management API's GET /models/deblur[/all] (describe JSON,
versions 1.0 (default) and 2.0); and POST /predictions/deblur[/<version>] in the serving JSON contract
({"image": b64, "ground_truth"?, "tile_size"?, "overlap"?, "format"?, "self_ensemble"?} → {"image",
"format", "width", "height", "model", "timing_ms", "tiles", "metrics"?}); with ``bare_png=True`` it
answers a bare PNG instead, which the demo refuses to read. Its "model" brightens the
image by a fixed amount and its metrics are fixed numbers, so expectations are computed independently.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import requests
import torch
from conftest import png_bytes, textured_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageFilter, ImageOps

from deblur.metrics import psnr
from demo.__main__ import parse_args
from demo.app import (
    NO_GROUND_TRUTH_NOTE,
    QualityReport,
    backend_health,
    build_demo,
    deblur_images,
    example_pairs,
    format_details,
    format_report,
    launch_demo,
    version_choices,
)
from demo.backend import BackendStatus, RestoreSettings, backend_status, parse_answer
from demo.feedback import FeedbackStore
from serve.client import TorchServeClient

BRIGHTEN = 10  # what the stub's "model" adds to every channel
STUB_METRICS = {"psnr": 31.25, "ssim": 0.9123, "input_psnr": 22.5, "input_ssim": 0.7011}
STUB_TIMING = {"decode": 3.0, "inference": 250.0, "encode": 7.0}
MANAGEMENT_KEY = "mgmt-key-never-in-the-browser"


def stub_restore(rgb: np.ndarray) -> np.ndarray:
    """The stub's model: brighten by BRIGHTEN, clipped, so the output differs measurably from the input."""
    return np.clip(rgb.astype(np.int16) + BRIGHTEN, 0, 255).astype(np.uint8)


def write_key_file(path: Path, inference_key: str) -> Path:
    """A key file in TorchServe's key_file.json format (what TorchServe ≥ 0.11 writes on start)."""
    keys = {
        "management": {"key": MANAGEMENT_KEY, "expiration time": "2099-01-01T00:00:00Z"},
        "inference": {"key": inference_key},
        "API": {"key": "api-key"},
    }
    path.write_text(json.dumps(keys))
    return path


def describe(version: str, ready: bool = True) -> dict[str, Any]:
    """TorchServe 0.12's describe-model JSON for one version (the fields the demo reads, and a few more)."""
    workers = [{"id": "9000", "status": "READY", "memoryUsage": 1, "pid": 1, "gpu": False}] if ready else []
    return {"modelName": "deblur", "modelVersion": version, "minWorkers": 1, "maxWorkers": 1, "workers": workers}


@dataclass
class Received:
    path: str
    payload: dict[str, Any] | None  # the JSON body, or None for a raw-bytes POST
    raw: bytes

    @property
    def image(self) -> bytes:
        return base64.b64decode(self.payload["image"]) if self.payload else self.raw


class StubTorchServe(ThreadingHTTPServer):
    """Records every prediction it receives; ``delay`` makes predictions slow (timeout tests)."""

    daemon_threads = True

    def __init__(self, key_file: Path) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.key_file = key_file
        self.received: list[Received] = []
        self.delay = 0.0
        self.bare_png = False  # True: answer a bare PNG whatever was asked (not the JSON contract)
        self.versions = {"1.0": True, "2.0": True}  # version → has a ready worker
        self.default_version = "1.0"
        self.release = threading.Event()  # set on shutdown so a delayed request does not outlive the test

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def key(self, api: str) -> str:
        return json.loads(self.key_file.read_text())[api]["key"]


class StubHandler(BaseHTTPRequestHandler):
    server: StubTorchServe

    def do_GET(self) -> None:
        if self.path == "/ping":
            self.send_json(200, {"status": "Healthy"})
        elif self.path in ("/models/deblur", "/models/deblur/all") and self.authorized("management"):
            versions = self.server.versions
            shown = versions if self.path.endswith("/all") else [self.server.default_version]
            self.send_json(200, [describe(v, versions[v]) for v in shown])
        elif not self.path.startswith("/models/deblur"):
            self.send_error_json(404, "ResourceNotFoundException", "Requested resource is not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        prefix, _, version = self.path.partition("/predictions/deblur")
        if prefix or version.strip("/") not in ("", *self.server.versions):
            self.send_error_json(404, "ModelNotFoundException", f"Model not found: deblur {version.strip('/')}")
            return
        if not self.authorized("inference"):
            return
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        received = Received(self.path, json.loads(body) if is_json else None, body)
        self.server.received.append(received)
        self.server.release.wait(self.server.delay)
        try:
            image = ImageOps.exif_transpose(Image.open(io.BytesIO(received.image)))  # upright, like the handler
        except OSError:
            self.send_error_json(415, "PredictionException", "not a supported image")
            return
        restored = png_bytes(stub_restore(np.asarray(image.convert("RGB"))))
        if self.server.bare_png or received.payload is None:
            self.send_bytes(200, "image/png", restored)
        else:
            self.send_json(200, self.contract_answer(received.payload, restored, image.size, version.strip("/")))

    def contract_answer(
        self, payload: dict[str, Any], restored: bytes, size: tuple[int, int], version: str
    ) -> dict[str, Any]:
        answer = {
            "image": base64.b64encode(restored).decode(),
            "format": "png",
            "width": size[0],
            "height": size[1],
            "model": {"name": "deblur", "version": version or self.server.default_version},
            "timing_ms": STUB_TIMING,
            "tiles": 1,
            "path": "network",
        }
        if payload.get("kernel_aware"):  # the stub "deconvolves": the report of a used kernel and its picture
            line = np.zeros((12, 20), np.uint8)
            line[6, 3:17] = 255  # a horizontal shake, white on black as the handler draws it
            picture = base64.b64encode(png_bytes(line)).decode()
            answer |= {"tiles": 0, "path": "deconvolution", "kernel": DECONVOLVED | {"png": picture}}
        return answer | ({"metrics": STUB_METRICS} if "ground_truth" in payload else {})

    def authorized(self, api: str) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.key(api)}":
            return True
        message = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
        self.send_error_json(401, "InvalidKeyException", message)
        return False

    def send_error_json(self, status: int, kind: str, message: str) -> None:
        self.send_json(status, {"code": status, "type": kind, "message": message})

    def send_json(self, status: int, payload: object) -> None:
        self.send_bytes(status, "application/json", json.dumps(payload).encode())

    def send_bytes(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass


@dataclass
class StubBackend:
    server: StubTorchServe
    client: TorchServeClient
    received: list[Received] = field(init=False)

    def __post_init__(self) -> None:
        self.received = self.server.received


@contextmanager
def running_stub(directory: Path) -> Iterator[StubBackend]:
    key_file = write_key_file(directory / "key_file.json", "inference-key-1")
    server = StubTorchServe(key_file)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StubBackend(server, TorchServeClient(server.url, server.url, key_file, timeout=10.0))
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubBackend]:
    with running_stub(tmp_path) as backend:
        yield backend


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def blurred_pair(width: int = 96, height: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) uint8 arrays of the same size."""
    sharp = textured_image(width, height, seed=3)
    blurred = np.array(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2)))
    return blurred, sharp


def unit_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def table_rows(markdown: str) -> dict[str, list[str]]:
    """{"PSNR (dB)": [input, output, gain], "SSIM": [...]} from the metrics table."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[2:]}


def rgb(image: Image.Image) -> np.ndarray:
    return np.array(image.convert("RGB"))


# --- logic, against the stub ---------------------------------------------------------------------


def test_without_ground_truth_shows_servers_output_timing_and_no_metrics(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend (JSON contract): the slider shows (input, output), details name the model and server timing."""
    blurred, _ = blurred_pair()

    outcome = deblur_images(stub.client, save(tmp_path / "blurred.png", blurred))

    before, after = outcome.slider
    np.testing.assert_array_equal(rgb(before), blurred)
    np.testing.assert_array_equal(rgb(after), stub_restore(blurred))
    assert outcome.metrics == NO_GROUND_TRUTH_NOTE
    assert "**Model** 1.0" in outcome.details and "260 ms (decode 3 · inference 250 · encode 7)" in outcome.details
    assert "**network** (1 tile of 768 px, overlap 32)" in outcome.details


def test_request_carries_original_bytes_ground_truth_version_and_settings(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: the JSON body has the uploaded file's bytes, the ground truth, PNG format and the options,
    and goes to the chosen version's URL."""
    blurred, sharp = blurred_pair()
    path, gt_path = save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp)
    settings = RestoreSettings(version="2.0", tile_size=256, overlap=32, self_ensemble=True)

    outcome = deblur_images(stub.client, path, gt_path, settings)

    [received] = stub.received
    assert received.path == "/predictions/deblur/2.0"
    assert received.image == path.read_bytes()
    assert base64.b64decode(received.payload["ground_truth"]) == gt_path.read_bytes()
    options = {k: received.payload[k] for k in ("format", "tile_size", "overlap", "self_ensemble")}
    assert options == {"format": "png", "tile_size": 256, "overlap": 32, "self_ensemble": True}
    assert outcome.draft.model_version == "2.0" and outcome.draft.settings["tile_size"] == 256
    assert "self-ensemble" in outcome.details


def test_exif_rotation_is_shown_upright(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: a JPEG with EXIF orientation reaches the server untouched; "before" is upright like "after"."""
    blurred, _ = blurred_pair(96, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = save(tmp_path / "rotated.jpg", blurred, format="JPEG", quality=90, exif=exif.tobytes())

    before, after = deblur_images(stub.client, path).slider

    assert stub.received[0].image == path.read_bytes()
    assert before.size == after.size == (64, 96)


def test_metrics_come_from_the_server_when_it_sends_them(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend (JSON contract): the table shows the server's metrics (fixed numbers), said to be the server's."""
    blurred, sharp = blurred_pair()

    outcome = deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp))

    rows = table_rows(outcome.metrics)
    assert rows == {"PSNR (dB)": ["22.50", "31.25", "+8.75"], "SSIM": ["0.7011", "0.9123", "+0.2112"]}
    assert "computed by the server" in outcome.details


def test_a_server_answering_a_bare_png_is_a_readable_error(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend answering a bare PNG (not the JSON contract): a sentence, no metrics made up by the page."""
    stub.server.bare_png = True
    blurred, sharp = blurred_pair()

    with pytest.raises(gr.Error, match="answer this page cannot read: it answered image/png, not the JSON contract"):
        deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp))


@pytest.mark.parametrize(("suffix", "fmt"), [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")])
def test_download_is_the_restored_image_in_the_uploads_format_and_size(
    stub: StubBackend, tmp_path: Path, suffix: str, fmt: str
) -> None:
    """Stub backend: the download has the upload's format, name and size; a PNG upload gets the server's bytes."""
    blurred, _ = blurred_pair(97, 61)
    path = save(tmp_path / f"holiday.{suffix}", blurred, format=fmt)

    outcome = deblur_images(stub.client, path)

    download = Image.open(outcome.download)
    assert (download.format, download.size) == (fmt, (97, 61))
    assert outcome.download.name.startswith("holiday_deblurred.")
    if fmt == "PNG":
        assert outcome.download.read_bytes() == png_bytes(stub_restore(rgb(Image.open(path))))


DECONVOLVED = {"used": True, "decision": "deconvolved", "gamma": 1.0, "spread_px": 6.06, "support_px": 81}


@pytest.mark.parametrize(
    ("path", "kernel", "tiles", "words"),
    [
        (
            "deconvolution",
            DECONVOLVED,
            0,
            "**deconvolved** with the estimated camera shake (spread 6.06 px, support 81 px, blur in stored values)",
        ),
        (
            "deconvolution",
            DECONVOLVED | {"gamma": 2.2},
            0,
            "**deconvolved** with the estimated camera shake (spread 6.06 px, support 81 px, blur in light)",
        ),
        (
            "network",
            {"used": False, "decision": "inconsistent across the frame", "spread_px": 12.9},
            6,
            "(6 tiles of 768 px, overlap 32): the shake estimate was refused (inconsistent across the frame)",
        ),
        (
            "input",
            {"used": False, "decision": "diffuse kernel", "spread_px": 12.9},
            0,
            "**kept as it is**: the shake estimate was refused (diffuse kernel), so nothing was changed",
        ),
        ("input", {"used": False, "decision": "no blur", "spread_px": 0.4}, 0, "**kept as it is**: no camera shake"),
        ("network", None, 1, "**network** (1 tile of 768 px, overlap 32) · **server**"),
        ("network", "null", 1, "**network** (1 tile of 768 px, overlap 32): the image is too small for a shake"),
    ],
)
def test_details_say_which_path_answered_and_why(path: str, kernel: dict | str | None, tiles: int, words: str) -> None:
    body = {"image": base64.b64encode(b"png").decode(), "model": {"version": "1.0"}, "tiles": tiles, "path": path}
    body |= {} if kernel is None else {"kernel": None if kernel == "null" else kernel}
    answer = parse_answer(body | {"timing_ms": STUB_TIMING}, round_trip_ms=12.0)
    details = format_details(answer, RestoreSettings(), None)
    assert words in details, details
    assert ("deconvolved" in details) == (path == "deconvolution")


@pytest.mark.parametrize(
    ("psnr_input", "psnr_output", "cells", "note"),
    [
        (float("inf"), 53.1, ["—", "53.10", "—"], "already equals the ground truth"),
        (float("inf"), float("inf"), ["—", "—", "—"], "already equals the ground truth"),
        (22.5, float("inf"), ["22.50", "—", "—"], "The output equals the ground truth"),
    ],
)
def test_report_never_shows_an_infinity(psnr_input: float, psnr_output: float, cells: list[str], note: str) -> None:
    """A PSNR against an identical image is unbounded: a dash and a sentence, never ∞, -∞ or nan."""
    table = format_report(QualityReport(psnr_input, psnr_output, ssim_input=1, ssim_output=0.99))

    assert table_rows(table)["PSNR (dB)"] == cells
    assert note in table
    assert not any(word in table for word in ("∞", "nan", "inf"))


def test_ground_truth_of_another_size_is_refused_before_inference(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: a ground truth of another size gives a clear error naming both sizes; no request is sent."""
    blurred, _ = blurred_pair(96, 64)
    ground_truth = textured_image(80, 64)

    with pytest.raises(gr.Error, match="same size") as caught:
        deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", ground_truth))

    assert "80×64" in caught.value.message and "96×64" in caught.value.message
    assert stub.received == []


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (None, None, "Upload a blurred image"),
        ("notes.png", b"this is text, not pixels", "blurred image cannot be read"),
    ],
)
def test_missing_or_unreadable_upload_is_a_readable_error(
    stub: StubBackend, tmp_path: Path, name: str | None, content: bytes | None, expected: str
) -> None:
    """Stub backend: no file, or a file that is not an image, is refused with a sentence and not sent on."""
    path = None
    if name is not None and content is not None:
        path = tmp_path / name
        path.write_bytes(content)

    with pytest.raises(gr.Error, match=expected):
        deblur_images(stub.client, path, None)

    assert stub.received == []


def test_backend_down_is_a_readable_error(tmp_path: Path) -> None:
    """No backend at all (nothing listens on the port): gr.Error says the server is unavailable."""
    url = f"http://127.0.0.1:{unused_port()}"
    client = TorchServeClient(url, url, tmp_path / "missing_key_file.json", timeout=5.0)
    path = save(tmp_path / "b.png", blurred_pair()[0])

    with pytest.raises(gr.Error) as caught:
        deblur_images(client, path, None)

    assert caught.value.message.startswith("The deblurring server is unavailable right now.")
    assert "not reachable" in caught.value.message and "Traceback" not in caught.value.message


def test_backend_refusal_is_a_readable_error(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend with a rotated key (our key file is stale): the 401 becomes a sentence with the reason."""
    stale_keys = write_key_file(tmp_path / "stale_key_file.json", "old-key")
    client = replace(stub.client, key_file=stale_keys)

    with pytest.raises(gr.Error, match="refused the request") as caught:
        deblur_images(client, save(tmp_path / "b.png", blurred_pair()[0]), None)

    assert "HTTP 401: Token Authorization failed" in caught.value.message


def test_unknown_version_is_a_readable_error(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: asking for a version TorchServe does not have says so (404 → a sentence naming it)."""
    with pytest.raises(gr.Error, match=r"no model version '9\.9'"):
        deblur_images(stub.client, save(tmp_path / "b.png", blurred_pair()[0]), None, RestoreSettings("9.9"))


def test_overlap_over_half_the_tile_is_refused_before_inference(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: the server's tiling rule (overlap ≤ tile/2) is explained in slider terms; nothing is sent."""
    with pytest.raises(gr.Error, match=r"overlap \(256 px\) must be at most half the tile size \(64 px"):
        deblur_images(stub.client, save(tmp_path / "b.png", blurred_pair()[0]), None, RestoreSettings(None, 128, 256))
    assert stub.received == []


def test_server_reports_infinite_psnr_as_null(
    stub: StubBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stub backend: the contract's null PSNR (output identical to the ground truth) is a dash, not recomputed."""
    monkeypatch.setitem(STUB_METRICS, "psnr", None)
    blurred, sharp = blurred_pair()

    outcome = deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp))

    assert table_rows(outcome.metrics)["PSNR (dB)"] == ["22.50", "—", "—"]
    assert "computed by the server" in outcome.details


def test_backend_timeout_is_a_readable_error(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend that answers after the client's timeout: gr.Error says it did not answer in time."""
    stub.server.delay = 5.0
    client = replace(stub.client, timeout=1.0)

    with pytest.raises(gr.Error, match="did not answer within 1 s"):
        deblur_images(client, save(tmp_path / "b.png", blurred_pair()[0]), None)


def test_backend_status_lists_versions_with_the_default_marked(stub: StubBackend) -> None:
    """Stub management API (TorchServe's describe JSON, no isDefault field): versions listed, default marked."""
    stub.server.default_version = "2.0"

    status = backend_status(stub.client)
    choices, selected = version_choices(status)

    assert status.state == "ok" and status.default_version == "2.0"
    assert choices == [("1.0", "1.0"), ("2.0 (default)", "2.0")] and selected == "2.0"
    assert backend_health(status).startswith("Backend: **ok**")


def test_backend_status_says_no_workers(stub: StubBackend) -> None:
    """Stub management API: the default version is registered but has no READY worker → "no workers"."""
    stub.server.versions = {"1.0": False}

    status = backend_status(stub.client)

    assert status.state == "no workers" and "1.0" in status.detail


def test_backend_status_says_down(tmp_path: Path) -> None:
    """A port where nothing listens → down with the reason; the dropdown falls back to the server default."""
    url = f"http://127.0.0.1:{unused_port()}"

    status = backend_status(TorchServeClient(url, url, tmp_path / "missing.json"))

    assert status.state == "down" and "not reachable" in status.detail
    assert version_choices(status) == ([("server default", "")], "")


def test_bundled_examples_are_aligned_pairs_and_small() -> None:
    """demo/examples holds blurred/sharp pairs of equal size, clearly different, under 1.5 MB in total."""
    pairs, labels = example_pairs()

    assert len(pairs) >= 3 and len(labels) == len(pairs)
    for blurred, sharp in pairs:
        with Image.open(blurred) as b, Image.open(sharp) as s:
            assert b.size == s.size and max(b.size) <= 512
            assert psnr(unit_tensor(rgb(b)), unit_tensor(rgb(s))) < 35  # visibly blurred
    total = sum(Path(p).stat().st_size for pair in pairs for p in pair)
    assert total < 1.5e6


def test_command_line_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Local-only by default; env vars and flags move it, flags winning."""
    for name in ("DEBLUR_DEMO_HOST", "DEBLUR_DEMO_PORT", "DEBLUR_FEEDBACK_DB"):
        monkeypatch.delenv(name, raising=False)
    defaults = parse_args([])
    assert (defaults.host, defaults.port, defaults.max_file_size) == ("127.0.0.1", 7860, "50mb")
    assert defaults.feedback_db.parts[-2:] == ("run", "feedback.sqlite3")

    monkeypatch.setenv("DEBLUR_DEMO_HOST", "0.0.0.0")
    monkeypatch.setenv("DEBLUR_DEMO_PORT", "9000")
    monkeypatch.setenv("DEBLUR_FEEDBACK_DB", str(tmp_path / "env.sqlite3"))
    assert (parse_args([]).host, parse_args([]).port) == ("0.0.0.0", 9000)
    assert parse_args([]).feedback_db == tmp_path / "env.sqlite3"
    assert parse_args(["--port", "9100"]).port == 9100
    assert parse_args(["--feedback-db", "x.db"]).feedback_db == Path("x.db")


# --- the launched page, through gradio_client ------------------------------------------------------

UPLOAD_LIMIT = "100kb"


@dataclass
class LaunchedPage:
    url: str
    backend: StubBackend
    store: FeedbackStore


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedPage]:
    """The demo served in-process on a free port, in front of the stub backend, with a small upload cap."""
    root = tmp_path_factory.mktemp("page")
    with running_stub(root) as backend:
        store = FeedbackStore(root / "feedback" / "feedback.sqlite3")
        demo = build_demo(backend.client, store)
        blocked = [str(root)]  # the stub's key file lives here, as run/ does for `python -m demo`
        url = launch_demo(
            demo,
            port=unused_port(),
            max_file_size=UPLOAD_LIMIT,
            prevent_thread_lock=True,
            quiet=True,
            blocked_paths=blocked,
        )
        try:
            yield LaunchedPage(url.rstrip("/"), backend, store)
        finally:
            demo.close()


@pytest.fixture
def page(launched: LaunchedPage, tmp_path: Path) -> Client:
    return Client(launched.url, verbose=False, download_files=tmp_path, analytics_enabled=False)


def test_page_api_deblurs_and_reports_metrics(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: /deblur returns (before, after) PNGs, metrics, details, download."""
    blurred, sharp = blurred_pair()
    blurred_path, sharp_path = save(tmp_path / "b.jpg", blurred, quality=95), save(tmp_path / "gt.png", sharp)

    slider, metrics, details, download, kernel = page.predict(
        handle_file(blurred_path), handle_file(sharp_path), api_name="/deblur"
    )

    before, after = (Image.open(path) for path in slider)
    assert (before.format, after.format) == ("PNG", "PNG")
    np.testing.assert_array_equal(rgb(before), rgb(Image.open(blurred_path)))
    np.testing.assert_array_equal(rgb(after), stub_restore(rgb(Image.open(blurred_path))))
    assert table_rows(metrics)["PSNR (dB)"] == ["22.50", "31.25", "+8.75"]
    assert "**Model** 1.0" in details and "**network** (1 tile of 768 px, overlap 32)" in details
    assert Image.open(download).format == "JPEG"
    assert kernel is None  # no deconvolution, no kernel picture


def test_page_api_takes_version_and_options(page: Client, launched: LaunchedPage, tmp_path: Path) -> None:
    """Stub backend behind the launched page: version, tile size, overlap and self-ensemble reach the server."""
    blurred = handle_file(save(tmp_path / "b.png", blurred_pair()[0]))

    page.predict(blurred, version="2.0", tile_size=256, overlap=32, self_ensemble=True, api_name="/deblur")

    last = launched.backend.received[-1]
    assert last.path == "/predictions/deblur/2.0"
    assert (last.payload["tile_size"], last.payload["overlap"], last.payload["self_ensemble"]) == (256, 32, True)
    assert "kernel_aware" not in last.payload  # the archive's default decides


@pytest.mark.parametrize(("path", "sent"), [("kernel-aware", True), ("network", False)])
def test_page_api_takes_the_restoration_path(
    page: Client, launched: LaunchedPage, tmp_path: Path, path: str, sent: bool
) -> None:
    """Stub backend behind the launched page: the path choice is the request's kernel_aware; a deconvolution's
    kernel comes back as a picture and the details say which path answered."""
    blurred = handle_file(save(tmp_path / "b.png", blurred_pair()[0]))

    _, _, details, _, kernel = page.predict(blurred, path=path, api_name="/deblur")

    assert launched.backend.received[-1].payload["kernel_aware"] is sent
    if sent:
        assert "**deconvolved** with the estimated camera shake" in details
        assert Image.open(kernel).size == (20, 12)
    else:
        assert "**network**" in details and kernel is None


def test_page_api_refuses_an_unknown_path(page: Client, tmp_path: Path) -> None:
    blurred = handle_file(save(tmp_path / "b.png", blurred_pair()[0]))
    with pytest.raises(AppError, match="not in the list of choices"):
        page.predict(blurred, path="magic", api_name="/deblur")


def test_page_api_without_ground_truth(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: ground truth may be None or left out; then no metrics table."""
    blurred = handle_file(save(tmp_path / "b.png", blurred_pair()[0]))

    with_none = page.predict(blurred, None, api_name="/deblur")[1]
    left_out = page.predict(blurred, api_name="/deblur")[1]

    assert with_none == left_out == NO_GROUND_TRUTH_NOTE


def test_page_api_shows_the_size_mismatch_message(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: the gr.Error sentence reaches the API client as AppError."""
    blurred = save(tmp_path / "b.png", blurred_pair(96, 64)[0])
    ground_truth = save(tmp_path / "gt.png", textured_image(64, 64))

    with pytest.raises(AppError, match="same size"):
        page.predict(handle_file(blurred), handle_file(ground_truth), api_name="/deblur")


def test_page_refuses_uploads_over_the_size_cap(launched: LaunchedPage, tmp_path: Path) -> None:
    """The launched page's upload route answers 413 to a file over max_file_size (server side, not the client)."""
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 kB as PNG
    big = save(tmp_path / "big.png", noise).read_bytes()
    small = save(tmp_path / "small.png", blurred_pair()[0]).read_bytes()
    assert len(big) > 100_000 > len(small)

    def upload(data: bytes) -> int:
        files = {"files": ("x.png", data)}
        return requests.post(f"{launched.url}/gradio_api/upload", files=files, timeout=30).status_code

    assert (upload(small), upload(big)) == (200, 413)


def test_page_health_endpoint_fills_the_version_dropdown(page: Client) -> None:
    """Stub backend behind the launched page: /health reports ok and offers both versions, 1.0 marked default."""
    line, versions = page.predict(api_name="/health")

    assert line.startswith("Backend: **ok**")
    assert versions["choices"] == [["1.0 (default)", "1.0"], ["2.0", "2.0"]] and versions["value"] == "1.0"


def test_page_serves_no_file_outside_its_temp_dir(launched: LaunchedPage, tmp_path: Path) -> None:
    """The launched page's file route refuses the repo, a stray temp file and the (blocked) key file's folder."""
    stray = tmp_path / "secret.png"
    stray.write_bytes(png_bytes(textured_image(8, 8)))
    targets = [Path(__file__).resolve(), stray, launched.backend.client.key_file]

    statuses = {str(p): requests.get(f"{launched.url}/gradio_api/file={p}", timeout=10).status_code for p in targets}

    assert set(statuses.values()) == {403}, statuses


def test_management_key_never_reaches_the_browser(launched: LaunchedPage, page: Client) -> None:
    """What the browser gets (page, config, health answer) never contains the management key."""
    health = page.predict(api_name="/health")
    served = [requests.get(f"{launched.url}{path}", timeout=10).text for path in ("/", "/config")]

    assert all(MANAGEMENT_KEY not in text for text in [*served, json.dumps(health)])
    assert MANAGEMENT_KEY in launched.backend.client.key_file.read_text()  # the key exists, only server side


# --- against a real TorchServe ---------------------------------------------------------------------


@pytest.mark.e2e
def test_demo_logic_against_real_torchserve(torchserve: TorchServeClient, tmp_path: Path) -> None:
    """Real TorchServe with the tiny model, JSON contract: same-size output, the server's metrics in a filled
    table, its timing and version in the details, and a download in the upload's format."""
    blurred, sharp = blurred_pair(97, 61)  # odd sizes: the model pads and crops back
    path = save(tmp_path / "b.jpg", blurred, quality=95)

    outcome = deblur_images(torchserve, path, save(tmp_path / "gt.png", sharp))

    before, after = outcome.slider
    assert before.size == after.size == (97, 61)
    assert after.mode == "RGB"
    assert all(cell not in ("", "—") for cells in table_rows(outcome.metrics).values() for cell in cells)
    assert Image.open(outcome.download).format == "JPEG"
    assert "**Model** 1.0" in outcome.details and "**server**" in outcome.details
    assert "computed by the server" in outcome.details


@pytest.mark.e2e
def test_backend_status_against_real_torchserve(torchserve: TorchServeClient) -> None:
    """Real TorchServe's management API: ok, version 1.0 listed and marked default, with a ready worker."""
    status = backend_status(torchserve)

    assert status.state == "ok", status.detail
    assert [(v.version, v.is_default) for v in status.versions] == [("1.0", True)]
    assert isinstance(status, BackendStatus) and status.versions[0].ready_workers >= 1
