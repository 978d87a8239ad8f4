"""``python -m serve start|stop|status|predict``: operate the local TorchServe from the repo.

Every failure prints one readable message (no traceback) and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serve import server
from serve.client import MODEL_NAME, BackendError, TorchServeClient


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
    commands.add_parser("status", parents=[common], help="health, models and workers")

    predict = commands.add_parser("predict", parents=[common], help="deblur one image file")
    predict.add_argument("image", type=Path)
    predict.add_argument("-o", "--output", type=Path, help="default: <image>_deblurred.png beside the input")
    predict.add_argument("--version", help="model version (default: the model's default version)")
    predict.add_argument("--model", default=MODEL_NAME)
    predict.add_argument("--timeout", type=float, default=900.0, help="seconds; a 4096² image takes minutes on CPU")
    return parser


def cmd_start(args: argparse.Namespace) -> int:
    client = server.start(args.model_store, args.config, args.run_dir, args.timeout)
    print(f"TorchServe is ready: inference {client.inference_url}, management {client.management_url}")
    print(f"keys in {client.key_file}, logs in {args.run_dir / 'logs'}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(server.stop(args.run_dir))
    return 0


def worker_summary(version: dict) -> str:
    workers = version.get("workers", [])
    states = ", ".join(f"{w.get('status', '?')} (pid {w.get('pid', '?')})" for w in workers) or "no workers"
    return f"{version.get('modelName')} {version.get('modelVersion')}: {states}"


def cmd_status(args: argparse.Namespace) -> int:
    client = server.client_for(args.config, args.run_dir, timeout=10.0)
    health = client.ping()
    print(f"TorchServe at {client.inference_url}: {health}")
    for version in server.describe(client):
        print("  " + worker_summary(version))
    return 0 if health == "Healthy" else 1


def default_output(image: Path) -> Path:
    return image.with_name(f"{image.stem}_deblurred.png")


def cmd_predict(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        raise FileNotFoundError(f"image not found: {args.image}")
    client: TorchServeClient = server.client_for(args.config, args.run_dir, timeout=args.timeout)
    response = client.predict(args.image.read_bytes(), model=args.model, version=args.version)
    output = args.output or default_output(args.image)
    output.write_bytes(response.content)
    print(f"{output} ({len(response.content)} bytes, {response.headers.get('content-type', '?')})")
    return 0


COMMANDS = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "predict": cmd_predict}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (BackendError, server.ServerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
