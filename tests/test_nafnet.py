"""NAFNet: published parameter counts, any input size, TLC, checkpoints through load_model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deblur.model import ModelConfig, build_model, count_parameters, load_model, read_checkpoint, save_checkpoint
from deblur.nafnet import DynamicLocalAvgPool2d, LayerNorm2d, LocalAvgPool2d, NAFNet, NAFNetLocal, SimpleGate

TINY_NAFNET = ModelConfig(arch="nafnet", base_ch=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1))


@pytest.mark.parametrize(
    ("enc", "middle", "dec", "expected"),
    [
        ((1, 1, 1, 28), 1, (1, 1, 1, 1), 17_111_907),  # NAFNet-GoPro-width32 (seed 002's "default")
        ((2, 2, 4, 8), 12, (2, 2, 2, 2), 29_159_715),  # seed 002's best configuration (v3)
    ],
)
def test_published_parameter_counts(enc: tuple[int, ...], middle: int, dec: tuple[int, ...], expected: int) -> None:
    config = ModelConfig(arch="nafnet", base_ch=32, enc_blocks=enc, middle_blocks=middle, dec_blocks=dec)
    assert count_parameters(build_model(config)) == expected


def test_building_blocks() -> None:
    x = torch.randn(2, 6, 5, 7)
    assert torch.equal(SimpleGate()(x), x[:, :3] * x[:, 3:])
    normed = LayerNorm2d(6)(x)
    torch.testing.assert_close(normed.mean(1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.var(1, unbiased=False), torch.ones(2, 5, 7), atol=1e-3, rtol=0)


def test_local_pool_is_a_box_mean_and_global_when_the_window_covers_the_map() -> None:
    x = torch.randn(1, 2, 9, 12)
    local = LocalAvgPool2d(3)(x)
    assert local.shape == x.shape
    torch.testing.assert_close(local[..., 4, 5], x[..., 3:6, 4:7].mean((-2, -1)))
    whole = LocalAvgPool2d(50)(x)
    torch.testing.assert_close(whole, x.mean((-2, -1), keepdim=True).expand_as(x))


@pytest.mark.parametrize("pool", [LocalAvgPool2d, DynamicLocalAvgPool2d])
@pytest.mark.parametrize(("height", "width", "window"), [(9, 12, 3), (9, 12, 4), (5, 30, 8), (1, 1, 3), (2, 7, 7)])
def test_local_pool_replicates_the_outermost_full_window(
    pool: type[LocalAvgPool2d], height: int, width: int, window: int
) -> None:
    """Both poolings equal NAFNet's AvgPool2d(auto_pad=True): the full windows' means, replicate-padded."""
    x = torch.randn(2, 3, height, width)
    k1, k2 = min(height, window), min(width, window)
    valid = F.avg_pool2d(x.double(), (k1, k2), stride=1)
    pad_h, pad_w = height - valid.shape[-2], width - valid.shape[-1]
    expected = F.pad(valid, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), mode="replicate")
    torch.testing.assert_close(pool(window)(x), expected.float())


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (16, 16), (33, 65)])
def test_any_size_round_trips(size: tuple[int, int]) -> None:
    model = build_model(TINY_NAFNET).eval()
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        assert model(x).shape == x.shape


def test_untrained_blocks_are_identity_so_output_is_input_plus_ending() -> None:
    # beta/gamma start at zero: every block passes its input through, as in the paper.
    model = build_model(TINY_NAFNET).eval()
    with torch.no_grad():
        model.ending.weight.zero_()
        model.ending.bias.zero_()
        x = torch.randn(1, 3, 20, 20)
        assert torch.equal(model(x), x)


def test_tlc_shares_weights_and_changes_only_large_inputs() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_NAFNET).eval()
    for p in model.parameters():  # make the attention branch matter
        torch.nn.init.normal_(p, std=0.2)
    local = build_model(replace(TINY_NAFNET, tlc_window=24)).eval()
    assert isinstance(local, NAFNetLocal) and type(model) is NAFNet
    local.load_state_dict(model.state_dict())  # strict: the same parameters
    small, large = torch.randn(1, 3, 24, 24), torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(local(small), model(small), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(local(large), model(large), atol=1e-3)


def test_checkpoint_round_trip_with_tlc(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(TINY_NAFNET)
    config = replace(TINY_NAFNET, tlc_window=32)
    path = save_checkpoint(tmp_path / "n.pt", model, config, epoch=1, metrics={})
    stored = read_checkpoint(path)["model_config"]
    assert stored["arch"] == "nafnet" and tuple(stored["enc_blocks"]) == (1, 1) and stored["tlc_window"] == 32
    restored = load_model(path)
    assert isinstance(restored, NAFNetLocal) and restored.window == 32
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_tlc_is_rejected_for_the_unet() -> None:
    with pytest.raises(ValueError, match="NAFNet only"):
        build_model(ModelConfig(tlc_window=384))
