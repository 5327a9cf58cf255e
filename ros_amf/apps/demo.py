"""`ros-amf demo` (`make demo`): the synthetic drive bag through the perception node over real rclpy topics.

1. the synthetic bag (made deterministically on first run into data/demo, git-ignored) is read;
2. the perception node starts with the shipped checkpoints (random weights with a loud warning if
   none are there yet), listening on /camera/image_raw like on the vehicle;
3. a player node publishes the bag's camera stream at its recorded rate; a recorder node subscribes
   to the outputs (and to ~/overlay, so the node renders it);
4. a table (frames in/out, drops, FPS, latency p50/p95/p99 per stage) is printed, overlay PNGs, an MP4
   (when OpenCV can write one) and report.json are written to out/demo.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "demo"
DEFAULT_OUT = ROOT / "out" / "demo"
INSTANCE = ("models/amf_sparseinst_r18slim.yaml", "models/amf_sparseinst_r18slim.pt")
SEMANTIC = ("models/fpn_afma_r18slim.yaml", "models/fpn_afma_r18slim.pt")


def ensure_bag(data_dir: Path, bag_frames: int) -> Path:
    """The demo's bag directory; generated (deterministic seed) when absent."""
    bag = data_dir / "bags" / "drive_mcap"
    if not bag.exists():
        from ros_amf.data.synthetic import dataset as make_data
        print(f"demo: no bag at {bag}; generating the synthetic data set once (seed 0) ...", flush=True)
        code = make_data.main(["--out", str(data_dir), "--frames", "4", "--seed", "0",
                               "--bag-frames", str(bag_frames), "--overwrite"])
        if code or not bag.exists():
            raise SystemExit(f"demo: 'ros-amf make-data --out {data_dir}' failed to write {bag}.")
    return bag


def read_frames(bag: Path, limit: int):
    from ros_amf.bags.reader import BagReader
    with BagReader(bag) as reader:
        return list(reader.images(None, limit=limit))


def model_parameters(args) -> tuple[dict, list[str]]:
    """Node parameters for the models, and what was chosen (printed so nobody mistakes random weights)."""
    params, notes = {}, []
    for task, (config, checkpoint) in (("instance", INSTANCE), ("semantic", SEMANTIC)):
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
    return params, notes


def run_demo(args) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    import cv2
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ros_amf_msgs.msg import InstanceSegmentation, PipelineStats
    from ros_amf.ros.conversions import image_to_array
    from ros_amf.ros.node import PerceptionNode
    from ros_amf.runtime.stats import format_table

    bag = Path(args.bag) if args.bag else ensure_bag(Path(args.data), args.frames)
    frames = read_frames(bag, args.frames)
    if not frames:
        raise SystemExit(f"demo: bag '{bag}' has no camera images.")
    params, notes = model_parameters(args)
    print("demo: models\n  " + "\n  ".join(notes), flush=True)
    params.update({"input_short_side": args.short_side, "input_max_long_side": args.max_long_side,
                   "device": args.device, "score_threshold": args.score_threshold, "diagnostics_period_s": 1.0})
    if args.torch_threads:
        params["torch_threads"] = args.torch_threads

    context = Context()
    rclpy.init(context=context)
    try:
        node = PerceptionNode(context=context,
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    except Exception as exc:  # a wrong checkpoint/config: one sentence, no traceback
        rclpy.try_shutdown(context=context)
        raise SystemExit(f"demo: the perception node did not start: {exc}") from None
    io = rclpy.create_node("ros_amf_demo_player", context=context)
    base = node.get_fully_qualified_name()
    received: dict[str, list] = {"labels": [], "instances": [], "overlay": [], "stats": []}
    arrival: dict[int, float] = {}
    sent: dict[int, float] = {}
    lock = threading.Lock()

    def keep(key):
        def callback(msg):
            now = time.perf_counter()
            with lock:
                received[key].append(msg)
                if key == "labels":
                    arrival[_stamp_ns(msg.header)] = now
        return callback

    io.create_subscription(Image, f"{base}/labels", keep("labels"), qos_profile_sensor_data)
    io.create_subscription(InstanceSegmentation, f"{base}/instances", keep("instances"), qos_profile_sensor_data)
    io.create_subscription(Image, f"{base}/overlay", keep("overlay"), qos_profile_sensor_data)
    io.create_subscription(PipelineStats, f"{base}/stats", keep("stats"), 10)
    pub = io.create_publisher(Image, node.params["input_topic"], qos_profile_sensor_data)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    executor.add_node(io)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + 10
    while (pub.get_subscription_count() < 1 or node.pub_overlay.get_subscription_count() < 1) \
            and time.monotonic() < deadline:
        time.sleep(0.05)

    messages = [_to_message(f, Header, Image) for f in frames]
    clip_ns = frames[-1].log_time_ns - frames[0].log_time_ns + (frames[1].log_time_ns - frames[0].log_time_ns
                                                                  if len(frames) > 1 else 33_000_000)
    print(f"demo: playing {len(messages)} frames of {bag} ({frames[0].width}x{frames[0].height} "
          f"{frames[0].encoding}) {args.loops}x at the recorded rate x{args.rate} ...", flush=True)
    start_wall, start_bag = time.perf_counter(), frames[0].log_time_ns
    for loop in range(args.loops):
        for frame, msg in zip(frames, messages):
            offset = frame.log_time_ns - start_bag + loop * clip_ns
            due = start_wall + offset / 1e9 / args.rate
            time.sleep(max(0.0, due - time.perf_counter()))
            # each loop gets fresh stamps (the recorded ones shifted by the clip length)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(frame.stamp_ns) + loop * clip_ns,
                                                                    1_000_000_000)
            sent[_stamp_ns(msg.header)] = time.perf_counter()
            pub.publish(msg)
    node.engine.wait_idle(timeout=60)
    time.sleep(0.5)   # let the last outputs cross DDS
    wall = time.perf_counter() - start_wall
    snapshot = node.stats.snapshot()
    executor.shutdown()
    node.destroy_node()
    io.destroy_node()
    rclpy.try_shutdown(context=context)

    downstream = sorted((arrival[s] - sent[s]) * 1000 for s in arrival if s in sent)
    sent_count = len(frames) * args.loops
    table = (f"player sent {sent_count} frames; node received {snapshot.frames_in} "
             f"({sent_count - snapshot.frames_in} lost in transport, best-effort sensor-data QoS)\n"
             + format_table(snapshot, wall))
    if downstream:
        p50, p95, p99 = np.percentile(downstream, (50, 95, 99))
        table += (f"\n{'topic->topic':<12} {len(downstream):>6} {np.mean(downstream):>9.2f} {p50:>9.2f} {p95:>9.2f} "
                  f"{p99:>9.2f} {max(downstream):>9.2f}")
    print("\n" + table + "\n", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_overlays(received["overlay"], out, fps=len(frames) / (clip_ns / 1e9),
                             every=args.png_every, image_to_array=image_to_array, cv2=cv2)
    instances = [len(m.instances) for m in received["instances"]]
    report = {"bag": str(bag), "frames_played": len(frames) * args.loops, "wall_s": wall, "models": notes,
              "input_size": [args.short_side, args.max_long_side], "device": args.device,
              "frames_sent": sent_count, "frames_lost_in_transport": sent_count - snapshot.frames_in,
              "output_fps": snapshot.frames_out / wall if wall else 0.0,
              "recorded_fps": written["fps"], "stats": snapshot.as_dict(),
              "topic_to_topic_latency_ms": _percentiles(downstream),
              "outputs_received": {k: len(v) for k, v in received.items()},
              "instances_per_frame_mean": float(np.mean(instances)) if instances else 0.0,
              "overlay_pngs": written["pngs"], "overlay_mp4": written["mp4"]}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"demo: wrote {len(written['pngs'])} overlay PNGs"
          + (f", {written['mp4']}" if written["mp4"] else " (no MP4: OpenCV has no mp4v writer here)")
          + f" and {out / 'report.json'}")
    return report


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _to_message(frame, Header, Image):
    msg = Image(height=frame.height, width=frame.width, encoding=frame.encoding, step=frame.step, is_bigendian=0)
    msg.header = Header(frame_id=frame.frame_id)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(frame.stamp_ns), 1_000_000_000)
    msg.data = frame.data.tobytes()
    return msg


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    p50, p95, p99 = np.percentile(values, (50, 95, 99))
    return {"count": len(values), "mean": float(np.mean(values)), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(max(values))}


def write_overlays(messages, out: Path, fps: float, every: int, image_to_array, cv2) -> dict:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf demo", description=__doc__.splitlines()[0])
    parser.add_argument("--bag", help="bag to play (default: the synthetic bag in --data, generated if absent)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="where the synthetic data set lives")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where overlays and report.json go")
    parser.add_argument("--frames", type=int, default=60, help="frames of the bag to play (2 s at 30 Hz)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback rate factor (1 = recorded rate)")
    parser.add_argument("--loops", type=int, default=3, help="play the clip this many times")
    parser.add_argument("--short-side", type=int, default=192, help="network input short side")
    parser.add_argument("--max-long-side", type=int, default=256, help="network input long side cap")
    # the shipped CPU instance model is small and briefly trained: its mask-rescored scores are low
    parser.add_argument("--score-threshold", type=float, default=0.2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch default")
    parser.add_argument("--png-every", type=int, default=2, help="write every n-th overlay as PNG")
    for task in ("instance", "semantic"):
        parser.add_argument(f"--{task}-config", default=None, help=f"{task} model config (default: shipped)")
        parser.add_argument(f"--{task}-checkpoint", default=None, help=f"{task} checkpoint (default: shipped; 'none' = random weights)")
    args = parser.parse_args(argv)
    report = run_demo(args)
    return 0 if report["stats"]["frames_out"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
