"""``BagReader(skip_damaged=True)`` plays every readable frame of a truncated or corrupt bag (sqlite3 and mcap,
plain and zstd chunks) and accounts for every message it could not play, by reason."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ros_amf.bags import BagReader, BagWriter, CorruptBagError, read_images
from rosbags_writer import RECEIVED_AFTER_NS, frame_pixels, stamp_of, write_image_bag

FRAMES = 20
STAMPS = [sec * 1_000_000_000 + ns for sec, ns in (stamp_of(i, 30.0) for i in range(FRAMES))]


def readable(bag, **kwargs):
    with BagReader(bag, skip_damaged=True) as reader:
        frames = list(reader.images(**kwargs))
    return frames, reader.damage


def truncate_half(bag):
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    os.truncate(data_file, data_file.stat().st_size // 2)


def write_zstd_mcap(path, frames: int):
    """An mcap bag with zstd-compressed chunks, as 'ros2 bag record --compression-mode storage' writes."""
    store = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                      "builtin_interfaces/msg/Time"))
    with writer:
        connection = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(frames):
            sec, ns = stamp_of(i, 30.0)
            # noise does not compress: the chunk stays about as large as the frames
            pixels = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
            message = Image(header=Header(stamp=Time(sec=sec, nanosec=ns), frame_id="camera"), height=64, width=96,
                            encoding="rgb8", is_bigendian=0, step=96 * 3, data=pixels.reshape(-1))
            writer.write(connection, sec * 1_000_000_000 + ns, store.serialize_cdr(message, message.__msgtype__))
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_plays_its_readable_part_and_counts_the_rest(tmp_path, storage):
    bag = write_image_bag(tmp_path / "bag", storage=storage, frames=FRAMES, height=64, width=96)
    truncate_half(bag)
    with pytest.raises(CorruptBagError, match="read 0 of 20"):   # the old behaviour stays the default
        read_images(bag)
    frames, damage = readable(bag)
    assert 5 <= len(frames) < FRAMES
    assert [f.stamp_ns for f in frames] == STAMPS[:len(frames)]
    for frame in frames:
        np.testing.assert_array_equal(frame.to_rgb(), frame_pixels(frame.index, 64, 96))
    assert damage.salvaged and damage.read == len(frames) and damage.expected == FRAMES
    assert damage.lost == FRAMES - len(frames) and damage.skipped_total == 0
    summary = damage.summary(bag)
    assert f"playing {len(frames)} of 20 messages" in summary and f"{FRAMES - len(frames)} missing" in summary


def test_truncated_zstd_mcap_decompresses_what_the_cut_chunk_still_holds(tmp_path):
    bag = write_zstd_mcap(tmp_path / "bag", FRAMES)
    complete = read_images(bag)
    truncate_half(bag)
    frames, damage = readable(bag)
    assert 3 <= len(frames) < FRAMES and damage.lost == FRAMES - len(frames)
    for frame, original in zip(frames, complete):
        assert frame.stamp_ns == original.stamp_ns
        np.testing.assert_array_equal(frame.to_rgb(), original.to_rgb())


def test_corrupt_message_in_the_middle_is_skipped_and_named(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=6, corrupt_message=3)
    frames, damage = readable(bag)
    assert [f.stamp_ns for f in frames] == [STAMPS[i] for i in (0, 1, 2, 4, 5)]
    np.testing.assert_array_equal(frames[3].to_rgb(), frame_pixels(4))
    assert dict(damage.skipped) == {"undecodable": 1} and damage.lost == 0 and not damage.salvaged
    assert damage.examples[0].startswith("message 3: ")
    assert "skipped 1 undecodable" in damage.summary()


def test_damaged_mcap_record_midway_loses_only_that_frame(tmp_path):
    # the same damage as test_bag_reader's: a message record whose length runs past the file end
    bag = write_image_bag(tmp_path / "bag", storage="mcap", frames=40, height=128, width=168)
    data_file = next(bag.glob("*.mcap"))
    raw = bytearray(data_file.read_bytes())
    log_time = STAMPS[0] + round(30 * 1e9 / 30) + RECEIVED_AFTER_NS  # frame 30
    times_at = raw.find(struct.pack("<QQ", log_time, log_time))
    raw[times_at - 14:times_at - 6] = struct.pack("<Q", 2**40)
    data_file.write_bytes(bytes(raw))
    frames, damage = readable(bag)
    stamps = [sec * 1_000_000_000 + ns for sec, ns in (stamp_of(i, 30.0) for i in range(40))]
    assert [f.stamp_ns for f in frames] == stamps[:30] + stamps[31:]
    assert damage.salvaged and damage.lost == 1 and damage.damaged_regions >= 1


def test_invalid_images_in_an_mcap_bag_are_skipped_by_reason(tmp_path):
    with BagWriter(tmp_path / "bag", "mcap") as writer:
        for i in range(5):
            stamp = STAMPS[i]
            if i == 1:   # declares 16 rows of 72 bytes but holds 100 bytes
                writer.write("/camera/image_raw", writer.types["sensor_msgs/msg/Image"](
                    header=writer._header(stamp), height=16, width=24, encoding="rgb8", is_bigendian=0, step=72,
                    data=np.zeros(100, np.uint8)), stamp)
            else:
                writer.write_image("/camera/image_raw", frame_pixels(i), "rgb8", stamp)
            if i == 3:   # "png" bytes that are no PNG
                writer.write("/camera/compressed", writer.types["sensor_msgs/msg/CompressedImage"](
                    header=writer._header(stamp), format="png", data=np.arange(50, dtype=np.uint8)), stamp)
            else:
                writer.write_compressed_image("/camera/compressed", frame_pixels(i), "png", stamp)
    for topic, bad in (("/camera/image_raw", 1), ("/camera/compressed", 3)):
        frames, damage = readable(tmp_path / "bag", topic=topic)
        assert [f.stamp_ns for f in frames] == [STAMPS[i] for i in range(5) if i != bad]
        assert dict(damage.skipped) == {"bad_image": 1} and damage.lost == 0
        assert damage.examples == [f"message {bad}: " + damage.examples[0].split(": ", 1)[1]]
        assert "skipped 1 invalid image" in damage.summary()


def test_limit_stops_early_without_calling_the_rest_lost(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=6, corrupt_message=1)
    frames, damage = readable(bag, limit=3)
    assert [f.index for f in frames] == [0, 2, 3] and damage.stopped_early and damage.lost is None


def test_clean_bag_reports_nothing_damaged(tmp_path):
    bag = write_image_bag(tmp_path / "bag", storage="mcap", frames=4)
    frames, damage = readable(bag)
    assert len(frames) == 4 and damage.clean and "none damaged" in damage.summary()


def test_bag_with_nothing_readable_is_one_clear_error(tmp_path):
    bag = write_image_bag(tmp_path / "bag", frames=4)
    data_file = next(bag.glob("*.db3"))
    data_file.write_bytes(b"\0" * 4096)
    with pytest.raises(CorruptBagError, match="nothing of it can be salvaged"):
        readable(bag)


def test_ros1_bag_cannot_be_salvaged_and_says_so(tmp_path):
    bag = write_image_bag(tmp_path / "bag.bag", storage="ros1", frames=20, height=64, width=96)
    os.truncate(bag, bag.stat().st_size // 2)
    with pytest.raises(CorruptBagError, match="ROS 1 bags cannot be salvaged"):
        readable(bag)
