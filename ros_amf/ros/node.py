"""The perception nodes: camera image in; instances, label map, overlay, stats and diagnostics out.

Lifecycle nodes (rclpy.lifecycle): configure loads and warms the models, activate subscribes and
publishes, deactivate stops the pipeline and frees the topics, cleanup and shutdown release the models.
With ``autostart`` (default) the constructor runs configure and activate, so ``ros2 launch`` and
``ros-amf run`` need no lifecycle manager; a failing configure then raises from the constructor (the
node never exists half-working). All topic names are relative (ros_amf.ros.topics).

The node is thin: it validates and wraps the incoming image (zero-copy), hands it to the pipelined
``Engine`` and publishes what comes back. Everything that can go wrong with an input or a frame is
counted by cause and shows up on ``stats`` and /diagnostics; the node keeps running.
"""
from __future__ import annotations

import copy
import functools
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ros_amf.ros import topics
from ros_amf.ros.admission import FrameAdmission
from ros_amf.ros.camera_info import CameraInfoCache
from ros_amf.ros.camera_outputs import CameraOutputs
from ros_amf.contract.image_messages import compressed_to_pixels, image_to_pixels
from ros_amf.ros.diagnostics import NodeCounters, PipelineDiagnostics, stats_message
from ros_amf.ros.live_params import QOS_BASES, apply_to_engine, qos_refusal, static_refusal, value_problem
from ros_amf.ros.engine_setup import build_engine
from ros_amf.ros.params import is_compressed_transport, specs_for
from ros_amf.ros.qos import IncompatibleQoS, overridable, qos_from_name
from ros_amf.runtime.loading import LoadedModel
from ros_amf.runtime.outputs import FrameResult, OutputsClosed
from ros_amf.runtime.pipeline import Engine
from ros_amf.runtime.stats import PipelineCounters

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PerceptionNode(LifecycleNode):
    """Runs the instance and the semantic model on one camera (``ros_amf_perception``)."""

    TASKS: tuple[str, ...] = ("instance", "semantic")
    DEFAULT_NAME = topics.NODE_PERCEPTION
    PIPELINED = True   # False: every stage runs inside the subscription callback (the naive baseline)
    MULTI_CAMERA = False

    def __init__(self, node_name: str | None = None, *, namespace: str | None = None,
                 parameter_overrides: list[Parameter] | None = None,
                 models: dict[str, LoadedModel] | None = None, **kwargs: Any):
        """``models`` injects already loaded models (tests, benchmarks); otherwise the parameters name them."""
        super().__init__(node_name or self.DEFAULT_NAME, namespace=namespace,
                         parameter_overrides=parameter_overrides or [], **kwargs)
        self._injected_models = models
        self.specs = {s.name: s for s in specs_for(self.TASKS, joint_capable=len(self.TASKS) == 2,
                                                   multi_camera=self.MULTI_CAMERA)}
        self.params = self._declare()
        self.stats = PipelineCounters()
        self.counters = NodeCounters()
        self.qos_events = IncompatibleQoS()
        self.engine: Engine | None = None
        self.models: dict[str, LoadedModel] = {}
        self._configured = self._active = False
        self._topics_opened = False   # after the first, rclpy keeps each topic's QoS (see qos_refusal)
        self._configure_error: Exception | None = None
        self._entities: list = []          # publishers, subscriptions, timers made by activate
        self._admission = FrameAdmission(self.counters, self.stats)
        self._camera_infos = CameraInfoCache(self.counters)
        self.outputs: CameraOutputs | None = None   # the result publishers, while active
        self._close_topics()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.params["autostart"]:
            self._autostart()

    # ----- parameters -----
    def _declare(self) -> dict[str, Any]:
        values = {}
        for spec in self.specs.values():
            read_only = "" if spec.live else " Not live: set it while the node is unconfigured, or restart."
            descriptor = ParameterDescriptor(description=spec.description + read_only)
            # an empty list says nothing about its element type: declare string arrays by type
            default = Parameter.Type.STRING_ARRAY if spec.default == [] else spec.default
            value = self.declare_parameter(spec.name, default, descriptor).value
            values[spec.name] = [] if value is None and isinstance(spec.default, list) else value
        return values

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Check every change first (all or nothing), then apply: live ones reach the next frame."""
        instance = self.models.get("instance")
        names = instance.class_names if instance is not None else None
        for change in changes:
            spec = self.specs.get(change.name)
            if spec is None or change.value == self.params.get(change.name):
                continue   # not ours (qos_overrides.*, use_sim_time) or unchanged
            if change.name in QOS_BASES and self._topics_opened:   # first: cleaning up would not help
                return SetParametersResult(successful=False, reason=qos_refusal(change.name))
            if not spec.live and self._configured:
                return SetParametersResult(successful=False, reason=static_refusal(change.name))
            if spec.live and (problem := value_problem(change.name, change.value, names)):
                return SetParametersResult(successful=False, reason=problem)
        for change in changes:
            if change.name in self.specs:
                value = change.value
                self.params[change.name] = [] if value is None and self.specs[change.name].default == [] else value
        if self.engine is not None:
            apply_to_engine(self.engine, self.params, names)
        if self._active and any(change.name == "score_threshold" for change in changes):
            self._publish_label_info()   # vision_msgs/LabelInfo carries the threshold
        return SetParametersResult(successful=True)

    # ----- lifecycle -----
    def _autostart(self) -> None:
        for step, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if trigger() != SUCCESS:
                error = self._configure_error or RuntimeError(f"the node's {step} transition failed; see its log.")
                self.destroy_node()   # never leave a half-working node behind
                raise error

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self._load()
        except Exception as exc:  # a wrong checkpoint or parameter: one sentence, back to 'unconfigured'
            self._configure_error = exc
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return FAILURE
        self._configured = True
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._open_topics()
        except Exception as exc:
            self._configure_error = exc
            self.get_logger().error(f"activate failed: {exc}")
            self._close_topics()
            return FAILURE
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_topics()
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_topics()
        self._release()
        return SUCCESS

    on_error = on_shutdown   # a failed transition releases everything; the node goes back to 'unconfigured'

    # ----- configure: models and engine -----
    def _load(self) -> None:
        self.models, self.engine = build_engine(self.params, self.TASKS, self._injected_models, self.stats,
                                                self._publish, self._on_failure, self.get_logger())

    def _release(self) -> None:
        """Drop the engine and the models (cleanup, shutdown): the memory goes back, the node stays."""
        if self.engine is not None:
            self.engine.stop()
        self.engine, self.models, self._configured = None, {}, False
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ----- activate: topics -----
    def _publisher(self, kind, topic: str, qos):
        qos = copy.copy(qos)   # rclpy writes this topic's qos_overrides into the profile: never into a shared one
        events = self.qos_events.publisher_events(self.resolve_topic_name(topic))
        publisher = self.create_publisher(kind, topic, qos, event_callbacks=events,
                                          qos_overriding_options=overridable())
        self._entities.append(publisher)
        return publisher

    def _subscription(self, kind, topic: str, callback, qos):
        qos = copy.copy(qos)   # the image and camera_info subscriptions start from one profile: keep them apart
        subscription = self.create_subscription(kind, topic, callback, qos,
                                                event_callbacks=self.qos_events.subscription_events(
                                                    self.resolve_topic_name(topic)),
                                                qos_overriding_options=overridable())
        self._entities.append(subscription)
        return subscription

    def _open_topics(self) -> None:
        self._topics_opened = True
        p = self.params
        compressed = is_compressed_transport(p)
        input_qos = qos_from_name(p["input_qos"], "parameter input_qos")
        self.outputs = CameraOutputs(self._publisher, self.models, p, camera_info=bool(p["camera_info_topic"]))
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._entities.append(self.pub_diagnostics)
        self._publish_label_info()
        self._camera_infos.clear()
        if p["camera_info_topic"]:
            self._subscription(CameraInfo, p["camera_info_topic"], self._camera_infos.add, input_qos)
        # like image_transport, compressed frames come on the (remapped) base name + /compressed
        self.input_topic = self.resolve_topic_name(p["input_topic"]) + (topics.COMPRESSED_SUFFIX if compressed else "")
        self.diagnostics = PipelineDiagnostics().start_from(self.stats.snapshot(), self.counters,
                                                            self.qos_events.snapshot())
        self._active = True
        if self.PIPELINED:
            self.engine.start()
        kind, topic = (CompressedImage, self.input_topic) if compressed else (Image, p["input_topic"])
        decode = compressed_to_pixels if compressed else image_to_pixels
        self._subscription(kind, topic, functools.partial(self._on_image, decode=decode), input_qos)
        self._entities.append(self.create_timer(float(p["diagnostics_period_s"]), self._report))
        self.get_logger().info(f"listening on {self.input_topic} ({p['input_qos']}), models "
                               f"{[m.name for m in self.models.values()]}, device {p['device']}, "
                               "input " + ", ".join(f"{task} {size.short_side}/{size.max_long_side}"
                                                    for task, size in self.engine.input_sizes.items()))

    def _close_topics(self) -> None:
        """Stop taking frames, stop the pipeline (waiting frames are counted as dropped), free the topics."""
        self._active = False
        if self.engine is not None:
            self.engine.stop()
        for entity in reversed(self._entities):
            if isinstance(entity, Timer):
                self.destroy_timer(entity)
            elif isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            else:
                self.destroy_publisher(entity)
        self._entities.clear()
        self.outputs = None

    def _publish_label_info(self) -> None:
        if self.outputs is not None:
            self.outputs.publish_label_info(self._header_now())

    def _header_now(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id="")

    # ----- input -----
    def _listening(self) -> bool:
        """Does any output have a subscriber? (lazy mode computes nothing otherwise)"""
        outputs = self.outputs
        return outputs is not None and outputs.listening()

    def _on_image(self, msg: Image | CompressedImage, decode=image_to_pixels) -> None:
        """Admit a frame (lazy, rate cap), make it pixels (``decode``: zero-copy or one conversion), submit it."""
        if not self._active:
            return
        admitted = self._admission.admit(msg, decode, self.params, self._listening(), self.input_topic,
                                         self.get_logger())
        if admitted is None:
            return
        image, encoding = admitted
        engine = self.engine
        if engine is None:
            return
        if self.PIPELINED:
            engine.submit(image, encoding, tag=msg.header, keep_image=self._overlay_wanted())
        else:
            engine.process(image, encoding, tag=msg.header, keep_image=self._overlay_wanted())

    def _overlay_wanted(self) -> bool:
        outputs = self.outputs
        return outputs is not None and outputs.overlay_wanted()

    # ----- output (called from the engine's post-processing thread) -----
    def _publish(self, result: FrameResult) -> None:
        outputs = self.outputs
        if not self._active or outputs is None:   # deactivating: the engine counts the frame as dropped
            raise OutputsClosed("the node is deactivating")
        outputs.publish(result, self._camera_infos)

    def _on_failure(self, result: FrameResult) -> None:
        self.get_logger().error(f"frame {result.seq} failed and was not published: {result.error}",
                                throttle_duration_sec=5.0)

    # ----- reporting -----
    def stats_channels(self) -> list[tuple[str, PipelineCounters, NodeCounters, Any]]:
        """(name, pipeline counters, node counters, stats publisher or None) of each input this node serves."""
        outputs = self.outputs
        return [(self.get_fully_qualified_name(), self.stats, self.counters,
                 outputs.stats if outputs is not None else None)]

    def _report(self) -> None:
        outputs = self.outputs
        if not self._active or outputs is None:
            return
        snap = self.stats.snapshot()
        header = self._header_now()
        name = self.get_fully_qualified_name()
        outputs.stats.publish(stats_message(header, name, snap))
        status = self.diagnostics.status(name, self.input_topic, snap, self.counters, self.qos_events.snapshot(),
                                         self.params, self._listening(), self.engine.warnings if self.engine else [])
        self.pub_diagnostics.publish(DiagnosticArray(header=header, status=[status]))

    def destroy_node(self) -> None:
        self._close_topics()     # stops the engine too
        super().destroy_node()
        # rclpy's LifecycleNode keeps the node handle alive through its state machine: free it too, or the
        # node stays visible in the graph after destroy_node
        self._state_machine.destroy_when_not_in_use()


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
    from rclpy.signals import SignalHandlerOptions

    from ros_amf.ros.graceful_stop import spin_until_stopped
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)   # graceful_stop handles the signals
    try:
        node = node_class()
    except Exception as exc:
        print(f"ros_amf: the node did not start: {exc}")
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        spin_until_stopped(executor, [node])   # SIGINT / SIGTERM: final stats logged and published
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
