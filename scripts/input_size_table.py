#!/usr/bin/env python
"""Speed and accuracy of the shipped models by network input size: the table the launch default is chosen from.

For each short side S (long side capped at 4/3 S rounded up to a multiple of 32, as the configs do), in one run:
- accuracy on the given splits with the project's evaluators, run as `ros-amf eval instance|semantic`
  subprocesses at input S (instance AP / AP50 / APs; semantic mIoU / mIoU_S);
- speed of both models together through the runtime's synchronous engine (pre-processing, both forwards,
  post-processing; one frame at a time, the same threads and backend at every size), on synthetic street
  frames at the camera resolution, as frames per second (median of interleaved rounds, so load drift hits
  every size alike).

    .venv/bin/python scripts/input_size_table.py --sizes 256 320 384 480 \\
        --instance models/amf_sparseinst_effl0.pt --semantic models/fpn_afma_effl0.pt \\
        --split /work/data/test77:val --out out/input_size

Prints a markdown table and writes OUT/input_size.json (every number, the commands and the load).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ros_amf.apps.cli"]


def long_side(short: int) -> int:
    return (short * 4 // 3 + 31) // 32 * 32


def run_eval(kind: str, checkpoint: str, data: str, split: str, short: int, out: Path, threads: int,
             backend: str) -> dict:
    """One evaluator run at input ``short``; returns its metrics (the evaluator's own JSON)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data_arg = str(Path(data) / "coco") if kind == "instance" and (Path(data) / "coco").is_dir() else data
    command = CLI + ["eval", kind, "--checkpoint", checkpoint, "--data", data_arg, "--split", split,
                     "--input-short-side", str(short), "--input-max-long-side", str(long_side(short)),
                     "--threads", str(threads), "--backend", backend, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"evaluation failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    path = out / "metrics.json" if out.is_dir() else out
    report = json.loads(path.read_text())
    metrics = report.get("metrics", report)
    keys = ("AP", "AP50", "APs") if kind == "instance" else ("miou", "miou_small", "miou_large")
    return {k: float(metrics[k]) for k in keys} | {"command": " ".join(command[2:])}


def measure_fps(instance: str, semantic: str, sizes: list[int], frames: int, rounds: int, threads: int,
                backend: str, camera: tuple[int, int]) -> dict[int, dict]:
    """Both models through the synchronous engine at each size, interleaved rounds; FPS median per size."""
    import torch

    from ros_amf.contract.input_size import InputSize
    from ros_amf.runtime.loading import load_model
    from ros_amf.runtime.benchmark import street_frames
    from ros_amf.runtime.pipeline import Engine, EngineConfig

    torch.set_num_threads(threads)
    models = {"instance": load_model("instance", None, instance), "semantic": load_model("semantic", None, semantic)}
    images = street_frames(frames, *camera, seed=123)
    engines = {}
    for short in sizes:
        size = InputSize(short, long_side(short))
        engines[short] = Engine(EngineConfig(input_sizes={"instance": size, "semantic": size}, backend=backend,
                                             inference_workers=1), models["instance"], models["semantic"])
        engines[short].warm_up(*camera)
    rates: dict[int, list[float]] = {short: [] for short in sizes}
    for _ in range(rounds):
        for short, engine in engines.items():
            start = time.perf_counter()
            for image in images:
                result = engine.process(image, "rgb8")
                if result.error:
                    raise SystemExit(f"a frame failed at input {short}: {result.error}")
            rates[short].append(len(images) / (time.perf_counter() - start))
    return {short: {"fps": statistics.median(r), "rounds_fps": r, "backend": engines[short].stages.backend}
            for short, r in rates.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384, 480])
    p.add_argument("--instance", required=True, help="instance checkpoint (.pt)")
    p.add_argument("--semantic", required=True, help="semantic checkpoint (.pt)")
    p.add_argument("--split", action="append", required=True, metavar="DATA:SPLIT",
                   help="a make-data directory and split to score on (repeat for several)")
    p.add_argument("--frames", type=int, default=10, help="frames per size and round for the speed column")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--camera", default="480x640", help="camera frame HxW for the speed column")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto", help="forward backend for speed and accuracy (auto, torch, ...)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "input_size")
    args = p.parse_args(argv)
    try:
        camera = tuple(int(v) for v in args.camera.lower().split("x"))
        if len(camera) != 2 or min(camera) <= 0:
            raise ValueError
    except ValueError:
        print(f"error: --camera '{args.camera}' is not HxW in pixels (e.g. 480x640).", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {short: {"input": [short, long_side(short)]} for short in args.sizes}
    for spec in args.split:
        data, _, split = spec.rpartition(":")
        name = f"{Path(data).name}:{split}"
        for short in args.sizes:
            rows[short][f"instance {name}"] = run_eval("instance", args.instance, data, split, short,
                                                       args.out / f"inst_{Path(data).name}_{split}_{short}", args.threads,
                                                       args.backend)
            rows[short][f"semantic {name}"] = run_eval("semantic", args.semantic, str(Path(data) / "cityscapes"), split,
                                                       short, args.out / f"sem_{Path(data).name}_{split}_{short}.json",
                                                       args.threads, args.backend)
            print(f"scored input {short} on {name}", flush=True)
    speed = measure_fps(args.instance, args.semantic, args.sizes, args.frames, args.rounds, args.threads,
                        args.backend, camera)
    for short in args.sizes:
        rows[short]["speed"] = speed[short]
    report = {"instance": args.instance, "semantic": args.semantic, "camera": list(camera), "threads": args.threads,
              "backend": args.backend, "load_average": os.getloadavg(), "rows": list(rows.values())}
    (args.out / "input_size.json").write_text(json.dumps(report, indent=2))
    header = ["input"] + [f"{k}: AP50 / AP / APs" if k.startswith("instance") else f"{k}: mIoU / mIoU_S"
                          for k in rows[args.sizes[0]] if k.startswith(("instance", "semantic"))] + ["FPS, both models"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for short, row in rows.items():
        cells = [f"{short}x{long_side(short)}"]
        for key, value in row.items():
            if key.startswith("instance"):
                cells.append(f"{value['AP50']:.3f} / {value['AP']:.3f} / {value['APs']:.3f}")
            elif key.startswith("semantic"):
                cells.append(f"{value['miou']:.3f} / {value['miou_small']:.3f}")
        cells.append(f"{row['speed']['fps']:.2f}")
        print("| " + " | ".join(cells) + " |")
    print(f"load average {os.getloadavg()[0]:.1f}; JSON {args.out / 'input_size.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
