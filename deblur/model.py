"""DeblurUNet (seed 001), NAFNet (seed 002) behind one dataclass config, self-describing checkpoints.

Imports torch only. Training, the TorchServe handler and export scripts all build models here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deblur.nafnet import NAFNet, NAFNetLocal
from deblur.padding import pad_to_multiple

CHECKPOINT_FORMAT = 1
ARCHITECTURES = ("deblur_unet", "nafnet")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a model; stored in every checkpoint as plain types.

    Fields added after the first checkpoints have defaults, so older checkpoints (which store only
    arch, in_ch, out_ch, base_ch, groups, residual) load unchanged.
    """

    arch: str = "deblur_unet"  # one of ARCHITECTURES
    in_ch: int = 3
    out_ch: int = 3
    # Channels of the first level: DeblurUNet's base, NAFNet's width.
    base_ch: int = 32
    # DeblurUNet only: GroupNorm groups, and the global residual (predict the correction and add
    # it to the input; off in the seed's spec). NAFNet is always residual, as published.
    groups: int = 8
    residual: bool = False
    # DeblurUNet only: residual blocks after the bottleneck (0 = the seed's spec). Each adds depth where
    # the feature map is 1/16 of the frame: ±32 px of receptive field and 1.18 M parameters at base 16
    # for a few % more time per tile (bench.models). A new block starts as the identity, so a trained
    # model grows into a deeper one without losing what it learned (train --init-from).
    bottleneck_blocks: int = 0
    # NAFNet only: blocks per encoder level, in the middle, per decoder level (NAFNet-GoPro's defaults).
    enc_blocks: tuple[int, ...] = (1, 1, 1, 28)
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)
    # NAFNet only, inference: 0 = global channel attention as trained; N > 0 = TLC, local averages
    # over N×N input pixels (typically 1.5 × the training patch size). Same weights either way.
    tlc_window: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        # Lists (YAML, JSON) become tuples so the config stays hashable and compares equal.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by GroupNorm and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """x + conv(ReLU(GroupNorm(conv(x)))); the second convolution starts at zero: a new block is the identity."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpBlock(nn.Module):
    """Bilinear ×2 upsample + 3×3 conv (no checkerboard), skip concat, then a ConvBlock."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
        )
        self.conv = ConvBlock(out_ch * 2, out_ch, groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            # Only reachable if a caller bypasses the padding in DeblurUNet.forward.
            skip = F.interpolate(skip, size=x.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class DeblurUNet(nn.Module):
    """4-level U-Net: encoder c→2c→4c→8c with MaxPool, bottleneck 16c, mirrored decoder.

    Input and output are (B, 3, H, W) in [-1, 1]; the output is not clamped (no final
    activation), callers clamp at inference. Any H×W works: the input is padded to a
    multiple of 16 inside ``forward`` and the output cropped back.
    """

    levels = 4

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c, g = self.config.base_ch, self.config.groups
        self.enc1 = ConvBlock(self.config.in_ch, c, g)
        self.enc2 = ConvBlock(c, 2 * c, g)
        self.enc3 = ConvBlock(2 * c, 4 * c, g)
        self.enc4 = ConvBlock(4 * c, 8 * c, g)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(8 * c, 16 * c, g)
        # Empty by default: no parameters, so checkpoints of the seed's architecture load unchanged.
        self.deep = nn.Sequential(*(ResidualBlock(16 * c, g) for _ in range(self.config.bottleneck_blocks)))
        self.up4 = UpBlock(16 * c, 8 * c, g)
        self.up3 = UpBlock(8 * c, 4 * c, g)
        self.up2 = UpBlock(4 * c, 2 * c, g)
        self.up1 = UpBlock(2 * c, c, g)
        self.final = nn.Conv2d(c, self.config.out_ch, kernel_size=1)
        if self.config.residual:
            # Start as the identity map: an untrained residual model returns its input.
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, 2**self.levels)
        e1 = self.enc1(padded)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        e4 = self.enc4(self.pool(e3))
        b = self.deep(self.bottleneck(self.pool(e4)))
        d = self.up1(self.up2(self.up3(self.up4(b, e4), e3), e2), e1)
        out = self.final(d)
        if self.config.residual:
            out = out + padded
        return out[..., :height, :width]


def build_nafnet(config: ModelConfig) -> NAFNet:
    if config.in_ch != config.out_ch:
        raise ValueError(f"NAFNet adds its input to its output: in_ch must equal out_ch, got {config}")
    sizes = dict(
        in_ch=config.in_ch,
        width=config.base_ch,
        enc_blocks=config.enc_blocks,
        middle_blocks=config.middle_blocks,
        dec_blocks=config.dec_blocks,
    )
    if config.tlc_window > 0:
        return NAFNetLocal(**sizes, window=config.tlc_window)
    return NAFNet(**sizes)


def build_model(config: ModelConfig) -> nn.Module:
    """Build the architecture named by ``config.arch``."""
    if config.arch == "deblur_unet":
        if config.tlc_window:
            raise ValueError("tlc_window applies to NAFNet only (DeblurUNet has no global pooling)")
        return DeblurUNet(config)
    if config.arch == "nafnet":
        return build_nafnet(config)
    raise ValueError(f"unknown architecture {config.arch!r} (known: {', '.join(ARCHITECTURES)})")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    epoch: int,
    metrics: dict[str, float],
    half: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint (plain types + tensors, loadable with weights_only).

    ``half=True`` stores floating weights as fp16 to halve the file; ``load_model`` restores fp32.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_config": asdict(config),
        "state_dict": state,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if extra:
        payload.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's payload safely (no pickled code is executed)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "model_config" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path} is not a deblur checkpoint (no model_config/state_dict)")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu", tlc_window: int | None = None) -> nn.Module:
    """Rebuild any checkpoint's model in eval mode, fp32, on ``device``; ``tlc_window`` (NAFNet) overrides the
    stored TLC setting (0: off)."""
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload["model_config"])
    if tlc_window is not None:
        config = replace(config, tlc_window=tlc_window)
    model = build_model(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    model.load_state_dict(state)
    return model.to(device).eval()
