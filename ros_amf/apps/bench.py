"""`ros-amf bench runtime`: bare model vs pipelined runtime vs naive node, plus a memory-flatness run.

One run measures, on the same synthetic street frames and (by default) the shipped checkpoints:
  bare       the model forward(s) alone on pre-made input tensors (upper bound of the runtime), in two
             thread layouts: one frame at a time on all threads, and the pipelined engine's own layout
             (W worker threads, cores / W torch threads each); the better of the two is the reference,
             so the ratio measures pipelining and not a change of thread layout;
  pipelined  the Engine in its threads (CPU) or streams (GPU), every frame through pre-processing,
             inference, post-processing and ROS message filling (lossless: no frame dropped);
  naive      the same work done serially per frame on all threads, as a node doing everything in its
             callback does.
It checks that pipelined and naive give identical outputs, prints the ratios (targets on CPU: pipelined
>= 0.9x the best bare and >= 1.3x naive), then measures end-to-end latency with frames fed at a paced
rate (30 Hz and 80 % of the pipelined peak, live latest-frame policy) rather than while flooding, counts
dispatches per forward of each model, and writes JSON. On CUDA it also reports how long each stream was
busy and how much the streams overlapped. ``--memory-frames N`` then feeds N frames at 2x the measured
pipelined rate (latest-frame policy, frames drop) and samples the process RSS to show it stays flat.
``--ros`` repeats pipelined/naive with the real nodes over rclpy topics (DDS included), through the
replay harness. ``--backend all`` instead measures each inference backend (torch, onnxruntime,
openvino: ros_amf.runtime.backends) bare and pipelined in interleaved rounds, with the same thread
layout, and checks on real synthetic frames that each reproduces torch's outputs; ``--compile
none,inductor`` does the same for the torch forward's compile modes (ros_amf.runtime.compile). The
measurements live in ros_amf.runtime.benchmark and ros_amf.runtime.fair_benchmark; this module reads
the flags, runs them in order and reports.

GPU runs (the issue's targets), e.g.:
  ros-amf bench runtime --device cuda --precision fp16 --channels-last --tasks instance \\
      --instance-config models/amf_sparseinst_r50.yaml --image 480x640
  ros-amf bench runtime --device cuda --precision fp16 --image 720x1280 --input-short-side 720 \\
      --input-max-long-side 1280 --instance-config models/amf_sparseinst_r50.yaml \\
      --semantic-config models/fpn_afma_r18.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ros_amf.apps.common import add_input_size_flags, input_size_from
from ros_amf.contract import shipped
from ros_amf.runtime.backends import BACKENDS, CHOICES, backend_version
from ros_amf.runtime.benchmark import (bench_bare, bench_naive, bench_pipelined, equality_frames, in_worker_thread,
                                       measure_variants, memory_run, output_agreement, stream_overlap, street_frames)
from ros_amf.runtime.compile import COMPILE_MODES
from ros_amf.runtime.fair_benchmark import bench_bare_workers, describe_layout, dispatches_per_forward, paced_latency
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.stats import PipelineCounters, format_table

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-amf bench runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", choices=["both", "instance", "semantic"], default="both")
    parser.add_argument("--instance-config", default=shipped.INSTANCE.config)
    parser.add_argument("--instance-checkpoint", default="auto",
                        help="auto: the .pt beside the config (models/X.yaml -> models/X.pt), random weights when "
                             "there is none; empty: random weights (speed only)")
    parser.add_argument("--semantic-config", default=shipped.SEMANTIC.config)
    parser.add_argument("--semantic-checkpoint", default="auto")
    parser.add_argument("--image", default="480x640", help="camera image HxW")
    add_input_size_flags(parser, "each model config's input_size")
    parser.add_argument("--frames", type=int, default=30, help="frames per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median FPS is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--joint", action="store_true")
    parser.add_argument("--backend", choices=CHOICES + ("all",), default="torch",
                        help="who runs the forward; 'all' compares every installed backend (bare and pipelined)")
    parser.add_argument("--compile", default="none",
                        help="torch forward of every model: none | inductor | cudagraphs (CUDA only); several, "
                             "comma-separated (none,inductor), are measured bare and pipelined in one run, outputs "
                             "compared with the first's")
    parser.add_argument("--equality-frames", type=int, default=4,
                        help="--backend all: synthetic street frames of the output-equality check")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the bare and naive runs (0 = one per core)")
    parser.add_argument("--workers", type=int, default=0, help="inference workers of the pipelined engine (0 = auto)")
    parser.add_argument("--paced-hz", type=float, default=30.0, help="camera rate of the first paced latency run")
    parser.add_argument("--paced-peak-fraction", type=float, default=0.8,
                        help="the second paced run feeds at this fraction of the measured pipelined peak")
    parser.add_argument("--paced-seconds", type=float, default=10.0,
                        help="feed time of each paced latency run (0 = skip them)")
    parser.add_argument("--paced-min-frames", type=int, default=10, help="frames fed at least in each paced run")
    parser.add_argument("--memory-frames", type=int, default=0, help="frames of the memory-flatness run (0 = skip)")
    parser.add_argument("--ros", action="store_true", help="also measure the real nodes over rclpy")
    parser.add_argument("--json", default=str(ROOT / "out" / "bench" / "runtime.json"))
    return parser


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


def checkpoint_for(config: str, checkpoint: str) -> str | None:
    """The checkpoint to load: ``auto`` is the shipped .pt beside the config when there is one."""
    if checkpoint != "auto":
        return checkpoint or None
    beside = Path(config).with_suffix(".pt") if config else None
    return str(beside) if beside is not None and beside.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.paced_seconds > 0 and (args.paced_hz <= 0 or not 0 < args.paced_peak_fraction <= 1):
        parser.error("--paced-hz must be above 0 and --paced-peak-fraction in (0, 1]; "
                     "use --paced-seconds 0 to skip the paced latency runs.")
    compile_modes = args.compile.split(",")
    if any(mode not in COMPILE_MODES for mode in compile_modes) or (len(compile_modes) > 1 and args.backend == "all"):
        parser.error(f"--compile takes one or more of {', '.join(COMPILE_MODES)}, comma-separated, and several "
                     "modes cannot be combined with --backend all; measure one of the two at a time.")
    try:
        height, width = (int(v) for v in args.image.split("x"))
    except ValueError:
        parser.error(f"--image '{args.image}' is not HxW (e.g. 480x640).")
    tasks = ["instance", "semantic"] if args.tasks == "both" else [args.tasks]
    try:
        checkpoints = {t: checkpoint_for(getattr(args, f"{t}_config"), getattr(args, f"{t}_checkpoint")) for t in tasks}
        models = {t: load_model(t, getattr(args, f"{t}_config"), checkpoints[t], args.device) for t in tasks}
        config = EngineConfig(input_sizes={t: input_size_from(args, m.input_size) for t, m in models.items()},
                              device=args.device, precision=args.precision, channels_last=args.channels_last,
                              joint=args.joint, score_threshold=args.score_threshold, lossless=True,
                              backend="torch" if args.backend == "all" else args.backend,
                              compile={t: compile_modes[0] for t in tasks},
                              inference_workers=args.workers, record_stream_times=args.device.startswith("cuda"))
    except (ValueError, FileNotFoundError) as exc:   # ConfigError, CheckpointError, a bad device or input size
        print(f"ros-amf bench runtime: {exc}", file=sys.stderr)
        return 2

    def make_engine(**changes):
        engine = Engine(EngineConfig(**{**config.__dict__, **changes}), models.get("instance"),
                        models.get("semantic"), stats=PipelineCounters())
        engine.warm_up(height, width)
        return engine

    frames = street_frames(args.frames, height, width)
    sizes = ", ".join(f"{t} {s.short_side}/{s.max_long_side}" for t, s in config.input_sizes.items())
    weights = ", ".join(f"{t}={checkpoints[t] or 'RANDOM weights'}" for t in tasks)
    print(f"bench runtime: {', '.join(f'{t}={m.name}' for t, m in models.items())}, weights {weights}, image "
          f"{height}x{width} (synthetic street frames), input {sizes}, device {args.device}, {args.frames} frames, "
          f"{os.cpu_count()} cores", flush=True)
    if args.backend == "all" or len(compile_modes) > 1:
        return compare_backends(args, make_engine, frames, (height, width), models, config,
                                compile_modes if len(compile_modes) > 1 else None)
    report, pipe_engine = compare_modes(args, make_engine, frames)
    report.update({"backend": pipe_engine.stages.backend, "device": args.device, "image_hw": [height, width],
                   "models": {t: m.name for t, m in models.items()}, "checkpoints": checkpoints,
                   "frames_source": "synthetic street frames (ros_amf.data.synthetic.render.render_still)",
                   "input_sizes": {t: [s.short_side, s.max_long_side] for t, s in config.input_sizes.items()}})
    print_modes(report, pipe_engine)
    if args.paced_seconds > 0:
        report["paced_latency"] = measure_paced(args, make_engine, frames, report["pipelined_fps"])
        print(format_paced(report["paced_latency"]))
    devices = ["meta"] + (["cpu"] if args.device == "cpu" else [])
    report["dispatches_per_forward"] = dispatches_per_forward(pipe_engine, models, frames[0], devices)
    print(format_dispatches(report["dispatches_per_forward"]))
    if args.ros:
        report["ros"] = compare_nodes_over_ros(args, tasks, frames, report)
    if args.memory_frames:
        pipe_fps = report["pipelined_fps"]
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


def compare_modes(args: argparse.Namespace, make_engine, frames: list[np.ndarray]) -> tuple[dict, Engine]:
    """Bare (in both thread layouts), naive and pipelined in interleaved rounds, the median FPS of each.

    Interleaved because on a shared machine the load drifts, and running the modes one after another
    would hand that drift to whichever mode ran last.
    """
    bare_engine, naive_engine, pipe_engine = make_engine(), make_engine(), make_engine()
    fill = message_filler()
    modes = ("bare_serial", "bare_workers", "naive", "pipelined")
    rounds: dict[str, list[float]] = {k: [] for k in modes}
    # torch's thread count is process-wide: the one-frame modes run with all cores on one frame, the
    # workers' modes with the pipelined engine's per-worker share (set when the engines were built)
    default_threads = args.threads or os.cpu_count() or 1
    worker_threads = torch.get_num_threads()
    workers = pipe_engine.inference_workers
    for _ in range(args.rounds):
        torch.set_num_threads(default_threads)
        rounds["bare_serial"].append(in_worker_thread(bench_bare, bare_engine, frames))
        fps, naive_results = in_worker_thread(bench_naive, naive_engine, frames, fill)
        rounds["naive"].append(fps)
        torch.set_num_threads(worker_threads)
        rounds["bare_workers"].append(bench_bare_workers(bare_engine, frames, workers))
        fps, pipe_results = bench_pipelined(pipe_engine, frames, fill)
        rounds["pipelined"].append(fps)
    fps = {k: float(np.median(rounds[k])) for k in modes}
    reference = max(("bare_serial", "bare_workers"), key=fps.get)
    bare = fps[reference]
    serial, parallel = describe_layout(1, default_threads), describe_layout(workers, worker_threads)
    report = {"frames": args.frames, "torch_threads_bare_and_naive": default_threads,
              "torch_threads_per_worker": worker_threads, "inference_workers": workers,
              "precision": args.precision, "joint": args.joint,
              "layouts": {"bare_serial": serial, "naive": serial, "bare_workers": parallel, "pipelined": parallel},
              "rounds": rounds, "bare_serial_fps": fps["bare_serial"], "bare_workers_fps": fps["bare_workers"],
              "bare_reference": reference, "bare_fps": bare, "pipelined_fps": fps["pipelined"],
              "naive_fps": fps["naive"], "pipelined_over_bare": fps["pipelined"] / bare,
              "pipelined_over_naive": fps["pipelined"] / fps["naive"],
              "pipelined_over_bare_same_layout": fps["pipelined"] / fps["bare_workers"],
              "targets": {"pipelined_over_bare": 0.9, "pipelined_over_naive": 1.3},
              "output_agreement": output_agreement(pipe_results, naive_results),
              # with random weights there are no instances, and the agreement of the id images checks nothing
              "instances_compared": sum(len(r.instances.scores) for r in naive_results if r.instances is not None),
              "message_filling": fill is not None,
              "pipelined_stats_flooded": pipe_engine.stats.snapshot().as_dict(),
              "naive_stats": naive_engine.stats.snapshot().as_dict()}
    report["pipelined_stats"] = report["pipelined_stats_flooded"]   # old key, same figures
    if pipe_engine.streams.timing:
        report["stream_overlap"] = stream_overlap(pipe_engine.stream_busy_ms())
    return report, pipe_engine


def measure_paced(args: argparse.Namespace, make_engine, frames: list[np.ndarray], peak_fps: float) -> dict:
    """End-to-end latency of the live engine (latest-frame policy) at the camera rate and below the peak."""
    engine, fill = make_engine(lossless=False), message_filler()
    rates = {f"{args.paced_hz:g} Hz": args.paced_hz,
             f"{100 * args.paced_peak_fraction:g}% of peak": args.paced_peak_fraction * peak_fps}
    report = {"peak_fps": peak_fps, "seconds": args.paced_seconds, "runs": {}}
    for label, rate in rates.items():
        report["runs"][label] = paced_latency(engine, frames, rate, args.paced_seconds, args.paced_min_frames, fill)
    return report


def format_paced(paced: dict) -> str:
    lines = [f"\nlatency at a paced input rate (live engine, latest-frame policy; peak = pipelined "
             f"{paced['peak_fps']:.2f} FPS); end to end = submit -> messages filled",
             f"{'input rate':<18} {'Hz':>7} {'fed':>5} {'out':>5} {'dropped':>7} {'failed':>6} {'p50 ms':>8} "
             f"{'p90 ms':>8} {'p99 ms':>8}"]
    for label, run in paced["runs"].items():
        lat = {k: ("-" if v is None else f"{v:.1f}") for k, v in run["latency_ms"].items()}
        lines.append(f"{label:<18} {run['rate_hz']:>7.2f} {run['frames_fed']:>5} {run['frames_out']:>5} "
                     f"{run['frames_dropped']:>7} {run['frames_failed']:>6} {lat['p50']:>8} {lat['p90']:>8} "
                     f"{lat['p99']:>8}")
    return "\n".join(lines)


def format_dispatches(counts: dict) -> str:
    """Dispatches (ATen ops) and kernels per forward of each model; meta = the GPU code path."""
    lines = ["\ndispatches per forward (ATen ops / of them kernels; meta device = the GPU code path)"]
    for name, row in counts.items():
        cells = []
        for device, item in row.items():
            if device == "input_hw":
                continue
            cells.append(f"{device} {item['error']}" if "error" in item else
                         f"{device} {item['dispatches']} / {item['kernels']}")
        lines.append(f"  {name:<9} at {row['input_hw'][0]}x{row['input_hw'][1]}: " + ", ".join(cells))
    return "\n".join(lines)


def compare_backends(args: argparse.Namespace, make_engine, frames: list[np.ndarray], camera_hw: tuple[int, int],
                     models: dict, config: EngineConfig, compile_modes: list[str] | None = None) -> int:
    """``--backend all``: every installed backend bare and pipelined, and its outputs against torch's; or, with
    several ``--compile`` modes, the torch forward in each mode against the first."""
    if compile_modes:
        variants = {f"compile {m}": {"compile": {t: m for t in models}} for m in compile_modes}
        versions = {"torch": torch.__version__}
    else:
        variants, versions = {}, {}
        for backend in BACKENDS:
            try:
                versions[backend] = backend_version(backend)
                variants[backend] = {"backend": backend}
            except ImportError as exc:
                print(f"skipping: {exc}")
    report = measure_variants(make_engine, variants, frames, equality_frames(args.equality_frames, *camera_hw),
                              args.rounds, args.threads or os.cpu_count() or 1, message_filler())
    report.update({"device": args.device, "image_hw": list(camera_hw), "frames": args.frames,
                   "models": {t: m.name for t, m in models.items()}, "joint": args.joint,
                   "input_sizes": {t: [s.short_side, s.max_long_side] for t, s in config.input_sizes.items()},
                   "versions": versions, "load_average": os.getloadavg()})
    if not compile_modes:
        report["backends"] = report["variants"]      # the key earlier reports used
    print(format_backends(report))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {path}")
    return 0


def format_backends(report: dict) -> str:
    """The variant table (backends or compile modes): FPS bare and pipelined, ratios to the first, and equality
    with the first."""
    first = next(iter(report["variants"]))
    lines = [f"median of {report['rounds']} interleaved rounds; bare: {report['threads_bare']} threads, pipelined: "
             f"{report['inference_workers']} workers x {report['threads_per_worker']} threads; load average "
             f"{report['load_average'][0]:.1f}",
             f"| variant | bare FPS | x {first} | pipelined FPS | x {first} | semantic labels equal | "
             f"instances matched (min IoU, max score diff) | equal |", "|---|---|---|---|---|---|---|---|"]
    for name, item in report["variants"].items():
        eq = item["equality_vs_first"]
        ran = f"{name} (fell back: {len(item['fell_back_to_torch'])} warning(s))" if item["fell_back_to_torch"] or \
            item["ran"] != item["changes"].get("backend", item["ran"]) else name
        lines.append(f"| {ran} | {item['bare_fps']:.2f} | {item['bare_over_first']:.2f} | "
                     f"{item['pipelined_fps']:.2f} | {item['pipelined_over_first']:.2f} | "
                     f"{100 * eq['semantic_agreement_min']:.2f}% | "
                     f"{eq['matched']}/{eq['instances']} ({eq['min_mask_iou']:.4f}, {eq['max_score_diff']:.1e}; "
                     f"borderline {eq['borderline']}) | {'yes' if eq['equal'] else 'NO'} |")
    return "\n".join(lines)


def print_modes(report: dict, pipe_engine: Engine) -> None:
    rounds, bare = report["rounds"], report["bare_fps"]
    layouts = report["layouts"]
    print(f"\nmedian of {len(rounds['bare_serial'])} interleaved rounds; per round: "
          + ", ".join(f"{k} {['%.2f' % v for v in vals]}" for k, vals in rounds.items()))
    print(f"{'mode':<14} {'layout (frames in flight x torch threads)':<42} {'FPS':>8} {'x best bare':>12}")
    for mode in ("bare_serial", "bare_workers", "pipelined", "naive"):
        mark = "  <- reference" if mode == report["bare_reference"] else ""
        fps = report[mode + "_fps"]
        print(f"{mode:<14} {layouts[mode]:<42} {fps:>8.2f} {fps / bare:>12.2f}{mark}")
    print(f"pipelined / best bare = {report['pipelined_over_bare']:.2f} (same layout: "
          f"{report['pipelined_over_bare_same_layout']:.2f}), pipelined / naive = "
          f"{report['pipelined_over_naive']:.2f}  (targets: >= 0.9x best bare, >= 1.3x naive); outputs agree on >= "
          f"{100 * report['output_agreement']:.2f}% "
          f"of pixels in every frame ({report['instances_compared']} instances in the naive run)")
    print("pipelined, flooded (lossless, every frame queued; latency includes queueing):")
    print(format_table(pipe_engine.stats.snapshot()))
    if "stream_overlap" in report:
        print("GPU stream overlap:", json.dumps(report["stream_overlap"], indent=1))


def compare_nodes_over_ros(args: argparse.Namespace, tasks: list[str], frames: list[np.ndarray], report: dict) -> dict:
    """The pipelined and the naive node over rclpy (replay harness), fed at twice the fastest mode's rate."""
    from ros_amf.replay.benchmark import compare_nodes   # imports rclpy: only with --ros

    params = {"device": args.device, "precision": args.precision}
    for t in tasks:
        params[f"{t}.config"] = getattr(args, f"{t}_config")
        params[f"{t}.checkpoint"] = report["checkpoints"][t] or ""
        params[f"{t}.input_size.short_side"] = args.input_short_side
        params[f"{t}.input_size.max_long_side"] = args.input_max_long_side
    bare = report["bare_fps"]
    rate = 2 * max(bare, report["pipelined_fps"], report["naive_fps"])
    result = compare_nodes(frames, params, rate, Path(tempfile.mkdtemp(prefix="ros_amf_bench_")))
    for label, item in result.items():
        print(f"ros {label:<15} fed {item['fed']} at {item['feed_rate_hz']:.1f} Hz -> "
              f"{item['output_fps']:.2f} FPS out, {item['frames_dropped']} dropped")
    ros_pipe, ros_naive = result["pipelined_node"]["output_fps"], result["naive_node"]["output_fps"]
    print(f"ros: pipelined node / bare = {ros_pipe / bare:.2f}, pipelined node / naive node = "
          f"{ros_pipe / max(ros_naive, 1e-9):.2f}")
    return result


if __name__ == "__main__":
    sys.exit(main())
