"""Pyramid Pooling Module (PSPNet), the context module of the SparseInst encoder (the baseline)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PyramidPoolingModule(nn.Module):
    """Pools to 1, 2, 3, 6 cells, 1x1 conv each to ``pool_channels`` (64), upsample, concat with the
    input, 1x1 to ``out_channels`` + ReLU (as in the official SparseInst encoder)."""

    def __init__(self, in_channels: int, out_channels: int, pool_sizes: tuple[int, ...] = (1, 2, 3, 6),
                 pool_channels: int = 64):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(in_channels, pool_channels, 1)) for size in pool_sizes)
        self.bottleneck = nn.Conv2d(in_channels + len(pool_sizes) * pool_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [F.interpolate(F.relu(stage(x)), size=size, mode="bilinear", align_corners=False)
                  for stage in self.stages]
        return F.relu(self.bottleneck(torch.cat(priors + [x], dim=1)))
