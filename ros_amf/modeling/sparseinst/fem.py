"""Feature Enhancement Module (AMF-SparseInst Sec. 3.2, Fig. 4, Tables 6 and 8).

Two purification branches reweight the fused feature X = X_fusion:
  channel (eSE, CenterMask):  A_ca = hardsigmoid(W_c * GAP(S_c))          (Eq. 1),  X_ca = A_ca * X  (Eq. 2)
  spatial:                    C = concat(mean_c(S_s), max_c(S_s))         (Eq. 3)
                              A_sa = sigmoid(conv5x5(C))                  (Eq. 4),  X_sa = A_sa * X  (Eq. 5)
combined in parallel as F_out = W5 * X_ca + W3 * X_sa with (W3, W5) = (0.6, 0.4)   (Eq. 6, Table 8).

Two readings of the attention sources S_c, S_s (``source``):
  'pyramid' (default) follows the abstract, "FEM ... uses N3 and N5 respectively to reweight fusion
            features in spatial and channel dimensions", and Sec. 3.2's "softmax operations on N5 and N3
            to obtain the channel attention weighted value W_5 and spatial attention weighted value
            W_3": S_c = N5 (channel attention from the coarsest pyramid level), S_s = N3 (spatial
            attention from the finest, which has X's stride 8).
  'fusion'  follows Eqs. 1-5 as printed, which write both attentions as functions of X_fusion:
            S_c = S_s = X. The shipped slim checkpoints were trained this way.

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
    """eSE: one C->C 1x1 conv on the global average of ``source``, hard-sigmoid gate on ``x`` (Eq. 1-2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        source = x if source is None else source
        attention = F.hardsigmoid(self.fc(source.mean(dim=(-2, -1), keepdim=True)))  # Eq. 1
        return x * attention  # Eq. 2


class SpatialAttention(nn.Module):
    """Channel-mean and channel-max maps of ``source`` -> 5x5 conv -> sigmoid gate on ``x`` (Eq. 3-5)."""

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        source = x if source is None else source
        descriptor = torch.cat([source.mean(dim=1, keepdim=True), source.amax(dim=1, keepdim=True)], dim=1)  # Eq. 3
        attention = torch.sigmoid(self.conv(descriptor))  # Eq. 4
        if attention.shape[-2:] != x.shape[-2:]:   # N3 has X_fusion's stride; resize only if a caller differs
            attention = F.interpolate(attention, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * attention  # Eq. 5


class FeatureEnhancement(nn.Module):
    def __init__(self, channels: int, weights: tuple[float, float] = (0.6, 0.4), connection: str = "parallel",
                 spatial_kernel: int = 5, learnable_weights: bool = False, source: str = "pyramid"):
        super().__init__()
        if connection not in ("parallel", "serial", "channel", "spatial"):
            raise ValueError(f"FEM connection '{connection}' is unknown; use parallel, serial, channel or spatial.")
        if source not in ("pyramid", "fusion"):
            raise ValueError(f"FEM source '{source}' is unknown; use pyramid (N3/N5, the paper) or fusion (X_fusion).")
        self.source = source
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

    def forward(self, x: torch.Tensor, n3: torch.Tensor | None = None, n5: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` = X_fusion; ``n3``/``n5`` = the finest and coarsest pyramid outputs (used when source='pyramid')."""
        if self.source == "pyramid":
            if n3 is None or n5 is None:
                raise ValueError("FEM with source='pyramid' needs the pyramid levels n3 and n5.")
            spatial_source, channel_source = n3, n5
        else:
            spatial_source = channel_source = None
        if self.connection == "channel":
            return self.channel(x, channel_source)
        if self.connection == "spatial":
            return self.spatial(x, spatial_source)
        if self.connection == "serial":
            return self.spatial(self.channel(x, channel_source), spatial_source)
        w3, w5 = torch.softmax(self.weight_logits, dim=0)
        return w5 * self.channel(x, channel_source) + w3 * self.spatial(x, spatial_source)  # Eq. 6
