"""COCO mask AP with pycocotools: instance results -> COCO results JSON (RLE) -> COCOeval('segm').

``results_to_coco`` turns ``InstanceResult``s into COCO result dicts; ``coco_mask_ap`` runs
COCOeval and returns AP, AP50, AP75, APs, APm, APl (fractions in 0..1; -1 where COCO has no
ground truth of that size).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Binary HxW mask -> COCO RLE with a str 'counts' (JSON serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))  # its 'size' holds numpy ints
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def results_to_coco(result, image_id: int, category_ids: list[int]) -> list[dict[str, Any]]:
    """One image's InstanceResult -> COCO result dicts; ``category_ids[k]`` is the COCO id of class k."""
    masks = result.masks.cpu().numpy()
    scores = result.scores.cpu().tolist()
    classes = result.classes.cpu().tolist()
    out = []
    for mask, score, cls in zip(masks, scores, classes):
        out.append({"image_id": int(image_id), "category_id": int(category_ids[cls]),
                    "segmentation": encode_mask(mask), "score": float(score)})
    return out


def coco_mask_ap(ground_truth: COCO, detections: list[dict[str, Any]], image_ids: list[int] | None = None,
                 verbose: bool = False) -> dict[str, float]:
    """COCOeval segm summary; with no detections every metric is 0 (pycocotools cannot load an empty list)."""
    if not detections:
        return {name: 0.0 for name in METRIC_NAMES}
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        predictions = ground_truth.loadRes([dict(d) for d in detections])  # loadRes adds numpy fields in place
        evaluator = COCOeval(ground_truth, predictions, iouType="segm")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def load_ground_truth(annotation_json: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(annotation_json)
