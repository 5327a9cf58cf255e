"""Start-up faults: a wrong checkpoint or parameter stops the node with one clear sentence, before it
subscribes to anything (never half-working)."""
import dataclasses
import itertools

import pytest
import torch
import yaml
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from ros_amf.contract.checkpoint import CheckpointError, save_checkpoint
from ros_amf.contract.input_size import InputSize
from ros_amf.modeling.sparseinst.model import build_instance_model
from ros_amf.modeling.semantic.model import build_semantic_model
from ros_amf.ros.node import PerceptionNode, SemanticSegmentationNode
from ros_amf.runtime.loading import load_model
from ros_helpers import spin_until
from runtime_helpers import TINY_SEMANTIC, tiny_config

pytestmark = pytest.mark.ros

_names = itertools.count()


@pytest.fixture
def files(tmp_path):
    inst_cfg, sem_cfg = tiny_config("instance"), tiny_config("semantic")
    paths = {"instance.yaml": tmp_path / "inst.yaml", "semantic.yaml": tmp_path / "sem.yaml"}
    paths["instance.yaml"].write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in dataclasses.asdict(inst_cfg).items()}))
    paths["semantic.yaml"].write_text(yaml.safe_dump(TINY_SEMANTIC))
    paths["instance.pt"] = save_checkpoint(tmp_path / "inst.pt", task="instance",
                                           model_config=dataclasses.asdict(inst_cfg), class_names=["a", "b", "c"],
                                           state_dict=build_instance_model(inst_cfg).state_dict(), half=True)
    paths["semantic.pt"] = save_checkpoint(tmp_path / "sem.pt", task="semantic",
                                           model_config=dataclasses.asdict(sem_cfg),
                                           class_names=["road", "wall", "car", "sky"],
                                           state_dict=build_semantic_model(sem_cfg).state_dict())
    five = dataclasses.replace(sem_cfg, num_classes=5)
    paths["semantic5.pt"] = save_checkpoint(tmp_path / "sem5.pt", task="semantic",
                                            model_config=dataclasses.asdict(five), class_names=list("abcde"),
                                            state_dict=build_semantic_model(five).state_dict())
    return paths


def test_matching_config_and_checkpoint_load_with_the_checkpoints_class_names(files):
    model = load_model("semantic", files["semantic.yaml"], files["semantic.pt"])
    assert model.class_names == ["road", "wall", "car", "sky"] and not model.random_weights
    assert not model.module.training


def test_checkpoint_of_the_other_task_is_refused(files):
    with pytest.raises(CheckpointError, match="holds a semantic model"):
        load_model("instance", files["instance.yaml"], files["semantic.pt"])


def test_checkpoint_with_another_class_count_names_the_key(files):
    with pytest.raises(CheckpointError, match="num_classes"):
        load_model("semantic", files["semantic.yaml"], files["semantic5.pt"])


def test_checkpoint_alone_builds_its_own_model(files):
    model = load_model("semantic", None, files["semantic5.pt"])
    assert model.num_classes == 5


def test_node_with_a_wrong_checkpoint_does_not_come_up(ros_context, files):
    import rclpy
    name = f"broken_{next(_names)}"
    params = [Parameter("semantic.config", value=str(files["semantic.yaml"])),
              Parameter("semantic.checkpoint", value=str(files["semantic5.pt"])),
              Parameter("input_topic", value=f"/{name}/image_raw")]
    with pytest.raises(CheckpointError, match="num_classes"):
        SemanticSegmentationNode(name, context=ros_context, parameter_overrides=params)
    probe = rclpy.create_node(f"probe_{name}", context=ros_context)
    # a live node the probe must see first: proof that discovery had time to find the broken one too
    alive = rclpy.create_node(f"alive_{name}", context=ros_context)
    alive.create_subscription(Image, f"/alive_{name}/image_raw", lambda _: None, 1)
    try:
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
        executor.add_node(probe)
        assert spin_until(executor, lambda: f"alive_{name}" in probe.get_node_names()
                          and probe.count_subscribers(f"/alive_{name}/image_raw") == 1, 15.0)
        assert name not in probe.get_node_names()
        assert probe.count_subscribers(f"/{name}/image_raw") == 0
    finally:
        alive.destroy_node()
        probe.destroy_node()


def test_node_starts_from_config_and_checkpoint_files(ros_context, files):
    name = f"ok_{next(_names)}"
    params = [Parameter("semantic.config", value=str(files["semantic.yaml"])),
              Parameter("semantic.checkpoint", value=str(files["semantic.pt"])),
              Parameter("instance.config", value=str(files["instance.yaml"])),
              Parameter("instance.checkpoint", value=str(files["instance.pt"])),
              Parameter("input_topic", value=f"/{name}/image_raw"), Parameter("class_filter", value=["b"])]
    node = PerceptionNode(name, context=ros_context, parameter_overrides=params)
    try:
        assert node.engine.config.class_filter == (1,)
        assert node.engine.input_sizes == {task: tiny_config(task).input_size for task in ("instance", "semantic")}
        assert node.get_parameter("score_threshold").value == 0.3
        assert node.describe_parameter("device").description
    finally:
        node.destroy_node()


@pytest.mark.parametrize("joint", [False, True])
def test_each_model_runs_at_the_input_size_of_its_parameters(ros_context, files, joint):
    params = [Parameter("semantic.config", value=str(files["semantic.yaml"])),
              Parameter("instance.config", value=str(files["instance.yaml"])), Parameter("joint", value=joint),
              Parameter("semantic.input_size.short_side", value=96)]
    node = PerceptionNode(f"sizes_{next(_names)}", context=ros_context, parameter_overrides=params)
    try:
        own = tiny_config("instance").input_size   # instance parameters left at 0
        # joint mode: one backbone forward on one input, the instance model's
        assert node.engine.input_sizes == {"instance": own, "semantic": own if joint else InputSize(96, 96)}
    finally:
        node.destroy_node()


@pytest.mark.parametrize("param,value,match", [
    ("class_filter", ["unicorn"], "class_filter"),
    ("input_qos", "fastest", "input_qos"),
    ("precision", "int3", "precision"),
    ("device", "tpu", "device"),
    ("instance.input_size.short_side", 16, "instance.input_size"),
    pytest.param("device", "cuda", "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_parameters_are_one_clear_sentence(ros_context, files, param, value, match):
    params = [Parameter("semantic.config", value=str(files["semantic.yaml"])),
              Parameter("instance.config", value=str(files["instance.yaml"])), Parameter(param, value=value)]
    with pytest.raises(ValueError, match=match):
        PerceptionNode(f"bad_{next(_names)}", context=ros_context, parameter_overrides=params)
