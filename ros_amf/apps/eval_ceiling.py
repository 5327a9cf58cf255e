"""``ros-amf eval ceiling``: the COCO mask AP a perfect SparseInst could reach at a given input size.

    ros-amf eval ceiling --data DATA/coco --split val --input-short-side 320 384 480

Every ground-truth mask is squeezed through SparseInst's 1/4-resolution mask grid at each input
size and scored by the real post-processing and COCOeval (ros_amf.evaluation.ceiling). AP far below
the ceiling says the model is under-trained; a low ceiling says the input is too small for the
objects.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ros_amf.contract.input_size import InputSize
from ros_amf.evaluation.ceiling import mask_ceiling
from ros_amf.evaluation.coco_ap import METRIC_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf eval ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="COCO-layout directory (annotations/instances_<split>.json)")
    parser.add_argument("--split", default="val")
    # a sweep over sizes, not one model's input: same flag name as everywhere, several values
    parser.add_argument("--input-short-side", "--short-side", dest="input_short_sides", metavar="N", type=int, nargs="+",
                        default=[320, 384, 480],
                        help="input short sides to measure (the long side is capped at 4/3 of each)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    annotation_json = Path(args.data) / "annotations" / f"instances_{args.split}.json"
    if not annotation_json.is_file():
        print(f"ros-amf eval ceiling: '{annotation_json}' does not exist; point --data at a COCO-layout directory "
              "and --split at one of its annotation files.", file=sys.stderr)
        return 2
    try:
        sizes = [InputSize(s, (s * 4 + 2) // 3) for s in args.input_short_sides]
    except ValueError as error:
        print(f"ros-amf eval ceiling: {error}", file=sys.stderr)
        return 2
    rows = [mask_ceiling(annotation_json, size, args.limit) for size in sizes]
    print(f"mask-resolution ceiling ({rows[0]['images']} images, {rows[0]['instances']} instances; "
          "perfect classes and masks at 1/4 of the input)")
    print("| input | " + " | ".join(METRIC_NAMES) + " |")
    print("|---" * (len(METRIC_NAMES) + 1) + "|")
    for row in rows:
        size = row["input"]
        print(f"| {size['short_side']}/{size['max_long_side']} | "
              + " | ".join(f"{row['metrics'][m]:.3f}" for m in METRIC_NAMES) + " |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.out}")
    return 0
