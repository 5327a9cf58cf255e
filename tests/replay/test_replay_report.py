"""Replay reports print a table, round-trip through JSON, draw the four plots and compare two runs."""
from __future__ import annotations

import json

import pytest

from ros_amf.replay.monitor import OutputMonitor
from ros_amf.replay.peak import find_peak_rate
from ros_amf.replay.report import (ReportError, compare_reports, distinct_rates, draw_accuracy, draw_throughput,
                                   format_report, load_json, new_report, write_json, write_plots)


def run_at(rate_hz: float, latency_s: float, drop_every: int = 0, accuracy: dict | None = None) -> dict:
    monitor = OutputMonitor(["/node/instances"])
    for seq in range(20):
        sent = seq / rate_hz
        monitor.expect(seq, seq, 1000 + seq, sent_at=sent)
        if not (drop_every and seq % drop_every == drop_every - 1):
            monitor.output("/node/instances", 1000 + seq, at=sent + latency_s)
    return {"label": f"fixed {rate_hz:g} Hz", "plan": {"mode": "fixed", "rate_hz": rate_hz},
            "metrics": monitor.metrics(), "resources": {"cpu_percent_mean": 80.0, "rss_mib_max": 300.0},
            "accuracy": accuracy}


def make_report(latency_s: float = 0.05) -> dict:
    report = new_report({"bag": {"path": "drive", "topic": "/camera/image_raw", "frames": 20, "sha256": "ab" * 32}})
    search = find_peak_rate(lambda r: max(0.0, 1 - 20 / r), start_hz=10.0)
    report["graphs"].append({
        "name": "pipelined", "command": ["ros-amf", "run"], "model": {"checkpoint_sha256": "cd" * 32},
        "idle_baseline": {"cpu_percent_mean": 1.5, "rss_mib_max": 250.0},
        "peak_search": {"peak_hz": search.peak_hz, "summary": search.summary(),
                        "trials": [{"rate_hz": t.rate_hz, "drop_fraction": t.drop_fraction,
                                    "throughput_hz": t.rate_hz * (1 - t.drop_fraction)} for t in search.trials]},
        "runs": [run_at(10, latency_s, accuracy={"ap": 0.40, "streaming_ap": 0.31}),
                 run_at(30, latency_s * 2, drop_every=4, accuracy={"ap": 0.39, "streaming_ap": 0.22,
                                                                   "notes": ["7 detections had a class ..."]})]})
    report["graphs"].append({"name": "naive", "command": ["ros-amf", "run", "--naive"],
                             "runs": [run_at(10, latency_s * 3)]})
    return report


def test_table_shows_drops_latency_and_accuracy_per_run():
    text = format_report(make_report())
    assert "== pipelined" in text and "== naive" in text
    assert "peak sustainable rate" in text
    line_30 = next(line for line in text.splitlines() if line.startswith("fixed 30 Hz"))
    assert "25.0" in line_30            # drop % (every 4th frame)
    assert "100.0" in line_30           # p50 latency ms
    assert "0.220" in line_30           # streaming AP
    assert "mIoU" not in text           # no semantic accuracy in any run: column left out
    assert "   note: fixed 30 Hz: 7 detections had a class ..." in text   # what the scores could not use
    assert "== pipelined vs naive" in text
    assert "fixed 10 Hz: delivered" in text and "p50 50.0 vs 150.0 ms" in text


def test_json_round_trip_keeps_every_field(tmp_path):
    report = make_report()
    path = write_json(report, tmp_path / "run.json")
    assert load_json(path) == json.loads(json.dumps(report))


def test_loading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "other.json").write_text('{"format": "coco"}')
    with pytest.raises(ReportError, match="not a replay report"):
        load_json(tmp_path / "other.json")
    with pytest.raises(ReportError, match="does not exist"):
        load_json(tmp_path / "absent.json")


def test_plots_are_written_as_png(tmp_path):
    paths = write_plots(make_report(), tmp_path)
    assert sorted(p.name for p in paths) == ["accuracy_vs_rate.png", "latency_hist.png", "latency_time.png",
                                             "throughput_vs_rate.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


def test_compare_puts_two_reports_side_by_side():
    text = compare_reports(make_report(0.05), make_report(0.08), "fast.json", "slow.json")
    block = text[text.index("pipelined / fixed 10 Hz"):].splitlines()
    p50 = next(line for line in block if line.strip().startswith("p50 ms"))
    assert p50.split()[-2:] == ["50.0", "80.0"]
    assert "A = fast.json" in text and "naive / fixed 10 Hz" in text


def test_compare_pairs_runs_with_different_labels_in_order():
    a, b = make_report(), make_report()
    b["graphs"][1]["runs"][0]["label"] = "fixed 12 Hz"
    text = compare_reports(a, b)
    assert "naive / fixed 10 Hz vs fixed 12 Hz" in text
    assert "only in" not in text


def test_a_graph_that_failed_to_start_is_reported_not_lost():
    report = make_report()
    report["graphs"][1] = {"name": "naive", "error": "graph 'naive' exited", "runs": [],
                           "notes": ["graph 'naive' exited"]}
    text = format_report(report)
    assert "note: graph 'naive' exited" in text and "(no runs)" in text


def _one_rate_report() -> dict:
    """Pipelined and naive, each replayed once at the bag's recorded 30 Hz (measured a little apart)."""
    report = new_report({"bag": {"path": "drive", "topic": "/camera/image_raw", "frames": 20}})
    for name, rate, latency, accuracy in (("pipelined", 30.02, 0.05, {"ap": 0.40, "streaming_ap": 0.31}),
                                          ("naive", 29.97, 0.15, {"ap": 0.40, "streaming_ap": 0.12})):
        report["graphs"].append({"name": name, "runs": [run_at(rate, latency, accuracy=accuracy)]})
    return report


@pytest.fixture
def axes():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_rates_a_few_percent_apart_are_one_rate():
    assert distinct_rates([30.02, 29.97, 30.0]) == [29.97]
    assert distinct_rates([10.0, 30.0, 29.9]) == [10.0, 29.9]


def test_one_input_rate_draws_grouped_bars_per_graph(axes):
    graphs = _one_rate_report()["graphs"]
    draw_accuracy(axes, graphs)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["AP", "sAP"]
    assert not axes.lines and len(axes.patches) == 4            # 2 metrics x (pipelined, naive)
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["pipelined", "naive"]
    assert sorted(round(p.get_height(), 2) for p in axes.patches) == [0.12, 0.31, 0.40, 0.40]
    axes.clear()
    draw_throughput(axes, graphs)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["input", "delivered"]
    assert not axes.lines and len(axes.patches) == 4


def test_several_input_rates_draw_curves(axes):
    graphs = make_report()["graphs"]
    draw_accuracy(axes, graphs)
    assert not axes.patches and {line.get_label() for line in axes.lines} == {"pipelined ap", "pipelined streaming_ap"}
    assert sorted(axes.lines[0].get_xdata()) == pytest.approx([10.0, 30.0])
    axes.clear()
    draw_throughput(axes, graphs)
    assert not axes.patches and "pipelined" in {line.get_label() for line in axes.lines}
