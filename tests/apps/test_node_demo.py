"""`ros-amf demo` end to end on a tiny bag: node over rclpy, table, overlays, JSON report."""
import json
from dataclasses import asdict, is_dataclass

import pytest
import yaml

from ros_amf.apps import demo
from rosbags_writer import write_image_bag
from runtime_helpers import TINY_INSTANCE, TINY_SEMANTIC

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_accounts_for_every_frame_and_writes_overlays_and_report(tmp_path, capsys):
    bag = write_image_bag(tmp_path / "bag", frames=10, storage="mcap", height=48, width=64, row_padding=4)
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    (tmp_path / "sem.yaml").write_text(yaml.safe_dump(TINY_SEMANTIC))
    out = tmp_path / "out"
    code = demo.main(["--bag", str(bag), "--out", str(out), "--loops", "1", "--rate", "0.5", "--png-every", "1",
                      "--short-side", "64", "--max-long-side", "96",
                      "--instance-config", str(tmp_path / "inst.yaml"), "--instance-checkpoint", "none",
                      "--semantic-config", str(tmp_path / "sem.yaml"), "--semantic-checkpoint", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "p95 ms" in printed and "end_to_end" in printed and "RANDOM weights" in printed
    report = json.loads((out / "report.json").read_text())
    stats = report["stats"]
    assert report["frames_sent"] == 10
    assert stats["frames_in"] + report["frames_lost_in_transport"] == 10
    assert stats["frames_in"] == (stats["frames_out"] + stats["frames_dropped"] + stats["frames_rejected"]
                                  + stats["frames_failed"])
    assert stats["frames_out"] >= 1 and report["overlay_pngs"]
    assert all((out / p.split("/")[-1]).is_file() for p in report["overlay_pngs"])
    assert {s["stage"] for s in stats["stages"]} >= {"preprocess", "inference", "postprocess", "end_to_end"}
