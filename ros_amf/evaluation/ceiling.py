"""What a perfect model could score at a given input size (``ros-amf eval ceiling``): the COCO mask AP of
SparseInst (:func:`mask_ceiling`) and the mIoU of a semantic host (:func:`semantic_ceiling`).

SparseInst's mask branch works at 1/8 of the padded network input; its forward upsamples the mask logits
x2 to 1/4, post-processing upsamples the probabilities to the image and thresholds them at 0.45. An object a
few pixels wide therefore cannot be segmented at IoU >= 0.5 at a small input, whatever the training.
:func:`mask_ceiling` measures that bound on the data: each ground-truth mask is resized to the network
input and area-averaged onto the mask grid; with ``fit_steps`` the grid's logits are then fitted, per mask,
to the ground truth through that same upsampling and threshold (a trained model shapes its logits; the
plain area average is a poor guess on a 1/8 grid). The outputs go through the real post-processing
(``postprocess_instances``) and the real COCOeval (``coco_mask_ap``) with the true classes. The result
separates "the model is under-trained" (AP far below the ceiling) from "the input is too small for these
objects" (ceiling itself low). ``mask_stride=4`` asks the what-if of a mask branch at 1/4.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ros_amf.evaluation.coco_ap import coco_mask_ap, load_ground_truth, results_to_coco
from ros_amf.evaluation.miou import ConfusionMatrix, summarize
from ros_amf.modeling.sparseinst.decoder import upsample_masks
from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
from ros_amf.runtime.preprocess import InputSize, plan_geometry

MASK_STRIDE = 8  # SparseInst's mask branch: 1/8 of the padded input, upsampled x2 to 1/4 in its forward
OUTPUT_STRIDE = 4  # the grid the forward's pred_masks come out on
MASK_THRESHOLD = 0.45  # postprocess_instances' default
CERTAIN_LOGIT = 12.0  # sigmoid(12) = 0.999994: the oracle is sure of class and objectness


def oracle_outputs(gt_masks: np.ndarray, gt_classes: list[int], num_classes: int, input_size: InputSize,
                   mask_stride: int = MASK_STRIDE, fit_steps: int = 0
                   ) -> tuple[dict[str, torch.Tensor], tuple[int, int], tuple[int, int]]:
    """Model-shaped outputs of a perfect predictor for one image.

    gt_masks: [N, H, W] 0/1 at the original size. The mask logits live on the 1/``mask_stride`` grid and
    reach the 1/4 grid the way the model's do. Returns (outputs, valid input hw, original hw) ready for
    ``postprocess_instances``."""
    n, height, width = gt_masks.shape
    geometry = plan_geometry(height, width, input_size)
    (rh, rw), (ph, pw) = geometry.resized_hw, geometry.padded_hw
    masks = torch.from_numpy(gt_masks.astype(np.float32))[:, None]
    # antialias: a downscaled mask keeps its area as fractional coverage, as the image does
    resized = F.interpolate(masks, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    padded = F.pad(resized, (0, pw - rw, 0, ph - rh))
    grid = torch.logit(F.avg_pool2d(padded, mask_stride).clamp(1e-6, 1 - 1e-6))
    if fit_steps > 0:
        grid = fit_mask_logits(grid, masks[:, 0], (rh, rw), mask_stride, fit_steps)
    logits = torch.full((1, n, num_classes), -CERTAIN_LOGIT)
    logits[0, torch.arange(n), torch.as_tensor(gt_classes, dtype=torch.long)] = CERTAIN_LOGIT
    outputs = {"pred_logits": logits, "pred_masks": to_output_grid(grid, mask_stride)[:, 0][None],
               "pred_scores": torch.full((1, n, 1), CERTAIN_LOGIT)}
    return outputs, (rh, rw), (height, width)


def to_output_grid(grid: torch.Tensor, mask_stride: int) -> torch.Tensor:
    """[N,1,h,w] mask logits on the 1/``mask_stride`` grid -> the 1/4 grid, as the model's forward does it."""
    return grid if mask_stride == OUTPUT_STRIDE else upsample_masks(grid, mask_stride / OUTPUT_STRIDE)


def fit_mask_logits(grid: torch.Tensor, targets: torch.Tensor, valid_hw: tuple[int, int], mask_stride: int,
                    steps: int) -> torch.Tensor:
    """The mask-grid logits whose post-processed masks best cover ``targets`` ([N, H, W] 0/1, original size):
    Adam on a soft IoU through the same upsampling, crop, resize and 0.45 threshold as post-processing."""
    (rh, rw), (height, width) = valid_hw, targets.shape[-2:]
    padded_hw = (grid.shape[-2] * mask_stride, grid.shape[-1] * mask_stride)
    logits = grid.clamp(-6.0, 6.0).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=0.3)
    with torch.enable_grad():
        for _ in range(steps):
            probs = torch.sigmoid(to_output_grid(logits, mask_stride))
            probs = F.interpolate(probs, size=padded_hw, mode="bilinear", align_corners=False)[:, :, :rh, :rw]
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            kept = torch.sigmoid(20.0 * (probs - MASK_THRESHOLD))     # a soft stand-in for the threshold
            overlap = (kept * targets).flatten(1).sum(1)
            union = (kept + targets - kept * targets).flatten(1).sum(1).clamp(min=1.0)
            loss = (1.0 - overlap / union).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return logits.detach()


def mask_ceiling(annotation_json: str | Path, input_size: InputSize, limit: int | None = None,
                 mask_stride: int = MASK_STRIDE, fit_steps: int = 0) -> dict[str, Any]:
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
        outputs, valid_hw, original_hw = oracle_outputs(masks, classes, len(category_ids), input_size,
                                                        mask_stride, fit_steps)
        result = postprocess_instances(outputs, valid_hw, original_hw, max_instances=len(annotations))[0]
        detections += results_to_coco(result, image_id, category_ids)
        instances += len(annotations)
    metrics = coco_mask_ap(ground_truth, detections, image_ids)
    return {"input": {"short_side": input_size.short_side, "max_long_side": input_size.max_long_side},
            "mask_stride": mask_stride, "fit_steps": fit_steps,
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
