"""Shared fixtures: tiny models and images, made on the fly (nothing is downloaded)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deblur.model import DeblurUNet, ModelConfig, save_checkpoint
from model_archive.build import ArchiveSpec, build_archive
from serve import server
from serve.client import TorchServeClient
from serve.private import PrivateServer

TINY_CONFIG = ModelConfig(base_ch=8)
# Residual with a zero-initialised last layer: returns its input exactly, so "which model answered"
# is detectable (the untrained TINY_CONFIG model changes every pixel).
IDENTITY_CONFIG = ModelConfig(base_ch=8, residual=True)


def textured_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 image with edges and gradients, cheap to make at any size."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), rng.uniform(0, 6.3)
        image[..., channel] = 0.5 + 0.3 * np.sin(fx * x + fy * y + phase)
    for _ in range(6):  # hard-edged rectangles give the blur something to smear
        x0, y0 = rng.integers(0, max(width, 1)), rng.integers(0, max(height, 1))
        image[y0 : y0 + height // 4 + 1, x0 : x0 + width // 4 + 1] = rng.uniform(0, 1, 3)
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def discs_image(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 flat coloured discs on gray: edges in every direction, as a blind kernel estimate
    needs (the axis-aligned rectangles of ``textured_image`` only constrain the kernel's two projections)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    image = np.full((size, size, 3), 0.5)
    for _ in range(40):
        cy, cx, radius = *rng.uniform(0, size, 2), rng.uniform(4, size / 6)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0.05, 0.95, 3)
    return (image * 255).round().astype(np.uint8)


def shaken_discs(size: int, extent: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sharp, blurred) uint8 discs, shaken as train.synth shakes photos (camera shake of ``extent`` px, noise)."""
    from train.synth import BlurSettings, blur_image, rasterise_kernel, shake_trajectory

    sharp = discs_image(size, seed)
    kernel = rasterise_kernel(shake_trajectory(np.random.default_rng(seed)), extent)
    return sharp, blur_image(sharp, kernel, np.random.default_rng(seed), BlurSettings())


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained DeblurUNet with base_ch=8 (fast on CPU), saved as a self-describing checkpoint."""
    torch.manual_seed(0)
    model = DeblurUNet(TINY_CONFIG)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model, TINY_CONFIG, epoch=0, metrics={"psnr": 0.0})


@pytest.fixture(scope="session")
def identity_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeblurUNet that returns its input unchanged, with recognisable training metrics."""
    torch.manual_seed(0)
    model = DeblurUNet(IDENTITY_CONFIG)
    path = tmp_path_factory.mktemp("ckpt") / "identity.pt"
    return save_checkpoint(path, model, IDENTITY_CONFIG, epoch=7, metrics={"psnr": 31.5, "ssim": 0.9})


@pytest.fixture
def sample_png() -> bytes:
    return png_bytes(textured_image(96, 64))


@dataclass(frozen=True)
class Deployment:
    """A running test TorchServe: its client, model store (holding a v2.0 archive not yet
    registered), config and run directory (key file, logs, default history)."""

    client: TorchServeClient
    store: Path
    config: Path
    run_dir: Path
    v2_archive: Path


@pytest.fixture(scope="session")
def torchserve_deployment(
    tiny_checkpoint: Path, identity_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A real TorchServe serving the tiny model as deblur 1.0 on free loopback ports, stopped at the
    end of the session. The store also holds the identity model as deblur 2.0, for version tests."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java, which is not installed")
    root = tmp_path_factory.mktemp("torchserve")
    store = build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=root / "model_store")).parent
    v2_archive = build_archive(ArchiveSpec(identity_checkpoint, "2.0", export_path=store))
    private = PrivateServer(store, root)
    try:
        client = private.__enter__()
    except server.ServerError as exc:
        pytest.fail(f"TorchServe did not come up: {exc}", pytrace=False)
    try:
        client.timeout = 120.0
        yield Deployment(client, store, private.config, private.run_dir, v2_archive)
    finally:
        private.__exit__(None, None, None)


@pytest.fixture(scope="session")
def torchserve(torchserve_deployment: Deployment) -> TorchServeClient:
    """The client of the session's real TorchServe (see ``torchserve_deployment``)."""
    return torchserve_deployment.client
