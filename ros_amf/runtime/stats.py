"""Counters and latency windows of a pipeline: nothing that enters is lost without a count.

Every frame that enters is, in the end, exactly one of: published (``frames_out``), dropped by the
latest-frame policy (``frames_dropped``), rejected as bad input (``rejected[reason]``) or failed in
a stage (``failed[reason]``). One lock guards everything; updates are a few per frame.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "publish", "end_to_end")


@dataclass
class StageSummary:
    stage: str
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class StatsSnapshot:
    frames_in: int
    frames_out: int
    frames_dropped: int
    frames_rejected: int
    frames_failed: int
    rejected: dict[str, int]
    failed: dict[str, int]
    input_rate_hz: float
    output_rate_hz: float
    stages: list[StageSummary] = field(default_factory=list)
    seconds_since_input: float | None = None

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["stages"] = [s.__dict__ for s in self.stages]
        return out


class PipelineCounters:
    """Thread-safe counters, rates over a sliding window and per-stage latency samples."""

    def __init__(self, window: int = 2000, rate_window_s: float = 5.0):
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.rejected: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._latency: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self._in_times: deque[float] = deque(maxlen=4096)
        self._out_times: deque[float] = deque(maxlen=4096)
        self._rate_window_s = rate_window_s
        self.last_input_time: float | None = None

    def frame_in(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_in += 1
            self._in_times.append(now)
            self.last_input_time = now

    def frame_out(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            self.frames_out += 1
            self._out_times.append(time.monotonic())
            for stage, ms in timings_ms.items():
                if stage in self._latency:
                    self._latency[stage].append(ms)

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self.frames_dropped += count

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def fail(self, reason: str) -> None:
        with self._lock:
            self.failed[reason] += 1

    def _rate(self, times: deque[float], now: float) -> float:
        recent = [t for t in times if now - t <= self._rate_window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) / span if now - recent[-1] < self._rate_window_s else 0.0

    def snapshot(self) -> StatsSnapshot:
        now = time.monotonic()
        with self._lock:
            stages = []
            for stage, samples in self._latency.items():
                if not samples:
                    continue
                arr = np.fromiter(samples, dtype=np.float64)
                p50, p95, p99 = np.percentile(arr, (50, 95, 99))
                stages.append(StageSummary(stage, arr.size, float(arr.mean()), float(p50), float(p95),
                                           float(p99), float(arr.max())))
            return StatsSnapshot(
                frames_in=self.frames_in, frames_out=self.frames_out, frames_dropped=self.frames_dropped,
                frames_rejected=sum(self.rejected.values()), frames_failed=sum(self.failed.values()),
                rejected=dict(self.rejected), failed=dict(self.failed),
                input_rate_hz=self._rate(self._in_times, now), output_rate_hz=self._rate(self._out_times, now),
                stages=stages,
                seconds_since_input=None if self.last_input_time is None else now - self.last_input_time)


def format_table(snapshot: StatsSnapshot, wall_s: float | None = None) -> str:
    """The human table printed by the demo and benchmarks."""
    lines = [f"frames in {snapshot.frames_in}  out {snapshot.frames_out}  dropped {snapshot.frames_dropped}  "
             f"rejected {snapshot.frames_rejected}  failed {snapshot.frames_failed}"]
    if wall_s:
        lines.append(f"wall {wall_s:.1f} s  output FPS {snapshot.frames_out / wall_s:.2f}")
    for name, counts in (("rejected", snapshot.rejected), ("failed", snapshot.failed)):
        for reason, n in sorted(counts.items()):
            lines.append(f"  {name}: {reason} = {n}")
    lines.append(f"{'stage':<12} {'n':>6} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for s in snapshot.stages:
        lines.append(f"{s.stage:<12} {s.count:>6} {s.mean_ms:>9.2f} {s.p50_ms:>9.2f} {s.p95_ms:>9.2f} "
                     f"{s.p99_ms:>9.2f} {s.max_ms:>9.2f}")
    return "\n".join(lines)


class InFlight:
    """How many frames an engine holds (handed over, not yet published, dropped or failed); ``wait_idle``
    waits until it holds none. Both engines (one camera, batched cameras) count their frames with it."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @property
    def count(self) -> int:
        return self._count

    def add(self, frames: int = 1) -> None:
        with self._changed:
            self._count += frames

    def done(self, frames: int = 1) -> None:
        with self._changed:   # never below zero: a thread that outlived clear() may still finish its frame
            self._count = max(0, self._count - frames)
            self._changed.notify_all()

    def clear(self, keep: int = 0) -> int:
        """Forget every frame still held (the engine stopped) but ``keep`` (frames whose fate is being counted
        now, which will call ``done``); returns how many were forgotten."""
        with self._changed:
            abandoned, self._count = max(0, self._count - keep), min(keep, self._count)
            self._changed.notify_all()
        return abandoned

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every frame is published, dropped or failed; False when ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True
