"""One node serving N cameras (``ros_amf_multi_camera``): one model copy, one batched forward per round.

    cameras: [front, rear, left]      # in the node's parameters

Camera ``front`` reads ``front/<input_topic>`` (default ``front/image``; with image_transport
compressed ``front/<input_topic>/compressed``) and ``front/<camera_info_topic>``, and writes every
output a one-camera node writes under ``front/``: ``front/instances``, ``front/labels``,
``front/detections``, ``front/overlay``, ``front/stats``, ... all relative to the node's namespace, so
the node in ``/`` serves ``/front/...``, ``/rear/...``. Each camera has its own counters (in / out /
dropped / rejected / failed, idle, rate-capped), its own ``stats`` topic and its own status in
``/diagnostics``; a camera that floods the node is thinned by its own latest-frame slot and cannot
hide another's drops. The latest frame of every camera with a frame ready goes through the models
in one forward (``runtime.batching.BatchedEngine``).

Parameters, lifecycle, live parameters and the graceful stop are the one-camera node's
(``PerceptionNode``); only the inputs, outputs and reports are per camera.
"""
from __future__ import annotations

import functools
import re
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ros_amf.ros import topics
from ros_amf.ros.admission import FrameAdmission
from ros_amf.ros.camera_info import CameraInfoCache
from ros_amf.ros.camera_outputs import CameraOutputs
from ros_amf.ros.diagnostics import NodeCounters, PipelineDiagnostics, stats_message
from ros_amf.ros.engine_setup import engine_config, finish_engine, load_models
from ros_amf.contract.image_messages import compressed_to_pixels, image_to_pixels
from ros_amf.ros.node import PerceptionNode, _spin
from ros_amf.ros.params import is_compressed_transport
from ros_amf.ros.qos import qos_from_name
from ros_amf.runtime.batching import BatchedEngine
from ros_amf.runtime.outputs import FrameResult, OutputsClosed
from ros_amf.runtime.stats import PipelineCounters

_CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def check_cameras(cameras: list[str], input_topic: str, camera_info_topic: str = "") -> list[str]:
    """The camera list, or a one-sentence error naming what is wrong with it."""
    cameras = [c.strip("/") for c in cameras if c and c.strip("/")]
    if not cameras:
        raise ValueError("parameter cameras is empty; list the cameras this node serves, e.g. "
                         "cameras: [front, rear, left].")
    bad = [c for c in cameras if not _CAMERA_NAME.match(c)]
    if bad:
        raise ValueError(f"parameter cameras holds {bad}, which are not ROS namespace names; use letters, digits "
                         "and '_' (e.g. front, rear_left).")
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"parameter cameras names a camera twice ({cameras}); list each camera once.")
    if input_topic.startswith("/"):
        raise ValueError(f"input_topic '{input_topic}' is absolute, so every camera would read the same topic; "
                         "give a relative name (image_raw): each camera reads <camera>/<input_topic>.")
    if camera_info_topic.startswith("/"):
        raise ValueError(f"camera_info_topic '{camera_info_topic}' is absolute, but each camera reads its own "
                         "<camera>/<camera_info_topic>; give a relative name (camera_info), or '' for none.")
    return cameras


class CameraState:
    """What the node keeps per camera: counters, rate cap, camera infos, outputs, diagnostics."""

    def __init__(self, name: str):
        self.name = name
        self.stats = PipelineCounters()
        self.counters = NodeCounters()
        self.infos = CameraInfoCache(self.counters)
        self.admission = FrameAdmission(self.counters, self.stats)
        self.outputs: CameraOutputs | None = None
        self.input_topic = ""
        self.diagnostics = PipelineDiagnostics()


class MultiCameraNode(PerceptionNode):
    """Instances and label maps for N cameras from one model copy (``ros_amf_multi_camera``)."""

    TASKS = ("instance", "semantic")
    DEFAULT_NAME = topics.NODE_MULTI_CAMERA
    MULTI_CAMERA = True

    def __init__(self, *args: Any, **kwargs: Any):
        self.cameras: dict[str, CameraState] = {}
        super().__init__(*args, **kwargs)

    # ----- configure -----
    def _load(self) -> None:
        p = self.params
        names = check_cameras(list(p["cameras"]), str(p["input_topic"]), str(p["camera_info_topic"]))
        self.cameras = {name: CameraState(name) for name in names}
        self.models = load_models(p, self.TASKS, self._injected_models, self.get_logger())
        self.engine = BatchedEngine(engine_config(p, self.models), names, self.models.get("instance"),
                                    self.models.get("semantic"), {n: s.stats for n, s in self.cameras.items()},
                                    on_result=self._publish_camera, on_error=self._on_camera_failure)
        finish_engine(p, self.engine, self.get_logger())

    # ----- activate -----
    def _open_topics(self) -> None:
        self._topics_opened = True
        p = self.params
        compressed = is_compressed_transport(p)
        input_qos = qos_from_name(p["input_qos"], "parameter input_qos")
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._entities.append(self.pub_diagnostics)
        header = self._header_now()
        for name, camera in self.cameras.items():
            camera.outputs = CameraOutputs(self._publisher, self.models, p, prefix=f"{name}/",
                                           camera_info=bool(p["camera_info_topic"]))
            camera.outputs.publish_label_info(header)
            camera.infos.clear()
            camera.diagnostics = PipelineDiagnostics().start_from(camera.stats.snapshot(), camera.counters,
                                                                  self.qos_events.snapshot())
            if p["camera_info_topic"]:
                self._subscription(CameraInfo, f"{name}/{p['camera_info_topic']}", camera.infos.add, input_qos)
            base = f"{name}/{p['input_topic']}"
            camera.input_topic = self.resolve_topic_name(base) + (topics.COMPRESSED_SUFFIX if compressed else "")
        self._active = True
        self.engine.start()
        decode = compressed_to_pixels if compressed else image_to_pixels
        for name, camera in self.cameras.items():
            kind = CompressedImage if compressed else Image
            self._subscription(kind, camera.input_topic,
                               functools.partial(self._on_camera_image, camera=camera, decode=decode), input_qos)
        self._entities.append(self.create_timer(float(p["diagnostics_period_s"]), self._report))
        sizes = ", ".join(f"{task} {s.short_side}/{s.max_long_side}" for task, s in self.engine.input_sizes.items())
        inputs = ", ".join(c.input_topic for c in self.cameras.values())
        self.get_logger().info(f"serving {len(self.cameras)} cameras ({inputs}) "
                               f"with one copy of {[m.name for m in self.models.values()]}, device {p['device']}, "
                               f"input {sizes}, outputs at {p['output_scale']} scale")

    def _close_topics(self) -> None:
        super()._close_topics()
        for camera in getattr(self, "cameras", {}).values():
            camera.outputs = None

    def _publish_label_info(self) -> None:
        header = self._header_now()
        for camera in self.cameras.values():
            if camera.outputs is not None:
                camera.outputs.publish_label_info(header)

    # ----- input -----
    def _listening(self) -> bool:
        return any(c.outputs is not None and c.outputs.listening() for c in self.cameras.values())

    def _on_camera_image(self, msg: Image | CompressedImage, camera: CameraState, decode=image_to_pixels) -> None:
        """As the one-camera node admits a frame (lazy, rate cap, decode), counted on ``camera``."""
        outputs = camera.outputs
        if not self._active or outputs is None:
            return
        admitted = camera.admission.admit(msg, decode, self.params, outputs.listening(), camera.input_topic,
                                          self.get_logger())
        if admitted is None:
            return
        image, encoding = admitted
        engine = self.engine
        if engine is not None:
            engine.submit(camera.name, image, encoding, tag=msg.header, keep_image=outputs.overlay_wanted())

    # ----- output (from the engine's post-processing thread) -----
    def _publish_camera(self, name: str, result: FrameResult) -> None:
        camera = self.cameras.get(name)
        if not self._active or camera is None or camera.outputs is None:   # counted as dropped by the engine
            raise OutputsClosed(f"camera {name}: the node is deactivating")
        camera.outputs.publish(result, camera.infos)

    def _on_camera_failure(self, name: str, result: FrameResult) -> None:
        self.get_logger().error(f"camera {name}: frame {result.seq} failed and was not published: {result.error}",
                                throttle_duration_sec=5.0)

    # ----- reporting -----
    def stats_channels(self) -> list[tuple[str, PipelineCounters, NodeCounters, Any]]:
        base = self.get_fully_qualified_name().rstrip("/")
        return [(f"{base}/{name}", c.stats, c.counters, c.outputs.stats if c.outputs is not None else None)
                for name, c in self.cameras.items()]

    def _report(self) -> None:
        if not self._active:
            return
        header = self._header_now()
        statuses = []
        for (name, stats, counters, publisher), camera in zip(self.stats_channels(), self.cameras.values()):
            outputs = camera.outputs
            if outputs is None:
                return
            snap = stats.snapshot()
            publisher.publish(stats_message(header, name, snap))
            statuses.append(camera.diagnostics.status(name, camera.input_topic, snap, counters,
                                                      self.qos_events.snapshot(), self.params, outputs.listening(),
                                                      self.engine.warnings if self.engine else []))
        self.pub_diagnostics.publish(DiagnosticArray(header=header, status=statuses))


def main(argv: list[str] | None = None) -> int:
    return _spin(MultiCameraNode, argv)
