"""What the compute budget's cost model is made of: `python -m bench.cost [--checkpoint ...] [--json FILE]`.

Times, on this machine, one network call per tile size, the kernel estimate and the deconvolution per crop
size, and a few whole requests through ``restore_image`` beside what ``Plan.cost_s`` estimates for them
(``docs/compute_budget.md`` has the reference run and the constants chosen from it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur.blind.deconvolve import deconvolve_linear, to_linear
from deblur.blind.estimate import estimate_kernel
from deblur.blind.settings import BlindSettings
from deblur.model import load_model
from deblur.restore import Network, plan_restoration, restore_image
from deblur.runtime import make_predictor
from deblur.settings import RestoreOptions, ServingSettings
from train.synth import BlurSettings, blur_image, rasterise_kernel, shake_trajectory

TILES = ((32, 32), (128, 128), (256, 256), (512, 512), (16, 512))
CROPS = (512, 1024)
REQUESTS = (
    (1, 200_000, RestoreOptions()),
    (2048, 2048, RestoreOptions(tile_size=128, overlap=64)),
    (1024, 1024, RestoreOptions(tile_size=128, overlap=64, self_ensemble=True)),
)
SHAKEN = ((720, 1280), (2048, 2048))  # kernel-aware requests on a shaken photo-like image, beside the network


def best_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: oneDNN picks its kernels on first use
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def shaken_scene(height: int, width: int) -> torch.Tensor:
    """A (3, H, W) image in [-1, 1]: flat discs with edges in every direction, shaken by a 21-px camera path in
    light, so the kernel-aware path runs its whole decision (content, not size, decides where it stops)."""
    rng = np.random.default_rng(height * 31 + width)
    y, x = np.mgrid[0:height, 0:width]
    image = np.full((height, width, 3), 0.5)
    for _ in range(int(height * width / 4000)):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 60)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0.05, 0.95, 3)
    sharp = (image * 255).round().astype(np.uint8)
    kernel = rasterise_kernel(shake_trajectory(np.random.default_rng(7)), 21)
    blurred = blur_image(sharp, kernel, np.random.default_rng(7), BlurSettings())
    return torch.from_numpy(blurred).permute(2, 0, 1).float() / 127.5 - 1


def shaken(side: int) -> torch.Tensor:
    """A (3, side, side) image in [-1, 1] with edges (the estimate's time depends little on content)."""
    generator = torch.Generator().manual_seed(side)
    small = torch.rand(3, side // 16, side // 16, generator=generator)
    return torch.nn.functional.interpolate(small[None], size=(side, side), mode="nearest")[0] * 2 - 1


@torch.inference_mode()
def measure(checkpoint: Path, repeats: int) -> dict[str, Any]:
    predict = make_predictor(load_model(checkpoint), "cpu", "auto")
    rows: dict[str, Any] = {}
    for height, width in TILES:
        batch = torch.rand(1, 3, height, width) * 2 - 1
        rows[f"network call {height}x{width} s"] = best_seconds(lambda b=batch: predict(b), repeats)
    blind = BlindSettings()
    for side in CROPS:
        linear = to_linear(shaken(side), blind.gamma)
        kernel = estimate_kernel(linear, blind)
        rows[f"kernel estimate {side}² s"] = best_seconds(lambda x=linear: estimate_kernel(x, blind), 1)
        rows[f"deconvolution {side}² s"] = best_seconds(lambda x=linear, k=kernel: deconvolve_linear(x, k, blind), 1)
    settings, network = ServingSettings(), Network(predict)
    for height, width, options in REQUESTS:
        image = torch.rand(3, height, width) * 2 - 1
        name = f"{width}x{height} tile {options.tile_size}" + (" ensemble" if options.self_ensemble else "")
        rows[f"{name} measured s"] = best_seconds(lambda x=image, o=options: restore_image(x, o, network), 1)
        rows[f"{name} estimated s"] = plan_restoration(height, width, options).cost_s(settings)
    for height, width in SHAKEN:
        image = shaken_scene(height, width)
        for aware in (False, True):
            options = RestoreOptions(kernel_aware=aware)
            name = f"shaken {width}x{height} " + ("kernel-aware" if aware else "network")
            rows[f"{name} measured s"] = best_seconds(lambda x=image, o=options: restore_image(x, o, network), 1)
            if aware:
                rows[f"{name} path"] = restore_image(image, options, network)[1].path
            rows[f"{name} estimated s"] = plan_restoration(height, width, options).cost_s(settings)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = measure(args.checkpoint, args.repeats)
    for name, value in rows.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
