"""Soak run: does the pipelined engine's memory stay flat over tens of thousands of frames?

Frames are fed at a fixed rate above what the engine sustains (the latest-frame policy drops the
surplus, as on a live camera), results are thrown away as soon as they are delivered (as a node does
after publishing), and the process RSS is sampled every ``sample_every`` frames. The verdict is the
least-squares slope of RSS over frames after ``warmup_frames`` (allocator arenas, oneDNN primitive
caches and the first forward's buffers grow during warm-up by design), in MiB per 1,000 frames.

Beside RSS, the Python object count (``gc``) is sampled: RSS rising while the object count is flat points
at native memory (allocator caches, fragmentation); both rising points at Python references kept per frame.
``trim_every`` > 0 hands freed heap pages back to the OS (glibc ``malloc_trim``) every so many frames, to
tell retained-but-free memory from memory still in use.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

TARGET_MIB_PER_1000 = 1.0


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _libc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to trim
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_malloc_trim()


def release_freed_heap() -> bool:
    """Return free heap pages of every malloc arena to the OS; False where the C library has no malloc_trim."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


@dataclass(frozen=True)
class SoakSample:
    frame: int              # frames submitted so far
    seconds: float          # since the start of the feed
    rss_mib: float
    python_objects: int     # objects tracked by the garbage collector


def slope_per_1000(samples: Sequence[SoakSample], first_frame: int, field: str = "rss_mib") -> float | None:
    """Least-squares slope of ``field`` over frames, from ``first_frame`` on, per 1,000 frames."""
    points = [(s.frame, getattr(s, field)) for s in samples if s.frame >= first_frame]
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return None
    frames, values = np.array(points, dtype=np.float64).T
    return float(np.polyfit(frames, values, 1)[0]) * 1000.0


def soak(engine, frames: Sequence[np.ndarray], rate_hz: float, count: int, *, warmup_frames: int,
         sample_every: int = 250, trim_every: int = 0, progress: Callable[[SoakSample], None] | None = None) -> dict:
    """Feed ``count`` frames to the started-here ``engine`` at ``rate_hz``; RSS samples and the slope after warm-up."""
    if not 0 <= warmup_frames < count:
        raise ValueError(f"warm-up ({warmup_frames} frames) must be shorter than the soak ({count} frames).")
    if rate_hz <= 0 or sample_every < 1:
        raise ValueError("the feed rate must be positive and sample_every at least 1.")
    engine.on_result = lambda result: None   # dropped at once, like a published result
    engine.start()
    samples: list[SoakSample] = []
    trims = 0
    period = 1.0 / rate_hz
    start = time.perf_counter()
    try:
        for i in range(count):
            delay = start + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            engine.submit(frames[i % len(frames)], "rgb8")
            if trim_every and i and i % trim_every == 0:
                trims += release_freed_heap()
            if i % sample_every == 0:
                samples.append(SoakSample(i, time.perf_counter() - start, rss_mib(), len(gc.get_objects())))
                if progress is not None:
                    progress(samples[-1])
        engine.wait_idle(120)
        wall = time.perf_counter() - start
        samples.append(SoakSample(count, wall, rss_mib(), len(gc.get_objects())))
    finally:
        engine.stop()
    snap = engine.stats.snapshot()
    measured = [s for s in samples if s.frame >= warmup_frames]
    slope = slope_per_1000(samples, warmup_frames)
    second_half = slope_per_1000(samples, warmup_frames + (count - warmup_frames) // 2)
    return {
        "frames_fed": count, "feed_rate_hz": rate_hz, "achieved_feed_hz": count / wall, "wall_s": wall,
        "warmup_frames": warmup_frames, "sample_every": sample_every, "trim_every": trim_every, "trims": trims,
        "frames_out": snap.frames_out, "frames_dropped": snap.frames_dropped, "frames_failed": snap.frames_failed,
        "frames_rejected": snap.frames_rejected,
        "rss_mib_start": samples[0].rss_mib, "rss_mib_after_warmup": measured[0].rss_mib,
        "rss_mib_end": samples[-1].rss_mib, "rss_mib_max": max(s.rss_mib for s in samples),
        "rss_slope_mib_per_1000_after_warmup": slope,
        "rss_slope_mib_per_1000_second_half": second_half,
        "python_objects_slope_per_1000_after_warmup": slope_per_1000(samples, warmup_frames, "python_objects"),
        "target_mib_per_1000": TARGET_MIB_PER_1000,
        "flat": slope is not None and slope <= TARGET_MIB_PER_1000,
        "samples": [asdict(s) for s in samples],
    }


def format_soak(report: dict) -> str:
    """The soak table: RSS through the run, the slope after warm-up and the verdict."""
    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"fed {report['frames_fed']} frames at {report['feed_rate_hz']:.1f} Hz (achieved "
             f"{report['achieved_feed_hz']:.1f} Hz) in {report['wall_s']:.0f} s: out {report['frames_out']}, dropped "
             f"{report['frames_dropped']}, failed {report['frames_failed']}",
             "| frames | s | RSS MiB | Python objects |", "|---:|---:|---:|---:|"]
    samples = report["samples"]
    rows = sorted(set(range(0, len(samples), max(1, len(samples) // 10))) | {len(samples) - 1})
    for s in (samples[k] for k in rows):
        lines.append(f"| {s['frame']} | {s['seconds']:.0f} | {s['rss_mib']:.1f} | {s['python_objects']} |")
    lines.append(f"RSS {report['rss_mib_start']:.1f} -> {report['rss_mib_after_warmup']:.1f} (after "
                 f"{report['warmup_frames']} warm-up frames) -> {report['rss_mib_end']:.1f} MiB; slope after warm-up "
                 f"{fmt(report['rss_slope_mib_per_1000_after_warmup'])} MiB per 1,000 frames (second half "
                 f"{fmt(report['rss_slope_mib_per_1000_second_half'])}), Python objects "
                 f"{fmt(report['python_objects_slope_per_1000_after_warmup'], 1)} per 1,000 frames; target <= "
                 f"{report['target_mib_per_1000']:.1f}: {'FLAT' if report['flat'] else 'NOT FLAT'}")
    return "\n".join(lines)
