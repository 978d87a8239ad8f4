"""MLflow: the run, its params and config, per-validation sample images, the best model.

Uses whatever tracking URI MLflow resolves (``MLFLOW_TRACKING_URI``, else the local default
store ``mlflow.db``); ``mlflow ui`` shows the runs. Only rank 0 calls these.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

import deblur
from deblur.model import load_model
from train.checkpoints import TrainState
from train.config import TrainConfig

log = logging.getLogger(__name__)
MODEL_NAME = "model"  # the logged model's name inside the run
# (B, 3, H, W) float32 in [-1, 1], any size: the model pads internally.
IMAGE_SPEC = TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))


def _existing_run(run_id: str) -> str | None:
    if not run_id:
        return None
    try:
        mlflow.get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s is not in this store; starting a new run", run_id)
        return None
    return run_id


@contextlib.contextmanager
def tracked_run(config: TrainConfig, state: TrainState, extra_params: dict[str, object]) -> Iterator[None]:
    """Start (or, on resume, continue) the run; params and config.yaml are logged once per run."""
    mlflow.set_experiment(config.experiment)
    continued = _existing_run(state.run_id)
    with mlflow.start_run(run_id=continued, run_name=None if continued else config.run_name or None) as run:
        state.run_id = run.info.run_id
        if continued:
            mlflow.log_text(config.to_yaml(), f"config_resumed_at_epoch_{state.epoch}.yaml")
        else:
            mlflow.log_params(config.to_params() | {k: str(v) for k, v in extra_params.items()})
            mlflow.log_text(config.to_yaml(), "config.yaml")
        try:
            yield
        except KeyboardInterrupt:
            mlflow.end_run(status="KILLED")
            raise


def log_samples(samples: list[tuple[str, np.ndarray]], epoch: int) -> None:
    """Before | after | ground truth strips, one PNG per validation frame."""
    for name, strip in samples:
        mlflow.log_image(strip, artifact_file=f"samples/epoch_{epoch:04d}/{name}.png")


def pip_requirements() -> list[str]:
    """What the logged model needs, pinned from this environment (no pip inference, no network)."""
    versions = {name: importlib.metadata.version(name) for name in ("torch", "numpy", "pytorch-msssim", "pillow")}
    return [f"{name}=={version.split('+')[0]}" for name, version in versions.items()]


def log_best_model(checkpoint: Path, registered_model_name: str) -> None:
    """The best checkpoint as an MLflow PyTorch model with a signature, registered when a name is given."""
    import mlflow.pytorch  # here, not at the top: heavy, and it reconfigures the root logger on import

    model = load_model(checkpoint)
    mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
    signature = ModelSignature(inputs=Schema([IMAGE_SPEC]), outputs=Schema([IMAGE_SPEC]))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 16, 16))  # fail here, not in the registry, if the model cannot run
    mlflow.pytorch.log_model(
        model,
        name=MODEL_NAME,
        signature=signature,
        pip_requirements=pip_requirements(),
        code_paths=[str(Path(deblur.__file__).parent)],  # the pickled model needs the core package
        registered_model_name=registered_model_name or None,
        serialization_format="pickle",  # pt2 would trace a fixed input size
    )


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    mlflow.log_metrics(metrics, step=epoch)


def log_result(state: TrainState, registered_model_name: str) -> None:
    """At the end of training: the best PSNR and selection score and the best model (checkpoint file + MLflow model)."""
    if state.best_path is None:
        log.warning("no validation ran, so no best model to log")
        return
    mlflow.log_metrics({"best_psnr": state.best_psnr, "best_score": state.best_score})
    log_best_model(state.best_path, registered_model_name)
