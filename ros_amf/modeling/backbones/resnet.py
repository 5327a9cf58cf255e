"""ResNet encoders (ResNet-18/34/50, the ResNet-d variant, optional DCNv2 stages) in plain PyTorch.

Contract shared by the instance and semantic models (SMP style)::

    encoder = ResNetEncoder(depth=50)
    features = encoder(x)          # list of 6 tensors; features[0] = x, features[i] has stride 2**i
    encoder.out_channels           # (in_channels, stem, res2, res3, res4, res5)

``width`` scales every stage (64 = the standard network; 32 = the slim CPU models).
``deep_stem`` + ``avg_down`` give ResNet-d (He et al., "Bag of Tricks", 2019): three 3x3 stem
convs and an average-pool before the 1x1 projection shortcut. ``dcn_stages`` lists the stages
(2..5, i.e. res2..res5) whose 3x3 convs are modulated deformable convs (DCNv2), or with
``dcn_modulated=False`` plain ones (DCNv1, as SparseInst's published DCN checkpoints).
``out_stride`` 16 or 8 replaces the stride of the last stage(s) by dilation; the feature list
still has 6 entries, the deeper ones then keep the capped stride.
``stride_in_1x1`` puts a bottleneck's stride in its first 1x1 conv (MSRA/caffe ResNets, e.g.
detectron2's ``R-50.pkl``) instead of the 3x3 (torchvision, timm); it changes no weight shape.
``freeze_at`` / ``frozen_bn`` freeze the stem and stages producing features[1..freeze_at] and
turn BatchNorm into :class:`FrozenBatchNorm2d` (detectron2's FREEZE_AT / FrozenBN).
From-scratch initialisation follows He et al. with the last norm of each residual branch zeroed
(residual blocks start as identities); ``backbones.pretrained`` loads ImageNet weights over it.
"""
from __future__ import annotations

import torch
from torch import nn

from ros_amf.modeling.backbones.deform_conv import DeformConv2d, ModulatedDeformConv2d
from ros_amf.modeling.backbones.frozen import apply_freezing

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1, deformable: bool = False,
             modulated: bool = True) -> nn.Module:
    if deformable:
        kind = ModulatedDeformConv2d if modulated else DeformConv2d
        return kind(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _shortcut(cin: int, cout: int, stride: int, avg_down: bool) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if avg_down and stride > 1:  # ResNet-d: downsample by pooling, project with a stride-1 1x1 conv
        return nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, avg_down: bool = False,
                 deformable: bool = False):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv3x3(cin, planes, stride, dilation, deformable)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, cout, 1, dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = _shortcut(cin, cout, stride, avg_down)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, avg_down: bool = False,
                 deformable: bool = False, stride_in_1x1: bool = False, dcn_modulated: bool = True):
        super().__init__()
        cout = planes * self.expansion
        # ResNet-B (torchvision, timm) strides the 3x3; MSRA's caffe ResNets stride the first 1x1
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride_3x3, dilation, deformable, dcn_modulated)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)
        self.shortcut = _shortcut(cin, cout, stride, avg_down)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet feature pyramid: forward(x) -> [x, stem(/2), res2(/4), res3(/8), res4(/16), res5(/32)]."""

    def __init__(self, depth: int = 50, width: int = 64, deep_stem: bool = False, avg_down: bool = False,
                 dcn_stages: tuple[int, ...] = (), out_stride: int = 32, in_channels: int = 3,
                 stride_in_1x1: bool = False, freeze_at: int = 0, frozen_bn: bool = False, dcn_modulated: bool = True):
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"ResNet depth {depth} is not supported; use one of {sorted(_LAYERS)}.")
        if out_stride not in (8, 16, 32):
            raise ValueError(f"out_stride {out_stride} is not supported; use 32, 16 or 8.")
        bad = [s for s in dcn_stages if s not in (2, 3, 4, 5)]
        if bad:
            raise ValueError(f"dcn_stages {tuple(dcn_stages)} must name stages among 2, 3, 4, 5 (res2..res5).")
        block = Bottleneck if depth >= 50 else BasicBlock
        if stride_in_1x1 and block is BasicBlock:
            raise ValueError(f"stride_in_1x1 applies to bottleneck ResNets (depth 50, 101); ResNet-{depth} has no "
                             "1x1 conv to put the stride in, so leave it false.")
        self.depth, self.stride_in_1x1 = depth, stride_in_1x1
        if not dcn_modulated and block is BasicBlock and dcn_stages:
            raise ValueError(f"dcn_modulated false (DCNv1) is written for bottleneck ResNets (depth 50, 101); "
                             f"ResNet-{depth} keeps DCNv2, so leave dcn_modulated true.")
        block_options = {"stride_in_1x1": True} if stride_in_1x1 else {}
        if not dcn_modulated and block is Bottleneck:
            block_options["dcn_modulated"] = False
        if deep_stem:  # ResNet-C/D stem: three 3x3 convs instead of one 7x7
            half = width // 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        # stride/dilation per stage; dilation replaces stride once the output stride is reached
        strides, dilations = [1, 2, 2, 2], [1, 1, 1, 1]
        if out_stride <= 16:
            strides[3], dilations[3] = 1, 2
        if out_stride == 8:
            strides[2], dilations[2], dilations[3] = 1, 2, 4
        cin = width
        stages = []
        channels = [in_channels, width]
        for index, (blocks, stride, dilation) in enumerate(zip(_LAYERS[depth], strides, dilations)):
            planes = width * 2 ** index
            deformable = (index + 2) in dcn_stages
            layers = []
            for b in range(blocks):
                layers.append(block(cin, planes, stride if b == 0 else 1, dilation, avg_down, deformable,
                                    **block_options))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
            channels.append(cin)
        self.res2, self.res3, self.res4, self.res5 = stages
        self.out_channels: tuple[int, ...] = tuple(channels)
        for name, module in self.named_modules():
            # the DCN offset/mask convs stay zero-initialised (deformable conv starts as a plain conv)
            if isinstance(module, nn.Conv2d) and not name.endswith(("offset_mask", ".offset")):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        apply_freezing(self.levels(), freeze_at, frozen_bn, self)

    def levels(self) -> list[list[nn.Module]]:
        """The modules producing features[1], ..., features[5] (the max-pool has no weights)."""
        return [[self.stem], [self.res2], [self.res3], [self.res4], [self.res5]]

    def drop_levels_above(self, level: int) -> None:
        """Stop after features[level]: deeper stages become identities (and leave the state dict)."""
        for index in range(level + 1, 6):
            setattr(self, f"res{index}", nn.Identity())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem(x)
        c2 = self.res2(self.pool(stem))
        c3 = self.res3(c2)
        c4 = self.res4(c3)
        c5 = self.res5(c4)
        return [x, stem, c2, c3, c4, c5]
