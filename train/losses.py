"""Losses of seeds 000/001: Charbonnier, and 0.84·(1 − MS-SSIM) + 0.16·Charbonnier; NAFNet's PSNR loss."""

from __future__ import annotations

import logging

import torch
from pytorch_msssim import MS_SSIM
from torch import nn

log = logging.getLogger(__name__)
MS_SSIM_MIN_SIDE = 160  # 5 scales with an 11-px window: pytorch-msssim needs sides > 160


class CharbonnierLoss(nn.Module):
    """mean(sqrt((pred − target)² + ε²)): L1-like, smooth at zero, robust to outliers."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((pred - target).pow(2) + self.eps**2).mean()


class CombinedLoss(nn.Module):
    """alpha·(1 − MS-SSIM) + beta·Charbonnier on [-1, 1] images (data_range 2).

    MS-SSIM needs patches larger than 160 px and finite values; when it fails on a batch the
    structural term falls back to L1 and the failure is logged (and counted), so training goes on.
    """

    def __init__(self, alpha: float = 0.84, beta: float = 0.16, eps: float = 1e-3) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.ms_ssim = MS_SSIM(data_range=2.0, channel=3, size_average=True)
        self.charbonnier = CharbonnierLoss(eps)
        self.fallbacks = 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_c, target_c = pred.clamp(-1, 1).float(), target.clamp(-1, 1).float()
        # MS-SSIM of raw [-1, 1] values: shift to [0, 2] so the contrast terms stay positive.
        try:
            score = self.ms_ssim(pred_c + 1, target_c + 1)
            if not torch.isfinite(score):
                raise ValueError("MS-SSIM is not finite")
            structural = 1 - score.clamp(0, 1)
        except (AssertionError, ValueError, RuntimeError) as exc:
            self.fallbacks += 1
            # Warn once: a cause like too-small patches would otherwise repeat on every batch.
            report = log.warning if self.fallbacks == 1 else log.debug
            report("MS-SSIM failed on a batch (%s); using L1 for its structural term (counted in fallbacks)", exc)
            structural = (pred_c - target_c).abs().mean()
        return self.alpha * structural + self.beta * self.charbonnier(pred.float(), target.float())


class PSNRLoss(nn.Module):
    """−PSNR of each image in dB (from its own MSE), averaged over the batch: NAFNet's training loss.

    Errors count relative to each image's own: a nearly sharp patch whose output is 3 dB worse than its
    input costs as much as a 3 dB miss on heavy shake, where a pixel loss would barely notice it next to
    the heavy shake's large absolute errors. The loss is negative; lower is better, as for any loss.
    """

    def __init__(self, data_range: float = 2.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.data_range, self.eps = data_range, eps  # eps caps a perfect patch's loss at -100 dB

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (10 * torch.log10(mse / self.data_range**2 + self.eps)).mean()


def build_loss(name: str) -> nn.Module:
    if name == "charbonnier":
        return CharbonnierLoss()
    if name == "psnr":
        return PSNRLoss()
    if name == "combined":
        return CombinedLoss()
    raise ValueError(f"unknown loss {name!r}")
