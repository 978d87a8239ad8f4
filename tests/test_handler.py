"""DeblurHandler with TorchServe's own Context and metrics cache, no server: rows in, answers out."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import ts
from PIL import Image
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from deblur.imageio import decode_image
from deblur.metrics import psnr, ssim, to_unit_range
from deblur.model import load_model
from deblur.restore import Network, plan_restoration, run_network
from deblur.settings import RestoreOptions, ServingSettings
from handler.deblur_handler import METRIC_INFERENCE_MS, METRIC_MEGAPIXELS, METRIC_TILES, DeblurHandler
from handler.pipeline import prepare
from handler.request import ERROR_CODES, Request, RequestError
from tests.conftest import discs_image, png_bytes, shaken_discs, textured_image

TS_METRICS_YAML = Path(ts.__file__).parent / "configs" / "metrics.yaml"  # the worker's default


def make_context(
    model_dir: Path, yaml_config: dict[str, Any] | None = None, checkpoint: str = "tiny.pt", version: str = "1.0"
) -> Context:
    manifest = {
        "model": {
            "modelName": "deblur",
            "modelVersion": version,
            "serializedFile": checkpoint,
            "handler": "deblur_handler.py",
        }
    }
    metrics = MetricsCacheYamlImpl(str(TS_METRICS_YAML))  # what the worker builds
    metrics.initialize_cache()
    metrics.model_name = "deblur"
    return Context("deblur", str(model_dir), manifest, 1, None, "0.12.0", True, metrics, yaml_config or {})


def run(
    handler: DeblurHandler, context: Context, rows: list[dict[str, Any]], headers: dict[str, Any] | None = None
) -> list[bytes]:
    """What TorchServe's Service.predict sets before calling the handler."""
    context.request_ids = {idx: f"request-{idx}" for idx in range(len(rows))}
    context.request_processor = [RequestProcessor(dict(headers or {})) for _ in rows]
    context.metrics.set_request_ids(context.request_ids)
    return handler.handle(rows, context)


def run_json(handler: DeblurHandler, context: Context, document: dict[str, Any], **headers: str) -> dict[str, Any]:
    [answer] = run(handler, context, [{"body": document}], {"body": {"content-type": "application/json"}, **headers})
    assert context.get_response_content_type(0) == "application/json"
    return json.loads(answer)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Module scope: the handler keeps no per-request state, so one instance serves every test (as a worker does).
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, identity_checkpoint: Path) -> Path:
    directory = tmp_path_factory.mktemp("model_dir")
    shutil.copy(tiny_checkpoint, directory / "tiny.pt")  # as TorchServe extracts the .mar
    shutil.copy(identity_checkpoint, directory / "identity.pt")
    return directory


@pytest.fixture(scope="module")
def context(model_dir: Path) -> Context:
    return make_context(model_dir)


@pytest.fixture(scope="module")
def handler(context: Context) -> DeblurHandler:
    handler = DeblurHandler()
    handler.initialize(context)
    return handler


@pytest.fixture(scope="module")
def identity(model_dir: Path) -> tuple[DeblurHandler, Context]:
    context = make_context(model_dir, checkpoint="identity.pt", version="2.0")
    handler = DeblurHandler()
    handler.initialize(context)
    return handler, context


def open_answer(data: bytes, fmt: str = "PNG") -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt
    return image


def test_initialize_uses_defaults_and_cpu(handler: DeblurHandler) -> None:
    assert handler.initialized
    assert handler.device.type == "cpu"
    assert handler.settings == ServingSettings()
    assert (handler.model_name, handler.model_version) == ("deblur", "1.0")
    assert handler.network.tile_batch == 1 and handler.network.device == torch.device("cpu")


def test_png_in_same_size_png_out(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    [output] = run(handler, context, [{"body": sample_png}])
    assert open_answer(output).size == (96, 64)
    assert context.get_response_content_type(0) == "image/png"


@pytest.mark.parametrize("key", ["data", "file"])
def test_multipart_field_is_accepted(handler: DeblurHandler, context: Context, sample_png: bytes, key: str) -> None:
    [output] = run(handler, context, [{key: bytearray(sample_png)}])
    assert open_answer(output).size == (96, 64)


def test_base64_string_and_data_url_bodies(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    for body in (b64(sample_png), f"data:image/png;base64,{b64(sample_png)}"):
        [output] = run(handler, context, [{"body": body}])
        assert open_answer(output).size == (96, 64)


@pytest.mark.parametrize(
    ("accept", "fmt", "mime"),
    [
        ("image/jpeg", "JPEG", "image/jpeg"),
        ("image/webp;q=0.9, image/jpeg;q=0.5", "WEBP", "image/webp"),
        ("text/html, */*", "PNG", "image/png"),
    ],
)
def test_accept_header_picks_the_format(
    handler: DeblurHandler, context: Context, sample_png: bytes, accept: str, fmt: str, mime: str
) -> None:
    [output] = run(handler, context, [{"body": sample_png}], {"Accept": accept})
    assert open_answer(output, fmt).size == (96, 64)
    assert context.get_response_content_type(0) == mime


def test_json_request_gets_the_documented_answer(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    answer = run_json(handler, context, {"image": f"data:image/png;base64,{b64(sample_png)}", "tile_size": 128})
    assert set(answer) == {"image", "format", "width", "height", "model", "timing_ms", "tiles", "path"}
    assert answer["path"] == "network"
    assert (answer["format"], answer["width"], answer["height"]) == ("png", 96, 64)
    assert answer["model"] == {"name": "deblur", "version": "1.0"}
    assert set(answer["timing_ms"]) == {"decode", "inference", "encode"}
    assert all(value >= 0 for value in answer["timing_ms"].values())
    assert answer["tiles"] == 1  # 96×64 fits one 128-px tile
    assert open_answer(base64.b64decode(answer["image"])).size == (96, 64)


def test_json_body_without_json_content_type(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    body = json.dumps({"image": b64(sample_png), "format": "webp"}).encode()
    [output] = run(handler, context, [{"body": body}], {"body": {"content-type": "text/plain"}})
    answer = json.loads(output)
    assert answer["format"] == "webp"
    assert open_answer(base64.b64decode(answer["image"]), "WEBP").size == (96, 64)


def test_format_field_wins_over_accept(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    answer = run_json(handler, context, {"image": b64(sample_png), "format": "jpeg"}, Accept="image/webp")
    assert open_answer(base64.b64decode(answer["image"]), "JPEG").size == (96, 64)


def test_metrics_only_with_ground_truth_and_match_direct_computation(handler: DeblurHandler, context: Context) -> None:
    sharp = textured_image(80, 48, seed=1)
    blurred = np.asarray(Image.fromarray(sharp).resize((40, 24)).resize((80, 48)))
    assert "metrics" not in run_json(handler, context, {"image": b64(png_bytes(blurred))})

    answer = run_json(handler, context, {"image": b64(png_bytes(blurred)), "ground_truth": b64(png_bytes(sharp))})
    output = to_unit_range(decode_image(base64.b64decode(answer["image"])).pixels)
    target = to_unit_range(decode_image(png_bytes(sharp)).pixels)
    source = to_unit_range(decode_image(png_bytes(blurred)).pixels)
    expected = {
        "psnr": psnr(output, target),
        "ssim": ssim(output, target),
        "input_psnr": psnr(source, target),
        "input_ssim": ssim(source, target),
    }
    assert answer["metrics"] == pytest.approx(expected, abs=1e-6)


def test_identical_ground_truth_reports_null_psnr(identity: tuple[DeblurHandler, Context], sample_png: bytes) -> None:
    handler, context = identity
    answer = run_json(handler, context, {"image": b64(sample_png), "ground_truth": b64(sample_png)})
    assert answer["metrics"]["psnr"] is None and answer["metrics"]["input_psnr"] is None
    assert answer["metrics"]["ssim"] == pytest.approx(1.0)


def test_self_ensemble_is_rotation_equivariant(model_dir: Path) -> None:
    """Averaging over the 8 flips/rotations makes the output commute with them; the plain model does not."""
    image = decode_image(png_bytes(textured_image(40, 24, seed=3))).pixels
    turned = torch.rot90(image, 1, dims=(-2, -1)).contiguous()
    network = Network(load_model(model_dir / "tiny.pt"))
    options = RestoreOptions(self_ensemble=True)
    with torch.inference_mode():
        plain = network.predict(image[None])[0].clamp(-1, 1)
        plain_turned = network.predict(turned[None])[0].clamp(-1, 1)
        ensemble = run_network(network, image, plan_restoration(24, 40, options))
        ensemble_turned = run_network(network, turned, plan_restoration(40, 24, options))
    assert not torch.allclose(torch.rot90(plain, 1, dims=(-2, -1)), plain_turned, atol=1e-3)
    assert torch.allclose(torch.rot90(ensemble, 1, dims=(-2, -1)), ensemble_turned, atol=1e-5)


def test_self_ensemble_request_runs_eight_passes(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    plain = run_json(handler, context, {"image": b64(sample_png)})
    ensemble = run_json(handler, context, {"image": b64(sample_png), "self_ensemble": True})
    assert (plain["tiles"], ensemble["tiles"]) == (1, 8)
    assert plain["image"] != ensemble["image"]


def test_alpha_is_returned_bit_exact(handler: DeblurHandler, context: Context) -> None:
    alpha = np.arange(40 * 30, dtype=np.uint32).reshape(30, 40).astype(np.uint8)
    [output] = run(handler, context, [{"body": png_bytes(np.dstack([textured_image(40, 30), alpha]))}])
    image = open_answer(output)
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image)[:, :, 3], alpha)


def test_gray_stays_gray(handler: DeblurHandler, context: Context) -> None:
    [output] = run(handler, context, [{"body": png_bytes(textured_image(40, 30)[:, :, 0])}])
    assert open_answer(output).mode == "L"


def test_sixteen_bit_png_stays_sixteen_bit(identity: tuple[DeblurHandler, Context]) -> None:
    handler, context = identity
    values = (np.arange(32 * 8, dtype=np.uint32).reshape(8, 32) * 257).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    [output] = run(handler, context, [{"body": buffer.getvalue()}])
    image = open_answer(output)
    assert output[24] == 16 and image.mode.startswith("I")  # IHDR bit depth
    assert np.abs(np.asarray(image).astype(np.int64) - values).max() <= 1  # identity model


def test_exif_rotated_photo_comes_back_upright(identity: tuple[DeblurHandler, Context]) -> None:
    handler, context = identity
    stored = textured_image(48, 32)  # as the camera stored it; orientation 6 = "rotate 90° CW to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=98, exif=exif.tobytes())
    [output] = run(handler, context, [{"body": buffer.getvalue()}])
    image = open_answer(output)
    assert image.size == (32, 48) and "exif" not in image.info
    answer = np.asarray(image).astype(np.int64)
    upright, wrong = (np.rot90(stored, k=k).astype(np.int64) for k in (-1, 1))  # 90° clockwise / counter
    assert np.abs(answer - upright).mean() * 4 < np.abs(answer - wrong).mean()  # JPEG noise, not a rotation


def test_yaml_settings_override_defaults(model_dir: Path) -> None:
    context = make_context(model_dir, {"handler": {"tile_size": 128, "overlap": 16, "tile_batch": 3}})
    handler = DeblurHandler()
    handler.initialize(context)
    assert handler.settings == ServingSettings(tile_size=128, overlap=16, tile_batch=3)
    assert handler.network.tile_batch == 3
    answer = run_json(handler, context, {"image": b64(png_bytes(textured_image(300, 200)))})
    assert answer["tiles"] == 3 * 2


@pytest.mark.parametrize(
    "section",
    [{"tile_size": 8}, {"tile_size": 64, "overlap": 40}, {"tile_batch": -1}, {"tile": 64}, {"kernel_aware": "yes"}],
)
def test_nonsense_yaml_settings_fail_initialize(model_dir: Path, section: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeblurHandler().initialize(make_context(model_dir, {"handler": section}))


def test_kernel_aware_request_deconvolves_a_camera_shake(identity: tuple[DeblurHandler, Context]) -> None:
    handler, context = identity  # the identity network returns its input: any gain is the deconvolution's
    sharp, blurred = shaken_discs(384, 15, seed=1)
    document = {"image": b64(png_bytes(blurred)), "ground_truth": b64(png_bytes(sharp))}
    plain = run_json(handler, context, document)
    aware = run_json(handler, context, document | {"kernel_aware": True})
    assert "kernel" not in plain and plain["tiles"] == 1 and plain["metrics"]["psnr"] == plain["metrics"]["input_psnr"]
    assert aware["kernel"]["used"] is True and aware["kernel"]["spread_px"] >= 3 and aware["tiles"] == 0
    assert aware["metrics"]["psnr"] > aware["metrics"]["input_psnr"] + 2  # measured +3.6 dB


def test_kernel_aware_leaves_small_and_sharp_images_to_the_network(identity: tuple[DeblurHandler, Context]) -> None:
    handler, context = identity
    small = run_json(handler, context, {"image": GOOD, "kernel_aware": True})
    assert small["kernel"] is None and small["tiles"] == 1
    sharp = png_bytes(discs_image(384, seed=2))
    answer = run_json(handler, context, {"image": b64(sharp), "ground_truth": b64(sharp), "kernel_aware": True})
    assert answer["kernel"]["used"] is False and answer["kernel"]["decision"] == "no blur"
    assert (answer["path"], answer["tiles"], answer["metrics"]["psnr"]) == ("input", 0, None)  # as sent


def test_archive_default_kernel_aware_applies_to_every_request(model_dir: Path) -> None:
    context = make_context(model_dir, {"handler": {"kernel_aware": True}}, checkpoint="identity.pt")
    handler = DeblurHandler()
    handler.initialize(context)
    assert handler.settings.kernel_aware
    _, blurred = shaken_discs(384, 15, seed=1)
    [raw] = run(handler, context, [{"body": png_bytes(blurred)}])
    assert not np.array_equal(np.asarray(open_answer(raw)), blurred)  # deconvolved, not the identity's copy
    by_default = run_json(handler, context, {"image": b64(png_bytes(blurred))})
    assert by_default["kernel"]["used"] is True and by_default["tiles"] == 0
    off = run_json(handler, context, {"image": b64(png_bytes(blurred)), "kernel_aware": False})
    assert "kernel" not in off and np.array_equal(np.asarray(open_answer(base64.b64decode(off["image"]))), blurred)


def refusal(handler: DeblurHandler, context: Context, rows: list[dict[str, Any]], **headers: Any) -> dict[str, Any]:
    """The first row's refusal: its JSON document, checked against the status the row was given."""
    answer = run(handler, context, rows, headers)[0]
    assert context.get_response_content_type(0) == "application/json"
    document = json.loads(answer)
    assert context.get_response_status(0) == (document["code"], HTTPStatus(document["code"]).phrase)
    assert ERROR_CODES[document["error"]][0] == document["code"]
    return document


GOOD = b64(png_bytes(textured_image(24, 16)))


@pytest.mark.parametrize(
    ("row", "status", "error", "words"),
    [
        ({"body": b"definitely not an image"}, 415, "unsupported_format", "not a supported image"),
        ({"body": b"%PDF-1.4\n1 0 obj<<>>endobj\n"}, 415, "unsupported_format", "not a supported image"),
        ({"body": b""}, 400, "empty_image", "empty body"),
        ({"body": png_bytes(textured_image(64, 48))[:200]}, 400, "unreadable_image", "corrupt or truncated"),
        ({"body": "@@not base64@@"}, 400, "not_an_image", "the body holds text (14 characters) that is not an image"),
        ({"data": "notes: bring cake"}, 400, "not_an_image", "field 'data' holds text (17 characters) that is not"),
        ({"data": "  \n"}, 400, "empty_image", "field 'data' is empty"),
        ({"img": png_bytes(textured_image(8, 8))}, 400, "no_image", "has the field(s) 'img', but the image goes in"),
        ({}, 400, "no_image", "no image"),
        ({"body": b'{"image": '}, 400, "invalid_json", "not valid JSON"),
        ({"body": b'{"a":' * 100_000 + b"1" + b"}" * 100_000}, 400, "invalid_json", "not valid JSON"),
        ({"body": [1, 2]}, 400, "invalid_json", "must be an object"),
        ({"body": {"tile_size": 64}}, 400, "missing_field", "field 'image' is required"),
        ({"body": {"image": GOOD, "colour": "red"}}, 400, "unknown_field", "unknown field 'colour'"),
        ({"body": {"image": 3}}, 400, "wrong_type", "field 'image' must be a string"),
        ({"body": {"image": GOOD, "tile_size": "big"}}, 400, "wrong_type", "field 'tile_size' must be an integer"),
        ({"body": {"image": GOOD, "tile_size": True}}, 400, "wrong_type", "field 'tile_size' must be an integer"),
        (
            {"body": {"image": GOOD, "self_ensemble": "yes"}},
            400,
            "wrong_type",
            "field 'self_ensemble' must be true or false",
        ),
        ({"body": {"image": GOOD, "kernel_aware": 1}}, 400, "wrong_type", "field 'kernel_aware' must be true or false"),
        (
            {"body": {"image": GOOD, "tile_size": 4}},
            400,
            "invalid_value",
            "field 'tile_size' must be between 128 and 2048",
        ),
        ({"body": {"image": GOOD, "tile_size": 100000}}, 400, "invalid_value", "field 'tile_size' must be between"),
        ({"body": {"image": GOOD, "overlap": -1}}, 400, "invalid_value", "field 'overlap' must be between 0"),
        ({"body": {"image": GOOD, "tile_size": 128, "overlap": 65}}, 400, "invalid_value", "field 'overlap'"),
        (
            {"body": {"image": GOOD, "format": "gif"}},
            400,
            "invalid_value",
            "field 'format' must be one of png, jpeg, webp",
        ),
        ({"body": {"image": "%%%"}}, 400, "invalid_base64", "field 'image' is not valid base64"),
        ({"body": {"image": ""}}, 400, "empty_image", "field 'image' is empty"),
        (
            {"body": {"image": GOOD, "ground_truth": "!!"}},
            400,
            "invalid_base64",
            "field 'ground_truth' is not valid base64",
        ),
        (
            {"body": {"image": GOOD, "ground_truth": b64(png_bytes(textured_image(16, 24)))}},
            400,
            "size_mismatch",
            "field 'ground_truth' is 16×24 but the image is 24×16",
        ),
        (
            {"body": {"image": GOOD, "ground_truth": b64(b"GIF89a" + bytes(20))}},
            415,
            "unsupported_format",
            "not a supported image",
        ),
    ],
)
def test_bad_input_is_a_4xx_and_the_worker_carries_on(
    handler: DeblurHandler,
    context: Context,
    sample_png: bytes,
    row: dict[str, Any],
    status: int,
    error: str,
    words: str,
) -> None:
    document = refusal(handler, context, [row])
    assert (document["code"], document["error"]) == (status, error)
    assert words in document["message"] and "Traceback" not in document["message"]
    [output] = run(handler, context, [{"body": sample_png}])
    assert open_answer(output).size == (96, 64)


def test_a_form_encoded_body_is_named_with_the_fix(handler: DeblurHandler, context: Context) -> None:
    """curl --data-binary without a content type sends a form; TorchServe parses it into odd fields."""
    row = {"\x89PNG\r\n\x1a\n\x00\x00IHDR": "", "garbage": ""}
    document = refusal(handler, context, [row], **{"Content-Type": "application/x-www-form-urlencoded"})
    assert document["error"] == "no_image"
    assert "application/x-www-form-urlencoded" in document["message"] and "-F data=@photo.png" in document["message"]
    assert "\x89" not in document["message"]


def test_one_bad_row_does_not_fail_the_batch(handler: DeblurHandler, context: Context, sample_png: bytes) -> None:
    good, bad = run(handler, context, [{"body": sample_png}, {"body": b"not an image"}])
    assert open_answer(good).size == (96, 64) and context.get_response_status(0)[0] == 200
    assert json.loads(bad)["error"] == "unsupported_format" and context.get_response_status(1)[0] == 415


def test_every_error_code_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code, (status, _) in ERROR_CODES.items():
        assert re.search(rf"\| {status} \| `{code}` \|", readme), code


def test_pixel_cap_from_yaml_gives_422(model_dir: Path, sample_png: bytes) -> None:
    context = make_context(model_dir, {"handler": {"max_pixels": 1000}})
    handler = DeblurHandler()
    handler.initialize(context)
    document = refusal(handler, context, [{"body": sample_png}])
    assert (document["code"], document["error"]) == (422, "image_too_large")  # 413 would reach the client as 507
    assert "the limit is 1000" in document["message"]


def test_custom_metrics_are_emitted(
    handler: DeblurHandler, context: Context, sample_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        run(handler, context, [{"body": sample_png}])
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("[METRICS]")]
    assert any(line.startswith(f"[METRICS]{METRIC_TILES}.Count:1|#ModelVersion:1.0,") for line in lines), lines
    assert any(line.startswith(f"[METRICS]{METRIC_MEGAPIXELS}.MP:0.006144|") for line in lines), lines
    assert any(line.startswith(f"[METRICS]{METRIC_INFERENCE_MS}.Milliseconds:") for line in lines), lines


def test_missing_checkpoint_fails_initialize(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing"):
        DeblurHandler().initialize(make_context(tmp_path))


def test_a_request_over_the_compute_budget_is_refused_before_any_model_call(
    handler: DeblurHandler, context: Context
) -> None:
    """Cheap to send, dear to run: the cost is estimated from the plan and named in the refusal with the limit."""
    calls = []
    network = handler.network
    handler.network = Network(lambda batch: calls.append(batch.shape) or network.predict(batch), 1)
    try:
        flat = png_bytes(np.full((2048, 2048, 3), 120, np.uint8))
        document = {"image": b64(flat), "tile_size": 128, "overlap": 64, "self_ensemble": True}
        answer = refusal(handler, context, [{"body": document}], body={"content-type": "application/json"})
        assert (answer["code"], answer["error"]) == (422, "over_budget")
        assert re.search(r"about 124 s of compute .*over the limit of 60 s", answer["message"])
        assert "961 tiles of 128×128 px × 8 passes" in answer["message"] and not calls  # not 7688 tiles
        strip = png_bytes(np.full((1, 4_000_000, 3), 120, np.uint8))  # an extreme aspect ratio, same rule
        assert "s of compute" in refusal(handler, context, [{"body": strip}])["message"]
        assert not calls
    finally:
        handler.network = network


def test_the_cost_model_bounds_extreme_shapes() -> None:
    """The 2,000,000×1 strip (4465 tiles padded to 16×512) is inside the budget; 16,777,216×1, within the pixel
    cap, is not; a 4096² kernel-aware request, the largest usual one, is."""
    settings = ServingSettings()
    cost = {
        name: plan_restoration(height, width, RestoreOptions(kernel_aware=aware)).cost_s(settings)
        for name, (height, width, aware) in {
            "strip 2M": (1, 2_000_000, False),
            "strip 16M": (1, 16_777_216, False),
            "4096² kernel-aware": (4096, 4096, True),
        }.items()
    }
    assert cost["strip 2M"] < settings.compute_budget_s < cost["strip 16M"]
    assert cost["4096² kernel-aware"] < settings.compute_budget_s


def test_self_ensemble_is_refused_above_its_pixel_limit() -> None:
    image = png_bytes(textured_image(40, 30))
    ensemble = Request(image, None, RestoreOptions(512, 64, self_ensemble=True), "png", json_response=True)
    with pytest.raises(RequestError, match="'self_ensemble' is limited to images of at most 1199 pixels") as info:
        prepare(ensemble, ServingSettings(max_pixels=10_000, ensemble_max_pixels=1199))
    assert info.value.status == 400
    assert prepare(ensemble, ServingSettings(max_pixels=10_000, ensemble_max_pixels=1200)).image.size == (40, 30)
    plain = Request(image, None, RestoreOptions(512, 64), "png", json_response=True)
    assert prepare(plain, ServingSettings(max_pixels=10_000, ensemble_max_pixels=1)).image.size == (40, 30)
