"""deblur.restore: the one function that decides between the deconvolution and the network; the settings home."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deblur.blind.settings import BlindSettings
from deblur.imageio import to_model_range
from deblur.restore import Network, plan_restoration, restore_image
from deblur.settings import RestoreOptions, ServingSettings, SettingsError, from_mapping
from tests.conftest import discs_image, shaken_discs, textured_image

REPO_ROOT = Path(__file__).resolve().parents[1]


class CountingIdentity:
    """A network that returns its input and counts the tiles it was given."""

    def __init__(self) -> None:
        self.tiles = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.tiles += batch.shape[0]
        return batch.clone()


def test_a_trusted_estimate_answers_and_the_network_never_runs() -> None:
    _, blurred = shaken_discs(384, 15, seed=1)
    counter = CountingIdentity()
    restored, report = restore_image(to_model_range(blurred), RestoreOptions(kernel_aware=True), Network(counter))
    assert report.path == "deconvolution" and report.tiles == 0 and counter.tiles == 0
    assert report.kernel is not None and report.kernel.trusted and restored.shape == (3, 384, 384)


def test_an_untrusted_estimate_falls_back_to_the_network() -> None:
    _, blurred = shaken_discs(384, 15, seed=1)
    strict = dataclasses.replace(BlindSettings(), max_overshoot=0.0)  # no deconvolution is plausible enough
    counter = CountingIdentity()
    pixels = to_model_range(blurred)
    restored, report = restore_image(pixels, RestoreOptions(kernel_aware=True), Network(counter), strict)
    assert report.path == "network" and report.kernel is not None and not report.kernel.trusted
    assert report.tiles == counter.tiles == 1 and torch.equal(restored, pixels)  # the identity's answer


def test_without_kernel_aware_no_estimate_is_made() -> None:
    sharp = to_model_range(discs_image(384, seed=2))
    restored, report = restore_image(sharp, RestoreOptions(), Network(CountingIdentity()))
    assert report.path == "network" and report.kernel is None and torch.equal(restored, sharp)


@pytest.mark.parametrize(("width", "height", "ensemble"), [(70, 50, False), (70, 50, True), (33, 97, True)])
def test_the_plan_counts_the_tiles_the_network_runs(width: int, height: int, ensemble: bool) -> None:
    options = RestoreOptions(tile_size=32, overlap=8, self_ensemble=ensemble)
    plan = plan_restoration(height, width, options)
    counter = CountingIdentity()
    pixels = to_model_range(textured_image(width, height))
    restored, report = restore_image(pixels, options, Network(counter), plan=plan)
    assert counter.tiles == plan.tiles == report.tiles == plan.layout.count * (8 if ensemble else 1)
    assert torch.allclose(restored, pixels, atol=1e-6)  # the identity, blended and averaged back


def test_settings_are_coerced_by_their_field_types() -> None:
    settings = from_mapping(ServingSettings, {"tile_size": "256", "overlap": 32.0, "kernel_aware": True})
    assert settings == ServingSettings(tile_size=256, overlap=32, kernel_aware=True)
    blind = BlindSettings.from_mapping({"restore_fidelity": 400, "retry_crop": None, "gamma": "1"})
    assert (blind.restore_fidelity, blind.retry_crop, blind.gamma) == (400.0, None, 1.0)
    assert isinstance(blind.restore_fidelity, float)


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (ServingSettings, {"tile": 64}, "unknown ServingSettings keys: tile"),
        (ServingSettings, {"kernel_aware": "yes"}, "kernel_aware must be true or false"),
        (ServingSettings, {"tile_size": 100.5}, "tile_size must be a whole number"),
        (ServingSettings, {"precision": "fp8"}, "precision must be one of"),
        (BlindSettings, {"crop": None}, "crop must not be empty"),
        (BlindSettings, {"gamma": [1]}, "gamma must be a number"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(cls: type, values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_mapping(cls, values)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "docs" / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recorded_experiment_loads(path: Path) -> None:
    values = yaml.safe_load(path.read_text()) or {}
    assert BlindSettings.from_mapping(values) == dataclasses.replace(BlindSettings(), **values)


def test_settings_and_request_checks_import_no_torch() -> None:
    """The archive builder and the request checks read the settings without the model's dependencies."""
    code = "import sys, deblur.settings, handler.request, model_archive.build; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
