"""Start the node graph a launch file would start, in one process (``ros-amf run``, ros_amf.apps.run).

``ros2 launch`` (launch, launch_ros) cannot be installed here, so this reads the same ROS 2 parameter
file the launch files pass to their nodes. Each top-level key names one node (``/namespace/name`` or
``name``); its name says its kind (ros_amf.ros.kinds: ``ros_amf_perception``, ``ros_amf_instance``,
``ros_amf_semantic``, ``ros_amf_naive``), the namespace tells cameras apart. ``/**`` entries apply
to every node. All nodes share one MultiThreadedExecutor; SIGINT and SIGTERM stop them cleanly.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ros_amf.ros.kinds import KINDS, kind_of_node


class LaunchError(ValueError):
    """A parameter file that cannot be started; the message names the file and the key."""


class GraphStartError(RuntimeError):
    """A node of the graph raised while starting (a missing checkpoint, a bad parameter value)."""


@dataclass
class PlannedNode:
    namespace: str
    name: str
    kind: str
    parameters: dict[str, Any]


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mappings -> dotted ROS parameter names (``instance: {config: x}`` -> ``instance.config``)."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def plan(params_file: str | Path) -> list[PlannedNode]:
    path = Path(params_file)
    if not path.is_file():
        raise LaunchError(f"parameter file '{path}' does not exist; pass one of launch/*.yaml.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise LaunchError(f"parameter file '{path}' must map node names to 'ros__parameters'.")
    shared = flatten((data.get("/**") or {}).get("ros__parameters", {}))
    nodes = []
    for key, entry in data.items():
        if key == "/**":
            continue
        if not isinstance(entry, dict) or "ros__parameters" not in entry:
            raise LaunchError(f"parameter file '{path}': entry '{key}' has no 'ros__parameters' mapping; add it.")
        full = "/" + str(key).strip("/")
        namespace, _, name = full.rpartition("/")
        try:
            kind = kind_of_node(name).kind
        except ValueError as err:
            raise LaunchError(f"parameter file '{path}', entry '{key}': {err}") from None
        nodes.append(PlannedNode(namespace or "/", name, kind, {**shared, **flatten(entry["ros__parameters"])}))
    if not nodes:
        raise LaunchError(f"parameter file '{path}' names no node; add e.g. 'ros_amf_perception: ros__parameters: ...'.")
    return nodes


def start(planned: list[PlannedNode], context=None) -> list:
    """Create the nodes (all or nothing: on any error the ones already made are destroyed)."""
    from rclpy.parameter import Parameter
    nodes = []
    try:
        for item in planned:
            overrides = [Parameter(k, value=v) for k, v in item.parameters.items()]
            nodes.append(KINDS[item.kind].node_class()(item.name, namespace=item.namespace, context=context,
                                                       parameter_overrides=overrides))
    except Exception:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def spin(planned: list[PlannedNode], duration_s: float = 0.0,
         on_started: Callable[[list[str]], None] = lambda names: None) -> str:
    """Start the planned nodes and spin them until SIGINT / SIGTERM, or for ``duration_s`` seconds if > 0.

    ``on_started`` gets the nodes' full names once all of them run; GraphStartError if one did not start.
    On the way out every node logs and publishes its final stats (ros_amf.ros.graceful_stop). Returns
    why it stopped: the signal's name, or 'duration'.
    """
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor

    from ros_amf.ros.graceful_stop import spin_until_stopped
    context = Context()
    rclpy.init(context=context)   # a context of our own: rclpy installs no signal handlers, graceful_stop does
    try:
        nodes = start(planned, context)
    except Exception as exc:
        rclpy.try_shutdown(context=context)
        raise GraphStartError(str(exc)) from exc
    executor = MultiThreadedExecutor(num_threads=max(2, 2 * len(nodes)), context=context)
    for node in nodes:
        executor.add_node(node)
    try:
        return spin_until_stopped(executor, nodes, duration_s,
                                  on_started=lambda: on_started([n.get_fully_qualified_name() for n in nodes]))
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
