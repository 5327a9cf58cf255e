"""The checkpoints shipped in models/: each matches its published hash, fits the size limit, and loads
into the model its own config builds (the pair the launch files and `make demo` use)."""
from pathlib import Path

import pytest

from ros_amf.contract.checkpoint import load_checkpoint, sha256_of
from ros_amf.runtime.loading import load_model

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = sorted(MODELS.glob("*.pt"))


def test_some_checkpoints_are_shipped():
    assert {p.name for p in SHIPPED} >= {"amf_sparseinst_r18slim.pt", "fpn_afma_r18slim.pt"}


@pytest.mark.parametrize("checkpoint", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_matches_its_published_sha256(checkpoint):
    listed = (MODELS / f"{checkpoint.stem}.sha256").read_text().split()
    assert listed[1] == checkpoint.name
    assert listed[0] == sha256_of(checkpoint), f"update models/{checkpoint.stem}.sha256 after re-shipping"


@pytest.mark.parametrize("checkpoint", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_is_small_and_loads_with_its_config(checkpoint):
    assert checkpoint.stat().st_size <= 20 * 2 ** 20
    task = load_checkpoint(checkpoint)["task"]
    loaded = load_model(task, MODELS / f"{checkpoint.stem}.yaml", checkpoint)
    assert not loaded.random_weights
    assert len(loaded.class_names) >= 2


def test_shipped_joint_set_shares_one_backbone_and_joint_mode_equals_the_two_models_apart():
    import numpy as np
    from ros_amf.data.synthetic.render import render_still
    from ros_amf.runtime.loading import joint_model
    from ros_amf.runtime.pipeline import Engine, EngineConfig
    instance = load_model("instance", MODELS / "amf_sparseinst_effl0.yaml", MODELS / "amf_sparseinst_effl0.pt")
    semantic = load_model("semantic", MODELS / "joint_effl0_semantic.yaml", MODELS / "joint_effl0_semantic.pt")
    _, warnings = joint_model(instance.module, semantic.module)
    assert warnings == []                    # identical backbones: sharing loses nothing
    image = np.ascontiguousarray(render_still(3, 0, width=640, height=480).image)
    config = dict(backend="torch", score_threshold=0.3)
    together = Engine(EngineConfig(joint=True, **config), instance, semantic).process(image, "rgb8")
    apart = Engine(EngineConfig(**config), instance, semantic).process(image, "rgb8")
    assert together.error is None and apart.error is None
    assert np.array_equal(together.semantic.labels, apart.semantic.labels)
    assert np.array_equal(together.instances.ids, apart.instances.ids)
    assert len(apart.instances.scores) > 0  # a street frame: the trained model finds things


@pytest.mark.parametrize("launch_file", ["perception.yaml", "replay.yaml", "multi_camera.yaml",
                                         "multi_camera_per_node.yaml"])
def test_launch_files_run_the_shipped_default_pair(launch_file):
    import yaml
    from ros_amf.contract import shipped
    nodes = yaml.safe_load((MODELS.parent / "launch" / launch_file).read_text())
    # nodes that name models (per-node files share theirs under /**)
    named = [params["ros__parameters"] for params in nodes.values() if "instance" in params["ros__parameters"]]
    assert named, f"no node names its models in launch/{launch_file}"
    for params in named:
        for task, files in shipped.DEFAULTS.items():
            assert (params[task]["config"], params[task]["checkpoint"]) == files, \
                f"launch/{launch_file} {task}: update it with ros_amf/contract/shipped.py"
            assert (MODELS.parent / files.checkpoint).exists()
