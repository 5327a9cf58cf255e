"""PSPNet decoder (Zhao et al.), SMP layout: pyramid pooling on features[3] (stride 8).

Pooling to 1, 2, 3 and 6 bins, a 1x1 conv-BN-ReLU each, upsampled and concatenated with the
input, then a 1x1 conv-BN-ReLU. Output: [B, channels, H/8, W/8].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


class PyramidPooling(nn.Module):
    def __init__(self, cin: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        branch = max(1, cin // len(bins))
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, branch, 1, bias=False),
                                                  nn.BatchNorm2d(branch), nn.ReLU(inplace=True)) for b in bins)
        self.out_channels = cin + branch * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return torch.cat([x] + pooled, dim=1)


class PSPDecoder(nn.Module):
    output_stride = 8

    def __init__(self, encoder_channels: tuple[int, ...], channels: int = 512, dropout: float = 0.2):
        super().__init__()
        self.pyramid = PyramidPooling(encoder_channels[3])
        self.conv = conv_norm_relu(self.pyramid.out_channels, channels, 1, "bn")
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.dropout(self.conv(self.pyramid(features[3])))
