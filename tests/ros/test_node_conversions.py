"""Image <-> numpy conversions and result messages (no DDS needed)."""
import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_amf.contract.image_messages import BadImage, image_to_array
from ros_amf.ros.conversions import array_to_image, instances_message, label_info_message
from ros_amf.runtime.outputs import InstanceOutput

pytestmark = pytest.mark.ros

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def _msg(encoding="rgb8", height=4, width=5, pad=3, data=None, step=None):
    channels = CHANNELS.get(encoding, 3)
    msg = Image(height=height, width=width, encoding=encoding)
    msg.step = width * channels + pad if step is None else step
    rows = np.arange(height * msg.step, dtype=np.uint8) if data is None else data
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding", list(CHANNELS))
def test_padded_step_becomes_a_zero_copy_view_of_the_right_pixels(encoding):
    msg = _msg(encoding)
    array, enc = image_to_array(msg)
    channels = CHANNELS[encoding]
    assert enc == encoding
    assert array.shape == ((4, 5) if channels == 1 else (4, 5, channels))
    flat = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(array, flat)
    assert array.reshape(4, -1)[1, 0] == flat[msg.step]        # row 1 starts after the padding


@pytest.mark.parametrize("case,reason", [
    (dict(encoding="16UC1"), "unsupported_encoding"),
    (dict(step=10), "bad_step"),
    (dict(data=np.zeros(20, np.uint8)), "truncated"),
    (dict(height=0, data=np.zeros(0, np.uint8)), "zero_size"),
])
def test_bad_images_name_their_cause(case, reason):
    with pytest.raises(BadImage) as info:
        image_to_array(_msg(**case))
    assert info.value.reason == reason and str(info.value)


def test_huge_image_is_rejected_before_touching_its_data():
    msg = Image(height=100000, width=100000, encoding="rgb8", step=300000)
    with pytest.raises(BadImage) as info:
        image_to_array(msg, max_pixels=4096 * 4096)
    assert info.value.reason == "too_large"


def test_last_row_without_padding_is_accepted():
    msg = _msg(pad=3)
    msg.data = msg.data[:-3]
    assert image_to_array(msg)[0].shape == (4, 5, 3)


def test_array_to_image_round_trips_mono16_and_rgb8():
    header = Header(frame_id="cam")
    ids = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    msg = array_to_image(ids, "mono16", header)
    assert msg.step == 8 and msg.header.frame_id == "cam"
    assert np.array_equal(np.frombuffer(msg.data, np.uint16).reshape(3, 4), ids)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    back, _ = image_to_array(array_to_image(rgb, "rgb8", header))
    assert np.array_equal(back, rgb)


def test_instances_message_lists_sorted_instances_with_boxes():
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 2:5] = 1
    out = InstanceOutput(ids=ids, classes=np.array([2]), scores=np.array([0.8], np.float32),
                         boxes=np.array([[2, 1, 4, 2]], np.int32), areas=np.array([6]))
    msg = instances_message(out, Header(frame_id="cam"))
    assert msg.instance_ids.encoding == "mono8" and msg.header.frame_id == "cam"
    item = msg.instances[0]
    assert (item.index, item.class_id, item.area) == (1, 2, 6)
    assert (item.bbox.x_offset, item.bbox.y_offset, item.bbox.width, item.bbox.height) == (2, 1, 3, 2)
    assert item.score == pytest.approx(0.8)


def test_label_info_has_parallel_arrays():
    msg = label_info_message(Header(), "m", "semantic", ["road", "car"], np.array([[255, 0, 0], [0, 0, 255]]), [1])
    assert list(msg.class_ids) == [0, 1] and msg.class_names == ["road", "car"]
    assert msg.colors[0].r == 1.0 and list(msg.small_object_class_ids) == [1] and msg.ignore_label == 255
