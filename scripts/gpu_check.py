#!/usr/bin/env python
"""The GPU check of issue 18, one step after another, every figure into one JSON file.

Run by scripts/gpu_check.sh on the lent GPU machine (no network; its preinstalled torch, no venv).
Steps: runtime tests; CUDA-vs-CPU output equality (shipped checkpoints, synthetic street frames);
pipelined-vs-synchronous equality; the CUDA stream sanitizer (TORCH_CUDA_SANITIZER, in a child
process); bare FPS per model at 640 and 1280x720 in fp16, eager and CUDA graph (runtime.compile;
--compile none,cudagraphs,inductor adds inductor); pipelined / bare / naive; end-to-end p50/p99 at a
paced 30 Hz and at 80 % of the pipelined peak; and the real overlap of the two models' streams, from
the kernel intervals of a profiler trace (not from event spans).

Without CUDA, or with --dry-run, the same steps run on the CPU at small sizes and few frames (the
plumbing check CI runs); figures from a dry run say nothing about a GPU. A step that fails is
recorded with its error and the others still run; the exit status is 1 if any failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ros_amf.contract.input_size import InputSize  # noqa: E402
from ros_amf.runtime.benchmark import (bench_bare, bench_naive, bench_pipelined, equality_frames,  # noqa: E402
                                       make_frames, output_agreement, result_equality, stream_overlap)
from ros_amf.runtime.compile import COMPILE_MODES, compile_forward  # noqa: E402
from ros_amf.runtime.loading import load_model  # noqa: E402
from ros_amf.runtime.pipeline import Engine, EngineConfig  # noqa: E402

MODELS = ROOT / "models"
SHIPPED = {"instance": ("amf_sparseinst_r18slim.yaml", "amf_sparseinst_r18slim.pt"),
           "semantic": ("fpn_afma_r18slim.yaml", "fpn_afma_r18slim.pt")}
# the speed models (random weights: speed does not depend on the values)
SPEED = {"amf_sparseinst_r50": "instance", "amf_sparseinst_r50d_dcn": "instance", "fpn_afma_r18": "semantic"}


class Plan:
    """Sizes and counts: the real ones on a GPU, small ones for the CPU dry run."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.precision = "fp32" if dry else "fp16"
        self.sizes = {"640": InputSize(96, 128), "1280x720": InputSize(96, 160)} if dry else \
            {"640": InputSize(640, 864), "1280x720": InputSize(720, 1280)}
        self.camera_hw = (96, 160) if dry else (720, 1280)
        self.frames = 6 if dry else 300
        self.timed_iters = 2 if dry else 100
        self.paced_frames = 6 if dry else 150
        self.equality_count = 2 if dry else 12
        self.speed_models = {"fpn_afma_r18": "semantic"} if dry else SPEED


def _loaded(task: str, config: str, checkpoint: str | None = None):
    return load_model(task, MODELS / config, MODELS / checkpoint if checkpoint else None)


def _engine(plan: Plan, models: dict, size: InputSize | None = None, **overrides) -> Engine:
    sizes = {task: size for task in models} if size else {}
    config = EngineConfig(device=overrides.pop("device", plan.device), precision=overrides.pop("precision", plan.precision),
                          input_sizes=sizes, **overrides)
    return Engine(config, models.get("instance"), models.get("semantic"))


def _shipped() -> dict:
    return {task: _loaded(task, *files) for task, files in SHIPPED.items()}


def _speed_pair(size_name: str) -> dict:
    return {"instance": _loaded("instance", "amf_sparseinst_r50.yaml"),
            "semantic": _loaded("semantic", "fpn_afma_r18.yaml")}


# ------------------------------------------------------------------ steps
def step_runtime_tests(plan: Plan, args) -> dict:
    selection = ["tests/modeling/test_dispatch_count.py::test_the_counter_counts_kernels_not_views"] if plan.dry \
        else ["tests/runtime", "-m", "not ros"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.test_timeout)
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(command[1:]), "returncode": done.returncode, "passed": done.returncode == 0,
            "tail": tail}


def step_device_vs_cpu(plan: Plan, args) -> dict:
    """Shipped checkpoints, fp32 on both sides: the device path must reproduce the CPU outputs."""
    frames = equality_frames(plan.equality_count, 480, 640)
    models = _shipped()
    cpu = [_engine(plan, models, device="cpu", precision="fp32", keep_masks=True).process(f, "rgb8") for f in frames]
    # dry run: the torch pre/post path (the one CUDA takes) on the CPU against the default CPU path
    device_engine = _engine(plan, models, precision="fp32", keep_masks=True, device_path=True)
    device = [device_engine.process(f, "rgb8") for f in frames]
    report = result_equality(cpu, device, score_threshold=device_engine.config.score_threshold)
    report["compared"] = f"{plan.device} (device path) vs cpu"
    return report


def step_pipelined_vs_sync(plan: Plan, args) -> dict:
    frames = equality_frames(plan.equality_count, 480, 640)
    models = _shipped()
    _, pipelined = bench_pipelined(_engine(plan, models, lossless=True), frames)
    _, sync = bench_naive(_engine(plan, models), frames)
    return {"frames": len(frames), "agreement_min": output_agreement(sync, pipelined),
            "equal": output_agreement(sync, pipelined) >= 0.995}


def step_sanitizer(plan: Plan, args) -> dict:
    # the sanitizer needs CUDA (on a CPU-only torch it breaks loading); the dry run runs the child without it
    env = dict(os.environ, **({} if plan.dry else {"TORCH_CUDA_SANITIZER": "1"}))
    command = [sys.executable, str(Path(__file__).resolve()), "--sanitizer-child"] + (["--dry-run"] if plan.dry else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=args.test_timeout)
    text = done.stdout + done.stderr
    races = text.count("CSAN detected a possible data race")
    return {"returncode": done.returncode, "races": races, "clean": done.returncode == 0 and races == 0,
            "applies": plan.device == "cuda", "tail": text.strip().splitlines()[-8:]}


def sanitizer_child(plan: Plan) -> int:
    """Run inside TORCH_CUDA_SANITIZER=1: every kernel's reads/writes are checked across streams."""
    frames = make_frames(8 if not plan.dry else 3, *plan.camera_hw)
    rate, results = bench_pipelined(_engine(plan, _shipped(), lossless=True), frames)
    failed = [r.error for r in results if r.error]
    print(f"sanitizer child: {len(results)} frames, {len(failed)} failed")
    return 1 if failed else 0


def _timed(run, iters: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    sync()
    return iters / (time.perf_counter() - start)


FPS_KEYS = {"none": "eager_fps", "cudagraphs": "cuda_graph_fps", "inductor": "inductor_fps"}


def step_bare_fps(plan: Plan, args) -> dict:
    """Forward alone on a fixed input, eager and in each other --compile mode through the runtime's own
    compiled forwards (ros_amf.runtime.compile): CUDA-graph replay (input copy and output clones included,
    as in the engine) and, when asked, inductor. A mode that cannot run says why in place of a number."""
    dtype = torch.float16 if plan.precision == "fp16" else torch.float32
    table = {}
    for name, task in plan.speed_models.items():
        module = _loaded(task, f"{name}.yaml").module.to(plan.device, dtype).eval()
        for size_name, size in plan.sizes.items():
            height = -(-size.short_side // 32) * 32
            width = -(-size.max_long_side // 32) * 32
            static = torch.zeros(1, 3, height, width, device=plan.device, dtype=dtype)
            row: dict = {"input_hw": [height, width]}
            for mode in args.compile.split(","):
                notes: list[str] = []
                forward = compile_forward(module, mode, torch.device(plan.device), f"{name} model", notes)
                with torch.inference_mode():
                    if mode == "none" or forward is not module:
                        for _ in range(3):
                            forward(static)
                    fell_back = mode != "none" and (forward is module or getattr(forward, "fallback_reason", None))
                    row[FPS_KEYS[mode]] = None if fell_back else \
                        _timed(lambda: forward(static), plan.timed_iters, plan.device)
                if notes:
                    row[f"{mode}_note"] = " ".join(notes)
            if row.get("eager_fps") and row.get("cuda_graph_fps"):
                row["cuda_graph_over_eager"] = row["cuda_graph_fps"] / row["eager_fps"]
            table[f"{name} @ {size_name}"] = row
    return table


def step_pipelined_bare_naive(plan: Plan, args) -> dict:
    frames = make_frames(plan.frames, *plan.camera_hw)
    size = plan.sizes["1280x720"]
    models = _speed_pair("1280x720")
    bare = bench_bare(_engine(plan, models, size), frames)
    pipelined, _ = bench_pipelined(_engine(plan, models, size, lossless=True), frames)
    naive, _ = bench_naive(_engine(plan, models, size), frames)
    return {"models": "amf_sparseinst_r50 + fpn_afma_r18", "size": "1280x720", "bare_fps": bare,
            "pipelined_fps": pipelined, "naive_fps": naive, "pipelined_over_bare": pipelined / bare,
            "pipelined_over_naive": pipelined / naive}


def _paced(engine: Engine, frames: list, rate_hz: float) -> dict:
    latencies = []
    # submit -> handed to the consumer (the engine stamps its own end_to_end after the callback)
    engine.on_result = lambda r: latencies.append((time.perf_counter() - r.t_in) * 1000.0)
    engine.start()
    period, start = 1.0 / rate_hz, time.perf_counter()
    for i, frame in enumerate(frames):
        time.sleep(max(0.0, start + i * period - time.perf_counter()))
        engine.submit(frame, "rgb8")
    engine.wait_idle(timeout=120)
    engine.stop()
    values = np.array(latencies, dtype=float)
    return {"rate_hz": rate_hz, "frames_in": len(frames), "frames_out": len(values),
            "dropped": len(frames) - len(values),
            "p50_ms": float(np.percentile(values, 50)) if len(values) else None,
            "p99_ms": float(np.percentile(values, 99)) if len(values) else None}


def step_paced_latency(plan: Plan, args, peak_fps: float | None) -> dict:
    frames = make_frames(plan.paced_frames, *plan.camera_hw)
    size = plan.sizes["1280x720"]
    models = _speed_pair("1280x720")
    report = {"30hz": _paced(_engine(plan, models, size), frames, 30.0)}
    if peak_fps:
        report["80pct_peak"] = _paced(_engine(plan, models, size), frames, 0.8 * peak_fps)
    return report


def kernel_intervals(trace_path: Path) -> list[tuple[str, float, float]]:
    """(stream, start ms, end ms) of every GPU kernel in a chrome trace written by torch.profiler."""
    events = json.loads(trace_path.read_text()).get("traceEvents", [])
    return [(f"stream {e.get('args', {}).get('stream', e.get('tid'))}", e["ts"] / 1000.0, (e["ts"] + e["dur"]) / 1000.0)
            for e in events if e.get("cat") == "kernel" and "dur" in e]


def step_stream_overlap(plan: Plan, args) -> dict:
    frames = make_frames(min(plan.frames, 60), *plan.camera_hw)
    size = plan.sizes["1280x720"]
    engine = _engine(plan, _speed_pair("1280x720"), size, lossless=True)
    bench_pipelined(_engine(plan, _speed_pair("1280x720"), size, lossless=True), frames[:4])   # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if plan.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        with torch.profiler.profile(activities=activities) as profiler:
            bench_pipelined(engine, frames)
        profiler.export_chrome_trace(str(trace))
        intervals = kernel_intervals(trace)
    report = stream_overlap(intervals) or {"overlap_fraction": None}
    report["kernels"] = len(intervals)
    report["note"] = "kernel intervals per CUDA stream from the profiler trace" if intervals else \
        "no GPU kernels in the trace (CPU run): nothing to overlap"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes, few frames (automatic without CUDA)")
    parser.add_argument("--out", default="gpu_check.json", help="JSON report")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip the steps left once this is spent")
    parser.add_argument("--test-timeout", type=float, default=240.0, help="seconds for each child process")
    parser.add_argument("--compile", default="none,cudagraphs",
                        help="modes of the bare-FPS step, comma-separated: none (eager), cudagraphs, inductor")
    parser.add_argument("--sanitizer-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = args.compile.split(",")
    if "none" not in modes or not set(modes) <= set(COMPILE_MODES):
        parser.error(f"--compile takes none (the eager reference) and any of {', '.join(COMPILE_MODES)}, "
                     "comma-separated.")
    plan = Plan(dry=args.dry_run or not torch.cuda.is_available())
    if args.sanitizer_child:
        return sanitizer_child(plan)
    torch.manual_seed(0)
    report = {"dry_run": plan.dry, "torch": torch.__version__, "python": platform.python_version(),
              "device": torch.cuda.get_device_name(0) if plan.device == "cuda" else platform.processor() or "cpu",
              "precision": plan.precision, "steps": {}}
    began = time.perf_counter()
    steps = [("runtime_tests", step_runtime_tests), ("device_vs_cpu", step_device_vs_cpu),
             ("pipelined_vs_sync", step_pipelined_vs_sync), ("stream_sanitizer", step_sanitizer),
             ("bare_fps", step_bare_fps), ("pipelined_bare_naive", step_pipelined_bare_naive),
             ("paced_latency", None), ("stream_overlap", step_stream_overlap)]
    failed = 0
    for name, function in steps:
        if time.perf_counter() - began > args.budget_s:
            report["steps"][name] = {"status": "skipped", "reason": f"time budget of {args.budget_s:.0f} s spent"}
            continue
        start = time.perf_counter()
        try:
            if name == "paced_latency":
                peak = report["steps"].get("pipelined_bare_naive", {}).get("result", {}).get("pipelined_fps")
                result = step_paced_latency(plan, args, peak)
            else:
                result = function(plan, args)
            report["steps"][name] = {"status": "ok", "seconds": time.perf_counter() - start, "result": result}
        except Exception as exc:
            failed += 1
            report["steps"][name] = {"status": "error", "seconds": time.perf_counter() - start,
                                     "error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc().splitlines()[-6:]}
        print(f"[{time.perf_counter() - began:6.1f} s] {name}: {report['steps'][name]['status']}", flush=True)
    report["seconds"] = time.perf_counter() - began
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v.get("result", v.get("error", v.get("reason"))) for k, v in report["steps"].items()},
                     indent=1, default=str)[:6000])
    print(f"wrote {args.out} ({'dry run, ' if plan.dry else ''}{report['seconds']:.0f} s, {failed} step(s) failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
