"""Every fast inference path gives the fp32 image within a stated tolerance.

Tolerance: PSNR between the fast path's 8-bit output and the fp32 path's ≥ 40 dB (a mean error
well under one 8-bit level), on a model whose output is not trivially the input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import textured_image

from deblur import runtime
from deblur.imageio import to_model_range, to_uint8
from deblur.model import DeblurUNet, ModelConfig
from deblur.runtime import make_predictor, resolve_precision, resolve_tile_batch
from deblur.tiling import restore_tiled

MIN_PSNR_VS_FP32 = 40.0


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = DeblurUNet(ModelConfig(base_ch=16, residual=True)).eval()
    torch.nn.init.normal_(model.final.weight, std=0.05)  # a real correction on top of the input
    return model


def restored_bytes(model: torch.nn.Module, precision: str, channels_last: bool) -> np.ndarray:
    image = to_model_range(textured_image(300, 200, seed=4))
    predictor = make_predictor(model, "cpu", precision, channels_last)
    return to_uint8(restore_tiled(predictor, image, tile=128, overlap=32, batch_size=3).clamp(-1, 1))


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    ("precision", "channels_last"), [("fp32", True), ("bf16", True), ("bf16", False), ("auto", True)]
)
def test_fast_paths_match_fp32(model: torch.nn.Module, precision: str, channels_last: bool) -> None:
    reference = restored_bytes(model, "fp32", channels_last=False)
    fast = restored_bytes(model, precision, channels_last)
    assert psnr_8bit(fast, reference) >= MIN_PSNR_VS_FP32
    assert not np.array_equal(reference, to_uint8(to_model_range(textured_image(300, 200, seed=4))))  # model acts


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16
    for native, expected in ((True, torch.bfloat16), (False, None)):  # emulated bf16 would be slower than fp32
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", torch.device("cpu")) is expected
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", torch.device("cpu"))


def test_tile_batch_resolution() -> None:
    assert resolve_tile_batch(0, "cpu") == 1  # automatic: batches overflow CPU caches
    assert resolve_tile_batch(0, torch.device("cuda", 0)) == 4  # GPUs need batches to fill their cores
    assert resolve_tile_batch(3, "cpu") == 3
    with pytest.raises(ValueError, match="≥ 0"):
        resolve_tile_batch(-1, "cpu")


def test_predictor_keeps_shape_and_returns_float32(model: torch.nn.Module) -> None:
    out = make_predictor(model, "cpu", "auto")(torch.zeros(2, 3, 40, 56))
    assert out.shape == (2, 3, 40, 56) and out.dtype == torch.float32 and out.is_contiguous()


def test_archive_precision_switch_is_validated() -> None:
    from deblur.settings import ServingSettings

    assert ServingSettings.from_yaml({"handler": {"precision": "fp32"}}).precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        ServingSettings.from_yaml({"handler": {"precision": "fp8"}})
