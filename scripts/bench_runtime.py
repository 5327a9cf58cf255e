#!/usr/bin/env python3
"""Thin wrapper: same as `ros-amf bench runtime` (see ros_amf/apps/bench.py for the options)."""
import sys

from ros_amf.apps.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
