"""Key renewal: a call refused for an expired key renews that key through TorchServe's token API and is
sent once more.

The fast tests use a tiny stand-in for TorchServe (http.server in a thread) that behaves as TorchServe
0.12 does: a refused key gets ``400 {"type": "InvalidKeyException"}``, and ``GET /token?type=KIND`` with
the API key as Bearer writes a new key of that kind into the key file. The ``slow`` test waits for a
real private TorchServe's keys to expire (``token_expiration_min=1``) and drives every client through it.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from serve.client import BackendError, TorchServeClient, read_keys

API_KEY = "api-key-that-never-expires"
REFUSAL = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed. Token expired"}


def write_keys(path: Path, inference: str, management: str, api: str | None = API_KEY) -> None:
    keys = {
        "management": {"key": management, "expiration time": "2024-01-01T00:00:00Z"},
        "inference": {"key": inference, "expiration time": "2024-01-01T00:00:00Z"},
    }
    path.write_text(json.dumps(keys | ({"API": {"key": api}} if api else {})))


class TokenStub(ThreadingHTTPServer):
    """Accepts only ``valid[kind]`` for each API; /token renews a kind (unless ``renewals_work`` is off)."""

    daemon_threads = True

    def __init__(self, key_file: Path) -> None:
        super().__init__(("127.0.0.1", 0), TokenStubHandler)
        self.key_file = key_file
        self.valid = {"inference": "fresh-inference-0", "management": "fresh-management-0"}
        self.renewals: list[tuple[str, str | None]] = []  # (type, Authorization header)
        self.calls: list[tuple[str, str | None]] = []  # (path, Authorization header) of the other calls
        self.renewals_work = True
        self.on_refusal: list = []  # callbacks run when a call is refused (before the answer is sent)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class TokenStubHandler(BaseHTTPRequestHandler):
    server: TokenStub

    def do_GET(self) -> None:
        url, auth = urlsplit(self.path), self.headers.get("Authorization")
        if url.path == "/token":
            kind = parse_qs(url.query).get("type", [""])[0]
            self.server.renewals.append((kind, auth))
            if auth != f"Bearer {API_KEY}" or kind not in self.server.valid:
                self.answer(400, REFUSAL)
                return
            if self.server.renewals_work:
                number = int(self.server.valid[kind].rsplit("-", 1)[1]) + 1
                self.server.valid[kind] = f"fresh-{kind}-{number}"
                keys = json.loads(self.server.key_file.read_text())
                keys[kind]["key"] = self.server.valid[kind]
                self.server.key_file.write_text(json.dumps(keys))
            self.answer(200, {})
            return
        self.server.calls.append((url.path, auth))
        kind = "inference" if url.path == "/ping" else "management"
        if auth != f"Bearer {self.server.valid[kind]}":
            for callback in self.server.on_refusal:
                callback()
            self.answer(400, REFUSAL)
        elif kind == "inference":
            self.answer(200, {"status": "Healthy"})
        else:
            self.answer(200, {"models": []})

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[TokenStub, TorchServeClient]]:
    key_file = tmp_path / "key_file.json"
    write_keys(key_file, "expired-inference", "expired-management")
    server = TokenStub(key_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, TorchServeClient(server.url, server.url, key_file, timeout=10.0)
    finally:
        server.shutdown()
        server.server_close()


def test_an_expired_inference_key_is_renewed_with_the_api_key_and_the_call_retried_once(
    stub: tuple[TokenStub, TorchServeClient], caplog: pytest.LogCaptureFixture
) -> None:
    server, client = stub
    with caplog.at_level(logging.DEBUG):
        assert client.ping() == "Healthy"

    assert server.renewals == [("inference", f"Bearer {API_KEY}")]
    assert server.calls == [("/ping", "Bearer expired-inference"), ("/ping", "Bearer fresh-inference-1")]
    assert read_keys(client.key_file)["inference"] == "fresh-inference-1"
    assert client.ping() == "Healthy" and len(server.renewals) == 1  # the new key is used from now on
    logged = caplog.text
    assert "renewed" in logged and not any(key in logged for key in (API_KEY, "expired-inference", "fresh-"))


def test_an_expired_management_key_is_renewed_as_a_management_key(stub: tuple[TokenStub, TorchServeClient]) -> None:
    server, client = stub
    assert client.management("GET", "/models") == {"models": []}
    assert server.renewals == [("management", f"Bearer {API_KEY}")]
    assert read_keys(client.key_file)["inference"] == "expired-inference"  # only the refused kind is renewed


def test_a_key_refused_again_after_renewal_is_not_retried_a_second_time(
    stub: tuple[TokenStub, TorchServeClient],
) -> None:
    server, client = stub
    server.renewals_work = False  # /token answers 200 but the key stays refused

    with pytest.raises(BackendError, match="Token expired") as caught:
        client.ping()

    assert caught.value.status == 400
    assert len(server.renewals) == 1 and len(server.calls) == 2


def test_without_an_api_key_the_refusal_says_why_and_nothing_is_renewed(
    stub: tuple[TokenStub, TorchServeClient],
) -> None:
    server, client = stub
    write_keys(client.key_file, "expired-inference", "expired-management", api=None)

    with pytest.raises(BackendError, match="holds no API key") as caught:
        client.ping()

    assert caught.value.status == 400 and server.renewals == [] and len(server.calls) == 1
    assert "expired-inference" not in str(caught.value)


def test_a_failed_renewal_is_reported_without_any_key(stub: tuple[TokenStub, TorchServeClient]) -> None:
    server, client = stub
    write_keys(client.key_file, "expired-inference", "expired-management", api="a-wrong-api-key")

    with pytest.raises(BackendError, match="renewing the inference key failed") as caught:
        client.ping()

    assert "a-wrong-api-key" not in str(caught.value) and len(server.calls) == 1


def test_a_key_renewed_meanwhile_by_someone_else_is_used_without_renewing_again(
    stub: tuple[TokenStub, TorchServeClient],
) -> None:
    server, client = stub

    def someone_else_renews() -> None:  # e.g. the demo renewed while this CLI call was in flight
        server.valid["inference"] = "renewed-elsewhere-7"
        keys = json.loads(client.key_file.read_text())
        keys["inference"]["key"] = "renewed-elsewhere-7"
        client.key_file.write_text(json.dumps(keys))
        server.on_refusal.clear()

    server.on_refusal.append(someone_else_renews)
    assert client.ping() == "Healthy"
    assert server.renewals == [] and server.calls[-1] == ("/ping", "Bearer renewed-elsewhere-7")


def test_concurrent_refused_calls_renew_once(stub: tuple[TokenStub, TorchServeClient]) -> None:
    server, client = stub
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(client.ping())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["Healthy"] * 4
    assert len(server.renewals) == 1


# --- a real TorchServe whose keys expire after one minute ---------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_every_client_recovers_after_the_keys_expire(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """token_expiration_min=1: after expiry (a raw call with the old key is refused) the REST client, the serve
    CLI (status, predict), the demo's health check and `serve start` against the running server all succeed.
    Each client after the first starts from the expired key file again (TorchServe refuses an old key the same
    way, expired or replaced)."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java, which is not installed")
    from demo.backend import backend_status
    from model_archive.build import ArchiveSpec, build_archive
    from serve import server as serve_server
    from serve.cli import main
    from serve.private import PrivateServer
    from tests.conftest import png_bytes, textured_image

    for name in ("DEBLUR_INFERENCE_URL", "DEBLUR_MANAGEMENT_URL", "DEBLUR_METRICS_URL", "DEBLUR_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    store = build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=tmp_path / "model_store")).parent
    private = PrivateServer(store, tmp_path / "ts", extra_config={"token_expiration_min": "1"})
    with private as client:
        client.timeout = 120.0
        keys = json.loads(client.key_file.read_text())
        expiry = datetime.fromisoformat(keys["inference"]["expiration time"].replace("Z", "+00:00"))
        time.sleep(max(0.0, expiry.timestamp() - time.time()) + 2.0)
        expired = client.key_file.read_text()
        raw = requests.get(
            f"{client.inference_url}/ping", headers={"Authorization": f"Bearer {keys['inference']['key']}"}, timeout=10
        )
        assert raw.status_code == 400 and raw.json()["type"] == "InvalidKeyException"

        image = tmp_path / "b.png"
        image.write_bytes(png_bytes(textured_image(48, 32)))
        started = time.monotonic()
        assert client.predict(image.read_bytes()).status_code == 200
        renewal_s = time.monotonic() - started
        assert read_keys(client.key_file)["inference"] != keys["inference"]["key"]

        common = ["--config", str(private.config), "--run-dir", str(private.run_dir)]
        client.key_file.write_text(expired)
        assert main(["status", *common]) == 0, capsys.readouterr().err
        client.key_file.write_text(expired)
        assert main(["predict", str(image), "-o", str(tmp_path / "out.png"), *common]) == 0
        client.key_file.write_text(expired)
        assert backend_status(client).state == "ok"
        client.key_file.write_text(expired)
        serve_server.start(store, private.config, private.run_dir, timeout=60, env=private.env)
        output = capsys.readouterr()
        assert all(key["key"] not in output.out + output.err for key in keys.values())
        print(f"renewal + retried predict after expiry: {renewal_s:.2f} s")
