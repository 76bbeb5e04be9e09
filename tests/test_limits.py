"""Limits: range checks, NaN refusal, narrowing never widens, ramps validate every step."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ConfigError, LimitError
from hil.limits import MAX_RAMP_S, MAX_RAMP_STEPS, Limit, as_numbers, first_outside, narrow_limits

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def limits(draw: st.DrawFn) -> Limit:
    low = draw(finite)
    high = draw(st.floats(min_value=low, max_value=low + 1e6))
    step = draw(st.none() | st.floats(min_value=max(1e-3, (high - low) / MAX_RAMP_STEPS), max_value=1e6))
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
    steps = limit.ramp(start, stop, "x")  # never too many: a limit allows no more steps across its whole span
    assert steps[-1] == stop  # exactly: the level recorded is the level asked for
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


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", ["list", "numpy", "float64", "float32"])
def test_check_array_refuses_nan_and_infinities_and_names_their_index(bad: float, kind: str) -> None:
    values = [0.0, 0.5, bad, -0.5]
    array = {"list": values, "numpy": np.array(values), "float64": torch.tensor(values, dtype=torch.float64),
             "float32": torch.tensor(values, dtype=torch.float32)}[kind]
    with pytest.raises(LimitError, match=r"x\[2\]: -?(nan|inf) refused"):
        Limit("V", -1, 1).check_array(array, "x")


@pytest.mark.parametrize("values", [[0.0, 2.0], [-2.0, 0.0]])
def test_check_array_refuses_a_value_beyond_either_end(values: list[float]) -> None:
    for array in (np.array(values), torch.tensor(values)):
        with pytest.raises(LimitError, match=r"x\[1\]" if values[1] else r"x\[0\]"):
            Limit("V", -1, 1).check_array(array, "x")


def test_the_first_offending_element_is_named_in_row_major_order() -> None:
    values = [0.0, 0.5, 3.0, -7.0, math.nan]
    assert first_outside(torch.tensor(values), -1, 1) == ((2,), 3.0)
    grid = np.zeros((3, 4))
    grid[1, 3], grid[2, 0], grid[0, 2] = 5.0, math.inf, -2.0
    assert first_outside(torch.tensor(grid), -1, 1) == ((0, 2), -2.0)
    assert first_outside(torch.tensor(grid[1:]), -1, 1) == ((0, 3), 5.0)
    assert first_outside(torch.zeros(0), -1, 1) is None
    limit = Limit("V", -1, 1)
    for array in (values, np.array(values), torch.tensor(values)):
        with pytest.raises(LimitError, match=r"x\[2\]: 3 V is outside"):
            limit.check_array(array, "x")
    for array in (grid, torch.tensor(grid)):
        with pytest.raises(LimitError, match=r"x\[0, 2\]: -2 V is outside"):
            limit.check_array(array, "x")


def test_the_limits_themselves_are_allowed() -> None:
    limit = Limit("V", -1.5, 2.5)
    assert limit.check(-1.5, "x") == -1.5 and limit.check(2.5, "x") == 2.5
    for array in ([-1.5, 2.5], np.array([-1.5, 2.5]), torch.tensor([-1.5, 2.5])):
        assert limit.check_array(array, "x") is array


def test_ramp_values_are_even_steps_ending_exactly_on_the_target() -> None:
    limit = Limit("V", -10, 10, max_step=0.25)
    assert limit.ramp(0.0, 1.0, "x") == [0.25, 0.5, 0.75, 1.0]
    assert limit.ramp(1.0, -0.5, "x") == [0.75, 0.5, 0.25, 0.0, -0.25, -0.5]
    for start, stop in ((0.1, 0.7), (-3.3, 2.9), (9.99, -9.99), (0.3, 0.30000000000000004)):
        assert Limit("V", -10, 10, max_step=0.1).ramp(start, stop, "x")[-1] == stop


def test_a_move_a_hair_longer_than_whole_steps_takes_one_more_step() -> None:
    """No step may exceed max_step, not even by a rounding margin that grows with the move."""
    limit = Limit("V", -10, 10, max_step=0.25)
    for start, stop in ((0.0, 1.0005), (0.0, -1.0005), (2.0, 4.0 + 1e-6)):
        steps = limit.ramp(start, stop, "x")
        assert len(steps) == math.ceil(abs(stop - start) / 0.25)
        assert max(np.abs(np.diff([start, *steps]))) <= 0.25 * (1 + 1e-12)


def test_a_whole_number_of_steps_is_not_rounded_up_to_one_more() -> None:
    limit = Limit("V", -10, 10, max_step=0.3)
    assert len(limit.ramp(0.0, 2.1, "x")) == 7  # 2.1 / 0.3 is 7.000000000000001 in floating point
    assert len(limit.ramp(0.0, 2.7, "x")) == 9  # and 2.7 / 0.3 is 9.000000000000002


def test_a_ramp_may_take_max_ramp_steps_and_no_more() -> None:
    limit = Limit("V", 0, MAX_RAMP_STEPS, max_step=1.0)
    assert len(limit.ramp(0.0, MAX_RAMP_STEPS, "x")) == MAX_RAMP_STEPS
    with pytest.raises(LimitError, match=f"takes {MAX_RAMP_STEPS + 1} steps"):  # from outside: the span allows it
        limit.ramp(-1.0, MAX_RAMP_STEPS, "x")
    with pytest.raises(ConfigError, match=f"takes {MAX_RAMP_STEPS + 1} steps"):
        Limit("V", 0, MAX_RAMP_STEPS + 1, max_step=1.0)


def test_the_interval_after_a_step_down_is_that_after_the_same_step_up() -> None:
    limit = Limit("V", -10, 10, max_step=0.5, ramp_rate=2.0)
    assert limit.step_interval_s(-0.5) == limit.step_interval_s(0.5) == pytest.approx(0.25)


def test_a_widening_value_is_shown_as_written_in_its_unit() -> None:
    """``min: -5.0000001`` was '-5 V would widen the instrument's limit (-5..5 V)', and a ramp rate was in V."""
    limit = Limit("V", -5, 5, max_step=0.5, ramp_rate=1.0)
    with pytest.raises(ConfigError, match=r"^v\.min: -5\.0000001 V would widen the instrument's limit \(-5\.\.5 V, "
                                          r"step 0\.5, 1 V/s; min is -5\); a lab file may only narrow limits$"):
        limit.narrow({"min": -5.0000001}, "v")
    with pytest.raises(ConfigError, match=r"^v\.ramp_rate: 2 V/s would widen the instrument's limit \(-5\.\.5 V, "
                                          r"step 0\.5, 1 V/s\); a lab"):
        limit.narrow({"ramp_rate": 2}, "v")


def test_narrowing_never_widens_a_step_or_a_ramp_rate_but_may_add_them() -> None:
    defaults = {"voltage_v": Limit("V", -10, 10, max_step=1.0, ramp_rate=2.0), "current_a": Limit("A", -1, 1)}
    for field, value in (("max_step", 1.01), ("ramp_rate", 2.5), ("min", -10.5), ("max", 10.01)):
        with pytest.raises(ConfigError, match=rf"limits\.voltage_v\.{field}: .*widen"):
            narrow_limits(defaults, {"voltage_v": {field: value}})
    for field in ("max", "ramp_rate"):
        with pytest.raises(ConfigError, match=rf"^limits\.voltage_v\.{field}: NaN is not a limit"):
            narrow_limits(defaults, {"voltage_v": {field: math.nan}})
    narrowed = narrow_limits(defaults, {"voltage_v": {"ramp_rate": 0.5},
                                        "current_a": {"max_step": 0.1, "ramp_rate": 0.01}})
    assert narrowed["voltage_v"] == Limit("V", -10, 10, max_step=1.0, ramp_rate=0.5)
    assert narrowed["current_a"] == Limit("A", -1, 1, max_step=0.1, ramp_rate=0.01)


def test_a_ramp_of_too_many_steps_says_how_many_in_a_few_digits() -> None:
    """A lab's max_step of 1e-300 V made the refusal print the step count in full, 301 digits."""
    with pytest.raises(ConfigError, match=r"^max_step: a ramp across the limit, -2\.5\.\.2\.5 V, in steps of 1e-300 "
                                          r"takes 5e\+300 steps \(at most 10000\)"):
        Limit("V", -2.5, 2.5, max_step=1e-300)
    with pytest.raises(LimitError, match=r"^x: a ramp from 1e\+300 to 1\.25 V in steps of 0\.001 takes 1e\+303 "
                                         r"steps \(at most 10000\); raise max_step$"):
        Limit("V", -2.5, 2.5, max_step=0.001).ramp(1e300, 1.25, "x")


@pytest.mark.parametrize(("max_step", "ramp_rate", "field"), [(0.0, None, "max_step"), (0.5, 0.0, "ramp_rate")])
def test_a_step_or_a_ramp_rate_of_zero_is_a_config_error(max_step: float, ramp_rate: float | None,
                                                          field: str) -> None:
    """Zero is not a step size (every ramp would divide by it) nor a rate (every step would wait forever): refused
    where the limit is written, like a negative one, and at that field of a lab file (it was named one level up, at
    the limit). The message gives the unit, and the value as written (it said 'limit max_step must be > 0, got
    0.0')."""
    unit = "V/s" if field == "ramp_rate" else "V"
    with pytest.raises(ConfigError, match=rf"^{field}: {field} must be above 0 {unit}, got 0 {unit}$"):
        Limit("V", -1, 1, max_step=max_step, ramp_rate=ramp_rate)
    with pytest.raises(ConfigError, match=rf"^limits\.voltage_v\.{field}: {field} must be above 0 {unit}, "
                                          rf"got 0 {unit}$"):
        narrow_limits({"voltage_v": Limit("V", -1, 1, max_step=1.0, ramp_rate=1.0)},
                      {"voltage_v": {"max_step": max_step, "ramp_rate": ramp_rate}})


def test_a_float32_value_a_hair_below_min_is_told_why() -> None:
    """The float32 hint is given at either end: float32(-0.1) is 1.5e-9 below a min of -0.1."""
    with pytest.raises(LimitError, match=r"^x: -0\.10000000149011612 V is outside -0\.1\.\.1 V by 1\.49e-09 V; "
                                         r"float32"):
        Limit("V", -0.1, 1).check(np.float32(-0.1), "x")


@pytest.mark.parametrize(("values", "low", "high"), [
    (torch.tensor([1.0, 2 * math.pi], dtype=torch.float32), 0.0, 2 * math.pi),  # float32(2π) is 1.7e-7 above 2π
    (torch.tensor([0.0, 1e-3], dtype=torch.float16), 0.0, 1e-3),  # float16(1e-3) is 4e-7 above 1e-3
    (torch.tensor([-0.1, 0.0], dtype=torch.float32), -0.1, 1.0),
])
def test_a_tensor_is_compared_with_a_limit_in_its_own_precision(values: torch.Tensor, low: float,
                                                                 high: float) -> None:
    """A tensor holding a bound as its dtype rounds it (float32(2π), the top of an SLM's phase, or a crossbar
    system's ``x·V_read`` at x = 1) is within the limit, as the bound in that dtype; one step further is not. A numpy
    array is compared in float64, where the same value is refused with the reason (above)."""
    assert first_outside(values, low, high) is None
    assert Limit("V", low, high).check_array(values, "x") is values
    index = 1 if float(values[1]) > high else 0  # the element past the bound in float64
    past = values.clone()
    past[index] = torch.nextafter(values[index], torch.tensor(math.inf if index else -math.inf, dtype=values.dtype))
    with pytest.raises(LimitError, match=rf"^x\[{index}\]: \S+ V is outside "):
        Limit("V", low, high).check_array(past, "x")


def test_narrow_takes_equal_values_and_none_and_refuses_unknown_fields_and_text() -> None:
    """Equal is not wider; None leaves a field as it is; a misspelt field or a value that is not a number is named."""
    limit = Limit("V", -10, 10, max_step=1.0, ramp_rate=2.0)
    assert limit.narrow({"max_step": 1.0, "ramp_rate": 2.0, "min": None}, "v") == limit
    with pytest.raises(ConfigError, match=r"^v\.maximum: unknown limit field 'maximum'; allowed: min, max, max_step, "
                                          r"ramp_rate$"):
        limit.narrow({"maximum": 1}, "v")
    with pytest.raises(ConfigError, match=r"^v\.max: 'high' is not a number$"):
        limit.narrow({"max": "high"}, "v")
    # from Python: an OverflowError traceback, and 'nan V would widen the instrument's limit'
    with pytest.raises(ConfigError, match=r"^v\.max: a number beyond the float range is not a limit$"):
        limit.narrow({"max": 10**400}, "v")
    with pytest.raises(ConfigError, match=r"^v\.min: NaN is not a limit; give a number$"):
        limit.narrow({"min": math.nan}, "v")


def test_a_ramp_rate_without_a_step_says_to_give_one() -> None:
    """It read 'limit ramp_rate needs max_step: the size of the steps it spaces in time', nothing said to do."""
    with pytest.raises(ConfigError, match=r"^limits\.voltage_v\.ramp_rate: ramp_rate needs max_step, the size of the "
                                          r"steps it spaces in time; give max_step too$"):
        narrow_limits({"voltage_v": Limit("V", -10, 10)}, {"voltage_v": {"ramp_rate": 1.0}})


def test_a_narrowing_that_inverts_the_limit_names_the_limit() -> None:
    """The two bounds are written alike, and the fix said (it read 'limit min 11.0 V is above max 10 V')."""
    with pytest.raises(ConfigError, match=r"^limits\.voltage_v\.min: min 11 V is above max 10 V; give a min no higher "
                                          r"than the max$"):
        narrow_limits({"voltage_v": Limit("V", -10, 10)}, {"voltage_v": {"min": 11}})



def test_a_max_step_too_small_to_cross_the_span_is_refused_where_the_limit_is_built() -> None:
    """``max_step: 1e-300`` passed ``hil check`` and was refused only when a ramp ran; the rule of a ramp's steps
    is now checked on the limit's whole span, so a ramp within the limits is never refused for its length."""
    with pytest.raises(ConfigError, match=r"^max_step: a ramp across the limit, -10\.\.10 V, in steps of 1e-300 "
                                          r"takes 2e\+301 steps \(at most 10000\); raise max_step to at least "
                                          r"0\.002 V, or narrow min and max$"):
        Limit("V", -10, 10, max_step=1e-300)
    with pytest.raises(ConfigError, match=r"^limits\.voltage_v\.max_step: a ramp across the limit, -10\.\.10 V, in "
                                          r"steps of 0\.001 takes 20000 steps"):
        narrow_limits({"voltage_v": Limit("V", -10, 10)}, {"voltage_v": {"max_step": 0.001}})
    assert Limit("V", -10, 10, max_step=0.002).ramp(-10, 10, "x")[-1] == 10  # the least max_step it names
    assert narrow_limits({"voltage_v": Limit("V", -10, 10)},  # narrowing the span as well is the other way
                         {"voltage_v": {"min": -1, "max": 1, "max_step": 0.001}})["voltage_v"].max_step == 0.001


def test_a_ramp_rate_too_small_to_cross_the_span_in_a_day_is_refused_where_the_limit_is_built() -> None:
    """A ramp rate of 1e-300 V/s made every step of a ramp wait for ages: the time a ramp may take is a rule of the
    limit, checked on its span as the number of steps is."""
    with pytest.raises(ConfigError, match=r"^ramp_rate: a ramp across the limit, -10\.\.10 V, at 1e-300 V/s takes "
                                          r"2e\+301 s \(at most 86400 s, a day\); raise ramp_rate to at least "
                                          r"0\.000232 V/s, or narrow min and max$"):
        Limit("V", -10, 10, max_step=0.5, ramp_rate=1e-300)
    limit = Limit("V", -10, 10, max_step=0.5, ramp_rate=0.000232)
    assert sum(limit.step_interval_s(step) for step in np.diff([-10, *limit.ramp(-10, 10, "x")])) <= MAX_RAMP_S


def test_a_ramp_back_from_far_outside_the_limits_obeys_the_same_rule() -> None:
    """Only a start outside the limits (left by an earlier session) can make a ramp longer than the span allows."""
    limit = Limit("V", 0, MAX_RAMP_STEPS, max_step=1.0, ramp_rate=1.0)
    assert len(limit.ramp(0.0, MAX_RAMP_STEPS, "x")) == MAX_RAMP_STEPS
    with pytest.raises(LimitError, match=rf"^x: a ramp from -1 to {MAX_RAMP_STEPS} V in steps of 1 takes "
                                         rf"{MAX_RAMP_STEPS + 1} steps \(at most {MAX_RAMP_STEPS}\); raise max_step$"):
        limit.ramp(-1.0, MAX_RAMP_STEPS, "x")
    with pytest.raises(LimitError, match=r"^x: a ramp from 1e\+300 to 0 V in steps of 1 takes 1e\+300 steps"):
        limit.ramp(1e300, 0.0, "x")
    slow = Limit("V", -1, 1, max_step=1.0, ramp_rate=1e-4)
    with pytest.raises(LimitError, match=r"^x: a ramp from 10 to 0 V at 0\.0001 V/s takes 1e\+05 s \(at most 86400 "
                                         r"s, a day\); raise ramp_rate$"):
        slow.ramp(10.0, 0.0, "x")


def test_a_span_of_exactly_the_most_steps_or_a_day_is_built_and_ramped() -> None:
    """The rule refuses a span a ramp cannot cross in `MAX_RAMP_STEPS` steps or `MAX_RAMP_S`, not one it can: at the
    bound, and a rounding error past it (169 / 0.0169 is 10000.000000000002 in floating point), are allowed."""
    for limit in (Limit("V", 0, 169, max_step=0.0169), Limit("V", 0, MAX_RAMP_STEPS + 1e-9, max_step=1.0)):
        assert len(limit.ramp(limit.min, limit.max, "x")) == MAX_RAMP_STEPS
    day = Limit("V", 0, MAX_RAMP_S, max_step=10.0, ramp_rate=1.0)
    ramp = day.ramp(0.0, MAX_RAMP_S, "x")
    assert sum(day.step_interval_s(step) for step in np.diff([0.0, *ramp])) == pytest.approx(MAX_RAMP_S)


@pytest.mark.parametrize(("value", "said"), [("0.1", "'0.1'"), (True, "True"), (np.bool_(False), "False"),
                                            (torch.tensor(True), "True"), (b"1", "b'1'"), (None, "None")],
                         ids=["text", "True", "numpy False", "bool tensor", "bytes", "None"])
def test_what_float_takes_but_is_not_a_number_is_refused(value: object, said: str) -> None:
    """float() takes "0.1" and True: a value or a limit given as text or as true/false was taken as 0.1 or 1. A numpy
    or torch value is said as the value it holds, not as its repr (np.False_, tensor(True))."""
    with pytest.raises(LimitError, match=rf"^x: {re.escape(said)} is not a number$"):
        Limit("V", -1, 1).check(value, "x")  # type: ignore[arg-type]
    if value is not None:  # None leaves a limit field as it is
        with pytest.raises(ConfigError, match=rf"^v\.max: {re.escape(said)} is not a number$"):
            Limit("V", -1, 1).narrow({"max": value}, "v")


@pytest.mark.parametrize(("values", "problem"), [
    (["0.1", "0.2"], r"x\[0\]: '0\.1' is not a number"),  # numpy read text as numbers
    ([0.0, True], r"x\[1\]: True is not a number"),  # numpy read [0.0, True] as [0.0, 1.0]
    ([[0.0, None]], r"x\[0, 1\]: None is not a number"),  # was 'x[0, 1]: nan refused'
    (np.array([0.0, "0.1"], dtype=object), r"x\[1\]: '0\.1' is not a number"),
    (np.array(["0.1"]), r"x: text refused; give numbers"),
    (np.array([True, False]), r"x: true/false values refused; give numbers"),
    (torch.tensor([True, False]), r"x: true/false values refused; give numbers"),
])
def test_an_array_holding_what_is_not_a_number_is_refused(values: object, problem: str) -> None:
    with pytest.raises(LimitError, match=rf"^{problem}$"):
        Limit("V", -1, 1).check_array(values, "x")
    with pytest.raises(LimitError, match=rf"^{problem}$"):
        as_numbers(values, "x")
    assert as_numbers([0, 1.5, np.int64(1), np.float32(0.5)], "x").tolist() == [0.0, 1.5, 1.0, 0.5]


@pytest.mark.parametrize(("values", "problem"), [
    ((0.0, True), r"x\[1\]: True is not a number"),  # a tuple, as a list: numpy read it as (0.0, 1.0)
    ([0.0, np.True_], r"x\[1\]: True is not a number"),  # numpy's own true, as from a comparison
    ([[0.5], [np.False_]], r"x\[1, 0\]: False is not a number"),
    (np.array([b"0.1"]), r"x: text refused; give numbers"),  # bytes, which numpy reads as 0.1
    ([0.0, torch.tensor(True)], r"x\[1\]: True is not a number"),  # a mask's element, read as 1.0
    ([0.5, np.array(True)], r"x\[1\]: True is not a number"),
    ([0.5, np.str_("0.1")], r"x\[1\]: '0\.1' is not a number"),
])
def test_a_tuple_numpy_bools_and_bytes_are_refused_as_lists_bools_and_text_are(values: object, problem: str) -> None:
    """numpy reads (0.0, True) and [0.0, np.True_] as [0.0, 1.0], and an array of bytes b"0.1" as 0.1: each would
    be sent to an instrument as a number nobody wrote."""
    with pytest.raises(LimitError, match=rf"^{problem}$"):
        as_numbers(values, "x")
    with pytest.raises(LimitError, match=rf"^{problem}$"):
        Limit("V", -1, 1).check_array(values, "x")


@pytest.mark.parametrize(("value", "said"), [(np.array("0.1"), "'0.1'"), (np.array(b"0.1"), "b'0.1'"),
                                            (np.array(True), "True")], ids=["text", "bytes", "true"])
def test_a_single_value_in_a_numpy_array_of_text_or_bools_is_not_a_number(value: np.ndarray, said: str) -> None:
    """float() takes a 0-d numpy array of text (np.array("0.1") as 0.1) as it takes the text."""
    with pytest.raises(LimitError, match=rf"^x: {re.escape(said)} is not a number$"):
        Limit("V", -1, 1).check(value, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "said"), [(np.complex128(0.5 + 3j), "(0.5+3j)"),
                                            (torch.tensor(0.5 + 3j), "(0.5+3j)"),
                                            (np.array("0.5", dtype=object), "'0.5'"),
                                            (np.array(True, dtype=object), "True")],
                         ids=["numpy complex", "complex tensor", "text in an object array", "true in an object array"])
def test_a_single_complex_value_or_object_array_of_text_is_not_a_number(value: object, said: str) -> None:
    """float() kept the real part of a numpy complex (a warning, 0.5 V sent), failed on a complex tensor with torch's
    RuntimeError, and read a 0-d object array of "0.5" or True as 0.5 or 1."""
    with pytest.raises(LimitError, match=rf"^x: {re.escape(said)} is not a number$"):
        Limit("V", -1, 1).check(value, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"^v\.max: {re.escape(said)} is not a number$"):
        Limit("V", -1, 1).narrow({"max": value}, "v")
    assert Limit("V", -1, 1).check(np.array(0.5, dtype=object), "x") == 0.5  # a number in an object array is one


@pytest.mark.parametrize(("value", "said"), [(torch.tensor([0.5]), "a tensor of shape (1,)"),
                                            (torch.tensor([[0.5]]), "a tensor of shape (1, 1)"),
                                            (np.array([0.5]), "a numpy array of shape (1,)"),
                                            (np.timedelta64(1, "s"), "1 seconds"),
                                            (np.datetime64("1970-01-02"), "1970-01-02")],
                         ids=["one-element tensor", "1×1 tensor", "one-element array", "time span", "date"])
def test_a_one_element_tensor_and_a_time_are_not_a_number(value: object, said: str) -> None:
    """A one-element tensor was taken as its element where a one-element numpy array was refused, and a time span as
    its count of its unit (1 s as 1.0); a 0-d tensor, as a 0-d array, is one number. An array is said by its kind and
    shape: its repr ran over lines (tensor([[0.5000]]))."""
    with pytest.raises(LimitError, match=rf"^x: {re.escape(said)} is not a number$"):
        Limit("V", -1, 1).check(value, "x")  # type: ignore[arg-type]
    assert Limit("V", -1, 1).check(torch.tensor(0.5), "x") == Limit("V", -1, 1).check(np.array(0.5), "x") == 0.5


def test_a_0_d_tensor_requiring_grad_is_checked_as_its_value_without_a_warning() -> None:
    """A level computed by a network (``awg.set_voltage(1, y[0])``) gave torch's warning on converting a tensor that
    requires a gradient to a number, which a driver's check is, not a step of the computation."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Limit("V", -1, 1).check(torch.tensor(0.5, requires_grad=True), "x") == 0.5


@pytest.mark.parametrize(("values", "problem"), [
    (np.array([1, 2], dtype="m8[s]"), "x: times and time spans refused; give numbers"),
    (np.array(["1970-01-02"], dtype="M8[D]"), "x: times and time spans refused; give numbers"),
    ([0.5, np.timedelta64(1, "s")], "x[1]: 1 seconds is not a number")])
def test_an_array_of_times_is_refused(values: object, problem: str) -> None:
    """check_array passed an array of time spans or dates unchanged to the instrument, compared as counts of their
    unit (days since 1970 for a date)."""
    with pytest.raises(LimitError, match=rf"^{re.escape(problem)}$"):
        Limit("V", -5, 5).check_array(values, "x")


def test_arrays_of_different_shapes_in_a_list_are_not_numbers_as_a_limit_error() -> None:
    """numpy cannot put arrays of 2 × 2 and 2 × 3 in one array (a ValueError from numpy): that is a list that holds
    no numbers, said as a `LimitError` naming what was given, as a ragged list of numbers is: in one line (it quoted
    numpy's three sentences, 'setting an array element with a sequence. The requested array has an inhomogeneous
    shape ...'), as an integer beyond the float range is ('not numbers (int too large to convert to float)')."""
    ragged = (r"^x: a ragged list \(rows of different lengths, or a list among numbers\) refused; give numbers, or "
              r"rows of one length$")
    with pytest.raises(LimitError, match=ragged):
        as_numbers([np.zeros((2, 2)), np.zeros((2, 3))], "x")
    with pytest.raises(LimitError, match=ragged):
        as_numbers([[0.0, 1.0], [0.0]], "x")
    with pytest.raises(LimitError, match=ragged):
        Limit("V", -1, 1).check_array([0.0, [1.0, 2.0]], "x")
    with pytest.raises(LimitError, match=r"^x: a number beyond the float range \(±1\.8e\+308\) refused$"):
        Limit("V", -1, 1).check_array([0.0, 10**400], "x")


def test_a_value_a_rounding_hair_past_a_stepped_limit_says_the_range_and_by_how_much() -> None:
    """0.1 + 0.2 lies 4.4e-17 above a limit of 0.3: the message read '... is outside -0.3..0.3 V, step 0.1 by 5.55e-17
    V; float32 values round past ...', the step running into 'by', and blamed float32 for a float64 sum."""
    limit = Limit("V", -0.3, 0.3, max_step=0.1)
    with pytest.raises(LimitError, match=r"^x: 0\.30000000000000004 V is outside -0\.3\.\.0\.3 V by 5\.55e-17 V; "
                                         r"float32 values round past limits they were meant to meet, and so can sums "
                                         r"in float64 \(0\.1 \+ 0\.2 is 0\.30000000000000004\): give float64 values, "
                                         r"clip them to the limit, or keep clear of it$"):
        limit.check(0.1 + 0.2, "x")


@pytest.mark.parametrize("values", [[0.1, [0.2, 0.3]], [[0.1, 0.2], [0.3]]])
def test_a_ragged_list_is_refused_in_one_line_saying_what_to_give(values: list) -> None:
    """numpy's own account of a ragged list runs to three sentences; the limit says it in one, with the fix."""
    with pytest.raises(LimitError) as refused:
        Limit("V", -1, 1).check_array(values, "voltage_v")
    assert str(refused.value) == ("voltage_v: a ragged list (rows of different lengths, or a list among numbers) "
                                  "refused; give numbers, or rows of one length")
