"""Post-training static int8 (FX graph mode, x86 backend) of the shipped DeblurUNet against the served bf16 path:
`python -m bench.int8 [--checkpoint ...] [--calibration 20] [--repeats 5]`.

Calibrates on 256² crops of scikit-image's photos (blurred as ``train.synth``-style inputs are: a Gaussian stands
in for the shake), then times one 512² tile and scores PSNR against the sharp photo on demo/examples.
Results and the decision are in docs/int8.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image, ImageFilter
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from deblur.imageio import to_model_range
from deblur.metrics import psnr, to_unit_range
from deblur.model import DeblurUNet, load_model
from deblur.runtime import make_predictor
from deblur.tiling import restore_tiled

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field")


class Core(nn.Module):
    """DeblurUNet's forward for inputs already a multiple of 16 (as the tiler's aligned tiles are): no padding and
    no shape check, so FX can trace it."""

    def __init__(self, net: DeblurUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        e1 = n.enc1(x)
        e2 = n.enc2(n.pool(e1))
        e3 = n.enc3(n.pool(e2))
        e4 = n.enc4(n.pool(e3))
        d = n.deep(n.bottleneck(n.pool(e4)))
        for up, skip in ((n.up4, e4), (n.up3, e3), (n.up2, e2), (n.up1, e1)):
            d = up.conv(torch.cat([up.up(d), skip], dim=1))
        return n.final(d) + x


def calibration_tiles(count: int, size: int = 256) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    tiles = []
    for i in range(count):
        photo = Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
        photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 3))))
        y, x = (int(rng.integers(0, max(1, s - size))) for s in (photo.height, photo.width))
        tiles.append(to_model_range(np.asarray(photo.crop((x, y, x + size, y + size))))[None])
    return tiles


def quantize(model: DeblurUNet, tiles: list[torch.Tensor]) -> nn.Module:
    torch.backends.quantized.engine = "x86"
    core = Core(copy.deepcopy(model)).eval()
    prepared = prepare_fx(core, get_default_qconfig_mapping("x86"), (tiles[0],))
    with torch.inference_mode():
        for tile in tiles:
            prepared(tile)
    return convert_fx(prepared)


def ms_per_call(predict: object, tile: torch.Tensor, repeats: int) -> float:
    predict(tile)  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(tile)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    parser.add_argument("--calibration", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=Path, default=Path("demo/examples"))
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    bf16 = make_predictor(copy.deepcopy(model), "cpu", "auto")
    int8_model = quantize(model, calibration_tiles(args.calibration))

    def int8(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return int8_model(batch).float()

    tile = torch.rand(1, 3, 512, 512) * 2 - 1
    bf16_ms, int8_ms = (ms_per_call(p, tile, args.repeats) for p in (bf16, int8))
    print(f"512² tile: bf16 {bf16_ms:.0f} ms, int8 {int8_ms:.0f} ms")
    for blurred_path in sorted(args.examples.glob("*_blurred.jpg")):
        blurred = to_model_range(np.asarray(Image.open(blurred_path).convert("RGB")))
        sharp = to_model_range(np.asarray(Image.open(str(blurred_path).replace("_blurred", "_sharp")).convert("RGB")))
        h, w = (s // 16 * 16 for s in blurred.shape[1:])  # Core takes multiples of 16
        blurred, sharp = blurred[:, :h, :w], to_unit_range(sharp[:, :h, :w])
        scores = {
            name: psnr(to_unit_range(restore_tiled(p, blurred, 512, 64, 1).clamp(-1, 1)), sharp)
            for name, p in (("bf16", bf16), ("int8", int8))
        }
        scores["input"] = psnr(to_unit_range(blurred), sharp)
        line = ", ".join(f"{k} {v:.3f} dB" for k, v in scores.items())
        print(f"{blurred_path.name} ({w}×{h}): {line}; int8 − bf16 {scores['int8'] - scores['bf16']:+.3f} dB")


if __name__ == "__main__":
    main()
