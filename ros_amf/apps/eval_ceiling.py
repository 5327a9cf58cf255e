"""``ros-amf eval ceiling``: what a perfect model could score at a given input size.

    ros-amf eval ceiling --data DATA/coco --split val --input-short-side 320 384 480
    ros-amf eval ceiling --task semantic --data DATA --dataset cityscapes --split val --input-short-side 384 480

Instance (default): every ground-truth mask is squeezed through SparseInst's mask grid (1/8 of the input,
upsampled x2 by the forward; --mask-stride 4 for the what-if of a 1/4 branch) at each input size, its grid
logits fitted to the mask through the post-processing (--fit-steps; 0 = the plain area average, a poor
guess on a 1/8 grid), and scored by the real post-processing and COCOeval. Semantic: the ground-truth
label map becomes the logits of a perfect, calibrated host on its 1/4 grid (1/8 for the dilated
hosts: --stride 8) and is scored like a model's output (ros_amf.evaluation.ceiling); AFMA works on the
full-resolution logits after that grid, so it bounds the host, not strictly host + AFMA. A score far
below the ceiling says the model is under-trained; a low ceiling says the input is too small for the
objects.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ros_amf.contract.input_size import InputSize
from ros_amf.evaluation.ceiling import MASK_STRIDE, SEMANTIC_STRIDE, mask_ceiling, semantic_ceiling
from ros_amf.evaluation.coco_ap import METRIC_NAMES
from ros_amf.evaluation.semantic import SMALL_CLASS_IDS, open_semantic_dataset, small_ids_of

SEMANTIC_METRICS = {"miou": "mIoU", "miou_small": "mIoU_S", "miou_large": "mIoU_L"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf eval ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("instance", "semantic"), default="instance")
    parser.add_argument("--data", required=True,
                        help="instance: COCO-layout directory (annotations/instances_<split>.json); semantic: the "
                             "data set root (a make-data --out directory or real Cityscapes / CamVid)")
    parser.add_argument("--dataset", choices=sorted(SMALL_CLASS_IDS), default="cityscapes",
                        help="semantic: the data set's layout and small-object classes")
    parser.add_argument("--split", default="val")
    # a sweep over sizes, not one model's input: same flag name as everywhere, several values
    parser.add_argument("--input-short-side", "--short-side", dest="input_short_sides", metavar="N", type=int, nargs="+",
                        default=[320, 384, 480],
                        help="input short sides to measure (the long side is capped at 4/3 of each)")
    parser.add_argument("--stride", type=int, default=SEMANTIC_STRIDE,
                        help="semantic: the host's prediction grid (4: FPN, Unet family, PAN's head; 8: dilated)")
    parser.add_argument("--mask-stride", type=int, choices=(4, 8), default=MASK_STRIDE,
                        help="instance: the mask branch's grid (8: SparseInst's; 4: the what-if of a finer branch)")
    parser.add_argument("--fit-steps", type=int, default=25,
                        help="instance: steps fitting each mask's grid logits to it (0 = the area average only); "
                             "any fit is an output the model could give, so the table is a lower bound on the "
                             "true ceiling; 25 steps take seconds an image")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [InputSize(s, (s * 4 + 2) // 3) for s in args.input_short_sides]
    except ValueError as error:
        print(f"ros-amf eval ceiling: {error}", file=sys.stderr)
        return 2
    if args.stride < 1:
        print(f"ros-amf eval ceiling: --stride {args.stride} is not a grid step; use 4 (FPN, the Unet family) or 8 "
              "(the dilated hosts).", file=sys.stderr)
        return 2
    if args.task == "instance":
        annotation_json = Path(args.data) / "annotations" / f"instances_{args.split}.json"
        if not annotation_json.is_file():
            print(f"ros-amf eval ceiling: '{annotation_json}' does not exist; point --data at a COCO-layout "
                  "directory and --split at one of its annotation files.", file=sys.stderr)
            return 2
        rows = [mask_ceiling(annotation_json, size, args.limit, args.mask_stride, max(0, args.fit_steps))
                for size in sizes]
        print(f"mask-resolution ceiling ({rows[0]['images']} images, {rows[0]['instances']} instances; perfect "
              f"classes, masks on 1/{args.mask_stride} of the input, "
              f"{f'grid logits fitted in {args.fit_steps} steps' if args.fit_steps > 0 else 'area-averaged'})")
        names = {m: m for m in METRIC_NAMES}
    else:
        try:
            dataset = open_semantic_dataset(args.dataset, args.data, args.split)
        except ValueError as error:   # DatasetFileError: the file and what to do
            print(f"ros-amf eval ceiling: {error}", file=sys.stderr)
            return 2
        small_ids = small_ids_of(dataset, args.dataset)
        rows = [semantic_ceiling(dataset, size, small_ids, args.limit or 0, args.stride) for size in sizes]
        print(f"label-resolution ceiling ({rows[0]['images']} images; a perfect, calibrated host predicting on "
              f"1/{args.stride} of the input)")
        names = SEMANTIC_METRICS
    print("| input | " + " | ".join(names.values()) + " |")
    print("|---" * (len(names) + 1) + "|")
    for row in rows:
        size = row["input"]
        print(f"| {size['short_side']}/{size['max_long_side']} | "
              + " | ".join(f"{row['metrics'][m]:.3f}" for m in names) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.out}")
    return 0
