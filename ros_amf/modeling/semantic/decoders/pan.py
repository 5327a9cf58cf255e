"""PAN decoder (Li et al. 2018, "Pyramid Attention Network"), SMP layout, on a res5-dilated encoder (stride 16).

Feature Pyramid Attention (FPA) on features[5]: a 7x7 / 5x5 / 3x3 pyramid of one-channel maps at
1/2, 1/4, 1/8 of its size, merged top-down into a pixel-wise attention that multiplies a 1x1
projection, plus a global-pooling branch. Then three Global Attention Upsample (GAU) blocks
bring it to features[4], [3] and [2]: the low-level skip (3x3 conv-BN-ReLU) is weighted by
channel attention pooled from the high-level input and added to that input, upsampled.
Upsampling is bilinear with align_corners=True, as in SMP. Output: [B, channels, H/4, W/4].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class FeaturePyramidAttention(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.global_branch = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_norm_relu(cin, cout, 1, "bn"))
        self.project = conv_norm_relu(cin, cout, 1, "bn")
        # ceil_mode: SMP needs features[5] divisible by 8; this also runs on smaller maps and
        # gives SMP's sizes when it is divisible
        self.down1 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), conv_norm_relu(cin, 1, 7, "bn"))
        self.down2 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), conv_norm_relu(1, 1, 5, "bn"))
        self.down3 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), conv_norm_relu(1, 1, 3, "bn"),
                                   conv_norm_relu(1, 1, 3, "bn"))
        self.lateral2 = conv_norm_relu(1, 1, 5, "bn")
        self.lateral1 = conv_norm_relu(1, 1, 7, "bn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        half = self.down1(x)
        quarter = self.down2(half)
        eighth = self.down3(quarter)
        attention = self.lateral2(quarter) + _resize(eighth, quarter.shape[-2:])
        attention = self.lateral1(half) + _resize(attention, half.shape[-2:])
        return _resize(attention, size) * self.project(x) + _resize(self.global_branch(x), size)


class GlobalAttentionUpsample(nn.Module):
    def __init__(self, low_channels: int, channels: int):
        super().__init__()
        self.low = conv_norm_relu(low_channels, channels, 3, "bn")
        # conv-BN-sigmoid on the pooled high-level input: channel weights for the low-level skip
        self.weights = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return _resize(high, low.shape[-2:]) + self.low(low) * self.weights(high)


class PANDecoder(nn.Module):
    output_stride = 4

    def __init__(self, encoder_channels: tuple[int, ...], channels: int = 32):
        super().__init__()
        self.fpa = FeaturePyramidAttention(encoder_channels[5], channels)
        self.gaus = nn.ModuleList(GlobalAttentionUpsample(encoder_channels[level], channels) for level in (4, 3, 2))
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.fpa(features[5])
        for gau, level in zip(self.gaus, (4, 3, 2)):
            x = gau(features[level], x)
        return x
