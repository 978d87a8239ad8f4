"""Worker fault: SIGKILL the model worker in the middle of a request to the session's TorchServe.

The request in flight gets an error (never a hang: it is bounded by a timeout), TorchServe starts a
new worker, /ping is Healthy again and the next requests succeed. The time from the kill to a READY
worker is printed. The worker killed is one this test session started.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import psutil
import pytest
from PIL import Image

from bench.load import Job, Outcome, send_one
from serve.client import BackendError, TorchServeClient, read_keys
from tests.bad_inputs import png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The largest self-ensemble request (8 model passes over 2048²): 32× the work of a plain 1024² request,
# which on a fast CPU never kept the worker busy for BUSY_CPU_SECONDS, so the kill lands mid-request.
LONG_SIDE = 2048
REQUEST_TIMEOUT = 300.0
BUSY_CPU_SECONDS = 1.0  # the worker has worked this long on the request when it is killed
WAIT_LIMIT = 300.0  # bound for every wait below
POLL = 0.25


def ready_workers(client: TorchServeClient) -> list[int]:
    """Pids of the READY workers of deblur's versions ([] while TorchServe is restarting one)."""
    try:
        versions = client.management("GET", "/models/deblur/all")
    except BackendError:
        return []
    return [w["pid"] for v in versions for w in v.get("workers", []) if w.get("status") == "READY"]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def wait_until_busy(worker: psutil.Process, since: float, request: Future) -> None:
    """Bounded wait until the worker has spent BUSY_CPU_SECONDS on the request."""
    deadline = time.monotonic() + WAIT_LIMIT
    while cpu_seconds(worker) - since < BUSY_CPU_SECONDS:
        assert not request.done(), f"the request ended before the kill: {request.result()}"
        assert time.monotonic() < deadline, "the worker never started on the request"
        time.sleep(POLL)


def wait_for_recovery(client: TorchServeClient, killed: int) -> float:
    """Seconds until /ping is Healthy and a new READY worker (not ``killed``) exists."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT_LIMIT:
        pids = ready_workers(client)
        if pids and killed not in pids and healthy(client):
            return time.monotonic() - started
        time.sleep(POLL)
    pytest.fail(f"no READY worker {WAIT_LIMIT:.0f} s after the kill")


def healthy(client: TorchServeClient) -> bool:
    try:
        return client.ping() == "Healthy"
    except BackendError:
        return False


def long_job() -> Job:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (LONG_SIDE // 16, LONG_SIDE // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((LONG_SIDE, LONG_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    document = {"image": base64.b64encode(buffer.getvalue()).decode("ascii"), "self_ensemble": True}
    return Job(json.dumps(document).encode(), (LONG_SIDE, LONG_SIDE))


def test_killed_worker_fails_its_request_and_is_replaced(torchserve: TorchServeClient) -> None:
    [pid] = ready_workers(torchserve)
    worker = psutil.Process(pid)
    key = read_keys(torchserve.key_file)["inference"]
    url = f"{torchserve.inference_url}/predictions/deblur"

    with ThreadPoolExecutor(max_workers=1) as pool:
        idle = cpu_seconds(worker)
        in_flight = pool.submit(send_one, url, key, long_job(), REQUEST_TIMEOUT)
        wait_until_busy(worker, idle, in_flight)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        outcome: Outcome = in_flight.result(timeout=REQUEST_TIMEOUT + 30)
    answered_after = time.monotonic() - killed_at

    recovery = wait_for_recovery(torchserve, pid)
    print(
        f"\nworker {pid} killed after {BUSY_CPU_SECONDS:.0f} s of CPU on a {LONG_SIDE}² request; the request got "
        f"{outcome.status} ({outcome.detail[:120]!r}) {answered_after:.1f} s after the kill; "
        f"new READY worker and Healthy /ping {recovery:.1f} s after the kill"
    )
    assert outcome.status != 200 and outcome.status is not None, outcome
    assert outcome.status >= 500
    for size in ((40, 24), (33, 17), (64, 48)):
        response = torchserve.predict(png(*size))
        assert Image.open(io.BytesIO(response.content)).size == size
