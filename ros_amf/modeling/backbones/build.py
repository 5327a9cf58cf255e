"""The backbone a model config names: ``resnet`` (ResNetEncoder) or ``efficientnet_lite0``.

Both give the same contract (``forward(x)`` -> 6 features, features[i] at stride 2**i;
``out_channels``; ``levels()``; ``drop_levels_above(level)``), so every head takes either.
"""
from __future__ import annotations

from torch import nn

from ros_amf.modeling.backbones.efficientnet_lite import EfficientNetLiteEncoder
from ros_amf.modeling.backbones.resnet import ResNetEncoder

BACKBONES = ("resnet", "efficientnet_lite0")
ENCODER_TYPES = (ResNetEncoder, EfficientNetLiteEncoder)


def build_backbone(kind: str, *, depth: int = 50, width: int = 64, deep_stem: bool = False, avg_down: bool = False,
                   dcn_stages: tuple[int, ...] = (), stride_in_1x1: bool = False, out_stride: int = 32,
                   freeze_at: int = 0, frozen_bn: bool = False, dcn_modulated: bool = True) -> nn.Module:
    """``depth``, ``width`` and the ResNet variants apply to ``resnet``; EfficientNet-Lite0 has one size."""
    if kind == "resnet":
        return ResNetEncoder(depth=depth, width=width, deep_stem=deep_stem, avg_down=avg_down,
                             dcn_stages=tuple(dcn_stages), out_stride=out_stride, stride_in_1x1=stride_in_1x1,
                             freeze_at=freeze_at, frozen_bn=frozen_bn, dcn_modulated=dcn_modulated)
    if kind == "efficientnet_lite0":
        resnet_only = [name for name, on in (("deep_stem", deep_stem), ("avg_down", avg_down),
                                             ("dcn_stages", bool(dcn_stages)), ("stride_in_1x1", stride_in_1x1)) if on]
        if resnet_only:
            raise ValueError(f"backbone efficientnet_lite0 has no {resnet_only[0]} option (ResNet only); remove it "
                             "from the model config or use backbone: resnet.")
        return EfficientNetLiteEncoder(out_stride=out_stride, freeze_at=freeze_at, frozen_bn=frozen_bn)
    raise ValueError(f"backbone '{kind}' is not known; use one of {list(BACKBONES)}.")
