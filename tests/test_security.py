"""Credentials, registration limits, the request-size limit and the shipped configuration.

The ``e2e`` tests run against the session's real TorchServe (tests/conftest.py), which uses the
repository's config.properties with only the ports changed. The configuration tests read the file
itself: they fail when a limit drifts out of line with the handler's pixel cap.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from serve import server
from serve.client import BackendError, TorchServeClient, read_keys
from tests.bad_inputs import PIXEL_CAP, png
from tests.conftest import Deployment

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = server.read_properties(server.DEFAULT_CONFIG)
WRONG_KEY = "0" * 32
LISTENERS = ("inference_address", "management_address", "metrics_address")
GRPC_LISTENERS = ("grpc_inference_address", "grpc_management_address")
REFUSED_URLS = (
    "http://127.0.0.1:9/model_store/deblur_v9.mar",
    "https://example.com/model_store/deblur_v9.mar",
    "file:///etc/passwd",
    "file:///etc/model_store/../passwd",
    "file:///etc/passwd#model_store/x.mar",
    "../../../etc/passwd",
    "/etc/passwd",
)


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def assert_token_refused(response: requests.Response) -> None:
    # TorchServe 0.12 answers a missing or wrong token with 400 InvalidKeyException (not 401/403).
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["type"] == "InvalidKeyException"


def versions_and_pids(client: TorchServeClient) -> dict[str, list[int]]:
    described = client.management("GET", "/models/deblur/all")
    return {v["modelVersion"]: sorted(w["pid"] for w in v.get("workers", [])) for v in described}


def store_listing(store: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*")}


# --- credentials --------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_inference_without_a_wrong_or_the_management_key_is_refused(torchserve: TorchServeClient) -> None:
    keys = read_keys(torchserve.key_file)
    url = f"{torchserve.inference_url}/predictions/deblur"
    for key in (None, WRONG_KEY, keys["management"]):
        assert_token_refused(requests.post(url, data=png(), headers=bearer(key), timeout=30))
        assert_token_refused(requests.get(f"{torchserve.inference_url}/ping", headers=bearer(key), timeout=30))
    assert requests.post(url, data=png(), headers=bearer(keys["inference"]), timeout=120).status_code == 200


MANAGEMENT_CALLS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("GET", "/models", {}),
    ("GET", "/models/deblur/all", {}),
    ("POST", "/models", {"url": "deblur_v2.0.mar", "initial_workers": 1}),
    ("PUT", "/models/deblur/1.0/set-default", {}),
    ("PUT", "/models/deblur", {"min_worker": 0, "max_worker": 0}),
    ("DELETE", "/models/deblur/1.0", {}),
)


@pytest.mark.e2e
def test_management_without_a_wrong_or_the_inference_key_is_refused_and_changes_nothing(
    torchserve_deployment: Deployment,
) -> None:
    client = torchserve_deployment.client
    before = versions_and_pids(client)
    inference_key = read_keys(client.key_file)["inference"]
    for method, path, params in MANAGEMENT_CALLS:
        for key in (None, WRONG_KEY, inference_key):
            response = requests.request(
                method, f"{client.management_url}{path}", params=params, headers=bearer(key), timeout=30
            )
            assert_token_refused(response)
    assert versions_and_pids(client) == before


@pytest.mark.e2e
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_registration_from_outside_the_model_store_is_refused_and_writes_nothing(
    torchserve_deployment: Deployment, url: str
) -> None:
    client, store = torchserve_deployment.client, torchserve_deployment.store
    before, listing = versions_and_pids(client), store_listing(store)

    with pytest.raises(BackendError) as caught:
        client.management("POST", "/models", params={"url": url, "initial_workers": 1, "synchronous": "true"})

    assert caught.value.status is not None and 400 <= caught.value.status < 500, caught.value
    assert store_listing(store) == listing
    assert versions_and_pids(client) == before


@pytest.mark.e2e
def test_keys_never_reach_the_logs(torchserve: TorchServeClient, torchserve_deployment: Deployment) -> None:
    torchserve.predict(png())  # at least one request logged
    keys = read_keys(torchserve.key_file).values()
    logs = list((torchserve_deployment.run_dir / "logs").glob("*.log"))
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(key in text for key in keys), f"a key is written to {log}"


@pytest.mark.e2e
def test_key_file_is_readable_by_its_owner_only(torchserve: TorchServeClient) -> None:
    mode = stat.S_IMODE(torchserve.key_file.stat().st_mode)
    assert mode & (stat.S_IRWXG | stat.S_IRWXO) == 0, oct(mode)


def test_key_file_is_never_committed() -> None:
    for path in ("run/key_file.json", "key_file.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert not [name for name in tracked.stdout.splitlines() if name.endswith("key_file.json")]


# --- request size -------------------------------------------------------------------------------------


def post_declaring(url: str, key: str, declared: int, sent: int, timeout: float = 60.0) -> int:
    """POST to ``url`` a body announced as ``declared`` bytes, sending ``sent`` of them; the status.

    A real client with a body that large announces it the same way: the server must refuse from the
    header, without buffering the body.
    """
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        with contextlib.suppress(OSError):  # the server may close the connection as soon as it has answered
            sock.sendall(bytes(sent))
        answer = b""
        while b"\r\n" not in answer and len(answer) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.e2e
def test_body_over_max_request_size_is_refused_and_the_server_stays_healthy(torchserve: TorchServeClient) -> None:
    limit = int(CONFIG["max_request_size"])
    key = read_keys(torchserve.key_file)["inference"]
    status = post_declaring(f"{torchserve.inference_url}/predictions/deblur", key, limit + 1, 1 << 20)
    assert status == 413
    assert torchserve.ping() == "Healthy"
    assert torchserve.predict(png()).status_code == 200


# --- the shipped configuration --------------------------------------------------------------------------


def base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


def png_upper_bound(width: int, height: int, bytes_per_pixel: int) -> int:
    """The largest PNG of these dimensions: incompressible scanlines in stored deflate blocks."""
    raw = height * (width * bytes_per_pixel + 1)
    return raw + 5 * math.ceil(raw / 65535) + 1024  # block headers, chunks and headers


def test_every_listener_is_on_loopback() -> None:
    for name in LISTENERS:
        assert urlsplit(CONFIG[name]).hostname == "127.0.0.1", name
    for name in GRPC_LISTENERS:
        assert CONFIG[name] == "127.0.0.1", name
    assert "0.0.0.0" not in server.DEFAULT_CONFIG.read_text()


def test_token_authorization_stays_on() -> None:
    assert CONFIG.get("disable_token_authorization", "false").lower() != "true"
    # Versions are managed through the model API, which TorchServe then guards with the management key
    assert CONFIG["enable_model_api"] == "true"


def test_allowed_urls_admit_only_local_model_store_archives() -> None:
    pattern = re.compile(CONFIG["allowed_urls"])
    assert pattern.fullmatch("file:///srv/deblur/model_store/deblur_v2.0.mar")
    for url in (*REFUSED_URLS, "file:///srv/model_store/../../etc/x.mar", "file:///srv/model_store/x.mar.zip"):
        assert not pattern.fullmatch(url), url


def test_size_limits_fit_the_largest_image_the_handler_accepts() -> None:
    side = math.isqrt(PIXEL_CAP)
    # In: an incompressible 8-bit RGB PNG at the cap with its ground truth, both base64 in one JSON body.
    largest_request = 2 * base64_length(png_upper_bound(side, side, 3)) + 1024
    # Out: a 16-bit RGBA PNG at the cap (the handler keeps bit depth and alpha), base64 in a JSON answer.
    largest_response = base64_length(png_upper_bound(side, side, 8)) + 4096
    assert int(CONFIG["max_request_size"]) >= largest_request
    assert int(CONFIG["max_response_size"]) >= largest_response


def test_job_queue_and_response_timeout_are_bounded() -> None:
    assert 1 <= int(CONFIG["job_queue_size"]) <= 1000
    assert 60 <= int(CONFIG["default_response_timeout"]) <= 3600


def test_server_starts_without_config_snapshots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`python -m serve start` runs `torchserve --start --ncs`: no stale snapshot is ever reloaded."""
    commands: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(server.subprocess, "run", fake_run)
    monkeypatch.setattr(server, "torchserve_executable", lambda: "torchserve")
    (tmp_path / "store").mkdir()
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:8080\n")
    server.launch(tmp_path / "store", config, tmp_path / "run")
    assert commands and "--ncs" in commands[0] and "--start" in commands[0]
