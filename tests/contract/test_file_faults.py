"""Damaged files a user can hand us: a checkpoint cut off or with a flipped byte, a YAML with a wrong type, an
unknown key or bad syntax, a COCO file with a bad polygon. Each is one sentence on stderr naming the file and
the problem, exit code 2, never a traceback (through the command line). And a checkpoint write that fails
(disk full) leaves the previous checkpoint intact."""
from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ros_amf.apps.cli import main as cli
from ros_amf.contract import checkpoint as checkpoint_module
from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ros_amf.contract.coco_json import read_coco_instances, segmentation_problem
from ros_amf.contract.errors import DatasetFileError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "amf_sparseinst_r18slim.pt"
CONFIG = ROOT / "models" / "amf_sparseinst_r18slim.yaml"


def one_sentence_error(capsys, argv: list[str], *fragments: str) -> str:
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def coco_dir(tmp_path):
    """A COCO layout with one image; write_annotations(segmentation) fills instances_val.json."""
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "val" / "a.png"), np.zeros((64, 96, 3), np.uint8))

    def write_annotations(segmentation) -> Path:
        path = tmp_path / "annotations" / "instances_val.json"
        path.write_text(json.dumps({
            "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 96}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": segmentation, "area": 10.0,
                             "bbox": [0, 0, 5, 5], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "car"}]}))
        return path

    return tmp_path, write_annotations


# -- checkpoints --------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 100, 3_000_000, -10])
def test_checkpoint_cut_off_anywhere_is_one_sentence_through_the_cli(tmp_path, capsys, coco_dir, keep):
    data, write_annotations = coco_dir
    write_annotations([[10, 10, 30, 10, 30, 30]])
    raw = SHIPPED.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[:keep] if keep >= 0 else raw[:len(raw) + keep])
    one_sentence_error(capsys, ["eval", "instance", "--checkpoint", str(cut), "--data", str(data)],
                       f"checkpoint '{cut}'", "it ends early", "so it is truncated; copy it again.")


def test_checkpoint_with_damaged_weights_is_caught_by_the_zip_checksums(tmp_path):
    raw = bytearray(SHIPPED.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)   # inside the tensor data; torch would load it silently
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"is corrupt: its record '.*/data/\d+' fails its checksum"):
        load_checkpoint(damaged)
    assert load_checkpoint(SHIPPED)["task"] == "instance"   # the intact file passes the same check


def _payload_args() -> dict:
    return dict(task="semantic", model_config={"num_classes": 2}, class_names=["a", "b"],
                state_dict={"w": torch.arange(6.0)})


@pytest.mark.parametrize("failing", ["torch.save", "os.replace"])
def test_checkpoint_write_failing_with_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch, failing):
    path = save_checkpoint(tmp_path / "last.pt", **_payload_args(), meta={"iteration": 1})
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    def disk_full(*args, **kwargs):
        if failing == "torch.save":   # half the file reaches the disk, then the disk is full
            Path(args[1]).write_bytes(b"PK\x03\x04" + bytes(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    target = checkpoint_module.torch if failing == "torch.save" else checkpoint_module.os
    monkeypatch.setattr(target, failing.split(".")[1], disk_full)
    with pytest.raises(OSError) as caught:
        save_checkpoint(path, **_payload_args(), meta={"iteration": 2})
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert load_checkpoint(path)["meta"] == {"iteration": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]   # no temporary file left behind


# -- YAML configs -------------------------------------------------------------------------------------
def _edited_config(tmp_path, old: str, new: str) -> Path:
    text = CONFIG.read_text()
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_config_value_of_the_wrong_type_names_file_and_key(tmp_path, capsys):
    path = _edited_config(tmp_path, "num_classes: 8", "num_classes: eight")
    one_sentence_error(capsys, ["model-info", str(path)], str(path), "num_classes = 'eight' must be of type int",
                       "fix the value")


def test_config_unknown_key_names_file_key_and_the_valid_ones(tmp_path, capsys):
    path = _edited_config(tmp_path, "\n  lr:", "\n  learning_rate:")
    one_sentence_error(capsys, ["train", "instance", "--config", str(path), "--data", str(tmp_path),
                                "--out", str(tmp_path / "run")],
                       f"{path}:train: unknown key 'learning_rate' for TrainConfig", "valid keys are", "'lr'")


def test_config_syntax_error_is_one_line_with_its_position(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  num_classes: [1, 2\n")
    one_sentence_error(capsys, ["model-info", str(path)], f"config file '{path}' is not valid YAML (line 3, column 1",
                       "fix the syntax")


# -- COCO annotation files ----------------------------------------------------------------------------
@pytest.mark.parametrize("segmentation,problem", [
    ([[1, 2, 3, 4]], "polygon 0 of 4 numbers, but a polygon is x,y pairs of at least 3 points"),
    ([[1, 2, 3, 4, 5, 6, 7]], "polygon 0 of 7 numbers"),
    ([[10, 10, 30, 10, 30, 30], [1, "x", 3, 4, 5, 6]], "polygon 1 that is not a list of finite numbers"),
    ([[10, 10, 30, 10, 30, float("nan")]], "polygon 0 that is not a list of finite numbers"),
    ([], "an empty polygon list"),
    ({"counts": "abc"}, "an RLE segmentation without a [height, width] 'size'"),
])
def test_bad_polygon_is_one_sentence_through_the_cli(capsys, coco_dir, segmentation, problem):
    data, write_annotations = coco_dir
    annotations = write_annotations(segmentation)
    one_sentence_error(capsys, ["eval", "instance", "--checkpoint", str(SHIPPED), "--data", str(data)],
                       f"{annotations}: annotation 7 has {problem}", "fix or remove it.")
    with pytest.raises(DatasetFileError, match="annotation 7"):   # the dataset reader and bag ground truth too
        read_coco_instances(annotations, "missing")


def test_valid_segmentations_pass_the_check():
    assert segmentation_problem([[10, 10, 30, 10, 30, 30.5]]) is None
    assert segmentation_problem({"size": [64, 96], "counts": [0, 10, 6134]}) is None
    assert segmentation_problem({"size": [64, 96], "counts": "PPYo0"}) is None


def test_generated_synthetic_annotations_pass_the_check(tmp_path):
    from ros_amf.data.synthetic.dataset import make_dataset
    make_dataset(tmp_path, frames=4, seed=3, val_fraction=0.25, size=(128, 96), progress=False)
    files = sorted(tmp_path.glob("coco/annotations/instances_*.json"))
    assert len(files) == 2
    for path in files:
        read_coco_instances(path, "missing")
