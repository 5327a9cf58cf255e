"""``ros-amf run --params launch/X.yaml``: start the node graph a launch file would start, in one process.

Reads the ROS 2 parameter file the launch files pass to their nodes (see ros_amf.ros.launcher).
"""
from __future__ import annotations

import argparse
import gc
import sys

from ros_amf.ros.launcher import GraphStartError, LaunchError, plan, spin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-amf run", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="ROS 2 parameter file, e.g. launch/perception.yaml")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (0 = until SIGINT / SIGTERM)")
    args = parser.parse_args(argv)
    try:
        planned = plan(args.params)
    except LaunchError as exc:
        print(f"ros-amf run: {exc}", file=sys.stderr)
        return 2
    try:
        reason = spin(planned, args.duration,
                      on_started=lambda names: print(f"ros-amf run: started {', '.join(names)}", flush=True))
    except GraphStartError as exc:
        print(f"ros-amf run: the node graph from '{args.params}' did not start: {exc}", file=sys.stderr)
        return 1
    # the nodes logged their final stats; a stop by SIGINT / SIGTERM is the normal end, hence status 0
    print(f"ros-amf run: stopped ({reason})", flush=True)
    # the interpreter's last garbage collections walk every object torch made (~0.7 s on a loaded 2-core
    # CPU); the graph is gone, nothing needs collecting, so spare the stop that time
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
