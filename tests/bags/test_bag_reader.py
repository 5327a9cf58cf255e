"""The bag reader opens foreign bags (plain rosbags writers), decodes every accepted image form and
fails on damaged or unsuitable bags with a specific exception that says what happened."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from ros_amf.bags import (BagNotFoundError, BagReader, BagWriter, CorruptBagError, TopicNotFoundError,
                          UnsupportedEncodingError, UnsupportedMessageTypeError, list_topics, read_images)
from ros_amf.contract.image_messages import image_to_pixels
from ros_amf.contract.pixels import PACKED_ENCODINGS
from rosbags_writer import frame_pixels, write_image_bag

STORAGES = ["sqlite3", "mcap"]


@pytest.mark.parametrize("storage", STORAGES)
def test_lists_topics_with_types_and_counts(tmp_path, storage):
    bag = write_image_bag(tmp_path / "bag", storage=storage, frames=5, extra_string_topic="/chatter")
    topics = {t.name: t for t in list_topics(bag)}
    assert topics["/camera/image_raw"].msgtype == "sensor_msgs/msg/Image"
    assert topics["/camera/image_raw"].message_count == 5
    assert topics["/chatter"].msgtype == "std_msgs/msg/String"
    assert not topics["/chatter"].is_image


@pytest.mark.parametrize("storage", STORAGES + ["ros1"])
def test_reads_frames_in_order_with_header_stamps(tmp_path, storage):
    path = tmp_path / ("bag.bag" if storage == "ros1" else "bag")
    bag = write_image_bag(path, storage=storage, frames=4, rate_hz=10.0)
    frames = read_images(bag)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in frames] == [100_000_000_000 + i * 100_000_000 for i in range(4)]
    assert all(f.frame_id == "camera" for f in frames)
    np.testing.assert_array_equal(frames[2].to_rgb(), frame_pixels(2))


def test_bare_mcap_file_without_metadata_opens(tmp_path):
    bag = write_image_bag(tmp_path / "bag", storage="mcap", frames=3)
    (bag / "metadata.yaml").unlink()
    frames = read_images(next(bag.glob("*.mcap")))
    assert len(frames) == 3


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_every_accepted_encoding_converts_to_the_same_rgb(tmp_path, encoding):
    bag = write_image_bag(tmp_path / "bag", encoding=encoding, frames=2)
    frame = read_images(bag)[1]
    assert frame.encoding == encoding
    stored = frame.to_array()
    pattern = frame_pixels(1, channels={"mono8": 1, "rgb8": 3, "bgr8": 3}.get(encoding, 4))
    np.testing.assert_array_equal(stored.reshape(pattern.shape), pattern)
    rgb = frame.to_rgb()
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8
    if encoding == "bgr8":
        np.testing.assert_array_equal(rgb, pattern[..., ::-1])
    elif encoding == "mono8":
        np.testing.assert_array_equal(rgb, np.repeat(pattern, 3, axis=2))


def test_padded_rows_are_cut_to_the_image_width(tmp_path):
    bag = write_image_bag(tmp_path / "bag", row_padding=8, frames=1)
    frame = read_images(bag)[0]
    assert frame.step == 24 * 3 + 8
    np.testing.assert_array_equal(frame.to_rgb(), frame_pixels(0))


@pytest.mark.parametrize("storage", STORAGES)
def test_compressed_png_decodes_losslessly_to_bgr8(tmp_path, storage):
    bag = write_image_bag(tmp_path / "bag", storage=storage, compressed="png", frames=3)
    frame = read_images(bag)[2]
    assert frame.encoding == "bgr8"  # OpenCV decodes to BGR; published as-is, no extra conversion
    np.testing.assert_array_equal(frame.to_array(), frame_pixels(2))


def test_compressed_jpeg_decodes_close_to_the_original(tmp_path):
    bag = write_image_bag(tmp_path / "bag", compressed="jpeg", frames=1, height=32, width=48)
    frame = read_images(bag)[0]
    error = np.abs(frame.to_array().astype(int) - frame_pixels(0, 32, 48).astype(int)).mean()
    assert frame.to_array().shape == (32, 48, 3) and error < 20


def test_default_topic_is_the_only_image_topic(tmp_path):
    bag = write_image_bag(tmp_path / "bag", topic="/front/image", frames=2, extra_string_topic="/chatter")
    with BagReader(bag) as reader:
        assert reader.resolve_image_topic().name == "/front/image"


def test_missing_topic_names_the_topics_that_exist(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=1)
    with BagReader(bag) as reader, pytest.raises(TopicNotFoundError, match=r"'/nope'.*/camera/image_raw"):
        list(reader.images("/nope"))


def test_non_image_topic_is_an_unsupported_type(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=1, extra_string_topic="/chatter")
    with BagReader(bag) as reader, pytest.raises(UnsupportedMessageTypeError, match="std_msgs/msg/String"):
        list(reader.images("/chatter"))


def _write_messages(path, messages, storage="sqlite3"):
    """A bag of the given rclpy camera messages (as a camera driver published them) on /camera/image_raw."""
    with BagWriter(path, storage) as bag:
        for i, msg in enumerate(messages):
            stamp = 100_000_000_000 + i * 33_000_000
            header = bag.types["std_msgs/msg/Header"](
                stamp=bag.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id="camera")
            data = np.frombuffer(bytes(msg.data), np.uint8)
            if hasattr(msg, "encoding"):
                message = bag.types["sensor_msgs/msg/Image"](
                    header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                    is_bigendian=msg.is_bigendian, step=msg.step, data=data)
            else:
                message = bag.types["sensor_msgs/msg/CompressedImage"](header=header, format=msg.format, data=data)
            bag.write("/camera/image_raw", message, stamp)
    return path


def _smooth_rgb(height=32, width=48):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.mark.ros     # the camera frames are made as rclpy messages (tests/camera_encodings.py)
@pytest.mark.parametrize("encoding", sorted(PACKED_ENCODINGS))
def test_packed_encodings_are_decoded_as_the_node_decodes_them(tmp_path, encoding):
    # bayer, YUV 4:2:2, NV12/NV21 and mono16 cameras: the replay plays what the live node would have seen
    from camera_encodings import NV, encode, grey
    rgb = _smooth_rgb()
    msg = encode(rgb, encoding, pad=8 if encoding not in NV else 0)
    (frame,) = read_images(_write_messages(tmp_path / "bag", [msg]))
    node_pixels, node_encoding = image_to_pixels(msg)
    assert frame.encoding == node_encoding == ("mono8" if encoding == "mono16" else "rgb8")
    assert (frame.height, frame.width) == (32, 48)
    np.testing.assert_array_equal(frame.to_array(), node_pixels)
    truth = grey(rgb)[..., None].repeat(3, axis=2) if encoding == "mono16" else rgb
    error = np.abs(frame.to_rgb().astype(int) - truth.astype(int))[2:-2, 2:-2]   # demosaic borders differ
    assert error.mean() < 3.0, f"{encoding}: mean error {error.mean():.2f} against the frame it encodes"


@pytest.mark.ros
def test_unsupported_encoding_names_the_accepted_ones(tmp_path):
    from sensor_msgs.msg import Image
    bag = write_image_bag(tmp_path / "bag", frames=1, encoding="mono16")
    _write_messages(tmp_path / "rgb16", [Image(height=4, width=4, encoding="rgb16", step=24, data=bytes(96))])
    with pytest.raises(UnsupportedEncodingError, match="rgb16.*rgb8.*bayer_bggr8.*replay another topic with --topic"):
        read_images(tmp_path / "rgb16")
    depth = Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64))
    with pytest.raises(UnsupportedEncodingError, match="depth image"):
        read_images(_write_messages(tmp_path / "depth", [depth]))
    assert read_images(bag)[0].encoding == "mono8"     # mono16 is read (high bytes), as the node reads it


@pytest.mark.ros
def test_odd_sized_bayer_frame_is_corrupt_and_skipped_with_a_count(tmp_path):
    from sensor_msgs.msg import Image

    from camera_encodings import encode
    good = encode(_smooth_rgb(), "bayer_rggb8")
    odd = Image(height=31, width=48, encoding="bayer_rggb8", step=48, data=bytes(31 * 48))
    bag = _write_messages(tmp_path / "bag", [good, odd, good])
    with pytest.raises(CorruptBagError, match=r"frame 1 .* is invalid \(.*even width and height\); read 1 of 3"):
        read_images(bag)
    with BagReader(bag, skip_damaged=True) as reader:
        assert [f.index for f in reader.images()] == [0, 2]
        assert reader.damage.skipped == {"bad_image": 1}


@pytest.mark.ros
def test_truncated_jpeg_is_refused_not_half_decoded(tmp_path):
    from camera_encodings import compressed
    # OpenCV's imdecode returns a grey-filled frame for a JPEG cut short; the node refuses it, so must replay
    whole = compressed(_smooth_rgb(64, 96), "jpeg")
    cut = compressed(_smooth_rgb(64, 96), "jpeg")
    cut.data = bytes(whole.data)[: len(whole.data) * 2 // 3]
    bag = _write_messages(tmp_path / "bag", [whole, cut])
    with pytest.raises(CorruptBagError, match=r"frame 1 .* is invalid \(.*does not decode\); read 1 of 2"):
        read_images(bag)
    with BagReader(bag, skip_damaged=True) as reader:
        assert [f.index for f in reader.images()] == [0]
        assert reader.damage.skipped == {"bad_image": 1}


def test_missing_bag_path_is_a_clear_error(tmp_path):
    with pytest.raises(BagNotFoundError, match="does not exist"):
        BagReader(tmp_path / "absent")


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_reports_messages_read_and_expected(tmp_path, storage):
    bag = write_image_bag(tmp_path / "bag", storage=storage, frames=20, height=64, width=96)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    os.truncate(data_file, data_file.stat().st_size // 2)
    with pytest.raises(CorruptBagError, match="truncated or corrupt.*read 0 of 20") as caught:
        read_images(bag)
    assert caught.value.messages_read == 0 and caught.value.messages_expected == 20


def test_damaged_mcap_record_midway_yields_the_frames_before_it(tmp_path):
    # 64 KB frames: the mcap writer closes a chunk every 1 MiB, so 40 frames span three chunks.
    bag = write_image_bag(tmp_path / "bag", storage="mcap", frames=40, height=128, width=168)
    data_file = next(bag.glob("*.mcap"))
    raw = bytearray(data_file.read_bytes())
    # An mcap message record is: opcode, u64 length, u16 channel, u32 sequence, u64 log time, u64 publish time.
    log_time = 100_000_000_000 + round(30 * 1e9 / 30) + 1_000_000  # frame 30 (see write_image_bag)
    times_at = raw.find(struct.pack("<QQ", log_time, log_time))
    assert times_at > 0
    raw[times_at - 14:times_at - 6] = struct.pack("<Q", 2**40)  # record length now runs past the file end
    data_file.write_bytes(bytes(raw))
    delivered = []
    with BagReader(bag) as reader, pytest.raises(CorruptBagError) as caught:
        for frame in reader.images():
            delivered.append(frame.index)
    assert 0 < caught.value.messages_read <= 30
    assert delivered == list(range(caught.value.messages_read))
    assert f"read {caught.value.messages_read} of 40" in str(caught.value)


def test_corrupt_message_reports_its_index(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=6, corrupt_message=3)
    with pytest.raises(CorruptBagError, match="at message 3.*read 3 of 6") as caught:
        read_images(bag)
    assert caught.value.messages_read == 3
