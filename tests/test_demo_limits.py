"""The demo's limits: one request's uploads in all, its temp folder, SIGTERM cleanup, the derived read timeout.

The logic runs against the stub TorchServe of tests/test_demo.py; the upload route through a launched page;
SIGTERM against ``python -m demo`` as a subprocess whose TorchServe URL is dead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import requests

from demo.app import build_demo, deblur_images, launch_demo
from demo.feedback import FeedbackStore
from demo.limits import READ_MARGIN_S, Limits, make_room, read_timeout
from serve.client import TorchServeClient
from tests.test_demo import StubBackend, blurred_pair, running_stub, save

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubBackend]:
    with running_stub(tmp_path) as backend:
        yield backend


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo's private temp folder (what `python -m demo` sets GRADIO_TEMP_DIR to)."""
    root = tmp_path / "gradio-temp"
    root.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(root))
    return root


def noise_png(path: Path, side: int, seed: int = 0) -> Path:
    """An incompressible PNG (about 3 × side² bytes)."""
    return save(path, np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def old_entry(root: Path, name: str, size: int, age_s: float) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "file.bin").write_bytes(b"x" * size)
    stamp = time.time() - age_s
    os.utime(folder, (stamp, stamp))
    return folder


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- one request's uploads in all ----------------------------------------------------------------------


def test_blurred_image_and_ground_truth_over_the_request_budget_are_refused(
    stub: StubBackend, tmp_path: Path, temp_root: Path
) -> None:
    """Each file is under the per-file cap, together they are over the per-request budget: a sentence, no request."""
    blurred, sharp = noise_png(tmp_path / "b.png", 96, 1), noise_png(tmp_path / "gt.png", 96, 2)
    total = blurred.stat().st_size + sharp.stat().st_size
    limits = Limits(request_bytes=total - 1)

    with pytest.raises(gr.Error, match=r"in all \(blurred image and ground truth\); one request may carry at most"):
        deblur_images(stub.client, blurred, sharp, limits=limits)
    assert stub.received == []

    deblur_images(stub.client, blurred, sharp, limits=Limits(request_bytes=total))  # at the budget: accepted
    assert len(stub.received) == 1


# --- the temp folder -----------------------------------------------------------------------------------


def test_make_room_removes_the_oldest_entries_first_and_keeps_the_current_uploads(tmp_path: Path) -> None:
    oldest = old_entry(tmp_path, "oldest", 400, age_s=300)
    current = old_entry(tmp_path, "current-upload", 400, age_s=200)  # old, but this request's upload
    middle = old_entry(tmp_path, "middle", 400, age_s=100)
    newest = old_entry(tmp_path, "newest", 400, age_s=10)

    assert make_room(tmp_path, 500, 1400, keep=[current / "file.bin"])

    assert not oldest.exists() and not middle.exists()
    assert current.exists() and newest.exists()
    assert not make_room(tmp_path, 1100, 1400, keep=[current / "file.bin"])  # still full once all else is gone
    assert current.exists() and not newest.exists()


def test_results_make_room_by_removing_the_oldest_folders(stub: StubBackend, tmp_path: Path, temp_root: Path) -> None:
    path = save(tmp_path / "b.png", blurred_pair()[0])
    old = [old_entry(temp_root, f"old-{i}", 30_000, age_s=1000 - i) for i in range(4)]
    limits = Limits(temp_bytes=100_000)

    outcome = deblur_images(stub.client, path, limits=limits)

    assert outcome.download.is_file() and temp_root in outcome.download.parents
    assert [folder.exists() for folder in old] == [False, False, True, True]  # the two oldest made the room
    used = sum(f.stat().st_size for f in temp_root.rglob("*") if f.is_file())
    assert used <= limits.temp_bytes


def test_a_full_temp_folder_is_refused_with_a_sentence(stub: StubBackend, tmp_path: Path, temp_root: Path) -> None:
    """The folder holds only this request's upload and it leaves no room for the result: refused, nothing written."""
    upload_folder = temp_root / "upload-of-this-request"
    upload_folder.mkdir()
    path = save(upload_folder / "b.png", blurred_pair()[0])
    limits = Limits(temp_bytes=path.stat().st_size + 100)

    with pytest.raises(gr.Error, match="temporary storage is full"):
        deblur_images(stub.client, path, limits=limits)
    assert [p.name for p in temp_root.iterdir()] == ["upload-of-this-request"]


# --- the upload route of the launched page -------------------------------------------------------------


@contextmanager
def launched_page(stub: StubBackend, tmp_path: Path, limits: Limits) -> Iterator[str]:
    demo = build_demo(stub.client, FeedbackStore(tmp_path / "feedback.sqlite3"))
    url = launch_demo(
        demo, port=unused_port(), max_file_size="80kb", prevent_thread_lock=True, quiet=True, limits=limits
    )
    try:
        yield url.rstrip("/")
    finally:
        demo.close()


def upload(url: str, *files: bytes) -> requests.Response:
    parts = [("files", (f"f{i}.bin", data)) for i, data in enumerate(files)]
    return requests.post(f"{url}/gradio_api/upload", files=parts, timeout=30)


def test_the_upload_route_enforces_the_request_budget_and_the_temp_folder_cap(
    stub: StubBackend, tmp_path: Path, temp_root: Path
) -> None:
    """Each file under the 80 kB per-file cap; several in one request over the 100 kB budget: 413, nothing stored.
    An upload first removes the oldest entries of the temp folder; one that cannot fit gets 507."""
    old = old_entry(temp_root, "old-result", 390_000, age_s=3600)
    examples = sum(path.stat().st_size for path in (REPO_ROOT / "demo" / "examples").iterdir())  # cached at launch
    limits = Limits(request_bytes=100_000, temp_bytes=examples + 420_000)
    with launched_page(stub, tmp_path, limits) as page:
        before = sorted(temp_root.iterdir())
        refused = upload(page, *(os.urandom(70_000) for _ in range(3)))
        assert refused.status_code == 413 and "at most" in refused.text
        assert old.exists() and sorted(temp_root.iterdir()) == before  # nothing stored

        assert upload(page, os.urandom(70_000)).status_code == 200
        assert not old.exists()  # the oldest entry made room for it
        used = sum(f.stat().st_size for f in temp_root.rglob("*") if f.is_file())
        assert 70_000 <= used <= limits.temp_bytes

    with launched_page(stub, tmp_path, Limits(request_bytes=100_000, temp_bytes=50_000)) as page:
        full = upload(page, os.urandom(70_000))
        assert full.status_code == 507 and "temporary storage is full" in full.text


# --- SIGTERM -------------------------------------------------------------------------------------------


def test_sigterm_removes_the_demos_temp_folder(tmp_path: Path) -> None:
    """`python -m demo` against a dead TorchServe URL, stopped by SIGTERM: it exits and its temp folder is gone."""
    port, dead = unused_port(), f"http://127.0.0.1:{unused_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEBLUR_", "GRADIO_"))}
    env |= {
        "TMPDIR": str(tmp_path),
        "DEBLUR_INFERENCE_URL": dead,
        "DEBLUR_MANAGEMENT_URL": dead,
        "DEBLUR_KEY_FILE": str(tmp_path / "run" / "key_file.json"),
        "DEBLUR_FEEDBACK_DB": str(tmp_path / "feedback" / "feedback.sqlite3"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (tmp_path / "demo.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("the demo did not come up within 90 s")
        [temp_dir] = tmp_path.glob("deblur-demo-*")
        assert temp_dir.is_dir()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, 130)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    assert not temp_dir.exists(), (tmp_path / "demo.log").read_text()[-2000:]


# --- the read timeout ----------------------------------------------------------------------------------


class DescribeStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, response_timeout: object) -> None:
        super().__init__(("127.0.0.1", 0), DescribeHandler)
        self.response_timeout = response_timeout


class DescribeHandler(BaseHTTPRequestHandler):
    server: DescribeStub

    def do_GET(self) -> None:
        body = json.dumps([{"modelName": "deblur", "responseTimeout": self.server.response_timeout}]).encode()
        self.send_response(200 if self.path == "/models/deblur" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("described", "expected"), [(900, 900.0), (None, 45.0), ("soon", 45.0)])
def test_read_timeout_is_the_servers_response_timeout_plus_a_margin(
    tmp_path: Path, described: object, expected: float
) -> None:
    config = tmp_path / "config.properties"
    config.write_text("default_response_timeout=45\n")
    server = DescribeStub(described)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = TorchServeClient(url, url, tmp_path / "key_file.json", timeout=120.0)
        assert read_timeout(client, config=config) == expected + READ_MARGIN_S
    finally:
        server.shutdown()
        server.server_close()


def test_read_timeout_falls_back_to_the_config_when_the_server_is_down(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    client = TorchServeClient(dead, dead, tmp_path / "key_file.json")
    assert read_timeout(client) == 600.0 + READ_MARGIN_S  # the shipped config.properties' default_response_timeout
