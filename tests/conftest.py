"""Shared fixtures: tiny models and images, made on the fly (nothing is downloaded)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from deblur.model import DeblurUNet, ModelConfig, save_checkpoint
from model_archive.build import ArchiveSpec, build_archive
from serve import server
from serve.client import TorchServeClient

TINY_CONFIG = ModelConfig(base_ch=8)


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


@pytest.fixture
def sample_png() -> bytes:
    return png_bytes(textured_image(96, 64))


def free_loopback_ports(count: int) -> list[int]:
    """Ports the OS reports free on 127.0.0.1 right now (all held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def loopback_config(source: Path, target: Path) -> Path:
    """The repo's config.properties with every listener moved to a free loopback port."""
    inference, management, metrics, grpc_inference, grpc_management = free_loopback_ports(5)
    overrides = {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_port": str(grpc_inference),
        "grpc_management_port": str(grpc_management),
    }
    kept = [line for line in source.read_text().splitlines() if line.partition("=")[0].strip() not in overrides]
    target.write_text("\n".join(kept + [f"{key}={value}" for key, value in overrides.items()]) + "\n")
    return target


def stop_torchserve(run_dir: Path, env: Mapping[str, str]) -> None:
    """torchserve --stop, then kill whatever of the frontend and its workers is still alive."""
    pid = server.server_pid(env)
    try:
        frontend = psutil.Process(pid) if pid else None
        family = [frontend, *frontend.children(recursive=True)] if frontend else []
    except psutil.Error:
        family = []
    with contextlib.suppress(server.ServerError):  # the kill below is the backstop
        server.stop(run_dir, env)
    _, alive = psutil.wait_procs(family, timeout=30)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="session")
def torchserve(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServeClient]:
    """A real TorchServe serving the tiny model on free loopback ports, stopped at the end of the session."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java, which is not installed")
    root = tmp_path_factory.mktemp("torchserve")
    store = build_archive(ArchiveSpec(tiny_checkpoint, "1.0", export_path=root / "model_store")).parent
    config = loopback_config(server.DEFAULT_CONFIG, root / "config.properties")
    run_dir, private_tmp = root / "run", root / "tmp"
    private_tmp.mkdir()
    # A private TMPDIR/TEMP gives this server its own pid file, worker sockets and extracted
    # archives, so `torchserve --stop` below can never stop a developer's server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLUR_")}
    env |= {"TMPDIR": str(private_tmp), "TEMP": str(private_tmp)}
    try:
        try:
            client = server.start(store, config, run_dir, timeout=180, env=env)
        except server.ServerError as exc:
            pytest.fail(f"TorchServe did not come up: {exc}", pytrace=False)
        client.timeout = 120.0
        yield client
    finally:
        stop_torchserve(run_dir, env)
