"""The naive baseline: the perception node with every stage inside the subscription callback.

Same parameters, topics and outputs as ``ros_amf_perception``; only the pipelining is missing. The
runtime benchmark and the replay benchmark compare against it.
"""
from __future__ import annotations

from ros_amf.ros import topics
from ros_amf.ros.node import PerceptionNode, _spin


class NaivePerceptionNode(PerceptionNode):
    DEFAULT_NAME = topics.NODE_NAIVE
    PIPELINED = False


def main(argv: list[str] | None = None) -> int:
    return _spin(NaivePerceptionNode, argv)
