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
    """Smooth random noise frames (a few distinct images, cycled): cheap, for plumbing and memory runs;
    speed comparisons use ``street_frames``, on which the trained models find instances."""
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


def bare_inputs(engine: Engine, frames: list[np.ndarray]) -> dict[str, list[torch.Tensor]]:
    """The network inputs of (up to 8 of) ``frames`` per task, made beforehand for the bare runs."""
    inputs = {task: [preprocess_numpy(f, "rgb8", size)[0].to(engine.device, engine.dtype) for f in frames[:8]]
              for task, size in engine.input_sizes.items()}
    if engine.config.channels_last:
        inputs = {task: [t.contiguous(memory_format=torch.channels_last) for t in tensors]
                  for task, tensors in inputs.items()}
    return inputs


def bench_bare(engine: Engine, frames: list[np.ndarray]) -> float:
    """Frames per second of the model forward(s) alone, one frame at a time with torch's current thread
    count, on input tensors made beforehand; the forwards the engine runs (its backend's, one joint
    forward in joint mode). ``fair_benchmark.bench_bare_workers`` is the same in the workers' layout."""
    inputs = bare_inputs(engine, frames)
    runs = engine.stages.runs
    with torch.inference_mode():
        for tasks, module in runs:
            module(inputs[tasks[0]][0])
        sync_device(engine)
        start = time.perf_counter()
        for i in range(len(frames)):
            for tasks, module in runs:
                module(inputs[tasks[0]][i % len(inputs[tasks[0]])])
        sync_device(engine)
    return len(frames) / (time.perf_counter() - start)


def sync_device(engine: Engine) -> None:
    """Wait for the engine's GPU work (a no-op on CPU), so a timer stops when the work is done."""
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


def result_equality(reference: list, other: list, score_threshold: float, min_iou: float = 0.95,
                    score_tolerance: float = 0.01) -> dict:
    """How far ``other`` (e.g. another backend) reproduces ``reference`` frame by frame.

    Semantic: the smallest per-frame fraction of equal labels. Instances (needs masks kept): each reference
    instance is matched to the unused instance of its class with the highest mask IoU; it counts as
    reproduced when that IoU >= ``min_iou`` and the scores differ by <= ``score_tolerance``. An instance
    found by one run only, whose score lies within ``score_tolerance`` of the threshold, is counted as
    ``borderline`` (a float rounding on either side of the threshold), not as missing.
    """
    report = {"frames": len(reference), "semantic_agreement_min": 1.0, "instances": 0, "matched": 0,
              "borderline": 0, "unmatched": 0, "min_mask_iou": 1.0, "max_score_diff": 0.0}
    if len(reference) != len(other):
        return {**report, "unmatched": -1, "error": f"{len(reference)} vs {len(other)} frames"}
    near_threshold = lambda score: abs(float(score) - score_threshold) <= score_tolerance  # noqa: E731
    for ref, got in zip(reference, other):
        if ref.semantic is not None:
            agree = float(np.mean(ref.semantic.labels == got.semantic.labels))
            report["semantic_agreement_min"] = min(report["semantic_agreement_min"], agree)
        if ref.instances is None:
            continue
        a, b = ref.instances, got.instances
        if a.masks is None or b.masks is None:
            raise ValueError("result_equality needs instance masks; run both engines with keep_masks=True.")
        used = np.zeros(len(b.scores), bool)
        flat_b = b.masks.reshape(len(b.scores), int(np.prod(b.masks.shape[1:])))   # -1 fails with 0 instances
        for i in range(len(a.scores)):
            report["instances"] += 1
            mask = a.masks[i].reshape(-1)
            inter = (flat_b & mask).sum(1)
            union = (flat_b | mask).sum(1)
            iou = np.where((b.classes == a.classes[i]) & ~used, inter / np.maximum(union, 1), -1.0)
            j = int(np.argmax(iou)) if len(iou) else -1
            if j >= 0 and iou[j] >= min_iou and abs(float(a.scores[i]) - float(b.scores[j])) <= score_tolerance:
                used[j] = True
                report["matched"] += 1
                report["min_mask_iou"] = min(report["min_mask_iou"], float(iou[j]))
                report["max_score_diff"] = max(report["max_score_diff"], abs(float(a.scores[i]) - float(b.scores[j])))
            elif near_threshold(a.scores[i]):
                report["borderline"] += 1
            else:
                report["unmatched"] += 1
        extra = [float(s) for s, u in zip(b.scores, used) if not u]
        report["borderline"] += sum(near_threshold(s) for s in extra)
        report["unmatched"] += sum(not near_threshold(s) for s in extra)
    report["equal"] = report["unmatched"] == 0 and report["semantic_agreement_min"] >= 0.995
    return report


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


def street_frames(count: int, height: int, width: int, seed: int = 0, distinct: int = 8) -> list[np.ndarray]:
    """Real synthetic street frames (cars, people, signs: what the shipped models were trained on), so a
    benchmark runs the models on inputs that give instances; ``distinct`` rendered, then cycled."""
    from ros_amf.data.synthetic.render import render_still
    rendered = [render_still(seed, i, width=width, height=height).image for i in range(min(count, distinct))]
    return [rendered[i % len(rendered)] for i in range(count)]


def equality_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Real synthetic street frames (cars, people, signs) for the output-equality check of the backends."""
    return street_frames(count, height, width, seed, distinct=count)


def measure_variants(make_engine: Callable[..., Engine], variants: dict[str, dict], frames: list[np.ndarray],
                     check_frames: list[np.ndarray], rounds: int, bare_threads: int,
                     consume: Consumer | None = None) -> dict:
    """Bare and pipelined FPS of each engine variant (name -> ``EngineConfig`` changes: a backend, a compile
    mode) in interleaved rounds (the same thread layout for all: bare with ``bare_threads``, pipelined with the
    engine's per-worker share), and how far each reproduces the first on ``check_frames``
    (``result_equality``). ``make_engine(**changes)`` builds a warmed-up engine."""
    engines = {name: (make_engine(**changes), make_engine(**changes)) for name, changes in variants.items()}
    worker_threads = torch.get_num_threads()   # the per-worker share the engines just set
    fps: dict[str, dict[str, list[float]]] = {name: {"bare": [], "pipelined": []} for name in variants}
    for _ in range(rounds):
        for name, (bare_engine, pipe_engine) in engines.items():
            torch.set_num_threads(bare_threads)
            fps[name]["bare"].append(in_worker_thread(bench_bare, bare_engine, frames))
            torch.set_num_threads(worker_threads)
            fps[name]["pipelined"].append(bench_pipelined(pipe_engine, frames, consume)[0])
    first_name = next(iter(variants))
    report: dict = {"rounds": rounds, "threads_bare": bare_threads, "threads_per_worker": worker_threads,
                    "inference_workers": engines[first_name][1].inference_workers, "variants": {}}
    reference = None
    for name, changes in variants.items():
        checker = make_engine(**changes, keep_masks=True, lossless=True)
        results = in_worker_thread(lambda: [checker.process(f, "rgb8") for f in check_frames])
        reference = results if reference is None else reference
        pipe_engine = engines[name][1]
        fallbacks = [w for w in pipe_engine.warnings + checker.warnings if "forward instead" in w or "eager" in w]
        report["variants"][name] = {
            "changes": changes, "ran": pipe_engine.stages.backend, "fell_back_to_torch": fallbacks,
            "bare_fps": float(np.median(fps[name]["bare"])), "pipelined_fps": float(np.median(fps[name]["pipelined"])),
            "rounds_fps": fps[name],
            "equality_vs_first": result_equality(reference, results, checker.config.score_threshold),
            "pipelined_stats": pipe_engine.stats.snapshot().as_dict()}
    first = report["variants"][first_name]
    for item in report["variants"].values():
        item["bare_over_first"] = item["bare_fps"] / first["bare_fps"]
        item["pipelined_over_first"] = item["pipelined_fps"] / first["pipelined_fps"]
    return report
