"""``ros-amf eval semantic``: confusion matrix, IoU per class, mIoU, mIoU_S, mIoU_L of a checkpoint.

    ros-amf eval semantic --checkpoint models/fpn_afma_r18slim.pt --data data/synth --split val \\
        --short-side 240 --out results/fpn_afma_val.json

Each image goes through the runtime's pre-processing (resize to --short-side, pad to 32), the
logits of the valid region are resized (bilinear) to the label size and arg-maxed, so scores
are at the ground truth's full resolution, as cityscapesScripts computes them. Prints a table,
writes JSON (the per-class IoUs and the confusion matrix included).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into
from ros_amf.contract.config import ConfigError, from_dict
from ros_amf.data.datasets.camvid import CamVidDataset
from ros_amf.data.datasets.cityscapes import CityscapesDataset
from ros_amf.contract.labels import CAMVID_SMALL_TRAIN_IDS, CITYSCAPES_SMALL_TRAIN_IDS
from ros_amf.evaluation.miou import ConfusionMatrix, format_table, summarize
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
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
def predict(model: torch.nn.Module, image, size: InputSize) -> torch.Tensor:
    """RGB uint8 HxWx3 -> train-id map [H, W] (long) at the image's own resolution."""
    tensor, geometry = preprocess_numpy(image, "rgb8", size)
    logits = model(tensor)["logits"]
    rh, rw = geometry.resized_hw
    logits = F.interpolate(logits[..., :rh, :rw], size=geometry.original_hw, mode="bilinear", align_corners=False)
    return logits.argmax(1)[0]


def evaluate(model: torch.nn.Module, dataset, size: InputSize, small_ids, limit: int = 0, progress=None) -> dict:
    matrix = ConfusionMatrix(len(dataset.class_names))
    count = len(dataset) if not limit else min(limit, len(dataset))
    started = time.perf_counter()
    for index in range(count):
        sample = dataset[index]
        matrix.update(predict(model, sample["image"], size).numpy(), sample["label"])
        if progress:
            progress(index + 1, count)
    summary = summarize(matrix.matrix, list(dataset.class_names), small_ids)
    summary["images"] = count
    summary["seconds_per_image"] = (time.perf_counter() - started) / max(1, count)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf eval semantic", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="dataset root (make-data --out directory or real data)")
    p.add_argument("--dataset", choices=sorted(SMALL_CLASS_IDS), default="cityscapes")
    p.add_argument("--split", default="val")
    p.add_argument("--short-side", type=int, default=240, help="network input short side (as trained)")
    p.add_argument("--max-long-side", type=int, default=2048)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--out", type=Path, help="JSON result file")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, payload = load_semantic_model(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dataset = open_semantic_dataset(args.dataset, args.data, args.split)
    if len(dataset.class_names) != model.cfg.num_classes:
        print(f"error: {args.checkpoint} predicts {model.cfg.num_classes} classes but the {args.dataset} data has "
              f"{len(dataset.class_names)}; evaluate it on the dataset it was trained for.", file=sys.stderr)
        return 2
    size = InputSize(args.short_side, args.max_long_side)
    summary = evaluate(model, dataset, size, SMALL_CLASS_IDS[args.dataset], args.limit,
                       progress=lambda i, n: print(f"\r{i}/{n} images", end="", file=sys.stderr))
    print(file=sys.stderr)
    summary.update({"checkpoint": str(args.checkpoint), "dataset": args.dataset, "split": args.split,
                    "data": str(args.data), "short_side": args.short_side, "afma": model.cfg.afma,
                    "architecture": model.cfg.architecture})
    print(format_table(summary))
    print(f"{summary['images']} images, {summary['seconds_per_image']:.3f} s/image")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
