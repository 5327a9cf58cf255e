"""Which camera frames reach the engine: lazy mode, the rate cap and decoding, each refusal counted.

One camera's gate; the one-camera node holds one, the multi-camera node one per camera. Nothing is
refused silently: an idle (nobody listening) or rate-capped frame is counted on the node counters, an
undecodable one is counted as rejected on the pipeline stats and logged (throttled).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ros_amf.contract.image_messages import BadImage
from ros_amf.ros.diagnostics import NodeCounters
from ros_amf.runtime.stats import PipelineCounters


class FrameAdmission:
    def __init__(self, counters: NodeCounters, stats: PipelineCounters):
        self.counters, self.stats = counters, stats
        self.last_accepted = 0.0

    def admit(self, msg: Any, decode: Callable, params: dict, listening: bool, topic: str,
              logger) -> tuple[np.ndarray, str] | None:
        """The frame's pixels and encoding (``decode``: zero-copy or one conversion), or None when it is
        not for the engine (each case counted)."""
        self.counters.image_arrived()
        if params["lazy"] and not listening:
            self.counters.add("idle")
            return None
        max_rate = float(params["max_rate_hz"])
        now = time.monotonic()
        if max_rate > 0 and now - self.last_accepted < 1.0 / max_rate:
            self.counters.add("rate_capped")
            return None
        self.last_accepted = now
        try:
            return decode(msg, int(params["max_image_pixels"]))
        except BadImage as exc:
            self.stats.frame_in()
            self.stats.reject(exc.reason)
            logger.warning(f"rejected image on {topic}: {exc}", throttle_duration_sec=5.0)
            return None
