"""Semantic segmentation model: encoder (ResNet or EfficientNet-Lite0) -> host decoder -> head, AFMA a switch.

    cfg = SemanticModelConfig(architecture="fpn", num_classes=19, afma=True, afma_depth=2)
    model = build_semantic_model(cfg)
    out = model(images)            # images normalised, H and W multiples of 32
    out["logits"]                  # [B, C, H, W], AFMA-modulated when cfg.afma
    out["afma"]                    # AfmaFactors for the gold-AFMA loss, or None without AFMA
    out["host_logits"]             # the host network's own logits (before AFMA)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.semantic.afma import AcrossFeatureMapAttention
from ros_amf.contract.input_size import InputSize, legacy_input_size_keys
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation
from ros_amf.modeling.backbones.build import build_backbone
from ros_amf.modeling.semantic.decoders.deeplabv3 import DeepLabV3Decoder
from ros_amf.modeling.semantic.decoders.fpn import FPNDecoder
from ros_amf.modeling.semantic.decoders.linknet import LinknetDecoder
from ros_amf.modeling.semantic.decoders.manet import MAnetDecoder
from ros_amf.modeling.semantic.decoders.pan import PANDecoder
from ros_amf.modeling.semantic.decoders.pspnet import PSPDecoder
from ros_amf.modeling.semantic.decoders.unet import UnetDecoder
from ros_amf.modeling.semantic.decoders.unetplusplus import UnetPlusPlusDecoder


def _halving(channels: int) -> tuple[int, ...]:
    """Widths of the five x2 blocks of the U-Net family: channels, channels/2, ... (at least 8)."""
    return tuple(max(8, channels // 2 ** i) for i in range(5))


# The AFMA paper's eight hosts: decoder from (encoder channels, decoder_channels)
DECODERS = {
    "fpn": lambda enc, c: FPNDecoder(enc, pyramid_channels=c, segmentation_channels=max(16, c // 2)),
    "deeplabv3": lambda enc, c: DeepLabV3Decoder(enc, channels=c),
    "unet": lambda enc, c: UnetDecoder(enc, channels=_halving(c)),
    "pspnet": lambda enc, c: PSPDecoder(enc, channels=c),
    "unetplusplus": lambda enc, c: UnetPlusPlusDecoder(enc, channels=_halving(c)),
    "manet": lambda enc, c: MAnetDecoder(enc, channels=_halving(c)),
    "pan": lambda enc, c: PANDecoder(enc, channels=c),
    "linknet": lambda enc, c: LinknetDecoder(enc, final_channels=c),
}
ARCHITECTURES = tuple(DECODERS)
# Dilated encoders, as in SMP and the AFMA authors' code: DeepLabV3 and PSPNet replace the strides of
# res4/res5 by dilation (output stride 8), PAN that of res5 (16). The other hosts keep stride 32.
ENCODER_OUT_STRIDE = {"deeplabv3": 8, "pspnet": 8, "pan": 16}
DEEPEST_FEATURE = 5  # features[5] = res5


@dataclass
class SemanticModelConfig:
    architecture: Literal["fpn", "deeplabv3", "unet", "pspnet", "unetplusplus", "manet", "pan", "linknet"] = "fpn"
    num_classes: int = 19
    encoder_depth: int = 18            # ResNet-18/34/50
    encoder_width: int = 64            # 32 for slim CPU models
    # the encoder network; encoder_depth/width, deep_stem, avg_down and stride_in_1x1 apply to resnet
    backbone: Literal["resnet", "efficientnet_lite0"] = "resnet"
    deep_stem: bool = False            # with avg_down: ResNet-D (timm resnet50d weights)
    avg_down: bool = False
    stride_in_1x1: bool = False        # bottleneck stride in the first 1x1 conv (MSRA R-50.pkl weights)
    # pretrained start for training (ros_amf.modeling.backbones.pretrained) and the pixels its weights expect
    backbone_weights: str | None = None
    backbone_freeze_at: int = 0        # freeze the stem and stages producing features[1..n] (detectron2 FREEZE_AT)
    backbone_frozen_bn: bool = False   # BatchNorm statistics fixed (detectron2 FrozenBN)
    pixel_normalisation: PixelNormalisation = IMAGENET
    # FPN pyramid / ASPP / PSP / PAN width; U-Net, U-Net++ and MA-Net: first block (then halved);
    # LinkNet: its last block (the others mirror the encoder)
    decoder_channels: int = 256
    afma: bool = True                  # the one switch: host network with or without AFMA
    afma_depth: int = 2                # d: AFMA attends between the image and features[d] (1..5)
    afma_patch_size: int = 10          # p
    afma_embed_rows: int = 40          # rows per strip of the image branch (bounds memory; same result)
    input_size: InputSize = InputSize(480, 640)    # inference input (the synthetic camera; configs state their own)

    @staticmethod
    def upgrade_legacy_keys(data: dict) -> dict:
        return legacy_input_size_keys(data)


class SegmentationHead(nn.Module):
    """3x3 conv to class logits, bilinear upsampling to the input size."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.conv(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def _after_load(module: "SemanticSegmentationModel", _incompatible_keys) -> None:
    module._note_logit_bias()


class SemanticSegmentationModel(nn.Module):
    # state a checkpoint saved before it existed lacks; such checkpoints load it as zeros
    optional_state_keys = ("logit_bias",)

    def __init__(self, cfg: SemanticModelConfig, encoder: nn.Module, decoder: nn.Module,
                 afma: AcrossFeatureMapAttention | None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.decoder = decoder
        self.head = SegmentationHead(decoder.out_channels, cfg.num_classes)
        self.afma = afma
        # Per-class offsets added to the final logits at inference only: the class-prior correction of a
        # model trained with class-weighted NLL (ros_amf.evaluation.prior). All zero = off, and the add is
        # skipped (a Python flag, so tracing and CUDA graphs see a fixed graph).
        self.register_buffer("logit_bias", torch.zeros(cfg.num_classes))
        self.uses_logit_bias = False
        self.register_load_state_dict_post_hook(_after_load)

    def set_logit_bias(self, bias: torch.Tensor) -> None:
        """The one way to change the offsets (loading a state dict is the other): it keeps the flag true."""
        self.logit_bias.copy_(torch.as_tensor(bias, dtype=self.logit_bias.dtype))
        self._note_logit_bias()

    def _note_logit_bias(self) -> None:
        self.uses_logit_bias = bool(self.logit_bias.detach().cpu().any())

    def forward(self, images: torch.Tensor) -> dict:
        return self.heads(images, self.encoder(images))

    def heads(self, images: torch.Tensor, features: list[torch.Tensor]) -> dict:
        """Everything after the encoder (a shared-backbone model calls this with its own features)."""
        host_logits = self.head(self.decoder(features), images.shape[-2:])
        if self.afma is None:
            return {"logits": self._prior_corrected(host_logits), "host_logits": host_logits, "afma": None}
        logits, factors = self.afma(images, features, host_logits)
        return {"logits": self._prior_corrected(logits), "host_logits": host_logits, "afma": factors}

    def _prior_corrected(self, logits: torch.Tensor) -> torch.Tensor:
        # training sees the raw logits: the class-weighted loss is what the offsets correct for
        if self.training or not self.uses_logit_bias:
            return logits
        return logits + self.logit_bias.to(logits.dtype).view(1, -1, 1, 1)


def build_semantic_model(cfg: SemanticModelConfig) -> SemanticSegmentationModel:
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture '{cfg.architecture}' is not known; use one of {ARCHITECTURES}.")
    if cfg.num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {cfg.num_classes}.")
    if cfg.afma and not 1 <= cfg.afma_depth <= DEEPEST_FEATURE:
        raise ValueError(f"afma_depth {cfg.afma_depth} is not available: AFMA reads encoder features[d] for "
                         f"d = 1..{DEEPEST_FEATURE}; set afma_depth in that range.")
    out_stride = ENCODER_OUT_STRIDE.get(cfg.architecture, 32)
    encoder = build_backbone(cfg.backbone, depth=cfg.encoder_depth, width=cfg.encoder_width, deep_stem=cfg.deep_stem,
                             avg_down=cfg.avg_down, stride_in_1x1=cfg.stride_in_1x1, out_stride=out_stride,
                             freeze_at=cfg.backbone_freeze_at, frozen_bn=cfg.backbone_frozen_bn)
    if cfg.architecture == "pspnet":
        # PSPNet (as in SMP) runs the encoder to stride 8 only; a deeper (dilated) stage stays only
        # when AFMA reads it, as the authors' PSPNet computes AFMA on its dilated res4/res5
        encoder.drop_levels_above(max(3, cfg.afma_depth) if cfg.afma else 3)
    afma = None
    if cfg.afma:
        # features[d] of a dilated encoder keeps the output stride (DeepLabV3/PSPNet: d = 3, 4, 5 all
        # stride 8), so AFMA's grids use that stride; see ros_amf.modeling.semantic.afma
        stride_depth = min(cfg.afma_depth, out_stride.bit_length() - 1)
        afma = AcrossFeatureMapAttention(encoder.out_channels[cfg.afma_depth], cfg.num_classes,
                                         depth=cfg.afma_depth, patch_size=cfg.afma_patch_size,
                                         embed_rows=cfg.afma_embed_rows, stride_depth=stride_depth)
    decoder = DECODERS[cfg.architecture](encoder.out_channels, cfg.decoder_channels)
    return SemanticSegmentationModel(cfg, encoder, decoder, afma)


def clear_logit_biases(model: nn.Module) -> None:
    """Zero the prior-correction offsets of every semantic model in ``model``: weights that go on training
    fit another posterior, so offsets chosen for the old weights would be stale (re-calibrate after)."""
    for module in model.modules():
        if isinstance(module, SemanticSegmentationModel):
            module.set_logit_bias(torch.zeros_like(module.logit_bias))
