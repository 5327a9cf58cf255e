"""Small helpers for tests that run a real rclpy graph."""
from __future__ import annotations

import time
from typing import Callable


def spin_until(executor, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Spin ``executor`` until ``condition()`` is true or ``timeout_s`` passes; return the condition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()


def wait_for_subscribers(executor, publisher, count: int = 1, timeout_s: float = 10.0) -> bool:
    """Discovery takes a moment even on loopback: wait until the publisher sees its subscribers."""
    return spin_until(executor, lambda: publisher.get_subscription_count() >= count, timeout_s)


def start_tiny_semantic_graph(folder, *params: str):
    """A real ros_amf_semantic node (tiny random-weight model, 19 Cityscapes classes) in its own process;
    the caller stops it (``graph.stop()``)."""
    import yaml

    from runtime_helpers import TINY_SEMANTIC

    from ros_amf.replay.harness import GraphProcess, node_command
    config = folder / "semantic_tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_SEMANTIC, "num_classes": 19}))
    command = node_command("semantic", "ros_amf_semantic",
                           [f"semantic.config:={config}", "torch_threads:=1", "camera_info_topic:=''", *params], None)
    return GraphProcess("semantic", command, str(folder / "node.log")).start()


def close_probed_node(graph) -> None:
    """Shut down a test graph made of a node under test, its probe node and their one executor."""
    graph.executor.shutdown()
    graph.node.destroy_node()
    graph.probe.destroy_node()


def made_and_closed(make_one):
    """For a fixture: yields a ``make(*args, **params)`` that builds graphs with ``make_one``, and closes
    every graph made once the test ends (``yield from made_and_closed(...)``)."""
    made = []

    def make(*args, **params):
        made.append(make_one(*args, **params))
        return made[-1]
    yield make
    for graph in made:
        graph.close()
