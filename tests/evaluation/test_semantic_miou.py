"""mIoU equals cityscapesScripts' pixel-level evaluation on the same predictions; small/large split."""
import math

import cv2
import numpy as np
import pytest

from ros_amf.contract.labels import CITYSCAPES_SMALL_TRAIN_IDS, CITYSCAPES_TRAIN_NAMES, LABEL_ID_TO_TRAIN_ID
from ros_amf.evaluation.miou import ConfusionMatrix, format_table, iou_per_class, summarize


def _cityscapes_scores(prediction_files, ground_truth_files):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    cs.args.quiet = True
    cs.args.JSONOutput = False
    cs.args.evalInstLevelScore = False
    result = cs.evaluateImgLists(prediction_files, ground_truth_files, cs.args)
    return result["averageScoreClasses"], result["classScores"]


def test_miou_matches_cityscapes_scripts_on_same_predictions(tmp_path):
    from cityscapesscripts.helpers.labels import labels, trainId2label
    rng = np.random.default_rng(0)
    label_ids = np.array([lab.id for lab in labels if lab.id >= 0])  # evaluated and ignored ids alike
    absent = {CITYSCAPES_TRAIN_NAMES.index("train"), CITYSCAPES_TRAIN_NAMES.index("bus")}
    usable = np.array([i for i in label_ids if LABEL_ID_TO_TRAIN_ID[i] not in absent])
    matrix = ConfusionMatrix(19)
    prediction_files, ground_truth_files = [], []
    for index in range(3):
        # blocky ground truth with every label id (incl. ignored ones); predictions agree on ~60 %
        blocks = rng.choice(usable, size=(6, 8))
        gt_ids = np.kron(blocks, np.ones((5, 5), dtype=np.int64)).astype(np.uint8)
        train = LABEL_ID_TO_TRAIN_ID[gt_ids].astype(np.int64)
        noise = rng.integers(0, 19, size=train.shape)
        prediction = np.where((rng.random(train.shape) < 0.6) & (train < 19), train, noise)
        prediction[np.isin(prediction, list(absent))] = 0  # two classes absent from GT and prediction: NaN IoU
        matrix.update(prediction, LABEL_ID_TO_TRAIN_ID[gt_ids])
        prediction_ids = np.vectorize(lambda t: trainId2label[int(t)].id)(prediction).astype(np.uint8)
        gt_file, pred_file = tmp_path / f"x{index}_gtFine_labelIds.png", tmp_path / f"x{index}_pred.png"
        cv2.imwrite(str(gt_file), gt_ids)
        cv2.imwrite(str(pred_file), prediction_ids)
        ground_truth_files.append(str(gt_file))
        prediction_files.append(str(pred_file))
    reference_miou, reference_classes = _cityscapes_scores(prediction_files, ground_truth_files)
    ours = summarize(matrix.matrix, CITYSCAPES_TRAIN_NAMES, CITYSCAPES_SMALL_TRAIN_IDS)
    assert ours["miou"] == pytest.approx(reference_miou, abs=1e-12)
    for name, value in ours["per_class"].items():
        if value is None:
            assert math.isnan(reference_classes[name])
        else:
            assert value == pytest.approx(reference_classes[name], abs=1e-12)
    assert ours["per_class"]["train"] is None and ours["per_class"]["bus"] is None
    assert 0.2 < ours["miou"] < 0.9


def test_iou_and_small_large_split_on_hand_counted_matrix():
    # gt\pred:  class 0 (large)  class 1 (small)  class 2 (large, never seen)
    matrix = np.array([[6, 2, 0],
                       [1, 3, 0],
                       [0, 0, 0]])
    iou = iou_per_class(matrix)
    assert iou[0] == pytest.approx(6 / (6 + 2 + 1)) and iou[1] == pytest.approx(3 / (3 + 1 + 2))
    assert math.isnan(iou[2])
    summary = summarize(matrix, ["road", "pole", "bus"], [1])
    assert summary["miou"] == pytest.approx((6 / 9 + 3 / 6) / 2)
    assert summary["miou_small"] == pytest.approx(0.5) and summary["miou_large"] == pytest.approx(6 / 9)
    assert "pole (S)" in format_table(summary)


def test_ignore_pixels_do_not_count():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([[0, 1, 2]]), np.array([[0, 255, 1]]))
    assert matrix.matrix.sum() == 2 and matrix.matrix[1, 2] == 1
