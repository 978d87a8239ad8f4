"""Pick the fastest safe way to run a model on this device, as a predictor for ``restore_tiled``.

"auto" means bf16 autocast on CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 autocast on CUDA,
fp32 otherwise; "fp32" forces full precision. channels_last lets oneDNN/cuDNN pick their fastest
convolution kernels without changing results beyond float rounding.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from torch import nn

from deblur.tiling import Predictor

__all__ = [
    "PRECISIONS",
    "Predictor",
    "cpu_has_native_bf16",
    "make_predictor",
    "resolve_precision",
    "resolve_tile_batch",
]
GPU_TILE_BATCH = 4

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively (not emulated, which would be slower)."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker and checker())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def resolve_tile_batch(tile_batch: int, device: torch.device | str) -> int:
    """Tiles per forward pass; 0 means automatic: 1 on CPUs, 4 on GPUs.

    On CPU a batch of tiles outgrows the caches and every memory-bound layer (normalisation,
    upsampling, concatenation: half the U-Net's time) slows down: a 2048² image through DeblurUNet-16
    took 2.78 s one tile per call and 2.93 s in batches of four here. GPUs need batches to fill their cores.
    """
    if tile_batch < 0:
        raise ValueError(f"tile_batch must be ≥ 0 (0 = automatic), got {tile_batch}")
    if tile_batch:
        return tile_batch
    return GPU_TILE_BATCH if torch.device(device).type == "cuda" else 1


def make_predictor(
    model: nn.Module, device: torch.device | str, precision: str = "auto", channels_last: bool = True
) -> Predictor:
    """Wrap ``model`` as (B, C, H, W) → (B, C, H, W) float32, in eval mode, on ``device``."""
    device = torch.device(device)
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = resolve_precision(precision, device)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            return model(batch).float().contiguous()

    return predict
