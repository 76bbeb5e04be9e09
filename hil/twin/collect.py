"""Collect data from a physical system for fitting and judging a digital twin.

The design is space-filling: parameter vectors θ from a scrambled Sobol sequence over the system's θ bounds,
and for each θ a set of inputs x (Sobol points over the input bounds, rows of the training data, or half of
each). Each θ is one measurement (one programming of the parameters, a batch of inputs: one device call, or
several where the inputs exceed the system's ``max_batch``). The first ``repeat_thetas`` groups are measured
``repeats`` times, θ written anew for each (`PhysicalSystem.rewrite_parameters`), which gives the noise floor: the
variance of repeated measurements of the same (x, θ), per output, programming noise included, the least a
deterministic twin can miss by.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, get_args

import numpy as np
import torch
from torch.quasirandom import SobolEngine

from hil.errors import ConfigError
from hil.systems.base import PhysicalSystem

InputDesign = Literal["sobol", "data", "mixed"]
#: The largest output magnitude twin data may hold: squared errors (1e30) summed over a million measurements stay
#: within float32 (3.4e38); beyond, variances and NMSEs became infinite or NaN.
LARGEST_OUTPUT = 1e15
#: The least largest output magnitude twin data may hold (where any is not zero): errors of a ten-thousandth of it
#: square to 1e-38, the smallest normal float32; below, variances and squared errors lost their precision or fell to
#: the floor of `hil.twin.fit.error_scale` (outputs ×3e-20 of the lab crossbar's gave a twin's NMSE 7 times too low).
SMALLEST_OUTPUT = 1e-15
#: The arrays of `TwinData`, in its fields' order.
_ARRAYS = ("x", "theta", "y", "y_repeats")


def held_out_count(n_groups: int, validation_fraction: float) -> int:
    """How many of ``n_groups`` θ groups `TwinData.split_groups` holds out: the fraction as written (its shortest
    decimal, not the float's binary value), a half rounded up (a quarter of 10 is 3), at least one."""
    share = Decimal(repr(float(validation_fraction))) * n_groups
    return max(1, int(share.to_integral_value(rounding=ROUND_HALF_UP)))


def check_output_range(y: torch.Tensor) -> None:
    """Refuse outputs whose largest magnitude lies outside `SMALLEST_OUTPUT`..`LARGEST_OUTPUT` (all zero passes): the
    errors of the twin's fit and NMSE would not fit float32 (`ConfigError`, naming the unit to change)."""
    largest = float(y.abs().max()) if y.numel() else 0.0
    if largest > LARGEST_OUTPUT:
        raise ConfigError(f"not twin data: y reaches {largest:.3g}, beyond the ±{LARGEST_OUTPUT:g} whose squared "
                          "errors float32 sums hold; give the system's outputs in a larger unit")
    if 0 < largest < SMALLEST_OUTPUT:
        raise ConfigError(f"not twin data: y reaches at most {largest:.3g}, under the {SMALLEST_OUTPUT:g} whose "
                          "errors' squares float32 holds; give the system's outputs in a smaller unit")


@dataclass(frozen=True)
class TwinData:
    """Measurements grouped by θ: ``x`` (G × n × n_in), ``theta`` (G × n_params), ``y`` (G × n × n_out).

    ``y_repeats`` (R × G_r × n × n_out) holds the repeated measurements of the first G_r groups. Real arrays of any
    float or integer dtype are kept as float32, what the twins compute in; shapes that disagree, or values that are not
    finite, are a `ConfigError`.
    """

    x: torch.Tensor
    theta: torch.Tensor
    y: torch.Tensor
    y_repeats: torch.Tensor

    def __post_init__(self) -> None:
        for name in _ARRAYS:
            array = getattr(self, name)
            if not isinstance(array, torch.Tensor) or array.is_complex() or array.dtype == torch.bool:
                what = array.dtype if isinstance(array, torch.Tensor) else type(array).__name__
                raise ConfigError(f"not twin data: {name} is {what}, not a tensor of real numbers")
            if array.dtype != torch.float32:
                object.__setattr__(self, name, array.float())
        x, theta, y, y_repeats = self.x, self.theta, self.y, self.y_repeats
        shapes = [tuple(a.shape) for a in (x, theta, y, y_repeats)]
        if [len(s) for s in shapes] != [3, 2, 3, 4] or not x.shape[0] == theta.shape[0] == y.shape[0] \
                or x.shape[1] != y.shape[1] or y_repeats.shape[2:] != y.shape[1:] or y_repeats.shape[1] > y.shape[0]:
            raise ConfigError(f"not twin data: x {shapes[0]}, theta {shapes[1]}, y {shapes[2]} and y_repeats "
                              f"{shapes[3]} disagree in their θ groups, inputs or outputs")
        for name in _ARRAYS:
            if not bool(getattr(self, name).isfinite().all()):
                raise ConfigError(f"not twin data: {name} holds NaN or infinite values")
        check_output_range(y)

    @property
    def n_groups(self) -> int:
        return self.theta.shape[0]

    def noise_variance(self) -> torch.Tensor:
        """Per-output variance of repeated measurements of the same (x, θ) (zeros without repeats)."""
        if self.y_repeats.shape[0] < 2 or self.y_repeats[0].numel() == 0:
            return torch.zeros(self.y.shape[-1])
        return self.y_repeats.var(dim=0).mean(dim=(0, 1))

    def output_variance(self) -> torch.Tensor:
        """Per-output variance of the measurements over the whole design (a `ConfigError` for one measurement)."""
        if self.y.shape[:2].numel() < 2:
            raise ConfigError("twin data of one measurement has no output variance to scale errors by; collect more "
                              "inputs per theta or thetas")
        return self.y.reshape(-1, self.y.shape[-1]).var(dim=0)

    def subset(self, groups: torch.Tensor) -> TwinData:
        """The given θ groups, without the repeats (they estimate the noise floor of the whole collection)."""
        return TwinData(self.x[groups], self.theta[groups], self.y[groups], self.y_repeats[:, :0])

    def split(self, validation_fraction: float, seed: int) -> tuple[TwinData, TwinData]:
        """Hold out whole θ groups, so validation measures generalisation to new parameters."""
        train, held_out = self.split_groups(validation_fraction, seed)
        return self.subset(train), self.subset(held_out)

    def split_groups(self, validation_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The indices of the training and of the held-out θ groups of `split` (each sorted)."""
        if not 0 < validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        order = torch.randperm(self.n_groups, generator=torch.Generator().manual_seed(seed))
        n_val = held_out_count(self.n_groups, validation_fraction)
        if n_val >= self.n_groups:
            raise ConfigError(f"{self.n_groups} θ groups cannot be split for validation; collect more")
        return order[n_val:].sort().values, order[:n_val].sort().values

    def fit_groups(self, validation_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The θ groups a twin is fitted on, those its fit stops early on and keeps its best state by, and the
        held-out groups of `split_groups`, which the fit never reads: the fidelity is judged on them alone (judged on
        the groups that chose the state, the crossbar's physics twin read 0.0150 where new θ gave 0.0167, over six
        seeds). The stopping groups are ``validation_fraction`` of the others (`held_out_count`); where those cannot
        spare one and keep two measurements to fit, the fit stops on the error of the groups it is fitted on. Each
        part sorted."""
        rest, held_out = self.split_groups(validation_fraction, seed)
        n_stop = held_out_count(len(rest), validation_fraction)
        n_fit = len(rest) - n_stop
        if n_fit < 1 or n_fit * self.y.shape[1] < 2:
            return rest, rest, held_out
        order = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))]
        return order[n_stop:].sort().values, order[:n_stop].sort().values, held_out

    def arrays(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in _ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, torch.Tensor]) -> TwinData:
        """Twin data from the arrays ``x``, ``theta``, ``y`` and ``y_repeats``; missing ones, shapes that disagree, or
        values that are not finite are a `ConfigError`."""
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ConfigError(f"not twin data: no {', '.join(missing)} array")
        return cls(*(arrays[name] for name in _ARRAYS))


def sobol(n: int, dimension: int, bounds: tuple[float, float], seed: int) -> torch.Tensor:
    """``n`` scrambled Sobol points in ``bounds`` along every one of ``dimension`` axes. One engine holds at most
    ``SobolEngine.MAXDIM`` (21201) axes; the axes beyond come from further engines, each scrambled by a seed drawn
    from ``seed`` (a crossbar of 256 × 128 weights has 32768 θ)."""
    widths = [min(SobolEngine.MAXDIM, dimension - start) for start in range(0, dimension, SobolEngine.MAXDIM)]
    seeds = [seed, *torch.randint(2**31, (len(widths) - 1,), generator=torch.Generator().manual_seed(seed)).tolist()]
    unit = torch.cat([SobolEngine(width, scramble=True, seed=engine_seed).draw(n)
                      for width, engine_seed in zip(widths, seeds, strict=True)], dim=1).float()
    return bounds[0] + (bounds[1] - bounds[0]) * unit


def design_inputs(system: PhysicalSystem, n: int, design: InputDesign, data: torch.Tensor | None,
                  seed: int) -> torch.Tensor:
    """``n`` inputs per the design (``data`` rows must already be encoded into the system's input bounds)."""
    if design not in get_args(InputDesign):  # "Sobol" was told it needs training data, or failed as a KeyError
        raise ConfigError(f"unknown input design {design!r}; give one of {', '.join(map(repr, get_args(InputDesign)))}")
    if design != "sobol" and (data is None or len(data) == 0):
        raise ConfigError(f"input design {design!r} needs training data")
    n_data = {"sobol": 0, "data": n, "mixed": n // 2}[design]
    parts = []
    if n - n_data:
        parts.append(sobol(n - n_data, system.n_in, system.x_bounds, seed))
    if n_data:
        assert data is not None
        picks = torch.randint(len(data), (n_data,), generator=torch.Generator().manual_seed(seed))
        parts.append(data[picks])
    return torch.cat(parts)


def mixed_seed(*keys: int) -> int:
    """A seed (32 bits) mixed from ``keys`` by numpy's `SeedSequence`: other keys, in number or value, give unrelated
    streams, where a sum of them (``seed + group``) is the same for other seeds and indices."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


def group_seed(seed: int, group: int) -> int:
    """The seed of the inputs of θ group ``group`` in a collection of seed ``seed``: mixed from both (`mixed_seed`),
    so that collections of other seeds share no group's inputs (``seed + 1 + group`` gave seed 1's groups the very
    inputs of seed 0's next ones: runs of neighbouring seeds fitted their twins at the same x)."""
    return mixed_seed(seed, group)


def repeated_groups(n_thetas: int, repeats: int, repeat_thetas: int) -> int:
    """How many of the first θ groups `collect` measures ``repeats`` times: ``min(repeat_thetas, n_thetas)``, none
    where ``repeats`` is 1."""
    return min(repeat_thetas, n_thetas) if repeats > 1 else 0


def measurement_count(n_thetas: int, repeats: int, repeat_thetas: int) -> int:
    """The measurements `collect` makes: one per θ group, and ``repeats − 1`` more for each repeated group (each one
    device call, or several where ``inputs_per_theta`` exceeds the system's ``max_batch``)."""
    return n_thetas + repeated_groups(n_thetas, repeats, repeat_thetas) * (repeats - 1)


class Collection:
    """A collection under way (`collect`): its θ groups and their inputs, drawn from ``seed`` as the design says, and
    the measurements made so far, group by group (`measure_group`). `state_dict` and `load_state_dict` save and restore
    those, so that a collection stopped part-way continues at its next group: a run's checkpoints hold it.

    ``design`` picks each group's inputs (`design_inputs`): ``"data"`` and the default ``"mixed"`` draw rows of
    ``data``, which they need (without it, a `ConfigError`: pass ``design="sobol"``). The first `repeated_groups` are
    measured ``repeats`` times, θ written anew for each. Outputs in a unit twin data cannot hold
    (`check_output_range`) are refused at the first measurement.
    """

    def __init__(self, system: PhysicalSystem, *, n_thetas: int, inputs_per_theta: int, repeats: int = 1,
                 repeat_thetas: int = 4, design: InputDesign = "mixed", data: torch.Tensor | None = None,
                 seed: int = 0):
        given = {"n_thetas": (n_thetas, 2), "inputs_per_theta": (inputs_per_theta, 1), "repeats": (repeats, 1),
                 "repeat_thetas": (repeat_thetas, 0)}
        refused = [f"{name}={value}" for name, (value, least) in given.items() if value < least]
        if refused:  # a negative repeat_thetas would count the progress total down by repeats never made
            raise ConfigError("collect needs at least 2 thetas, 1 input per theta, 1 repeat and no negative "
                              f"repeat_thetas; got {', '.join(refused)}")
        self.system, self.repeats = system, repeats
        self.thetas = sobol(n_thetas, system.n_params, system.theta_bounds, seed)
        self.xs = torch.stack([design_inputs(system, inputs_per_theta, design, data, group_seed(seed, g))
                               for g in range(n_thetas)])
        self.repeated_groups = repeated_groups(n_thetas, repeats, repeat_thetas)
        self.total = measurement_count(n_thetas, repeats, repeat_thetas)
        self.ys: list[torch.Tensor] = []  # each group's first measurement (n × n_out)
        self.measured_at: list[float] = []  # when each group's first measurement returned (Unix time, s; NaN unknown)
        self.repeated: list[torch.Tensor] = []  # each repeated group's measurements (repeats × n × n_out)

    @property
    def finished(self) -> bool:
        return len(self.ys) == len(self.thetas)

    @property
    def done(self) -> int:
        """The measurements made so far (of `total`)."""
        return len(self.ys) + len(self.repeated) * (self.repeats - 1)

    def measure_group(self) -> None:
        """Measure the next θ group (``repeats`` times, where it is one of the repeated groups)."""
        group, system = len(self.ys), self.system
        measurements = [system.forward(self.xs[group], self.thetas[group])]
        measured_at = time.time()
        if group == 0:  # outputs in a unit twin data cannot hold: refused at the first device call, not the last
            check_output_range(measurements[0])
        if group < self.repeated_groups:
            for _ in range(self.repeats - 1):
                system.rewrite_parameters()
                measurements.append(system.forward(self.xs[group], self.thetas[group]))
            self.repeated.append(torch.stack(measurements))
        self.ys.append(measurements[0])
        self.measured_at.append(measured_at)

    def result(self) -> TwinData:
        """The twin data of a finished collection."""
        assert self.finished
        n, n_out = self.xs.shape[1], self.system.n_out
        y_repeats = torch.stack(self.repeated, dim=1) if self.repeated else torch.zeros(0, 0, n, n_out)
        return TwinData(self.xs, self.thetas, torch.stack(self.ys), y_repeats)  # no repeats: 0 × 0, as before

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The measurements made so far, laid out as in `TwinData`: ``y`` (groups measured × n × n_out) and
        ``y_repeats`` (repeats × repeated groups measured × n × n_out), and `times`."""
        n, n_out = self.xs.shape[1], self.system.n_out
        return {"y": torch.stack(self.ys) if self.ys else torch.zeros(0, n, n_out), "measured_at": self.times(),
                "y_repeats": torch.stack(self.repeated, dim=1) if self.repeated else torch.zeros(self.repeats, 0, n,
                                                                                                 n_out)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue after the measurements of `state_dict`; those of another collection (other sizes, repeats that
        disagree with the groups measured) are a `ValueError`."""
        y, y_repeats = state["y"], state["y_repeats"]
        n, n_out = self.xs.shape[1], self.system.n_out
        if not (isinstance(y, torch.Tensor) and isinstance(y_repeats, torch.Tensor)) \
                or y.shape[1:] != (n, n_out) or len(y) > len(self.thetas) \
                or y_repeats.shape != (self.repeats, min(len(y), self.repeated_groups), n, n_out):
            raise ValueError("its measurements are not of this collection")
        times = state.get("measured_at")  # none in a checkpoint of an earlier hil: unknown
        times = torch.full((len(y),), math.nan) if times is None else times
        if not isinstance(times, torch.Tensor) or times.shape != (len(y),):
            raise ValueError("its measurement times are not of this collection")
        self.ys, self.repeated = list(y.float()), list(y_repeats.float().unbind(1))
        self.measured_at = times.tolist()

    def times(self) -> torch.Tensor:
        """When each group measured so far was measured (its first measurement's return): Unix time, s, float64."""
        return torch.tensor(self.measured_at, dtype=torch.float64)


def collect(system: PhysicalSystem, *, n_thetas: int, inputs_per_theta: int, repeats: int = 1,
            repeat_thetas: int = 4, design: InputDesign = "mixed", data: torch.Tensor | None = None, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> TwinData:
    """Measure ``n_thetas`` θ groups of ``inputs_per_theta`` inputs (`measurement_count`), as a `Collection` from
    start to end. ``progress(done, total)`` is called after each group with the measurements made so far."""
    collection = Collection(system, n_thetas=n_thetas, inputs_per_theta=inputs_per_theta, repeats=repeats,
                            repeat_thetas=repeat_thetas, design=design, data=data, seed=seed)
    while not collection.finished:
        collection.measure_group()
        if progress is not None:
            progress(collection.done, collection.total)
    return collection.result()
