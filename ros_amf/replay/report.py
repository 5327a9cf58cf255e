"""Replay benchmark reports: a printed table, a JSON file, PNG plots and a side-by-side comparison.

A report is one dict (see ``new_report``)::

    {"format": "ros_amf-replay/1", "metadata": {...host, bag, parameters...},
     "graphs": [{"name": "pipelined", "command": [...], "model": {...checkpoint sha256, config...},
                 "idle_baseline": {...}, "peak_search": {"peak_hz": .., "trials": [...]} | None,
                 "runs": [{"label": "fixed 10 Hz", "plan": {...}, "metrics": {...},
                           "resources": {...}, "accuracy": {...} | None}]}]}
"""
from __future__ import annotations

import json
import math
import platform
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT = "ros_amf-replay/1"


class ReportError(ValueError):
    """A report file that cannot be read or compared; the message names the file."""


def host_metadata() -> dict:
    import os

    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            # other work on the machine skews every timing: record how busy it was when the run started
            "load_average_1_5_15": list(os.getloadavg()),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def new_report(metadata: dict) -> dict:
    return {"format": FORMAT, "metadata": {"host": host_metadata(), **metadata}, "graphs": []}


def write_json(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def load_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"report '{path}' does not exist; pass a JSON file written by 'ros-amf replay --json'.")
    except json.JSONDecodeError as err:
        raise ReportError(f"report '{path}' is not valid JSON ({err}); pass a file written by 'ros-amf replay'.")
    if report.get("format") != FORMAT:
        raise ReportError(f"'{path}' is not a replay report (format '{report.get('format')}', expected '{FORMAT}').")
    return report


# -- table ---------------------------------------------------------------------------------------
def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def run_row(run: dict) -> dict[str, str]:
    """The headline numbers of one run, formatted for a table."""
    m, res, acc = run["metrics"], run.get("resources") or {}, run.get("accuracy") or {}
    lat = m["latency_ms"]
    lost = m.get("where_lost")  # includes warm-up frames, from the node's own counters
    return {"run": run["label"], "in Hz": _fmt(m.get("input_rate_hz")), "sent": _fmt(m["frames_sent"]),
            "recv": _fmt(m["frames_received"]), "drop %": _fmt(100.0 * m["drop_fraction"]),
            "out Hz": _fmt(m.get("throughput_hz")), "p50 ms": _fmt(lat["p50"]), "p95 ms": _fmt(lat["p95"]),
            "p99 ms": _fmt(lat["p99"]), "max ms": _fmt(lat["max"]), "jitter ms": _fmt(m.get("latency_jitter_ms")),
            "lost tx": _fmt(None if not lost else lost["lost_before_node"] + lost["lost_after_node"]),
            "node drop": _fmt(None if not lost else lost["dropped_by_node"]),
            "CPU %": _fmt(res.get("cpu_percent_mean"), 0), "RSS MiB": _fmt(res.get("rss_mib_max"), 0),
            "AP": _fmt(acc.get("ap"), 3), "sAP": _fmt(acc.get("streaming_ap"), 3),
            "mIoU": _fmt(acc.get("miou"), 3), "s-mIoU": _fmt(acc.get("streaming_miou"), 3)}


def format_rows(rows: Sequence[dict[str, str]]) -> str:
    if not rows:
        return "(no runs)"
    columns = list(rows[0])
    # drop columns that are empty in every row (e.g. accuracy when the bag has no ground truth)
    columns = [c for c in columns if c == "run" or any(r.get(c, "-") != "-" for r in rows)]
    widths = {c: max(len(c), *(len(r.get(c, "-")) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) if c != "run" else c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        lines.append("  ".join(r.get(c, "-").rjust(widths[c]) if c != "run" else r[c].ljust(widths[c])
                               for c in columns))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    meta = report["metadata"]
    bag = meta.get("bag", {})
    out = [f"replay of {bag.get('path', '?')} (topic {bag.get('topic', '?')}, {bag.get('frames', '?')} frames, "
           f"sha256 {str(bag.get('sha256', '?'))[:12]}) on {meta['host']['hostname']} "
           f"({meta['host']['cpu_count']} CPUs, load average {meta['host'].get('load_average_1_5_15', ['?'])[0]})"]
    damage = bag.get("damage")
    if damage and (damage.get("skipped_total") or damage.get("lost") or damage.get("salvaged")):
        out.append(f"damaged bag: {damage['summary']}")
    for graph in report["graphs"]:
        model = graph.get("model") or {}
        out.append("")
        out.append(f"== {graph['name']}: {' '.join(graph.get('command') or []) or 'already running'}")
        for task in ("instance", "semantic"):
            if task in model:
                entry = model[task]
                digest = entry.get("checkpoint_sha256")
                out.append(f"   {task}: config {entry.get('config')}, checkpoint {entry.get('checkpoint') or 'none'}"
                           + (f" (sha256 {digest[:12]})" if digest else f" ({entry['note']})" if entry.get("note") else ""))
        idle = graph.get("idle_baseline") or {}
        if idle:
            out.append(f"   idle baseline: CPU {_fmt(idle.get('cpu_percent_mean'))} %, "
                       f"RSS {_fmt(idle.get('rss_mib_max'), 0)} MiB")
        peak = graph.get("peak_search")
        if peak:
            trials = ", ".join(f"{t['rate_hz']:.1f}:{100 * t['drop_fraction']:.0f}%" for t in peak["trials"])
            out.append(f"   {peak['summary']}  [rate:drops {trials}]")
        for note in graph.get("notes", []):
            out.append(f"   note: {note}")
        out.append(format_rows([run_row(r) for r in graph["runs"]]))
        for run in graph["runs"]:
            for note in (run.get("accuracy") or {}).get("notes", []):
                out.append(f"   note: {run['label']}: {note}")
    if len(report["graphs"]) >= 2:
        out += ["", graphs_side_by_side(report["graphs"][0], report["graphs"][1])]
    return "\n".join(out)


def graphs_side_by_side(a: dict, b: dict) -> str:
    """What one graph buys over the other on the same bag (e.g. pipelined vs naive)."""
    lines = [f"== {a['name']} vs {b['name']} (same bag, same runs)"]
    peaks = [(g.get("peak_search") or {}).get("peak_hz") for g in (a, b)]
    if any(p is not None for p in peaks):
        lines.append(f"   peak sustainable rate: {_fmt(peaks[0], 2)} Hz vs {_fmt(peaks[1], 2)} Hz")
    runs_b = {r["label"]: r for r in b["runs"]}
    for run in a["runs"]:
        other = runs_b.get(run["label"])
        if other is None:
            continue
        ra, rb = run_row(run), run_row(other)
        lines.append(f"   {run['label']}: delivered {ra['out Hz']} vs {rb['out Hz']} Hz, drops {ra['drop %']} vs "
                     f"{rb['drop %']} %, latency p50 {ra['p50 ms']} vs {rb['p50 ms']} ms, p99 {ra['p99 ms']} vs "
                     f"{rb['p99 ms']} ms" + (f", sAP {ra['sAP']} vs {rb['sAP']}" if ra["sAP"] != "-" else ""))
    return "\n".join(lines)


# -- comparison ------------------------------------------------------------------------------------
COMPARED = ["in Hz", "sent", "recv", "drop %", "lost tx", "node drop", "out Hz", "p50 ms", "p95 ms", "p99 ms", "max ms", "jitter ms", "CPU %",
            "RSS MiB", "AP", "sAP", "mIoU", "s-mIoU"]


def _paired_runs(a: dict, b: dict) -> list[tuple[str, dict | None, dict | None]]:
    """Runs of the same graph paired by label; leftovers of a graph paired in order (e.g. different rates)."""
    graphs_a = {g["name"]: g["runs"] for g in a["graphs"]}
    graphs_b = {g["name"]: g["runs"] for g in b["graphs"]}
    pairs = []
    for name in list(graphs_a) + [n for n in graphs_b if n not in graphs_a]:
        runs_a, runs_b = graphs_a.get(name, []), graphs_b.get(name, [])
        labels_b = {r["label"]: r for r in runs_b}
        left_a = [r for r in runs_a if r["label"] not in labels_b]
        left_b = [r for r in runs_b if r["label"] not in {x["label"] for x in runs_a}]
        pairs += [(f"{name} / {r['label']}", r, labels_b[r["label"]]) for r in runs_a if r["label"] in labels_b]
        for k in range(max(len(left_a), len(left_b))):
            ra = left_a[k] if k < len(left_a) else None
            rb = left_b[k] if k < len(left_b) else None
            title = " vs ".join(r["label"] for r in (ra, rb) if r is not None)
            pairs.append((f"{name} / {title}", ra, rb))
    return pairs


def compare_reports(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Every run of either report, with A and B values next to each other."""
    lines = [f"A = {name_a}", f"B = {name_b}"]
    width = max(len(c) for c in COMPARED)
    for title, run_a, run_b in _paired_runs(a, b):
        ra = run_row(run_a) if run_a else {}
        rb = run_row(run_b) if run_b else {}
        lines.append("")
        lines.append(title + ("" if ra and rb else f"  (only in {'A' if ra else 'B'})"))
        lines.append(f"  {'metric'.ljust(width)}  {'A':>10}  {'B':>10}")
        for column in COMPARED:
            va, vb = ra.get(column, "-"), rb.get(column, "-")
            if va == "-" and vb == "-":
                continue
            lines.append(f"  {column.ljust(width)}  {va:>10}  {vb:>10}")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------------
def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """latency_hist.png, latency_time.png, throughput_vs_rate.png and (with ground truth) accuracy_vs_rate.png.

    The last two are curves over the input rate when the runs had several rates, and grouped bars (one
    per graph) when they all had the same one, where a curve would be a column of points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    runs = [(g["name"], r) for g in report["graphs"] for r in g["runs"]]

    fig, ax = plt.subplots(figsize=(7, 4))
    latencies = {(name, run["label"]): [t["latency_ms"] for t in run["metrics"]["timeline"] if t["latency_ms"] is not None]
                 for name, run in runs}
    every = [v for values in latencies.values() for v in values]
    if every:  # shared bins so runs are comparable; at least 1 ms wide in total
        low, high = min(every), max(every)
        bins = np.linspace(low, max(high, low + 1.0), 41)
        for (name, label), values in latencies.items():
            if values:
                ax.hist(values, bins=bins, alpha=0.5, label=f"{name} {label}")
    ax.set_xlabel("latency per message (ms)")
    ax.set_ylabel("frames")
    ax.set_title("Latency histogram")
    ax.legend(fontsize="small")
    written.append(_save(fig, out_dir / "latency_hist.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in runs:
        timeline = run["metrics"]["timeline"]
        if not timeline:
            continue
        start = timeline[0]["sent_at"]
        ok = [(t["sent_at"] - start, t["latency_ms"]) for t in timeline if t["latency_ms"] is not None]
        lost = [t["sent_at"] - start for t in timeline if t["latency_ms"] is None]
        line = ax.plot([x for x, _ in ok], [y for _, y in ok], ".-", ms=3, lw=0.8, label=f"{name} {run['label']}")
        if lost:  # dropped frames as crosses on the time axis
            ax.plot(lost, [0] * len(lost), "x", color=line[0].get_color(), ms=5)
    ax.set_xlabel("time since first frame (s)")
    ax.set_ylabel("latency (ms); x = dropped")
    ax.set_title("Latency over time")
    ax.legend(fontsize="small")
    written.append(_save(fig, out_dir / "latency_time.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_throughput(ax, report["graphs"])
    written.append(_save(fig, out_dir / "throughput_vs_rate.png"))

    if any(r.get("accuracy") for g in report["graphs"] for r in g["runs"]):
        fig, ax = plt.subplots(figsize=(6, 4))
        draw_accuracy(ax, report["graphs"])
        written.append(_save(fig, out_dir / "accuracy_vs_rate.png"))
    return written


ACCURACY_KEYS = {"ap": "AP", "streaming_ap": "sAP", "miou": "mIoU", "streaming_miou": "s-mIoU"}


def distinct_rates(rates: Sequence[float], tolerance: float = 0.05) -> list[float]:
    """The input rates that differ by more than ``tolerance`` (relative); a recorded 30 Hz bag is
    measured at 29.97 Hz in one run and 30.02 Hz in the next, which is one rate, not two."""
    found: list[float] = []
    for rate in sorted(rates):
        if not found or rate > found[-1] * (1 + tolerance):
            found.append(rate)
    return found


def draw_throughput(ax, graphs: Sequence[dict]) -> None:
    """Delivered outputs against the input rate: curves over several rates, grouped bars at one rate."""
    points = {}
    for graph in graphs:
        pairs = [(r["metrics"].get("input_rate_hz"), r["metrics"].get("throughput_hz")) for r in graph["runs"]]
        if graph.get("peak_search"):
            pairs += [(t["rate_hz"], t.get("throughput_hz")) for t in graph["peak_search"]["trials"]]
        points[graph["name"]] = sorted((x, y) for x, y in pairs if x is not None and y is not None)
    rates = distinct_rates([x for pairs in points.values() for x, _ in pairs])
    if len(rates) == 1:
        delivered = {name: [float(np.mean([x for x, _ in pairs])), float(np.mean([y for _, y in pairs]))]
                     for name, pairs in points.items() if pairs}
        _grouped_bars(ax, ["input", "delivered"], delivered)
        ax.set_ylabel("rate (Hz)")
        ax.set_title(f"Throughput at {rates[0]:.1f} Hz input")
        return
    top = 1.0
    for graph in graphs:
        pairs = points[graph["name"]]
        if pairs:
            ax.plot([x for x, _ in pairs], [y for _, y in pairs], "o-", label=graph["name"])
            top = max(top, max(x for x, _ in pairs))
            if graph.get("peak_search") and graph["peak_search"].get("peak_hz"):
                ax.axvline(graph["peak_search"]["peak_hz"], ls=":", lw=1)
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="output = input")
    ax.set_xlabel("input rate (Hz)")
    ax.set_ylabel("delivered outputs (Hz)")
    ax.set_title("Throughput vs input rate (dotted: peak)")
    ax.legend(fontsize="small")


def draw_accuracy(ax, graphs: Sequence[dict]) -> None:
    """Offline and streaming scores against the input rate: curves over several rates, grouped bars at one."""
    scored = [(graph["name"], r) for graph in graphs for r in graph["runs"]
              if r.get("accuracy") and r["metrics"].get("input_rate_hz")]
    rates = distinct_rates([r["metrics"]["input_rate_hz"] for _, r in scored])
    keys = [k for k in ACCURACY_KEYS if any(r["accuracy"].get(k) is not None for _, r in scored)]
    if len(rates) == 1:
        scores = {}
        for graph in graphs:
            runs = [r for name, r in scored if name == graph["name"]]
            if runs:
                scores[graph["name"]] = [_mean([r["accuracy"].get(k) for r in runs]) for k in keys]
        _grouped_bars(ax, [ACCURACY_KEYS[k] for k in keys], scores)
        ax.set_ylabel("score")
        ax.set_title(f"Accuracy at {rates[0]:.1f} Hz input (offline vs streaming)")
        return
    styles = {"ap": "o-", "streaming_ap": "s--", "miou": "^-", "streaming_miou": "v--"}
    for graph in graphs:
        for key in keys:
            points = sorted((r["metrics"]["input_rate_hz"], r["accuracy"][key]) for name, r in scored
                            if name == graph["name"] and r["accuracy"].get(key) is not None)
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], styles[key], label=f"{graph['name']} {key}")
    ax.set_xlabel("input rate (Hz)")
    ax.set_ylabel("score")
    ax.set_title("Accuracy vs input rate (offline vs streaming)")
    ax.legend(fontsize="small")


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _grouped_bars(ax, groups: Sequence[str], series: dict[str, Sequence[float | None]]) -> None:
    """One cluster per group, one bar per series (graph) in it; a missing value leaves a gap."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        offsets = positions - 0.4 + width * (k + 0.5)
        bars = ax.bar(offsets, [np.nan if v is None else v for v in values], width, label=name)
        ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}" for v in values], fontsize="x-small")
    ax.set_xticks(positions, groups)
    ax.legend(fontsize="small")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
