"""U-Net decoder (Ronneberger et al.), SMP layout: five x2 upsampling blocks from stride 32 to 1.

Each block upsamples (nearest), concatenates the encoder skip of the same stride (none at
stride 1, where features[0] is the image) and applies two conv-BN-ReLU.
Output: [B, channels[-1], H, W].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


class UnetDecoder(nn.Module):
    output_stride = 1

    def __init__(self, encoder_channels: tuple[int, ...], channels: tuple[int, ...] = (256, 128, 64, 32, 16)):
        super().__init__()
        skips = list(encoder_channels[1:5])[::-1] + [0]  # strides 16, 8, 4, 2, then no skip at stride 1
        inputs = [encoder_channels[5]] + list(channels[:-1])
        self.blocks = nn.ModuleList(nn.Sequential(conv_norm_relu(cin + skip, cout, norm="bn"),
                                                  conv_norm_relu(cout, cout, norm="bn"))
                                    for cin, skip, cout in zip(inputs, skips, channels))
        self.out_channels = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[5]
        skips = features[1:5][::-1] + [None]
        for block, skip in zip(self.blocks, skips):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if skip is not None:
                x = torch.cat([x, skip], dim=1)
            x = block(x)
        return x
