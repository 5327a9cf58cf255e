"""Post-processing: scores, thresholds, and masks aligned with the original (non-multiple-of-32) image."""
import numpy as np
import torch
from pycocotools import mask as mask_utils

from ros_amf.evaluation.coco_ap import encode_mask, results_to_coco
from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
from ros_amf.runtime.preprocess import InputSize, plan_geometry


def _outputs_from_mask(mask_quarter: torch.Tensor, class_id: int = 1, num_classes: int = 3):
    logits = torch.full((1, 2, num_classes), -20.0)  # the second query scores sqrt(~2e-9 * 1), below 0.005
    logits[0, 0, class_id] = 10.0
    masks = torch.full((1, 2) + tuple(mask_quarter.shape), -10.0)
    masks[0, 0] = torch.where(mask_quarter, 10.0, -10.0)
    return {"pred_logits": logits, "pred_masks": masks, "pred_scores": torch.full((1, 2, 1), 10.0)}


def test_masks_follow_the_object_in_the_original_image():
    # original 237x351 frame, resized to short side 160 -> 160x237 valid, padded to 160x256
    original_hw = (237, 351)
    geometry = plan_geometry(*original_hw, InputSize(160, 544))
    assert geometry.padded_hw == (160, 256) and geometry.resized_hw == (160, 237)
    scale = geometry.resized_hw[0] / original_hw[0]
    # object in original pixels: rows 60..120, cols 200..300 -> its place on the 1/4 padded grid
    quarter = torch.zeros(40, 64, dtype=torch.bool)
    quarter[round(60 * scale / 4):round(120 * scale / 4), round(200 * scale / 4):round(300 * scale / 4)] = True
    result = postprocess_instances(_outputs_from_mask(quarter), geometry.resized_hw, original_hw)[0]
    assert result.masks.shape == (1,) + original_hw and result.masks.dtype == torch.bool
    expected = torch.zeros(original_hw, dtype=torch.bool)
    expected[60:120, 200:300] = True
    iou = (result.masks[0] & expected).sum() / (result.masks[0] | expected).sum()
    assert iou > 0.9
    x0, y0, x1, y1 = result.boxes()[0].tolist()
    assert abs(x0 - 200) <= 4 and abs(y0 - 60) <= 4 and abs(x1 - 300) <= 4 and abs(y1 - 120) <= 4
    assert result.classes.tolist() == [1]


def test_score_is_geometric_mean_rescored_by_maskness_and_low_scores_drop():
    quarter = torch.zeros(8, 8, dtype=torch.bool)
    quarter[2:6, 2:6] = True
    outputs = _outputs_from_mask(quarter)
    outputs["pred_logits"][0, 0, 1] = 0.0   # p_cls = 0.5
    outputs["pred_scores"][0, 0, 0] = 0.0   # p_obj = 0.5
    result = postprocess_instances(outputs, (32, 32), (32, 32))[0]
    probs = torch.sigmoid(outputs["pred_masks"][0, 0])
    maskness = probs[probs > 0.45].mean()
    assert len(result.scores) == 1  # the second query scores ~0 < 0.005
    assert torch.isclose(result.scores[0], 0.5 * maskness, atol=1e-5)


def test_coco_rle_round_trips_masks():
    mask = np.zeros((13, 17), bool)
    mask[3:9, 4:15] = True
    assert np.array_equal(mask_utils.decode(encode_mask(mask)).astype(bool), mask)
    quarter = torch.zeros(8, 8, dtype=torch.bool)
    quarter[1:4, 1:4] = True
    result = postprocess_instances(_outputs_from_mask(quarter), (32, 32), (30, 31))[0]
    detections = results_to_coco(result, image_id=7, category_ids=[11, 22, 33])
    assert detections[0]["category_id"] == 22 and detections[0]["image_id"] == 7
    assert detections[0]["segmentation"]["size"] == [30, 31]


def test_labels_per_mask_reports_a_near_tie_under_both_classes():
    quarter = torch.zeros(8, 8, dtype=torch.bool)
    quarter[2:6, 2:6] = True
    outputs = _outputs_from_mask(quarter, class_id=1)
    outputs["pred_logits"][0, 0] = torch.tensor([-20.0, 0.4, 0.2])  # class 1 ahead of class 2, class 0 ~never
    one = postprocess_instances(outputs, (32, 32), (32, 32))[0]
    assert one.classes.tolist() == [1]  # SparseInst: one mask, its best class
    two = postprocess_instances(outputs, (32, 32), (32, 32), labels_per_mask=2)[0]
    assert two.classes.tolist() == [1, 2]
    assert torch.equal(two.masks[0], two.masks[1]) and torch.equal(two.masks[0], one.masks[0])
    assert torch.isclose(two.scores[0], one.scores[0]) and two.scores[1] < two.scores[0]
    three = postprocess_instances(outputs, (32, 32), (32, 32), labels_per_mask=3)[0]
    assert three.classes.tolist() == [1, 2]  # class 0 and the empty query score below 0.005
