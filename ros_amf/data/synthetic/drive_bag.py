"""ROS 2 bags of a synthetic continuous drive, with per-frame ground truth as a sidecar.

One street scene is rendered while the camera drives forward and the things move (cars
drive, people walk, riders cross), at 30 Hz. ``write_drive_bags(out, frames, seed, size)``
writes, with ``rosbags`` and the ROS 2 Kilted typestore:

    OUT/drive_sqlite3/     rosbag2, sqlite3 storage, /camera/image_raw rgb8 + /camera/camera_info
    OUT/drive_mcap/        the same messages, mcap storage
    OUT/drive_bgr8_mcap/   the same drive with bgr8 images (mcap), for the encoding paths

Header stamps start at STAMP_START_NS and grow by 1/30 s (rounded to the nanosecond; the
bag's receive time equals the header stamp); frame_id is "camera". Each bag directory also
holds its ground truth (rosbag2 tools ignore the extra folder):

    <bag>/ground_truth/instances.json     COCO instances; every image has "stamp_ns" (int, the
                                          header stamp), "frame_index" and file_name "<stamp_ns>.png"
    <bag>/ground_truth/labels/<stamp_ns>.png   uint8 Cityscapes train ids, 255 = ignore

``load_bag_ground_truth(bag_dir)`` reads it back as {stamp_ns: {...}} for the replay evaluator.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros_amf.data.datasets.coco import CocoInstances
from ros_amf.data.errors import DatasetFileError
from ros_amf.data.synthetic.export import frame_annotations, write_coco_json
from ros_amf.data.image_io import read_label
from ros_amf.contract.labels import LABEL_ID_TO_TRAIN_ID
from ros_amf.data.synthetic.scene import advance, random_scene, render

RATE_HZ = 30
STAMP_START_NS = 1_700_000_000 * 1_000_000_000
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
FRAME_ID = "camera"
GROUND_TRUTH_DIR = "ground_truth"
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


def _messages(typestore, image: np.ndarray, stamp: int, encoding: str, focal: float):
    T = typestore.types
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
        frame_id=FRAME_ID)
    h, w = image.shape[:2]
    pixels = image if encoding == "rgb8" else image[..., ::-1]
    img = T["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                     step=w * 3, data=np.ascontiguousarray(pixels).reshape(-1))
    cx, cy = w / 2.0, h / 2.0
    info = T["sensor_msgs/msg/CameraInfo"](
        header=header, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1), p=np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    return img, info


class _BagSink:
    def __init__(self, path: Path, storage: StoragePlugin, encoding: str, typestore):
        if path.exists():
            shutil.rmtree(path)
        self.writer = Writer(path, version=9, storage_plugin=storage)
        self.writer.open()
        self.encoding, self.typestore = encoding, typestore
        self.image_conn = self.writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        self.info_conn = self.writer.add_connection(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                                                    typestore=typestore)

    def write(self, image: np.ndarray, stamp: int, focal: float) -> None:
        img, info = _messages(self.typestore, image, stamp, self.encoding, focal)
        self.writer.write(self.image_conn, stamp, self.typestore.serialize_cdr(img, img.__msgtype__))
        self.writer.write(self.info_conn, stamp, self.typestore.serialize_cdr(info, info.__msgtype__))

    def close(self) -> None:
        self.writer.close()


def write_drive_bags(out: Path, frames: int, seed: int, size: tuple[int, int] = (640, 480),
                     bgr8: bool = True) -> dict:
    """Render the drive once and write it to every bag plus each bag's ground truth."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    typestore = get_typestore(Stores.ROS2_KILTED)
    targets = [("drive_sqlite3", StoragePlugin.SQLITE3, "rgb8"), ("drive_mcap", StoragePlugin.MCAP, "rgb8")]
    if bgr8:
        targets.append(("drive_bgr8_mcap", StoragePlugin.MCAP, "bgr8"))
    sinks = [_BagSink(out / name, storage, enc, typestore) for name, storage, enc in targets]
    gt_tmp = out / ".ground_truth_tmp"
    if gt_tmp.exists():
        shutil.rmtree(gt_tmp)
    (gt_tmp / "labels").mkdir(parents=True)
    images, anns = [], []
    try:
        for i, (frame, camera) in enumerate(render_drive(seed, frames, size)):
            stamp = frame_stamp_ns(i)
            for sink in sinks:
                sink.write(frame.image, stamp, camera.focal)
            cv2.imwrite(str(gt_tmp / "labels" / f"{stamp}.png"), LABEL_ID_TO_TRAIN_ID[frame.label_ids])
            images.append({"id": i + 1, "file_name": f"{stamp}.png", "width": size[0], "height": size[1],
                           "stamp_ns": stamp, "frame_index": i})
            anns.extend(frame_annotations(frame, i + 1))
    finally:
        for sink in sinks:
            sink.close()
    write_coco_json(gt_tmp / "instances.json", images, anns, f"ros_amf synthetic drive, seed {seed}, 30 Hz")
    for name, _, _ in targets:
        shutil.copytree(gt_tmp, out / name / GROUND_TRUTH_DIR)
    shutil.rmtree(gt_tmp)
    return {"frames": frames, "rate_hz": RATE_HZ, "paths": [str(out / name) for name, _, _ in targets],
            "first_stamp_ns": frame_stamp_ns(0), "last_stamp_ns": frame_stamp_ns(frames - 1),
            "instances": len(anns)}


def ground_truth_coco_path(bag_dir: str | Path) -> Path:
    """The sidecar COCO instances JSON of a synthetic bag (images carry "stamp_ns")."""
    return Path(bag_dir) / GROUND_TRUTH_DIR / "instances.json"


def load_bag_ground_truth(bag_dir: str | Path) -> dict[int, dict] | None:
    """Ground truth of every frame of a synthetic drive bag, keyed by header stamp (ns).

    Each value: "label" uint8 HxW train ids (255 = ignore), "masks" bool [N,H,W], "classes"
    int64 [N] contiguous ids, "class_names" list[str] per instance, "boxes" float32 [N,4] xyxy,
    "image_id", "frame_index". Returns None when the bag has no ground_truth/ folder.
    """
    gt_dir = Path(bag_dir) / GROUND_TRUTH_DIR
    if not gt_dir.is_dir():
        return None
    coco = CocoInstances(gt_dir / "labels", gt_dir / "instances.json")
    result: dict[int, dict] = {}
    for index, image_id in enumerate(coco.image_ids):
        info = coco.images[image_id]
        if "stamp_ns" not in info:
            raise DatasetFileError(coco.annotation_file, f"image {image_id} has no 'stamp_ns'; the bag ground truth "
                                                         "must give each frame's header stamp.")
        stamp = int(info["stamp_ns"])
        label_path = gt_dir / "labels" / info["file_name"]
        label = read_label(label_path, "ground-truth train-id label map")
        if label.ndim != 2 or label.shape != (int(info["height"]), int(info["width"])):
            raise DatasetFileError(label_path, f"must be a single-channel {info['width']}x{info['height']} "
                                               "PNG of train ids.")
        targets = _instances_only(coco, image_id)
        result[stamp] = {"label": label, **targets, "image_id": image_id,
                         "frame_index": int(info.get("frame_index", index)),
                         "class_names": [coco.class_names[c] for c in targets["classes"]]}
    return result


def _instances_only(coco: CocoInstances, image_id: int) -> dict:
    """Decode the annotations of one image without reading an image file (the sidecar has none)."""
    from ros_amf.data.datasets.coco import decode_segmentation
    from ros_amf.data.targets import instance_targets

    info = coco.images[image_id]
    h, w = int(info["height"]), int(info["width"])
    masks, classes = [], []
    for ann in coco.annotations[image_id]:
        if ann.get("iscrowd", 0):
            continue
        masks.append(decode_segmentation(ann["segmentation"], h, w))
        classes.append(coco.contiguous_id[ann["category_id"]])
    return instance_targets(masks, classes, h, w)
