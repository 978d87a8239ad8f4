"""DeblurUNet shapes, parameter count and self-describing checkpoints."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from conftest import TINY_CONFIG

from deblur.model import (
    DeblurUNet,
    ModelConfig,
    build_model,
    count_parameters,
    load_model,
    read_checkpoint,
    save_checkpoint,
)


def test_seed_spec_parameter_count() -> None:
    # Seed 001: "Parameters: 8.6M" at base 32.
    assert count_parameters(DeblurUNet(ModelConfig(base_ch=32))) == pytest.approx(8.6e6, rel=0.01)


def test_channel_widths_follow_base() -> None:
    model = DeblurUNet(ModelConfig(base_ch=32))
    widths = [model.enc1[0].out_channels, model.enc2[0].out_channels, model.enc3[0].out_channels]
    assert [*widths, model.enc4[0].out_channels, model.bottleneck[0].out_channels] == [32, 64, 128, 256, 512]
    assert isinstance(model.final, torch.nn.Conv2d) and model.final.kernel_size == (1, 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(n.num_groups == 8 for n in norms)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (16, 16), (33, 65), (100, 37)])
def test_any_size_round_trips(size: tuple[int, int]) -> None:
    model = DeblurUNet(TINY_CONFIG).eval()
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        assert model(x).shape == x.shape


def test_output_is_not_clamped() -> None:
    # No final activation: a scaled-up final conv must be able to leave [-1, 1].
    model = DeblurUNet(TINY_CONFIG).eval()
    with torch.no_grad():
        model.final.weight.mul_(1000)
        out = model(torch.randn(1, 3, 32, 32))
    assert out.abs().max() > 1


def test_residual_model_starts_as_identity() -> None:
    model = DeblurUNet(ModelConfig(base_ch=8, residual=True)).eval()
    x = torch.rand(1, 3, 20, 27) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(model(x), x)


def test_bottleneck_blocks_add_depth_at_the_bottom_only() -> None:
    plain, deep = DeblurUNet(ModelConfig(base_ch=8)), DeblurUNet(ModelConfig(base_ch=8, bottleneck_blocks=2))
    assert len(deep.deep) == 2 and len(plain.deep) == 0
    assert plain.state_dict().keys() == {k for k in deep.state_dict() if not k.startswith("deep.")}
    # Each block: two 3×3 convolutions of 16·base channels and one GroupNorm.
    assert count_parameters(deep) - count_parameters(plain) == 2 * (2 * (128 * 128 * 9 + 128) + 2 * 128)


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path, half: bool) -> None:
    config = ModelConfig(base_ch=8, residual=True)
    torch.manual_seed(1)
    model = DeblurUNet(config).eval()
    torch.nn.init.normal_(model.final.weight, std=0.1)
    path = save_checkpoint(tmp_path / "m.pt", model, config, epoch=3, metrics={"psnr": 27.5}, half=half)

    payload = read_checkpoint(path)
    assert payload["model_config"] == asdict(config)
    assert ModelConfig.from_dict(payload["model_config"]) == config
    assert payload["epoch"] == 3 and payload["metrics"] == {"psnr": 27.5}

    restored = load_model(path, "cpu")
    assert all(p.dtype == torch.float32 for p in restored.parameters())
    x = torch.rand(1, 3, 24, 24) * 2 - 1
    with torch.inference_mode():
        expected, actual = model(x), restored(x)
    torch.testing.assert_close(actual, expected, atol=2e-2 if half else 0, rtol=0)


def test_checkpoints_from_before_nafnet_still_load(tmp_path) -> None:
    # The first checkpoints stored exactly these keys; the fields added since have defaults.
    torch.manual_seed(2)
    model = DeblurUNet(ModelConfig(base_ch=8, residual=True))
    legacy = {"arch": "deblur_unet", "in_ch": 3, "out_ch": 3, "base_ch": 8, "groups": 8, "residual": True}
    payload = {"format": 1, "model_config": legacy, "state_dict": model.state_dict(), "epoch": 0, "metrics": {}}
    torch.save(payload, tmp_path / "old.pt")
    restored = load_model(tmp_path / "old.pt")
    assert isinstance(restored, DeblurUNet) and restored.config == ModelConfig(base_ch=8, residual=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(restored(x), model.eval()(x))


def test_checkpoint_loads_with_weights_only(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DeblurUNet(TINY_CONFIG), TINY_CONFIG, epoch=0, metrics={})
    payload = torch.load(path, weights_only=True)
    assert set(payload) >= {"model_config", "state_dict", "epoch", "metrics"}


def test_unknown_architecture_or_keys_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(ModelConfig(arch="nope"))
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"base_ch": 8, "depth": 3})
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):  # noqa: B017 - torch raises its own unpickling error types
        read_checkpoint(tmp_path / "x.pt")
