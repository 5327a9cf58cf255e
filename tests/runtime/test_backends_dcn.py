"""The DCN config (ResNet-50-d with deformable convs in res3..res5, issue 17) exports to ONNX and runs in
onnxruntime and OpenVINO with torch's outputs, at a small input with random weights (none ship)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ros_amf.modeling.backbones.deform_conv import DeformConv2d, ModulatedDeformConv2d
from ros_amf.runtime.backends import BACKENDS, BackendForward, backend_installed
from ros_amf.runtime.backends_export import sample_input

ROOT = Path(__file__).resolve().parents[2]
DCN_YAML = ROOT / "models" / "amf_sparseinst_r50d_dcn.yaml"
HW = (64, 96)
KEYS = ("pred_logits", "pred_masks", "pred_scores")


installed = backend_installed     # backend name -> bool


@pytest.fixture(scope="module")
def dcn_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dcn_cache")     # one export serves both backends


def _offset_conv(layer):
    return layer.offset_mask if isinstance(layer, ModulatedDeformConv2d) else layer.offset


@pytest.fixture(scope="module")
def dcn_model():
    from ros_amf.runtime.loading import load_model
    torch.manual_seed(0)
    module = load_model("instance", DCN_YAML, None).module.eval()
    layers = [m for m in module.modules() if isinstance(m, (DeformConv2d, ModulatedDeformConv2d))]
    assert layers, "the DCN config builds no deformable conv"
    # the offset convs start at zero (a plain conv); give them weights so the taps read fractional
    # positions a few pixels away, some off the feature map: the sampling itself is then exported
    generator = torch.Generator().manual_seed(3)
    for norm in module.modules():    # zero-initialised residual BNs would hide every block's DCN output
        if isinstance(norm, torch.nn.BatchNorm2d) and not norm.weight.any():
            with torch.no_grad():
                norm.weight.fill_(1.0)
    for layer in layers:
        conv = _offset_conv(layer)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.05)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("torch", "openvino-int8")])
def test_dcn_config_exports_and_reproduces_torch(backend, dcn_model, dcn_cache):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    images = torch.from_numpy(sample_input(HW, seed=4))
    with torch.inference_mode():
        reference = dcn_model(images)
        # the offsets move the taps: without them the outputs would differ
        convs = [_offset_conv(layer) for layer in dcn_model.modules()
                 if isinstance(layer, (DeformConv2d, ModulatedDeformConv2d))]
        kept = [conv.weight.clone() for conv in convs]
        for conv in convs:
            conv.weight.zero_()
        plain = dcn_model(images)
        for conv, weight in zip(convs, kept):
            conv.weight.copy_(weight)
    assert (plain["pred_masks"] - reference["pred_masks"]).abs().max() > 1e-3
    warnings: list[str] = []
    forward = BackendForward(backend, dcn_model, "instance model", warnings, cache=dcn_cache)
    forward.prepare(HW)            # exports, converts and checks against torch on a street frame (raises if not)
    with torch.inference_mode():
        outputs = forward(images)
    assert forward.fallback_reason is None and warnings == [], warnings
    for key in KEYS:
        torch.testing.assert_close(outputs[key], reference[key], rtol=1e-3, atol=2e-3)
    with torch.inference_mode():    # exporting left the eager DCN (and its per-shape grid cache) intact
        again = dcn_model(images)
    for key in KEYS:
        torch.testing.assert_close(again[key], reference[key], rtol=0, atol=0)
