"""The committed default model: it loads, is what its record says, and deblurs a photo it never saw."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur.imageio import to_model_range, to_uint8
from deblur.metrics import psnr, to_unit_range
from deblur.model import ModelConfig, count_parameters, load_model, read_checkpoint
from deblur.runtime import make_predictor
from deblur.tiling import restore_tiled
from train.synth import BlurSettings, blur_image, rasterise_kernel, shake_trajectory

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "default.pt"
RECORD = ROOT / "checkpoints" / "default.json"
# A 192×160 crop of a held-out photo (lomiri-wallpapers-16.04 "picosdeeuropa" by Aitzol Berasategi,
# CC BY-SA), at the scale of the held-out 1280×720 frames; no photo of it was trained on.
HELD_OUT_CROP = ROOT / "tests" / "data" / "heldout_mountain.png"
# Measured +0.39 / +0.41 dB for the shipped model at extents 13 / 15; the previous default scored -0.56 / -0.14.
MIN_GAIN_DB = 0.2


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def test_shipped_checkpoint_is_the_recorded_one(record: dict) -> None:
    assert CHECKPOINT.stat().st_size <= 20 * 1024 * 1024
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() == record["sha256"]
    payload = read_checkpoint(CHECKPOINT)
    assert ModelConfig.from_dict(payload["model_config"]) == ModelConfig.from_dict(record["model_config"])
    model = load_model(CHECKPOINT)
    assert count_parameters(model) == record["parameters"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 storage is restored to fp32


@pytest.mark.parametrize("extent", [13, 15])
def test_shipped_model_deblurs_a_held_out_photo(extent: int) -> None:
    sharp = np.asarray(Image.open(HELD_OUT_CROP).convert("RGB"))
    rng = np.random.default_rng(extent)
    kernel = rasterise_kernel(shake_trajectory(rng), extent)
    blurred = blur_image(sharp, kernel, rng, BlurSettings())
    predict = make_predictor(load_model(CHECKPOINT), "cpu", "auto")
    restored = to_uint8(restore_tiled(predict, to_model_range(blurred), tile=512, overlap=64))
    scores = [
        psnr(to_unit_range(to_model_range(image)), to_unit_range(to_model_range(sharp)))
        for image in (blurred, restored)
    ]
    gain = scores[1] - scores[0]
    assert gain > MIN_GAIN_DB, f"the shipped model gained {gain:+.2f} dB on a {extent}-px shake"
