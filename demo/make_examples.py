"""Regenerate the page's bundled examples: scikit-image's sample photos, blurred by ``train.synth``.

    python -m demo.make_examples [--out demo/examples]

Each photo is scaled to a 512-px longer side and saved as ``<name>_sharp.jpg`` (the ground truth);
a camera-shake kernel from the training code's generator (fixed seed per photo) blurs the decoded
ground truth into ``<name>_blurred.jpg``, so the pair is exactly aligned and reproducible. JPEG keeps
the four pairs well under 1.5 MB. Needs scikit-image (a dev requirement), only to run this script.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from train.synth import BlurSettings, blur_image, fit_image, random_kernel

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # functions of skimage.data, bundled with the wheel
MAX_SIDE = 512
JPEG_QUALITY = 92
# Moderate shake: clearly blurred at 512 px, still within what the shipped model was trained on.
SETTINGS = BlurSettings(min_extent=9, max_extent=17)


def jpeg_roundtrip(array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """JPEG bytes of ``array`` and what a reader decodes from them."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def make_pair(photo: np.ndarray, seed: int) -> tuple[bytes, bytes]:
    """(blurred JPEG, sharp JPEG); the blur is applied to the decoded sharp JPEG so both align."""
    sharp_bytes, sharp = jpeg_roundtrip(np.asarray(fit_image(Image.fromarray(photo), MAX_SIDE)))
    rng = np.random.default_rng(seed)
    blurred_bytes, _ = jpeg_roundtrip(blur_image(sharp, random_kernel(rng, SETTINGS), rng, SETTINGS))
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.make_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help=f"output folder (default {EXAMPLES_DIR})")
    args = parser.parse_args(argv)
    paths = make_examples(args.out)
    total = sum(path.stat().st_size for path in paths)
    print(f"wrote {len(paths)} files ({total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
