"""``ros-amf replay BAG``: replay a bag's camera stream into the node graph and benchmark it.

Examples::

    ros-amf replay data/bags/drive_mcap --list-topics
    ros-amf replay data/bags/drive_sqlite3 --mode fixed --rate 10 --json out/replay.json --plots out/plots
    ros-amf replay data/bags/drive_mcap --graph both --peak -p instance.checkpoint:=models/x.pt
    ros-amf replay BAG --graph running --output-topic /my_node/labels --graph-pid 1234
    ros-amf replay --compare out/a.json out/b.json

By default the command starts the pipelined perception node itself (``--graph pipelined``);
``--graph both`` measures the pipelined and the naive process-in-callback node on the same bag,
one after the other. Unless the environment says otherwise, DDS discovery is kept on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), since the graph started here runs here.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from ros_amf.bags.reader import BagError, BagReader
from ros_amf.replay.schedule import MODES, GraphError, ReplayPlan
from ros_amf.replay.report import ReportError, compare_reports, format_report, load_json, new_report, write_json, write_plots

NODE_NAMES = {"perception": "ros_amf_perception", "instance": "ros_amf_instance", "semantic": "ros_amf_semantic"}
DEFAULT_PARAMS_FILE = "launch/replay.yaml"
NAIVE_NODE_NAME = "ros_amf_naive"  # the naive node runs both models, like ros_amf_perception
NODE_OUTPUTS = {"perception": ["instances", "labels"], "instance": ["instances"], "semantic": ["labels"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", nargs="?", help="rosbag2 directory (sqlite3 or mcap), .mcap file or ROS 1 .bag")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print two reports side by side and exit")
    p.add_argument("--list-topics", action="store_true", help="list the bag's topics and exit")
    p.add_argument("--topic", help="image topic in the bag (default /camera/image_raw or the only image topic)")
    p.add_argument("--input-topic", default="/camera/image_raw", help="topic to publish the frames on")
    p.add_argument("--limit", type=int, help="replay only the first N frames of the bag")
    g = p.add_argument_group("replay mode")
    g.add_argument("--mode", choices=MODES, default="recorded",
                   help="recorded timeline x --rate-factor, a fixed --rate, or as fast as the graph accepts")
    g.add_argument("--rate-factor", type=float, default=1.0, help="recorded mode: speed-up factor")
    g.add_argument("--rate", type=float, default=10.0, help="fixed mode: frames per second")
    g.add_argument("--max-in-flight", type=int, default=1, help="fast mode: frames awaiting output at once")
    g.add_argument("--loop", type=int, default=1, help="play the bag this many times")
    g.add_argument("--warmup", type=int, default=5, help="frames at the start left out of the metrics")
    g.add_argument("--repeat", type=int, default=1, help="repeat the run N times and check they agree")
    g = p.add_argument_group("peak search")
    g.add_argument("--peak", action="store_true", help="search the peak rate with <= 5%% drops, then measure "
                                                       "at it and at --fixed-rates not above it")
    g.add_argument("--fixed-rates", default="10,30,60", help="comma-separated rates measured after the search")
    g.add_argument("--trial-frames", type=int, default=60, help="measured frames per search trial")
    g.add_argument("--trial-warmup", type=int, default=10, help="warm-up frames per search trial")
    g.add_argument("--peak-start", type=float, default=10.0, help="first rate tried (Hz)")
    g.add_argument("--peak-max", type=float, default=120.0, help="highest rate tried (Hz)")
    g = p.add_argument_group("node graph")
    g.add_argument("--graph", choices=("pipelined", "naive", "both", "running"), default="pipelined",
                   help="start the pipelined node, the naive node, both one after the other, or use a running graph")
    g.add_argument("--node", choices=tuple(NODE_NAMES), default="perception", help="which node to start")
    g.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="ROS parameter for the started node (repeatable), e.g. -p instance.checkpoint:=models/x.pt")
    g.add_argument("--params-file", default=DEFAULT_PARAMS_FILE,
                   help="ROS 2 parameter YAML for the started node(s) (default %(default)s: the shipped CPU models; "
                        "'none' for the node's built-in defaults); -p overrides single values")
    g.add_argument("--qos", choices=("reliable", "sensor_data"), default="reliable",
                   help="QoS of the replayed images, also given to a started node as input_qos/output_qos: "
                        "'reliable' (default) lets the node's frame-dropping policy decide; 'sensor_data' "
                        "(best effort, like a camera driver) adds the transport's losses of large images")
    g.add_argument("--output-topic", action="append", default=[],
                   help="output topic to match (repeatable; default: the node's instances/labels)")
    g.add_argument("--graph-pid", type=int, help="--graph running: pid of the graph process, for CPU/RSS")
    g.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the graph to appear")
    g.add_argument("--output-timeout", type=float, default=3.0, help="an output later than this counts as dropped")
    g.add_argument("--idle-seconds", type=float, default=2.0, help="length of the idle-baseline measurement")
    g = p.add_argument_group("accuracy and reports")
    g.add_argument("--ground-truth", default="auto",
                   help="'auto' (the bag's sidecar ground truth if present), 'none', or a ground-truth path")
    g.add_argument("--json", help="write the report as JSON here")
    g.add_argument("--plots", help="write PNG plots into this directory")
    g.add_argument("--log-dir", help="where the started graphs write their logs (default: a temp dir)")
    return p


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


def parse_params(items: list[str]) -> dict[str, str]:
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
    from ros_amf.ros.params import resolve_path

    path = Path(resolve_path(params_file))
    if not path.is_file():
        raise ValueError(f"parameter file '{params_file}' does not exist; pass a ROS 2 parameter YAML or "
                         f"--params-file none.")
    sections = yaml.safe_load(path.read_text()) or {}
    if node_name in sections or "/**" in sections or NODE_NAMES["perception"] not in sections:
        return str(path)
    # a deep copy: YAML anchors/aliases for a shared dict are not accepted by rcl's parameter parser
    section = copy.deepcopy(sections[NODE_NAMES["perception"]])
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


def model_metadata(params: dict[str, str], kind: str) -> dict:
    """Model configs and checkpoint hashes named by the node parameters (what the numbers belong to)."""
    from ros_amf.ros.params import PARAMETERS, resolve_path

    defaults = {spec.name: spec.default for spec in PARAMETERS}
    tasks = {"perception": ("instance", "semantic"), "instance": ("instance",), "semantic": ("semantic",)}[kind]
    meta: dict = {"parameters": params}
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare:
        try:
            a, b = (load_json(path) for path in args.compare)
        except ReportError as err:
            print(f"ros-amf replay: {err}", file=sys.stderr)
            return 2
        print(compare_reports(a, b, *args.compare))
        return 0
    if not args.bag:
        print("ros-amf replay: give a bag path (or --compare A.json B.json).", file=sys.stderr)
        return 2
    # a terminated replay must still stop the graph it started: turn SIGTERM into SystemExit so cleanup runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _replay(args)
    except (BagError, GraphError, ValueError, ReportError) as err:
        print(f"ros-amf replay: {err}", file=sys.stderr)
        return 2


def _replay(args: argparse.Namespace) -> int:
    bag_path = Path(args.bag)
    with BagReader(bag_path) as bag:
        if args.list_topics:
            for topic in bag.topics():
                print(f"{topic.name}  {topic.msgtype}  {topic.message_count} messages"
                      + ("" if topic.is_image else "  (not an image topic)"))
            return 0
        topic = bag.resolve_image_topic(args.topic)
        frames = list(bag.images(topic.name, limit=args.limit))
    if not frames:
        raise ValueError(f"topic '{topic.name}' of bag '{bag_path}' has no frames to replay.")
    plan = ReplayPlan(mode=args.mode, rate_factor=args.rate_factor, rate_hz=args.rate,
                      max_in_flight=args.max_in_flight, loops=args.loop, warmup_frames=args.warmup)
    params = parse_params(args.param)
    fixed_rates = tuple(float(x) for x in args.fixed_rates.split(",") if x.strip())

    if args.graph in ("naive", "both") and args.node != "perception":
        raise ValueError("the naive node runs both models like ros_amf_perception; use --node perception with "
                         "--graph naive/both so the two graphs do the same work.")
    ground_truth = None
    if args.ground_truth != "none":
        from ros_amf.replay.accuracy import load_ground_truth  # imports the evaluators only when scoring
        ground_truth = load_ground_truth(bag_path, None if args.ground_truth == "auto" else Path(args.ground_truth),
                                         frames)
        print(ground_truth.describe() if ground_truth else "no ground truth for this bag: speed only")

    # rclpy reads the discovery range at import time: keep it on this host unless the user chose otherwise
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from ros_amf.replay.benchmark import BenchmarkOptions, GraphSpec, run_graph
    from ros_amf.replay.harness import GraphProcess, node_command

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="ros_amf_replay_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    names = {"both": ["pipelined", "naive"]}.get(args.graph, [args.graph])
    for name in names:
        if name == "running":
            outputs = args.output_topic or [f"/{NODE_NAMES[args.node]}/{o}" for o in NODE_OUTPUTS[args.node]]
            specs.append(GraphSpec(name, outputs, pid=args.graph_pid, model=model_metadata(params, args.node)))
            continue
        node_name = NAIVE_NODE_NAME if name == "naive" else NODE_NAMES[args.node]
        kind = "naive" if name == "naive" else args.node
        params_file = params_file_for(node_name, args.params_file, log_dir)
        node_params = {"input_qos": args.qos, "output_qos": args.qos, **params}  # the user's -p wins
        command = node_command(kind, node_name, [f"{k}:={v}" for k, v in node_params.items()], params_file)
        outputs = args.output_topic or [f"/{node_name}/{o}" for o in NODE_OUTPUTS[args.node]]
        effective = {**file_parameters(params_file, node_name), **{k: str(v) for k, v in node_params.items()}}
        specs.append(GraphSpec(name, outputs, process=GraphProcess(name, command, str(log_dir / f"{name}.log")),
                               model=model_metadata(effective, args.node)))

    options = BenchmarkOptions(
        input_topic=args.input_topic, qos=args.qos, plan=plan, repeat=args.repeat, peak=args.peak,
        fixed_rates=fixed_rates, trial_frames=args.trial_frames, trial_warmup=args.trial_warmup, peak_start_hz=args.peak_start,
        peak_max_hz=args.peak_max, idle_seconds=args.idle_seconds, start_timeout_s=args.start_timeout,
        output_timeout_s=args.output_timeout, keep_outputs=ground_truth is not None)
    report = new_report({
        "bag": {"path": str(bag_path), "sha256": file_sha256(bag_path), "topic": topic.name,
                "msgtype": topic.msgtype, "frames": len(frames), "encoding": frames[0].encoding,
                "size": f"{frames[0].width}x{frames[0].height}"},
        "parameters": {k: v for k, v in vars(args).items() if k not in ("compare",)},
        "ground_truth": ground_truth.describe() if ground_truth else None})
    failed = 0
    for spec in specs:
        score = ground_truth.scorer(spec) if ground_truth else None
        try:
            report["graphs"].append(run_graph(spec, frames, options, score))
        except GraphError as err:  # keep the other graph's results; the report says what went wrong
            print(f"ros-amf replay: {err}", file=sys.stderr)
            report["graphs"].append({"name": spec.name, "error": str(err), "runs": [], "notes": [str(err)]})
            failed += 1
    print()
    print(format_report(report))
    if args.json:
        print(f"report: {write_json(report, args.json)}")
    if args.plots:
        print("plots: " + ", ".join(str(p) for p in write_plots(report, args.plots)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
