"""Padding shared by the architectures: any H×W in, the same H×W out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of (B, C, H, W) so H and W divide by ``multiple``; callers crop back.

    Replicate padding works for any size, even 1×1 (reflect needs pad < size).
    """
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
