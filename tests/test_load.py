"""Load through the session's real TorchServe with bench/load.py: every request is answered.

A smaller version of `python -m bench.load --requests 200 --concurrency 8` (tiny images): the
accounting must hold (200s + queue-full 503s = requests sent), every 200 carries an image of the
size that was sent, and no request hangs (each is bounded by a timeout). Figures are printed.
"""

from __future__ import annotations

import pytest

from bench.load import make_jobs, run_load
from serve.client import TorchServeClient

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
