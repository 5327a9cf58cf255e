"""Replay schedules follow the chosen mode, the monitor matches outputs by stamp and counts every
drop, and the /proc sampler sees a busy process as busy."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ros_amf.replay.monitor import OutputMonitor
from ros_amf.replay.schedule import ReplayPlan, loop_period_ns, publish_schedule, schedule
from ros_amf.replay.resources import ResourceSampler, idle_baseline, process_tree

STAMPS = [1_000_000_000 + i * 100_000_000 for i in range(5)]            # 10 Hz header stamps
LOG_TIMES = [5_000_000_000 + i * 100_000_000 + (20_000_000 if i == 3 else 0) for i in range(5)]  # frame 3 late


def test_recorded_timeline_follows_log_times_scaled_by_the_rate_factor():
    frames = schedule(STAMPS, LOG_TIMES, ReplayPlan(mode="recorded", rate_factor=2.0))
    assert [f.offset_s for f in frames] == pytest.approx([0.0, 0.05, 0.10, 0.16, 0.20])
    assert [f.stamp_ns for f in frames] == STAMPS


def test_fixed_rate_ignores_the_recorded_timeline():
    frames = schedule(STAMPS, LOG_TIMES, ReplayPlan(mode="fixed", rate_hz=20.0))
    assert [f.offset_s for f in frames] == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])


def test_loops_shift_stamps_by_whole_bag_spans_and_keep_the_bag_index():
    frames = schedule(STAMPS, LOG_TIMES, ReplayPlan(mode="recorded", loops=2))
    assert len(frames) == 10
    assert loop_period_ns(STAMPS) == 500_000_000
    assert frames[5].stamp_ns == STAMPS[0] + 500_000_000 and frames[5].bag_index == 0
    assert len({f.stamp_ns for f in frames}) == 10
    assert frames[5].offset_s == pytest.approx(0.5)


def test_warmup_and_limit_apply_to_publication_order():
    frames = schedule(STAMPS, LOG_TIMES, ReplayPlan(mode="fixed", warmup_frames=2, limit=4, loops=3))
    assert [f.warmup for f in frames] == [True, True, False, False]


def test_identical_stamps_are_refused_because_outputs_could_not_be_matched():
    with pytest.raises(ValueError, match="identical header stamps"):
        schedule([1, 1], [1, 2], ReplayPlan())


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="replay mode 'turbo'"):
        ReplayPlan(mode="turbo")


def test_fixed_rate_publisher_keeps_time():
    plan = ReplayPlan(mode="fixed", rate_hz=50.0)
    frames = schedule(list(range(1, 11)), list(range(10)), plan)
    sent = publish_schedule(frames, plan, send=lambda frame, at: None)
    gaps = [b.sent_at - a.sent_at for a, b in zip(sent, sent[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(0.02, abs=0.004)
    assert max(s.late_s for s in sent) < 0.02


def test_monitor_counts_drops_partials_unmatched_and_repeats():
    monitor = OutputMonitor(["/a", "/b"], clock=lambda: 0.0)
    for seq, stamp in enumerate([10, 20, 30, 40]):
        monitor.expect(seq, seq, stamp, sent_at=float(seq))
    monitor.output("/a", 10, at=0.5)
    monitor.output("/b", 10, at=0.6)     # frame 0 complete, latency 600 ms
    monitor.output("/a", 20, at=1.2)     # frame 1 partial (no /b): dropped
    monitor.output("/b", 30, at=2.1)
    monitor.output("/a", 30, at=2.3)     # frame 2 complete, latency 300 ms
    monitor.output("/a", 30, at=2.4)     # repeated
    assert monitor.output("/a", 99, at=3.0) is False   # never sent
    metrics = monitor.metrics()
    assert (metrics["frames_sent"], metrics["frames_received"], metrics["frames_dropped"]) == (4, 2, 2)
    assert metrics["dropped_seq"] == [1, 3] and metrics["partial_frames"] == 1
    assert metrics["latency_ms"]["max"] == pytest.approx(600.0)
    assert metrics["latency_ms"]["p50"] == pytest.approx(450.0)
    assert metrics["unmatched_outputs"] == {"/a": 1, "/b": 0}
    assert metrics["repeated_outputs"] == {"/a": 1, "/b": 0}
    assert metrics["throughput_hz"] == pytest.approx(2 / 2.3)


def test_warmup_frames_are_left_out_of_the_metrics():
    monitor = OutputMonitor(["/a"])
    monitor.expect(0, 0, 10, sent_at=0.0, warmup=True)
    monitor.expect(1, 1, 20, sent_at=1.0)
    monitor.output("/a", 20, at=1.1)
    metrics = monitor.metrics()
    assert metrics["frames_sent"] == 1 and metrics["frames_dropped"] == 0


def test_fast_mode_waits_for_outputs_and_a_timeout_frees_the_slot():
    """A graph thread answers every frame except the third after 20 ms; fast mode with 1 in flight."""
    monitor = OutputMonitor(["/out"], timeout_s=0.2)
    plan = ReplayPlan(mode="fast", max_in_flight=1)
    frames = schedule([100 + i for i in range(5)], list(range(5)), plan)

    def graph(stamp: int) -> None:
        time.sleep(0.02)
        if stamp != 102:
            monitor.output("/out", stamp)

    def send(frame, sent_at):
        monitor.expect(frame.seq, frame.bag_index, frame.stamp_ns, sent_at)
        threading.Thread(target=graph, args=(frame.stamp_ns,)).start()

    sent = publish_schedule(frames, plan, send, wait_for_capacity=monitor.wait_for_capacity)
    assert monitor.wait_for_all(timeout_s=0.5) is False  # frame 2 never comes
    metrics = monitor.metrics()
    assert metrics["frames_received"] == 4 and metrics["dropped_seq"] == [2]
    # one frame at a time: every send happened after the previous output (or its timeout)
    assert all(b.sent_at - a.sent_at >= 0.019 for a, b in zip(sent, sent[1:]))
    assert sent[3].sent_at - sent[2].sent_at >= 0.19


def test_sampler_sees_a_busy_child_process_as_busy():
    script = "import time\nx = bytearray(64 * 2**20)\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", script])
    try:
        time.sleep(0.3)
        with ResourceSampler(busy.pid, interval_s=0.1) as sampler:
            time.sleep(0.8)
        summary = sampler.summary()
    finally:
        busy.kill()
        busy.wait()
    # a spinning process takes a core when it can get one; this 2-core machine is shared, so ask for less
    assert summary.cpu_percent_mean > 15.0
    assert summary.rss_mib_max > 64.0
    assert summary.samples >= 3  # 8 intervals, and a final reading at stop; a starved thread gets fewer


def test_idle_baseline_of_a_sleeping_process_is_near_zero_cpu():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.3)
        assert sleeper.pid in process_tree(sleeper.pid)
        baseline = idle_baseline(sleeper.pid, seconds=0.6, interval_s=0.1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert baseline.cpu_percent_mean < 5.0
    assert baseline.rss_mib_max > 1.0


def test_sampler_names_a_missing_process():
    with pytest.raises(ProcessLookupError, match="does not exist"):
        ResourceSampler(2**22 + 7).start()


def test_stamp_offset_moves_a_whole_run_to_fresh_stamps():
    frames = schedule(STAMPS, LOG_TIMES, ReplayPlan(mode="fixed", stamp_offset_ns=10**9))
    assert [f.stamp_ns for f in frames] == [s + 10**9 for s in STAMPS]
    assert [f.bag_index for f in frames] == list(range(5))
