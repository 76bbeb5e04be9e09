"""`CrossbarSystem`: a memristor crossbar used as a trainable matrix, ``y ≈ Wᵀx``.

θ are the normalised differential weights ``W`` (n_in × n_out, each in [−1, 1]), flattened row-major:
``θ[i·n_out + j] = W[i, j]``, the weight from input ``i`` to output ``j``. Each weight is a device pair on adjacent
columns: ``G+ = G_min + (G_max − G_min)·max(w, 0)`` on column ``2j``, ``G− = G_min + (G_max − G_min)·max(−w, 0)``
on column ``2j + 1``, rows ``0..n_in−1``; unused devices are set to ``G_min`` and unused rows driven at 0 V.
Inputs ``x`` in [−1, 1] are read voltages ``x·V_read``. Outputs are the array's differential read of its column
pairs (`CrossbarArray.read_pairs`), normalised by one full-scale device at the full read voltage,
``y = (I+ − I−)/(V_read·(G_max − G_min))``, so that ``y ≈ Wᵀx`` (each output a sum of n_in
products of order 1; standard deviation ≈ √n_in/3 for uniform random x and W), the same in `_run` and in the
physics model. The crossbar is reprogrammed only when θ changes, or when another system has programmed it since
(systems sharing one chip: the instrument records which system programmed it last, ``programmed_by``). No working
point is needed, so `calibrate` sets nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from hil.errors import ConfigError, counted
from hil.instruments import CrossbarArray, Instrument
from hil.physics.crossbar import (
    column_currents,
    device_conductance,
    differential_output,
    ir_drop_factor,
    quantise_levels,
    target_conductances,
)
from hil.systems.base import PhysicalSystem, PhysicsModel, is_count, is_number

#: The least fraction of the array's limit that the weights' span g_max_s − g_min_s and the read voltage may use:
#: devices are programmed to a few per cent of their range at best (aihwkit's PCM noise: about 1 µS of 25 µS), and a
#: row DAC resolves a few thousandths of its range at best (8 bits: 1/128 of ±range).
MIN_USE_OF_LIMIT = 1e-3
#: The read voltage where the lab gives none (V), or the limit's largest symmetric one where that is lower: a read
#: stays well below the devices' switching threshold (phase-change memory is read at 0.2 V, as the simulated chip
#: is), and the limit is what the row drivers can do, which on a chip programmed through them programs the devices.
DEFAULT_READ_VOLTAGE_V = 0.2
#: Numbers the crossbar systems' tokens, which a chip's ``programmed_by`` holds (plain text, so checkpoints keep it).
_TOKENS = itertools.count()


class CrossbarModel(PhysicsModel):
    """The noiseless crossbar, ``y = f(x, θ)``, with the bench's unknowns as calibration parameters.

    Learnable (nominal value): ``conductance_scale`` (rows × cols, 1; 0 for a stuck device), ``stuck_level``
    (rows × cols, 0; a stuck device's conductance in units of ``g_max_s``), ``wire_resistance_ohm`` (scalar, 0 Ω),
    ``column_gain`` (cols, 1) and ``column_offset`` (cols, 0; in units of ``V_read·(G_max − G_min)``).
    Fixed buffers (nominal: none): ``levels`` (programmable states over ``level_min_s..level_max_s``, 0 for
    continuous) and ``current_limit_a`` (the column read-out's clipping current, inf for none).
    """

    def __init__(self, shape: tuple[int, int], n_in: int, n_out: int, read_voltage_v: float, g_min_s: float,
                 g_max_s: float):
        super().__init__()
        rows, cols = shape
        self.shape, self.n_in, self.n_out = (rows, cols), n_in, n_out
        self.read_voltage_v, self.g_min_s, self.g_max_s = read_voltage_v, g_min_s, g_max_s
        self.full_scale_a = read_voltage_v * (g_max_s - g_min_s)
        self.conductance_scale = nn.Parameter(torch.ones(rows, cols, dtype=torch.float32))
        self.stuck_level = nn.Parameter(torch.zeros(rows, cols, dtype=torch.float32))
        self.wire_resistance_ohm = nn.Parameter(torch.zeros((), dtype=torch.float32))
        self.column_gain = nn.Parameter(torch.ones(cols, dtype=torch.float32))
        self.column_offset = nn.Parameter(torch.zeros(cols, dtype=torch.float32))
        self.register_buffer("levels", torch.zeros((), dtype=torch.float32))
        self.register_buffer("level_min_s", torch.tensor(g_min_s, dtype=torch.float32))
        self.register_buffer("level_max_s", torch.tensor(g_max_s, dtype=torch.float32))
        self.register_buffer("current_limit_a", torch.tensor(math.inf, dtype=torch.float32))

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        targets = target_conductances(theta.reshape(self.n_in, self.n_out), self.g_min_s, self.g_max_s, self.shape)
        levels = int(self.levels)
        if levels:
            targets = quantise_levels(targets, float(self.level_min_s), float(self.level_max_s), levels)
        conductance = device_conductance(targets, self.conductance_scale, self.stuck_level * self.g_max_s)
        effective = conductance * ir_drop_factor(conductance, self.wire_resistance_ohm)
        voltages = _row_voltages(x, self.read_voltage_v, self.shape[0])
        currents = column_currents(voltages, effective, self.column_gain, self.column_offset * self.full_scale_a)
        limit = float(self.current_limit_a)
        if math.isfinite(limit):
            currents = currents.clamp(-limit, limit)
        return differential_output(currents, self.n_out, self.full_scale_a)


def _row_voltages(x: torch.Tensor, read_voltage_v: float | torch.Tensor, rows: int) -> torch.Tensor:
    """Read voltages (batch × rows, V) for inputs x (batch × n_in): ``x·V_read``, 0 V on unused rows."""
    voltages = x * read_voltage_v
    if voltages.shape[1] < rows:
        voltages = nn.functional.pad(voltages, (0, rows - voltages.shape[1]))
    return voltages


class CrossbarSystem(PhysicalSystem):
    """A crossbar array as a trainable ``n_in × n_out`` matrix (see the module docstring for the mapping).

    Settings: ``n_in`` (default: every row), ``n_out`` (default: half the columns), ``read_voltage_v`` (default:
    `DEFAULT_READ_VOLTAGE_V`, 0.2 V, or the largest symmetric read voltage the limits allow where that is lower),
    ``g_min_s`` and ``g_max_s`` (default: the ``conductance_s`` limit). One device call reads up to the crossbar's
    ``max_batch`` input vectors.
    """

    kind = "crossbar"
    roles: ClassVar[dict[str, type[Instrument]]] = {"crossbar": CrossbarArray}

    def __init__(self, instruments: Mapping[str, Instrument], *, name: str = "", n_in: int | None = None,
                 n_out: int | None = None, read_voltage_v: float | None = None, g_min_s: float | None = None,
                 g_max_s: float | None = None):
        crossbar = instruments.get("crossbar")
        if not isinstance(crossbar, CrossbarArray):
            got = type(crossbar).__name__ if crossbar is not None else "nothing"
            raise ConfigError(f"system {name or self.kind!r}: role crossbar needs a crossbar array, got {got}",
                              field="instruments.crossbar")
        rows, cols = crossbar.shape
        if cols < 2:  # n_out's range would read 1..0, said of an n_out the lab may not have written
            raise ConfigError(f"system {name or self.kind!r}: {crossbar.name} has {counted(cols, 'column')}, and an "
                              "output is the difference of a pair of columns (G+ and G−); give the crossbar at least 2 "
                              "columns",
                              field="instruments.crossbar")
        n_in = rows if n_in is None else n_in
        n_out = cols // 2 if n_out is None else n_out
        _check_count("n_in", n_in, rows, f"the crossbar has {rows} rows")
        _check_count("n_out", n_out, cols // 2, f"the crossbar has {cols} columns, two per output")
        conductance = crossbar.limits["conductance_s"]
        g_min_s = _number("g_min_s", g_min_s, conductance.min)
        g_max_s = _number("g_max_s", g_max_s, conductance.max)
        for label, value in (("g_min_s", g_min_s), ("g_max_s", g_max_s)):
            if not conductance.min <= value <= conductance.max:
                raise ConfigError(f"{value:g} S is outside the crossbar's conductance limit "
                                  f"{conductance.describe()}", field=label)
        if g_min_s >= g_max_s:
            raise ConfigError(f"g_min_s {g_min_s:g} S must be below g_max_s {g_max_s:g} S", field="g_min_s")
        if g_max_s - g_min_s < MIN_USE_OF_LIMIT * (conductance.max - conductance.min):
            raise ConfigError(f"g_min_s..g_max_s ({g_min_s:g}..{g_max_s:g} S) spans under {MIN_USE_OF_LIMIT:g} of the "
                              f"crossbar's conductance limit {conductance.describe()}, below any device's programming "
                              "resolution: the outputs would be noise; check the unit", field="g_max_s")
        voltage = crossbar.limits["read_voltage_v"]
        largest = min(voltage.max, -voltage.min)
        if largest <= 0:  # "-0 V is outside 0..-0 V", said of a read voltage the lab may not have written
            raise ConfigError(f"{crossbar.name}'s read_voltage_v limit {voltage.describe()} holds no read voltage of "
                              "both signs, and inputs -1..1 are read as -read_voltage_v..read_voltage_v; give the "
                              "limit a min below 0 V and a max above it", field="instruments.crossbar")
        read_voltage_v = _number("read_voltage_v", read_voltage_v, min(DEFAULT_READ_VOLTAGE_V, largest))
        if not 0 < read_voltage_v <= largest:
            raise ConfigError(f"{read_voltage_v:g} V is outside 0..{largest:g} V (±read_voltage_v must lie "
                              f"within the crossbar's read voltage limit {voltage.describe()})",
                              field="read_voltage_v")
        if read_voltage_v < MIN_USE_OF_LIMIT * largest:
            raise ConfigError(f"{read_voltage_v:g} V is under {MIN_USE_OF_LIMIT:g} of the crossbar's read voltage "
                              f"limit {voltage.describe()}, below any row DAC's resolution: the outputs would be "
                              "noise; check the unit", field="read_voltage_v")
        super().__init__(instruments, name=name, n_in=n_in, n_out=n_out, n_params=n_in * n_out,
                         x_bounds=(-1.0, 1.0), theta_bounds=(-1.0, 1.0), max_batch=crossbar.max_batch)
        self.shape: tuple[int, int] = (rows, cols)
        self.read_voltage_v, self.g_min_s, self.g_max_s = read_voltage_v, g_min_s, g_max_s
        self.full_scale_a = read_voltage_v * (g_max_s - g_min_s)
        # Float32 0-d tensors to multiply by: the same products as by the floats, which torch wraps in double tensors
        # and converts at every call (1.6 µs against 3.3 µs a forward pass of one row, for each).
        self._read_voltage = torch.tensor(read_voltage_v, dtype=torch.float32)
        self._per_full_scale = torch.tensor(1 / self.full_scale_a, dtype=torch.float32)
        self.programmings = 0
        self._programmed: torch.Tensor | None = None
        self._token = f"{self.name}#{next(_TOKENS)}"

    @property
    def crossbar(self) -> CrossbarArray:
        return self.instruments["crossbar"]  # type: ignore[return-value]

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        crossbar = self.crossbar
        holder = crossbar.programmed_by  # None: unknown (a chip checkpointed before it was kept)
        if self._programmed is None or holder not in (None, self._token) or not torch.equal(theta, self._programmed):
            self._programmed = None  # unknown until the programming has completed
            crossbar.programmed_by = self._token  # before it: one that fails part-way is no other system's either
            targets = target_conductances(theta.reshape(self.n_in, self.n_out), self.g_min_s, self.g_max_s,
                                          self.shape)
            crossbar.program(targets.clamp_(self.g_min_s, self.g_max_s))
            self._programmed = theta.clone()
            self.programmings += 1
        differences = crossbar.read_pairs(_row_voltages(x, self._read_voltage, self.shape[0]), self.n_out)
        return torch.as_tensor(differences, dtype=torch.float32).mul_(self._per_full_scale)  # a new array

    def rewrite_parameters(self) -> None:
        self._programmed = None

    def physics_model(self) -> CrossbarModel:
        return CrossbarModel(self.shape, self.n_in, self.n_out, self.read_voltage_v, self.g_min_s, self.g_max_s)

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        hidden = world.hidden_parameters()
        level_min, level_max = hidden["level_range_s"]
        return {
            "conductance_scale": hidden["conductance_scale"],
            "stuck_level": torch.as_tensor(hidden["stuck_conductance_s"]) / self.g_max_s,
            "wire_resistance_ohm": hidden["wire_resistance_ohm"],
            "column_gain": hidden["column_gain"],
            "column_offset": torch.as_tensor(hidden["column_offset_a"]) / self.full_scale_a,
            "levels": hidden["levels"],
            "level_min_s": level_min,
            "level_max_s": level_max,
            "current_limit_a": hidden["current_limit_a"],
        }

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "read_voltage_v": self.read_voltage_v, "g_min_s": self.g_min_s,
                "g_max_s": self.g_max_s}


def _check_count(label: str, value: Any, largest: int, why: str) -> None:
    if not is_count(value, largest):
        raise ConfigError(f"{value!r} is outside 1..{largest} ({why})", field=label)


def _number(label: str, value: Any, default: float) -> float:
    """A setting's number (``default`` where it is None); text (``"0.1"``), a bool or a NaN is refused, naming it, as
    the other systems refuse them."""
    if value is None:
        return default
    if not is_number(value):
        raise ConfigError(f"{label} must be a number, got {value!r}", field=label)
    return float(value)
