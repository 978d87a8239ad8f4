"""The hostile-input corpus (tests/bad_inputs.py) through the session's real TorchServe.

For every case: the documented answer (a 4xx with a readable message, or a correct image), never a
5xx, the same worker process before and after (no crash, no restart), and a valid request right
after it succeeds.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serve.client import TorchServeClient, read_keys
from tests.bad_inputs import CASES, MARKER, answer_image, png, send

pytestmark = pytest.mark.e2e

TIMEOUT = 120.0  # seconds per request: far above any answer here, so a hang fails instead of blocking


def worker_pids(client: TorchServeClient) -> list[int]:
    """The pids of every deblur worker, from the management API's describe."""
    versions = client.management("GET", "/models/deblur/all")
    return sorted(worker["pid"] for version in versions for worker in version.get("workers", []))


def inference_headers(client: TorchServeClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {read_keys(client.key_file)['inference']}"}


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert all(case.expect.error for case in CASES.values() if not case.expect.is_image)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_its_documented_answer_and_the_worker_survives(torchserve: TorchServeClient, name: str) -> None:
    case, expect = CASES[name], CASES[name].expect
    before = worker_pids(torchserve)
    assert before, "no worker to begin with"

    url = f"{torchserve.inference_url}/predictions/deblur"
    response = send(case, url, inference_headers(torchserve), TIMEOUT)

    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.status_code == expect.status, response.text[:300]
    if expect.is_image:
        image = answer_image(case, response)
        assert (image.size, image.mode) == (expect.size, expect.mode)
        assert MARKER not in response.content  # bytes after the image are never echoed
    else:
        answer = response.json()
        assert (answer["code"], answer["error"]) == (expect.status, expect.error), answer
        assert expect.words in answer["message"]
        assert "Traceback" not in answer["message"]
    assert worker_pids(torchserve) == before, "the worker was restarted"
    after = torchserve.predict(png(40, 24))
    assert Image.open(io.BytesIO(after.content)).size == (40, 24)
