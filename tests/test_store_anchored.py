"""The model store anchored: TorchServe accepts registrations of archives in its own store only.

``python -m serve start`` (and ``serve.private``, which goes through it) writes an effective config into
the run dir whose ``allowed_urls`` names the store's absolute path. The e2e tests use the session's real
TorchServe (tests/conftest.py); the others check the rule itself.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from serve import models, server
from serve.client import BackendError, TorchServeClient
from tests.conftest import Deployment

SHIPPED_RULE = server.read_properties(server.DEFAULT_CONFIG)["allowed_urls"]


def versions_and_pids(client: TorchServeClient) -> dict[str, list[int]]:
    described = client.management("GET", "/models/deblur/all")
    return {v["modelVersion"]: sorted(w["pid"] for w in v.get("workers", [])) for v in described}


def test_the_rule_names_only_archives_directly_inside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "my.store" / "model_store"
    rule = re.compile(server.store_url_pattern(store))  # the Java syntax used is also Python's
    inside = f"file://{store.resolve()}"
    assert rule.fullmatch(f"{inside}/deblur_v2.0.mar")
    refused = (
        f"file://{tmp_path.resolve()}/other/model_store/deblur_v2.0.mar",
        f"file://{store.resolve()}x/deblur_v2.0.mar",  # a sibling whose name starts like the store's
        f"file://{str(store.resolve()).replace('.', 'x')}/deblur_v2.0.mar",  # "." is a dot, not any character
        f"file://{str(store.resolve()).upper()}/deblur_v2.0.mar",
        f"{inside}/../deblur_v2.0.mar",
        f"{inside}/sub/deblur_v2.0.mar",
        f"{inside}/deblur_v2.0.mar.zip",
        f"{inside}/deblur_v2.0.mar#x",
        "deblur_v2.0.mar",
    )
    for url in refused:
        assert not rule.fullmatch(url), url
    assert "\\" not in rule.pattern and "," not in rule.pattern  # Java properties / the list separator


def test_a_store_path_the_rule_cannot_express_is_refused(tmp_path: Path) -> None:
    with pytest.raises(server.ServerError, match="cannot express"):
        server.store_url_pattern(tmp_path / "a,b" / "model_store")


def test_launch_hands_torchserve_an_effective_config_anchored_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(server.subprocess, "run", lambda command, **_: commands.append(command) or _Done())
    monkeypatch.setattr(server, "torchserve_executable", lambda: "torchserve")
    (tmp_path / "store").mkdir()
    config = tmp_path / "config.properties"
    config.write_text(f"inference_address=http://127.0.0.1:8080\nallowed_urls={SHIPPED_RULE}\n")

    server.launch(tmp_path / "store", config, tmp_path / "run")

    [command] = commands
    effective = Path(command[command.index("--ts-config") + 1])
    assert effective == tmp_path / "run" / server.EFFECTIVE_CONFIG
    properties = server.read_properties(effective)
    assert properties["inference_address"] == "http://127.0.0.1:8080"
    assert properties["allowed_urls"] == server.store_url_pattern(tmp_path / "store")
    assert effective.read_text().count("allowed_urls=") == 1


class _Done:
    returncode = 0


@pytest.mark.e2e
def test_an_archive_in_another_model_store_is_refused_and_no_worker_starts(
    torchserve_deployment: Deployment, tmp_path: Path
) -> None:
    """A real archive in /tmp/<random>/model_store, which the shipped generic rule would admit, is refused."""
    client, store = torchserve_deployment.client, torchserve_deployment.store
    elsewhere = tmp_path / "model_store" / "a.mar"
    elsewhere.parent.mkdir()
    shutil.copyfile(torchserve_deployment.v2_archive, elsewhere)
    url = f"file://{elsewhere}"
    assert re.fullmatch(SHIPPED_RULE, url)  # what used to register and start a worker
    before, listing = versions_and_pids(client), sorted(p.name for p in store.iterdir())

    with pytest.raises(BackendError, match="does not match any allowed URL") as caught:
        client.management("POST", "/models", params={"url": url, "initial_workers": 1, "synchronous": "true"})

    assert caught.value.status is not None and 400 <= caught.value.status < 500
    assert versions_and_pids(client) == before
    assert sorted(p.name for p in store.iterdir()) == listing  # nothing was copied into the store


@pytest.mark.e2e
def test_registering_by_file_name_from_the_store_still_works(torchserve_deployment: Deployment) -> None:
    client, store = torchserve_deployment.client, torchserve_deployment.store
    try:
        message = models.register(client, torchserve_deployment.v2_archive, store)
        assert "registered deblur 2.0" in message
        assert [status for status, _ in versions_status(client)["2.0"]] == ["READY"]
    finally:
        if "2.0" in versions_and_pids(client):
            client.management("DELETE", "/models/deblur/2.0")


def versions_status(client: TorchServeClient) -> dict[str, tuple[tuple[str, int | None], ...]]:
    return {entry.version: entry.workers for entry in models.status(client)}
