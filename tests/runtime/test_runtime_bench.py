"""The runtime benchmark: overlap arithmetic and one tiny end-to-end run that writes its JSON."""
import json
from dataclasses import asdict, is_dataclass

import pytest
import yaml

from ros_amf.apps import bench
from ros_amf.runtime.benchmark import stream_overlap
from runtime_helpers import TINY_INSTANCE, TINY_SEMANTIC


def test_stream_overlap_counts_time_with_two_streams_busy():
    intervals = [("copy", 0.0, 2.0), ("inference/instance", 1.0, 5.0), ("postprocess", 4.0, 6.0)]
    result = stream_overlap(intervals)
    assert result["union_ms"] == pytest.approx(6.0)
    assert result["overlapped_ms"] == pytest.approx(2.0)     # [1,2] and [4,5]
    assert result["busy_ms"]["inference/instance"] == pytest.approx(4.0)
    assert result["sum_busy_over_union"] == pytest.approx(8.0 / 6.0)


def test_tiny_benchmark_run_reports_all_modes_identical_outputs_and_memory(tmp_path, capsys):
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    (tmp_path / "sem.yaml").write_text(yaml.safe_dump(TINY_SEMANTIC))
    out = tmp_path / "bench.json"
    assert bench.main(["--instance-config", str(tmp_path / "inst.yaml"), "--semantic-config",
                       str(tmp_path / "sem.yaml"), "--image", "48x64", "--short-side", "64", "--max-long-side", "96",
                       "--frames", "4", "--rounds", "1", "--score-threshold", "0.0", "--memory-frames", "12",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["output_agreement"] > 0.99 and report["message_filling"] is True
    assert min(report["bare_fps"], report["pipelined_fps"], report["naive_fps"]) > 0
    assert report["pipelined_stats"]["frames_out"] == 4
    memory = report["memory"]
    assert memory["frames_fed"] == 12
    assert memory["frames_out"] + memory["frames_dropped"] + memory["frames_failed"] == 12
    assert "pipelined / naive" in capsys.readouterr().out
