"""The naive baseline: the perception node with every stage inside the subscription callback.

Same parameters, topics and outputs as ``ros_amf_perception``; only the pipelining is missing. The
runtime benchmark and the replay benchmark compare against it.
"""
from __future__ import annotations

from ros_amf.ros.node import PerceptionNode, _spin

NODE_NAME = "ros_amf_naive"


class NaivePerceptionNode(PerceptionNode):
    DEFAULT_NAME = NODE_NAME
    PIPELINED = False


def main(argv: list[str] | None = None) -> int:
    return _spin(NaivePerceptionNode, argv)
