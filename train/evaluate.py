"""Score a checkpoint on a paired folder, through the same load_model + tiling path as the handler.

    python -m train.evaluate --checkpoint outputs/run1/best.pt --data data/gopro/test \
        [--tile 512 --overlap 64] [--precision auto] [--skip-fraction 0.5 --seed 0] [--tlc-window 384] \
        [--json scores.json] [--save-dir restored/]

Prints per-image and mean PSNR/SSIM of the blurred input and of the restored output against the
sharp image, and the gain. ``--skip-fraction`` leaves out the seeded share that training took for
validation (``--val-dir test --val-fraction 0.5``), so the scores come from the held-out half.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from deblur.blind import blind_deconvolution
from deblur.imageio import to_uint8
from deblur.metrics import psnr, ssim, to_unit_range
from deblur.model import ModelConfig, build_model, load_model, read_checkpoint
from deblur.runtime import PRECISIONS, make_predictor
from deblur.tiling import Predictor, restore_tiled
from train.config import BLUR_KINDS
from train.data import FrameDataset, Pair, check_pairs, find_pairs, split_off

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageScore:
    name: str
    input_psnr: float
    input_ssim: float
    output_psnr: float
    output_ssim: float

    @property
    def gain(self) -> float:
        return self.output_psnr - self.input_psnr


def load_for_evaluation(checkpoint: Path, device: torch.device, tlc_window: int | None) -> nn.Module:
    """``load_model`` as the handler does; ``tlc_window`` (NAFNet) overrides the stored TLC setting."""
    if tlc_window is None:
        return load_model(checkpoint, device)
    payload = read_checkpoint(checkpoint)
    config = dataclasses.replace(ModelConfig.from_dict(payload["model_config"]), tlc_window=tlc_window)
    model = build_model(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    return model.to(device).eval()


def score_pairs(
    predict: Predictor,
    pairs: list[Pair],
    tile: int,
    overlap: int,
    device: torch.device,
    save_dir: Path | None = None,
    kernel_aware: bool = False,
    refine: Predictor | None = None,
) -> list[ImageScore]:
    """Each pair through ``restore_tiled`` and clamping, as the handler restores a request.

    With ``kernel_aware``, as a request with that field: a trusted blind deconvolution replaces the network,
    refined by ``refine`` when there is one (as in an archive built with ``--refiner``).
    With ``save_dir`` each restored image is also written there as ``<name>.png`` (8-bit, as served).
    """
    frames = FrameDataset(pairs)
    scores = []
    for index, (blur, sharp) in enumerate(frames):
        restored = restore_pair(predict, blur, tile, overlap, device, kernel_aware, refine)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(restored)).save(save_dir / f"{frames.name(index)}.png")
        reference, before, after = to_unit_range(sharp), to_unit_range(blur), to_unit_range(restored)
        input_scores = psnr(before, reference), ssim(before, reference)
        scores.append(ImageScore(frames.name(index), *input_scores, psnr(after, reference), ssim(after, reference)))
        log.info("%s: %.2f → %.2f dB", scores[-1].name, scores[-1].input_psnr, scores[-1].output_psnr)
    return scores


def restore_pair(
    predict: Predictor,
    blur: torch.Tensor,
    tile: int,
    overlap: int,
    device: torch.device,
    kernel_aware: bool,
    refine: Predictor | None = None,
) -> torch.Tensor:
    if kernel_aware:
        deconvolved, estimate = blind_deconvolution(blur)
        log.info("kernel: %s", "image too small" if estimate is None else estimate.report())
        if deconvolved is not None:
            if refine is None:
                return deconvolved
            predict, blur = refine, deconvolved
    return restore_tiled(predict, blur, tile, overlap, device=device).clamp(-1, 1)


def summary(scores: list[ImageScore]) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    names = ("input_psnr", "input_ssim", "output_psnr", "output_ssim", "gain")
    return {name: mean([getattr(s, name) for s in scores]) for name in names}


def format_report(scores: list[ImageScore]) -> str:
    width = max(len("mean"), *(len(s.name) for s in scores))
    header = f"{'image':<{width}}  {'in PSNR':>8} {'in SSIM':>8} {'out PSNR':>8} {'out SSIM':>8} {'gain dB':>8}"
    rows = [
        f"{s.name:<{width}}  {s.input_psnr:8.2f} {s.input_ssim:8.4f} {s.output_psnr:8.2f} {s.output_ssim:8.4f} "
        f"{s.gain:+8.2f}"
        for s in scores
    ]
    m = summary(scores)
    mean_row = (
        f"{'mean':<{width}}  {m['input_psnr']:8.2f} {m['input_ssim']:8.4f} {m['output_psnr']:8.2f} "
        f"{m['output_ssim']:8.4f} {m['gain']:+8.2f}"
    )
    return "\n".join([header, *rows, "-" * len(header), mean_row])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="paired split folder (blur/+sharp/ or GOPRO_Large)")
    parser.add_argument("--blur-kind", choices=BLUR_KINDS, default="blur")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--skip-fraction", type=float, default=0.0, help="leave out training's validation share")
    parser.add_argument("--seed", type=int, default=0, help="the training seed (for --skip-fraction)")
    parser.add_argument("--tlc-window", type=int, default=None, help="NAFNet: TLC window (0 = off); default: stored")
    parser.add_argument("--max-images", type=int, default=0, help="0: all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="as the handler: auto = bf16/fp16 "
                        "where the device runs it natively, else fp32")  # fmt: skip
    parser.add_argument("--kernel-aware", action="store_true", help="as the request field kernel_aware: "
                        "deconvolve a trusted blind kernel estimate instead of running the network")  # fmt: skip
    parser.add_argument("--refiner", type=Path, help="with --kernel-aware: checkpoint of a network that refines "
                        "each trusted deconvolution, as an archive built with --refiner")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write per-image and mean scores here")
    parser.add_argument("--save-dir", type=Path, help="also write each restored image here as <name>.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    pairs = find_pairs(args.data, args.blur_kind)
    if args.skip_fraction:
        pairs = split_off(pairs, args.skip_fraction, args.seed)[1]
    pairs = pairs[: args.max_images or None]
    check_pairs(pairs)
    device = torch.device(args.device)
    model = load_for_evaluation(args.checkpoint, device, args.tlc_window)
    predict = make_predictor(model, device, args.precision)
    refine = None
    if args.refiner is not None:
        refine = make_predictor(load_for_evaluation(args.refiner, device, args.tlc_window), device, args.precision)
    scores = score_pairs(predict, pairs, args.tile, args.overlap, device, args.save_dir, args.kernel_aware, refine)
    sys.stdout.write(format_report(scores) + "\n")
    means = summary(scores)
    if args.json:
        images = [dataclasses.asdict(s) | {"gain": s.gain} for s in scores]
        settings = {"checkpoint": str(args.checkpoint), "data": str(args.data)}
        settings |= {"tile": args.tile, "overlap": args.overlap, "precision": args.precision}
        settings |= {"kernel_aware": args.kernel_aware, "refiner": args.refiner and str(args.refiner)}
        args.json.write_text(json.dumps(settings | {"mean": means, "images": images}, indent=2))
    return means


if __name__ == "__main__":
    main()
