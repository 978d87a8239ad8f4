"""deblur.restore: the one function that decides between the deconvolution and the network; the settings home."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize("fallback", ["input", "network"])
def test_a_refused_estimate_falls_back_as_the_settings_say(fallback: str) -> None:
    _, blurred = shaken_discs(384, 15, seed=1)
    strict = BlindSettings(max_overshoot=0.0, fallback=fallback)  # no deconvolution is plausible enough
    counter = CountingIdentity()
    pixels = to_model_range(blurred)
    restored, report = restore_image(pixels, RestoreOptions(kernel_aware=True), Network(counter), strict)
    assert report.path == fallback and report.kernel is not None and report.kernel.decision == "rings out of range"
    assert report.tiles == counter.tiles == (fallback == "network")
    assert torch.allclose(restored, pixels, atol=1e-6)  # the photo, or the identity's copy of it


def test_without_kernel_aware_no_estimate_is_made() -> None:
    sharp = to_model_range(discs_image(384, seed=2))
    restored, report = restore_image(sharp, RestoreOptions(), Network(CountingIdentity()))
    assert report.path == "network" and report.kernel is None and torch.equal(restored, sharp)


def test_an_unblurred_photo_comes_back_unchanged() -> None:
    """No blur worth undoing is found: the photo is answered as it came, and the network never runs."""
    sharp = to_model_range(discs_image(384, seed=2))
    counter = CountingIdentity()
    restored, report = restore_image(sharp, RestoreOptions(kernel_aware=True), Network(counter))
    assert report.path == "input" and report.kernel is not None and report.kernel.decision == "no blur"
    assert torch.equal(restored, sharp) and counter.tiles == 0


def darkening(batch: torch.Tensor) -> torch.Tensor:
    """A network that sharpens a little and darkens by 5 grey levels: the shipped 1.0's fault on a gray photo."""
    detail = batch - torch.nn.functional.avg_pool2d(batch, 3, stride=1, padding=1, count_include_pad=False)
    return batch + 2.0 * detail - 10 / 255


def test_the_networks_answer_keeps_the_photos_brightness_and_colour() -> None:
    """A blur does not change a photo's local means, so the network's answer must not: a gray photo stays as
    bright as it came, while the network's detail is kept."""
    gray = textured_image(300, 200).mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8)
    pixels = to_model_range(gray)
    restored, report = restore_image(pixels, RestoreOptions(), Network(darkening))
    assert report.path == "network"
    assert abs(float((restored - pixels).mean())) * 127.5 < 0.3  # grey levels; the network alone: −5
    cell = BlindSettings().low_frequency_cell
    coarse = torch.nn.functional.avg_pool2d((restored - pixels)[None], cell)
    assert float(coarse.abs().max()) * 127.5 < 1.0  # no cell's mean moves by a grey level
    assert float((restored - pixels).abs().mean()) * 127.5 > 1.0  # the sharpening is still there
    assert torch.allclose(restored[0], restored[1]) and torch.allclose(restored[1], restored[2])  # still gray


def test_a_blur_that_varies_across_the_frame_is_not_deconvolved() -> None:
    """The uniform model is wrong there: the photo comes back as it is (the default fallback)."""
    from tests.test_blind import varying_blur

    blurred = to_model_range(varying_blur())
    counter = CountingIdentity()
    restored, report = restore_image(blurred, RestoreOptions(kernel_aware=True), Network(counter))
    assert report.path == "input" and report.kernel is not None and not report.kernel.trusted
    assert counter.tiles == report.tiles == 0 and torch.equal(restored, blurred)


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
    blind = BlindSettings.from_mapping({"restore_fidelity": 400, "gammas": [1, "2.2"], "gamma": "1"})
    assert (blind.restore_fidelity, blind.gammas, blind.gamma) == (400.0, (1.0, 2.2), 1.0)
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
        (BlindSettings, {"gammas": []}, "gammas must be a non-empty list"),
        (BlindSettings, {"fallback": "network please"}, "fallback must be one of"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(cls: type, values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_mapping(cls, values)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "docs" / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recorded_experiment_loads(path: Path) -> None:
    values = yaml.safe_load(path.read_text()) or {}
    expected = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    assert BlindSettings.from_mapping(values) == dataclasses.replace(BlindSettings(), **expected)


def test_settings_and_request_checks_import_no_torch() -> None:
    """The archive builder and the request checks read the settings without the model's dependencies."""
    code = "import sys, deblur.settings, handler.request, model_archive.build; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
