"""Shapes, gradients and hand-computed values of the SparseInst / AMF-SparseInst modules."""
import math

import pytest
import torch
import torch.nn.functional as F

from ros_amf.modeling.sparseinst.fem import EffectiveSqueezeExcitation, FeatureEnhancement, SpatialAttention
from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
from ros_amf.modeling.sparseinst.lite_bifpn import LiteBiFPN, TopDownFPN
from ros_amf.modeling.sparseinst.ppm import PyramidPoolingModule
from ros_amf.modeling.sparseinst.simam import SimAM
from ros_amf.modeling.sparseinst.simam_aspp import SimAMASPP
from ros_amf.modeling.sparseinst.decoder import GroupIAMDecoder
from ros_amf.modeling.sparseinst.encoder import InstanceContextEncoder


def _grad_flows(module, *inputs):
    inputs = [t.requires_grad_() for t in inputs]
    out = module(*inputs)
    tensors = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
    sum(t.float().pow(2).mean() for t in tensors).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in inputs)
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "every parameter receives a gradient"
    return out


def test_simam_matches_hand_computed_energy():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    lam = 1e-4
    mean = 3.0
    var = ((1 - mean) ** 2 + (2 - mean) ** 2 + 0 + (6 - mean) ** 2) / 3  # n = HW - 1
    expected = [v * (1 / (1 + math.exp(-((v - mean) ** 2 / (4 * (var + lam)) + 0.5)))) for v in (1.0, 2.0, 3.0, 6.0)]
    assert torch.allclose(SimAM(lam)(x).flatten(), torch.tensor(expected), atol=1e-6)


def test_ese_matches_hand_computed_hardsigmoid_gate():
    ese = EffectiveSqueezeExcitation(2)
    with torch.no_grad():
        ese.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]).view(2, 2, 1, 1))
        ese.fc.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[[[1.0, 3.0]], [[4.0, 0.0]]]])  # channel means 2 and 2
    z = [2.0, 0.5 * 2 - 2 + 1]
    gate = [min(max(v / 6 + 0.5, 0.0), 1.0) for v in z]  # hard-sigmoid = relu6(x + 3) / 6
    expected = torch.stack([x[0, 0] * gate[0], x[0, 1] * gate[1]])[None]
    assert torch.allclose(ese(x), expected, atol=1e-6)


def test_spatial_attention_uses_mean_and_max_maps():
    attention = SpatialAttention(5)
    with torch.no_grad():
        attention.conv.weight.zero_()
        attention.conv.weight[0, 0, 2, 2] = 1.0  # picks the channel-mean at the centre
        attention.conv.weight[0, 1, 2, 2] = -1.0  # minus the channel-max
        attention.conv.bias.zero_()
    x = torch.randn(1, 3, 4, 5)
    gate = torch.sigmoid(x.mean(1, keepdim=True) - x.amax(1, keepdim=True))
    assert torch.allclose(attention(x), x * gate, atol=1e-6)


def test_fem_parallel_combines_channel_and_spatial_with_table8_weights():
    fem = FeatureEnhancement(4, source="fusion")
    x = torch.randn(2, 4, 6, 7)
    expected = 0.4 * fem.channel(x) + 0.6 * fem.spatial(x)  # Eq. 6 with (W3, W5) = (0.6, 0.4)
    assert torch.allclose(fem(x), expected, atol=1e-6)
    serial = FeatureEnhancement(4, connection="serial", source="fusion")
    assert torch.allclose(serial(x), serial.spatial(serial.channel(x)), atol=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        FeatureEnhancement(4, weights=(0.5, 0.6))
    _grad_flows(FeatureEnhancement(4, learnable_weights=True, source="fusion"), torch.randn(1, 4, 5, 5))


def test_fem_takes_channel_attention_from_n5_and_spatial_from_n3():
    """The paper's reading (default): W5 reweights X_fusion by eSE of N5, W3 by the spatial map of N3."""
    torch.manual_seed(0)
    fem = FeatureEnhancement(4)
    x, n3, n5 = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8), torch.randn(1, 4, 3, 4)
    w, b = fem.channel.fc.weight.view(4, 4), fem.channel.fc.bias
    channel_gate = F.hardsigmoid(w @ n5.mean(dim=(2, 3))[0] + b).view(1, 4, 1, 1)            # Eq. 1 on N5
    descriptor = torch.stack([n3.mean(dim=1), n3.amax(dim=1)], dim=1)                       # Eq. 3 on N3
    spatial_gate = torch.sigmoid(F.conv2d(descriptor, fem.spatial.conv.weight, fem.spatial.conv.bias, padding=2))
    expected = 0.4 * channel_gate * x + 0.6 * spatial_gate * x                              # Eq. 2, 5, 6
    assert torch.allclose(fem(x, n3=n3, n5=n5), expected, atol=1e-6)
    assert not torch.allclose(FeatureEnhancement(4, source="fusion").to(x)(x), expected, atol=1e-3)
    with pytest.raises(ValueError, match="needs the pyramid levels"):
        fem(x)


def test_encoder_feeds_fem_the_pyramid_levels():
    """The encoder hands FEM the finest (N3, X_fusion's stride 8) and the coarsest (N5) pyramid outputs."""
    torch.manual_seed(0)
    enc = InstanceContextEncoder((8, 16, 32), 16, context="simam_aspp", lite_bifpn=True, fem=True, aspp_dropout=0.0)
    seen = {}
    enc.fem.register_forward_hook(lambda module, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    enc(torch.randn(1, 8, 8, 12), torch.randn(1, 16, 4, 6), torch.randn(1, 32, 2, 3))
    assert seen["n3"].shape == (1, 16, 8, 12) and seen["n5"].shape == (1, 16, 2, 3)


def test_shipped_slim_configs_keep_the_reading_they_were_trained_with():
    from ros_amf.contract.config import from_dict
    legacy = from_dict(InstanceModelConfig, {"context": "simam_aspp", "fem": True, "input_short_side": 384})
    assert (legacy.aspp_plain_kernel, legacy.fem_source) == (1, "fusion")
    assert legacy.input_size.short_side == 384
    paper = InstanceModelConfig()
    assert (paper.aspp_plain_kernel, paper.fem_source) == (3, "pyramid")
    assert SimAMASPP(8, 8).plain[0].kernel_size == (3, 3)


@pytest.mark.parametrize("depthwise,simam", [(True, True), (False, False)])
def test_simam_aspp_keeps_resolution_and_trains(depthwise, simam):
    aspp = SimAMASPP(8, 6, rates=(6, 18, 24), depthwise=depthwise, use_simam=simam, dropout=0.0)
    out = _grad_flows(aspp, torch.randn(2, 8, 5, 7))
    assert out.shape == (2, 6, 5, 7)
    if depthwise:
        assert aspp.atrous[0][0].groups == 8 and aspp.atrous[2][0].dilation == (24, 24)


def test_depthwise_aspp_has_fewer_parameters_than_conventional():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(SimAMASPP(64, 64, depthwise=True)) < 0.5 * count(SimAMASPP(64, 64, depthwise=False))


def test_ppm_output_shape_and_gradient():
    out = _grad_flows(PyramidPoolingModule(16, 12, pool_channels=4), torch.randn(2, 16, 6, 8))
    assert out.shape == (2, 12, 6, 8)


@pytest.mark.parametrize("fpn_cls", [TopDownFPN, LiteBiFPN])
def test_fpn_variants_return_three_levels(fpn_cls):
    laterals = [torch.randn(1, 8, 8, 12), torch.randn(1, 8, 4, 6), torch.randn(1, 8, 2, 3)]
    fpn = fpn_cls(8)
    outs = fpn(laterals, laterals[2])
    assert [o.shape for o in outs] == [t.shape for t in laterals]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in fpn.parameters())


def test_lite_bifpn_carries_low_level_detail_to_the_top():
    # bottom-up path: a change in C3 alone must reach N5 (it cannot in the top-down FPN)
    torch.manual_seed(0)
    laterals = [torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2)]
    for cls, reaches in ((LiteBiFPN, True), (TopDownFPN, False)):
        fpn = cls(4)
        base = fpn(laterals, laterals[2])[2]
        changed = fpn([laterals[0] + 1.0, laterals[1], laterals[2]], laterals[2])[2]
        assert (not torch.allclose(base, changed)) == reaches


@pytest.mark.parametrize("context,bifpn,fem", [("ppm", False, False), ("simam_aspp", False, False),
                                                ("simam_aspp", True, False), ("simam_aspp", False, True),
                                                ("simam_aspp", True, True)])
def test_encoder_table4_rows_output_stride8(context, bifpn, fem):
    enc = InstanceContextEncoder((8, 16, 32), 16, context=context, lite_bifpn=bifpn, fem=fem, aspp_dropout=0.0)
    out = _grad_flows(enc, torch.randn(1, 8, 8, 12), torch.randn(1, 16, 4, 6), torch.randn(1, 32, 2, 3))
    assert out.shape == (1, 16, 8, 12)


def test_group_iam_decoder_shapes_and_prior_bias():
    dec = GroupIAMDecoder(16, num_classes=3, channels=16, num_convs=2, num_masks=5, groups=4, expand_dim=32,
                          kernel_dim=8)
    out = _grad_flows(dec, torch.randn(2, 16, 6, 10))
    assert out["pred_logits"].shape == (2, 5, 3) and out["pred_scores"].shape == (2, 5, 1)
    assert out["pred_masks"].shape == (2, 5, 12, 20) and out["pred_iam"].shape == (2, 20, 6, 10)
    assert dec.inst_branch.fc.in_features == 4 * 16  # G-IAM: 4 groups regrouped before the Linear
    assert torch.allclose(torch.sigmoid(dec.inst_branch.cls_score.bias), torch.full((3,), 0.01))


def test_full_model_outputs_quarter_resolution_masks_and_rejects_unpadded_input():
    cfg = InstanceModelConfig(num_classes=4, backbone_depth=18, backbone_width=8, encoder_channels=16,
                              decoder_channels=16, num_masks=6, expand_dim=32, kernel_dim=8, context="simam_aspp",
                              lite_bifpn=True, fem=True, head_norm="gn", dcn_stages=(5,), deep_stem=True, avg_down=True)
    model = build_instance_model(cfg)
    out = _grad_flows(model, torch.randn(1, 3, 64, 96))
    assert out["pred_masks"].shape == (1, 6, 16, 24) and out["pred_logits"].shape == (1, 6, 4)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 60, 96))
