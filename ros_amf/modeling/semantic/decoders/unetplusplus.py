"""U-Net++ decoder (Zhou et al. 2018), SMP layout: nested, densely connected skip pathways.

Node X[i][j] sits at encoder level i (stride 2^i, i = 1..4) and column j; X[i][0] = features[i].
Every other node upsamples (nearest, x2) the node below-left, X[i+1][j-1], concatenates it with
all earlier nodes of its own level, X[i][0..j-1], and applies two conv-BN-ReLU. X[5][0] =
features[5] starts the deepest column. Nodes on the outer diagonal (i + j = 5) form the main
decoder path and have channels[4 - i] channels; inner nodes keep the width of features[i]. A
last block upsamples X[1][4] to stride 1 without a skip, as in SMP.
Output: [B, channels[-1], H, W].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.layers import conv_norm_relu

LEVELS = 5  # features[1..5]: strides 2..32


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_norm_relu(cin, cout, norm="bn"), conv_norm_relu(cout, cout, norm="bn"))


class UnetPlusPlusDecoder(nn.Module):
    output_stride = 1

    def __init__(self, encoder_channels: tuple[int, ...], channels: tuple[int, ...] = (256, 128, 64, 32, 16)):
        super().__init__()
        if len(channels) != LEVELS:
            raise ValueError(f"U-Net++ needs {LEVELS} decoder widths (strides 16 to 1), got {len(channels)}.")
        widths = {(i, 0): encoder_channels[i] for i in range(1, LEVELS + 1)}
        self.nodes = nn.ModuleDict()
        for i, j in self._node_order():
            width = channels[LEVELS - i - 1] if i + j == LEVELS else encoder_channels[i]
            inputs = widths[(i + 1, j - 1)] + sum(widths[(i, k)] for k in range(j))
            self.nodes[f"x{i}_{j}"] = _double_conv(inputs, width)
            widths[(i, j)] = width
        self.final = _double_conv(channels[-2], channels[-1])
        self.out_channels = channels[-1]

    @staticmethod
    def _node_order() -> list[tuple[int, int]]:
        """Column by column, so both inputs of a node exist before it."""
        return [(i, j) for j in range(1, LEVELS) for i in range(1, LEVELS - j + 1)]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        nodes = {(i, 0): features[i] for i in range(1, LEVELS + 1)}
        for i, j in self._node_order():
            below = F.interpolate(nodes[(i + 1, j - 1)], scale_factor=2, mode="nearest")
            nodes[(i, j)] = self.nodes[f"x{i}_{j}"](torch.cat([below] + [nodes[(i, k)] for k in range(j)], dim=1))
        return self.final(F.interpolate(nodes[(1, LEVELS - 1)], scale_factor=2, mode="nearest"))
