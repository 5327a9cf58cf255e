"""The peak-rate search finds the highest rate with <= 5 % drops against synthetic graphs."""
from __future__ import annotations

import pytest

from ros_amf.replay.peak import find_peak_rate, plan_fixed_rates


def capacity_graph(capacity_hz: float):
    """A graph that processes at most capacity_hz: above it the excess fraction of frames is dropped."""
    calls: list[float] = []

    def measure(rate: float) -> float:
        calls.append(rate)
        return max(0.0, 1.0 - capacity_hz / rate)

    return measure, calls


@pytest.mark.parametrize("capacity", [3.0, 17.0, 42.0, 95.0])
def test_finds_the_rate_where_drops_reach_five_percent(capacity):
    measure, _ = capacity_graph(capacity)
    search = find_peak_rate(measure, start_hz=10.0)
    true_peak = capacity / 0.95  # drop fraction 1 - c/r <= 0.05
    assert search.peak_hz <= true_peak + 1e-9
    assert search.peak_hz >= true_peak * 0.93  # within the linear-refinement resolution
    assert all(t.passed == (t.drop_fraction <= 0.05) for t in search.trials)


def test_phases_run_in_order_bracket_binary_linear():
    measure, _ = capacity_graph(23.0)
    phases = [t.phase for t in find_peak_rate(measure, start_hz=10.0).trials]
    first = {p: phases.index(p) for p in ("bracket", "binary", "linear") if p in phases}
    assert list(first) == ["bracket", "binary", "linear"]
    assert phases == sorted(phases, key=["bracket", "binary", "linear"].index)


def test_a_graph_faster_than_the_cap_reports_the_cap():
    measure, _ = capacity_graph(10_000.0)
    search = find_peak_rate(measure, start_hz=10.0, max_hz=100.0)
    assert search.peak_hz == 100.0 and search.capped
    assert "cap" in search.summary()


def test_a_graph_that_drops_even_at_the_minimum_has_no_peak():
    search = find_peak_rate(lambda rate: 0.5, start_hz=4.0, min_hz=1.0)
    assert search.peak_hz is None
    assert [t.rate_hz for t in search.trials] == [4.0, 2.0, 1.0]
    assert "no sustainable rate" in search.summary()


def test_measure_may_return_an_object_with_drop_fraction():
    class Run:
        def __init__(self, rate):
            self.drop_fraction = 0.0 if rate <= 12 else 0.2
    search = find_peak_rate(Run, start_hz=10.0)
    assert 12.0 * 0.95 <= search.peak_hz <= 12.0
    assert isinstance(search.trials[0].details, Run)


def test_linear_refinement_stops_at_the_first_failing_step():
    # a hard limit at 20 Hz: bracket 10 ok, 20 ok, 40 fails; binary narrows to (20, 21.25]; the linear step fails
    measure = lambda rate: 0.0 if rate <= 20.0 else 0.5  # noqa: E731
    search = find_peak_rate(measure, start_hz=10.0)
    assert search.peak_hz == pytest.approx(20.0)
    assert search.trials[-1].phase == "linear" and not search.trials[-1].passed


def test_fixed_rates_above_the_peak_are_skipped():
    assert plan_fixed_rates(35.0) == ([10.0, 30.0], [60.0])
    assert plan_fixed_rates(None) == ([], [10.0, 30.0, 60.0])
    assert plan_fixed_rates(60.0) == ([10.0, 30.0, 60.0], [])


def test_rates_out_of_order_are_rejected():
    with pytest.raises(ValueError, match="min_hz <= start_hz"):
        find_peak_rate(lambda r: 0.0, start_hz=500.0, max_hz=100.0)
