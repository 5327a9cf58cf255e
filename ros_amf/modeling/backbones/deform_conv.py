"""Deformable convolution, modulated (DCNv2, Zhu et al. 2019) and plain (DCNv1, Dai et al. 2017), in PyTorch.

Each of the k*k kernel taps of every output position is shifted by a learned offset
(dy, dx) and scaled by a learned modulation scalar in (0, 1); the shifted input is read with
bilinear interpolation (``grid_sample``, zeros outside the image), then the taps are combined
with an ordinary convolution weight. No compiled ops, so it runs wherever torch runs; slower
than CUDA DCN kernels but numerically the same operation.

Offset layout (both versions, as detectron2's and mmcv's kernels): 2*K channels, (dy, dx) per tap,
taps row-major over the kernel; DCNv2's offset conv adds K modulation channels after them. DCNv1
(:class:`DeformConv2d`, detectron2's ``DeformConv`` with its ``conv2_offset`` conv) has no modulation:
every tap weighs 1. SparseInst's published R-50-DCN and R-50-vd-DCN checkpoints use DCNv1.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _build_regular_grid(out_h: int, out_w: int, height: int, width: int, kh: int, kw: int, stride: int,
                        padding: int, dilation: int, device: torch.device,
                        dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The regular sampling positions p + p_k in grid_sample's coordinates, [K, Ho, Wo, (x, y)], and the
    factors [(x, y)] that turn pixel offsets into those coordinates."""
    pos_y = (torch.arange(out_h, device=device, dtype=dtype) * stride - padding).view(1, -1, 1) + \
        (torch.arange(kh, device=device, dtype=dtype) * dilation).repeat_interleave(kw).view(-1, 1, 1)
    pos_x = (torch.arange(out_w, device=device, dtype=dtype) * stride - padding).view(1, 1, -1) + \
        (torch.arange(kw, device=device, dtype=dtype) * dilation).repeat(kh).view(-1, 1, 1)
    # align_corners=True maps -1/+1 to the first/last pixel centre
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=device, dtype=dtype)
    grid = torch.stack(torch.broadcast_tensors(pos_x, pos_y), dim=-1) * scale - 1.0
    return grid, scale


@functools.lru_cache(maxsize=64)
def _cached_regular_grid(out_h: int, out_w: int, height: int, width: int, kh: int, kw: int, stride: int,
                         padding: int, dilation: int, device: torch.device,
                         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``_build_regular_grid`` once per shape: per eager frame it costs nothing. Normal tensors even if first
    asked for under inference_mode, so that training can save them for backward."""
    with torch.inference_mode(False), torch.no_grad():
        grid, scale = _build_regular_grid(out_h, out_w, height, width, kh, kw, stride, padding, dilation, device,
                                          dtype)
    if device.type == "cuda":   # made on one stream, read from every stream afterwards
        torch.cuda.current_stream(device).synchronize()
    return grid, scale


def _regular_grid(*shape_args) -> tuple[torch.Tensor, torch.Tensor]:
    # Under torch.export / torch.onnx.export / torch.compile the grid is built in the graph (constants the
    # backend folds): a cached tensor made while tracing is a fake tensor, which the exporter then lifts
    # once per DCN layer and fails on (issue 17), and which would poison the cache for eager calls.
    if torch.compiler.is_compiling():
        return _build_regular_grid(*shape_args)
    return _cached_regular_grid(*shape_args)


def modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor,
                            bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
                            dilation: int = 1) -> torch.Tensor:
    """DCNv2: y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k.

    offset: [B, 2*K, Ho, Wo] laid out as (dy, dx) per tap k (row-major over the kernel);
    mask: [B, K, Ho, Wo] already in (0, 1), or None (DCNv1); weight: [O, C, kh, kw].
    Five kernels per call: the sampling grid (flip to (dx, dy) + one fused multiply-add onto the cached
    regular grid), the bilinear sampling, the modulation, and the weighting as one 1x1 convolution
    over the C*K sampled channels.
    """
    batch, channels, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    # sampling in fp32 at least: an fp16 grid coordinate near 1 moves in steps of 1/1024, i.e. 1/8 px
    # on a 256 px wide map
    sample_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    regular, scale = _regular_grid(out_h, out_w, height, width, kh, kw, stride, padding, dilation, x.device,
                                   sample_dtype)
    # grid_sample wants (x, y): the (dy, dx) pairs are flipped; addcmul promotes an fp16 offset to fp32
    shift = offset.view(batch, taps, 2, out_h, out_w).flip(2).permute(0, 1, 3, 4, 2)
    grid = torch.addcmul(regular, shift, scale)
    sampled = F.grid_sample(x.to(sample_dtype), grid.view(batch, taps * out_h, out_w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=True).to(x.dtype)
    # [B, C, K*Ho, Wo] is [B, C, K, Ho, Wo] in memory: modulate per tap, then sum over (c, k) as a 1x1 conv
    modulated = sampled.view(batch, channels, taps, out_h, out_w)
    if mask is not None:   # None: DCNv1, every tap weighs 1
        modulated = modulated * mask.unsqueeze(1)
    return F.conv2d(modulated.view(batch, channels * taps, out_h, out_w),
                    weight.reshape(out_ch, channels * taps, 1, 1), bias)


class _DeformableConv(nn.Module):
    """Weight and bias of a deformable kxk conv, and the zero-initialised plain conv that predicts its
    sampling offsets (so at initialisation the layer equals an ordinary convolution)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, bias: bool):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _zero_conv(self, in_channels: int, values_per_tap: int) -> nn.Conv2d:
        kh, kw = self.weight.shape[2:]
        conv = nn.Conv2d(in_channels, values_per_tap * kh * kw, (kh, kw), stride=self.stride, padding=self.padding,
                         dilation=self.dilation)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv


class ModulatedDeformConv2d(_DeformableConv):
    """3x3 (or kxk) DCNv2 layer; offsets and masks come from a zero-initialised plain conv, so
    at initialisation it equals an ordinary convolution with all modulation scalars 0.5."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)
        self.offset_mask = self._zero_conv(in_channels, 3)     # (dy, dx, mask logit) per tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.weight.shape[2] * self.weight.shape[3]
        out = self.offset_mask(x)
        offset, mask = out[:, :2 * taps], torch.sigmoid(out[:, 2 * taps:])
        return modulated_deform_conv2d(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation)


class DeformConv2d(_DeformableConv):
    """DCNv1: offsets only (no modulation), from a zero-initialised plain conv named ``offset``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)
        self.offset = self._zero_conv(in_channels, 2)           # (dy, dx) per tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv2d(x, self.offset(x), None, self.weight, self.bias, self.stride, self.padding,
                                       self.dilation)
