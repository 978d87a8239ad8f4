"""Speed and memory benchmark: `python -m bench [--checkpoint ...] [--sizes 512x512,1280x720,...]`.

Measured in one run (this machine is noisy, so the ratios are the headline, absolute times are
for this machine only), median of ``--repeats``:
- in-process variants on one image size: the seeds' reference loop and each lever added in turn;
- per image size: end-to-end over REST through a real TorchServe with the given .mar, pure
  model compute on exactly the handler's tiles (same batches, no I/O), the seeds' loop, the
  worker's peak RSS, and throughput at concurrency 1 and 4.
Prints a markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench import reference
from deblur.blind.decide import support_for
from deblur.blind.deconvolve import deconvolve_linear, to_linear
from deblur.blind.estimate import estimate_kernel
from deblur.blind.fourier import centre_crop
from deblur.blind.settings import BlindSettings
from deblur.imageio import decode_image, encode_array, to_array, to_model_range
from deblur.metrics import psnr, to_unit_range
from deblur.model import load_model
from deblur.restore import Network, plan_restoration, restore_image
from deblur.runtime import make_predictor, resolve_precision, resolve_tile_batch
from deblur.settings import RestoreOptions, ServingSettings
from deblur.tiling import count_tiles, restore_tiled
from model_archive.build import ArchiveSpec, build_archive
from serve.private import PrivateServer

DEFAULT_SIZES = "512x512,1280x720,2048x2048,4096x4096"


@dataclass
class Timer:
    """Accumulates time spent inside a wrapped predictor: the pure model compute."""

    seconds: float = 0.0
    calls: int = 0

    def wrap(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def timed(batch: torch.Tensor) -> torch.Tensor:
            started = time.perf_counter()
            out = predict(batch)
            self.seconds += time.perf_counter() - started
            self.calls += 1
            return out

        return timed


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def test_image(width: int, height: int) -> torch.Tensor:
    """A deterministic photo-like (3, H, W) image in [-1, 1] (content does not change the timing)."""
    rng = np.random.default_rng(width * 7919 + height)
    small = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return to_model_range(np.asarray(image))


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def in_process_variants(model: torch.nn.Module, image: torch.Tensor, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The seeds' loop, then each lever added in turn, on one image."""
    rows = []
    seed_seconds = median_seconds(lambda: reference.run_inference(image[None], model, args.tile, args.overlap), 1)
    seed_tiles = len(reference.tile_tensor(image[None], args.tile, args.overlap)[0])
    rows.append({"variant": "seeds' loop (fixed stride, 1 tile/call, fp32)", "tiles": seed_tiles, "s": seed_seconds})
    steps = [
        ("evenly spaced full tiles, 1 tile/call, fp32", dict(precision="fp32", channels_last=False, batch=1, align=0)),
        ("+ tiles shrunk to fit the image", dict(precision="fp32", channels_last=False, batch=1, align=16)),
        ("+ channels_last", dict(precision="fp32", channels_last=True, batch=1, align=16)),
        ("+ bf16 autocast (auto) = served path on CPU", dict(precision="auto", channels_last=True, batch=1, align=16)),
        ("served path, batches of 2 tiles", dict(precision="auto", channels_last=True, batch=2, align=16)),
        ("served path, batches of 4 tiles", dict(precision="auto", channels_last=True, batch=4, align=16)),
        ("fp32, batches of 4 tiles", dict(precision="fp32", channels_last=True, batch=4, align=16)),
    ]
    for name, options in steps:
        predict = make_predictor(model, "cpu", options["precision"], options["channels_last"])
        predict(image[None, :, :64, :64])  # warm-up: oneDNN picks kernels on first use
        seconds = median_seconds(
            lambda p=predict, b=options["batch"], a=options["align"]: restore_tiled(
                p, image, args.tile, args.overlap, b, align=a
            ),
            args.repeats,
        )
        tiles = count_tiles(image.shape[1], image.shape[2], args.tile, args.overlap)
        rows.append({"variant": name, "tiles": tiles, "s": seconds, "speedup_vs_seed": seed_seconds / seconds})
    return rows


def bf16_quality(model: torch.nn.Module, eval_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Mean PSNR of fp32 vs the auto (bf16) path on ``eval_dir/{blur,sharp}`` through the tiler."""
    fp32 = make_predictor(model, "cpu", "fp32", True)
    auto = make_predictor(model, "cpu", "auto", True)
    scores: dict[str, list[float]] = {"fp32": [], "auto": []}
    for blur_path in sorted((eval_dir / "blur").glob("*.png"))[: args.eval_images]:
        blur = to_model_range(np.asarray(Image.open(blur_path).convert("RGB")))
        sharp = to_unit_range(
            to_model_range(np.asarray(Image.open(eval_dir / "sharp" / blur_path.name).convert("RGB")))
        )
        for name, predict in (("fp32", fp32), ("auto", auto)):
            restored, _ = restore_image(blur, RestoreOptions(args.tile, args.overlap), Network(predict, args.batch))
            scores[name].append(psnr(to_unit_range(restored), sharp))
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    return {"images": len(scores["fp32"]), "psnr_fp32": means["fp32"], "psnr_auto": means["auto"],
            "drop_db": means["fp32"] - means["auto"]}  # fmt: skip


def stage_rows(model: torch.nn.Module, image: torch.Tensor, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Where a served request's time goes, in-process (no HTTP): the handler's steps one by one.

    Also times Pillow's PNG encoder (level 1) next to the handler's own writer, the lever it replaced.
    """
    body = png_of(image)
    predict = make_predictor(model, "cpu", args.precision, True)
    timer = Timer()
    decoded = decode_image(body, max_pixels=image.shape[1] * image.shape[2])
    restore_tiled(predict, decoded.pixels[:, :64, :64], args.tile, args.overlap, args.batch)  # warm-up

    def restore() -> torch.Tensor:
        with torch.inference_mode():  # as the handler runs it
            options, network = RestoreOptions(args.tile, args.overlap), Network(timer.wrap(predict), args.batch)
            return restore_image(decoded.pixels, options, network)[0]

    restored = restore()
    timer.seconds = 0.0
    restore_s = median_seconds(restore, 1)
    array = to_array(restored, decoded)
    box = (slice(0, min(image.shape[1], BlindSettings.crop)), slice(0, min(image.shape[2], BlindSettings.crop)))
    blind = support_for(box, BlindSettings())
    linear = to_linear(decoded.pixels, blind.gamma)
    kernel, crop = estimate_kernel(linear, blind), centre_crop(linear, blind.crop)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("decode PNG → [-1, 1] tensor", lambda: decode_image(body, max_pixels=image.shape[1] * image.shape[2])),
        ("output → uint8 array", lambda: to_array(restored, decoded)),
        ("encode PNG (handler's writer)", lambda: encode_array(array, "png")),
        ("encode PNG (Pillow, level 1; replaced)", lambda: png_of(restored)),
        # kernel_aware: every request pays the estimate, one that looks like a shake the judging deconvolution
        # of the crop, and a trusted one the whole image's deconvolution instead of model and tiling
        (f"kernel_aware: one kernel estimate (≤ {blind.crop}² crop)", lambda: estimate_kernel(crop, blind)),
        (
            "kernel_aware: explain it (deconvolve the crop)",
            lambda: deconvolve_linear(crop, kernel, blind),
        ),
        ("kernel_aware: deconvolve the image", lambda: deconvolve_linear(linear, kernel, blind)),
    ]
    rows = [{"stage": "model (tiles, batches)", "s": timer.seconds},
            {"stage": "tiling: cut, feather, blend", "s": restore_s - timer.seconds}]  # fmt: skip
    rows += [{"stage": name, "s": median_seconds(run, args.repeats)} for name, run in steps]
    for row in rows:
        row["share_of_model"] = row["s"] / timer.seconds
    return rows


def size_rows(model: torch.nn.Module, args: argparse.Namespace, rest: RestBench | None) -> list[dict[str, Any]]:
    rows = []
    predict = make_predictor(model, "cpu", args.precision, True)
    for text in args.sizes.split(","):
        width, height = parse_size(text)
        image = test_image(width, height)
        timer = Timer()
        timed = timer.wrap(predict)
        restore_tiled(timed, image[:, :64, :64], args.tile, args.overlap, args.batch)  # warm-up
        computes = []
        for _ in range(args.repeats):
            timer.seconds = 0.0
            restore_image(image, RestoreOptions(args.tile, args.overlap), Network(timed, args.batch))
            computes.append(timer.seconds)
        row: dict[str, Any] = {
            "size": f"{width}x{height}",
            "tiles": plan_restoration(height, width, RestoreOptions(args.tile, args.overlap)).tiles,
            "compute_s": statistics.median(computes),
        }
        if width * height <= args.seed_max_pixels:
            row["seed_s"] = median_seconds(lambda im=image: reference.run_inference(im[None], model), 1)
            row["speedup"] = row["seed_s"] / row["compute_s"]
        if rest is not None:
            row |= rest.measure(image, args.repeats)
            row["overhead"] = row["e2e_s"] / row["compute_s"] - 1
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def png_of(image: torch.Tensor) -> bytes:
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class RestBench:
    """End-to-end timing and worker memory through a real TorchServe serving ``mar``."""

    def __init__(self, checkpoint: Path, work_dir: Path, max_pixels: int) -> None:
        # Its own archive of the checkpoint, with the pixel cap raised to the largest benchmarked image.
        settings = ServingSettings(max_pixels=max(max_pixels, ServingSettings.max_pixels))
        spec = ArchiveSpec(checkpoint, "1.0", export_path=work_dir / "model_store", force=True, handler=settings)
        mar = build_archive(spec)
        extra = {"load_models": mar.name, "max_request_size": "400000000", "max_response_size": "400000000"}
        self.server = PrivateServer(mar.parent, work_dir, extra_config=extra)
        self.client = self.server.__enter__()
        self.client.timeout = 900.0  # the largest images take minutes on 2 cores

    def close(self) -> None:
        self.server.__exit__(None, None, None)

    def worker_pid(self) -> int:
        versions = self.client.management("GET", "/models/deblur/all")
        return next(w["pid"] for v in versions for w in v.get("workers", []) if w.get("status") == "READY")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak resident set since the worker started
                return int(line.split()[1]) / 1024
        return float("nan")

    def measure(self, image: torch.Tensor, repeats: int) -> dict[str, Any]:
        body = png_of(image)
        self.client.predict(body)  # warm-up
        e2e = median_seconds(lambda: self.client.predict(body), repeats)
        return {"e2e_s": e2e, "worker_peak_rss_mb": self.peak_rss_mb(), "png_mb": len(body) / 1e6}

    def throughput(self, image: torch.Tensor, requests: int, concurrency: int) -> float:
        body = png_of(image)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: self.client.predict(body), range(requests)))
        return requests / (time.perf_counter() - started) * 60


def cell(row: dict[str, Any], key: str, spec: str, suffix: str = "") -> str:
    return format(row[key], spec) + suffix if key in row else "—"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in [header, align, *rows]]


def markdown(results: Results) -> str:
    m = results.machine
    lines = [
        f"Machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, {m['date']}; "
        f"model {m['model']}; precision {m['precision']} → {m['autocast']}",
        "",
    ]
    if results.variants:
        size = results.variants[0].get("size", "")
        rows = [
            [r["variant"], str(r["tiles"]), cell(r, "s", ".2f"), cell(r, "speedup_vs_seed", ".2f", "×")]
            for r in results.variants
        ]
        lines += [*table([f"variant (in-process, {size})", "tiles", "s", "speed-up vs seeds' loop"], rows), ""]
    if results.stages:
        rows = [[r["stage"], cell(r, "s", ".3f"), f"{r['share_of_model'] * 100:.1f} %"] for r in results.stages]
        lines += [*table([f"handler step (in-process, {results.stages[0]['size']})", "s", "of model time"], rows), ""]
    header = ["size", "tiles", "e2e REST s", "pure compute s", "overhead", "seeds' loop s", "speed-up", "peak RSS MB"]
    rows = [
        [
            r["size"],
            str(r["tiles"]),
            cell(r, "e2e_s", ".2f"),
            cell(r, "compute_s", ".2f"),
            f"{r['overhead'] * 100:.1f} %" if "overhead" in r else "—",
            cell(r, "seed_s", ".2f"),
            cell(r, "speedup", ".2f", "×"),
            cell(r, "worker_peak_rss_mb", ".0f"),
        ]
        for r in results.sizes
    ]
    lines += table(header, rows)
    if results.quality:
        q = results.quality
        lines += [
            "",
            f"bf16 vs fp32 on {q['images']} held-out images: PSNR {q['psnr_fp32']:.3f} → "
            f"{q['psnr_auto']:.3f} dB (drop {q['drop_db']:.3f} dB)",
        ]
    if "throughput" in m:
        rates = ", ".join(f"concurrency {c}: {v:.1f}" for c, v in m["throughput"].items())
        lines += ["", f"Throughput (1280×720, images/min): {rates}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated WxH list")
    parser.add_argument("--memory-sizes", default="7680x4320", help="sizes measured over REST for memory only")
    parser.add_argument("--variant-size", default="2048x2048", help="image size of the in-process lever table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=ServingSettings.tile_size, help="default: the archive's")
    parser.add_argument("--overlap", type=int, default=ServingSettings.overlap, help="default: the archive's")
    parser.add_argument("--batch", type=int, default=0, help="tiles per forward pass (0: as the handler, automatic)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed-max-pixels", type=int, default=4096 * 4096, help="skip the slow seeds' loop above")
    parser.add_argument("--eval-dir", type=Path, help="held-out {blur,sharp} pairs for the bf16 quality check")
    parser.add_argument("--eval-images", type=int, default=20)
    parser.add_argument("--no-rest", action="store_true", help="skip TorchServe (in-process rows only)")
    parser.add_argument("--throughput-requests", type=int, default=8)
    parser.add_argument("--work-dir", type=Path, default=Path("run/bench"))
    parser.add_argument("--json", type=Path, default=Path("run/bench/results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.batch = resolve_tile_batch(args.batch, "cpu")
    model = load_model(args.checkpoint, "cpu")
    autocast = resolve_precision(args.precision, torch.device("cpu"))
    results = Results(machine={
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, "date": str(date.today()),
        "model": f"{args.checkpoint} {model.config}", "precision": args.precision,
        "autocast": str(autocast or "fp32"),
    })  # fmt: skip
    if args.variant_size:
        image = test_image(*parse_size(args.variant_size))
        results.variants = [row | {"size": args.variant_size} for row in in_process_variants(model, image, args)]
        results.stages = [row | {"size": args.variant_size} for row in stage_rows(model, image, args)]
    if args.eval_dir:
        results.quality = bf16_quality(model, args.eval_dir, args)
    largest = max(w * h for w, h in map(parse_size, filter(None, f"{args.sizes},{args.memory_sizes}".split(","))))
    rest = None if args.no_rest else RestBench(args.checkpoint, args.work_dir, largest)
    try:
        results.sizes = size_rows(model, args, rest)
        if rest is not None:
            for text in filter(None, args.memory_sizes.split(",")):
                image = test_image(*parse_size(text))
                results.sizes.append({"size": text, "tiles": count_tiles(image.shape[1], image.shape[2])}
                                     | rest.measure(image, 1))  # fmt: skip
            frame = test_image(1280, 720)
            results.machine["throughput"] = {c: rest.throughput(frame, args.throughput_requests, c) for c in (1, 4)}
    finally:
        if rest is not None:
            rest.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results.__dict__, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
