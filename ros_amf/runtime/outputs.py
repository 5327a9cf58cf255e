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


class OutputsClosed(RuntimeError):
    """Raised by a result consumer whose outputs are closing (a node deactivating): the frame finished but was
    not published, so the engine counts it as dropped, not as published or failed."""


@dataclass
class InstanceTable:
    """One frame's instances as fixed-size tensors on the model's device: the first ``count`` rows are
    the instances in descending score, the rest is filler the host cuts off after the copy."""
    ids: torch.Tensor          # HxW uint8 (K <= 254 slots) or int16; 0 = background, k = instance k-1
    classes: torch.Tensor      # [K] int64
    scores: torch.Tensor       # [K] float32
    boxes: torch.Tensor        # [K,4] int32 x0, y0, x1, y1 (inclusive)
    areas: torch.Tensor        # [K] int64 mask areas before overlaps are resolved
    count: torch.Tensor        # [] int64
    masks: torch.Tensor | None = None   # [K,H,W] bool, when asked for

    def tensors(self) -> dict[str, torch.Tensor]:
        fields = {"ids": self.ids, "classes": self.classes, "scores": self.scores, "boxes": self.boxes,
                  "areas": self.areas, "count": self.count}
        return fields if self.masks is None else {**fields, "masks": self.masks}


def instance_table(masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, live: torch.Tensor,
                   class_filter: torch.Tensor | None = None, keep_masks: bool = False) -> InstanceTable:
    """Order the live instances, build the index map and boxes, all on the tensors' device.

    ``masks`` [K,H,W] bool, ``scores``/``classes``/``live`` [K]. Drops slots that are not live, have an
    empty mask or a class outside ``class_filter``. Where masks overlap the higher-scoring instance
    owns the pixel. Fixed shapes and no boolean indexing: nothing here waits for the device.
    """
    slots, height, width = masks.shape
    # bool reductions as uint8 amax: torch's any() on bool is 50x slower on the CPU
    flags = masks.view(torch.uint8)
    valid = live & (flags.flatten(1).amax(1) > 0)
    if class_filter is not None:
        valid &= torch.isin(classes, class_filter)
    # valid slots first, by descending score; ties keep their slot order
    order = torch.sort(torch.where(valid, scores, float("-inf")), descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(1, slots + 1, device=masks.device))
    # one max-reduction over the slots: each pixel takes the best-ranked valid mask covering it
    # (weight slots + 1 - rank), background has weight 0; (slots + 1 - weight) % (slots + 1) is its id
    dtype = torch.uint8 if slots < 255 else torch.int16
    weights = torch.where(valid, slots + 1 - rank, 0).to(dtype)
    best = (torch.where(masks, weights[:, None, None], 0).amax(0) if slots
            else torch.zeros((height, width), dtype=dtype, device=masks.device))
    ids = (slots + 1 - best) % (slots + 1)
    row_counts = flags.sum(2, dtype=torch.int32)     # [K, H], a contiguous reduction
    rows, cols = row_counts > 0, flags.amax(1) > 0
    y0 = rows.to(torch.uint8).argmax(1)
    y1 = height - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    x0 = cols.to(torch.uint8).argmax(1)
    x1 = width - 1 - cols.flip(1).to(torch.uint8).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).to(torch.int32)
    areas = row_counts.sum(1, dtype=torch.int64)
    return InstanceTable(ids=ids, classes=classes.index_select(0, order), scores=scores.index_select(0, order),
                         boxes=boxes.index_select(0, order), areas=areas.index_select(0, order),
                         count=valid.sum(dtype=torch.int64),
                         masks=masks.index_select(0, order) if keep_masks else None)


def instance_output(host: dict[str, np.ndarray]) -> InstanceOutput:
    """``InstanceTable.tensors()`` copied to the host -> the frame's instances, filler cut off."""
    count = int(host["count"])
    return InstanceOutput(ids=host["ids"].astype(id_map_dtype(count), copy=False), classes=host["classes"][:count],
                          scores=host["scores"][:count], boxes=host["boxes"][:count], areas=host["areas"][:count],
                          masks=host["masks"][:count] if "masks" in host else None)


class HostCopy:
    """The one device->host copy of a frame's results.

    With ``pack`` (the device path) every tensor goes into one byte buffer (widest items first, so each
    stays aligned), copied with ``non_blocking``; ``arrays()`` may be read once the copy's stream has
    finished. Without, the tensors are on the CPU already and ``arrays()`` views them.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], pack: bool):
        self._tensors = dict(sorted(tensors.items(), key=lambda item: -item[1].element_size()))
        self._buffer = None
        if pack:
            packed = torch.cat([t.contiguous().reshape(-1).view(torch.uint8) for t in self._tensors.values()])
            self._buffer = packed.to("cpu", non_blocking=True)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._buffer is None:
            return {name: tensor.numpy() for name, tensor in self._tensors.items()}
        raw, arrays, offset = self._buffer.numpy(), {}, 0
        for name, tensor in self._tensors.items():
            size = tensor.numel() * tensor.element_size()
            dtype = torch.empty(0, dtype=tensor.dtype).numpy().dtype
            arrays[name] = raw[offset:offset + size].view(dtype).reshape(tensor.shape)
            offset += size
        return arrays


def id_map_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint8) if count <= 255 else np.dtype(np.uint16)


OUTPUT_SCALES = ("full", "network")


def check_output_scale(name: str) -> str:
    if name not in OUTPUT_SCALES:
        raise ValueError(f"output_scale '{name}' is not known; use full (the camera's resolution) or network "
                         "(the model's input resolution).")
    return name


def output_hw(geometry: Geometry, scale: str) -> tuple[int, int]:
    """Size of the id image and label map: the camera's (full) or the resized, unpadded network input's."""
    return geometry.original_hw if scale == "full" else geometry.resized_hw


def boxes_in_camera_pixels(instances: InstanceOutput, grid_hw: tuple[int, int],
                           camera_hw: tuple[int, int]) -> InstanceOutput:
    """Instances found on a smaller grid (output_scale network) with boxes and areas in camera pixels, as a
    RegionOfInterest is: pixel x of the grid covers camera columns [x*s, (x+1)*s). The id image stays small."""
    if grid_hw == camera_hw:
        return instances
    sy, sx = camera_hw[0] / grid_hw[0], camera_hw[1] / grid_hw[1]
    b = instances.boxes.astype(np.float64)
    boxes = np.stack([np.floor(b[:, 0] * sx), np.floor(b[:, 1] * sy),
                      np.ceil((b[:, 2] + 1) * sx) - 1, np.ceil((b[:, 3] + 1) * sy) - 1], 1)
    limit = np.array([camera_hw[1] - 1, camera_hw[0] - 1] * 2)
    boxes = np.clip(boxes, 0, limit).astype(np.int32).reshape(-1, 4)
    areas = np.rint(instances.areas * (sx * sy)).astype(np.int64)
    return InstanceOutput(ids=instances.ids, classes=instances.classes, scores=instances.scores, boxes=boxes,
                          areas=areas, masks=instances.masks)


def semantic_labels(logits: torch.Tensor, geometry: Geometry, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """[1,C,Hp,Wp] logits -> HxW uint8 labels at the original size (or ``out_hw``, e.g. the network's).

    Argmax at network resolution, then nearest-neighbour index gathering to the original size:
    far cheaper than upsampling C logit planes, and the same on CPU and GPU.
    """
    (rh, rw), (oh, ow) = geometry.resized_hw, out_hw or geometry.original_hw
    hp, wp = logits.shape[-2:]
    scale_h, scale_w = hp / geometry.padded_hw[0], wp / geometry.padded_hw[1]  # logits may be strided
    lh, lw = max(1, round(rh * scale_h)), max(1, round(rw * scale_w))
    labels = channel_argmax(logits[0, :, :lh, :lw])
    rows = ((torch.arange(oh, device=logits.device) + 0.5) * (lh / oh)).long().clamp_(max=lh - 1)
    cols = ((torch.arange(ow, device=logits.device) + 0.5) * (lw / ow)).long().clamp_(max=lw - 1)
    return labels.index_select(0, rows).index_select(1, cols)


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """[C,H,W] -> HxW uint8 index of the largest score (the first on ties, as ``argmax(0)``), C <= 256.

    A running maximum over the C planes: each step reads whole planes in order, where ``argmax(0)`` on the
    CPU reduces across planes with a stride of H*W (3x slower at 19x320x448). Scores must be finite (the
    caller checks); NaN would not win here as it does in argmax.
    """
    best = scores[0].clone()
    better = torch.empty(scores.shape[1:], dtype=torch.bool, device=scores.device)
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for channel in range(1, scores.shape[0]):   # in place: no new planes a class on the per-frame path
        torch.gt(scores[channel], best, out=better)
        labels.masked_fill_(better, channel)
        torch.maximum(best, scores[channel], out=best)
    return labels


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
            ignore_label: int = 255, *, instances: InstanceOutput | None = None,
            instance_names: list[str] | None = None, semantic_names: list[str] | None = None) -> np.ndarray:
    """Blend the label map (class colours) and instance masks (per-instance colours) over the image.

    With ``instances`` and ``instance_names``, each instance also gets its box and "class score"; with
    ``semantic_names``, a legend lists the classes present in the label map with their colours.
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
    if instances is not None and instance_names is not None:
        _draw_instance_labels(out, instances, instance_names, instance_colours)
    if semantic is not None and semantic_names is not None:
        _draw_legend(out, semantic, semantic_names, class_colours, ignore_label)
    return out


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_scale(image: np.ndarray) -> tuple[float, int]:
    """Font scale and line height that stay readable from 64-pixel thumbnails to 4K frames."""
    scale = float(np.clip(min(image.shape[:2]) / 720.0, 0.3, 1.2))
    return scale, max(8, int(round(22 * scale)))


def _label(out: np.ndarray, text: str, x: int, y: int, colour, scale: float, line: int) -> None:
    """Text on a filled box in ``colour`` whose top-left corner is (x, y), kept inside the image."""
    (width, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x = int(np.clip(x, 0, max(0, out.shape[1] - width - 2)))
    y = int(np.clip(y, 0, max(0, out.shape[0] - line)))
    cv2.rectangle(out, (x, y), (x + width + 2, y + line), colour, thickness=-1)
    dark = sum(int(c) for c in colour) > 384    # black text on light boxes, white on dark
    cv2.putText(out, text, (x + 1, y + line - max(2, line // 5)), _FONT, scale,
                (0, 0, 0) if dark else (255, 255, 255), 1, cv2.LINE_AA)


def _draw_instance_labels(out: np.ndarray, instances: InstanceOutput, names: list[str],
                          colours: np.ndarray) -> None:
    scale, line = _text_scale(out)
    for k, (box, cls, score) in enumerate(zip(instances.boxes.tolist(), instances.classes.tolist(),
                                              instances.scores.tolist())):
        colour = tuple(int(c) for c in colours[k % len(colours)])
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness=max(1, line // 12))
        name = names[int(cls)] if 0 <= int(cls) < len(names) else f"class {int(cls)}"
        _label(out, f"{name} {score:.2f}", x0, y0 - line if y0 >= line else y0, colour, scale, line)


def _draw_legend(out: np.ndarray, labels: np.ndarray, names: list[str], colours: np.ndarray,
                 ignore_label: int) -> None:
    """The classes present in the label map, most pixels first, in the top-right corner."""
    counts = np.bincount(labels.reshape(-1), minlength=256)
    counts[ignore_label] = 0
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0 and c < len(names)]
    scale, line = _text_scale(out)
    rows = present[:max(1, out.shape[0] // line - 1)]
    width = max((cv2.getTextSize(names[c], _FONT, scale, 1)[0][0] for c in rows), default=0)
    x = max(0, out.shape[1] - width - 4)
    for row, cls in enumerate(rows):
        _label(out, names[cls], x, row * line, tuple(int(v) for v in colours[cls % len(colours)]), scale, line)
