"""The training loop: steps, validation through the serving tiler, checkpoints, MLflow.

``main(config)`` reads as the list of steps; each step is a short function.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from deblur.metrics import psnr, ssim, to_unit_range
from deblur.model import ModelConfig, build_model, count_parameters, read_checkpoint, save_checkpoint
from deblur.tiling import restore_tiled
from train.config import TrainConfig
from train.data import FrameDataset, PatchDataset, check_pairs, find_pairs
from train.losses import build_loss

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_psnr: float = -math.inf
    best_path: Path | None = None
    epochs_since_best: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU, fp16 on CUDA; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_loaders(config: TrainConfig) -> tuple[DataLoader, FrameDataset]:
    train_pairs = find_pairs(config.data / "train")
    val_pairs = find_pairs(config.data / "val")
    check_pairs(train_pairs, min_side=config.patch_size)
    check_pairs(val_pairs)
    if config.max_val_images:
        val_pairs = val_pairs[: config.max_val_images]
    log.info("data: %d training pairs, %d validation frames", len(train_pairs), len(val_pairs))
    patches = PatchDataset(train_pairs, config.patch_size, config.repeat, config.seed)
    loader = DataLoader(
        patches,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(patches) >= config.batch_size,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return loader, FrameDataset(val_pairs)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
    state: TrainState,
) -> dict[str, float]:
    model.train()
    losses, norms = [], []
    for blur, sharp in tqdm(loader, desc=f"epoch {state.epoch + 1}", leave=False, dynamic_ncols=True):
        blur, sharp = blur.to(device, non_blocking=True), sharp.to(device, non_blocking=True)
        with autocast_context(device, config.amp):
            prediction = model(blur)
        loss = loss_fn(prediction.float(), sharp)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        state.step += 1
        losses.append(loss.item())
        norms.append(float(grad_norm))
    return {"train_loss": float(np.mean(losses)), "grad_norm": float(np.mean(norms))}


@torch.no_grad()
def evaluate(
    model: nn.Module, frames: FrameDataset, loss_fn: nn.Module, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """Full-frame PSNR/SSIM through the serving tiler (so val numbers mean what served numbers mean)."""
    model.eval()
    scores: dict[str, list[float]] = {"val_loss": [], "psnr": [], "ssim": [], "input_psnr": []}
    for blur, sharp in frames:
        restored = restore_tiled(model, blur, config.val_tile, config.val_overlap, device=device).clamp(-1, 1)
        scores["val_loss"].append(loss_fn(restored[None], sharp[None]).item())
        out01, ref01 = to_unit_range(restored), to_unit_range(sharp)
        scores["psnr"].append(psnr(out01, ref01))
        scores["ssim"].append(ssim(out01, ref01))
        scores["input_psnr"].append(psnr(to_unit_range(blur), ref01))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def save_resumable(
    path: Path,
    model: nn.Module,
    model_config: ModelConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    config: TrainConfig,
) -> Path:
    """Everything needed to continue the run exactly: weights, optimiser, schedule, scaler, RNG."""
    return save_checkpoint(
        path,
        model,
        model_config,
        epoch=state.epoch,
        metrics={"psnr": state.best_psnr},
        extra={
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "train_state": {
                "step": state.step,
                "best_psnr": state.best_psnr,
                "best_path": str(state.best_path or ""),
                "epochs_since_best": state.epochs_since_best,
            },
            "train_config": {k: str(v) for k, v in vars(config).items()},
            "torch_rng": torch.get_rng_state(),
        },
    )


def restore_resumable(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    payload = read_checkpoint(path)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    saved = payload["train_state"]
    return TrainState(
        epoch=payload["epoch"],
        step=saved["step"],
        best_psnr=saved["best_psnr"],
        best_path=Path(saved["best_path"]) if saved["best_path"] else None,
        epochs_since_best=saved["epochs_since_best"],
    )


def save_if_best(
    model: nn.Module, model_config: ModelConfig, metrics: dict[str, float], config: TrainConfig, state: TrainState
) -> bool:
    if metrics["psnr"] <= state.best_psnr:
        state.epochs_since_best += config.val_every
        return False
    state.best_psnr, state.epochs_since_best = metrics["psnr"], 0
    name = f"best_epoch_{state.epoch}_psnr_{metrics['psnr']:.2f}.pt"
    state.best_path = save_checkpoint(config.out_dir / name, model, model_config, epoch=state.epoch, metrics=metrics)
    save_checkpoint(config.out_dir / "best.pt", model, model_config, epoch=state.epoch, metrics=metrics)
    log.info("new best: %s", state.best_path)
    return True


def main(config: TrainConfig) -> TrainState:
    """Train, validate every ``val_every`` epochs, keep the best checkpoint; returns the final state."""
    seed_everything(config.seed)
    device = pick_device(config.device)
    loader, frames = make_loaders(config)
    model_config = ModelConfig(base_ch=config.base_ch, residual=config.residual)
    model = build_model(model_config).to(device)
    loss_fn = build_loss(config.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    state = TrainState()
    if config.resume:
        state = restore_resumable(config.resume, model, optimizer, scheduler, scaler)
        log.info("resumed from %s at epoch %d", config.resume, state.epoch)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    log.info("model %s: %d parameters on %s", model_config, count_parameters(model), device)
    mlflow.set_experiment(config.experiment)
    with mlflow.start_run(run_name=config.run_name or None):
        mlflow.log_params(config.to_params() | {"parameters": count_parameters(model)})
        run_epochs(model, model_config, loader, frames, loss_fn, optimizer, scheduler, scaler, config, device, state)
        if state.best_path is not None:
            mlflow.log_artifact(str(state.best_path), artifact_path="checkpoints")
            mlflow.log_metric("best_psnr", state.best_psnr)
    return state


def run_epochs(
    model: nn.Module,
    model_config: ModelConfig,
    loader: DataLoader,
    frames: FrameDataset,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
    state: TrainState,
) -> None:
    while state.epoch < config.epochs:
        started = time.perf_counter()
        loader.dataset.set_epoch(state.epoch)
        metrics = train_one_epoch(model, loader, loss_fn, optimizer, scaler, config, device, state)
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        state.epoch += 1
        if state.epoch % config.val_every == 0 or state.epoch == config.epochs:
            metrics |= evaluate(model, frames, loss_fn, config, device)
            save_if_best(model, model_config, metrics, config, state)
        metrics["epoch_time"] = time.perf_counter() - started
        mlflow.log_metrics(metrics, step=state.epoch)
        state.history.append(metrics)
        log.info("epoch %d: %s", state.epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        save_resumable(config.out_dir / "last.pt", model, model_config, optimizer, scheduler, scaler, state, config)
        if state.epochs_since_best >= config.patience:
            log.info("early stop: no PSNR gain in %d epochs", state.epochs_since_best)
            break
