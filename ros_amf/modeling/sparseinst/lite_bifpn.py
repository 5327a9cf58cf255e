"""Lite-BiFPN (AMF-SparseInst Sec. 3, Fig. 1 dashed box): SparseInst's top-down FPN plus a bottom-up
path with residual edges C3->N3 and C4->N4.

    top-down   P5 = context(L5);  P4 = conv(L4 + up2(P5));  P3 = conv(L3 + up2(P4))
    bottom-up  N3 = P3 + L3;      N4 = conv(P4 + down2(N3) + L4);  N5 = conv(P5 + down2(N4))

(L_i = 1x1 lateral of C_i.) The 2x resampling aligns C5/N5 (up) and C3/N3 (down) with C4/N4 as
the paper describes. Choices where the paper is silent: down-sampling is a parameter-free 2x2 max
pool and the fusions are plain sums ("without increasing costs"); each fused node has one 3x3 conv
like SparseInst's output convs. The three outputs are then resized to stride 8 and fused by the
encoder exactly like the baseline, so the decoder sees the same stride-8 feature either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LiteBiFPN(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.td_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3))  # P3, P4, P5
        self.bu_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))  # N4, N5

    def forward(self, laterals: list[torch.Tensor], context: torch.Tensor) -> list[torch.Tensor]:
        l3, l4, _ = laterals
        p5_in = context
        p4_in = l4 + F.interpolate(p5_in, size=l4.shape[-2:], mode="nearest")
        p3_in = l3 + F.interpolate(p4_in, size=l3.shape[-2:], mode="nearest")
        p3, p4, p5 = (conv(t) for conv, t in zip(self.td_convs, (p3_in, p4_in, p5_in)))
        n3 = p3 + l3  # residual edge C3 -> N3
        n4 = self.bu_convs[0](p4 + F.max_pool2d(n3, 2, ceil_mode=True)[..., :p4.shape[-2], :p4.shape[-1]] + l4)
        n5 = self.bu_convs[1](p5 + F.max_pool2d(n4, 2, ceil_mode=True)[..., :p5.shape[-2], :p5.shape[-1]])
        return [n3, n4, n5]


class TopDownFPN(nn.Module):
    """The official SparseInst encoder's FPN: top-down sums of laterals, one 3x3 output conv per level."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3))

    def forward(self, laterals: list[torch.Tensor], context: torch.Tensor) -> list[torch.Tensor]:
        l3, l4, _ = laterals
        p5_in = context
        p4_in = l4 + F.interpolate(p5_in, size=l4.shape[-2:], mode="nearest")
        p3_in = l3 + F.interpolate(p4_in, size=l3.shape[-2:], mode="nearest")
        return [conv(t) for conv, t in zip(self.out_convs, (p3_in, p4_in, p5_in))]
