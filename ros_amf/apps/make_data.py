"""``ros-amf make-data``: write the synthetic street-scene dataset in every format we read.

    ros-amf make-data --out DIR --frames N --seed S [--val-fraction F] [--size WxH]
                      [--bag-frames M] [--workers K]

Writes the COCO, Cityscapes and CamVid trees of N stills (ros_amf.data.synthetic.dataset), the ROS 2
bags of a continuous drive with their ground truth (ros_amf.data.synthetic.drive_bag) and
DIR/summary.json with the counts, the COCO size buckets of the instances and the time taken.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from ros_amf.data.synthetic.dataset import make_dataset


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 640x480, got {text!r}") from None
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"--size {text}: width and height must be at least 32 pixels")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf make-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--frames", type=int, default=300, help="number of still frames (train + val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of frames in the val split")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="image size WxH (default 640x480)")
    p.add_argument("--bag-frames", type=int, default=90, help="frames of the 30 Hz drive bag (0 = no bag)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering frames in parallel")
    p.add_argument("--overwrite", action="store_true", help="delete an existing non-empty --out first")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("ros-amf make-data: --frames must be at least 1.", file=sys.stderr)
        return 2
    if not 0.0 <= args.val_fraction < 1.0:
        print("ros-amf make-data: --val-fraction must be in [0, 1).", file=sys.stderr)
        return 2
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"ros-amf make-data: {out} is not empty; pass --overwrite to replace it or choose another --out.",
                  file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = make_dataset(out, args.frames, args.seed, args.val_fraction, args.size, args.workers)
    if args.bag_frames > 0:
        from ros_amf.data.synthetic.drive_bag import write_drive_bags  # rosbags only needed here

        t0 = time.perf_counter()
        summary["bags"] = write_drive_bags(out / "bags", args.bag_frames, args.seed, args.size)
        summary["bags"]["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    shares = summary["size_shares"]
    print(f"wrote {summary['frames']} frames ({summary['train_frames']} train, {summary['val_frames']} val) "
          f"at {summary['size'][0]}x{summary['size'][1]} to {out} in {summary['seconds']} s "
          f"({summary['frames_per_second']} frames/s)")
    print(f"instances: {summary['instances']}  small {shares['small']:.1%}  medium {shares['medium']:.1%}  "
          f"large {shares['large']:.1%}  (tiny remnants < 12 px written as iscrowd: {summary['tiny_remnants_as_crowd']})")
    if "bags" in summary:
        print(f"bags: {', '.join(summary['bags']['paths'])} ({summary['bags']['frames']} frames at 30 Hz)")
    return 0
