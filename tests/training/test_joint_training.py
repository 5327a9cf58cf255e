"""The shared-backbone model: one backbone pass for both heads, trained as one, shipped as two checkpoints
that the engine's joint mode runs in one pass with the same outputs as the two models run apart."""
import numpy as np
import pytest
import torch

from ros_amf.contract.checkpoint import load_checkpoint
from ros_amf.contract.config import ConfigError, from_dict
from ros_amf.contract.errors import DatasetFileError
from ros_amf.apps.train import main_joint
from ros_amf.data.datasets.cityscapes import CityscapesDataset
from ros_amf.data.datasets.coco import CocoInstances
from ros_amf.data.datasets.paired import PairedAnnotations
from ros_amf.modeling.joint import JointModelConfig, build_joint_model
from ros_amf.runtime.loading import joint_model, load_model
from ros_amf.runtime.pipeline import Engine, EngineConfig

TINY = ("model:\n  backbone: resnet\n  backbone_depth: 18\n  backbone_width: 8\n"
        "  input_size: {short_side: 96, max_long_side: 128}\n"
        "  instance: {num_classes: 8, encoder_channels: 16, context: simam_aspp, lite_bifpn: true, fem: true,\n"
        "             decoder_channels: 16, decoder_convs: 1, num_masks: 8, groups: 2, expand_dim: 16,\n"
        "             kernel_dim: 8, head_norm: gn}\n"
        "  semantic: {architecture: fpn, num_classes: 19, decoder_channels: 16, afma: true, afma_depth: 2,\n"
        "             afma_patch_size: 4}\n")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "joint.yaml"
    path.write_text(TINY)
    return path


def _config() -> JointModelConfig:
    import yaml
    return from_dict(JointModelConfig, yaml.safe_load(TINY)["model"])


def test_one_backbone_pass_feeds_both_heads_with_the_same_outputs_as_each_model_alone():
    model = build_joint_model(_config()).eval()
    assert model.instance.backbone is model.semantic.encoder     # one module, one set of weights
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    images = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        joint = model(images)
        assert len(calls) == 1
        alone_instance, alone_semantic = model.instance(images), model.semantic(images)
    assert torch.equal(joint["instance"]["pred_masks"], alone_instance["pred_masks"])
    assert torch.equal(joint["semantic"]["logits"], alone_semantic["logits"])


def test_backbone_settings_are_given_once_and_a_dilated_semantic_host_is_refused():
    cfg = _config()
    assert cfg.instance.input_size == cfg.semantic.input_size == cfg.input_size
    assert (cfg.instance.backbone_width, cfg.semantic.encoder_width) == (8, 8)
    with pytest.raises(ValueError, match="dilated encoder"):
        JointModelConfig(semantic=from_dict(type(cfg.semantic), {"architecture": "deeplabv3"}))


def test_paired_annotations_join_by_image_name_and_refuse_data_of_other_images(tiny_data, tmp_path):
    coco = CocoInstances(tiny_data / "coco" / "images" / "train", tiny_data / "coco" / "annotations" / "instances_train.json")
    cityscapes = CityscapesDataset(tiny_data / "cityscapes", "train", instances=False)
    paired = PairedAnnotations(coco, cityscapes)
    assert len(paired) == len(coco) == len(cityscapes) and paired.unpaired == 0
    sample = paired[0]
    assert sample["label"].shape == sample["image"].shape[:2] and "masks" in sample
    assert np.array_equal(sample["label"], cityscapes[0]["label"])
    cityscapes.images = [p.with_name("other_" + p.name) for p in cityscapes.images]
    with pytest.raises(DatasetFileError, match="names no image"):
        PairedAnnotations(coco, cityscapes)


def test_joint_training_ships_two_checkpoints_that_joint_mode_runs_as_one(tiny_data, tiny_config, tmp_path):
    argv = ["--config", str(tiny_config), "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--iterations", "2",
            "--batch-size", "2", "--short-side", "96", "--crop", "64x64", "--checkpoint-every", "1", "--log-every", "1",
            "--threads", "1", "--no-progress", "--export", str(tmp_path / "shipped" / "joint.pt"),
            # no forked loader processes: this test process already runs DDS, OpenVINO and inductor threads
            "--workers", "0"]
    (tmp_path / "shipped").mkdir()
    assert main_joint(argv) == 0
    parts = {task: tmp_path / "shipped" / f"joint_{task}.pt" for task in ("instance", "semantic")}
    assert all(p.is_file() and p.with_suffix(".sha256").is_file() for p in parts.values())
    assert load_checkpoint(tmp_path / "run" / "final.pt")["task"] == "joint"
    instance = load_model("instance", None, parts["instance"])
    semantic = load_model("semantic", None, parts["semantic"])
    _, warnings = joint_model(instance.module, semantic.module)
    assert warnings == []                   # identical backbones: nothing is lost by sharing
    image = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    together = Engine(EngineConfig(score_threshold=0.0, joint=True), instance, semantic).process(image, "rgb8")
    apart = Engine(EngineConfig(score_threshold=0.0), instance, semantic).process(image, "rgb8")
    assert together.error is None and apart.error is None
    assert np.array_equal(together.semantic.labels, apart.semantic.labels)
    assert np.array_equal(together.instances.ids, apart.instances.ids)

    # fine-tuning from the two shipped parts: the instance part's backbone is the one kept
    from ros_amf.training.joint import JointTask
    from ros_amf.training.config import load_run_config
    cfg, _ = load_run_config(tiny_config, "joint")
    coco = CocoInstances(tiny_data / "coco" / "images" / "train", tiny_data / "coco" / "annotations" / "instances_train.json")
    task = JointTask(cfg, PairedAnnotations(coco, CityscapesDataset(tiny_data / "cityscapes", "train", instances=False)),
                     init_parts=(parts["instance"], parts["semantic"]))
    assert task.model_config.backbone_weights is None
    started = task.build_model()
    shipped = load_checkpoint(parts["semantic"])["state_dict"]
    for name, value in started.semantic.state_dict().items():
        assert torch.equal(value, shipped[name].to(value.dtype)), name

    # --freeze-instance: the instance part comes out exactly as it went in; only the semantic heads learn
    frozen_argv = ["--config", str(tiny_config), "--data", str(tiny_data), "--out", str(tmp_path / "frozen"),
                   "--iterations", "2", "--batch-size", "2", "--short-side", "96", "--crop", "64x64",
                   "--checkpoint-every", "1", "--log-every", "1", "--threads", "1", "--no-progress", "--workers", "0",
                   "--lr", "0.01", "--warmup-iters", "0", "--init-instance", str(parts["instance"]),
                   "--init-semantic", str(parts["semantic"]), "--freeze-instance",
                   "--export", str(tmp_path / "shipped" / "frozen.pt")]
    assert main_joint(frozen_argv) == 0
    before_instance = load_checkpoint(parts["instance"])["state_dict"]
    after_instance = load_checkpoint(tmp_path / "shipped" / "frozen_instance.pt")["state_dict"]
    assert before_instance.keys() == after_instance.keys()
    assert all(torch.equal(before_instance[k], after_instance[k]) for k in before_instance)
    before_semantic = load_checkpoint(parts["semantic"])["state_dict"]
    after_semantic = load_checkpoint(tmp_path / "shipped" / "frozen_semantic.pt")["state_dict"]
    heads = [k for k in before_semantic if not k.startswith("encoder.") and before_semantic[k].is_floating_point()
             and "running_" not in k]
    moved = [k for k in heads if not torch.equal(before_semantic[k], after_semantic[k])]
    assert moved, "the semantic heads did not train"
    # the shared backbone inside the semantic part is the frozen instance backbone
    backbone = {k[len("backbone."):]: v for k, v in after_instance.items() if k.startswith("backbone.")}
    encoder = {k[len("encoder."):]: v for k, v in after_semantic.items() if k.startswith("encoder.")}
    assert backbone.keys() == encoder.keys() and all(torch.equal(backbone[k], encoder[k]) for k in backbone)


def test_freezing_the_instance_model_needs_trained_parts(tiny_data, tiny_config, tmp_path, capsys):
    argv = ["--config", str(tiny_config), "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--iterations", "1",
            "--threads", "1", "--no-progress", "--workers", "0", "--freeze-instance"]
    assert main_joint(argv) != 0
    assert "freezing the instance model needs a trained one" in capsys.readouterr().err
