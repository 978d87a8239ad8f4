"""The Gradio demo: its logic against a stub TorchServe, the launched page through gradio_client, and
(``e2e``) the logic against a real TorchServe.

The stub is a tiny HTTP server speaking the TorchServe REST subset the demo uses (GET /ping,
POST /predictions/deblur with token auth read from a key_file.json); its "model" brightens the image
by a fixed amount, so the expected output and metrics can be computed independently here.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import requests
import torch
from conftest import png_bytes, textured_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageFilter, ImageOps

from deblur.metrics import psnr, ssim
from demo.__main__ import parse_args
from demo.app import (
    NO_GROUND_TRUTH_NOTE,
    QualityReport,
    backend_health,
    build_demo,
    deblur_images,
    format_report,
    launch_demo,
)
from serve.client import TorchServeClient

BRIGHTEN = 10  # what the stub's "model" adds to every channel


def stub_restore(rgb: np.ndarray) -> np.ndarray:
    """The stub's model: brighten by BRIGHTEN, clipped, so the output differs measurably from the input."""
    return np.clip(rgb.astype(np.int16) + BRIGHTEN, 0, 255).astype(np.uint8)


def write_key_file(path: Path, inference_key: str) -> Path:
    """A key file in TorchServe's key_file.json format (what TorchServe ≥ 0.11 writes on start)."""
    keys = {
        "management": {"key": "mgmt-key", "expiration time": "2099-01-01T00:00:00Z"},
        "inference": {"key": inference_key},
        "API": {"key": "api-key"},
    }
    path.write_text(json.dumps(keys))
    return path


class StubTorchServe(ThreadingHTTPServer):
    """Records every prediction body it receives; ``delay`` makes predictions slow (timeout tests)."""

    daemon_threads = True

    def __init__(self, key_file: Path) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.key_file = key_file
        self.received: list[bytes] = []
        self.delay = 0.0
        self.release = threading.Event()  # set on shutdown so a delayed request does not outlive the test

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StubHandler(BaseHTTPRequestHandler):
    server: StubTorchServe

    def do_GET(self) -> None:
        if self.path == "/ping":
            self.send_json(200, {"status": "Healthy"})
        else:
            self.send_json(
                404, {"code": 404, "type": "ResourceNotFoundException", "message": "Requested resource is not found"}
            )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/predictions/deblur":
            self.send_json(404, {"code": 404, "type": "ModelNotFoundException", "message": "Model not found"})
            return
        expected_key = json.loads(self.server.key_file.read_text())["inference"]["key"]
        if self.headers.get("Authorization") != f"Bearer {expected_key}":
            message = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
            self.send_json(401, {"code": 401, "type": "InvalidKeyException", "message": message})
            return
        self.server.received.append(body)
        self.server.release.wait(self.server.delay)
        try:
            image = ImageOps.exif_transpose(Image.open(io.BytesIO(body)))  # upright, like the real handler
        except OSError:
            self.send_json(415, {"code": 415, "type": "PredictionException", "message": "not a supported image"})
            return
        self.send_bytes(200, "image/png", png_bytes(stub_restore(np.asarray(image.convert("RGB")))))

    def send_json(self, status: int, payload: dict[str, object]) -> None:
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


# --- logic, against the stub ---------------------------------------------------------------------


def test_without_ground_truth_shows_servers_output_and_no_metrics(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: the slider shows (input, server output) and the metrics area only has a hint."""
    blurred, _ = blurred_pair()
    path = save(tmp_path / "blurred.png", blurred)

    (before, after), metrics = deblur_images(stub.client, str(path), None)

    np.testing.assert_array_equal(np.asarray(before.convert("RGB")), blurred)
    np.testing.assert_array_equal(np.asarray(after.convert("RGB")), stub_restore(blurred))
    assert metrics == NO_GROUND_TRUTH_NOTE
    assert "PSNR" not in metrics


def test_server_receives_the_original_file_and_exif_rotation_is_shown_upright(
    stub: StubBackend, tmp_path: Path
) -> None:
    """Stub backend: the uploaded JPEG's bytes reach TorchServe untouched; "before" is upright like "after"."""
    blurred, _ = blurred_pair(96, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = save(tmp_path / "rotated.jpg", blurred, format="JPEG", quality=90, exif=exif.tobytes())

    (before, after), _ = deblur_images(stub.client, str(path), None)

    assert stub.server.received == [path.read_bytes()]
    assert before.size == after.size == (64, 96)


def test_metrics_with_ground_truth_match_a_direct_computation(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: the table's PSNR/SSIM for input and output vs ground truth, and the gains, are right."""
    blurred, sharp = blurred_pair()
    output = stub_restore(blurred)
    target = unit_tensor(sharp)
    expected = QualityReport(
        psnr_input=psnr(unit_tensor(blurred), target),
        psnr_output=psnr(unit_tensor(output), target),
        ssim_input=ssim(unit_tensor(blurred), target),
        ssim_output=ssim(unit_tensor(output), target),
    )

    _, metrics = deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp))

    rows = table_rows(metrics)
    assert rows["PSNR (dB)"] == [
        f"{expected.psnr_input:.2f}",
        f"{expected.psnr_output:.2f}",
        f"{expected.psnr_output - expected.psnr_input:+.2f}",
    ]
    assert rows["SSIM"] == [
        f"{expected.ssim_input:.4f}",
        f"{expected.ssim_output:.4f}",
        f"{expected.ssim_output - expected.ssim_input:+.4f}",
    ]
    assert expected.psnr_input != pytest.approx(expected.psnr_output)  # the table distinguishes the two


def test_report_formats_identical_images_without_nan() -> None:
    """Infinite PSNR (identical images) is shown as ∞ and the undefined gain as a dash, not 'nan'."""
    table = format_report(QualityReport(psnr_input=float("inf"), psnr_output=float("inf"), ssim_input=1, ssim_output=1))

    assert table_rows(table)["PSNR (dB)"] == ["∞", "∞", "—"]
    assert "nan" not in table and "inf" not in table


def test_ground_truth_of_another_size_is_refused_before_inference(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend: a ground truth of another size gives a clear error naming both sizes; no request is sent."""
    blurred, _ = blurred_pair(96, 64)
    ground_truth = textured_image(80, 64)

    with pytest.raises(gr.Error, match="same size") as caught:
        deblur_images(stub.client, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", ground_truth))

    assert "80×64" in caught.value.message and "96×64" in caught.value.message
    assert stub.server.received == []


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

    assert stub.server.received == []


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

    with pytest.raises(gr.Error, match="refused this image") as caught:
        deblur_images(client, save(tmp_path / "b.png", blurred_pair()[0]), None)

    assert "HTTP 401: Token Authorization failed" in caught.value.message


def test_backend_timeout_is_a_readable_error(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend that answers after the client's timeout: gr.Error says it did not answer in time."""
    stub.server.delay = 5.0
    client = replace(stub.client, timeout=1.0)

    with pytest.raises(gr.Error, match="did not answer within 1 s"):
        deblur_images(client, save(tmp_path / "b.png", blurred_pair()[0]), None)


def test_health_line_says_ok_or_down(stub: StubBackend, tmp_path: Path) -> None:
    """Stub backend answers /ping → ok; a port where nothing listens → down with the reason."""
    url = f"http://127.0.0.1:{unused_port()}"
    dead = TorchServeClient(url, url, tmp_path / "missing.json")

    assert backend_health(stub.client).startswith("Backend: **ok**")
    assert backend_health(dead).startswith("Backend: **down**")
    assert "not reachable" in backend_health(dead)


def test_command_line_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local-only by default; env vars and flags move it, flags winning."""
    monkeypatch.delenv("DEBLUR_DEMO_HOST", raising=False)
    monkeypatch.delenv("DEBLUR_DEMO_PORT", raising=False)
    defaults = parse_args([])
    assert (defaults.host, defaults.port, defaults.max_file_size) == ("127.0.0.1", 7860, "50mb")

    monkeypatch.setenv("DEBLUR_DEMO_HOST", "0.0.0.0")
    monkeypatch.setenv("DEBLUR_DEMO_PORT", "9000")
    assert (parse_args([]).host, parse_args([]).port) == ("0.0.0.0", 9000)
    assert parse_args(["--port", "9100"]).port == 9100


# --- the launched page, through gradio_client ------------------------------------------------------

UPLOAD_LIMIT = "100kb"


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo served in-process on a free port, in front of the stub backend, with a small upload cap."""
    with running_stub(tmp_path_factory.mktemp("stub")) as backend:
        demo = build_demo(backend.client)
        url = launch_demo(demo, port=unused_port(), max_file_size=UPLOAD_LIMIT, prevent_thread_lock=True, quiet=True)
        try:
            yield url
        finally:
            demo.close()


@pytest.fixture
def page(page_url: str, tmp_path: Path) -> Client:
    return Client(page_url, verbose=False, download_files=tmp_path, analytics_enabled=False)


def test_page_api_deblurs_and_reports_metrics(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: /deblur returns (before, after) PNG files and the metrics table."""
    blurred, sharp = blurred_pair()
    blurred_path, sharp_path = save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp)

    slider, metrics = page.predict(handle_file(blurred_path), handle_file(sharp_path), api_name="/deblur")

    before, after = (Image.open(path) for path in slider)
    assert (before.format, after.format) == ("PNG", "PNG")
    np.testing.assert_array_equal(np.asarray(before.convert("RGB")), blurred)
    np.testing.assert_array_equal(np.asarray(after.convert("RGB")), stub_restore(blurred))
    assert set(table_rows(metrics)) == {"PSNR (dB)", "SSIM"}


def test_page_api_without_ground_truth(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: ground truth may be None or left out; then no metrics table."""
    blurred = handle_file(save(tmp_path / "b.png", blurred_pair()[0]))

    _, with_none = page.predict(blurred, None, api_name="/deblur")
    _, left_out = page.predict(blurred, api_name="/deblur")

    assert with_none == left_out == NO_GROUND_TRUTH_NOTE


def test_page_api_shows_the_size_mismatch_message(page: Client, tmp_path: Path) -> None:
    """Stub backend behind the launched page: the gr.Error sentence reaches the API client as AppError."""
    blurred = save(tmp_path / "b.png", blurred_pair(96, 64)[0])
    ground_truth = save(tmp_path / "gt.png", textured_image(64, 64))

    with pytest.raises(AppError, match="same size"):
        page.predict(handle_file(blurred), handle_file(ground_truth), api_name="/deblur")


def test_page_refuses_uploads_over_the_size_cap(page_url: str, tmp_path: Path) -> None:
    """The launched page's upload route answers 413 to a file over max_file_size (server side, not the client)."""
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 kB as PNG
    big = save(tmp_path / "big.png", noise).read_bytes()
    small = save(tmp_path / "small.png", blurred_pair()[0]).read_bytes()
    assert len(big) > 100_000 > len(small)

    def upload(data: bytes) -> int:
        return requests.post(
            f"{page_url.rstrip('/')}/gradio_api/upload", files={"files": ("x.png", data)}, timeout=30
        ).status_code

    assert (upload(small), upload(big)) == (200, 413)


def test_page_health_endpoint(page: Client) -> None:
    """Stub backend behind the launched page: /health reports ok."""
    assert page.predict(api_name="/health").startswith("Backend: **ok**")


# --- against a real TorchServe ---------------------------------------------------------------------


@pytest.mark.e2e
def test_demo_logic_against_real_torchserve(torchserve: TorchServeClient, tmp_path: Path) -> None:
    """Real TorchServe with the tiny model: the restored image has the input's size and the metrics table fills."""
    blurred, sharp = blurred_pair(97, 61)  # odd sizes: the model pads and crops back

    (before, after), metrics = deblur_images(
        torchserve, save(tmp_path / "b.png", blurred), save(tmp_path / "gt.png", sharp)
    )

    assert before.size == after.size == (97, 61)
    assert after.mode == "RGB"
    assert all(cell not in ("", "—") for cells in table_rows(metrics).values() for cell in cells)
