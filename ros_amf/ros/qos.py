"""QoS of the perception nodes: presets by name, rclpy's standard overrides, and incompatibility watch.

Outputs are reliable by default (keep-last, small depth) so that default subscribers (rviz2,
``ros2 topic echo``) hear them; inputs use the sensor-data profile a camera driver publishes with.
Every topic's profile can be overridden with rclpy's ``qos_overrides.<topic>.<publisher|subscription>
.<policy>`` parameters (QoSOverridingOptions); a peer whose QoS cannot match is counted per topic
(rclpy's incompatible-QoS events) and shown in /diagnostics.
"""
from __future__ import annotations

import threading
from collections import Counter

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.qos_overriding_options import QoSOverridingOptions

NAMES = ("sensor_data", "reliable")
OUTPUT_DEPTH = 5     # outputs: a slow reliable subscriber gets the latest few results, not a backlog

def latched() -> QoSProfile:
    """For topics that publish once and must reach late subscribers (label tables). A new profile each call:
    rclpy writes a topic's qos_overrides into the very profile it is given, so profiles are never shared."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_from_name(name: str, setting: str = "QoS", depth: int | None = None) -> QoSProfile:
    """'sensor_data' (best effort, depth 5, what a camera driver uses) or 'reliable' (depth 10, or ``depth``).

    On a loaded machine best effort loses fragments of large images in DDS, which looks like drops of
    the graph; 'reliable' lets a node's own frame-dropping policy decide. ``setting`` names where the
    name came from (e.g. "parameter input_qos"), for the error message.
    """
    if name == "sensor_data":
        profile = QoSProfile(history=qos_profile_sensor_data.history, depth=qos_profile_sensor_data.depth,
                             reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
    elif name == "reliable":
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    else:
        raise ValueError(f"{setting} = '{name}' is not a QoS name; use 'sensor_data' or 'reliable'.")
    if depth is not None:
        profile.depth = depth
    return profile


def overridable() -> QoSOverridingOptions:
    """History, depth, reliability and durability of a topic settable by ``qos_overrides`` parameters
    (rclpy's default set leaves durability out)."""
    return QoSOverridingOptions([QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY,
                                 QoSPolicyKind.DURABILITY])


def matching_subscription_qos(publishers_best_effort: bool, depth: int) -> QoSProfile:
    """A subscription that connects to the publishers seen: a reliable one would not match a best-effort one."""
    reliability = ReliabilityPolicy.BEST_EFFORT if publishers_best_effort else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)


class IncompatibleQoS:
    """Counts peers that could not connect because of QoS, per topic and policy (rclpy's events)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()    # "topic: policy" -> events

    def _record(self, topic: str, side: str, info) -> None:
        try:
            policy = QoSPolicyKind(int(info.last_policy_kind)).name.lower()
        except (TypeError, ValueError):
            policy = str(info.last_policy_kind)
        with self._lock:
            self.counts[f"{topic} ({side}, {policy})"] += 1

    def publisher_events(self, topic: str) -> PublisherEventCallbacks:
        return PublisherEventCallbacks(incompatible_qos=lambda info: self._record(topic, "a subscriber", info))

    def subscription_events(self, topic: str) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(incompatible_qos=lambda info: self._record(topic, "a publisher", info))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
