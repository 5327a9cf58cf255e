#!/usr/bin/env python3
"""Replay a bag into the node graph and benchmark speed and accuracy (same as `ros-amf replay`).

    scripts/replay.py data/demo/bags/drive_mcap --graph both --peak --json out/replay.json --plots out/plots
"""
import sys

from ros_amf.apps.replay import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
