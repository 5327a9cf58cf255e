"""Confusion matrix, IoU per class, mIoU, mIoU_S, mIoU_L of a semantic model (``ros-amf eval semantic``).

Each image goes through the runtime's pre-processing (resize to the input size, pad to 32), the
logits of the valid region are resized (bilinear) to the label size and arg-maxed, so scores are at
the ground truth's full resolution, as cityscapesScripts computes them.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into
from ros_amf.contract.config import ConfigError, from_dict
from ros_amf.data.datasets.camvid import CamVidDataset
from ros_amf.data.datasets.cityscapes import CityscapesDataset
from ros_amf.data.datasets.label_folder import LabelFolderDataset
from ros_amf.contract.labels import CAMVID_SMALL_TRAIN_IDS, CITYSCAPES_SMALL_TRAIN_IDS
from ros_amf.evaluation.miou import ConfusionMatrix, summarize
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
from ros_amf.runtime.loading import pixels_of
from ros_amf.runtime.preprocess import InputSize, preprocess_numpy

SMALL_CLASS_IDS = {"cityscapes": CITYSCAPES_SMALL_TRAIN_IDS, "camvid": CAMVID_SMALL_TRAIN_IDS}


def open_semantic_dataset(kind: str, root: str | Path, split: str):
    """Cityscapes or CamVid reader; ``root`` may be the dataset folder or a make-data --out folder holding it."""
    root = Path(root)
    if (root / kind).is_dir():
        root = root / kind
    if kind == "cityscapes":
        return CityscapesDataset(root, split, instances=False)
    return CamVidDataset(root, split)


def open_semantic_folder(images: str | Path, labels: str | Path, classes: str | Path) -> LabelFolderDataset:
    """Any image folder + label-PNG folder + class table (data.datasets.label_folder)."""
    return LabelFolderDataset(images, labels, classes)


def small_ids_of(dataset, kind: str | None = None) -> tuple[int, ...]:
    """The small-object classes: the folder data set's own table, else the paper's set of ``kind``."""
    own = getattr(dataset, "small_ids", None)
    return tuple(own) if own is not None else tuple(SMALL_CLASS_IDS.get(kind or "", ()))


def load_semantic_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Model in eval mode, float32, from a training or shipped checkpoint."""
    payload = load_checkpoint(path, task="semantic")
    try:
        cfg = from_dict(SemanticModelConfig, payload["model_config"], where=f"{path}: model_config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    model = build_semantic_model(cfg)
    payload["state_dict"] = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    load_state_into(model, payload, path)
    return model.eval(), payload


@torch.no_grad()
def logits_at_image_size(model: torch.nn.Module, image, size: InputSize,
                         device: str | torch.device = "cpu") -> torch.Tensor:
    """RGB uint8 HxWx3 -> class logits [C, H, W] (float32, on the CPU) at the image's own resolution."""
    tensor, geometry = preprocess_numpy(image, "rgb8", size, pixels=pixels_of(model))
    logits = model(tensor.to(device))["logits"].float().cpu()
    rh, rw = geometry.resized_hw
    logits = F.interpolate(logits[..., :rh, :rw], size=geometry.original_hw, mode="bilinear", align_corners=False)
    return logits[0]


def predict(model: torch.nn.Module, image, size: InputSize, device: str | torch.device = "cpu") -> torch.Tensor:
    """RGB uint8 HxWx3 -> train-id map [H, W] (long, on the CPU) at the image's own resolution."""
    return logits_at_image_size(model, image, size, device).argmax(0)


def evaluate(model: torch.nn.Module, dataset, size: InputSize, small_ids, limit: int = 0, progress=None,
             device: str | torch.device = "cpu", class_names: list[str] | None = None) -> dict:
    """mIoU summary of ``model`` over the first ``limit`` images of ``dataset`` (0 = all);
    ``progress(done, total)`` is called after each image. The table names the classes ``class_names``
    (the checkpoint's own), else as the data set does."""
    matrix = ConfusionMatrix(len(dataset.class_names))
    count = len(dataset) if not limit else min(limit, len(dataset))
    started = time.perf_counter()
    unknown_pixels, images_with_unknown = 0, 0   # label values the class table does not list: scored as ignore
    for index in range(count):
        sample = dataset[index]
        matrix.update(predict(model, sample["image"], size, device).numpy(), sample["label"])
        unknown = int(sample.get("unknown_label_pixels", 0))
        unknown_pixels += unknown
        images_with_unknown += unknown > 0
        if progress:
            progress(index + 1, count)
    summary = summarize(matrix.matrix, list(class_names or dataset.class_names), small_ids)
    summary["images"] = count
    summary["unknown_label_pixels"] = unknown_pixels
    summary["images_with_unknown_labels"] = images_with_unknown
    summary["seconds_per_image"] = (time.perf_counter() - started) / max(1, count)
    return summary
