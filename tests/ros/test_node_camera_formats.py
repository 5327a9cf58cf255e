"""Camera formats in, standard detections out, over real rclpy topics (issue 20).

A bag's CompressedImage topic is published live, message by message as the bag stores it (the raw CDR
bytes), to a node with ``image_transport: compressed``; a Bayer frame goes to a raw node. The node's
vision_msgs outputs, and vision_msgs messages sent between two plain nodes, arrive with the standard type
names and the type hashes of an upstream vision_msgs build (so they interoperate with a ROS install's
rviz, trackers and bags).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D, VisionClass)

from camera_encodings import encode
from ros_amf.bags.writer import BagWriter
from ros_amf.data.synthetic.render import render_still
from ros_amf.ros.node import PerceptionNode
from ros_amf_msgs.msg import InstanceSegmentation
from ros_helpers import close_probed_node, made_and_closed, spin_until, wait_for_subscribers
from runtime_helpers import tiny_instance, tiny_semantic

pytestmark = pytest.mark.ros

# RIHS01 hashes of ros-perception/vision_msgs 4.1.1 as built upstream (rosidl_generator_type_description)
UPSTREAM_HASHES = {
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
_names = itertools.count()


def _hash_string(type_hash) -> str:
    return f"RIHS{type_hash.version:02d}_{bytes(type_hash.value).hex()}"


class Graph:
    """A perception node (tiny models) and a probe node that publishes frames and records the outputs."""

    def __init__(self, context, **params):
        n = next(_names)
        self.namespace = f"/camfmt{n}"
        overrides = {"instance.input_size.short_side": 64, "instance.input_size.max_long_side": 96,
                     "semantic.input_size.short_side": 64, "semantic.input_size.max_long_side": 96,
                     "score_threshold": 0.0, "diagnostics_period_s": 0.2, **params}
        self.node = PerceptionNode(f"camfmt_{n}", namespace=self.namespace, context=context,
                                   models={"instance": tiny_instance(), "semantic": tiny_semantic()},
                                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = rclpy.create_node(f"camfmt_probe_{n}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.got: dict[str, list] = {}
        for key, kind in (("labels", Image), ("instances", InstanceSegmentation), ("detections", Detection2DArray)):
            self.got[key] = []
            self.probe.create_subscription(kind, f"{self.namespace}/{key}", self.got[key].append,
                                           qos_profile_sensor_data)

    def send(self, publisher, msg, expect: bool = True) -> bool:
        before = len(self.got["labels"])
        wait_for_subscribers(self.executor, publisher)
        publisher.publish(msg)
        return not expect or spin_until(self.executor, lambda: len(self.got["labels"]) > before, 30)

    def close(self):
        close_probed_node(self)


@pytest.fixture
def graph(ros_context):
    yield from made_and_closed(lambda **params: Graph(ros_context, **params))


def _jpeg_bag(path, frames=3):
    """A bag with a CompressedImage (JPEG) camera topic, as a recorded camera gives."""
    with BagWriter(path, "mcap") as bag:
        for i in range(frames):
            bgr = np.ascontiguousarray(render_still(seed=0, index=i, width=96, height=64).image[..., ::-1])
            bag.write_compressed_image("/camera/image_raw/compressed", bgr, "jpeg", (i + 1) * 1_000_000_000)
    with AnyReader([path]) as reader:
        return [raw for _, _, raw in reader.messages(connections=reader.connections)]


def test_a_bags_compressed_topic_published_live_is_processed_and_corrupt_frames_counted(graph, tmp_path):
    g = graph(image_transport="compressed")
    assert g.node.input_topic == f"{g.namespace}/image/compressed"
    publisher = g.probe.create_publisher(CompressedImage, f"{g.namespace}/image/compressed", qos_profile_sensor_data)
    stored = _jpeg_bag(tmp_path / "bag")
    for raw in stored:
        assert g.send(publisher, bytes(raw))       # the stored CDR bytes, as `ros2 bag play` sends them
    assert [m.header.stamp.sec for m in g.got["labels"]] == [1, 2, 3]
    assert (g.got["labels"][0].width, g.got["labels"][0].height) == (96, 64)
    headless = deserialize_message(bytes(stored[0]), CompressedImage)
    headless.data = bytes(headless.data)[2:]                 # the JPEG without its start-of-image marker
    cut = deserialize_message(bytes(stored[1]), CompressedImage)
    cut.data = bytes(cut.data)[:len(cut.data) // 2]          # a JPEG cut short
    for msg in (headless, cut):
        g.send(publisher, msg, expect=False)
    assert spin_until(g.executor, lambda: g.node.stats.rejected.get("corrupt_compressed", 0) == 2, 10)
    assert g.send(publisher, bytes(stored[2]))     # and the node keeps going
    assert g.node.stats.snapshot().frames_out == 4


def test_bayer_frames_on_the_raw_topic_are_processed_like_rgb8(graph):
    g = graph()
    publisher = g.probe.create_publisher(Image, f"{g.namespace}/image", qos_profile_sensor_data)
    rgb = render_still(seed=0, index=2, width=96, height=64).image
    for encoding in ("rgb8", "bayer_grbg8", "nv12"):
        msg = encode(rgb, encoding, pad=2)
        assert g.send(publisher, msg), encoding
    reference = np.frombuffer(g.got["labels"][0].data, np.uint8)
    for labels in g.got["labels"][1:]:
        assert (np.frombuffer(labels.data, np.uint8) == reference).mean() >= 0.9   # tiny random model: coarse
    assert not g.node.stats.rejected


def test_detections_mirror_the_instances_with_the_standard_type(graph):
    g = graph()
    publisher = g.probe.create_publisher(Image, f"{g.namespace}/image", qos_profile_sensor_data)
    assert spin_until(g.executor, lambda: g.node.outputs.detections.get_subscription_count() > 0, 10)
    assert g.send(publisher, encode(render_still(seed=0, index=1, width=96, height=64).image, "rgb8"))
    assert spin_until(g.executor, lambda: g.got["detections"] and g.got["instances"], 10)
    detections, instances = g.got["detections"][-1], g.got["instances"][-1]
    assert detections.header == instances.header and instances.instances
    assert len(detections.detections) == len(instances.instances)
    for det, inst in zip(detections.detections, instances.instances):
        (hypothesis,) = det.results
        assert hypothesis.hypothesis.class_id == str(inst.class_id)
        assert hypothesis.hypothesis.score == pytest.approx(inst.score, abs=1e-6)
        box = inst.bbox
        assert det.bbox.center.position.x == pytest.approx(box.x_offset + (box.width - 1) / 2)
        assert det.bbox.center.position.y == pytest.approx(box.y_offset + (box.height - 1) / 2)
        assert (det.bbox.size_x, det.bbox.size_y) == (box.width, box.height)
        assert det.header == detections.header
    infos = g.probe.get_publishers_info_by_topic(f"{g.namespace}/detections")
    assert [i.topic_type for i in infos] == ["vision_msgs/msg/Detection2DArray"]
    assert _hash_string(infos[0].topic_type_hash) == UPSTREAM_HASHES["vision_msgs/msg/Detection2DArray"]
    # the class map beside it, latched, with the live threshold
    got = []
    g.probe.create_subscription(LabelInfo, f"{g.namespace}/detections/label_info", got.append, LATCHED)
    assert spin_until(g.executor, lambda: got, 10)
    assert [(c.class_id, c.class_name) for c in got[-1].class_map] == [(0, "car"), (1, "person"), (2, "bicycle")]
    g.node.set_parameters([Parameter("score_threshold", value=0.4)])
    assert spin_until(g.executor, lambda: got[-1].threshold == pytest.approx(0.4), 10)
    semantic = []
    g.probe.create_subscription(LabelInfo, f"{g.namespace}/labels/label_info", semantic.append, LATCHED)
    assert spin_until(g.executor, lambda: semantic, 10)
    assert [c.class_name for c in semantic[-1].class_map] == ["road", "building", "car", "person"]


def test_detection2darray_and_label_info_round_trip_with_the_standard_type_names(ros_context):
    sender = rclpy.create_node(f"vision_sender_{next(_names)}", context=ros_context)
    receiver = rclpy.create_node(f"vision_receiver_{next(_names)}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sender)
    executor.add_node(receiver)
    try:
        header = Header(frame_id="cam")
        header.stamp.sec, header.stamp.nanosec = 12, 345
        detection = Detection2D(header=header, id="track-7", results=[ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id="3", score=0.875))],
            bbox=BoundingBox2D(center=Pose2D(position=Point2D(x=10.5, y=20.25), theta=0.1), size_x=4.0, size_y=6.0))
        detection.results[0].pose.pose.position.x = 1.5
        detection.results[0].pose.covariance[35] = 0.25
        sent = {"det": Detection2DArray(header=header, detections=[detection, Detection2D(header=header)]),
                "info": LabelInfo(header=header, threshold=0.5,
                                  class_map=[VisionClass(class_id=0, class_name="car"),
                                             VisionClass(class_id=65535, class_name="unlabeled")])}
        got = {"det": [], "info": []}
        topics = {"det": ("/vision_rt/detections", Detection2DArray), "info": ("/vision_rt/label_info", LabelInfo)}
        publishers = {}
        for key, (topic, kind) in topics.items():
            receiver.create_subscription(kind, topic, got[key].append, LATCHED)
            publishers[key] = sender.create_publisher(kind, topic, LATCHED)
        for key, publisher in publishers.items():
            assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 10)
            publisher.publish(sent[key])
        assert spin_until(executor, lambda: got["det"] and got["info"], 10)
        assert got["det"][0] == sent["det"] and got["info"][0] == sent["info"]
        names = dict(receiver.get_topic_names_and_types())
        assert names["/vision_rt/detections"] == ["vision_msgs/msg/Detection2DArray"]
        assert names["/vision_rt/label_info"] == ["vision_msgs/msg/LabelInfo"]
        for topic, type_name in (("/vision_rt/detections", "vision_msgs/msg/Detection2DArray"),
                                 ("/vision_rt/label_info", "vision_msgs/msg/LabelInfo")):
            (info,) = receiver.get_publishers_info_by_topic(topic)
            assert _hash_string(info.topic_type_hash) == UPSTREAM_HASHES[type_name]
    finally:
        executor.shutdown()
        sender.destroy_node()
        receiver.destroy_node()
