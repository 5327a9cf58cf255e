"""Peak sustainable input rate: the highest rate the graph handles with at most 5 % dropped frames.

A pure search over a ``measure(rate_hz)`` callable (which replays for a while at that rate, after
its own warm-up, and returns the dropped fraction), so the strategy is testable without ROS:
1. bracket: double (or halve) the rate from ``start_hz`` until one rate passes and one fails;
2. binary search inside the bracket until it is narrower than ``bracket_tolerance``;
3. linear refinement: step up from the best passing rate in small steps until one fails, which
   guards against a lucky binary-search probe being the answer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_DROP_FRACTION = 0.05
FIXED_RATES_HZ = (10.0, 30.0, 60.0)


@dataclass(frozen=True)
class RateTrial:
    rate_hz: float
    drop_fraction: float
    phase: str            # "bracket", "binary" or "linear"
    passed: bool
    details: Any = None   # whatever measure() returned, kept for plots (throughput vs input rate)


@dataclass
class PeakSearch:
    peak_hz: float | None          # None: even min_hz drops too much
    trials: list[RateTrial] = field(default_factory=list)
    capped: bool = False           # True: max_hz passed, the real peak may be higher

    def summary(self) -> str:
        if self.peak_hz is None:
            return f"no sustainable rate: even {self.trials[-1].rate_hz:.2f} Hz drops more than allowed"
        more = " (the search cap; the graph may sustain more)" if self.capped else ""
        return f"peak sustainable rate {self.peak_hz:.2f} Hz{more} after {len(self.trials)} trials"


def _drop_fraction(result: Any) -> float:
    value = result if isinstance(result, (int, float)) else getattr(result, "drop_fraction")
    return float(value)


def find_peak_rate(measure: Callable[[float], Any], *, start_hz: float = 10.0, min_hz: float = 0.5,
                   max_hz: float = 240.0, max_drop_fraction: float = MAX_DROP_FRACTION,
                   bracket_tolerance: float = 0.10, linear_step_fraction: float = 0.03,
                   max_linear_steps: int = 5) -> PeakSearch:
    """Search the peak rate; ``measure(rate)`` returns a drop fraction or an object with ``drop_fraction``."""
    if not 0 < min_hz <= start_hz <= max_hz:
        raise ValueError(f"rates must satisfy 0 < min_hz <= start_hz <= max_hz, got {min_hz}, {start_hz}, {max_hz}.")
    search = PeakSearch(peak_hz=None)

    def trial(rate: float, phase: str) -> bool:
        result = measure(rate)
        drops = _drop_fraction(result)
        passed = drops <= max_drop_fraction
        search.trials.append(RateTrial(rate, drops, phase, passed, result))
        return passed

    # 1. bracket [passing, failing]
    passing: float | None = None
    failing: float | None = None
    rate = start_hz
    if trial(rate, "bracket"):
        passing = rate
        while failing is None:
            if rate >= max_hz:
                search.peak_hz, search.capped = max_hz, True
                return search
            rate = min(rate * 2.0, max_hz)
            if trial(rate, "bracket"):
                passing = rate
            else:
                failing = rate
    else:
        failing = rate
        while passing is None:
            if rate <= min_hz:
                return search
            rate = max(rate / 2.0, min_hz)
            if trial(rate, "bracket"):
                passing = rate
            else:
                failing = rate

    # 2. binary search until the bracket is narrow
    while failing / passing > 1.0 + bracket_tolerance:
        middle = (passing + failing) / 2.0
        if trial(middle, "binary"):
            passing = middle
        else:
            failing = middle

    # 3. linear refinement upwards from the best passing rate
    step = max(passing * linear_step_fraction, 1e-3)
    for _ in range(max_linear_steps):
        rate = passing + step
        if rate >= failing or not trial(rate, "linear"):
            break
        passing = rate
    search.peak_hz = passing
    return search


def plan_fixed_rates(peak_hz: float | None, rates: Sequence[float] = FIXED_RATES_HZ) -> tuple[list[float], list[float]]:
    """Split the fixed benchmark rates into those to measure (<= peak) and those skipped (above the peak)."""
    if peak_hz is None:
        return [], list(rates)
    kept = [r for r in rates if r <= peak_hz]
    return kept, [r for r in rates if r > peak_hz]
