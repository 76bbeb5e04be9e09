"""`OscillatorSystem`: a network of coupled nonlinear oscillators as a trainable physical transformation.

After the mechanical physical neural networks of Wright et al., Nature 601, 549 (2022). Each sample is one *record*
of the drive waveform: ``n_in + n_params`` consecutive segments of ``segment_s`` each, x first, then θ. Segment k
carries value v_k ∈ [−1, 1] as an amplitude-modulated tone, ``drive_amplitude_v · v_k · sin(2π·carrier_hz·t)``
with t counted from the record's start (or, with ``carrier_hz: null``, as the constant level
``drive_amplitude_v · v_k``). A record is followed by ``gap_s`` of zero drive in which the network rings down, so
the records of a batch play as one waveform in one device call and do not disturb each other (the residue after
the gap is e^(−γ_min·gap/2), 10⁻⁴ for the defaults; a gap that leaves more than 1 %, by the nominal design's
damping, is warned of when the system is built).

Readout: every sensor channel's record is cut into ``n_windows`` equal time windows and y is the RMS voltage of each
(window, channel), divided by ``output_scale_v``: ``y[b, w·C + c] = sqrt(mean(v²) + 10⁻¹²) / output_scale_v``,
the same in `_run` and in the physics model (the 10⁻¹² V² keeps the gradient finite at zero). With the defaults y
is 0 without drive and about 0.1–2 for inputs spread over [−1, 1].

The physics model integrates the same records from rest with `hil.physics.oscillator` and the bench's unknown
calibration as relative factors at nominal value 1: ``omega_scale``, ``gamma_scale``, ``beta_scale`` and
``drive_gain_scale`` per oscillator, ``kappa_scale`` per pair and ``sense_gain_scale`` per channel, each
multiplying the nominal value given by the design settings (order-one parameters, so a twin can fit them with one
learning rate). No calibration step is needed: the working point is fixed by the settings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from hil.errors import ConfigError, counted
from hil.instruments import AnalogInput, AnalogOutput, Instrument
from hil.physics import oscillator as physics
from hil.systems.base import (
    PhysicalSystem,
    PhysicsModel,
    check_counts,
    check_output_scale,
    check_setting_within,
    is_count,
    is_number,
)

#: Added to the mean square (V²) before the square root, in `_run` and in the model alike.
RMS_FLOOR_V2 = 1e-12
DESIGN = physics.DESIGN_RANGES
#: The largest share of a record's ring-down left in the next record of a batch without a warning (the defaults
#: leave 10⁻⁴).
MAX_RESIDUE = 0.01


def encode(values: torch.Tensor, segment_samples: int, sample_rate_hz: float, amplitude_v: float,
           carrier_hz: float | None) -> torch.Tensor:
    """Drive records (batch × K·segment_samples, volts) for values (batch × K) in [−1, 1]: one segment per value,
    an amplitude-modulated tone at ``carrier_hz`` (phase continuous over the record) or a constant level."""
    drive = amplitude_v * values.repeat_interleave(segment_samples, dim=1)
    if carrier_hz is not None:
        t = torch.arange(drive.shape[1], dtype=torch.float64) / sample_rate_hz
        drive = drive * torch.sin(2 * math.pi * carrier_hz * t).to(drive.dtype)
    return drive


def window_rms(volts: torch.Tensor, n_windows: int) -> torch.Tensor:
    """RMS (V) of records (batch × T × C) in ``n_windows`` equal windows: batch × (n_windows·C), window-major."""
    batch, samples, channels = volts.shape
    windows = volts.reshape(batch, n_windows, samples // n_windows, channels)
    return (windows.pow(2).mean(2) + RMS_FLOOR_V2).sqrt().reshape(batch, n_windows * channels)


def _check_design(*, segment_s: Any, sample_rate_hz: Any, freq_hz: Any, q: Any, drive_gain_m_s2_per_v: Any,
                  nonlinear_length_m: Any, coupling_hz: Any) -> None:
    """Refuse, naming the setting, what would make the encoding or the physics model meaningless (NaN, inf) or lies
    outside any bench of the kind (`hil.physics.oscillator.DESIGN_RANGES`: a unit slip)."""
    for label, value in (("sample_rate_hz", sample_rate_hz), ("segment_s", segment_s)):
        if not (is_number(value) and value > 0):
            raise ConfigError(f"{label} must be a positive number, got {value!r}", field=label)
    for label, value in (("nonlinear_length_m", nonlinear_length_m), ("coupling_hz", coupling_hz)):
        if not (is_number(value) and DESIGN[label].holds(value)):
            raise ConfigError(f"{label} must be a number {DESIGN[label]}, got {value!r}; check its unit", field=label)
    for label, values in (("freq_hz", freq_hz), ("q", q), ("drive_gain_m_s2_per_v", drive_gain_m_s2_per_v)):
        if isinstance(values, str) or not isinstance(values, Sequence) or not values \
                or not all(is_number(v) and DESIGN[label].holds(v) for v in values):
            raise ConfigError(f"{label} must be a list of numbers {DESIGN[label]}, one per oscillator, got {values!r}",
                              field=label)
        if len(values) != len(freq_hz):
            raise ConfigError(f"{label} has {len(values)} values; freq_hz has {len(freq_hz)}, one per oscillator",
                              field=label)


def _check_encoding(*, n_in: Any, n_params: Any, drive_amplitude_v: Any, gap_s: Any, carrier_hz: Any,
                    output_scale_v: Any, sensor_gain: Any, sensed: Any, n_oscillators: int) -> None:
    """Refuse, naming the setting, a value of the wrong type (YAML's true for a count, text for a number) or one
    that would make the outputs NaN, before any arithmetic is done with it."""
    check_counts(n_in=n_in, n_params=n_params)
    if not (is_number(drive_amplitude_v) and drive_amplitude_v > 0):
        raise ConfigError(f"drive_amplitude_v must be a positive number (V), got {drive_amplitude_v!r}",
                          field="drive_amplitude_v")
    check_output_scale(output_scale_v)
    if not (is_number(gap_s) and gap_s >= 0):
        raise ConfigError(f"gap_s must be a number ≥ 0 (s), got {gap_s!r}", field="gap_s")
    if carrier_hz is not None and not is_number(carrier_hz):
        raise ConfigError(f"carrier_hz must be a number (Hz) or null for constant levels, got {carrier_hz!r}",
                          field="carrier_hz")
    if sensor_gain is not None and not (is_number(sensor_gain) and DESIGN["sensor_gain"].holds(sensor_gain)):
        raise ConfigError(f"sensor_gain must be a number {DESIGN['sensor_gain']}, got {sensor_gain!r}; or leave it "
                          "out for the sensed quantity's nominal probe", field="sensor_gain")
    if isinstance(sensed, str) or not isinstance(sensed, Sequence) or not sensed \
            or not all(not isinstance(i, bool) and isinstance(i, int) and 0 <= i < n_oscillators for i in sensed):
        raise ConfigError(f"sensed holds oscillator indices 0..{n_oscillators - 1}, got {sensed!r}", field="sensed")


def _warn_of_ring_down(name: str, gap_s: float, decay_rate: float) -> None:
    """Warn where ``gap_s`` leaves more than `MAX_RESIDUE` of a record's ring-down (e^(−rate·gap), ``decay_rate``
    the nominal design's slowest, 1/s) in the next record of the batch: the records then disturb each other, and the
    physics model, which starts each from rest, does not match the device."""
    residue = math.exp(-decay_rate * gap_s)
    if residue > MAX_RESIDUE:
        needed = math.log(1 / MAX_RESIDUE) / decay_rate
        warnings.warn(f"system {name!r}: gap_s {gap_s:g} s leaves {residue:.0%} of a record's ring-down in the next "
                      f"(nominal decay rate {decay_rate:.3g}/s): the records of a batch disturb each other and the "
                      f"physics model, which starts each at rest, will not match the device; give gap_s {needed:.3g} s "
                      "or more", UserWarning, stacklevel=3)


class OscillatorPhysics(PhysicsModel):
    """The noiseless oscillator network seen through the system's encoding and readout (see module doc)."""

    def __init__(self, nominal: dict[str, torch.Tensor], *, sensed: Sequence[int], sense: str,
                 segment_samples: int, sample_rate_hz: float, amplitude_v: float, carrier_hz: float | None,
                 n_windows: int, output_scale_v: float, substeps: int):
        super().__init__()
        for name, value in nominal.items():
            self.register_buffer(f"nominal_{name}", value.clone())
        self.omega_scale = nn.Parameter(torch.ones_like(nominal["omega"]))
        self.gamma_scale = nn.Parameter(torch.ones_like(nominal["gamma"]))
        self.beta_scale = nn.Parameter(torch.ones_like(nominal["beta"]))
        self.kappa_scale = nn.Parameter(torch.ones_like(nominal["kappa"]))
        self.drive_gain_scale = nn.Parameter(torch.ones_like(nominal["drive_gain"]))
        self.sense_gain_scale = nn.Parameter(torch.ones_like(nominal["sense_gain"]))
        self.sensed, self.sense = list(sensed), sense
        self.segment_samples, self.sample_rate_hz, self.amplitude_v = segment_samples, sample_rate_hz, amplitude_v
        self.carrier_hz, self.n_windows, self.output_scale_v = carrier_hz, n_windows, output_scale_v
        self.substeps = substeps

    def physical_parameters(self) -> dict[str, torch.Tensor]:
        """The calibration in physical units: omega (rad/s), gamma (1/s), beta (1/(m²s²)), kappa (1/s², symmetric:
        a spring pulls both its ends alike, so κ_ij and κ_ji share the mean of their two scales), drive_gain
        (m/s²/V), sense_gain (V/m or V/(m/s))."""
        values = {name: getattr(self, f"nominal_{name}") * getattr(self, f"{name}_scale")
                  for name in ("omega", "gamma", "beta", "drive_gain", "sense_gain")}
        values["kappa"] = self.nominal_kappa * (self.kappa_scale + self.kappa_scale.T) / 2
        return values

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        values = torch.cat([x, theta.expand(len(x), -1)], 1)
        drive = encode(values, self.segment_samples, self.sample_rate_hz, self.amplitude_v, self.carrier_hz)
        p = self.physical_parameters()
        volts = physics.respond(drive, self.sample_rate_hz, p["omega"], p["gamma"], p["beta"], p["kappa"],
                                p["drive_gain"], p["sense_gain"], self.sensed, self.sense, substeps=self.substeps)
        return window_rms(volts, self.n_windows) / self.output_scale_v


class OscillatorSystem(PhysicalSystem):
    """Coupled nonlinear oscillators driven by an analog output channel and read on the analog input's first
    ``len(sensed)`` channels (an input of more channels, a DAQ card with some unwired, keeps the rest unread).

    Settings: the encoding (``n_in``, ``n_params``, ``segment_s``, ``carrier_hz``, ``drive_amplitude_v``,
    ``gap_s``, ``sample_rate_hz``, output ``channel``), the readout (``n_windows``, ``output_scale_v``), the
    largest batch (``max_batch``, capped by the output's waveform memory and the input's record length), and the
    bench's nominal design for the physics model (``freq_hz``, ``q``, ``nonlinear_length_m``, ``coupling_hz``,
    ``drive_gain_m_s2_per_v``, ``sensor_gain`` (default: `hil.physics.oscillator.NOMINAL_SENSOR_GAIN` of the
    ``sense``), ``sensed``, ``sense``; see `hil.physics.oscillator`).
    """

    kind = "oscillator"
    roles: ClassVar[dict[str, type[Instrument]]] = {"output": AnalogOutput, "input": AnalogInput}
    waveform_roles = ("output",)  # a batch plays as one drive waveform

    def __init__(self, instruments: dict[str, Instrument], *, name: str = "", n_in: int = 8, n_params: int = 8,
                 segment_s: float = 4e-3, carrier_hz: float | None = 250.0, drive_amplitude_v: float = 1.0,
                 gap_s: float = 0.1, sample_rate_hz: float = 4000.0, channel: int = 1, n_windows: int = 2,
                 output_scale_v: float = 1.0, max_batch: int | None = None,
                 freq_hz: Sequence[float] = physics.NOMINAL_FREQ_HZ, q: Sequence[float] = physics.NOMINAL_Q,
                 nonlinear_length_m: float = physics.NOMINAL_NONLINEAR_LENGTH_M,
                 coupling_hz: float = physics.NOMINAL_COUPLING_HZ,
                 drive_gain_m_s2_per_v: Sequence[float] = physics.NOMINAL_DRIVE_GAIN,
                 sensor_gain: float | None = None, sensed: Sequence[int] = physics.NOMINAL_SENSED,
                 sense: Literal["displacement", "velocity"] = "displacement"):
        output, inp = instruments.get("output"), instruments.get("input")
        _check_design(segment_s=segment_s, sample_rate_hz=sample_rate_hz, freq_hz=freq_hz, q=q,
                      drive_gain_m_s2_per_v=drive_gain_m_s2_per_v, nonlinear_length_m=nonlinear_length_m,
                      coupling_hz=coupling_hz)
        _check_encoding(n_in=n_in, n_params=n_params, drive_amplitude_v=drive_amplitude_v, gap_s=gap_s,
                        carrier_hz=carrier_hz, output_scale_v=output_scale_v, sensor_gain=sensor_gain, sensed=sensed,
                        n_oscillators=len(freq_hz))
        for label, seconds in (("segment_s", segment_s), ("gap_s", gap_s)):
            if not math.isfinite(seconds * sample_rate_hz):  # round() of it would raise an OverflowError
                raise ConfigError(f"{label} {seconds:g} s at {sample_rate_hz:g} Hz holds more samples than any "
                                  f"instrument records; shorten {label}", field=label)
        self.segment_samples = round(segment_s * sample_rate_hz)
        if self.segment_samples < 1:
            raise ConfigError(f"segment_s {segment_s:g} s is shorter than one sample at {sample_rate_hz:g} Hz",
                              field="segment_s")
        self.record_samples = (n_in + n_params) * self.segment_samples
        if not is_count(n_windows) or self.record_samples % n_windows:
            raise ConfigError(f"n_windows {n_windows!r} must divide the record of {self.record_samples} samples "
                              f"({n_in}+{n_params} segments of {self.segment_samples})", field="n_windows")
        if carrier_hz is not None and not 0 < carrier_hz < sample_rate_hz / 2:
            raise ConfigError(f"carrier_hz {carrier_hz:g} Hz must be in 0..{sample_rate_hz / 2:g} Hz (Nyquist) or "
                              "null for constant levels", field="carrier_hz")
        if sense not in ("displacement", "velocity"):
            raise ConfigError(f"sense must be 'displacement' or 'velocity', got {sense!r}", field="sense")
        self.gap_samples = round(gap_s * sample_rate_hz)
        self.row_samples = self.record_samples + self.gap_samples
        limit = 1
        if isinstance(output, AnalogOutput) and output.plays_waveforms and isinstance(inp, AnalogInput):
            # (a DC-only output, with no sample rate to check, is refused by the base class: waveform_roles)
            self._check_instruments(output, inp, channel, drive_amplitude_v, sample_rate_hz, len(sensed))
            memory = min(output.waveform_points[1], inp.max_samples)
            limit = memory // self.row_samples
            if limit < 1:
                gap = self.gap_samples > self.record_samples
                raise ConfigError(f"one record of {self.row_samples:.3g} samples ({n_in + n_params} segments of "
                                  f"{self.segment_samples:.3g} and a gap of {self.gap_samples:.3g}) exceeds the "
                                  f"instruments' memory ({memory} samples); "
                                  + ("shorten gap_s" if gap else "shorten segment_s, or encode fewer values "
                                                                 "(n_in + n_params)"),
                                  field="gap_s" if gap else "segment_s")
        if max_batch is not None:
            if not is_count(max_batch):
                raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}", field="max_batch")
            limit = min(limit, max_batch)
        super().__init__(instruments, name=name, n_in=n_in, n_out=n_windows * len(sensed), n_params=n_params,
                         x_bounds=(-1.0, 1.0), theta_bounds=(-1.0, 1.0), max_batch=limit)
        self.nominal = physics.nominal_parameters(freq_hz, q, nonlinear_length_m, coupling_hz, drive_gain_m_s2_per_v,
                                                  sensor_gain, len(sensed), sense)
        _warn_of_ring_down(self.name, gap_s, physics.slowest_decay_rate(self.nominal["gamma"]))
        self.sample_rate_hz, self.channel, self.n_windows = float(sample_rate_hz), channel, n_windows
        self.carrier_hz, self.drive_amplitude_v, self.output_scale_v = carrier_hz, drive_amplitude_v, output_scale_v
        self.sensed, self.sense = list(sensed), sense
        self.settings = {"segment_s": segment_s, "carrier_hz": carrier_hz, "drive_amplitude_v": drive_amplitude_v,
                         "gap_s": gap_s, "sample_rate_hz": sample_rate_hz, "channel": channel,
                         "n_windows": n_windows, "output_scale_v": output_scale_v}

    def _check_instruments(self, output: AnalogOutput, inp: AnalogInput, channel: int, amplitude_v: float,
                           sample_rate_hz: float, n_sensed: int) -> None:
        if not is_count(channel, output.n_channels):
            raise ConfigError(f"channel {channel!r} does not exist on {output.name}; channels are "
                              f"1..{output.n_channels}", field="channel")
        volts = output.limits["voltage_v"]
        if not 0 < amplitude_v <= min(volts.max, -volts.min):
            raise ConfigError(f"drive_amplitude_v {amplitude_v:g} V is outside {output.name}'s limits "
                              f"({volts.describe()}); set drive_amplitude_v within them in the system's settings",
                              field="drive_amplitude_v")
        for instrument in (output, inp):
            check_setting_within("sample_rate_hz", sample_rate_hz, instrument, "sample_rate_hz")
        if inp.n_channels < n_sensed:  # a DAQ of more channels (16 on a card, 4 sensors wired) reads its first
            raise ConfigError(f"{inp.name} has {counted(inp.n_channels, 'channel')} but sensed lists "
                              f"{counted(n_sensed, 'oscillator')} (default: {list(physics.NOMINAL_SENSED)}); give "
                              f"sensed the oscillator each channel of {inp.name} reads, in channel order",
                              field="sensed")

    @property
    def device_time_per_row_s(self) -> float:
        """Playback time (s) of one input row of a batch: its record and the gap after it."""
        return self.row_samples / self.sample_rate_hz

    def drive(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The records (batch × record samples, volts) encoding x and θ."""
        values = torch.cat([x, theta.expand(len(x), -1)], 1)
        return encode(values, self.segment_samples, self.sample_rate_hz, self.drive_amplitude_v, self.carrier_hz)

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        output: AnalogOutput = self.instruments["output"]  # type: ignore[assignment]
        inp: AnalogInput = self.instruments["input"]  # type: ignore[assignment]
        batch = len(x)
        rows = torch.nn.functional.pad(self.drive(x, theta), (0, self.gap_samples))
        waveform = rows.reshape(-1).to(torch.float64).numpy()
        if len(waveform) < output.waveform_points[0]:
            waveform = np.pad(waveform, (0, output.waveform_points[0] - len(waveform)))
        output.load_waveform(self.channel, waveform, self.sample_rate_hz)
        if not output.output_on.get(self.channel):
            output.set_output(self.channel, True)
        inp.arm(len(waveform), self.sample_rate_hz)
        output.play([self.channel])
        record = torch.as_tensor(np.asarray(inp.fetch()[: len(self.sensed)], dtype=np.float32))
        records = record[:, : batch * self.row_samples].reshape(len(record), batch, self.row_samples)
        volts = records[:, :, : self.record_samples].permute(1, 2, 0)
        return window_rms(volts, self.n_windows) / self.output_scale_v

    def physics_model(self) -> OscillatorPhysics:
        return OscillatorPhysics(self.nominal, sensed=self.sensed, sense=self.sense,
                                 segment_samples=self.segment_samples, sample_rate_hz=self.sample_rate_hz,
                                 amplitude_v=self.drive_amplitude_v, carrier_hz=self.carrier_hz,
                                 n_windows=self.n_windows, output_scale_v=self.output_scale_v,
                                 substeps=physics.substeps_for(self.sample_rate_hz))

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        """The world's construction values relative to this system's nominal design (the model's ``*_scale``);
        a coupling that is nominally zero gets scale 1. The system must sense what the world's sensors do (``sense``
        and ``sensed``, a `ConfigError` otherwise): the scales cannot turn one into the other."""
        network = getattr(getattr(world, "config", None), "network", None)
        for key, mine in (("sense", self.sense), ("sensed", self.sensed)):
            theirs = getattr(network, key, mine)
            if (list(theirs) if key == "sensed" else theirs) != mine:
                raise ConfigError(f"the world's {key} is {theirs!r} but the system's is {mine!r}; give the system "
                                  "the world's design settings", field=key)
        hidden = world.hidden_parameters()
        scales = {}
        for name, nominal in self.nominal.items():
            value = torch.as_tensor(hidden[name], dtype=torch.float32)
            if value.shape != nominal.shape:
                raise ConfigError(f"world {name} has shape {tuple(value.shape)}, the system's design "
                                  f"{tuple(nominal.shape)}; give the system the world's design settings")
            safe = torch.where(nominal == 0, torch.ones_like(nominal), nominal)
            scales[f"{name}_scale"] = torch.where(nominal == 0, torch.ones_like(value), value / safe)
        return scales

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), **self.settings, "segment_samples": self.segment_samples,
                "record_samples": self.record_samples, "gap_samples": self.gap_samples,
                "device_time_per_row_s": self.device_time_per_row_s}
