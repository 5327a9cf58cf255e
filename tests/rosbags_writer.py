"""Test helper: write small camera bags with the plain ``rosbags`` writers, as another tool would.

Used by tests/test_bag_*.py and tests/test_replay_*.py; deliberately independent of ros_amf so
that reading these bags proves a foreign bag replays without any conversion step.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}


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
    corrupt_message: index of a message whose serialized bytes are replaced by garbage.
    """
    ros1 = storage == "ros1"
    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    Msg = store.types[msgtype]
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    if ros1:
        writer = Ros1Writer(path)
    else:
        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    with writer:
        connection = writer.add_connection(topic, msgtype, typestore=store)
        if extra_string_topic:
            text = writer.add_connection(extra_string_topic, "std_msgs/msg/String", typestore=store)
            writer.write(text, 1, serialize(store.types["std_msgs/msg/String"](data="hello"), "std_msgs/msg/String"))
        for i in range(frames):
            sec, nanosec = stamp_of(i, rate_hz)
            header = (Header(seq=i, stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera") if ros1 else
                      Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera"))
            channels = CHANNELS[encoding]
            pixels = frame_pixels(i, height, width, 3 if compressed else channels)
            if compressed:
                ok, buffer = cv2.imencode("." + compressed, pixels)
                assert ok
                msg = Msg(header=header, format=compressed, data=buffer.reshape(-1))
            else:
                step = width * channels + row_padding
                rows = np.zeros((height, step), np.uint8)
                rows[:, : width * channels] = pixels.reshape(height, -1)
                msg = Msg(header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
                          data=rows.reshape(-1))
            data = serialize(msg, msgtype)
            if corrupt_message == i:
                data = data[:12]  # a message cut short: deserialisation must fail
            log_time = (sec * 1_000_000_000 + nanosec) + 1_000_000  # recorder received it 1 ms after the stamp
            writer.write(connection, log_time, data)
    return path
