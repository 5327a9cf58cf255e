"""SparseInst inference post-processing (no NMS).

score = sqrt(sigmoid(class) * sigmoid(objectness)); keep > score_threshold; rescore by the mean
mask probability over pixels > mask_threshold; masks cropped to the valid (unpadded) region,
resized to the original image and thresholded at mask_threshold; top ``max_instances``.

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


@torch.no_grad()
def postprocess_instances(outputs: dict[str, torch.Tensor], image_size_hw: list[tuple[int, int]] | tuple[int, int],
                          output_size_hw: list[tuple[int, int]] | tuple[int, int], score_threshold: float = 0.005,
                          mask_threshold: float = 0.45, max_instances: int = 100,
                          labels_per_mask: int = 1) -> list[InstanceResult]:
    """image_size_hw: valid region of the (resized) input before padding; output_size_hw: original image size.
    Either may be one (h, w) for the whole batch or a list with one per image."""
    logits, masks, objectness = outputs["pred_logits"], outputs["pred_masks"], outputs["pred_scores"]
    batch = logits.shape[0]
    if isinstance(image_size_hw, tuple) or (len(image_size_hw) == 2 and isinstance(image_size_hw[0], int)):
        image_size_hw = [tuple(image_size_hw)] * batch
    if isinstance(output_size_hw, tuple) or (len(output_size_hw) == 2 and isinstance(output_size_hw[0], int)):
        output_size_hw = [tuple(output_size_hw)] * batch
    scores_all = torch.sqrt(torch.sigmoid(logits.float()) * torch.sigmoid(objectness.float()))
    padded_h, padded_w = masks.shape[-2] * 4, masks.shape[-1] * 4  # masks are at 1/4 of the padded input
    results = []
    for b in range(batch):
        scores, classes = scores_all[b].topk(min(labels_per_mask, scores_all.shape[-1]), dim=-1)  # [N, K]
        mask_index = torch.arange(len(scores), device=scores.device).repeat_interleave(scores.shape[1])
        scores, classes = scores.flatten(), classes.flatten()
        keep = scores > score_threshold
        scores, classes = scores[keep], classes[keep]
        probs = torch.sigmoid(masks[b][mask_index[keep]].float())
        binary = probs > mask_threshold
        maskness = (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1e-6)
        scores = scores * maskness
        order = scores.argsort(descending=True)[:max_instances]
        scores, classes, probs = scores[order], classes[order], probs[order]
        (valid_h, valid_w), (out_h, out_w) = image_size_hw[b], output_size_hw[b]
        if len(probs):
            probs = F.interpolate(probs[:, None], size=(padded_h, padded_w), mode="bilinear", align_corners=False)
            probs = probs[:, :, :valid_h, :valid_w]
            probs = F.interpolate(probs, size=(out_h, out_w), mode="bilinear", align_corners=False)[:, 0]
            final = probs > mask_threshold
        else:
            final = torch.zeros(0, out_h, out_w, dtype=torch.bool, device=masks.device)
        results.append(InstanceResult(masks=final, scores=scores, classes=classes.long()))
    return results
