#!/usr/bin/env python
"""Cost of turning one camera frame into pixels the network path takes, per encoding (issue 20).

One synthetic street frame (scaled to --width x --height) is encoded as a camera driver would publish it
(tests/camera_encodings.py: Bayer mosaic, YUV 4:2:2, NV12/NV21, mono16, JPEG, PNG) and decoded with the
node's own functions (ros_amf.contract.image_messages), in this process, one encoding after another, with the
same thread layout (--threads for OpenCV and torch). Two columns: the decode alone (rgb8/bgr8/mono8 are
zero-copy views, so that column is the floor), and decode + pre-processing to the shipped instance model's
network input (384/512), which every frame pays whatever its encoding.

    .venv/bin/python scripts/bench_decoding.py --out out/bench/decoding.json

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # the test-side encoders: what a camera driver would publish

ENCODINGS = ("rgb8", "bgr8", "mono8", "mono16", "bayer_rggb8", "uyvy", "yuyv", "nv12", "nv21")
COMPRESSED = ("jpeg", "png")


def _timed(function, repeats: int) -> list[float]:
    function()                                   # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads (1 = one callback thread)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "decoding.json")
    args = parser.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from camera_encodings import compressed, encode
    from ros_amf.contract.input_size import InputSize
    from ros_amf.data.synthetic.render import render_still
    from ros_amf.contract.image_messages import compressed_to_pixels, image_to_pixels
    from ros_amf.runtime.preprocess import preprocess_numpy

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    rgb = cv2.resize(render_still(seed=0, index=1).image, (args.width, args.height), interpolation=cv2.INTER_CUBIC)
    size = InputSize(384, 512)
    frames = {enc: (encode(rgb, "rgb8") if enc in ("rgb8", "bgr8") else encode(rgb, enc), image_to_pixels)
              for enc in ENCODINGS}
    frames["bgr8"][0].encoding = "bgr8"           # same bytes, read as BGR: the cost is what is measured
    for fmt in COMPRESSED:
        frames[fmt] = (compressed(rgb, fmt), compressed_to_pixels)

    rows = []
    for name, (msg, decode) in frames.items():
        decode_ms = _timed(lambda: decode(msg), args.repeats)
        full_ms = _timed(lambda: preprocess_numpy(*decode(msg), size), args.repeats)
        rows.append({"input": name, "message_bytes": len(msg.data),
                     "decode_ms_p50": statistics.median(decode_ms), "decode_ms_min": min(decode_ms),
                     "to_network_input_ms_p50": statistics.median(full_ms)})
    floor = next(r for r in rows if r["input"] == "rgb8")["to_network_input_ms_p50"]
    for row in rows:
        row["to_network_input_vs_rgb8"] = row["to_network_input_ms_p50"] / floor

    print(f"{args.width}x{args.height} frame, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'input':<12} {'MB/frame':>9} {'decode ms':>10} {'+ preprocess ms':>16} {'vs rgb8':>8}")
    for r in rows:
        print(f"{r['input']:<12} {r['message_bytes'] / 1e6:>9.2f} {r['decode_ms_p50']:>10.2f} "
              f"{r['to_network_input_ms_p50']:>16.2f} {r['to_network_input_vs_rgb8']:>7.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"width": args.width, "height": args.height, "threads": args.threads,
                                    "repeats": args.repeats, "network_input": [size.short_side, size.max_long_side],
                                    "machine": platform.processor() or platform.machine(),
                                    "opencv": cv2.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
