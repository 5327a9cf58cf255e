"""``ros-amf eval instance``: COCO mask AP and per-image model latency of an instance checkpoint.

    ros-amf eval instance --checkpoint models/amf_sparseinst_r18_slim.pt --data DATA/coco --split val

Images are read from ``DATA/images/<split>``, ground truth from
``DATA/annotations/instances_<split>.json``; each image is pre-processed exactly like the runtime
(ros_amf.runtime.preprocess), the model output post-processed to the original size, and the
results written as a COCO results JSON (RLE masks) next to a metrics JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import torch

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, load_state_into
from ros_amf.contract.config import ConfigError, from_dict
from ros_amf.evaluation.coco_ap import coco_mask_breakdown, load_ground_truth, mask_confusion, results_to_coco
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.modeling.sparseinst.postprocess import postprocess_instances
from ros_amf.runtime.preprocess import InputSize, preprocess_numpy


def category_ids_for(class_names: list[str], ground_truth) -> list[int]:
    """COCO category id of each contiguous class, matched by name."""
    by_name = {c["name"]: c["id"] for c in ground_truth.loadCats(ground_truth.getCatIds())}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise ValueError(f"classes {missing} of the model are not categories of the annotation file; "
                         "evaluate on data with the same class names.")
    return [by_name[n] for n in class_names]


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, class_names: list[str], annotation_json: str | Path, image_dir: str | Path,
                   input_size: InputSize, device: torch.device | str = "cpu", limit: int | None = None,
                   score_threshold: float = 0.005, mask_threshold: float = 0.45,
                   labels_per_mask: int = 1) -> dict[str, Any]:
    """Run ``model`` over the annotated images; returns metrics, latency and the COCO detections."""
    ground_truth = load_ground_truth(str(annotation_json))
    category_ids = category_ids_for(class_names, ground_truth)
    image_ids = sorted(ground_truth.getImgIds())[:limit]
    was_training = model.training
    model.eval()
    detections, latencies, skipped = [], [], []
    for image_id in image_ids:
        info = ground_truth.loadImgs(image_id)[0]
        path = Path(image_dir) / info["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append(str(path))
            continue
        tensor, geometry = preprocess_numpy(image, "bgr8", input_size)
        tensor = tensor.to(device)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = model(tensor)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        latencies.append((time.perf_counter() - start) * 1000)
        result = postprocess_instances(outputs, geometry.resized_hw, geometry.original_hw,
                                       score_threshold=score_threshold, mask_threshold=mask_threshold,
                                       labels_per_mask=labels_per_mask)[0]
        detections += results_to_coco(result, image_id, category_ids)
    model.train(was_training)
    evaluated = [i for i in image_ids if str(Path(image_dir) / ground_truth.loadImgs(i)[0]["file_name"]) not in skipped]
    breakdown = {"metrics": {}}
    if evaluated:
        breakdown = coco_mask_breakdown(ground_truth, detections, evaluated)
        breakdown["confusion_iou50"] = mask_confusion(ground_truth, detections, evaluated)
    return {**breakdown, "images": len(evaluated), "skipped_images": skipped,
            "latency_ms_mean": statistics.fmean(latencies) if latencies else None,
            "latency_ms_median": statistics.median(latencies) if latencies else None,
            "detections": detections}


def load_instance_model(checkpoint: str | Path) -> tuple[torch.nn.Module, InstanceModelConfig, list[str]]:
    payload = load_checkpoint(checkpoint, task="instance")
    cfg = from_dict(InstanceModelConfig, payload["model_config"], where=f"{checkpoint}:model_config")
    model = build_instance_model(cfg)
    load_state_into(model, payload, checkpoint)
    return model.eval(), cfg, payload["class_names"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf eval instance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="instance checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="COCO-layout directory (images/<split>, annotations/)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--short-side", type=int, default=None, help="input short side (default: model config)")
    parser.add_argument("--max-side", type=int, default=None, help="input long-side cap (default: model config)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--labels-per-mask", type=int, default=1,
                        help="report each mask under its K best classes (default 1: SparseInst's inference; "
                             "K > 1 measures how much AP near-tie classifications cost)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="directory for results JSON + metrics JSON "
                                                     "(default: next to the checkpoint, eval_<split>/)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.labels_per_mask < 1:
        print(f"error: --labels-per-mask must be 1 or more, not {args.labels_per_mask}.", file=sys.stderr)
        return 2
    data = Path(args.data)
    annotations = data / "annotations" / f"instances_{args.split}.json"
    image_dir = data / "images" / args.split
    if not annotations.is_file():
        print(f"error: '{annotations}' does not exist; pass --data pointing at a COCO-layout directory "
              "(ros-amf make-data writes DIR/coco).", file=sys.stderr)
        return 2
    try:
        model, cfg, class_names = load_instance_model(args.checkpoint)
        size = InputSize(args.short_side or cfg.input_size.short_side, args.max_side or cfg.input_size.max_long_side)
        report = evaluate_model(model.to(args.device), class_names, annotations, image_dir, size, args.device,
                                args.limit, labels_per_mask=args.labels_per_mask)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix("").parent / f"eval_{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_segm.json").write_text(json.dumps(report.pop("detections")))
    summary = {"checkpoint": str(args.checkpoint), "data": str(data), "split": args.split,
               "input": {"short_side": size.short_side, "max_side": size.max_long_side}, "device": args.device,
               "labels_per_mask": args.labels_per_mask,
               **report}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    metrics = summary["metrics"]
    print(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    if summary.get("class_agnostic"):
        print("class-agnostic " + " ".join(f"{k}={v:.3f}" for k, v in summary["class_agnostic"].items()))
        print("AP50 per class: " + ", ".join(f"{name} {v['AP50']:.2f}" for name, v in summary["per_class"].items()))
        confused = sorted(((n, truth, found) for truth, row in summary["confusion_iou50"].items()
                           for found, n in row.items() if found not in (truth, "missed")), reverse=True)[:4]
        if confused:
            print("most confused (IoU >= 0.5): " + ", ".join(f"{t} as {f} {n}" for n, t, f in confused))
    print(f"images={summary['images']} latency_ms mean={summary['latency_ms_mean']:.1f} "
          f"median={summary['latency_ms_median']:.1f} ({args.device}); skipped unreadable images: "
          f"{len(summary['skipped_images'])}")
    print(f"wrote {out / 'results_segm.json'} and {out / 'metrics.json'}")
    return 0
