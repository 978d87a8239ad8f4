"""``python -m handler.cli INPUT_DIR OUTPUT_DIR``: restore a folder without a server.

Runs the handler's own pipeline (``handler.request`` limits, ``handler.pipeline`` decode → restore
→ encode), so a file comes out exactly as TorchServe would answer it. Images are found recursively
and written under OUTPUT_DIR with the same relative path (suffix of the output format). Unreadable
or unsupported files are skipped and listed at the end; the exit status is 1 if any was skipped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from deblur.files import IMAGE_SUFFIXES, list_images
from deblur.imageio import ImageError
from deblur.model import load_model
from deblur.runtime import PRECISIONS, Predictor, make_predictor, resolve_tile_batch
from handler.pipeline import decode_request, encode_restored, restore_request
from handler.request import RESPONSE_FORMATS, DeblurRequest, RequestError, RestoreOptions, ServingDefaults, check_tiling

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "default.pt"
OUTPUT_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


@dataclass
class Report:
    restored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ServingDefaults()
    parser = argparse.ArgumentParser(prog="python -m handler.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size)
    parser.add_argument(
        "--overlap", type=int, help=f"default: {defaults.overlap}, or tile size / 2 when that is smaller"
    )
    parser.add_argument("--tile-batch", type=int, default=defaults.tile_batch, help="tiles per call (0: automatic)")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels)
    parser.add_argument("--format", choices=RESPONSE_FORMATS, default="png")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision, help="auto: bf16/fp16 if native")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (8× slower)")
    parser.add_argument(
        "--kernel-aware", action="store_true",
        help="estimate each photo's camera shake and deconvolve it where the estimate is trusted (else the network)",
    )  # fmt: skip
    parser.add_argument(
        "--refiner", type=Path, help="with --kernel-aware: checkpoint of a network that refines each trusted "
        "deconvolution (as an archive built with --refiner)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return parser.parse_args(argv)


def output_path(source: Path, args: argparse.Namespace) -> Path:
    relative = source.relative_to(args.input_dir)
    return (args.output_dir / relative).with_suffix(OUTPUT_SUFFIXES[args.format])


def restore_file(source: Path, model: Predictor, args: argparse.Namespace, refiner: Predictor | None = None) -> bytes:
    """One file through the handler's pipeline; ImageError/RequestError for files it would refuse."""
    options = RestoreOptions(args.tile_size, args.overlap, args.self_ensemble, args.kernel_aware)
    request = DeblurRequest(source.read_bytes(), None, options, args.format, json_response=False)
    decoded = decode_request(request, args.max_pixels)
    with torch.inference_mode():
        restored = restore_request(decoded, model, args.tile_batch, refiner=refiner)
    return encode_restored(restored).data


def restore_folder(
    files: list[Path], model: Predictor, args: argparse.Namespace, refiner: Predictor | None = None
) -> Report:
    report = Report()
    for source in tqdm(files, desc="deblur", unit="image"):
        target = output_path(source, args)
        if target.exists() and not args.force:
            report.skipped.append((source, f"{target} exists (--force overwrites)"))
            continue
        try:
            data = restore_file(source, model, args, refiner)
        except (ImageError, RequestError, OSError) as exc:
            report.skipped.append((source, str(exc)))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        report.restored.append(target)
    return report


def print_report(report: Report) -> None:
    print(f"restored {len(report.restored)} image(s), skipped {len(report.skipped)}")
    for source, reason in report.skipped:
        print(f"  skipped {source}: {reason}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.overlap is None:  # as for a JSON request that sets only tile_size
        args.overlap = min(ServingDefaults.overlap, args.tile_size // 2)
    try:
        check_tiling(args.tile_size, args.overlap)
    except RequestError as exc:
        print(f"error: {str(exc).replace('field ', 'option ')}", file=sys.stderr)
        return 1
    for checkpoint in (args.checkpoint, args.refiner):
        if checkpoint is not None and not checkpoint.is_file():
            print(f"error: checkpoint not found: {checkpoint}", file=sys.stderr)
            return 1
    if not args.input_dir.is_dir():
        print(f"error: input folder not found: {args.input_dir}", file=sys.stderr)
        return 1
    if args.output_dir.resolve() == args.input_dir.resolve():
        print("error: OUTPUT_DIR must differ from INPUT_DIR", file=sys.stderr)
        return 1
    files = list_images(args.input_dir)
    if not files:
        print(f"error: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {args.input_dir}", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    predictor = make_predictor(load_model(args.checkpoint, device), device, args.precision)
    refiner = None if args.refiner is None else make_predictor(load_model(args.refiner, device), device, args.precision)
    args.tile_batch = resolve_tile_batch(args.tile_batch, device)
    report = restore_folder(files, predictor, args, refiner)
    print_report(report)
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
