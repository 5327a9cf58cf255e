"""`ros-amf demo` (`make demo`): the synthetic drive bag through the perception node over real rclpy topics.

A preset of `ros-amf replay`, on the same code path (ros_amf.replay.session and its rclpy harness):
1. the synthetic bag (made deterministically on first run into data/demo, git-ignored) is read;
2. the perception node starts in its own process with the shipped checkpoints (random weights with a
   loud warning if none are there yet), listening on /camera/image_raw like on the vehicle;
3. the harness plays the bag's camera stream at its recorded rate (30 Hz) with reliable QoS, as
   ``ros2 bag play`` does (launch/replay.yaml), and listens to the outputs (and to ~/overlay, so the
   node renders it); best effort would lose fragments of the large images between the two processes
   under load, which is DDS, not the node;
4. a table (frames in/out, drops, FPS, latency p50/p95/p99 per stage) is printed, overlay PNGs, an MP4
   (when OpenCV can write one) and report.json are written to out/demo.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

from ros_amf.apps.common import add_input_size_flags
from ros_amf.bags.reader import BagError
from ros_amf.contract import shipped
from ros_amf.runtime.stats import StageSummary, StatsSnapshot, format_table

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / "data" / "demo"
DEFAULT_OUT = ROOT / "out" / "demo"
# the preset's input size: small enough for a laptop CPU to keep up with the recorded 30 Hz
DEMO_INPUT = (192, 256)


def ensure_bag(data_dir: Path, bag_frames: int) -> Path:
    """The demo's bag directory; generated (deterministic seed) when absent."""
    bag = data_dir / "bags" / "drive_mcap"
    if not bag.exists():
        from ros_amf.apps import make_data
        print(f"demo: no bag at {bag}; generating the synthetic data set once (seed 0) ...", flush=True)
        code = make_data.main(["--out", str(data_dir), "--frames", "4", "--seed", "0",
                               "--bag-frames", str(bag_frames), "--overwrite"])
        if code or not bag.exists():
            raise SystemExit(f"demo: 'ros-amf make-data --out {data_dir}' failed to write {bag}.")
    return bag


def model_parameters(args) -> tuple[dict, list[str]]:
    """Node parameters for the models, and what was chosen (printed so nobody mistakes random weights)."""
    params, notes = {}, []
    for task, (config, checkpoint) in shipped.DEFAULTS.items():
        config = getattr(args, f"{task}_config") or config
        checkpoint = getattr(args, f"{task}_checkpoint") or checkpoint
        if not (ROOT / config).exists() and not Path(config).exists():
            raise SystemExit(f"demo: model config '{config}' does not exist; pass --{task}-config models/<name>.yaml.")
        params[f"{task}.config"] = str(ROOT / config if (ROOT / config).exists() else config)
        path = ROOT / checkpoint if (ROOT / checkpoint).exists() else Path(checkpoint)
        if checkpoint == "none":
            params[f"{task}.checkpoint"] = ""
            notes.append(f"{task}: {config} with RANDOM weights (--{task}-checkpoint none)")
        elif path.exists():
            params[f"{task}.checkpoint"] = str(path)
            notes.append(f"{task}: {config} + {path.name}")
        else:
            params[f"{task}.checkpoint"] = ""
            notes.append(f"{task}: {config} with RANDOM weights — checkpoint '{checkpoint}' not found "
                         "(train one, see models/README.md); speed figures are valid, masks are not")
        params[f"{task}.input_size.short_side"] = args.input_short_side
        params[f"{task}.input_size.max_long_side"] = args.input_max_long_side
    return params, notes


def run_demo(args) -> dict:
    from ros_amf.replay import session   # imports rclpy
    from ros_amf.replay.harness import ros_value
    from ros_amf.replay.schedule import ReplayPlan
    from ros_amf.ros import topics
    from ros_amf.contract.image_messages import image_to_array
    from ros_amf.ros.kinds import KINDS

    bag = Path(args.bag) if args.bag else ensure_bag(Path(args.data), args.frames)
    bag_topic, frames = session.read_frames(bag, None, args.frames)
    params, notes = model_parameters(args)
    print("demo: models\n  " + "\n  ".join(notes), flush=True)
    params.update({"device": args.device, "score_threshold": args.score_threshold, "diagnostics_period_s": 1.0,
                   "input_qos": "reliable", "output_qos": "reliable"})
    if args.torch_threads:
        params["torch_threads"] = args.torch_threads

    node = "/" + KINDS["perception"].node_name
    overlays, instance_counts = [], []
    graph = session.started_graph("pipelined", "perception", {k: ros_value(v) for k, v in params.items()}, None,
                                  Path(tempfile.mkdtemp(prefix="ros_amf_demo_")))
    options = session.BenchmarkOptions(
        input_topic=topics.CAMERA_IMAGE, qos="reliable", idle_seconds=1.0,
        plan=ReplayPlan(mode="recorded", rate_factor=args.rate, loops=args.loops),
        record_topics={f"{node}/overlay": overlays.append,
                       f"{node}/instances": lambda msg: instance_counts.append(len(msg.instances))})
    print(f"demo: playing {len(frames)} frames of {bag} ({frames[0].width}x{frames[0].height} "
          f"{frames[0].encoding}) {args.loops}x at the recorded rate x{args.rate} ...", flush=True)
    replay, failed = session.run_session(bag, bag_topic, frames, [graph], options,
                                         on_error=lambda message: None)
    result = replay["graphs"][0]
    if failed:
        raise SystemExit(f"demo: the perception node did not start: {result['error']}")
    if not result.get("node_stats"):
        raise SystemExit(f"demo: the perception node published no ~/stats; its log is {graph.process.log_path}.")
    metrics = result["runs"][0]["metrics"]
    snapshot = _snapshot(result["node_stats"])
    wall, sent = metrics["span_s"], metrics["frames_sent"]
    latency = {"count": metrics["frames_received"], **metrics["latency_ms"]}
    table = (f"player sent {sent} frames; node received {snapshot.frames_in} "
             f"({sent - snapshot.frames_in} lost in transport, reliable QoS as from a bag player)\n"
             + format_table(snapshot, wall))
    if latency["count"]:
        table += (f"\n{'topic->topic':<12} {latency['count']:>6} {latency['mean']:>9.2f} {latency['p50']:>9.2f} "
                  f"{latency['p95']:>9.2f} {latency['p99']:>9.2f} {latency['max']:>9.2f}")
    print("\n" + table + "\n", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_overlays(overlays, out, fps=recorded_fps(frames), every=args.png_every,
                             image_to_array=image_to_array)
    per_topic = metrics["per_topic"]
    report = {"bag": str(bag), "frames_played": len(frames) * args.loops, "wall_s": wall, "models": notes,
              "input_size": [args.input_short_side, args.input_max_long_side], "device": args.device,
              "frames_sent": sent, "frames_lost_in_transport": sent - snapshot.frames_in,
              "output_fps": snapshot.frames_out / wall if wall else 0.0,
              "recorded_fps": written["fps"], "stats": result["node_stats"],
              "topic_to_topic_latency_ms": {k: latency[k] for k in ("count", "mean", "p50", "p95", "p99", "max")}
              if latency["count"] else {},
              "outputs_received": {"labels": per_topic[f"{node}/labels"]["received"],
                                   "instances": per_topic[f"{node}/instances"]["received"],
                                   "overlay": len(overlays), "stats": result.get("stats_reports", 0)},
              "instances_per_frame_mean": float(np.mean(instance_counts)) if instance_counts else 0.0,
              "overlay_pngs": written["pngs"], "overlay_mp4": written["mp4"], "replay": replay}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"demo: wrote {len(written['pngs'])} overlay PNGs"
          + (f", {written['mp4']}" if written["mp4"] else " (no MP4: OpenCV has no mp4v writer here)")
          + f" and {out / 'report.json'}")
    return report


def _snapshot(stats: dict) -> StatsSnapshot:
    """The node's ~/stats as the report keeps it (a dict) back into the runtime's snapshot, for its table."""
    return StatsSnapshot(**{**stats, "stages": [StageSummary(**stage) for stage in stats["stages"]]})


def recorded_fps(frames) -> float:
    """The bag's own frame rate, from the recorder's receive times."""
    if len(frames) < 2:
        return 30.0
    step_ns = frames[1].log_time_ns - frames[0].log_time_ns
    return len(frames) / ((frames[-1].log_time_ns - frames[0].log_time_ns + step_ns) / 1e9)


def write_overlays(messages, out: Path, fps: float, every: int, image_to_array) -> dict:
    """Every ``every``-th overlay as PNG, all of them as an MP4 at the bag's rate (where OpenCV can)."""
    import cv2

    pngs, mp4 = [], None
    writer = None
    for i, msg in enumerate(messages):
        rgb, _ = image_to_array(msg)
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        if i % every == 0:
            path = out / f"overlay_{i:04d}.png"
            cv2.imwrite(str(path), bgr)
            pngs.append(str(path))
        if writer is None:
            path = out / "overlay.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), max(1.0, fps),
                                     (bgr.shape[1], bgr.shape[0]))
            mp4 = str(path) if writer.isOpened() else None
        if mp4:
            writer.write(bgr)
    if writer is not None:
        writer.release()
    return {"pngs": pngs, "mp4": mp4, "fps": fps}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bag", help="bag to play (default: the synthetic bag in --data, generated if absent)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="where the synthetic data set lives")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where overlays and report.json go")
    parser.add_argument("--frames", type=int, default=60, help="frames of the bag to play (2 s at 30 Hz)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback rate factor (1 = recorded rate)")
    parser.add_argument("--loops", type=int, default=3, help="play the clip this many times")
    add_input_size_flags(parser, f"the model config's input_size; the demo runs at {DEMO_INPUT[0]} x <= "
                                 f"{DEMO_INPUT[1]} unless told otherwise")
    parser.set_defaults(input_short_side=DEMO_INPUT[0], input_max_long_side=DEMO_INPUT[1])
    # the shipped CPU instance model is small and briefly trained: its mask-rescored scores are low
    parser.add_argument("--score-threshold", type=float, default=0.2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch default")
    parser.add_argument("--png-every", type=int, default=2, help="write every n-th overlay as PNG")
    for task in ("instance", "semantic"):
        parser.add_argument(f"--{task}-config", default=None, help=f"{task} model config (default: shipped)")
        parser.add_argument(f"--{task}-checkpoint", default=None,
                            help=f"{task} checkpoint (default: shipped; 'none' = random weights)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.png_every < 1:
        parser.error(f"--png-every must be 1 or more (every n-th overlay), not {args.png_every}.")
    # a terminated demo must still stop the node it started: turn SIGTERM into SystemExit so cleanup runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = run_demo(args)
    except (BagError, ValueError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    return 0 if report["stats"]["frames_out"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
