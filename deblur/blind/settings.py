"""Every tunable of the kernel-aware path in one dataclass (torch-free).

Why a value was chosen, and what it measured, is in ``docs/blind_settings.md`` under the field's name;
``BlindSettings.from_mapping`` reads an experiment's overrides (a parsed YAML file, ``docs/experiments/``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deblur.settings import SettingsError, from_mapping

FALLBACKS = ("input", "network")


@dataclass(frozen=True)
class BlindSettings:
    # The blur model, estimated per photo among these candidates
    gammas: tuple[float, ...] = (1.0, 2.2)  # exponents from stored values to the values the blur mixes (1: stored)
    gamma: float = 2.2  # the exponent when only one is used (the deconvolution helpers' default domain)
    kernel_size: int = 81  # side of the square kernel support searched, in px (odd)
    first_support: int = 0  # the coarse-to-fine pyramid's support, px, widened to kernel_size after it (0: no)
    growth_iterations: int = 10  # alternations at full resolution with the widened support

    # The coarse-to-fine estimate
    crop: int = 512  # each estimate uses a crop of at most this side, in px
    consistency_crops: bool = True  # estimate again on a second, disjoint crop and require both to explain both
    min_consistency_crop: int = 256  # the second crop is used only where both crops are at least this big, px
    max_disagreement: float = 1.5  # a kernel may leave at most this times the other crop's own kernel's residual there
    joint_channels: bool = False  # one latent per colour channel, one kernel from all (False: from their mean)
    coarsest_kernel: int = 5  # kernel side at the coarsest scale, in px: sets the number of scales
    scale_factor: float = math.sqrt(2)  # size ratio between neighbouring scales
    coarsest_side: int = 16  # smallest image side at any scale, in px
    initial_line: int = 3  # the coarsest scale starts from a vertical line of this many px
    iterations: int = 5  # latent/kernel alternations per scale below full resolution
    finest_iterations: int = 10  # alternations at full resolution

    # The L0 latent image (Xu, Zheng & Jia 2013)
    latent_weight: float = 4e-3  # λ of the L0 gradient prior at the start of each scale
    latent_weight_decay: float = 1.1  # λ is divided by this after each alternation
    latent_weight_min: float = 1e-4  # ... down to this
    latent_beta_start: float = 2.0  # the splitting penalty β starts at this multiple of λ
    splitting_rate: float = 4.0  # β grows by this factor per splitting step
    latent_beta_max: float = 1e5  # splitting stops once β reaches this

    # The kernel step
    kernel_weight: float = 0.2  # Tikhonov weight on the kernel, relative to the latent's mean gradient energy
    prune_below: float = 0.05  # kernel values under this share of the peak are dropped
    minor_component: float = 0.1  # connected parts with less mass than this share of the heaviest are dropped

    # The non-blind deconvolution (isotropic total variation, Krishnan & Fergus 2009)
    restore_fidelity: float = 550.0  # weight of the data term
    restore_rounds: int = 8  # half-quadratic splitting rounds
    restore_beta_start: float = 1.0  # the splitting penalty of the first round
    restore_beta_growth: float = 2 * math.sqrt(2)  # its growth per round

    # The decision: when an estimate is trusted
    min_side: int = 128  # images with a shorter side are never estimated, in px
    min_spread: float = 1.5  # an estimate with a smaller RMS radius means no blur worth undoing: the photo is kept, px
    max_core_mass: float = 0.35  # a kernel keeping more of its light within a pixel of its peak barely blurs: kept
    min_peak: float = 0.005  # estimates whose largest value is lower (diffuse blobs) are turned away
    max_relative_residual: float = 8.0  # refused when the crop's residual is over this many times the no-blur one
    max_overshoot: float = 5e-3  # deconvolutions whose light leaves [0, 1] by more than this on average are refused
    low_frequency_cell: int = 64  # the network's answer keeps the input's means over cells of this size, px
    fallback: str = "input"  # what answers an image whose estimate is refused: "input" (the photo) or "network"

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise SettingsError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> BlindSettings:
        """Defaults overridden by the keys of ``values`` (an experiment's configuration, parsed from YAML)."""
        return from_mapping(cls, values or {})
