"""Accuracy of what a replay actually delivered: offline and streaming COCO mask AP and mIoU.

Ground truth is per bag frame (``FrameTruth``): instance masks with class names and/or a label map
of train ids. It comes from the synthetic bags' sidecar (``ros_amf.data``'s
``load_bag_ground_truth``) or from a user's files keyed by header stamp:
- a COCO instances JSON whose images carry ``"stamp_ns"`` (int) or ``"stamp": {"sec", "nanosec"}``;
- a directory of label PNGs named ``<stamp_ns>.png`` (uint8 train ids, 255 = ignore).

Scores per run:
- ``ap`` / ``miou``: each delivered output against its own frame (offline; dropped frames not scored);
- ``streaming_ap`` / ``streaming_miou``: every sent frame against the most recent output available
  when it was sent (Li, Wang & Ramanan 2020; see ros_amf.evaluation.streaming), so drops and latency count.
Model class ids are mapped to ground-truth classes by name, using the node's LabelInfo topics.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ros_amf.bags.reader import BagImage
from ros_amf.evaluation.streaming import (NO_PREDICTION, DeliveredOutput, miou_with_misses, pair_streaming,
                                          streaming_miou)


class GroundTruthError(ValueError):
    """Ground-truth files that do not fit the bag; the message names the file and the problem."""


@dataclass
class FrameTruth:
    instance_masks: np.ndarray | None = None     # bool [N, H, W]
    instance_classes: list[str] | None = None    # class name per instance
    label: np.ndarray | None = None              # uint8 [H, W] train ids, 255 = ignore


@dataclass
class BagGroundTruth:
    frames: dict[int, FrameTruth]                # bag index -> truth
    source: str
    semantic_class_names: list[str] = field(default_factory=list)
    small_class_ids: list[int] = field(default_factory=list)

    @property
    def has_instances(self) -> bool:
        return any(f.instance_masks is not None for f in self.frames.values())

    @property
    def has_labels(self) -> bool:
        return any(f.label is not None for f in self.frames.values())

    def describe(self) -> str:
        kinds = [k for k, v in (("instances", self.has_instances), ("labels", self.has_labels)) if v]
        return f"ground truth for {len(self.frames)} frames ({', '.join(kinds)}) from {self.source}"

    def scorer(self, spec):
        """The per-run scoring callback handed to the benchmark (needs the graph's output topics)."""
        instances_topic = next((t for t in spec.output_topics if t.endswith("/instances")), None)
        labels_topic = next((t for t in spec.output_topics if t.endswith("/labels")), None)

        def score(replayer, sent) -> dict:
            monitor = replayer.monitor
            records = monitor.records()
            measured = [r for r in records if not r.warmup]
            out: dict = {"notes": []}   # sentences for the report: what the scores could not use
            if instances_topic and self.has_instances:
                info = instances_topic.rsplit("/", 1)[0] + "/instance_label_info"
                names = replayer.label_names(info)
                predictions = {seq: decode_instances(msg, names) for seq, msg in monitor.payloads[instances_topic].items()}
                out.update(score_instances(self, measured, records, instances_topic, predictions))
                unknown = out["instance_detections_unknown_class"]
                if unknown:
                    out["notes"].append(
                        f"{unknown} detections had a class the ground truth does not name and were not scored"
                        + (f" (no class names arrived on {info}, so every class was unnamed: publish the node's "
                           "LabelInfo or replay the graph with the node started by the harness)" if not names else ""))
            if labels_topic and self.has_labels:
                info = labels_topic.rsplit("/", 1)[0] + "/semantic_label_info"
                names = replayer.label_names(info)
                if not names:
                    out["notes"].append(f"no class names arrived on {info}: the label ids were scored as the ground "
                                        "truth's own ids, unchecked")
                lut = class_lookup(names, self.semantic_class_names)
                predictions = {seq: decode_labels(msg, lut) for seq, msg in monitor.payloads[labels_topic].items()}
                out.update(score_labels(self, measured, records, labels_topic, predictions))
            return out

        return score


# -- decoding the node's messages -------------------------------------------------------------------
def image_array(msg) -> np.ndarray:
    """mono8/mono16 Image message -> HxW array (copy)."""
    dtype = np.uint16 if msg.encoding == "mono16" else np.uint8
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * dtype().itemsize]
    return rows.copy().view(dtype).reshape(msg.height, msg.width)


def decode_instances(msg, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """InstanceSegmentation -> (masks bool [N,H,W], class names, scores)."""
    ids = image_array(msg.instance_ids)
    masks, names, scores = [], [], []
    for item in msg.instances:
        masks.append(ids == item.index)
        names.append(class_names[item.class_id] if class_names and item.class_id < len(class_names)
                     else f"class_{item.class_id}")
        scores.append(float(item.score))
    stacked = np.stack(masks) if masks else np.zeros((0, *ids.shape), bool)
    return stacked, names, np.asarray(scores, np.float64)


def class_lookup(model_names: Sequence[str] | None, truth_names: Sequence[str]) -> np.ndarray | None:
    """Model train id -> ground-truth train id by class name (None: same ids); unknown -> NO_PREDICTION."""
    if not model_names or not truth_names or list(model_names) == list(truth_names):
        return None
    lut = np.full(256, NO_PREDICTION, np.uint8)
    for k, name in enumerate(model_names):
        if name in truth_names:
            lut[k] = truth_names.index(name)
    return lut


def decode_labels(msg, lut: np.ndarray | None) -> np.ndarray:
    labels = image_array(msg)
    return labels if lut is None else lut[labels]


# -- scoring ------------------------------------------------------------------------------------------
def _arrivals(records, topic: str) -> list[DeliveredOutput]:
    return [DeliveredOutput(r.seq, r.arrivals[topic]) for r in records if topic in r.arrivals]


def score_instances(truth: BagGroundTruth, measured, records, topic: str, predictions: dict) -> dict:
    from pycocotools.coco import COCO

    from ros_amf.evaluation.coco_ap import coco_mask_ap, encode_mask

    categories = sorted({c for f in truth.frames.values() for c in (f.instance_classes or [])})
    category_id = {name: k + 1 for k, name in enumerate(categories)}
    measured = [r for r in measured if r.bag_index in truth.frames]
    images, annotations = [], []
    for r in measured:
        frame = truth.frames[r.bag_index]
        masks = frame.instance_masks if frame.instance_masks is not None else np.zeros((0, 1, 1), bool)
        height, width = masks.shape[1:] if masks.shape[0] else (frame.label.shape if frame.label is not None
                                                                 else (1, 1))
        images.append({"id": r.seq, "height": int(height), "width": int(width)})
        for mask, name in zip(masks, frame.instance_classes or []):
            ys, xs = np.nonzero(mask)
            if not len(xs):
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": r.seq, "category_id": category_id[name],
                                "segmentation": encode_mask(mask), "area": float(mask.sum()), "iscrowd": 0,
                                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                         float(ys.max() - ys.min() + 1)]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i, "name": n} for n, i in category_id.items()]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()

    def detections(image_id: int, prediction) -> list[dict]:
        masks, names, scores = prediction
        return [{"image_id": image_id, "category_id": category_id[n], "segmentation": encode_mask(m),
                 "score": float(s)} for m, n, s in zip(masks, names, scores) if n in category_id]

    delivered = [r for r in measured if r.seq in predictions]
    offline = [d for r in delivered for d in detections(r.seq, predictions[r.seq])]
    unknown_class = sum(n not in category_id for r in delivered for n in predictions[r.seq][1])
    pairing = pair_streaming([r.sent_at for r in measured], _arrivals(records, topic))
    streaming = [d for r, used in zip(measured, pairing.used_output) if used is not None and used in predictions
                 for d in detections(r.seq, predictions[used])]
    ap_offline = coco_mask_ap(gt, offline, image_ids=[r.seq for r in delivered]) if delivered else None
    ap_streaming = coco_mask_ap(gt, streaming, image_ids=[r.seq for r in measured])
    return {"ap": ap_offline["AP"] if ap_offline else None, "ap50": ap_offline["AP50"] if ap_offline else None,
            "streaming_ap": ap_streaming["AP"], "streaming_ap50": ap_streaming["AP50"],
            "instance_frames_scored_offline": len(delivered), "instance_frames_scored_streaming": len(measured),
            "instance_frames_without_output_streaming": pairing.frames_without_output,
            "instance_detections_unknown_class": unknown_class}


def score_labels(truth: BagGroundTruth, measured, records, topic: str, predictions: dict) -> dict:
    measured = [r for r in measured if r.bag_index in truth.frames and truth.frames[r.bag_index].label is not None]
    num_classes = len(truth.semantic_class_names)
    small = truth.small_class_ids or None
    delivered = [r for r in measured if r.seq in predictions]
    own = [predictions[r.seq] for r in delivered]
    own_truth = [truth.frames[r.bag_index].label for r in delivered]
    offline = miou_with_misses(own, own_truth, num_classes) if delivered else None
    offline_small = miou_with_misses(own, own_truth, num_classes, small) if delivered and small else None
    frame_times = [r.sent_at for r in measured]
    outputs = _arrivals(records, topic)
    labels = [truth.frames[r.bag_index].label for r in measured]
    stream = streaming_miou(frame_times, outputs, predictions, labels, num_classes)
    stream_small = streaming_miou(frame_times, outputs, predictions, labels, num_classes, small) if small else None
    return {"miou": offline["miou"] if offline else None,
            "miou_small": offline_small["miou"] if offline_small else None,
            "streaming_miou": stream["miou"], "streaming_miou_small": stream_small["miou"] if stream_small else None,
            "label_frames_scored_offline": len(delivered), "label_frames_scored_streaming": len(measured),
            "label_frames_without_output_streaming": stream["frames_without_output"]}


# -- loading --------------------------------------------------------------------------------------------
def stamp_of_image(entry: dict) -> int | None:
    if "stamp_ns" in entry:
        return int(entry["stamp_ns"])
    if isinstance(entry.get("stamp"), dict):
        return int(entry["stamp"]["sec"]) * 1_000_000_000 + int(entry["stamp"]["nanosec"])
    return None


def load_coco_by_stamp(path: Path, frames: Sequence[BagImage]) -> BagGroundTruth:
    from ros_amf.data.datasets.coco import decode_segmentation

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GroundTruthError(f"ground truth '{path}' is not a readable COCO JSON file ({err}).") from err
    index_of_stamp = {f.stamp_ns: f.index for f in frames}
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    truth: dict[int, FrameTruth] = {}
    image_of: dict[int, tuple[int, dict]] = {}
    for image in data.get("images", []):
        stamp = stamp_of_image(image)
        if stamp is None:
            raise GroundTruthError(f"image {image.get('id')} in '{path}' has no 'stamp_ns' (or 'stamp' with sec, "
                                   f"nanosec); ground truth for a bag is keyed by header stamp.")
        if stamp in index_of_stamp:
            image_of[image["id"]] = (index_of_stamp[stamp], image)
            truth[index_of_stamp[stamp]] = FrameTruth(np.zeros((0, image["height"], image["width"]), bool), [])
    if not truth:
        raise GroundTruthError(f"no image stamp in '{path}' matches a frame of the bag; check the stamps.")
    for ann in data.get("annotations", []):
        if ann["image_id"] not in image_of or ann.get("iscrowd", 0):
            continue
        index, image = image_of[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], image["height"], image["width"])
        entry = truth[index]
        entry.instance_masks = np.concatenate([entry.instance_masks, mask[None]])
        entry.instance_classes.append(names[ann["category_id"]])
    return BagGroundTruth(truth, f"{path} (COCO, by stamp)")


def load_labels_by_stamp(directory: Path, frames: Sequence[BagImage], class_names: list[str]) -> BagGroundTruth:
    truth = {}
    for frame in frames:
        file = directory / f"{frame.stamp_ns}.png"
        if file.is_file():
            label = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            if label is None or label.ndim != 2:
                raise GroundTruthError(f"'{file}' is not a single-channel label PNG of train ids.")
            truth[frame.index] = FrameTruth(label=label.astype(np.uint8))
    if not truth:
        raise GroundTruthError(f"no '<stamp_ns>.png' in '{directory}' matches a frame stamp of the bag.")
    return BagGroundTruth(truth, f"{directory} (label PNGs by stamp)", class_names)


def load_ground_truth(bag_path: Path, explicit: Path | None, frames: Sequence[BagImage]) -> BagGroundTruth | None:
    """Ground truth named on the command line, else the synthetic bag's sidecar, else None."""
    if explicit is not None:
        if not explicit.exists():
            raise GroundTruthError(f"ground truth '{explicit}' does not exist; pass a COCO JSON with stamps, a "
                                   f"directory of <stamp_ns>.png label maps, or --ground-truth none.")
        if explicit.is_dir():
            from ros_amf.contract.labels import CITYSCAPES_TRAIN_NAMES
            return load_labels_by_stamp(explicit, frames, list(CITYSCAPES_TRAIN_NAMES))
        return load_coco_by_stamp(explicit, frames)
    return load_synthetic_sidecar(bag_path, frames)


def load_synthetic_sidecar(bag_path: Path, frames: Sequence[BagImage]) -> BagGroundTruth | None:
    """The ground truth the data helper writes next to the synthetic bags (None when there is none)."""
    bag_dir = bag_path if bag_path.is_dir() else bag_path.parent
    from ros_amf.bags import load_bag_ground_truth

    loaded = load_bag_ground_truth(bag_dir)  # None when the bag has no ground_truth/ folder
    return None if loaded is None else from_sidecar(loaded, frames, bag_dir)


def from_sidecar(loaded: dict, frames: Sequence[BagImage], bag_dir: Path) -> BagGroundTruth:
    """{stamp_ns: {'label', 'masks', 'classes' (contiguous synthetic thing ids), ...}} -> BagGroundTruth."""
    from ros_amf.contract.labels import CITYSCAPES_SMALL_TRAIN_IDS, CITYSCAPES_TRAIN_NAMES, SYNTH_THING_NAMES

    index_of_stamp = {f.stamp_ns: f.index for f in frames}
    truth = {}
    for stamp, entry in loaded.items():
        if stamp in index_of_stamp:
            names = entry.get("class_names")
            if names is None and entry.get("classes") is not None:
                names = [SYNTH_THING_NAMES[int(c)] for c in entry["classes"]]
            truth[index_of_stamp[stamp]] = FrameTruth(entry.get("masks"), None if names is None else list(names),
                                                      entry.get("label"))
    if not truth:
        raise GroundTruthError(f"no ground-truth stamp in '{bag_dir / 'ground_truth'}' matches a frame of the bag; "
                               f"the sidecar belongs to another recording.")
    return BagGroundTruth(truth, f"{bag_dir / 'ground_truth'} (synthetic sidecar)", list(CITYSCAPES_TRAIN_NAMES),
                          list(CITYSCAPES_SMALL_TRAIN_IDS))
