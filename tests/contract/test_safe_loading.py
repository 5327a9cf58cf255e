"""A checkpoint can never run code: a pickle whose reduce step would create a file is refused with one
sentence, before anything runs, through the library loader, the command line (``eval``, ``import-weights``)
and the node parameter."""
import itertools
import subprocess
import sys

import pytest
import torch

from ros_amf.contract.checkpoint import CheckpointError, load_checkpoint

_names = itertools.count()


class _CreatesAFile:
    """Unpickling this calls open(path, 'w'): the file appearing would prove code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "model_zoo.pt"
    torch.save({"format": "ros_amf-checkpoint/1", "task": "instance", "model_config": {},
                "class_names": [], "state_dict": {}, "meta": _CreatesAFile(marker)}, path)
    return path, marker


def test_library_loader_refuses_a_pickle_that_would_run_code(malicious):
    path, marker = malicious
    with pytest.raises(CheckpointError, match="was refused: its pickle asks for code") as caught:
        load_checkpoint(path)
    assert "asks for code (io.open)" in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


def test_command_line_refuses_it_in_one_sentence(malicious, tmp_path):
    path, marker = malicious
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text('{"images": [], "annotations": [], "categories": []}')
    (tmp_path / "images" / "val").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "ros_amf.apps.cli", "eval", "instance", "--checkpoint", str(path),
                             "--data", str(tmp_path), "--out", str(tmp_path / "eval")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "was refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_import_weights_refuses_a_model_zoo_pth_that_would_run_code(tmp_path):
    """A detectron2-style .pth ({'model': state_dict}) with a reduce step hidden among its tensors."""
    marker = tmp_path / "code_ran"
    evil = tmp_path / "EVIL.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(2), "backbone.res2.0.conv1.weight":
                          _CreatesAFile(marker)}, "__author__": "someone"}, evil)
    out = tmp_path / "imported" / "evil"
    result = subprocess.run([sys.executable, "-m", "ros_amf.apps.cli", "import-weights", "sparseinst", str(evil),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "was refused: its pickle asks for code (io.open)" in message and str(evil) in message
    assert "\n" not in message and "Traceback" not in message   # one sentence, no traceback
    assert not marker.exists()
    assert not out.with_suffix(".pt").exists() and not out.with_suffix(".yaml").exists()


def test_node_parameter_refuses_it_and_the_node_does_not_come_up(ros_context, malicious):
    from rclpy.parameter import Parameter

    from ros_amf.ros.node import InstanceSegmentationNode
    path, marker = malicious
    name = f"zoo_{next(_names)}"
    with pytest.raises(CheckpointError, match="was refused"):
        InstanceSegmentationNode(name, context=ros_context, parameter_overrides=[
            Parameter("instance.checkpoint", value=str(path)), Parameter("input_topic", value=f"/{name}/image")])
    assert not marker.exists()


def test_training_checkpoints_with_numpy_rng_state_still_load(tmp_path):
    import numpy as np

    from ros_amf.contract.checkpoint import save_checkpoint
    path = save_checkpoint(tmp_path / "train.pt", task="semantic", model_config={}, class_names=["a"],
                           state_dict={"w": torch.ones(2)}, train_state={"rng": {"numpy": np.random.get_state()}})
    state = load_checkpoint(path)["train_state"]["rng"]["numpy"]
    assert state[0] == "MT19937" and state[1].dtype == np.uint32 and len(state[1]) == 624
