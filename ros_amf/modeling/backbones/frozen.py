"""Frozen backbone parts for small-batch fine-tuning (detectron2's FREEZE_AT and FrozenBN).

:class:`FrozenBatchNorm2d` normalises with the stored statistics in training too and learns
nothing. It subclasses ``nn.BatchNorm2d`` so its state-dict keys are the same: a model trained
with frozen BatchNorm loads into one built without it, and pretrained BatchNorm weights load
into it unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with fixed statistics and affine terms: ``(x - mean) / sqrt(var + eps) * w + b``."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training=False: the running statistics are used and never updated, in train() mode too
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a :class:`FrozenBatchNorm2d` holding its values."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, FrozenBatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps, momentum=module.momentum)
        frozen.load_state_dict(module.state_dict())
        return frozen.to(module.weight.device)
    for name, child in module.named_children():
        replaced = freeze_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def freeze(module: nn.Module) -> None:
    """No gradients and fixed BatchNorm statistics for every layer under ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    freeze_batchnorm(module)


def apply_freezing(levels: list[list[nn.Module]], freeze_at: int, frozen_bn: bool, root: nn.Module) -> None:
    """Freeze the modules producing features[1..freeze_at] (``levels[i]`` produces features[i + 1]),
    then, with ``frozen_bn``, turn every remaining BatchNorm of ``root`` into a frozen one."""
    if not 0 <= freeze_at <= len(levels):
        raise ValueError(f"backbone_freeze_at {freeze_at} is out of range; use 0 (train everything) to "
                         f"{len(levels)} (freeze every level).")
    for modules in levels[:freeze_at]:
        for module in modules:
            freeze(module)
    if frozen_bn:
        freeze_batchnorm(root)
