"""Versions under load: switch the default from 1.0 to 2.0 while requests to the default run.

The session's TorchServe serves the tiny model as deblur 1.0; its store holds the identity model as
deblur 2.0 (answers its input exactly). 2.0 is registered, requests to /predictions/deblur start,
the default moves to 2.0 part-way through: none of them fails, and answers after the switch come from
2.0. The test leaves 1.0 as the only, default version.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np
import pytest
from PIL import Image

from bench.load import Job, send_one
from serve import models
from serve.client import TorchServeClient, read_keys
from tests.conftest import Deployment, png_bytes, textured_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS, CONCURRENCY, SWITCH_AFTER = 36, 4, 8
TIMEOUT = 120.0


def versions(client: TorchServeClient) -> dict[str, bool]:
    return {entry.version: entry.is_default for entry in models.status(client)}


@pytest.fixture
def with_v2(torchserve_deployment: Deployment) -> Iterator[Deployment]:
    deployment = torchserve_deployment
    models.register(deployment.client, deployment.v2_archive, deployment.store)
    yield deployment
    client = deployment.client
    if versions(client).get("2.0"):
        client.management("PUT", "/models/deblur/1.0/set-default")
    client.management("DELETE", "/models/deblur/2.0")


def jobs() -> list[tuple[Job, np.ndarray]]:
    images = [textured_image(40 + i % 8, 32, seed=i) for i in range(REQUESTS)]
    return [(Job(png_bytes(image), (image.shape[1], image.shape[0])), image) for image in images]


def test_set_default_under_load_fails_no_request(with_v2: Deployment) -> None:
    client = with_v2.client
    assert versions(client) == {"1.0": True, "2.0": False}
    key = read_keys(client.key_file)["inference"]
    url = f"{client.inference_url}/predictions/deblur"
    work = jobs()

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        futures = [pool.submit(send_one, url, key, job, TIMEOUT) for job, _ in work]
        done: set = set()
        while len(done) < SWITCH_AFTER:  # bounded: every request has a timeout
            finished, _ = wait([f for f in futures if f not in done], return_when=FIRST_COMPLETED)
            done |= finished
        models.set_default(client, "deblur", "2.0", with_v2.run_dir)
        outcomes = [future.result() for future in futures]

    failures = [(o.status, o.detail[:200]) for o in outcomes if not o.ok]
    print(
        f"\n{REQUESTS} requests at concurrency {CONCURRENCY}, default switched to 2.0 after {SWITCH_AFTER} "
        f"had finished: {len(outcomes) - len(failures)} succeeded, {len(failures)} failed"
    )
    assert len(outcomes) == REQUESTS
    assert not failures
    assert versions(client) == {"1.0": False, "2.0": True}
    assert answered_by_identity(client, work[0][1]), "after the switch the default (2.0, identity) must answer"


def answered_by_identity(client: TorchServeClient, image: np.ndarray) -> bool:
    response = client.predict(png_bytes(image))
    return np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), image)
