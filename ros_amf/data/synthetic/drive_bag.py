"""ROS 2 bags of a synthetic continuous drive, with per-frame ground truth as a sidecar.

One street scene is rendered while the camera drives forward and the things move (cars
drive, people walk, riders cross), at 30 Hz. ``write_drive_bags(out, frames, seed, size)``
writes, with ``ros_amf.bags`` (rosbags, ROS 2 Kilted message types):

    OUT/drive_sqlite3/     rosbag2, sqlite3 storage, /camera/image_raw rgb8 + /camera/camera_info
    OUT/drive_mcap/        the same messages, mcap storage
    OUT/drive_bgr8_mcap/   the same drive with bgr8 images (mcap), for the encoding paths

Header stamps start at STAMP_START_NS and grow by 1/30 s (rounded to the nanosecond; the
bag's receive time equals the header stamp); frame_id is "camera". Each bag directory also
holds its ground truth (see ros_amf.bags.ground_truth), read back with
``ros_amf.bags.load_bag_ground_truth``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ros_amf.bags import DEFAULT_IMAGE_TOPIC, BagWriter, GroundTruthWriter
from ros_amf.contract.labels import LABEL_ID_TO_TRAIN_ID
from ros_amf.data.synthetic.export import coco_categories, frame_annotations
from ros_amf.data.synthetic.render import render
from ros_amf.data.synthetic.scene import advance, random_scene

RATE_HZ = 30
STAMP_START_NS = 1_700_000_000 * 1_000_000_000
IMAGE_TOPIC = DEFAULT_IMAGE_TOPIC  # the topic a replay picks without --topic
CAMERA_INFO_TOPIC = "/camera/camera_info"
_DRIVE_STREAM = 7_700_001  # seed-sequence entry that separates the drive from the still frames


def frame_stamp_ns(index: int) -> int:
    """Header stamp of drive frame ``index``: 30 Hz, strictly increasing."""
    return STAMP_START_NS + (index * 1_000_000_000 + RATE_HZ // 2) // RATE_HZ


def render_drive(seed: int, frames: int, size: tuple[int, int]):
    """Yield (frame, camera) for each frame of one continuous drive (deterministic for a seed)."""
    rng = np.random.default_rng([seed, _DRIVE_STREAM])
    scene = random_scene(rng, size[0], size[1], length=600.0)
    scene.cam_speed = float(rng.uniform(7.0, 11.0))
    noise_rng = np.random.default_rng([seed, _DRIVE_STREAM, 1])
    for _ in range(frames):
        yield render(scene, noise_rng), scene.camera
        advance(scene, 1.0 / RATE_HZ, rng)


def write_drive_bags(out: Path, frames: int, seed: int, size: tuple[int, int] = (640, 480),
                     bgr8: bool = True) -> dict:
    """Render the drive once and write it to every bag plus each bag's ground truth."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [("drive_sqlite3", "sqlite3", "rgb8"), ("drive_mcap", "mcap", "rgb8")]
    if bgr8:
        targets.append(("drive_bgr8_mcap", "mcap", "bgr8"))
    for name, _, _ in targets:
        if (out / name).exists():
            shutil.rmtree(out / name)
    bags = [(BagWriter(out / name, storage).open(), encoding) for name, storage, encoding in targets]
    ground_truth = GroundTruthWriter(out / ".ground_truth_tmp")
    try:
        for i, (frame, camera) in enumerate(render_drive(seed, frames, size)):
            stamp = frame_stamp_ns(i)
            for bag, encoding in bags:
                pixels = frame.image if encoding == "rgb8" else frame.image[..., ::-1]
                bag.write_image(IMAGE_TOPIC, pixels, encoding, stamp)
                bag.write_camera_info(CAMERA_INFO_TOPIC, size[0], size[1], camera.focal, stamp)
            ground_truth.add(stamp, i, LABEL_ID_TO_TRAIN_ID[frame.label_ids], frame_annotations(frame, i + 1))
    finally:
        for bag, _ in bags:
            bag.close()
    ground_truth.write_into([out / name for name, _, _ in targets], coco_categories(),
                            f"ros_amf synthetic drive, seed {seed}, 30 Hz")
    return {"frames": frames, "rate_hz": RATE_HZ, "paths": [str(out / name) for name, _, _ in targets],
            "first_stamp_ns": frame_stamp_ns(0), "last_stamp_ns": frame_stamp_ns(frames - 1),
            "instances": len(ground_truth.annotations)}
