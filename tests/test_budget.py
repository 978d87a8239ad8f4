"""The compute budget through a real TorchServe: an extreme aspect ratio inside the budget is answered, and the
worker that answered it is the one that was there before (slow: the strip is 4465 tiles)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serve.client import TorchServeClient
from tests.bad_inputs import flat_png
from tests.test_bad_inputs import worker_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_two_million_pixel_strip_is_answered_within_the_budget(torchserve: TorchServeClient) -> None:
    before = worker_pids(torchserve)
    response = torchserve.predict(flat_png(2_000_000, 1))
    assert Image.open(io.BytesIO(response.content)).size == (2_000_000, 1)
    assert worker_pids(torchserve) == before, "the worker was restarted"
