"""The result topics of one camera and how an engine result becomes messages on them.

Shared by the one-camera nodes (``ros/node.py``, topics at the node's relative names) and the
multi-camera node (``ros/multi_camera_node.py``, the same names under each camera's namespace).

The instance-id image is serialised once per frame: it travels inside ``instances``
(``InstanceSegmentation.instance_ids``, so the list and its image always arrive together), and the
``instance_ids`` topic (a plain Image for rviz and image tools) is filled only while someone
subscribes to it. ``detections`` and ``overlay`` are built only while heard, too.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ros_amf_msgs.msg import InstanceSegmentation, LabelInfo, PipelineStats as PipelineStatsMsg
from vision_msgs.msg import Detection2DArray, LabelInfo as VisionLabelInfo

from ros_amf.ros import topics
from ros_amf.ros.camera_info import CameraInfoCache
from ros_amf.ros.conversions import (array_to_image, detections_message, instance_ids_image, instances_message,
                                     label_info_message, vision_label_info_message)
from ros_amf.ros.qos import OUTPUT_DEPTH, latched, qos_from_name
from ros_amf.runtime.loading import LoadedModel, class_colours
from ros_amf.runtime.outputs import FrameResult, overlay, palette

MakePublisher = Callable[[type, str, object], object]


def _heard(publisher) -> bool:
    return publisher is not None and publisher.get_subscription_count() > 0


class CameraOutputs:
    """Publishers of one camera's results under ``prefix`` ('' or 'front/'), made with ``make_publisher``
    (the node's, which tracks them for the lifecycle)."""

    def __init__(self, make_publisher: MakePublisher, models: dict[str, LoadedModel], params: dict,
                 prefix: str = "", camera_info: bool = False):
        self.models, self.params, self.prefix = models, params, prefix
        self.colours = {task: class_colours(m.class_names) for task, m in models.items()}
        self.instance_colours = palette(64, seed=11)
        output = lambda: qos_from_name(params["output_qos"], "parameter output_qos", OUTPUT_DEPTH)  # noqa: E731

        def make(kind, name, qos):
            return make_publisher(kind, prefix + name, qos)
        self.instances = self.instance_ids = self.instance_info = self.detections = self.detections_info = None
        self.labels = self.semantic_info = self.labels_info = self.camera_info = None
        if "instance" in models:
            self.instances = make(InstanceSegmentation, topics.INSTANCES, output())
            self.instance_ids = make(Image, topics.INSTANCE_IDS, output())
            self.instance_info = make(LabelInfo, topics.INSTANCE_LABEL_INFO, latched())
            self.detections = make(Detection2DArray, topics.DETECTIONS, output())
            self.detections_info = make(VisionLabelInfo, topics.DETECTIONS_LABEL_INFO, latched())
        if "semantic" in models:
            self.labels = make(Image, topics.LABELS, output())
            self.semantic_info = make(LabelInfo, topics.SEMANTIC_LABEL_INFO, latched())
            self.labels_info = make(VisionLabelInfo, topics.LABELS_LABEL_INFO, latched())
        self.overlay = make(Image, topics.OVERLAY, output())
        self.stats = make(PipelineStatsMsg, topics.STATS, output())
        if camera_info:   # private, beside the node: ~/camera_info, or ~/<camera>/camera_info
            self.camera_info = make_publisher(CameraInfo, "~/" + prefix + topics.CAMERA_INFO_OUT[2:], output())

    def publish_label_info(self, header: Header) -> None:
        for task, ours, vision in (("instance", self.instance_info, self.detections_info),
                                   ("semantic", self.semantic_info, self.labels_info)):
            if ours is None:
                continue
            model = self.models[task]
            ours.publish(label_info_message(header, model.name, task, model.class_names, self.colours[task],
                                            model.small_object_ids))
            threshold = self.params["score_threshold"] if task == "instance" else 0.0   # labels: no cut
            vision.publish(vision_label_info_message(header, model.class_names, threshold))

    def listening(self) -> bool:
        """Does any output have a subscriber? (lazy mode computes nothing otherwise)"""
        outputs = [self.instances, self.instance_ids, self.labels, self.camera_info, self.detections]
        if self.params["publish_overlay"]:
            outputs.append(self.overlay)
        return any(_heard(pub) for pub in outputs)

    def overlay_wanted(self) -> bool:
        return bool(self.params["publish_overlay"]) and _heard(self.overlay)

    def publish(self, result: FrameResult, camera_infos: CameraInfoCache | None = None) -> None:
        header = result.tag
        if result.instances is not None:
            ids_msg = instance_ids_image(result.instances, header)
            self.instances.publish(instances_message(result.instances, header, ids_msg))
            if _heard(self.instance_ids):      # the second copy of the id image only when asked for
                self.instance_ids.publish(ids_msg)
            if _heard(self.detections):        # ~40 us per detection to build: only if heard
                self.detections.publish(detections_message(result.instances, header))
        if result.semantic is not None:
            self.labels.publish(array_to_image(result.semantic.labels, "mono8", header))
        if result.image_rgb is not None and self.overlay_wanted():
            self.overlay.publish(array_to_image(self._overlay(result), "rgb8", header))
        if self.camera_info is not None and camera_infos is not None \
                and (info := camera_infos.for_output(header)) is not None:
            self.camera_info.publish(info)

    def _overlay(self, result: FrameResult) -> np.ndarray:
        labels = result.semantic.labels if result.semantic else None
        ids = result.instances.ids if result.instances else None
        image, instances = result.image_rgb, result.instances
        maps = [m for m in (labels, ids) if m is not None]
        grid = max((m.shape for m in maps), key=lambda hw: hw[0] * hw[1], default=image.shape[:2])
        if tuple(grid) != image.shape[:2]:   # output_scale network: drawn at the larger output map's size
            size = (int(grid[1]), int(grid[0]))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            labels, ids = (m if m is None or m.shape == tuple(grid) else
                           cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in (labels, ids))
            instances = None   # boxes are in camera pixels: no boxes on a smaller overlay
        annotate = bool(self.params["overlay_annotations"])
        names = {task: m.class_names for task, m in self.models.items()} if annotate else {}
        return overlay(image, labels, ids, self.colours.get("semantic", palette(1)), self.instance_colours,
                       float(self.params["overlay_alpha"]),
                       instances=instances if annotate else None,
                       instance_names=names.get("instance"), semantic_names=names.get("semantic"))
