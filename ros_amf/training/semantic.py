"""What semantic segmentation (a host network, FPN / DeepLabV3 / U-Net / PSPNet, with or without
AFMA) brings to the training loop.

Loss: 5 · median-frequency weighted NLL + MSE(A, gold A) (AFMA paper Eq. 22-24); the class
weights are counted from the training labels when the task is made and stored in every
checkpoint. :class:`SemanticTrainConfig` holds the authors' recipe as the ``train:`` defaults;
``RECIPES`` are the two optimiser settings ``--recipe`` picks (``sgd``: the paper, ``adam``: the
authors' code). Validation is mIoU at the model config's ``input_size``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ros_amf.contract.config import ConfigError
from ros_amf.evaluation.semantic import evaluate
from ros_amf.modeling.semantic.loss import SemanticLoss, class_pixel_histogram, median_frequency_weights
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
from ros_amf.training.config import TrainConfig
from ros_amf.training.fit import LossFn

RECIPES: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 5e-4},   # paper: momentum 0.9, wd 5e-4, lr 1e-3
    "adam": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},  # authors' code: Adam 1e-4
}


@dataclass
class SemanticTrainConfig(TrainConfig):
    """``train:`` defaults of the semantic models: the authors' code (Adam 1e-4, 50 epochs), images
    resized to short side 240 x random 0.5-2.0, random 256x320 crops, horizontal flip."""
    optimizer: Literal["adamw", "adam", "sgd"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_iters: int = 0
    epochs: float = 50.0
    warmup_iters: int = 0
    milestones: tuple[int, ...] = ()
    min_sizes: tuple[int, ...] = (240,)
    max_size: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    crop: tuple[int, int] | None = (256, 320)
    checkpoint_every: int = 100
    log_every: int = 10
    workers: int = 0


def class_weights_from(dataset) -> tuple[np.ndarray, dict[str, Any]]:
    """Median-frequency class weights of the training labels, and the histogram behind them."""
    pixels, image_pixels = class_pixel_histogram((dataset.load_label(i) for i in range(len(dataset))),
                                                 len(dataset.class_names))
    weights = median_frequency_weights(pixels, image_pixels)
    absent = [name for name, count in zip(dataset.class_names, pixels) if count == 0]
    return weights, {"class_pixels": pixels.tolist(), "absent_classes": absent}


class SemanticTask:
    """A semantic model on a Cityscapes / CamVid reader; ``val_set`` (same classes) or None."""

    name = "semantic"

    def __init__(self, model_config: SemanticModelConfig, train_set, val_set=None, small_ids=()):
        if len(train_set.class_names) != model_config.num_classes:
            raise ConfigError(f"the model config has num_classes {model_config.num_classes} but the training data "
                              f"has {len(train_set.class_names)} classes; set num_classes: "
                              f"{len(train_set.class_names)}.")
        self.model_config, self.train_set, self.val_set = model_config, train_set, val_set
        self.class_names, self.small_ids = list(train_set.class_names), list(small_ids)
        self.class_weights, self.histogram = class_weights_from(train_set)

    def build_model(self) -> nn.Module:
        return build_semantic_model(self.model_config)

    def make_loss(self, device: torch.device) -> LossFn:
        criterion = SemanticLoss(self.class_weights, self.model_config.num_classes).to(device)
        # in float32/64 outside autocast (the Gram sums need it)
        return lambda outputs, batch: criterion(outputs, batch["labels"].to(device, non_blocking=True))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        if self.val_set is None:
            return None
        was_training = model.training
        model.eval()
        summary = evaluate(model, self.val_set, self.model_config.input_size, self.small_ids, device=device)
        model.train(was_training)
        return summary

    def export_meta(self) -> dict[str, Any]:
        return {"class_weights": self.class_weights.tolist(), **self.histogram}
