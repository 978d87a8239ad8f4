"""The .mar holds exactly the inference side, laid out so the handler imports like in the repo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from deblur.settings import ServingSettings
from model_archive.__main__ import main
from model_archive.build import REPO_ROOT, ArchiveError, ArchiveSpec, build_archive

FORBIDDEN_TOP_LEVEL = ("train/", "demo/", "serve/", "tests/", "model_archive/", "bench/", "mlruns/")
SERVED_HANDLER_MODULES = {"handler/__init__.py", "handler/request.py", "handler/pipeline.py"}


@pytest.fixture(scope="module")
def mar(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    return build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=store, handler=ServingSettings(tile_size=256)))


def archive_names(mar: Path) -> set[str]:
    with zipfile.ZipFile(mar) as archive:
        return set(archive.namelist())


def read_member(mar: Path, name: str) -> str:
    with zipfile.ZipFile(mar) as archive:
        return archive.read(name).decode()


def test_archive_contains_inference_side_only(mar: Path) -> None:
    names = archive_names(mar)
    core = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "deblur").rglob("*.py")}
    assert {"deblur/restore.py", "deblur/blind/decide.py"} <= core
    top = {"deblur_handler.py", "tiny.pt", "model-config.yaml", "training.json", "MAR-INF/MANIFEST.json"}
    assert top | core | SERVED_HANDLER_MODULES == names  # no handler/cli.py: the folder CLI is not served
    assert not [name for name in names if name.startswith(FORBIDDEN_TOP_LEVEL) or "__pycache__" in name]


def test_manifest_points_at_handler_checkpoint_and_config(mar: Path) -> None:
    model = json.loads(read_member(mar, "MAR-INF/MANIFEST.json"))["model"]
    assert model["modelName"] == "deblur"
    assert model["modelVersion"] == "1.0"
    assert model["handler"] == "deblur_handler.py"
    assert model["serializedFile"] == "tiny.pt"
    assert model["configFile"] == "model-config.yaml"


def test_model_config_has_one_worker_and_handler_settings(mar: Path) -> None:
    config = yaml.safe_load(read_member(mar, "model-config.yaml"))
    assert (config["minWorkers"], config["maxWorkers"], config["batchSize"]) == (1, 1, 1)
    assert config["responseTimeout"] >= 600
    assert config["handler"] == {
        "tile_size": 256,
        "overlap": 32,
        "tile_batch": 0,
        "max_pixels": 4096 * 4096,
        "ensemble_max_pixels": 2048 * 2048,
        "precision": "auto",
        "kernel_aware": False,
        "compute_budget_s": 60.0,
        "model_format": "checkpoint",
        "tile_call_s": 0.008,
        "tile_pixel_s": 5e-7,
        "estimate_pixel_s": 1e-5,
        "deconvolve_pixel_s": 1e-6,
    }
    assert ServingSettings.from_yaml(config) == ServingSettings(tile_size=256)  # what the handler reads back


def test_training_record_is_in_the_archive(mar: Path, tiny_checkpoint: Path) -> None:
    record = json.loads(read_member(mar, "training.json"))
    assert record["checkpoint"] == "tiny.pt"
    assert (record["epoch"], record["metrics"]) == (0, {"psnr": 0.0})
    assert record["model_config"]["base_ch"] == 8
    assert record["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()


def test_version_names_the_file(identity_checkpoint: Path, tmp_path: Path) -> None:
    mar = build_archive(ArchiveSpec(identity_checkpoint, "2.0", export_path=tmp_path))
    assert mar == tmp_path / "deblur_v2.0.mar"
    assert json.loads(read_member(mar, "MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "2.0"
    assert json.loads(read_member(mar, "training.json"))["metrics"] == {"psnr": 31.5, "ssim": 0.9}


@pytest.mark.parametrize(("name", "version"), [("deblur", "2.0/../x"), ("deblur", ""), ("../deblur", "1.0")])
def test_unsafe_names_are_refused(tiny_checkpoint: Path, tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(ArchiveError, match="use"):
        build_archive(ArchiveSpec(tiny_checkpoint, version, model_name=name, export_path=tmp_path))


def test_non_checkpoint_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(ArchiveError, match="not a readable torch checkpoint"):
        build_archive(ArchiveSpec(fake, "1.0", export_path=tmp_path))


def test_extracted_archive_imports_handler_without_the_repo(mar: Path, tmp_path: Path) -> None:
    """TorchServe puts the extracted archive on sys.path and wants exactly one class in the handler."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(tmp_path)
    probe = (
        "import sys, deblur_handler, deblur.model;"
        "from ts.utils.util import list_classes_from_module as classes;"
        f"assert not deblur.model.__file__.startswith({str(REPO_ROOT)!r}), deblur.model.__file__;"
        "print([c.__name__ for c in classes(deblur_handler)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )  # cwd is sys.path[0] for -c, and the repo is not on the path
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['DeblurHandler']"


def test_existing_archive_needs_force(tiny_checkpoint: Path, tmp_path: Path) -> None:
    spec = ArchiveSpec(tiny_checkpoint, "1.0", export_path=tmp_path)
    build_archive(spec)
    with pytest.raises(ArchiveError, match="--force"):
        build_archive(spec)
    forced = ArchiveSpec(tiny_checkpoint, "2.0", export_path=tmp_path, force=True)
    mar = build_archive(forced)
    assert json.loads(read_member(mar, "MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "2.0"


def test_missing_checkpoint_is_a_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--version", "1.0", "--export-path", str(tmp_path)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_cli_builds_without_importing_torch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    argv = ["--checkpoint", str(tiny_checkpoint), "--version", "3.1", "--export-path", str(tmp_path)]
    probe = (
        "import sys; from model_archive.__main__ import main;"
        f"code = main({argv!r});"
        "assert 'torch' not in sys.modules, 'building imported torch';"
        "sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "deblur_v3.1.mar")
    assert zipfile.is_zipfile(tmp_path / "deblur_v3.1.mar")
