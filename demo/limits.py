"""What the demo lets one request and all of them together cost: upload sizes, its temp folder, its wait.

Gradio caps each uploaded file (``MAX_FILE_SIZE``); ``request_bytes`` caps what one request carries in
all (one HTTP body, and the blurred image plus its ground truth for one restoration); ``temp_bytes`` caps
the demo's private temp folder (uploads and results), oldest entries removed first. No Gradio and no
torch here: ``python -m demo`` reads these before Gradio is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serve.client import BackendError, TorchServeClient
from serve.server import DEFAULT_CONFIG, read_properties

MB = 1024 * 1024
MAX_FILE_SIZE = "50mb"  # Gradio's per-file cap (its "mb" is 1024² bytes)
MAX_REQUEST_BYTES = 60 * MB
MAX_TEMP_BYTES = 1024 * MB
MULTIPART_SLACK_BYTES = 64 * 1024  # an upload's form framing (boundaries, headers) on top of its files
READ_MARGIN_S = 60.0  # beyond the server's own response timeout: queueing, decode/encode, base64 transfer
FALLBACK_RESPONSE_TIMEOUT_S = 600.0  # config.properties default_response_timeout, if even that is unreadable
DESCRIBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Limits:
    request_bytes: int = MAX_REQUEST_BYTES
    temp_bytes: int = MAX_TEMP_BYTES


def megabytes(size: int) -> str:
    return f"{size / MB:,.0f} MB" if size >= 10 * MB else f"{size / MB:,.1f} MB"


def entry_size(path: Path) -> int:
    """Bytes in a file or a folder tree (entries that vanish meanwhile count as 0)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).lstat().st_size
    return total


def make_room(root: Path, incoming: int, limit: int, keep: Iterable[Path] = ()) -> bool:
    """Remove ``root``'s oldest top-level entries until ``incoming`` more bytes fit under ``limit``.

    Entries holding a path of ``keep`` (the current request's uploads) stay. False when it cannot fit.
    """
    if incoming > limit:
        return False
    try:
        entries = [(entry.lstat().st_mtime, entry) for entry in root.iterdir()]
    except OSError:
        return True  # no folder yet: nothing is stored
    kept = {Path(path).resolve() for path in keep}
    sizes = {entry: entry_size(entry) for _, entry in entries}
    used = sum(sizes.values())
    for _, entry in sorted(entries, key=lambda pair: pair[0]):
        if used + incoming <= limit:
            break
        resolved = entry.resolve()
        if any(path == resolved or resolved in path.parents for path in kept):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        used -= sizes[entry] - (entry_size(entry) if entry.exists() or entry.is_symlink() else 0)
    return used + incoming <= limit


def configured_response_timeout(config: Path = DEFAULT_CONFIG) -> float:
    """config.properties' default_response_timeout (the server's fallback for archives that set none)."""
    try:
        return float(read_properties(config)["default_response_timeout"])
    except (OSError, KeyError, ValueError):
        return FALLBACK_RESPONSE_TIMEOUT_S


def read_timeout(client: TorchServeClient, model: str = "deblur", config: Path = DEFAULT_CONFIG) -> float:
    """How long the demo waits for an answer: the served model's responseTimeout (the management API's
    description of its default version, else config.properties) plus ``READ_MARGIN_S``."""
    quick = TorchServeClient(client.inference_url, client.management_url, client.key_file, DESCRIBE_TIMEOUT_S)
    try:
        described = quick.management("GET", f"/models/{model}")
        value = described[0]["responseTimeout"] if isinstance(described, list) and described else None
    except (BackendError, ValueError, KeyError, TypeError, AttributeError):
        value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        value = configured_response_timeout(config)
    return float(value) + READ_MARGIN_S
