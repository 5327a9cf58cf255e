"""SIGTERM and SIGINT stop `ros-amf run` within 2 s, exit status 0, with the final stats logged and published.

A real `ros-amf run` process (tiny instance model, real rclpy / Fast DDS) gets camera frames from this
test until results come back; then the signal. The node's periodic stats are switched off (period one
hour), so the one PipelineStats message that arrives is the final one.
"""
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, is_dataclass

import numpy as np
import pytest
import yaml

from runtime_helpers import TINY_INSTANCE
from ros_helpers import spin_until, wait_for_subscribers

pytestmark = pytest.mark.ros

STOP_WITHIN_S = 2.0


def _params(tmp_path, namespace: str):
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    params = tmp_path / "graph.yaml"
    params.write_text(yaml.safe_dump({f"/{namespace}/ros_amf_instance": {"ros__parameters": {
        "input_topic": f"/{namespace}/image_raw", "camera_info_topic": "", "diagnostics_period_s": 3600.0,
        "instance": {"config": str(tmp_path / "inst.yaml")}}}}))
    return params


def _log(path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_ros_amf_run_in_time_with_final_stats(ros_context, tmp_path, signum):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ros_amf_msgs.msg import InstanceSegmentation, PipelineStats

    namespace = f"sig_{signum.name.lower()}_{os.getpid()}"
    out_log, err_log = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out_log.open("w") as out, err_log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ros_amf.apps.cli", "run", "--params",
                                 str(_params(tmp_path, namespace))], stdout=out, stderr=err)
    node = rclpy.create_node(f"signal_probe_{signum.name.lower()}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    results, stats = [], []
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(InstanceSegmentation, f"/{namespace}/instances", results.append, reliable)
    node.create_subscription(PipelineStats, f"/{namespace}/stats", stats.append, reliable)
    camera = node.create_publisher(Image, f"/{namespace}/image_raw", reliable)
    try:
        started = spin_until(executor, lambda: "started" in _log(out_log) or proc.poll() is not None, 180)
        assert started and proc.poll() is None, f"ros-amf run did not start:\n{_log(err_log)[-2000:]}"
        assert wait_for_subscribers(executor, camera, timeout_s=30)
        frame = Image(height=64, width=96, encoding="rgb8", step=96 * 3,
                      data=np.random.default_rng(0).integers(0, 255, 64 * 96 * 3, dtype=np.uint8).tobytes())
        deadline = time.monotonic() + 60
        while len(results) < 3 and time.monotonic() < deadline:
            camera.publish(frame)
            spin_until(executor, lambda: False, 0.1)
        assert len(results) >= 3, f"no results from ros-amf run:\n{_log(err_log)[-2000:]}"

        proc.send_signal(signum)
        sent = time.monotonic()
        while proc.poll() is None and time.monotonic() - sent < 30:
            executor.spin_once(timeout_sec=0.01)
        took = time.monotonic() - sent
        spin_until(executor, lambda: bool(stats), 2.0)   # a message already acknowledged may wait in our queue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown()
        node.destroy_node()

    log = _log(out_log) + _log(err_log)
    print(f"{signum.name}: ended {took:.2f} s after the signal; " + log[log.find("final stats"):].splitlines()[0])
    assert took < STOP_WITHIN_S, f"{signum.name}: the process took {took:.2f} s to end"
    assert proc.returncode == 0, log[-2000:]
    assert f"stopping ({signum.name}); final stats: " in log and f"stopped ({signum.name})" in log
    assert "Traceback" not in log
    assert len(stats) == 1, "the periodic stats are off: exactly the final message should arrive"
    final = stats[0]
    assert final.node_name == f"/{namespace}/ros_amf_instance"
    assert final.frames_out >= len(results) and final.frames_in >= final.frames_out
    # after the stop every frame that came in is accounted for: published, dropped, rejected or failed
    assert final.frames_in == final.frames_out + final.frames_dropped + final.frames_rejected + final.frames_failed
    assert f"final stats: {final.frames_in} frames in, {final.frames_out} published" in log
