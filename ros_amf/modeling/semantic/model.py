"""Semantic segmentation model: ResNet encoder -> host decoder -> head, with AFMA as a switch.

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
from ros_amf.modeling.backbones.resnet import ResNetEncoder
from ros_amf.modeling.semantic.decoders.deeplabv3 import DeepLabV3Decoder
from ros_amf.modeling.semantic.decoders.fpn import FPNDecoder
from ros_amf.modeling.semantic.decoders.pspnet import PSPDecoder
from ros_amf.modeling.semantic.decoders.unet import UnetDecoder

ARCHITECTURES = ("fpn", "deeplabv3", "unet", "pspnet")


@dataclass
class SemanticModelConfig:
    architecture: Literal["fpn", "deeplabv3", "unet", "pspnet"] = "fpn"
    num_classes: int = 19
    encoder_depth: int = 18            # ResNet-18/34/50
    encoder_width: int = 64            # 32 for slim CPU models
    decoder_channels: int = 256        # FPN pyramid / ASPP / PSP width; U-Net's first block (then halved)
    afma: bool = True                  # the one switch: host network with or without AFMA
    afma_depth: int = 2                # d: AFMA attends between the image and features[d]
    afma_patch_size: int = 10          # p
    afma_embed_rows: int = 40          # rows per strip of the image branch (bounds memory; same result)
    input_size: InputSize = InputSize(512, 1024)   # inference input; a config states its own

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


class SemanticSegmentationModel(nn.Module):
    def __init__(self, cfg: SemanticModelConfig, encoder: ResNetEncoder, decoder: nn.Module,
                 afma: AcrossFeatureMapAttention | None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.decoder = decoder
        self.head = SegmentationHead(decoder.out_channels, cfg.num_classes)
        self.afma = afma

    def forward(self, images: torch.Tensor) -> dict:
        features = self.encoder(images)
        host_logits = self.head(self.decoder(features), images.shape[-2:])
        if self.afma is None:
            return {"logits": host_logits, "host_logits": host_logits, "afma": None}
        logits, factors = self.afma(images, features, host_logits)
        return {"logits": logits, "host_logits": host_logits, "afma": factors}


def _build_decoder(cfg: SemanticModelConfig, channels: tuple[int, ...]) -> nn.Module:
    c = cfg.decoder_channels
    if cfg.architecture == "fpn":
        return FPNDecoder(channels, pyramid_channels=c, segmentation_channels=max(16, c // 2))
    if cfg.architecture == "deeplabv3":
        return DeepLabV3Decoder(channels, channels=c)
    if cfg.architecture == "unet":
        return UnetDecoder(channels, channels=tuple(max(8, c // 2 ** i) for i in range(5)))
    if cfg.architecture == "pspnet":
        return PSPDecoder(channels, channels=c)
    raise ValueError(f"architecture '{cfg.architecture}' is not known; use one of {ARCHITECTURES}.")


def build_semantic_model(cfg: SemanticModelConfig) -> SemanticSegmentationModel:
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture '{cfg.architecture}' is not known; use one of {ARCHITECTURES}.")
    if cfg.num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {cfg.num_classes}.")
    out_stride = 8 if cfg.architecture == "deeplabv3" else 32
    encoder = ResNetEncoder(depth=cfg.encoder_depth, width=cfg.encoder_width, out_stride=out_stride)
    # features[d] has stride 2^d only up to the encoder's output stride (DeepLabV3: 8 -> d <= 3);
    # PSPNet (as in SMP) uses the encoder up to stride 8 only, so it drops res4/res5
    deepest = 3 if cfg.architecture in ("deeplabv3", "pspnet") else 5
    if cfg.architecture == "pspnet":
        encoder.res4, encoder.res5 = nn.Identity(), nn.Identity()
    afma = None
    if cfg.afma:
        if not 1 <= cfg.afma_depth <= deepest:
            raise ValueError(f"afma_depth {cfg.afma_depth} is not available on {cfg.architecture}: its encoder "
                             f"features keep stride 2^d only for d = 1..{deepest}; set afma_depth in that range.")
        afma = AcrossFeatureMapAttention(encoder.out_channels[cfg.afma_depth], cfg.num_classes,
                                         depth=cfg.afma_depth, patch_size=cfg.afma_patch_size,
                                         embed_rows=cfg.afma_embed_rows)
    decoder = _build_decoder(cfg, encoder.out_channels)
    return SemanticSegmentationModel(cfg, encoder, decoder, afma)
