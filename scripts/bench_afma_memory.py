#!/usr/bin/env python
"""Peak memory and CPU time per frame of AFMA inference: ours (factored) vs the naive reference.

Default case is the issue's: 1024x2048 image, 19 classes, attention depth d = 2, patch p = 10,
features[2] of a ResNet-18 (64 channels). Each implementation runs in its own fresh process
(so one's allocations cannot hide the other's); peak memory is the growth of the process's
peak RSS over its RSS once the inputs and weights exist, i.e. everything the AFMA forward
allocates, its output included. Both outputs are saved and compared.

    .venv/bin/python scripts/bench_afma_memory.py --out bench_afma_memory.json

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(args: argparse.Namespace) -> None:
    """Child process: build inputs, run one implementation, report peak memory and times as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch
    from ros_amf.modeling.semantic.afma import AcrossFeatureMapAttention
    from tests.afma_reference import naive_forward

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    afma = AcrossFeatureMapAttention(args.feature_channels, args.classes, depth=args.depth,
                                     patch_size=args.patch, embed_rows=args.embed_rows).eval()
    image = torch.randn(1, 3, args.height, args.width)
    scale = 2 ** args.depth
    features = [image] + [None] * 5
    features[args.depth] = torch.randn(1, args.feature_channels, args.height // scale, args.width // scale)
    logits = torch.randn(1, args.classes, args.height, args.width)
    forward = (lambda: afma(image, features, logits)[0]) if args.impl == "ours" else \
        (lambda: naive_forward(afma, image, features, logits)[0])
    # warm up on a small frame first: loading kernels and thread pools is not the forward's memory
    side = 2 * args.patch * scale
    warm_features = [None] * 6
    warm_features[args.depth] = torch.randn(1, args.feature_channels, side // scale, side // scale)
    warm_image, warm_logits = torch.randn(1, 3, side, side), torch.randn(1, args.classes, side, side)
    with torch.no_grad():
        afma(warm_image, warm_features, warm_logits)
        naive_forward(afma, warm_image, warm_features, warm_logits)
    before = _rss_mib()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            start = time.perf_counter()
            output = forward()
            times.append(time.perf_counter() - start)
            if _ < args.repeats - 1:
                del output
    peak = _peak_rss_mib() - before
    torch.save(output, args.save)
    print(json.dumps({"impl": args.impl, "peak_mib": peak, "seconds": times}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--patch", type=int, default=10)
    parser.add_argument("--feature-channels", type=int, default=64)
    parser.add_argument("--embed-rows", type=int, default=40, help="rows per image-branch strip (ours)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    parser.add_argument("--repeats", type=int, default=2, help="forward passes per implementation (time of each)")
    parser.add_argument("--out", default="bench_afma_memory.json", help="JSON result file")
    parser.add_argument("--impl", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.impl:
        run_one(args)
        return 0

    import torch
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("ours", "naive"):
            child = [sys.executable, __file__, "--impl", impl, "--save", f"{tmp}/{impl}.pt"] + [
                a for a in (argv if argv is not None else sys.argv[1:])]
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                print(f"the {impl} run failed (exit {done.returncode}); see the error above.", file=sys.stderr)
                return 1
            results[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        ours = torch.load(f"{tmp}/ours.pt", weights_only=True)
        naive = torch.load(f"{tmp}/naive.pt", weights_only=True)
        max_abs = (ours - naive).abs().max().item()
        relative = ((ours - naive).norm() / naive.norm()).item()
    report = {
        "case": {k: getattr(args, k) for k in ("height", "width", "classes", "depth", "patch", "feature_channels",
                                                "embed_rows", "threads", "repeats")},
        "ours": results["ours"], "naive": results["naive"],
        "memory_ratio": results["naive"]["peak_mib"] / results["ours"]["peak_mib"],
        "output_max_abs_diff": max_abs, "output_relative_error": relative,
        "torch": torch.__version__,
    }
    print(f"AFMA forward, {args.height}x{args.width}, {args.classes} classes, d={args.depth}, p={args.patch}, "
          f"{args.threads} thread(s), CPU")
    print(f"{'implementation':<16}{'peak memory (MiB)':>20}{'s / frame (best)':>20}{'s / frame (all)':>28}")
    for impl in ("ours", "naive"):
        r = results[impl]
        shown = ", ".join(f"{s:.2f}" for s in r["seconds"])
        print(f"{impl:<16}{r['peak_mib']:>20.0f}{min(r['seconds']):>20.2f}{shown:>28}")
    print(f"memory ratio naive/ours: {report['memory_ratio']:.1f}x; outputs: max |diff| {max_abs:.3g}, "
          f"relative error {relative:.3g}")
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
