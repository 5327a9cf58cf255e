"""The multi-camera node over real rclpy topics: outputs under each camera's namespace, equal to the one-camera
results, per-camera stats, drops and diagnostics; clear errors for a wrong camera list; output_scale."""
import itertools
from pathlib import Path

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_amf_msgs.msg import InstanceSegmentation, PipelineStats
from ros_amf.ros import launcher
from ros_amf.ros.multi_camera_node import MultiCameraNode
from ros_amf.ros.node import PerceptionNode
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.preprocess import InputSize
from ros_helpers import close_probed_node, made_and_closed, spin_until, wait_for_subscribers
from runtime_helpers import tiny_instance, tiny_semantic

pytestmark = pytest.mark.ros
LAUNCH = Path(__file__).resolve().parents[2] / "launch"

CAMERAS = ["front", "rear", "left"]
SIZE = InputSize(64, 96)
_names = itertools.count()


def _image_msg(stamp_sec, height=48, width=64, frame_id="cam"):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.header = Header(frame_id=frame_id)
    msg.header.stamp.sec = stamp_sec
    msg.data = np.random.default_rng(stamp_sec).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    return msg


def _pixels(msg):
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, -1)


class Graph:
    """A node under test (multi-camera, or one camera) and a probe that publishes and records."""

    def __init__(self, context, node_class=MultiCameraNode, cameras=CAMERAS, **params):
        n = next(_names)
        self.namespace = f"/multi{n}"
        overrides = {"instance.input_size.short_side": 64, "instance.input_size.max_long_side": 96,
                     "semantic.input_size.short_side": 64, "semantic.input_size.max_long_side": 96,
                     "score_threshold": 0.0, "diagnostics_period_s": 0.2, "camera_info_topic": "", **params}
        if node_class is MultiCameraNode and cameras:   # [] would be typed as a byte array: leave the default
            overrides["cameras"] = list(cameras)
        self.node = node_class(f"node_{n}", namespace=self.namespace, context=context,
                               models={"instance": tiny_instance(), "semantic": tiny_semantic()},
                               parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = __import__("rclpy").create_node(f"probe_{n}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.prefixes = [f"{self.namespace}/{c}" for c in cameras] if node_class is MultiCameraNode \
            else [self.namespace]
        self.pubs, self.got = {}, {}
        for prefix in self.prefixes:
            self.pubs[prefix] = self.probe.create_publisher(Image, f"{prefix}/image", qos_profile_sensor_data)
            for name, kind in (("instances", InstanceSegmentation), ("labels", Image), ("stats", PipelineStats)):
                self.listen(f"{prefix}/{name}", kind)
        self.listen("/diagnostics", DiagnosticArray, qos=10)

    def listen(self, topic, kind, qos=qos_profile_sensor_data):
        self.got.setdefault(topic, [])
        return self.probe.create_subscription(kind, topic, self.got[topic].append, qos)

    def send(self, prefix, msg):
        wait_for_subscribers(self.executor, self.pubs[prefix])
        self.pubs[prefix].publish(msg)

    def wait(self, topic, count=1, timeout=20.0):
        return spin_until(self.executor, lambda: len(self.got[topic]) >= count, timeout)

    def close(self):
        close_probed_node(self)


@pytest.fixture
def graph(ros_context):
    yield from made_and_closed(lambda **kwargs: Graph(ros_context, **kwargs))


def test_each_camera_gets_its_own_outputs_equal_to_one_camera_results(graph):
    g = graph()
    sent = {}
    for k, prefix in enumerate(g.prefixes):
        sent[prefix] = _image_msg(10 + k, frame_id=prefix.rsplit("/", 1)[1])
        g.send(prefix, sent[prefix])
    single = Engine(EngineConfig(input_sizes={"instance": SIZE, "semantic": SIZE}, score_threshold=0.0),
                    tiny_instance(), tiny_semantic())
    for prefix in g.prefixes:
        assert g.wait(f"{prefix}/labels") and g.wait(f"{prefix}/instances")
        labels, inst = g.got[f"{prefix}/labels"][0], g.got[f"{prefix}/instances"][0]
        # routed by camera: the header (and the pixels) of that camera's frame come back on its topics
        assert labels.header == sent[prefix].header and inst.header == sent[prefix].header
        want = single.process(_pixels(sent[prefix]), "rgb8")
        have = np.frombuffer(bytes(labels.data), np.uint8).reshape(labels.height, labels.width)
        assert (have == want.semantic.labels).mean() >= 0.999
        assert [i.class_id for i in inst.instances] == want.instances.classes.tolist()
        np.testing.assert_allclose([i.score for i in inst.instances], want.instances.scores, atol=1e-4)
    assert g.node.engine.batched_frames == 3 and len(g.node.models) == 2   # one model copy for all cameras


def test_stats_drops_and_diagnostics_are_per_camera(graph):
    g = graph()
    front, rear, left = g.prefixes
    bad = _image_msg(1)
    bad.encoding = "32FC1"
    g.send(rear, bad)
    g.send(front, _image_msg(2))
    assert g.wait(f"{front}/labels")
    assert spin_until(g.executor, lambda: g.got[f"{rear}/stats"] and g.got[f"{rear}/stats"][-1].frames_rejected == 1
                      and g.got[f"{front}/stats"] and g.got[f"{front}/stats"][-1].frames_out == 1, 10)
    rear_stats, front_stats = g.got[f"{rear}/stats"][-1], g.got[f"{front}/stats"][-1]
    assert "unsupported_encoding" in rear_stats.rejected_reasons and rear_stats.frames_out == 0
    assert front_stats.frames_rejected == 0 and front_stats.node_name.endswith("/front")
    assert spin_until(g.executor, lambda: any(len(d.status) == 3 for d in g.got["/diagnostics"]
                                              if d.status and d.status[0].name.startswith(
                                                  g.node.get_fully_qualified_name())), 10)
    report = next(d for d in reversed(g.got["/diagnostics"]) if len(d.status) == 3
                  and d.status[0].name.startswith(g.node.get_fully_qualified_name()))
    assert [s.hardware_id for s in report.status] == [f"{p}/image" for p in g.prefixes]
    # a camera that floods the node has its own drops counted; every frame it sent is accounted for
    engine = g.node.engine
    for i in range(30):
        engine.submit("left", _pixels(_image_msg(100 + i)), "rgb8", tag=_image_msg(100 + i).header)
    assert engine.wait_idle(30)
    snap = engine.stats["left"].snapshot()
    assert snap.frames_in == 30 and snap.frames_dropped > 0 and snap.frames_out + snap.frames_dropped == 30
    assert engine.stats["front"].snapshot().frames_dropped == 0


@pytest.mark.parametrize("cameras, params, message", [
    ([], {}, "parameter cameras is empty"),
    (["front", "front"], {}, "names a camera twice"),
    (["front", "rear left"], {}, "not ROS namespace names"),
    (["front"], {"input_topic": "/cam/image"}, "is absolute, so every camera would read the same topic"),
    (["front"], {"camera_info_topic": "/cam/camera_info"}, "camera_info_topic '/cam/camera_info' is absolute"),
])
def test_a_wrong_camera_list_is_one_clear_sentence(ros_context, cameras, params, message):
    with pytest.raises(ValueError, match=message):
        Graph(ros_context, cameras=cameras, **params)


def test_output_scale_network_publishes_network_sized_maps_with_camera_pixel_boxes(graph):
    g = graph(node_class=PerceptionNode, output_scale="network")
    ids_topic = f"{g.namespace}/instance_ids"
    g.listen(ids_topic, Image)
    assert spin_until(g.executor, lambda: g.node.outputs.instance_ids.get_subscription_count() > 0, 10)
    g.send(g.namespace, _image_msg(3, height=96, width=128))   # 64/96 input: 64x85 network image
    assert g.wait(f"{g.namespace}/labels") and g.wait(f"{g.namespace}/instances") and g.wait(ids_topic)
    labels, inst, ids = g.got[f"{g.namespace}/labels"][0], g.got[f"{g.namespace}/instances"][0], g.got[ids_topic][0]
    assert (labels.height, labels.width) == (64, 85)
    assert (inst.instance_ids.height, inst.instance_ids.width) == (64, 85)
    assert bytes(ids.data) == bytes(inst.instance_ids.data)     # the topic carries the message's image
    assert inst.instances and all(i.bbox.x_offset + i.bbox.width <= 128 and i.bbox.y_offset + i.bbox.height <= 96
                                  for i in inst.instances)
    assert max(i.bbox.x_offset + i.bbox.width for i in inst.instances) > 85   # camera pixels, not the grid's


def test_a_wrong_output_scale_is_a_clear_error(ros_context):
    with pytest.raises(ValueError, match="output_scale 'half' is not known; use full"):
        Graph(ros_context, node_class=PerceptionNode, output_scale="half")


def test_ros_amf_run_starts_the_batched_multi_camera_file():
    planned = launcher.plan(LAUNCH / "multi_camera.yaml")
    assert [(p.namespace, p.name, p.kind) for p in planned] == [("/", "ros_amf_multi_camera", "multi_camera")]
    assert planned[0].parameters["cameras"] == ["front", "rear", "left"]
    per_node = launcher.plan(LAUNCH / "multi_camera_per_node.yaml")
    assert sorted(p.namespace for p in per_node) == ["/front", "/left", "/rear"]
