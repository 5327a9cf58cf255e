"""The exported graphs' two rewrites (runtime.backends_export.graph_module): GroupNorm from per-channel moments,
and instance masks left at the mask branch's stride and upsampled after the graph. Same maths as the model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ros_amf.modeling.sparseinst.decoder import GroupIAMDecoder
from ros_amf.runtime.backends_export import (MomentsGroupNorm, export_onnx, graph_module, outputs_from_arrays,
                                             sample_input, torch_reference)
from ros_amf.runtime.loading import load_model

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_PT = ROOT / "models" / "amf_sparseinst_r18slim.pt"


@pytest.mark.parametrize("groups,channels,affine", [(32, 64, True), (4, 200, True), (8, 8, False), (1, 24, True)])
def test_moments_group_norm_equals_torch_group_norm(groups, channels, affine):
    generator = torch.Generator().manual_seed(groups + channels)
    reference = nn.GroupNorm(groups, channels, affine=affine)
    if affine:
        with torch.no_grad():
            reference.weight.copy_(torch.randn(channels, generator=generator))
            reference.bias.copy_(torch.randn(channels, generator=generator))
    rewritten = MomentsGroupNorm(groups, channels, affine=affine)
    rewritten.load_state_dict(reference.state_dict())
    # an offset far from zero: the two-pass variance must not lose it to cancellation
    x = torch.randn(2, channels, 12, 17, generator=generator) * 3 + 40
    torch.testing.assert_close(rewritten(x), reference(x), atol=2e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def instance_module():
    return load_model("instance", None, INSTANCE_PT).module.eval()


def test_graph_module_leaves_the_callers_model_alone_and_keeps_its_outputs(instance_module):
    graph = graph_module(instance_module)
    assert any(type(m) is MomentsGroupNorm for m in graph.modules())
    assert not any(type(m) is MomentsGroupNorm for m in instance_module.modules())
    assert all(m.upsample_in_forward for m in instance_module.modules() if isinstance(m, GroupIAMDecoder))
    images = torch.from_numpy(sample_input((240, 320)))
    with torch.inference_mode():
        expected = instance_module(images)
        low = graph(images)
    assert low["pred_masks"].shape[-2:] == (images.shape[-2] // 8, images.shape[-1] // 8)
    arrays = [low[k].numpy() for k in ("pred_logits", "pred_masks", "pred_scores")]
    rebuilt = outputs_from_arrays("instance", arrays)
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        assert rebuilt[key].shape == expected[key].shape
        torch.testing.assert_close(rebuilt[key], expected[key], atol=1e-3, rtol=1e-3)


def test_exported_instance_graph_has_no_feature_map_group_norm_and_no_output_upsampling(instance_module, tmp_path):
    onnx = pytest.importorskip("onnx")
    path = export_onnx(instance_module, "instance", (128, 160), tmp_path / "instance.onnx")
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    # torch's GroupNorm exports as a [N, G, -1] reshape around InstanceNormalization (or GroupNormalization)
    assert not ops & {"InstanceNormalization", "GroupNormalization"}, ops
    masks = next(o for o in graph.output if o.name == "pred_masks_stride8")
    assert [d.dim_value for d in masks.type.tensor_type.shape.dim][-2:] == [128 // 8, 160 // 8]
    # the check the cache runs before trusting a graph compares with torch's own GroupNorm
    reference = torch_reference(instance_module, "instance", sample_input((128, 160)))
    assert reference[1].shape[-2:] == (16, 20)
    assert np.isfinite(reference[1]).all()


def test_only_sparseinst_masks_leave_the_graph_at_stride_8(instance_module):
    from runtime_helpers import ScriptedInstanceModel
    from ros_amf.runtime.backends_export import masks_leave_at_stride8
    assert masks_leave_at_stride8(instance_module)
    assert not masks_leave_at_stride8(ScriptedInstanceModel([(2, 2, 8, 8)], [0], [0.9]))
    arrays = [np.zeros((1, 4, 3), np.float32), np.zeros((1, 4, 16, 24), np.float32), np.zeros((1, 4, 1), np.float32)]
    assert outputs_from_arrays("instance", arrays, upsample=False)["pred_masks"].shape[-2:] == (16, 24)
    assert outputs_from_arrays("instance", arrays)["pred_masks"].shape[-2:] == (32, 48)
