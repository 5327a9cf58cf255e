"""Replay accuracy: delivered outputs are decoded from the node's own messages and scored offline
(own frame) and streaming (latest available output), with COCO mask AP and mIoU."""
from __future__ import annotations

import json

import numpy as np
import pytest
from std_msgs.msg import Header

from ros_amf.replay.accuracy import (BagGroundTruth, FrameTruth, GroundTruthError, decode_instances, decode_labels,
                                  load_coco_by_stamp, score_instances, score_labels)
from ros_amf.replay.monitor import FrameRecord
from ros_amf.bags.reader import BagImage
from ros_amf.data.synthetic.export import encode_rle
from ros_amf.ros.conversions import array_to_image, instances_message
from ros_amf.runtime.outputs import InstanceOutput

pytestmark = pytest.mark.ros

H, W = 32, 48


def square(x: int, y: int = 8, size: int = 12) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y:y + size, x:x + size] = True
    return mask


def moving_scene(frames: int = 4) -> BagGroundTruth:
    """One car sliding right by 12 px per frame (so a one-frame-old mask does not overlap) on 'road'."""
    truth = {}
    for i in range(frames):
        mask = square(12 * i % (W - 11))
        label = np.where(mask, 1, 0).astype(np.uint8)
        truth[i] = FrameTruth(mask[None], ["car"], label)
    return BagGroundTruth(truth, "test", ["road", "car"], [1])


def records_with_latency(latency_s: float, frames: int = 4, period_s: float = 0.1, dropped=()) -> list[FrameRecord]:
    records = []
    for i in range(frames):
        arrivals = {} if i in dropped else {"/n/instances": i * period_s + latency_s, "/n/labels": i * period_s + latency_s}
        records.append(FrameRecord(i, i, 1000 + i, i * period_s, False, arrivals))
    return records


def perfect_instances(truth: BagGroundTruth) -> dict:
    return {i: (f.instance_masks, ["car"], np.array([0.9])) for i, f in truth.frames.items()}


def test_fast_outputs_score_perfectly_offline_and_streaming_pays_for_one_frame_of_latency():
    truth = moving_scene()
    records = records_with_latency(0.05)
    result = score_instances(truth, records, records, "/n/instances", perfect_instances(truth))
    assert result["ap"] == pytest.approx(1.0)
    # each frame is scored against the previous frame's mask, which no longer overlaps the car
    assert result["streaming_ap"] == pytest.approx(0.0)
    assert result["instance_frames_without_output_streaming"] == 1


def test_a_static_scene_streams_as_well_as_offline_once_the_first_output_exists():
    truth = BagGroundTruth({i: FrameTruth(square(10)[None], ["car"], None) for i in range(4)}, "test")
    records = records_with_latency(0.05)
    result = score_instances(truth, records, records, "/n/instances", perfect_instances(truth))
    assert result["ap"] == pytest.approx(1.0)
    assert 0.6 < result["streaming_ap"] < 1.0  # only frame 0 has nothing yet: a miss


def test_dropped_frames_are_not_scored_offline_but_cost_streaming_accuracy():
    truth = moving_scene()
    records = records_with_latency(0.05, dropped=(2,))
    predictions = {k: v for k, v in perfect_instances(truth).items() if k != 2}
    result = score_instances(truth, records, records, "/n/instances", predictions)
    assert result["instance_frames_scored_offline"] == 3 and result["ap"] == pytest.approx(1.0)
    assert result["instance_frames_scored_streaming"] == 4
    # a static scene, where a late output is still right: dropping frame 0 leaves frame 1 with nothing either
    static = BagGroundTruth({i: FrameTruth(square(10)[None], ["car"], None) for i in range(4)}, "test")
    every = perfect_instances(static)
    kept = score_instances(static, records_with_latency(0.05), records_with_latency(0.05), "/n/instances", every)
    dropped_records = records_with_latency(0.05, dropped=(0,))
    lost = score_instances(static, dropped_records, dropped_records, "/n/instances",
                           {k: v for k, v in every.items() if k != 0})
    assert lost["ap"] == pytest.approx(1.0) and lost["instance_frames_scored_offline"] == 3
    assert (kept["instance_frames_without_output_streaming"], lost["instance_frames_without_output_streaming"]) == (1, 2)
    assert lost["streaming_ap"] < kept["streaming_ap"] - 0.1


def test_detections_of_classes_the_ground_truth_does_not_name_are_counted_not_scored():
    truth = moving_scene()
    records = records_with_latency(0.05)
    named = score_instances(truth, records, records, "/n/instances", perfect_instances(truth))
    unnamed = {i: (f.instance_masks, ["class_3"], np.array([0.9])) for i, f in truth.frames.items()}
    result = score_instances(truth, records, records, "/n/instances", unnamed)
    assert named["instance_detections_unknown_class"] == 0
    assert result["instance_detections_unknown_class"] == 4 and result["ap"] == pytest.approx(0.0)


def test_label_maps_score_offline_and_streaming_miou_with_small_classes():
    truth = moving_scene()
    records = records_with_latency(0.05)
    predictions = {i: f.label.copy() for i, f in truth.frames.items()}
    result = score_labels(truth, records, records, "/n/labels", predictions)
    assert result["miou"] == pytest.approx(1.0) and result["miou_small"] == pytest.approx(1.0)
    assert result["streaming_miou_small"] == pytest.approx(0.0)  # the car is always one frame behind
    assert 0.0 < result["streaming_miou"] < 1.0


def test_instances_decode_from_the_nodes_message():
    ids = np.zeros((H, W), np.uint8)
    ids[square(0)] = 1
    ids[square(20)] = 2
    output = InstanceOutput(ids=ids, classes=np.array([1, 0]), scores=np.array([0.8, 0.6], np.float32),
                            boxes=np.array([[0, 8, 11, 19], [20, 8, 31, 19]], np.int32), areas=np.array([144, 144]))
    msg = instances_message(output, Header(frame_id="camera"))
    masks, names, scores = decode_instances(msg, ["road", "car"])
    assert names == ["car", "road"] and scores == pytest.approx([0.8, 0.6])
    np.testing.assert_array_equal(masks[0], square(0))
    np.testing.assert_array_equal(masks[1], square(20))


def test_label_maps_decode_and_map_model_classes_to_truth_classes_by_name():
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    msg = array_to_image(labels, "mono8", Header())
    np.testing.assert_array_equal(decode_labels(msg, None), labels)
    lut = np.full(256, 254, np.uint8)
    lut[:3] = [1, 0, 254]
    np.testing.assert_array_equal(decode_labels(msg, lut), [[1, 0], [254, 0]])


def test_user_coco_ground_truth_is_matched_to_frames_by_stamp(tmp_path):
    frames = [BagImage(i, 0, 5000 + i, "camera", "rgb8", H, W, W * 3, np.zeros(H * W * 3, np.uint8))
              for i in range(3)]
    coco = {"images": [{"id": 7, "stamp_ns": 5001, "height": H, "width": W},
                       {"id": 8, "stamp": {"sec": 0, "nanosec": 9999}, "height": H, "width": W}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 26, "segmentation": encode_rle(square(4)),
                             "area": 144, "bbox": [4, 8, 12, 12], "iscrowd": 0}],
            "categories": [{"id": 26, "name": "car"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    truth = load_coco_by_stamp(tmp_path / "gt.json", frames)
    assert list(truth.frames) == [1]  # stamp 9999 is not in the bag
    assert truth.frames[1].instance_classes == ["car"]
    np.testing.assert_array_equal(truth.frames[1].instance_masks[0], square(4))
    (tmp_path / "nostamp.json").write_text(json.dumps({"images": [{"id": 1, "height": H, "width": W}]}))
    with pytest.raises(GroundTruthError, match="no 'stamp_ns'"):
        load_coco_by_stamp(tmp_path / "nostamp.json", frames)
