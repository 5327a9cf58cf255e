"""QoS profiles by name: the nodes' parameters and the replay harness spell them the same way."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

NAMES = ("sensor_data", "reliable")

# for topics that publish once and must reach late subscribers (label tables)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_from_name(name: str, setting: str = "QoS") -> QoSProfile:
    """'sensor_data' (best effort, depth 5, what a camera driver uses) or 'reliable' (depth 10).

    On a loaded machine best effort loses fragments of large images in DDS, which looks like drops of
    the graph; 'reliable' lets a node's own frame-dropping policy decide. ``setting`` names where the
    name came from (e.g. "parameter input_qos"), for the error message.
    """
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"{setting} = '{name}' is not a QoS name; use 'sensor_data' or 'reliable'.")


def matching_subscription_qos(publishers_best_effort: bool, depth: int) -> QoSProfile:
    """A subscription that connects to the publishers seen: a reliable one would not match a best-effort one."""
    reliability = ReliabilityPolicy.BEST_EFFORT if publishers_best_effort else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
