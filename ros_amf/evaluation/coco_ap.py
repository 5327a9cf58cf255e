"""COCO mask AP with pycocotools: instance results -> COCO results JSON (RLE) -> COCOeval('segm').

``results_to_coco`` turns ``InstanceResult``s into COCO result dicts; ``coco_mask_ap`` runs
COCOeval and returns AP, AP50, AP75, APs, APm, APl (fractions in 0..1; -1 where COCO has no
ground truth of that size); ``coco_mask_breakdown`` adds AP per category and class-agnostic AP, and
``mask_confusion`` what each ground-truth instance was detected as.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ros_amf.contract.coco_json import read_coco_instances

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


def _run_cocoeval(ground_truth: COCO, detections: list[dict[str, Any]], image_ids: list[int] | None,
                  use_categories: bool, verbose: bool) -> COCOeval:
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        predictions = ground_truth.loadRes([dict(d) for d in detections])  # loadRes adds numpy fields in place
        evaluator = COCOeval(ground_truth, predictions, iouType="segm")
        evaluator.params.useCats = int(use_categories)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_mask_ap(ground_truth: COCO, detections: list[dict[str, Any]], image_ids: list[int] | None = None,
                 verbose: bool = False) -> dict[str, float]:
    """COCOeval segm summary; with no detections every metric is 0 (pycocotools cannot load an empty list)."""
    if not detections:
        return {name: 0.0 for name in METRIC_NAMES}
    evaluator = _run_cocoeval(ground_truth, detections, image_ids, True, verbose)
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}


def coco_mask_breakdown(ground_truth: COCO, detections: list[dict[str, Any]], image_ids: list[int] | None = None
                        ) -> dict[str, Any]:
    """``coco_mask_ap``'s metrics plus where the AP goes: AP and AP50 per category, and the class-agnostic summary.

    Class-agnostic AP (COCOeval with useCats=0) scores masks whatever class they carry, so its gap to
    the class-aware AP is what classification costs; its gap to 1 is what localisation and recall cost.
    Per-category values are -1 for a category with no ground truth in the evaluated images."""
    if not detections:
        zeros = {name: 0.0 for name in METRIC_NAMES}
        return {"metrics": zeros, "per_class": {}, "class_agnostic": dict(zeros)}
    evaluator = _run_cocoeval(ground_truth, detections, image_ids, True, False)
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, categories, areas, max dets]
    per_class = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        name = ground_truth.cats[int(category_id)]["name"]
        all_iou, iou50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        per_class[name] = {"AP": float(all_iou[all_iou > -1].mean()) if (all_iou > -1).any() else -1.0,
                           "AP50": float(iou50[iou50 > -1].mean()) if (iou50 > -1).any() else -1.0}
    agnostic = _run_cocoeval(ground_truth, detections, image_ids, False, False)
    return {"metrics": {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])},
            "per_class": per_class,
            "class_agnostic": {name: float(value) for name, value in zip(METRIC_NAMES, agnostic.stats[:6])}}


def mask_confusion(ground_truth: COCO, detections: list[dict[str, Any]], image_ids: list[int] | None = None,
                   iou_threshold: float = 0.5, min_score: float = 0.05) -> dict[str, dict[str, int]]:
    """For each ground-truth class: what its instances were detected as.

    Each non-crowd ground-truth mask counts once, under the class of the detection (score >= min_score)
    that overlaps it most, or under "missed" when no detection reaches ``iou_threshold``. It shows which
    classes are confused with which, which AP alone cannot."""
    names = {c["id"]: c["name"] for c in ground_truth.loadCats(ground_truth.getCatIds())}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for detection in detections:
        if detection["score"] >= min_score:
            by_image.setdefault(detection["image_id"], []).append(detection)
    table: dict[str, dict[str, int]] = {name: {} for name in names.values()}
    for image_id in image_ids if image_ids is not None else ground_truth.getImgIds():
        candidates = by_image.get(image_id, [])
        for annotation in ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=image_id, iscrowd=False)):
            found = "missed"
            if candidates:
                ious = mask_utils.iou([d["segmentation"] for d in candidates], [ground_truth.annToRLE(annotation)],
                                      [0])[:, 0]
                best = int(np.argmax(ious))
                if ious[best] >= iou_threshold:
                    found = names[candidates[best]["category_id"]]
            row = table[names[annotation["category_id"]]]
            row[found] = row.get(found, 0) + 1
    return table


def load_ground_truth(annotation_json: str) -> COCO:
    # checked first: a malformed file is one sentence naming it, not a pycocotools traceback
    read_coco_instances(Path(annotation_json), "is missing; pass an existing COCO instances file.")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(annotation_json)
