"""NAFNet (Chen et al. 2022, "Simple Baselines for Image Restoration") and its TLC variant.

Imports torch only. Module and parameter names follow megvii-research/NAFNet's ``NAFNet_arch.py``
so its published state dicts load (mind the range: the official weights expect [0, 1] input, this
project feeds [-1, 1]).

``NAFNetLocal`` is the test-time local converter (TLC) of seed 002: the same weights, but the
simplified channel attention averages over a local window instead of the whole image, so a model
trained on 256-px patches sees the same statistics on a full 1280×720 frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deblur.padding import pad_to_multiple


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        y = (x - mean) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: a GLU without the nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class LocalAvgPool2d(nn.Module):
    """Mean over a ``window``×``window`` neighbourhood of each pixel, same output size (TLC).

    Windows larger than the map shrink to the map, so on small inputs this equals global pooling.
    Computed with an integral image (box sums in O(1) per pixel); borders replicate the nearest
    full window, as NAFNet's ``AvgPool2d(auto_pad=True)`` does.
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        k1, k2 = min(height, self.window), min(width, self.window)
        # Integral image in float64: long cumulative sums in fp32 lose the small differences.
        s = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # (B, C, H+1, W+1)
        box = s[..., k1:, k2:] - s[..., :-k1, k2:] - s[..., k1:, :-k2] + s[..., :-k1, :-k2]
        out = (box / (k1 * k2)).to(x.dtype)  # (B, C, H-k1+1, W-k2+1)
        pad_h, pad_w = height - out.shape[-2], width - out.shape[-1]
        padding = (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2)
        return F.pad(out, padding, mode="replicate") if pad_h or pad_w else out


class DynamicLocalAvgPool2d(LocalAvgPool2d):
    """``LocalAvgPool2d`` for traces and exports: the same means (float rounding aside), with the window and the
    borders computed as tensors from the map's positions instead of Python ints from its size, so
    ``torch.jit.trace`` and ``torch.export`` keep them dynamic (and torch.export reasons about no ``min`` of
    sizes). Slower in eager: it gathers over the whole map, where the integral image computes the full
    windows only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return box_mean(box_mean(x.double(), -2, self.window), -1, self.window).to(x.dtype)


def box_mean(x: torch.Tensor, dim: int, window: int) -> torch.Tensor:
    """Mean over ``window`` neighbours along ``dim`` (-2 or -1), the whole axis where it is shorter; each
    position takes the full window nearest to being centred on it, so the borders repeat the outermost one."""
    positions = torch.arange(x.shape[dim], device=x.device)
    length = positions[-1] + 1
    size = length.clamp(max=window)
    starts = (positions - (size - 1) // 2).clamp(min=0).minimum(length - size)
    sums = F.pad(x.cumsum(dim), (1, 0) if dim == -1 else (0, 0, 1, 0))  # a zero before each line's first sum
    return (sums.index_select(dim, starts + size) - sums.index_select(dim, starts)) / size


class NAFBlock(nn.Module):
    """Depthwise conv + SimpleGate + simplified channel attention, then a gated FFN; both residual."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw_channels = channels * dw_expand
        self.conv1 = nn.Conv2d(channels, dw_channels, 1)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, 3, padding=1, groups=dw_channels)
        self.conv3 = nn.Conv2d(dw_channels // 2, channels, 1)
        # Simplified channel attention: pooled features → 1×1 conv → per-channel scale (no MLP, no sigmoid).
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_channels // 2, dw_channels // 2, 1))
        self.sg = SimpleGate()
        ffn_channels = ffn_expand * channels
        self.conv4 = nn.Conv2d(channels, ffn_channels, 1)
        self.conv5 = nn.Conv2d(ffn_channels // 2, channels, 1)
        self.norm1 = LayerNorm2d(channels)
        self.norm2 = LayerNorm2d(channels)
        # Zero-initialised branch scales: every block starts as the identity.
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[NAFBlock(channels) for _ in range(blocks)])


class NAFNet(nn.Module):
    """U-shaped stack of NAFBlocks: stride-2 conv downsampling, PixelShuffle upsampling, additive skips.

    Input and output are (B, C, H, W); the network predicts a correction added to its input. Any
    H×W works: the input is padded to a multiple of 2^levels in ``forward`` and cropped back.
    """

    def __init__(
        self,
        in_ch: int = 3,
        width: int = 32,
        enc_blocks: Sequence[int] = (1, 1, 1, 28),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks and dec_blocks need one entry per level: {enc_blocks} vs {dec_blocks}")
        self.intro = nn.Conv2d(in_ch, width, 3, padding=1)
        self.ending = nn.Conv2d(width, in_ch, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.decoders, self.ups = nn.ModuleList(), nn.ModuleList()
        channels = width
        for count in enc_blocks:
            self.encoders.append(_stage(channels, count))
            self.downs.append(nn.Conv2d(channels, 2 * channels, 2, stride=2))
            channels *= 2
        self.middle_blks = _stage(channels, middle_blocks)
        for count in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(_stage(channels, count))
        self.levels = len(enc_blocks)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        height, width = inp.shape[-2:]
        padded = pad_to_multiple(inp, 2**self.levels)
        x = self.intro(padded)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            x = decoder(up(x) + skip)
        out = self.ending(x) + padded
        return out[..., :height, :width]

    def stages(self) -> list[tuple[nn.Sequential, int]]:
        """Every stage of blocks with its downsampling factor relative to the input."""
        encoders = [(stage, 2**level) for level, stage in enumerate(self.encoders)]
        decoders = [(stage, 2 ** (self.levels - 1 - i)) for i, stage in enumerate(self.decoders)]
        return [*encoders, (self.middle_blks, 2**self.levels), *decoders]


class NAFNetLocal(NAFNet):
    """NAFNet with test-time local statistics (TLC): same parameters, local instead of global pooling.

    ``window`` is in input pixels, typically 1.5 × the training patch size (NAFNet uses 384 for
    256-px patches); a stage at 1/f resolution averages over ``window // f`` feature pixels, so
    every level sees the context it saw in training.
    """

    def __init__(self, *args: object, window: int = 384, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.window = window
        for stage, factor in self.stages():
            for block in stage:
                block.sca[0] = LocalAvgPool2d(max(1, window // factor))
