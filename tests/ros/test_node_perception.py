"""The perception nodes over real rclpy topics: outputs, headers, overlay, bad input, diagnostics."""
import itertools

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ros_amf_msgs.msg import InstanceSegmentation, LabelInfo, PipelineStats
from ros_amf.ros.naive_node import NaivePerceptionNode
from ros_amf.ros.node import InstanceSegmentationNode, PerceptionNode, SemanticSegmentationNode
from ros_helpers import close_probed_node, made_and_closed, spin_until, wait_for_subscribers
from runtime_helpers import ScriptedSemanticModel, scripted, tiny_instance, tiny_semantic

pytestmark = pytest.mark.ros

_names = itertools.count()


def _image_msg(stamp_sec=1, height=48, width=64, encoding="rgb8", pad=0):
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    msg = Image(height=height, width=width, encoding=encoding, step=width * channels + pad)
    msg.header = Header(frame_id="camera_optical")
    msg.header.stamp.sec = stamp_sec
    msg.data = np.random.default_rng(stamp_sec).integers(0, 256, height * msg.step, dtype=np.uint8).tobytes()
    return msg


class Graph:
    """A node under test plus a probe node that publishes images and records every output."""

    def __init__(self, context, node_class=PerceptionNode, models=None, **params):
        n = next(_names)
        # each graph in its own namespace, the node's topics at their relative defaults (image, labels, ...)
        self.namespace = f"/test_cam{n}"
        self.topic = f"{self.namespace}/image"
        overrides = {"instance.input_size.short_side": 64, "instance.input_size.max_long_side": 96,
                     "semantic.input_size.short_side": 64, "semantic.input_size.max_long_side": 96,
                     "score_threshold": 0.0,
                     "diagnostics_period_s": 0.2, **params}
        models = models or {"instance": tiny_instance(), "semantic": tiny_semantic()}
        self.node = node_class(f"perception_{n}", namespace=self.namespace, context=context, models=models,
                               parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = __import__("rclpy").create_node(f"probe_{n}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.pub = self.probe.create_publisher(Image, self.topic, qos_profile_sensor_data)
        self.info_pub = self.probe.create_publisher(CameraInfo, f"{self.namespace}/camera_info",
                                                    qos_profile_sensor_data)
        self.got: dict[str, list] = {}
        for name, kind in (("instances", InstanceSegmentation), ("instance_ids", Image), ("labels", Image),
                           ("stats", PipelineStats)):
            self.listen(f"{self.namespace}/{name}", kind, name)
        self.listen(f"{self.node.get_fully_qualified_name()}/camera_info", CameraInfo, "camera_info")
        self.listen("/diagnostics", DiagnosticArray, "diagnostics", qos=10)

    def listen(self, topic, kind, key, qos=qos_profile_sensor_data):
        self.got.setdefault(key, [])
        return self.probe.create_subscription(kind, topic, self.got[key].append, qos)

    def send(self, msg, expect_key="labels", count=1, timeout=20.0):
        before = len(self.got[expect_key]) if expect_key else 0
        wait_for_subscribers(self.executor, self.pub)
        self.pub.publish(msg)
        if expect_key:
            return spin_until(self.executor, lambda: len(self.got[expect_key]) >= before + count, timeout)
        return True

    def close(self):
        close_probed_node(self)


@pytest.fixture
def graph(ros_context):
    yield from made_and_closed(lambda **kwargs: Graph(ros_context, **kwargs))


def test_outputs_carry_the_input_header_and_the_input_size(graph):
    g = graph()
    msg = _image_msg(stamp_sec=7, encoding="bgra8", pad=8)
    assert g.send(msg, "labels")
    assert spin_until(g.executor, lambda: g.got["instances"] and g.got["instance_ids"])
    for out in (g.got["labels"][0], g.got["instances"][0], g.got["instance_ids"][0]):
        assert out.header.stamp.sec == 7 and out.header.frame_id == "camera_optical"
    labels = g.got["labels"][0]
    assert (labels.height, labels.width, labels.encoding) == (48, 64, "mono8")
    assert max(labels.data) < 4
    inst = g.got["instances"][0]
    assert inst.instance_ids.height == 48 and len(inst.instances) <= 8
    assert [i.index for i in inst.instances] == list(range(1, len(inst.instances) + 1))


def test_label_info_is_latched_for_late_subscribers(graph):
    g = graph()
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    base = g.namespace
    g.listen(f"{base}/semantic_label_info", LabelInfo, "semantic_info", latched)
    g.listen(f"{base}/instance_label_info", LabelInfo, "instance_info", latched)
    assert spin_until(g.executor, lambda: g.got["semantic_info"] and g.got["instance_info"], 10)
    assert g.got["semantic_info"][0].class_names == ["road", "building", "car", "person"]
    assert g.got["instance_info"][0].task == "instance"


def test_overlay_only_when_subscribed(graph):
    g = graph()
    assert g.send(_image_msg(1), "labels")
    assert g.node.outputs.overlay.get_subscription_count() == 0
    g.listen(f"{g.namespace}/overlay", Image, "overlay")
    assert spin_until(g.executor, lambda: g.node.outputs.overlay.get_subscription_count() > 0, 10)
    assert g.send(_image_msg(2), "overlay")
    overlay = g.got["overlay"][-1]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", 48, 64)
    assert overlay.header.stamp.sec == 2


def test_bad_inputs_are_rejected_counted_and_the_node_keeps_running(graph):
    g = graph(max_image_pixels=10000)
    wrong = _image_msg(1)
    wrong.encoding = "32FC1"
    bad_step = _image_msg(2)
    bad_step.step = 10
    truncated = _image_msg(3)
    truncated.data = truncated.data[:100]
    empty = Image(encoding="rgb8")
    huge = _image_msg(4, height=120, width=120)
    for msg in (wrong, bad_step, truncated, empty, huge):
        g.send(msg, expect_key=None)
    assert spin_until(g.executor, lambda: sum(g.node.stats.rejected.values()) == 5, 10)
    assert dict(g.node.stats.rejected) == {"unsupported_encoding": 1, "bad_step": 1, "truncated": 1,
                                           "zero_size": 1, "too_large": 1}
    assert g.send(_image_msg(5), "labels")
    assert spin_until(g.executor, lambda: g.got["stats"] and g.got["stats"][-1].frames_rejected == 5, 5)
    stats = g.got["stats"][-1]
    assert stats.frames_in == 6 and "too_large" in stats.rejected_reasons


def test_nan_from_the_model_is_counted_and_reported_and_the_node_keeps_running(graph):
    broken = scripted("semantic", ScriptedSemanticModel(nan=True))
    g = graph(node_class=SemanticSegmentationNode, models={"semantic": broken})
    g.send(_image_msg(1), expect_key=None)
    assert spin_until(g.executor, lambda: g.node.stats.failed.get("non_finite_output") == 1, 10)

    def warned():
        return any(s.level == DiagnosticStatus.WARN and "failed" in s.message
                   for d in g.got["diagnostics"] for s in d.status if s.hardware_id == g.topic)
    assert spin_until(g.executor, warned, 5)
    assert g.got["labels"] == []
    broken.module.nan = False
    assert g.send(_image_msg(2), "labels")
    assert spin_until(g.executor, lambda: g.got["stats"] and g.got["stats"][-1].frames_failed == 1
                      and "failed:non_finite_output" in g.got["stats"][-1].rejected_reasons, 5)


def test_camera_that_stops_publishing_makes_diagnostics_warn(graph):
    g = graph(input_timeout_s=0.5)
    assert g.send(_image_msg(1), "labels")

    def warned():
        return any(s.level == DiagnosticStatus.WARN and "no image" in s.message
                   for d in g.got["diagnostics"] for s in d.status if s.hardware_id == g.topic)
    assert spin_until(g.executor, warned, 10)

    def keys():
        return {kv.key for d in g.got["diagnostics"] for s in d.status for kv in s.values}
    wanted = {"input_rate_hz", "output_rate_hz", "frames_dropped", "latency.inference.p95_ms"}
    assert spin_until(g.executor, lambda: wanted <= keys(), 5)


def test_camera_info_is_republished_with_the_matching_output_header(graph):
    g = graph()
    info = CameraInfo(height=48, width=64)
    info.header.stamp.sec = 9
    info.k = [100.0, 0.0, 32.0, 0.0, 100.0, 24.0, 0.0, 0.0, 1.0]
    wait_for_subscribers(g.executor, g.info_pub)
    g.info_pub.publish(info)
    spin_until(g.executor, lambda: bool(g.node._camera_infos), 5)
    assert g.send(_image_msg(9), "camera_info")
    out = g.got["camera_info"][-1]
    assert out.header.stamp.sec == 9 and out.header.frame_id == "camera_optical" and out.k[0] == 100.0


@pytest.mark.parametrize("node_class,present,absent", [
    (InstanceSegmentationNode, "instances", "labels"),
    (SemanticSegmentationNode, "labels", "instances"),
])
def test_single_task_nodes_publish_only_their_outputs(graph, node_class, present, absent):
    g = graph(node_class=node_class)
    assert g.send(_image_msg(1), present)
    assert g.got[absent] == []
    assert not g.node.has_parameter("instance.config" if node_class is SemanticSegmentationNode
                                    else "semantic.config")


def test_naive_node_gives_the_same_outputs_as_the_pipelined_node(graph):
    pipelined, naive = graph(), graph(node_class=NaivePerceptionNode)
    msg = _image_msg(3)
    assert pipelined.send(msg, "labels") and naive.send(msg, "labels")
    assert bytes(pipelined.got["labels"][0].data) == bytes(naive.got["labels"][0].data)
    assert bytes(pipelined.got["instance_ids"][0].data) == bytes(naive.got["instance_ids"][0].data) or \
        spin_until(naive.executor, lambda: bytes(pipelined.got["instance_ids"][0].data) ==
                   bytes(naive.got["instance_ids"][0].data), 5)


def test_compile_parameters_reach_the_engine_and_cudagraphs_on_a_cpu_says_in_diagnostics_it_runs_eager(graph, ros_context):
    g = graph(**{"backend": "torch", "semantic.compile": "cudagraphs"})
    assert g.node.engine.config.compile == {"instance": "none", "semantic": "cudagraphs"}
    assert any("cudagraphs" in warning for warning in g.node.engine.warnings)
    assert g.send(_image_msg(stamp_sec=3))            # and the node keeps serving frames, eager

    def said_in_diagnostics():                        # what the engine could not do is a WARN on /diagnostics
        return any(s.level == DiagnosticStatus.WARN and "cudagraphs" in s.message
                   for d in g.got["diagnostics"] for s in d.status if s.hardware_id == g.topic)
    assert spin_until(g.executor, said_in_diagnostics, 10)
    with pytest.raises(Exception, match="compile"):
        Graph(ros_context, **{"instance.compile": "fastest"})
