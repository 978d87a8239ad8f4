"""Through a real TorchServe: token auth, PNG in/out, 4xx for bad input (see the torchserve fixture)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

from serve import server
from serve.client import BackendError, TorchServeClient, read_keys
from tests.conftest import png_bytes

pytestmark = pytest.mark.e2e


def predictions_url(client: TorchServeClient) -> str:
    return f"{client.inference_url}/predictions/deblur"


def bearer(client: TorchServeClient, api: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {read_keys(client.key_file)[api]}"}


def assert_png_of_size(response: requests.Response, size: tuple[int, int]) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == size


def assert_token_refused(response: requests.Response) -> None:
    # TorchServe 0.12 answers a missing or wrong token with 400 InvalidKeyException (not 401/403).
    assert 400 <= response.status_code < 500
    assert response.json()["type"] == "InvalidKeyException"


def test_ping_with_inference_key(torchserve: TorchServeClient) -> None:
    assert torchserve.ping() == "Healthy"
    assert_token_refused(requests.get(f"{torchserve.inference_url}/ping", timeout=10))


def test_model_has_a_ready_worker(torchserve: TorchServeClient) -> None:
    assert server.model_ready(torchserve)
    [version] = server.describe(torchserve)
    assert (version["modelName"], version["modelVersion"]) == ("deblur", "1.0")


def test_png_in_same_size_png_out(torchserve: TorchServeClient, sample_png: bytes) -> None:
    assert_png_of_size(torchserve.predict(sample_png), (96, 64))
    assert_png_of_size(torchserve.predict(sample_png, version="1.0"), (96, 64))


def test_multipart_upload(torchserve: TorchServeClient, sample_png: bytes) -> None:
    response = requests.post(
        predictions_url(torchserve),
        files={"data": ("blurry.png", sample_png, "image/png")},
        headers=bearer(torchserve, "inference"),
        timeout=120,
    )
    assert_png_of_size(response, (96, 64))


def test_garbage_is_a_4xx_with_a_clear_message(torchserve: TorchServeClient) -> None:
    with pytest.raises(BackendError) as caught:
        torchserve.predict(b"these bytes are not an image")
    assert caught.value.status == 415
    assert "not a supported image" in str(caught.value)


def test_request_without_key_is_refused(torchserve: TorchServeClient, sample_png: bytes) -> None:
    assert_token_refused(requests.post(predictions_url(torchserve), data=sample_png, timeout=30))


def test_keys_are_not_interchangeable(torchserve: TorchServeClient, sample_png: bytes) -> None:
    wrong_for_inference = bearer(torchserve, "management")
    assert_token_refused(
        requests.post(predictions_url(torchserve), data=sample_png, headers=wrong_for_inference, timeout=30)
    )
    wrong_for_management = bearer(torchserve, "inference")
    assert_token_refused(requests.get(f"{torchserve.management_url}/models", headers=wrong_for_management, timeout=30))


def test_upload_beyond_torchserve_default_size_limit(torchserve: TorchServeClient) -> None:
    """config.properties raises max_request_size from TorchServe's 6.5 MB default."""
    noise = np.random.default_rng(0).integers(0, 256, (1600, 1600, 3), dtype=np.uint8)  # incompressible
    body = png_bytes(noise)
    assert len(body) > 6_553_500
    assert_png_of_size(torchserve.predict(body), (1600, 1600))
