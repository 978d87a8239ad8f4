"""A checkpoint → a TorchScript or ONNX file that runs without this repository (``python -m model_archive export``).

Both formats take one input, ``image``: float32 (batch, 3, height, width), RGB in [-1, 1] as
``deblur.imageio`` decodes it, any height and width; and give one output, ``restored``: the same shape and
range, not clamped. The networks pad to their multiple (2^levels: 16 for the shipped DeblurUNet and
NAFNet's four levels) inside ``forward`` and crop back, and the exports keep that, so callers never pad.

- TorchScript: ``torch.jit.trace`` on an odd-sized example (odd sizes are no multiple of any power of two,
  so the padding is recorded with amounts computed from the input's size). Runs with ``torch.jit.load``.
- ONNX: ``torch.onnx.export(dynamo=True)``, the torch.export-based exporter (it needs ``onnx`` and
  ``onnxscript``, development requirements; torch 2.14's legacy TorchScript-based exporter is deprecated).
  Axes 0, 2 and 3 are dynamic (``batch``, ``height``, ``width``); the opset is the file's default-domain
  import and its ``opset`` metadata.

NAFNet with TLC exports in both: its window poolings are swapped for ``DynamicLocalAvgPool2d`` (the same
means, computed without a branch on the map's size) in the exported copy; the eager model is left as it is.

Each file carries the export record (checkpoint name and SHA-256, model config, opset, torch version, input
and output): TorchScript as the extra file ``deblur_export.json``, ONNX as metadata properties. An export is
checked against the eager model on two sizes before it replaces ``target``. docs/exports.md has the
measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import pickle
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deblur.model import ModelConfig, load_model
from deblur.nafnet import DynamicLocalAvgPool2d, LocalAvgPool2d
from model_archive.checkpoint_info import EXPORT_RECORD, CheckpointInfoError, read_payload, sha256

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
DEFAULT_OPSET = 20
INPUT_NAME, OUTPUT_NAME = "image", "restored"
CHECK_SIZES = ((37, 53), (64, 96))  # (H, W); the first is the trace example
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


class ExportError(RuntimeError):
    """The checkpoint cannot be exported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ExportSpec:
    checkpoint: Path
    format: str
    output: Path | None = None  # default: exports/<checkpoint stem><suffix of the format>
    opset: int = DEFAULT_OPSET  # ONNX only
    tlc_window: int | None = None  # NAFNet: TLC window (0 = off); None: as stored
    force: bool = False
    tolerance: float = 1e-3  # largest |export − eager| accepted on the check sizes

    @property
    def target(self) -> Path:
        return self.output or REPO_ROOT / "exports" / (self.checkpoint.stem + SUFFIXES[self.format])


Difference = tuple[tuple[int, int], float]  # ((H, W), max |export − eager|)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    opset: int | None  # None for TorchScript
    seconds: float  # tracing or exporting, and writing
    differences: tuple[Difference, ...]  # one per check size; empty where the export cannot be run here
    record: dict[str, str]


def check_spec(spec: ExportSpec) -> None:
    if spec.format not in FORMATS:
        raise ExportError(f"format {spec.format!r}: use one of {', '.join(FORMATS)}")
    if not spec.checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {spec.checkpoint}")
    if spec.target.exists() and not spec.force:
        raise ExportError(f"{spec.target} already exists: pass --force to overwrite it")


def load_eager(spec: ExportSpec) -> tuple[nn.Module, ModelConfig]:
    """The checkpoint's model in eval mode, fp32 on the CPU, and its config (TLC override applied)."""
    try:
        stored = ModelConfig.from_dict(read_payload(spec.checkpoint)["model_config"])
        config = stored if spec.tlc_window is None else replace(stored, tlc_window=spec.tlc_window)
        return load_model(spec.checkpoint, "cpu", spec.tlc_window), config
    except (CheckpointInfoError, pickle.UnpicklingError, ValueError, TypeError, RuntimeError) as exc:
        raise ExportError(f"{spec.checkpoint}: {exc}") from exc


def export_record(spec: ExportSpec, config: ModelConfig, opset: int | None) -> dict[str, str]:
    """What an export says about itself (plain strings: ONNX metadata properties hold nothing else)."""
    shape = f"float32 (batch, {config.in_ch}, height, width), RGB in [-1, 1], any height and width"
    record = {
        "format": spec.format,
        "checkpoint": spec.checkpoint.name,
        "checkpoint_sha256": sha256(spec.checkpoint),
        "model_config": json.dumps(asdict(config)),
        "torch": torch.__version__,
        "input": f"{INPUT_NAME}: {shape}",
        "output": f"{OUTPUT_NAME}: the input's shape and range, not clamped",
    }
    return record if opset is None else record | {"opset": str(opset)}


def with_dynamic_pooling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its TLC window poolings as ``DynamicLocalAvgPool2d``, which export at any size."""
    exported = copy.deepcopy(model)
    for module in list(exported.modules()):
        for name, child in module.named_children():
            if type(child) is LocalAvgPool2d:
                setattr(module, name, DynamicLocalAvgPool2d(child.window))
    return exported


def examples(config: ModelConfig) -> list[torch.Tensor]:
    """One input in [-1, 1] per check size (fixed seed: the same inputs every export)."""
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(1, config.in_ch, h, w, generator=generator) * 2 - 1 for h, w in CHECK_SIZES]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings (the tracer's notes on recorded branches, TorchScript's deprecation) and none of the exporter's
    progress lines and logged fallbacks: failures are raised, and reported as ExportError."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def write_torchscript(model: nn.Module, example: torch.Tensor, partial: Path, record: dict[str, str]) -> None:
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(partial), _extra_files={EXPORT_RECORD: json.dumps(record, indent=2)})


def write_onnx(model: nn.Module, example: torch.Tensor, partial: Path, record: dict[str, str], opset: int) -> None:
    if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript")):
        raise ExportError("ONNX export needs onnx and onnxscript: pip install -r requirements-dev.txt")
    try:
        with quiet():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=[DYNAMIC_AXES],
            )
    except Exception as exc:  # the exporter raises its own and torch.export's errors
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {str(exc).splitlines()[0]}") from exc
    found = program.model.opset_imports.get("")
    if found != opset:
        raise ExportError(
            f"torch.onnx.export cannot write opset {opset} for this model (it wrote {found}): ask for 18 or more"
        )
    graph = program.model.graph
    graph.outputs[0].shape = graph.inputs[0].shape.copy()  # named like the input, not by the size arithmetic
    program.model.metadata_props.update(record)
    program.save(str(partial), external_data=False)


def load_export(path: Path, export_format: str) -> Any:
    """A callable (1, C, H, W) tensor → tensor over the written file; None where ONNX Runtime is missing."""
    if export_format == "torchscript":
        with quiet():
            return torch.jit.load(str(path), map_location="cpu")
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def differences(model: nn.Module, exported: Any, inputs: list[torch.Tensor]) -> tuple[Difference, ...]:
    """Max |export − eager| per input; none where the export cannot be run here."""
    if exported is None:
        return ()
    with torch.no_grad():
        found = [((x.shape[-2], x.shape[-1]), (exported(x) - model(x)).abs().max().item()) for x in inputs]
    return tuple(found)


def export_model(spec: ExportSpec) -> ExportResult:
    """Write ``spec.target`` and return what was written and how close it is to the eager model."""
    check_spec(spec)
    model, config = load_eager(spec)
    opset = spec.opset if spec.format == "onnx" else None
    record = export_record(spec, config, opset)
    inputs = examples(config)
    target = spec.target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    start = time.perf_counter()
    try:
        if spec.format == "torchscript":
            write_torchscript(with_dynamic_pooling(model), inputs[0], partial, record)
        else:
            write_onnx(with_dynamic_pooling(model), inputs[0], partial, record, spec.opset)
        seconds = time.perf_counter() - start
        found = differences(model, load_export(partial, spec.format), inputs)
        worst = max((difference for _, difference in found), default=0.0)
        if worst > spec.tolerance:
            raise ExportError(f"the export differs from the checkpoint's model by {worst:.2e} (> {spec.tolerance})")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(target, spec.format, opset, round(seconds, 2), found, record)


def describe(result: ExportResult) -> str:
    """The command's report: the file, its interface and how close it is to the eager model."""
    kind = "TorchScript" if result.opset is None else f"ONNX opset {result.opset}"
    lines = [
        f"{result.path}: {kind}, exported in {result.seconds:.1f} s",
        f"  input {result.record['input']}",
        f"  output {result.record['output']}",
    ]
    if result.differences:
        checks = ", ".join(f"{difference:.1e} at {h}×{w}" for (h, w), difference in result.differences)
        lines.append(f"  max |export − checkpoint's model|: {checks}")
    else:
        lines.append("  not checked: onnxruntime is not installed (pip install -r requirements-dev.txt)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model_archive export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint written by training")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", type=Path, help="default: exports/<checkpoint stem>.torchscript.pt or .onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--tlc-window", type=int, default=None, help="NAFNet: TLC window (0 = off); default: stored")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = ExportSpec(args.checkpoint, args.format, args.output, args.opset, args.tlc_window, args.force)
    try:
        result = export_model(spec)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(result))
    return 0
