"""Streaming evaluation (Li, Wang & Ramanan, "Towards Streaming Perception", ECCV 2020).

Offline evaluation scores the output of frame i against the ground truth of frame i, however
late it came. Streaming evaluation scores every ground-truth frame against the most recent output
that was *available* when that frame was captured (Sec. 3 of the paper: the prediction with the
latest timestamp strictly before the query time, Eq. 1-2), so dropped frames and latency cost
accuracy. Frames before the first output are scored against an empty prediction.

This module only builds the pairing; the metric itself (COCO AP, mIoU) is computed by the usual
offline evaluators on the re-paired predictions, exactly as the paper does.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

P = TypeVar("P")


@dataclass(frozen=True)
class DeliveredOutput:
    """One output of the perception graph: for which input frame, and when it became available."""

    input_index: int
    available_at: float  # seconds, on the same clock as the frame times


@dataclass(frozen=True)
class StreamingPairing:
    """For every ground-truth frame, the input index whose output is scored against it (None: nothing yet)."""

    used_output: list[int | None]

    @property
    def frames_without_output(self) -> int:
        return sum(u is None for u in self.used_output)

    def staleness(self, frame_indices: Sequence[int] | None = None) -> list[int | None]:
        """How many frames old the scored output is (0 would need zero latency)."""
        frames = range(len(self.used_output)) if frame_indices is None else frame_indices
        return [None if u is None else f - u for f, u in zip(frames, self.used_output)]


def pair_streaming(frame_times: Sequence[float], outputs: Sequence[DeliveredOutput]) -> StreamingPairing:
    """Most recent output available strictly before each frame time (outputs may arrive out of order)."""
    if any(b < a for a, b in zip(frame_times, frame_times[1:])):
        raise ValueError("frame_times must be non-decreasing (the capture times of the ground-truth frames).")
    by_arrival = sorted(outputs, key=lambda o: o.available_at)
    arrival_times = [o.available_at for o in by_arrival]
    used: list[int | None] = []
    for t in frame_times:
        # the output that arrived last before t is the state of the stream at t
        position = bisect.bisect_left(arrival_times, t) - 1
        used.append(by_arrival[position].input_index if position >= 0 else None)
    return StreamingPairing(used)


@dataclass(frozen=True)
class StreamedPredictions(Generic[P]):
    predictions: list[P]           # one per ground-truth frame, ready for an offline evaluator
    pairing: StreamingPairing


def streamed_predictions(frame_times: Sequence[float], outputs: Sequence[DeliveredOutput],
                         predictions: Mapping[int, P], empty: Callable[[int], P]) -> StreamedPredictions[P]:
    """Re-pair predictions for streaming scoring.

    predictions: input index -> that frame's output; empty(frame_index): the prediction used for a
    frame that has no output available yet (no instances / all pixels unlabelled).
    """
    pairing = pair_streaming(frame_times, outputs)
    chosen = [predictions[u] if u is not None else empty(i) for i, u in enumerate(pairing.used_output)]
    return StreamedPredictions(chosen, pairing)


# A label map pixel with this value means "no prediction": every ground-truth pixel there is a miss.
NO_PREDICTION = 254


def confusion_with_misses(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C+1] confusion counts (rows: ground truth, last column: pixels without a prediction).

    The extra column lets streaming mIoU charge frames that had no output yet as false negatives,
    which a plain C x C confusion matrix would silently drop. As in ros_amf.evaluation.miou, pixels
    whose ground truth is not a class id (255 = ignore) are not counted.
    """
    if prediction.shape != label.shape:
        raise ValueError(f"label map of shape {prediction.shape} cannot be scored against ground truth of "
                         f"shape {label.shape}; outputs must be at the input resolution.")
    valid = label < num_classes
    gt = label[valid].astype(np.int64)
    pred = prediction[valid].astype(np.int64)
    pred = np.where(pred < num_classes, pred, num_classes)
    return np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU = TP / (GT + predicted - TP) per class; NaN for classes absent from both."""
    num_classes = confusion.shape[0]
    tp = np.diag(confusion[:, :num_classes]).astype(np.float64)
    gt = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion[:, :num_classes].sum(axis=0).astype(np.float64)
    union = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_with_misses(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int,
                     class_subset: Sequence[int] | None = None) -> dict:
    """mIoU over frames where a prediction may be NO_PREDICTION (or any id >= num_classes): a miss."""
    confusion = np.zeros((num_classes, num_classes + 1), np.int64)
    for prediction, label in zip(predictions, labels):
        confusion += confusion_with_misses(prediction, label, num_classes)
    iou = iou_per_class(confusion)
    classes = list(range(num_classes)) if class_subset is None else list(class_subset)
    chosen = iou[classes]
    return {"miou": float(np.nanmean(chosen)) if np.isfinite(chosen).any() else float("nan"),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou]}


def streaming_miou(frame_times: Sequence[float], outputs: Sequence[DeliveredOutput],
                   label_maps: Mapping[int, np.ndarray], ground_truth: Sequence[np.ndarray], num_classes: int,
                   class_subset: Sequence[int] | None = None) -> dict:
    """Streaming mIoU over the ground-truth frames (mIoU over class_subset, e.g. small objects, if given)."""
    streamed = streamed_predictions(frame_times, outputs, label_maps,
                                    empty=lambda i: np.full_like(ground_truth[i], NO_PREDICTION))
    result = miou_with_misses(streamed.predictions, ground_truth, num_classes, class_subset)
    return {**result, "frames": len(ground_truth), "frames_without_output": streamed.pairing.frames_without_output}
