"""The offline photo sets behind the shipped model: `python -m train.photo_sets OUT_DIR`.

Links the sharp photos used for training and for held-out evaluation into ``OUT_DIR/train`` and
``OUT_DIR/heldout`` from installed packages only (nothing is downloaded), so the shipped model's
data can be rebuilt on another machine:

    sudo apt-get install mate-backgrounds opencv-doc lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 ukui-wallpapers
    python -m train.photo_sets /tmp/photos
    python -m train.synth /tmp/photos/train /tmp/data --variants 8 --val-fraction 0.1 --min-side 256 --seed 1 \
        --format bmp --workers 2 --no-previews
    python -m train.synth /tmp/photos/heldout /tmp/heldout --val-fraction 0 --frame 1280x720 \
        --min-extent 11 --max-extent 33 --variants 2 --seed 7 --workers 2

``--min-side 256`` leaves out the one photo too small for a 256-px training patch. The shipped model's last
stage trained on the full range of blur, validating on the set above and the two below (``--extra-val``):

    python -m train.synth /tmp/photos/train /tmp/data_full --variants 12 --val-fraction 0.1 --min-side 256 \
        --seed 1 --min-extent 1 --max-extent 35 --format bmp --workers 2 --no-previews
    rm -r /tmp/data_full/val && ln -s /tmp/data/val /tmp/data_full/val   # validate on the 7-35 px frames

The README's model card lists the training stages and their flags; ``train.evaluate --data
/tmp/heldout/train`` scores a model. The two other validation sets come from the same 5 validation
photos (the seed keeps the split):

    python -m train.synth /tmp/photos/train /tmp/data_mild --variants 4 --val-fraction 0.1 --min-side 256 \
        --seed 1 --min-extent 1 --max-extent 9 --format bmp --workers 2 --no-previews   # val/: 1-9 px
    mkdir -p /tmp/photos_val
    for name in lomiri_Kleiber_by_Lukas_Baubkus lomiri_greentock_by_Peter_Nerlich mate_GreenTraditional; do
        ln -s "$(readlink -f /tmp/photos/train/$name.jpg)" "/tmp/photos_val/$name.jpg"; done
    python -m train.synth /tmp/photos_val /tmp/val720 --val-fraction 0 --frame 1280x720 --min-extent 11 \
        --max-extent 33 --variants 4 --seed 11 --no-previews   # train/: 720p frames like the held-out set

The held-out photos are never trained on and never pick a checkpoint (training validates on its
own ``--val-fraction`` share). ``plasma-workspace-wallpapers`` is deliberately absent: it is kept
for independent evaluation. Missing packages are reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

BACKGROUNDS = Path("/usr/share/backgrounds")
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

HELDOUT = [
    BACKGROUNDS / name
    for name in (
        "Bridge_by_Sander_Klootwijk.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "Picture_1A_by_freespace.jpg",
        "friends_by_Aitzol_Berasategi.jpg",
        "sunset_by_Aitzol_Berasategi.jpg",
        "Wine_by_Jakkub_Mede.jpg",
    )
]

WALLPAPERS = (  # lomiri-wallpapers-16.04/-20.04 and ukui-wallpapers: photos and a few crisp illustrations
    "Dragonfly_by_Bolly.jpg",
    "Kleiber_by_Lukas_Baubkus.jpg",
    "Picture_0B_by_freespace.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "analogpattern_by_Peter_Nerlich.jpg",
    "free_by_Peter_Nerlich.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "string.jpg",
    "rhythm.jpg",
    "the-mouse.jpg",
    "firstgeneration.jpg",
)
NATURE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm")
MATE = ("abstract/Elephants.jpg", "desktop/GreenTraditional.jpg")
MATE += tuple(f"nature/{name}.jpg" for name in (*NATURE, "TwoWings", "Wood", "YellowFlower"))
OPENCV = ("HappyFish", "aloeL", "apple", "baboon", "board", "building", "butterfly", "fruits", "graf1", "home")
OPENCV += ("messi5", "orange", "starry_night")
PACKAGE_PREFIXES = {"skimage": "sk", "sklearn": "skl", "gradio": "gr"}
PYTHON_PACKAGE_PHOTOS = {  # package → files inside it
    "skimage": [
        f"data/{n}" for n in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
    ]
    + ["data/hubble_deep_field.jpg"],
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
    "gradio": [
        f"media_assets/images/{n}" for n in ("cheetah.jpg", "cheetah1.jpg", "groot.jpeg", "lion.jpg", "tower.jpg")
    ],
}


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def training_photos() -> dict[str, Path]:
    """Link name → source path of every training photo (prefix = where it comes from)."""
    photos = {f"lomiri_{name}": BACKGROUNDS / name for name in WALLPAPERS}
    photos |= {f"mate_{Path(name).name}": BACKGROUNDS / "mate" / name for name in MATE}
    for stem in OPENCV:
        found = sorted(OPENCV_DATA.glob(f"{stem}.*"))
        photos[f"cv_{stem}{found[0].suffix if found else '.jpg'}"] = found[0] if found else OPENCV_DATA / stem
    for package, files in PYTHON_PACKAGE_PHOTOS.items():
        root = package_dir(package) or Path(f"<{package} not installed>")
        for name in files:
            photos[f"{PACKAGE_PREFIXES[package]}_{Path(name).name}"] = root / name
    return photos


def link_all(targets: dict[str, Path], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    linked = 0
    for name, source in targets.items():
        if not source.is_file():
            log.warning("missing %s (install its package); skipped", source)
            continue
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
        linked += 1
    return linked


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m train.photo_sets", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    train = link_all(training_photos(), args.out_dir / "train")
    heldout = link_all({path.name: path for path in HELDOUT}, args.out_dir / "heldout")
    log.info("linked %d training and %d held-out photos under %s", train, heldout, args.out_dir)


if __name__ == "__main__":
    main()
