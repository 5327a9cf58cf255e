#!/usr/bin/env python
"""CPU training step time of a semantic config with AFMA, against the same host network without AFMA.

One step = forward, SemanticLoss (5 · NLL + AFMA MSE), backward and an Adam update, on random
images and blocky random labels (the cost does not depend on the pixel values). The model is built
from the config with random weights (no pretrained file is read). Both variants run in this process,
alternating, with the same thread count; the best and median step of each are reported.

    .venv/bin/python scripts/bench_afma_train_step.py --config models/fpn_afma_effl0.yaml --out step.json

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocky_labels(batch: int, height: int, width: int, classes: int, generator) -> "torch.Tensor":
    import torch
    import torch.nn.functional as F
    coarse = torch.randint(0, classes, (batch, 1, height // 16, width // 16), generator=generator)
    return F.interpolate(coarse.float(), size=(height, width), mode="nearest")[:, 0].long()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="models/fpn_afma_effl0.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--out", default="bench_afma_train_step.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch
    from ros_amf.contract.config import from_dict, read_yaml
    from ros_amf.modeling.semantic.loss import SemanticLoss
    from ros_amf.modeling.semantic.model import SemanticModelConfig, build_semantic_model

    torch.set_num_threads(args.threads)
    data = read_yaml(args.config)
    cfg = from_dict(SemanticModelConfig, data.get("model", data), where=args.config)
    cfg = dataclasses.replace(cfg, backbone_weights=None)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.height, args.width, generator=generator)
    labels = _blocky_labels(args.batch, args.height, args.width, cfg.num_classes, generator)
    variants = {}
    for name, afma in (("with AFMA", True), ("host only", False)):
        torch.manual_seed(0)
        model = build_semantic_model(dataclasses.replace(cfg, afma=afma)).train()
        variants[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4))
    loss_fn = SemanticLoss(None, cfg.num_classes)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in range(args.steps + 1):
        for name, (model, optimiser) in variants.items():
            start = time.perf_counter()
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)["loss"]
            loss.backward()
            optimiser.step()
            if step:    # step 0 warms up allocators and kernels
                times[name].append(time.perf_counter() - start)
            if not torch.isfinite(loss):
                print(f"error: the {name} loss is not finite ({loss.item()}).", file=sys.stderr)
                return 1
    summary = {name: {"best_s": min(t), "median_s": statistics.median(t), "all_s": t} for name, t in times.items()}
    afma_share = summary["with AFMA"]["median_s"] - summary["host only"]["median_s"]
    report = {"config": args.config, "batch": args.batch, "size_hw": [args.height, args.width],
              "threads": args.threads, "torch": torch.__version__, "variants": summary,
              "afma_seconds_per_step": afma_share}
    print(f"{args.config}: training step, batch {args.batch}, {args.height}x{args.width}, {args.threads} thread(s)")
    print(f"{'variant':<12}{'best s':>10}{'median s':>10}")
    for name, row in summary.items():
        print(f"{name:<12}{row['best_s']:>10.2f}{row['median_s']:>10.2f}")
    print(f"AFMA adds {afma_share:.2f} s per step (median difference)")
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
