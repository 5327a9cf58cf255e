"""``ros-amf calibrate semantic``: choose and store the class-prior correction of a semantic checkpoint.

    ros-amf calibrate semantic --checkpoint runs/x/export.pt --data data/synth --split val --out models/x.pt
    ros-amf calibrate semantic --checkpoint runs/seg/model.pt --images my/val_images --labels my/val_labels \\
        --classes my/classes.yaml --out runs/seg/calibrated.pt

A model trained with class-weighted NLL over-predicts its rare classes; adding -alpha · log w_k to the
logits at inference undoes that (ros_amf.evaluation.prior). This scores every --alphas value on the
given split with one forward per image, prints the table, and writes --out: the same checkpoint with
the chosen offsets in its ``logit_bias`` buffer (and the table in its meta), which the runtime, eval
and ONNX / OpenVINO exports then apply. Choose alpha on a validation split, never on the test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ros_amf.apps.common import add_input_size_flags, add_semantic_data_flags, input_size_from, open_semantic_data
from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sha256_of
from ros_amf.evaluation.prior import DEFAULT_ALPHAS, best_alpha, prior_bias, recorded_class_weights, score_alphas
from ros_amf.evaluation.semantic import SMALL_CLASS_IDS, load_semantic_model, small_ids_of


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf calibrate semantic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="a semantic checkpoint trained by ros-amf")
    add_semantic_data_flags(p)
    p.add_argument("--dataset", choices=sorted(SMALL_CLASS_IDS), default="cityscapes")
    p.add_argument("--split", default="val", help="the split alpha is chosen on (a validation split)")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                   help="the corrections to score; the best mIoU is stored")
    p.add_argument("--alpha", type=float, default=None, help="store this alpha (the table is still printed)")
    add_input_size_flags(p, "the checkpoint's model config")
    p.add_argument("--limit", type=int, default=0, help="score only the first N images (0 = all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--out", required=True, type=Path, help="the calibrated checkpoint to write (fp16 like --checkpoint)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out.resolve() == args.checkpoint.resolve():
        print("error: --out is the --checkpoint itself; write the calibrated checkpoint to a new file.", file=sys.stderr)
        return 2
    try:
        model, payload = load_semantic_model(args.checkpoint)
        size = input_size_from(args, model.cfg.input_size)
        dataset = open_semantic_data(args)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        weights = recorded_class_weights(payload, model.cfg.num_classes, args.checkpoint)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(dataset.class_names) != model.cfg.num_classes:
        print(f"error: {args.checkpoint} predicts {model.cfg.num_classes} classes but the data has "
              f"{len(dataset.class_names)}; calibrate on the dataset it was trained for.", file=sys.stderr)
        return 2
    alphas = sorted(set(args.alphas) | ({args.alpha} if args.alpha is not None else set()))
    rows = score_alphas(model, dataset, size, weights, alphas,
                        small_ids_of(dataset, args.dataset if args.data is not None else None), args.limit,
                        progress=lambda i, n: print(f"\r{i}/{n} images", end="", file=sys.stderr))
    print(file=sys.stderr)
    chosen = args.alpha if args.alpha is not None else best_alpha(rows)
    source = f"{args.data} split '{args.split}'" if args.data is not None else str(args.labels)
    print(f"class-prior correction on {source} ({rows[0]['images']} images, input "
          f"{size.short_side}/{size.max_long_side}):")
    print("| alpha | mIoU | mIoU_S | mIoU_L | pixel acc |\n|---|---|---|---|---|")
    for row in rows:
        mark = " (stored)" if row["alpha"] == chosen else ""
        print(f"| {row['alpha']:g}{mark} | {row['miou']:.3f} | {row['miou_small']:.3f} | {row['miou_large']:.3f} | "
              f"{row['pixel_accuracy']:.3f} |")
    state = dict(load_checkpoint(args.checkpoint, task="semantic")["state_dict"])   # as stored (fp16 stays fp16)
    dtype = state["head.conv.weight"].dtype
    state["logit_bias"] = torch.from_numpy(prior_bias(weights, chosen)).to(dtype)
    meta = {**(payload.get("meta") or {}),
            "prior_correction": {"alpha": chosen, "chosen_on": source,
                                 "input": [size.short_side, size.max_long_side], "from": str(args.checkpoint),
                                 "table": [{k: r[k] for k in ("alpha", "miou", "miou_small", "miou_large")}
                                           for r in rows]}}
    save_checkpoint(args.out, task="semantic", model_config=payload["model_config"],
                    class_names=payload.get("class_names") or dataset.class_names, state_dict=state,
                    train_state=None, meta=meta)
    args.out.with_suffix(".sha256").write_text(f"{sha256_of(args.out)}  {args.out.name}\n")
    print(f"wrote {args.out} (alpha {chosen:g}; sha256 {sha256_of(args.out)[:12]})")
    return 0
