"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) in plain PyTorch.

Each of the k*k kernel taps of every output position is shifted by a learned offset
(dy, dx) and scaled by a learned modulation scalar in (0, 1); the shifted input is read with
bilinear interpolation (``grid_sample``, zeros outside the image), then the taps are combined
with an ordinary convolution weight. No compiled ops, so it runs wherever torch runs; slower
than CUDA DCN kernels but numerically the same operation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
                            dilation: int = 1) -> torch.Tensor:
    """DCNv2: y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k.

    offset: [B, 2*K, Ho, Wo] laid out as (dy, dx) per tap k (row-major over the kernel);
    mask: [B, K, Ho, Wo] already in (0, 1); weight: [O, C, kh, kw].
    """
    batch, channels, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    # positions, grid and bilinear sampling in fp32 whatever the model runs in: an fp16 grid coordinate
    # near 1 moves in steps of 1/1024, i.e. 1/8 px on a 256 px wide map
    fp32, device = torch.float32, x.device
    # regular sampling positions p + p_k (pixel coordinates of the input)
    base_y = torch.arange(out_h, device=device, dtype=fp32) * stride - padding
    base_x = torch.arange(out_w, device=device, dtype=fp32) * stride - padding
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, device=device, dtype=fp32) * dilation,
                                  torch.arange(kw, device=device, dtype=fp32) * dilation, indexing="ij")
    pos_y = base_y.view(1, 1, out_h, 1) + tap_y.reshape(1, taps, 1, 1)
    pos_x = base_x.view(1, 1, 1, out_w) + tap_x.reshape(1, taps, 1, 1)
    off = offset.float().view(batch, taps, 2, out_h, out_w)
    pos_y = pos_y + off[:, :, 0]
    pos_x = pos_x + off[:, :, 1]
    # grid_sample wants (x, y) in [-1, 1]; align_corners=True maps -1/+1 to the first/last pixel centre
    grid = torch.stack((2.0 * pos_x / max(width - 1, 1) - 1.0, 2.0 * pos_y / max(height - 1, 1) - 1.0), dim=-1)
    sampled = F.grid_sample(x.float(), grid.view(batch, taps * out_h, out_w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True).to(x.dtype)
    sampled = sampled.view(batch, channels, taps, out_h, out_w) * mask.unsqueeze(1)
    out = torch.einsum("bckhw,ock->bohw", sampled, weight.reshape(out_ch, channels, taps))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """3x3 (or kxk) DCNv2 layer; offsets and masks come from a zero-initialised plain conv, so
    at initialisation it equals an ordinary convolution with all modulation scalars 0.5."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_mask = nn.Conv2d(in_channels, 3 * kh * kw, kernel_size, stride=stride, padding=padding,
                                     dilation=dilation)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.weight.shape[2] * self.weight.shape[3]
        out = self.offset_mask(x)
        offset, mask = out[:, :2 * taps], torch.sigmoid(out[:, 2 * taps:])
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation)
