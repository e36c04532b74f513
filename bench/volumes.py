"""2D timm classifiers made 3D for the MedMNIST volume flags (NCDHW), as the MedMNIST v2 paper did.

A *conversion* turns every ``nn.Conv2d`` of a built timm model into a convolution over volumes:

- ``acs`` (Yang et al., "Reinforcing 2D pretraining for 3D medical images", the ACS convolutions of MedMNIST
  v2): the 2D kernels are split by output channel into three groups; the first sees each volume through axial
  (1, k, k), the second coronal (k, 1, k), the third sagittal (k, k, 1) slices. The weights keep their 2D shape,
  so a 2D checkpoint or timm's pretrained weights load as they are.
- ``2.5d``: every kernel is axial (1, k, k): the 2D network applied to each slice, its slices mixed only by
  the strides, the pooling and the global pool.
- ``3d``: the kernels inflated to (k, k, k) (Carreira and Zisserman's I3D inflation: the 2D weights repeated
  over depth and divided by k, so a volume constant over depth gives the 2D answer).

Strides, pooling and the global pool act on all three axes alike (MedMNIST's volumes are isotropic). Norm layers
and pools get their 3D versions with the same parameters and buffers; everything else must be a module reviewed
as rank-agnostic (:data:`RANK_AGNOSTIC`). Any other module is refused, by name, rather than silently computing
a 2D operation on a 5D tensor (timm's squeeze-excite averages over dims (2, 3), for instance, which on a volume
would gate per sagittal slice: here it is replaced by one that averages over the whole volume).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import ConfigError, unknown_choice

ConvFactory = Callable[[nn.Conv2d], nn.Module]


def _equal_thirds(n: int) -> tuple[int, int, int]:
    """n split into three contiguous parts, the larger ones first (acsconv's default split)."""
    base, extra = divmod(n, 3)
    return tuple(base + (i < extra) for i in range(3))  # type: ignore[return-value]


def _check_convertible(conv: nn.Conv2d) -> None:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ConfigError(
            f"cannot convert {conv} to 3D: padding={conv.padding!r}, padding_mode={conv.padding_mode!r}; the "
            f"volume conversions support numeric zero padding only (timm's tf_* variants pad 'same'). Choose "
            f"another architecture for the 3D flags.")


class VolumeConv(nn.Module):
    """A 2D convolution's weights applied to volumes by view: each output channel is axial, coronal or sagittal.

    ``views`` gives, per output channel group, which axis the 2D kernel is thin in (0: depth = axial, 1: height
    = coronal, 2: width = sagittal). ACS uses all three in equal thirds; 2.5D uses axial only. A grouped (e.g.
    depthwise) convolution is split by whole groups, so each view sees exactly its groups' input channels.
    """

    def __init__(self, conv: nn.Conv2d, views: tuple[int, ...]):
        super().__init__()
        _check_convertible(conv)
        self.weight = conv.weight
        self.bias = conv.bias
        self.in_channels, self.out_channels, self.groups = conv.in_channels, conv.out_channels, conv.groups
        self.kernel = tuple(conv.kernel_size)
        self.stride = conv.stride[0]
        self.padding = tuple(conv.padding)
        self.dilation = tuple(conv.dilation)
        if self.kernel[0] != self.kernel[1] or conv.stride[0] != conv.stride[1] or self.padding[0] != self.padding[1] \
                or self.dilation[0] != self.dilation[1]:
            raise ConfigError(f"cannot convert {conv} to 3D views: its kernel, stride, padding or dilation is not "
                              f"square, so its coronal and sagittal views would differ in shape.")
        self.views = views
        units = self.groups if self.groups > 1 else self.out_channels
        counts = _equal_thirds(units) if len(views) == 3 else (units,)
        self.parts = [(view, count) for view, count in zip(views, counts) if count > 0]

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, view: int, groups: int) -> torch.Tensor:
        p, d = self.padding[0], self.dilation[0]
        padding, dilation = [p, p, p], [d, d, d]
        padding[view], dilation[view] = 0, 1
        return F.conv3d(x, weight.unsqueeze(2 + view), None, self.stride, tuple(padding), tuple(dilation), groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, start = [], 0
        out_per_group, in_per_group = self.out_channels // self.groups, self.in_channels // self.groups
        for view, count in self.parts:
            if self.groups > 1:  # ``count`` whole groups: their outputs, their inputs
                weight = self.weight[start * out_per_group:(start + count) * out_per_group]
                inputs = x[:, start * in_per_group:(start + count) * in_per_group]
                outputs.append(self._conv(inputs, weight, view, count))
            else:
                outputs.append(self._conv(x, self.weight[start:start + count], view, 1))
            start += count
        out = torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1, 1)

    def extra_repr(self) -> str:
        names = "".join("acs"[v] for v, _ in self.parts)
        return (f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, views={names}")


def _acs(conv: nn.Conv2d) -> nn.Module:
    return VolumeConv(conv, views=(0, 1, 2))


def _axial(conv: nn.Conv2d) -> nn.Module:
    return VolumeConv(conv, views=(0,))


def _inflated(conv: nn.Conv2d) -> nn.Module:
    _check_convertible(conv)
    k = conv.kernel_size
    out = nn.Conv3d(conv.in_channels, conv.out_channels, (k[0], *k), (conv.stride[0], *conv.stride),
                    (conv.padding[0], *conv.padding), (conv.dilation[0], *conv.dilation), conv.groups,
                    conv.bias is not None)
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(2).repeat(1, 1, k[0], 1, 1) / k[0])
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


CONVERSIONS: dict[str, ConvFactory] = {"acs": _acs, "2.5d": _axial, "3d": _inflated}


class _VolumeBatchNorm(nn.Module):
    """Mixin: a BatchNorm2d subclass (timm's BatchNormAct2d) run on a volume with depth folded into height.

    Batch norm's statistics are per channel over the batch and every spatial position, so (N, C, D*H, W) gives
    exactly the volume's statistics while the 2D module's own code (its act, drop, checks) runs unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"a volume batch norm expects (N, C, D, H, W), got shape {tuple(x.shape)}")
        n, c, d, h, w = x.shape
        return super().forward(x.reshape(n, c, d * h, w)).reshape(n, -1, d, h, w)  # type: ignore[misc]


_VOLUME_CLASSES: dict[tuple[type, type], type] = {}


def _with_volume_forward(module: nn.Module, mixin: type) -> nn.Module:
    """Give ``module`` the mixin's forward in front of its own class's (same parameters, buffers and
    state-dict keys; one subclass per class, made once)."""
    key = (mixin, type(module))
    if key not in _VOLUME_CLASSES:
        _VOLUME_CLASSES[key] = type(f"Volume{type(module).__name__}", (mixin, type(module)), {"__module__": __name__})
    module.__class__ = _VOLUME_CLASSES[key]
    return module


def _batch_norm(module: nn.Module) -> nn.Module:
    return _with_volume_forward(module, _VolumeBatchNorm)


def _max_pool(pool: nn.MaxPool2d) -> nn.Module:
    k, s, p = (pool.kernel_size, pool.stride, pool.padding)
    if not all(isinstance(v, int) for v in (k, s, p)):
        raise ConfigError(f"cannot convert {pool} to 3D: only square max-pools are converted.")
    return nn.MaxPool3d(k, s, p, pool.dilation, ceil_mode=pool.ceil_mode)


def _avg_pool(pool: nn.AvgPool2d) -> nn.Module:
    if not all(isinstance(v, int) for v in (pool.kernel_size, pool.stride, pool.padding)):
        raise ConfigError(f"cannot convert {pool} to 3D: only square average pools are converted.")
    return nn.AvgPool3d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad)


def _adaptive_avg(pool: nn.AdaptiveAvgPool2d) -> nn.Module:
    size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    if size != 1 and pool.output_size != (1, 1):
        raise ConfigError(f"cannot convert {pool} to 3D: only global average pooling (output 1) is converted.")
    return nn.AdaptiveAvgPool3d(1)


class VolumeSqueezeExcite(nn.Module):
    """Mixin for timm's squeeze-excite blocks: the squeeze averages the whole volume, not dims (2, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = x.mean((2, 3, 4), keepdim=True)
        x_se = self.conv_reduce(x_se)  # type: ignore[attr-defined]
        x_se = self.act1(x_se)  # type: ignore[attr-defined]
        x_se = self.conv_expand(x_se)  # type: ignore[attr-defined]
        return x * self.gate(x_se)  # type: ignore[attr-defined]


def _squeeze_excite(module: nn.Module) -> nn.Module:
    return _with_volume_forward(module, VolumeSqueezeExcite)


def _module_converters() -> dict[str, Callable[[nn.Module], nn.Module]]:
    """Module class name (``module.Class``) -> its 3D replacement. Matched by exact class, never by subclass:
    a subclass may override forward with 2D-only code (timm's Conv2dSame pads in 2D, for instance)."""
    return {
        "torch.nn.modules.batchnorm.BatchNorm2d": _batch_norm,
        "timm.layers.norm_act.BatchNormAct2d": _batch_norm,
        "torch.nn.modules.pooling.MaxPool2d": _max_pool,
        "torch.nn.modules.pooling.AvgPool2d": _avg_pool,
        "torch.nn.modules.pooling.AdaptiveAvgPool2d": _adaptive_avg,
        "timm.models._efficientnet_blocks.SqueezeExcite": _squeeze_excite,
    }


# Modules whose forward was read and works on any rank: element-wise layers, channel-wise concatenation, linear
# heads after a flatten, and the timm blocks that only compose converted layers.
RANK_AGNOSTIC = frozenset({
    "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.ReLU6", "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.activation.GELU", "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.activation.Hardswish", "torch.nn.modules.activation.Hardsigmoid",
    "torch.nn.modules.linear.Identity", "torch.nn.modules.linear.Linear", "timm.layers.linear.Linear",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.flatten.Flatten", "torch.nn.modules.container.Sequential",
    "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d",  # pool (converted) then flatten
    "timm.layers.classifier.ClassifierHead", "timm.layers.conv_bn_act.ConvNormAct",
    "timm.models.resnet.ResNet", "timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck",
    "timm.models.densenet.DenseNet", "timm.models.densenet.DenseBlock", "timm.models.densenet.DenseLayer",
    "timm.models.densenet.DenseTransition",
    "timm.models.regnet.RegNet", "timm.models.regnet.RegStage", "timm.models.regnet.Bottleneck",
    "timm.models.efficientnet.EfficientNet", "timm.models.mobilenetv3.MobileNetV3",
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv", "timm.models._efficientnet_blocks.InvertedResidual",
    "timm.models._efficientnet_blocks.ConvBnAct",
})


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__name__}"


def _convert_children(module: nn.Module, conv: ConvFactory, converters: dict, refused: set[str]) -> None:
    for name, child in module.named_children():
        kind = _qualname(child)
        if type(child) is nn.Conv2d:
            setattr(module, name, conv(child))
            continue
        if kind in converters:
            child = converters[kind](child)
            setattr(module, name, child)
        elif kind not in RANK_AGNOSTIC and not kind.startswith("bench.volumes."):
            refused.add(kind)
        _convert_children(child, conv, converters, refused)


def to_volumes(model: nn.Module, conversion: str = "acs", arch: str = "") -> nn.Module:
    """Convert a built 2D timm model in place to take (N, C, D, H, W) volumes; returns it.

    Raises ConfigError naming every module class that has no reviewed 3D form, so an architecture is either
    converted exactly or refused, never half converted.
    """
    if conversion not in CONVERSIONS:
        raise unknown_choice("volume conversion", conversion, CONVERSIONS, "Set model.volume to one of them.")
    refused: set[str] = set()
    root_kind = _qualname(model)
    if root_kind not in RANK_AGNOSTIC:
        refused.add(root_kind)
    _convert_children(model, CONVERSIONS[conversion], _module_converters(), refused)
    if refused:
        raise ConfigError(
            f"model {arch or type(model).__name__!r} cannot be converted to 3D: no reviewed 3D form for "
            f"{', '.join(sorted(refused))}. Families that convert: ResNet, DenseNet, RegNetX, EfficientNet, "
            f"MobileNetV3 (conf/model: resnet18_28, resnet50_28, resnet18_native, densenet121, regnetx_002, "
            f"efficientnet_b0, mobilenetv3_small, mobilenetv3_large). Vision transformers and ConvNeXt are 2D only "
            f"(their position embeddings and channels-last norms are 2D).")
    return model
