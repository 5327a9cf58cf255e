#!/usr/bin/env python
"""Three cameras: three separate engines (one per camera, as three nodes run them) against ONE batched engine
(ros_amf.runtime.batching, what ros_amf_multi_camera runs), in the same process and run (issue 20).

Measured over the engines, not over rclpy topics: both sides get the same synthetic street frames (one
sequence per camera, --height x --width) fed by one thread per camera, lossless (every frame is processed,
so throughput is the engines' own), in interleaved rounds so that load drift hits both alike. Thread
layout, the same on both sides: torch --threads intra-op threads (process-wide), and per engine one
pre-processing, one inference and one post-processing thread (separate: 3 engines x 1 inference worker;
batched: 1 engine). The shipped checkpoints at the launch default input sizes (instance 384/512, semantic
480/640), backend --backend (torch: a batch is one forward; onnxruntime's exported graphs take one image
per call, so the batched engine runs them frame by frame).

Outputs are checked: every batched result against the separate (per-frame, single-camera) result of the
same frame: label agreement, same instance classes, scores within 1e-3, id-image agreement.

    .venv/bin/python scripts/bench_multi_camera.py --tasks both --rounds 3 --frames 2 --out out/bench/multi_camera.json

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ros_amf.contract import shipped  # noqa: E402
from ros_amf.data.synthetic.render import render_still  # noqa: E402
from ros_amf.runtime.batching import BatchedEngine  # noqa: E402
from ros_amf.runtime.loading import load_model  # noqa: E402
from ros_amf.runtime.pipeline import Engine, EngineConfig  # noqa: E402

MODELS = shipped.DEFAULTS
CAMERAS = ("front", "rear", "left")


def _feed(submit, frames: dict[str, list[np.ndarray]]) -> tuple[float, float]:
    """One feeder thread per camera submits its frames (lossless: waits for room); returns the start's wall
    and process CPU clocks."""
    start = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=lambda c=c: [submit(c, image, i) for i, image in enumerate(frames[c])])
               for c in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start


def run_separate(models, config, frames) -> tuple[tuple[float, float], dict]:
    results: dict[tuple[str, int], object] = {}
    engines = {c: Engine(config, models.get("instance"), models.get("semantic"),
                         on_result=lambda r, c=c: results.__setitem__((c, r.tag), r)) for c in frames}
    for engine in engines.values():
        engine.warm_up(*frames[CAMERAS[0]][0].shape[:2])
        engine.start()
    start = _feed(lambda c, image, i: engines[c].submit(image, "rgb8", tag=i), frames)
    for engine in engines.values():
        assert engine.wait_idle(3600)
    took = time.perf_counter() - start[0], time.process_time() - start[1]
    for engine in engines.values():
        engine.stop()
    return took, results


def run_batched(models, config, frames) -> tuple[tuple[float, float], dict, float]:
    results: dict[tuple[str, int], object] = {}
    engine = BatchedEngine(config, list(frames), models.get("instance"), models.get("semantic"),
                           on_result=lambda c, r: results.__setitem__((c, r.tag), r))
    engine.warm_up(*frames[CAMERAS[0]][0].shape[:2])
    engine.start()
    start = _feed(lambda c, image, i: engine.submit(c, image, "rgb8", tag=i), frames)
    assert engine.wait_idle(3600)
    took = time.perf_counter() - start[0], time.process_time() - start[1]
    engine.stop()
    return took, results, engine.batched_frames / max(1, engine.batches)


def compare(separate: dict, batched: dict) -> dict:
    labels, ids, instances, same_classes, worst_score = [], [], 0, 0, 0.0
    for key, want in separate.items():
        have = batched[key]
        assert want.error is None and have.error is None, (want.error, have.error)
        if want.semantic is not None:
            labels.append(float((want.semantic.labels == have.semantic.labels).mean()))
        if want.instances is not None:
            ids.append(float((want.instances.ids == have.instances.ids).mean()))
            instances += len(want.instances.classes)
            if want.instances.classes.tolist() == have.instances.classes.tolist():
                same_classes += len(want.instances.classes)
                if len(want.instances.scores):
                    worst_score = max(worst_score, float(np.abs(want.instances.scores - have.instances.scores).max()))
    return {"frames": len(separate), "label_agreement_min": min(labels, default=None),
            "id_image_agreement_min": min(ids, default=None), "instances": instances,
            "instances_same_class_and_order": same_classes, "max_score_difference": worst_score,
            "equal": (min(labels, default=1.0) >= 0.999 and min(ids, default=1.0) >= 0.999
                      and same_classes == instances and worst_score <= 1e-3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=("both", "instance", "semantic"), default="both")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames", type=int, default=2, help="frames per camera per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--batched-threads", type=int, default=0,
                        help="torch threads of the batched side (0 = --threads); 3x --threads gives it as many "
                             "compute threads as the three separate engines together")
    parser.add_argument("--out", default="out/bench/multi_camera.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = ("instance", "semantic") if args.tasks == "both" else (args.tasks,)
    models = {t: load_model(t, ROOT / MODELS[t][0], ROOT / MODELS[t][1], device="cpu") for t in tasks}
    config = EngineConfig(backend=args.backend, lossless=True, inference_workers=1)
    frames = {c: [render_still(17 + k, i, width=args.width, height=args.height).image for i in range(args.frames)]
              for k, c in enumerate(CAMERAS)}
    total = len(CAMERAS) * args.frames
    rows, checks, batch_sizes = [], [], []
    for r in range(args.rounds):
        order = (("separate", "batched") if r % 2 == 0 else ("batched", "separate"))   # interleaved
        fps = {}
        for mode in order:
            if mode == "separate":
                torch.set_num_threads(args.threads)
                (took, cpu), sep = run_separate(models, config, frames)
            else:
                torch.set_num_threads(args.batched_threads or args.threads)
                (took, cpu), bat, mean_batch = run_batched(models, config, frames)
                batch_sizes.append(mean_batch)
            fps[mode] = total / took
            fps[mode + "_frames_per_cpu_s"] = total / cpu
        checks.append(compare(sep, bat))
        rows.append(fps)
        print(f"round {r + 1}: separate {fps['separate']:.3f} FPS, batched {fps['batched']:.3f} FPS, "
              f"x{fps['batched'] / fps['separate']:.2f}; frames per CPU-second {fps['separate_frames_per_cpu_s']:.3f} "
              f"vs {fps['batched_frames_per_cpu_s']:.3f}", flush=True)
    med = {m: statistics.median(row[m] for row in rows) for m in rows[0]}
    ratio = statistics.median(row["batched"] / row["separate"] for row in rows)
    cpu_ratio = statistics.median(row["batched_frames_per_cpu_s"] / row["separate_frames_per_cpu_s"] for row in rows)
    load = os.getloadavg()
    print(f"\n3 cameras {args.height}x{args.width}, models {'+'.join(tasks)}, backend {args.backend}, "
          f"torch threads {args.threads} (batched {args.batched_threads or args.threads}), "
          f"{args.frames} frames/camera x {args.rounds} rounds; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| layout | total FPS (median) | x separate | frames per CPU-second | x separate |\n|---|---|---|---|---|")
    print(f"| 3 separate engines (1 inference worker each) | {med['separate']:.3f} | 1.00 | "
          f"{med['separate_frames_per_cpu_s']:.3f} | 1.00 |")
    print(f"| 1 batched engine (mean batch {statistics.mean(batch_sizes):.2f}) | {med['batched']:.3f} | "
          f"{ratio:.2f} | {med['batched_frames_per_cpu_s']:.3f} | {cpu_ratio:.2f} |  (ratios: median of rounds)")
    equal = all(c["equal"] for c in checks)
    agreements = [c["label_agreement_min"] for c in checks if c["label_agreement_min"] is not None]
    print(f"outputs equal to the per-frame single-camera results: {equal} "
          f"({sum(c['frames'] for c in checks)} frames, {sum(c['instances'] for c in checks)} instances compared; "
          f"min label agreement {min(agreements, default=None)}, "
          f"max score difference {max(c['max_score_difference'] for c in checks):.2e})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "tasks": tasks, "rounds": rows, "median_fps": med,
                               "ratio_batched_over_separate": ratio,
                               "cpu_efficiency_ratio": cpu_ratio, "mean_batch": statistics.mean(batch_sizes),
                               "checks": checks, "outputs_equal": equal, "load_average": load,
                               "measured_over": "engines (ros_amf.runtime), not rclpy topics"}, indent=2))
    print(f"JSON: {out}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
