"""Training pairs for a refinement network: blind-deconvolve the blurred side of a paired folder.

    python -m train.deconv_pairs SRC_SPLIT OUT_SPLIT [--keep trusted|estimated] [--workers 2]

Each blurred image of ``SRC_SPLIT`` (``blur/`` + ``sharp/``, as ``train.synth`` writes) goes through
the served kernel-aware path (``deblur.blind``: estimate, gate, sparse-prior deconvolution), and the
result is written as ``OUT_SPLIT/blur/<same name>.bmp`` next to a link to its sharp partner, so
``python -m train`` can learn what the deconvolution leaves behind (ringing, residual blur, noise).
``--keep trusted`` (default) writes only what the gate lets through, the inputs a refiner sees when
serving; ``estimated`` also keeps the deconvolutions the overshoot check turned away. Every image's
estimate and PSNR before/after go to ``OUT_SPLIT/kernels.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblur.blind import (
    EstimatorSettings,
    KernelGate,
    can_estimate,
    deconvolve_whole,
    estimate_and_judge,
    from_linear,
)
from deblur.blind import to_linear as blind_to_linear
from deblur.imageio import to_model_range, to_uint8
from deblur.metrics import psnr, to_unit_range
from train.data import Pair, find_pairs

log = logging.getLogger(__name__)
KEEP_CHOICES = ("trusted", "estimated")


@dataclass(frozen=True)
class DeconvolvedPair:
    """What the kernel-aware path made of one blurred image (``image`` None when nothing was deconvolved)."""

    image: np.ndarray | None
    record: dict[str, object]


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def deconvolve_pair(pair: Pair, gate: KernelGate | None = None) -> DeconvolvedPair:
    """The served estimate and deconvolution of ``pair.blur`` (gate: the served one), scored against ``pair.sharp``."""
    gate = gate or KernelGate()
    blurred = to_model_range(read_rgb(pair.blur))
    sharp = to_unit_range(to_model_range(read_rgb(pair.sharp)))
    record: dict[str, object] = {"name": pair.blur.name, "input_psnr": psnr(to_unit_range(blurred), sharp)}
    settings = EstimatorSettings()
    if not can_estimate(blurred.shape, settings, gate):
        return DeconvolvedPair(None, record | {"estimated": False})
    linear = blind_to_linear(blurred)
    estimate, deconvolved = estimate_and_judge(linear, settings, gate)
    record |= {"estimated": True, "spread_px": estimate.spread, "peak": estimate.peak, "trusted": estimate.trusted}
    if deconvolved is None:  # not even spread and peak looked like a shake
        return DeconvolvedPair(None, record)
    # Untrusted estimates that looked like a shake are deconvolved too: the records show what the gate refused
    image = to_uint8(from_linear(deconvolve_whole(linear, estimate.kernel, deconvolved, settings)))
    output_psnr = psnr(to_unit_range(to_model_range(image)), sharp)
    return DeconvolvedPair(image, record | {"overshoot": estimate.overshoot, "output_psnr": output_psnr})


def process(job: tuple[Pair, Path, str, KernelGate | None]) -> dict[str, object]:
    """One pair: deconvolve, write what ``keep`` asks for, return its record (runs in a worker)."""
    pair, out_dir, keep, gate = job
    torch.set_num_threads(1)  # the workers share the cores
    result = deconvolve_pair(pair, gate)
    kept = result.image is not None and (keep == "estimated" or bool(result.record["trusted"]))
    if kept:
        name = pair.blur.with_suffix(".bmp").name
        Image.fromarray(result.image).save(out_dir / "blur" / name)
        sharp_link = out_dir / "sharp" / name
        sharp_link.unlink(missing_ok=True)
        sharp_link.symlink_to(pair.sharp.resolve())
    return result.record | {"kept": kept}


def make_pairs(
    src_split: Path, out_split: Path, keep: str = "trusted", workers: int = 1, gate: KernelGate | None = None
) -> list[dict[str, object]]:
    """Write ``out_split/{blur,sharp}`` and ``kernels.jsonl`` from ``src_split``; returns the records."""
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    pairs = find_pairs(src_split)
    for kind in ("blur", "sharp"):
        (out_split / kind).mkdir(parents=True, exist_ok=True)
    jobs = [(pair, out_split, keep, gate) for pair in pairs]
    records = []
    with (out_split / "kernels.jsonl").open("w") as sink, ProcessPoolExecutor(max(1, workers)) as pool:
        for record in pool.map(process, jobs):
            records.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()  # a long run can be watched, and what was done survives an interruption
    kept = [r for r in records if r["kept"]]
    log.info("kept %d of %d deconvolutions under %s", len(kept), len(records), out_split)
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.deconv_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("src_split", type=Path, help="paired folder: blur/ and sharp/")
    parser.add_argument("out_split", type=Path, help="where blur/ (deconvolved), sharp/ and kernels.jsonl go")
    parser.add_argument("--keep", choices=KEEP_CHOICES, default="trusted")
    parser.add_argument("--workers", type=int, default=1, help="images processed in parallel (one thread each)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    make_pairs(args.src_split, args.out_split, args.keep, args.workers)


if __name__ == "__main__":
    main()
