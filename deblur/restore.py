"""The one place that decides how an image is restored: a trusted blind deconvolution, else the network.

``plan_restoration`` says what a request will run before anything runs (the tile layout, the network
passes, whether the kernel is estimated); ``restore_image`` runs it. The handler, the folder CLI,
``train.evaluate`` and the benchmarks all call ``restore_image``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deblur.blind.decide import KernelEstimate, blind_deconvolution, can_estimate
from deblur.blind.fourier import padded_shape
from deblur.blind.settings import BlindSettings
from deblur.settings import RestoreOptions, ServingSettings
from deblur.tiling import DEFAULT_ALIGN, Predictor, TileLayout, restore_tiled, tile_layout

ENSEMBLE = tuple((turns, flip) for turns in range(4) for flip in (False, True))  # the 8 dihedral variants


@dataclass(frozen=True)
class Network:
    """A restoration network ready to run: (B, 3, h, w) → (B, 3, h, w) in [-1, 1], and how to feed it."""

    predict: Predictor
    tile_batch: int = 1  # tiles per call
    device: torch.device | None = None  # where the tiles go (None: the image's device)


@dataclass(frozen=True)
class Plan:
    """What restoring an image will run, known before any of it runs."""

    layout: TileLayout  # the network's tiles over the image
    passes: int  # network passes over the image: 8 with self-ensemble, else 1
    estimate: bool  # whether the kernel-aware path runs first
    crops: tuple[tuple[int, int], ...] = ()  # (H, W) of each centre crop a kernel may be estimated on (the retry's too)
    deconvolutions: tuple[tuple[int, int], ...] = ()  # padded Fourier grids of the judging and final deconvolutions

    @property
    def tiles(self) -> int:
        return self.layout.count * self.passes

    def cost_s(self, settings: ServingSettings) -> float:
        """The most compute this plan can take, in seconds of the reference CPU (``settings``' cost model):
        the kernel estimates and deconvolutions, plus the network's tiles where no estimate is trusted."""
        rows, cols = (-(-axis.tile // DEFAULT_ALIGN) * DEFAULT_ALIGN for axis in (self.layout.rows, self.layout.cols))
        network = self.tiles * (settings.tile_call_s + settings.tile_pixel_s * rows * cols)
        estimates = sum(h * w for h, w in self.crops) * settings.estimate_pixel_s
        judged, *whole = [h * w * settings.deconvolve_pixel_s for h, w in self.deconvolutions] or [0.0]
        # Each estimate is judged by deconvolving the first crop; a trusted one then answers with the whole
        # image's deconvolution, an untrusted one with the network
        return estimates + judged * len(self.crops) + max([network, *whole])


@dataclass(frozen=True)
class RestoreReport:
    """How an image was restored."""

    path: str  # "deconvolution" or "network"
    tiles: int  # tiles run through the network (0 when the deconvolution answered)
    kernel: KernelEstimate | None  # the blind estimate; None when none was made (not asked, or the image too small)


def plan_restoration(height: int, width: int, options: RestoreOptions, blind: BlindSettings = BlindSettings()) -> Plan:
    layout = tile_layout(height, width, options.tile_size, options.overlap)
    passes = len(ENSEMBLE) if options.self_ensemble else 1
    if not (options.kernel_aware and can_estimate((height, width), blind)):
        return Plan(layout, passes, options.kernel_aware)
    crops = [(min(height, blind.crop), min(width, blind.crop))]
    if blind.retry_crop is not None and (min(height, blind.retry_crop), min(width, blind.retry_crop)) != crops[0]:
        crops.append((min(height, blind.retry_crop), min(width, blind.retry_crop)))
    grids = [padded_shape(crops[0], blind.kernel_size)]
    if crops[0] != (height, width):  # the whole image is deconvolved apart from the crop that judged it
        grids.append(padded_shape((height, width), blind.kernel_size))
    return Plan(layout, passes, True, tuple(crops), tuple(grids))


@torch.inference_mode()
def restore_image(
    pixels: torch.Tensor,
    options: RestoreOptions,
    network: Network,
    blind: BlindSettings = BlindSettings(),
    plan: Plan | None = None,
) -> tuple[torch.Tensor, RestoreReport]:
    """(3, H, W) in [-1, 1] → (restored (3, H, W) in [-1, 1], clamped; how it was restored).

    With ``options.kernel_aware`` a trusted blind deconvolution answers; otherwise, or where the estimate is
    not trusted, the network does, over ``plan``'s tiles (made here when not given).
    """
    plan = plan or plan_restoration(pixels.shape[-2], pixels.shape[-1], options, blind)
    estimate = None
    if plan.estimate:
        deconvolved, estimate = blind_deconvolution(pixels, blind)
        if deconvolved is not None:
            return deconvolved, RestoreReport("deconvolution", 0, estimate)
    restored = run_network(network, pixels, plan)
    return restored, RestoreReport("network", plan.tiles, estimate)


@torch.inference_mode()
def run_network(network: Network, pixels: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The network over ``plan``'s tiles (averaged over the 8 flips/rotations with self-ensemble), clamped."""

    def run(image: torch.Tensor, layout: TileLayout) -> torch.Tensor:
        batch, device = network.tile_batch, network.device
        return restore_tiled(network.predict, image, batch_size=batch, device=device, layout=layout)

    if plan.passes == 1:
        return run(pixels, plan.layout).clamp_(-1, 1)
    total = torch.zeros_like(pixels, dtype=torch.float32)
    for turns, flip in ENSEMBLE:  # BasicSR's ×8: each variant restored and mapped back
        variant = torch.rot90(pixels.flip(-1) if flip else pixels, turns, dims=(-2, -1)).contiguous()
        layout = plan.layout.transposed() if turns % 2 else plan.layout
        back = torch.rot90(run(variant, layout), -turns, dims=(-2, -1))
        total += back.flip(-1) if flip else back
    return (total / len(ENSEMBLE)).clamp_(-1, 1)
