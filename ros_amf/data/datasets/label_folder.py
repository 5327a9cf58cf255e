"""Semantic data in the plainest layout: an image folder, a label-PNG folder and a class table.

    images/<any/sub/folders>/<name>.jpg|png     labels/<same sub/folders>/<name>.png
    classes.yaml:
      - {id: 0, name: road, colour: [128, 64, 128]}
      - {id: 7, name: pole, colour: [153, 153, 153], small: true}

``id`` is the value of the class in a single-channel label PNG; an RGB label PNG is read by ``colour``
instead. Classes get contiguous train ids 0..K-1 in table order; ``small: true`` marks the small-object
classes of the mIoU_S split. A label value (or colour) the table does not list becomes ignore (255) and
is counted in the sample's ``unknown_label_pixels``; an image without a label is an error at opening,
naming it, so nothing is dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ros_amf.contract.errors import DatasetFileError
from ros_amf.contract.labels import IGNORE_INDEX
from ros_amf.data.image_io import check_same_size, read_label, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class ClassEntry:
    id: int
    name: str
    colour: tuple[int, int, int]
    small: bool = False


def read_class_table(path: str | Path) -> list[ClassEntry]:
    """The class table YAML: a list (or ``classes:`` list) of {id, name, colour, small}."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(path, "class table is missing; pass a YAML list of {id, name, colour, small}.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetFileError(path, f"class table is not valid YAML ({exc}); fix the syntax.") from None
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list) or not data:
        raise DatasetFileError(path, "class table must be a non-empty YAML list of {id, name, colour, small}.")
    entries, seen_ids = [], set()
    for index, item in enumerate(data):
        if not isinstance(item, dict) or "id" not in item or "name" not in item:
            raise DatasetFileError(path, f"entry {index} needs at least 'id' and 'name' (got {item!r}).")
        colour = item.get("colour", item.get("color", (0, 0, 0)))
        ok = isinstance(item["id"], int) and 0 <= item["id"] < IGNORE_INDEX and isinstance(colour, (list, tuple)) \
            and len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        if not ok:
            raise DatasetFileError(path, f"entry {index} ({item.get('name')}): id must be an integer 0..254 and "
                                         "colour three integers 0..255.")
        if item["id"] in seen_ids:
            raise DatasetFileError(path, f"entry {index} ({item['name']}) repeats id {item['id']}; ids must differ.")
        seen_ids.add(item["id"])
        entries.append(ClassEntry(int(item["id"]), str(item["name"]), tuple(int(c) for c in colour),
                                  bool(item.get("small", False))))
    return entries


class LabelFolderDataset:
    """Samples {"image", "label" (uint8 train ids, 255 = ignore), "image_id", "unknown_label_pixels"}."""

    def __init__(self, image_dir: str | Path, label_dir: str | Path, class_table: str | Path):
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        self.classes = read_class_table(class_table)
        self.class_names = tuple(c.name for c in self.classes)
        self.colours = tuple(c.colour for c in self.classes)
        self.small_ids = tuple(i for i, c in enumerate(self.classes) if c.small)
        self._by_id = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for train_id, entry in enumerate(self.classes):
            self._by_id[entry.id] = train_id
        for folder, what in ((self.image_dir, "image"), (self.label_dir, "label")):
            if not folder.is_dir():
                raise DatasetFileError(folder, f"{what} folder is missing; pass --images DIR --labels DIR.")
        self.images = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise DatasetFileError(self.image_dir, "contains no images (.png, .jpg, .jpeg, .bmp).")
        unlabelled = [p for p in self.images if not self.label_path(p).is_file()]
        if unlabelled:
            raise DatasetFileError(self.label_path(unlabelled[0]), f"is missing: {len(unlabelled)} of "
                                   f"{len(self.images)} images have no label PNG of the same name under "
                                   f"{self.label_dir}; add them or move those images out.")

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, image_path: Path) -> Path:
        return (self.label_dir / image_path.relative_to(self.image_dir)).with_suffix(".png")

    def load_label(self, index: int) -> np.ndarray:
        return self._decode(self.label_path(self.images[index]))[0]

    def __getitem__(self, index: int) -> dict:
        path = self.images[index]
        image = read_rgb(path)
        label_path = self.label_path(path)
        label, unknown, raw = self._decode(label_path)
        check_same_size(label_path, raw, image, "label PNG")
        image_id = str(path.relative_to(self.image_dir).with_suffix(""))
        return {"image": image, "label": label, "image_id": image_id, "unknown_label_pixels": unknown}

    def _decode(self, path: Path) -> tuple[np.ndarray, int, np.ndarray]:
        raw = read_label(path, "label PNG")
        if raw.ndim == 2:
            if raw.dtype != np.uint8:
                raise DatasetFileError(path, "must be an 8-bit label PNG (class ids 0..254) or an RGB colour PNG.")
            label = self._by_id[raw]
        else:
            keys = (raw[..., 0].astype(np.int32) << 16) | (raw[..., 1].astype(np.int32) << 8) | raw[..., 2]
            label = np.full(raw.shape[:2], IGNORE_INDEX, dtype=np.uint8)
            for train_id, (r, g, b) in enumerate(self.colours):
                label[keys == ((r << 16) | (g << 8) | b)] = train_id
        unknown = int((label == IGNORE_INDEX).sum() - (raw == 255).sum() * (raw.ndim == 2))
        return label, max(unknown, 0), raw
