"""Model versions through a real TorchServe's management API, driven by ``python -m serve``.

The session's TorchServe serves the untrained tiny model as deblur 1.0; its model store also holds
the identity model as deblur 2.0 (returns its input exactly), so which version answered is visible.
The test leaves the server as it found it: 1.0 the only version, and the default.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from serve import models
from serve.cli import main
from serve.client import BackendError, TorchServeClient
from tests.conftest import Deployment, png_bytes, textured_image

pytestmark = pytest.mark.e2e

IMAGE = textured_image(48, 32, seed=5)


def serve_cli(deployment: Deployment, *argv: str) -> int:
    common = ["--config", str(deployment.config), "--run-dir", str(deployment.run_dir)]
    return main([argv[0], *common, *argv[1:]])


def answered_by_identity(client: TorchServeClient, version: str | None = None) -> bool:
    response = client.predict(png_bytes(IMAGE), version=version)
    return np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), IMAGE)


def defaults(client: TorchServeClient) -> dict[str, bool]:
    return {entry.version: entry.is_default for entry in models.status(client)}


@pytest.fixture
def deployment(torchserve_deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    for name in ("DEBLUR_INFERENCE_URL", "DEBLUR_MANAGEMENT_URL", "DEBLUR_METRICS_URL", "DEBLUR_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield torchserve_deployment
    # Leave 1.0 as the only, default version even when an assertion failed half-way.
    client = torchserve_deployment.client
    if "2.0" in defaults(client):
        if defaults(client)["2.0"]:
            client.management("PUT", "/models/deblur/1.0/set-default")
        client.management("DELETE", "/models/deblur/2.0")


def test_register_predict_set_default_rollback_unregister(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    client = deployment.client
    assert not answered_by_identity(client)

    assert serve_cli(deployment, "register", str(deployment.v2_archive), "--model-store", str(deployment.store)) == 0
    assert defaults(client) == {"1.0": True, "2.0": False}
    assert answered_by_identity(client, version="2.0")
    assert not answered_by_identity(client)  # the default is still 1.0

    assert serve_cli(deployment, "set-default", "deblur", "2.0") == 0
    assert defaults(client) == {"1.0": False, "2.0": True}
    assert answered_by_identity(client)

    assert serve_cli(deployment, "status") == 0
    assert "deblur 2.0 (default): 1 worker(s) READY" in capsys.readouterr().out

    assert serve_cli(deployment, "rollback", "deblur") == 0
    assert defaults(client) == {"1.0": True, "2.0": False}
    assert not answered_by_identity(client)
    assert serve_cli(deployment, "rollback", "deblur") == 1  # nothing earlier recorded
    assert "no earlier default" in capsys.readouterr().err

    assert serve_cli(deployment, "scale", "deblur", "--version", "2.0", "--workers", "0") == 0
    assert [entry.workers for entry in models.status(client) if entry.version == "2.0"] == [()]
    assert serve_cli(deployment, "unregister", "deblur", "2.0") == 0
    assert defaults(client) == {"1.0": True}


def test_refusals_are_readable(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_cli(deployment, "unregister", "deblur", "1.0") == 1  # the default: TorchServe would drop deblur
    assert "deblur 1.0 is the default version" in capsys.readouterr().err
    assert serve_cli(deployment, "unregister", "deblur", "9.9") == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert serve_cli(deployment, "set-default", "deblur", "9.9") == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_management_without_the_key_is_refused(deployment: Deployment) -> None:
    url = f"{deployment.client.management_url}/models"
    response = requests.post(url, params={"url": deployment.v2_archive.name}, timeout=30)
    # TorchServe 0.12 answers a missing token with 400 InvalidKeyException (not 401/403).
    assert response.status_code == 400
    assert response.json()["type"] == "InvalidKeyException"
    assert "2.0" not in defaults(deployment.client)


def test_url_registration_outside_a_model_store_is_refused(deployment: Deployment) -> None:
    for url in ("https://example.com/model_store/deblur.mar", "file:///srv/other/deblur.mar", "file:///etc/passwd"):
        with pytest.raises(BackendError, match="does not match any allowed URL") as caught:
            deployment.client.management("POST", "/models", params={"url": url})
        assert caught.value.status == 404


def test_cli_predict_writes_the_answer_and_names_the_version(
    deployment: Deployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "blurred.png"
    source.write_bytes(png_bytes(IMAGE))
    default = next(entry.version for entry in models.status(deployment.client) if entry.is_default)
    assert serve_cli(deployment, "predict", str(source), "-o", str(tmp_path / "out.webp")) == 0
    image = Image.open(tmp_path / "out.webp")
    assert (image.format, image.size) == ("WEBP", (48, 32))
    assert capsys.readouterr().err.strip() == f"answered by deblur {default} (network)"
    assert serve_cli(deployment, "predict", str(source), "-o", str(tmp_path / "out.png"), "--version", default) == 0
    assert capsys.readouterr().err.strip() == f"answered by deblur {default} (network)"


def test_cli_scores_a_paired_folder_through_the_server(deployment: Deployment, tmp_path: Path) -> None:
    for name, seed in (("a.png", 1), ("sub/b.png", 2)):
        sharp = textured_image(40, 30, seed=seed)
        blurred = (sharp.astype(np.float32) * 0.8 + 20).astype(np.uint8)  # any difference will do
        for kind, array in (("sharp", sharp), ("blur", blurred)):
            (tmp_path / "pairs" / kind / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "pairs" / kind / name).write_bytes(png_bytes(array))
    report = tmp_path / "scores.json"
    assert serve_cli(deployment, "score", str(tmp_path / "pairs"), "--json", str(report)) == 0
    scores = json.loads(report.read_text())
    assert [row["name"] for row in scores["images"]] == ["a.png", "sub/b.png"]
    for row in scores["images"]:
        assert row["gain"] == pytest.approx(row["psnr"] - row["input_psnr"]) and 0 < row["input_psnr"] < 60
        assert row["kernel"] is None  # 40×30 is too small for a kernel estimate, with or without kernel_aware
    assert scores["mean"]["psnr"] == pytest.approx(np.mean([row["psnr"] for row in scores["images"]]))
    (tmp_path / "pairs" / "sharp" / "a.png").unlink()
    assert serve_cli(deployment, "score", str(tmp_path / "pairs")) == 1  # an unpaired image: a clear error


def test_cli_reports_a_server_that_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:9\nmanagement_address=http://127.0.0.1:9\n")
    assert main(["status", "--config", str(config), "--run-dir", str(tmp_path)]) == 1
    assert "not reachable" in capsys.readouterr().err
