"""The rclpy side of the replay: publish bag frames to a node graph and listen to its outputs.

This is the only module of ``ros_amf.replay`` that imports rclpy (ROS_AUTOMATIC_DISCOVERY_RANGE must be
set by the caller before, see replay_cli). It also starts and stops the graph as a child process
when asked, so CPU and memory of exactly that process can be sampled.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_amf.replay.monitor import OutputMonitor
from ros_amf.bags.reader import BagImage
from ros_amf.replay.schedule import GraphError, ReplayPlan, SentFrame, publish_schedule, schedule
from ros_amf.ros.conversions import array_to_image


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
    """Command line that runs one perception node (kind: perception / instance / semantic / naive)."""
    entry = {"perception": "ros_amf.ros.node:main_perception", "instance": "ros_amf.ros.node:main_instance",
             "semantic": "ros_amf.ros.node:main_semantic", "naive": "ros_amf.ros.naive_node:main"}[kind]
    module, function = entry.split(":")
    code = f"import sys; from {module} import {function} as main; sys.exit(main(sys.argv))"
    ros_args = ["--ros-args"]
    if node_name:
        ros_args += ["-r", f"__node:={node_name}"]
    if params_file:
        ros_args += ["--params-file", params_file]
    for item in params:
        ros_args += ["-p", item]
    return [sys.executable, "-c", code, *ros_args]


def input_qos(name: str) -> QoSProfile:
    """QoS of the replayed camera topic.

    'sensor_data' is what a camera driver uses (best effort, depth 5); on a loaded machine Fast DDS then
    loses fragments of large images, which looks like drops of the graph. 'reliable' (depth 10) lets the
    graph's own frame-dropping policy decide, which is what a benchmark of the graph should measure.
    """
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"QoS '{name}' is unknown; use 'reliable' or 'sensor_data'.")


def message_class(type_name: str):
    """'pkg/msg/Name' -> the generated Python class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def bag_image_message(frame: BagImage) -> Image:
    """A sensor_msgs/Image carrying the frame's pixels in its own encoding (no colour conversion)."""
    return array_to_image(frame.to_array(), frame.encoding, Header(frame_id=frame.frame_id))


class ReplayNode:
    """A node that publishes camera frames and records the graph's outputs in an OutputMonitor."""

    def __init__(self, input_topic: str, output_topics: Sequence[str], *, qos: str = "reliable",
                 node_name: str = "ros_amf_replay"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(node_name, context=self.context)
        self.input_topic = input_topic
        self.output_topics = list(output_topics)
        self.publisher = self.node.create_publisher(Image, input_topic, input_qos(qos))
        self._stats: tuple[float, dict] | None = None   # (arrival clock, counters) of the latest ~/stats
        self.monitor: OutputMonitor | None = None
        self._subscriptions: dict[str, object] = {}
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

    def connect(self, types: dict[str, str]) -> None:
        """Subscribe to the outputs once; every run then only swaps the monitor (see listen)."""
        for topic in self.output_topics:
            infos = self.node.get_publishers_info_by_topic(topic)
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
            # match the publisher: a reliable subscription would not connect to a best-effort publisher
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                             reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
            self._subscriptions[topic] = self.node.create_subscription(
                message_class(types[topic]), topic, self._callback(topic), qos)

    def watch_stats(self, topic: str) -> bool:
        """Follow the node's ~/stats (PipelineStats) so runs can tell transport losses from node drops."""
        if not self.node.get_publishers_info_by_topic(topic):
            return False
        from ros_amf_msgs.msg import PipelineStats

        def on_stats(msg) -> None:
            self._stats = (time.perf_counter(), {
                "frames_in": msg.frames_in, "frames_out": msg.frames_out, "frames_dropped": msg.frames_dropped,
                "frames_rejected": msg.frames_rejected, "frames_failed": msg.frames_failed})

        self.node.create_subscription(PipelineStats, topic, on_stats, 10)
        return True

    def node_counters(self, after: float | None = None, timeout_s: float = 3.0) -> dict | None:
        """The node's latest counters, waiting (up to timeout_s) for a report that arrived after ``after``."""
        deadline = time.perf_counter() + timeout_s
        while after is not None and (self._stats is None or self._stats[0] <= after):
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.05)
        return None if self._stats is None else dict(self._stats[1])

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
        from ros_amf_msgs.msg import LabelInfo

        received: list[list[str]] = []
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        subscription = self.node.create_subscription(LabelInfo, topic, lambda m: received.append(list(m.class_names)),
                                                     qos)
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
