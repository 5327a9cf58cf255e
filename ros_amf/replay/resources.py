"""CPU and memory of the node graph's process (and its children), from /proc; GPU from torch.cuda.

psutil is not a dependency: CPU time is utime+stime from /proc/<pid>/stat (clock ticks), memory is
VmRSS from /proc/<pid>/status. Child processes are included because a launcher may start the nodes
as subprocesses. A sampler thread takes readings at a fixed interval; ``idle_baseline`` measures
the same numbers before any frame is sent so a report can show what the frames cost.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime+stime seconds) or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants currently alive."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def tree_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) summed over the process tree."""
    cpu, rss = 0.0, 0
    for member in process_tree(pid):
        stat = _read_stat(member)
        if stat is not None:
            cpu += stat[1]
            rss += _rss_bytes(member)
    return cpu, rss


def gpu_reading() -> dict | None:
    """Device utilisation (%) and memory in use (MiB) when a CUDA GPU is present, else None."""
    if not Path("/proc/driver/nvidia").exists():
        return None  # do not pay for importing torch on machines without an NVIDIA driver
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        reading = {"gpu_memory_used_mib": (total - free) / 2**20}
        try:
            reading["gpu_util_percent"] = float(torch.cuda.utilization())
        except Exception:  # utilisation needs NVML (pynvml); memory alone is still worth reporting
            reading["gpu_util_percent"] = None
        return reading
    except Exception:
        return None


@dataclass
class ResourceSummary:
    seconds: float
    cpu_percent_mean: float | None   # 100 = one core busy
    cpu_percent_max: float | None
    rss_mib_mean: float | None
    rss_mib_max: float | None
    gpu_util_percent_mean: float | None = None
    gpu_memory_mib_max: float | None = None
    samples: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class ResourceSampler:
    """Background sampling of a process tree: ``with ResourceSampler(pid) as s: ...; s.summary()``."""

    def __init__(self, pid: int, interval_s: float = 0.2, gpu: bool = True):
        self.pid = pid
        self.interval_s = interval_s
        self.gpu = gpu
        self._cpu_percent: list[float] = []
        self._rss: list[int] = []
        self._gpu_util: list[float] = []
        self._gpu_mem: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._stopped = 0.0

    def _run(self) -> None:
        last_cpu, _ = tree_usage(self.pid)
        last_time = time.monotonic()
        while True:
            # one last reading when stopped: a window shorter than the interval, or a sampler thread
            # starved by a busy machine, still gets at least one sample instead of none
            stopping = self._stop.wait(self.interval_s)
            cpu, rss = tree_usage(self.pid)
            now = time.monotonic()
            if rss == 0:  # the process tree has exited: nothing to read, and no negative CPU delta
                return
            self._cpu_percent.append(100.0 * (cpu - last_cpu) / max(now - last_time, 1e-6))
            self._rss.append(rss)
            last_cpu, last_time = cpu, now
            if self.gpu and (reading := gpu_reading()) is not None:
                if reading.get("gpu_util_percent") is not None:
                    self._gpu_util.append(reading["gpu_util_percent"])
                self._gpu_mem.append(reading["gpu_memory_used_mib"])
            if stopping:
                return

    def start(self) -> ResourceSampler:
        if not Path(f"/proc/{self.pid}").exists():
            raise ProcessLookupError(f"process {self.pid} does not exist; pass the pid of the running node graph.")
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> ResourceSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stopped = time.monotonic()
        return self.summary()

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> ResourceSummary:
        def mean(values):
            return float(np.mean(values)) if values else None

        def peak(values):
            return float(np.max(values)) if values else None

        rss_mib = [r / 2**20 for r in self._rss]
        return ResourceSummary(self._stopped - self._started, mean(self._cpu_percent), peak(self._cpu_percent),
                               mean(rss_mib), peak(rss_mib), mean(self._gpu_util), peak(self._gpu_mem),
                               len(self._cpu_percent))


def idle_baseline(pid: int, seconds: float = 2.0, interval_s: float = 0.2) -> ResourceSummary:
    """Resources of the graph while no frame is sent (what it costs just to be running)."""
    sampler = ResourceSampler(pid, interval_s).start()
    time.sleep(seconds)
    return sampler.stop()
