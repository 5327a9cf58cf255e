"""FPN semantic decoder (Kirillov et al. panoptic-FPN head, as in segmentation_models_pytorch).

Lateral 1x1 convs on features[2..5], top-down nearest upsampling and sum, then each pyramid
level is brought to stride 4 by (conv-BN-ReLU, x2 upsampling) blocks and the levels are summed.
Output: [B, segmentation_channels, H/4, W/4].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


class FPNDecoder(nn.Module):
    output_stride = 4

    def __init__(self, encoder_channels: tuple[int, ...], pyramid_channels: int = 256,
                 segmentation_channels: int = 128, dropout: float = 0.2):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in encoder_channels[2:6])
        # level i (stride 2^(i+2)) needs i upsampling steps to reach stride 4
        self.branches = nn.ModuleList()
        for level in range(4):
            steps = [conv_norm_relu(pyramid_channels if s == 0 else segmentation_channels, segmentation_channels,
                                    norm="bn")
                     for s in range(max(1, level))]
            self.branches.append(nn.Sequential(*steps))
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = segmentation_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.laterals, features[2:6])]
        pyramid = [laterals[3]]
        for lateral in reversed(laterals[:3]):  # top-down pathway
            pyramid.insert(0, lateral + F.interpolate(pyramid[0], size=lateral.shape[-2:], mode="nearest"))
        target = pyramid[0].shape[-2:]
        merged = 0
        for level, (branch, p) in enumerate(zip(self.branches, pyramid)):
            x = p
            for step in branch:
                x = step(x)
                if x.shape[-2:] != target:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            merged = merged + x
        return self.dropout(merged)
