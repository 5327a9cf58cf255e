"""``ros-amf model-info CONFIG --size 640``: parameters and GFLOPs per module of a model config.

GFLOPs are printed in the detectron2/fvcore convention the papers use (one multiply-add = 1 FLOP,
i.e. torch's count / 2) next to torch's raw count. Element-wise ops, pooling and grid_sample (DCN
sampling) are not counted, as in fvcore. The paper's figures are printed next to the configs they
describe.

--dispatches adds the ops one forward dispatches (counted on the meta device, which takes the GPU's
code path): all of them, and the kernels among them (not views or bare allocations), the launch
count that bounds a GPU's frame rate when kernels are small.
"""
from __future__ import annotations

import argparse
import json
import sys

from ros_amf.contract.config import ConfigError
from ros_amf.modeling.dispatch_count import count_dispatches
from ros_amf.modeling.info import build_from_yaml, measure, paper_figure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf model-info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="model YAML (models/*.yaml)")
    parser.add_argument("--size", default="640", help="input size: N (NxN) or HxW, multiples of 32 (default 640)")
    parser.add_argument("--depth", type=int, default=2, help="submodule levels to list (default 2)")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    parser.add_argument("--dispatches", action="store_true",
                        help="also count the ops (and kernels) one forward dispatches, on the meta device")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in (args.size.split("x") if "x" in args.size else (args.size, args.size)))
    except ValueError:
        print(f"error: --size '{args.size}' is not N or HxW; e.g. --size 640 or --size 640x864.", file=sys.stderr)
        return 2
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        print(f"error: --size {height}x{width} must be positive multiples of 32 (the models need padded inputs).",
              file=sys.stderr)
        return 2
    try:
        task, cfg, model = build_from_yaml(args.config)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dispatches = count_dispatches(model, height, width) if args.dispatches else None
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
    if dispatches is not None:
        top = ", ".join(f"{name} {n}" for name, n in dispatches.by_op.most_common(6))
        print(f"dispatches per forward: {dispatches.total} ops, {dispatches.kernels} kernels ({top})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "task": task, "size_hw": [height, width], "paper_gflops": figure,
                       "rows": rows, "dispatches": dispatches.as_dict() if dispatches else None}, handle, indent=2)
    return 0
