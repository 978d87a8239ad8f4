"""Inference cost of candidate architectures: `python -m bench.models [--repeats 5]`.

For each candidate (random weights: cost does not depend on them) prints parameters, ms per
512×512 tile on the served path (channels_last, precision and tiles per call as the handler picks
them) and the estimated model time for a 2048×2048 image with the handler's tile layout,
so architecture choices are made on quality gained per second of inference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deblur.model import ModelConfig, build_model, count_parameters
from deblur.runtime import make_predictor, resolve_tile_batch
from deblur.tiling import count_tiles

CANDIDATES: dict[str, ModelConfig] = {
    "DeblurUNet-16": ModelConfig(base_ch=16, residual=True),
    "DeblurUNet-16, 2 bottleneck blocks": ModelConfig(base_ch=16, residual=True, bottleneck_blocks=2),
    "DeblurUNet-16, 4 bottleneck blocks": ModelConfig(base_ch=16, residual=True, bottleneck_blocks=4),
    "DeblurUNet-24": ModelConfig(base_ch=24, residual=True),
    "DeblurUNet-32 (seed spec)": ModelConfig(base_ch=32, residual=True),
    "NAFNet-16 [1,1,1,4]/2/[1,1,1,1]": ModelConfig(
        arch="nafnet", base_ch=16, enc_blocks=(1, 1, 1, 4), middle_blocks=2, dec_blocks=(1, 1, 1, 1)
    ),
    "NAFNet-16 [1,1,2,8]/4/[1,1,1,1]": ModelConfig(
        arch="nafnet", base_ch=16, enc_blocks=(1, 1, 2, 8), middle_blocks=4, dec_blocks=(1, 1, 1, 1)
    ),
    "NAFNet-24 [1,1,1,4]/2/[1,1,1,1]": ModelConfig(
        arch="nafnet", base_ch=24, enc_blocks=(1, 1, 1, 4), middle_blocks=2, dec_blocks=(1, 1, 1, 1)
    ),
}


def ms_per_tile(config: ModelConfig, tile: int, batch: int, repeats: int, precision: str) -> float:
    model = build_model(config).eval()
    predict = make_predictor(model, "cpu", precision, channels_last=True)
    tiles = torch.rand(batch, 3, tile, tile) * 2 - 1
    predict(tiles)  # warm-up: oneDNN picks kernels on first use
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(tiles)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=0, help="tiles per call (0: as the handler, automatic)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args(argv)
    args.batch = resolve_tile_batch(args.batch, "cpu")
    tiles_2048 = count_tiles(2048, 2048, args.tile, 64)
    print(f"| model | params | ms per {args.tile}² tile | est. model s at 2048² ({tiles_2048} tiles) |")
    print("|---|---:|---:|---:|")
    for name, config in CANDIDATES.items():
        params = count_parameters(build_model(config))
        ms = ms_per_tile(config, args.tile, args.batch, args.repeats, args.precision)
        print(f"| {name} | {params / 1e6:.2f} M | {ms:.0f} | {ms * tiles_2048 / 1000:.2f} |", flush=True)


if __name__ == "__main__":
    main()
