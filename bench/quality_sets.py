"""Paired sets for the quality matrix, made offline: `python -m bench.quality_sets OUT_DIR [--split dev|report]`.

Writes ``OUT_DIR/<set>/blur/*.png|jpg``, ``OUT_DIR/<set>/sharp/*.png``, ``OUT_DIR/<set>/kernels/*.png`` (each
kernel scaled to its maximum, for looking at) and ``OUT_DIR/<set>/set.json`` (the recipe: split, seed, the photo
list and, per image, the photo, crop, scale, kernel generator and extent, blur domain, noise and format).
Kernels come from ``bench.kernels`` (not ``train.synth``'s generator, which tuned the product).

Photos (none of the shipped model's training photos, and not ``plasma-workspace-wallpapers``, which is reserved)
are unpacked from two Debian packages without installing their dependencies, plus matplotlib's one sample photo:

    cd /tmp && apt-get download palapeli-data kphotoalbum        # bookworm: 4:22.12.3-1 and 5.9.1-3 (or near)
    for deb in palapeli-data_*.deb kphotoalbum_*.deb; do dpkg -x "$deb" /work/main/data/photo_packages; done
    python -m bench.quality_sets data/quality/dev --split dev
    python -m bench.quality_sets data/quality/report --split report

(``sudo apt-get install --no-install-recommends palapeli-data kphotoalbum`` puts the same files under
``/usr/share``; pass ``--photos /usr/share/palapeli/collection /usr/share/kphotoalbum/demo`` then.)
The default photo folders (``DEFAULT_PHOTOS``) hold 29 JPEG photographs, 400–1620 px on a side: Palapeli's
5 puzzle photos (castle, bridge, fruit, bee, chameleon; 1024–1620 px), KPhotoAlbum's 23 demo photos (people,
pets, landscapes, ~800×550; ``qt-logo.jpg`` is left out) and matplotlib's ``grace_hopper.jpg``. They are listed
sorted by file name; ``split_photos`` sorts each size group's scenes (long side ≥ 1280 px or not; a scene is the
file stem without a trailing ``_N``, so ``grand_canyon_1``…``_3`` stay together) by the SHA-1 of the scene name
and deals them alternately to dev and report: the splits share no photo and no scene, and both hold large photos.
Seeds: dev 1001, report 2002 (each set draws from ``numpy.random.default_rng([seed, set index])``).
Photos smaller than a wanted frame are upscaled (bicubic) and the scale recorded: the 2048² frame and some
1280×720 frames are upscaled and so smoother than a camera's.

Blur is a 'valid' convolution of a larger crop (no border effects), in linear light (stored values ^ 2.2) or
in stored values (γ 1); Gaussian noise is added in stored values after the blur, then 8-bit rounding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import fftconvolve

from bench import kernels

DEFAULT_PHOTOS = (
    Path("data/photo_packages/usr/share/palapeli/collection"),
    Path("data/photo_packages/usr/share/kphotoalbum/demo"),
    Path(".venv/lib/python3.11/site-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
)
EXCLUDED = {"qt-logo.jpg"}  # a logo pasted on a photo
SEEDS = {"dev": 1001, "report": 2002}
LARGE = 1280  # photos with a long side of at least this are dealt to the splits separately
GAMMA = 2.2


@dataclass(frozen=True)
class SetRecipe:
    name: str
    count: int
    extents: tuple[float, float] = (15, 45)  # kernel extent range, px (0: no blur)
    domains: tuple[float, ...] = (GAMMA,)  # gammas the blur is applied in, cycled over the images
    noise: tuple[float, float] = (0.0, 0.02)  # noise σ range, share of full scale
    sizes: tuple[tuple[int, int], ...] = ((640, 480),)  # (width, height) cycled over the images
    jpeg: tuple[int, int] | None = None  # JPEG quality range of the blurred file (None: PNG)
    gray: bool = False
    highlights: bool = False  # 2–5 % of the sharp photo's pixels saturated, blurred before clipping
    varying: bool = False  # a spatially varying blur (rotation, or two kernels across the frame)
    generators: tuple[str, ...] = kernels.GENERATORS
    notes: str = ""


SETS = (
    SetRecipe("shake_linear_light", 10, sizes=((640, 480),) * 4 + ((1280, 720),), notes="blur in γ 2.2 light"),
    SetRecipe(
        "shake_stored_values",
        10,
        domains=(1.0,),
        sizes=((640, 480),) * 4 + ((1280, 720),),
        notes="blur in stored values",
    ),
    SetRecipe("large_kernels", 8, extents=(45, 75), domains=(GAMMA, 1.0), sizes=((2048, 2048),) + ((800, 600),) * 7),
    SetRecipe("mild", 8, extents=(1, 5), domains=(GAMMA, 1.0), notes="do no harm"),
    SetRecipe("unblurred", 8, extents=(0, 0), noise=(0.0, 0.01), sizes=((800, 600),), notes="do no harm"),
    SetRecipe("jpeg", 8, extents=(15, 35), domains=(GAMMA, 1.0), jpeg=(80, 95)),
    SetRecipe("gray", 8, extents=(15, 35), domains=(GAMMA, 1.0), sizes=((512, 512),), gray=True),
    SetRecipe("highlights", 8, extents=(15, 35), highlights=True),
    SetRecipe("small", 10, extents=(9, 25), domains=(GAMMA, 1.0), sizes=((256, 256), (200, 150), (128, 128))),
    SetRecipe("spatially_varying", 8, domains=(GAMMA, 1.0), sizes=((640, 480),) * 3 + ((1280, 720),), varying=True),
)


@dataclass
class Record:
    name: str
    photo: str
    size: tuple[int, int]
    scale: float
    crop: tuple[int, int]  # (left, top) of the crop in the scaled photo
    domain_gamma: float | None
    noise_sigma: float
    blur: dict = field(default_factory=dict)
    jpeg_quality: int | None = None
    saturated_share: float | None = None


def find_photos(sources: list[Path]) -> list[Path]:
    """The photos under ``sources`` (files or folders, not recursive), sorted by file name."""
    found = []
    for source in sources:
        candidates = [source] if source.is_file() else sorted(source.glob("*"))
        found += [p for p in candidates if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and p.name not in EXCLUDED]
    return sorted(found, key=lambda p: p.name)


def scene(path: Path) -> str:
    """The scene a photo shows: its stem without a trailing ``_2``-style number (``pool_2`` and ``pool`` are one)."""
    return re.sub(r"_\d+$", "", path.stem)


def split_photos(photos: list[Path], split: str) -> list[Path]:
    """This split's half of ``photos`` (disjoint from the other's; see the module docstring)."""
    chosen = []
    for large in (True, False):
        group = []
        for path in photos:
            with Image.open(path) as image:
                if (max(image.size) >= LARGE) == large:
                    group.append(path)
        scenes = sorted({scene(p) for p in group}, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
        mine = set(scenes[(0 if split == "dev" else 1) :: 2])
        chosen += [p for p in group if scene(p) in mine]
    return sorted(chosen, key=lambda p: p.name)


def load_photo(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def frame(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float, tuple]:
    """A random (height, width) = ``size[::-1]`` crop of ``photo``, upscaled (bicubic) first where too small."""
    width, height = size
    scale = max(width / photo.shape[1], height / photo.shape[0], 1.0)
    if scale > 1:
        new = (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale))
        channels = [Image.fromarray(photo[..., c].astype(np.float32), "F").resize(new, Image.BICUBIC) for c in range(3)]
        photo = np.stack([np.asarray(c, dtype=np.float64) for c in channels], axis=-1).clip(0, 1)
    top = int(rng.integers(0, photo.shape[0] - height + 1))
    left = int(rng.integers(0, photo.shape[1] - width + 1))
    return photo[top : top + height, left : left + width], scale, (left, top)


def convolve_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(H, W, C) ⊛ kernel, 'valid' part: (H − K + 1, W − K + 1, C)."""
    return np.stack([fftconvolve(image[..., c], kernel, mode="valid") for c in range(image.shape[-1])], axis=-1)


def blur_in(stored: np.ndarray, blur: Callable[[np.ndarray], np.ndarray], gamma: float) -> np.ndarray:
    """``blur`` applied to the light ``stored ** gamma`` (unclipped: highlights may exceed 1), back to stored values,
    clipped to [0, 1] as a sensor saturates."""
    return blur(np.clip(stored, 0, None) ** gamma).clip(0, 1) ** (1 / gamma)


def rotation_blur(image: np.ndarray, degrees: float, samples: int = 25) -> np.ndarray:
    """The mean of ``image`` rotated about its centre over −degrees/2…+degrees/2 (same size, bicubic)."""
    total = np.zeros_like(image)
    for angle in np.linspace(-degrees / 2, degrees / 2, samples):
        for c in range(image.shape[-1]):
            plane = Image.fromarray(image[..., c].astype(np.float32), "F")
            total[..., c] += np.asarray(plane.rotate(float(angle), Image.BICUBIC), dtype=np.float64)
    return total / samples


def make_pair(recipe: SetRecipe, index: int, photo_path: Path, rng: np.random.Generator, previews: Path):
    """(sharp (h, w, C) in [0, 1], blurred, record) for image ``index`` of ``recipe``."""
    size = recipe.sizes[index % len(recipe.sizes)]
    gamma = recipe.domains[index % len(recipe.domains)]
    extent = float(rng.uniform(*recipe.extents))
    kind = recipe.generators[index % len(recipe.generators)]
    blur_record: dict = {}
    uniform = "uniform" if extent > 0 else "none"
    style = ("rotation" if index % 2 == 0 else "two_kernels") if recipe.varying else uniform
    kernel = kernels.kernel(kind, extent, rng) if style in ("uniform", "two_kernels") else np.ones((1, 1))
    margin = kernel.shape[0] // 2
    photo = load_photo(photo_path)
    crop, scale, corner = frame(photo, (size[0] + 2 * margin, size[1] + 2 * margin), rng)
    if recipe.gray:
        crop = (crop @ np.array([0.299, 0.587, 0.114]))[..., None]
    saturated = None
    if recipe.highlights:
        share = rng.uniform(0.02, 0.05)
        brightest = crop.max(axis=-1)[margin : margin + size[1], margin : margin + size[0]]
        crop = crop / max(np.quantile(brightest, 1 - share), 1e-3)  # unclipped: the light beyond 1 is blurred
    sharp = crop[margin : margin + size[1], margin : margin + size[0]].clip(0, 1)
    if recipe.highlights:
        saturated = float((sharp.max(axis=-1) >= 1).mean())
    if style == "none":
        blurred = sharp.copy()
        gamma = None
    elif style == "uniform":
        blurred = blur_in(crop, lambda x: convolve_valid(x, kernel), gamma)
        blur_record = {"kind": kind, "extent_px": round(extent, 2), "kernel_side": kernel.shape[0]}
    elif style == "rotation":
        degrees = float(rng.uniform(1, 3))
        blurred = blur_in(sharp, lambda x: rotation_blur(x, degrees), gamma)
        blur_record = {"kind": "rotation", "degrees": round(degrees, 3)}
    else:
        other_kind = recipe.generators[(index + 1) % len(recipe.generators)]
        other = kernels.kernel(other_kind, float(rng.uniform(*recipe.extents)), rng)
        side = max(kernel.shape[0], other.shape[0])
        first, second = (np.pad(k, (side - k.shape[0]) // 2) for k in (kernel, other))
        margin = side // 2
        crop, scale, corner = frame(photo, (size[0] + 2 * margin, size[1] + 2 * margin), rng)
        sharp = crop[margin : margin + size[1], margin : margin + size[0]]
        ramp = np.clip((np.arange(size[0]) / (size[0] - 1) - 0.25) / 0.5, 0, 1)[None, :, None]  # left → right

        def blend(x: np.ndarray) -> np.ndarray:
            return (1 - ramp) * convolve_valid(x, first) + ramp * convolve_valid(x, second)

        blurred = blur_in(crop, blend, gamma)
        blur_record = {
            "kind": "two_kernels",
            "kernels": [kind, other_kind],
            "sides": [k.shape[0] for k in (first, second)],
        }
        kernel = np.concatenate([first, np.zeros((side, 2)), second], axis=1)
    sigma = float(rng.uniform(*recipe.noise))
    blurred = blurred + rng.normal(0, sigma, blurred.shape) if sigma > 0 else blurred
    name = f"{recipe.name}_{index:02d}_{photo_path.stem}"
    if kernel.size > 1:
        Image.fromarray((kernel / kernel.max() * 255).round().astype(np.uint8), "L").save(previews / f"{name}.png")
    record = Record(name, photo_path.name, size, round(scale, 4), corner, gamma, round(sigma, 5), blur_record)
    record.saturated_share = saturated
    return sharp, blurred.clip(0, 1), record


def to_image(array: np.ndarray) -> Image.Image:
    pixels = (array.clip(0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")


def write_set(recipe: SetRecipe, index: int, photos: list[Path], out: Path, split: str, seed: int) -> None:
    rng = np.random.default_rng([seed, index])
    folder = out / recipe.name
    for sub in ("blur", "sharp", "kernels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    large = [p for p in photos if max(Image.open(p).size) >= LARGE]
    records = []
    for image_index in range(recipe.count):
        size = recipe.sizes[image_index % len(recipe.sizes)]
        pool = large if max(size) >= LARGE and large else photos
        photo = pool[int(rng.integers(len(pool)))]
        sharp, blurred, record = make_pair(recipe, image_index, photo, rng, folder / "kernels")
        to_image(sharp).save(folder / "sharp" / f"{record.name}.png")
        if recipe.jpeg:
            record.jpeg_quality = int(rng.integers(recipe.jpeg[0], recipe.jpeg[1] + 1))
            to_image(blurred).save(folder / "blur" / f"{record.name}.jpg", quality=record.jpeg_quality)
        else:
            to_image(blurred).save(folder / "blur" / f"{record.name}.png")
        records.append(asdict(record))
        print(f"{split}/{recipe.name}: {record.name} {size[0]}×{size[1]} {record.blur}", flush=True)
    recipe_record = asdict(recipe) | {"split": split, "seed": [seed, index], "photos": [p.name for p in photos]}
    (folder / "set.json").write_text(json.dumps({"recipe": recipe_record, "images": records}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where the sets go (git-ignored, e.g. data/quality/dev)")
    parser.add_argument("--split", choices=sorted(SEEDS), default="dev")
    parser.add_argument("--photos", type=Path, nargs="+", default=list(DEFAULT_PHOTOS), help="photo files/folders")
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (default: all)")
    parser.add_argument("--count", type=int, default=None, help="images per set (default: each recipe's)")
    parser.add_argument("--no-split", action="store_true", help="use every photo (tests)")
    args = parser.parse_args(argv)
    photos = find_photos(args.photos)
    if not args.no_split:
        photos = split_photos(photos, args.split)
    if not photos:
        parser.error(f"no photos under {', '.join(map(str, args.photos))}")
    for index, recipe in enumerate(SETS):
        if args.sets and recipe.name not in args.sets:
            continue
        if args.count is not None:
            recipe = SetRecipe(**(asdict(recipe) | {"count": args.count}))
        write_set(recipe, index, photos, args.out_dir, args.split, SEEDS[args.split])


if __name__ == "__main__":
    main()
