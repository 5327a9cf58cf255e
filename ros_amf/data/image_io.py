"""Reading images and label maps with one clear error per missing or unreadable file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ros_amf.contract.errors import DatasetFileError


def read_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB image."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(path, "image file is missing; check the dataset root and split.")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetFileError(path, "cannot be decoded as an image (corrupt or not PNG/JPEG); re-create or remove it.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path, what: str = "label map") -> np.ndarray:
    """A label PNG as stored (uint8 or uint16 single channel, or HxWx3 RGB for colour labels)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(path, f"{what} is missing; every image needs one next to it in the ground-truth tree.")
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetFileError(path, f"{what} cannot be decoded as a PNG; re-create or remove it.")
    if label.ndim == 3:
        label = cv2.cvtColor(label[..., :3], cv2.COLOR_BGR2RGB)
    return label


def check_same_size(path: str | Path, label: np.ndarray, image: np.ndarray, what: str = "label map") -> None:
    if label.shape[:2] != image.shape[:2]:
        raise DatasetFileError(path, f"{what} is {label.shape[1]}x{label.shape[0]} but its image is "
                                     f"{image.shape[1]}x{image.shape[0]}; they must match.")
