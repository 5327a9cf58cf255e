"""SparseInst training loss.

For each image the predictions are Hungarian-matched to the targets (ros_amf.modeling.sparseinst.matcher);
then, normalised by the number of target instances in the batch (all ranks):
  loss_cls   2 x sigmoid focal loss (alpha 0.25, gamma 2) over all N predictions, one-hot targets
  loss_dice  2 x dice loss of matched masks
  loss_mask  5 x pixel-wise BCE of matched masks (mean over pixels of matched masks)
  loss_obj   1 x BCE of the objectness logit of matched predictions against their mask IoU (prediction
             binarised at 0.4, the resized target at 0.5, as SparseInst's compute_mask_iou)
Target masks (input resolution, padded) are resized bilinearly to the predicted 1/4 resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ros_amf.modeling.sparseinst.matcher import hungarian_match


@dataclass
class LossWeights:
    cls: float = 2.0
    dice: float = 2.0
    mask: float = 5.0
    obj: float = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Summed focal loss (Lin et al. 2017) of independent sigmoids."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).sum()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Summed 1 - dice over rows of [M, P] mask logits vs binary targets."""
    probs = torch.sigmoid(logits)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = (probs * probs).sum(-1) + (targets * targets).sum(-1)
    return (1 - numerator / (denominator + eps)).sum()


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """IoU of binarised predictions with binarised targets (the soft resized target is cut at 0.5)."""
    binary = (torch.sigmoid(logits) >= threshold).float()
    target = (targets > 0.5).float()
    inter = (binary * target).sum(-1)
    union = binary.sum(-1) + target.sum(-1) - inter
    return inter / (union + 1e-6)


class SparseInstLoss:
    def __init__(self, num_classes: int, weights: LossWeights | None = None):
        self.num_classes = num_classes
        self.weights = weights or LossWeights()

    def __call__(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """targets: per image {"classes": long [M], "masks": bool/float [M, Hp, Wp] at the padded input size}."""
        logits = outputs["pred_logits"].float()
        pred_masks = outputs["pred_masks"].float()
        objectness = outputs["pred_scores"].float()
        size = pred_masks.shape[-2:]
        matched_masks, matched_targets, matched_obj = [], [], []
        class_targets = torch.zeros_like(logits)
        for b, target in enumerate(targets):
            classes = target["classes"].to(logits.device).long()
            masks = target["masks"].to(logits.device).float()
            if classes.numel() == 0:
                continue
            if masks.shape[-2:] != size:
                masks = F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            src, tgt = hungarian_match(logits[b], pred_masks[b], classes, masks)
            class_targets[b, src, classes[tgt]] = 1.0
            matched_masks.append(pred_masks[b, src].flatten(1))
            matched_targets.append(masks[tgt].flatten(1))
            matched_obj.append(objectness[b, src, 0])
        num_instances = torch.tensor(float(sum(len(m) for m in matched_masks)), device=logits.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_instances)
            num_instances /= torch.distributed.get_world_size()
        num_instances = num_instances.clamp(min=1.0)
        losses = {"loss_cls": self.weights.cls * sigmoid_focal_loss(logits, class_targets) / num_instances}
        if matched_masks:
            src_masks = torch.cat(matched_masks)
            tgt_masks = torch.cat(matched_targets)
            iou = mask_iou(src_masks.detach(), tgt_masks)
            losses["loss_dice"] = self.weights.dice * dice_loss(src_masks, tgt_masks) / num_instances
            losses["loss_mask"] = self.weights.mask * F.binary_cross_entropy_with_logits(src_masks, tgt_masks)
            losses["loss_obj"] = self.weights.obj * F.binary_cross_entropy_with_logits(torch.cat(matched_obj), iou)
        else:  # no instance in the batch: keep every term (zero) so logs have fixed columns and DDP sees all params
            zero = pred_masks.sum() * 0 + objectness.sum() * 0
            losses.update(loss_dice=zero, loss_mask=zero, loss_obj=zero)
        losses["loss"] = sum(losses.values())
        return losses
