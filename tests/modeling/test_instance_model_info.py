"""`ros-amf model-info`: per-module parameters and FLOPs that add up, and the paper's figure where it applies."""
import json

import yaml

from ros_amf.modeling.sparseinst.model import InstanceModelConfig
from ros_amf.apps.model_info import main
from ros_amf.modeling.info import paper_figure


def test_model_info_rows_add_up(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"num_classes": 3, "backbone_depth": 18, "backbone_width": 8,
                                                "encoder_channels": 16, "decoder_channels": 16, "num_masks": 4,
                                                "expand_dim": 32, "kernel_dim": 8, "context": "simam_aspp",
                                                "lite_bifpn": True, "fem": True}}))
    assert main([str(config), "--size", "64x96", "--depth", "1", "--json", str(tmp_path / "info.json")]) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    total, *parts = info["rows"]
    assert [p["module"] for p in parts] == ["backbone", "encoder", "decoder"]
    assert total["params"] == sum(p["params"] for p in parts) > 0
    assert total["torch_flops"] == sum(p["torch_flops"] for p in parts) > 0
    assert "GFLOPs" in capsys.readouterr().out


def test_model_info_rejects_unpadded_size(tmp_path, capsys):
    config = tmp_path / "m.yaml"
    config.write_text("model: {num_classes: 2}\n")
    assert main([str(config), "--size", "100"]) == 2
    assert "multiples of 32" in capsys.readouterr().err


def test_paper_figure_only_for_the_papers_backbone():
    amf = InstanceModelConfig(deep_stem=True, avg_down=True, dcn_stages=(3, 4, 5), context="simam_aspp",
                              lite_bifpn=True, fem=True)
    assert paper_figure(amf).startswith("93.9")
    assert paper_figure(InstanceModelConfig(context="simam_aspp", lite_bifpn=True, fem=True)) is None
