"""SparseInst's instance context encoder, with AMF-SparseInst's switches.

res3/res4/res5 -> 1x1 laterals -> context module on the top level (PPM, or SimAM-ASPP) ->
FPN (top-down, or Lite-BiFPN) -> P4/P5 resized to P3, concat, 1x1 fusion (X_fusion, stride 8)
-> optional FEM. Every Table 4 row is a combination of ``context``, ``lite_bifpn`` and ``fem``.

Choice: SimAM-ASPP sits exactly where PPM sits (on the 1x1 lateral of C5), so the baseline and
AMF differ only by the swapped module; FEM refines X_fusion, the "splicing + 1x1 conv" output
the paper names as FEM's input (Eq. 1), with its attentions taken from N5 (channel) and N3 (spatial)
by default (``fem_source``; see fem.py for the two readings).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ros_amf.modeling.sparseinst.fem import FeatureEnhancement
from ros_amf.modeling.layers import msra_init
from ros_amf.modeling.sparseinst.lite_bifpn import LiteBiFPN, TopDownFPN
from ros_amf.modeling.sparseinst.ppm import PyramidPoolingModule
from ros_amf.modeling.sparseinst.simam_aspp import SimAMASPP


class InstanceContextEncoder(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256, context: str = "ppm",
                 lite_bifpn: bool = False, fem: bool = False, aspp_rates: tuple[int, ...] = (6, 18, 24),
                 aspp_plain_kernel: int = 3, aspp_dropout: float = 0.1, simam_lambda: float = 1e-4,
                 aspp_depthwise: bool = True, aspp_simam: bool = True, fem_weights: tuple[float, float] = (0.6, 0.4),
                 fem_connection: str = "parallel", fem_source: str = "pyramid", norm: str = "none"):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        if context == "ppm":
            self.context = PyramidPoolingModule(channels, channels, pool_channels=max(channels // 4, 8))
        elif context == "simam_aspp":
            self.context = SimAMASPP(channels, channels, aspp_rates, plain_kernel=aspp_plain_kernel,
                                     dropout=aspp_dropout, simam_lambda=simam_lambda, norm=norm,
                                     depthwise=aspp_depthwise, use_simam=aspp_simam)
        else:
            raise ValueError(f"context module '{context}' is unknown; use 'ppm' or 'simam_aspp'.")
        self.fpn = LiteBiFPN(channels) if lite_bifpn else TopDownFPN(channels)
        self.fusion = nn.Conv2d(3 * channels, channels, 1)
        self.fem = FeatureEnhancement(channels, fem_weights, fem_connection, source=fem_source) if fem else None
        msra_init(self)
        if fem:  # keep the tiny attention convs at PyTorch's default (small) init
            self.fem.channel.fc.reset_parameters()
            self.fem.spatial.conv.reset_parameters()
        self.out_channels = channels

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        laterals = [conv(c) for conv, c in zip(self.laterals, (c3, c4, c5))]
        levels = self.fpn(laterals, self.context(laterals[2]))
        size = levels[0].shape[-2:]
        resized = [levels[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in levels[1:]]
        fused = self.fusion(torch.cat(resized, dim=1))
        if self.fem is None:
            return fused
        return self.fem(fused, n3=levels[0], n5=levels[2])
