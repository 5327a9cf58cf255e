"""What instance segmentation (SparseInst / AMF-SparseInst) brings to the training loop.

The run YAML has a ``model:`` section (InstanceModelConfig) and a ``train:`` section
(``training.config.TrainConfig``, whose defaults are the paper's recipe: AdamW lr 5e-5, wd 0.05
without decay on norms, linear warm-up then step decay, multi-scale short side 416..640). The
model's ``num_classes`` is taken from the data set; validation is COCO mask AP at the model
config's ``input_size``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ros_amf.evaluation.instance import evaluate_model
from ros_amf.modeling.sparseinst.loss import SparseInstLoss
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.training.fit import LossFn

FORMATS = ("coco", "cityscapes")


def open_dataset(fmt: str, root: str | Path, split: str):
    """The data helper's readers; returns (dataset, class names of its contiguous instance ids)."""
    if fmt == "coco":
        from ros_amf.data.datasets.coco import CocoInstances
        dataset = CocoInstances(Path(root) / "images" / split, Path(root) / "annotations" / f"instances_{split}.json")
        return dataset, list(dataset.class_names)
    if fmt == "cityscapes":
        from ros_amf.data.datasets.cityscapes import CityscapesDataset
        dataset = CityscapesDataset(root, split, instances=True)
        return dataset, list(dataset.instance_class_names)
    raise ValueError(f"data format '{fmt}' is unknown; use one of {', '.join(FORMATS)}.")


def open_coco_files(annotations: str | Path, images: str | Path):
    """Any COCO instances JSON and its image folder (file_name may hold sub-folders)."""
    from ros_amf.data.datasets.coco import CocoInstances
    dataset = CocoInstances(images, annotations)
    return dataset, list(dataset.class_names)


def coco_validation_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of a COCO-layout split; checked now, not after training."""
    annotations = Path(root) / "annotations" / f"instances_{split}.json"
    if not annotations.is_file():
        raise FileNotFoundError(f"validation split '{split}': '{annotations}' is missing; "
                                "pass --val-split '' to train without validation.")
    return annotations, Path(root) / "images" / split


class InstanceTask:
    """SparseInst on a reader of instance samples; ``val`` = COCO (annotations, images) or None."""

    name = "instance"

    def __init__(self, model_config: InstanceModelConfig, train_set, class_names: list[str],
                 val: tuple[Path, Path] | None = None):
        self.model_config = dataclasses.replace(model_config, num_classes=len(class_names))
        self.train_set, self.class_names, self.val = train_set, list(class_names), val

    def build_model(self) -> nn.Module:
        return build_instance_model(self.model_config)

    def make_loss(self, device: torch.device) -> LossFn:
        criterion = SparseInstLoss(len(self.class_names))

        def loss(outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
            targets = [{"masks": m, "classes": c} for m, c in zip(batch["masks"], batch["classes"])]
            return criterion(outputs, targets)

        return loss

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        if self.val is None:
            return None
        annotations, images = self.val
        report = evaluate_model(model, self.class_names, annotations, images, self.model_config.input_size, device)
        return {k: v for k, v in report.items() if k != "detections"}

    def export_meta(self) -> dict[str, Any]:
        return {}
