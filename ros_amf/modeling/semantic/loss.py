"""Semantic training loss (AFMA paper Sec. 3.5): 5 · class-weighted NLL + MSE(A, gold A).

* Segmentation term (Eq. 22): NLL on log-softmax of the (AFMA-modulated) logits, weighted by
  median-frequency balancing (SegNet): w_k = median_c(f_c) / f_k, where f_k = pixels of class k
  / pixels of the training images that contain class k. The weights come from the training
  labels (``median_frequency_weights``), never hard-coded.
* AFMA term (Eq. 23): mean over B·C·L_full·L_down of (A - G)², G the gold AFMA (Eq. 19-21).
  With A = I Fᵀ/p² and G = U Vᵀ/p² the sum of squares is
      ‖A‖² - 2⟨A, G⟩ + ‖G‖² = Σ (IᵀI ∘ FᵀF) - 2 Σ (IᵀU ∘ FᵀV) + Σ (UᵀU ∘ VᵀV)  (all / p⁴),
  products of p² x p² Gram matrices, so neither A nor G is ever built. The Grams are summed
  in float64 because the three terms nearly cancel once A is close to G.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ros_amf.modeling.semantic.afma import AfmaFactors, one_hot_maps, pad_to, patchify, work_budget

IGNORE_INDEX = 255
SEGMENTATION_WEIGHT = 5.0  # the paper's weight of the segmentation term (Eq. 24)


def class_pixel_histogram(labels: Iterable[np.ndarray], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixel count, and pixel count of the images in which the class appears."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for label in labels:
        counts = np.bincount(np.asarray(label).ravel(), minlength=256)[:num_classes]
        valid = int(counts.sum())
        pixels += counts
        image_pixels += np.where(counts > 0, valid, 0)
    return pixels, image_pixels


def median_frequency_weights(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """w_k = median(f) / f_k over classes present in training; absent classes get 0 (they never occur)."""
    present = pixels > 0
    if not present.any():
        raise ValueError("the training labels contain no pixel of any class; check the dataset's label files.")
    frequency = np.zeros(len(pixels), dtype=np.float64)
    frequency[present] = pixels[present] / image_pixels[present]
    weights = np.zeros(len(pixels), dtype=np.float64)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights


def gold_factors(labels: torch.Tensor, num_classes: int, patch_size: int, depth: int,
                 padded_hw: tuple[int, int], budget: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """U (one-hot patches) and V (2^d-pooled one-hot patches): gold A = U Vᵀ / p² (Eq. 19-21).

    The padded one-hot of all classes is built at once when it fits the device's work budget (a
    handful of ops, all classes in one kernel each), else one class at a time. ``budget`` overrides
    ``work_budget(device)``."""
    padded_h, padded_w = padded_hw
    dtype = torch.get_default_dtype()
    batch = labels.shape[0]
    budget = work_budget(labels.device) if budget is None else budget
    chunk = num_classes if batch * num_classes * padded_h * padded_w <= budget else 1
    pieces = [pad_to(one_hot_maps(labels, first, min(first + chunk, num_classes), dtype), padded_h, padded_w)
              for first in range(0, num_classes, chunk)]
    onehot = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
    pooled = F.avg_pool2d(onehot, 2 ** depth) if depth > 0 else onehot
    return patchify(onehot, patch_size), patchify(pooled, patch_size)


def afma_mse(factors: AfmaFactors, labels: torch.Tensor) -> torch.Tensor:
    """mean((A - gold A)²) from p² x p² Gram matrices (see module docstring)."""
    image, feature = factors.image_patches, factors.feature_patches
    batch, classes, rows, area = image.shape
    gold_image, gold_feature = gold_factors(labels, classes, factors.patch_size, factors.stride_depth,
                                            factors.padded_hw)
    image, feature = image.double(), feature.double()
    gold_image, gold_feature = gold_image.to(image), gold_feature.to(image)

    def gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.transpose(-1, -2) @ b

    squares = (gram(image, image) * gram(feature, feature)).sum()
    cross = (gram(image, gold_image) * gram(feature, gold_feature)).sum()
    gold_squares = (gram(gold_image, gold_image) * gram(gold_feature, gold_feature)).sum()
    total = (squares - 2 * cross + gold_squares).clamp_min(0) / area ** 2
    count = batch * classes * rows * feature.shape[-2]
    return (total / count).to(factors.image_patches.dtype)


class SemanticLoss(nn.Module):
    """5 · weighted NLL(log-softmax(logits)) + MSE(A, gold A) when the model has AFMA (Eq. 22-24)."""

    def __init__(self, class_weights: torch.Tensor | np.ndarray | None, num_classes: int,
                 segmentation_weight: float = SEGMENTATION_WEIGHT, afma_weight: float = 1.0):
        super().__init__()
        weights = torch.ones(num_classes) if class_weights is None else torch.as_tensor(class_weights)
        if weights.shape != (num_classes,):
            raise ValueError(f"class_weights has {tuple(weights.shape)} entries but the model predicts "
                             f"{num_classes} classes; compute the weights from the same dataset.")
        self.register_buffer("class_weights", weights.float())
        self.segmentation_weight = segmentation_weight
        self.afma_weight = afma_weight

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        log_probs = F.log_softmax(logits.float(), dim=1)
        nll = F.nll_loss(log_probs, labels.long(), weight=self.class_weights.to(log_probs), ignore_index=IGNORE_INDEX)
        terms = {"loss_nll": self.segmentation_weight * nll}
        if outputs.get("afma") is not None:
            terms["loss_afma"] = self.afma_weight * afma_mse(outputs["afma"], labels)
        terms["loss"] = sum(terms.values())
        return terms
