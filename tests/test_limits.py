"""Limits: range checks, NaN refusal, narrowing never widens, ramps validate every step."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ConfigError, LimitError
from hil.limits import MAX_RAMP_STEPS, Limit, narrow_limits

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def limits(draw: st.DrawFn) -> Limit:
    low = draw(finite)
    high = draw(st.floats(min_value=low, max_value=low + 1e6))
    step = draw(st.none() | st.floats(min_value=1e-3, max_value=1e6))
    return Limit("V", low, high, max_step=step)


@given(limits(), st.floats(allow_nan=True, allow_infinity=True))
def test_check_accepts_exactly_the_finite_values_inside(limit: Limit, value: float) -> None:
    inside = math.isfinite(value) and limit.min <= value <= limit.max
    if inside:
        assert limit.check(value, "x") == value
    else:
        with pytest.raises(LimitError):
            limit.check(value, "x")


@given(limits(), st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_check_array_agrees_with_check_on_numpy_and_torch(limit: Limit, values: list[float]) -> None:
    all_inside = all(math.isfinite(v) and limit.min <= v <= limit.max for v in values)
    for array in (np.array(values), torch.tensor(values, dtype=torch.float64)):
        if all_inside:
            assert limit.check_array(array, "x") is array
        else:
            with pytest.raises(LimitError, match=r"x\[\d+\]"):
                limit.check_array(array, "x")


@given(limits(), finite, finite)
def test_narrowing_never_widens(limit: Limit, new_min: float, new_max: float) -> None:
    widens = new_min < limit.min or new_max > limit.max
    if widens:
        with pytest.raises(ConfigError, match="widen"):
            limit.narrow({"min": new_min, "max": new_max}, "limits.v")
    elif new_min <= new_max:
        narrowed = limit.narrow({"min": new_min, "max": new_max}, "limits.v")
        assert limit.min <= narrowed.min <= narrowed.max <= limit.max


@st.composite
def ramps(draw: st.DrawFn) -> tuple[Limit, float, float]:
    """A limit and a start and a stop inside it (drawn inside, not filtered: most pairs would fall outside)."""
    limit = draw(limits())
    inside = st.floats(min_value=limit.min, max_value=limit.max)
    return limit, draw(inside), draw(inside)


@settings(deadline=None)  # a ramp may hold thousands of steps: slow on a loaded machine, not wrong
@given(ramps())
def test_ramp_steps_are_bounded_checked_and_end_at_the_target(ramp: tuple[Limit, float, float]) -> None:
    limit, start, stop = ramp
    if limit.max_step is not None and abs(stop - start) / limit.max_step > MAX_RAMP_STEPS:
        with pytest.raises(LimitError, match="steps"):
            limit.ramp(start, stop, "x")
        return
    steps = limit.ramp(start, stop, "x")
    assert steps[-1] == pytest.approx(stop, abs=1e-9 * max(1.0, abs(stop)))
    assert all(limit.min <= value <= limit.max for value in steps)
    if limit.max_step is not None:
        jumps = np.abs(np.diff([start, *steps]))
        assert (jumps <= limit.max_step * (1 + 1e-9) + 1e-9).all()
    else:
        assert len(steps) == 1


def test_ramp_from_unknown_start_is_refused() -> None:
    with pytest.raises(LimitError, match="unknown"):
        Limit("V", -1, 1, max_step=0.1).ramp(None, 0.5, "awg channel 1 voltage")


def test_ramp_from_a_start_outside_the_limits_comes_back_in_bounded_steps() -> None:
    steps = Limit("V", -3, 3, max_step=0.5).ramp(4.2, 0.0, "x")
    assert steps[-1] == 0.0
    assert (np.abs(np.diff([4.2, *steps])) <= 0.5 + 1e-12).all()
    assert (np.diff([4.2, *steps]) < 0).all()  # each value nearer the allowed range than the one before


def test_ramp_from_a_start_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(LimitError, match="not a number"):
        Limit("V", -1, 1, max_step=0.1).ramp(float("nan"), 0.5, "x")


def test_ramp_to_a_target_outside_is_refused_before_any_step() -> None:
    with pytest.raises(LimitError, match="outside"):
        Limit("V", -1, 1, max_step=0.1).ramp(0.0, 1.5, "x")


def test_ramp_rate_sets_the_interval_between_steps() -> None:
    limit = Limit("V", -10, 10, max_step=0.5, ramp_rate=2.0)
    assert limit.step_interval_s(0.5) == pytest.approx(0.25)
    assert Limit("V", -1, 1).step_interval_s(0.5) == 0.0


def test_ramp_rate_without_step_and_inverted_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_step"):
        Limit("V", -1, 1, ramp_rate=1.0)
    with pytest.raises(ConfigError, match="above max"):
        Limit("V", 1, -1)
    with pytest.raises(ConfigError, match="finite"):
        Limit("V", -math.inf, 1)


def test_narrow_limits_names_the_field_of_unknown_and_widened_limits() -> None:
    defaults = {"voltage_v": Limit("V", -10, 10, max_step=1.0)}
    with pytest.raises(ConfigError, match=r"limits\.current_a: no limit named"):
        narrow_limits(defaults, {"current_a": {"max": 1}})
    with pytest.raises(ConfigError, match=r"limits\.voltage_v\.max_step: .*widen"):
        narrow_limits(defaults, {"voltage_v": {"max_step": 2.0}})
    narrowed = narrow_limits(defaults, {"voltage_v": {"min": -1, "max": 1, "max_step": 0.1}})
    assert narrowed["voltage_v"] == Limit("V", -1, 1, max_step=0.1)
    assert defaults["voltage_v"].max == 10  # the driver's defaults are untouched
