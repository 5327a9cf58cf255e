"""A shared-backbone model: one backbone pass feeding the instance heads and the semantic heads.

    cfg = JointModelConfig(instance=InstanceModelConfig(...), semantic=SemanticModelConfig(...))
    model = build_joint_model(cfg)
    out = model(images)            # {"instance": SparseInst outputs, "semantic": semantic outputs}
    model.instance, model.semantic # ordinary SparseInst / SemanticSegmentationModel, sharing one backbone

The two sub-models hold the *same* backbone module, so ``model.instance.state_dict()`` and
``model.semantic.state_dict()`` are ordinary checkpoints of each task whose backbone weights are
identical; the runtime's joint mode recognises that and runs the backbone once per frame for both.

``freeze_instance()`` fixes the instance model (backbone and heads, BatchNorm statistics too) so that
training moves only the semantic heads: the instance outputs stay exactly those of the checkpoint it
was loaded from, and the semantic heads learn to read that backbone's features.

The backbone settings (network, pretrained weights, pixel normalisation, freezing) and the input size
live once, at the top of the config, and are written into both sub-configs, so they cannot disagree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ros_amf.contract.input_size import InputSize
from ros_amf.contract.pixels import IMAGENET, PixelNormalisation
from ros_amf.modeling.backbones.frozen import freeze
from ros_amf.modeling.semantic.model import ENCODER_OUT_STRIDE, SemanticModelConfig, build_semantic_model
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model


@dataclass
class JointModelConfig:
    instance: InstanceModelConfig = field(default_factory=InstanceModelConfig)
    semantic: SemanticModelConfig = field(default_factory=SemanticModelConfig)
    # the shared backbone (ResNet keys as in the instance config: depth, width, variants)
    backbone: Literal["resnet", "efficientnet_lite0"] = "resnet"
    backbone_depth: int = 50
    backbone_width: int = 64
    backbone_weights: str | None = None
    backbone_freeze_at: int = 0
    backbone_frozen_bn: bool = False
    pixel_normalisation: PixelNormalisation = IMAGENET
    input_size: InputSize = InputSize(384, 512)   # one input for both heads: one backbone pass

    def __post_init__(self) -> None:
        if self.semantic.architecture in ENCODER_OUT_STRIDE:
            raise ValueError(f"a shared backbone runs at output stride 32, but semantic architecture "
                             f"'{self.semantic.architecture}' needs a dilated encoder; use fpn, unet, unetplusplus, "
                             "manet or linknet as the semantic host.")
        shared = dict(backbone=self.backbone, backbone_weights=self.backbone_weights,
                      backbone_freeze_at=self.backbone_freeze_at, backbone_frozen_bn=self.backbone_frozen_bn,
                      pixel_normalisation=self.pixel_normalisation, input_size=self.input_size)
        self.instance = dataclasses.replace(self.instance, backbone_depth=self.backbone_depth,
                                            backbone_width=self.backbone_width, **shared)
        self.semantic = dataclasses.replace(self.semantic, encoder_depth=self.backbone_depth,
                                            encoder_width=self.backbone_width, **shared)


class SharedBackboneModel(nn.Module):
    """The instance model and the semantic model with one backbone between them."""

    def __init__(self, cfg: JointModelConfig):
        super().__init__()
        self.cfg = cfg
        self.instance = build_instance_model(cfg.instance)
        self.semantic = build_semantic_model(cfg.semantic)
        # the very same module in both: one set of weights, trained by both losses
        self.semantic.encoder = self.instance.backbone
        self.instance_frozen = False

    def freeze_instance(self) -> None:
        """No gradients for the backbone and the instance heads, and fixed BatchNorm statistics; in training the
        instance heads are then skipped (``out["instance"]`` is None), as nothing of theirs would learn."""
        freeze(self.instance)     # BatchNorm layers are swapped inside the backbone: the semantic model shares them
        self.instance_frozen = True

    @property
    def backbone(self) -> nn.Module:
        return self.instance.backbone

    def forward(self, images: torch.Tensor) -> dict[str, dict]:
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"input size {height}x{width} is not a multiple of 32; pad the batch "
                             "(ros_amf.runtime.preprocess does) before calling the model.")
        if self.instance_frozen:
            with torch.no_grad():
                features = self.backbone(images)
            instance = None if self.training else self.instance.heads(features)
            return {"instance": instance, "semantic": self.semantic.heads(images, features)}
        features = self.backbone(images)
        return {"instance": self.instance.heads(features), "semantic": self.semantic.heads(images, features)}


def build_joint_model(cfg: JointModelConfig) -> SharedBackboneModel:
    return SharedBackboneModel(cfg)
