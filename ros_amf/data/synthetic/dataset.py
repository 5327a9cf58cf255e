"""The synthetic street-scene stills, written in every format we read (``ros-amf make-data``).

Frame i is rendered from the seed pair (S, i), so a frame does not depend on the number of frames
or of workers. The last round(N * F) frames form the val split. Writes the COCO, Cityscapes and
CamVid trees (see ros_amf.data.synthetic.export) and returns the counts, the COCO size buckets of
the instances and the time taken.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path

from ros_amf.contract.labels import coco_size_bucket
from ros_amf.data.synthetic.export import frame_annotations, write_coco_json, write_frame_files
from ros_amf.data.synthetic.render import render_still


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
