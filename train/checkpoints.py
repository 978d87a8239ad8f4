"""Resumable checkpoints: the self-describing model checkpoint plus everything a run needs to go on.

A resumable checkpoint is a ``deblur.model`` checkpoint (``load_model`` reads it like any other)
with extra keys: optimiser, scheduler, scaler, the loop's position (epoch, batches done in the
current epoch, step), early-stopping state, Python/NumPy/torch RNG states, the training config
and the MLflow run id. Everything is plain types and tensors, loadable with ``weights_only``.

With a moving average of the weights (``--ema-decay``) the checkpoint's model weights are the
average, the ones validated, so ``load_model`` and the archiver get what the scores describe; the
optimiser's own weights travel as ``train_weights``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deblur.model import ModelConfig, read_checkpoint, save_checkpoint


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batches_done: int = 0  # optimiser steps taken in the current (unfinished) epoch
    step: int = 0  # optimiser steps in total
    best_psnr: float = -math.inf  # validation PSNR of the best checkpoint
    best_score: float = -math.inf  # its TrainConfig.selection_metric (PSNR unless there are extra sets)
    best_path: Path | None = None
    epochs_since_best: int = 0
    run_id: str = ""  # MLflow run, continued on resume
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "step": self.step,
            "best_psnr": self.best_psnr,
            "best_score": self.best_score,
            "best_path": str(self.best_path or ""),
            "epochs_since_best": self.epochs_since_best,
            "run_id": self.run_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        best_path = Path(data["best_path"]) if data["best_path"] else None
        # Checkpoints written before best_score existed selected on PSNR.
        return cls(**{"best_score": data["best_psnr"], **data, "best_path": best_path})


@dataclass
class Trainables:
    """What an optimiser step changes; ``model`` is the bare module (never the DDP wrapper)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: nn.Module | None = None  # moving average of ``model``'s weights (--ema-decay), validated and exported


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema ← decay·ema + (1 − decay)·model; the decay ramps up over the first steps so that a run
    from random weights is not averaged with them for thousands of steps."""
    rate = 1 - min(decay, (1 + step) / (10 + step))
    for averaged, current in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if averaged.is_floating_point():
            averaged.lerp_(current, rate)
        else:
            averaged.copy_(current)


def capture_rng() -> dict[str, Any]:
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resumable(
    path: Path, trainables: Trainables, model_config: ModelConfig, state: TrainState, train_config: dict[str, Any]
) -> Path:
    """Everything needed to continue the run exactly: weights, optimiser, schedule, scaler, RNG."""
    averaged = trainables.ema is not None
    return save_checkpoint(
        path,
        trainables.ema if averaged else trainables.model,
        model_config,
        epoch=state.epoch,
        metrics={"psnr": state.best_psnr},
        extra={
            "optimizer": trainables.optimizer.state_dict(),
            "scheduler": trainables.scheduler.state_dict(),
            "scaler": trainables.scaler.state_dict(),
            "train_state": state.to_dict(),
            "train_config": train_config,
            "rng": capture_rng(),
            **({"train_weights": trainables.model.state_dict()} if averaged else {}),
        },
    )


def restore_resumable(path: Path, trainables: Trainables) -> TrainState:
    """Load a resumable checkpoint into ``trainables`` and the RNGs; returns the loop's position."""
    payload = read_checkpoint(path)
    if "optimizer" not in payload:
        raise ValueError(f"{path} holds weights only; resume from a last.pt written during training")
    trainables.model.load_state_dict(payload.get("train_weights", payload["state_dict"]))
    trainables.optimizer.load_state_dict(payload["optimizer"])
    trainables.scheduler.load_state_dict(payload["scheduler"])
    trainables.scaler.load_state_dict(payload["scaler"])
    if trainables.ema is not None:  # a run that had no average yet starts one from its weights
        trainables.ema.load_state_dict(payload["state_dict"])
    restore_rng(payload["rng"])
    return TrainState.from_dict(payload["train_state"])
