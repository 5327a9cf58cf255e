"""``ros-amf model-info CONFIG --size 640``: parameters and GFLOPs per module of a model config.

FLOPs come from torch's FlopCounterMode (convolutions, matmuls, bmm/einsum). We print GFLOPs in the
detectron2/fvcore convention the papers use (one multiply-add = 1 FLOP, i.e. torch's count / 2)
and torch's raw count. Element-wise ops, pooling and grid_sample (DCN sampling) are not counted,
as in fvcore. The paper's figures are printed next to the configs they describe.
"""
from __future__ import annotations

import argparse
import json
import sys
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf model-info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="model YAML (models/*.yaml)")
    parser.add_argument("--size", default="640", help="input size: N (NxN) or HxW, multiples of 32 (default 640)")
    parser.add_argument("--depth", type=int, default=2, help="submodule levels to list (default 2)")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in (args.size.split("x") if "x" in args.size else (args.size, args.size)))
    except ValueError:
        print(f"error: --size '{args.size}' is not N or HxW; e.g. --size 640 or --size 640x864.", file=sys.stderr)
        return 2
    if height % 32 or width % 32:
        print(f"error: --size {height}x{width} must be multiples of 32 (the models need padded inputs).",
              file=sys.stderr)
        return 2
    try:
        task, cfg, model = build_from_yaml(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = measure(model, height, width, args.depth)
    print(f"{args.config} ({task}) at {height}x{width}")
    print(f"{'module':<42} {'params (M)':>11} {'GFLOPs':>9} {'torch GFLOPs':>13}")
    for row in rows:
        name = "  " * max(row["level"] - 1, 0) + row["module"]
        print(f"{name:<42} {row['params'] / 1e6:>11.3f} {row['torch_flops'] / 2e9:>9.2f} {row['torch_flops'] / 1e9:>13.2f}")
    figure = paper_figure(cfg) if task == "instance" else None
    total = rows[0]
    print(f"total: {total['params'] / 1e6:.2f} M parameters, {total['torch_flops'] / 2e9:.1f} GFLOPs "
          f"(multiply-add = 1){'; paper: ' + figure + ' GFLOPs' if figure else ''}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "task": task, "size_hw": [height, width], "paper_gflops": figure,
                       "rows": rows}, handle, indent=2)
    return 0
