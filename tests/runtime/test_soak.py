"""The soak run's measurement: frames fed at overload are all accounted for, RSS is sampled through the
run, the slope is fitted after warm-up only, and the statistics of a long run stay bounded."""
from __future__ import annotations

import numpy as np
import pytest

from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.soak import SoakSample, format_soak, release_freed_heap, rss_mib, slope_per_1000, soak
from ros_amf.runtime.stats import PipelineCounters
from runtime_helpers import tiny_semantic


def test_slope_is_fitted_after_warmup_only():
    # 50 MiB of warm-up growth, then 0.5 MiB per 1,000 frames
    samples = [SoakSample(f, 0.0, (100 + f / 20 if f <= 1000 else 150 + 0.5 * (f - 1000) / 1000), 10)
               for f in range(0, 11000, 250)]
    assert slope_per_1000(samples, 1000) == pytest.approx(0.5)
    assert slope_per_1000(samples, 0) > 1.5   # warm-up included, the fit would call it growing
    assert slope_per_1000(samples[:2], 0) is None


def test_soak_accounts_for_every_frame_and_reports_the_slope():
    model = tiny_semantic()
    engine = Engine(EngineConfig(input_sizes={"semantic": model.input_size}, inference_workers=1), None, model,
                    stats=PipelineCounters())
    frames = [np.full((48, 64, 3), v, np.uint8) for v in (0, 80, 160)]
    report = soak(engine, frames, rate_hz=400.0, count=600, warmup_frames=200, sample_every=50, trim_every=100)
    assert report["frames_out"] + report["frames_dropped"] + report["frames_failed"] == 600
    assert report["frames_failed"] == 0 and report["frames_out"] > 0
    assert [s["frame"] for s in report["samples"]] == list(range(0, 600, 50)) + [600]
    assert report["rss_slope_mib_per_1000_after_warmup"] is not None
    assert report["flat"] == (report["rss_slope_mib_per_1000_after_warmup"] <= 1.0)
    assert report["trims"] == (5 if release_freed_heap() else 0)
    assert "MiB per 1,000 frames" in format_soak(report)


def test_soak_refuses_a_warmup_as_long_as_the_run():
    with pytest.raises(ValueError, match="warm-up"):
        soak(None, [], 10.0, 100, warmup_frames=100)


def test_statistics_stay_bounded_over_a_long_run():
    stats = PipelineCounters(window=500)
    for i in range(20_000):
        stats.frame_in()
        stats.frame_out({"inference": float(i % 7), "end_to_end": 1.0})
        if i % 3 == 0:
            stats.dropped()
    snap = stats.snapshot()
    assert snap.frames_in == 20_000 and snap.frames_out == 20_000 and snap.frames_dropped == 6667
    assert max(len(samples) for samples in stats._latency.values()) == 500
    assert len(stats._in_times) <= 4096 and len(stats._out_times) <= 4096
    assert rss_mib() > 10
