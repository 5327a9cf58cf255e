"""What a perception node reports on ``stats`` and ``/diagnostics``: the pipeline's counters plus the
node's own (frames idle in lazy mode, frames skipped by the rate cap, camera_info stamp misses, peers
with incompatible QoS) and the checks that turn them into OK / WARN with a sentence saying why.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ros_amf_msgs.msg import PipelineStats as PipelineStatsMsg, StageTiming


@dataclass
class NodeCounters:
    """Frames the node saw but did not hand to the pipeline, and output-side misses (thread-safe)."""
    idle: int = 0                  # lazy mode: nobody subscribed to any output
    rate_capped: int = 0           # skipped to keep max_rate_hz
    camera_info_misses: int = 0    # outputs without a camera_info of their stamp (the latest was used)
    camera_infos_received: int = 0
    last_image_at: float | None = None   # any image, processed or not
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def image_arrived(self) -> None:
        self.last_image_at = time.monotonic()

    def values(self) -> tuple[int, int, int]:
        with self._lock:
            return self.idle, self.rate_capped, self.camera_info_misses


def stats_message(header, node_name: str, snap) -> PipelineStatsMsg:
    return PipelineStatsMsg(header=header, node_name=node_name,
                            frames_in=snap.frames_in, frames_out=snap.frames_out,
                            frames_dropped=snap.frames_dropped, frames_rejected=snap.frames_rejected,
                            frames_failed=snap.frames_failed,
                            rejected_reasons=list(snap.rejected) + [f"failed:{k}" for k in snap.failed],
                            rejected_counts=list(snap.rejected.values()) + list(snap.failed.values()),
                            input_rate_hz=float(snap.input_rate_hz), output_rate_hz=float(snap.output_rate_hz),
                            stages=[StageTiming(stage=s.stage, mean_ms=s.mean_ms, p50_ms=s.p50_ms,
                                                p95_ms=s.p95_ms, p99_ms=s.p99_ms, max_ms=s.max_ms)
                                    for s in snap.stages])


class PipelineDiagnostics:
    """Builds the node's DiagnosticStatus; remembers the last report to say what is new since then."""

    def __init__(self, started: float | None = None):
        self.started = time.monotonic() if started is None else started
        self._last = (0, 0, 0, 0, 0)   # dropped, rejected, failed, camera_info misses, QoS events
        self._last_qos: dict[str, int] = {}   # QoS events per topic, to name the topics with new ones

    def start_from(self, snap, node: NodeCounters, qos_events: dict[str, int]) -> "PipelineDiagnostics":
        """Count from now (an activation): the totals kept over a deactivation are not new in its first report."""
        self._last = (snap.frames_dropped, snap.frames_rejected, snap.frames_failed, node.values()[2],
                      sum(qos_events.values()))
        self._last_qos = dict(qos_events)
        return self

    def status(self, name: str, hardware_id: str, snap, node: NodeCounters, qos_events: dict[str, int],
               params: dict, listening: bool, engine_warnings: list[str] = ()) -> DiagnosticStatus:
        """``engine_warnings``: what the engine could not do as configured (e.g. a backend that failed and
        runs torch instead, at start-up or later); the status stays WARN while there are any."""
        level, problems = DiagnosticStatus.OK, []
        warn = DiagnosticStatus.WARN
        engine_warnings = list(engine_warnings)
        if engine_warnings:
            level = warn
            problems += engine_warnings
        now = time.monotonic()
        silent_for = now - max(node.last_image_at or 0.0, self.started)   # the inactive time does not count
        if silent_for > float(params["input_timeout_s"]):
            level = warn
            problems.append(f"no image on {hardware_id} for {silent_for:.1f} s (camera stopped, wrong topic or "
                            "QoS mismatch?)")
        idle, capped, misses = node.values()
        qos_total = sum(qos_events.values())
        counts = (snap.frames_dropped, snap.frames_rejected, snap.frames_failed, misses, qos_total)
        new = [now_ - before for now_, before in zip(counts, self._last)]
        self._last = counts
        if new[1] or new[2]:
            level = warn
            problems.append(f"{new[1]} images rejected and {new[2]} frames failed since the last report")
        if new[0]:
            problems.append(f"{new[0]} frames dropped (node slower than the camera; latest-frame policy)")
        if new[3]:
            if node.camera_infos_received:
                level = warn
                problems.append(f"{new[3]} outputs had no camera_info with their image's stamp (the latest "
                                "camera_info was re-published; the camera's info and images are not in step)")
            else:
                problems.append(f"no camera_info received for {new[3]} outputs (set camera_info_topic to '' if "
                                "the camera publishes none)")
        if new[4]:   # new ones only: one peer that once failed must not keep the node WARN for ever
            level = warn
            topics = ", ".join(sorted(t for t, n in qos_events.items() if n > self._last_qos.get(t, 0)))
            problems.append(f"{new[4]} peers could not connect since the last report, incompatible QoS on {topics} "
                            f"({qos_total} in all); set the qos_overrides.<topic>.* parameters or the peer's QoS so "
                            "that they match")
        self._last_qos = dict(qos_events)
        min_hz = float(params["min_output_hz"])
        if min_hz > 0 and listening and snap.input_rate_hz > 0 and snap.output_rate_hz < min_hz:
            level = warn
            problems.append(f"output rate {snap.output_rate_hz:.2f} Hz is below min_output_hz {min_hz:g} "
                            f"(input {snap.input_rate_hz:.2f} Hz)")
        if not listening and idle:
            problems.append("idle: no output has a subscriber (lazy mode)")
        values = [("input_rate_hz", f"{snap.input_rate_hz:.2f}"), ("output_rate_hz", f"{snap.output_rate_hz:.2f}"),
                  ("min_output_hz", f"{min_hz:g}"),
                  ("frames_in", snap.frames_in), ("frames_out", snap.frames_out),
                  ("frames_dropped", snap.frames_dropped), ("frames_rejected", snap.frames_rejected),
                  ("frames_failed", snap.frames_failed), ("frames_idle", idle), ("frames_rate_capped", capped),
                  ("camera_info_misses", misses), ("qos_incompatible", qos_total),
                  ("engine_warnings", len(engine_warnings))]
        values += [(f"rejected.{k}", v) for k, v in sorted(snap.rejected.items())]
        values += [(f"failed.{k}", v) for k, v in sorted(snap.failed.items())]
        values += [(f"qos_incompatible.{k}", v) for k, v in sorted(qos_events.items())]
        for s in snap.stages:
            values += [(f"latency.{s.stage}.p50_ms", f"{s.p50_ms:.2f}"), (f"latency.{s.stage}.p95_ms", f"{s.p95_ms:.2f}"),
                       (f"latency.{s.stage}.p99_ms", f"{s.p99_ms:.2f}")]
        return DiagnosticStatus(level=level, name=f"{name}: pipeline", message="; ".join(problems) or "ok",
                                hardware_id=hardware_id, values=[KeyValue(key=k, value=str(v)) for k, v in values])
