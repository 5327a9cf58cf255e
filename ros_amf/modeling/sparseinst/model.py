"""SparseInst / AMF-SparseInst: backbone -> instance context encoder -> G-IAM decoder.

``build_instance_model(InstanceModelConfig(...))`` gives the model; the config switches
``context`` ('ppm' = SparseInst, 'simam_aspp'), ``lite_bifpn`` and ``fem`` select any Table 4 row
of the AMF-SparseInst paper. forward(images [B,3,H,W] normalised, H and W multiples of 32) ->
{"pred_logits" [B,N,K], "pred_masks" [B,N,H/4,W/4], "pred_scores" [B,N,1] (objectness logits)}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ros_amf.contract.input_size import InputSize, legacy_input_size_keys
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation
from ros_amf.modeling.backbones.build import build_backbone
from ros_amf.modeling.sparseinst.decoder import GroupIAMDecoder
from ros_amf.modeling.sparseinst.encoder import InstanceContextEncoder


@dataclass
class InstanceModelConfig:
    num_classes: int = 80
    # backbone (ResNet; 'deep_stem' + 'avg_down' = ResNet-d; dcn_stages e.g. [3, 4, 5] = DCNv2 in res3..res5)
    backbone_depth: int = 50
    backbone_width: int = 64
    deep_stem: bool = False
    avg_down: bool = False
    dcn_stages: tuple[int, ...] = ()
    dcn_modulated: bool = True         # DCNv2; false = DCNv1 (offsets only), SparseInst's published DCN models
    stride_in_1x1: bool = False        # bottleneck stride in the first 1x1 conv (MSRA R-50.pkl weights)
    # 'efficientnet_lite0' replaces the ResNet (the keys above then do not apply)
    backbone: Literal["resnet", "efficientnet_lite0"] = "resnet"
    # pretrained start for training (ros_amf.modeling.backbones.pretrained) and the pixels its weights expect
    backbone_weights: str | None = None
    backbone_freeze_at: int = 0        # freeze the stem and stages producing features[1..n] (detectron2 FREEZE_AT)
    backbone_frozen_bn: bool = False   # BatchNorm statistics fixed (detectron2 FrozenBN)
    pixel_normalisation: PixelNormalisation = IMAGENET
    # encoder
    encoder_channels: int = 256
    context: Literal["ppm", "simam_aspp"] = "ppm"
    lite_bifpn: bool = False
    fem: bool = False
    aspp_rates: tuple[int, ...] = (6, 18, 24)
    aspp_plain_kernel: int = 3         # the paper's "ordinary 3x3 convolution"; 1 = DeepLab's 1x1
    aspp_dropout: float = 0.1
    aspp_depthwise: bool = True
    aspp_simam: bool = True
    simam_lambda: float = 1e-4
    fem_weights: tuple[float, float] = (0.6, 0.4)  # (W3 spatial, W5 channel), Eq. 6 / Table 8
    fem_connection: Literal["parallel", "serial", "channel", "spatial"] = "parallel"
    # where FEM's attentions come from: 'pyramid' = the paper (channel from N5, spatial from N3),
    # 'fusion' = both from X_fusion (the ablation the shipped slim checkpoints were trained with)
    fem_source: Literal["pyramid", "fusion"] = "pyramid"
    # decoder
    decoder_channels: int = 256
    decoder_convs: int = 4
    num_masks: int = 100
    groups: int = 4
    expand_dim: int = 1024
    kernel_dim: int = 128
    instance_fc: bool = True           # G-IAM's Linear + ReLU on the group features; false (with groups 1) = plain IAM
    iam_softmax: bool = False          # softmax IAM (SparseInst's G-IAM Softmax model) instead of sigmoid + normalise
    # 'none' = official SparseInst heads; 'gn' adds GroupNorm to encoder/decoder convs (slim from-scratch models)
    head_norm: Literal["none", "gn"] = "none"
    # inference input (short side, long-side cap); the runtime, evaluator and trainer's validation read it.
    # 640 / 864 is SparseInst's official test size.
    input_size: InputSize = InputSize(640, 864)

    @staticmethod
    def upgrade_legacy_keys(data: dict) -> dict:
        """Map configs and checkpoints of the earlier format (flat input-size keys): their models used the
        1x1 plain ASPP branch (then the default) and FEM attentions computed from X_fusion."""
        legacy = "input_short_side" in data or "input_max_side" in data
        data = legacy_input_size_keys(data)
        if legacy:
            data.setdefault("aspp_plain_kernel", 1)
            data.setdefault("fem_source", "fusion")
        return data


class SparseInst(nn.Module):
    def __init__(self, cfg: InstanceModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, depth=cfg.backbone_depth, width=cfg.backbone_width,
                                       deep_stem=cfg.deep_stem, avg_down=cfg.avg_down, dcn_stages=cfg.dcn_stages,
                                       stride_in_1x1=cfg.stride_in_1x1, freeze_at=cfg.backbone_freeze_at,
                                       frozen_bn=cfg.backbone_frozen_bn, dcn_modulated=cfg.dcn_modulated)
        c3, c4, c5 = self.backbone.out_channels[3:]
        self.encoder = InstanceContextEncoder(
            (c3, c4, c5), cfg.encoder_channels, context=cfg.context, lite_bifpn=cfg.lite_bifpn, fem=cfg.fem,
            aspp_rates=tuple(cfg.aspp_rates), aspp_plain_kernel=cfg.aspp_plain_kernel, aspp_dropout=cfg.aspp_dropout,
            simam_lambda=cfg.simam_lambda, aspp_depthwise=cfg.aspp_depthwise, aspp_simam=cfg.aspp_simam,
            fem_weights=tuple(cfg.fem_weights), fem_connection=cfg.fem_connection, fem_source=cfg.fem_source, norm=cfg.head_norm)
        self.decoder = GroupIAMDecoder(cfg.encoder_channels, cfg.num_classes, cfg.decoder_channels, cfg.decoder_convs,
                                       cfg.num_masks, cfg.groups, cfg.expand_dim, cfg.kernel_dim, norm=cfg.head_norm,
                                       instance_fc=cfg.instance_fc, iam_softmax=cfg.iam_softmax)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"input size {height}x{width} is not a multiple of 32; pad the batch "
                             "(ros_amf.runtime.preprocess does) before calling the model.")
        return self.heads(self.backbone(images))

    def heads(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything after the backbone (a shared-backbone model calls this with its own features)."""
        return self.decoder(self.encoder(*features[3:6]))


def build_instance_model(cfg: InstanceModelConfig) -> SparseInst:
    if cfg.num_classes < 1:
        raise ValueError(f"num_classes = {cfg.num_classes}; a model needs at least one class (model config).")
    return SparseInst(cfg)
