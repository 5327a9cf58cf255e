"""SparseInst inference post-processing (no NMS).

score = sqrt(sigmoid(class) * sigmoid(objectness)); keep > score_threshold; rescore by the mean
mask probability over pixels > mask_threshold; top ``max_instances``; masks cropped to the valid
(unpadded) region, resized to the original image and thresholded at mask_threshold.

The selection has a fixed size: ``rank_candidates`` returns K = min(max_instances, pairs) slots in
descending score and says which of them are live, without boolean indexing or reading a count, so
on a GPU nothing waits for the device until the frame's results are copied out. A caller on the
host (evaluation, the CPU runtime) may cut the slots to the live ones first (``Candidates.first``),
which spares the full-size masks of the dead ones.

``labels_per_mask`` = 1 is SparseInst's inference (each mask takes its best class). K > 1 also
reports each mask under its next K-1 classes, each with its own score (the (mask, class) top-k of
Mask2Former-style evaluation): an evaluation option that shows how much AP is lost to masks that
are found but whose class is a near tie. The runtime keeps 1: one object, one label.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class InstanceResult:
    masks: torch.Tensor    # bool [N, H, W] at the original image size
    scores: torch.Tensor   # [N]
    classes: torch.Tensor  # long [N]

    def boxes(self) -> torch.Tensor:
        """xyxy boxes [N, 4] (pixel edges) of the masks; an empty mask gives a zero box."""
        boxes = torch.zeros(len(self.masks), 4)
        for i, mask in enumerate(self.masks):
            ys, xs = torch.where(mask)
            if len(ys):
                boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        return boxes


@dataclass
class Candidates:
    """Fixed-size (mask, class) slots of one image in descending score; dead slots sort last."""
    scores: torch.Tensor   # [K] float32, rescored by maskness
    classes: torch.Tensor  # [K] long
    probs: torch.Tensor    # [K, h, w] mask probabilities at mask resolution (1/4 of the padded input)
    live: torch.Tensor     # [K] bool: the pair passed the thresholds

    def first(self, count: int) -> "Candidates":
        return Candidates(self.scores[:count], self.classes[:count], self.probs[:count], self.live[:count])


def rank_candidates(logits: torch.Tensor, masks: torch.Tensor, objectness: torch.Tensor, score_threshold: float,
                    mask_threshold: float, max_instances: int, labels_per_mask: int = 1,
                    min_score: float | None = None) -> Candidates:
    """One image's [Q, C] class logits, [Q, h, w] mask logits and [Q, 1] objectness -> the best
    K = min(max_instances, Q * labels_per_mask) pairs. A pair is live when its class score is above
    ``score_threshold`` and (if given) its rescored score at least ``min_score``."""
    scores = torch.sqrt(torch.sigmoid(logits.float()) * torch.sigmoid(objectness.float()))
    per_mask = min(labels_per_mask, scores.shape[-1])
    scores, classes = scores.topk(per_mask, dim=-1)                       # [Q, L]
    probs = torch.sigmoid(masks.float())
    binary = probs > mask_threshold
    maskness = (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1e-6)
    rescored = scores * maskness[:, None]
    live = scores > score_threshold
    if min_score is not None:
        live &= rescored >= min_score
    key = torch.where(live, rescored, float("-inf")).flatten()
    top = key.topk(min(max_instances, key.numel())).indices              # sorted: live pairs first
    return Candidates(rescored.flatten().index_select(0, top), classes.flatten().index_select(0, top),
                      probs.index_select(0, top // per_mask), live.flatten().index_select(0, top))


def masks_at_image_size(probs: torch.Tensor, valid_hw: tuple[int, int], output_hw: tuple[int, int],
                        mask_threshold: float) -> torch.Tensor:
    """[K, h, w] probabilities on the 1/4 padded grid -> bool [K, H, W] masks on the original image."""
    (valid_h, valid_w), (out_h, out_w) = valid_hw, output_hw
    if probs.shape[0] == 0:
        return torch.zeros(0, out_h, out_w, dtype=torch.bool, device=probs.device)
    padded_hw = (probs.shape[-2] * 4, probs.shape[-1] * 4)
    probs = F.interpolate(probs[:, None], size=padded_hw, mode="bilinear", align_corners=False)
    probs = probs[:, :, :valid_h, :valid_w]
    probs = F.interpolate(probs, size=(out_h, out_w), mode="bilinear", align_corners=False)[:, 0]
    return probs > mask_threshold


@torch.no_grad()
def postprocess_instances(outputs: dict[str, torch.Tensor], image_size_hw: list[tuple[int, int]] | tuple[int, int],
                          output_size_hw: list[tuple[int, int]] | tuple[int, int], score_threshold: float = 0.005,
                          mask_threshold: float = 0.45, max_instances: int = 100,
                          labels_per_mask: int = 1) -> list[InstanceResult]:
    """Evaluation: the live instances of each image, masks on the original image.

    image_size_hw: valid region of the (resized) input before padding; output_size_hw: original image size.
    Either may be one (h, w) for the whole batch or a list with one per image."""
    logits, masks, objectness = outputs["pred_logits"], outputs["pred_masks"], outputs["pred_scores"]
    batch = logits.shape[0]
    if isinstance(image_size_hw, tuple) or (len(image_size_hw) == 2 and isinstance(image_size_hw[0], int)):
        image_size_hw = [tuple(image_size_hw)] * batch
    if isinstance(output_size_hw, tuple) or (len(output_size_hw) == 2 and isinstance(output_size_hw[0], int)):
        output_size_hw = [tuple(output_size_hw)] * batch
    results = []
    for b in range(batch):
        found = rank_candidates(logits[b], masks[b], objectness[b], score_threshold, mask_threshold, max_instances,
                                labels_per_mask)
        found = found.first(int(found.live.sum()))   # on the host: only live pairs get full-size masks
        final = masks_at_image_size(found.probs, image_size_hw[b], output_size_hw[b], mask_threshold)
        results.append(InstanceResult(masks=final, scores=found.scores, classes=found.classes))
    return results
