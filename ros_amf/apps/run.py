"""``ros-amf run --params launch/X.yaml``: start the node graph a launch file would start, in one process.

Reads the ROS 2 parameter file the launch files pass to their nodes (see ros_amf.ros.launcher).
"""
from __future__ import annotations

import argparse
import sys

from ros_amf.ros.launcher import GraphStartError, LaunchError, plan, spin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf run", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="ROS 2 parameter file, e.g. launch/perception.yaml")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        planned = plan(args.params)
    except LaunchError as exc:
        print(f"ros-amf run: {exc}", file=sys.stderr)
        return 2
    try:
        spin(planned, args.duration,
             on_started=lambda names: print(f"ros-amf run: started {', '.join(names)}", flush=True))
    except GraphStartError as exc:
        print(f"ros-amf run: the node graph from '{args.params}' did not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
