"""``ros-amf eval ceiling --task semantic``: a perfect host loses a thin pole on a coarse grid and keeps it on a fine one."""
import json

import numpy as np
import pytest

from ros_amf.apps.cli import main as cli_main
from ros_amf.data.synthetic.dataset import make_dataset
from ros_amf.evaluation.ceiling import oracle_label_map, semantic_ceiling
from ros_amf.evaluation.miou import ConfusionMatrix, iou_per_class
from ros_amf.runtime.preprocess import InputSize


class LabelMaps:
    """The two members a semantic data set has that the ceiling reads."""

    def __init__(self, labels, class_names):
        self.labels, self.class_names = labels, class_names

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"label": self.labels[index]}


def street_with_pole():
    """96x128: class 0 above, class 2 in the bottom half, a 2-pixel-wide class-1 pole, an ignore (255) corner."""
    label = np.zeros((96, 128), np.uint8)
    label[48:] = 2
    label[10:90, 60:62] = 1
    label[:8, :8] = 255
    return label


def pole_iou(label, size):
    matrix = ConfusionMatrix(3)
    matrix.update(oracle_label_map(label, 3, size), label)
    return iou_per_class(matrix.matrix)


def test_a_thin_pole_is_lost_on_a_coarse_grid_and_kept_on_a_fine_one():
    label = street_with_pole()
    # at 32/43 a grid cell spans 12 label pixels: the 2-pixel pole is a sixth of every cell it crosses
    coarse = pole_iou(label, InputSize(32, 43))
    fine = pole_iou(label, InputSize(384, 512))
    assert coarse[1] == pytest.approx(0.0, abs=1e-9)
    assert fine[1] > 0.8
    # the wide regions survive either way
    assert coarse[0] > 0.9 and coarse[2] > 0.9 and fine[0] > 0.97 and fine[2] > 0.97


def test_ignore_pixels_are_never_scored_and_the_summary_splits_small_classes():
    label = street_with_pole()
    row = semantic_ceiling(LabelMaps([label, label], ["sky", "pole", "road"]), InputSize(384, 512), small_ids=[1])
    metrics = row["metrics"]
    assert row["images"] == 2 and row["stride"] == 4
    assert metrics["pixels"] == 2 * (96 * 128 - 64)   # the 8x8 ignore corner left out
    assert metrics["miou_small"] == pytest.approx(metrics["per_class"]["pole"])
    assert metrics["miou_large"] == pytest.approx((metrics["per_class"]["sky"] + metrics["per_class"]["road"]) / 2)


def test_cli_reads_a_cityscapes_layout_and_writes_json(tmp_path, capsys):
    make_dataset(tmp_path / "synth", frames=2, seed=5, val_fraction=0.5, size=(128, 96), progress=False)
    out = tmp_path / "ceiling.json"
    assert cli_main(["eval", "ceiling", "--task", "semantic", "--data", str(tmp_path / "synth"),
                     "--short-side", "32", "96", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 32/43 |" in printed and "| 96/128 |" in printed and "mIoU_S" in printed
    rows = json.loads(out.read_text())
    # a 96x128 street frame's small objects are a few pixels: a third of the size loses more of them
    assert [r["input"]["short_side"] for r in rows] == [32, 96]
    assert rows[1]["metrics"]["miou"] > rows[0]["metrics"]["miou"] + 0.1


def test_cli_names_a_missing_semantic_data_set(tmp_path, capsys):
    assert cli_main(["eval", "ceiling", "--task", "semantic", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("ros-amf eval ceiling: ")
