"""``ros-amf replay BAG``: replay a bag's camera stream into the node graph and benchmark it.

Examples::

    ros-amf replay data/demo/bags/drive_mcap --list-topics
    ros-amf replay data/demo/bags/drive_sqlite3 --mode fixed --rate 10 --json out/replay.json --plots out/plots
    ros-amf replay data/demo/bags/drive_mcap --graph both --peak -p instance.checkpoint:=models/x.pt
    ros-amf replay BAG --graph running --output-topic /my_node/labels --graph-pid 1234
    ros-amf replay --compare out/a.json out/b.json

By default the command starts the pipelined perception node itself (``--graph pipelined``);
``--graph both`` measures the pipelined and the naive process-in-callback node on the same bag,
one after the other. Unless the environment says otherwise, DDS discovery is kept on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), since the graph started here runs here.
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from ros_amf.bags.reader import BagError, BagReader
from ros_amf.replay.report import ReportError, compare_reports, format_report, load_json, write_json, write_plots
from ros_amf.replay.schedule import MODES, GraphError, ReplayPlan
from ros_amf.ros.kinds import KINDS

DEFAULT_PARAMS_FILE = "launch/replay.yaml"
# node kinds --node may start; the naive node is chosen with --graph naive/both
NODE_CHOICES = tuple(kind for kind, k in KINDS.items() if kind != "naive" and not k.multi_camera)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ros-amf replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", nargs="?", help="rosbag2 directory (sqlite3 or mcap), .mcap file or ROS 1 .bag")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print two reports side by side and exit")
    p.add_argument("--list-topics", action="store_true", help="list the bag's topics and exit")
    p.add_argument("--topic", help="image topic in the bag (default /camera/image_raw or the only image topic)")
    p.add_argument("--input-topic", default="/camera/image_raw", help="topic to publish the frames on")
    p.add_argument("--limit", type=int, help="replay only the first N frames of the bag")
    p.add_argument("--stop-on-error", action="store_true",
                   help="stop at the first damaged message of the bag (default: replay every readable frame and "
                        "report how many were skipped and why)")
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
    g.add_argument("--node", choices=NODE_CHOICES, default="perception", help="which node to start")
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
                   help="output topic to match (repeatable; default: the started node's instances/labels, or for "
                        "--graph running those beside --input-topic, e.g. /camera/instances and /camera/labels)")
    g.add_argument("--graph-pid", type=int, help="--graph running: pid of the graph process, for CPU/RSS")
    g.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the graph to appear")
    g.add_argument("--output-timeout", type=float, default=3.0,
                   help="seconds a frame holds its in-flight slot while its outputs are awaited, and the wait for "
                        "the last frames' outputs after the last send: outputs that never come count as dropped; "
                        "one that comes late during the run counts as received, at its late latency (p99, max)")
    g.add_argument("--idle-seconds", type=float, default=2.0, help="length of the idle-baseline measurement")
    g = p.add_argument_group("accuracy and reports")
    g.add_argument("--ground-truth", default="auto",
                   help="'auto' (the bag's sidecar ground truth if present), 'none', or a ground-truth path")
    g.add_argument("--json", help="write the report as JSON here")
    g.add_argument("--plots", help="write PNG plots into this directory")
    g.add_argument("--log-dir", help="where the started graphs write their logs (default: a temp dir)")
    return p


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
    if args.list_topics:
        with BagReader(bag_path) as bag:
            for topic in bag.topics():
                print(f"{topic.name}  {topic.msgtype}  {topic.message_count} messages"
                      + ("" if topic.is_image else "  (not an image topic)"))
        return 0
    from ros_amf.replay import session   # imports rclpy: only when a replay really runs

    damage = None
    if args.stop_on_error:
        topic, frames = session.read_frames(bag_path, args.topic, args.limit)
    else:
        topic, frames, damage = session.read_readable_frames(bag_path, args.topic, args.limit)
        if not damage.clean:
            print(f"ros-amf replay: {damage.summary(bag_path)}", file=sys.stderr)
    plan = ReplayPlan(mode=args.mode, rate_factor=args.rate_factor, rate_hz=args.rate,
                      max_in_flight=args.max_in_flight, loops=args.loop, warmup_frames=args.warmup)
    params = session.parse_params(args.param)
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

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="ros_amf_replay_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    node_params = {"input_qos": args.qos, "output_qos": args.qos, **params}  # the user's -p wins
    if args.graph == "running":
        specs = [session.running_graph(args.node, params, args.output_topic, args.graph_pid, args.input_topic)]
    else:
        kinds = {"both": ["perception", "naive"], "naive": ["naive"]}.get(args.graph, [args.node])
        specs = [session.started_graph("naive" if kind == "naive" else "pipelined", kind, node_params,
                                       args.params_file, log_dir, args.output_topic) for kind in kinds]

    options = session.BenchmarkOptions(
        input_topic=args.input_topic, qos=args.qos, plan=plan, repeat=args.repeat, peak=args.peak,
        fixed_rates=fixed_rates, trial_frames=args.trial_frames, trial_warmup=args.trial_warmup,
        peak_start_hz=args.peak_start, peak_max_hz=args.peak_max, idle_seconds=args.idle_seconds,
        start_timeout_s=args.start_timeout, output_timeout_s=args.output_timeout,
        keep_outputs=ground_truth is not None)
    report, failed = session.run_session(
        bag_path, topic, frames, specs, options, ground_truth,
        parameters={k: v for k, v in vars(args).items() if k not in ("compare",)},
        on_error=lambda message: print(f"ros-amf replay: {message}", file=sys.stderr), damage=damage)
    print()
    print(format_report(report))
    if args.json:
        print(f"report: {write_json(report, args.json)}")
    if args.plots:
        print("plots: " + ", ".join(str(p) for p in write_plots(report, args.plots)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
