"""``ros-amf bench soak``: feed the pipelined engine tens of thousands of frames at 2x overload and
check that its memory stays flat (RSS slope after warm-up, MiB per 1,000 frames; target <= 1).

Example (the README's figure)::

    ros-amf bench soak --input-short-side 128 --frames 20000 --warmup 5000 --rate 24 --json out/bench/soak.json

The shipped models run with their checkpoints; the feed rate is twice the pipelined rate measured
first (``--rate`` sets it instead). Results are dropped at once, as a node drops them after publishing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from ros_amf.apps.common import add_input_size_flags, input_size_from
from ros_amf.contract import shipped
from ros_amf.runtime.benchmark import bench_pipelined, in_worker_thread, make_frames
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.soak import format_soak, soak
from ros_amf.runtime.stats import PipelineCounters

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf bench soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", choices=["both", "instance", "semantic"], default="both")
    p.add_argument("--instance-config", default=shipped.INSTANCE.config)
    p.add_argument("--instance-checkpoint", default=shipped.INSTANCE.checkpoint, help="empty: random weights")
    p.add_argument("--semantic-config", default=shipped.SEMANTIC.config)
    p.add_argument("--semantic-checkpoint", default=shipped.SEMANTIC.checkpoint, help="empty: random weights")
    p.add_argument("--image", default="480x640", help="camera image HxW")
    add_input_size_flags(p, "each model config's input_size")
    p.add_argument("--frames", type=int, default=20000, help="frames fed in all")
    p.add_argument("--warmup", type=int, default=5000, help="frames before the slope is measured")
    p.add_argument("--rate", type=float, default=0.0, help="feed rate in Hz (0 = 2x the measured pipelined rate)")
    p.add_argument("--rate-frames", type=int, default=40, help="frames of the pipelined-rate measurement")
    p.add_argument("--sample-every", type=int, default=250, help="frames between RSS samples")
    p.add_argument("--trim-every", type=int, default=0,
                   help="return freed heap to the OS (malloc_trim) every N frames (0 = never)")
    p.add_argument("--workers", type=int, default=0, help="inference workers (0 = auto)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=str(ROOT / "out" / "bench" / "soak.json"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames <= args.warmup or args.warmup < 0:
        print(f"ros-amf bench soak: --warmup ({args.warmup}) must be at least 0 and below --frames ({args.frames}).",
              file=sys.stderr)
        return 2
    try:
        height, width = (int(v) for v in args.image.split("x"))
    except ValueError:
        print(f"ros-amf bench soak: --image '{args.image}' is not HxW (e.g. 480x640).", file=sys.stderr)
        return 2
    tasks = ["instance", "semantic"] if args.tasks == "both" else [args.tasks]
    try:
        models = {t: load_model(t, getattr(args, f"{t}_config"), getattr(args, f"{t}_checkpoint") or None,
                                args.device) for t in tasks}
        config = EngineConfig(input_sizes={t: input_size_from(args, m.input_size) for t, m in models.items()},
                              device=args.device, inference_workers=args.workers)
    except (ValueError, FileNotFoundError) as exc:   # ConfigError, CheckpointError, a bad input size
        print(f"ros-amf bench soak: {exc}", file=sys.stderr)
        return 2

    def make_engine(lossless: bool) -> Engine:
        engine = Engine(EngineConfig(**{**config.__dict__, "lossless": lossless}), models.get("instance"),
                        models.get("semantic"), stats=PipelineCounters())
        engine.warm_up(height, width)
        return engine

    frames = make_frames(64, height, width)
    sizes = ", ".join(f"{t} {s.short_side}/{s.max_long_side}" for t, s in config.input_sizes.items())
    rate = args.rate
    if rate <= 0:
        fps, _ = in_worker_thread(bench_pipelined, make_engine(True), frames[:args.rate_frames])
        rate = 2.0 * fps
        print(f"pipelined rate {fps:.1f} FPS: feeding at {rate:.1f} Hz", flush=True)
    print(f"bench soak: {', '.join(f'{t}={m.name}' for t, m in models.items())}, image {height}x{width}, input "
          f"{sizes}, {args.frames} frames ({args.warmup} warm-up) at {rate:.1f} Hz, {os.cpu_count()} cores",
          flush=True)

    def progress(sample) -> None:
        print(f"  {sample.frame:>7} frames  {sample.seconds:7.0f} s  RSS {sample.rss_mib:8.1f} MiB  "
              f"objects {sample.python_objects}", flush=True)

    report = in_worker_thread(lambda: soak(make_engine(False), frames, rate, args.frames, warmup_frames=args.warmup,
                                           sample_every=args.sample_every, trim_every=args.trim_every,
                                           progress=progress if args.sample_every * 20 <= args.frames else None))
    report.update({"models": {t: m.name for t, m in models.items()}, "image_hw": [height, width],
                   "input_sizes": {t: [s.short_side, s.max_long_side] for t, s in config.input_sizes.items()},
                   "device": args.device, "cpu_count": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()),
                   "torch": torch.__version__, "command": "ros-amf bench soak " + " ".join(argv or sys.argv[1:])})
    print(format_soak(report))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0 if report["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
