"""Load through a real TorchServe with bench/load.py: every request is answered.

A smaller version of `python -m bench.load --requests 200 --concurrency 8` (tiny images): the
accounting must hold (200s + queue-full 503s = requests sent), every 200 carries an image of the
size that was sent, and no request hangs (each is bounded by a timeout). With a job queue of one, the
surplus is refused with TorchServe's intended 503 instead of waiting. Figures are printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import make_jobs, run_load
from serve.client import TorchServeClient
from serve.private import PrivateServer
from tests.conftest import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS, CONCURRENCY = 40, 8
SIZES = [(32, 24), (48, 32), (64, 48), (80, 40)]
TIMEOUT = 120.0


def test_every_request_under_load_is_answered(torchserve: TorchServeClient) -> None:
    report = run_load(torchserve, make_jobs(REQUESTS, SIZES), CONCURRENCY, TIMEOUT)
    print("\n" + report.summary())

    assert len(report.outcomes) == REQUESTS
    assert not report.failures, report.summary()
    assert report.accounted
    assert report.successes >= 1
    assert torchserve.ping() == "Healthy"


def test_a_full_job_queue_is_a_503_and_every_request_is_accounted_for(
    torchserve_deployment: Deployment, tmp_path: Path
) -> None:
    """A private TorchServe with job_queue_size=1 (the session's tiny model as deblur 1.0)."""
    jobs = make_jobs(24, [(256, 192)])
    with PrivateServer(torchserve_deployment.store, tmp_path, extra_config={"job_queue_size": "1"}) as client:
        report = run_load(client, jobs, CONCURRENCY, TIMEOUT)
        print("\n" + report.summary())
        assert client.ping() == "Healthy"

    assert len(report.outcomes) == len(jobs)
    assert not report.failures, report.summary()
    assert report.accounted
    assert report.queue_full >= 1 and report.successes >= 1
