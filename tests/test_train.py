"""Training: dataset layouts and splits, patches, losses, config, MLflow contents, exact resume, DDP.

Every run uses tiny models and images; one SQLite MLflow store is shared by the module (creating
a store runs MLflow's migrations, which takes seconds).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

import train.loop
from deblur.metrics import psnr, to_unit_range
from deblur.model import ModelConfig, build_model, load_model, read_checkpoint, save_checkpoint
from deblur.nafnet import NAFNetLocal
from train.checkpoints import TrainState, update_ema
from train.config import TrainConfig, parse_config
from train.data import (
    EpochSampler,
    PairingError,
    PatchDataset,
    augment_pair,
    check_pairs,
    find_pairs,
    init_worker,
    split_off,
    training_splits,
)
from train.distributed import DistContext
from train.loop import main, make_loader, save_if_best
from train.losses import CharbonnierLoss, CombinedLoss, PSNRLoss
from train.synth import BlurSettings, blur_image, random_kernel

REPO = Path(__file__).resolve().parents[1]


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


def touch_image(path: Path, size: tuple[int, int] = (8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.chdir(root)  # artifacts land beside the store, not in the repo
        mlflow.set_tracking_uri(uri)
        yield uri
        mlflow.set_tracking_uri(None)


def tiny_config(data: Path, out_dir: Path, **overrides: object) -> TrainConfig:
    values = dict(
        data=data, out_dir=out_dir, base_ch=8, epochs=2, batch_size=2, patch_size=48, loss="charbonnier",
        num_workers=0, experiment="test-deblur", val_tile=64, val_overlap=16, patience=10, num_samples=1,
    )  # fmt: skip
    return TrainConfig(**(values | overrides))


TINY_NAFNET = dict(model="nafnet", enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))


# --- data -----------------------------------------------------------------------------------------


def test_flat_gopro_layout_with_test_halved_into_val(tmp_path: Path) -> None:
    # Seed 002's DBlur/Gopro: train/{blur,sharp}, test/{blur,sharp}; half of test validates.
    for split, count in (("train", 3), ("test", 6)):
        for i in range(count):
            for kind in ("blur", "sharp"):
                touch_image(tmp_path / split / kind / f"{i}.png")
    train, val = training_splits(tmp_path, val_dir="test", val_fraction=0.5, seed=1)
    assert len(train) == 3 and len(val) == 3
    assert all(p.blur.parent == tmp_path / "test" / "blur" and p.sharp.name == p.blur.name for p in val)
    held_out, rest = split_off(find_pairs(tmp_path / "test"), 0.5, seed=1)
    assert held_out == val and not set(rest) & set(val)  # train.evaluate --skip-fraction scores `rest`


@pytest.mark.parametrize("blur_kind", ["blur", "blur_gamma"])
def test_gopro_large_layout_picks_blur_or_blur_gamma(tmp_path: Path, blur_kind: str) -> None:
    for sequence in ("GOPR0372_07_00", "GOPR0374_11_01"):
        for frame in ("000047.png", "000048.png"):
            for kind in ("blur", "blur_gamma", "sharp"):
                touch_image(tmp_path / "train" / sequence / kind / frame)
    pairs = find_pairs(tmp_path / "train", blur_kind)
    assert len(pairs) == 4
    assert {p.blur.parent.name for p in pairs} == {blur_kind}
    assert all(p.sharp == p.blur.parent.parent / "sharp" / p.blur.name for p in pairs)
    (tmp_path / "train" / "GOPR0374_11_01" / "blur_gamma" / "000047.png").unlink()
    (tmp_path / "train" / "GOPR0374_11_01" / "blur_gamma" / "000048.png").unlink()
    (tmp_path / "train" / "GOPR0374_11_01" / "blur_gamma").rmdir()
    if blur_kind == "blur_gamma":
        with pytest.raises(PairingError, match=r"GOPR0374_11_01/blur_gamma"):
            find_pairs(tmp_path / "train", blur_kind)


def test_generic_layout_pairs_by_relative_path(tmp_path: Path) -> None:
    for name in ("a/x.png", "a/b/y.jpg", "z.png"):
        for kind in ("blur", "sharp"):
            touch_image(tmp_path / "val" / kind / name)
    pairs = find_pairs(tmp_path / "val")
    assert [p.blur.relative_to(tmp_path / "val" / "blur").as_posix() for p in pairs] == [
        "a/b/y.jpg",
        "a/x.png",
        "z.png",
    ]
    assert all(
        p.sharp.relative_to(tmp_path / "val" / "sharp") == p.blur.relative_to(tmp_path / "val" / "blur") for p in pairs
    )


def test_val_fraction_of_train_is_seeded_and_disjoint(tmp_path: Path) -> None:
    for i in range(10):
        for kind in ("blur", "sharp"):
            touch_image(tmp_path / "train" / kind / f"{i:02d}.png")
    train, val = training_splits(tmp_path, val_dir="train", val_fraction=0.2, seed=3)
    assert (len(train), len(val)) == (8, 2) and not set(train) & set(val)
    assert training_splits(tmp_path, val_dir="train", val_fraction=0.2, seed=3) == (train, val)
    others = {tuple(training_splits(tmp_path, val_dir="train", val_fraction=0.2, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed chooses
    with pytest.raises(PairingError, match="--val-dir test"):
        training_splits(tmp_path)  # no val/ folder: the error says what to do


def test_unpaired_and_mismatched_data_fail_before_training(tmp_path: Path) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 2, "val": 1})
    (data / "train" / "sharp" / "img_01.png").unlink()
    with pytest.raises(PairingError, match=r"img_01\.png has no sharp partner"):
        find_pairs(data / "train")
    Image.new("RGB", (10, 10)).save(data / "train" / "sharp" / "img_01.png")
    with pytest.raises(PairingError, match=r"img_01\.png is \(96, 80\) but .* is \(10, 10\)"):
        check_pairs(find_pairs(data / "train"))
    (data / "train" / "sharp" / "img_01.png").write_bytes(b"not a png")
    with pytest.raises(PairingError, match=r"cannot read .*img_01\.png"):
        check_pairs(find_pairs(data / "train"))
    with pytest.raises(PairingError, match="missing folder"):
        find_pairs(tmp_path / "nowhere")
    with pytest.raises(PairingError, match="img_01"):  # the loop runs the same checks before training
        main(tiny_config(data, tmp_path / "out"))


def test_patches_are_synchronised_and_reproducible(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for kind in ("blur", "sharp"):  # identical content: any desync would show as a difference
        (data / kind).mkdir(parents=True)
        Image.fromarray(textured_image(90, 70, seed=3)).save(data / kind / "a.png")
    dataset = PatchDataset(find_pairs(data), patch_size=32, repeat=8, seed=5)
    patches = [dataset[(0, i)] for i in range(len(dataset))]
    assert all(torch.equal(blur, sharp) and blur.shape == (3, 32, 32) for blur, sharp in patches)
    assert len({tuple(b.flatten()[:50].tolist()) for b, _ in patches}) > 1  # windows differ
    assert all(torch.equal(a[0], dataset[(0, i)][0]) for i, a in enumerate(patches))
    assert not torch.equal(dataset[(1, 0)][0], patches[0][0])  # a new epoch draws new windows


def test_epoch_sampler_shards_reshuffles_and_skips() -> None:
    dataset = list(range(10))
    ranks = [EpochSampler(dataset, num_replicas=2, rank=r, seed=0) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(0)
    shards = [[index for _, index in sampler] for sampler in ranks]
    assert sorted(shards[0] + shards[1]) == dataset  # disjoint shards cover the data
    ranks[0].set_epoch(1)
    assert [i for _, i in ranks[0]] != shards[0] and {e for e, _ in ranks[0]} == {1}
    ranks[0].set_epoch(0, skip=2)
    assert [i for _, i in ranks[0]] == shards[0][2:] and len(ranks[0]) == 3


def test_augmentation_applies_one_transform_to_both() -> None:
    blur = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    seen = set()
    for seed in range(32):
        a, b = augment_pair(blur, blur + 100, random.Random(seed))
        assert torch.equal(b - a, torch.full_like(a, 100))
        seen.add(tuple(a.flatten().tolist()))
    assert len(seen) == 8  # all flips × rotations of a non-square patch occur


# --- losses and config ----------------------------------------------------------------------------


def test_losses() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 176, 176) * 2 - 1
    assert CharbonnierLoss()(target, target).item() == pytest.approx(1e-3)
    assert CharbonnierLoss()(target + 0.5, target).item() == pytest.approx(0.5, abs=1e-4)
    combined = CombinedLoss()
    assert combined(target, target).item() == pytest.approx(0.16e-3, abs=1e-4)
    worse = combined(target + 0.3 * torch.randn_like(target), target)
    assert worse > combined(target + 0.05 * torch.randn_like(target), target)
    small = torch.rand(1, 3, 32, 32)  # too small for 5-scale MS-SSIM → logged L1 fallback
    assert torch.isfinite(combined(small, small * 0.5)) and combined.fallbacks == 1

    # PSNR loss: −PSNR of each image on the [0, 1] scale, averaged; a 10× smaller error is 20 dB less loss.
    noise = torch.randn_like(target)
    mild, heavy = (target + 0.01 * noise).clamp(-1, 1), (target + 0.1 * noise).clamp(-1, 1)
    per_image = [-psnr(to_unit_range(out), to_unit_range(target[i])) for i, out in enumerate(mild)]
    assert PSNRLoss()(mild, target).item() == pytest.approx(np.mean(per_image), abs=1e-3)
    assert PSNRLoss()(mild, target).item() == pytest.approx(PSNRLoss()(heavy, target).item() - 20, abs=0.3)
    assert PSNRLoss()(target, target).item() == pytest.approx(-100)
    # Per image, not per batch: the nearly sharp image's gradient is not drowned by the blurred one's.
    both = torch.stack([mild[0], heavy[1]]).requires_grad_()
    PSNRLoss()(both, target).backward()
    assert both.grad[0].abs().mean() > 5 * both.grad[1].abs().mean()


def test_cli_flags_and_yaml_defaults(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("base_ch: 24\nepochs: 7\nloss: charbonnier\nenc_blocks: [2, 2]\n")
    config = parse_config(["--config", str(yaml_file), "--epochs", "9", "--residual", "--data", "d"])
    assert (config.base_ch, config.epochs, config.loss, config.residual, config.data) == (
        24,
        9,
        "charbonnier",
        True,
        Path("d"),
    )
    assert config.enc_blocks == (2, 2)
    nafnet = parse_config(["--model", "nafnet", "--enc-blocks", "2", "2", "4", "8", "--middle-blocks", "12", "--tlc"])
    assert nafnet.model_config().enc_blocks == (2, 2, 4, 8) and nafnet.model_config().tlc_window == 0
    assert nafnet.model_config(inference=True).tlc_window == 384  # 1.5 × the 256-px patch
    defaults = parse_config([])
    assert (defaults.lr, defaults.weight_decay, defaults.grad_clip, defaults.patch_size) == (2e-4, 1e-4, 1.0, 256)
    assert (defaults.checkpoint_every, defaults.model) == (10, "deblur_unet")
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="nafnet only"):
        TrainConfig(tlc=True)


# --- runs -----------------------------------------------------------------------------------------


def test_run_logs_params_metrics_samples_config_and_registered_model(tmp_path: Path, mlflow_store: str) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 4, "val": 2})
    config = tiny_config(data, tmp_path / "out", experiment="test-mlflow", registered_model_name="test-deblur")
    state = main(config)

    assert state.epoch == 2 and state.step == 4  # 4 pairs / batch 2 × 2 epochs
    assert state.best_path is not None and state.best_path.name.startswith("best_epoch_")
    payload = read_checkpoint(state.best_path)
    assert payload["model_config"]["base_ch"] == 8
    assert payload["metrics"]["psnr"] == pytest.approx(state.best_psnr)
    assert set(payload["metrics"]) >= {"psnr", "ssim", "val_loss", "train_loss", "input_psnr"}
    assert read_checkpoint(tmp_path / "out" / "best.pt")["metrics"] == payload["metrics"]

    client = mlflow.MlflowClient()
    (run,) = mlflow.search_runs(experiment_names=["test-mlflow"], output_format="list")
    assert run.info.run_id == state.run_id and run.info.status == "FINISHED"
    params = run.data.params
    assert (params["lr"], params["loss"], params["model"], params["world_size"]) == (
        "0.0002",
        "charbonnier",
        "deblur_unet",
        "1",
    )
    assert int(params["parameters"]) > 0 and params["enc_blocks"] == "[1, 1, 1, 28]"
    assert {"train_loss", "val_loss", "psnr", "ssim", "lr", "grad_norm", "epoch_time", "best_psnr"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "psnr")] == [1, 2]

    config_file = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert parse_config(["--config", str(config_file)]) == config  # the logged config reproduces the run
    for epoch in (1, 2):  # num_samples=1: one before | after | ground-truth strip per validation
        (sample,) = client.list_artifacts(run.info.run_id, f"samples/epoch_{epoch:04d}")
        strip = Image.open(client.download_artifacts(run.info.run_id, sample.path, str(tmp_path)))
        assert sample.path.endswith("img_00.png") and strip.size == (3 * 96, 80)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        f"checkpoints/{state.best_path.name}"
    ]

    (version,) = client.search_model_versions("name='test-deblur'")
    assert version.run_id == run.info.run_id
    info = mlflow.models.get_model_info(f"models:/test-deblur/{version.version}")
    (spec,) = info.signature.inputs.inputs
    assert tuple(spec.shape) == (-1, 3, -1, -1) and spec.type == np.dtype(np.float32)
    logged = mlflow.pytorch.load_model(f"models:/test-deblur/{version.version}")
    x = torch.rand(1, 3, 21, 19) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(logged(x), load_model(state.best_path)(x))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> tuple[Path, Path]:
    """A NAFNet+TLC run of 4 steps (2 epochs × 2 batches) without interruption: (data, last.pt)."""
    root = tmp_path_factory.mktemp("straight")
    data = write_paired_dataset(root / "data", {"train": 4, "val": 1})
    main(tiny_config(data, root / "out", experiment="test-straight", tlc=True, **TINY_NAFNET))
    return data, root / "out" / "last.pt"


@pytest.mark.parametrize("interrupt_after", [2, 3])  # N/2 (an epoch boundary), and mid-epoch
def test_ctrl_c_saves_and_resume_equals_uninterrupted(
    tmp_path: Path, uninterrupted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, interrupt_after: int
) -> None:
    data, straight = uninterrupted
    config = tiny_config(data, tmp_path / "out", experiment="test-resume", tlc=True, **TINY_NAFNET)
    real_step, calls = train.loop.train_step, []

    def step_then_ctrl_c(*args: object) -> tuple[float, float]:
        if len(calls) == interrupt_after:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args)

    with monkeypatch.context() as patch:
        patch.setattr(train.loop, "train_step", step_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            main(config)
    saved = read_checkpoint(tmp_path / "out" / "last.pt")
    assert saved["train_state"]["step"] == interrupt_after
    killed = mlflow.get_run(saved["train_state"]["run_id"])
    assert killed.info.status == "KILLED"

    resumed = main(tiny_config(**{**config.__dict__, "resume": tmp_path / "out" / "last.pt"}))
    assert resumed.step == 4 and resumed.run_id == killed.info.run_id  # the same MLflow run goes on
    expected, actual = read_checkpoint(straight), read_checkpoint(tmp_path / "out" / "last.pt")
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), name
    assert actual["optimizer"]["state"][0]["step"] == expected["optimizer"]["state"][0]["step"] == 4
    history = mlflow.MlflowClient().get_metric_history(resumed.run_id, "psnr")
    assert sorted(m.step for m in history) == [1, 2]
    best = load_model(tmp_path / "out" / "best.pt")  # validated and exported with TLC (1.5 × 48 px)
    assert isinstance(best, NAFNetLocal) and best.window == 72


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(
    tmp_path: Path, uninterrupted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, straight = uninterrupted
    config = tiny_config(data, tmp_path / "out", experiment="test-init", tlc=True, init_from=straight, **TINY_NAFNET)
    expected, real_step, seen = read_checkpoint(straight)["state_dict"], train.loop.train_step, []

    def check_first_step(session: train.loop.Session, *batch: torch.Tensor) -> tuple[float, float]:
        if not seen:  # before any update the model holds the checkpoint's weights
            state = session.trainables.model.state_dict()
            seen.append(all(torch.equal(state[name], tensor) for name, tensor in expected.items()))
        return real_step(session, *batch)

    monkeypatch.setattr(train.loop, "train_step", check_first_step)
    state = main(config)
    assert seen == [True] and state.step == 4  # a fresh schedule: all epochs run again
    with pytest.raises(ValueError, match="this run trains"):
        main(tiny_config(data, tmp_path / "other", init_from=straight))  # a DeblurUNet from NAFNet weights
    with pytest.raises(ValueError, match="pick one"):
        tiny_config(data, tmp_path / "both", init_from=straight, resume=straight)


def test_init_from_grows_bottleneck_blocks_without_changing_the_output(tmp_path: Path) -> None:
    torch.manual_seed(3)
    base_config = ModelConfig(base_ch=8, residual=True)
    base = build_model(base_config)
    for parameter in base.parameters():  # a "trained" model: the zero-initialised final conv is not
        parameter.data.normal_(0, 0.1)
    path = save_checkpoint(tmp_path / "base.pt", base, base_config, epoch=3, metrics={})
    grown_config = ModelConfig(base_ch=8, residual=True, bottleneck_blocks=2)
    grown = build_model(grown_config)
    train.loop.load_initial_weights(path, grown, grown_config)
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    torch.testing.assert_close(grown.eval()(x), base.eval()(x), rtol=0, atol=0)
    grown.train()(x).square().mean().backward()  # the new blocks learn from the first step
    assert grown.deep[1].body[-1].weight.grad.abs().sum() > 0

    for wrong in (ModelConfig(base_ch=16, residual=True, bottleneck_blocks=2), ModelConfig(base_ch=8)):
        with pytest.raises(ValueError, match="but this run trains"):
            train.loop.load_initial_weights(path, build_model(wrong), wrong)
    deeper = save_checkpoint(tmp_path / "deep.pt", grown, grown_config, epoch=0, metrics={})
    with pytest.raises(ValueError, match="but this run trains"):  # shrinking would drop trained blocks
        train.loop.load_initial_weights(deeper, base, base_config)
    with pytest.raises(ValueError, match="deblur_unet only"):
        TrainConfig(model="nafnet", bottleneck_blocks=1)


def test_sigterm_saves_a_resumable_checkpoint_like_ctrl_c(
    tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 4, "val": 1})
    real_step, calls = train.loop.train_step, []
    before = signal.getsignal(signal.SIGTERM)

    def step_then_sigterm(*args: object) -> tuple[float, float]:
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from outside would
        calls.append(1)
        return real_step(*args)

    monkeypatch.setattr(train.loop, "train_step", step_then_sigterm)
    with pytest.raises(KeyboardInterrupt, match="signal"):
        main(tiny_config(data, tmp_path / "out", experiment="test-sigterm", epochs=3))
    saved = read_checkpoint(tmp_path / "out" / "last.pt")
    assert saved["train_state"]["step"] == 1 and "optimizer" in saved
    assert mlflow.get_run(saved["train_state"]["run_id"]).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only as long as the run


class WorkerPids(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        return os.getpid()


def test_loader_workers_leave_sigterm_to_the_training_process(tmp_path: Path) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 2, "val": 1})
    config = tiny_config(data, tmp_path / "out", num_workers=1)
    assert make_loader(find_pairs(data / "train"), config, DistContext()).worker_init_fn is init_worker
    loader = torch.utils.data.DataLoader(WorkerPids(), num_workers=1, worker_init_fn=init_worker, prefetch_factor=1)
    batches = iter(loader)
    worker = int(next(batches))
    assert worker != os.getpid()
    os.kill(worker, signal.SIGTERM)  # as `pkill -f "python -m train"` or a scheduler's group kill would
    time.sleep(0.5)  # a killed worker is noticed by the next fetch: "DataLoader worker ... killed by signal"
    assert [int(pid) for pid in batches] == [worker] * 11


def test_ema_update_ramps_then_averages() -> None:
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    start = ema.weight.detach().clone()
    update_ema(ema, model, decay=0.99, step=0)  # ramp: decay 1/10 on the first step
    torch.testing.assert_close(ema.weight, 0.1 * start + 0.9 * model.weight)
    before = ema.weight.detach().clone()
    update_ema(ema, model, decay=0.99, step=10**6)
    torch.testing.assert_close(ema.weight, 0.99 * before + 0.01 * model.weight)


def test_ema_weights_are_validated_exported_and_resumed(
    tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 4, "val": 1})
    config = tiny_config(data, tmp_path / "straight", experiment="test-ema", epochs=1, ema_decay=0.9, lr=1e-2)
    main(config)
    last, best = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(tmp_path / "straight" / "best.pt")
    for name, tensor in last["state_dict"].items():  # both hold the average: what was validated
        assert torch.equal(best["state_dict"][name], tensor), name
    assert not all(torch.equal(last["train_weights"][n], t) for n, t in last["state_dict"].items())

    real_step, calls = train.loop.train_step, []

    def step_then_ctrl_c(*args: object) -> tuple[float, float]:
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args)

    resumed_dir = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(train.loop, "train_step", step_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            main(tiny_config(**{**config.__dict__, "out_dir": resumed_dir}))
    main(tiny_config(**{**config.__dict__, "out_dir": resumed_dir, "resume": resumed_dir / "last.pt"}))
    resumed = read_checkpoint(resumed_dir / "last.pt")
    for key in ("state_dict", "train_weights"):
        for name, tensor in last[key].items():
            assert torch.equal(resumed[key][name], tensor), (key, name)


def test_extra_validation_sets_are_scored_logged_and_choose_the_best(tmp_path: Path, mlflow_store: str) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 4, "val": 1})
    extras = [write_paired_dataset(tmp_path / name, {"val": count}) / "val" for name, count in (("mild", 2), ("hd", 1))]
    config = tiny_config(data, tmp_path / "out", experiment="test-extra-val", extra_val=tuple(extras))
    state = main(config)

    metrics = read_checkpoint(state.best_path)["metrics"]
    gains = [metrics["gain"], metrics["mild/val/gain"], metrics["hd/val/gain"]]
    assert metrics["mild/val/gain"] == pytest.approx(metrics["mild/val/psnr"] - metrics["mild/val/input_psnr"])
    assert metrics["mean_gain"] == pytest.approx(np.mean(gains)) == pytest.approx(state.best_score)
    (run,) = mlflow.search_runs(experiment_names=["test-extra-val"], output_format="list")
    assert {"mild/val/psnr", "mild/val/ssim", "hd/val/gain", "mean_gain", "best_score"} <= set(run.data.metrics)
    client = mlflow.MlflowClient()
    config_file = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert parse_config(["--config", str(config_file)]) == config
    assert parse_config(["--extra-val", *map(str, extras)]).extra_val == tuple(extras)
    with pytest.raises(ValueError, match="labels must differ"):
        TrainConfig(extra_val=(tmp_path / "a" / "val", tmp_path / "b" / "a" / "val"))


@pytest.mark.parametrize("extra_val", [(), (Path("mild/val"),)])
def test_best_checkpoint_follows_psnr_or_mean_gain(tmp_path: Path, extra_val: tuple[Path, ...]) -> None:
    config = TrainConfig(out_dir=tmp_path, base_ch=8, extra_val=extra_val)
    model, state = build_model(config.model_config()), TrainState()
    candidates = [{"psnr": 30.0, "mean_gain": 0.5}, {"psnr": 31.0, "mean_gain": 0.2}, {"psnr": 29.0, "mean_gain": 0.6}]
    kept = [save_if_best(model, config.model_config(), m, config, state) for m in candidates]
    # PSNR alone keeps the second; over several sets a model that gains more on average wins.
    assert kept == ([True, True, False] if not extra_val else [True, False, True])
    assert state.best_psnr == (31.0 if not extra_val else 29.0)


def test_resume_state_from_before_selection_scores() -> None:
    old = TrainState(best_psnr=30.5).to_dict()
    del old["best_score"]
    assert TrainState.from_dict(old).best_score == 30.5


def test_two_process_gloo_run(tmp_path: Path, mlflow_store: str) -> None:
    data = write_paired_dataset(tmp_path / "data", {"train": 8, "val": 1})
    args = ["--data", str(data), "--out-dir", str(tmp_path / "out"), "--base-ch", "8", "--epochs", "1",
            "--batch-size", "2", "--patch-size", "48", "--loss", "charbonnier", "--num-workers", "0",
            "--val-tile", "64", "--val-overlap", "16", "--experiment", "test-ddp", "--device", "cpu"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train"]
    result = subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    saved = read_checkpoint(tmp_path / "out" / "last.pt")
    assert saved["train_state"]["step"] == 2  # 8 pairs / 2 ranks / batch 2: each rank took 2 steps
    (run,) = mlflow.search_runs(experiment_names=["test-ddp"], output_format="list")  # rank 0 only
    assert run.data.params["world_size"] == "2" and run.info.status == "FINISHED"
    assert "[rank 0]" in result.stderr and "[rank 1] train.loop: epoch" not in result.stderr
