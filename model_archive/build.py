"""Checkpoint → TorchServe ``.mar`` with only the inference side inside.

The archive holds the handler at its root, the ``deblur/`` package and the handler's own
``handler/`` modules (``.py`` files only, no CLI) beside it, the checkpoint as serialized file, a
generated ``model-config.yaml`` (its ``handler:`` section is ``deblur.settings.ServingSettings``) and
``training.json`` (the checkpoint's epoch, training metrics, model config and SHA-256). With
``torchscript`` the serialized file is that TorchScript export of the checkpoint instead (its record must
name the checkpoint's SHA-256), ``model_format: torchscript`` tells the handler, and ``training.json``
gains the export's file, SHA-256 and torch version.
``<model>_v<version>.mar`` is written to the model store. Building reads files and runs
torch-model-archiver in a subprocess; no model code or torch is imported here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from deblur.settings import ServingSettings
from model_archive.checkpoint_info import CheckpointInfoError, read_export_record, sha256, training_record

REPO_ROOT = Path(__file__).resolve().parents[1]
HANDLER_FILE = REPO_ROOT / "handler" / "deblur_handler.py"
CORE_PACKAGE = REPO_ROOT / "deblur"
HANDLER_PACKAGE = REPO_ROOT / "handler"
# handler/ modules the archive leaves out: the entry file sits at the root, the CLI is not served.
HANDLER_EXCLUDED = {HANDLER_FILE.name, "cli.py", "__main__.py"}
CONFIG_NAME = "model-config.yaml"
TRAINING_NAME = "training.json"
# Names end up in file names and in the allowed_urls pattern of config.properties.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
VERSION_PATTERN = re.compile(r"[0-9A-Za-z]+([.][0-9A-Za-z]+)*")
STARTUP_TIMEOUT = 300  # seconds for a worker to import torch and load the checkpoint (default 120)


class ArchiveError(RuntimeError):
    """The archive cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class ArchiveSpec:
    checkpoint: Path
    version: str
    model_name: str = "deblur"
    export_path: Path = REPO_ROOT / "model_store"  # where `python -m serve start` looks by default
    force: bool = False
    # A 4096² image is ~100 tiles of 512² on 2 CPU cores: minutes, not seconds.
    response_timeout: int = 600
    handler: ServingSettings = field(default_factory=ServingSettings)
    torchscript: Path | None = None  # a TorchScript export of ``checkpoint``, served in its place

    @property
    def target(self) -> Path:
        return self.export_path / archive_name(self.model_name, self.version)

    @property
    def serialized(self) -> Path:
        """The archive's serialized file: the TorchScript export where there is one, else the checkpoint."""
        return self.torchscript or self.checkpoint

    @property
    def settings(self) -> ServingSettings:
        """The handler's settings, saying what the serialized file is."""
        return replace(self.handler, model_format="checkpoint" if self.torchscript is None else "torchscript")


def archive_name(model_name: str, version: str) -> str:
    """``deblur`` 2.0 → ``deblur_v2.0.mar``."""
    return f"{model_name}_v{version}.mar"


def model_config(spec: ArchiveSpec) -> dict[str, object]:
    """The archive's model-config.yaml: one worker, no batching, and the handler's settings."""
    return {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 1,
        "responseTimeout": spec.response_timeout,
        "startupTimeout": STARTUP_TIMEOUT,
        "handler": asdict(spec.settings),
    }


def stage_packages(destination: Path) -> None:
    """Copy deblur/**/*.py and the served handler/*.py under ``destination`` (no caches, no data)."""
    sources = [path for path in sorted(CORE_PACKAGE.rglob("*.py")) if "__pycache__" not in path.parts]
    sources += [path for path in sorted(HANDLER_PACKAGE.glob("*.py")) if path.name not in HANDLER_EXCLUDED]
    for source in sources:
        target = destination / source.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def stage_training_record(spec: ArchiveSpec, destination: Path) -> None:
    """What the archive records about its checkpoint (``training.json``)."""
    try:
        record = training_record(spec.checkpoint)
    except CheckpointInfoError as exc:
        raise ArchiveError(str(exc)) from exc
    if spec.torchscript is not None:
        torch_version = export_record(spec.torchscript, spec.checkpoint)["torch"]
        record["export"] = {"file": spec.torchscript.name, "sha256": sha256(spec.torchscript), "torch": torch_version}
    (destination / TRAINING_NAME).write_text(json.dumps(record, indent=2) + "\n")


def export_record(torchscript: Path, checkpoint: Path) -> dict[str, str]:
    """The record of the TorchScript file, which must have been exported from ``checkpoint``."""
    try:
        record = read_export_record(torchscript)
    except CheckpointInfoError as exc:
        raise ArchiveError(str(exc)) from exc
    if record.get("checkpoint_sha256") != sha256(checkpoint):
        raise ArchiveError(
            f"{torchscript} was exported from {record.get('checkpoint')!r}, not from {checkpoint}: export it "
            f"again with `python -m model_archive export --checkpoint {checkpoint} --format torchscript`"
        )
    return record


def archiver_command(spec: ArchiveSpec, extra_dir: Path, config_file: Path, output_dir: Path) -> list[str]:
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
        str(spec.serialized),
        "--extra-files",
        str(extra_dir),
        "--config-file",
        str(config_file),
        "--export-path",
        str(output_dir),  # it names the file <model-name>.mar; build_archive renames it
        "--force",  # existence is checked by check_inputs with a clearer message
    ]


def check_inputs(spec: ArchiveSpec) -> None:
    if not NAME_PATTERN.fullmatch(spec.model_name):
        raise ArchiveError(f"model name {spec.model_name!r}: use letters, digits, '_' and '-'")
    if not VERSION_PATTERN.fullmatch(spec.version):
        raise ArchiveError(f"version {spec.version!r}: use dot-separated letters and digits, like 2.0")
    if not spec.checkpoint.is_file():
        raise ArchiveError(f"checkpoint not found: {spec.checkpoint}")
    if spec.torchscript is not None and not spec.torchscript.is_file():
        raise ArchiveError(f"TorchScript file not found: {spec.torchscript}")
    reserved = {HANDLER_FILE.name, CONFIG_NAME, TRAINING_NAME, CORE_PACKAGE.name, HANDLER_PACKAGE.name}
    if spec.serialized.name in reserved:
        raise ArchiveError(f"rename {spec.serialized}: {spec.serialized.name!r} clashes with a file of the archive")
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
    """Write ``<export_path>/<model_name>_v<version>.mar`` and return its path."""
    check_inputs(spec)
    spec.export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deblur-mar-") as tmp:
        scratch = Path(tmp)
        extra_dir = scratch / "extra"
        stage_packages(extra_dir)
        stage_training_record(spec, extra_dir)
        config_file = scratch / CONFIG_NAME
        config_file.write_text(yaml.safe_dump(model_config(spec), sort_keys=False))
        work_dir, output_dir = scratch / "work", scratch / "out"
        work_dir.mkdir()
        output_dir.mkdir()
        run_archiver(archiver_command(spec, extra_dir, config_file, output_dir), work_dir)
        # Copy beside the target, then rename: a running TorchServe never sees a half-written archive.
        partial = spec.target.with_name(spec.target.name + ".partial")
        shutil.copyfile(output_dir / f"{spec.model_name}.mar", partial)
        partial.replace(spec.target)
    return spec.target
