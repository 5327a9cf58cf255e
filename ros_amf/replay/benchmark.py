"""One replay benchmark of one node graph over rclpy: idle baseline, the requested run(s), the peak
search with its fixed rates, resources and accuracy per run, and the node's own statistics at the
end. ``ros-amf replay`` and ``ros-amf demo`` call it through ros_amf.replay.session;
``ros-amf bench runtime --ros`` compares the pipelined and the naive node with ``compare_nodes``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ros_amf.bags.reader import BagImage
from ros_amf.replay.harness import GraphProcess, ReplayNode, bag_image_message, node_command, ros_value
from ros_amf.replay.peak import find_peak_rate, plan_fixed_rates
from ros_amf.replay.resources import ResourceSampler, idle_baseline
from ros_amf.replay.schedule import ReplayPlan, loop_period_ns
from ros_amf.ros.kinds import KINDS


@dataclass
class GraphSpec:
    name: str                          # "pipelined", "naive" or "running"
    output_topics: list[str]
    process: GraphProcess | None = None    # None: attach to a graph that is already running
    pid: int | None = None                 # for CPU/RSS of an already running graph
    model: dict = field(default_factory=dict)


@dataclass
class BenchmarkOptions:
    input_topic: str
    plan: ReplayPlan
    qos: str = "reliable"
    repeat: int = 1
    peak: bool = False
    fixed_rates: tuple[float, ...] = (10.0, 30.0, 60.0)
    trial_frames: int = 60
    trial_warmup: int = 10
    peak_start_hz: float = 10.0
    peak_max_hz: float = 120.0
    idle_seconds: float = 2.0
    start_timeout_s: float = 180.0
    output_timeout_s: float = 3.0
    keep_outputs: bool = False         # needed for accuracy scoring
    # other topics of the graph whose every message goes to a callback (the demo's ~/overlay)
    record_topics: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    log: Callable[[str], None] = print


def plan_label(plan: ReplayPlan) -> str:
    if plan.mode == "recorded":
        return f"recorded x{plan.rate_factor:g}"
    if plan.mode == "fixed":
        return f"fixed {plan.rate_hz:g} Hz"
    return f"fast (<= {plan.max_in_flight} in flight)"


def run_graph(spec: GraphSpec, frames: Sequence[BagImage], options: BenchmarkOptions,
              score: Callable[[ReplayNode, list], dict | None] | None = None) -> dict:
    """Benchmark one graph; returns its section of the report (see ros_amf.replay.report)."""
    log = options.log
    result: dict = {"name": spec.name, "command": spec.process.command if spec.process else None,
                    "model": spec.model, "output_topics": spec.output_topics, "runs": [], "notes": []}
    messages = [bag_image_message(f) for f in frames]  # converted once, outside every timed loop
    stamps = [f.stamp_ns for f in frames]
    if spec.process is not None:
        spec.process.start()
        log(f"[{spec.name}] started (pid {spec.process.pid}), log {spec.process.log_path}")
    pid = spec.process.pid if spec.process else spec.pid
    replayer = ReplayNode(options.input_topic, spec.output_topics, qos=options.qos)
    try:
        started = time.monotonic()
        types = replayer.wait_for_graph(options.start_timeout_s, spec.process)
        log(f"[{spec.name}] graph ready after {time.monotonic() - started:.1f} s; outputs {types}")
        if pid is not None:
            result["idle_baseline"] = idle_baseline(pid, options.idle_seconds).as_dict()
        else:
            result["notes"].append("no graph pid given (--graph-pid): CPU/RSS not measured")

        replayer.connect(types)
        for topic, on_message in options.record_topics.items():
            if not replayer.record(topic, on_message):
                result["notes"].append(f"nothing publishes {topic}: not recorded")
        has_stats = replayer.watch_stats(spec.output_topics[0].rsplit("/", 1)[0] + "/stats")
        if not has_stats:
            result["notes"].append("the graph publishes no ~/stats: transport losses and node drops not separated")
        first_stamp = min(stamps)
        next_offset = [0]  # the first run publishes the bag's own stamps, later runs shift past all earlier ones

        def measured_run(plan: ReplayPlan, label: str, keep: bool) -> dict:
            replayer.listen(keep_payloads=keep, timeout_s=options.output_timeout_s)
            before = replayer.node_counters(after=time.perf_counter()) if has_stats else None
            sampler = ResourceSampler(pid).start() if pid is not None else None
            plan = replace(plan, stamp_offset_ns=next_offset[0])
            sent = replayer.replay(frames, messages, plan, settle_s=options.output_timeout_s)
            if sent:
                next_offset[0] = max(s.stamp_ns for s in sent) - first_stamp + loop_period_ns(stamps)
            resources = sampler.stop().as_dict() if sampler else None
            metrics = replayer.monitor.metrics()
            after = replayer.node_counters(after=time.perf_counter()) if has_stats else None
            received_all = sum(r.complete(spec.output_topics) for r in replayer.monitor.records())
            metrics["where_lost"] = loss_breakdown(len(sent), received_all, before, after)
            late = [s.late_s for s in sent if not s.warmup]
            metrics["publisher_late_ms_max"] = 1000.0 * max(late) if late else None
            run = {"label": label, "plan": plan.as_dict(), "metrics": metrics, "resources": resources,
                   "accuracy": score(replayer, sent) if (keep and score) else None}
            m = metrics
            log(f"[{spec.name}] {label}: sent {m['frames_sent']}, received {m['frames_received']}, "
                f"dropped {m['frames_dropped']}, p50 {_ms(m['latency_ms']['p50'])} ms")
            time.sleep(0.3)  # let the graph drain before the next run
            return run

        for k in range(options.repeat):
            label = plan_label(options.plan) + (f" #{k + 1}" if options.repeat > 1 else "")
            result["runs"].append(measured_run(options.plan, label, options.keep_outputs))
        if options.repeat > 1:
            result["determinism"] = determinism(result["runs"][-options.repeat:])

        if options.peak:
            trial_plan = ReplayPlan(mode="fixed", loops=_loops_for(options.trial_frames + options.trial_warmup,
                                                                   len(frames)),
                                    warmup_frames=options.trial_warmup,
                                    limit=options.trial_frames + options.trial_warmup)

            def measure(rate: float) -> _Trial:
                run = measured_run(replace(trial_plan, rate_hz=rate), f"trial {rate:.1f} Hz", keep=False)
                return _Trial({"rate_hz": rate, "drop_fraction": run["metrics"]["drop_fraction"],
                               "throughput_hz": run["metrics"]["throughput_hz"],
                               "latency_p50_ms": run["metrics"]["latency_ms"]["p50"]})

            search = find_peak_rate(measure, start_hz=options.peak_start_hz, max_hz=options.peak_max_hz)
            result["peak_search"] = {"peak_hz": search.peak_hz, "capped": search.capped, "summary": search.summary(),
                                     "trials": [{**t.details.values, "phase": t.phase, "passed": t.passed}
                                                for t in search.trials]}
            log(f"[{spec.name}] {search.summary()}")
            rates, skipped = plan_fixed_rates(search.peak_hz, options.fixed_rates)
            if skipped:
                result["notes"].append(f"fixed rates {skipped} Hz skipped: above the peak "
                                       + ("(none found)" if search.peak_hz is None else f"{search.peak_hz:.2f} Hz"))
            if search.peak_hz is not None:
                rates = sorted(set(rates) | {round(search.peak_hz, 2)})
            for rate in rates:
                plan = replace(options.plan, mode="fixed", rate_hz=rate)
                label = f"fixed {rate:g} Hz" + (" (peak)" if rate == round(search.peak_hz or -1, 2) else "")
                result["runs"].append(measured_run(plan, label, options.keep_outputs))
        if has_stats:  # once every frame has its outcome: the node's own table of everything it was sent
            final = replayer.node_stats(after=time.perf_counter(), timeout_s=max(5.0, options.output_timeout_s),
                                        settled=True)
            result["node_stats"] = final.as_dict() if final else None
            result["stats_reports"] = replayer.stats_reports
    finally:
        replayer.close()
        if spec.process is not None:
            spec.process.stop()
    return result


# label in the report -> node kind: the same work with and without the pipelined runtime
NODE_COMPARISON = (("pipelined_node", "perception"), ("naive_node", "naive"))


def compare_nodes(images: Sequence[np.ndarray], params: dict[str, Any], rate_hz: float, log_dir: Path,
                  log: Callable[[str], None] = print) -> dict:
    """The pipelined and the naive node, each started in its own process and fed the same RGB frames at
    ``rate_hz``: delivered rate, drops and the node's own table.

    Reliable QoS both ways: between processes, best effort loses fragments of large images under load,
    and the comparison is about what each node drops, not what DDS does.
    """
    frames = frames_from_arrays(images, rate_hz)
    out = {}
    for label, kind in NODE_COMPARISON:
        name = f"bench_{label}"
        topic = f"/{name}/image_raw"
        node_params = {**params, "input_topic": topic, "publish_overlay": False, "camera_info_topic": "",
                       "input_qos": "reliable", "output_qos": "reliable"}
        command = node_command(kind, name, [f"{k}:={ros_value(v)}" for k, v in node_params.items()], None)
        spec = GraphSpec(label, KINDS[kind].output_topics(name),
                         process=GraphProcess(label, command, str(Path(log_dir) / f"{label}.log")))
        options = BenchmarkOptions(input_topic=topic, qos="reliable", plan=ReplayPlan(mode="fixed", rate_hz=rate_hz),
                                   idle_seconds=0.5, output_timeout_s=1.0 + 1.0 / rate_hz, log=log)
        result = run_graph(spec, frames, options)
        metrics, stats = result["runs"][0]["metrics"], result.get("node_stats") or {}
        out[label] = {"fed": metrics["frames_sent"], "feed_rate_hz": rate_hz, "received": metrics["frames_received"],
                      "output_fps": metrics["throughput_hz"] or 0.0, "frames_in": stats.get("frames_in"),
                      "frames_dropped": stats.get("frames_dropped"), "stats": stats}
    return out


def frames_from_arrays(images: Sequence[np.ndarray], rate_hz: float) -> list[BagImage]:
    """RGB frames made in memory, as a bag recorded at ``rate_hz`` would hold them."""
    period_ns = int(1e9 / rate_hz)
    return [BagImage(index=i, log_time_ns=i * period_ns, stamp_ns=(i + 1) * period_ns, frame_id="camera",
                     encoding="rgb8", height=image.shape[0], width=image.shape[1], step=image.shape[1] * 3,
                     data=np.ascontiguousarray(image).reshape(-1))
            for i, image in enumerate(images)]


class _Trial:
    """What the peak search keeps per trial: the drop fraction plus the numbers for the plot."""

    def __init__(self, values: dict):
        self.values = values
        self.drop_fraction = values["drop_fraction"]


def loss_breakdown(sent: int, received: int, before: dict | None, after: dict | None) -> dict | None:
    """Where the frames of a run (warm-up included) went, from the node's own ~/stats counters.

    lost_before_node: sent but never counted by the node (transport/QoS); dropped_by_node: the node's
    frame-dropping policy; lost_after_node: published by the node but not received here.
    Approximate when stats reports of the node straddle run boundaries.
    """
    if before is None or after is None:
        return None
    delta = {k: after[k] - before[k] for k in before}
    return {"sent": sent, "node_received": delta["frames_in"], "lost_before_node": sent - delta["frames_in"],
            "dropped_by_node": delta["frames_dropped"], "rejected_by_node": delta["frames_rejected"],
            "failed_in_node": delta["frames_failed"], "published_by_node": delta["frames_out"],
            "received": received, "lost_after_node": delta["frames_out"] - received}


def _loops_for(wanted: int, available: int) -> int:
    return max(1, -(-wanted // max(available, 1)))


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def determinism(runs: Sequence[dict]) -> dict:
    """Whether repeated runs delivered the same frames and scored the same."""
    delivered = [r["metrics"]["frames_received"] for r in runs]
    dropped = [r["metrics"]["dropped_seq"] for r in runs]
    accuracy = [r.get("accuracy") for r in runs]
    keys = ("ap", "streaming_ap", "miou", "streaming_miou")
    scores = [{k: a.get(k) for k in keys if a.get(k) is not None} if a else {} for a in accuracy]
    return {"delivered": delivered, "same_delivered": len(set(delivered)) == 1,
            "same_dropped_frames": all(d == dropped[0] for d in dropped),
            "scores": scores,
            "same_scores": {k: len({s.get(k) for s in scores}) == 1 for k in keys if any(k in s for s in scores)}}
