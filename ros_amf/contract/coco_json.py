"""The COCO instances JSON: read and check the top-level shape every reader of it relies on.

Used by the dataset reader (``data.datasets.coco``) and the bag ground-truth sidecar
(``bags.ground_truth``); a malformed file is one sentence naming the file and the problem.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ros_amf.contract.errors import DatasetFileError


def read_coco_instances(path: Path, when_missing: str) -> dict:
    """The parsed file, with lists of images (id, file_name, height, width), annotations and categories."""
    if not path.is_file():
        raise DatasetFileError(path, when_missing)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFileError(path, f"is not valid JSON ({exc}); re-create the annotation file.") from None
    if not isinstance(data, dict):
        raise DatasetFileError(path, "is not a COCO annotation file (top level is not an object).")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFileError(path, f"has no '{key}' list; it is not a COCO instances file.")
    for image in data["images"]:
        if not all(k in image for k in ("id", "file_name", "height", "width")):
            raise DatasetFileError(path, f"image entry {image.get('id', '?')} lacks one of id, file_name, height, "
                                         "width.")
    for ann in data["annotations"]:
        problem = segmentation_problem(ann.get("segmentation")) if isinstance(ann, dict) else "is not an object"
        if problem:
            where = f"annotation {ann.get('id', '?')}" if isinstance(ann, dict) else "an annotation"
            raise DatasetFileError(path, f"{where} {problem}; fix or remove it.")
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def segmentation_problem(segmentation) -> str | None:
    """What is wrong with a COCO segmentation (None if pycocotools can decode it): polygons must be x,y lists
    of at least 3 points (pycocotools would read a 4-number one as a box), RLE needs size and counts."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "has an empty polygon list"
        for k, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(_number(v) for v in polygon):
                return f"has polygon {k} that is not a list of finite numbers"
            if len(polygon) < 6 or len(polygon) % 2:
                return (f"has polygon {k} of {len(polygon)} numbers, but a polygon is x,y pairs of at least "
                        "3 points (6 numbers)")
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
            return "has an RLE segmentation without a [height, width] 'size'"
        if not isinstance(counts, (str, list)):
            return "has an RLE segmentation without 'counts' (a list or a compressed string)"
        return None
    return "has no polygon or RLE 'segmentation'"
