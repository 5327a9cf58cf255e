"""DeepLabV3 decoder (Chen et al. 2017): ASPP on a dilated encoder (output stride 8).

ASPP = 1x1 conv, three 3x3 atrous convs (rates 12, 24, 36 as in the paper for OS 8) and image
pooling, concatenated and projected, then a 3x3 conv. Output: [B, channels, H/8, W/8].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.5):
        super().__init__()
        self.branches = nn.ModuleList([conv_norm_relu(cin, cout, 1, "bn")]
                                      + [conv_norm_relu(cin, cout, 3, "bn", dilation=r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_norm_relu(cout * (len(rates) + 2), cout, 1, "bn"), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Decoder(nn.Module):
    output_stride = 8
    encoder_out_stride = 8  # the encoder must be built dilated

    def __init__(self, encoder_channels: tuple[int, ...], channels: int = 256, rates: tuple[int, ...] = (12, 24, 36)):
        super().__init__()
        self.aspp = ASPP(encoder_channels[5], channels, rates)
        self.conv = conv_norm_relu(channels, channels, norm="bn")
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.aspp(features[5]))
