"""CamVid reader: 11 classes + void, from index PNGs or the original 32-class colour PNGs.

Two common layouts are read (images ROOT/{split}/<name>.png in both):

    ROOT/{split}annot/<name>.png     SegNet style: values 0..10 = class, 11 = void
    ROOT/{split}_labels/<name>_L.png original colour labels, 32 classes grouped to 11

The index layout is used when ``{split}annot/`` exists (or ``label_format="index"``).
Void becomes 255. Pixels whose colour or value is not a CamVid class are void too and are
counted in the sample's ``unknown_label_pixels`` so nothing is dropped silently.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ros_amf.contract.errors import DatasetFileError
from ros_amf.data.image_io import check_same_size, read_label, read_rgb
from ros_amf.contract.labels import CAMVID_CLASS_NAMES, CAMVID_VOID_INDEX, IGNORE_INDEX, camvid_color_to_train_id

_INDEX_TABLE = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_INDEX_TABLE[: len(CAMVID_CLASS_NAMES)] = np.arange(len(CAMVID_CLASS_NAMES))


class CamVidDataset:
    """Samples {"image", "label" (uint8 train ids, 255 = void), "image_id", "unknown_label_pixels"}."""

    class_names = CAMVID_CLASS_NAMES

    def __init__(self, root: str | Path, split: str = "train", label_format: str = "auto"):
        self.root = Path(root)
        self.split = split
        image_dir = self.root / split
        if not image_dir.is_dir():
            raise DatasetFileError(image_dir, f"CamVid image folder for split '{split}' is missing; pass the "
                                              "folder that contains train/, trainannot/ (or train_labels/) ...")
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not self.images:
            raise DatasetFileError(image_dir, "contains no .png/.jpg images.")
        if label_format == "auto":
            label_format = "index" if (self.root / f"{split}annot").is_dir() else "color"
        if label_format not in ("index", "color"):
            raise ValueError(f"label_format must be 'auto', 'index' or 'color', got {label_format!r}")
        self.label_format = label_format

    def __len__(self) -> int:
        return len(self.images)

    def label_path(self, image_path: Path) -> Path:
        if self.label_format == "index":
            return self.root / f"{self.split}annot" / f"{image_path.stem}.png"
        return self.root / f"{self.split}_labels" / f"{image_path.stem}_L.png"

    def load_label(self, index: int) -> np.ndarray:
        """Train-id map of sample ``index`` without decoding its image (e.g. to count class pixels)."""
        return self._decode_label(self.label_path(self.images[index]))[0]

    def __getitem__(self, index: int) -> dict:
        path = self.images[index]
        image = read_rgb(path)
        label_path = self.label_path(path)
        label, unknown, raw = self._decode_label(label_path)
        check_same_size(label_path, raw, image, f"CamVid {self.label_format} label")
        return {"image": image, "label": label, "image_id": path.stem, "unknown_label_pixels": unknown}

    def _decode_label(self, label_path: Path) -> tuple[np.ndarray, int, np.ndarray]:
        raw = read_label(label_path, f"CamVid {self.label_format} label")
        if self.label_format == "index":
            if raw.ndim != 2 or raw.dtype != np.uint8:
                raise DatasetFileError(label_path, "must be a single-channel 8-bit PNG of class indices 0..11.")
            label = _INDEX_TABLE[raw]
            unknown = int((raw > CAMVID_VOID_INDEX).sum())
        else:
            if raw.ndim != 3:
                raise DatasetFileError(label_path, "must be an RGB colour label PNG with the CamVid class colours.")
            label, unknown = camvid_color_to_train_id(raw)
        return label, unknown, raw
