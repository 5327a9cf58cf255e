"""Match graph outputs to replayed inputs by header stamp and turn the matches into run metrics.

Every node output carries its input's header, so the stamp identifies the input. A frame counts as
received when every monitored output topic has delivered it; its latency is the arrival of the last
of them minus its publication time (both on this process's clock). Nothing is lost silently: inputs
without outputs are listed as dropped, outputs whose stamp was never sent and repeated outputs are
counted. Thread-safe: outputs arrive on the ROS executor thread while the replay publishes.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FrameRecord:
    seq: int
    bag_index: int
    stamp_ns: int
    sent_at: float
    warmup: bool
    arrivals: dict[str, float] = field(default_factory=dict)  # topic -> clock() at arrival
    gave_up: bool = False                                       # timed out while waiting (fast mode)

    def complete(self, topics: Sequence[str]) -> bool:
        return all(t in self.arrivals for t in topics)

    def latency_s(self, topics: Sequence[str]) -> float | None:
        return max(self.arrivals[t] for t in topics) - self.sent_at if self.complete(topics) else None


def percentile_summary(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None, "std": None}
    data = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {"mean": float(data.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(data.max()), "std": float(data.std())}


class OutputMonitor:
    """Bookkeeping of sent frames and their outputs on one or more topics."""

    def __init__(self, topics: Sequence[str], *, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.perf_counter, keep_payloads: bool = False):
        if not topics:
            raise ValueError("monitor at least one output topic.")
        self.topics = list(topics)
        self.timeout_s = timeout_s
        self.clock = clock
        self.keep_payloads = keep_payloads
        self.payloads: dict[str, dict[int, Any]] = {t: {} for t in self.topics}  # topic -> seq -> decoded output
        self._frames: dict[int, FrameRecord] = {}          # stamp -> record
        self._order: list[FrameRecord] = []
        self._pending: dict[int, FrameRecord] = {}         # incomplete and within the timeout (in flight)
        self._incomplete: dict[int, FrameRecord] = {}      # incomplete, timed out or not
        self._unmatched = {t: 0 for t in self.topics}
        self._repeated = {t: 0 for t in self.topics}
        self._changed = threading.Condition()

    # -- recording (called by the publisher and the ROS callbacks) ---------------------------
    def expect(self, seq: int, bag_index: int, stamp_ns: int, sent_at: float, warmup: bool = False) -> None:
        with self._changed:
            record = FrameRecord(seq, bag_index, stamp_ns, sent_at, warmup)
            self._frames[stamp_ns] = record
            self._order.append(record)
            self._pending[stamp_ns] = record
            self._incomplete[stamp_ns] = record

    def output(self, topic: str, stamp_ns: int, payload: Any = None, at: float | None = None) -> bool:
        """Record one output; False if its stamp matches no sent frame (counted as unmatched)."""
        at = self.clock() if at is None else at
        with self._changed:
            record = self._frames.get(stamp_ns)
            if record is None:
                self._unmatched[topic] += 1
                return False
            if topic in record.arrivals:
                self._repeated[topic] += 1
                return True
            record.arrivals[topic] = at
            if record.complete(self.topics):
                self._pending.pop(stamp_ns, None)
                self._incomplete.pop(stamp_ns, None)
            if self.keep_payloads and payload is not None:
                self.payloads[topic][record.seq] = payload
            self._changed.notify_all()
            return True

    # -- flow control ---------------------------------------------------------------------------
    def _waiting(self, now: float) -> int:
        """Frames still awaiting outputs; those older than the timeout are given up (their slot is freed)."""
        for stamp, record in list(self._pending.items()):
            if now - record.sent_at > self.timeout_s:
                record.gave_up = True
                del self._pending[stamp]
        return len(self._pending)

    def in_flight(self) -> int:
        with self._changed:
            return self._waiting(self.clock())

    def wait_for_capacity(self, max_in_flight: int) -> None:
        """Block until fewer than max_in_flight frames await outputs (timeouts free their slots)."""
        with self._changed:
            while self._waiting(self.clock()) >= max_in_flight:
                self._changed.wait(timeout=min(0.05, self.timeout_s))

    def wait_for_all(self, timeout_s: float | None = None) -> bool:
        """After the last send: wait until every frame is complete or the timeout passes; True if all came."""
        deadline = self.clock() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._changed:
            while True:
                if not self._incomplete:
                    return True
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return False
                self._changed.wait(timeout=min(0.05, remaining))

    # -- results --------------------------------------------------------------------------------
    def records(self) -> list[FrameRecord]:
        with self._changed:
            return [FrameRecord(r.seq, r.bag_index, r.stamp_ns, r.sent_at, r.warmup, dict(r.arrivals), r.gave_up)
                    for r in self._order]

    def metrics(self) -> dict:
        """Metrics over the measured (non-warm-up) frames; see module docstring for definitions."""
        records = [r for r in self.records() if not r.warmup]
        with self._changed:
            unmatched, repeated = dict(self._unmatched), dict(self._repeated)
        return summarize(records, self.topics, unmatched=unmatched, repeated=repeated)


def summarize(records: Sequence[FrameRecord], topics: Sequence[str], *, unmatched: dict[str, int] | None = None,
              repeated: dict[str, int] | None = None) -> dict:
    received = [r for r in records if r.complete(topics)]
    dropped = [r for r in records if not r.complete(topics)]
    latencies_ms = [r.latency_s(topics) * 1000.0 for r in received]
    arrivals = sorted(max(r.arrivals[t] for t in topics) for r in received)
    sends = [r.sent_at for r in records]
    span = (arrivals[-1] - min(sends)) if arrivals else 0.0
    send_span = (max(sends) - min(sends)) if len(sends) > 1 else 0.0
    intervals_ms = np.diff(arrivals) * 1000.0 if len(arrivals) > 1 else np.array([])
    per_topic = {}
    for topic in topics:
        times = [(r.arrivals[topic] - r.sent_at) * 1000.0 for r in records if topic in r.arrivals]
        per_topic[topic] = {"received": len(times), "latency_ms": percentile_summary(times)}
    latency = percentile_summary(latencies_ms)
    return {
        "frames_sent": len(records),
        "frames_received": len(received),
        "frames_dropped": len(dropped),
        "drop_fraction": len(dropped) / len(records) if records else 0.0,
        "dropped_seq": [r.seq for r in dropped],
        "dropped_bag_index": [r.bag_index for r in dropped],
        "partial_frames": sum(1 for r in dropped if r.arrivals),  # some topics delivered, not all
        "input_rate_hz": (len(sends) - 1) / send_span if send_span > 0 else None,
        "span_s": span,   # first send to the last complete output
        "throughput_hz": len(received) / span if span > 0 else None,
        "latency_ms": latency,
        # jitter: spread of the per-message latency, and of the spacing between consecutive outputs
        "latency_jitter_ms": latency["std"],
        "output_interval_jitter_ms": float(intervals_ms.std()) if intervals_ms.size else None,
        "per_topic": per_topic,
        "unmatched_outputs": unmatched or {},
        "repeated_outputs": repeated or {},
        "timeline": [{"seq": r.seq, "bag_index": r.bag_index, "sent_at": r.sent_at,
                      "latency_ms": None if r.latency_s(topics) is None else r.latency_s(topics) * 1000.0}
                     for r in records],
    }
