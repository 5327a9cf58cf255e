"""Naive AFMA, written straight from the paper's equations: it materialises every A_k.

This is the reference the memory-efficient ``AcrossFeatureMapAttention`` is checked against
(tests) and benchmarked against (scripts/bench_afma_memory.py). It uses the module's own
weights but none of its code paths: full-resolution convolutions, ``F.unfold``/``F.fold``, the
full one-hot map and A [B, C, L_full, L_down] held for all classes at once, as the authors'
implementation does (it returns A for the loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

COUNT_EPS = 1e-5


def _pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, L, p²] via F.unfold, one channel at a time."""
    return torch.stack([F.unfold(x[:, k:k + 1], p, stride=p).transpose(1, 2) for k in range(x.shape[1])], dim=1)


def naive_attention(afma, image: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """Eq. 1-7: A [B, C, L_full, L_down]."""
    p, d, s = afma.patch_size, afma.depth, afma.stride_depth  # s < d only on dilated encoders
    height, width = image.shape[-2:]
    block = p * 2 ** s
    padded_h, padded_w = -(-height // block) * block, -(-width // block) * block
    embedded = afma.image_conv2(afma.image_conv1(image))
    embedded = _pad(embedded, padded_h, padded_w)
    feature_maps = _pad(afma.feature_conv(feature) / 4 ** d, padded_h // 2 ** s, padded_w // 2 ** s)
    image_patches = afma.patch_mlp(_patches(embedded, p))
    feature_patches = afma.patch_mlp(_patches(feature_maps, p))
    return image_patches @ feature_patches.transpose(-1, -2) / p ** 2


def naive_modulate(afma, logits: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Eq. 8-18 with the full one-hot and the full A."""
    p, s, classes = afma.patch_size, afma.stride_depth, afma.num_classes
    height, width = logits.shape[-2:]
    block = p * 2 ** s
    padded_h, padded_w = -(-height // block) * block, -(-width // block) * block
    onehot = F.one_hot(logits.argmax(1), classes).permute(0, 3, 1, 2).to(logits.dtype)
    pooled = F.avg_pool2d(_pad(onehot, padded_h, padded_w), 2 ** s)
    pooled_patches = _patches(pooled, p)
    counts = torch.count_nonzero(attention, dim=-1).unsqueeze(-1) + COUNT_EPS
    rows = (attention / counts) @ pooled_patches  # [B, C, L_full, p²]
    correction = torch.stack([F.fold(rows[:, k].transpose(1, 2), (padded_h, padded_w), p, stride=p)[:, 0]
                              for k in range(classes)], dim=1)[..., :height, :width]
    return correction * logits + logits


def naive_forward(afma, image, features, logits):
    attention = naive_attention(afma, image, features[afma.depth])
    return naive_modulate(afma, logits, attention), attention


def naive_gold_attention(labels: torch.Tensor, classes: int, p: int, d: int) -> torch.Tensor:
    """Eq. 19-21: gold A from the one-hot ground truth (ignore = all zero), [B, C, L_full, L_down]."""
    height, width = labels.shape[-2:]
    block = p * 2 ** d
    padded_h, padded_w = -(-height // block) * block, -(-width // block) * block
    onehot = torch.stack([(labels == k) for k in range(classes)], dim=1).to(torch.get_default_dtype())
    onehot = _pad(onehot, padded_h, padded_w)
    pooled = F.avg_pool2d(onehot, 2 ** d)
    return _patches(onehot, p) @ _patches(pooled, p).transpose(-1, -2) / p ** 2


def naive_afma_mse(attention: torch.Tensor, labels: torch.Tensor, p: int, d: int) -> torch.Tensor:
    gold = naive_gold_attention(labels, attention.shape[1], p, d).to(attention.dtype)
    return F.mse_loss(attention, gold)
