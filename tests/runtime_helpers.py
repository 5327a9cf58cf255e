"""Models for runtime tests: real tiny model configs, and scripted modules with known outputs.

The scripted modules honour the instance/semantic output contracts exactly but produce outputs
chosen by the test (known masks, NaN, a delay), so stage logic can be checked against known answers.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ros_amf.contract.config import from_dict
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
from ros_amf.runtime.loading import LoadedModel

# written as a model YAML file says them (tests dump them to config files); tiny_config() types them
TINY_INSTANCE = dict(num_classes=3, backbone_depth=18, backbone_width=8, encoder_channels=16, decoder_channels=16,
                     decoder_convs=1, num_masks=8, groups=2, expand_dim=16, kernel_dim=8, head_norm="gn",
                     input_size={"short_side": 64, "max_long_side": 96})
TINY_SEMANTIC = dict(num_classes=4, encoder_depth=18, encoder_width=8, decoder_channels=16, afma=False,
                     input_size={"short_side": 64, "max_long_side": 96})


def tiny_config(task: str, **overrides):
    """The config dataclass of the tiny model of ``task``, built the way a YAML file is loaded."""
    if task == "instance":
        return from_dict(InstanceModelConfig, {**TINY_INSTANCE, **overrides}, where="TINY_INSTANCE")
    return from_dict(SemanticModelConfig, {**TINY_SEMANTIC, **overrides}, where="TINY_SEMANTIC")


def tiny_instance(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = tiny_config("instance")
    module = build_instance_model(cfg).eval()
    return LoadedModel("instance", "tiny_instance", module, ["car", "person", "bicycle"], input_size=cfg.input_size)


def tiny_semantic(seed: int = 0, **overrides) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = tiny_config("semantic", **overrides)
    module = build_semantic_model(cfg).eval()
    return LoadedModel("semantic", "tiny_semantic", module, ["road", "building", "car", "person"],
                       input_size=cfg.input_size)


class ScriptedInstanceModel(nn.Module):
    """Emits the given boxes (in padded-input pixels) as confident masks of the given classes and scores."""

    def __init__(self, boxes: list[tuple[int, int, int, int]], classes: list[int], scores: list[float],
                 num_classes: int = 3, delay_s: float = 0.0, fill: float | None = None):
        super().__init__()
        self.boxes, self.classes, self.scores = boxes, classes, scores
        self.num_classes, self.delay_s, self.fill = num_classes, delay_s, fill
        self.anchor = nn.Parameter(torch.zeros(1))   # so .to(device, dtype) has something to move

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.delay_s:
            time.sleep(self.delay_s)
        _, _, height, width = images.shape
        n = len(self.boxes)
        logits = torch.full((1, n, self.num_classes), -20.0)
        masks = torch.full((1, n, height // 4, width // 4), -20.0)
        objectness = torch.full((1, n, 1), 20.0)
        for i, ((x0, y0, x1, y1), cls, score) in enumerate(zip(self.boxes, self.classes, self.scores)):
            # sqrt(sigmoid(l) * sigmoid(20)) ~= score  ->  l = logit(score^2)
            logits[0, i, cls] = torch.logit(torch.tensor(score ** 2))
            masks[0, i, y0 // 4:y1 // 4, x0 // 4:x1 // 4] = 20.0
        if self.fill is not None:
            logits.fill_(self.fill)
        return {"pred_logits": logits.to(images), "pred_masks": masks.to(images),
                "pred_scores": objectness.to(images)}


class ScriptedSemanticModel(nn.Module):
    """Class = column band of the padded input (left third 0, middle 1, right 2); optional NaN."""

    def __init__(self, num_classes: int = 3, nan: bool = False):
        super().__init__()
        self.num_classes, self.nan = num_classes, nan
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _, _, height, width = images.shape
        logits = torch.zeros(1, self.num_classes, height, width)
        for c in range(3):
            logits[0, c, :, c * width // 3:(c + 1) * width // 3] = 10.0
        if self.nan:
            logits[0, 0, 0, 0] = float("nan")
        return {"logits": logits.to(images)}


def scripted(task: str, module: nn.Module, names: list[str] | None = None) -> LoadedModel:
    names = names or (["car", "person", "bicycle"] if task == "instance" else ["a", "b", "c"])
    return LoadedModel(task, f"scripted_{task}", module, names)
