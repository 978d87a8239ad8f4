"""Training end to end on a tiny generated dataset: checkpoint, MLflow run, data checks, losses."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

from deblur.model import load_model, read_checkpoint
from train.config import TrainConfig, parse_config
from train.data import PairingError, PatchDataset, augment_pair, check_pairs, find_pairs
from train.loop import main
from train.losses import CharbonnierLoss, CombinedLoss
from train.synth import BlurSettings, blur_image, random_kernel


def write_paired_dataset(root: Path, counts: dict[str, int], size: tuple[int, int] = (96, 80)) -> Path:
    """Blurred/sharp pairs made with the project's own synthetic blur on procedural images."""
    settings = BlurSettings(min_extent=5, max_extent=9)
    for split, count in counts.items():
        for index in range(count):
            rng = np.random.default_rng(index)
            sharp = textured_image(*size, seed=index + 100 * len(split))
            blurred = blur_image(sharp, random_kernel(rng, settings), rng, settings)
            for kind, array in (("sharp", sharp), ("blur", blurred)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"img_{index:02d}.png")
    return root


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts land beside the store, not in the repo
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def tiny_config(data: Path, out_dir: Path, **overrides: object) -> TrainConfig:
    values = dict(
        data=data, out_dir=out_dir, base_ch=8, epochs=2, batch_size=2, patch_size=48, loss="charbonnier",
        num_workers=0, experiment="test-deblur", val_tile=64, val_overlap=16, patience=10,
    )  # fmt: skip
    return TrainConfig(**(values | overrides))


def test_short_run_writes_best_checkpoint_and_mlflow_run(tmp_path: Path, mlflow_store: str) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 4, "val": 2})
    state = main(tiny_config(data, tmp_path / "out"))

    assert state.epoch == 2 and state.step == 4  # 4 pairs / batch 2 × 2 epochs
    assert state.best_path is not None and state.best_path.name.startswith("best_epoch_")
    payload = read_checkpoint(state.best_path)
    assert payload["model_config"]["base_ch"] == 8
    assert payload["metrics"]["psnr"] == pytest.approx(state.best_psnr)
    assert set(payload["metrics"]) >= {"psnr", "ssim", "val_loss", "train_loss", "input_psnr"}
    assert load_model(tmp_path / "out" / "best.pt").config.base_ch == 8

    runs = mlflow.search_runs(experiment_names=["test-deblur"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["lr"] == "0.0002" and run.data.params["loss"] == "charbonnier"
    assert {"train_loss", "val_loss", "psnr", "ssim", "lr", "grad_norm", "epoch_time", "best_psnr"} <= set(
        run.data.metrics
    )
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "psnr")
    assert [m.step for m in history] == [1, 2]


def test_resume_continues_from_last_checkpoint(tmp_path: Path, mlflow_store: str) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 2, "val": 1})
    main(tiny_config(data, tmp_path / "out", epochs=1))
    resumed = main(tiny_config(data, tmp_path / "out", epochs=2, resume=tmp_path / "out" / "last.pt"))
    assert resumed.epoch == 2 and resumed.step == 2


def test_unpaired_and_mismatched_data_fail_before_training(tmp_path: Path) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 2})
    (data / "train" / "sharp" / "img_01.png").unlink()
    with pytest.raises(PairingError, match=r"img_01\.png has no sharp partner"):
        find_pairs(data / "train")
    Image.new("RGB", (10, 10)).save(data / "train" / "sharp" / "img_01.png")
    with pytest.raises(PairingError, match=r"img_01\.png is \(96, 80\) but .* is \(10, 10\)"):
        check_pairs(find_pairs(data / "train"))
    with pytest.raises(PairingError, match="missing folder"):
        find_pairs(tmp_path / "nowhere")


def test_patches_are_synchronised_and_reproducible(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for kind in ("blur", "sharp"):  # identical content: any desync would show as a difference
        (data / kind).mkdir(parents=True)
        Image.fromarray(textured_image(90, 70, seed=3)).save(data / kind / "a.png")
    dataset = PatchDataset(find_pairs(data), patch_size=32, repeat=8, seed=5)
    patches = [dataset[i] for i in range(len(dataset))]
    assert all(torch.equal(blur, sharp) and blur.shape == (3, 32, 32) for blur, sharp in patches)
    assert len({tuple(b.flatten()[:50].tolist()) for b, _ in patches}) > 1  # windows differ
    assert all(torch.equal(a[0], b[0]) for a, b in zip(patches, [dataset[i] for i in range(8)], strict=True))


def test_augmentation_applies_one_transform_to_both() -> None:
    blur = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    for seed in range(16):
        a, b = augment_pair(blur, blur + 100, random.Random(seed))
        assert torch.equal(b - a, torch.full_like(a, 100))


def test_losses() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 176, 176) * 2 - 1
    assert CharbonnierLoss()(target, target).item() == pytest.approx(1e-3)
    combined = CombinedLoss()
    assert combined(target, target).item() == pytest.approx(0.16e-3, abs=1e-4)
    worse = combined(target + 0.3 * torch.randn_like(target), target)
    assert worse > combined(target + 0.05 * torch.randn_like(target), target)
    small = torch.rand(1, 3, 32, 32)  # too small for 5-scale MS-SSIM → logged L1 fallback
    assert torch.isfinite(combined(small, small * 0.5)) and combined.fallbacks == 1


def test_cli_flags_and_yaml_defaults(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("base_ch: 24\nepochs: 7\nloss: charbonnier\n")
    config = parse_config(["--config", str(yaml_file), "--epochs", "9", "--residual", "--data", "d"])
    assert (config.base_ch, config.epochs, config.loss, config.residual, config.data) == (
        24,
        9,
        "charbonnier",
        True,
        Path("d"),
    )
    defaults = parse_config([])
    assert (defaults.lr, defaults.weight_decay, defaults.grad_clip, defaults.patch_size) == (2e-4, 1e-4, 1.0, 256)
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="mse")
