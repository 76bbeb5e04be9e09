"""An emulated Keysight 33500B/33600A waveform generator, speaking its SCPI dialect.

It keeps per-channel state (function, amplitude, offset, output load, output relay and polarity, amplitude unit,
burst and trigger settings, selected arbitrary waveform, its sample rate and filter), a per-channel volatile
waveform memory (waveforms of 8 points on a 33500B, 32 on a 33600A, up to 65 536), and the binary byte order.
Settings are held as the open-circuit voltage, so that changing ``OUTP:LOAD`` rescales the displayed (and queried)
amplitude and offset without error, as on the instrument. Out-of-range levels are clipped with ``-222 Data out of
range``, as the instrument does; other errors leave the setting unchanged. Every triggered burst of an arbitrary
waveform is appended to `played` as the volts across the configured load, so tests and simulators can read what the
output produced (the last bursts only, `played_samples_kept` samples of them, so that an emulator serving a long run
or ``hil emulate`` for days does not grow with every burst): a burst phase (``BURS:PHAS``, degrees) starts it, and
moves its idle point, that far into the arb (0° is the first point), and an inverted polarity (``OUTP:POL INV``)
mirrors it about the offset. An arb that advances on triggers (``FUNC:ARB:ADV TRIG``) plays one point per trigger,
the next each time. A trigger delay (``TRIG:DEL``) is stored only. On a two-channel model, amplitude coupling
(``VOLT:COUP:STAT ON``, either channel's amplitude and offset set the other's to the same) and tracking (``SOURn:TRAC
ON|INV``, the same both ways, channel n's copied when it starts; INV inverts the other's waveform about its offset,
not the DC offset) copy settings between the channels, sample-rate coupling
(``RATE:COUP ON``, at ratio 1) gives both channels the arb sample rate either sets, and combining
(``SOURn:COMB:FEED CHm``) adds channel m's signal to channel n's output; frequency coupling is stored only. A burst
lasts its samples / sample rate of wall time: ``*OPC?`` (and ``*WAI``, ``*OPC``) waits until every running burst has
ended, a trigger during a burst is ignored with -211, and a command that changes the channel's output (FUNC,
FUNC:ARB..., VOLT..., OUTP..., BURS:STAT, MODE, NCYC, PHAS, DATA:ARB, DATA:VOL:CLE, *RST) while its burst runs cuts
the Playback to the samples played so far, marked ``cut``.

Voltage limits (``VOLT:LIM:STAT``, ``:HIGH``, ``:LOW``) are stored, and while on they refuse a change of the output
load with -221, as the instrument does ("You cannot change output termination with voltage limits enabled"); they do
not clip levels here.

Not emulated: coupling by offset or ratio, modulation, sweeps, sequences, non-volatile memory and the built-in arbs
(after ``*RST`` no arb is selected, so ``FUNC ARB`` before ``FUNC:ARB <name>`` is a settings conflict), levels held
inside the voltage limits, ``VRMS`` and ``DBM`` units (amplitudes are always Vpp), and the DAC's 16-bit resolution.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from hil.errors import ConfigError, counted
from simulators.emulators.scpi import (
    ILLEGAL_VALUE,
    INVALID_BLOCK,
    MISSING_PARAMETER,
    OUT_OF_RANGE,
    SETTINGS_CONFLICT,
    UNDEFINED_HEADER,
    Param,
    ScpiEmulator,
    ScpiError,
    boolean,
    choice,
    number,
    scpi,
)

#: Channels per model.
MODELS: dict[str, int] = {
    "33509B": 1, "33510B": 2, "33511B": 1, "33512B": 2, "33519B": 1, "33520B": 2, "33521B": 1, "33522B": 2,
    "33611A": 1, "33612A": 2, "33621A": 1, "33622A": 2,
}
TRIGGER_IGNORED = (-211, "Trigger ignored")
#: The couplings between two channels kept as on/off states: frequency (stored only), arb sample rate (at ratio 1)
#: and amplitude with offset.
COUPLINGS = ("FREQ", "RATE", "VOLT")
OUT_OF_MEMORY = (-225, "Out of memory")
SOURCE_OHM = 50.0
OPEN_PEAK_V = 10.0  # |offset| + amplitude/2, open circuit
OPEN_MIN_VPP, OPEN_MAX_VPP = 2e-3, 20.0
MIN_POINTS, MAX_POINTS = 8, 65_536
MIN_POINTS_33600 = 32  # the 33600 Series' shortest arbitrary waveform
INFINITY_REPLY = "+9.900000000000000E+37"
KEYWORDS = ("MIN", "MINIMUM", "MAX", "MAXIMUM", "DEF", "DEFAULT")
#: Relative slack for the rounding of decimal values near a limit.
SLACK = 1e-9
FUNCTIONS = ("SINusoid", "SQUare", "TRIangle", "RAMP", "PULSe", "PRBS", "NOISe", "ARBitrary", "DC")
_ARB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,11}")


def _short(option: str) -> str:
    """The short form of a SCPI keyword, ``ARBitrary`` -> ``ARB``."""
    return "".join(c for c in option if c.isupper() or c.isdigit())


def _pick(text: Param, *options: str) -> str:
    """The short form of the option that ``text`` names (either form, any case); -224 otherwise."""
    chosen = choice(text, *options)
    return next(_short(option) for option in options if option.upper() == chosen)


def _nr3(value: float) -> str:
    """A number as the instrument prints it, ``+5.000000000000000E-01``."""
    return INFINITY_REPLY if math.isinf(value) else f"{value + 0.0:+.15E}"


class Playback(NamedTuple):
    """One triggered burst: the channel, its volts across the load, the sample rate, the output relay, and whether
    a command cut it short (``volts_v`` then holds the samples played until then). A burst longer than
    `Keysight33500BEmulator.played_samples_kept` samples keeps its first that many."""

    channel: int
    volts_v: np.ndarray
    sample_rate_hz: float
    output_on: bool
    cut: bool = False


@dataclass
class Channel:
    """The state of one channel, at power-on values; voltages are open-circuit (EMF) values."""

    function: str = "SIN"
    amplitude_emf_vpp: float = 0.2
    offset_emf_v: float = 0.0
    load_ohm: float | None = 50.0  # None: INFinity
    output_on: bool = False
    volt_unit: str = "VPP"
    burst_state: bool = False
    burst_mode: str = "TRIG"
    burst_ncycles: float = 1.0
    burst_phase_deg: float = 0.0  # for an arb, 0° starts (and idles) at its first point
    polarity: str = "NORM"  # INV mirrors the waveform about the offset
    trigger_source: str = "IMM"
    trigger_delay_s: float = 0.0  # stored only: bursts start at their trigger
    arb_name: str | None = None
    arb_points: np.ndarray | None = None  # the selected waveform, normalised to ±1
    sample_rate_hz: float = 40e3
    arb_filter: str = "NORM"
    arb_advance: str = "SRAT"  # TRIG: one point per trigger
    advance_index: int = 0  # the point the next trigger plays when the arb advances on triggers
    combine_feed: str = "NONE"  # CH1 or CH2: that channel's signal is added to this output
    voltage_limits: bool = False  # VOLT:LIM:STAT: while on, the output load cannot change
    limit_high_v: float = 5.0  # VOLT:LIM:HIGH and :LOW, stored only
    limit_low_v: float = -5.0
    memory: dict[str, np.ndarray] = field(default_factory=dict)

    def shaped(self) -> np.ndarray:
        """The selected arb (normalised to ±1) as a burst plays it: started at the burst phase, mirrored if the
        polarity is inverted."""
        points = self.arb_points if self.arb_points is not None else np.zeros(1)
        start = round(self.burst_phase_deg / 360 * len(points)) % len(points)
        return (-1.0 if self.polarity == "INV" else 1.0) * np.roll(points, -start)

    @property
    def factor(self) -> float:
        """Load voltage / open-circuit voltage."""
        return 1.0 if self.load_ohm is None else self.load_ohm / (self.load_ohm + SOURCE_OHM)

    @property
    def amplitude_vpp(self) -> float:
        return self.amplitude_emf_vpp * self.factor

    @property
    def offset_v(self) -> float:
        return self.offset_emf_v * self.factor


class Keysight33500BEmulator(ScpiEmulator):
    """A 33500B/33600A: ``model`` (33522B by default, 33521B when ``channels`` is 1) sets the channel count.

    ``memory_points`` is each channel's volatile memory. `played` lists the last triggered arb bursts.
    """

    #: How many samples of the last bursts `played` keeps for a test or simulator to look at (of a longer burst, its
    #: first this many): 4 M samples, 32 MB, 64 bursts of a full 65 536-point arb.
    played_samples_kept = 2**22

    def __init__(self, channels: int | None = None, model: str | None = None,
                 memory_points: int = 1_048_576):
        model = (model or ("33521B" if channels == 1 else "33522B")).upper()
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}; known: {', '.join(MODELS)}", field="model")
        if channels is not None and channels != MODELS[model]:
            one = [name for name, count in MODELS.items() if count == channels]
            other = f", or a model with {counted(channels, 'channel')} ({', '.join(one)})" if one else ""
            raise ConfigError(f"a {model} has {counted(MODELS[model], 'channel')}, not {channels}; give channels: "
                              f"{MODELS[model]}{other}", field="channels")
        #: The shortest arbitrary waveform: 8 points on a 33500B, 32 on a 33600A.
        self.min_points = MIN_POINTS_33600 if model.startswith("336") else MIN_POINTS
        if memory_points < self.min_points:
            raise ConfigError(f"memory_points must be at least {self.min_points}, got {memory_points}",
                              field="memory_points")
        self.model = model
        self.n_channels = MODELS[model]
        self.max_sample_rate_hz = 1e9 if model.startswith("336") else 160e6
        self.memory_points = memory_points
        self.identity = f"Keysight Technologies,{model},MY00000000,4.00-3.15-2.00-58-00"
        self.played: list[Playback] = []
        self._fired = 0  # bursts appended to `played` ever, those it no longer keeps among them
        self._played_samples = 0  # the samples `played` holds
        #: Bursts that may still run: channel -> (number of the burst, counting from 0, its start and end on
        #: `time.monotonic`, s).
        self.bursts: dict[int, tuple[int, float, float]] = {}
        self.channels: dict[int, Channel] = {}
        self.byte_order = "NORM"
        self.coupled = dict.fromkeys(COUPLINGS, False)
        self.tracking = "OFF"
        super().__init__()

    def reset(self) -> None:
        """Power-on state: running bursts cut, every channel at its defaults, volatile memory empty, byte order
        NORMal."""
        for channel in list(self.bursts):
            self._interrupt(channel)
        self.channels = {n: Channel() for n in range(1, self.n_channels + 1)}
        self.byte_order = "NORM"
        self.coupled = dict.fromkeys(COUPLINGS, False)
        self.tracking = "OFF"

    def burst_running(self, channel: int) -> bool:
        """Whether a triggered burst is still playing on ``channel`` (it lasts samples / sample rate, wall time).
        Safe to call from any thread (a simulator reads it while clients are served)."""
        with self.lock:
            burst = self.bursts.get(channel)
            if burst is not None and time.monotonic() >= burst[2]:
                self.bursts.pop(channel, None)
                burst = None
            return burst is not None

    def _interrupt(self, channel: int) -> None:
        """A command changing ``channel``'s output ends its running burst: the Playback keeps the samples played
        so far and is marked cut."""
        with self.lock:
            if not self.burst_running(channel):
                return
            number, start, _ = self.bursts.pop(channel)
            index = number - (self._fired - len(self.played))
            if index < 0:  # no longer kept
                return
            playback = self.played[index]
            played = min(len(playback.volts_v), int((time.monotonic() - start) * playback.sample_rate_hz))
            self.played[index] = playback._replace(volts_v=playback.volts_v[:played], cut=True)
            self._played_samples -= len(playback.volts_v) - played

    def _changing(self, channel: int) -> Channel:
        """The state of ``channel``, about to be changed by a command that changes what it outputs."""
        state = self._channel(channel)
        self._interrupt(channel)
        return state

    # -- what a simulator reads ------------------------------------------------------------------------------
    def output_v(self, channel: int) -> float | None:
        """The voltage now across the load: 0 with the output off, the DC level, the idle level between arb
        bursts (the first point), or None while the output varies in time (during a burst, too). Safe to call
        from any thread."""
        with self.lock:
            state = self.channels[channel]
            if not state.output_on:
                return 0.0
            own = self._signal_v(channel)
            if state.combine_feed == "NONE" or own is None:
                return own
            fed = self._signal_v(int(state.combine_feed[2]))
            return None if fed is None else own + fed

    def _signal_v(self, channel: int) -> float | None:
        """The voltage ``channel`` generates across its load, whatever its output relay: the DC level, the idle level
        between arb bursts, or None while it varies in time."""
        state = self.channels[channel]
        if self.burst_running(channel):
            return None
        if state.function == "DC":
            return state.offset_v
        if state.function == "ARB" and state.burst_state and state.arb_points is not None:
            return state.offset_v + state.amplitude_vpp / 2 * float(state.shaped()[0])
        return None

    # -- helpers ---------------------------------------------------------------------------------------------
    def _channel(self, channel: int) -> Channel:
        if channel not in self.channels:
            raise ScpiError(UNDEFINED_HEADER, f"channel {channel} does not exist on a {self.model}")
        return self.channels[channel]

    def _level(self, text: Param, low: float, high: float, default: float) -> float:
        """MIN/MAX/DEF or a finite number, clipped to low..high with -222, as on the instrument."""
        if isinstance(text, str) and text.strip().upper() in KEYWORDS:
            return number(text, low, high, default)
        value = number(text)
        if not math.isfinite(value):
            raise ScpiError(ILLEGAL_VALUE, f"{text!r}")
        if value > high + SLACK * abs(high):  # the slack of each bound is its own: 160 MSa/s allows no 0 Sa/s
            self.push_error((OUT_OF_RANGE[0], f"{OUT_OF_RANGE[1]};value clipped to upper limit"))
            return high
        if value < low - SLACK * abs(low):
            self.push_error((OUT_OF_RANGE[0], f"{OUT_OF_RANGE[1]};value clipped to lower limit"))
            return low
        return value

    def _store(self, channel: int, name: Param, points: np.ndarray) -> None:
        state = self._changing(channel)
        if not isinstance(name, str) or not _ARB_NAME.fullmatch(name.strip()):
            raise ScpiError(ILLEGAL_VALUE, f"arb name {name!r}: a letter, then up to 11 letters, digits or _")
        name = name.strip().upper()
        if not self.min_points <= len(points) <= MAX_POINTS:
            raise ScpiError(OUT_OF_RANGE, f"{len(points)} points, not {self.min_points}..{MAX_POINTS}")
        if not (np.isfinite(points).all() and np.abs(points).max() <= 1.0):
            raise ScpiError(OUT_OF_RANGE, "points must lie within -1..+1")
        if name in state.memory:
            raise ScpiError(SETTINGS_CONFLICT, f"arb {name} already exists; clear volatile memory first")
        if sum(map(len, state.memory.values())) + len(points) > self.memory_points:
            raise ScpiError(OUT_OF_MEMORY, f"volatile memory holds {self.memory_points} points")
        state.memory[name] = points.astype(np.float64)

    def _block(self, raw: bytes, kind: str) -> np.ndarray:
        size = np.dtype(kind).itemsize
        if len(raw) % size:
            raise ScpiError(INVALID_BLOCK, f"{len(raw)} bytes is not a whole number of {size}-byte values")
        return np.frombuffer(raw, dtype=("<" if self.byte_order == "SWAP" else ">") + kind)

    def _fire(self, channel: int) -> None:
        """A trigger on ``channel``: a burst of the selected arb is recorded and runs for its duration; a trigger
        during it is ignored (-211); other modes ignore it here."""
        state = self.channels[channel]
        if not (state.burst_state and state.burst_mode == "TRIG" and state.function == "ARB"):
            return
        if state.arb_points is None or math.isinf(state.burst_ncycles):
            return
        if self.burst_running(channel):
            self.push_error((TRIGGER_IGNORED[0], f"{TRIGGER_IGNORED[1]};burst in progress on channel {channel}"))
            return
        shaped = state.shaped()
        if state.arb_advance == "TRIG":
            points, samples = shaped[state.advance_index % len(shaped)][None], 1
            state.advance_index += 1
        else:  # recorded up to what `played` keeps: 10^8 cycles of a long arb play for hours, but fill no memory
            samples = len(shaped) * int(state.burst_ncycles)
            points = np.resize(shaped, min(samples, self.played_samples_kept))
        volts = state.offset_v + state.amplitude_vpp / 2 * points
        self._keep(Playback(channel, volts, state.sample_rate_hz, state.output_on))
        now = time.monotonic()
        self.bursts[channel] = (self._fired - 1, now, now + samples / state.sample_rate_hz)

    def _keep(self, playback: Playback) -> None:
        """Append ``playback`` to `played`, dropping the oldest bursts beyond `played_samples_kept` samples."""
        self.played.append(playback)
        self._fired += 1
        self._played_samples += len(playback.volts_v)
        dropped = 0
        while self._played_samples > self.played_samples_kept and dropped < len(self.played) - 1:
            self._played_samples -= len(self.played[dropped].volts_v)
            dropped += 1
        del self.played[:dropped]

    # -- waiting -----------------------------------------------------------------------------------------------
    @scpi("*OPC?")
    def _opc_query(self) -> str:
        """Answer once every running burst has ended, as the instrument does ("Use *OPC? ... to determine when
        the sweep or burst is complete")."""
        self._opc()
        return "1"

    @scpi("*OPC", "*WAI")
    def _opc(self) -> None:
        """Wait until every running burst has ended (no status byte is kept, so *OPC waits too)."""
        ends = [end for _, _, end in self.bursts.values()]
        if ends:
            time.sleep(max(0.0, max(ends) - time.monotonic()))
        self.bursts.clear()

    # -- FUNCtion --------------------------------------------------------------------------------------------
    @scpi("[SOURce#:]FUNCtion[:SHAPe]")
    def _function(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        function = _pick(text, *FUNCTIONS)
        if function == "ARB" and state.arb_points is None:
            raise ScpiError(SETTINGS_CONFLICT, "no arbitrary waveform selected; send FUNC:ARB <name> first")
        if function == "DC":
            state.burst_state = False  # DC cannot burst: the instrument turns burst off
        elif abs(state.offset_emf_v) + state.amplitude_emf_vpp / 2 > OPEN_PEAK_V * (1 + SLACK):
            state.amplitude_emf_vpp = 2 * (OPEN_PEAK_V - abs(state.offset_emf_v))
            self.push_error((SETTINGS_CONFLICT[0], f"{SETTINGS_CONFLICT[1]};amplitude changed by function"))
        state.function = function

    @scpi("[SOURce#:]FUNCtion[:SHAPe]?")
    def _function_query(self, channel: int) -> str:
        return self._channel(channel).function

    @scpi("[SOURce#:]FUNCtion:ARBitrary")
    def _arb_select(self, channel: int, name: Param) -> None:
        state = self._changing(channel)
        key = name.strip().upper() if isinstance(name, str) else ""
        if key not in state.memory:
            raise ScpiError(ILLEGAL_VALUE, f"no arb named {name!r} in channel {channel} volatile memory")
        state.arb_name, state.arb_points, state.advance_index = key, state.memory[key].copy(), 0

    @scpi("[SOURce#:]FUNCtion:ARBitrary?")
    def _arb_query(self, channel: int) -> str:
        return f'"{self._channel(channel).arb_name or ""}"'

    @scpi("[SOURce#:]FUNCtion:ARBitrary:SRATe")
    def _sample_rate(self, channel: int, text: Param) -> None:
        self._changing(channel).sample_rate_hz = self._level(text, 1e-6, self.max_sample_rate_hz, 40e3)
        if self.n_channels == 2 and self.coupled["RATE"]:  # coupled at the default ratio 1: the other channel follows
            self._changing(3 - channel).sample_rate_hz = self.channels[channel].sample_rate_hz

    @scpi("[SOURce#:]FUNCtion:ARBitrary:SRATe?")
    def _sample_rate_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).sample_rate_hz)

    @scpi("[SOURce#:]FUNCtion:ARBitrary:FILTer")
    def _filter(self, channel: int, text: Param) -> None:
        self._changing(channel).arb_filter = _pick(text, "NORMal", "STEP", "OFF")

    @scpi("[SOURce#:]FUNCtion:ARBitrary:ADVance")
    def _advance(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        state.arb_advance, state.advance_index = _pick(text, "TRIGger", "SRATe"), 0

    @scpi("[SOURce#:]FUNCtion:ARBitrary:ADVance?")
    def _advance_query(self, channel: int) -> str:
        return self._channel(channel).arb_advance

    @scpi("[SOURce#:]FUNCtion:ARBitrary:FILTer?")
    def _filter_query(self, channel: int) -> str:
        return self._channel(channel).arb_filter

    # -- VOLTage ---------------------------------------------------------------------------------------------
    @scpi("[SOURce#:]VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def _amplitude(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        high = OPEN_MAX_VPP
        if state.function != "DC":
            high = min(high, 2 * (OPEN_PEAK_V - abs(state.offset_emf_v)))
        k = state.factor
        state.amplitude_emf_vpp = self._level(text, OPEN_MIN_VPP * k, high * k, 0.2 * k) / k
        self._copy_to_coupled(channel)

    @scpi("[SOURce#:]VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def _amplitude_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).amplitude_vpp)

    @scpi("[SOURce#:]VOLTage[:LEVel][:IMMediate]:OFFSet")
    def _offset(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        peak = OPEN_PEAK_V if state.function == "DC" else OPEN_PEAK_V - state.amplitude_emf_vpp / 2
        k = state.factor
        state.offset_emf_v = self._level(text, -peak * k, peak * k, 0.0) / k
        self._copy_to_coupled(channel)

    def _copy_to_coupled(self, channel: int) -> None:
        """Amplitude coupling and tracking (either channel) give the other channel this one's amplitude and offset;
        inverted tracking inverts the other's waveform about its offset (its polarity), not the DC offset, as the
        33500 manual states for TRACk INVerted."""
        if self.n_channels != 2 or not (self.coupled["VOLT"] or self.tracking != "OFF"):
            return
        source, target = self.channels[channel], self._changing(3 - channel)
        target.amplitude_emf_vpp, target.offset_emf_v = source.amplitude_emf_vpp, source.offset_emf_v
        if self.tracking != "OFF":
            inverted = {"NORM": "INV", "INV": "NORM"}[source.polarity]
            target.polarity = inverted if self.tracking == "INV" else source.polarity

    # -- channel coupling (two-channel models) ---------------------------------------------------------------
    def _two_channels(self, channel: int) -> Channel:
        state = self._channel(channel)
        if self.n_channels != 2:
            raise ScpiError(UNDEFINED_HEADER, f"a {self.model} has one channel: nothing to couple")
        return state

    def _couple(self, kind: str, channel: int, text: Param) -> None:
        """Switch a coupling (`COUPLINGS`) on or off; switched on, the other channel takes this one's values."""
        self._two_channels(channel)
        self.coupled[kind] = boolean(text)
        if self.coupled[kind] and kind == "RATE":
            self._changing(3 - channel).sample_rate_hz = self.channels[channel].sample_rate_hz
        elif self.coupled[kind] and kind == "VOLT":
            self._copy_to_coupled(channel)

    def _coupling_query(self, kind: str, channel: int) -> str:
        self._two_channels(channel)
        return "1" if self.coupled[kind] else "0"

    @scpi("[SOURce#:]FREQuency:COUPle[:STATe]")
    def _freq_coupling(self, channel: int, text: Param) -> None:
        self._couple("FREQ", channel, text)

    @scpi("[SOURce#:]FREQuency:COUPle[:STATe]?")
    def _freq_coupling_query(self, channel: int) -> str:
        return self._coupling_query("FREQ", channel)

    @scpi("[SOURce#:]RATE:COUPle[:STATe]")
    def _rate_coupling(self, channel: int, text: Param) -> None:
        self._couple("RATE", channel, text)

    @scpi("[SOURce#:]RATE:COUPle[:STATe]?")
    def _rate_coupling_query(self, channel: int) -> str:
        return self._coupling_query("RATE", channel)

    @scpi("[SOURce#:]VOLTage:COUPle[:STATe]")
    def _volt_coupling(self, channel: int, text: Param) -> None:
        self._couple("VOLT", channel, text)

    @scpi("[SOURce#:]VOLTage:COUPle[:STATe]?")
    def _volt_coupling_query(self, channel: int) -> str:
        return self._coupling_query("VOLT", channel)

    @scpi("[SOURce#:]TRACk")
    def _track(self, channel: int, text: Param) -> None:
        self._two_channels(channel)
        self.tracking = _pick(text, "ON", "OFF", "INVerted")
        self._copy_to_coupled(channel)  # the named channel's settings are copied to the other

    @scpi("[SOURce#:]TRACk?")
    def _track_query(self, channel: int) -> str:
        self._two_channels(channel)
        return self.tracking

    @scpi("[SOURce#:]COMBine:FEED")
    def _combine(self, channel: int, text: Param) -> None:
        state = self._two_channels(channel)
        feed = _pick(text, "CH1", "CH2", "NONE")
        if feed == f"CH{channel}":
            raise ScpiError(SETTINGS_CONFLICT, f"channel {channel} cannot be combined with itself")
        self._changing(channel)
        state.combine_feed = feed

    @scpi("[SOURce#:]COMBine:FEED?")
    def _combine_query(self, channel: int) -> str:
        return self._two_channels(channel).combine_feed

    @scpi("[SOURce#:]VOLTage[:LEVel][:IMMediate]:OFFSet?")
    def _offset_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).offset_v)

    @scpi("[SOURce#:]VOLTage:UNIT")
    def _unit(self, channel: int, text: Param) -> None:
        self._changing(channel).volt_unit = _pick(text, "VPP", "VRMS", "DBM")

    @scpi("[SOURce#:]VOLTage:UNIT?")
    def _unit_query(self, channel: int) -> str:
        return self._channel(channel).volt_unit

    # -- OUTPut ----------------------------------------------------------------------------------------------
    @scpi("OUTPut#[:STATe]")
    def _output(self, channel: int, text: Param) -> None:
        self._changing(channel).output_on = boolean(text)

    @scpi("OUTPut#[:STATe]?")
    def _output_query(self, channel: int) -> str:
        return "1" if self._channel(channel).output_on else "0"

    @scpi("OUTPut#:LOAD")
    def _load(self, channel: int, text: Param) -> None:
        """The output load; refused (-221) while the channel's voltage limits are on, as the instrument does."""
        if self._channel(channel).voltage_limits:
            raise ScpiError(SETTINGS_CONFLICT, "output termination cannot change with voltage limits enabled")
        state = self._changing(channel)
        if isinstance(text, str) and text.strip().upper() in ("INF", "INFINITY"):
            state.load_ohm = None
        else:
            state.load_ohm = self._level(text, 1.0, 10e3, 50.0)

    @scpi("OUTPut#:LOAD?")
    def _load_query(self, channel: int) -> str:
        load = self._channel(channel).load_ohm
        return INFINITY_REPLY if load is None else _nr3(load)

    @scpi("[SOURce#:]VOLTage:LIMit:STATe")
    def _limit_state(self, channel: int, text: Param) -> None:
        self._channel(channel).voltage_limits = boolean(text)

    @scpi("[SOURce#:]VOLTage:LIMit:STATe?")
    def _limit_state_query(self, channel: int) -> str:
        return "1" if self._channel(channel).voltage_limits else "0"

    @scpi("[SOURce#:]VOLTage:LIMit:HIGH")
    def _limit_high(self, channel: int, text: Param) -> None:
        self._channel(channel).limit_high_v = number(text)

    @scpi("[SOURce#:]VOLTage:LIMit:HIGH?")
    def _limit_high_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).limit_high_v)

    @scpi("[SOURce#:]VOLTage:LIMit:LOW")
    def _limit_low(self, channel: int, text: Param) -> None:
        self._channel(channel).limit_low_v = number(text)

    @scpi("[SOURce#:]VOLTage:LIMit:LOW?")
    def _limit_low_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).limit_low_v)

    # -- BURSt and TRIGger -----------------------------------------------------------------------------------
    @scpi("[SOURce#:]BURSt:STATe")
    def _burst_state(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        enabled = boolean(text)
        if enabled and state.function == "DC":
            raise ScpiError(SETTINGS_CONFLICT, "burst is not available with the DC function")
        state.burst_state = enabled

    @scpi("[SOURce#:]BURSt:STATe?")
    def _burst_state_query(self, channel: int) -> str:
        return "1" if self._channel(channel).burst_state else "0"

    @scpi("[SOURce#:]BURSt:MODE")
    def _burst_mode(self, channel: int, text: Param) -> None:
        self._changing(channel).burst_mode = _pick(text, "TRIGgered", "GATed")

    @scpi("[SOURce#:]BURSt:MODE?")
    def _burst_mode_query(self, channel: int) -> str:
        return self._channel(channel).burst_mode

    @scpi("[SOURce#:]BURSt:NCYCles")
    def _burst_cycles(self, channel: int, text: Param) -> None:
        state = self._changing(channel)
        if isinstance(text, str) and text.strip().upper() in ("INF", "INFINITY"):
            state.burst_ncycles = math.inf
        else:
            state.burst_ncycles = float(round(self._level(text, 1, 100_000_000, 1)))

    @scpi("[SOURce#:]BURSt:NCYCles?")
    def _burst_cycles_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).burst_ncycles)

    @scpi("[SOURce#:]BURSt:PHASe")
    def _burst_phase(self, channel: int, text: Param) -> None:
        self._changing(channel).burst_phase_deg = self._level(text, -360.0, 360.0, 0.0)

    @scpi("[SOURce#:]BURSt:PHASe?")
    def _burst_phase_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).burst_phase_deg)

    @scpi("OUTPut#:POLarity")
    def _polarity(self, channel: int, text: Param) -> None:
        self._changing(channel).polarity = _pick(text, "NORMal", "INVerted")

    @scpi("OUTPut#:POLarity?")
    def _polarity_query(self, channel: int) -> str:
        return self._channel(channel).polarity

    @scpi("TRIGger#:DELay")
    def _trigger_delay(self, channel: int, text: Param) -> None:
        self._channel(channel).trigger_delay_s = self._level(text, 0.0, 1000.0, 0.0)

    @scpi("TRIGger#:DELay?")
    def _trigger_delay_query(self, channel: int) -> str:
        return _nr3(self._channel(channel).trigger_delay_s)

    @scpi("TRIGger#:SOURce")
    def _trigger_source(self, channel: int, text: Param) -> None:
        self._channel(channel).trigger_source = _pick(text, "IMMediate", "EXTernal", "TIMer", "BUS")

    @scpi("TRIGger#:SOURce?")
    def _trigger_source_query(self, channel: int) -> str:
        return self._channel(channel).trigger_source

    @scpi("TRIGger#[:IMMediate]")
    def _trigger(self, channel: int) -> None:
        self._channel(channel)
        self._fire(channel)

    @scpi("*TRG")
    def _bus_trigger(self) -> None:
        on_bus = [n for n, state in self.channels.items() if state.trigger_source == "BUS"]
        if not on_bus:
            raise ScpiError(TRIGGER_IGNORED, "no channel has TRIG:SOUR BUS")
        for channel in on_bus:
            self._fire(channel)

    # -- DATA and FORMat -------------------------------------------------------------------------------------
    @scpi("[SOURce#:]DATA:ARBitrary")
    def _data_arb(self, channel: int, name: Param, *values: Param) -> None:
        if not values:
            raise ScpiError(MISSING_PARAMETER, "DATA:ARB needs a name and points")
        if len(values) == 1 and isinstance(values[0], bytes):
            points = self._block(values[0], "f4").astype(np.float64)
        else:
            points = np.array([number(value) for value in values])
        self._store(channel, name, points)

    @scpi("[SOURce#:]DATA:ARBitrary:DAC")
    def _data_dac(self, channel: int, name: Param, *values: Param) -> None:
        if not values:
            raise ScpiError(MISSING_PARAMETER, "DATA:ARB:DAC needs a name and points")
        if len(values) == 1 and isinstance(values[0], bytes):
            codes = self._block(values[0], "i2").astype(np.float64)
        else:
            codes = np.array([number(value) for value in values])
        if (np.abs(codes) > 32767).any() or (codes != np.round(codes)).any():
            raise ScpiError(OUT_OF_RANGE, "DAC codes are integers within -32767..+32767")
        self._store(channel, name, codes / 32767)

    @scpi("[SOURce#:]DATA:VOLatile:CLEar")
    def _clear(self, channel: int) -> None:
        """Empty the channel's volatile memory, cutting a running burst short; the selected waveform stays
        armed from its own copy."""
        self._changing(channel).memory.clear()

    @scpi("[SOURce#:]DATA:VOLatile:CATalog?")
    def _catalog(self, channel: int) -> str:
        names = self._channel(channel).memory
        return ",".join(f'"{name}"' for name in names) if names else '""'

    @scpi("[SOURce#:]DATA:VOLatile:FREE?")
    def _free(self, channel: int) -> str:
        used = sum(map(len, self._channel(channel).memory.values()))
        return f"{self.memory_points - used:+d}"

    @scpi("FORMat:BORDer")
    def _byte_order(self, text: Param) -> None:
        self.byte_order = _pick(text, "NORMal", "SWAPped")

    @scpi("FORMat:BORDer?")
    def _byte_order_query(self) -> str:
        return self.byte_order
