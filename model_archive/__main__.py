"""``python -m model_archive --checkpoint PATH --version V``: write model_store/<name>_v<V>.mar.

``python -m model_archive export --checkpoint PATH --format torchscript|onnx``: write a portable export
(``model_archive.export``); ``--torchscript FILE`` packs such a TorchScript file instead of the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deblur.settings import PRECISIONS, ServingSettings, SettingsError
from model_archive.build import ArchiveError, ArchiveSpec, build_archive

# The archive's settings that have a flag of the same name (--tile-size → tile_size); the cost model's
# constants keep their defaults
SETTINGS_FLAGS = (
    "tile_size",
    "overlap",
    "tile_batch",
    "max_pixels",
    "ensemble_max_pixels",
    "precision",
    "kernel_aware",
    "compute_budget_s",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ServingSettings()
    parser = argparse.ArgumentParser(prog="python -m model_archive", description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint written by training")
    parser.add_argument("--version", required=True, help="model version, e.g. 1.0")
    parser.add_argument(
        "--torchscript",
        type=Path,
        help="serve this TorchScript export of the checkpoint (`python -m model_archive export`) in its place",
    )
    parser.add_argument("--model-name", default="deblur")
    parser.add_argument("--export-path", type=Path, default=ArchiveSpec.export_path, help="the model store")
    parser.add_argument("--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument("--response-timeout", type=int, default=ArchiveSpec.response_timeout, help="seconds")
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size)
    parser.add_argument("--overlap", type=int, default=defaults.overlap)
    parser.add_argument("--tile-batch", type=int, default=defaults.tile_batch, help="tiles per call (0: automatic)")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest accepted width*height")
    parser.add_argument(
        "--ensemble-max-pixels",
        type=int,
        default=defaults.ensemble_max_pixels,
        help="largest width*height accepted with self_ensemble",
    )
    parser.add_argument(
        "--compute-budget-s",
        type=float,
        default=defaults.compute_budget_s,
        help="largest estimated compute of one request, in seconds of the reference 2-core CPU",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="serving arithmetic: auto picks bf16 on CPUs with native bf16, fp16 on CUDA",
    )
    parser.add_argument(
        "--kernel-aware", action="store_true",
        help="requests default to kernel_aware: a trusted blind deconvolution of the camera shake replaces the "
        "network (uniform shake; the shipped model's archive sets it); a request's kernel_aware field overrides it",
    )  # fmt: skip
    return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> ArchiveSpec:
    return ArchiveSpec(
        checkpoint=args.checkpoint,
        version=args.version,
        torchscript=args.torchscript,
        model_name=args.model_name,
        export_path=args.export_path,
        force=args.force,
        response_timeout=args.response_timeout,
        handler=ServingSettings(**{name: getattr(args, name) for name in SETTINGS_FLAGS}),
    )


def export(argv: list[str]) -> int:
    from model_archive.export import main as export_main  # torch is imported for exports only

    return export_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export(argv[1:])
    try:
        path = build_archive(spec_from_args(parse_args(argv)))
    except (ArchiveError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
