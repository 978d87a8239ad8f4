"""python -m train.deconv_pairs: the served kernel-aware path turned into training pairs for a refiner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur.blind import KernelGate, blind_deconvolution
from deblur.imageio import to_model_range, to_uint8
from tests.conftest import discs_image, shaken_discs
from train.data import find_pairs
from train.deconv_pairs import main, make_pairs
from train.synth import BlurSettings, blur_image


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shaken photo the gate trusts, and a sharp one (noise only) it does not."""
    split = tmp_path_factory.mktemp("frames") / "train"
    sharp, blurred = shaken_discs(384, 15, seed=1)
    still = discs_image(384, seed=2)
    noisy = blur_image(still, np.ones((1, 1)), np.random.default_rng(2), BlurSettings())
    for name, pair in (("shaken", (sharp, blurred)), ("still", (still, noisy))):
        for kind, array in zip(("sharp", "blur"), pair, strict=True):
            (split / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(split / kind / f"{name}.png")
    return split


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_trusted_deconvolutions_become_pairs_with_their_sharp_partner(source: Path, tmp_path: Path) -> None:
    records = {r["name"]: r for r in make_pairs(source, tmp_path / "out")}
    [pair] = find_pairs(tmp_path / "out")  # the still photo is left out: its estimate is not trusted
    assert pair.blur.name == "shaken.bmp" and np.array_equal(read(pair.sharp), read(source / "sharp" / "shaken.png"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the worker: the FFTs' sums, and so the estimate, depend on the thread count
    try:
        served, _ = blind_deconvolution(to_model_range(read(source / "blur" / "shaken.png")))
    finally:
        torch.set_num_threads(threads)
    assert served is not None and np.array_equal(read(pair.blur), to_uint8(served))  # what a request gets
    shaken, still = records["shaken.png"], records["still.png"]
    assert shaken["kept"] and shaken["trusted"] and shaken["output_psnr"] > shaken["input_psnr"] + 2
    assert not still["kept"] and not still["trusted"] and "output_psnr" not in still
    logged = [json.loads(line) for line in (tmp_path / "out" / "kernels.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in logged) == ["shaken.png", "still.png"]


def test_keep_estimated_also_keeps_deconvolutions_the_overshoot_check_refused(source: Path, tmp_path: Path) -> None:
    strict = dataclasses.replace(KernelGate(), max_overshoot=0.0)  # refuses every deconvolution
    for keep in ("trusted", "estimated"):
        make_pairs(source, tmp_path / keep, keep, workers=2, gate=strict)
    assert not list((tmp_path / "trusted" / "blur").iterdir())
    assert [p.name for p in (tmp_path / "estimated" / "blur").iterdir()] == ["shaken.bmp"]


def test_command_line(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(source), str(tmp_path / "out"), "--workers", "2"])
    assert [p.name for p in (tmp_path / "out" / "blur").iterdir()] == ["shaken.bmp"]
    with pytest.raises(SystemExit):
        main([str(source), str(tmp_path / "x"), "--keep", "everything"])
    assert "invalid choice" in capsys.readouterr().err
