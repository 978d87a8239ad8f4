"""Checkpoint → TorchServe ``.mar`` with only the inference side inside.

The archive holds the handler at its root, the ``deblur/`` package (``.py`` files only) beside it,
the checkpoint as serialized file and a generated ``model-config.yaml``. Building reads files and
runs torch-model-archiver in a subprocess; no model code or torch is imported here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
HANDLER_FILE = REPO_ROOT / "handler" / "deblur_handler.py"
CORE_PACKAGE = REPO_ROOT / "deblur"
CONFIG_NAME = "model-config.yaml"
STARTUP_TIMEOUT = 300  # seconds for a worker to import torch and load the checkpoint (default 120)


class ArchiveError(RuntimeError):
    """The archive cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class HandlerSettings:
    """The ``handler:`` section read by DeblurHandler.initialize."""

    tile_size: int = 512
    overlap: int = 64
    tile_batch: int = 4
    max_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class ArchiveSpec:
    checkpoint: Path
    version: str
    model_name: str = "deblur"
    export_path: Path = REPO_ROOT / "model_store"  # where `python -m serve start` looks by default
    force: bool = False
    # A 4096² image is ~100 tiles of 512² on 2 CPU cores: minutes, not seconds.
    response_timeout: int = 600
    handler: HandlerSettings = field(default_factory=HandlerSettings)

    @property
    def target(self) -> Path:
        return self.export_path / f"{self.model_name}.mar"


def model_config(spec: ArchiveSpec) -> dict[str, object]:
    """The archive's model-config.yaml: one worker, no batching, and the handler's settings."""
    return {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 1,
        "responseTimeout": spec.response_timeout,
        "startupTimeout": STARTUP_TIMEOUT,
        "handler": asdict(spec.handler),
    }


def stage_core_package(destination: Path) -> None:
    """Copy deblur/**/*.py under ``destination/deblur`` (no caches, no data files)."""
    for source in sorted(CORE_PACKAGE.rglob("*.py")):
        relative = source.relative_to(CORE_PACKAGE.parent)
        if "__pycache__" in relative.parts:
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def archiver_command(spec: ArchiveSpec, extra_dir: Path, config_file: Path) -> list[str]:
    # A directory given to --extra-files has its *contents* copied to the archive root, so
    # passing the staging dir (which holds deblur/) keeps the package path intact.
    return [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        spec.model_name,
        "--version",
        spec.version,
        "--handler",
        str(HANDLER_FILE),
        "--serialized-file",
        str(spec.checkpoint),
        "--extra-files",
        str(extra_dir),
        "--config-file",
        str(config_file),
        "--export-path",
        str(spec.export_path),
        "--force",  # existence is checked by check_inputs with a clearer message
    ]


def check_inputs(spec: ArchiveSpec) -> None:
    if not spec.checkpoint.is_file():
        raise ArchiveError(f"checkpoint not found: {spec.checkpoint}")
    if spec.checkpoint.name in {HANDLER_FILE.name, CONFIG_NAME, CORE_PACKAGE.name}:
        raise ArchiveError(f"rename the checkpoint: {spec.checkpoint.name!r} clashes with a file of the archive")
    if spec.target.exists() and not spec.force:
        raise ArchiveError(f"{spec.target} already exists: pass --force to overwrite it")


def run_archiver(command: list[str], scratch: Path) -> None:
    # torch-model-archiver works in $TMPDIR/<model-name> and deletes that folder first: point
    # TMPDIR at our scratch dir so concurrent builds and unrelated /tmp folders are safe.
    env = os.environ | {"TMPDIR": str(scratch)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ArchiveError("torch-model-archiver failed:\n" + "\n".join(output[-15:]))


def build_archive(spec: ArchiveSpec) -> Path:
    """Write ``<export_path>/<model_name>.mar`` and return its path."""
    check_inputs(spec)
    spec.export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deblur-mar-") as tmp:
        scratch = Path(tmp)
        extra_dir = scratch / "extra"
        stage_core_package(extra_dir)
        config_file = scratch / CONFIG_NAME
        config_file.write_text(yaml.safe_dump(model_config(spec), sort_keys=False))
        work_dir = scratch / "work"
        work_dir.mkdir()
        run_archiver(archiver_command(spec, extra_dir, config_file), work_dir)
    return spec.target
