"""SparseInst's decoder with group instance activation maps (G-IAM).

Instance branch: 4 x (3x3 conv + ReLU) on [features, x, y]; a grouped 3x3 conv gives G*N
activation maps; sigmoid, normalised over HW, used as weights to aggregate features (bmm);
the G group features of each instance are concatenated (G*C) and mixed by Linear(G*C -> expand_dim)
+ ReLU; heads: class logits, mask kernel, objectness. Mask branch: 4 x (3x3 conv + ReLU), 1x1 to
``kernel_dim``; masks = kernel . mask features, upsampled x2 (1/4 of the input).

Two variants of the official code: ``instance_fc=False`` with ``groups=1`` is SparseInst's plain IAM
decoder (``BaseIAMDecoder``: the heads read the aggregated features directly, no Linear + ReLU);
``iam_softmax=True`` is ``GroupIAMSoftDecoder`` (softmax over HW of the maps plus a learned bias instead of
sigmoid and sum-normalisation).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ros_amf.modeling.layers import conv_norm_relu, msra_init

PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # focal-loss prior: sigmoid(bias) = 0.01


def coordinate_features(x: torch.Tensor) -> torch.Tensor:
    """Two channels with x and y in [-1, 1] (CoordConv)."""
    batch, _, height, width = x.shape
    ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(batch, -1, -1, -1)


class GroupInstanceBranch(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_convs: int, num_masks: int, num_classes: int,
                 groups: int, expand_dim: int, kernel_dim: int, norm: str = "none", instance_fc: bool = True,
                 iam_softmax: bool = False):
        super().__init__()
        if not instance_fc and groups != 1:
            raise ValueError(f"instance_fc false (SparseInst's plain IAM decoder) needs groups 1, not {groups}; "
                             "set groups: 1 or instance_fc: true.")
        self.num_masks, self.groups = num_masks, groups
        self.convs = nn.Sequential(*[conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm)
                                     for i in range(num_convs)])
        self.iam_conv = nn.Conv2d(channels, num_masks * groups, 3, padding=1, groups=groups)
        self.fc = nn.Linear(channels * groups, expand_dim) if instance_fc else None
        head_dim = expand_dim if instance_fc else channels
        # GroupIAMSoftDecoder's bias added to the maps before the softmax over HW
        self.softmax_bias = nn.Parameter(torch.ones(1)) if iam_softmax else None
        self.cls_score = nn.Linear(head_dim, num_classes)
        self.mask_kernel = nn.Linear(head_dim, kernel_dim)
        self.objectness = nn.Linear(head_dim, 1)
        msra_init(self.convs)
        nn.init.normal_(self.iam_conv.weight, std=0.01)
        nn.init.constant_(self.iam_conv.bias, PRIOR_BIAS)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, PRIOR_BIAS)
        nn.init.normal_(self.mask_kernel.weight, std=0.01)
        nn.init.zeros_(self.mask_kernel.bias)
        if self.fc is not None:
            nn.init.kaiming_uniform_(self.fc.weight, a=1)  # c2_xavier_fill
            nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.convs(features)
        batch, channels = features.shape[:2]
        iam = self.iam_conv(features)
        if self.softmax_bias is not None:
            weights = torch.softmax(iam.flatten(2) + self.softmax_bias, dim=-1)
        else:
            weights = torch.sigmoid(iam).flatten(2)  # [B, G*N, HW]
            weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-6)
        inst = torch.bmm(weights, features.flatten(2).transpose(1, 2))  # [B, G*N, C]
        inst = inst.reshape(batch, self.groups, self.num_masks, channels).transpose(1, 2)
        inst = inst.reshape(batch, self.num_masks, self.groups * channels)
        if self.fc is not None:
            inst = F.relu(self.fc(inst))
        return {"pred_logits": self.cls_score(inst), "pred_kernel": self.mask_kernel(inst),
                "pred_scores": self.objectness(inst), "pred_iam": iam}


class MaskBranch(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_convs: int, kernel_dim: int, norm: str = "none"):
        super().__init__()
        self.convs = nn.Sequential(*[conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm)
                                     for i in range(num_convs)])
        self.projection = nn.Conv2d(channels, kernel_dim, 1)
        msra_init(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.convs(features))


class GroupIAMDecoder(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, num_convs: int = 4,
                 num_masks: int = 100, groups: int = 4, expand_dim: int = 1024, kernel_dim: int = 128,
                 scale_factor: float = 2.0, norm: str = "none", instance_fc: bool = True, iam_softmax: bool = False):
        super().__init__()
        self.scale_factor = scale_factor
        # False: pred_masks stay at the mask branch's stride (8); an exported graph leaves the x2 upsampling to
        # the runtime, where it is cheap, while OpenVINO pays ~8 ms re-laying the large upsampled output
        self.upsample_in_forward = True
        self.inst_branch = GroupInstanceBranch(in_channels + 2, channels, num_convs, num_masks, num_classes, groups,
                                               expand_dim, kernel_dim, norm, instance_fc, iam_softmax)
        self.mask_branch = MaskBranch(in_channels + 2, channels, num_convs, kernel_dim, norm)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.cat([coordinate_features(features), features], dim=1)
        out = self.inst_branch(features)
        mask_features = self.mask_branch(features)
        batch, kernel_dim, height, width = mask_features.shape
        masks = torch.bmm(out.pop("pred_kernel"), mask_features.flatten(2)).view(batch, -1, height, width)
        out["pred_masks"] = upsample_masks(masks, self.scale_factor) if self.upsample_in_forward else masks
        return out


def upsample_masks(masks: torch.Tensor, scale_factor: float = 2.0) -> torch.Tensor:
    """Mask logits from the mask branch's grid (1/8) to the output grid (1/4), as SparseInst does."""
    return F.interpolate(masks, scale_factor=scale_factor, mode="bilinear", align_corners=False)
