"""The COCO instances JSON: read and check the top-level shape every reader of it relies on.

Used by the dataset reader (``data.datasets.coco``) and the bag ground-truth sidecar
(``bags.ground_truth``); a malformed file is one sentence naming the file and the problem.
"""
from __future__ import annotations

import json
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
    return data
