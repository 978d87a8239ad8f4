"""Read a checkpoint's training record (epoch, metrics, model config), and the record of a TorchScript export,
without importing torch.

``torch.save`` writes a zip whose ``*/data.pkl`` pickles the payload dict; tensors inside it are
references to storages stored beside it. A restricted unpickler rebuilds the plain-typed parts and
replaces every tensor with a placeholder, so no code from the file runs and torch is not needed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

# The only globals a deblur checkpoint's pickle may name; everything torch becomes a placeholder.
PLAIN_GLOBALS = {("collections", "OrderedDict")}
TORCH_MODULES = ("torch", "torch._utils", "torch.serialization")
# What ``model_archive.export`` writes about an export; torch.jit.save files it as <archive>/extra/<name>.
EXPORT_RECORD = "deblur_export.json"


class CheckpointInfoError(ValueError):
    """The file is not a readable deblur checkpoint."""


class TensorPlaceholder:
    """Stands for any tensor or storage of the checkpoint; its content is never read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class PayloadUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_GLOBALS:
            return super().find_class(module, name)
        if module in TORCH_MODULES:
            return TensorPlaceholder
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the checkpoint")

    def persistent_load(self, pid: Any) -> TensorPlaceholder:
        return TensorPlaceholder()


def read_payload(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, tensors replaced by placeholders."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist() if name.endswith("/data.pkl")), None)
            if member is None:
                raise CheckpointInfoError(f"{path} has no data.pkl: not a torch.save checkpoint")
            payload = PayloadUnpickler(archive.open(member)).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise CheckpointInfoError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or "model_config" not in payload:
        raise CheckpointInfoError(f"{path} is not a deblur checkpoint (no model_config)")
    return payload


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_record(path: Path) -> dict[str, Any]:
    """What the archive records about its checkpoint: file, hash, epoch, metrics, model config."""
    payload = read_payload(path)
    return {
        "checkpoint": path.name,
        "sha256": sha256(path),
        "epoch": payload.get("epoch"),
        "metrics": dict(payload.get("metrics") or {}),
        "model_config": {k: list(v) if isinstance(v, tuple) else v for k, v in payload["model_config"].items()},
    }


def read_export_record(path: Path) -> dict[str, str]:
    """The export record inside a TorchScript file written by ``python -m model_archive export``."""
    not_export = f"{path} is not a TorchScript file written by `python -m model_archive export`"
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((name for name in archive.namelist() if name.endswith(f"/extra/{EXPORT_RECORD}")), None)
            if member is None:
                raise CheckpointInfoError(f"{not_export} (it has no {EXPORT_RECORD})")
            record = json.loads(archive.read(member))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointInfoError(f"{not_export}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != "torchscript":
        raise CheckpointInfoError(f"{not_export} (its {EXPORT_RECORD} is not a TorchScript export's)")
    return record
