"""SimAM-ASPP (AMF-SparseInst Sec. 3.1, Fig. 2-3, Tables 5 and 7): the context module replacing PPM.

Branches on the top-level feature: one plain conv, three 3x3 atrous *depthwise-separable* convs
(rates 6, 18, 24 by default, Table 7) and a global-average-pool branch; concatenated, refined by
SimAM, dropout, and a 1x1 conv that mixes the channels back to ``out_channels``.

The paper's text makes the plain branch "an ordinary 3x3 convolution" (the default here);
``plain_kernel=1`` gives DeepLab's 1x1 ASPP branch, which the shipped slim checkpoints were trained
with. ``depthwise=False`` gives the
"conventional conv" rows of Table 5, ``use_simam=False`` the row without SimAM.
"""
from __future__ import annotations

import torch
from torch import nn

from ros_amf.modeling.layers import conv_norm_relu, norm_layer
from ros_amf.modeling.sparseinst.simam import SimAM


class AtrousSeparableConv(nn.Sequential):
    """3x3 dilated depthwise conv followed by a 1x1 pointwise conv (+ norm, ReLU)."""

    def __init__(self, cin: int, cout: int, rate: int, norm: str = "none", depthwise: bool = True):
        if depthwise:
            super().__init__(nn.Conv2d(cin, cin, 3, padding=rate, dilation=rate, groups=cin, bias=False),
                             nn.Conv2d(cin, cout, 1, bias=norm == "none"), norm_layer(norm, cout), nn.ReLU(inplace=True))
        else:
            super().__init__(*conv_norm_relu(cin, cout, 3, norm, dilation=rate))


class SimAMASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...] = (6, 18, 24),
                 branch_channels: int | None = None, plain_kernel: int = 3, dropout: float = 0.1,
                 simam_lambda: float = 1e-4, norm: str = "none", depthwise: bool = True, use_simam: bool = True):
        super().__init__()
        branch = branch_channels or out_channels
        self.plain = conv_norm_relu(in_channels, branch, plain_kernel, norm)
        self.atrous = nn.ModuleList(AtrousSeparableConv(in_channels, branch, r, norm, depthwise) for r in rates)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, branch, 1), nn.ReLU(inplace=True))
        self.simam = SimAM(simam_lambda) if use_simam else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Sequential(nn.Conv2d(branch * (len(rates) + 2), out_channels, 1, bias=norm == "none"),
                                     norm_layer(norm, out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.global_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        features = torch.cat([self.plain(x)] + [conv(x) for conv in self.atrous] + [pooled], dim=1)
        return self.project(self.dropout(self.simam(features)))
