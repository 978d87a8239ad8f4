"""The training loop: steps, validation through the serving tiler, checkpoints, MLflow, DDP.

``main(config)`` reads as the list of steps; each step is a short function. The same code runs
in one process or under ``torchrun`` (rank 0 validates, checkpoints, logs and talks to MLflow).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from deblur.imageio import to_uint8
from deblur.metrics import score_restoration
from deblur.model import ModelConfig, build_model, count_parameters, read_checkpoint, save_checkpoint
from deblur.runtime import cpu_has_native_bf16
from deblur.tiling import restore_tiled
from train import tracking
from train.checkpoints import Trainables, TrainState, restore_resumable, save_resumable, update_ema
from train.config import TrainConfig, val_label
from train.data import (
    EpochSampler,
    FrameDataset,
    Pair,
    PatchDataset,
    check_pairs,
    find_pairs,
    init_worker,
    training_splits,
)
from train.distributed import DistContext, barrier, broadcast_flag, init_distributed, mean_across_ranks, shutdown
from train.losses import MS_SSIM_MIN_SIDE, build_loss

log = logging.getLogger(__name__)
LAST = "last.pt"


@dataclass
class Session:
    """One training run's objects, so the steps below take one argument instead of ten."""

    config: TrainConfig
    context: DistContext
    device: torch.device
    trainables: Trainables
    net: nn.Module  # the model as trained: DDP-wrapped under torchrun
    loss_fn: nn.Module
    loader: DataLoader
    frames: FrameDataset
    extra_frames: dict[str, FrameDataset]  # --extra-val sets by label
    state: TrainState


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


def load_pairs(config: TrainConfig) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs, every file checked before any training starts."""
    train_pairs, val_pairs = training_splits(
        config.data, config.val_dir, config.val_fraction, config.blur_kind, config.seed
    )
    check_pairs(train_pairs, min_side=config.patch_size)
    check_pairs(val_pairs)
    if config.loss == "combined" and config.patch_size <= MS_SSIM_MIN_SIDE:
        log.warning("MS-SSIM needs patches over %d px: with %d px the combined loss uses L1 instead",
                    MS_SSIM_MIN_SIDE, config.patch_size)  # fmt: skip
    if config.max_val_images:
        val_pairs = val_pairs[: config.max_val_images]
    log.info("data: %d training pairs, %d validation frames", len(train_pairs), len(val_pairs))
    return train_pairs, val_pairs


def load_extra_val(config: TrainConfig) -> dict[str, FrameDataset]:
    """The --extra-val sets by label, every file checked before training starts."""
    sets = {}
    for path in config.extra_val:
        pairs = find_pairs(path, config.blur_kind)
        check_pairs(pairs)
        sets[val_label(path)] = FrameDataset(pairs)
        log.info("extra validation set %s: %d frames from %s", val_label(path), len(pairs), path)
    return sets


def make_loader(pairs: list[Pair], config: TrainConfig, context: DistContext) -> DataLoader:
    patches = PatchDataset(pairs, config.patch_size, config.repeat, config.seed)
    sampler = EpochSampler(patches, context.world_size, context.rank, config.seed)
    return DataLoader(
        patches,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=len(sampler) >= config.batch_size,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        worker_init_fn=init_worker,
        generator=torch.Generator().manual_seed(config.seed),
    )


def build_trainables(config: TrainConfig, device: torch.device) -> Trainables:
    model = build_model(config.model_config()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay else None
    return Trainables(model, optimizer, scheduler, scaler, ema)


def wrap_for_training(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    if not context.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def train_step(session: Session, blur: torch.Tensor, sharp: torch.Tensor) -> tuple[float, float]:
    """One optimiser step; returns (loss, gradient norm before clipping)."""
    config, parts, device = session.config, session.trainables, session.device
    blur, sharp = blur.to(device, non_blocking=True), sharp.to(device, non_blocking=True)
    with autocast_context(device, config.amp):
        prediction = session.net(blur)
    loss = session.loss_fn(prediction.float(), sharp)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.unscale_(parts.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(session.net.parameters(), config.grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.ema is not None:
        update_ema(parts.ema, parts.model, config.ema_decay, session.state.step)
    return loss.item(), float(grad_norm)


def train_one_epoch(session: Session) -> dict[str, float]:
    """The rest of the current epoch (all of it unless resuming mid-epoch); means over all ranks."""
    state = session.state
    session.net.train()
    session.loader.sampler.set_epoch(state.epoch, skip=state.batches_done * session.config.batch_size)
    losses, norms = [], []
    batches = tqdm(session.loader, desc=f"epoch {state.epoch + 1}", leave=False, disable=not session.context.is_main)
    for blur, sharp in batches:
        loss, grad_norm = train_step(session, blur, sharp)
        state.batches_done += 1
        state.step += 1
        losses.append(loss)
        norms.append(grad_norm)
        batches.set_postfix(loss=f"{loss:.4f}")
    means = {"train_loss": np.mean(losses) if losses else math.nan, "grad_norm": np.mean(norms) if norms else math.nan}
    return {k: mean_across_ranks(float(v), session.context, session.device) for k, v in means.items()}


def inference_model(session: Session) -> tuple[nn.Module, ModelConfig]:
    """The model as validated and exported: the trained one (its moving average with --ema-decay),
    or its TLC twin sharing the weights."""
    parts = session.trainables
    model = parts.ema if parts.ema is not None else parts.model
    config = session.config.model_config(inference=True)
    if config == session.config.model_config():
        return model.eval(), config
    twin = build_model(config).to(session.device)
    twin.load_state_dict(model.state_dict())
    return twin.eval(), config


def sample_strip(blur: torch.Tensor, restored: torch.Tensor, sharp: torch.Tensor) -> np.ndarray:
    """(H, 3W, 3) uint8: blurred input | restored | ground truth."""
    return np.concatenate([to_uint8(image) for image in (blur, restored, sharp)], axis=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    frames: FrameDataset,
    loss_fn: nn.Module,
    config: TrainConfig,
    device: torch.device,
    keep_samples: bool = True,
) -> tuple[dict[str, float], list[tuple[str, np.ndarray]]]:
    """Full-frame PSNR/SSIM through the serving tiler and the gain over the input, and (``keep_samples``)
    the first ``num_samples`` frames as strips."""
    scores: dict[str, list[float]] = {"val_loss": [], "psnr": [], "ssim": [], "input_psnr": []}
    samples = []
    for index, (blur, sharp) in enumerate(frames):
        restored = restore_tiled(model, blur, config.val_tile, config.val_overlap, device=device).clamp(-1, 1)
        scores["val_loss"].append(loss_fn(restored[None], sharp[None]).item())
        scored = score_restoration(restored, sharp, blur)  # the served rule: the output rounded to 8 bits
        scores["psnr"].append(scored.psnr)
        scores["ssim"].append(scored.ssim)
        scores["input_psnr"].append(scored.input_psnr)
        if keep_samples and index < config.num_samples:
            samples.append((frames.name(index), sample_strip(blur, restored, sharp)))
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    return means | {"gain": means["psnr"] - means["input_psnr"]}, samples


def score_extra_sets(model: nn.Module, session: Session, main_gain: float) -> dict[str, float]:
    """``<label>/<metric>`` for every --extra-val set, and ``mean_gain`` over them and the main set."""
    scores, gains = {}, [main_gain]
    for label, frames in session.extra_frames.items():
        extra, _ = evaluate(model, frames, session.loss_fn, session.config, session.device, keep_samples=False)
        scores |= {f"{label}/{name}": value for name, value in extra.items()}
        gains.append(extra["gain"])
    if session.extra_frames:
        scores["mean_gain"] = float(np.mean(gains))
    return scores


def validate(session: Session, train_metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0: evaluate every validation set, log the sample strips, keep the checkpoint if it is the best so far."""
    model, model_config = inference_model(session)
    scores, samples = evaluate(model, session.frames, session.loss_fn, session.config, session.device)
    tracking.log_samples(samples, session.state.epoch)
    metrics = train_metrics | scores | score_extra_sets(model, session, scores["gain"])
    save_if_best(model, model_config, metrics, session.config, session.state)
    return metrics


def save_if_best(
    model: nn.Module, model_config: ModelConfig, metrics: dict[str, float], config: TrainConfig, state: TrainState
) -> bool:
    score = metrics[config.selection_metric]
    if score <= state.best_score:
        state.epochs_since_best += config.val_every
        return False
    state.best_score, state.best_psnr, state.epochs_since_best = score, metrics["psnr"], 0
    name = f"best_epoch_{state.epoch}_psnr_{metrics['psnr']:.2f}.pt"
    state.best_path = save_checkpoint(config.out_dir / name, model, model_config, epoch=state.epoch, metrics=metrics)
    save_checkpoint(config.out_dir / "best.pt", model, model_config, epoch=state.epoch, metrics=metrics)
    log.info("new best (%s %.4f): %s", config.selection_metric, score, state.best_path)
    return True


def save_last(session: Session) -> None:
    path = session.config.out_dir / LAST
    save_resumable(path, session.trainables, session.config.model_config(), session.state, session.config.to_dict())
    log.info("resumable checkpoint %s (epoch %d, step %d)", path, session.state.epoch, session.state.step)


def end_epoch(session: Session, metrics: dict[str, float]) -> bool:
    """Rank 0's bookkeeping after an epoch; returns whether to stop early (decided on rank 0)."""
    state, config = session.state, session.config
    if not session.context.is_main:
        return False
    tracking.log_epoch(metrics, state.epoch)
    state.history.append(metrics)
    log.info("epoch %d: %s", state.epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if state.epoch % config.checkpoint_every == 0:
        save_last(session)
    if state.epochs_since_best >= config.patience:
        log.info("early stop: no better %s in %d epochs", config.selection_metric, state.epochs_since_best)
        return True
    return False


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, ``docker stop``, a scheduler's preemption) stops training as Ctrl-C does.

    Also the only polite stop for a run started in the background by a script: such jobs
    inherit an ignored SIGINT, so Ctrl-C and ``kill -INT`` never reach them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_epochs(session: Session) -> None:
    """Train until ``epochs`` or early stopping; Ctrl-C or SIGTERM writes a resumable checkpoint first."""
    state, config = session.state, session.config
    try:
        with sigterm_as_ctrl_c():
            train_epochs(session)
    except KeyboardInterrupt:
        if session.context.is_main:
            save_last(session)
            log.warning("interrupted: continue with --resume %s", config.out_dir / LAST)
        raise
    if session.context.is_main and state.epoch % config.checkpoint_every:
        save_last(session)  # the final state, unless end_epoch just wrote it


def train_epochs(session: Session) -> None:
    """Epochs until ``epochs`` or early stopping (decided on rank 0)."""
    state, config = session.state, session.config
    while state.epoch < config.epochs:
        started = time.perf_counter()
        metrics = train_one_epoch(session)
        metrics["lr"] = session.trainables.optimizer.param_groups[0]["lr"]
        session.trainables.scheduler.step()
        state.epoch, state.batches_done = state.epoch + 1, 0
        if session.context.is_main and (state.epoch % config.val_every == 0 or state.epoch == config.epochs):
            metrics = validate(session, metrics)
        barrier(session.context)
        metrics["epoch_time"] = time.perf_counter() - started
        if broadcast_flag(end_epoch(session, metrics), session.context, session.device):
            return


def check_resume_schedule(config: TrainConfig, trainables: Trainables) -> None:
    """The cosine schedule is fixed by --epochs when a run starts; a resumed run must keep it."""
    planned = trainables.scheduler.T_max
    if planned != config.epochs:
        raise ValueError(f"{config.resume} was trained with --epochs {planned}; resume with --epochs {planned}")


def load_initial_weights(path: Path, model: nn.Module, expected: ModelConfig) -> None:
    """Fine-tuning: copy a checkpoint's weights into ``model``. The architectures must match, except that
    ``model`` may have more bottleneck blocks (growing): those it adds start as the identity."""
    checkpoint = read_checkpoint(path)
    stored = dataclasses.replace(ModelConfig.from_dict(checkpoint["model_config"]), tlc_window=0)
    grows = stored.bottleneck_blocks < expected.bottleneck_blocks
    if dataclasses.replace(stored, bottleneck_blocks=expected.bottleneck_blocks) != expected or (
        stored.bottleneck_blocks > expected.bottleneck_blocks
    ):
        raise ValueError(f"{path} holds {stored}, but this run trains {expected}")
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=not grows)
    if unexpected or any(not key.startswith("deep.") for key in missing):
        raise ValueError(f"{path} does not fit {expected}: missing {missing}, unexpected {unexpected}")
    if grows:
        log.info("grown from %d to %d bottleneck blocks; the new ones start as the identity",
                 stored.bottleneck_blocks, expected.bottleneck_blocks)  # fmt: skip


def build_session(config: TrainConfig, context: DistContext, device: torch.device) -> Session:
    """Data checked, model, optimiser and schedule built, and restored when resuming."""
    train_pairs, val_pairs = load_pairs(config)
    trainables = build_trainables(config, device)
    state = TrainState()
    if config.resume:
        state = restore_resumable(config.resume, trainables)
        check_resume_schedule(config, trainables)
        log.info("resumed from %s at epoch %d, step %d", config.resume, state.epoch, state.step)
    elif config.init_from:
        load_initial_weights(config.init_from, trainables.model, config.model_config())
        if trainables.ema is not None:
            trainables.ema.load_state_dict(trainables.model.state_dict())
        log.info("initial weights from %s", config.init_from)
    if config.amp and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("--amp on a CPU without native bf16: autocast is emulated and likely slower than fp32")
    log.info("model %s: %d parameters on %s ×%d", config.model_config(), count_parameters(trainables.model),
             device, context.world_size)  # fmt: skip
    return Session(
        config=config,
        context=context,
        device=device,
        trainables=trainables,
        net=wrap_for_training(trainables.model, context, device),
        loss_fn=build_loss(config.loss),
        loader=make_loader(train_pairs, config, context),
        frames=FrameDataset(val_pairs),
        extra_frames=load_extra_val(config),
        state=state,
    )


def main(config: TrainConfig) -> TrainState:
    """Train, validate every ``val_every`` epochs, keep the best checkpoint; returns the final state."""
    context, device = init_distributed(config.device)
    try:
        seed_everything(config.seed)
        session = build_session(config, context, device)
        if not context.is_main:
            run_epochs(session)
            barrier(context)  # leave the process group together (a gloo rank torn down early can abort)
            return session.state
        config.out_dir.mkdir(parents=True, exist_ok=True)
        run_info = {"parameters": count_parameters(session.trainables.model), "world_size": context.world_size}
        with tracking.tracked_run(config, session.state, run_info):
            run_epochs(session)
            tracking.log_result(session.state, config.registered_model_name)
        barrier(context)  # after rank 0's last checkpoint and MLflow logging
        return session.state
    finally:
        shutdown(context)
