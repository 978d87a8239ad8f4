"""The quality matrix: the served restoration, in-process, over paired sets, scored the field's way.

    python -m bench.quality --levin /work/shared/benchmarks/levin2009 --anchors --sets data/quality/report/* \
        [--checkpoint checkpoints/default.pt] [--max-images N] [--json FILE] [--blind-config FILE.yaml] \
        [--no-kernel-aware]

Every pair of every set (a folder with ``blur/`` and ``sharp/``, matched by file stem; a folder of such
folders is expanded) goes through ``deblur.restore.restore_image``, the one restore function the server
runs, with ``RestoreOptions(kernel_aware=True)`` unless ``--no-kernel-aware``.

Scoring (the convention of the Levin et al. 2009 benchmark, ``levin2009/README.md``): values in [0, 1], the
output rounded to 8 bits as an 8-bit answer holds it; PSNR on the central crop without a 20-px border (10 % of
the shorter side for images under 200 px), at the best integer shift of the image within ±6 px; SSIM
(``deblur.metrics.ssim``) at that shift and crop. The blurred input is scored by the same rule. Gray pairs
(a gray ground truth) are fed as RGB and scored on the mean of the output's channels.

``--anchors`` puts published kernel estimates beside the product, for sets that ship them (Levin's
``estimates/<method>/``): each estimate (PNG scaled to its maximum: divided by its sum, zero-padded to an odd
square) is deconvolved with the product's own non-blind step (``deblur.blind.deconvolve.deconvolve_linear``,
in stored values, γ 1, as Levin's images were blurred) and scored identically, so that the comparison is of
kernel estimation (Lai et al. 2016). Levin's folder holds no ground-truth kernels, so there is no true-kernel row.

A. Levin, Y. Weiss, F. Durand, W. T. Freeman, "Understanding and evaluating blind deconvolution algorithms",
CVPR 2009.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from bench.kernels import odd_square
from deblur.blind.deconvolve import deconvolve_linear, from_linear, to_linear
from deblur.blind.settings import BlindSettings
from deblur.files import list_images
from deblur.metrics import quantised, ssim
from deblur.restore import Network, restore_image
from deblur.settings import RestoreOptions

MAX_SHIFT = 6
BORDER = 20
SMALL = 200  # images with a shorter side below this lose 10 % of it as border instead
WORSE_DB = 0.3
LEVIN_NAME = re.compile(r"im_(\d+)_ker_(\d+)$")


@dataclass(frozen=True)
class Pair:
    name: str
    blur: Path
    sharp: Path


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float
    shift: tuple[int, int]  # (dy, dx) of the scored image relative to the truth


# --- loading -------------------------------------------------------------------------------------------------


def find_pairs(folder: Path) -> list[Pair]:
    """The (blur, sharp) pairs of a set folder, matched by file stem, sorted by name."""
    sharp = {p.stem: p for p in list_images(folder / "sharp")}
    pairs = [Pair(p.stem, p, sharp[p.stem]) for p in list_images(folder / "blur") if p.stem in sharp]
    return sorted(pairs, key=lambda pair: pair.name)


def levin_pairs(root: Path) -> list[Pair]:
    """Levin et al. 2009's 32 pairs: ``blur/im_I_ker_K.png`` with ``sharp/im_I.png``."""
    pairs = []
    for path in list_images(root / "blur"):
        match = LEVIN_NAME.match(path.stem)
        if match and (root / "sharp" / f"im_{match[1]}.png").exists():
            pairs.append(Pair(path.stem, path, root / "sharp" / f"im_{match[1]}.png"))
    return sorted(pairs, key=lambda pair: pair.name)


def levin_estimate(root: Path, method: str, name: str) -> np.ndarray | None:
    """The published kernel of ``method`` for Levin image ``name`` (unit sum, odd square), or None if missing."""
    match = LEVIN_NAME.match(name)
    found = sorted((root / "estimates" / method).glob(f"k_{match[2]}_im_{match[1]}_*.png")) if match else []
    if not found:
        return None
    with Image.open(found[0]) as image:
        kernel = np.asarray(image.convert("L"), dtype=np.float64)
    return odd_square(kernel / kernel.sum())


def set_folders(paths: list[Path]) -> list[Path]:
    """``paths`` with each folder of set folders expanded into its sets (those with blur/ and sharp/)."""
    found = []
    for path in paths:
        if (path / "blur").is_dir() and (path / "sharp").is_dir():
            found.append(path)
        elif path.is_dir():
            found += [p for p in sorted(path.iterdir()) if (p / "blur").is_dir() and (p / "sharp").is_dir()]
    return found


def load_unit(path: Path) -> tuple[torch.Tensor, bool]:
    """((C, H, W) float in [0, 1], whether gray) of an image file; gray stays one channel."""
    with Image.open(path) as image:
        gray = image.mode in ("L", "I;16", "I", "LA")
        array = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float32) / 255
    tensor = torch.from_numpy(array[None] if gray else array.transpose(2, 0, 1).copy())
    return tensor, gray


def model_pixels(unit: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [0, 1] → (3, H, W) in [-1, 1] (gray replicated)."""
    return unit.expand(3, -1, -1).mul(2).sub(1).contiguous()


# --- scoring -------------------------------------------------------------------------------------------------


def border(height: int, width: int) -> int:
    """Pixels left out on each side: 20, or 10 % of the shorter side under 200 px (never under the shift)."""
    side = min(height, width)
    return BORDER if side >= SMALL else max(MAX_SHIFT, round(0.1 * side))


def score(image: torch.Tensor, truth: torch.Tensor, max_shift: int = MAX_SHIFT) -> Score:
    """PSNR/SSIM of (C, H, W) [0, 1] ``image`` against ``truth`` on the central crop, at the best integer shift
    within ±``max_shift`` px (``image`` is read at crop + shift)."""
    if image.shape[0] != truth.shape[0]:  # a gray truth: score the mean of the channels
        image = image.mean(0, keepdim=True)
    height, width = truth.shape[-2:]
    b = border(height, width)
    reference = truth[:, b : height - b, b : width - b].float()
    best, best_shift = math.inf, (0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            window = image[:, b + dy : height - b + dy, b + dx : width - b + dx].float()
            mse = float((window - reference).pow(2).mean(dtype=torch.float64))
            if mse < best:
                best, best_shift = mse, (dy, dx)
    dy, dx = best_shift
    window = image[:, b + dy : height - b + dy, b + dx : width - b + dx]
    value = math.inf if best == 0 else -10 * math.log10(best)
    return Score(value, ssim(window.float(), reference.float()), best_shift)


# --- running -------------------------------------------------------------------------------------------------


def restore_pair(pair: Pair, set_name: str, network: Network, options: RestoreOptions, blind: BlindSettings) -> dict:
    """One pair through ``restore_image``, scored: the JSON row."""
    blurred, _ = load_unit(pair.blur)
    truth, _ = load_unit(pair.sharp)
    start = time.perf_counter()
    restored, report = restore_image(model_pixels(blurred), options, network, blind)
    seconds = time.perf_counter() - start
    before, after = score(blurred, truth), score(quantised(restored), truth)
    return {
        "name": pair.name,
        "set": set_name,
        "size": list(truth.shape[-2:][::-1]),
        "input_psnr": round(before.psnr, 3),
        "input_ssim": round(before.ssim, 4),
        "psnr": round(after.psnr, 3),
        "ssim": round(after.ssim, 4),
        "gain": round(after.psnr - before.psnr, 3),
        "shift": list(after.shift),
        "path": report.path,
        "kernel": None if report.kernel is None else report.kernel.report(),
        "seconds": round(seconds, 3),
    }


def summarise(name: str, rows: list[dict]) -> dict:
    worst = min(rows, key=lambda row: row["gain"])
    mean = statistics.fmean
    return {
        "set": name,
        "images": len(rows),
        "input_psnr": round(mean(r["input_psnr"] for r in rows), 3),
        "psnr": round(mean(r["psnr"] for r in rows), 3),
        "input_ssim": round(mean(r["input_ssim"] for r in rows), 4),
        "ssim": round(mean(r["ssim"] for r in rows), 4),
        "gain": round(mean(r["gain"] for r in rows), 3),
        "worst_gain": worst["gain"],
        "worst_image": worst["name"],
        "worse": sum(r["gain"] < -WORSE_DB for r in rows),
        "deconvolution": sum(r["path"] == "deconvolution" for r in rows),
        "seconds_per_image": round(mean(r["seconds"] for r in rows), 2),
    }


def anchor_rows(root: Path, pairs: list[Pair], blind: BlindSettings) -> list[dict]:
    """Each published method's estimates deconvolved by the product's non-blind step (γ 1), scored: one row each."""
    settings = dataclasses.replace(blind, gamma=1.0)
    rows = []
    methods = (
        sorted(p.name for p in (root / "estimates").iterdir() if p.is_dir()) if (root / "estimates").is_dir() else []
    )
    for method in methods:
        scores = []
        for pair in pairs:
            kernel = levin_estimate(root, method, pair.name)
            if kernel is None:
                continue
            blurred, _ = load_unit(pair.blur)
            truth, _ = load_unit(pair.sharp)
            pixels = model_pixels(blurred)
            linear = to_linear(pixels, settings.gamma)
            restored = from_linear(deconvolve_linear(linear, torch.from_numpy(kernel), settings), settings.gamma)
            scores.append((pair.name, score(quantised(restored), truth), score(blurred, truth)))
        if scores:
            rows.append(
                {
                    "method": method,
                    "images": len(scores),
                    "names": [name for name, _, _ in scores],
                    "psnr": round(statistics.fmean(s.psnr for _, s, _ in scores), 3),
                    "ssim": round(statistics.fmean(s.ssim for _, s, _ in scores), 4),
                    "gain": round(statistics.fmean(s.psnr - b.psnr for _, s, b in scores), 3),
                    "worst_gain": round(min(s.psnr - b.psnr for _, s, b in scores), 3),
                }
            )
    return rows


# --- printing ------------------------------------------------------------------------------------------------

HEADER = (
    "| set | images | input PSNR | output PSNR | input SSIM | output SSIM | mean gain | worst gain (image) "
    f"| worse > {WORSE_DB} dB | deconvolution | s/image |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
)


def table_row(summary: dict) -> str:
    s = summary
    return (
        f"| {s['set']} | {s['images']} | {s['input_psnr']:.2f} | {s['psnr']:.2f} | {s['input_ssim']:.3f} | "
        f"{s['ssim']:.3f} | {s['gain']:+.2f} | {s['worst_gain']:+.2f} ({s['worst_image']}) | {s['worse']} | "
        f"{s['deconvolution']} | {s['seconds_per_image']:.1f} |"
    )


def anchor_table(product: dict, anchors: list[dict], rows: list[dict]) -> str:
    lines = [
        "| Levin 2009: kernel from | images | PSNR | SSIM | mean gain | worst gain | product on the same images |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| the product (served) | {product['images']} | {product['psnr']:.2f} | {product['ssim']:.3f} | "
        f"{product['gain']:+.2f} | {product['worst_gain']:+.2f} | |",
    ]
    by_name = {row["name"]: row for row in rows}
    for a in anchors:
        same = [by_name[name]["psnr"] for name in a["names"] if name in by_name]
        beside = f"{statistics.fmean(same):.2f}" if same else ""
        lines.append(
            f"| {a['method']} + product's TV step (γ 1) | {a['images']} | {a['psnr']:.2f} | {a['ssim']:.3f} | "
            f"{a['gain']:+.2f} | {a['worst_gain']:+.2f} | {beside} |"
        )
    return "\n".join(lines)


def load_network(checkpoint: Path) -> Network:
    from deblur.model import load_model
    from deblur.runtime import make_predictor

    return Network(make_predictor(load_model(checkpoint), "cpu", "auto"), tile_batch=1)


def main(argv: list[str] | None = None, network: Network | None = None) -> dict:
    """Run the matrix; returns what ``--json`` writes. ``network`` replaces the checkpoint's (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=Path, nargs="*", default=[], help="set folders (blur/, sharp/) or their parent")
    parser.add_argument("--levin", type=Path, default=None, help="the Levin et al. 2009 folder")
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    parser.add_argument("--anchors", action="store_true", help="score the published estimates shipped with Levin's set")
    parser.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="at most this many pairs per --sets set (sorted); Levin's 32 always run",
    )
    parser.add_argument("--json", type=Path, default=None, help="write per-image rows and per-set summaries here")
    parser.add_argument("--blind-config", type=Path, default=None, help="BlindSettings overrides (YAML)")
    parser.add_argument("--no-kernel-aware", action="store_true", help="the network alone")
    args = parser.parse_args(argv)

    blind = BlindSettings()
    if args.blind_config:
        blind = BlindSettings.from_mapping(yaml.safe_load(args.blind_config.read_text()) or {})
    options = RestoreOptions(kernel_aware=not args.no_kernel_aware)
    given = network is not None
    network = network or load_network(args.checkpoint)
    limit = args.max_images
    groups = [("levin2009", levin_pairs(args.levin))] if args.levin else []  # all 32: cheap, and the standard
    groups += [
        (folder.name, find_pairs(folder)[:limit] if limit else find_pairs(folder)) for folder in set_folders(args.sets)
    ]
    if not any(pairs for _, pairs in groups):
        parser.error("no pairs found: give --sets folders with blur/ and sharp/, or --levin")

    rows, summaries = [], []
    for name, pairs in groups:
        set_rows = []
        for pair in pairs:
            row = restore_pair(pair, name, network, options, blind)
            set_rows.append(row)
            print(
                f"{name}/{row['name']}: {row['input_psnr']:.2f} → {row['psnr']:.2f} dB ({row['path']}, "
                f"{row['seconds']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        if set_rows:
            rows += set_rows
            summaries.append(summarise(name, set_rows))
    overall = summarise("overall", rows)
    print(HEADER)
    for summary in [*summaries, overall]:
        print(table_row(summary))
    result = {
        "rows": rows,
        "sets": summaries,
        "overall": overall,
        "blind": dataclasses.asdict(blind),
        "options": dataclasses.asdict(options),
        "checkpoint": None if given else str(args.checkpoint),
    }
    if args.anchors and args.levin:
        levin_rows = [row for row in rows if row["set"] == "levin2009"]
        anchors = anchor_rows(args.levin, levin_pairs(args.levin), blind)
        product = next(s for s in summaries if s["set"] == "levin2009")
        print()
        print(anchor_table(product, anchors, levin_rows))
        result["anchors"] = anchors
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
