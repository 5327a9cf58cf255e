"""The one rclpy harness: start a node graph, feed it frames, listen to what it publishes.

``ros-amf replay``, ``ros-amf demo`` and ``ros-amf bench runtime --ros`` all run their graphs
through here; it is the only module of ``ros_amf.replay`` that imports rclpy. A graph is started as
a child process, so CPU and memory of exactly that process can be sampled and its log kept apart.
The graphs started here run on this host, so DDS discovery stays on it unless the environment
already says otherwise (set before rclpy is imported, and inherited by the graph processes).
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)   # the venv holds the compiled ros_amf_msgs

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_amf_msgs.msg import LabelInfo, PipelineStats

from ros_amf.bags.reader import BagImage
from ros_amf.replay.monitor import OutputMonitor
from ros_amf.replay.schedule import GraphError, ReplayPlan, SentFrame, publish_schedule, schedule
from ros_amf.ros import topics
from ros_amf.ros.conversions import array_to_image
from ros_amf.ros.kinds import KINDS
from ros_amf.ros.qos import latched, matching_subscription_qos, qos_from_name
from ros_amf.runtime.stats import StageSummary, StatsSnapshot


@dataclass
class GraphProcess:
    """A node graph started by the replay command, as a child process with its own log file."""

    name: str
    command: list[str]
    log_path: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> GraphProcess:
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env}, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise GraphError(f"graph '{self.name}' exited with code {self.process.returncode} during start-up; "
                             f"its log is {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT (clean rclpy shutdown), then SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def node_command(kind: str, node_name: str | None, params: Sequence[str], params_file: str | None) -> list[str]:
    """Command line that runs one node of ``kind`` (see ros_amf.ros.kinds); params are NAME:=VALUE.

    The node's relative topics are remapped to the harness's layout: the camera on /camera/image_raw,
    the outputs under /<node name>/ (what KINDS[kind].output_topics(node name) lists), so graphs
    started one after another never share output topics and parameter files keyed by node name apply.
    """
    module, function = KINDS[kind].entry_point.split(":")
    code = f"import sys; from {module} import {function} as main; sys.exit(main(sys.argv))"
    name = node_name or KINDS[kind].node_name
    ros_args = ["--ros-args", "-r", f"{topics.IMAGE}:={topics.CAMERA_IMAGE}",
                "-r", f"{topics.CAMERA_INFO}:={topics.CAMERA_CAMERA_INFO}"]
    ros_args += [arg for topic in topics.OUTPUTS for arg in ("-r", f"{topic}:=/{name}/{topic}")]
    if node_name:
        ros_args += ["-r", f"__node:={node_name}"]
    if params_file:
        ros_args += ["--params-file", params_file]
    if not any(item.startswith("lazy:=") for item in params):
        # a benchmark measures every frame: waiting for the graph to see our subscriptions would count
        # the first frames as idle (lazy mode), which reads as transport losses here
        ros_args += ["-p", "lazy:=false"]
    for item in params:
        ros_args += ["-p", item]
    return [sys.executable, "-c", code, *ros_args]


def ros_value(value: object) -> str:
    """A Python value as the VALUE of ``-p NAME:=VALUE``: JSON is YAML, so '' stays a string and True a bool."""
    return json.dumps(value)


def message_class(type_name: str):
    """'pkg/msg/Name' -> the generated Python class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def bag_image_message(frame: BagImage) -> Image:
    """A sensor_msgs/Image carrying the frame's pixels in its own encoding (no colour conversion)."""
    return array_to_image(frame.to_array(), frame.encoding, Header(frame_id=frame.frame_id))


def stats_snapshot(msg) -> StatsSnapshot:
    """A node's ~/stats message as the runtime's snapshot, so the same table prints on both sides.

    The message has no sample count per stage; every published frame records each stage once, so
    frames_out stands in for it.
    """
    reasons = dict(zip(msg.rejected_reasons, (int(n) for n in msg.rejected_counts)))
    failed = {k[len("failed:"):]: n for k, n in reasons.items() if k.startswith("failed:")}
    rejected = {k: n for k, n in reasons.items() if not k.startswith("failed:")}
    stages = [StageSummary(s.stage, int(msg.frames_out), float(s.mean_ms), float(s.p50_ms), float(s.p95_ms),
                           float(s.p99_ms), float(s.max_ms)) for s in msg.stages]
    return StatsSnapshot(frames_in=int(msg.frames_in), frames_out=int(msg.frames_out),
                         frames_dropped=int(msg.frames_dropped), frames_rejected=int(msg.frames_rejected),
                         frames_failed=int(msg.frames_failed), rejected=rejected, failed=failed,
                         input_rate_hz=float(msg.input_rate_hz), output_rate_hz=float(msg.output_rate_hz),
                         stages=stages)


def _settled(snapshot: StatsSnapshot) -> bool:
    """Every frame that entered the node has an outcome: nothing is in its pipeline any more."""
    return snapshot.frames_in == (snapshot.frames_out + snapshot.frames_dropped + snapshot.frames_rejected
                                  + snapshot.frames_failed)


class ReplayNode:
    """The player and listener: publishes camera frames, matches the graph's outputs in an OutputMonitor,
    follows the graph's ~/stats and hands every message of recorded topics (e.g. ~/overlay) to a callback."""

    def __init__(self, input_topic: str, output_topics: Sequence[str], *, qos: str = "reliable",
                 node_name: str = "ros_amf_replay"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(node_name, context=self.context)
        self.input_topic = input_topic
        self.output_topics = list(output_topics)
        self.publisher = self.node.create_publisher(Image, input_topic, qos_from_name(qos, "replay QoS"))
        self._stats: tuple[float, StatsSnapshot] | None = None   # (arrival clock, snapshot) of the latest ~/stats
        self.stats_reports = 0
        self.monitor: OutputMonitor | None = None
        self._subscriptions: dict[str, object] = {}
        self._recorders: list = []
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name="replay-executor", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown of the context ends spinning
            pass

    # -- discovery ------------------------------------------------------------------------------
    def wait_for_graph(self, timeout_s: float, graph: GraphProcess | None = None) -> dict[str, str]:
        """Wait until the input topic has a subscriber and every output topic a publisher; returns the types."""
        deadline = time.monotonic() + timeout_s
        while True:
            if graph is not None:
                graph.check_alive()
            types = {}
            for topic in self.output_topics:
                infos = self.node.get_publishers_info_by_topic(topic)
                if infos:
                    types[topic] = infos[0].topic_type
            if len(types) == len(self.output_topics) and self.publisher.get_subscription_count() > 0:
                return types
            if time.monotonic() > deadline:
                missing = [t for t in self.output_topics if t not in types]
                raise GraphError(
                    f"after {timeout_s:.0f} s the graph still has no subscriber on {self.input_topic} "
                    f"({self.publisher.get_subscription_count()} found) or no publisher on {missing}; check the "
                    f"node name/--output-topic, ROS_DOMAIN_ID and that the node started"
                    + (f" (log {graph.log_path}:\n{graph.log_tail()})" if graph else "."))
            time.sleep(0.1)

    def _subscribe(self, topic: str, type_name: str, callback: Callable, depth: int = 200):
        infos = self.node.get_publishers_info_by_topic(topic)
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        return self.node.create_subscription(message_class(type_name), topic, callback,
                                             matching_subscription_qos(best_effort, depth))

    def connect(self, types: dict[str, str]) -> None:
        """Subscribe to the outputs once; every run then only swaps the monitor (see listen)."""
        for topic in self.output_topics:
            self._subscriptions[topic] = self._subscribe(topic, types[topic], self._callback(topic))

    def record(self, topic: str, on_message: Callable[[object], None], timeout_s: float = 10.0) -> bool:
        """Pass every message on ``topic`` to ``on_message`` (not matched, not timed).

        Waits until the subscription is matched, since some outputs (~/overlay) are only rendered while
        someone listens. False if nothing publishes the topic.
        """
        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return False
        subscription = self._subscribe(topic, infos[0].topic_type, on_message)
        self._recorders.append(subscription)
        deadline = time.monotonic() + timeout_s
        while subscription.get_publisher_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the publisher's side of the match arrives a moment after ours
        return True

    def watch_stats(self, topic: str) -> bool:
        """Follow the node's ~/stats (PipelineStats) so runs can tell transport losses from node drops."""
        if not self.node.get_publishers_info_by_topic(topic):
            return False

        def on_stats(msg) -> None:
            self.stats_reports += 1
            self._stats = (time.perf_counter(), stats_snapshot(msg))

        self.node.create_subscription(PipelineStats, topic, on_stats, 10)
        return True

    def node_stats(self, after: float | None = None, timeout_s: float = 3.0,
                   settled: bool = False) -> StatsSnapshot | None:
        """The node's latest ~/stats, waiting (up to timeout_s) for a report that arrived after ``after``
        and, if ``settled``, one in which every frame has its outcome (the node is idle)."""
        deadline = time.perf_counter() + timeout_s
        while True:
            latest = self._stats
            fresh = latest is not None and (after is None or latest[0] > after)
            if fresh and (not settled or _settled(latest[1])):
                return latest[1]
            if time.perf_counter() > deadline:
                return None if latest is None or not fresh else latest[1]
            time.sleep(0.05)

    def node_counters(self, after: float | None = None, timeout_s: float = 3.0) -> dict | None:
        """The node's latest frame counters (see node_stats); None if no report came in time."""
        snapshot = self.node_stats(after, timeout_s)
        if snapshot is None:
            return None
        return {key: getattr(snapshot, key) for key in ("frames_in", "frames_out", "frames_dropped",
                                                        "frames_rejected", "frames_failed")}

    def listen(self, keep_payloads: bool, timeout_s: float) -> OutputMonitor:
        """A fresh monitor for the next run (outputs of earlier runs no longer match: see stamp_offset_ns)."""
        self.monitor = OutputMonitor(self.output_topics, timeout_s=timeout_s, keep_payloads=keep_payloads)
        return self.monitor

    def _callback(self, topic: str) -> Callable:
        def on_output(msg) -> None:
            monitor = self.monitor
            if monitor is not None:
                monitor.output(topic, stamp_ns(msg.header), payload=msg, at=monitor.clock())
        return on_output

    # -- publishing -----------------------------------------------------------------------------
    def replay(self, frames: Sequence[BagImage], messages: Sequence[Image], plan: ReplayPlan,
               settle_s: float) -> list[SentFrame]:
        """Publish by the plan, then wait up to settle_s for the last outputs."""
        monitor = self.monitor
        assert monitor is not None, "call listen() first"
        planned = schedule([f.stamp_ns for f in frames], [f.log_time_ns for f in frames], plan)

        def send(item, sent_at: float) -> None:
            message = messages[item.bag_index]
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(item.stamp_ns, 1_000_000_000)
            monitor.expect(item.seq, item.bag_index, item.stamp_ns, sent_at, item.warmup)  # before it can arrive
            self.publisher.publish(message)

        sent = publish_schedule(planned, plan, send, wait_for_capacity=monitor.wait_for_capacity,
                                clock=monitor.clock)
        monitor.wait_for_all(settle_s)
        return sent

    def label_names(self, topic: str, timeout_s: float = 3.0) -> list[str] | None:
        """Class names from a node's latched LabelInfo topic (None if it publishes none)."""
        if not self.node.get_publishers_info_by_topic(topic):
            return None
        received: list[list[str]] = []
        subscription = self.node.create_subscription(LabelInfo, topic, lambda m: received.append(list(m.class_names)),
                                                     latched())
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        self.node.destroy_subscription(subscription)
        return received[0] if received else None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=2.0)
