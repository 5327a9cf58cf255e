"""ResNet encoder contract: 6 features, stride 2**i, out_channels, gradients; DCNv2 correctness."""
import pytest
import torch
import torch.nn.functional as F

from ros_amf.modeling.backbones.resnet import ResNetEncoder
from ros_amf.modeling.backbones.deform_conv import ModulatedDeformConv2d, modulated_deform_conv2d


@pytest.mark.parametrize("depth,width,deep_stem,avg_down,dcn", [
    (18, 16, False, False, ()), (34, 8, False, False, ()), (50, 8, True, True, (4, 5)), (18, 16, True, True, (3,))])
def test_features_follow_smp_contract(depth, width, deep_stem, avg_down, dcn):
    encoder = ResNetEncoder(depth=depth, width=width, deep_stem=deep_stem, avg_down=avg_down, dcn_stages=dcn)
    x = torch.randn(2, 3, 64, 96)
    features = encoder(x)
    assert len(features) == 6 and len(encoder.out_channels) == 6
    assert features[0] is x
    for i, (feature, channels) in enumerate(zip(features, encoder.out_channels)):
        assert feature.shape == (2, channels, 64 // 2 ** i, 96 // 2 ** i)
    expansion = 4 if depth >= 50 else 1
    assert encoder.out_channels[-1] == width * 8 * expansion


def test_encoder_backpropagates_to_input_and_all_stages():
    encoder = ResNetEncoder(depth=18, width=8, dcn_stages=(5,))
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    sum(f.mean() for f in encoder(x)[1:]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert encoder.stem[0].weight.grad.abs().sum() > 0
    assert encoder.res5[0].conv1.offset_mask.weight.grad is not None


@pytest.mark.parametrize("out_stride", [16, 8])
def test_dilation_caps_output_stride(out_stride):
    encoder = ResNetEncoder(depth=18, width=8, out_stride=out_stride)
    features = encoder(torch.randn(1, 3, 64, 64))
    assert features[5].shape[-1] == 64 // out_stride


def test_deformable_conv_with_zero_offsets_equals_plain_conv():
    x = torch.randn(2, 4, 9, 11)
    weight = torch.randn(5, 4, 3, 3)
    bias = torch.randn(5)
    offset = torch.zeros(2, 18, 9, 11)
    mask = torch.ones(2, 9, 9, 11)
    expected = F.conv2d(x, weight, bias, padding=1)
    assert torch.allclose(modulated_deform_conv2d(x, offset, mask, weight, bias, 1, 1, 1), expected, atol=1e-4)
    strided = modulated_deform_conv2d(x, torch.zeros(2, 18, 5, 6), torch.ones(2, 9, 5, 6), weight, bias, 2, 2, 2)
    assert torch.allclose(strided, F.conv2d(x, weight, bias, stride=2, padding=2, dilation=2), atol=1e-4)


def test_deformable_conv_integer_offset_shifts_the_sampling_point():
    # a 1x1 kernel with offset (dy, dx) = (1, 2) reads x[i+1, j+2]
    x = torch.randn(1, 1, 6, 7)
    weight = torch.ones(1, 1, 1, 1)
    offset = torch.zeros(1, 2, 6, 7)
    offset[:, 0], offset[:, 1] = 1.0, 2.0
    out = modulated_deform_conv2d(x, offset, torch.ones(1, 1, 6, 7), weight, None, 1, 0, 1)
    assert torch.allclose(out[0, 0, :5, :5], x[0, 0, 1:, 2:], atol=1e-5)
    assert torch.all(out[0, 0, 5:, :] == 0)  # outside the image reads zeros


def test_deformable_layer_starts_as_half_modulated_conv():
    layer = ModulatedDeformConv2d(3, 4)
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(layer(x), 0.5 * F.conv2d(x, layer.weight, padding=1), atol=1e-5)
