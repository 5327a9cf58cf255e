"""Test helper: write small camera bags, ROS 2 ones with ``ros_amf.bags.BagWriter``, ROS 1 ones with
the plain ``rosbags`` writer (ros_amf writes no ROS 1 bags), and damage them on request.

Used by tests/test_bag_*.py and tests/test_replay_*.py. The expected pixels and stamps come from
``frame_pixels`` and ``stamp_of`` here, not from the writer, so the reader tests still pin both sides.
"""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_typestore

from ros_amf.bags import BagWriter

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}
RECEIVED_AFTER_NS = 1_000_000  # the recorder received each frame 1 ms after its stamp


def frame_pixels(index: int, height: int = 16, width: int = 24, channels: int = 3) -> np.ndarray:
    """A deterministic, index-dependent test pattern (different in every pixel and channel)."""
    y, x = np.mgrid[0:height, 0:width]
    planes = [(y * 7 + x * 3 + index * 11 + c * 50) % 256 for c in range(channels)]
    return np.stack(planes, axis=-1).astype(np.uint8)


def stamp_of(index: int, rate_hz: float, start_s: int = 100) -> tuple[int, int]:
    ns = int(round(index * 1e9 / rate_hz))
    return start_s + ns // 1_000_000_000, ns % 1_000_000_000


def write_image_bag(path: Path, *, frames: int = 6, storage: str = "sqlite3", topic: str = "/camera/image_raw",
                    encoding: str = "rgb8", compressed: str | None = None, rate_hz: float = 30.0,
                    height: int = 16, width: int = 24, row_padding: int = 0, extra_string_topic: str | None = None,
                    corrupt_message: int | None = None) -> Path:
    """Write a ROS 2 bag (storage 'sqlite3' or 'mcap') or, with storage 'ros1', a ROS 1 .bag file.

    compressed: None for sensor_msgs/Image, or 'png' / 'jpeg' for sensor_msgs/CompressedImage.
    corrupt_message: index of an image message whose stored bytes are cut short (sqlite3 bags only).
    """
    if storage == "ros1":
        assert not (compressed or row_padding or extra_string_topic or corrupt_message is not None), \
            "ROS 1 test bags hold plain Image messages only"
        return _write_ros1_bag(path, frames, topic, encoding, rate_hz, height, width)
    with BagWriter(path, storage) as bag:
        if extra_string_topic:
            bag.write(extra_string_topic, bag.types["std_msgs/msg/String"](data="hello"), 1)
        for i in range(frames):
            sec, nanosec = stamp_of(i, rate_hz)
            stamp = sec * 1_000_000_000 + nanosec
            if compressed:
                bag.write_compressed_image(topic, frame_pixels(i, height, width), compressed, stamp,
                                           log_time_ns=stamp + RECEIVED_AFTER_NS)
            else:
                channels = CHANNELS[encoding]
                bag.write_image(topic, frame_pixels(i, height, width, channels), encoding, stamp,
                                log_time_ns=stamp + RECEIVED_AFTER_NS, step=width * channels + row_padding)
    if corrupt_message is not None:
        _cut_short(path, topic, corrupt_message)
    return path


def _cut_short(path: Path, topic: str, index: int) -> None:
    """Keep only 12 bytes of the index-th message on topic: deserialising it must fail."""
    database = next(path.glob("*.db3"), None)
    assert database is not None, "corrupt_message needs a sqlite3 bag"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        (topic_id,) = db.execute("SELECT id FROM topics WHERE name = ?", (topic,)).fetchone()
        (message_id,) = db.execute("SELECT id FROM messages WHERE topic_id = ? ORDER BY timestamp LIMIT 1 OFFSET ?",
                                   (topic_id, index)).fetchone()
        db.execute("UPDATE messages SET data = substr(data, 1, 12) WHERE id = ?", (message_id,))


def _write_ros1_bag(path: Path, frames: int, topic: str, encoding: str, rate_hz: float, height: int,
                    width: int) -> Path:
    store = get_typestore(Stores.ROS1_NOETIC)
    Header, Time, Image = (store.types[t] for t in ("std_msgs/msg/Header", "builtin_interfaces/msg/Time",
                                                     "sensor_msgs/msg/Image"))
    channels = CHANNELS[encoding]
    with Ros1Writer(path) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for i in range(frames):
            sec, nanosec = stamp_of(i, rate_hz)
            msg = Image(header=Header(seq=i, stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera"),
                        height=height, width=width, encoding=encoding, is_bigendian=0, step=width * channels,
                        data=frame_pixels(i, height, width, channels).reshape(-1))
            writer.write(connection, sec * 1_000_000_000 + nanosec + RECEIVED_AFTER_NS,
                         store.serialize_ros1(msg, "sensor_msgs/msg/Image"))
    return path
