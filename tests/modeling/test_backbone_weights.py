"""ImageNet ResNet weights for training: torchvision, timm ResNet-D and MSRA R-50.pkl layouts, written here
from their own naming with random values, land in ResNetEncoder tensor by tensor; a wrong file is one
sentence; a pickle that would run code is refused before it runs; frozen stages and FrozenBN."""
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ros_amf.contract.pixels import normalise
from ros_amf.contract.weight_files import (MSRA_RESNET, TIMM_RESNET_D, TORCHVISION_RESNET, WeightFileError,
                                           read_weights)
from ros_amf.modeling.backbones.frozen import FrozenBatchNorm2d
from ros_amf.modeling.backbones.pretrained import init_backbone_from_file, load_pretrained_backbone
from ros_amf.modeling.backbones.resnet import ResNetEncoder
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_generator = torch.Generator().manual_seed(0)


def _random(*shape):
    return torch.rand(*shape, generator=_generator) + 0.5      # positive: valid variances too


def _bn(prefix, channels, with_counter=True):
    tensors = {f"{prefix}.{t}": _random(channels) for t in ("weight", "bias", "running_mean", "running_var")}
    if with_counter:
        tensors[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    return tensors


def _torch_layers(depth, width, shortcut_conv_index):
    """layer1..4 as torchvision (shortcut_conv_index 0) or timm ResNet-D (1: after the pool) name them."""
    tensors, cin = {}, width
    bottleneck = depth >= 50
    for layer, blocks in enumerate(BLOCKS[depth], start=1):
        planes = width * 2 ** (layer - 1)
        cout = planes * (4 if bottleneck else 1)
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            convs = ([(cin, planes, 1), (planes, planes, 3), (planes, cout, 1)] if bottleneck
                     else [(cin, planes, 3), (planes, cout, 3)])
            for index, (i, o, k) in enumerate(convs, start=1):
                tensors[f"{p}.conv{index}.weight"] = _random(o, i, k, k)
                tensors.update(_bn(f"{p}.bn{index}", o))
            if block == 0 and (cin != cout or layer > 1):
                tensors[f"{p}.downsample.{shortcut_conv_index}.weight"] = _random(cout, cin, 1, 1)
                tensors.update(_bn(f"{p}.downsample.{shortcut_conv_index + 1}", cout))
            cin = cout
    tensors["fc.weight"], tensors["fc.bias"] = _random(1000, cin), _random(1000)
    return tensors


def torchvision_resnet(depth, width=64):
    tensors = {"conv1.weight": _random(width, 3, 7, 7), **_bn("bn1", width)}
    return {**tensors, **_torch_layers(depth, width, shortcut_conv_index=0)}


def timm_resnet50d(width=64):
    half = width // 2
    tensors = {"conv1.0.weight": _random(half, 3, 3, 3), **_bn("conv1.1", half),
               "conv1.3.weight": _random(half, half, 3, 3), **_bn("conv1.4", half),
               "conv1.6.weight": _random(width, half, 3, 3), **_bn("bn1", width)}
    return {**tensors, **_torch_layers(50, width, shortcut_conv_index=1)}


def msra_r50(width=64):
    """detectron2's ImageNetPretrained/MSRA/R-50.pkl naming: numpy float32, folded BatchNorm, solver state."""
    def bn(prefix, channels):
        return {f"{prefix}_bn_s": _random(channels), f"{prefix}_bn_b": _random(channels)}
    tensors = {"conv1_w": _random(width, 3, 7, 7), **bn("res_conv1", width)}
    cin = width
    for stage, blocks in zip((2, 3, 4, 5), BLOCKS[50]):
        planes = width * 2 ** (stage - 2)
        for block in range(blocks):
            p = f"res{stage}_{block}"
            for branch, (i, o, k) in zip("abc", [(cin, planes, 1), (planes, planes, 3), (planes, planes * 4, 1)]):
                tensors[f"{p}_branch2{branch}_w"] = _random(o, i, k, k)
                tensors.update(bn(f"{p}_branch2{branch}", o))
            if block == 0:
                tensors[f"{p}_branch1_w"] = _random(planes * 4, cin, 1, 1)
                tensors.update(bn(f"{p}_branch1", planes * 4))
            cin = planes * 4
    tensors["fc1000_w"], tensors["fc1000_b"] = _random(1000, cin), _random(1000)
    tensors["conv1_w_momentum"] = torch.zeros(width, 3, 7, 7)
    return {name: value.numpy() for name, value in tensors.items()}


def _fingerprints(tensors):
    return sorted(float(t.double().sum()) for t in tensors)


def _assert_all_loaded(encoder, weights, unused):
    """Every foreign tensor (but the classifier) sits in the encoder: the multisets of values agree."""
    file_tensors = [torch.as_tensor(v) for k, v in weights.items()
                    if k not in unused and not k.endswith(("num_batches_tracked", "_momentum"))]
    own = [v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(own) == len(file_tensors)
    assert _fingerprints(own) == pytest.approx(_fingerprints(file_tensors))


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_torchvision_resnets_load_tensor_by_tensor(depth, tmp_path):
    weights = torchvision_resnet(depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(weights, path)
    encoder = ResNetEncoder(depth=depth)
    assert init_backbone_from_file(encoder, path) == TORCHVISION_RESNET.pixels
    _assert_all_loaded(encoder, weights, {"fc.weight", "fc.bias"})
    state = encoder.state_dict()
    assert torch.equal(state["stem.0.weight"], weights["conv1.weight"])
    assert torch.equal(state["stem.1.running_var"], weights["bn1.running_var"])
    assert torch.equal(state["res3.0.shortcut.0.weight"], weights["layer2.0.downsample.0.weight"])
    assert torch.equal(state["res5.1.bn2.bias"], weights["layer4.1.bn2.bias"])


def test_torch_files_in_a_training_checkpoint_wrapper_load(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in torchvision_resnet(18, width=8).items()}, "epoch": 3},
               path)
    encoder = ResNetEncoder(depth=18, width=8)
    init_backbone_from_file(encoder, path)
    assert torch.equal(encoder.stem[0].weight, read_weights(path)["conv1.weight"])


def test_timm_resnet50d_loads_into_resnet_d(tmp_path):
    weights = timm_resnet50d()
    path = tmp_path / "resnet50d.pth"
    torch.save(weights, path)
    encoder = ResNetEncoder(depth=50, deep_stem=True, avg_down=True)
    assert init_backbone_from_file(encoder, path) == TIMM_RESNET_D.pixels
    _assert_all_loaded(encoder, weights, {"fc.weight", "fc.bias"})
    state = encoder.state_dict()
    assert torch.equal(state["stem.6.weight"], weights["conv1.6.weight"])
    assert torch.equal(state["stem.7.weight"], weights["bn1.weight"])
    # res2's shortcut has no pool (stride 1): conv and BN at 0/1; res3's follow the pool: 1/2
    assert torch.equal(state["res2.0.shortcut.0.weight"], weights["layer1.0.downsample.1.weight"])
    assert torch.equal(state["res3.0.shortcut.1.weight"], weights["layer2.0.downsample.1.weight"])
    assert torch.equal(state["res3.0.shortcut.2.running_mean"], weights["layer2.0.downsample.2.running_mean"])


def test_msra_pickle_loads_and_runs_as_caffe_does(tmp_path):
    weights = msra_r50(width=16)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": weights}, protocol=2))
    encoder = ResNetEncoder(depth=50, width=16, stride_in_1x1=True).eval()
    pixels = init_backbone_from_file(encoder, path)
    assert pixels == MSRA_RESNET.pixels
    state = encoder.state_dict()
    assert torch.equal(state["res4.0.shortcut.0.weight"], torch.from_numpy(weights["res4_0_branch1_w"]))
    assert torch.equal(state["res2.1.bn3.weight"], torch.from_numpy(weights["res2_1_branch2c_bn_s"]))
    # caffe's stem on BGR 0..255 minus its mean, folded BatchNorm s*x + b ...
    rgb = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    bgr = rgb.flip(1).float() - torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)
    conv = F.conv2d(bgr, torch.from_numpy(weights["conv1_w"]), stride=2, padding=3)
    caffe = F.relu(conv * torch.from_numpy(weights["res_conv1_bn_s"]).view(1, -1, 1, 1)
                   + torch.from_numpy(weights["res_conv1_bn_b"]).view(1, -1, 1, 1))
    # ... equals ours on RGB with the normalisation the loader returned
    with torch.no_grad():
        ours = encoder.stem(normalise(rgb, pixels))
    assert torch.allclose(ours, caffe, rtol=1e-4, atol=1e-2)


def test_msra_weights_need_the_stride_in_the_1x1(tmp_path):
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(msra_r50(width=16)))
    with pytest.raises(WeightFileError, match="set model.stride_in_1x1: true"):
        init_backbone_from_file(ResNetEncoder(depth=50, width=16), path)
    with pytest.raises(WeightFileError, match="set model.stride_in_1x1: false"):
        load_pretrained_backbone(ResNetEncoder(depth=50, stride_in_1x1=True), torchvision_resnet(50))


def test_stride_in_1x1_moves_the_stride_only():
    plain, caffe = ResNetEncoder(depth=50, width=8), ResNetEncoder(depth=50, width=8, stride_in_1x1=True)
    assert plain.state_dict().keys() == caffe.state_dict().keys()
    assert (plain.res3[0].conv1.stride, plain.res3[0].conv2.stride) == ((1, 1), (2, 2))
    assert (caffe.res3[0].conv1.stride, caffe.res3[0].conv2.stride) == ((2, 2), (1, 1))
    assert [f.shape for f in plain(torch.randn(1, 3, 64, 64))] == [f.shape for f in caffe(torch.randn(1, 3, 64, 64))]


def _one_sentence(message):
    assert "\n" not in message and message.endswith(".")
    return message


def test_a_wrong_file_is_one_sentence_naming_the_first_keys():
    weights = torchvision_resnet(50)
    del weights["layer3.2.conv2.weight"]
    weights["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(WeightFileError) as info:
        load_pretrained_backbone(ResNetEncoder(depth=50), weights, source="r50.pth")
    message = _one_sentence(str(info.value))
    assert "missing ['res4.2.conv2.weight']" in message and "unexpected ['layer5.0.conv1.weight']" in message
    with pytest.raises(WeightFileError) as info:
        load_pretrained_backbone(ResNetEncoder(depth=50), torchvision_resnet(101), source="r101.pth")
    message = _one_sentence(str(info.value))
    assert "unexpected ['layer3.6.conv1.weight'" in message and "the file holds a ResNet-101" in message
    with pytest.raises(WeightFileError) as info:
        load_pretrained_backbone(ResNetEncoder(depth=18, width=32), torchvision_resnet(18), source="r18.pth")
    assert "misshaped ['conv1.weight (64, 3, 7, 7) for (32, 3, 7, 7)'" in _one_sentence(str(info.value))
    with pytest.raises(WeightFileError, match="no known layout"):
        load_pretrained_backbone(ResNetEncoder(depth=18), {"weight": torch.zeros(1)})


def test_dropped_stages_are_left_out_not_errors():
    cfg = SemanticModelConfig(architecture="pspnet", num_classes=3, encoder_depth=18, encoder_width=8,
                              decoder_channels=16, afma=False)
    model = build_semantic_model(cfg)
    weights = torchvision_resnet(18, width=8)
    load_pretrained_backbone(model, weights)   # layer3/layer4 have no place in PSPNet's encoder: left out
    assert torch.equal(model.encoder.res3[0].conv1.weight, weights["layer2.0.conv1.weight"])


class _WritesAFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, suffix):
    target = tmp_path / "created_by_the_pickle"
    path = tmp_path / f"evil{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps({"conv1_w": np.zeros((2, 3, 7, 7), np.float32), "trap": _WritesAFile(target)}))
    else:
        torch.save({"conv1.weight": torch.zeros(2, 3, 7, 7), "trap": _WritesAFile(target)}, path)
    with pytest.raises(WeightFileError) as info:
        read_weights(path)
    message = _one_sentence(str(info.value))
    assert "refused" in message and "open" in message and "nothing of it was run" in message
    assert not target.exists()


def test_numpy_pickles_read_back_as_tensors(tmp_path):
    path = tmp_path / "arrays.pkl"
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=">f4")}
    path.write_bytes(pickle.dumps(arrays, protocol=5))
    tensors = read_weights(path)
    assert torch.equal(tensors["a"], torch.arange(6.0).view(2, 3)) and torch.equal(tensors["b"], torch.ones(4))


def test_freeze_at_freezes_the_first_levels_and_their_batchnorm():
    encoder = ResNetEncoder(depth=18, width=8, freeze_at=2)
    assert not any(p.requires_grad for p in [*encoder.stem.parameters(), *encoder.res2.parameters()])
    assert all(p.requires_grad for p in encoder.res3.parameters())
    assert isinstance(encoder.stem[1], FrozenBatchNorm2d) and isinstance(encoder.res2[0].bn1, FrozenBatchNorm2d)
    assert type(encoder.res3[0].bn1) is torch.nn.BatchNorm2d
    before = encoder.stem[1].running_mean.clone()
    encoder.train()(torch.randn(2, 3, 32, 32))
    assert torch.equal(encoder.stem[1].running_mean, before)
    with pytest.raises(ValueError, match="backbone_freeze_at 6 is out of range"):
        ResNetEncoder(depth=18, width=8, freeze_at=6)


def test_frozen_batchnorm_keeps_the_state_dict_keys_and_eval_output():
    plain = ResNetEncoder(depth=18, width=8).eval()
    frozen = ResNetEncoder(depth=18, width=8, frozen_bn=True)
    assert frozen.state_dict().keys() == plain.state_dict().keys()
    assert all(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(frozen.train()(x)[-1], plain(x)[-1], atol=1e-5)   # train mode: same as eval


@pytest.fixture(scope="module")
def tiny_semantic_data(tmp_path_factory):
    from ros_amf.data.synthetic.dataset import make_dataset
    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, frames=4, seed=3, val_fraction=0.25, size=(128, 96), progress=False)
    return out


@pytest.mark.parametrize("layout", ["torchvision", "msra"])
def test_training_starts_from_a_resnet50_weights_file(layout, tiny_semantic_data, tmp_path):
    """`ros-amf train semantic --backbone-weights FILE` loads the file before the first step and records the
    pixel normalisation the weights expect in the exported model (lr 0: the loaded convs stay as read)."""
    from ros_amf.apps.train import main_semantic
    from ros_amf.contract.checkpoint import load_checkpoint
    if layout == "torchvision":
        weights = {k: v for k, v in torchvision_resnet(50, width=16).items()}
        path = tmp_path / "resnet50.pth"
        torch.save(weights, path)
        ours, theirs = "encoder.res4.0.conv2.weight", weights["layer3.0.conv2.weight"]
    else:
        blobs = msra_r50(width=16)
        path = tmp_path / "R-50.pkl"
        path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
        ours, theirs = "encoder.res4.0.conv2.weight", torch.from_numpy(blobs["res4_0_branch2b_w"])
    config = tmp_path / "r50.yaml"
    config.write_text("model:\n  architecture: fpn\n  num_classes: 19\n  encoder_depth: 50\n  encoder_width: 16\n"
                      f"  stride_in_1x1: {str(layout == 'msra').lower()}\n  decoder_channels: 16\n  afma: false\n"
                      "  input_size: {short_side: 64, max_long_side: 128}\n")
    argv = ["--config", str(config), "--data", str(tiny_semantic_data / "cityscapes"), "--out", str(tmp_path / "run"),
            "--iterations", "1", "--batch-size", "2", "--short-side", "64", "--crop", "64x64", "--lr", "0",
            "--threads", "1", "--no-progress", "--backbone-weights", str(path)]
    assert main_semantic(argv) == 0
    exported = load_checkpoint(tmp_path / "run" / "model.pt")
    expected = MSRA_RESNET.pixels if layout == "msra" else TORCHVISION_RESNET.pixels
    assert exported["model_config"]["pixel_normalisation"] == {"mean": expected.mean, "std": expected.std}
    assert torch.allclose(exported["state_dict"][ours].float(), theirs.float(), rtol=1e-3, atol=1e-3)


def test_training_with_a_wrong_weights_file_is_one_sentence(tiny_semantic_data, tmp_path, capsys):
    from ros_amf.apps.train import main_semantic
    path = tmp_path / "not_a_resnet.pth"
    torch.save({"classifier.weight": torch.zeros(3, 3)}, path)
    config = tmp_path / "r18.yaml"
    config.write_text("model:\n  architecture: fpn\n  num_classes: 19\n  encoder_width: 8\n  decoder_channels: 16\n"
                      "  afma: false\n")
    argv = ["--config", str(config), "--data", str(tiny_semantic_data / "cityscapes"), "--out", str(tmp_path / "run"),
            "--iterations", "1", "--no-progress", "--backbone-weights", str(path)]
    assert main_semantic(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and str(path) in error and "\n" not in error
