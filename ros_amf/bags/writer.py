"""Write camera bags with ``rosbags`` (no ROS install, no rclpy): the counterpart of the reader.

``BagWriter(path, storage)`` writes a rosbag2 directory in sqlite3 or mcap storage with the ROS 2
Kilted message definitions. ``write_image`` stores a sensor_msgs/Image, ``write_compressed_image``
a sensor_msgs/CompressedImage (PNG or JPEG, encoded with OpenCV), ``write_camera_info`` the
CameraInfo of an ideal pinhole camera, and ``write`` any other message built from ``types``. A
topic's connection is added with its first message. The bag's receive time (log time) is the
header stamp unless given.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
DEFAULT_FRAME_ID = "camera"
_BAG_VERSION = 9  # metadata.yaml format version, the newest rosbags writes


class BagWriter:
    """Context manager over one new bag: ``with BagWriter(path, "mcap") as bag: bag.write_image(...)``."""

    def __init__(self, path: str | Path, storage: str = "sqlite3"):
        if storage not in STORAGES:
            raise ValueError(f"bag storage '{storage}' is unknown; use one of {', '.join(STORAGES)}.")
        self.path = Path(path)
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.types = self.typestore.types
        self._writer = Writer(self.path, version=_BAG_VERSION, storage_plugin=STORAGES[storage])
        self._connections: dict[str, object] = {}

    def open(self) -> BagWriter:
        self._writer.open()
        return self

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- messages ------------------------------------------------------------------------------
    def write(self, topic: str, message, log_time_ns: int) -> None:
        """Serialise ``message`` (a ``types[...]`` instance) onto ``topic``."""
        msgtype = message.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic '{topic}' of bag '{self.path}' carries {connection.msgtype}; write {msgtype} "
                             f"to another topic.")
        self._writer.write(connection, log_time_ns, self.typestore.serialize_cdr(message, msgtype))

    def _header(self, stamp_ns: int, frame_id: str = DEFAULT_FRAME_ID):
        Time = self.types["builtin_interfaces/msg/Time"]
        return self.types["std_msgs/msg/Header"](
            stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)

    def write_image(self, topic: str, pixels: np.ndarray, encoding: str, stamp_ns: int, *,
                    frame_id: str = DEFAULT_FRAME_ID, log_time_ns: int | None = None, step: int | None = None) -> None:
        """HxW or HxWxC ``pixels`` already in ``encoding``'s channel order; ``step`` > the row size pads
        each row with zeros, as some camera drivers do."""
        height, width = pixels.shape[:2]
        rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
        step = rows.shape[1] if step is None else step
        if step < rows.shape[1]:
            raise ValueError(f"step {step} is shorter than a row of {rows.shape[1]} bytes; pass at least that.")
        if step > rows.shape[1]:
            rows = np.pad(rows, ((0, 0), (0, step - rows.shape[1])))
        message = self.types["sensor_msgs/msg/Image"](
            header=self._header(stamp_ns, frame_id), height=height, width=width, encoding=encoding, is_bigendian=0,
            step=step, data=rows.reshape(-1))
        self.write(topic, message, stamp_ns if log_time_ns is None else log_time_ns)

    def write_compressed_image(self, topic: str, pixels: np.ndarray, image_format: str, stamp_ns: int, *,
                               frame_id: str = DEFAULT_FRAME_ID, log_time_ns: int | None = None) -> None:
        """HxW or HxWx3 BGR ``pixels`` (OpenCV's order) encoded as ``image_format``: 'png' or 'jpeg'."""
        ok, buffer = cv2.imencode("." + image_format, pixels)
        if not ok:
            raise ValueError(f"OpenCV cannot encode a {pixels.shape} {pixels.dtype} image as '{image_format}'; "
                             f"use 'png' or 'jpeg' with 8-bit pixels.")
        message = self.types["sensor_msgs/msg/CompressedImage"](
            header=self._header(stamp_ns, frame_id), format=image_format, data=buffer.reshape(-1))
        self.write(topic, message, stamp_ns if log_time_ns is None else log_time_ns)

    def write_camera_info(self, topic: str, width: int, height: int, focal: float, stamp_ns: int, *,
                          frame_id: str = DEFAULT_FRAME_ID, log_time_ns: int | None = None) -> None:
        """An ideal pinhole camera: square pixels, principal point at the image centre, no distortion."""
        cx, cy = width / 2.0, height / 2.0
        message = self.types["sensor_msgs/msg/CameraInfo"](
            header=self._header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
            r=np.eye(3).reshape(-1), p=np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
            binning_x=0, binning_y=0,
            roi=self.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                               do_rectify=False))
        self.write(topic, message, stamp_ns if log_time_ns is None else log_time_ns)
