"""Parameters and FLOPs per module of a model config (``ros-amf model-info``).

FLOPs come from torch's FlopCounterMode (convolutions, matmuls, bmm/einsum); rows carry torch's raw
count. The papers use the detectron2/fvcore convention (one multiply-add = 1 FLOP, i.e. torch's
count / 2). Element-wise ops, pooling and grid_sample (DCN sampling) are not counted, as in fvcore.
:func:`paper_figure` gives the paper's GFLOPs for the configs they describe.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ros_amf.contract.config import ConfigError, from_dict, read_yaml

# AMF-SparseInst paper figures (R-50-d-DCNv2 backbone): Table 7 (SimAM-ASPP only, by rates), Table 8 (full model).
PAPER_GFLOPS = {
    ("simam_aspp", False, False, (6, 12, 18)): "94.6 (Table 7)",
    ("simam_aspp", False, False, (6, 18, 24)): "95.4 (Table 7)",
    ("simam_aspp", False, False, (6, 18, 36)): "96.6 (Table 7)",
    ("simam_aspp", True, True, (6, 18, 24)): "93.9 (Table 8, W3,W5 = 0.6,0.4; range 93.9-96.9 over W)",
}


def paper_figure(cfg: Any) -> str | None:
    if getattr(cfg, "backbone_depth", None) != 50 or not cfg.deep_stem or not cfg.dcn_stages:
        return None
    return PAPER_GFLOPS.get((cfg.context, cfg.lite_bifpn, cfg.fem, tuple(cfg.aspp_rates)))


def build_from_yaml(path: str) -> tuple[str, Any, nn.Module]:
    """Instance configs (InstanceModelConfig) or semantic ones (SemanticModelConfig), top level or under model:."""
    data = read_yaml(path)
    if isinstance(data.get("model"), dict):
        data = data["model"]
    from ros_amf.modeling.sparseinst.model import InstanceModelConfig, build_instance_model
    try:
        cfg = from_dict(InstanceModelConfig, data, where=path)
        return "instance", cfg, build_instance_model(cfg)
    except ConfigError as instance_error:
        try:
            from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model
            cfg = from_dict(SemanticModelConfig, data, where=path)
        except (ImportError, ConfigError):
            raise instance_error from None
        return "semantic", cfg, build_semantic_model(cfg)


def measure(model: nn.Module, height: int, width: int, depth: int = 2) -> list[dict[str, Any]]:
    """Rows (module, params, torch FLOPs) for the model and its submodules down to ``depth``."""
    model.eval()
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, height, width))
    flops = counter.get_flop_counts()
    root = type(model).__name__  # FlopCounterMode names modules "<ClassName>.<child>..."
    rows = []
    for name, module in model.named_modules():
        level = 0 if not name else name.count(".") + 1
        if level > depth:
            continue
        key = root if not name else f"{root}.{name}"
        total = sum(flops.get(key, {}).values()) if name else sum(flops.get("Global", {}).values())
        rows.append({"module": name or "(total)", "level": level, "params": sum(p.numel() for p in module.parameters()),
                     "torch_flops": int(total)})
    return rows
