"""``ros-amf eval semantic``: confusion matrix, IoU per class, mIoU, mIoU_S, mIoU_L of a checkpoint.

    ros-amf eval semantic --checkpoint models/fpn_afma_r18slim.pt --data data/synth --split val \\
        --out results/fpn_afma_val.json
    ros-amf eval semantic --checkpoint runs/x/model.pt --images my/images --labels my/labels --classes my/classes.yaml

Each image goes through the runtime's pre-processing at the checkpoint's own input size unless
--input-short-side / --input-max-long-side say otherwise, and is scored at the ground truth's full
resolution (ros_amf.evaluation.semantic). Prints a table, writes JSON (the per-class IoUs and the
confusion matrix included).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ros_amf.apps.common import add_input_size_flags, add_semantic_data_flags, input_size_from, open_semantic_data
from ros_amf.contract.checkpoint import CheckpointError
from ros_amf.evaluation.miou import format_table
from ros_amf.evaluation.semantic import SMALL_CLASS_IDS, evaluate, load_semantic_model, small_ids_of
from ros_amf.runtime.backends import CHOICES, backend_module


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf eval semantic", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    add_semantic_data_flags(p)
    p.add_argument("--dataset", choices=sorted(SMALL_CLASS_IDS), default="cityscapes")
    p.add_argument("--split", default="val")
    add_input_size_flags(p, "the checkpoint's model config")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--backend", choices=CHOICES, default="torch", help="who runs the forward (runtime.backends)")
    p.add_argument("--out", type=Path, help="JSON result file")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, payload = load_semantic_model(args.checkpoint)
        size = input_size_from(args, model.cfg.input_size)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model, notes = backend_module(args.backend, model, "semantic model", task="semantic")
    try:
        dataset = open_semantic_data(args)
    except ValueError as exc:   # neither or both sources given; DatasetFileError: the file and what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = args.dataset if args.data is not None else "folder"
    if len(dataset.class_names) != model.cfg.num_classes:
        print(f"error: {args.checkpoint} predicts {model.cfg.num_classes} classes but the {kind} data has "
              f"{len(dataset.class_names)}; evaluate it on the dataset it was trained for.", file=sys.stderr)
        return 2
    summary = evaluate(model, dataset, size, small_ids_of(dataset, args.dataset), args.limit,
                       class_names=list(payload.get("class_names") or []) or None,   # the names the weights carry
                       progress=lambda i, n: print(f"\r{i}/{n} images", end="", file=sys.stderr))
    print(file=sys.stderr)
    summary.update({"checkpoint": str(args.checkpoint), "dataset": kind, "split": args.split,
                    "data": str(args.data or args.labels), "input": {"short_side": size.short_side, "max_long_side": size.max_long_side},
                    "afma": model.cfg.afma, "architecture": model.cfg.architecture})
    summary["backend"] = getattr(model, "backend", "torch") if not getattr(model, "fallback_reason", None) else "torch"
    print(format_table(summary))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if summary["unknown_label_pixels"]:
        print(f"warning: {summary['unknown_label_pixels']} label pixels in {summary['images_with_unknown_labels']} of "
              f"{summary['images']} images have values the class table does not list; they were scored as ignore: "
              "add them to the class table (--classes) to score them.", file=sys.stderr)
    print(f"{summary['images']} images, {summary['seconds_per_image']:.3f} s/image")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0
