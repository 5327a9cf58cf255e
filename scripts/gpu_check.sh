#!/usr/bin/env bash
# The GPU check of issue 18 in one command (see scripts/gpu_check.py for the steps):
#   scripts/gpu_check.sh [--dry-run] [--out gpu_check.json]
# On the lent GPU machine it runs on the preinstalled python3 (torch with CUDA; no network, no venv)
# and must finish in under 8 minutes. Without CUDA, or with --dry-run, it is the quick CPU plumbing check.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
elif [ -x .venv/bin/python ]; then
    python=.venv/bin/python
else
    python=python3
fi
# the package from this tree without installing it; DDS (should anything start rclpy) stays on this machine
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec timeout 470 "$python" scripts/gpu_check.py "$@"
