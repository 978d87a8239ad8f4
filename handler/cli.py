"""``python -m handler.cli INPUT_DIR OUTPUT_DIR``: restore a folder without a server.

Runs the handler's own pipeline (``handler.request`` checks, ``handler.pipeline`` prepare → restore
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
import yaml
from tqdm import tqdm

from deblur.blind.settings import BlindSettings
from deblur.files import IMAGE_SUFFIXES, list_images
from deblur.imageio import ImageError
from deblur.model import load_model
from deblur.restore import Network
from deblur.runtime import make_predictor, resolve_tile_batch
from deblur.settings import PRECISIONS, RESPONSE_FORMATS, ServingSettings, SettingsError
from handler.pipeline import encode, prepare, restore
from handler.request import Request, RequestError, check_tiling

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "default.pt"
OUTPUT_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


@dataclass
class Report:
    restored: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ServingSettings()
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
    parser.add_argument("--blind-config", type=Path, help="YAML overrides of deblur.blind.settings.BlindSettings")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return parser.parse_args(argv)


def output_path(source: Path, args: argparse.Namespace) -> Path:
    relative = source.relative_to(args.input_dir)
    return (args.output_dir / relative).with_suffix(OUTPUT_SUFFIXES[args.format])


def restore_file(
    source: Path, network: Network, settings: ServingSettings, args: argparse.Namespace, blind: BlindSettings
) -> bytes:
    """One file through the handler's pipeline; ImageError/RequestError for files it would refuse."""
    options = settings.options(self_ensemble=args.self_ensemble)
    job = prepare(Request(source.read_bytes(), None, options, args.format, json_response=False), settings)
    with torch.inference_mode():
        result = restore(job, network, blind)
    return encode(job, result).data


def restore_folder(
    files: list[Path], network: Network, settings: ServingSettings, args: argparse.Namespace, blind: BlindSettings
) -> Report:
    report = Report()
    for source in tqdm(files, desc="deblur", unit="image"):
        target = output_path(source, args)
        if target.exists() and not args.force:
            report.skipped.append((source, f"{target} exists (--force overwrites)"))
            continue
        try:
            data = restore_file(source, network, settings, args, blind)
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


def settings_from_args(args: argparse.Namespace) -> ServingSettings:
    """The options as an archive's settings; an overlap not given is the default, shrunk to tile size / 2."""
    overlap = min(ServingSettings.overlap, args.tile_size // 2) if args.overlap is None else args.overlap
    try:
        check_tiling(args.tile_size, overlap)
    except RequestError as exc:
        raise SystemExit(f"error: {str(exc).replace('field ', 'option ')}") from exc
    try:
        return ServingSettings(
            tile_size=args.tile_size,
            overlap=overlap,
            tile_batch=args.tile_batch,
            max_pixels=args.max_pixels,
            precision=args.precision,
            kernel_aware=args.kernel_aware,
        )
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        blind = BlindSettings.from_mapping(yaml.safe_load(args.blind_config.read_text()) if args.blind_config else {})
    except (SystemExit, SettingsError, OSError) as exc:
        print(str(exc) if isinstance(exc, SystemExit) else f"error: {exc}", file=sys.stderr)
        return 1
    if not args.checkpoint.is_file():
        print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
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
    predict = make_predictor(load_model(args.checkpoint, device), device, settings.precision)
    network = Network(predict, resolve_tile_batch(settings.tile_batch, device), device)
    report = restore_folder(files, network, settings, args, blind)
    print_report(report)
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
