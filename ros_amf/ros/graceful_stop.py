"""Stopping perception nodes on SIGINT / SIGTERM without losing their last numbers.

rclpy's own signal handlers shut the context down at once, after which nothing can be published, and
Python's default SIGTERM kills the process outright. Here a signal only sets a flag: the spin loop
ends, the pipeline stops (frames still inside are counted as dropped), and each node logs its final
stats and publishes them on ``stats`` before the context goes down. A second signal during that
falls back to the default behaviour (Ctrl-C twice forces the stop).
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from std_msgs.msg import Header

from ros_amf.ros.diagnostics import stats_message

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager: while active, SIGINT and SIGTERM set ``requested`` instead of ending the process.

    Signal handlers can only be installed from the main thread; elsewhere (a test spinning a graph in a
    thread) nothing is installed and the caller stops the graph by its own means.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._event = threading.Event()
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self._event.set()
        self._restore()   # a second signal acts as if we were not here: forced stop

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def final_stats_line(snap, node_counters=None) -> str:
    """One log line with the run's totals; every frame that came in is accounted for."""
    line = (f"final stats: {snap.frames_in} frames in, {snap.frames_out} published, {snap.frames_dropped} dropped, "
            f"{snap.frames_rejected} rejected, {snap.frames_failed} failed")
    if node_counters is not None:
        idle, rate_capped, _ = node_counters.values()
        line += f"; {idle} idle (no subscriber), {rate_capped} over max_rate_hz"
    if snap.rejected or snap.failed:
        reasons = {**snap.rejected, **{f"failed:{k}": v for k, v in snap.failed.items()}}
        line += "; reasons " + ", ".join(f"{k} {v}" for k, v in reasons.items())
    return line + f"; {snap.input_rate_hz:.1f} Hz in, {snap.output_rate_hz:.1f} Hz out"


def publish_final_stats(nodes: list, reason: str, ack_timeout_s: float = 0.2) -> list:
    """Stop each node's pipeline, then log and publish its final stats; returns the snapshots.

    Call it after the executor stopped (no image callback runs any more) and before the nodes are
    destroyed. Fast DDS sends the message inside publish(); reliable subscribers then get
    ``ack_timeout_s`` in all to acknowledge it (a lost packet is resent meanwhile). Fast DDS acknowledges
    on its heartbeat period, often later than that: the wait is short so the stop stays well under 2 s.
    """
    from rclpy.duration import Duration
    snapshots, publishers = [], []
    for node in nodes:
        engine = getattr(node, "engine", None)
        if engine is not None:
            engine.stop()   # frames still waiting inside are counted as dropped
        # one line per stats channel: the node's, or each camera's of a multi-camera node
        for name, stats, counters, publisher in node.stats_channels():
            snap = stats.snapshot()
            snapshots.append(snap)
            which = "" if name == node.get_fully_qualified_name() else f"{name}: "
            node.get_logger().info(f"stopping ({reason}); {which}" + final_stats_line(snap, counters))
            if publisher is not None:
                header = Header(stamp=node.get_clock().now().to_msg(), frame_id="")
                publisher.publish(stats_message(header, name, snap))
                publishers.append(publisher)
    deadline = time.monotonic() + ack_timeout_s
    for publisher in publishers:
        left = max(0.0, deadline - time.monotonic())
        publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
    return snapshots


def spin_until_stopped(executor, nodes: list, duration_s: float = 0.0,
                       on_started: Callable[[], None] = lambda: None) -> str:
    """Spin ``executor`` until SIGINT / SIGTERM (or ``duration_s`` if > 0), then stop it and publish the
    nodes' final stats. The caller destroys the nodes. Returns why it stopped: the signal's name or 'duration'.

    rclpy must not have installed its own handlers on this process (a non-default context, or
    ``signal_handler_options=NO``): they would shut the context down before the final stats go out.
    """
    from rclpy.executors import ExternalShutdownException
    deadline = time.monotonic() + duration_s if duration_s > 0 else None
    reason = "duration"
    try:
        with StopRequest() as stop:
            on_started()
            while not stop.requested and (deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
        reason = stop.signal_name or reason
    except KeyboardInterrupt:
        reason = "SIGINT"
    except ExternalShutdownException:
        reason = "context shut down"
    # no new image callback runs while the final numbers are taken; one stuck in a model (the naive
    # node) is not waited for beyond the timeout, its frame then shows as in but not out
    executor.shutdown(timeout_sec=1.0, wait_for_threads=False)
    if executor.context.ok():
        publish_final_stats(nodes, reason)
    return reason
