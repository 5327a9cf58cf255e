"""Streaming evaluation pairs each ground-truth frame with the latest output available at its time,
so latency and drops cost accuracy (Li, Wang & Ramanan, ECCV 2020); checked on hand-built timelines."""
from __future__ import annotations

import numpy as np
import pytest

from ros_amf.evaluation.streaming import (NO_PREDICTION, DeliveredOutput, confusion_with_misses, miou_with_misses,
                                          pair_streaming, streamed_predictions, streaming_miou)

FRAME_TIMES = [0.0, 0.1, 0.2, 0.3, 0.4]


def test_zero_latency_is_not_enough_each_frame_sees_the_previous_output():
    outputs = [DeliveredOutput(i, t) for i, t in enumerate(FRAME_TIMES)]  # available exactly at capture time
    assert pair_streaming(FRAME_TIMES, outputs).used_output == [None, 0, 1, 2, 3]


def test_latency_of_one_and_a_half_frames_makes_outputs_two_frames_stale():
    outputs = [DeliveredOutput(i, t + 0.15) for i, t in enumerate(FRAME_TIMES)]
    pairing = pair_streaming(FRAME_TIMES, outputs)
    assert pairing.used_output == [None, None, 0, 1, 2]
    assert pairing.staleness() == [None, None, 2, 2, 2]
    assert pairing.frames_without_output == 2


def test_dropped_frames_keep_the_last_delivered_output_in_place():
    outputs = [DeliveredOutput(0, 0.05), DeliveredOutput(3, 0.35)]  # frames 1, 2, 4 dropped
    assert pair_streaming(FRAME_TIMES, outputs).used_output == [None, 0, 0, 0, 3]


def test_out_of_order_arrivals_use_the_latest_arrival_not_the_newest_frame():
    outputs = [DeliveredOutput(1, 0.15), DeliveredOutput(0, 0.25)]  # frame 0's output overtook by frame 1
    assert pair_streaming(FRAME_TIMES, outputs).used_output == [None, None, 1, 0, 0]


def test_frame_times_must_be_ordered():
    with pytest.raises(ValueError, match="non-decreasing"):
        pair_streaming([0.2, 0.1], [])


def test_streamed_predictions_use_empty_before_the_first_output():
    preds = {0: "p0", 2: "p2"}
    outputs = [DeliveredOutput(0, 0.12), DeliveredOutput(2, 0.31)]
    streamed = streamed_predictions(FRAME_TIMES, outputs, preds, empty=lambda i: f"empty{i}")
    assert streamed.predictions == ["empty0", "empty1", "p0", "p0", "p2"]


def _labels(value: int) -> np.ndarray:
    return np.full((4, 4), value, np.uint8)


def test_streaming_miou_equals_offline_when_the_scene_does_not_change_and_outputs_exist():
    gt = [_labels(1)] * 3
    outputs = [DeliveredOutput(i, -1.0 + i * 0.01) for i in range(3)]  # all available before the first frame
    result = streaming_miou([0.0, 0.1, 0.2], outputs, {i: _labels(1) for i in range(3)}, gt, num_classes=3)
    assert result["miou"] == pytest.approx(1.0)
    assert result["frames_without_output"] == 0


def test_stale_outputs_of_a_changing_scene_lower_streaming_miou():
    gt = [_labels(0), _labels(1), _labels(2)]
    perfect = {i: gt[i].copy() for i in range(3)}
    late = [DeliveredOutput(i, t + 0.05) for i, t in enumerate([0.0, 0.1, 0.2])]
    result = streaming_miou([0.0, 0.1, 0.2], late, perfect, gt, num_classes=3)
    # frame 0 has nothing yet (misses), frame 1 gets frame 0's map, frame 2 gets frame 1's: every pixel wrong
    assert result["miou"] == pytest.approx(0.0)
    assert result["frames_without_output"] == 1


def test_frames_without_output_count_as_misses_not_as_ignored_pixels():
    label = np.array([[0, 0], [1, 255]], np.uint8)
    prediction = np.full((2, 2), NO_PREDICTION, np.uint8)
    confusion = confusion_with_misses(prediction, label, num_classes=2)
    assert confusion.tolist() == [[0, 0, 2], [0, 0, 1]]  # ignore pixel left out, the others are misses
    half = streaming_miou([0.0, 1.0], [DeliveredOutput(0, 0.5)], {0: np.array([[0, 0], [1, 1]], np.uint8)},
                          [label, label], num_classes=2)
    assert half["iou_per_class"] == pytest.approx([0.5, 0.5])  # second frame right, first frame all missed


def test_small_object_subset_averages_only_its_classes():
    gt = [np.array([[0, 1], [2, 2]], np.uint8)]
    pred = {0: np.array([[0, 0], [2, 2]], np.uint8)}
    result = streaming_miou([1.0], [DeliveredOutput(0, 0.0)], pred, gt, num_classes=3, class_subset=[1])
    assert result["miou"] == 0.0
    full = streaming_miou([1.0], [DeliveredOutput(0, 0.0)], pred, gt, num_classes=3)
    assert full["miou"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)


def test_classes_unknown_to_the_truth_count_as_misses_offline_too():
    label = np.array([[0, 1]], np.uint8)
    prediction = np.array([[0, 7]], np.uint8)  # 7: a class the ground truth does not have
    result = miou_with_misses([prediction], [label], num_classes=2)
    assert result["iou_per_class"] == [1.0, 0.0]
