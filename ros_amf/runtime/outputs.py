"""Turning model results into what the outputs need: instance-index maps, boxes, label maps, overlays.

All of it is vectorised torch/numpy (no per-pixel Python): post-processing and message filling are
where Python perception nodes usually lose their time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ros_amf.runtime.preprocess import Geometry


@dataclass
class InstanceOutput:
    """Instances of one frame at input-image resolution, sorted by descending score."""
    ids: np.ndarray            # HxW uint8 (<=255 instances) or uint16; 0 = background, k = instance k-1
    classes: np.ndarray        # [N] int64 contiguous class ids
    scores: np.ndarray         # [N] float32
    boxes: np.ndarray          # [N,4] int32 x0, y0, x1, y1 (inclusive)
    areas: np.ndarray          # [N] int64 mask areas before overlaps are resolved
    masks: np.ndarray | None = None   # [N,H,W] bool, only when the engine keeps masks (evaluation)


@dataclass
class SemanticOutput:
    labels: np.ndarray         # HxW uint8 class ids


@dataclass
class FrameResult:
    seq: int
    tag: object                # whatever the caller attached (the ROS header)
    geometries: dict[str, Geometry] = field(default_factory=dict)   # task -> where the frame went in its network
    instances: InstanceOutput | None = None
    semantic: SemanticOutput | None = None
    image_rgb: np.ndarray | None = None   # the input as RGB, kept only when an overlay is wanted
    timings_ms: dict[str, float] = field(default_factory=dict)
    t_in: float = 0.0
    error: str | None = None   # failure reason; the frame is counted, not published


class BadModelOutput(RuntimeError):
    """The model's output breaks the output contract (keys, shapes); the frame is failed and counted."""


class NonFiniteOutput(BadModelOutput):
    """The model produced NaN or inf; the frame is failed and counted, the pipeline continues."""


def instance_tensors(masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                     class_filter: torch.Tensor | None = None, min_score: float = 0.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Filter and order instances, build the index map and boxes on the tensors' device.

    Drops instances with an empty mask, a final (mask-rescored) score below ``min_score`` or a class
    outside ``class_filter``. Returns (ids HxW int32, classes, scores, boxes [N,4], areas, masks) with
    instances sorted by descending score; where masks overlap the higher-scoring instance owns the pixel.
    """
    if classes.numel():
        keep = (scores >= min_score) & masks.flatten(1).any(1)
        if class_filter is not None:
            keep &= torch.isin(classes, class_filter)
        masks, scores, classes = masks[keep], scores[keep], classes[keep]
    order = torch.argsort(scores, descending=True)
    masks, scores, classes = masks[order], scores[order], classes[order]
    n, height, width = masks.shape
    if n == 0:
        empty = torch.zeros((0, 4), dtype=torch.int32, device=masks.device)
        return (torch.zeros((height, width), dtype=torch.int32, device=masks.device), classes, scores, empty,
                torch.zeros(0, dtype=torch.int64, device=masks.device), masks)
    # paint from the lowest to the highest score, so the higher-scoring instance owns overlaps
    # (N whole-frame fills are far cheaper than an argmax across the instance axis on a CPU)
    ids = torch.zeros((height, width), dtype=torch.int32, device=masks.device)
    for k in range(n - 1, -1, -1):
        ids.masked_fill_(masks[k], k + 1)
    row_counts = masks.view(torch.uint8).sum(2, dtype=torch.int32)     # [N, H], a contiguous reduction
    rows, cols = row_counts > 0, masks.any(1)
    y0 = rows.to(torch.uint8).argmax(1)
    y1 = height - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    x0 = cols.to(torch.uint8).argmax(1)
    x1 = width - 1 - cols.flip(1).to(torch.uint8).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).to(torch.int32)
    areas = row_counts.sum(1, dtype=torch.int64)
    return ids, classes, scores, boxes, areas, masks


def prescreen_queries(outputs: dict[str, torch.Tensor], score_threshold: float, mask_threshold: float,
                      slack: float = 0.98) -> dict[str, torch.Tensor]:
    """Keep only the queries that can reach ``score_threshold`` after mask rescoring (batch of one).

    Up-sampling every candidate mask to the image size dominates SparseInst post-processing on a CPU
    (hundreds of ms at 640x480 for a few dozen candidates), yet most candidates fall below the
    published threshold once rescored. This computes the same final score cheaply at mask resolution
    (score = sqrt(sigmoid(class) * sigmoid(objectness)) * maskness, as in postprocess_instances) and
    drops the hopeless queries first; ``slack`` keeps borderline ones, the exact cut is made on the
    final scores later. The result then equals post-processing all queries and cutting at the threshold.
    """
    if score_threshold <= 0:
        return outputs
    logits, masks, objectness = outputs["pred_logits"], outputs["pred_masks"], outputs["pred_scores"]
    scores = torch.sqrt(torch.sigmoid(logits[0]) * torch.sigmoid(objectness[0])).amax(-1)
    probs = torch.sigmoid(masks[0])
    binary = probs > mask_threshold
    maskness = (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1e-6)
    keep = (scores * maskness) >= score_threshold * slack
    return {**outputs, "pred_logits": logits[:, keep], "pred_masks": masks[:, keep], "pred_scores": objectness[:, keep]}


def id_map_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint8) if count <= 255 else np.dtype(np.uint16)


def semantic_labels(logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """[1,C,Hp,Wp] logits -> HxW uint8 labels at the original size.

    Argmax at network resolution, then nearest-neighbour index gathering to the original size:
    far cheaper than upsampling C logit planes, and the same on CPU and GPU.
    """
    (rh, rw), (oh, ow) = geometry.resized_hw, geometry.original_hw
    hp, wp = logits.shape[-2:]
    scale_h, scale_w = hp / geometry.padded_hw[0], wp / geometry.padded_hw[1]  # logits may be strided
    lh, lw = max(1, round(rh * scale_h)), max(1, round(rw * scale_w))
    labels = logits[0, :, :lh, :lw].argmax(0).to(torch.uint8)
    rows = ((torch.arange(oh, device=logits.device) + 0.5) * (lh / oh)).long().clamp_(max=lh - 1)
    cols = ((torch.arange(ow, device=logits.device) + 0.5) * (lw / ow)).long().clamp_(max=lw - 1)
    return labels.index_select(0, rows).index_select(1, cols)


def palette(count: int, seed: int = 7) -> np.ndarray:
    """Distinct, stable colours (uint8 [count,3]) for classes or instance indices."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, size=(max(count, 1), 3), dtype=np.int64)
    return colours.astype(np.uint8)


def _colourise(index: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """HxW index map -> HxWx3 colours; OpenCV's LUT for uint8 maps (several times faster than numpy indexing)."""
    if index.dtype == np.uint8:
        table = np.zeros((256, 1, 3), np.uint8)
        table[:min(len(lut), 256), 0] = lut[:256]
        return cv2.LUT(cv2.merge([index, index, index]), table)
    return np.take(lut, index, axis=0)


def overlay(image_rgb: np.ndarray, semantic: np.ndarray | None, instance_ids: np.ndarray | None,
            class_colours: np.ndarray, instance_colours: np.ndarray, alpha: float = 0.5,
            ignore_label: int = 255) -> np.ndarray:
    """Blend the label map (class colours) and instance masks (per-instance colours) over the image.

    Whole-frame look-up tables and OpenCV blends/masked copies (no numpy boolean gathers).
    """
    out = np.ascontiguousarray(image_rgb).copy()
    if semantic is not None:
        blended = cv2.addWeighted(out, 1 - alpha, _colourise(semantic, class_colours), alpha, 0)
        cv2.copyTo(blended, (semantic != ignore_label).view(np.uint8), out)
    if instance_ids is not None and instance_ids.any():
        count = int(instance_ids.max())
        lut = np.zeros((count + 1, 3), np.uint8)
        lut[1:] = instance_colours[np.arange(count) % len(instance_colours)]
        blended = cv2.addWeighted(out, 1 - alpha, _colourise(instance_ids, lut), alpha, 0)
        cv2.copyTo(blended, (instance_ids > 0).view(np.uint8), out)
        # a dark outline shows where one instance ends and the next begins
        edge = np.zeros(instance_ids.shape, bool)
        edge[:-1] |= instance_ids[:-1] != instance_ids[1:]
        edge[:, :-1] |= instance_ids[:, :-1] != instance_ids[:, 1:]
        cv2.copyTo(cv2.convertScaleAbs(out, alpha=0.3), edge.view(np.uint8), out)
    return out
