"""The fair parts of ``ros-amf bench runtime``: thread layouts, paced latency and launch counts.

* Thread layout. On a CPU the pipelined engine runs W frames side by side with T = cores / W torch
  threads each, while a bare loop runs one frame at a time on all cores. Comparing the two mixes the
  layout with the pipelining, so the bare model is measured in both layouts (``bench_bare_workers``
  here, ``benchmark.bench_bare`` for one frame on all threads) and the better is the reference.
* Latency. Measured while frames arrive at a paced rate, as from a camera, with the live
  latest-frame policy; latency while flooding the input is mostly queueing.
* Launches. Dispatches per forward of each model (``ros_amf.modeling.dispatch_count``): on a GPU
  every one is a kernel launch paid on the host.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ros_amf.modeling.dispatch_count import count_dispatches
from ros_amf.runtime.benchmark import bare_inputs, sync_device
from ros_amf.runtime.outputs import FrameResult
from ros_amf.runtime.pipeline import Engine
from ros_amf.runtime.preprocess import preprocess_numpy


def describe_layout(frames_in_flight: int, threads_each: int) -> str:
    """'2 frames x 1 thread': how a mode spreads over the cores, for the table and the JSON."""
    return (f"{frames_in_flight} frame{'s' if frames_in_flight != 1 else ''} x {threads_each} "
            f"thread{'s' if threads_each != 1 else ''}")


def bench_bare_workers(engine: Engine, frames: list[np.ndarray], workers: int) -> float:
    """Frames per second of the model forward(s) alone in the pipelined engine's layout: ``workers`` threads
    each taking the next frame, with torch's current (per-worker) thread count. Call it with the same
    ``torch.set_num_threads`` the engine's workers run with; the threads are fresh so they pick it up."""
    inputs = bare_inputs(engine, frames)
    runs = engine.stages.runs
    next_frame, lock = iter(range(len(frames))), threading.Lock()
    ready = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                for tasks, module in runs:            # warm-up: per-thread pools and caches
                    module(inputs[tasks[0]][0])
                sync_device(engine)
                ready.wait()
                while True:
                    with lock:
                        i = next(next_frame, None)
                    if i is None:
                        break
                    for tasks, module in runs:
                        module(inputs[tasks[0]][i % len(inputs[tasks[0]])])
                sync_device(engine)
        except BaseException as exc:  # re-raised below
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=work, name=f"bare-worker{k}") for k in range(workers)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return len(frames) / (time.perf_counter() - start)


def paced_latency(engine: Engine, frames: list[np.ndarray], rate_hz: float, seconds: float, min_frames: int,
                  consume: Callable[[FrameResult], None] | None = None) -> dict:
    """Feed frames at ``rate_hz`` for ``seconds`` (at least ``min_frames`` frames) to a live engine
    (latest-frame policy: a frame that arrives while one waits replaces it and is counted as dropped) and
    report end-to-end latency, submit to result handed on after ``consume``, over the frames that came out."""
    if engine.config.lossless:
        raise ValueError("paced_latency needs a live engine (lossless=False): a paced camera does not wait.")
    latencies: list[float] = []

    def on_result(result: FrameResult) -> None:
        if consume is not None:
            consume(result)
        latencies.append((time.perf_counter() - result.t_in) * 1000.0)

    count = max(min_frames, int(round(rate_hz * seconds)))
    counters_before = engine.stats.snapshot()
    engine.on_result = on_result
    engine.start()
    period, start = 1.0 / rate_hz, time.perf_counter()
    for i in range(count):
        time.sleep(max(0.0, start + i * period - time.perf_counter()))
        engine.submit(frames[i % len(frames)], "rgb8")
    fed_s = time.perf_counter() - start
    drained = engine.wait_idle(timeout=600)
    wall = time.perf_counter() - start
    engine.stop()
    after = engine.stats.snapshot()
    values = np.array(latencies, dtype=float)
    pct = (lambda q: float(np.percentile(values, q)) if len(values) else None)
    return {"rate_hz": rate_hz, "frames_fed": count, "feed_s": fed_s, "wall_s": wall, "drained": drained,
            "frames_out": len(values), "frames_dropped": after.frames_dropped - counters_before.frames_dropped,
            "frames_failed": after.frames_failed - counters_before.frames_failed,
            "output_fps": len(values) / wall if wall > 0 else 0.0,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                           "max": float(values.max()) if len(values) else None}}


def dispatches_per_forward(engine: Engine, models: dict, frame: np.ndarray, devices: list[str]) -> dict:
    """Dispatches (ATen ops) and kernels per forward of each model at the input the engine makes from
    ``frame``, counted on each of ``devices`` ("meta" = the GPU code path, instantly; "cpu" runs it).
    In joint mode also the one joint forward that replaces the two. A model that cannot be counted on a
    device says why instead of a number."""
    shapes = {task: tuple(preprocess_numpy(frame, "rgb8", size)[0].shape[-2:])
              for task, size in engine.input_sizes.items()}
    modules = {task: model.module for task, model in models.items()}
    if engine.stages.joint is not None:
        modules["joint"] = engine.stages.joint
        shapes["joint"] = shapes["instance"]
    report = {}
    for name, module in modules.items():
        height, width = shapes[name]
        row: dict = {"input_hw": [height, width]}
        for device in devices:
            try:
                row[device] = count_dispatches(module, height, width, device=device).as_dict(top=5)
            except Exception as exc:   # an op without a meta kernel, say: a finding, not a crash
                row[device] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        report[name] = row
    return report
