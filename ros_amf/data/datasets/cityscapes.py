"""Cityscapes reader: leftImg8bit images with gtFine labelIds and instanceIds.

    ROOT/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png
    ROOT/gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png

labelIds become the 19 train ids through cityscapesScripts' table (255 = ignore).
Instances come from instanceIds: a value >= 1000 is label_id * 1000 + k; the 8 evaluated
instance classes (person ... bicycle) get contiguous ids in train-id order. A value < 1000
of an instance class is a group region without single instances (e.g. a crowd of cars);
it goes into ``ignore_mask``, like COCO's iscrowd.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ros_amf.contract.errors import DatasetFileError
from ros_amf.data.image_io import check_same_size, read_label, read_rgb
from ros_amf.contract.labels import CITYSCAPES_INSTANCE_NAMES, CITYSCAPES_LABEL_ID, CITYSCAPES_TRAIN_NAMES, LABEL_ID_TO_TRAIN_ID
from ros_amf.data.targets import instance_targets

_INSTANCE_LABEL_TO_CLASS = {CITYSCAPES_LABEL_ID[n]: k for k, n in enumerate(CITYSCAPES_INSTANCE_NAMES)}


def instances_from_instance_ids(instance_ids: np.ndarray) -> tuple[list[np.ndarray], list[int], np.ndarray]:
    """(masks, contiguous classes, group-region ignore mask) of a Cityscapes instanceIds map."""
    masks, classes = [], []
    ignore = np.zeros(instance_ids.shape, dtype=bool)
    for value in np.unique(instance_ids):
        value = int(value)
        label_id = value // 1000 if value >= 1000 else value
        if label_id not in _INSTANCE_LABEL_TO_CLASS:
            continue
        region = instance_ids == value
        if value < 1000:
            ignore |= region
        else:
            masks.append(region)
            classes.append(_INSTANCE_LABEL_TO_CLASS[label_id])
    return masks, classes, ignore


class CityscapesDataset:
    """Samples {"image", "label", "masks", "classes", "boxes", "ignore_mask", "image_id"}."""

    class_names = CITYSCAPES_TRAIN_NAMES            # semantic train ids
    instance_class_names = CITYSCAPES_INSTANCE_NAMES  # contiguous instance classes

    def __init__(self, root: str | Path, split: str = "train", instances: bool = True):
        self.root = Path(root)
        self.split = split
        self.instances = instances
        image_root = self.root / "leftImg8bit" / split
        if not image_root.is_dir():
            raise DatasetFileError(image_root, f"Cityscapes image folder for split '{split}' is missing; "
                                               "pass the folder that contains leftImg8bit/ and gtFine/.")
        self.images = sorted(image_root.glob("*/*_leftImg8bit.png"))
        if not self.images:
            raise DatasetFileError(image_root, "contains no <city>/*_leftImg8bit.png files.")

    def __len__(self) -> int:
        return len(self.images)

    def gt_path(self, image_path: Path, kind: str) -> Path:
        stem = image_path.name[: -len("_leftImg8bit.png")]
        return self.root / "gtFine" / self.split / image_path.parent.name / f"{stem}_gtFine_{kind}.png"

    def _label_ids(self, path: Path) -> tuple[Path, np.ndarray]:
        label_path = self.gt_path(path, "labelIds")
        label_ids = read_label(label_path, "gtFine labelIds map")
        if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
            raise DatasetFileError(label_path, "must be a single-channel 8-bit PNG of Cityscapes label ids.")
        return label_path, label_ids

    def load_label(self, index: int) -> np.ndarray:
        """Train-id map of sample ``index`` without decoding its image (e.g. to count class pixels)."""
        return LABEL_ID_TO_TRAIN_ID[self._label_ids(self.images[index])[1]]

    def __getitem__(self, index: int) -> dict:
        path = self.images[index]
        image = read_rgb(path)
        label_path, label_ids = self._label_ids(path)
        check_same_size(label_path, label_ids, image, "gtFine labelIds map")
        sample = {"image": image, "label": LABEL_ID_TO_TRAIN_ID[label_ids],
                  "image_id": path.name[: -len("_leftImg8bit.png")]}
        if self.instances:
            inst_path = self.gt_path(path, "instanceIds")
            instance_ids = read_label(inst_path, "gtFine instanceIds map")
            if instance_ids.ndim != 2:
                raise DatasetFileError(inst_path, "must be a single-channel 16-bit PNG of Cityscapes instance ids.")
            check_same_size(inst_path, instance_ids, image, "gtFine instanceIds map")
            masks, classes, ignore = instances_from_instance_ids(instance_ids)
            sample.update(instance_targets(masks, classes, *image.shape[:2]))
            sample["ignore_mask"] = ignore
        return sample
