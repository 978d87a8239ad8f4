"""Portable exports: TorchScript and ONNX files match the eager model at any size, say what they are, and a
TorchScript archive serves what the checkpoint's archive serves."""

from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deblur.model import ModelConfig, build_model, load_model, save_checkpoint
from deblur.settings import ServingSettings
from handler.deblur_handler import DeblurHandler
from model_archive.__main__ import main, parse_args, spec_from_args
from model_archive.build import ArchiveError, ArchiveSpec, build_archive
from model_archive.checkpoint_info import read_export_record, sha256
from model_archive.export import DEFAULT_OPSET, FORMATS, ExportError, ExportResult, ExportSpec, describe, export_model
from tests.conftest import TINY_CONFIG, png_bytes, textured_image
from tests.test_handler import make_context, run

TINY_NAFNET = ModelConfig(arch="nafnet", base_ch=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))
CONFIGS = {
    "unet": TINY_CONFIG,
    "nafnet": TINY_NAFNET,
    # A 56-px window: at 45×70 (padded 48×80) and at 64×48 one axis is under the window and one over it, on
    # every level, so both branches of the window pooling are compared
    "nafnet_tlc": replace(TINY_NAFNET, tlc_window=56),
}
SIZES = ((45, 70), (64, 48))  # (H, W): no multiple of 16, and multiples of 16
TOLERANCE = 1e-4
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "default.pt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint per tiny config, its weights shaken off their initial values (NAFNet starts as the identity)."""
    folder = tmp_path_factory.mktemp("export_checkpoints")
    paths = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model(config)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        paths[name] = save_checkpoint(folder / f"{name}.pt", model, config, epoch=0, metrics={})
    return paths


@pytest.fixture(scope="module")
def exports(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], ExportResult]:
    """``exports(name, format)``: that tiny checkpoint's export, written once per module."""
    folder = tmp_path_factory.mktemp("exports")

    @functools.cache
    def export(name: str, fmt: str) -> ExportResult:
        return export_model(ExportSpec(checkpoints[name], fmt, folder / f"{name}.{fmt}"))

    return export


def run_export(result: ExportResult) -> Callable[[torch.Tensor], torch.Tensor]:
    """(1, 3, H, W) tensor → tensor through the written file, loaded as a user would."""
    if result.format == "torchscript":
        return torch.jit.load(str(result.path))
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is a development requirement")
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["restored"], {"image": x.numpy()})[0])


def needs_onnx() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=f"{name} is a development requirement (requirements-dev.txt)")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", CONFIGS)
def test_export_matches_the_eager_model_at_any_size(
    exports: Callable[[str, str], ExportResult], checkpoints: dict[str, Path], name: str, fmt: str
) -> None:
    if fmt == "onnx":
        needs_onnx()
    result = exports(name, fmt)
    eager, restore = load_model(checkpoints[name]), run_export(result)
    generator = torch.Generator().manual_seed(1)
    for height, width in SIZES:
        x = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
        with torch.no_grad():
            expected, found = eager(x), restore(x)
        assert found.shape == x.shape
        assert (found - expected).abs().max().item() <= TOLERANCE, (height, width)
    assert len(result.differences) == 2 and max(d for _, d in result.differences) <= TOLERANCE


@pytest.mark.parametrize("name", CONFIGS)
def test_onnx_file_states_opset_names_and_dynamic_axes(exports: Callable[[str, str], ExportResult], name: str) -> None:
    needs_onnx()
    import onnx

    result = exports(name, "onnx")
    model = onnx.load(str(result.path))
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == DEFAULT_OPSET
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert metadata["opset"] == str(DEFAULT_OPSET) and metadata["input"].startswith("image: float32")
    for value, tensor in ((model.graph.input[0], "image"), (model.graph.output[0], "restored")):
        dims = [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
        assert (value.name, dims) == (tensor, ["batch", 3, "height", "width"])
    assert f"ONNX opset {DEFAULT_OPSET}" in describe(result)


@pytest.mark.parametrize("name", CONFIGS)
def test_torchscript_file_carries_its_record(
    exports: Callable[[str, str], ExportResult], checkpoints: dict[str, Path], name: str
) -> None:
    record = read_export_record(exports(name, "torchscript").path)
    assert record["checkpoint_sha256"] == sha256(checkpoints[name])
    assert json.loads(record["model_config"])["tlc_window"] == CONFIGS[name].tlc_window


def test_cli_writes_and_reports(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "unet.torchscript.pt"
    argv = ["export", "--checkpoint", str(checkpoints["unet"]), "--format", "torchscript", "--output", str(output)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{output}: TorchScript") and "input image: float32" in printed
    assert main(argv) == 1  # no overwrite without --force
    assert "already exists: pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing", "checkpoint not found"),
        ("garbage", "not a readable torch checkpoint"),
        ("tlc_on_unet", "tlc_window applies to NAFNet only"),
    ],
)
def test_bad_checkpoints_are_one_readable_line(
    problem: str, message: str, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, extra = tmp_path / "missing.pt", []
    if problem == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
    if problem == "tlc_on_unet":
        checkpoint, extra = checkpoints["unet"], ["--tlc-window", "64"]
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unsupported_format_is_refused(checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(checkpoints["unet"]), "--format", "tflite"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="format 'tflite': use one of torchscript, onnx"):
        export_model(ExportSpec(checkpoints["unet"], "tflite"))


def served(mar: Path, folder: Path, image: bytes) -> np.ndarray:
    """The image the handler answers from the extracted archive, as TorchServe's worker would load it."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(folder)
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    config = yaml.safe_load((folder / "model-config.yaml").read_text())
    context = make_context(folder, config, checkpoint=manifest["model"]["serializedFile"])
    handler = DeblurHandler()
    handler.initialize(context)
    [answer] = run(handler, context, [{"body": image}])
    return np.asarray(Image.open(io.BytesIO(answer)))


@pytest.mark.parametrize(("shipped", "precision"), [(False, "fp32"), (True, "auto")], ids=["tiny-fp32", "shipped-auto"])
def test_torchscript_archive_serves_the_same_image(
    tiny_checkpoint: Path, tmp_path: Path, shipped: bool, precision: str
) -> None:
    """Through the handler's tiling (128-px tiles: 2×2 over 200×150) both archives answer the same pixels in
    fp32; under bf16 autocast ("auto" on CPUs with native bf16) TorchScript's autocast pass rounds a few
    pixels of the shipped model one grey level the other way."""
    checkpoint = SHIPPED if shipped else tiny_checkpoint
    script = export_model(ExportSpec(checkpoint, "torchscript", tmp_path / f"{checkpoint.stem}.torchscript.pt")).path
    settings = ServingSettings(tile_size=128, overlap=32, precision=precision)
    eager_mar = build_archive(ArchiveSpec(checkpoint, "1.0", export_path=tmp_path / "a", handler=settings))
    script_mar = build_archive(
        ArchiveSpec(checkpoint, "1.0", export_path=tmp_path / "b", handler=settings, torchscript=script)
    )
    with zipfile.ZipFile(script_mar) as archive:
        assert script.name in archive.namelist() and checkpoint.name not in archive.namelist()
        assert yaml.safe_load(archive.read("model-config.yaml"))["handler"]["model_format"] == "torchscript"
        assert json.loads(archive.read("training.json"))["export"]["sha256"] == sha256(script)
    image = png_bytes(textured_image(200, 150, seed=3))
    eager, scripted = served(eager_mar, tmp_path / "eager", image), served(script_mar, tmp_path / "script", image)
    assert eager.shape == scripted.shape == (150, 200, 3)
    difference = np.abs(eager.astype(int) - scripted.astype(int)).max()
    assert difference == 0 if precision == "fp32" else difference <= 1


def test_archive_refuses_an_export_of_another_checkpoint(
    tiny_checkpoint: Path, identity_checkpoint: Path, tmp_path: Path
) -> None:
    script = export_model(ExportSpec(identity_checkpoint, "torchscript", tmp_path / "identity.torchscript.pt")).path
    with pytest.raises(ArchiveError, match=r"was exported from 'identity\.pt', not from"):
        build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=tmp_path, torchscript=script))
    with pytest.raises(ArchiveError, match="not a TorchScript file written by"):
        build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=tmp_path, torchscript=tiny_checkpoint))


def test_archive_cli_takes_a_torchscript_file() -> None:
    args = parse_args(["--checkpoint", "a.pt", "--version", "2.0", "--torchscript", "exports/a.torchscript.pt"])
    spec = spec_from_args(args)
    assert spec.serialized == Path("exports/a.torchscript.pt") and spec.settings.model_format == "torchscript"
    plain = spec_from_args(parse_args(["--checkpoint", "a.pt", "--version", "2.0"]))
    assert plain.serialized == Path("a.pt") and plain.settings.model_format == "checkpoint"
