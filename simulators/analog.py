"""Simulated analog outputs and inputs, for worlds driven by voltages and read as voltages.

An `AnalogWorld` (an oscillator network, a resistive network) turns the voltages on its output channels into
the voltages on its input channels: ``respond(drive_v, sample_rate_hz)``, both channels × samples. The
`SimulatedAnalogOutput` holds DC levels and waveforms and plays them; the `SimulatedAnalogInput` records the
world's response, armed for the next play or triggered at once. The output and input share one sample clock,
as a DAQ card or a triggered AWG and digitizer do.

Converter non-idealities (per shot): the DAC rounds every output voltage to its resolution; the ADC adds its
noise, rounds to its resolution and clips at its range. With ``bits: null``, zero noise and ``adc_clip: false``
they are ideal.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from hil.config import Strict
from hil.errors import ConfigError, DeviceError
from hil.instruments import AnalogInput, AnalogOutput
from hil.limits import Limit
from simulators.world import SimulatedInstrument, World, require_world

#: A converter's numbers, bounded once for every analog world's converters (whose defaults and sources differ): a
#: span ±range (V), a resolution (bits), an input-referred noise (V rms), a sample clock (Hz), a settling time (s).
RangeV = Annotated[float, Field(ge=1e-3, le=100)]
Bits = Annotated[int, Field(ge=2, le=32)]
NoiseV = Annotated[float, Field(ge=0, le=10)]
SampleRateHz = Annotated[float, Field(ge=1, le=1e8)]
SettleS = Annotated[float, Field(ge=0, le=1)]


class ConverterConfig(Strict):
    """The DAC and ADC of an analog world."""

    output_range_v: RangeV = Field(10.0, description="outputs span ±range (V)")
    input_range_v: RangeV = Field(10.0, description="inputs span ±range (V); beyond it they clip (adc_clip)")
    dac_bits: Bits | None = Field(16, description="DAC resolution over the output span (bits); null: exact")
    adc_bits: Bits | None = Field(16, description="ADC resolution over the input span (bits); null: exact")
    adc_noise_v: NoiseV = Field(0.0, description="ADC input-referred noise, rms (V)")
    max_sample_rate_hz: SampleRateHz = Field(1e6, description="fastest sample clock (Hz)")
    settle_s: SettleS = Field(1e-4, description="time for a DC level change to settle (s)")
    adc_clip: bool = Field(True, description="the ADC saturates at its range; false: no clipping (ideal only); "
                           "source: a converter has no codes beyond its span, so an over-range input reads the "
                           "end code")


def quantise(values: torch.Tensor, span_v: float, bits: int | None, clip: bool = True) -> torch.Tensor:
    """A two's-complement converter over ±``span_v`` (V): codes −2^(b−1)..2^(b−1)−1 of 2·span/2^b volts each,
    so 0 V is a code and the top code is one step below +span. No rounding when ``bits`` is None. With ``clip``,
    values beyond the span saturate (at the end codes, or at ±span unrounded); without, they pass."""
    if bits is None:
        return values.clamp(-span_v, span_v) if clip else values
    lsb = 2 * span_v / 2**bits
    codes = torch.round(values / lsb)
    if clip:
        codes = codes.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes * lsb


class AnalogWorld(World):
    """A world read and driven through analog channels; subclasses give the channel counts and `respond`.

    Their ``Config`` must have a ``converters: ConverterConfig`` field.
    """

    reported_hooks = (*World.reported_hooks, "respond", "hold")

    @property
    @abstractmethod
    def n_outputs(self) -> int:
        """Channels of the analog output that drives the world."""

    @property
    @abstractmethod
    def n_inputs(self) -> int:
        """Channels of the analog input that reads the world."""

    @property
    def max_sample_rate_hz(self) -> float:
        """The fastest shared sample clock (Hz) of its analog output and input: the converters' own, by default."""
        return self.config.converters.max_sample_rate_hz

    @abstractmethod
    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        """Voltages at the inputs (n_inputs × samples) for the drive at the outputs (n_outputs × samples).

        Includes the world's own per-shot noise; not the ADC's.
        """

    @classmethod
    def resolve(cls, preset: str, overrides: Mapping[str, Any]) -> Any:
        config = super().resolve(preset, overrides)
        if not isinstance(getattr(config, "converters", None), ConverterConfig):
            raise ConfigError(f"{cls.__name__}.Config needs a converters: ConverterConfig field (the DAC and ADC of "
                              "its analog output and input)", field="kind")
        return config

    def _construct(self) -> None:
        super()._construct()
        self.output: SimulatedAnalogOutput | None = None
        self.record: torch.Tensor | None = None
        self.armed: tuple[int, float] | None = None

    def hold(self) -> None:
        """Bring a world with a state up to now under the levels its outputs have held; called before an output
        changes a level (and by `respond` where the world needs it). Stateless worlds have nothing to do."""

    def held_levels(self, n_samples: int) -> torch.Tensor:
        """The levels the outputs hold (channels × ``n_samples``, V): their DC levels, 0 V where off or where the world
        has no output."""
        if self.output is None:
            return torch.zeros(self.n_outputs, n_samples, dtype=torch.float32)
        return self.output.drive(n_samples)

    def acquire(self, drive_v: torch.Tensor, sample_rate_hz: float) -> None:
        """Compute the response to ``drive_v``; an armed input keeps its first samples as its record.

        A record longer than the drive sees the outputs' DC levels after the drive ends.
        """
        began = self.clock.wall()
        if self.armed is not None:
            n_samples, rate = self.armed
            if abs(rate - sample_rate_hz) > 1e-9 * rate:
                raise DeviceError(f"simulated {self.kind}: input armed at {rate:g} Hz but the output plays at "
                                  f"{sample_rate_hz:g} Hz; they share one sample clock: arm the input at "
                                  f"{sample_rate_hz:g} Hz, or load the waveform at {rate:g} Hz")
            extra = n_samples - drive_v.shape[1]
            if extra > 0:
                drive_v = torch.cat([drive_v, self.held_levels(extra)], dim=1)
        response = self.respond(drive_v, sample_rate_hz)
        self._check_response(response, drive_v)
        if response.requires_grad:  # computed with a parameter of the world's own (its physics as a torch module)
            response = response.detach()
        if self.armed is not None:
            self.record = response[:, : self.armed[0]]
            self.armed = None
        self.clock.sleep(drive_v.shape[1] / sample_rate_hz, since=began)

    def _check_response(self, response: Any, drive_v: torch.Tensor) -> None:
        """Refuse (`DeviceError`, naming the world's `respond`) a response that is not a tensor of n_inputs × the
        drive's samples, or not finite: the analog input would report its record, not where it came from."""
        expected = (self.n_inputs, drive_v.shape[1])
        shaped = isinstance(response, torch.Tensor) and tuple(response.shape) == expected
        if shaped and bool(torch.isfinite(response).all()):
            return
        respond = type(self).respond
        said = f"simulated {self.kind}: {respond.__module__}.{respond.__qualname__} returned"
        drive = f"for a drive of {drive_v.shape[0]} channels × {drive_v.shape[1]} samples"
        if shaped:
            raise DeviceError(f"{said} non-finite voltages (NaN or infinite) {drive}; fix its computation there")
        got = f"shape {tuple(response.shape)}" if isinstance(response, torch.Tensor) else type(response).__name__
        raise DeviceError(f"{said} {got} {drive}; return a tensor of the voltages at its {self.n_inputs} inputs, "
                          f"n_inputs × samples: {expected}")


class SimulatedAnalogOutput(SimulatedInstrument, AnalogOutput):
    """The analog output of an `AnalogWorld`: DC levels and waveforms, rounded by the world's DAC.

    Powers on at 0 V with every output off. A channel that is off drives 0 V. Waveforms played together must
    have the same length and sample rate; before and after a play a loaded waveform's channel holds its first
    sample (its DC level, as `AnalogOutput` has it).
    """

    def __init__(self, world: AnalogWorld, **common: Any):
        require_world(world, AnalogWorld, "analog output", "an analog world")
        self.n_channels = world.n_outputs
        self.converters: ConverterConfig = world.config.converters
        super().__init__(world, **common)
        if world.output is not None:  # the world would follow this one alone, the other's levels silently ignored
            raise DeviceError(f"simulated analog output: its {world.kind} world is driven by {world.output.name} "
                              "already, and an analog world has one output; give each output a world of its own")
        self._dc = torch.zeros(self.n_channels, dtype=torch.float32)
        self._on = torch.zeros(self.n_channels, dtype=torch.bool)
        self._waveforms: dict[int, tuple[torch.Tensor, float]] = {}
        world.output = self

    def hardware_limits(self) -> dict[str, Limit]:
        span = self.converters.output_range_v
        return {"voltage_v": Limit("V", -span, span),
                "sample_rate_hz": Limit("Hz", 1.0, self.world.max_sample_rate_hz)}  # type: ignore[attr-defined]

    def _read_level_hw(self, channel: int) -> float | None:
        return float(self._dc[channel - 1])

    def _read_output_hw(self, channel: int) -> bool:
        return bool(self._on[channel - 1])

    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        began = self.world.clock.wall()
        self.world.hold()  # type: ignore[attr-defined]
        self._waveforms.pop(channel - 1, None)
        self._dc[channel - 1] = quantise(torch.tensor(voltage_v, dtype=torch.float32), self.converters.output_range_v,
                                         self.converters.dac_bits)
        self.world.clock.sleep(self.converters.settle_s, since=began)

    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        self.world.hold()  # type: ignore[attr-defined]
        self._on[channel - 1] = enabled

    def _load_waveform_hw(self, channel: int, samples_v: np.ndarray, sample_rate_hz: float) -> None:
        samples = quantise(torch.as_tensor(samples_v, dtype=torch.float32), self.converters.output_range_v,
                           self.converters.dac_bits)
        self.world.hold()  # type: ignore[attr-defined]
        self._waveforms[channel - 1] = (samples, sample_rate_hz)
        self._dc[channel - 1] = samples[0]  # held between plays

    def drive(self, n_samples: int, played: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The voltages at every output (channels × ``n_samples``): played waveforms, else DC; 0 V when off."""
        drive = self._dc[:, None].expand(self.n_channels, n_samples).clone()
        for index, samples in (played or {}).items():
            drive[index, : len(samples)] = samples[:n_samples]
        return drive * self._on[:, None]

    def _play_hw(self, channels: list[int]) -> None:
        loaded = [self._waveforms[c - 1] for c in channels]
        lengths = {len(samples) for samples, _ in loaded}
        rates = {rate for _, rate in loaded}
        if len(lengths) != 1 or len(rates) != 1:
            raise DeviceError(f"{self.name}: waveforms played together must share length and sample rate (got "
                              f"lengths of {', '.join(map(str, sorted(lengths)))} samples, rates of "
                              f"{', '.join(f'{rate:g}' for rate in sorted(rates))} Hz); load them alike, or play "
                              "them one at a time")
        n_samples, rate = lengths.pop(), rates.pop()
        played = {c - 1: self._waveforms[c - 1][0] for c in channels}
        self.world.acquire(self.drive(n_samples, played), rate)  # type: ignore[attr-defined]


class SimulatedAnalogInput(SimulatedInstrument, AnalogInput):
    """The analog input of an `AnalogWorld`: records its response, with the ADC's noise, rounding and clipping."""

    def __init__(self, world: AnalogWorld, **common: Any):
        require_world(world, AnalogWorld, "analog input", "an analog world")
        self.n_channels = world.n_inputs
        self.converters: ConverterConfig = world.config.converters
        super().__init__(world, **common)

    def hardware_limits(self) -> dict[str, Limit]:
        span = self.converters.input_range_v
        return {"voltage_v": Limit("V", -span, span),
                "sample_rate_hz": Limit("Hz", 1.0, self.world.max_sample_rate_hz)}  # type: ignore[attr-defined]

    def _arm_hw(self, n_samples: int, sample_rate_hz: float) -> None:
        self.world.armed = (n_samples, sample_rate_hz)  # type: ignore[attr-defined]
        self.world.record = None  # type: ignore[attr-defined]

    def _trigger_hw(self) -> None:
        world: AnalogWorld = self.world  # type: ignore[assignment]
        assert world.armed is not None
        n_samples, rate = world.armed
        world.acquire(world.held_levels(n_samples), rate)

    def _fetch_hw(self) -> np.ndarray:
        world: AnalogWorld = self.world  # type: ignore[assignment]
        if world.record is None:
            # fetch() has disarmed the input: the world too, or a later play would record for it (refused at another
            # sample rate than the one armed)
            world.armed = None
            raise DeviceError(f"{self.name}: the armed record was never triggered; arm() again and play the output "
                              "before fetch()")
        record, world.record = world.record, None
        converters = self.converters
        if converters.adc_noise_v > 0:
            record = record + converters.adc_noise_v * world.normal(record.shape)
        return quantise(record, converters.input_range_v, converters.adc_bits, converters.adc_clip).numpy()

    def _safe_state_hw(self) -> None:
        super()._safe_state_hw()
        self.world.armed = None  # type: ignore[attr-defined]
