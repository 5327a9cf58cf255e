"""The ROS plumbing is real: our compiled messages and sensor_msgs/Image cross a real rclpy graph
(Fast DDS, loopback) with every field intact."""
import numpy as np
import pytest
from ros_helpers import spin_until, wait_for_subscribers

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, RegionOfInterest  # noqa: E402
from std_msgs.msg import ColorRGBA, Header  # noqa: E402

from ros_amf_msgs.msg import (  # noqa: E402
    Instance, InstanceSegmentation, LabelInfo, PipelineStats, StageTiming)

pytestmark = pytest.mark.ros


def _header(frame="camera_front", sec=1_700_000_000, nanosec=123_456_789):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def _image(height=6, width=5, encoding="mono8", channels=1, pad=3):
    rng = np.random.default_rng(0)
    step = width * channels + pad  # padded rows, as real camera drivers send
    data = rng.integers(0, 256, size=height * step, dtype=np.uint8)
    return Image(header=_header(), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=step, data=data.tobytes())


def _instance_segmentation():
    ids = np.zeros((6, 5), np.uint8)
    ids[1:3, 1:4] = 1
    ids[4:6, 0:2] = 2
    instances = [
        Instance(index=1, class_id=13, score=0.875,
                 bbox=RegionOfInterest(x_offset=1, y_offset=1, height=2, width=3, do_rectify=False), area=6),
        Instance(index=2, class_id=11, score=0.25,
                 bbox=RegionOfInterest(x_offset=0, y_offset=4, height=2, width=2, do_rectify=False), area=4),
    ]
    image = Image(header=_header(), height=6, width=5, encoding="mono8", step=5, data=ids.tobytes())
    return InstanceSegmentation(header=_header(), instance_ids=image, instances=instances)


def _label_info():
    return LabelInfo(header=_header(), model_name="amf_sparseinst_r18", task="instance",
                     class_ids=[0, 1, 2], class_names=["person", "rider", "car"],
                     colors=[ColorRGBA(r=0.86, g=0.08, b=0.24, a=1.0), ColorRGBA(r=1.0, g=0.0, b=0.0, a=1.0),
                             ColorRGBA(r=0.0, g=0.0, b=0.56, a=1.0)],
                     small_object_class_ids=[0, 1], ignore_label=255)


def _pipeline_stats():
    stages = [StageTiming(stage=s, mean_ms=1.5 * i, p50_ms=1.0 * i, p95_ms=2.0 * i, p99_ms=3.0 * i, max_ms=4.0 * i)
              for i, s in enumerate(["preprocess", "inference", "postprocess"], start=1)]
    return PipelineStats(header=_header(), node_name="ros_amf_perception", frames_in=1000, frames_out=990,
                         frames_dropped=7, frames_rejected=3, frames_failed=0,
                         rejected_reasons=["unsupported encoding 'yuv422'"], rejected_counts=[3],
                         input_rate_hz=30.0, output_rate_hz=29.5, stages=stages)


def _exchange(ros_context, msg_type, message, qos=10):
    """Publish ``message`` from one node and receive it in another over DDS; return what arrived."""
    sender = rclpy.create_node("roundtrip_sender", context=ros_context)
    receiver = rclpy.create_node("roundtrip_receiver", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sender)
    executor.add_node(receiver)
    received = []
    try:
        receiver.create_subscription(msg_type, "roundtrip", received.append, qos)
        publisher = sender.create_publisher(msg_type, "roundtrip", qos)
        assert wait_for_subscribers(executor, publisher), "discovery over loopback did not complete"
        publisher.publish(message)
        assert spin_until(executor, lambda: received), f"no {msg_type.__name__} arrived over DDS"
        return received[0]
    finally:
        executor.shutdown()
        sender.destroy_node()
        receiver.destroy_node()


def test_image_with_padded_step_arrives_byte_exact(ros_context):
    sent = _image(encoding="rgb8", channels=3, pad=7)
    got = _exchange(ros_context, Image, sent)
    assert (got.height, got.width, got.encoding, got.step) == (6, 5, "rgb8", 5 * 3 + 7)
    assert bytes(got.data) == bytes(sent.data)
    assert got.header.frame_id == "camera_front"
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1_700_000_000, 123_456_789)


def test_instance_segmentation_arrives_with_every_field(ros_context):
    sent = _instance_segmentation()
    got = _exchange(ros_context, InstanceSegmentation, sent)
    assert got.header == sent.header
    ids = np.frombuffer(bytes(got.instance_ids.data), np.uint8).reshape(6, 5)
    assert np.array_equal(ids, np.frombuffer(bytes(sent.instance_ids.data), np.uint8).reshape(6, 5))
    assert [(i.index, i.class_id, i.area) for i in got.instances] == [(1, 13, 6), (2, 11, 4)]
    assert got.instances[0].score == pytest.approx(0.875)
    assert (got.instances[1].bbox.x_offset, got.instances[1].bbox.y_offset,
            got.instances[1].bbox.width, got.instances[1].bbox.height) == (0, 4, 2, 2)


def test_label_info_reaches_a_late_subscriber_when_transient_local(ros_context):
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sender = rclpy.create_node("label_info_sender", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sender)
    publisher = sender.create_publisher(LabelInfo, "label_info", latched)
    publisher.publish(_label_info())  # published before anyone listens
    receiver = rclpy.create_node("label_info_late_receiver", context=ros_context)
    executor.add_node(receiver)
    received = []
    try:
        receiver.create_subscription(LabelInfo, "label_info", received.append, latched)
        assert spin_until(executor, lambda: received), "a late subscriber did not get the transient-local LabelInfo"
        got = received[0]
        assert got.class_names == ["person", "rider", "car"]
        assert list(got.class_ids) == [0, 1, 2] and list(got.small_object_class_ids) == [0, 1]
        assert got.colors[2].b == pytest.approx(0.56) and got.ignore_label == 255
        assert (got.model_name, got.task) == ("amf_sparseinst_r18", "instance")
    finally:
        executor.shutdown()
        sender.destroy_node()
        receiver.destroy_node()


def test_pipeline_stats_arrive_with_stage_timings(ros_context):
    got = _exchange(ros_context, PipelineStats, _pipeline_stats())
    assert (got.frames_in, got.frames_out, got.frames_dropped, got.frames_rejected) == (1000, 990, 7, 3)
    assert got.rejected_reasons == ["unsupported encoding 'yuv422'"] and list(got.rejected_counts) == [3]
    assert [s.stage for s in got.stages] == ["preprocess", "inference", "postprocess"]
    assert got.stages[2].p99_ms == pytest.approx(9.0)
    assert got.input_rate_hz == pytest.approx(30.0)


def test_instance_message_exchanged_alone(ros_context):
    sent = _instance_segmentation().instances[0]
    got = _exchange(ros_context, Instance, sent)
    assert (got.index, got.class_id, got.area, got.bbox.width) == (1, 13, 6, 3)


def test_stage_timing_exchanged_alone(ros_context):
    got = _exchange(ros_context, StageTiming, _pipeline_stats().stages[0])
    assert got.stage == "preprocess" and got.max_ms == pytest.approx(4.0)
