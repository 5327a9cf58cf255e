"""Measurements behind ``ros-amf bench runtime``: the bare model, the pipelined engine and the naive
serial loop on the same frames, how far their outputs agree, GPU stream overlap and a memory run.

No ROS here: what a node does with a result (building its messages) comes in as a callback, and
the comparison of the real nodes over rclpy lives in ros_amf.replay.benchmark.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from ros_amf.runtime.outputs import FrameResult
from ros_amf.runtime.pipeline import Engine
from ros_amf.runtime.preprocess import preprocess_numpy

Consumer = Callable[[FrameResult], None]


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
        distinct.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))
    return [distinct[i % len(distinct)] for i in range(count)]


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
    """Frames per second of the model forward(s) alone, on input tensors made beforehand."""
    inputs = {task: [preprocess_numpy(f, "rgb8", size)[0].to(engine.device, engine.dtype) for f in frames[:8]]
              for task, size in engine.input_sizes.items()}
    if engine.config.channels_last:
        inputs = {task: [t.contiguous(memory_format=torch.channels_last) for t in tensors]
                  for task, tensors in inputs.items()}
    with torch.inference_mode():
        for task, model in engine.models.items():
            model.module(inputs[task][0])
        _sync(engine)
        start = time.perf_counter()
        for i in range(len(frames)):
            for task, model in engine.models.items():
                model.module(inputs[task][i % len(inputs[task])])
        _sync(engine)
    return len(frames) / (time.perf_counter() - start)


def _sync(engine: Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def bench_pipelined(engine: Engine, frames: list[np.ndarray], consume: Consumer | None = None) -> tuple[float, list]:
    """Frames per second through the engine's pipeline (lossless), each result handed to ``consume``
    as a node would publish it; returns the rate and the results."""
    results = []

    def on_result(result):
        if consume is not None:
            consume(result)
        results.append(result)
    engine.on_result = on_result
    engine.start()
    start = time.perf_counter()
    for frame in frames:
        engine.submit(frame, "rgb8")
    engine.wait_idle(timeout=600)
    wall = time.perf_counter() - start
    engine.stop()
    return len(results) / wall, results


def bench_naive(engine: Engine, frames: list[np.ndarray], consume: Consumer | None = None) -> tuple[float, list]:
    """The same work done serially per frame, as a node doing everything in its callback does."""
    results = []
    start = time.perf_counter()
    for frame in frames:
        result = engine.process(frame, "rgb8")
        if consume is not None:
            consume(result)
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
