"""Model versions through TorchServe's management API: status, register, default, rollback, scale.

TorchServe knows which version is the default but not which one was the default before, so
``set_default`` records the replaced default in ``<run dir>/default_history.json`` and
``rollback`` goes back to the last recorded one. Stdlib + the REST client only (never torch).
"""

from __future__ import annotations

import filecmp
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.client import BackendError, TorchServeClient

HISTORY_FILE = "default_history.json"
HISTORY_LIMIT = 20


class ModelsError(RuntimeError):
    """A version operation that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class VersionStatus:
    model: str
    version: str
    is_default: bool
    workers: tuple[tuple[str, int | None], ...]  # (status, pid)

    def describe(self) -> str:
        states = ", ".join(f"{status} (pid {pid})" for status, pid in self.workers) or "no workers"
        marker = " (default)" if self.is_default else ""
        return f"{self.model} {self.version}{marker}: {len(self.workers)} worker(s) {states}"


def model_names(client: TorchServeClient) -> list[str]:
    return [entry["modelName"] for entry in client.management("GET", "/models").get("models", [])]


def default_version(client: TorchServeClient, model: str, versions: list[dict[str, Any]]) -> str | None:
    """GET /models lists each model's default version by its archive: match it against the versions."""
    listed = client.management("GET", "/models").get("models", [])
    url = next((entry.get("modelUrl") for entry in listed if entry.get("modelName") == model), None)
    return next((v["modelVersion"] for v in versions if v.get("modelUrl") == url), None)


def model_status(client: TorchServeClient, model: str) -> list[VersionStatus]:
    versions = client.management("GET", f"/models/{model}/all")
    default = default_version(client, model, versions)
    return [
        VersionStatus(
            model,
            str(v["modelVersion"]),
            v["modelVersion"] == default,
            tuple((w.get("status", "?"), w.get("pid")) for w in v.get("workers", [])),
        )
        for v in versions
    ]


def status(client: TorchServeClient) -> list[VersionStatus]:
    return [entry for name in model_names(client) for entry in model_status(client, name)]


def archive_identity(mar: Path) -> tuple[str, str]:
    """(model name, version) from an archive's MAR-INF/MANIFEST.json."""
    try:
        with zipfile.ZipFile(mar) as archive:
            model = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        return model["modelName"], str(model["modelVersion"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelsError(f"{mar} is not a model archive built by `python -m model_archive`: {exc}") from exc


def place_in_store(mar: Path, store: Path) -> str:
    """The archive's file name in the model store, copying it there if it lives elsewhere."""
    if not mar.is_file():
        raise ModelsError(f"archive not found: {mar}")
    if not store.is_dir():
        raise ModelsError(f"model store not found: {store}")
    target = store / mar.name
    if target.resolve() == mar.resolve():
        return mar.name
    if target.exists() and not filecmp.cmp(target, mar, shallow=False):
        raise ModelsError(f"{target} already exists and differs from {mar}: rename one of them")
    shutil.copyfile(mar, target)
    return mar.name


def register(client: TorchServeClient, mar: Path, store: Path, workers: int = 1) -> str:
    """Register an archive by its file name in the model store (no URL download) and start workers."""
    name, version = archive_identity(mar)
    file_name = place_in_store(mar, store)
    params = {"url": file_name, "initial_workers": workers, "synchronous": "true"}
    client.management("POST", "/models", params=params)
    return f"registered {name} {version} from {store / file_name} with {workers} worker(s)"


def read_history(run_dir: Path) -> dict[str, list[str]]:
    path = run_dir / HISTORY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelsError(f"{path} is not valid JSON ({exc}): fix or delete it") from exc
    return {str(k): [str(v) for v in vs] for k, vs in data.items()} if isinstance(data, dict) else {}


def write_history(run_dir: Path, history: dict[str, list[str]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / HISTORY_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(history, indent=2) + "\n")
    partial.replace(path)


def current_default(client: TorchServeClient, model: str) -> str | None:
    return default_version(client, model, client.management("GET", f"/models/{model}/all"))


def set_default(client: TorchServeClient, model: str, version: str, run_dir: Path) -> str:
    """Make ``version`` the default and remember the one it replaces (for ``rollback``)."""
    previous = current_default(client, model)
    client.management("PUT", f"/models/{model}/{version}/set-default")
    if previous is not None and previous != version:
        history = read_history(run_dir)
        history[model] = [*history.get(model, []), previous][-HISTORY_LIMIT:]
        write_history(run_dir, history)
    return f"default of {model} is now {version}" + (f" (was {previous})" if previous else "")


def rollback(client: TorchServeClient, model: str, run_dir: Path) -> str:
    """Make the previous default the default again, and forget it in the history."""
    history = read_history(run_dir)
    stack = history.get(model, [])
    if not stack:
        raise ModelsError(f"no earlier default of {model} recorded in {run_dir / HISTORY_FILE}: use set-default")
    target, current = stack[-1], current_default(client, model)
    try:
        client.management("PUT", f"/models/{model}/{target}/set-default")
    except BackendError as exc:
        raise ModelsError(f"cannot roll {model} back to {target}: {exc}") from exc
    history[model] = stack[:-1]
    write_history(run_dir, history)
    return f"rolled {model} back to {target}" + (f" (was {current})" if current else "")


def unregister(client: TorchServeClient, model: str, version: str, force: bool = False) -> str:
    """Remove a version; the default only with ``force`` (TorchServe would drop the whole model)."""
    if not force and current_default(client, model) == version:
        raise ModelsError(
            f"{model} {version} is the default version: set another default first "
            "(or pass --force to remove it, and the model with it if it is the last version)"
        )
    client.management("DELETE", f"/models/{model}/{version}")
    return f"unregistered {model} {version}"


def scale(client: TorchServeClient, model: str, workers: int, version: str | None = None) -> str:
    if workers < 0:
        raise ModelsError(f"--workers must be ≥ 0, got {workers}")
    path = f"/models/{model}" + (f"/{version}" if version else "")
    params = {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
    client.management("PUT", path, params=params)
    return f"{model} {version or '(default version)'} scaled to {workers} worker(s)"
