"""`ros-amf bench runtime`: bare model vs pipelined runtime vs naive node, plus a memory-flatness run.

One run measures, on the same frames and the same models:
  bare       the model forward(s) alone on pre-made input tensors (upper bound of the runtime);
  pipelined  the Engine in its threads (CPU) or streams (GPU), every frame through pre-processing,
             inference, post-processing and ROS message filling (lossless: no frame dropped);
  naive      the same work done serially per frame, as a node doing everything in its callback does.
It checks that pipelined and naive give identical outputs, prints the ratios (targets on CPU: pipelined
>= 0.9x bare and >= 1.3x naive) and writes JSON. On CUDA it also reports how long each stream was
busy and how much the streams overlapped. ``--memory-frames N`` then feeds N frames at 2x the measured
pipelined rate (latest-frame policy, frames drop) and samples the process RSS to show it stays flat.
``--ros`` repeats pipelined/naive with the real nodes over rclpy topics (DDS included).

GPU runs (the issue's targets), e.g.:
  ros-amf bench runtime --device cuda --precision fp16 --channels-last --tasks instance \
      --instance-config models/amf_sparseinst_r50.yaml --image 480x640 --short-side 640 --max-long-side 864
  ros-amf bench runtime --device cuda --precision fp16 --image 720x1280 --short-side 720 --max-long-side 1280 \
      --instance-config models/amf_sparseinst_r50.yaml --semantic-config models/fpn_afma_r18.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ros_amf.runtime.engine import Engine, EngineConfig
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.preprocess import InputSize, preprocess_numpy
from ros_amf.runtime.stats import PipelineStats, format_table

ROOT = Path(__file__).resolve().parents[2]


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MiB."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random street-like frames (a few distinct images, cycled)."""
    rng = np.random.default_rng(seed)
    distinct = []
    for _ in range(min(count, 8)):
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        import cv2
        distinct.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))
    return [distinct[i % len(distinct)] for i in range(count)]


def message_filler():
    """The node's message filling (ROS messages built, not sent), or None where the msgs are not importable."""
    try:
        from std_msgs.msg import Header
        from ros_amf.ros.conversions import array_to_image, instance_ids_image, instances_message
    except ImportError:
        return None

    def fill(result) -> None:
        header = Header(frame_id="camera")
        if result.instances is not None:
            instances_message(result.instances, header, instance_ids_image(result.instances, header))
        if result.semantic is not None:
            array_to_image(result.semantic.labels, "mono8", header)
    return fill


def in_worker_thread(function, *args):
    """Run ``function`` in a fresh thread and return its result.

    Every mode is timed off the main thread, as in a node (executor and engine threads): with OpenMP,
    a forward pass from the main thread can be many times slower than from a worker thread on an
    oversubscribed machine (measured here: 1189 ms vs 64 ms, 2 threads, load ~8 on 2 cores), which
    would make any comparison meaningless.
    """
    box = {}

    def run():
        try:
            box["value"] = function(*args)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def bench_bare(engine: Engine, frames: list[np.ndarray]) -> float:
    size = engine.config.input_size
    tensors = [preprocess_numpy(f, "rgb8", size)[0].to(engine.device, engine.dtype) for f in frames[:8]]
    if engine.config.channels_last:
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    modules = [m.module for m in engine.models.values()]
    with torch.inference_mode():
        for module in modules:
            module(tensors[0])
        _sync(engine)
        start = time.perf_counter()
        for i in range(len(frames)):
            for module in modules:
                module(tensors[i % len(tensors)])
        _sync(engine)
    return len(frames) / (time.perf_counter() - start)


def _sync(engine: Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def bench_pipelined(engine: Engine, frames: list[np.ndarray]) -> tuple[float, list]:
    results = []
    fill = message_filler()

    def consume(result):
        if fill is not None:
            fill(result)
        results.append(result)
    engine.on_result = consume
    engine.start()
    start = time.perf_counter()
    for frame in frames:
        engine.submit(frame, "rgb8")
    engine.wait_idle(timeout=600)
    wall = time.perf_counter() - start
    engine.stop()
    return len(results) / wall, results


def bench_naive(engine: Engine, frames: list[np.ndarray]) -> tuple[float, list]:
    fill = message_filler()
    results = []
    start = time.perf_counter()
    for frame in frames:
        result = engine.process(frame, "rgb8")
        if fill is not None:
            fill(result)
        results.append(result)
    return len(frames) / (time.perf_counter() - start), results


def output_agreement(a: list, b: list) -> float:
    """Smallest per-frame fraction of equal pixels (label map and instance-index map) between two runs.

    Not bit-exactness: the pipelined workers run torch with fewer threads than the naive loop, and a
    different reduction order moves logits by float rounding, which flips the odd border pixel.
    """
    if len(a) != len(b):
        return 0.0
    worst = 1.0
    for x, y in zip(a, b):
        if x.semantic is not None:
            worst = min(worst, float(np.mean(x.semantic.labels == y.semantic.labels)))
        if x.instances is not None:
            worst = min(worst, float(np.mean(x.instances.ids == y.instances.ids)))
    return worst


def stream_overlap(intervals: list[tuple[str, float, float]]) -> dict:
    """Busy time per stream and how much of the busy span had >= 2 streams working at once (GPU)."""
    if not intervals:
        return {}
    busy: dict[str, float] = {}
    edges = []
    for name, start, end in intervals:
        busy[name] = busy.get(name, 0.0) + max(0.0, end - start)
        edges += [(start, 1), (end, -1)]
    edges.sort()
    active, last, union, overlapped = 0, edges[0][0], 0.0, 0.0
    for t, delta in edges:
        if active >= 1:
            union += t - last
        if active >= 2:
            overlapped += t - last
        active, last = active + delta, t
    return {"busy_ms": busy, "union_ms": union, "overlapped_ms": overlapped,
            "overlap_fraction": overlapped / union if union else 0.0,
            "sum_busy_over_union": sum(busy.values()) / union if union else 0.0}


def memory_run(make_engine, frames: list[np.ndarray], rate_hz: float, count: int) -> dict:
    """Feed ``count`` frames at ``rate_hz`` (latest-frame policy) and sample RSS every 5 % of the run."""
    engine = make_engine()
    engine.on_result = lambda result: None
    engine.start()
    samples, period = [], 1.0 / rate_hz
    every = max(1, count // 20)
    start = time.perf_counter()
    for i in range(count):
        due = start + i * period
        time.sleep(max(0.0, due - time.perf_counter()))
        engine.submit(frames[i % len(frames)], "rgb8")
        if i % every == 0:
            samples.append((i, rss_mb()))
    engine.wait_idle(60)
    samples.append((count, rss_mb()))
    engine.stop()
    snap = engine.stats.snapshot()
    second_half = [s for s in samples if s[0] >= count // 2]
    slope = float(np.polyfit([s[0] for s in second_half], [s[1] for s in second_half], 1)[0]) * 1000 \
        if len(second_half) >= 2 else 0.0
    return {"frames_fed": count, "feed_rate_hz": rate_hz, "wall_s": time.perf_counter() - start,
            "frames_out": snap.frames_out, "frames_dropped": snap.frames_dropped,
            "frames_failed": snap.frames_failed, "rss_mb_samples": samples,
            "rss_mb_first": samples[0][1], "rss_mb_last": samples[-1][1],
            "rss_mb_max_minus_min_second_half": max(s[1] for s in second_half) - min(s[1] for s in second_half),
            "rss_slope_mb_per_1000_frames_second_half": slope}


def ros_run(args, params: dict, frames: list[np.ndarray], rate_hz: float) -> dict:
    """Real nodes over rclpy: pipelined and naive node fed at ``rate_hz``; output rate at a subscriber."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from ros_amf.ros.conversions import array_to_image
    from ros_amf.ros.naive_node import NaivePerceptionNode
    from ros_amf.ros.node import PerceptionNode

    out = {}
    for label, node_class in (("pipelined_node", PerceptionNode), ("naive_node", NaivePerceptionNode)):
        context = Context()
        rclpy.init(context=context)
        topic = f"/bench_{label}/image_raw"
        overrides = {**params, "input_topic": topic, "publish_overlay": False, "camera_info_topic": ""}
        node = node_class(f"bench_{label}", context=context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        io = rclpy.create_node(f"bench_io_{label}", context=context)
        got = []
        watched = "labels" if "semantic" in node.models else "instances"
        kind = Image if watched == "labels" else __import__("ros_amf_msgs.msg", fromlist=["x"]).InstanceSegmentation
        io.create_subscription(kind, f"{node.get_fully_qualified_name()}/{watched}",
                               lambda m: got.append(time.perf_counter()), qos_profile_sensor_data)
        pub = io.create_publisher(Image, topic, qos_profile_sensor_data)
        executor = MultiThreadedExecutor(num_threads=3, context=context)
        executor.add_node(node)
        executor.add_node(io)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        while pub.get_subscription_count() < 1:
            time.sleep(0.05)
        messages = [array_to_image(f, "rgb8", Header(frame_id="camera")) for f in frames[:8]]
        start = time.perf_counter()
        for i in range(len(frames)):
            time.sleep(max(0.0, start + i / rate_hz - time.perf_counter()))
            msg = messages[i % len(messages)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = i, 0
            pub.publish(msg)
        time.sleep(1.0 + 1.0 / rate_hz)
        done = [t for t in got if t >= start]
        wall = (max(done) - start) if done else float("nan")
        snap = node.stats.snapshot()
        out[label] = {"fed": len(frames), "feed_rate_hz": rate_hz, "received": len(done),
                      "output_fps": len(done) / wall if done else 0.0, "frames_in": snap.frames_in,
                      "frames_dropped": snap.frames_dropped, "stats": snap.as_dict()}
        executor.shutdown()
        node.destroy_node()
        io.destroy_node()
        rclpy.try_shutdown(context=context)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf bench runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=["both", "instance", "semantic"], default="both")
    parser.add_argument("--instance-config", default="models/amf_sparseinst_r18slim.yaml")
    parser.add_argument("--instance-checkpoint", default="", help="empty: random weights (speed only)")
    parser.add_argument("--semantic-config", default="models/fpn_afma_r18slim.yaml")
    parser.add_argument("--semantic-checkpoint", default="")
    parser.add_argument("--image", default="480x640", help="camera image HxW")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--max-long-side", type=int, default=448)
    parser.add_argument("--frames", type=int, default=30, help="frames per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median FPS is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--joint", action="store_true")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the bare and naive runs (0 = one per core)")
    parser.add_argument("--workers", type=int, default=0, help="inference workers of the pipelined engine (0 = auto)")
    parser.add_argument("--memory-frames", type=int, default=0, help="frames of the memory-flatness run (0 = skip)")
    parser.add_argument("--ros", action="store_true", help="also measure the real nodes over rclpy")
    parser.add_argument("--json", default=str(ROOT / "out" / "bench" / "runtime.json"))
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.image.split("x"))
    tasks = ["instance", "semantic"] if args.tasks == "both" else [args.tasks]
    models = {t: load_model(t, getattr(args, f"{t}_config"), getattr(args, f"{t}_checkpoint") or None, args.device)
              for t in tasks}
    config = EngineConfig(input_size=InputSize(args.short_side, args.max_long_side), device=args.device,
                          precision=args.precision, channels_last=args.channels_last, joint=args.joint,
                          score_threshold=args.score_threshold, lossless=True, inference_workers=args.workers,
                          record_stream_times=args.device.startswith("cuda"))

    def make_engine(**changes):
        engine = Engine(EngineConfig(**{**config.__dict__, **changes}), models.get("instance"),
                        models.get("semantic"), stats=PipelineStats())
        engine.warm_up(height, width)
        return engine

    frames = make_frames(args.frames, height, width)
    print(f"bench runtime: {', '.join(f'{t}={m.name}' for t, m in models.items())}, image {height}x{width}, "
          f"input {args.short_side}/{args.max_long_side}, device {args.device}, {args.frames} frames, "
          f"{os.cpu_count()} cores", flush=True)
    # interleaved rounds, median per mode: on a shared machine the load drifts, and running the modes
    # one after another would hand that drift to whichever mode ran last
    bare_engine, naive_engine, pipe_engine = make_engine(), make_engine(), make_engine()
    rounds = {"bare": [], "naive": [], "pipelined": []}
    # torch's thread count is process-wide: bare and naive run with the default (all cores on one
    # frame), the pipelined engine with its per-worker share
    default_threads = args.threads or os.cpu_count() or 1
    worker_threads = torch.get_num_threads()
    for _ in range(args.rounds):
        torch.set_num_threads(default_threads)
        rounds["bare"].append(in_worker_thread(bench_bare, bare_engine, frames))
        fps, naive_results = in_worker_thread(bench_naive, naive_engine, frames)
        rounds["naive"].append(fps)
        torch.set_num_threads(worker_threads)
        fps, pipe_results = bench_pipelined(pipe_engine, frames)
        rounds["pipelined"].append(fps)
    bare, naive_fps, pipe_fps = (float(np.median(rounds[k])) for k in ("bare", "naive", "pipelined"))
    report = {"device": args.device, "image_hw": [height, width], "input": [args.short_side, args.max_long_side],
              "models": {t: m.name for t, m in models.items()}, "frames": args.frames,
              "torch_threads_bare_and_naive": default_threads, "torch_threads_per_worker": worker_threads,
              "inference_workers": pipe_engine.inference_workers, "precision": args.precision, "joint": args.joint,
              "rounds": rounds, "bare_fps": bare, "pipelined_fps": pipe_fps, "naive_fps": naive_fps,
              "pipelined_over_bare": pipe_fps / bare, "pipelined_over_naive": pipe_fps / naive_fps,
              "output_agreement": output_agreement(pipe_results, naive_results),
              "message_filling": message_filler() is not None,
              "pipelined_stats": pipe_engine.stats.snapshot().as_dict()}
    if pipe_engine.streams.timing:
        report["stream_overlap"] = stream_overlap(pipe_engine.stream_busy_ms())
    print(f"\nmedian of {args.rounds} interleaved rounds; per round: "
          + ", ".join(f"{k} {['%.2f' % v for v in vals]}" for k, vals in rounds.items()))
    print(f"{'mode':<12} {'FPS':>8} {'x bare':>8}\n{'bare':<12} {bare:>8.2f} {1:>8.2f}\n"
          f"{'pipelined':<12} {pipe_fps:>8.2f} {pipe_fps / bare:>8.2f}\n{'naive':<12} {naive_fps:>8.2f} "
          f"{naive_fps / bare:>8.2f}")
    print(f"pipelined / naive = {pipe_fps / naive_fps:.2f}  (targets: pipelined >= 0.9x bare, >= 1.3x naive); "
          f"outputs agree on >= {100 * report['output_agreement']:.2f}% of pixels in every frame")
    print(format_table(pipe_engine.stats.snapshot()))
    if "stream_overlap" in report:
        print("GPU stream overlap:", json.dumps(report["stream_overlap"], indent=1))
    if args.ros:
        params = {"device": args.device, "precision": args.precision, "input_short_side": args.short_side,
                  "input_max_long_side": args.max_long_side}
        for t in tasks:
            params[f"{t}.config"] = getattr(args, f"{t}_config")
            params[f"{t}.checkpoint"] = getattr(args, f"{t}_checkpoint")
        report["ros"] = ros_run(args, params, frames, rate_hz=2 * max(bare, pipe_fps, naive_fps))
        for label, item in report["ros"].items():
            print(f"ros {label:<15} fed {item['fed']} at {item['feed_rate_hz']:.1f} Hz -> "
                  f"{item['output_fps']:.2f} FPS out, {item['frames_dropped']} dropped")
        ros_pipe, ros_naive = report["ros"]["pipelined_node"]["output_fps"], report["ros"]["naive_node"]["output_fps"]
        print(f"ros: pipelined node / bare = {ros_pipe / bare:.2f}, pipelined node / naive node = "
              f"{ros_pipe / max(ros_naive, 1e-9):.2f}")
    if args.memory_frames:
        print(f"\nmemory: feeding {args.memory_frames} frames at 2x the pipelined rate ({2 * pipe_fps:.1f} Hz) ...",
              flush=True)
        report["memory"] = memory_run(lambda: make_engine(lossless=False), frames, 2 * pipe_fps, args.memory_frames)
        mem = report["memory"]
        print(f"memory: RSS {mem['rss_mb_first']:.1f} -> {mem['rss_mb_last']:.1f} MiB, second-half spread "
              f"{mem['rss_mb_max_minus_min_second_half']:.1f} MiB, slope "
              f"{mem['rss_slope_mb_per_1000_frames_second_half']:.2f} MiB/1000 frames; out {mem['frames_out']}, "
              f"dropped {mem['frames_dropped']}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
