"""The node kinds, written once: kind -> node name, node class, console script, tasks.

The launcher (``ros-amf run``), the replay harness, the benchmarks, setup.py's console scripts
(checked by a test) and the launch files (checked by a test) all read this table. A node in a
parameter file is of the kind whose node name it carries; the namespace tells cameras apart.
No rclpy here: the class is imported only when asked for.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ros_amf.ros import topics


@dataclass(frozen=True)
class NodeKind:
    kind: str
    node_name: str         # default node name, and the key of the node's section in a parameter file
    executable: str        # console script in setup.py; launch files start it with Node(executable=...)
    entry_point: str       # "module:function" of that console script
    node_class_path: str   # "module:Class"
    tasks: tuple[str, ...]
    multi_camera: bool = False   # serves the cameras of its 'cameras' parameter (outputs under each camera)

    def node_class(self) -> type:
        module, name = self.node_class_path.split(":")
        return getattr(importlib.import_module(module), name)

    def output_topics(self, node_name: str | None = None) -> list[str]:
        """The matched outputs of a node of this kind as the replay harness starts it: one per task
        (instances, label map), under ``/<node name>/`` (ros_amf.replay.harness.node_command remaps
        the node's relative outputs there, so graphs started one after another never share topics)."""
        base = "/" + (node_name or self.node_name).strip("/")
        names = {"instance": topics.INSTANCES, "semantic": topics.LABELS}
        return [f"{base}/{names[task]}" for task in self.tasks]


KINDS: dict[str, NodeKind] = {k.kind: k for k in (
    NodeKind("perception", topics.NODE_PERCEPTION, "perception_node", "ros_amf.ros.node:main_perception",
             "ros_amf.ros.node:PerceptionNode", ("instance", "semantic")),
    NodeKind("instance", topics.NODE_INSTANCE, "instance_node", "ros_amf.ros.node:main_instance",
             "ros_amf.ros.node:InstanceSegmentationNode", ("instance",)),
    NodeKind("semantic", topics.NODE_SEMANTIC, "semantic_node", "ros_amf.ros.node:main_semantic",
             "ros_amf.ros.node:SemanticSegmentationNode", ("semantic",)),
    # every stage inside the subscription callback: the benchmarks' baseline, runs both models
    NodeKind("naive", topics.NODE_NAIVE, "naive_node", "ros_amf.ros.naive_node:main",
             "ros_amf.ros.naive_node:NaivePerceptionNode", ("instance", "semantic")),
    # one model copy for N cameras, their latest frames batched into one forward
    NodeKind("multi_camera", topics.NODE_MULTI_CAMERA, "multi_camera_node", "ros_amf.ros.multi_camera_node:main",
             "ros_amf.ros.multi_camera_node:MultiCameraNode", ("instance", "semantic"), multi_camera=True),
)}


def kind_of_node(node_name: str) -> NodeKind:
    """The kind a node name in a parameter file means (``/ns/ros_amf_semantic`` -> semantic)."""
    base = node_name.rstrip("/").rsplit("/", 1)[-1]
    for kind in KINDS.values():
        if kind.node_name == base:
            return kind
    raise ValueError(f"node name '{base}' is not one of the node kinds; name it "
                     f"{', '.join(k.node_name for k in KINDS.values())} (put it in a namespace to run several).")


def kind_of_executable(executable: str) -> NodeKind:
    for kind in KINDS.values():
        if kind.executable == executable:
            return kind
    raise ValueError(f"executable '{executable}' is not a ros_amf node; use one of "
                     f"{', '.join(k.executable for k in KINDS.values())}.")
