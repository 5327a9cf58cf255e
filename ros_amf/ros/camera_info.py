"""Pairing each output with the camera's CameraInfo of the same stamp (image_pipeline's exact sync).

The recent infos are kept by stamp. An output whose stamp has no info is a miss: it is counted (shown
in /diagnostics) and, so that cameras publishing one unstamped info still work, gets the latest info.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from sensor_msgs.msg import CameraInfo

from ros_amf.ros.diagnostics import NodeCounters

KEEP = 64   # infos kept: a few seconds of a camera, more than the frames inside the pipeline


class CameraInfoCache:
    def __init__(self, counters: NodeCounters):
        self.counters = counters
        self._infos: OrderedDict[tuple[int, int], CameraInfo] = OrderedDict()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._infos)

    def clear(self) -> None:
        with self._lock:
            self._infos.clear()

    def add(self, msg: CameraInfo) -> None:
        self.counters.add("camera_infos_received")
        with self._lock:
            self._infos[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            while len(self._infos) > KEEP:
                self._infos.popitem(last=False)

    def for_output(self, header) -> CameraInfo | None:
        """The info of ``header``'s stamp re-stamped with ``header`` (or the latest one, counted as a miss)."""
        with self._lock:
            info = self._infos.get((header.stamp.sec, header.stamp.nanosec))
            if info is None:
                self.counters.add("camera_info_misses")
                if self._infos:
                    info = next(reversed(self._infos.values()))
        if info is not None:
            info.header = header
        return info
