#!/usr/bin/env python
"""What publishing one frame's results costs through rclpy at 1920x1080, by output_scale and with or without
the second copy of the instance-id image (issue 20).

One synthetic 1920x1080 street frame goes through the shipped models (torch) once per output_scale (full:
maps at the camera's 1920x1080; network: instance 512x288, labels 640x360). Then the node's own publishing
code (ros_amf.ros.camera_outputs.CameraOutputs.publish: message building, the copy into the message and
rclpy's serialisation) publishes those results --repeats times on real topics, with a subscriber in a
second process listening to instances, labels and detections, and, for the "duplicate" rows, also to
instance_ids (the node then publishes the id image twice, as every frame did before: once inside
instances, once on instance_ids). The overlay rows add a subscriber on overlay (an rgb8 image drawn and
published per frame). Times are the publishing thread's wall time per frame, median of the repeats.

    .venv/bin/python scripts/bench_publish_cost.py --out out/bench/publish_cost.json

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)

NAMESPACE = "/publish_cost"


def listen(topics: list[str], seconds: float) -> int:
    """The subscriber process: reliable subscriptions on ``topics`` (kinds by name) for ``seconds``."""
    import rclpy
    from sensor_msgs.msg import Image
    from ros_amf_msgs.msg import InstanceSegmentation
    from vision_msgs.msg import Detection2DArray
    kinds = {"instances": InstanceSegmentation, "detections": Detection2DArray}
    rclpy.init()
    node = rclpy.create_node("publish_cost_listener")
    counts = {t: 0 for t in topics}
    for topic in topics:
        node.create_subscription(kinds.get(topic, Image), f"{NAMESPACE}/{topic}",
                                 lambda _m, t=topic: counts.__setitem__(t, counts[t] + 1), 5)
    end = time.monotonic() + seconds
    from rclpy.executors import ExternalShutdownException
    try:
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (ExternalShutdownException, KeyboardInterrupt):
        return 0   # the measuring process stops us with SIGTERM when its rows are done
    print(json.dumps(counts), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def results_at(scale: str, image):
    import torch
    from ros_amf.runtime.loading import load_model
    from ros_amf.runtime.pipeline import Engine, EngineConfig
    from ros_amf.contract import shipped
    models = {t: load_model(t, ROOT / files.config, ROOT / files.checkpoint, device="cpu")
              for t, files in shipped.DEFAULTS.items()}
    torch.set_num_threads(os.cpu_count() or 1)
    engine = Engine(EngineConfig(backend="torch", output_scale=scale, score_threshold=0.3), models["instance"],
                    models["semantic"])
    from std_msgs.msg import Header
    result = engine.process(image, "rgb8", tag=Header(frame_id="camera"), keep_image=True)
    assert result.error is None, result.error
    return result, models


def measure(node, result, models, topics: list[str], repeats: int) -> dict:
    from ros_amf.ros.camera_outputs import CameraOutputs
    params = {"output_qos": "reliable", "score_threshold": 0.3, "publish_overlay": True, "overlay_alpha": 0.5,
              "overlay_annotations": True}
    made = []

    def make(kind, topic, qos):
        made.append(node.create_publisher(kind, f"{NAMESPACE}/{topic}", qos))
        return made[-1]
    outputs = CameraOutputs(make, models, params)
    listener = subprocess.Popen([sys.executable, __file__, "--listen", ",".join(topics), "--seconds", "600"],
                                stdout=subprocess.PIPE, text=True)
    try:
        wanted = {t: getattr(outputs, t) for t in topics}
        deadline = time.monotonic() + 30
        while any(p.get_subscription_count() == 0 for p in wanted.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the listener process did not subscribe within 30 s")
            time.sleep(0.05)
        outputs.publish(result)   # warm-up: first-use allocations
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            outputs.publish(result)
            times.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.05)      # let the listener take the frame: we time the publisher, not a full queue
    finally:
        listener.terminate()
        listener.wait(10)
        for publisher in made:
            node.destroy_publisher(publisher)
    return {"ms_median": statistics.median(times), "ms_p90": sorted(times)[int(0.9 * (len(times) - 1))],
            "repeats": repeats}


def message_mb(result, duplicate: bool, overlay: bool) -> float:
    ids = result.instances.ids.nbytes
    labels = result.semantic.labels.nbytes
    over = 0
    if overlay:
        grid = max((result.instances.ids.shape, result.semantic.labels.shape), key=lambda hw: hw[0] * hw[1])
        over = grid[0] * grid[1] * 3
    return (ids * (2 if duplicate else 1) + labels + over) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="out/bench/publish_cost.json")
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:
        return listen(args.listen.split(","), args.seconds)
    import rclpy
    from ros_amf.data.synthetic.render import render_still
    image = render_still(5, 0, width=1920, height=1080).image
    rclpy.init()
    node = rclpy.create_node("publish_cost")
    rows = []
    try:
        for scale in ("full", "network"):
            result, models = results_at(scale, image)
            for label, topics, duplicate, overlay in (
                    ("id image twice (before)", ["instances", "instance_ids", "labels", "detections"], True, False),
                    ("id image once", ["instances", "labels", "detections"], False, False),
                    ("id image once + overlay", ["instances", "labels", "detections", "overlay"], False, True)):
                row = {"output_scale": scale, "variant": label, "topics": topics,
                       "instance_ids_hw": list(result.instances.ids.shape),
                       "labels_hw": list(result.semantic.labels.shape), "instances": len(result.instances.classes),
                       "image_mb_per_frame": message_mb(result, duplicate, overlay),
                       **measure(node, result, models, topics, args.repeats)}
                rows.append(row)
                print(f"{scale:8s} {label:26s} {row['ms_median']:7.2f} ms  {row['image_mb_per_frame']:.2f} MB",
                      flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    load = os.getloadavg()
    print(f"\n1920x1080 frame, {rows[0]['instances']} instances; median of {args.repeats}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| output_scale | published | id image / labels | image MB/frame | ms/frame (median) | ms p90 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ids, labels = row["instance_ids_hw"], row["labels_hw"]
        print(f"| {row['output_scale']} | {row['variant']} | {ids[1]}x{ids[0]} / {labels[1]}x{labels[0]} | "
              f"{row['image_mb_per_frame']:.2f} | {row['ms_median']:.2f} | {row['ms_p90']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "load_average": load, "repeats": args.repeats}, indent=2))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
