"""A private TorchServe on free loopback ports: for tests, benchmarks and load scripts.

It never touches a developer's server: its own config (every listener moved to a free port), its
own run directory (key file, logs) and its own TMPDIR/TEMP (TorchServe keeps its pid file, worker
sockets and unpacked archives there, and ``torchserve --stop`` stops whatever that pid file names).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from types import TracebackType

import psutil

from serve import server
from serve.client import TorchServeClient


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


def loopback_config(source: Path, target: Path, extra: dict[str, str] | None = None) -> Path:
    """``source`` config.properties with every listener moved to a free loopback port (+ ``extra`` keys)."""
    inference, management, metrics, grpc_inference, grpc_management = free_loopback_ports(5)
    overrides = {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_port": str(grpc_inference),
        "grpc_management_port": str(grpc_management),
    } | (extra or {})
    kept = [line for line in source.read_text().splitlines() if line.partition("=")[0].strip() not in overrides]
    target.write_text("\n".join(kept + [f"{key}={value}" for key, value in overrides.items()]) + "\n")
    return target


def private_env(tmp_dir: Path) -> dict[str, str]:
    """This process's environment with its own TMPDIR/TEMP and without DEBLUR_* address overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLUR_")}
    return env | {"TMPDIR": str(tmp_dir), "TEMP": str(tmp_dir)}


def stop_torchserve(run_dir: Path, env: dict[str, str]) -> None:
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


class PrivateServer:
    """``with PrivateServer(store, work_dir) as client:`` a ready TorchServe serving ``store``."""

    def __init__(
        self,
        store: Path,
        work_dir: Path,
        *,
        config_source: Path = server.DEFAULT_CONFIG,
        extra_config: dict[str, str] | None = None,
        timeout: float = 180.0,
    ) -> None:
        self.store = store.resolve()
        self.work_dir = work_dir = work_dir.resolve()  # TorchServe refuses a relative TEMP
        self.run_dir = work_dir / "run"
        tmp_dir = work_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.env = private_env(tmp_dir)
        self.config = loopback_config(config_source, work_dir / "config.properties", extra_config)
        self.timeout = timeout

    def __enter__(self) -> TorchServeClient:
        try:
            return server.start(self.store, self.config, self.run_dir, timeout=self.timeout, env=self.env)
        except BaseException:
            stop_torchserve(self.run_dir, self.env)
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        stop_torchserve(self.run_dir, self.env)
