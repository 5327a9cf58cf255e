"""The perception nodes: camera image in; instances, label map, overlay, stats and diagnostics out.

The node is thin: it validates and wraps the incoming image (zero-copy), hands it to the pipelined
``Engine`` and publishes what comes back. Everything that can go wrong with an input or a frame is
counted by cause and shows up on ~/stats and /diagnostics; the node keeps running.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from ros_amf_msgs.msg import InstanceSegmentation, LabelInfo, PipelineStats as PipelineStatsMsg, StageTiming

from ros_amf.ros import topics
from ros_amf.ros.conversions import (BadImage, array_to_image, image_to_array, instance_ids_image,
                                     instances_message, label_info_message)
from ros_amf.ros.params import requested_input_size, resolve_path, specs_for
from ros_amf.ros.qos import LATCHED, qos_from_name
from ros_amf.runtime.loading import LoadedModel, class_colours, load_model
from ros_amf.runtime.outputs import FrameResult, overlay, palette
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.stats import PipelineCounters


class PerceptionNode(Node):
    """Runs the instance and the semantic model on one camera (``ros_amf_perception``)."""

    TASKS: tuple[str, ...] = ("instance", "semantic")
    DEFAULT_NAME = topics.NODE_PERCEPTION
    PIPELINED = True   # False: every stage runs inside the subscription callback (the naive baseline)

    def __init__(self, node_name: str | None = None, *, namespace: str | None = None,
                 parameter_overrides: list[Parameter] | None = None,
                 models: dict[str, LoadedModel] | None = None, **kwargs: Any):
        """``models`` injects already loaded models (tests, benchmarks); otherwise the parameters name them."""
        super().__init__(node_name or self.DEFAULT_NAME, namespace=namespace,
                         parameter_overrides=parameter_overrides or [], **kwargs)
        try:
            self._setup(models)
        except Exception:
            # never leave a half-working node behind: no subscription exists yet, tear down what does
            self.destroy_node()
            raise

    # ----- start-up -----
    def _declare(self) -> dict[str, Any]:
        values = {}
        for spec in specs_for(self.TASKS, joint_capable=len(self.TASKS) == 2):
            descriptor = ParameterDescriptor(description=spec.description)
            # an empty list says nothing about its element type: declare string arrays by type
            default = Parameter.Type.STRING_ARRAY if spec.default == [] else spec.default
            value = self.declare_parameter(spec.name, default, descriptor).value
            values[spec.name] = [] if value is None and isinstance(spec.default, list) else value
        return values

    def _setup(self, models: dict[str, LoadedModel] | None) -> None:
        p = self.params = self._declare()
        device = p["device"]
        input_qos = qos_from_name(p["input_qos"], "parameter input_qos")     # cheap checks before loading models
        output_qos = qos_from_name(p["output_qos"], "parameter output_qos")
        if models is None:
            models = {task: load_model(task, resolve_path(p[f"{task}.config"]),
                                       resolve_path(p[f"{task}.checkpoint"]) or None, device=device)
                      for task in self.TASKS}
        self.models = {task: models[task] for task in self.TASKS}
        for model in self.models.values():
            if model.random_weights:
                self.get_logger().warning(f"{model.task} model '{model.name}' runs with RANDOM weights (no "
                                          f"{model.task}.checkpoint given); outputs are meaningless.")
        instance = self.models.get("instance")
        class_filter: tuple[int, ...] = ()
        if instance is not None and [n for n in p["class_filter"] if n]:
            unknown = [n for n in p["class_filter"] if n and n not in instance.class_names]
            if unknown:
                raise ValueError(f"parameter class_filter names {unknown}, which model '{instance.name}' does not "
                                 f"have; valid names: {instance.class_names}.")
            class_filter = tuple(instance.class_names.index(n) for n in p["class_filter"] if n)
        # a task whose size parameters are 0 runs at its model config's own input_size (the engine's default)
        input_sizes = {task: size for task, model in self.models.items()
                       if (size := requested_input_size(p, task, model.input_size)) is not None}
        self.stats = PipelineCounters()
        self.engine = Engine(
            EngineConfig(input_sizes=input_sizes, device=device, precision=p["precision"],
                         channels_last=p["channels_last"], joint=bool(p.get("joint", False)),
                         score_threshold=float(p.get("score_threshold", 0.3)),
                         mask_threshold=float(p.get("mask_threshold", 0.45)),
                         max_instances=int(p.get("max_instances", 100)), class_filter=class_filter,
                         inference_workers=int(p["inference_workers"])),
            instance=self.models.get("instance"), semantic=self.models.get("semantic"), stats=self.stats,
            on_result=self._publish, on_error=self._on_failure)
        if p["torch_threads"] > 0:   # after the engine, which sets its per-worker share: the user's choice wins
            import torch
            torch.set_num_threads(int(p["torch_threads"]))
        failure = self.engine.warm_up()
        if failure:
            self.get_logger().warning(f"the warm-up frame failed ({failure}); frames that fail like it are "
                                      "counted on ~/stats and /diagnostics and not published.")
        for warning in self.engine.warnings:
            self.get_logger().warning(warning)
        self.colours = {task: class_colours(m.class_names) for task, m in self.models.items()}
        self.instance_colours = palette(64, seed=11)

        # publishers
        if "instance" in self.models:
            self.pub_instances = self.create_publisher(InstanceSegmentation, topics.INSTANCES, output_qos)
            self.pub_instance_ids = self.create_publisher(Image, topics.INSTANCE_IDS, output_qos)
            self.pub_instance_info = self.create_publisher(LabelInfo, topics.INSTANCE_LABEL_INFO, LATCHED)
        if "semantic" in self.models:
            self.pub_labels = self.create_publisher(Image, topics.LABELS, output_qos)
            self.pub_semantic_info = self.create_publisher(LabelInfo, topics.SEMANTIC_LABEL_INFO, LATCHED)
        self.pub_overlay = self.create_publisher(Image, topics.OVERLAY, output_qos)
        self.pub_stats = self.create_publisher(PipelineStatsMsg, topics.STATS, 10)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._publish_label_info()

        # camera info: keep the recent ones by stamp, pair each output with the info of its image
        self.pub_camera_info = None
        self._camera_infos: OrderedDict[tuple[int, int], CameraInfo] = OrderedDict()
        self._info_lock = threading.Lock()
        if p["camera_info_topic"]:
            self.pub_camera_info = self.create_publisher(CameraInfo, topics.CAMERA_INFO_OUT, output_qos)
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_camera_info, input_qos)

        self._started = time.monotonic()
        self._last_counts = (0, 0, 0)
        if self.PIPELINED:
            self.engine.start()
        self.create_subscription(Image, p["input_topic"], self._on_image, input_qos)
        self.create_timer(float(p["diagnostics_period_s"]), self._report)
        self.get_logger().info(f"listening on {p['input_topic']} ({p['input_qos']}), models "
                               f"{[m.name for m in self.models.values()]}, device {device}, "
                               "input " + ", ".join(f"{task} {size.short_side}/{size.max_long_side}"
                                                    for task, size in self.engine.input_sizes.items()))

    def _publish_label_info(self) -> None:
        header = self._header_now()
        for task, pub in (("instance", getattr(self, "pub_instance_info", None)),
                          ("semantic", getattr(self, "pub_semantic_info", None))):
            if pub is None:
                continue
            model = self.models[task]
            pub.publish(label_info_message(header, model.name, task, model.class_names, self.colours[task],
                                           model.small_object_ids))

    def _header_now(self):
        from std_msgs.msg import Header
        return Header(stamp=self.get_clock().now().to_msg(), frame_id="")

    # ----- input -----
    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_infos[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            while len(self._camera_infos) > 64:
                self._camera_infos.popitem(last=False)

    def _on_image(self, msg: Image) -> None:
        try:
            image, encoding = image_to_array(msg, int(self.params["max_image_pixels"]))
        except BadImage as exc:
            self.stats.frame_in()
            self.stats.reject(exc.reason)
            self.get_logger().warning(f"rejected image on {self.params['input_topic']}: {exc}",
                                      throttle_duration_sec=5.0)
            return
        if self.PIPELINED:
            self.engine.submit(image, encoding, tag=msg.header, keep_image=self._overlay_wanted())
        else:
            self.engine.process(image, encoding, tag=msg.header, keep_image=self._overlay_wanted())

    def _overlay_wanted(self) -> bool:
        return bool(self.params["publish_overlay"]) and self.pub_overlay.get_subscription_count() > 0

    # ----- output (called from the engine's post-processing thread) -----
    def _publish(self, result: FrameResult) -> None:
        header = result.tag
        if result.instances is not None:
            ids_msg = instance_ids_image(result.instances, header)
            self.pub_instances.publish(instances_message(result.instances, header, ids_msg))
            self.pub_instance_ids.publish(ids_msg)
        if result.semantic is not None:
            self.pub_labels.publish(array_to_image(result.semantic.labels, "mono8", header))
        if result.image_rgb is not None and self._overlay_wanted():
            picture = overlay(result.image_rgb, result.semantic.labels if result.semantic else None,
                              result.instances.ids if result.instances else None,
                              self.colours.get("semantic", palette(1)), self.instance_colours,
                              float(self.params["overlay_alpha"]))
            self.pub_overlay.publish(array_to_image(picture, "rgb8", header))
        if self.pub_camera_info is not None:
            self._publish_camera_info(header)

    def _publish_camera_info(self, header) -> None:
        with self._info_lock:
            info = self._camera_infos.get((header.stamp.sec, header.stamp.nanosec))
            if info is None and self._camera_infos:
                info = next(reversed(self._camera_infos.values()))   # camera info that is not stamped per frame
        if info is not None:
            info.header = header
            self.pub_camera_info.publish(info)

    def _on_failure(self, result: FrameResult) -> None:
        self.get_logger().error(f"frame {result.seq} failed and was not published: {result.error}",
                                throttle_duration_sec=5.0)

    # ----- reporting -----
    def _report(self) -> None:
        snap = self.stats.snapshot()
        header = self._header_now()
        stats = PipelineStatsMsg(header=header, node_name=self.get_fully_qualified_name(),
                                 frames_in=snap.frames_in, frames_out=snap.frames_out,
                                 frames_dropped=snap.frames_dropped, frames_rejected=snap.frames_rejected,
                                 frames_failed=snap.frames_failed,
                                 rejected_reasons=list(snap.rejected) + [f"failed:{k}" for k in snap.failed],
                                 rejected_counts=list(snap.rejected.values()) + list(snap.failed.values()),
                                 input_rate_hz=float(snap.input_rate_hz), output_rate_hz=float(snap.output_rate_hz),
                                 stages=[StageTiming(stage=s.stage, mean_ms=s.mean_ms, p50_ms=s.p50_ms,
                                                     p95_ms=s.p95_ms, p99_ms=s.p99_ms, max_ms=s.max_ms)
                                         for s in snap.stages])
        self.pub_stats.publish(stats)
        self.pub_diagnostics.publish(DiagnosticArray(header=header, status=[self._diagnostic_status(snap)]))

    def _diagnostic_status(self, snap) -> DiagnosticStatus:
        level, problems = DiagnosticStatus.OK, []
        timeout = float(self.params["input_timeout_s"])
        silent_for = snap.seconds_since_input if snap.seconds_since_input is not None \
            else time.monotonic() - self._started
        if silent_for > timeout:
            level = DiagnosticStatus.WARN
            problems.append(f"no image on {self.params['input_topic']} for {silent_for:.1f} s (camera stopped, "
                            "wrong topic or QoS mismatch?)")
        counts = (snap.frames_dropped, snap.frames_rejected, snap.frames_failed)
        new = [now - before for now, before in zip(counts, self._last_counts)]
        self._last_counts = counts
        if new[1] or new[2]:
            level = DiagnosticStatus.WARN
            problems.append(f"{new[1]} images rejected and {new[2]} frames failed since the last report")
        if new[0]:
            problems.append(f"{new[0]} frames dropped (node slower than the camera; latest-frame policy)")
        values = [("input_rate_hz", f"{snap.input_rate_hz:.2f}"), ("output_rate_hz", f"{snap.output_rate_hz:.2f}"),
                  ("frames_in", snap.frames_in), ("frames_out", snap.frames_out),
                  ("frames_dropped", snap.frames_dropped), ("frames_rejected", snap.frames_rejected),
                  ("frames_failed", snap.frames_failed)]
        values += [(f"rejected.{k}", v) for k, v in sorted(snap.rejected.items())]
        values += [(f"failed.{k}", v) for k, v in sorted(snap.failed.items())]
        for s in snap.stages:
            values += [(f"latency.{s.stage}.p50_ms", f"{s.p50_ms:.2f}"), (f"latency.{s.stage}.p95_ms", f"{s.p95_ms:.2f}"),
                       (f"latency.{s.stage}.p99_ms", f"{s.p99_ms:.2f}")]
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pipeline",
                                message="; ".join(problems) or "ok", hardware_id=self.params["input_topic"],
                                values=[KeyValue(key=k, value=str(v)) for k, v in values])

    def destroy_node(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()
        super().destroy_node()


class InstanceSegmentationNode(PerceptionNode):
    """Instance masks only (``ros_amf_instance``)."""
    TASKS = ("instance",)
    DEFAULT_NAME = topics.NODE_INSTANCE


class SemanticSegmentationNode(PerceptionNode):
    """Semantic label map only (``ros_amf_semantic``)."""
    TASKS = ("semantic",)
    DEFAULT_NAME = topics.NODE_SEMANTIC


def _spin(node_class: type[PerceptionNode], argv: list[str] | None = None) -> int:
    from rclpy.executors import MultiThreadedExecutor
    rclpy.init(args=argv)
    try:
        node = node_class()
    except Exception as exc:
        print(f"ros_amf: the node did not start: {exc}")
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main_perception(argv: list[str] | None = None) -> int:
    return _spin(PerceptionNode, argv)


def main_instance(argv: list[str] | None = None) -> int:
    return _spin(InstanceSegmentationNode, argv)


def main_semantic(argv: list[str] | None = None) -> int:
    return _spin(SemanticSegmentationNode, argv)
