"""Through a real TorchServe: token auth, every input form and image mode, the JSON contract with
metrics, 4xx for bad input (and the worker carries on), the handler's metrics on the metrics port.

All tests share the session's single TorchServe (tests/conftest.py ``torchserve``), serving the
untrained tiny model as deblur 1.0.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from deblur.imageio import decode_image
from deblur.metrics import psnr, ssim, to_unit_range
from serve import server
from serve.client import BackendError, TorchServeClient, read_keys
from tests.conftest import png_bytes, shaken_discs, textured_image

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
    assert (caught.value.status, caught.value.error) == (415, "unsupported_format")
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


def encoded(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def answer_image(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_json_round_trip_with_metrics_matching_a_direct_computation(torchserve: TorchServeClient) -> None:
    sharp = textured_image(80, 48, seed=1)
    blurred = np.asarray(Image.fromarray(sharp).resize((40, 24)).resize((80, 48)))
    payload = {"image": f"data:image/png;base64,{b64(png_bytes(blurred))}", "ground_truth": b64(png_bytes(sharp))}
    answer = torchserve.predict_json(payload)

    assert (answer["format"], answer["width"], answer["height"], answer["tiles"]) == ("png", 80, 48, 1)
    assert answer["model"] == {"name": "deblur", "version": "1.0"}
    assert set(answer["timing_ms"]) == {"decode", "inference", "encode"}
    output = to_unit_range(decode_image(base64.b64decode(answer["image"])).pixels)
    target = to_unit_range(decode_image(png_bytes(sharp)).pixels)
    source = to_unit_range(decode_image(png_bytes(blurred)).pixels)
    assert output.shape == target.shape
    assert answer["metrics"] == pytest.approx(
        {
            "psnr": psnr(output, target),
            "ssim": ssim(output, target),
            "input_psnr": psnr(source, target),
            "input_ssim": ssim(source, target),
        },
        abs=1e-6,
    )


def test_json_options_without_ground_truth_have_no_metrics(torchserve: TorchServeClient, sample_png: bytes) -> None:
    wide = png_bytes(textured_image(200, 100))  # two 128-px tiles across
    answer = torchserve.predict_json({"image": b64(wide), "format": "webp", "tile_size": 128, "overlap": 16})
    assert "metrics" not in answer
    assert (answer["format"], answer["tiles"]) == ("webp", 2)
    assert Image.open(io.BytesIO(base64.b64decode(answer["image"]))).format == "WEBP"
    ensemble = torchserve.predict_json({"image": b64(sample_png), "self_ensemble": True})
    assert ensemble["tiles"] == 8


def test_kernel_aware_request_is_deconvolved_by_the_server(torchserve: TorchServeClient) -> None:
    sharp, blurred = shaken_discs(384, 15, seed=1)
    answer = torchserve.predict_json(
        {"image": b64(png_bytes(blurred)), "ground_truth": b64(png_bytes(sharp)), "kernel_aware": True}
    )
    assert answer["kernel"]["used"] is True and answer["tiles"] == 0
    assert answer["metrics"]["psnr"] > answer["metrics"]["input_psnr"] + 2  # measured +3.6 dB in-process


def test_accept_header_chooses_the_output_format(torchserve: TorchServeClient, sample_png: bytes) -> None:
    response = torchserve.predict(sample_png, accept="image/jpeg")
    assert response.headers["content-type"] == "image/jpeg"
    assert answer_image(response).format == "JPEG"


def sixteen_bit_gray() -> bytes:
    return encoded(Image.fromarray((np.arange(40 * 24).reshape(24, 40) * 60).astype(np.uint16)), "PNG")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90° clockwise to display"
    return encoded(Image.fromarray(textured_image(48, 32)), "JPEG", exif=exif.tobytes())


ALPHA = np.arange(40 * 24, dtype=np.uint32).reshape(24, 40).astype(np.uint8)
MODE_CASES = {
    "rgba": (png_bytes(np.dstack([textured_image(40, 24), ALPHA])), "RGBA", (40, 24)),
    "gray": (png_bytes(textured_image(40, 24)[:, :, 0]), "L", (40, 24)),
    "gray16": (sixteen_bit_gray(), "I;16", (40, 24)),
    "palette": (encoded(Image.fromarray(textured_image(40, 24)).convert("P"), "PNG"), "RGB", (40, 24)),
    "cmyk": (encoded(Image.fromarray(textured_image(40, 24)).convert("CMYK"), "JPEG"), "RGB", (40, 24)),
    "exif": (exif_rotated_jpeg(), "RGB", (32, 48)),
    "tiff": (encoded(Image.fromarray(textured_image(40, 24)), "TIFF"), "RGB", (40, 24)),
    "bmp": (encoded(Image.fromarray(textured_image(40, 24)), "BMP"), "RGB", (40, 24)),
}


@pytest.mark.parametrize("case", MODE_CASES)
def test_image_modes_round_trip(torchserve: TorchServeClient, case: str) -> None:
    body, mode, size = MODE_CASES[case]
    response = torchserve.predict(body)
    image = answer_image(response)
    assert (image.format, image.mode, image.size) == ("PNG", mode, size)
    assert "exif" not in image.info and "icc_profile" not in image.info
    if case == "rgba":
        assert np.array_equal(np.asarray(image)[:, :, 3], ALPHA)
    if case == "gray16":
        assert response.content[24] == 16  # the PNG header's bit depth


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png() -> bytes:
    """The start of a 4100×4100 PNG (above the 4096² cap): refused before any pixel is decoded."""
    header = struct.pack(">IIBBBBB", 4100, 4100, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(4101)))


ERROR_CASES = {
    "not an image": (b"these bytes are not an image", 415, "not a supported image"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\n", 415, "not a supported image"),
    "truncated": (png_bytes(textured_image(64, 48))[:300], 400, "corrupt or truncated"),
    "over the pixel cap": (bomb_png(), 422, "the limit is 16777216"),
    "bad base64": ({"image": "@@@"}, 400, "field 'image' is not valid base64"),
    "unknown field": ({"image": "AAAA", "strength": 2}, 400, "unknown field 'strength'"),
    "wrong type": ({"image": "AAAA", "tile_size": "512"}, 400, "field 'tile_size' must be an integer"),
    "tile too small": ({"image": "AAAA", "tile_size": 1}, 400, "field 'tile_size' must be between"),
    "ground truth size": (
        {"image": b64(png_bytes(textured_image(40, 24))), "ground_truth": b64(png_bytes(textured_image(24, 40)))},
        400,
        "field 'ground_truth' is 24×40 but the image is 40×24",
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_is_a_4xx_and_the_next_request_succeeds(
    torchserve: TorchServeClient, sample_png: bytes, case: str
) -> None:
    body, status, words = ERROR_CASES[case]
    with pytest.raises(BackendError) as caught:
        if isinstance(body, dict):
            torchserve.predict_json(body)
        else:
            torchserve.predict(body)
    assert caught.value.status == status
    assert words in str(caught.value)
    assert_png_of_size(torchserve.predict(sample_png), (96, 64))


def test_invalid_json_body_is_a_400(torchserve: TorchServeClient) -> None:
    response = requests.post(
        predictions_url(torchserve),
        data=b'{"image": ',
        headers=bearer(torchserve, "inference") | {"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_handler_metrics_on_the_metrics_port(torchserve: TorchServeClient, sample_png: bytes) -> None:
    torchserve.predict(sample_png)
    lines = torchserve.metrics().splitlines()
    for name in ("DeblurTiles", "DeblurMegapixels", "DeblurInferenceMs"):
        assert f"# TYPE {name} counter" in lines
        samples = [line for line in lines if line.startswith(f'{name}{{ModelVersion="1.0",ModelName="deblur"')]
        assert samples and float(samples[0].rsplit(" ", 1)[1]) > 0
