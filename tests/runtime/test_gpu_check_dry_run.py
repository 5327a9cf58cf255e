"""scripts/gpu_check.sh runs end to end as a CPU dry run and writes every step into its JSON report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"runtime_tests", "device_vs_cpu", "pipelined_vs_sync", "stream_sanitizer", "bare_fps",
         "pipelined_bare_naive", "paced_latency", "stream_overlap"}


@pytest.mark.slow
def test_gpu_check_dry_run_passes_and_reports_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    assert set(report["steps"]) == STEPS
    assert all(step["status"] == "ok" for step in report["steps"].values()), report["steps"]
    results = {name: step["result"] for name, step in report["steps"].items()}
    assert results["runtime_tests"]["passed"]
    assert results["device_vs_cpu"]["equal"] and results["device_vs_cpu"]["instances"] > 0
    assert results["pipelined_vs_sync"]["equal"]
    assert results["stream_sanitizer"]["returncode"] == 0
    assert all(row["eager_fps"] > 0 for row in results["bare_fps"].values())
    speeds = results["pipelined_bare_naive"]
    assert speeds["bare_fps"] > 0 and speeds["pipelined_fps"] > 0 and speeds["naive_fps"] > 0
    paced = results["paced_latency"]["30hz"]
    assert paced["frames_out"] + paced["dropped"] == paced["frames_in"] and paced["p50_ms"] > 0
    assert results["stream_overlap"]["kernels"] == 0      # no GPU: the overlap step says so instead of inventing one
