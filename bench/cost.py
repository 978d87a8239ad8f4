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

import torch

from deblur.blind.deconvolve import deconvolve_linear, to_linear
from deblur.blind.estimate import estimate_kernel
from deblur.blind.settings import BlindSettings
from deblur.model import load_model
from deblur.restore import Network, plan_restoration, restore_image
from deblur.runtime import make_predictor
from deblur.settings import RestoreOptions, ServingSettings

TILES = ((32, 32), (128, 128), (256, 256), (512, 512), (16, 512))
CROPS = (512, 1024)
REQUESTS = (
    (1, 200_000, RestoreOptions()),
    (2048, 2048, RestoreOptions(tile_size=128, overlap=64)),
    (1024, 1024, RestoreOptions(tile_size=128, overlap=64, self_ensemble=True)),
)


def best_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: oneDNN picks its kernels on first use
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


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
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = measure(args.checkpoint, args.repeats)
    for name, seconds in rows.items():
        print(f"{name}: {seconds:.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
