"""Class-prior correction of a semantic model trained with class-weighted NLL (``ros-amf calibrate semantic``).

The AFMA paper trains with NLL weighted by median-frequency balancing (Eq. 22, w_k = median(f) / f_k).
A weighted NLL is minimised by a softmax proportional to w_k · p(k | x), not by p(k | x): the rare,
heavily weighted classes (pole, traffic light, rider) win pixels they should not. On the synthetic
splits the shipped model finds 95-100 % of every small class's pixels at 43-76 % precision.
Adding b_k = -alpha · log w_k to the logits at inference divides that factor out again: alpha = 1
restores p(k | x) exactly (in the limit of a perfectly fitted model), alpha < 1 keeps part of the push
towards the rare classes. alpha is chosen on a validation split by mIoU (:func:`score_alphas`) and
stored in the checkpoint as the model's ``logit_bias`` buffer, which every inference path (runtime,
eval, ONNX / OpenVINO export) adds and training ignores. A class absent from the training labels
(weight 0) is given the offset of the rarest class, so it is not promoted.
"""
from __future__ import annotations

import numpy as np
import torch

from ros_amf.evaluation.miou import ConfusionMatrix, summarize
from ros_amf.evaluation.semantic import logits_at_image_size
from ros_amf.runtime.preprocess import InputSize

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)   # the corrections scored unless told otherwise


def prior_bias(class_weights, alpha: float) -> np.ndarray:
    """b_k = -alpha · log w_k; weight-0 (absent) classes take the rarest class's offset."""
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.ndim != 1 or not (weights > 0).any() or (weights < 0).any():
        raise ValueError("class weights must be one non-negative number per class, some of them above 0.")
    log_w = np.log(np.where(weights > 0, weights, 1.0))
    log_w[weights == 0] = log_w[weights > 0].max()
    return -alpha * log_w


def recorded_class_weights(payload: dict, num_classes: int, checkpoint) -> list[float]:
    """The training class weights a checkpoint records (meta.class_weights), or one sentence why it has none
    usable: only a model trained with the class-weighted loss has a class prior to correct."""
    weights = (payload.get("meta") or {}).get("class_weights")
    if weights is None or len(weights) != num_classes:
        raise ValueError(f"{checkpoint} records no training class weights for its {num_classes} classes "
                         "(meta.class_weights); only checkpoints trained by ros-amf train semantic / joint with "
                         "the class-weighted loss can be calibrated.")
    try:
        prior_bias(weights, 1.0)
    except ValueError as exc:
        raise ValueError(f"{checkpoint}: meta.class_weights: {exc}") from None
    return list(weights)


@torch.no_grad()
def score_alphas(model: torch.nn.Module, dataset, size: InputSize, class_weights, alphas, small_ids,
                 limit: int = 0, progress=None, device: str | torch.device = "cpu") -> list[dict]:
    """mIoU summary for each alpha from one forward per image (the model's own offsets switched off)."""
    offsets = {a: torch.from_numpy(prior_bias(class_weights, a)).float()[:, None, None] for a in alphas}
    matrices = {a: ConfusionMatrix(len(dataset.class_names)) for a in alphas}
    count = len(dataset) if not limit else min(limit, len(dataset))
    uses_bias, model.uses_logit_bias = model.uses_logit_bias, False
    try:
        for index in range(count):
            sample = dataset[index]
            logits = logits_at_image_size(model, sample["image"], size, device)
            for alpha, offset in offsets.items():
                matrices[alpha].update((logits + offset).argmax(0).numpy(), sample["label"])
            if progress:
                progress(index + 1, count)
    finally:
        model.uses_logit_bias = uses_bias
    rows = []
    for alpha in alphas:
        summary = summarize(matrices[alpha].matrix, list(dataset.class_names), small_ids)
        summary.pop("confusion_matrix")
        rows.append({"alpha": float(alpha), "images": count, **summary})
    return rows


def best_alpha(rows: list[dict]) -> float:
    """The alpha of the highest mIoU; on a tie the smaller correction."""
    return max(rows, key=lambda r: (round(r["miou"], 6), -r["alpha"]))["alpha"]
