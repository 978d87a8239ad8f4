"""Score a checkpoint on a paired folder, through the same load_model + tiling path as the handler.

    python -m train.evaluate --checkpoint outputs/run1/best.pt --data data/gopro/test \
        [--tile 512 --overlap 64] [--precision auto] [--skip-fraction 0.5 --seed 0] [--tlc-window 384] \
        [--kernel-aware [--blind-config FILE.yaml]] [--json scores.json] [--save-dir restored/]

Prints per-image and mean PSNR/SSIM of the blurred input and of the restored output against the
sharp image (``deblur.metrics``'s rule: the output rounded to 8 bits), and the gain. ``--skip-fraction``
leaves out the seeded share that training took for validation (``--val-dir test --val-fraction 0.5``),
so the scores come from the held-out half.
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
import yaml
from PIL import Image

from deblur.blind.settings import BlindSettings
from deblur.imageio import to_uint8
from deblur.metrics import score_restoration
from deblur.model import load_model
from deblur.restore import Network, restore_image
from deblur.runtime import make_predictor
from deblur.settings import PRECISIONS, RestoreOptions
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
    path: str = "network"  # what answered: "network" or "deconvolution"

    @property
    def gain(self) -> float:
        return self.output_psnr - self.input_psnr


def score_pairs(
    network: Network,
    pairs: list[Pair],
    options: RestoreOptions,
    save_dir: Path | None = None,
    blind: BlindSettings = BlindSettings(),
) -> list[ImageScore]:
    """Each pair through ``restore_image``, as the handler restores a request with ``options``.

    With ``save_dir`` each restored image is also written there as ``<name>.png`` (8-bit, as served).
    """
    frames = FrameDataset(pairs)
    scores = []
    for index, (blur, sharp) in enumerate(frames):
        with torch.inference_mode():
            restored, report = restore_image(blur, options, network, blind)
        if report.kernel is not None:
            log.info("kernel: %s", report.kernel.report())
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(restored)).save(save_dir / f"{frames.name(index)}.png")
        s = score_restoration(restored, sharp, blur)
        scores.append(ImageScore(frames.name(index), s.input_psnr, s.input_ssim, s.psnr, s.ssim, report.path))
        log.info("%s: %.2f → %.2f dB (%s)", scores[-1].name, s.input_psnr, s.psnr, report.path)
    return scores


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
    parser.add_argument("--blind-config", type=Path, help="YAML overrides of deblur.blind.settings.BlindSettings")
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
    model = load_model(args.checkpoint, device, args.tlc_window)
    network = Network(make_predictor(model, device, args.precision), 1, device)
    options = RestoreOptions(args.tile, args.overlap, kernel_aware=args.kernel_aware)
    blind = BlindSettings.from_mapping(yaml.safe_load(args.blind_config.read_text()) if args.blind_config else {})
    scores = score_pairs(network, pairs, options, args.save_dir, blind)
    sys.stdout.write(format_report(scores) + "\n")
    means = summary(scores)
    if args.json:
        images = [dataclasses.asdict(s) | {"gain": s.gain} for s in scores]
        settings = {"checkpoint": str(args.checkpoint), "data": str(args.data)}
        settings |= {"tile": args.tile, "overlap": args.overlap, "precision": args.precision}
        settings |= {"kernel_aware": args.kernel_aware, "blind_config": args.blind_config and str(args.blind_config)}
        args.json.write_text(json.dumps(settings | {"mean": means, "images": images}, indent=2))
    return means


if __name__ == "__main__":
    main()
