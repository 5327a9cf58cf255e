"""COCO mask AP and per-image model latency of an instance model (``ros-amf eval instance``).

Each image is pre-processed exactly like the runtime (ros_amf.runtime.preprocess), the model output
post-processed to the original size, and the detections returned in COCO results form (RLE masks)
next to the metrics.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import torch

from ros_amf.contract.checkpoint import load_state_into
from ros_amf.contract.config import from_dict
from ros_amf.evaluation.coco_ap import coco_mask_breakdown, load_ground_truth, mask_confusion, results_to_coco
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
from ros_amf.runtime.loading import pixels_of, read_checkpoint
from ros_amf.runtime.preprocess import InputSize, preprocess_numpy


def category_ids_for(class_names: list[str], ground_truth) -> list[int]:
    """COCO category id of each contiguous class, matched by name."""
    by_name = {c["name"]: c["id"] for c in ground_truth.loadCats(ground_truth.getCatIds())}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ValueError(f"classes {missing} of the model are not categories of the annotation file; "
                         "evaluate on data with the same class names.")
    return [by_name[n] for n in class_names]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, class_names: list[str], annotation_json: str | Path, image_dir: str | Path,
                   input_size: InputSize, device: torch.device | str = "cpu", limit: int | None = None,
                   score_threshold: float = 0.005, mask_threshold: float = 0.45,
                   labels_per_mask: int = 1) -> dict[str, Any]:
    """Run ``model`` over the annotated images; returns metrics, latency and the COCO detections."""
    ground_truth = load_ground_truth(str(annotation_json))
    category_ids = category_ids_for(class_names, ground_truth)
    image_ids = sorted(ground_truth.getImgIds())[:limit]
    was_training = model.training
    model.eval()
    detections, latencies, skipped = [], [], []
    for image_id in image_ids:
        info = ground_truth.loadImgs(image_id)[0]
        path = Path(image_dir) / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append(str(path))
            continue
        tensor, geometry = preprocess_numpy(image, "bgr8", input_size, pixels=pixels_of(model))
        tensor = tensor.to(device)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = model(tensor)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        latencies.append((time.perf_counter() - start) * 1000)
        result = postprocess_instances(outputs, geometry.resized_hw, geometry.original_hw,
                                       score_threshold=score_threshold, mask_threshold=mask_threshold,
                                       labels_per_mask=labels_per_mask)[0]
        detections += results_to_coco(result, image_id, category_ids)
    model.train(was_training)
    evaluated = [i for i in image_ids if str(Path(image_dir) / ground_truth.loadImgs(i)[0]["file_name"]) not in skipped]
    breakdown = {"metrics": {}}
    if evaluated:
        breakdown = coco_mask_breakdown(ground_truth, detections, evaluated)
        breakdown["confusion_iou50"] = mask_confusion(ground_truth, detections, evaluated)
    return {**breakdown, "images": len(evaluated), "skipped_images": skipped,
            "latency_ms_mean": statistics.fmean(latencies) if latencies else None,
            "latency_ms_median": statistics.median(latencies) if latencies else None,
            "detections": detections}


def load_instance_model(checkpoint: str | Path) -> tuple[torch.nn.Module, InstanceModelConfig, list[str]]:
    """Model in eval mode, its config and class names, from a training or shipped checkpoint."""
    payload = read_checkpoint(checkpoint, "instance")    # ours, or a published SparseInst .pth
    cfg = from_dict(InstanceModelConfig, payload["model_config"], where=f"{checkpoint}:model_config")
    model = build_instance_model(cfg)
    load_state_into(model, payload, checkpoint)
    return model.eval(), cfg, payload["class_names"]
