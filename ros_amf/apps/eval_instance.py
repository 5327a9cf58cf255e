"""``ros-amf eval instance``: COCO mask AP and per-image model latency of an instance checkpoint.

    ros-amf eval instance --checkpoint models/amf_sparseinst_r18slim.pt --data DATA/coco --split val
    ros-amf eval instance --checkpoint models/x.pt --ann my/annotations.json --images my/images

Images are read from ``DATA/images/<split>``, ground truth from
``DATA/annotations/instances_<split>.json``; each image is pre-processed exactly like the runtime,
at the checkpoint's own input size unless the flags say otherwise (ros_amf.evaluation.instance);
or from any COCO instances JSON with --ann / --images. Writes the results as a COCO results JSON (RLE masks)
next to a metrics JSON, in --out or runs/eval_instance/<checkpoint>_<split>/.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ros_amf.apps.common import add_input_size_flags, input_size_from
from ros_amf.contract.checkpoint import CheckpointError
from ros_amf.runtime.backends import CHOICES, backend_module
from ros_amf.runtime.loading import check_device
from ros_amf.contract.config import ConfigError
from ros_amf.evaluation.instance import evaluate_model, load_instance_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf eval instance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="instance checkpoint (.pt)")
    parser.add_argument("--data", help="COCO-layout directory (images/<split>, annotations/)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--ann", type=Path, help="any COCO instances JSON (instead of --data); with --images")
    parser.add_argument("--images", type=Path, help="the folder the --ann file's file_name fields are under")
    add_input_size_flags(parser, "the checkpoint's model config")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--labels-per-mask", type=int, default=1,
                        help="report each mask under its K best classes (default 1: SparseInst's inference; "
                             "K > 1 measures how much AP near-tie classifications cost)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--backend", choices=CHOICES, default="torch", help="who runs the forward (runtime.backends)")
    parser.add_argument("--out", default=None, help="directory for results JSON + metrics JSON "
                                                     "(default: runs/eval_instance/<checkpoint>_<split or ann>/)")
    return parser


def print_summary(summary: dict, device: str) -> None:
    print(" ".join(f"{k}={v:.3f}" for k, v in summary["metrics"].items()))
    if summary.get("class_agnostic"):
        print("class-agnostic " + " ".join(f"{k}={v:.3f}" for k, v in summary["class_agnostic"].items()))
        print("AP50 per class: " + ", ".join(f"{name} {v['AP50']:.2f}" for name, v in summary["per_class"].items()))
        confused = sorted(((n, truth, found) for truth, row in summary["confusion_iou50"].items()
                           for found, n in row.items() if found not in (truth, "missed")), reverse=True)[:4]
        if confused:
            print("most confused (IoU >= 0.5): " + ", ".join(f"{t} as {f} {n}" for n, t, f in confused))
    print(f"images={summary['images']} latency_ms mean={summary['latency_ms_mean']:.1f} "
          f"median={summary['latency_ms_median']:.1f} ({device}); skipped unreadable images: "
          f"{len(summary['skipped_images'])}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be 1 or more images, not {args.limit}; leave it out to evaluate them all.",
              file=sys.stderr)
        return 2
    if args.labels_per_mask < 1:
        print(f"error: --labels-per-mask must be 1 or more, not {args.labels_per_mask}.", file=sys.stderr)
        return 2
    if (args.ann is None) != (args.images is None) or (args.ann is None) == (args.data is None):
        print("error: pass either --data DIR (COCO layout) or --ann FILE --images DIR (any COCO instances JSON).",
              file=sys.stderr)
        return 2
    if args.ann is not None:
        annotations, image_dir, data, tag = args.ann, args.images, args.ann, args.ann.stem
    else:
        data = Path(args.data)
        annotations = data / "annotations" / f"instances_{args.split}.json"
        image_dir, tag = data / "images" / args.split, args.split
    if not Path(annotations).is_file():
        print(f"error: '{annotations}' does not exist; pass --data pointing at a COCO-layout directory "
              "(ros-amf make-data writes DIR/coco) or --ann FILE --images DIR.", file=sys.stderr)
        return 2
    try:
        check_device(args.device)
        model, cfg, class_names = load_instance_model(args.checkpoint)
        size = input_size_from(args, cfg.input_size)
        model, notes = backend_module(args.backend, model.to(args.device), "instance model", args.device)
        report = evaluate_model(model, class_names, annotations, image_dir, size, args.device,
                                args.limit, labels_per_mask=args.labels_per_mask)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report["images"] == 0:
        print(f"error: no image named in '{annotations}' could be read from '{image_dir}' "
              f"({len(report['skipped_images'])} unreadable); point --images (or --data) at the folder that holds "
              "them.", file=sys.stderr)
        return 2
    # results belong to a run, never inside the package's models/ folder
    out = Path(args.out) if args.out else Path("runs") / "eval_instance" / f"{Path(args.checkpoint).stem}_{tag}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results_segm.json").write_text(json.dumps(report.pop("detections")))
    summary = {"checkpoint": str(args.checkpoint), "data": str(data), "split": tag,
               "input": {"short_side": size.short_side, "max_long_side": size.max_long_side}, "device": args.device,
               "labels_per_mask": args.labels_per_mask,
               "backend": getattr(model, "backend", "torch") if not getattr(model, "fallback_reason", None) else "torch",
               **report}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, args.device)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {out / 'results_segm.json'} and {out / 'metrics.json'}")
    return 0
