"""SimAM: parameter-free 3-D attention (Yang et al., ICML 2021), used inside SimAM-ASPP (AMF-SparseInst Sec. 3.1).

Every neuron gets the inverse of its minimal energy
    y = (x - mu)^2 / (4 (sigma^2 + lambda)) + 0.5,   out = x * sigmoid(y),
with mu and sigma^2 the mean and variance of its channel over the spatial positions
(variance over n = H*W - 1, as in the SimAM paper).
"""
from __future__ import annotations

import torch
from torch import nn


class SimAM(nn.Module):
    def __init__(self, eps_lambda: float = 1e-4):
        super().__init__()
        self.eps_lambda = eps_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[-2] * x.shape[-1] - 1, 1)
        # statistics in fp32 whatever the model runs in: an fp16 sum of squares over a whole map loses
        # precision and can overflow
        x32 = x.float()
        d = (x32 - x32.mean(dim=(-2, -1), keepdim=True)).pow(2)
        variance = d.sum(dim=(-2, -1), keepdim=True) / n
        energy_inverse = d / (4 * (variance + self.eps_lambda)) + 0.5  # SimAM energy, inverse
        return x * torch.sigmoid(energy_inverse).to(x.dtype)
