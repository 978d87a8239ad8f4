"""The launched Gradio page as an attacker or an unlucky user meets it (adds to tests/test_demo.py).

- Its file routes never serve /etc/passwd or TorchServe's key file, whatever the route, encoding or
  ``..`` trick; the page is launched the way `python -m demo` launches it (key folder blocked).
- With TorchServe down, or answering 4xx (a stale key, an unknown version), the API client gets one
  readable sentence, never a traceback. (A tile size out of the handler's range cannot be sent: the
  page's slider stops at 1024 and Gradio refuses larger values itself.)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demo.app import build_demo, launch_demo
from demo.feedback import FeedbackStore
from serve.client import TorchServeClient
from tests.bad_inputs import gradient

SECRET_INFERENCE_KEY = "inference-key-never-served"
SECRET_MANAGEMENT_KEY = "management-key-never-served"
TRACE_WORDS = ("Traceback", 'File "', "site-packages")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_keys(path: Path, inference: str, management: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"expiration time": "2099-01-01T00:00:00Z"}
    document = {"management": entry | {"key": management}, "inference": entry | {"key": inference}}
    path.write_text(json.dumps(document))
    return path


@dataclass(frozen=True)
class Page:
    url: str
    client: TorchServeClient


@contextmanager
def launched_page(client: TorchServeClient, root: Path) -> Iterator[Page]:
    """The page in front of ``client``, launched like `python -m demo` (key folder and feedback blocked)."""
    store = FeedbackStore(root / "feedback" / "feedback.sqlite3")
    demo = build_demo(client, store)
    blocked = sorted({str(client.key_file.resolve().parent), str(store.path.resolve().parent)})
    url = launch_demo(
        demo, port=unused_port(), max_file_size="1mb", prevent_thread_lock=True, quiet=True, blocked_paths=blocked
    )
    try:
        yield Page(url.rstrip("/"), client)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page_without_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """TorchServe is down: its addresses point at a closed port; its key file holds secrets."""
    root = tmp_path_factory.mktemp("page-down")
    keys = write_keys(root / "run" / "key_file.json", SECRET_INFERENCE_KEY, SECRET_MANAGEMENT_KEY)
    closed = f"http://127.0.0.1:{unused_port()}"
    with launched_page(TorchServeClient(closed, closed, keys, timeout=10.0, metrics_url=closed), root) as page:
        yield page


def file_route_attempts(target: Path) -> list[str]:
    """Paths (relative to the page) that try to read ``target`` through Gradio's routes."""
    absolute = str(target)
    up = "../" * 12 + absolute.lstrip("/")
    encoded_up = quote(up, safe="")
    dotted = "%2e%2e%2f" * 12 + quote(absolute.lstrip("/"), safe="")
    attempts = []
    for route in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/gradio_api/static/", "/static/", "/assets/"):
        attempts += [route + absolute, route + quote(absolute, safe=""), route + encoded_up, route + dotted]
    return attempts


def get_raw(url: str) -> requests.Response:
    """GET without letting requests normalise the path (``..`` segments are sent as written)."""
    session = requests.Session()
    prepared = requests.Request("GET", url).prepare()
    prepared.url = url
    return session.send(prepared, timeout=10, allow_redirects=False)


def test_file_routes_never_serve_passwd_or_the_key_file(page_without_backend: Page) -> None:
    key_file = page_without_backend.client.key_file
    served = {}
    for target in (Path("/etc/passwd"), key_file):
        for attempt in file_route_attempts(target):
            response = get_raw(page_without_backend.url + attempt)
            served[attempt] = (response.status_code, response.text)
    leaks = [a for a, (_, text) in served.items() if "root:" in text or SECRET_MANAGEMENT_KEY in text]
    leaks += [a for a, (_, text) in served.items() if SECRET_INFERENCE_KEY in text]
    assert not leaks
    assert not [a for a, (status, _) in served.items() if status == 200 and a.endswith(("passwd", ".json"))]


def sample_upload(tmp_path: Path) -> str:
    path = tmp_path / "blurred.png"
    Image.fromarray(gradient(40, 24)).save(path)
    return str(path)


def assert_readable_sentence(caught: pytest.ExceptionInfo[AppError], *words: str) -> None:
    message = str(caught.value)
    assert all(word in message for word in words), message
    assert not any(word in message for word in TRACE_WORDS), message


def test_backend_down_is_one_sentence_on_the_page(page_without_backend: Page, tmp_path: Path) -> None:
    client = Client(page_without_backend.url, verbose=False, download_files=tmp_path, analytics_enabled=False)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(sample_upload(tmp_path)), api_name="/deblur")
    assert_readable_sentence(caught, "unavailable")


@pytest.fixture(scope="module")
def page_before_real_torchserve(
    torchserve: TorchServeClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    with launched_page(torchserve, tmp_path_factory.mktemp("page-real")) as page:
        yield page


@pytest.mark.e2e
def test_unknown_version_at_real_torchserve_is_one_sentence_on_the_page(
    page_before_real_torchserve: Page, tmp_path: Path
) -> None:
    client = Client(page_before_real_torchserve.url, verbose=False, download_files=tmp_path, analytics_enabled=False)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(sample_upload(tmp_path)), api_name="/deblur", version="9.9")
    assert_readable_sentence(caught, "no model version", "9.9")


@pytest.mark.e2e
def test_stale_key_is_one_sentence_on_the_page(torchserve: TorchServeClient, tmp_path: Path) -> None:
    stale = write_keys(tmp_path / "run" / "key_file.json", "stale-inference", "stale-management")
    client = replace(torchserve, key_file=stale, session=requests.Session())
    with launched_page(client, tmp_path / "page") as page:
        api = Client(page.url, verbose=False, download_files=tmp_path, analytics_enabled=False)
        with pytest.raises(AppError) as caught:
            api.predict(handle_file(sample_upload(tmp_path)), api_name="/deblur")
    assert_readable_sentence(caught, "refused")
