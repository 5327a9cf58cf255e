"""Dispatches per forward (counted on the meta device, the GPU's code path): the launch targets of issue 18."""
import dataclasses

import torch

from ros_amf.contract.config import from_dict, read_yaml
from ros_amf.modeling.dispatch_count import DispatchCounter, count_dispatches
from ros_amf.modeling.info import build_from_yaml
from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model

CAMERA = (736, 1280)     # 1280x720 padded to a multiple of 32


def _fpn_r18(afma: bool):
    cfg = from_dict(SemanticModelConfig, read_yaml("models/fpn_afma_r18.yaml")["model"], where="fpn_afma_r18.yaml")
    return build_semantic_model(dataclasses.replace(cfg, afma=afma))


def test_the_counter_counts_kernels_not_views():
    x = torch.randn(1, 2, 4, 4)
    conv = torch.nn.Conv2d(2, 3, 1)
    with torch.no_grad(), DispatchCounter() as counter:
        torch.relu(conv(x)).view(-1)
    assert counter.count.kernels == 2 and counter.count.total == 3
    assert dict(counter.count.by_op) == {"convolution": 1, "relu": 1}


def test_afma_adds_at_most_60_dispatches_to_its_host():
    host = count_dispatches(_fpn_r18(False), *CAMERA)
    with_afma = count_dispatches(_fpn_r18(True), *CAMERA)
    assert with_afma.total - host.total <= 60, (with_afma.total, host.total)
    assert with_afma.kernels - host.kernels <= 35


def test_both_models_at_1280x720_launch_at_most_500_kernels_per_frame():
    _, _, instance = build_from_yaml("models/amf_sparseinst_r50.yaml")
    instance_count = count_dispatches(instance, *CAMERA)
    semantic_count = count_dispatches(_fpn_r18(True), *CAMERA)
    assert instance_count.kernels + semantic_count.kernels <= 500


def test_dcn_costs_a_handful_of_kernels_per_layer():
    _, _, plain = build_from_yaml("models/amf_sparseinst_r50.yaml")
    _, cfg, dcn = build_from_yaml("models/amf_sparseinst_r50d_dcn.yaml")
    layers = sum(type(m).__name__ == "ModulatedDeformConv2d" for m in dcn.modules())
    assert layers >= 10
    extra = count_dispatches(dcn, *CAMERA).kernels - count_dispatches(plain, *CAMERA).kernels
    assert extra <= 7 * layers + 10     # offset conv, sigmoid, flip, addcmul, grid_sample, mul (+ the deep stem)
