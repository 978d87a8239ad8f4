"""The one place that decides how an image is restored: a trusted blind deconvolution, else the network.

``plan_restoration`` says what a request will run before anything runs (the tile layout, the network
passes, whether the kernel is estimated); ``restore_image`` runs it. The handler, the folder CLI,
``train.evaluate`` and the benchmarks all call ``restore_image``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deblur.blind.decide import NO_BLUR, KernelEstimate, blind_deconvolution, can_estimate, crop_boxes, support_for
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
    crops: tuple[tuple[int, int], ...] = ()  # (H, W) of each crop a kernel is estimated on (once per domain tried)
    deconvolutions: tuple[tuple[int, int], ...] = ()  # padded Fourier grids of the crops' judging deconvolutions
    whole: tuple[int, int] | None = None  # padded Fourier grid of the whole image's deconvolution, if it needs one

    @property
    def tiles(self) -> int:
        return self.layout.count * self.passes

    def cost_s(self, settings: ServingSettings) -> float:
        """The most compute this plan can take, in seconds of the reference CPU (``settings``' cost model):
        the kernel estimates and deconvolutions, plus the network's tiles where no estimate is trusted."""
        rows, cols = (-(-axis.tile // DEFAULT_ALIGN) * DEFAULT_ALIGN for axis in (self.layout.rows, self.layout.cols))
        network = self.tiles * (settings.tile_call_s + settings.tile_pixel_s * rows * cols)
        estimates = sum(h * w for h, w in self.crops) * settings.estimate_pixel_s
        judged = sum(h * w for h, w in self.deconvolutions) * settings.deconvolve_pixel_s
        whole = 0.0 if self.whole is None else self.whole[0] * self.whole[1] * settings.deconvolve_pixel_s
        # A trusted estimate answers with the whole image's deconvolution, an untrusted one with the network
        return estimates + judged + max(network, whole)


@dataclass(frozen=True)
class RestoreReport:
    """How an image was restored."""

    path: str  # "deconvolution", "network" or "input" (no blur worth undoing was found: the photo as it came)
    tiles: int  # tiles run through the network (0 when the deconvolution answered)
    kernel: KernelEstimate | None  # the blind estimate; None when none was made (not asked, or the image too small)


def plan_restoration(height: int, width: int, options: RestoreOptions, blind: BlindSettings = BlindSettings()) -> Plan:
    layout = tile_layout(height, width, options.tile_size, options.overlap)
    passes = len(ENSEMBLE) if options.self_ensemble else 1
    if not (options.kernel_aware and can_estimate((height, width), blind)):
        return Plan(layout, passes, options.kernel_aware)
    boxes = crop_boxes((height, width), blind)
    support = support_for(boxes[0], blind).kernel_size
    sizes = [(box[0].stop - box[0].start, box[1].stop - box[1].start) for box in boxes]
    # Every domain on the first crop, then the second crop in the chosen one; each estimate is explained on its
    # crop, and the two kernels on each other's crop
    crops = [sizes[0]] * len(blind.gammas) + sizes[1:]
    judged = crops + sizes[:1] + sizes[1:] * 2  # the first crop also with no blur assumed
    whole = None if sizes[0] == (height, width) else padded_shape((height, width), support)
    grids = tuple(padded_shape(size, support) for size in judged)
    return Plan(layout, passes, True, tuple(crops), grids, whole)


@torch.inference_mode()
def restore_image(
    pixels: torch.Tensor,
    options: RestoreOptions,
    network: Network,
    blind: BlindSettings = BlindSettings(),
    plan: Plan | None = None,
) -> tuple[torch.Tensor, RestoreReport]:
    """(3, H, W) in [-1, 1] → (restored (3, H, W) in [-1, 1], clamped; how it was restored).

    With ``options.kernel_aware`` a trusted blind deconvolution answers; where no blur worth undoing is found
    the photo comes back as it is, and where the estimate is refused ``blind.fallback`` decides: the photo, or
    the network. Without ``kernel_aware``, and for images too small to estimate from, the network answers over
    ``plan``'s tiles (made here when not given), keeping the photo's local means.
    """
    plan = plan or plan_restoration(pixels.shape[-2], pixels.shape[-1], options, blind)
    estimate = None
    if plan.estimate:
        deconvolved, estimate = blind_deconvolution(pixels, blind)
        if deconvolved is not None:
            return deconvolved, RestoreReport("deconvolution", 0, estimate)
        if estimate is not None and (estimate.decision == NO_BLUR or blind.fallback == "input"):
            return pixels.float().clamp(-1, 1), RestoreReport("input", 0, estimate)
    restored = run_network(network, pixels, plan)
    return keep_low_frequencies(restored, pixels, blind.low_frequency_cell), RestoreReport(
        "network", plan.tiles, estimate
    )


def keep_low_frequencies(restored: torch.Tensor, source: torch.Tensor, cell: int) -> torch.Tensor:
    """``restored`` with the low frequencies of ``source``: a blur leaves a photo's local means (over ``cell``-px
    cells and coarser) as they were, so a restoration must not move them; brightness and colour cannot shift."""
    height, width = source.shape[-2:]
    cells = (max(1, -(-height // cell)), max(1, -(-width // cell)))

    def low(image: torch.Tensor) -> torch.Tensor:
        coarse = F.adaptive_avg_pool2d(image[None].float(), cells)
        return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]

    return (restored + low(source - restored)).clamp_(-1, 1)


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
