"""Physical limits as data.

A `Limit` says what values a quantity may take (``min``..``max`` in ``unit``), how far it may move in one step
(``max_step``) and how fast it may change (``ramp_rate``, unit per second). Drivers declare defaults: what the
hardware can do. A lab file may narrow them (what this bench tolerates), never widen them. Every value is checked
before anything is sent, NaN and infinities included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from hil.config import shown
from hil.errors import ConfigError, LimitError, one_line

#: The fields a lab file may set on a limit.
LIMIT_FIELDS = ("min", "max", "max_step", "ramp_rate")

#: More steps than this in one ramp means max_step is far too small for the move asked for.
MAX_RAMP_STEPS = 10_000
#: A ramp longer than this (s, a day) at ramp_rate means ramp_rate is far too small for the move asked for.
MAX_RAMP_S = 86_400.0


#: What float() and numpy take for a number but is none: text ("0.1" as 0.1), true/false (as 1 and 0), None (as NaN).
_NOT_NUMBERS = (str, bytes, bool, np.bool_, type(None))


def _kind(values: Any) -> str:
    """numpy's kind of the elements of an array or a tensor (``"b"`` bool, ``"c"`` complex, ``"U"`` text, ...);
    ``""`` for anything else."""
    if isinstance(values, torch.Tensor):
        return "b" if values.dtype == torch.bool else "c" if values.is_complex() else "f"
    return values.dtype.kind if isinstance(values, np.ndarray | np.generic) else ""


def _refuse_kind(kind: str, what: str) -> None:
    """Refuse an array of elements of numpy kind ``kind`` that are no real numbers: complex, true/false, text, times
    and time spans."""
    if kind == "c":  # numpy would drop the imaginary part with a warning
        raise LimitError(f"{what}: complex numbers refused; give real values")
    if kind == "b":
        raise LimitError(f"{what}: true/false values refused; give numbers")
    if kind in ("U", "S"):
        raise LimitError(f"{what}: text refused; give numbers")
    if kind in ("m", "M"):  # compared with numbers as counts of their unit (days, ns, ...)
        raise LimitError(f"{what}: times and time spans refused; give numbers")


def _is_no_number(item: Any) -> bool:
    """Whether ``item`` (a value, or a list's item) is one of `_NOT_NUMBERS`, or an array or tensor of true/false
    values or text."""
    return isinstance(item, _NOT_NUMBERS) or _kind(item) in ("b", "U", "S", "m", "M")


def _refuse_items(values: Any, what: str) -> None:
    """Refuse a list (or an array of objects) holding an item that is not a number (`_is_no_number`), naming its
    index: numpy reads ``[0.0, True]`` and ``[0.0, torch.tensor(True)]`` as numbers, and a None among numbers as
    NaN."""
    try:
        items = np.asarray(values, dtype=object)
    except ValueError:  # ragged: as_numbers says so
        return
    found = next(((i, v) for i, v in np.ndenumerate(items) if _is_no_number(v)), None)
    if found is not None:
        index, item = found
        raise LimitError(f"{what}[{', '.join(map(str, index))}]: {shown(item)} is not a number")


def as_numbers(values: Any, what: str) -> np.ndarray:
    """``values`` as a float64 numpy array; what cannot be one (text, true/false, None, complex numbers, an integer
    beyond the float range, a ragged list) is a `LimitError` naming ``what``. A torch tensor is read as it is,
    whether it requires grad or not."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    if isinstance(values, list | tuple):
        _refuse_items(values, what)
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as error:
        raise _not_numbers(error, what) from None
    _refuse_kind(array.dtype.kind, what)
    if array.dtype.kind == "O":
        _refuse_items(array, what)
    try:
        return torch_shareable(array.astype(np.float64, copy=False))
    except (TypeError, ValueError, OverflowError) as error:
        raise _not_numbers(error, what) from None


def native_copy(array: Any) -> np.ndarray:
    """A copy of ``array`` as a numpy array in this machine's byte order: a big-endian block's ``>f4`` (IEEE 488.2's
    default order, as pyvisa reads it), which torch refuses, becomes ``f4``."""
    array = np.asarray(array)
    return array.astype(array.dtype.newbyteorder("="))


def torch_shareable(array: np.ndarray) -> np.ndarray:
    """``array``, or a copy of it where torch could not share its memory: a flipped view (negative strides, which
    ``torch.as_tensor`` refuses), a read-only one (``np.broadcast_to``, which it warns of) or one in the other byte
    order (``>f4``, as pyvisa reads an instrument's big-endian block, which it refuses), copied in the native order."""
    if not array.dtype.isnative:
        return native_copy(array)
    if not array.flags.writeable or min(array.strides, default=0) < 0:
        return array.copy()
    return array


def _not_numbers(error: Exception, what: str) -> LimitError:
    """The `LimitError` for values numpy could not read as float64 (``error``), in one line: a ragged list and an
    integer beyond the float range in words (numpy's account of the first runs to three sentences)."""
    if isinstance(error, OverflowError):
        return LimitError(f"{what}: a number beyond the float range (±{np.finfo(np.float64).max:.3g}) refused")
    if "inhomogeneous" in str(error):
        return LimitError(f"{what}: a ragged list (rows of different lengths, or a list among numbers) refused; give "
                          "numbers, or rows of one length")
    return LimitError(f"{what}: not numbers ({one_line(error)})")


def real_number(value: Any) -> float:
    """``float(value)`` for a real number alone (NaN and infinities included): float() also takes text and
    true/false, keeps the real part of a numpy complex, a time span's count (numpy's timedelta64) and a one-element
    tensor or (numpy before 2.4) numpy array of any shape, and reads a 0-d object array as its item; these raise
    `TypeError` here, as None does."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim > 0:
        raise TypeError(f"{value!r} is not a number")
    if isinstance(value, torch.Tensor):
        value = value.detach()  # a number read, not a step of the autograd graph (which warns of it)
    if isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.ndim == 0:
        try:
            return real_number(value.item())
        except TypeError:
            raise TypeError(f"{value!r} is not a number") from None
    if _is_no_number(value) or isinstance(value, complex) or _kind(value) == "c":
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def first_outside(values: torch.Tensor, low: float, high: float) -> tuple[tuple[int, ...], float] | None:
    """The index and value of the first element of ``values`` that is NaN, infinite or outside ``low..high``;
    None if there is none. One min/max pass when every element is inside (NaN propagates and fails that test).
    The comparison is in the tensor's dtype: a value equal to a bound as that dtype rounds it (float32(2π), 1.7e-7
    above 2π) is within it."""
    if values.numel() == 0:
        return None
    if values.requires_grad:  # detach() makes a new tensor, 1 µs a call: only where it spares the autograd graph
        values = values.detach()
    smallest, largest = torch.aminmax(values)
    if float(smallest) >= low and float(largest) <= high:
        return None
    bad = ~torch.isfinite(values) | (values < low) | (values > high)
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in torch.nonzero(bad)[0])
    return index, float(values[index])


@dataclass(frozen=True)
class Limit:
    """The allowed range of one quantity, e.g. ``Limit("V", -10, 10, max_step=0.5, ramp_rate=1.0)``.

    ``max_step`` (unit) is the largest change one command may make; a larger move is split into a ramp.
    ``ramp_rate`` (unit/s) spaces the ramp's steps in time; it needs ``max_step``. A ramp across ``min..max`` may
    take at most `MAX_RAMP_STEPS` steps and `MAX_RAMP_S` seconds, so a ramp within the limits is never refused.
    """

    unit: str
    min: float
    max: float
    max_step: float | None = None
    ramp_rate: float | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"limit {name} must be finite, got {value}", field=name)
        if self.min > self.max:
            raise ConfigError(f"min {self.min:g} {self.unit} is above max {self.max:g} {self.unit}; give a min no "
                              "higher than the max", field="min")
        for name in ("max_step", "ramp_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                unit = self._unit_of(name)
                raise ConfigError(f"{name} must be above 0 {unit}, got {value:g} {unit}", field=name)
        if self.ramp_rate is not None and self.max_step is None:
            raise ConfigError("ramp_rate needs max_step, the size of the steps it spaces in time; give max_step too",
                              field="ramp_rate")
        too_long = self._too_long(self.max - self.min)
        if too_long is not None:
            field, how = too_long
            least = (self.max - self.min) / (MAX_RAMP_STEPS if field == "max_step" else MAX_RAMP_S)
            raise ConfigError(f"a ramp across the limit, {self.min:g}..{self.max:g} {self.unit}, {how}; raise {field} "
                              f"to at least {_rounded_up(least)} {self._unit_of(field)}, or narrow min and max",
                              field=field)

    def _unit_of(self, field: str) -> str:
        """The unit of one of `LIMIT_FIELDS`: the quantity's, per second for ``ramp_rate``."""
        return f"{self.unit}/s" if field == "ramp_rate" else self.unit

    def _too_long(self, distance: float) -> tuple[str, str] | None:
        """Why a ramp across ``distance`` (unit) is too long, if it is: the field to raise, and how long the ramp
        is (more than `MAX_RAMP_STEPS` steps of ``max_step``, or more than `MAX_RAMP_S` at ``ramp_rate``)."""
        if self.max_step is None:
            return None
        steps = distance / self.max_step - 1e-9  # a move a rounding error past whole steps takes no extra one
        if steps > MAX_RAMP_STEPS:
            count = math.ceil(steps) if steps < 1e9 else f"{steps:.3g}"  # not 300 digits for a max_step of 1e-300
            return "max_step", f"in steps of {self.max_step:g} takes {count} steps (at most {MAX_RAMP_STEPS})"
        if self.ramp_rate is not None and distance / self.ramp_rate > MAX_RAMP_S:
            return "ramp_rate", (f"at {self.ramp_rate:g} {self.unit}/s takes {distance / self.ramp_rate:.3g} s "
                                 f"(at most {MAX_RAMP_S:g} s, a day)")
        return None

    def span(self) -> str:
        """The allowed values alone, e.g. ``-5..5 V``."""
        return f"{self.min:g}..{self.max:g} {self.unit}".rstrip()

    def describe(self) -> str:
        """One short human-readable line, e.g. ``-5..5 V, step 0.5``."""
        text = self.span()
        if self.max_step is not None:
            text += f", step {self.max_step:g}"
        if self.ramp_rate is not None:
            text += f", {self.ramp_rate:g} {self.unit}/s"
        return text

    @property
    def rest(self) -> float:
        """The level a safe state goes to: 0, or the allowed value nearest it when the limits exclude 0."""
        return min(max(0.0, self.min), self.max)

    def check(self, value: float, what: str) -> float:
        """Return ``value`` as a float if it is a number (not text nor true/false), finite and inside the limits,
        else raise `LimitError`."""
        try:
            number = real_number(value)
        except (TypeError, ValueError):
            raise LimitError(f"{what}: {shown(value)} is not a number") from None
        except OverflowError:  # an integer beyond the float range
            raise LimitError(f"{what}: a number beyond the float range is outside {self.describe()}") from None
        if not math.isfinite(number):
            raise LimitError(f"{what}: {number} refused; allowed {self.describe()}")
        if not self.min <= number <= self.max:
            bound = self.max if number > self.max else self.min
            if f"{number:g}" == f"{bound:g}":  # e.g. float32(0.1) above a limit of 0.1: say by how much, and why
                raise LimitError(f"{what}: {number!r} {self.unit} is outside {self.span()} by "
                                 f"{abs(number - bound):.3g} {self.unit}; float32 values round past limits they were "
                                 "meant to meet, and so can sums in float64 (0.1 + 0.2 is 0.30000000000000004): give "
                                 "float64 values, clip them to the limit, or keep clear of it")
            raise LimitError(f"{what}: {number:g} {self.unit} is outside {self.describe()}")
        return number

    def check_array(self, values: Any, what: str) -> Any:
        """Check every element of an array (numpy, torch or a sequence); return it unchanged if all pass.

        The error names the first offending index and its value.
        """
        if isinstance(values, torch.Tensor):
            if not values.is_floating_point():
                _refuse_kind(_kind(values), what)
            found = first_outside(values, self.min, self.max)
            if found is not None:
                index, value = found
                self.check(value, f"{what}[{', '.join(map(str, index))}]")
            return values
        array = as_numbers(values, what)
        if array.size == 0 or (array.min() >= self.min and array.max() <= self.max):
            return values
        bad = ~np.isfinite(array) | (array < self.min) | (array > self.max)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            self.check(array[index], f"{what}[{', '.join(map(str, index))}]")
        return values

    def ramp(self, start: float | None, stop: float, what: str) -> list[float]:
        """The values to send, in order, to move from ``start`` to ``stop``; the last one is ``stop``.

        Every step is at most ``max_step`` and the target is checked. A start outside the limits (a level left
        by an earlier session with wider ones) is ramped back from: the values on the way lie between start and
        target, each nearer the allowed range than the one before; only a ramp back longer than `MAX_RAMP_STEPS`
        steps or `MAX_RAMP_S` is refused (`LimitError`), which a start within the limits never is. An unknown start
        (None) is an error: a ramp from an unknown value could be a jump of any size.
        """
        stop = self.check(stop, what)
        if self.max_step is None:
            return [stop]
        if start is None:
            raise LimitError(
                f"{what}: the present value is unknown, so a ramp to {stop:g} {self.unit} could jump; "
                "put the instrument in its safe state first"
            )
        start = float(start)
        if not math.isfinite(start):
            raise LimitError(f"{what}: the present value {start} is not a number to ramp from; put the instrument "
                             "in its safe state first")
        too_long = self._too_long(abs(stop - start))  # only from a start outside the limits
        if too_long is not None:
            field, how = too_long
            raise LimitError(f"{what}: a ramp from {start:g} to {stop:g} {self.unit} {how}; raise {field}")
        n_steps = max(1, math.ceil(abs(stop - start) / self.max_step - 1e-9))
        low, high = min(start, stop), max(start, stop)
        between = [min(high, max(low, start + (stop - start) * k / n_steps)) for k in range(1, n_steps)]
        return [*between, stop]

    def step_interval_s(self, step: float) -> float:
        """Seconds to wait after a step of size ``step`` so that the ramp rate is respected (0 if none)."""
        return 0.0 if self.ramp_rate is None else abs(step) / self.ramp_rate

    def narrow(self, overrides: Mapping[str, Any], what: str) -> Limit:
        """A copy with the given fields tightened; widening any of them raises `ConfigError` naming the field."""
        unknown = set(overrides) - set(LIMIT_FIELDS)
        if unknown:
            raise ConfigError(f"unknown limit field {sorted(unknown)[0]!r}; allowed: {', '.join(LIMIT_FIELDS)}",
                              field=f"{what}.{sorted(unknown)[0]}")
        for name, value in overrides.items():
            if value is None:
                continue
            try:
                value = real_number(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{shown(value)} is not a number", field=f"{what}.{name}") from None
            except OverflowError:  # an integer beyond the float range
                raise ConfigError("a number beyond the float range is not a limit", field=f"{what}.{name}") from None
            if math.isnan(value):
                raise ConfigError("NaN is not a limit; give a number", field=f"{what}.{name}")
            current = getattr(self, name)
            widens = (
                (name == "min" and value < self.min)
                or (name == "max" and value > self.max)
                or (name in ("max_step", "ramp_rate") and current is not None and value > current)
            )
            if widens or not math.isfinite(value):
                exact = f"; {name} is {current:.15g}" if current is not None and f"{value:g}" == f"{current:g}" else ""
                raise ConfigError(
                    f"{value:.15g} {self._unit_of(name)} would widen the instrument's limit ({self.describe()}"
                    f"{exact}); a lab file may only narrow limits", field=f"{what}.{name}")
        try:
            return replace(self, **{k: float(v) for k, v in overrides.items() if v is not None})
        except ConfigError as error:
            raise ConfigError(error.detail, field=f"{what}.{error.field}" if error.field else what) from None


def _rounded_up(value: float) -> str:
    """``value`` in three significant digits, rounded up: a least value to give, which rounding down would not be."""
    text = f"{value:.3g}"
    if float(text) >= value:
        return text
    digit = 10.0 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / digit) * digit:.3g}"


def narrow_limits(defaults: Mapping[str, Limit], overrides: Mapping[str, Mapping[str, Any]] | None,
                  what: str = "limits") -> dict[str, Limit]:
    """Apply a lab file's ``limits:`` section to a driver's defaults; unknown quantities are config errors."""
    result = dict(defaults)
    for name, fields_ in (overrides or {}).items():
        if name not in defaults:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"no limit named {name!r} on this instrument; it has: {allowed}",
                              field=f"{what}.{name}")
        result[name] = defaults[name].narrow(fields_, f"{what}.{name}")
    return result


def limit_as_dict(limit: Limit) -> dict[str, Any]:
    """A plain dict of a limit, for snapshots."""
    return {f.name: getattr(limit, f.name) for f in fields(limit)}
