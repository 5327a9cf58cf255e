"""Hungarian matching of predicted instances to ground truth (SparseInst's matcher).

Score of prediction i for target j:  dice(mask_i, mask_j)^0.8 * p_i(class_j)^0.2, computed in fp32
without gradients; scipy's linear_sum_assignment maximises the total score. The dice is SparseInst's
``dice_score``: 2 m.t / (|m|^2 + |t|^2), squared norms in the denominator, as its dice loss. Masks are soft
during training (sigmoid predictions, bilinearly resized targets), so the squares matter.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def dice_score_matrix(pred_probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Pairwise dice between [N, P] probabilities and [M, P] (soft) targets -> [N, M]."""
    numerator = 2 * pred_probs @ targets.T
    denominator = (pred_probs * pred_probs).sum(-1)[:, None] + (targets * targets).sum(-1)[None, :]
    return numerator / (denominator + eps)


@torch.no_grad()
def match_scores(pred_logits: torch.Tensor, pred_masks: torch.Tensor, tgt_classes: torch.Tensor,
                 tgt_masks: torch.Tensor, alpha: float = 0.8, beta: float = 0.2) -> torch.Tensor:
    """[N, M] matching score of one image: dice^alpha * p_class^beta (fp32)."""
    probs = torch.sigmoid(pred_masks.float().flatten(1))
    dice = dice_score_matrix(probs, tgt_masks.float().flatten(1))
    class_prob = torch.sigmoid(pred_logits.float())[:, tgt_classes]
    return dice.clamp(min=0) ** alpha * class_prob ** beta


@torch.no_grad()
def hungarian_match(pred_logits: torch.Tensor, pred_masks: torch.Tensor, tgt_classes: torch.Tensor,
                    tgt_masks: torch.Tensor, alpha: float = 0.8, beta: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (prediction indices, target indices) of the optimal one-to-one assignment."""
    if tgt_classes.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pred_logits.device)
        return empty, empty
    scores = match_scores(pred_logits, pred_masks, tgt_classes, tgt_masks, alpha, beta)
    rows, cols = linear_sum_assignment(scores.cpu().numpy(), maximize=True)
    device = pred_logits.device
    return torch.as_tensor(rows, dtype=torch.long, device=device), torch.as_tensor(cols, dtype=torch.long, device=device)
