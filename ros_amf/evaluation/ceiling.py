"""What a perfect model could score at a given input size (``ros-amf eval ceiling``): the COCO mask AP of
SparseInst (:func:`mask_ceiling`) and the mIoU of a semantic host (:func:`semantic_ceiling`).

SparseInst predicts masks at 1/4 of the padded network input, and post-processing upsamples them
bilinearly and thresholds at 0.45. An object a few pixels wide therefore cannot be segmented at
IoU >= 0.5 at a small input, whatever the training. :func:`mask_ceiling` measures that bound on the data:
each ground-truth mask is resized to the network input, area-averaged onto the 1/4 grid (the best
soft mask that grid can hold), turned into logits, and sent through the real post-processing
(``postprocess_instances``) and the real COCOeval (``coco_mask_ap``) with its true class. The
result separates "the model is under-trained" (AP far below the ceiling) from "the input is too
small for these objects" (ceiling itself low).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ros_amf.evaluation.coco_ap import coco_mask_ap, load_ground_truth, results_to_coco
from ros_amf.evaluation.miou import ConfusionMatrix, summarize
from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
from ros_amf.runtime.preprocess import InputSize, plan_geometry

MASK_STRIDE = 4  # SparseInst's masks are at 1/4 of the padded input
CERTAIN_LOGIT = 12.0  # sigmoid(12) = 0.999994: the oracle is sure of class and objectness


def oracle_outputs(gt_masks: np.ndarray, gt_classes: list[int], num_classes: int, input_size: InputSize
                   ) -> tuple[dict[str, torch.Tensor], tuple[int, int], tuple[int, int]]:
    """Model-shaped outputs of a perfect predictor for one image.

    gt_masks: [N, H, W] 0/1 at the original size. Returns (outputs, valid input hw, original hw) ready
    for ``postprocess_instances``."""
    n, height, width = gt_masks.shape
    geometry = plan_geometry(height, width, input_size)
    (rh, rw), (ph, pw) = geometry.resized_hw, geometry.padded_hw
    masks = torch.from_numpy(gt_masks.astype(np.float32))[:, None]
    # antialias: a downscaled mask keeps its area as fractional coverage, as the image does
    resized = F.interpolate(masks, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    padded = F.pad(resized, (0, pw - rw, 0, ph - rh))
    coverage = F.avg_pool2d(padded, MASK_STRIDE)[:, 0].clamp(1e-6, 1 - 1e-6)
    logits = torch.full((1, n, num_classes), -CERTAIN_LOGIT)
    logits[0, torch.arange(n), torch.as_tensor(gt_classes, dtype=torch.long)] = CERTAIN_LOGIT
    outputs = {"pred_logits": logits, "pred_masks": torch.logit(coverage)[None],
               "pred_scores": torch.full((1, n, 1), CERTAIN_LOGIT)}
    return outputs, (rh, rw), (height, width)


def mask_ceiling(annotation_json: str | Path, input_size: InputSize, limit: int | None = None) -> dict[str, Any]:
    """COCO mask AP of the oracle predictor at ``input_size`` over the (first ``limit``) annotated images."""
    ground_truth = load_ground_truth(str(annotation_json))
    category_ids = sorted(ground_truth.getCatIds())
    class_of = {cat: k for k, cat in enumerate(category_ids)}
    image_ids = sorted(ground_truth.getImgIds())[:limit]
    detections, instances = [], 0
    for image_id in image_ids:
        annotations = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_id, iscrowd=False))
        if not annotations:
            continue
        masks = np.stack([ground_truth.annToMask(a) for a in annotations])
        classes = [class_of[a["category_id"]] for a in annotations]
        outputs, valid_hw, original_hw = oracle_outputs(masks, classes, len(category_ids), input_size)
        result = postprocess_instances(outputs, valid_hw, original_hw, max_instances=len(annotations))[0]
        detections += results_to_coco(result, image_id, category_ids)
        instances += len(annotations)
    metrics = coco_mask_ap(ground_truth, detections, image_ids)
    return {"input": {"short_side": input_size.short_side, "max_long_side": input_size.max_long_side},
            "images": len(image_ids), "instances": instances, "metrics": metrics}


SEMANTIC_STRIDE = 4  # FPN / Unet-family hosts predict at 1/4 of the padded input (the dilated ones at 1/8)


def oracle_label_map(label: np.ndarray, num_classes: int, input_size: InputSize,
                     stride: int = SEMANTIC_STRIDE) -> np.ndarray:
    """The train-id map [H, W] a perfect, calibrated semantic model predicts at ``input_size``.

    Its logits on the 1/``stride`` grid are the log of each class's area share of the cell (the
    softmax a perfectly calibrated model outputs there); they are then scored exactly like a model's:
    bilinear up to the input, the valid region resized to the label size, arg-max. Ignore pixels
    (ids >= num_classes) belong to no class; a cell of them alone predicts class 0, and is not scored."""
    height, width = label.shape
    geometry = plan_geometry(height, width, input_size)
    (rh, rw), (ph, pw) = geometry.resized_hw, geometry.padded_hw
    ids = torch.from_numpy(label.astype(np.int64)).clamp(max=num_classes)   # every ignore id -> one extra class
    one_hot = F.one_hot(ids, num_classes + 1)[..., :num_classes].permute(2, 0, 1).float()
    resized = F.interpolate(one_hot[None], size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    share = F.avg_pool2d(F.pad(resized, (0, pw - rw, 0, ph - rh)), stride)
    logits = F.interpolate(torch.log(share.clamp_min(1e-6)), size=(ph, pw), mode="bilinear", align_corners=False)
    logits = F.interpolate(logits[..., :rh, :rw], size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy()


def semantic_ceiling(dataset, input_size: InputSize, small_ids, limit: int = 0,
                     stride: int = SEMANTIC_STRIDE) -> dict[str, Any]:
    """mIoU / mIoU_S / mIoU_L of the oracle over the first ``limit`` (0 = all) images of a semantic data set."""
    num_classes = len(dataset.class_names)
    matrix = ConfusionMatrix(num_classes)
    count = len(dataset) if not limit else min(limit, len(dataset))
    for index in range(count):
        label = np.asarray(dataset[index]["label"])
        matrix.update(oracle_label_map(label, num_classes, input_size, stride), label)
    summary = summarize(matrix.matrix, list(dataset.class_names), small_ids)
    summary.pop("confusion_matrix")
    return {"input": {"short_side": input_size.short_side, "max_long_side": input_size.max_long_side},
            "images": count, "stride": stride, "metrics": summary}
