"""``ros-amf run --params launch/X.yaml``: start the node graph a launch file would start, in one process.

``ros2 launch`` (launch, launch_ros) cannot be installed here, so this reads the same ROS 2 parameter
file the launch files pass to their nodes. Each top-level key names one node (``/namespace/name`` or
``name``); the node class follows from the name (``*instance*``, ``*semantic*``, otherwise the
combined perception node), exactly like the executables the launch files pick. ``/**`` entries apply
to every node. All nodes share one MultiThreadedExecutor.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# executable name in launch files (setup.py console_scripts) -> node kind
EXECUTABLES = {"perception_node": "perception", "instance_node": "instance", "semantic_node": "semantic",
               "naive_node": "naive"}
# the console_scripts lines that install those executables (lib/ros_amf/<name>, where ros2 launch looks)
ENTRY_POINTS = {"perception_node": "ros_amf.ros.node:main_perception",
                "instance_node": "ros_amf.ros.node:main_instance",
                "semantic_node": "ros_amf.ros.node:main_semantic",
                "naive_node": "ros_amf.ros.naive_node:main"}


class LaunchError(ValueError):
    """A parameter file that cannot be started; the message names the file and the key."""


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
    from ros_amf.ros.node import node_kind   # imported here: node_kind is pure, but keep one source of truth
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
        nodes.append(PlannedNode(namespace or "/", name, node_kind(name),
                                 {**shared, **flatten(entry["ros__parameters"])}))
    if not nodes:
        raise LaunchError(f"parameter file '{path}' names no node; add e.g. 'ros_amf_perception: ros__parameters: ...'.")
    return nodes


def start(planned: list[PlannedNode], context=None) -> list:
    """Create the nodes (all or nothing: on any error the ones already made are destroyed)."""
    from rclpy.parameter import Parameter
    from ros_amf.ros.naive_node import NaivePerceptionNode
    from ros_amf.ros.node import NODE_CLASSES
    classes = {**NODE_CLASSES, "naive": NaivePerceptionNode}
    nodes = []
    try:
        for item in planned:
            overrides = [Parameter(k, value=v) for k, v in item.parameters.items()]
            nodes.append(classes[item.kind](item.name, namespace=item.namespace, context=context,
                                            parameter_overrides=overrides))
    except Exception:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf run", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="ROS 2 parameter file, e.g. launch/perception.yaml")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        planned = plan(args.params)
    except LaunchError as exc:
        print(f"ros-amf run: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    try:
        nodes = start(planned, context)
    except Exception as exc:
        print(f"ros-amf run: the node graph from '{args.params}' did not start: {exc}", file=sys.stderr)
        rclpy.try_shutdown(context=context)
        return 1
    executor = MultiThreadedExecutor(num_threads=max(2, 2 * len(nodes)), context=context)
    for node in nodes:
        executor.add_node(node)
    print(f"ros-amf run: started {', '.join(n.get_fully_qualified_name() for n in nodes)}", flush=True)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    try:
        while deadline is None or time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0
