"""Feature Enhancement Module (AMF-SparseInst Sec. 3.2, Fig. 4, Tables 6 and 8).

Two purification branches on the fused feature X:
  channel (eSE, CenterMask):  A_ca = hardsigmoid(W_c * GAP(X))            (Eq. 1),  X_ca = A_ca * X  (Eq. 2)
  spatial:                    C = concat(mean_c(X), max_c(X))             (Eq. 3)
                              A_sa = sigmoid(conv5x5(C))                  (Eq. 4),  X_sa = A_sa * X  (Eq. 5)
combined in parallel as F_out = W5 * X_ca + W3 * X_sa with (W3, W5) = (0.6, 0.4)   (Eq. 6, Table 8).

Choice: the paper says W3/W5 come from "softmax operations" yet Table 8 lists fixed pairs; we use the
fixed pair (configurable) -- ``learnable_weights=True`` instead learns two logits initialised to
that pair, normalised by softmax. ``connection`` selects Table 6's rows: 'parallel' (the paper's
model), 'serial' (channel then spatial), 'channel' or 'spatial' alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EffectiveSqueezeExcitation(nn.Module):
    """eSE: one C->C 1x1 conv on the global average, hard-sigmoid gate (Eq. 1-2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = F.hardsigmoid(self.fc(x.mean(dim=(-2, -1), keepdim=True)))  # Eq. 1
        return x * attention  # Eq. 2


class SpatialAttention(nn.Module):
    """Channel-mean and channel-max maps -> 5x5 conv -> sigmoid gate (Eq. 3-5)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # Eq. 3
        attention = torch.sigmoid(self.conv(descriptor))  # Eq. 4
        return x * attention  # Eq. 5


class FeatureEnhancement(nn.Module):
    def __init__(self, channels: int, weights: tuple[float, float] = (0.6, 0.4), connection: str = "parallel",
                 spatial_kernel: int = 5, learnable_weights: bool = False):
        super().__init__()
        if connection not in ("parallel", "serial", "channel", "spatial"):
            raise ValueError(f"FEM connection '{connection}' is unknown; use parallel, serial, channel or spatial.")
        w3, w5 = weights
        if abs(w3 + w5 - 1.0) > 1e-6:
            raise ValueError(f"FEM weights (W3, W5) = {weights} must sum to 1 (Eq. 6).")
        self.connection = connection
        self.channel = EffectiveSqueezeExcitation(channels)
        self.spatial = SpatialAttention(spatial_kernel)
        self.learnable_weights = learnable_weights
        logits = torch.tensor([math.log(w3), math.log(w5)])
        if learnable_weights:
            self.weight_logits = nn.Parameter(logits)
        else:
            self.register_buffer("weight_logits", logits, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.connection == "channel":
            return self.channel(x)
        if self.connection == "spatial":
            return self.spatial(x)
        if self.connection == "serial":
            return self.spatial(self.channel(x))
        w3, w5 = torch.softmax(self.weight_logits, dim=0)
        return w5 * self.channel(x) + w3 * self.spatial(x)  # Eq. 6
