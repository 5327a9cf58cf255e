"""numpy and engine results -> ROS messages, without per-pixel Python.

Outgoing arrays are copied once into the message with ``array.frombytes`` — assigning a numpy array to
``msg.data`` element by element is the well-known slow path (rclpy#763). Incoming images become pixels in
``contract.image_messages``, which the bag reader shares.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header

from ros_amf.runtime.outputs import InstanceOutput

def _fill_data(msg: Image, array_2d: np.ndarray) -> None:
    buffer = array.array("B")
    buffer.frombytes(np.ascontiguousarray(array_2d).reshape(-1).view(np.uint8).data)
    msg.data = buffer


def array_to_image(image: np.ndarray, encoding: str, header: Header) -> Image:
    """Contiguous copy of ``image`` into a new Image message (rgb8/mono8/mono16)."""
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(image.shape[1] * (image.shape[2] if image.ndim == 3 else 1) * image.itemsize)
    if image.dtype == np.uint16 and np.little_endian is False:
        image = image.byteswap()
    _fill_data(msg, image)
    return msg


def instance_ids_image(instances: InstanceOutput, header: Header) -> Image:
    encoding = "mono8" if instances.ids.dtype == np.uint8 else "mono16"
    return array_to_image(instances.ids, encoding, header)


def instances_message(instances: InstanceOutput, header: Header, ids_msg: Image | None = None):
    """InstanceSegmentation with the index image and one Instance per detection (sorted by score)."""
    from ros_amf_msgs.msg import Instance, InstanceSegmentation
    msg = InstanceSegmentation()
    msg.header = header
    msg.instance_ids = ids_msg if ids_msg is not None else instance_ids_image(instances, header)
    boxes = instances.boxes.tolist()
    classes, scores, areas = instances.classes.tolist(), instances.scores.tolist(), instances.areas.tolist()
    out = []
    for k, ((x0, y0, x1, y1), cls, score, area) in enumerate(zip(boxes, classes, scores, areas), start=1):
        item = Instance()
        item.index, item.class_id, item.score, item.area = k, int(cls), float(score), int(area)
        item.bbox = RegionOfInterest(x_offset=int(x0), y_offset=int(y0), width=int(x1 - x0 + 1),
                                     height=int(y1 - y0 + 1), do_rectify=False)
        out.append(item)
    msg.instances = out
    return msg


def label_info_message(header: Header, model_name: str, task: str, class_names: list[str], colours: np.ndarray,
                       small_object_ids: list[int], ignore_label: int = 255):
    from ros_amf_msgs.msg import LabelInfo
    msg = LabelInfo()
    msg.header = header
    msg.model_name, msg.task = model_name, task
    msg.class_ids = list(range(len(class_names)))
    msg.class_names = list(class_names)
    msg.colors = [ColorRGBA(r=float(c[0]) / 255, g=float(c[1]) / 255, b=float(c[2]) / 255, a=1.0)
                  for c in colours[:len(class_names)]]
    msg.small_object_class_ids = [int(i) for i in small_object_ids]
    msg.ignore_label = ignore_label
    return msg


def detections_message(instances: InstanceOutput, header: Header):
    """vision_msgs/Detection2DArray: one Detection2D per instance, the class id (as a string) as the hypothesis
    id, the score, and the box in pixel-centre coordinates (pixel (u, v) sits at x=u, y=v, so the box of pixels
    x0..x1 has its centre at (x0+x1)/2 and size x1-x0+1). ``id`` stays empty: the node does not track."""
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose, Point2D, Pose2D)
    msg = Detection2DArray(header=header)
    boxes = instances.boxes.tolist()
    out = []
    for (x0, y0, x1, y1), cls, score in zip(boxes, instances.classes.tolist(), instances.scores.tolist()):
        hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=str(int(cls)), score=float(score)))
        box = BoundingBox2D(center=Pose2D(position=Point2D(x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0)),
                            size_x=float(x1 - x0 + 1), size_y=float(y1 - y0 + 1))
        out.append(Detection2D(header=header, results=[hypothesis], bbox=box))
    msg.detections = out
    return msg


def vision_label_info_message(header: Header, class_names: list[str], threshold: float = 0.0):
    """vision_msgs/LabelInfo: class id -> name, and the confidence threshold the results were cut at."""
    from vision_msgs.msg import LabelInfo as VisionLabelInfo, VisionClass
    return VisionLabelInfo(header=header, threshold=float(threshold),
                           class_map=[VisionClass(class_id=k, class_name=name) for k, name in enumerate(class_names)])
