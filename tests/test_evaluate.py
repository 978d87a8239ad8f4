"""python -m train.evaluate: per-image and mean scores through the handler's load_model + tiling path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

from deblur.imageio import to_model_range, to_uint8
from deblur.metrics import psnr, quantised, to_unit_range
from deblur.model import DeblurUNet, ModelConfig, load_model, save_checkpoint
from deblur.restore import Network, restore_image
from deblur.runtime import make_predictor
from deblur.settings import RestoreOptions
from train.data import find_pairs, split_off
from train.evaluate import main


def write_pairs(folder: Path, count: int) -> None:
    for i in range(count):
        sharp = textured_image(70, 50, seed=i)
        blurred = (sharp.astype(np.int16) + np.random.default_rng(i).integers(-20, 21, sharp.shape)).clip(0, 255)
        for kind, array in (("sharp", sharp), ("blur", blurred.astype(np.uint8))):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / kind / f"f{i}.png")


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(base_ch=8, residual=True)
    model = DeblurUNet(config)
    torch.nn.init.normal_(model.final.weight, std=0.02)  # a small, non-identity correction
    return save_checkpoint(tmp_path / "m.pt", model, config, epoch=1, metrics={})


def test_reports_input_output_and_gain_per_image_and_mean(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pairs(tmp_path / "test", 3)
    report = tmp_path / "scores.json"
    means = main(["--checkpoint", str(checkpoint), "--data", str(tmp_path / "test"), "--tile", "32",
                  "--overlap", "8", "--precision", "fp32", "--json", str(report),
                  "--save-dir", str(tmp_path / "restored")])  # fmt: skip

    document = json.loads(report.read_text())
    assert [image["name"] for image in document["images"]] == ["test_blur_f0", "test_blur_f1", "test_blur_f2"]
    assert document["mean"] == pytest.approx(means)
    assert (document["tile"], document["overlap"], document["precision"]) == (32, 8, "fp32")
    first = document["images"][0]
    # The same numbers as the serving path: load_model → restore_image → 8 bits, then the metric.
    blur = to_model_range(np.asarray(Image.open(tmp_path / "test" / "blur" / "f0.png")))
    sharp = to_unit_range(to_model_range(np.asarray(Image.open(tmp_path / "test" / "sharp" / "f0.png"))))
    network = Network(make_predictor(load_model(checkpoint), "cpu", "fp32"))
    restored, _ = restore_image(blur, RestoreOptions(32, 8), network)
    assert first["output_psnr"] == pytest.approx(psnr(quantised(restored), sharp))
    assert first["output_psnr"] != pytest.approx(psnr(to_unit_range(restored), sharp), abs=1e-6)  # rounded first
    saved = np.asarray(Image.open(tmp_path / "restored" / "test_blur_f0.png"))
    assert np.array_equal(saved, to_uint8(restored))  # the restored image as served (8-bit)
    assert first["input_psnr"] == pytest.approx(psnr(to_unit_range(blur), sharp))
    assert first["gain"] == pytest.approx(first["output_psnr"] - first["input_psnr"])
    assert means["gain"] == pytest.approx(np.mean([image["gain"] for image in document["images"]]))
    printed = capsys.readouterr().out
    assert "test_blur_f1" in printed and printed.strip().splitlines()[-1].startswith("mean")


def test_skip_fraction_scores_only_the_half_training_did_not_validate_on(tmp_path: Path, checkpoint: Path) -> None:
    write_pairs(tmp_path / "test", 4)
    report = tmp_path / "scores.json"
    main(["--checkpoint", str(checkpoint), "--data", str(tmp_path / "test"), "--skip-fraction", "0.5",
          "--seed", "7", "--json", str(report)])  # fmt: skip
    validated, held_out = split_off(find_pairs(tmp_path / "test"), 0.5, seed=7)
    names = [image["name"] for image in json.loads(report.read_text())["images"]]
    assert names == [f"test_blur_{pair.blur.stem}" for pair in held_out]
    assert not {f"test_blur_{pair.blur.stem}" for pair in validated} & set(names)
