"""When to publish which bag frame: the replay modes, independent of ROS.

Modes (``ReplayPlan.mode``):
- ``recorded``: the bag's own timeline (recorder receive times) divided by ``rate_factor``;
- ``fixed``: a constant ``rate_hz``;
- ``fast``: as fast as the graph accepts, i.e. the next frame goes out as soon as fewer than
  ``max_in_flight`` frames are waiting for their outputs (a frame stops waiting when its output
  arrives or after the monitor's timeout, which counts it dropped).
``loops`` > 1 plays the bag again; header stamps of later loops are shifted by whole bag spans,
so every published frame keeps a unique stamp for matching while the ground truth is found
through the bag index; ``stamp_offset_ns`` shifts a whole run the same way, so that a late output
of one run can never be matched to the next run of the same session. The first ``warmup_frames`` published frames are excluded from metrics.

The publisher never skips a frame: if it falls behind schedule it sends immediately and the
lateness is recorded, so a slow replay process shows up in the report instead of as drops.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

MODES = ("recorded", "fixed", "fast")


class GraphError(RuntimeError):
    """The node graph did not start or cannot be reached; the message says what to check."""


@dataclass(frozen=True)
class ReplayPlan:
    mode: str = "recorded"
    rate_factor: float = 1.0       # recorded mode: 2.0 plays twice as fast
    rate_hz: float = 10.0          # fixed mode
    max_in_flight: int = 1         # fast mode
    loops: int = 1
    warmup_frames: int = 0
    limit: int | None = None       # publish at most this many frames in total (warm-up included)
    stamp_offset_ns: int = 0       # added to every stamp, so runs in one session never share stamps

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"replay mode '{self.mode}' is unknown; use one of {', '.join(MODES)}.")
        if self.rate_factor <= 0 or self.rate_hz <= 0:
            raise ValueError("rate_factor and rate_hz must be positive.")
        if self.max_in_flight < 1 or self.loops < 1 or self.warmup_frames < 0:
            raise ValueError("max_in_flight and loops must be >= 1 and warmup_frames >= 0.")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScheduledFrame:
    seq: int             # publication order, 0-based
    bag_index: int       # which bag frame (for ground truth)
    stamp_ns: int        # header stamp to publish (unique per publication)
    offset_s: float      # planned send time after the start; NaN-free, 0 in fast mode
    warmup: bool


@dataclass(frozen=True)
class SentFrame:
    seq: int
    bag_index: int
    stamp_ns: int
    sent_at: float       # clock() when published
    late_s: float        # how far behind its planned time it went out (0 in fast mode)
    warmup: bool


def loop_period_ns(stamps_ns: Sequence[int]) -> int:
    """Stamp shift between loops: the bag's span plus one median frame interval."""
    if len(stamps_ns) < 2:
        return 1_000_000_000
    gaps = sorted(b - a for a, b in zip(stamps_ns, stamps_ns[1:]))
    return stamps_ns[-1] - stamps_ns[0] + max(gaps[len(gaps) // 2], 1)


def schedule(stamps_ns: Sequence[int], log_times_ns: Sequence[int], plan: ReplayPlan) -> list[ScheduledFrame]:
    """The full publication schedule (offsets in seconds from the start of the replay)."""
    if len(stamps_ns) != len(log_times_ns):
        raise ValueError("stamps_ns and log_times_ns must have one entry per bag frame.")
    if len(set(stamps_ns)) != len(stamps_ns):
        raise ValueError("the bag has frames with identical header stamps, so outputs cannot be matched to inputs; "
                         "re-stamp the camera topic before replaying.")
    count = len(stamps_ns)
    if count == 0:
        return []
    shift = loop_period_ns(list(stamps_ns))
    log_span = (log_times_ns[-1] - log_times_ns[0]) + (shift - (stamps_ns[-1] - stamps_ns[0]))
    frames: list[ScheduledFrame] = []
    for loop in range(plan.loops):
        for index in range(count):
            seq = len(frames)
            if plan.limit is not None and seq >= plan.limit:
                return frames
            if plan.mode == "recorded":
                offset = (loop * log_span + log_times_ns[index] - log_times_ns[0]) / 1e9 / plan.rate_factor
            elif plan.mode == "fixed":
                offset = seq / plan.rate_hz
            else:
                offset = 0.0
            frames.append(ScheduledFrame(seq, index, stamps_ns[index] + loop * shift + plan.stamp_offset_ns, offset,
                                         warmup=seq < plan.warmup_frames))
    return frames


def sleep_until(deadline: float, clock: Callable[[], float] = time.perf_counter) -> None:
    """Sleep coarsely, then spin the last half millisecond: time.sleep alone overshoots by up to ~1 ms."""
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return
        if remaining > 0.0015:
            time.sleep(remaining - 0.001)
        elif remaining > 0.0005:
            time.sleep(0)


def publish_schedule(frames: Sequence[ScheduledFrame], plan: ReplayPlan, send: Callable[[ScheduledFrame, float], None],
                     *, wait_for_capacity: Callable[[int], None] | None = None,
                     clock: Callable[[], float] = time.perf_counter,
                     should_stop: Callable[[], bool] = lambda: False) -> list[SentFrame]:
    """Publish every scheduled frame through ``send(frame, sent_at)``; returns what was sent and when.

    ``wait_for_capacity(max_in_flight)`` blocks (fast mode) until fewer frames than that await outputs.
    """
    if plan.mode == "fast" and wait_for_capacity is None:
        raise ValueError("fast mode needs wait_for_capacity (the monitor's in-flight count).")
    sent: list[SentFrame] = []
    start = clock()
    for frame in frames:
        if should_stop():
            break
        if plan.mode == "fast":
            wait_for_capacity(plan.max_in_flight)
            late = 0.0
        else:
            sleep_until(start + frame.offset_s, clock)
            late = max(0.0, clock() - (start + frame.offset_s))
        sent_at = clock()
        send(frame, sent_at)
        sent.append(SentFrame(frame.seq, frame.bag_index, frame.stamp_ns, sent_at, late, frame.warmup))
    return sent
