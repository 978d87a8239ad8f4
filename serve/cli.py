"""``python -m serve COMMAND``: operate the local TorchServe and its model versions from the repo.

Commands: start, stop, status, register, set-default, rollback, unregister, scale, predict, score. Every
failure (TorchServe down, a refused call, a bad argument) prints one readable message, no
traceback, and exits with status 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from pathlib import Path

from deblur.files import list_images
from serve import models, server
from serve.client import MODEL_NAME, BackendError, TorchServeClient

SUFFIX_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=server.DEFAULT_CONFIG, help="TorchServe config.properties")
    common.add_argument(
        "--run-dir", type=Path, default=server.DEFAULT_RUN_DIR, help="key_file.json and logs/ live here"
    )
    parser = argparse.ArgumentParser(prog="python -m serve", description="Operate the local TorchServe.")
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("start", parents=[common], help="start in the background, wait until ready")
    start.add_argument("--model-store", type=Path, default=server.DEFAULT_STORE)
    start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a READY worker")
    commands.add_parser("stop", parents=[common], help="stop TorchServe (fine if it is not running)")
    commands.add_parser("status", parents=[common], help="health, models, versions, default and workers")

    register = commands.add_parser("register", parents=[common], help="register a .mar (copied into the store)")
    register.add_argument("archive", type=Path, help="a .mar built by `python -m model_archive`")
    register.add_argument("--model-store", type=Path, default=server.DEFAULT_STORE)
    register.add_argument("--workers", type=int, default=1)

    set_default = commands.add_parser("set-default", parents=[common], help="make a version the default")
    set_default.add_argument("model")
    set_default.add_argument("version")

    rollback = commands.add_parser("rollback", parents=[common], help="go back to the previous default")
    rollback.add_argument("model", nargs="?", default=MODEL_NAME)

    unregister = commands.add_parser("unregister", parents=[common], help="remove a version")
    unregister.add_argument("model")
    unregister.add_argument("version")
    unregister.add_argument("--force", action="store_true", help="even the default version")

    scale = commands.add_parser("scale", parents=[common], help="set the number of workers")
    scale.add_argument("model")
    scale.add_argument("--workers", type=int, required=True)
    scale.add_argument("--version", help="default: the default version")

    predict = commands.add_parser("predict", parents=[common], help="deblur one image file")
    predict.add_argument("image", type=Path)
    predict.add_argument(
        "-o", "--output", type=Path, help="default: <image>_deblurred.png; .jpg/.webp ask for that format"
    )
    predict.add_argument("--version", help="model version (default: the model's default version)")
    predict.add_argument("--model", default=MODEL_NAME)
    predict.add_argument("--timeout", type=float, default=900.0, help="seconds; a 4096² image takes minutes on CPU")

    score = commands.add_parser("score", parents=[common], help="PSNR/SSIM gain on paired images, via the server")
    score.add_argument("data", type=Path, help="a folder with blur/ and sharp/ holding same-named images")
    score.add_argument("--version", help="model version (default: the model's default version)")
    score.add_argument("--model", default=MODEL_NAME)
    score.add_argument("--json", type=Path, help="also write per-image and mean scores here")
    score.add_argument("--timeout", type=float, default=900.0)
    return parser


def cmd_start(args: argparse.Namespace) -> int:
    if server.server_pid() is not None:
        print("TorchServe is already running (`python -m serve stop` stops it); waiting for it to be ready")
    client = server.start(args.model_store, args.config, args.run_dir, args.timeout)
    print(f"TorchServe is ready: inference {client.inference_url}, management {client.management_url}")
    print(f"keys in {client.key_file}, logs in {args.run_dir / 'logs'}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(server.stop(args.run_dir))
    return 0


def management_client(args: argparse.Namespace) -> TorchServeClient:
    # Registering starts a worker synchronously: allow for a slow model load.
    return server.client_for(args.config, args.run_dir, timeout=300.0)


def cmd_status(args: argparse.Namespace) -> int:
    client = server.client_for(args.config, args.run_dir, timeout=10.0)
    health = client.ping()
    print(f"TorchServe at {client.inference_url}: {health}")
    for version in models.status(client):
        print("  " + version.describe())
    return 0 if health == "Healthy" else 1


def cmd_register(args: argparse.Namespace) -> int:
    print(models.register(management_client(args), args.archive, args.model_store, args.workers))
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    print(models.set_default(management_client(args), args.model, args.version, args.run_dir))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    print(models.rollback(management_client(args), args.model, args.run_dir))
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    print(models.unregister(management_client(args), args.model, args.version, args.force))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    print(models.scale(management_client(args), args.model, args.workers, args.version))
    return 0


def default_output(image: Path) -> Path:
    return image.with_name(f"{image.stem}_deblurred.png")


def cmd_predict(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    client: TorchServeClient = server.client_for(args.config, args.run_dir, timeout=args.timeout)
    output = args.output or default_output(args.image)
    accept = SUFFIX_TYPES.get(output.suffix.lower(), "image/png")
    response = client.predict(args.image.read_bytes(), model=args.model, version=args.version, accept=accept)
    output.write_bytes(response.content)
    print(f"{output} ({len(response.content)} bytes, {response.headers.get('content-type', '?')})")
    version = response.headers.get("X-Deblur-Version") or "unknown (an archive older than this client)"
    path = response.headers.get("X-Deblur-Path")
    print(f"answered by {args.model} {version}" + (f" ({path})" if path else ""), file=sys.stderr)
    return 0


def paired_images(data: Path) -> list[tuple[Path, Path]]:
    """(blurred, sharp) files of ``data/blur`` and ``data/sharp`` matched by relative path."""
    blur_dir, sharp_dir = data / "blur", data / "sharp"
    pairs = [(path, sharp_dir / path.relative_to(blur_dir)) for path in list_images(blur_dir)]
    missing = [str(sharp) for _, sharp in pairs if not sharp.is_file()]
    if not pairs or missing:
        raise FileNotFoundError(f"no blur/ images under {data}" if not pairs else f"no sharp partner: {missing[:5]}")
    return pairs


def cmd_score(args: argparse.Namespace) -> int:
    """Each pair through the server's JSON API with its ground truth; the server computes the metrics."""
    client: TorchServeClient = server.client_for(args.config, args.run_dir, timeout=args.timeout)
    rows = []
    for blurred, sharp in paired_images(args.data):
        payload = {"image": b64(blurred), "ground_truth": b64(sharp)}
        answer = client.predict_json(payload, model=args.model, version=args.version)
        # The server reports identical images' infinite PSNR as null.
        metrics = {key: math.inf if value is None else value for key, value in answer["metrics"].items()}
        name, gain = str(blurred.relative_to(args.data / "blur")), metrics["psnr"] - metrics["input_psnr"]
        kernel = answer.get("kernel")  # the kernel-aware report, when the archive or request asked for it
        rows.append({"name": name, **metrics, "gain": gain, "version": answer["model"]["version"], "kernel": kernel})
        how = "" if kernel is None else (", deconvolved" if kernel["used"] else ", network")
        print(f"{name}: {metrics['input_psnr']:.2f} → {metrics['psnr']:.2f} dB ({gain:+.2f}{how})")
    keys = ("input_psnr", "input_ssim", "psnr", "ssim", "gain")
    mean = {key: sum(row[key] for row in rows) / len(rows) for key in keys}
    print(f"mean of {len(rows)}: PSNR {mean['input_psnr']:.2f} → {mean['psnr']:.2f} dB ({mean['gain']:+.2f}), "
          f"SSIM {mean['input_ssim']:.4f} → {mean['ssim']:.4f}, model version {rows[0]['version']}")  # fmt: skip
    if any(row["kernel"] is not None for row in rows):
        deconvolved = sum(bool(row["kernel"] and row["kernel"]["used"]) for row in rows)
        print(f"deconvolved with the estimated kernel: {deconvolved} of {len(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"mean": mean, "images": rows}, indent=2))
    return 0


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


COMMANDS = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "register": cmd_register,
    "set-default": cmd_set_default,
    "rollback": cmd_rollback,
    "unregister": cmd_unregister,
    "scale": cmd_scale,
    "predict": cmd_predict,
    "score": cmd_score,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (BackendError, server.ServerError, models.ModelsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
