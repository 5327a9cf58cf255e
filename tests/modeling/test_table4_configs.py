"""models/table4_*.yaml: one config per row of the AMF-SparseInst paper's Table 4, at R-50-d-DCNv2 and at
the slim CPU size (from scratch, and on the ImageNet-pretrained EfficientNet-Lite0). Each builds and runs
``model-info``; within a size the rows differ only in the three Table 4 switches (context, lite_bifpn, fem),
and the full row equals the repository's AMF model there."""
import dataclasses
import json
from pathlib import Path

import pytest

from ros_amf.apps.model_info import main
from ros_amf.contract.config import from_dict, read_yaml
from ros_amf.modeling.sparseinst.model import InstanceModelConfig

MODELS = Path(__file__).resolve().parents[2] / "models"
SWITCHES = ("context", "lite_bifpn", "fem")
# Table 4, top to bottom: (context, Lite-BiFPN, FEM)
TABLE4_ROWS = [("ppm", False, False), ("simam_aspp", False, False), ("simam_aspp", True, False),
               ("simam_aspp", False, True), ("simam_aspp", True, True)]
GROUPS = {"r50d_dcn": sorted(MODELS.glob("table4_row*.yaml")), "slim": sorted(MODELS.glob("table4_slim_row*.yaml")),
          "effl0": sorted(MODELS.glob("table4_effl0_row*.yaml"))}


def model_section(path: Path) -> dict:
    data = read_yaml(str(path))
    assert set(data) == {"model"}, f"{path.name}: a Table 4 config holds the model: section only"
    return data["model"]


def parsed(path: Path) -> InstanceModelConfig:
    data = read_yaml(str(path))
    return from_dict(InstanceModelConfig, data["model"], where=str(path))


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_rows_are_table4_and_differ_only_in_the_three_switches(group):
    paths = GROUPS[group]
    rest = [{k: v for k, v in model_section(p).items() if k not in SWITCHES} for p in paths]
    assert len(paths) == len(TABLE4_ROWS), f"{group}: {[p.name for p in paths]}"
    configs = [parsed(p) for p in paths]
    assert [(c.context, c.lite_bifpn, c.fem) for c in configs] == TABLE4_ROWS
    # Everything but the switches is the same, in the file and once defaults are filled in.
    assert all(r == rest[0] for r in rest), group
    parsed_rest = [{k: v for k, v in dataclasses.asdict(c).items() if k not in SWITCHES} for c in configs]
    assert all(r == parsed_rest[0] for r in parsed_rest), group
    # The paper's readings of the modules (3x3 plain ASPP branch, FEM attentions from N5 / N3).
    assert configs[0].aspp_plain_kernel == 3 and configs[0].fem_source == "pyramid"
    assert tuple(configs[0].aspp_rates) == (6, 18, 24) and tuple(configs[0].fem_weights) == (0.6, 0.4)


def test_r50_rows_use_the_papers_backbone_and_dcn_placement():
    for path in GROUPS["r50d_dcn"]:
        cfg = parsed(path)
        assert (cfg.backbone_depth, cfg.backbone_width, cfg.deep_stem, cfg.avg_down) == (50, 64, True, True), path.name
        # DCNv2 (modulated) in res3..res5 as in the DCNv2 paper, not SparseInst's DCNv1 in res4..res5.
        assert tuple(cfg.dcn_stages) == (3, 4, 5) and cfg.dcn_modulated, path.name


def test_full_rows_match_the_repositorys_amf_models():
    assert parsed(GROUPS["r50d_dcn"][-1]) == parsed(MODELS / "amf_sparseinst_r50d_dcn.yaml")
    shipped = dataclasses.replace(parsed(MODELS / "amf_sparseinst_r18slim.yaml"), aspp_plain_kernel=3,
                                  fem_source="pyramid")
    slim = parsed(GROUPS["slim"][-1])
    assert slim == dataclasses.replace(shipped, input_size=slim.input_size)
    # the EfficientNet-Lite0 rows 1 and 5 are the claim (a) arms, model section for model section (shared runs)
    assert model_section(GROUPS["effl0"][0]) == read_yaml(str(MODELS / "sparseinst_effl0.yaml"))["model"]
    assert model_section(GROUPS["effl0"][-1]) == read_yaml(str(MODELS / "amf_sparseinst_effl0.yaml"))["model"]


@pytest.mark.parametrize("path", GROUPS["r50d_dcn"] + GROUPS["slim"] + GROUPS["effl0"], ids=lambda p: p.stem)
def test_every_row_builds_and_runs_model_info(path, tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main([str(path), "--size", "64x96", "--depth", "1", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    total, *parts = info["rows"]
    assert [p["module"] for p in parts] == ["backbone", "encoder", "decoder"]
    assert total["params"] == sum(p["params"] for p in parts) > 0
    assert total["torch_flops"] == sum(p["torch_flops"] for p in parts) > 0
    assert f"{path} (instance) at 64x96" in capsys.readouterr().out
