"""Ground truth kept next to a bag, keyed by header stamp (the sidecar of the synthetic drive bags).

    <bag>/ground_truth/instances.json            COCO instances; every image has "stamp_ns" (int, the
                                                 header stamp), "frame_index" and file_name "<stamp_ns>.png"
    <bag>/ground_truth/labels/<stamp_ns>.png     uint8 Cityscapes train ids, 255 = ignore

rosbag2 tools ignore the extra folder. ``GroundTruthWriter`` writes it; ``load_bag_ground_truth``
reads it back as {stamp_ns: {...}} for the replay evaluator.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ros_amf.contract.coco_json import read_coco_instances
from ros_amf.contract.errors import DatasetFileError

GROUND_TRUTH_DIR = "ground_truth"
LABELS_DIR = "labels"
INSTANCES_FILE = "instances.json"


def ground_truth_coco_path(bag_dir: str | Path) -> Path:
    """The sidecar COCO instances JSON of a bag (images carry "stamp_ns"), e.g. for pycocotools."""
    return Path(bag_dir) / GROUND_TRUTH_DIR / INSTANCES_FILE


class GroundTruthWriter:
    """Collects the sidecar frame by frame in ``staging``; ``write_into`` puts a copy next to each bag."""

    def __init__(self, staging: Path):
        self.staging = Path(staging)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        (self.staging / LABELS_DIR).mkdir(parents=True)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, stamp_ns: int, frame_index: int, train_ids: np.ndarray, annotations: list[dict]) -> None:
        """One frame: its label map of train ids and its COCO annotations, whose image_id is
        ``frame_index + 1`` (annotation ids are assigned when written)."""
        cv2.imwrite(str(self.staging / LABELS_DIR / f"{stamp_ns}.png"), train_ids)
        height, width = train_ids.shape
        self.images.append({"id": frame_index + 1, "file_name": f"{stamp_ns}.png", "width": width,
                            "height": height, "stamp_ns": stamp_ns, "frame_index": frame_index})
        self.annotations.extend(annotations)

    def write_into(self, bag_dirs: list[Path], categories: list[dict], description: str) -> None:
        """Finish instances.json and copy the sidecar into every bag directory; the staging goes away."""
        for i, ann in enumerate(self.annotations, start=1):
            ann["id"] = i
        payload = {"info": {"description": description, "version": "1.0"}, "licenses": [],
                   "images": self.images, "annotations": self.annotations, "categories": categories}
        tmp = self.staging / (INSTANCES_FILE + ".tmp")
        tmp.write_text(json.dumps(payload, separators=(",", ":")))
        os.replace(tmp, self.staging / INSTANCES_FILE)
        for bag_dir in bag_dirs:
            shutil.copytree(self.staging, Path(bag_dir) / GROUND_TRUTH_DIR)
        shutil.rmtree(self.staging)


def load_bag_ground_truth(bag_dir: str | Path) -> dict[int, dict] | None:
    """Ground truth of every frame of a bag, keyed by header stamp (ns); None without a sidecar.

    Each value: "label" uint8 HxW train ids (255 = ignore), "masks" bool [N,H,W], "classes" int64 [N]
    contiguous ids (categories in increasing id order), "class_names" list[str] per instance, "boxes"
    float32 [N,4] xyxy (x1, y1 exclusive), "image_id", "frame_index". Crowd regions are left out.
    """
    directory = Path(bag_dir) / GROUND_TRUTH_DIR
    if not directory.is_dir():
        return None
    path = ground_truth_coco_path(bag_dir)
    coco = _read_coco(path)
    category_ids = sorted(coco.cats)
    contiguous = {cid: k for k, cid in enumerate(category_ids)}
    result: dict[int, dict] = {}
    for index, image_id in enumerate(sorted(coco.imgs)):
        info = coco.imgs[image_id]
        if "stamp_ns" not in info:
            raise DatasetFileError(path, f"image {image_id} has no 'stamp_ns'; the bag ground truth must give "
                                         "each frame's header stamp.")
        height, width = int(info["height"]), int(info["width"])
        annotations = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        rles = [coco.annToRLE(a) for a in annotations]
        masks = (np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1)).astype(bool) if rles
                 else np.zeros((0, height, width), dtype=bool))
        boxes = mask_utils.toBbox(rles).reshape(-1, 4).astype(np.float32) if rles else np.zeros((0, 4), np.float32)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        classes = np.array([contiguous[a["category_id"]] for a in annotations], dtype=np.int64)
        result[int(info["stamp_ns"])] = {
            "label": _read_train_ids(directory / LABELS_DIR / info["file_name"], width, height),
            "masks": masks, "classes": classes, "boxes": boxes, "image_id": image_id,
            "frame_index": int(info.get("frame_index", index)),
            "class_names": [coco.cats[category_ids[c]]["name"] for c in classes]}
    return result


def _read_coco(path: Path) -> COCO:
    data = read_coco_instances(path, "is missing; the ground_truth folder needs the COCO instances file.")
    category_ids = {c.get("id") for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("category_id") not in category_ids or "segmentation" not in ann:
            raise DatasetFileError(path, f"annotation {ann.get('id', '?')} needs a 'segmentation' and a "
                                         "category_id listed in 'categories'.")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _read_train_ids(path: Path, width: int, height: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetFileError(path, "ground-truth train-id label map is missing; every frame needs one.")
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2 or label.shape != (height, width):
        raise DatasetFileError(path, f"must be a single-channel {width}x{height} PNG of train ids.")
    return label
