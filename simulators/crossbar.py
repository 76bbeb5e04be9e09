"""A simulated memristor (phase-change memory) crossbar chip and the instrument that programs and reads it.

The array is ``rows × cols`` devices between word lines (driven by row DACs with read voltages) and bit lines
(held at virtual ground by transimpedance amplifiers and digitised by column ADCs). ``program`` writes target
conductances with write-verify; ``read`` applies a batch of row-voltage vectors and returns the column currents.
The noiseless physics is `hil.physics.crossbar`; this module adds the non-idealities, split by time scale:

- *construction* (hidden, from the seed): each device's conductance scale (device-to-device spread), stuck-on and
  stuck-off devices, a finite number of programmable conductance levels, wire resistance (IR drop, to first
  order, see `ir_drop_factor`), and each column's read-out gain and offset;
- *programming*: conductance-dependent programming noise, IBM aihwkit's PCM polynomial
  (``PCMLikeNoiseModel``, Nandakumar et al., ICECS 2019), and each device's drift exponent ν;
- *slow state*: conductance drift ``g(t) = g_prog·((t + t0)/t0)^(−ν)``, ``t`` the virtual time since programming
  (aihwkit's PCM drift model, ν drawn by conductance as in aihwkit);
- *per shot*: 1/f read noise in aihwkit's form (drawn independently per device and per read; the correlation of
  the low-frequency part between reads is neglected), additive amplifier noise, row DAC rounding, column ADC
  rounding and clipping.

A read is two matrix products: the mean currents ``V @ G_eff`` and the read-noise variance ``V² @ σ²``, which
gives the exact output distribution of independent per-device Gaussian noise without a batch × rows × cols
tensor. ``G_eff`` and ``σ²`` are recomputed after programming, and while the array drifts whenever drift has
changed the conductances by more than `DRIFT_TOLERANCE` since they were last computed. A differential read of
column pairs (``read_pairs``) digitises each column and subtracts; where the column ADCs neither round nor clip
(``ideal``), it is the same products with each pair's columns subtracted (G) and added (σ²), half as wide.
Device time: write-verify per device when programming; integration and conversion per input vector when
reading; a host round trip per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, model_validator

from hil.config import Strict
from hil.errors import DeviceError
from hil.instruments import CrossbarArray
from hil.limits import Limit
from hil.physics.crossbar import (
    column_currents,
    device_conductance,
    ir_drop_factor,
    pair_differences,
    quantise_levels,
)
from simulators.world import SimulatedInstrument, World, require_world

_AIHWKIT = "IBM aihwkit PCMLikeNoiseModel"
#: A programming-noise polynomial coefficient (µS).
Coefficient = Annotated[float, Field(ge=-100, le=100)]
#: Drifted conductances are re-evaluated at a read once drift has moved them by more than this (relative),
#: far below the read noise, so that reads in quick succession reuse one effective conductance matrix.
DRIFT_TOLERANCE = 1e-5
#: Differential read states (`_ReadState.paired`) kept per read state, for as many numbers of pairs read last (the
#: systems sharing one chip): a sweep over every number of pairs of a 1024 × 1024 tile kept 0.5 GB.
PAIRED_STATES_KEPT = 4
_HERMES = "IBM 64-core PCM chip, Le Gallo et al., Nat. Electron. 6, 680 (2023)"


class GeometryConfig(Strict):
    """Size of the array and of one read call."""

    rows: int = Field(64, ge=1, le=1024, description="word lines, the array's inputs (1); source: a 64 × 64 "
                      "tile, the size class of published 1T1R arrays (128 × 64 in Li et al., Nat. Electron. 2018)")
    cols: int = Field(64, ge=1, le=1024, description="bit lines, the array's outputs (1); source: as rows")
    max_batch: int = Field(4096, ge=1, le=1_048_576, description="input vectors one read call takes (1); source: "
                           "the CrossbarArray default host buffer")


class DeviceConfig(Strict):
    """The programmable conductance range of every device."""

    g_min_s: float = Field(0.0, ge=0, le=1e-2, description="lowest programmable conductance (S); source: aihwkit "
                           "SinglePairConductanceConverter g_min = 0 µS")
    g_max_s: float = Field(25e-6, gt=0, le=1e-2, description="highest programmable conductance (S); source: aihwkit "
                           "SinglePairConductanceConverter and PCMLikeNoiseModel g_max = 25 µS")

    @model_validator(mode="after")
    def _ordered(self) -> DeviceConfig:
        if self.g_min_s >= self.g_max_s:
            raise ValueError(f"g_min_s {self.g_min_s:g} S must be below g_max_s {self.g_max_s:g} S")
        return self


class ConstructionConfig(Strict):
    """Hidden, fixed per chip: drawn once from the seed."""

    conductance_scale_spread: float = Field(0.1, ge=0, le=0.3, description="device-to-device spread (std, "
                                            "relative) of each device's conductance scale, which multiplies all "
                                            "its programmed states (1), at most 0.3: the Gaussian scale is clamped "
                                            "at 0, a device that conducts nothing, which at 0.3 is 0.04 % of them "
                                            "(at 0.5 it would be 2.3 %, more than the stuck ones; at 1, 16 %, and "
                                            "the scales would spread by 0.87); source: the size of aihwkit "
                                            "PCMPresetDevice w_max_dtod = 0.1 (Nandakumar et al., Front. Neurosci. "
                                            "2020), there the relative spread of each device's upper bound only, "
                                            "here applied to all its states (assumption)")
    stuck_on_fraction: float = Field(0.001, ge=0, le=1, description="fraction of devices stuck at g_max (1); "
                                     "source: 99.8 % device yield of a 128 × 64 1T1R array (Li et al., Nat. "
                                     "Electron. 1, 52, 2018), split evenly between stuck-on and stuck-off")
    stuck_off_fraction: float = Field(0.001, ge=0, le=1, description="fraction of devices stuck at g_min (1); "
                                      "source: as stuck_on_fraction")
    levels: int | None = Field(64, ge=2, le=1_000_000, description="programmable conductance states, evenly "
                               "spaced over g_min..g_max; null: continuous (1); source: assumption of 6-bit "
                               "multi-level programming (published arrays reach 16 to thousands of levels, e.g. "
                               "2048 in Rao et al., Nature 615, 823, 2023)")
    wire_resistance_ohm: float = Field(0.35, ge=0, le=100, description="word- and bit-line resistance between "
                                       "neighbouring cells (Ω); source: the wire of aihwkit's IOParameters "
                                       "ir_drop_g_ratio default, 1/(0.35 Ω · 5 µS), here with this chip's 25 µS "
                                       "g_max: r·g_max = 8.75e-6, 5× aihwkit's ratio (on a 64 × 64 tile at g_max, "
                                       "the far corner's read drops 3.6 % to first order, 3.5 % in an exact solve of "
                                       "the wires, and the worst column's current 3.0 %, which the first-order model "
                                       "matches within 3 % of that drop); refused "
                                       "where that drop would reach 100 % (at 0.35 Ω: square tiles from 338 × 338), "
                                       "and so is a programming whose drawn devices would reach it")
    column_gain_spread: float = Field(0.01, ge=0, le=0.2, description="column-to-column spread (std, relative) "
                                      "of the read-out gain: feedback resistor and ADC reference mismatch (1), at "
                                      "most 0.2 so that the Gaussian gain stays positive (5σ): a negative one reads "
                                      "its column's currents inverted; source: assumption, ~1 % on-chip resistor "
                                      "mismatch")
    column_offset_v: float = Field(1e-3, ge=0, le=1, description="column-to-column spread (std) of the read-out offset "
                                   "at the ADC input (V); source: assumption, ~1 mV CMOS op-amp input offset")

    @model_validator(mode="after")
    def _fractions(self) -> ConstructionConfig:
        on, off = self.stuck_on_fraction, self.stuck_off_fraction
        if on + off > 1:
            raise ValueError(f"stuck_on_fraction {on:g} and stuck_off_fraction {off:g} add up to {on + off:g}, more "
                             "than all the devices; give fractions that add up to at most 1")
        return self


class ProgrammingConfig(Strict):
    """Drawn at every programming: σ = scale·(c0 + c1·g/g_max + c2·(g/g_max)²)·g_max/reference (µS)."""

    noise_scale: float = Field(1.0, ge=0, le=100, description="scale of the programming noise (1); source: "
                               f"{_AIHWKIT} prog_noise_scale (Nandakumar et al., ICECS 2019)")
    coefficients_us: tuple[Coefficient, Coefficient, Coefficient] = Field(
        (0.26348, 1.9650, -1.1731), description="polynomial c0, c1, c2 (µS at the reference g_max); source: "
        f"{_AIHWKIT} prog_coeff")
    reference_g_max_s: float = Field(25e-6, gt=0, le=1e-2, description="g_max at which the polynomial was fitted (S); "
                                     f"source: {_AIHWKIT} prog_coeff_g_max_reference")


class SlowConfig(Strict):
    """Drift since programming: g(t) = g_prog·((t + t0)/t0)^(−ν) with ν ~ |N(μ(g), σ(g))|·scale, where
    μ = clip(−0.0155·ln(g/g_max) + 0.0244, 0.049, 0.1) and σ = clip(−0.0125·ln(g/g_max) − 0.0059, 0.008, 0.045)."""

    drift_scale: float = Field(1.0, ge=0, le=100, description="scale of the drift exponents ν (1); source: "
                               f"{_AIHWKIT}.generate_drift_coefficients (drift_scale)")
    drift_t0_s: float = Field(20.0, gt=0, le=1e6, description="drift reference time t0 (s); source: "
                              f"{_AIHWKIT} t_0")


class ShotConfig(Strict):
    """Drawn at every read. Read noise σ_g = |g(t)|·Q·√ln((t + t0 + t_read)/(2·t_read)) per device, with
    Q = min(0.0088/max((g_prog/g_max)^0.65, 1e-3), 0.2)."""

    read_noise_scale: float = Field(1.0, ge=0, le=100, description="scale of the 1/f read noise (1); source: "
                                    f"{_AIHWKIT}.apply_drift_noise_to_conductance (read_noise_scale)")
    read_noise_t_read_s: float = Field(250e-9, gt=0, le=1, description="read time of the 1/f fit (s); source: "
                                       f"{_AIHWKIT} t_read")
    output_noise_a: float = Field(0.3e-6, ge=0, le=1e-3, description="noise at each column amplifier input, rms (A); "
                                  "source: aihwkit IOParameters out_noise = 0.06 of one g_max device at the full "
                                  "read voltage (0.06 · 0.2 V · 25 µS)")


class ConverterConfig(Strict):
    """Row DACs, column transimpedance amplifiers and ADCs."""

    read_voltage_range_v: float = Field(0.2, ge=1e-3, le=1.0, description="row drivers span ±range, the "
                                        "read_voltage_v limit (V); source: assumption, PCM read at 0.2 V, below "
                                        "threshold switching")
    dac_bits: int | None = Field(8, ge=2, le=24, description="row DAC resolution over ±range; null: exact (bits); "
                                 f"source: 8-bit inputs of the {_HERMES}")
    tia_gain_ohm: float = Field(1 / (12 * 0.2 * 25e-6), ge=1, le=1e9, description="transimpedance of each column "
                                "amplifier (V/A); source: ADC range = 12 full-scale devices, aihwkit IOParameters "
                                "out_bound = 12 (1 V / (12 · 0.2 V · 25 µS))")
    adc_range_v: float = Field(1.0, ge=1e-3, le=100, description="column ADCs span ±range (V); source: assumption")
    adc_bits: int | None = Field(8, ge=2, le=24, description="column ADC resolution over ±range; null: exact "
                                 f"(bits); source: 8-bit outputs of the {_HERMES}")
    adc_clip: bool = Field(True, description="the ADC saturates at its range; false: no clipping (ideal only)")


class TimingConfig(Strict):
    """Device time of programming and reading."""

    program_time_per_device_s: float = Field(20e-6, ge=0, le=1, description="write-verify time per device (s); source: "
                                             "assumption, ~10 iterations of a ~1 µs pulse and a ~1 µs verify read")
    read_time_per_vector_s: float = Field(133e-9, ge=0, le=1, description="integration and conversion per input vector "
                                          f"(s); source: {_HERMES}: 63.1 TOPS over 64 cores of 256 × 256 in "
                                          "one-phase mode, ≈ 133 ns per matrix-vector product")
    call_overhead_s: float = Field(100e-6, ge=0, le=1, description="host round trip per program or read call (s); "
                                   "source: assumption (USB/PCIe transfer and set-up)")


class CrossbarConfig(Strict):
    """The memristor crossbar world; defaults are the ``realistic`` preset."""

    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    devices: DeviceConfig = Field(default_factory=DeviceConfig)
    construction: ConstructionConfig = Field(default_factory=ConstructionConfig)
    programming: ProgrammingConfig = Field(default_factory=ProgrammingConfig)
    slow: SlowConfig = Field(default_factory=SlowConfig)
    shot: ShotConfig = Field(default_factory=ShotConfig)
    converters: ConverterConfig = Field(default_factory=ConverterConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)

    @model_validator(mode="after")
    def _read_noise_grows(self) -> CrossbarConfig:
        t0, t_read = self.slow.drift_t0_s, self.shot.read_noise_t_read_s
        if t0 < t_read:  # ln((t + t0 + t_read)/(2·t_read)) < 0 at t = 0: a negative variance, NaN currents
            raise ValueError(f"slow.drift_t0_s {t0:g} s is shorter than shot.read_noise_t_read_s {t_read:g} s, so the "
                             "1/f read-noise variance would start negative; raise drift_t0_s")
        return self

    @model_validator(mode="after")
    def _ir_drop_first_order(self) -> CrossbarConfig:
        rows, cols = self.geometry.rows, self.geometry.cols
        wire, g_max = self.construction.wire_resistance_ohm, self.devices.g_max_s
        drop = wire * g_max * (rows * (rows + 1) + cols * (cols + 1)) / 2  # the far corner, every device at g_max
        if drop >= 1:  # ir_drop_factor's 1 − drop would be ≤ 0: that device's current reversed
            raise ValueError(f"construction.wire_resistance_ohm {wire:g} Ω on {rows} × {cols} devices up to g_max_s "
                             f"{g_max:g} S drops the far corner's read by {100 * drop:.0f} % to first order (the "
                             "IR-drop model holds under 100 %); lower wire_resistance_ohm or g_max_s, or use a smaller "
                             "array")
        return self


def drift_exponents(target_s: torch.Tensor, g_max_s: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Drift exponents ν for devices programmed to ``target_s`` (S): aihwkit's PCM fit, |N(μ(g), σ(g))|·scale."""
    relative = (target_s / g_max_s).abs().clamp(min=1e-7).log()
    mean = (-0.0155 * relative + 0.0244).clamp(0.049, 0.1)
    spread = (-0.0125 * relative - 0.0059).clamp(0.008, 0.045)
    return (mean + spread * torch.randn(target_s.shape, generator=generator, dtype=torch.float32)).abs() * scale


def read_noise_q(programmed_s: torch.Tensor, g_max_s: float) -> torch.Tensor:
    """aihwkit's 1/f read-noise amplitude Q (relative) of devices at ``programmed_s`` (S)."""
    return (0.0088 / (programmed_s.abs() / g_max_s).pow(0.65).clamp(min=1e-3)).clamp(max=0.2)


@dataclass
class _ReadState:
    """What one read needs, in ADC units (currents divided by the ADC step): recomputed when G changes."""

    weights: torch.Tensor  # rows × cols: G_eff · (DAC step / ADC step) · column gain
    offset: torch.Tensor | None  # cols, or None where every column's offset is 0
    noise_var: torch.Tensor | None  # rows × cols: read-noise variance per unit log-time factor, or None
    output_var: torch.Tensor  # cols
    _paired: dict[int, _ReadState] = field(default_factory=dict)

    def paired(self, pairs: int) -> _ReadState:
        """The state of a read of the first ``pairs`` column pairs' differences ``I_2j − I_2j+1``: the weights and
        offsets subtracted, the (independent) noise variances added. Kept with this state, for the last
        `PAIRED_STATES_KEPT` numbers of pairs."""
        if "_paired" not in self.__dict__:  # restored from a checkpoint of a hil that kept no differential states
            self._paired = {}
        state = self._paired.get(pairs)
        if state is None:
            if len(self._paired) >= PAIRED_STATES_KEPT:
                del self._paired[next(iter(self._paired))]  # the one made first

            def total(t: torch.Tensor) -> torch.Tensor:
                return (t[..., 0:2 * pairs:2] + t[..., 1:2 * pairs:2]).contiguous()

            state = self._paired[pairs] = _ReadState(
                weights=pair_differences(self.weights, pairs).contiguous(),
                offset=None if self.offset is None else pair_differences(self.offset, pairs),
                noise_var=None if self.noise_var is None else total(self.noise_var), output_var=total(self.output_var))
        return state


class MemristorCrossbar(World):
    """A simulated PCM crossbar chip: hidden device and read-out non-idealities, programming, drift and reads.

    ``program(conductances_s)``, ``read(voltages_v)`` and ``read_pairs(voltages_v, pairs)`` are what
    `SimulatedCrossbar` calls; each advances the world's clock by its device time. Presets: ``ideal`` switches every
    non-ideality off (converters exact and unclipped); ``harsh`` scales the device and read-out non-idealities by
    about 3× (device spread 0.3, as in aihwkit's measured ReRAM-array presets with w_max_dtod 0.35–0.43; stuck
    devices, wire resistance, column spreads, amplifier noise), the programming noise, drift and 1/f read noise by
    2×, with 16 levels and 6-bit converters.
    """

    kind = "memristor_crossbar"
    Config = CrossbarConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "ideal": {
            "construction": {"conductance_scale_spread": 0.0, "stuck_on_fraction": 0.0, "stuck_off_fraction": 0.0,
                             "levels": None, "wire_resistance_ohm": 0.0, "column_gain_spread": 0.0,
                             "column_offset_v": 0.0},
            "programming": {"noise_scale": 0.0},
            "slow": {"drift_scale": 0.0},
            "shot": {"read_noise_scale": 0.0, "output_noise_a": 0.0},
            "converters": {"dac_bits": None, "adc_bits": None, "adc_clip": False},
        },
        "realistic": {},
        "harsh": {
            "construction": {"conductance_scale_spread": 0.3, "stuck_on_fraction": 0.003,
                             "stuck_off_fraction": 0.003, "levels": 16, "wire_resistance_ohm": 1.0,
                             "column_gain_spread": 0.03, "column_offset_v": 3e-3},
            "programming": {"noise_scale": 2.0},
            "slow": {"drift_scale": 2.0},
            "shot": {"read_noise_scale": 2.0, "output_noise_a": 0.9e-6},
            "converters": {"dac_bits": 6, "adc_bits": 6},
        },
    }

    config: CrossbarConfig

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the array."""
        return self.config.geometry.rows, self.config.geometry.cols

    def _construct(self) -> None:
        config, generator, shape = self.config, self.construction_rng, self.shape
        construction, devices = config.construction, config.devices
        scale = (1 + construction.conductance_scale_spread * torch.randn(shape, generator=generator)).clamp(min=0)
        draw = torch.rand(shape, generator=generator)
        stuck_on = draw < construction.stuck_on_fraction
        stuck_off = ~stuck_on & (draw < construction.stuck_on_fraction + construction.stuck_off_fraction)
        #: Each device's conductance scale (1), 0 where stuck.
        self.conductance_scale = torch.where(stuck_on | stuck_off, 0.0, scale)
        #: Conductance of the stuck devices (S), 0 elsewhere.
        self.stuck_conductance_s = stuck_on * devices.g_max_s + stuck_off * devices.g_min_s
        tia = config.converters.tia_gain_ohm
        self.column_gain = 1 + construction.column_gain_spread * torch.randn(shape[1], generator=generator)
        self.column_offset_a = construction.column_offset_v / tia * torch.randn(shape[1], generator=generator)
        # A fresh chip: every device reset to g_min, with no drift.
        self.programmed_s = torch.full(shape, devices.g_min_s)
        self.drift_nu = torch.zeros(shape)
        self.programmed_at_s = 0.0
        self._drift_nu_max = 0.0
        self._generation = 0
        self._cache_key: tuple[int, float] | None = None
        self._state: _ReadState | None = None

    def hidden_parameters(self) -> dict[str, Any]:
        construction, devices, converters = self.config.construction, self.config.devices, self.config.converters
        return {
            "conductance_scale": self.conductance_scale.clone(),
            "stuck_conductance_s": self.stuck_conductance_s.clone(),
            "wire_resistance_ohm": construction.wire_resistance_ohm,
            "column_gain": self.column_gain.clone(),
            "column_offset_a": self.column_offset_a.clone(),
            "levels": construction.levels or 0,
            "level_range_s": (devices.g_min_s, devices.g_max_s),
            "current_limit_a": (converters.adc_range_v / converters.tia_gain_ohm if converters.adc_clip
                                else math.inf),
        }

    # -- programming --------------------------------------------------------------------------------------------
    def program(self, conductances_s: Any) -> None:
        """Write-verify every device to its target (rows × cols, S), with the levels and programming noise."""
        began = self.clock.wall()
        config = self.config
        g_min, g_max = config.devices.g_min_s, config.devices.g_max_s
        target = torch.as_tensor(conductances_s, dtype=torch.float32)
        if config.construction.levels is not None:
            target = quantise_levels(target, g_min, g_max, config.construction.levels)
        programmed = target.clone()
        noise = config.programming
        drawn_from = self.rng.get_state()  # a refused programming draws nothing: the next is as if it never came
        if noise.noise_scale > 0:
            c0, c1, c2 = noise.coefficients_us
            relative = target / g_max
            unit_s = 1e-6 * noise.noise_scale * g_max / noise.reference_g_max_s
            sigma = (c0 + relative * (c1 + relative * c2)) * unit_s
            draw = torch.randn(target.shape, generator=self.rng, dtype=torch.float32)
            programmed = (target + sigma * draw).clamp_(min=0)
        try:
            self._check_ir_drop(programmed)
        except DeviceError:
            self.rng.set_state(drawn_from)
            raise
        drift = config.slow.drift_scale
        nu = drift_exponents(target, g_max, drift, self.rng) if drift > 0 else torch.zeros(self.shape,
                                                                                           dtype=torch.float32)
        timing = config.timing
        self.clock.sleep(timing.call_overhead_s + target.numel() * timing.program_time_per_device_s, since=began)
        self.programmed_s, self.drift_nu, self.programmed_at_s = programmed, nu, self.clock.now()
        self._drift_nu_max = float(nu.max()) if nu.numel() else 0.0
        self._generation += 1

    def _check_ir_drop(self, programmed_s: torch.Tensor) -> None:
        """Refuse conductances (S) whose first-order IR drop reaches 100 % of a device's read: the model would
        reverse its current. The configuration's check assumes nominal devices at g_max; the drawn spread can reach
        the limit on a smaller array. Drift only lowers conductances, so the drop is largest at programming."""
        wire = self.config.construction.wire_resistance_ohm
        if wire == 0:
            return
        conductance = device_conductance(programmed_s, self.conductance_scale, self.stuck_conductance_s)
        factor = ir_drop_factor(conductance, wire).reshape(-1)
        worst = int(factor.argmin())
        if factor[worst] <= 0:
            row, col = divmod(worst, self.shape[1])
            raise DeviceError(f"simulated {self.kind}: these conductances drop the read of device ({row}, {col}) by "
                              f"{100 * (1 - float(factor[worst])):.0f} % to first order ({wire:g} Ω per "
                              f"cell on {self.shape[0]} × {self.shape[1]} devices, with this chip's spread); the "
                              "IR-drop model holds under 100 %: program lower conductances, or lower "
                              "wire_resistance_ohm or g_max_s, or use a smaller array")

    # -- reading ------------------------------------------------------------------------------------------------
    def conductances(self, time_s: float | None = None) -> torch.Tensor:
        """The conductance every device presents at ``time_s`` (default: now), drift included (S)."""
        log_time = self._drift_log_time(self.clock.now() if time_s is None else time_s)
        programmed = self.programmed_s
        if self._drift_nu_max > 0 and log_time > 0:
            programmed = programmed * torch.exp(-self.drift_nu * log_time)
        return device_conductance(programmed, self.conductance_scale, self.stuck_conductance_s)

    def _read_noise_factor(self, now: float) -> float:
        """The 1/f noise variance grows as ln((t + t0 + t_read)/(2·t_read)), t since programming."""
        t_read = self.config.shot.read_noise_t_read_s
        t = max(0.0, now - self.programmed_at_s) + self.config.slow.drift_t0_s
        return math.log((t + t_read) / (2 * t_read))

    def _drift_log_time(self, now: float) -> float:
        """ln((t + t0)/t0), t the time since programming: drift scales conductances by exp(−ν·this)."""
        t0 = self.config.slow.drift_t0_s
        return math.log((max(0.0, now - self.programmed_at_s) + t0) / t0)

    def _read_state(self, now: float) -> _ReadState:
        log_time = self._drift_log_time(now)
        if (self._state is not None and self._cache_key is not None and self._cache_key[0] == self._generation
                and self._drift_nu_max * abs(log_time - self._cache_key[1]) <= DRIFT_TOLERANCE):
            return self._state
        config = self.config
        g_max = config.devices.g_max_s
        conductance = self.conductances(now)
        wire = config.construction.wire_resistance_ohm
        factor = ir_drop_factor(conductance, wire) if wire > 0 else None
        effective = conductance if factor is None else conductance * factor
        dac, adc = self._dac_step(), self._adc_step()
        scale = dac / adc
        noise_var = None
        if config.shot.read_noise_scale > 0:
            at_programming = device_conductance(self.programmed_s, self.conductance_scale, self.stuck_conductance_s)
            sigma = conductance.abs() * read_noise_q(at_programming, g_max) * config.shot.read_noise_scale
            if factor is not None:
                sigma = sigma * factor
            noise_var = (sigma * (scale * self.column_gain)).square()
        output_var = (config.shot.output_noise_a / adc * self.column_gain).square()
        offset = self.column_offset_a / adc if self.column_offset_a.any() else None
        self._state = _ReadState(weights=effective * (scale * self.column_gain), offset=offset,
                                 noise_var=noise_var, output_var=output_var)
        self._cache_key = (self._generation, log_time)
        return self._state

    def _dac_step(self) -> float:
        converters = self.config.converters
        if converters.dac_bits is None:
            return 1.0
        return 2 * converters.read_voltage_range_v / 2**converters.dac_bits

    def _adc_step(self) -> float:
        converters = self.config.converters
        if converters.adc_bits is None:
            return 1.0
        return 2 * converters.adc_range_v / converters.tia_gain_ohm / 2**converters.adc_bits

    def read(self, voltages_v: Any) -> torch.Tensor:
        """Column currents (batch × cols, A) for row voltages (batch × rows, V), noise and converters included."""
        began = self.clock.wall()
        voltages = torch.as_tensor(voltages_v, dtype=torch.float32)
        now = self.clock.now()
        currents = self._analog_read(voltages, self._read_state(now), now)
        converters = self.config.converters
        if converters.adc_bits is not None:
            currents.round_()
            if converters.adc_clip:
                top = 2 ** (converters.adc_bits - 1)
                currents.clamp_(-top, top - 1)
            currents.mul_(self._adc_step())
        elif converters.adc_clip:
            limit = converters.adc_range_v / converters.tia_gain_ohm
            currents.clamp_(-limit, limit)
        self._count_read(voltages, began)
        return currents

    def read_pairs(self, voltages_v: Any, pairs: int) -> torch.Tensor:
        """``I_2j − I_2j+1`` (batch × pairs, A) for row voltages (batch × rows, V): every column read and digitised,
        then subtracted. Where the column ADCs neither round nor clip, the differences alone are computed: one matmul
        of half the width, with the per-column noises drawn as one Gaussian per pair of their summed variance, the
        same distribution (in another draw of the world's generator than `read`'s). A new tensor, never a scratch
        buffer: `CrossbarArray.read_pairs` hands it on uncopied, and the crossbar system scales it in place."""
        converters = self.config.converters
        if converters.adc_bits is not None or converters.adc_clip:
            currents = self.read(voltages_v)
            return pair_differences(currents, pairs)
        began = self.clock.wall()
        voltages = torch.as_tensor(voltages_v, dtype=torch.float32)
        now = self.clock.now()
        currents = self._analog_read(voltages, self._read_state(now).paired(pairs), now)
        self._count_read(voltages, began)
        return currents

    def _analog_read(self, voltages: torch.Tensor, state: _ReadState, now: float) -> torch.Tensor:
        """The read-out's analog output (batch × state's columns, ADC units) for row voltages (batch × rows, V):
        row DAC rounding, the currents, read noise and amplifier noise."""
        converters = self.config.converters
        # The temporaries are the world's buffers (`_scratch`): fresh, the 4 MB of a read of 4096 vectors were
        # faulted in anew at every read (1120 page faults; a realistic forward pass took 3.9 ms against 2.7 ms).
        codes = voltages
        if converters.dac_bits is not None:
            top = 2 ** (converters.dac_bits - 1)
            codes = torch.mul(voltages, 1 / self._dac_step(), out=self._scratch("codes", voltages.shape))
            codes.round_().clamp_(-top, top - 1)
        currents = column_currents(codes, state.weights, None, state.offset)
        if state.noise_var is not None:
            squares = torch.mul(codes, codes, out=self._scratch("squares", codes.shape))
            variance = torch.addmm(state.output_var, squares, state.noise_var, alpha=self._read_noise_factor(now),
                                   out=self._scratch("variance", currents.shape))
            currents.addcmul_(variance.sqrt_(), self._scratch("noise", currents.shape).normal_(generator=self.rng))
        elif self.config.shot.output_noise_a > 0:
            noise = self._scratch("noise", currents.shape).normal_(generator=self.rng)
            currents.addcmul_(state.output_var.sqrt(), noise)
        return currents

    def _count_read(self, voltages: torch.Tensor, began: float) -> None:
        """A read's device time: the host round trip, and integration and conversion per input vector; in real time
        counted from where the read ``began`` (a `VirtualClock.wall` reading), as its computing is the chip's work."""
        timing = self.config.timing
        self.clock.sleep(timing.call_overhead_s + voltages.shape[0] * timing.read_time_per_vector_s, since=began)


class SimulatedCrossbar(SimulatedInstrument, CrossbarArray):
    """The crossbar array of a `MemristorCrossbar` world: programs its devices and reads its columns."""

    def __init__(self, world: MemristorCrossbar, **common: Any):
        require_world(world, MemristorCrossbar, "crossbar", "a memristor crossbar world")
        self.shape = world.shape
        self.max_batch = world.config.geometry.max_batch
        super().__init__(world, **common)

    @property
    def crossbar(self) -> MemristorCrossbar:
        return self.world  # type: ignore[return-value]

    def hardware_limits(self) -> dict[str, Limit]:
        devices, converters = self.crossbar.config.devices, self.crossbar.config.converters
        span = converters.read_voltage_range_v
        return {"conductance_s": Limit("S", devices.g_min_s, devices.g_max_s),
                "read_voltage_v": Limit("V", -span, span)}

    def _program_hw(self, conductances_s: Any) -> None:
        self.crossbar.program(conductances_s)

    def _read_hw(self, voltages_v: Any) -> torch.Tensor:
        return self.crossbar.read(voltages_v)

    def _read_pairs_hw(self, voltages_v: Any, pairs: int) -> torch.Tensor:
        return self.crossbar.read_pairs(voltages_v, pairs)

    def _snapshot_hw(self) -> dict[str, Any]:
        return {**super()._snapshot_hw(), "shape": list(self.shape), "max_batch": self.max_batch}
