"""`ros-amf model-info --dispatches` prints and records the ops one forward dispatches."""
import json

from ros_amf.apps.model_info import main


def test_model_info_reports_dispatches(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["models/fpn_afma_r18slim.yaml", "--size", "256x320", "--depth", "1", "--dispatches",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())["dispatches"]
    assert f"dispatches per forward: {report['dispatches']} ops, {report['kernels']} kernels" in printed
    assert 0 < report["kernels"] < report["dispatches"] and report["top_ops"]["convolution"] > 10
