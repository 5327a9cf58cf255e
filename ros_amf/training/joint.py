"""What the shared-backbone model (``modeling.joint``) brings to the training loop.

One backbone pass per batch feeds both heads; the loss is the SparseInst loss plus
``semantic_weight`` x the semantic loss (AFMA paper Eq. 22-24, median-frequency class weights counted
from the training labels). The data are instance and semantic annotations of the same images
(``data.datasets.paired``). Training can start from two trained single-task checkpoints
(``init_parts``): the semantic one first, then the instance one, whose backbone is the one kept.
``freeze_instance`` keeps that instance model exactly as trained and fits only the semantic heads to
its backbone: the instance head cannot lose accuracy, and an iteration costs about half.
At the end, ``export_parts`` writes an ordinary instance and an ordinary semantic checkpoint with
identical backbones, which every tool loads as usual and the node's joint mode runs in one pass.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ros_amf.contract.checkpoint import load_checkpoint, load_state_into, save_checkpoint, sha256_of
from ros_amf.contract.config import to_dict
from ros_amf.evaluation.instance import evaluate_model
from ros_amf.evaluation.semantic import evaluate
from ros_amf.modeling.joint import JointModelConfig, SharedBackboneModel, build_joint_model
from ros_amf.modeling.semantic.loss import SemanticLoss
from ros_amf.modeling.semantic.model import clear_logit_biases
from ros_amf.modeling.sparseinst.loss import SparseInstLoss
from ros_amf.training.fit import LossFn, stored_pixels
from ros_amf.training.semantic import class_weights_from


class JointTask:
    """Both heads on paired samples; ``val`` = COCO (annotations, images) and/or a semantic val set."""

    name = "joint"

    def __init__(self, model_config: JointModelConfig, train_set, val: tuple[Path, Path] | None = None,
                 val_set=None, small_ids=(), semantic_weight: float = 1.0,
                 init_parts: tuple[str | Path, str | Path] | None = None, freeze_instance: bool = False):
        if freeze_instance and init_parts is None:
            raise ValueError("freezing the instance model needs a trained one; pass --init-instance and "
                             "--init-semantic with --freeze-instance.")
        self.freeze_instance = freeze_instance
        if len(train_set.class_names) != model_config.semantic.num_classes:
            raise ValueError(f"the joint config's semantic head has num_classes {model_config.semantic.num_classes} "
                             f"but the training labels have {len(train_set.class_names)} classes; set "
                             f"semantic.num_classes: {len(train_set.class_names)}.")
        instance_cfg = dataclasses.replace(model_config.instance, num_classes=len(train_set.instance_class_names))
        self.model_config = dataclasses.replace(model_config, instance=instance_cfg)
        self.init_parts = init_parts
        if init_parts is not None:
            # trained weights replace the ImageNet start, and their pixel normalisation is the one to keep
            pixels = (stored_pixels(load_checkpoint(init_parts[0], task="instance"))
                      or self.model_config.pixel_normalisation)
            self.model_config = dataclasses.replace(self.model_config, backbone_weights=None,
                                                    pixel_normalisation=pixels)
        self.train_set, self.val, self.val_set = train_set, val, val_set
        self.class_names = list(train_set.instance_class_names)      # the instance head's classes
        self.semantic_class_names = list(train_set.class_names)
        self.small_ids, self.semantic_weight = list(small_ids), float(semantic_weight)
        self.class_weights, self.histogram = class_weights_from(train_set)

    def build_model(self) -> nn.Module:
        model = build_joint_model(self.model_config)
        if self.init_parts is not None:
            instance_path, semantic_path = self.init_parts
            # semantic first: loading it also writes the shared backbone, which the instance weights then replace
            load_state_into(model.semantic, load_checkpoint(semantic_path, task="semantic"), semantic_path)
            load_state_into(model.instance, load_checkpoint(instance_path, task="instance"), instance_path)
            clear_logit_biases(model)
        if self.freeze_instance:
            model.freeze_instance()
        return model

    def make_loss(self, device: torch.device) -> LossFn:
        instance_loss = SparseInstLoss(len(self.class_names))
        semantic_loss = SemanticLoss(self.class_weights, self.model_config.semantic.num_classes).to(device)

        def loss(outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
            sem = semantic_loss(outputs["semantic"], batch["labels"].to(device, non_blocking=True))
            terms = {f"semantic_{k}": v for k, v in sem.items()}
            if outputs["instance"] is None:      # instance model frozen: the semantic heads alone learn
                terms["loss"] = sem["loss"]
                return terms
            targets = [{"masks": m, "classes": c} for m, c in zip(batch["masks"], batch["classes"])]
            inst = instance_loss(outputs["instance"], targets)
            terms |= {f"instance_{k}": v for k, v in inst.items()}
            terms["loss"] = inst["loss"] + self.semantic_weight * sem["loss"]
            return terms

        return loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        results: dict[str, Any] = {}
        if self.val is not None:
            report = evaluate_model(model.instance, self.class_names, *self.val, self.model_config.input_size, device)
            results["instance"] = {k: v for k, v in report.items() if k != "detections"}
        if self.val_set is not None:
            was_training = model.training
            model.eval()
            results["semantic"] = evaluate(model.semantic, self.val_set, self.model_config.input_size,
                                           self.small_ids, device=device)
            model.train(was_training)
        return results or None

    def export_meta(self) -> dict[str, Any]:
        return {"class_weights": self.class_weights.tolist(), "semantic_class_names": self.semantic_class_names,
                **self.histogram}


def export_parts(model: SharedBackboneModel, task: JointTask, out_dir: str | Path, stem: str,
                 meta: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """OUT/<stem>_instance.pt and OUT/<stem>_semantic.pt (fp16, with .sha256): ordinary checkpoints of each
    task whose backbone weights are identical, so the runtime's joint mode runs the backbone once."""
    out_dir, meta = Path(out_dir), {**(meta or {}), "shared_backbone": True}
    parts = (("instance", model.instance, task.model_config.instance, task.class_names, {}),
             ("semantic", model.semantic, task.model_config.semantic, task.semantic_class_names,
              {"class_weights": task.class_weights.tolist()}))
    written = []
    for name, module, cfg, class_names, extra in parts:
        path = out_dir / f"{stem}_{name}.pt"
        save_checkpoint(path, task=name, model_config=to_dict(cfg), class_names=list(class_names),
                        state_dict=module.state_dict(), half=True, meta={**meta, **extra})
        path.with_suffix(".sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
        written.append(path)
    return written[0], written[1]
