"""``ros-amf make-data``: write the synthetic street-scene dataset in every format we read.

    ros-amf make-data --out DIR --frames N --seed S [--val-fraction F] [--size WxH]
                      [--bag-frames M] [--workers K]

Frame i is rendered from the seed pair (S, i), so a frame does not depend on N or on the
number of workers. The last round(N * F) frames form the val split. Writes the COCO,
Cityscapes and CamVid trees (see ros_amf.data.synthetic.export), the ROS 2 bags of a continuous drive
with their ground truth (see ros_amf.data.synthetic.drive_bag) and DIR/summary.json with the counts,
the COCO size buckets of the instances and the time taken.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from ros_amf.data.synthetic.export import frame_annotations, write_coco_json, write_frame_files
from ros_amf.contract.labels import coco_size_bucket
from ros_amf.data.synthetic.scene import render_still


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


def _render_and_write(job: tuple[Path, int, int, int, int, str]) -> tuple[str, dict, list[dict], int]:
    out, seed, index, width, height, split = job
    frame = render_still(seed, index, width, height)
    image = write_frame_files(out, frame, split, index)
    return split, image, frame_annotations(frame, image["id"]), len(frame.tiny)


def make_dataset(out: Path, frames: int, seed: int, val_fraction: float, size: tuple[int, int],
                 workers: int = 1, progress: bool = True) -> dict:
    """Write the COCO/Cityscapes/CamVid trees of ``frames`` stills; return the summary dict."""
    n_val = int(round(frames * val_fraction))
    jobs = [(out, seed, i, size[0], size[1], "val" if i >= frames - n_val else "train") for i in range(frames)]
    images = {"train": [], "val": []}
    anns = {"train": [], "val": []}
    dropped = 0
    start = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    results = pool.imap(_render_and_write, jobs, chunksize=4) if pool else map(_render_and_write, jobs)
    try:
        for done, (split, image, frame_anns, tiny) in enumerate(results, start=1):
            images[split].append(image)
            anns[split].extend(frame_anns)
            dropped += tiny
            if progress and (done % 50 == 0 or done == frames):
                print(f"  rendered {done}/{frames} frames", file=sys.stderr)
    finally:
        if pool:
            pool.close()
            pool.join()
    for split in ("train", "val"):
        write_coco_json(out / "coco" / "annotations" / f"instances_{split}.json", images[split], anns[split],
                        f"ros_amf synthetic street scenes, seed {seed}, split {split}")
    seconds = time.perf_counter() - start
    instances = [a for split in anns for a in anns[split] if not a["iscrowd"]]
    buckets = Counter(coco_size_bucket(a["area"]) for a in instances)
    classes = Counter(a["category_id"] for a in instances)
    total = sum(buckets.values())
    return {
        "frames": frames, "train_frames": len(images["train"]), "val_frames": len(images["val"]),
        "size": list(size), "seed": seed, "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 2) if seconds > 0 else None,
        "instances": total, "instances_per_category_id": dict(sorted(classes.items())),
        "size_buckets": {k: buckets.get(k, 0) for k in ("small", "medium", "large")},
        "size_shares": {k: round(buckets.get(k, 0) / total, 3) if total else 0.0 for k in ("small", "medium", "large")},
        "tiny_remnants_as_crowd": dropped,
    }


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
