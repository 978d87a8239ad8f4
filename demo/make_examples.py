"""Regenerate the page's bundled examples: scikit-image's sample photos, blurred by ``train.synth``.

    python -m demo.make_examples [--out demo/examples]
    python -m demo.make_examples --outcomes   # only rewrite outcomes.json (what the served model does to each)

Each photo is scaled to a 512-px longer side and saved as ``<name>_sharp.jpg`` (the ground truth);
a camera-shake kernel from the training code's generator (fixed seed per photo) blurs the decoded
ground truth into ``<name>_blurred.jpg``, so the pair is exactly aligned and reproducible. JPEG keeps
the four pairs well under 1.5 MB. Needs scikit-image (a dev requirement), only to run this script.

``outcomes.json`` records what the shipped archive (the checkpoint, kernel-aware on, as ``make serve``
builds it) answers for each pair: the path, the kernel decision and PSNR/SSIM. The page's example labels
come from it, and a test restores the examples again and compares, so no caption can drift from the server.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
OUTCOMES_FILE = "outcomes.json"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default.pt"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # functions of skimage.data, bundled with the wheel
MAX_SIDE = 512
JPEG_QUALITY = 92
SHAKE_EXTENT_PX = (9, 17)  # moderate shake: clearly blurred at 512 px, within what the shipped model trained on


def jpeg_roundtrip(array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """JPEG bytes of ``array`` and what a reader decodes from them."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def make_pair(photo: np.ndarray, seed: int) -> tuple[bytes, bytes]:
    """(blurred JPEG, sharp JPEG); the blur is applied to the decoded sharp JPEG so both align."""
    from train.synth import BlurSettings, blur_image, fit_image, random_kernel  # torch: only when regenerating

    settings = BlurSettings(min_extent=SHAKE_EXTENT_PX[0], max_extent=SHAKE_EXTENT_PX[1])
    sharp_bytes, sharp = jpeg_roundtrip(np.asarray(fit_image(Image.fromarray(photo), MAX_SIDE)))
    rng = np.random.default_rng(seed)
    blurred_bytes, _ = jpeg_roundtrip(blur_image(sharp, random_kernel(rng, settings), rng, settings))
    return blurred_bytes, sharp_bytes


def make_examples(out_dir: Path) -> list[Path]:
    from skimage import data  # dev-only dependency, imported only when regenerating

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for seed, name in enumerate(PHOTOS):
        blurred, sharp = make_pair(getattr(data, name)(), seed)
        for kind, payload in (("blurred", blurred), ("sharp", sharp)):
            path = out_dir / f"{name}_{kind}.jpg"
            path.write_bytes(payload)
            written.append(path)
    return written


def example_outcome(blurred: Path, sharp: Path, checkpoint: Path = SHIPPED_CHECKPOINT) -> dict[str, Any]:
    """What the shipped archive answers for one pair: the JSON answer's path, kernel report and metrics."""
    import torch

    from deblur.model import load_model
    from deblur.restore import Network
    from deblur.runtime import make_predictor
    from deblur.settings import ServingSettings
    from handler.pipeline import prepare, quality_metrics, restore
    from handler.request import Request

    settings = ServingSettings(kernel_aware=True)  # as `make serve` packs the shipped checkpoint
    network = Network(make_predictor(load_model(checkpoint), "cpu", settings.precision), 1)
    request = Request(blurred.read_bytes(), sharp.read_bytes(), settings.options(), "png", json_response=True)
    job = prepare(request, settings)
    with torch.inference_mode():
        result = restore(job, network)
    kernel = result.report.kernel
    return {
        "path": result.report.path,
        "kernel": None if kernel is None else kernel.report(),
        "metrics": {name: round(value, 3) for name, value in (quality_metrics(job, result) or {}).items()},
    }


def write_outcomes(folder: Path, checkpoint: Path = SHIPPED_CHECKPOINT) -> Path:
    outcomes = {
        blurred.name.split("_blurred")[0]: example_outcome(
            blurred, blurred.with_name(blurred.name.replace("_blurred", "_sharp")), checkpoint
        )
        for blurred in sorted(folder.glob("*_blurred.*"))
    }
    path = folder / OUTCOMES_FILE
    path.write_text(json.dumps(outcomes, indent=1) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.make_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help=f"output folder (default {EXAMPLES_DIR})")
    parser.add_argument("--outcomes", action="store_true", help=f"only rewrite {OUTCOMES_FILE} from the images there")
    args = parser.parse_args(argv)
    if not args.outcomes:
        paths = make_examples(args.out)
        total = sum(path.stat().st_size for path in paths)
        print(f"wrote {len(paths)} files ({total / 1e6:.2f} MB) to {args.out}")
    print(f"wrote {write_outcomes(args.out)}")


if __name__ == "__main__":
    main()
