"""COCO instance-segmentation reader (instances_*.json + an image directory).

Segmentations may be polygons, uncompressed RLE (counts as a list) or compressed RLE
(counts as a string); pycocotools decodes all three. As in COCO, ``iscrowd = 1`` regions
are not instances: they are returned as one ``ignore_mask`` so that a loss can leave them
out and never treats them as positives. Category ids are mapped to contiguous ids
0..K-1 in increasing category-id order; ``class_names[k]`` names contiguous id k.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ros_amf.contract.coco_json import read_coco_instances
from ros_amf.contract.errors import DatasetFileError
from ros_amf.data.image_io import read_rgb
from ros_amf.data.targets import instance_targets


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Bool HxW mask of a COCO segmentation (polygon list, uncompressed or compressed RLE)."""
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:  # compressed RLE, counts as text or bytes
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


class CocoInstances:
    """Samples {"image", "masks", "classes", "boxes", "image_id", "ignore_mask"} of a COCO file."""

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, skip_empty: bool = False):
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        data = self._load_json(self.annotation_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids: list[int] = [int(c["id"]) for c in cats]
        self.class_names: list[str] = [str(c["name"]) for c in cats]
        self.contiguous_id = {cid: k for k, cid in enumerate(self.category_ids)}
        self.images: dict[int, dict] = {int(im["id"]): im for im in data["images"]}
        self.annotations: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            self._check_annotation(ann)
            self.annotations[int(ann["image_id"])].append(ann)
        ids = sorted(self.images)
        if skip_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.annotations[i])]
        self.image_ids = ids
        self.empty_masks_skipped = 0  # annotations whose mask decodes to no pixel (counted, not used)
        if not self.image_dir.is_dir():
            raise DatasetFileError(self.image_dir, "image directory is missing; pass the folder that holds "
                                                   "the images named in the annotation file's file_name fields.")

    @staticmethod
    def _load_json(path: Path) -> dict:
        return read_coco_instances(path, "COCO annotation file is missing; check the path "
                                         "(e.g. DIR/coco/annotations/instances_train.json).")

    def _check_annotation(self, ann: dict) -> None:
        where = f"annotation {ann.get('id', '?')}"
        if int(ann.get("image_id", -1)) not in self.images:
            raise DatasetFileError(self.annotation_file, f"{where} refers to image_id {ann.get('image_id')} "
                                                         "which is not in 'images'.")
        if ann.get("category_id") not in self.contiguous_id:
            raise DatasetFileError(self.annotation_file, f"{where} has category_id {ann.get('category_id')} "
                                                         "which is not in 'categories'.")
        seg = ann.get("segmentation")
        if not (isinstance(seg, list) or (isinstance(seg, dict) and "counts" in seg and "size" in seg)):
            raise DatasetFileError(self.annotation_file, f"{where} has no polygon or RLE 'segmentation'.")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.image_ids[index]
        info = self.images[image_id]
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        h, w = int(info["height"]), int(info["width"])
        if image.shape[:2] != (h, w):
            raise DatasetFileError(path, f"is {image.shape[1]}x{image.shape[0]} but {self.annotation_file.name} "
                                         f"says {w}x{h}; the annotations do not belong to this image.")
        masks, classes, empty = [], [], 0
        ignore = np.zeros((h, w), dtype=bool)
        for ann in self.annotations[image_id]:
            mask = decode_segmentation(ann["segmentation"], h, w)
            if ann.get("iscrowd", 0):
                ignore |= mask
                continue
            if not mask.any():
                empty += 1
                continue
            masks.append(mask)
            classes.append(self.contiguous_id[ann["category_id"]])
        self.empty_masks_skipped += empty
        sample = {"image": image, "image_id": image_id, "ignore_mask": ignore, "empty_masks_skipped": empty}
        sample.update(instance_targets(masks, classes, h, w))
        return sample
