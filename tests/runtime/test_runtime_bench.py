"""The runtime benchmark: overlap arithmetic, the shipped-checkpoint default, and one tiny end-to-end run
that writes its JSON with both bare layouts, paced latency and dispatch counts."""
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

import pytest
import yaml

from ros_amf.apps import bench
from ros_amf.runtime.benchmark import stream_overlap
from runtime_helpers import TINY_INSTANCE, TINY_SEMANTIC

ROOT = Path(__file__).resolve().parents[2]


def test_stream_overlap_counts_time_with_two_streams_busy():
    intervals = [("copy", 0.0, 2.0), ("inference/instance", 1.0, 5.0), ("postprocess", 4.0, 6.0)]
    result = stream_overlap(intervals)
    assert result["union_ms"] == pytest.approx(6.0)
    assert result["overlapped_ms"] == pytest.approx(2.0)     # [1,2] and [4,5]
    assert result["busy_ms"]["inference/instance"] == pytest.approx(4.0)
    assert result["sum_busy_over_union"] == pytest.approx(8.0 / 6.0)


def test_checkpoint_auto_is_the_shipped_one_beside_the_config(tmp_path):
    config = ROOT / "models" / "amf_sparseinst_r18slim.yaml"
    assert bench.checkpoint_for(str(config), "auto") == str(config.with_suffix(".pt"))
    assert bench.checkpoint_for(str(tmp_path / "mine.yaml"), "auto") is None     # nothing shipped: random
    assert bench.checkpoint_for(str(config), "") is None
    assert bench.checkpoint_for(str(config), "other.pt") == "other.pt"


def test_tiny_benchmark_run_reports_all_modes_identical_outputs_and_memory(tmp_path, capsys):
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    (tmp_path / "sem.yaml").write_text(yaml.safe_dump(TINY_SEMANTIC))
    out = tmp_path / "bench.json"
    assert bench.main(["--instance-config", str(tmp_path / "inst.yaml"), "--semantic-config",
                       str(tmp_path / "sem.yaml"), "--image", "48x64", "--short-side", "64", "--max-long-side", "96",
                       "--frames", "4", "--rounds", "1", "--score-threshold", "0.0", "--memory-frames", "12",
                       "--paced-seconds", "0.3", "--paced-min-frames", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["output_agreement"] > 0.99 and report["message_filling"] is True
    assert min(report["bare_fps"], report["pipelined_fps"], report["naive_fps"]) > 0
    assert report["pipelined_stats"]["frames_out"] == 4
    memory = report["memory"]
    assert memory["frames_fed"] == 12
    assert memory["frames_out"] + memory["frames_dropped"] + memory["frames_failed"] == 12
    output = capsys.readouterr().out
    assert "pipelined / naive" in output

    # both bare layouts measured, the better one is the reference, and the layouts are named
    assert report["checkpoints"] == {"instance": None, "semantic": None}       # no .pt beside the tiny YAMLs
    assert report["bare_fps"] == max(report["bare_serial_fps"], report["bare_workers_fps"])
    assert report["bare_fps"] == report[f"{report['bare_reference']}_fps"]
    assert report["pipelined_over_bare"] == pytest.approx(report["pipelined_fps"] / report["bare_fps"])
    workers, threads = report["inference_workers"], report["torch_threads_per_worker"]
    assert report["layouts"]["pipelined"] == report["layouts"]["bare_workers"]
    assert report["layouts"]["bare_workers"].startswith(f"{workers} frame")
    assert report["layouts"]["bare_serial"].startswith("1 frame x ")
    assert f"x {threads} thread" in report["layouts"]["pipelined"]
    assert all(len(v) == 1 and v[0] > 0 for v in report["rounds"].values())
    assert "<- reference" in output

    # paced latency: every frame fed is accounted for, latency only over frames that came out
    runs = report["paced_latency"]["runs"]
    assert set(runs) == {"30 Hz", "80% of peak"}
    assert runs["80% of peak"]["rate_hz"] == pytest.approx(0.8 * report["pipelined_fps"])
    for run in runs.values():
        assert run["frames_fed"] >= 3 and run["frames_out"] >= 1
        assert run["frames_out"] + run["frames_dropped"] + run["frames_failed"] == run["frames_fed"]
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]

    # dispatches per forward per model, on the GPU code path (meta) and the CPU one
    for task in ("instance", "semantic"):
        row = report["dispatches_per_forward"][task]
        assert min(row["input_hw"]) > 0
        for device in ("meta", "cpu"):
            assert row[device]["dispatches"] >= row[device]["kernels"] > 10
    assert "dispatches per forward" in output


def test_bad_paced_rate_is_one_clear_sentence(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--paced-hz", "0"])
    assert "--paced-hz must be above 0" in capsys.readouterr().err


def test_user_mistakes_in_the_bench_and_info_commands_are_one_sentence_each(tmp_path, capsys):
    """A wrong image size, config, checkpoint, device or input size: exit 2 (or argparse's), a sentence, no traceback."""
    from ros_amf.apps import demo, model_info, soak

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v for k, v in TINY_INSTANCE.items()}))
    base = ["--tasks", "instance", "--instance-config", str(config)]
    with pytest.raises(SystemExit):
        bench.main([*base, "--image", "480"])
    assert "--image '480' is not HxW" in capsys.readouterr().err
    for extra, says in ((["--instance-checkpoint", str(tmp_path / "missing.pt")], "missing.pt"),
                        (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else [], "cuda"),
                        (["--input-short-side", "16"], "16")):
        if not extra:
            continue
        assert bench.main([*base, *extra, "--frames", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ros-amf bench runtime: ") and says in err and "Traceback" not in err
    assert soak.main(["--tasks", "instance", "--instance-config", str(config), "--input-short-side", "16"]) == 2
    assert capsys.readouterr().err.startswith("ros-amf bench soak: ")
    assert model_info.main([str(config), "--size", "0"]) == 2
    assert "must be positive multiples of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.main(["--png-every", "0"])
    assert "--png-every must be 1 or more" in capsys.readouterr().err
