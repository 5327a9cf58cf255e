"""MA-Net decoder (Fan et al. 2020, "Multi-scale Attention Net"), SMP layout.

A position-wise attention block (PAB) on features[5], then five x2 upsampling blocks from stride
32 to 1. The four blocks with an encoder skip are multi-scale fusion attention blocks (MFAB):
the deep input is projected to the skip's width and upsampled, both are squeeze-and-excited,
their channel weights are summed and scale the deep input, which is concatenated with the skip
and passed through two conv-BN-ReLU. The last block (no skip at stride 1) is a plain U-Net block.
Output: [B, channels[-1], H, W].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu


class PositionAttention(nn.Module):
    """PAB: every position attends to every other one (a [HW, HW] map), added back to the input.

    The map is normalised by one softmax over all of its HW·HW entries and the [HW, C] result is
    reshaped (not transposed) to [C, H, W], as SMP and the AFMA authors' copy of it do: this is the
    MA-Net host the AFMA paper measured, so it is kept rather than "fixed" to a per-row softmax.
    """

    def __init__(self, channels: int, key_channels: int = 64):
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.project = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)        # [B, HW, K]
        key = self.key(x).flatten(2)                             # [B, K, HW]
        value = self.value(x).flatten(2).transpose(1, 2)         # [B, HW, C]
        attention = torch.softmax((query @ key).flatten(1), dim=1).view(batch, height * width, height * width)
        attended = (attention @ value).reshape(batch, channels, height, width)
        return self.project(x + attended)


def _squeeze_excite(channels: int, reduction: int) -> nn.Sequential:
    """Channel weights in (0, 1): global pooling, bottleneck 1x1 convs, sigmoid."""
    hidden = max(1, channels // reduction)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, channels, 1), nn.Sigmoid())


class FusionAttentionBlock(nn.Module):
    """MFAB: x2 upsampling of the deep input, gated by the SE weights of both inputs, fused with the skip."""

    def __init__(self, cin: int, skip: int, cout: int, reduction: int = 16):
        super().__init__()
        self.reduce = nn.Sequential(conv_norm_relu(cin, cin, norm="bn"), conv_norm_relu(cin, skip, 1, "bn"))
        self.deep_weights = _squeeze_excite(skip, reduction)
        self.skip_weights = _squeeze_excite(skip, reduction)
        self.fuse = nn.Sequential(conv_norm_relu(2 * skip, cout, norm="bn"), conv_norm_relu(cout, cout, norm="bn"))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="nearest")
        x = x * (self.deep_weights(x) + self.skip_weights(skip))
        return self.fuse(torch.cat([x, skip], dim=1))


class MAnetDecoder(nn.Module):
    output_stride = 1

    def __init__(self, encoder_channels: tuple[int, ...], channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 key_channels: int = 64, reduction: int = 16):
        super().__init__()
        skips = list(encoder_channels[1:5])[::-1]  # strides 16, 8, 4, 2
        inputs = [encoder_channels[5]] + list(channels[:-1])
        self.center = PositionAttention(encoder_channels[5], key_channels)
        self.blocks = nn.ModuleList(FusionAttentionBlock(cin, skip, cout, reduction)
                                    for cin, skip, cout in zip(inputs, skips, channels))
        self.last = nn.Sequential(conv_norm_relu(inputs[-1], channels[-1], norm="bn"),
                                  conv_norm_relu(channels[-1], channels[-1], norm="bn"))
        self.out_channels = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.center(features[5])
        for block, skip in zip(self.blocks, features[1:5][::-1]):
            x = block(x, skip)
        return self.last(F.interpolate(x, scale_factor=2, mode="nearest"))
