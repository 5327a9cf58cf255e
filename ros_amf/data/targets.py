"""Instance-target helpers shared by the readers and the transforms."""
from __future__ import annotations

import numpy as np


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """[N, 4] float32 xyxy boxes (x1, y1 exclusive) enclosing each bool mask [N, H, W]."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def instance_targets(masks: list[np.ndarray] | np.ndarray, classes: list[int], height: int, width: int) -> dict:
    """The instance part of a sample: masks bool [N,H,W], classes int64 [N], boxes float32 [N,4]."""
    stacked = np.stack(masks).astype(bool) if len(masks) else np.zeros((0, height, width), dtype=bool)
    return {"masks": stacked, "classes": np.asarray(classes, dtype=np.int64).reshape(-1),
            "boxes": boxes_from_masks(stacked)}
