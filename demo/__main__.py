"""``python -m demo``: serve the deblur page against the TorchServe named by DEBLUR_INFERENCE_URL etc.

Uploads and results live in a private temp folder (inside GRADIO_TEMP_DIR when that is set) that is
removed when the page stops, on Ctrl-C and on SIGTERM alike. Gradio is imported only once that folder
is its temp dir, because some of its modules read GRADIO_TEMP_DIR at import.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from demo.feedback import default_db_path
from demo.limits import MAX_FILE_SIZE, read_timeout
from serve.client import TorchServeClient

log = logging.getLogger("demo")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
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
        help="SQLite file for Good/Bad feedback (env DEBLUR_FEEDBACK_DB; default run/feedback.sqlite3)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup probes, one line each
    # SIGTERM (kill, systemd, docker stop) ends the page the way Ctrl-C does, so the temp folder goes too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    client = TorchServeClient.from_env()
    client.timeout = read_timeout(client)
    log.info("waiting up to %.0f s for TorchServe's answers (its response timeout plus a margin)", client.timeout)
    parent = os.environ.get("GRADIO_TEMP_DIR") or None
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="deblur-demo-", dir=parent) as temp_dir:
            # A private upload/cache folder: the page serves files from there only, and it goes away with us.
            os.environ["GRADIO_TEMP_DIR"] = temp_dir
            from demo.app import build_demo, launch_demo
            from demo.feedback import FeedbackStore

            demo = build_demo(client, FeedbackStore(args.feedback_db))
            # Belt and braces: TorchServe's keys and the feedback images are never served, whatever path is asked.
            blocked = sorted({str(client.key_file.resolve().parent), str(args.feedback_db.resolve().parent)})
            launch_demo(demo, args.host, args.port, args.max_file_size, blocked_paths=blocked)
    except KeyboardInterrupt:  # a signal before Gradio's own loop caught it: the folder is removed all the same
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
