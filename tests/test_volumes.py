"""bench.volumes: 2D timm models made 3D exactly (checked against the acsconv package), or refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from acsconv.operators import ACSConv, Conv2_5d  # the reference implementation of ACS (Yang et al.)

from bench.errors import ConfigError
from bench.models import ModelCard, ModelSpec, build_model, load_checkpoint, save_checkpoint
from bench.volumes import CONVERSIONS, VolumeConv, to_volumes
from tests.test_models import MODEL_CONFIGS, spec_of  # the same YAMLs, read the same way

# (in, out, kernel, stride, padding, groups): plain, strided stem, depthwise, pointwise, an odd output count
CONVS = [(3, 10, 3, 1, 1, 1), (4, 8, 7, 2, 3, 1), (6, 6, 3, 2, 1, 6), (5, 16, 1, 1, 0, 1), (3, 7, 3, 2, 1, 1)]


@pytest.mark.parametrize("shape", CONVS, ids=str)
def test_acs_and_2_5d_convolutions_equal_the_acsconv_reference(shape):
    cin, cout, k, s, p, g = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, s, p, groups=g)
    acs, axial = ACSConv(cin, cout, k, s, p, groups=g), Conv2_5d(cin, cout, k, s, p, groups=g)
    with torch.no_grad():
        acs.weight.copy_(conv.weight), acs.bias.copy_(conv.bias)
        axial.weight.copy_(conv.weight.unsqueeze(2)), axial.bias.copy_(conv.bias)
    # acsconv mishandles strided depthwise convolutions of odd-sized volumes (it feeds every channel to each view);
    # there ours is checked at even sizes only
    sizes = (12,) if g > 1 and s > 1 else (12, 13)
    for size in sizes:
        x = torch.rand(2, cin, size, size, size)
        torch.testing.assert_close(VolumeConv(conv, (0, 1, 2))(x), acs(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(VolumeConv(conv, (0,))(x), axial(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conversion", ["2.5d", "3d"])
def test_a_volume_constant_over_depth_gives_the_2d_answer_inside(conversion):
    """2.5D applies the 2D kernel per slice; the inflated kernel is the 2D one spread over depth (I3D)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, 1, 1)
    image = torch.rand(1, 2, 9, 9)
    volume = image.unsqueeze(2).expand(1, 2, 7, 9, 9).contiguous()
    out = CONVERSIONS[conversion](conv)(volume)
    torch.testing.assert_close(out[:, :, 3], conv(image), rtol=1e-5, atol=1e-5)


def test_acs_keeps_the_2d_state_dict_so_2d_weights_load():
    """The point of ACS: a 2D checkpoint (or timm's pretrained weights) loads into the 3D model unchanged."""
    flat = build_model(ModelSpec("r", "resnet18", "cifar_stem"), 1, 2, 28)
    volume = build_model(ModelSpec("r", "resnet18", "cifar_stem"), 1, 2, 28, spatial_dims=3)
    backbone_2d = {k: v for k, v in flat.state_dict().items() if k.startswith("backbone.")}
    backbone_3d = {k: v for k, v in volume.state_dict().items() if k.startswith("backbone.")}
    assert {k: v.shape for k, v in backbone_2d.items()} == {k: v.shape for k, v in backbone_3d.items()}
    volume.load_state_dict({**volume.state_dict(), **backbone_2d})


def test_squeeze_excite_averages_the_whole_volume():
    """timm's squeeze-excite averages dims (2, 3); on a volume that would gate per sagittal slice."""
    model = to_volumes(build_model(ModelSpec("e", "efficientnet_b0", "native"), 1, 2, 28).backbone, "acs")
    se = next(m for m in model.modules() if type(m).__name__ == "VolumeSqueezeExcite")
    x = torch.rand(1, se.conv_reduce.in_channels, 3, 4, 5)
    gate = se.gate(se.conv_expand(se.act1(se.conv_reduce(x.mean((2, 3, 4), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)


TWO_D_ONLY = {"vit_tiny", "deit_tiny", "convnext_atto"}  # position embeddings, channels-last norms


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_takes_volumes_or_is_refused_by_name(config):
    """Each conf/model/ YAML on a small volume (8^3 keeps 3D convolutions cheap on a CPU): logits and a finite
    input gradient, or a ConfigError that says why. A new YAML is tested by being there."""
    spec = spec_of(config)
    if config.stem in TWO_D_ONLY:
        with pytest.raises(ConfigError, match="cannot be converted to 3D: no reviewed 3D form for .*Families that"):
            build_model(spec, 1, 2, 28, spatial_dims=3)
        return
    if spec.recipe == "resize":
        with pytest.raises(ConfigError, match=r"upsamples inputs to 224 px; a volume would become 224\^3"):
            build_model(spec, 1, 2, 28, spatial_dims=3)
        return
    assert spec.volume == "acs"
    model = build_model(spec, 1, 2, 28, spatial_dims=3).eval()
    x = torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()


def test_a_converted_checkpoint_round_trips_as_a_volume_model(tmp_path):
    spec = ModelSpec("resnet18_native_2.5d", "resnet18", "native", volume="2.5d")
    model = build_model(spec, 1, 2, 28, spatial_dims=3).eval()
    card = ModelCard(name=spec.name, arch="resnet18", recipe="native", dataset="adrenalmnist3d", size=28, seed=0,
                     in_chans=1, num_classes=2, task="binary-class", spatial_dims=3, volume="2.5d")
    weights = save_checkpoint(model, card, tmp_path / "m.safetensors")
    loaded, loaded_card = load_checkpoint(weights, 1, 2)
    x = torch.rand(2, 1, 28, 28, 28)
    assert loaded_card.spatial_dims == 3 and loaded_card.volume == "2.5d"
    torch.testing.assert_close(loaded(x), model(x))


def test_unknown_conversion_lists_the_choices():
    with pytest.raises(ConfigError, match=r"volume conversion 'acs3'.*2\.5d.*model\.volume"):
        build_model(ModelSpec("r", "resnet18", "native", volume="acs3"), 1, 2, 28, spatial_dims=3)
