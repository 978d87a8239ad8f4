"""Feedback from the page (Good / Bad + comment) in a local SQLite file, and its export as a retraining skeleton.

Each row keeps the uploaded bytes, the restored PNG, the ground truth when one was given, the model
version and settings, the verdict and the comment. ``python -m demo.feedback export DIR`` writes the Bad
cases as ``DIR/blur/<id>.png`` (the input, upright), ``DIR/restored/<id>.png``, ``DIR/sharp/<id>.png``
only where a ground truth came with the case (the rest is for a person to fill), and
``DIR/feedback.json`` with everything else.

    python -m demo.feedback export DIR [--db PATH] [--verdict down|up|all]
    python -m demo.feedback list [--db PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from demo.images import open_image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = REPO_ROOT / "run" / "feedback.sqlite3"
VERDICTS = ("up", "down")
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('up', 'down')),
    comment TEXT NOT NULL DEFAULT '',
    model_version TEXT,
    settings TEXT NOT NULL,
    input_name TEXT NOT NULL,
    input BLOB NOT NULL,
    output BLOB NOT NULL,
    ground_truth BLOB
)
"""


def default_db_path() -> Path:
    """DEBLUR_FEEDBACK_DB, else ``run/feedback.sqlite3`` in the repository (git-ignored)."""
    return Path(os.environ.get("DEBLUR_FEEDBACK_DB") or DEFAULT_DB)


@dataclass(frozen=True)
class FeedbackCase:
    """One verdict on one restoration. ``input`` is the file as uploaded, ``output`` the restored PNG."""

    verdict: str
    input_name: str
    input: bytes
    output: bytes
    settings: dict[str, Any]
    model_version: str | None = None
    comment: str = ""
    ground_truth: bytes | None = None


@dataclass(frozen=True)
class StoredCase:
    id: int
    created_at: str
    case: FeedbackCase


class FeedbackStore:
    """A SQLite file opened per call (Gradio runs handlers on worker threads; connections stay local)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10)) as connection, connection:
            connection.execute(SCHEMA)
            yield connection

    def add(self, case: FeedbackCase) -> int:
        if case.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {case.verdict!r}")
        row = (
            datetime.now(UTC).isoformat(timespec="seconds"),
            case.verdict,
            case.comment.strip(),
            case.model_version,
            json.dumps(case.settings, sort_keys=True),
            case.input_name,
            case.input,
            case.output,
            case.ground_truth,
        )
        with self.connect() as connection:
            cursor = connection.execute(
                "INSERT INTO feedback (created_at, verdict, comment, model_version, settings, input_name,"
                " input, output, ground_truth) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def cases(self, verdict: str | None = None) -> list[StoredCase]:
        query = (
            "SELECT id, created_at, verdict, comment, model_version, settings, input_name, input, output,"
            " ground_truth FROM feedback"
        )
        with self.connect() as connection:
            rows = connection.execute(
                query + (" WHERE verdict = ? ORDER BY id" if verdict else " ORDER BY id"),
                (verdict,) if verdict else (),
            ).fetchall()
        return [stored_case(row) for row in rows]


def stored_case(row: tuple[Any, ...]) -> StoredCase:
    id_, created_at, verdict, comment, version, settings, name, input_, output, ground_truth = row
    case = FeedbackCase(verdict, name, input_, output, json.loads(settings), version, comment, ground_truth)
    return StoredCase(id_, created_at, case)


def upright_png(data: bytes) -> bytes:
    """Any supported image → PNG, EXIF orientation applied (the restored image is upright too)."""
    buffer = io.BytesIO()
    image: Image.Image = ImageOps.exif_transpose(open_image(data))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def export_cases(store: FeedbackStore, out_dir: Path, verdict: str | None = "down") -> int:
    """Write the chosen cases as a paired-folder skeleton under ``out_dir``; returns how many."""
    cases = store.cases(verdict)
    for sub in ("blur", "restored", "sharp"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    metadata = []
    for stored in cases:
        name, case = f"{stored.id:06d}.png", stored.case
        (out_dir / "blur" / name).write_bytes(upright_png(case.input))
        (out_dir / "restored" / name).write_bytes(upright_png(case.output))
        if case.ground_truth is not None:
            (out_dir / "sharp" / name).write_bytes(upright_png(case.ground_truth))
        metadata.append(case_metadata(stored, name))
    (out_dir / "feedback.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    return len(cases)


def case_metadata(stored: StoredCase, name: str) -> dict[str, Any]:
    case = stored.case
    return {
        "id": stored.id,
        "file": name,
        "created_at": stored.created_at,
        "verdict": case.verdict,
        "comment": case.comment,
        "model_version": case.model_version,
        "settings": case.settings,
        "input_name": case.input_name,
        "sharp": "provided" if case.ground_truth is not None else "missing: add the sharp photo as sharp/" + name,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.feedback", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=None, help="feedback database (default: DEBLUR_FEEDBACK_DB or run/)")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write cases as DIR/{blur,restored,sharp}/<id>.png + feedback.json")
    export.add_argument("out_dir", type=Path)
    export.add_argument(
        "--verdict", choices=["down", "up", "all"], default="down", help="which cases (default down: the Bad ratings)"
    )
    commands.add_parser("list", help="one line per stored case")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    store = FeedbackStore(args.db or default_db_path())
    if args.command == "export":
        count = export_cases(store, args.out_dir, None if args.verdict == "all" else args.verdict)
        print(f"wrote {count} case(s) from {store.path} to {args.out_dir}")
        return
    for stored in store.cases():
        case = stored.case
        print(f"{stored.id}\t{stored.created_at}\t{case.verdict}\tv{case.model_version}\t{case.comment}")


if __name__ == "__main__":
    main()
