"""Semantic segmentation scores: confusion matrix, IoU per class, mIoU, mIoU_S, mIoU_L.

Definitions follow cityscapesScripts' pixel-level evaluation, so on Cityscapes-layout data the
numbers are the same as ``evalPixelLevelSemanticLabeling`` on the same predictions:
* pixels whose ground truth is ignore (255, or any id >= num_classes) are not counted at all;
* IoU_k = TP / (TP + FP + FN); a class with TP + FP + FN = 0 has no IoU (NaN) and is left out of
  every average;
* mIoU is the mean of the defined IoUs; mIoU_S over the small-object classes (AFMA paper:
  Cityscapes pole, traffic light, traffic sign, person, rider, motorcycle, bicycle; CamVid sign
  symbol, pedestrian, pole, bicyclist), mIoU_L over the others.
"""
from __future__ import annotations

import math

import numpy as np


class ConfusionMatrix:
    """Rows: ground truth class, columns: predicted class; int64 pixel counts."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
        if prediction.shape != ground_truth.shape:
            raise ValueError(f"prediction {prediction.shape} and ground truth {ground_truth.shape} differ in size; "
                             "resize the prediction to the label size before scoring.")
        valid = ground_truth < self.num_classes
        gt = ground_truth[valid].astype(np.int64)
        pred = prediction[valid].astype(np.int64)
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"prediction holds class ids outside 0..{self.num_classes - 1}.")
        self.matrix += np.bincount(gt * self.num_classes + pred,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    true_positive = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, true_positive / np.maximum(denominator, 1), np.nan)


def _mean_defined(values) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def summarize(matrix: np.ndarray, class_names: list[str] | tuple[str, ...],
              small_class_ids: list[int] | tuple[int, ...]) -> dict:
    """Scores as a JSON-ready dict (NaN IoUs become None)."""
    iou = iou_per_class(matrix)
    small = set(small_class_ids)
    total = int(matrix.sum())
    return {
        "miou": _mean_defined(iou),
        "miou_small": _mean_defined([iou[k] for k in range(len(iou)) if k in small]),
        "miou_large": _mean_defined([iou[k] for k in range(len(iou)) if k not in small]),
        "pixel_accuracy": float(np.trace(matrix) / total) if total else float("nan"),
        "pixels": total,
        "per_class": {name: (None if math.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "small_classes": [class_names[k] for k in sorted(small)],
        "confusion_matrix": matrix.tolist(),
    }


def format_table(summary: dict) -> str:
    """Per-class IoU table followed by the averages, for the terminal."""
    small = set(summary["small_classes"])
    width = max(len(n) for n in summary["per_class"]) + 4
    lines = [f"{'class':<{width}}  IoU", "-" * (width + 8)]
    for name, value in summary["per_class"].items():
        shown = "  n/a" if value is None else f"{value:.3f}"
        lines.append(f"{name + (' (S)' if name in small else ''):<{width}}  {shown}")
    lines.append("-" * (width + 8))
    for key, label in (("miou", "mIoU"), ("miou_small", "mIoU_S"), ("miou_large", "mIoU_L"),
                       ("pixel_accuracy", "pixel acc")):
        lines.append(f"{label:<{width}}  {summary[key]:.3f}")
    return "\n".join(lines)
