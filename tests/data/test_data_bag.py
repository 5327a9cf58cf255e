"""The drive bags: readable by rosbags with the Kilted typestore, 30 Hz stamps, ground truth by stamp."""
import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ros_amf.apps.cli import main as cli_main
from ros_amf.bags import load_bag_ground_truth
from ros_amf.contract.errors import DatasetFileError
from ros_amf.contract.labels import LABEL_ID_TO_TRAIN_ID, SYNTH_THING_NAMES
from ros_amf.data.synthetic.drive_bag import (CAMERA_INFO_TOPIC, IMAGE_TOPIC, frame_stamp_ns, render_drive,
                                              write_drive_bags)

FRAMES, SIZE = 6, (128, 96)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags")
    summary = write_drive_bags(out, FRAMES, seed=2, size=SIZE)
    return out, summary


def _read(bag_dir: Path):
    images, infos = [], []
    with AnyReader([bag_dir], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for conn, timestamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == timestamp
            (images if conn.topic == IMAGE_TOPIC else infos).append((stamp, msg))
    return images, infos


@pytest.mark.parametrize("name", ["drive_sqlite3", "drive_mcap", "drive_bgr8_mcap"])
def test_bag_is_readable_with_kilted_typestore_at_30_hz(bags, name):
    out, _ = bags
    images, infos = _read(out / name)
    assert len(images) == len(infos) == FRAMES
    stamps = [s for s, _ in images]
    assert stamps == [frame_stamp_ns(i) for i in range(FRAMES)]
    gaps = np.diff(stamps)
    assert (gaps > 0).all() and np.allclose(gaps, 1e9 / 30, atol=1)
    stamp, msg = images[0]
    assert (msg.width, msg.height, msg.step) == (SIZE[0], SIZE[1], SIZE[0] * 3)
    assert msg.encoding == ("bgr8" if "bgr8" in name else "rgb8") and msg.header.frame_id == "camera"
    info = infos[0][1]
    assert info.k[0] > 0 and info.k[2] == SIZE[0] / 2 and info.width == SIZE[0]


def test_all_bags_hold_the_same_rendered_drive(bags):
    out, _ = bags
    expected = [f.image for f, _ in render_drive(2, FRAMES, SIZE)]
    for name in ("drive_sqlite3", "drive_mcap", "drive_bgr8_mcap"):
        images, _ = _read(out / name)
        for (_, msg), ref in zip(images, expected):
            pixels = msg.data.reshape(msg.height, msg.width, 3)
            assert np.array_equal(pixels[..., ::-1] if msg.encoding == "bgr8" else pixels, ref)


def test_ground_truth_is_keyed_by_header_stamp_and_matches_the_frames(bags):
    out, summary = bags
    frames = [f for f, _ in render_drive(2, FRAMES, SIZE)]
    for name in ("drive_sqlite3", "drive_mcap"):
        gt = load_bag_ground_truth(out / name)
        assert sorted(gt) == [frame_stamp_ns(i) for i in range(FRAMES)]
        for i, frame in enumerate(frames):
            g = gt[frame_stamp_ns(i)]
            assert g["frame_index"] == i
            assert np.array_equal(g["label"], LABEL_ID_TO_TRAIN_ID[frame.label_ids])
            assert g["class_names"] == [inst.kind for inst in frame.instances]
            assert [SYNTH_THING_NAMES[c] for c in g["classes"]] == g["class_names"]
            for mask, inst in zip(g["masks"], frame.instances):
                assert np.logical_and(mask, inst.mask).sum() / np.logical_or(mask, inst.mask).sum() >= 0.9
    coco = json.loads((out / "drive_mcap/ground_truth/instances.json").read_text())
    assert [im["stamp_ns"] for im in coco["images"]] == [frame_stamp_ns(i) for i in range(FRAMES)]
    assert summary["instances"] == sum(1 for a in coco["annotations"] if not a["iscrowd"])


def test_bag_without_sidecar_has_no_ground_truth_and_a_broken_sidecar_is_named(bags, tmp_path):
    assert load_bag_ground_truth(tmp_path) is None
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    (gt / "instances.json").write_text("[]")
    with pytest.raises(DatasetFileError, match="instances.json: is not a COCO annotation file"):
        load_bag_ground_truth(tmp_path)


def test_make_data_command_writes_all_four_formats(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli_main(["make-data", "--out", str(out), "--frames", "3", "--seed", "1", "--size", "96x64",
                     "--bag-frames", "3", "--val-fraction", "0.34"]) == 0
    assert len(list((out / "coco/images/train").glob("*.png"))) == 2
    assert len(list((out / "coco/images/val").glob("*.png"))) == 1
    assert (out / "coco/annotations/instances_val.json").is_file()
    assert len(list((out / "cityscapes/gtFine/train").glob("*/*_gtFine_instanceIds.png"))) == 2
    assert len(list((out / "camvid/trainannot").glob("*.png"))) == 2
    assert len(list((out / "camvid/val_labels").glob("*_L.png"))) == 1
    assert (out / "bags/drive_sqlite3/metadata.yaml").is_file() and (out / "bags/drive_mcap/metadata.yaml").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["bags"]["frames"] == 3
    assert "frames/s" in capsys.readouterr().out
    # refuses to overwrite silently
    assert cli_main(["make-data", "--out", str(out), "--frames", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
