"""Published SparseInst checkpoints (hustvl/SparseInst) import and give the official implementation's outputs.

The checkpoints are written here in the official layout (names and shapes of their detectron2 models)
with random values; ``sparseinst_reference`` runs the same tensors through an independent functional
re-implementation of their code. Each structural difference found while matching ours to theirs has its
own test below the two end-to-end ones.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from sparseinst_reference import (deform_conv_v1, official_state_dict, reference_backbone,  # noqa: E402
                                  reference_forward)

from ros_amf.apps import import_weights  # noqa: E402
from ros_amf.contract.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from ros_amf.contract.input_size import InputSize  # noqa: E402
from ros_amf.contract.labels import COCO_THING_NAMES  # noqa: E402
from ros_amf.contract.pixels import normalise  # noqa: E402
from ros_amf.modeling.backbones.deform_conv import DeformConv2d  # noqa: E402
from ros_amf.modeling.sparseinst import official_weights as ow  # noqa: E402
from ros_amf.modeling.sparseinst.model import build_instance_model  # noqa: E402
from ros_amf.runtime.loading import load_model, pixels_of  # noqa: E402
from ros_amf.runtime.preprocess import preprocess_numpy  # noqa: E402

TOLERANCE = dict(rtol=1e-4, atol=1e-4)
HEIGHT, WIDTH = 96, 128


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _write_pth(tmp_path: Path, state: dict, name: str = "model_final.pth") -> Path:
    path = tmp_path / name
    torch.save({"model": state, "iteration": 269999}, path)   # detectron2's Checkpointer layout
    return path


def _run_node_path(loaded, image: np.ndarray) -> dict[str, torch.Tensor]:
    """The runtime's own pre-processing (RGB, the model's pixel normalisation), then the model."""
    tensor, geometry = preprocess_numpy(image, "rgb8", InputSize(HEIGHT, WIDTH), pixels=pixels_of(loaded.module))
    assert geometry.padded_hw == (HEIGHT, WIDTH)
    with torch.no_grad():
        return loaded.module(tensor)


def _assert_outputs_match(ours: dict, theirs: dict) -> None:
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        assert ours[key].shape == theirs[key].shape, key
        torch.testing.assert_close(ours[key], theirs[key], **TOLERANCE, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("backbone,dcn_stages", [("r50", ()), ("r50vd", (4, 5))], ids=["R-50-G-IAM", "R-50-vd-DCN"])
def test_published_checkpoint_imports_and_matches_the_official_forward(tmp_path, backbone, dcn_stages):
    state = official_state_dict(backbone, dcn_stages, "giam", seed=11)
    pth = _write_pth(tmp_path, state)
    image = _image()
    theirs = reference_forward(state, torch.from_numpy(image).permute(2, 0, 1)[None].float())

    assert import_weights.main(["sparseinst", str(pth), "--out", str(tmp_path / "imported")]) == 0
    config = yaml.safe_load((tmp_path / "imported.yaml").read_text())["model"]
    assert config["num_classes"] == 80 and config["backbone_depth"] == 50 and config["head_norm"] == "none"
    assert config["deep_stem"] == config["avg_down"] == (backbone == "r50vd")
    assert config["dcn_stages"] == list(dcn_stages) and config["dcn_modulated"] is False
    assert config["input_size"] == {"short_side": 640, "max_long_side": 864}
    assert config["pixel_normalisation"]["mean"] == pytest.approx([0.485, 0.456, 0.406])

    from ros_amf.apps.export import _task_of
    assert _task_of(pth, None) == "instance"                      # export onnx takes the .pth as run and eval do
    for loaded in (load_model("instance", tmp_path / "imported.yaml", tmp_path / "imported.pt"),
                   load_model("instance", None, pth)):            # the node given the .pth directly
        assert loaded.class_names == list(COCO_THING_NAMES)
        assert not loaded.random_weights
        _assert_outputs_match(_run_node_path(loaded, image), theirs)


def test_wrong_weights_would_fail_the_comparison(tmp_path):
    """The comparison is sharp: one perturbed tensor deep in the backbone moves the outputs past the tolerance."""
    state = official_state_dict("r50vd", (4, 5), "giam", seed=11)
    image = _image()
    theirs = reference_forward(state, torch.from_numpy(image).permute(2, 0, 1)[None].float())
    state["backbone.layer3.2.conv2_offset.weight"] = state["backbone.layer3.2.conv2_offset.weight"] * 1.5
    loaded = load_model("instance", None, _write_pth(tmp_path, state))
    ours = _run_node_path(loaded, image)
    assert (ours["pred_masks"] - theirs["pred_masks"]).abs().max() > 1e-3


# ------------------------------------------------------------------ structural differences --
def _model_and_state(backbone="r50", dcn_stages=(), decoder="giam"):
    state = official_state_dict(backbone, dcn_stages, decoder, seed=5)
    model = build_instance_model(ow.official_config(state)).eval()
    model.load_state_dict(ow.convert_official(state, model))
    return model, state


def test_detectron2_resnet_names_and_stride_in_the_3x3():
    """detectron2: stem.conv1(+.norm), convN.norm as BatchNorm, shortcut(+.norm); stride in conv2 (STRIDE_IN_1X1 off)."""
    model, state = _model_and_state("r50")
    assert ow.our_name(model, "backbone.stem.conv1.norm.running_var") == "backbone.stem.1.running_var"
    assert ow.our_name(model, "backbone.res3.0.conv2.norm.weight") == "backbone.res3.0.bn2.weight"
    assert ow.our_name(model, "backbone.res3.0.shortcut.norm.bias") == "backbone.res3.0.shortcut.1.bias"
    assert model.backbone.res3[0].conv2.stride == (2, 2) and model.backbone.res3[0].conv1.stride == (1, 1)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model.backbone(x)[3:]
    for a, b in zip(ours, reference_backbone(state, x)):
        torch.testing.assert_close(a, b, **TOLERANCE)


def test_resnet_vd_deep_stem_and_average_pool_shortcut():
    """timm ResNet-D: conv1.{0,1,3,4,6} + bn1 = our stem.0..7; downsample.{1,2} after an identity (res2) or
    2x2 average pool (res3..5), ceil mode, padding not counted."""
    model, state = _model_and_state("r50vd")
    assert ow.our_name(model, "backbone.bn1.weight") == "backbone.stem.7.weight"
    assert ow.our_name(model, "backbone.layer1.0.downsample.1.weight") == "backbone.res2.0.shortcut.0.weight"
    assert ow.our_name(model, "backbone.layer2.0.downsample.2.running_mean") == "backbone.res3.0.shortcut.2.running_mean"
    pool = model.backbone.res3[0].shortcut[0]
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    x = torch.randn(1, 3, 70, 90)     # odd sizes: ceil-mode pooling and padding are exercised
    with torch.no_grad():
        ours = model.backbone(x)[3:]
    for a, b in zip(ours, reference_backbone(state, x)):
        torch.testing.assert_close(a, b, **TOLERANCE)


def test_dcn_v1_offsets_follow_detectron2_deform_conv():
    """Their DCN is DCNv1: 18 offset channels, (dy, dx) per tap, no modulation; taps leaving the image read 0."""
    torch.manual_seed(0)
    layer = DeformConv2d(6, 5, 3, stride=2, padding=1)
    with torch.no_grad():
        layer.offset.weight.normal_(0, 0.8)
        layer.offset.bias.normal_(0, 2.0)
    x = torch.randn(2, 6, 11, 9)
    offset = layer.offset(x)
    assert offset.shape[1] == 18 and offset.abs().max() > 3
    torch.testing.assert_close(layer(x), deform_conv_v1(x, offset, layer.weight, 2, 1), **TOLERANCE)
    model, _ = _model_and_state("r50vd", (4, 5))
    assert ow.our_name(model, "backbone.layer3.0.conv2_offset.weight") == "backbone.res4.0.conv2.offset.weight"


def test_fpn_levels_are_listed_from_res5_down():
    model, _ = _model_and_state("r50")
    assert ow.our_name(model, "encoder.fpn_laterals.0.weight") == "encoder.laterals.2.weight"
    assert ow.our_name(model, "encoder.fpn_outputs.2.bias") == "encoder.fpn.out_convs.0.bias"
    assert model.encoder.laterals[2].in_channels == 2048


def test_decoder_convs_sit_at_even_indices():
    model, _ = _model_and_state("r50")
    assert ow.our_name(model, "decoder.inst_branch.inst_convs.6.weight") == "decoder.inst_branch.convs.3.0.weight"
    assert ow.our_name(model, "decoder.mask_branch.mask_convs.2.bias") == "decoder.mask_branch.convs.1.0.bias"
    assert ow.our_name(model, "decoder.mask_branch.mask_convs.1.bias") is None    # a ReLU holds no tensor


@pytest.mark.parametrize("decoder", ["base", "soft"])
def test_plain_iam_and_softmax_decoders_match(decoder):
    """BaseIAMDecoder (no group fc) and GroupIAMSoftDecoder (softmax + bias) of the other published models."""
    model, state = _model_and_state("r50", (), decoder)
    assert model.cfg.instance_fc is (decoder != "base") and model.cfg.iam_softmax is (decoder == "soft")
    image = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        ours = model(normalise(image, model.cfg.pixel_normalisation))
    _assert_outputs_match(ours, reference_forward(state, image))


def test_pixel_normalisation_in_0_255_units():
    """Theirs: (x - 123.675) / 58.395 on 0..255 RGB; ours stores the same on 0..1 and gives the same numbers."""
    pixels = ow.pixels_from({})
    image = torch.rand(1, 3, 8, 8) * 255
    mean = torch.tensor(ow.OFFICIAL_PIXEL_MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(ow.OFFICIAL_PIXEL_STD_255).view(1, 3, 1, 1)
    torch.testing.assert_close(normalise(image, pixels), (image - mean) / std, rtol=1e-6, atol=1e-6)
    stored = ow.pixels_from({"pixel_mean": torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1),
                             "pixel_std": torch.tensor([50.0, 51.0, 52.0]).view(3, 1, 1)})
    assert stored.mean == pytest.approx((100 / 255, 110 / 255, 120 / 255)) and stored.std[2] == pytest.approx(52 / 255)


def test_frozen_bn_counters_are_the_only_tensors_filled_in():
    state = official_state_dict("r50", (), "giam", seed=1)
    model = build_instance_model(ow.official_config(state))
    converted = ow.convert_official(state, model)
    own = set(model.state_dict())
    filled = own - {ow.our_name(model, k) for k in state}
    assert filled and all(n.endswith("num_batches_tracked") for n in filled)
    assert set(converted) == own


@pytest.mark.parametrize("change,words", [
    (lambda s: s.pop("decoder.inst_branch.objectness.bias"), ["missing", "decoder.inst_branch.objectness.bias"]),
    (lambda s: s.update({"encoder.extra.weight": torch.zeros(1)}), ["unexpected", "encoder.extra.weight"]),
    (lambda s: s.update({"encoder.fusion.bias": torch.zeros(7)}), ["misshaped", "encoder.fusion.bias (7,)"]),
], ids=["missing", "unexpected", "misshaped"])
def test_a_key_that_does_not_fit_is_one_sentence(tmp_path, capsys, change, words):
    state = official_state_dict("r50", (), "giam", seed=2)
    change(state)
    pth = _write_pth(tmp_path, state)
    assert import_weights.main(["sparseinst", str(pth), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(w in err for w in words), err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(CheckpointError, match=words[0]):
        load_model("instance", None, pth)


def test_other_files_are_refused_in_one_sentence(tmp_path, capsys):
    cspnet = {"backbone.stem.0.conv.weight": torch.zeros(1), "decoder.inst_branch.cls_score.weight": torch.zeros(80, 4)}
    for state, words in ((cspnet, "not one of SparseInst's ResNets"), ({"a": torch.zeros(1)}, "not a SparseInst")):
        pth = _write_pth(tmp_path, state)
        assert import_weights.main(["sparseinst", str(pth), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and err.count("\n") == 0, err
    ours = save_checkpoint(tmp_path / "ours.pt", task="instance", model_config={}, class_names=["a"], state_dict={})
    assert import_weights.main(["sparseinst", str(ours), "--out", str(tmp_path / "x")]) == 2
    assert "already a ros_amf checkpoint" in capsys.readouterr().err


@pytest.mark.ros
def test_class_names_travel_with_imported_weights_into_label_info_and_overlays(tmp_path):
    """LabelInfo and the overlay legend read the loaded model's names: COCO's 80 for an imported checkpoint."""
    from std_msgs.msg import Header

    from ros_amf.ros.conversions import label_info_message
    from ros_amf.runtime.loading import class_colours

    state = official_state_dict("r50", (), "giam", seed=4)
    assert import_weights.main(["sparseinst", str(_write_pth(tmp_path, state)), "--out", str(tmp_path / "coco")]) == 0
    loaded = load_model("instance", None, tmp_path / "coco.pt")
    colours = class_colours(loaded.class_names)
    msg = label_info_message(Header(), loaded.name, "instance", loaded.class_names, colours, loaded.small_object_ids)
    assert list(msg.class_names) == list(COCO_THING_NAMES) and len(msg.colors) == 80
    assert msg.class_names[0] == "person" and msg.class_names[79] == "toothbrush" and msg.model_name == "coco"
