"""A replay session: a bag's camera frames through one or more node graphs, into one report.

``ros-amf replay`` builds its session from its flags, ``ros-amf demo`` from its preset; both then
run the same code: graphs described here (started as child processes or already running), each
benchmarked by ros_amf.replay.benchmark over the rclpy harness.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from ros_amf.bags.damage import DamageReport
from ros_amf.bags.reader import BagImage, BagReader, TopicInfo
from ros_amf.replay.benchmark import BenchmarkOptions, GraphSpec, run_graph
from ros_amf.replay.harness import GraphProcess, node_command
from ros_amf.replay.report import new_report
from ros_amf.replay.schedule import GraphError
from ros_amf.ros.kinds import KINDS
from ros_amf.ros.params import PARAMETERS, resolve_path


def read_frames(bag_path: Path, topic: str | None = None, limit: int | None = None) -> tuple[TopicInfo, list[BagImage]]:
    """The image topic (``topic`` or the bag's camera topic) and its frames."""
    with BagReader(bag_path) as bag:
        info = bag.resolve_image_topic(topic)
        frames = list(bag.images(info.name, limit=limit))
    if not frames:
        raise ValueError(f"topic '{info.name}' of bag '{bag_path}' has no frames to replay.")
    return info, frames


def read_readable_frames(bag_path: Path, topic: str | None = None,
                         limit: int | None = None) -> tuple[TopicInfo, list[BagImage], DamageReport]:
    """Like ``read_frames``, but a damaged bag gives every readable frame and the account of what it skipped."""
    with BagReader(bag_path, skip_damaged=True) as bag:
        info = bag.resolve_image_topic(topic)
        frames = list(bag.images(info.name, limit=limit))
        damage = bag.damage
    if not frames:
        raise ValueError(f"topic '{info.name}' of bag '{bag_path}' has no readable frames to replay "
                         f"({damage.summary()})")
    return info, frames, damage


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files in name order (a bag directory)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``NAME:=VALUE`` items -> {NAME: VALUE}; the value stays YAML text, as the node will parse it."""
    params = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"parameter '{item}' is not NAME:=VALUE (e.g. instance.checkpoint:=models/x.pt).")
        name, value = item.split(":=", 1)
        params[name] = value
    return params


def params_file_for(node_name: str, params_file: str | None, out_dir: Path) -> str | None:
    """The parameter file for one node: sections are keyed by node name, so the naive node (another
    name) gets a copy of the perception node's section, written next to the logs."""
    if not params_file or params_file == "none":
        return None
    path = Path(resolve_path(params_file))
    if not path.is_file():
        raise ValueError(f"parameter file '{params_file}' does not exist; pass a ROS 2 parameter YAML or "
                         f"--params-file none.")
    sections = yaml.safe_load(path.read_text()) or {}
    perception = KINDS["perception"].node_name
    if node_name in sections or "/**" in sections or perception not in sections:
        return str(path)
    # a deep copy: YAML anchors/aliases for a shared dict are not accepted by rcl's parameter parser
    section = copy.deepcopy(sections[perception])
    target = out_dir / f"{node_name}.params.yaml"
    target.write_text(yaml.safe_dump({**sections, node_name: section}))
    return str(target)


def file_parameters(params_file: str | None, node_name: str) -> dict:
    """The parameters a node reads from its file, flattened to dotted names (for the report's metadata)."""
    if not params_file:
        return {}
    sections = yaml.safe_load(Path(params_file).read_text()) or {}
    section = sections.get(node_name) or sections.get("/**") or {}

    def flatten(prefix: str, value) -> dict:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in flatten(f"{prefix}{key}.", sub).items()}
        return {prefix[:-1]: value}

    return flatten("", section.get("ros__parameters", {}))


def _plain(value) -> str:
    """A parameter value as the node sees it: -p values are YAML ('' is the empty string)."""
    parsed = yaml.safe_load(value) if isinstance(value, str) and value else value
    return "" if parsed is None else str(parsed)


def model_metadata(params: Mapping[str, object], kind: str) -> dict:
    """Model configs and checkpoint hashes named by the node parameters (what the numbers belong to)."""
    defaults = {spec.name: spec.default for spec in PARAMETERS}
    tasks = KINDS[kind].tasks
    meta: dict = {"parameters": dict(params)}
    for task in tasks:
        config = resolve_path(_plain(params.get(f"{task}.config", defaults.get(f"{task}.config", ""))))
        checkpoint = resolve_path(_plain(params.get(f"{task}.checkpoint", defaults.get(f"{task}.checkpoint", ""))))
        entry = {"config": config, "checkpoint": checkpoint or None}
        if config and Path(config).is_file():
            entry["config_text"] = Path(config).read_text()
        if checkpoint and Path(checkpoint).is_file():
            entry["checkpoint_sha256"] = file_sha256(Path(checkpoint))
        elif not checkpoint:
            entry["note"] = "no checkpoint: random weights (plumbing only)"
        meta[task] = entry
    meta["checkpoint_sha256"] = " ".join(meta[t].get("checkpoint_sha256", "-") for t in tasks)
    return meta


def started_graph(name: str, kind: str, params: Mapping[str, str], params_file: str | None, log_dir: Path,
                  output_topics: Sequence[str] = ()) -> GraphSpec:
    """A node of ``kind`` that the session starts (and stops); ``params`` are NAME -> VALUE as YAML text."""
    node_name = KINDS[kind].node_name
    params_file = params_file_for(node_name, params_file, log_dir)
    command = node_command(kind, node_name, [f"{k}:={v}" for k, v in params.items()], params_file)
    effective = {**file_parameters(params_file, node_name), **{k: str(v) for k, v in params.items()}}
    return GraphSpec(name, list(output_topics) or KINDS[kind].output_topics(),
                     process=GraphProcess(name, command, str(log_dir / f"{name}.log")),
                     model=model_metadata(effective, kind))


def running_graph(kind: str, params: Mapping[str, str], output_topics: Sequence[str] = (),
                  pid: int | None = None, input_topic: str = "/camera/image_raw") -> GraphSpec:
    """A graph somebody else started; ``pid`` (if known) lets the session sample its CPU and memory.

    Without ``output_topics``, the outputs are looked for beside the input, in its namespace: a node started
    from launch/perception.yaml reads /camera/image_raw and writes /camera/instances and /camera/labels
    (its topic names are relative)."""
    namespace = input_topic.rstrip("/").rsplit("/", 1)[0]
    beside_input = [namespace + topic[topic.rindex("/"):] for topic in KINDS[kind].output_topics()]
    return GraphSpec("running", list(output_topics) or beside_input, pid=pid,
                     model=model_metadata(params, kind))


def run_session(bag_path: Path, topic: TopicInfo, frames: Sequence[BagImage], specs: Sequence[GraphSpec],
                options: BenchmarkOptions, ground_truth=None, parameters: dict | None = None,
                on_error: Callable[[str], None] = print, damage: DamageReport | None = None) -> tuple[dict, int]:
    """Benchmark every graph on the frames, one after the other; (report, number of graphs that failed).

    A graph that fails to start is reported, not raised, so the other graph's results are kept.
    ``damage``: what reading a damaged bag skipped, kept in the report's bag metadata.
    """
    report = new_report({
        "bag": {"path": str(bag_path), "sha256": file_sha256(bag_path), "topic": topic.name,
                "msgtype": topic.msgtype, "frames": len(frames), "encoding": frames[0].encoding,
                "size": f"{frames[0].width}x{frames[0].height}",
                "damage": None if damage is None else {**damage.as_dict(), "summary": damage.summary(bag_path)}},
        "parameters": parameters or {},
        "ground_truth": ground_truth.describe() if ground_truth else None})
    failed = 0
    for spec in specs:
        score = ground_truth.scorer(spec) if ground_truth else None
        try:
            report["graphs"].append(run_graph(spec, frames, options, score))
        except GraphError as err:
            on_error(str(err))
            report["graphs"].append({"name": spec.name, "error": str(err), "runs": [], "notes": [str(err)]})
            failed += 1
    return report, failed
