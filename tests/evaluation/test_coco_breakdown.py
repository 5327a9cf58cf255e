"""Per-class and class-agnostic COCO mask AP: a right mask with the wrong class counts only class-agnostic."""
import json

import numpy as np
import pytest

from ros_amf.evaluation.coco_ap import coco_mask_ap, coco_mask_breakdown, encode_mask, load_ground_truth, mask_confusion


def _ground_truth(tmp_path):
    boxes = [(1, 10, 10, 40), (2, 60, 20, 30)]  # (category, x, y, size) on one 96x128 image
    annotations = [{"id": k + 1, "image_id": 1, "category_id": cat, "iscrowd": 0, "area": float(s * s),
                    "bbox": [x, y, s, s], "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]]}
                   for k, (cat, x, y, s) in enumerate(boxes)]
    data = {"images": [{"id": 1, "file_name": "1.png", "height": 96, "width": 128}], "annotations": annotations,
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    ground_truth = load_ground_truth(str(path))
    return ground_truth, [ground_truth.annToMask(a) for a in annotations]


def test_wrong_class_costs_class_aware_ap_but_not_class_agnostic_ap(tmp_path):
    ground_truth, (car_mask, person_mask) = _ground_truth(tmp_path)
    detections = [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(car_mask), "score": 0.9},
                  # the person's mask, exactly, but called a car
                  {"image_id": 1, "category_id": 1, "segmentation": encode_mask(person_mask), "score": 0.8}]
    breakdown = coco_mask_breakdown(ground_truth, detections)
    assert breakdown["per_class"]["car"]["AP50"] == pytest.approx(1.0, abs=0.01)
    assert breakdown["per_class"]["person"]["AP50"] == 0.0
    assert breakdown["class_agnostic"]["AP50"] == pytest.approx(1.0, abs=0.01)
    assert coco_mask_ap(ground_truth, detections)["AP50"] == pytest.approx(0.5, abs=0.01)
    assert breakdown["metrics"] == coco_mask_ap(ground_truth, detections)


def test_no_detections_give_zero_not_an_error(tmp_path):
    ground_truth, _ = _ground_truth(tmp_path)
    breakdown = coco_mask_breakdown(ground_truth, [])
    assert breakdown["class_agnostic"]["AP50"] == 0.0 and breakdown["per_class"] == {}
    assert np.isfinite(list(coco_mask_ap(ground_truth, []).values())).all()


def test_confusion_counts_each_instance_once_under_what_it_was_detected_as(tmp_path):
    ground_truth, (car_mask, person_mask) = _ground_truth(tmp_path)
    detections = [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(car_mask), "score": 0.9},
                  {"image_id": 1, "category_id": 1, "segmentation": encode_mask(person_mask), "score": 0.8},
                  # a weaker, worse-overlapping person detection does not change the person's row
                  {"image_id": 1, "category_id": 2, "segmentation": encode_mask(person_mask * 0), "score": 0.7}]
    assert mask_confusion(ground_truth, detections) == {"car": {"car": 1}, "person": {"car": 1}}
    # below min_score a detection does not count: the person is then missed
    assert mask_confusion(ground_truth, detections[:1] + [dict(detections[1], score=0.01)]) == {
        "car": {"car": 1}, "person": {"missed": 1}}
