"""``python -m demo``: serve the deblur page against the TorchServe named by DEBLUR_INFERENCE_URL etc."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from demo.app import MAX_FILE_SIZE, build_demo, launch_demo
from demo.feedback import FeedbackStore, default_db_path
from serve.client import TorchServeClient


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--host",
        default=os.environ.get("DEBLUR_DEMO_HOST", "127.0.0.1"),
        help="address to listen on (env DEBLUR_DEMO_HOST; default 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DEBLUR_DEMO_PORT", "7860")),
        help="port to listen on (env DEBLUR_DEMO_PORT; default 7860)",
    )
    parser.add_argument(
        "--max-file-size", default=MAX_FILE_SIZE, help=f"largest accepted upload (default {MAX_FILE_SIZE})"
    )
    parser.add_argument(
        "--feedback-db",
        type=Path,
        default=default_db_path(),
        help="SQLite file for 👍/👎 feedback (env DEBLUR_FEEDBACK_DB; default run/feedback.sqlite3)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup probes, one line each
    client = TorchServeClient.from_env()
    # A private upload/cache folder: the page serves files from there only, and it goes away with us.
    with tempfile.TemporaryDirectory(prefix="deblur-demo-") as temp_dir:
        os.environ.setdefault("GRADIO_TEMP_DIR", temp_dir)
        demo = build_demo(client, FeedbackStore(args.feedback_db))
        # Belt and braces: TorchServe's keys and the feedback images are never served, whatever path is asked.
        blocked = sorted({str(client.key_file.resolve().parent), str(args.feedback_db.resolve().parent)})
        launch_demo(demo, args.host, args.port, args.max_file_size, blocked_paths=blocked)


if __name__ == "__main__":
    main()
