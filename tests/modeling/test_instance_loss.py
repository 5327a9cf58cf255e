"""Matcher and SparseInst loss: optimal assignment, ~0 loss for a perfect prediction, gradients."""
import itertools

import pytest
import torch

from ros_amf.modeling.sparseinst.loss import SparseInstLoss, dice_loss, sigmoid_focal_loss
from ros_amf.modeling.sparseinst.matcher import hungarian_match, match_scores


@pytest.mark.parametrize("seed,num_pred,num_tgt", [(0, 4, 2), (1, 5, 3), (2, 3, 3), (3, 6, 4)])
def test_matcher_equals_brute_force(seed, num_pred, num_tgt):
    torch.manual_seed(seed)
    logits = torch.randn(num_pred, 3)
    masks = torch.randn(num_pred, 6, 7) * 3
    classes = torch.randint(0, 3, (num_tgt,))
    targets = torch.rand(num_tgt, 6, 7) > 0.5
    scores = match_scores(logits, masks, classes, targets)
    best = max(sum(scores[p, t] for t, p in enumerate(perm))
               for perm in itertools.permutations(range(num_pred), num_tgt))
    rows, cols = hungarian_match(logits, masks, classes, targets)
    assert len(rows) == num_tgt and sorted(cols.tolist()) == list(range(num_tgt))
    assert torch.isclose(scores[rows, cols].sum(), best, atol=1e-6)


def test_match_score_is_dice_power_times_class_power():
    logits = torch.tensor([[0.0, 2.0]])
    masks = torch.full((1, 2, 2), 50.0)  # probability ~1 everywhere
    target = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)
    dice = 2 * 2 / (4 + 2 + 1e-4)
    expected = dice ** 0.8 * torch.sigmoid(torch.tensor(2.0)) ** 0.2
    assert torch.isclose(match_scores(logits, masks, torch.tensor([1]), target)[0, 0], expected, atol=1e-5)


def test_match_score_dice_uses_squared_norms_on_soft_masks():
    """SparseInst's dice_score: 2 p.t / (sum p^2 + sum t^2). With soft masks, as in training (sigmoid
    predictions, bilinearly resized targets), this differs from dividing by sum p + sum t."""
    logits = torch.tensor([[0.0]])
    probs = torch.tensor([0.9, 0.6, 0.2, 0.1])
    masks = torch.logit(probs).view(1, 2, 2)
    target = torch.tensor([1.0, 0.5, 0.25, 0.0]).view(1, 2, 2)
    numerator = 2 * (0.9 * 1.0 + 0.6 * 0.5 + 0.2 * 0.25)                      # 2.5
    squares = (0.81 + 0.36 + 0.04 + 0.01) + (1.0 + 0.25 + 0.0625)              # 2.5325
    expected = (numerator / (squares + 1e-4)) ** 0.8 * 0.5 ** 0.2
    linear = (numerator / (1.8 + 1.75 + 1e-4)) ** 0.8 * 0.5 ** 0.2             # the wrong denominator
    score = match_scores(logits, masks, torch.tensor([0]), target)[0, 0]
    assert torch.isclose(score, torch.tensor(expected), atol=1e-5)
    assert not torch.isclose(score, torch.tensor(linear), atol=1e-3)


def test_soft_masks_change_the_assignment_the_way_sparseinst_does():
    """Prediction 0 is a faint mask over the target; prediction 1 a confident one that spills outside it.
    Squared norms (SparseInst) give target 0 to prediction 0; a linear denominator would pick prediction 1."""
    p_faint = torch.tensor([0.5, 0.3, 0.2, 0.3, 0.4, 0.3])
    p_spilling = torch.tensor([0.95, 0.3, 0.7, 0.05, 0.8, 0.9])
    target = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0, 0.0]).view(1, 2, 3)
    masks = torch.logit(torch.stack([p_faint, p_spilling])).view(2, 2, 3)
    logits = torch.zeros(2, 1)

    def dice(p, t, squared):
        den = (p * p).sum() + (t * t).sum() if squared else p.sum() + t.sum()
        return 2 * (p * t).sum() / (den + 1e-4)
    t = target.flatten()
    assert dice(p_faint, t, True) > dice(p_spilling, t, True)      # 0.652 > 0.598
    assert dice(p_faint, t, False) < dice(p_spilling, t, False)    # 0.420 < 0.485
    rows, cols = hungarian_match(logits, masks, torch.tensor([0]), target)
    assert rows.tolist() == [0] and cols.tolist() == [0]


def test_objectness_target_is_iou_with_the_target_binarised_at_half():
    """SparseInst's compute_mask_iou: prediction >= 0.4, target > 0.5 (the soft resized target is binarised)."""
    from ros_amf.modeling.sparseinst.loss import mask_iou
    logits = torch.logit(torch.tensor([[0.9, 0.9, 0.9, 0.1]]))
    soft_target = torch.tensor([[1.0, 0.7, 0.2, 0.0]])
    # predicted {0,1,2}; binarised target {0,1}: IoU 2/3 (the soft target would give 1.9/3)
    assert torch.isclose(mask_iou(logits, soft_target)[0], torch.tensor(2 / 3), atol=1e-5)


def _perfect_outputs(targets, num_pred=5, num_classes=3, size=(8, 8)):
    logits = torch.full((len(targets), num_pred, num_classes), -30.0)
    masks = torch.full((len(targets), num_pred) + size, -30.0)
    scores = torch.full((len(targets), num_pred, 1), -30.0)
    for b, target in enumerate(targets):
        for i, (cls, mask) in enumerate(zip(target["classes"], target["masks"])):
            logits[b, i, cls] = 30.0
            masks[b, i] = torch.where(mask, 30.0, -30.0)
            scores[b, i] = 30.0
    return {"pred_logits": logits, "pred_masks": masks, "pred_scores": scores}


def test_perfect_prediction_has_near_zero_loss():
    torch.manual_seed(0)
    targets = []
    for count in (2, 3):
        masks = torch.zeros(count, 8, 8, dtype=torch.bool)
        for i in range(count):
            masks[i, i * 2:i * 2 + 2, 1:6] = True
        targets.append({"masks": masks, "classes": torch.randint(0, 3, (count,))})
    losses = SparseInstLoss(3)(_perfect_outputs(targets), targets)
    assert set(losses) == {"loss_cls", "loss_dice", "loss_mask", "loss_obj", "loss"}
    assert all(v.item() < 1e-3 for v in losses.values()), {k: v.item() for k, v in losses.items()}


def test_wrong_prediction_costs_more_and_gradients_reach_every_output():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    targets = [{"masks": masks, "classes": torch.tensor([1])}]
    outputs = {k: v.clone().requires_grad_() for k, v in _perfect_outputs(targets).items()}
    wrong = {k: (-v.detach()).requires_grad_() for k, v in outputs.items()}
    loss_fn = SparseInstLoss(3)
    assert loss_fn(wrong, targets)["loss"] > 10 * loss_fn(outputs, targets)["loss"]
    random_out = {k: torch.randn_like(v).requires_grad_() for k, v in outputs.items()}
    loss_fn(random_out, targets)["loss"].backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in random_out.values())


def test_target_masks_at_input_resolution_are_resized_to_prediction():
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, 8:24, 8:24] = True  # input resolution; predictions are 1/4
    small = torch.nn.functional.interpolate(masks[:, None].float(), size=(8, 8), mode="bilinear")[:, 0] > 0.5
    targets_small = [{"masks": small, "classes": torch.tensor([0])}]
    outputs = _perfect_outputs(targets_small, size=(8, 8))
    losses = SparseInstLoss(3)(outputs, [{"masks": masks, "classes": torch.tensor([0])}])
    assert losses["loss_dice"] < 0.05


def test_image_without_instances_gives_only_classification_loss():
    outputs = {"pred_logits": torch.zeros(1, 4, 3, requires_grad=True), "pred_masks": torch.zeros(1, 4, 8, 8),
               "pred_scores": torch.zeros(1, 4, 1)}
    losses = SparseInstLoss(3)({k: v for k, v in outputs.items()},
                               [{"masks": torch.zeros(0, 8, 8, dtype=torch.bool), "classes": torch.zeros(0, dtype=torch.long)}])
    assert losses["loss_dice"] == 0 and losses["loss_cls"] > 0
    expected = 2.0 * sigmoid_focal_loss(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))  # normalised by max(1, 0)
    assert torch.isclose(losses["loss_cls"], expected)


def test_dice_loss_hand_values():
    logits = torch.tensor([[100.0, 100.0, -100.0, -100.0]])
    assert dice_loss(logits, torch.tensor([[1.0, 1.0, 0.0, 0.0]])) < 1e-4
    assert torch.isclose(dice_loss(logits, torch.tensor([[1.0, 0.0, 1.0, 0.0]])), torch.tensor(0.5), atol=1e-4)
