"""Keysight (Agilent) 33500B and 33600A Trueform waveform generators as an `AnalogOutput`.

Each channel is either a DC source (``FUNC DC``, level set by ``VOLT:OFFS``) or plays an uploaded arbitrary waveform
once per trigger (``FUNC ARB`` in triggered burst mode with ``TRIG:SOUR BUS``, started by ``*TRG``), holding its first
point between bursts; `play` returns once the burst has ended (``*OPC?``), so that no later command cuts it short, and
refuses it where a channel's output state, function or offset, or a played arb's amplitude or sample rate, read in the
same message, is not as the driver left it. Loading a waveform waits for the upload (``*OPC?``) and resets what a
previous user may have left that changes what the armed arb outputs: point advance, burst phase, output polarity,
trigger delay. On a two-channel model, `connect` switches off the channel coupling a previous user may have left
(frequency, amplitude, sample rate, tracking, combining), refusing to connect if an output is on; it refuses to connect,
too, where a channel's voltage limits are on (``VOLT:LIM:STAT``: the instrument then takes no ``OUTP:LOAD``, and would
hold levels inside them). A waveform is scaled about its first point whenever the instrument's range allows: an armed
arb then idles at its offset, so switching between DC and the arb moves nothing, and the arb is selected at the smallest
amplitude with burst armed in the same message, so it never runs free at its own. A waveform the range cannot hold about
its first point is scaled about its centre; it loads only with the output off, which stays off until the channel is set
to DC or given a waveform scaled about its first point (the way back to DC passes through the centre). So does a channel
found playing an arb at connect. The 33600A takes waveforms of 32 points or more (`waveform_points`, set at connect),
the 33500B of 8 or more. Voltages are those across the load named by ``load_ohm``: the instrument has a 50 Ω source
impedance and an open-circuit range of ±10 V, so into a load R it can reach ±10·R/(R + 50) V (±5 V into 50 Ω, ±10 V into
high impedance). ``OUTP:LOAD`` is sent at connect for every channel so that the instrument scales its settings with the
same load as the driver's limits. Every group of settings is followed by an error-queue check.

Commands follow the Keysight 33500B/33600A programming reference, sent in their short forms.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from drivers.scpi import ScpiDriver
from hil.config import shown
from hil.errors import ConfigError, DeviceError, LimitError, TransportTimeout, excerpt
from hil.instruments import SCPI_INFINITY, AnalogOutput
from hil.limits import Limit, real_number
from hil.transport import Transport

#: Channels of every model this driver knows.
MODELS: dict[str, int] = {
    "33509B": 1, "33510B": 2, "33511B": 1, "33512B": 2, "33519B": 1, "33520B": 2, "33521B": 1, "33522B": 2,
    "33611A": 1, "33612A": 2, "33621A": 1, "33622A": 2,
}
#: Makers as *IDN? names them (firmware before 2014 says Agilent).
MAKERS = ("KEYSIGHT TECHNOLOGIES", "AGILENT TECHNOLOGIES")
#: Replies of ``FUNC?``.
FUNCTIONS = frozenset({"SIN", "SQU", "TRI", "RAMP", "PULS", "PRBS", "NOIS", "ARB", "DC"})

SOURCE_OHM = 50.0  # series output impedance
OPEN_CIRCUIT_PEAK_V = 10.0  # 20 Vpp into an open circuit
OPEN_CIRCUIT_MIN_VPP = 2e-3  # the smallest amplitude: 1 mVpp into 50 Ω
MIN_POINTS, MAX_POINTS = 8, 65_536  # one waveform in standard volatile memory
MIN_POINTS_33600 = 32  # "a minimum of 8 points (33500 Series) or 32 points (33600 Series)"
#: A bound on the time (s) the instrument takes per point of a downloaded waveform (1.3 s for 65 536 points).
UPLOAD_S_PER_POINT = 20e-6
#: Beyond a burst's duration, the time (s) allowed for it to end (trigger latency, timebase): a bound for *OPC?.
PLAY_MARGIN_S = 0.1
MAX_SAMPLE_RATE_HZ = 160e6  # 33500B arb sample rate; the 33600A's 1 GSa/s is not offered (narrower is safe)


def load_factor(load_ohm: float | None) -> float:
    """Fraction of the open-circuit voltage that appears across ``load_ohm`` (None: high impedance, 1)."""
    return 1.0 if load_ohm is None else load_ohm / (load_ohm + SOURCE_OHM)


def peak_v(load_ohm: float | None) -> float:
    """The largest |voltage| across ``load_ohm``, 10·R/(R + 50) V, to 9 digits rounded down (`_bound`)."""
    return _bound(OPEN_CIRCUIT_PEAK_V * load_factor(load_ohm))


def smallest_vpp(load_ohm: float | None) -> float:
    """The smallest amplitude (Vpp) across ``load_ohm``, 2 mVpp·R/(R + 50), to 9 digits rounded up (`_bound`)."""
    return _bound(OPEN_CIRCUIT_MIN_VPP * load_factor(load_ohm), up=True)


def _bound(value: float, up: bool = False) -> float:
    """A bound of the instrument's (> 0) to the 9 digits sent (`_num`), rounded down (or up) rather than to the
    nearest, which may cross it (2 mVpp into 1 kΩ is 0.0019047619): a value sent within it is then within the
    instrument's, not clipped with -222 "Data out of range"."""
    sent = float(_num(value))
    if sent < value if up else sent > value:
        sent = float(_num(value * (1 + 1e-8 if up else 1 - 1e-8)))
    return sent


def _num(value: float) -> str:
    """A number as sent: 9 significant digits, deterministic, never ``-0``."""
    return f"{float(value) + 0.0:.9g}"


def _same_level(read: float, kept: float) -> bool:
    """Whether an offset read back is the level set: within 1 mV and 10⁻⁴ of it, beyond the generator's setting
    resolution (a 16-bit DAC on ±10 V, 0.3 mV)."""
    return math.isclose(read, kept, rel_tol=1e-4, abs_tol=1e-3)


def _within(amplitude: float, offset: float, peak: float) -> float:
    """``amplitude`` (Vpp) as sent, trimmed by a few parts in 10⁹ if rounding took its window past ±``peak``."""
    sent = float(_num(amplitude))
    return sent if abs(offset) + sent / 2 <= peak else _bound(2 * (peak - abs(offset)))


class Keysight33500B(ScpiDriver, AnalogOutput):
    """A Keysight 33500B/33600A waveform generator (1 or 2 channels, read from *IDN? at connect).

    ``load_ohm`` (1..10 000 Ω, None for high impedance) is the load on every output; it sets the ``voltage_v``
    limit to ±10·R/(R + 50) V (to the 9 digits sent, rounded down). ``sample_rate_hz`` is 1 µSa/s..160 MSa/s.
    Waveforms hold 8 (33500B) or 32 (33600A, set in `waveform_points` at connect)..65 536 points (the standard
    volatile memory holds one such waveform per channel here); each is uploaded as float32 normalised to ±1 and
    scaled back to volts by the amplitude (Vpp) and offset, played with the STEP filter (no overshoot beyond the
    samples). Between bursts a channel idles at its waveform's first sample.
    """

    emulator: ClassVar[str] = "simulators.emulators.keysight_33500b:Keysight33500BEmulator"
    n_channels = 2  # until connect reads the model
    waveform_points = (MIN_POINTS, MAX_POINTS)  # until connect reads the model: 32 points at least on a 33600A

    def __init__(self, transport: Transport, *, load_ohm: float | None = 50.0, **common: Any):
        if load_ohm is not None:
            try:
                load_ohm = real_number(load_ohm)  # not "50" nor True (1 Ω), which float() takes
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{shown(load_ohm)} is not a number of ohms; give one in 1..10000 Ω, or null for "
                                  "high impedance", field="load_ohm") from None
            if not (math.isfinite(load_ohm) and 1.0 <= load_ohm <= 10e3):
                raise ConfigError(f"{load_ohm:g} Ω is outside 1..10000 Ω; use null for high impedance",
                                  field="load_ohm")
        self.load_ohm: float | None = load_ohm  # before super(): hardware_limits() needs it
        self.model: str | None = None
        self.function: dict[int, str | None] = {}
        #: Channels whose arb may idle away from its offset: scaled about its centre here, or found at connect.
        self.centred: set[int] = set()
        self.sample_rate_hz: dict[int, float] = {}
        #: Each armed arb's amplitude (Vpp, as sent), which a burst's end reads back with its sample rate.
        self.amplitude_vpp: dict[int, float] = {}
        super().__init__(transport, **common)

    def hardware_limits(self) -> dict[str, Limit]:
        peak = peak_v(self.load_ohm)
        return {"voltage_v": Limit("V", -peak, peak), "sample_rate_hz": Limit("Hz", 1e-6, MAX_SAMPLE_RATE_HZ)}

    @property
    def channels(self) -> range:
        return range(1, self.n_channels + 1)

    # -- connection ------------------------------------------------------------------------------------------
    def _prepare_hw(self) -> None:
        """Read the model (and so the channel count and the fewest waveform points), refuse voltage limits left on,
        set byte order, output load and Vpp units."""
        self.model, self.n_channels = self._model_of(self.idn)
        self.waveform_points = (MIN_POINTS_33600 if self.model.startswith("336") else MIN_POINTS, MAX_POINTS)
        self.function.clear()
        self.centred.clear()
        self.sample_rate_hz.clear()
        self.amplitude_vpp.clear()
        self._refuse_voltage_limits()
        self.write("FORM:BORD SWAP")
        load = "INF" if self.load_ohm is None else _num(self.load_ohm)
        for channel in self.channels:
            self.write(f"OUTP{channel}:LOAD {load}")
            self.write(f"SOUR{channel}:VOLT:UNIT VPP")
        if self.n_channels == 2:
            self._uncouple_channels()
        self.check_errors("setting byte order, output load, amplitude unit and channel coupling")

    def _refuse_voltage_limits(self) -> None:
        """Refuse to connect, before anything is set, where a channel's voltage limits are on
        (``SOURn:VOLT:LIM:STAT``): the instrument takes no output load with them on (33500 Series Operating and
        Service Guide, Output Termination), and it would hold levels the lab allows inside them. They are a guard
        someone set at the instrument, so they are not switched off here; the lab's ``voltage_v`` limit guards the
        outputs instead. A firmware without them (the query unanswered, "Undefined header" queued) is passed over, at
        the cost of one timeout, as a coupling it does not know is."""
        limited = []
        for channel in self.channels:
            try:
                if self.query_bool(f"SOUR{channel}:VOLT:LIM:STAT?"):
                    limited.append(channel)
            except TransportTimeout:
                if self._unknown_command():
                    return  # no voltage limits in this firmware: none can be on
                raise
        if limited:
            names = ", ".join(map(str, limited))
            raise DeviceError(f"{self.name}: the voltage limits of channel(s) {names} are on (SOURn:VOLT:LIM:STAT), "
                              "with which the instrument takes no output load and holds levels inside them; switch "
                              "them off at the instrument (or send SOURn:VOLT:LIM:STAT OFF), let the lab's voltage_v "
                              "limit guard the outputs, then connect again")

    def _uncouple_channels(self) -> None:
        """Switch off what a previous user may have left coupling the two channels, with every output off: frequency,
        amplitude and arb sample-rate coupling and tracking (a setting of one channel would change the other) and
        combining (one channel's signal added to the other's output). With an output on, refuse to connect instead:
        uncoupling could change what it outputs. A coupling the firmware does not know (its query unanswered, with
        "Undefined header" queued) is passed over, at the cost of one timeout."""
        found = []
        for query, off, replies in self._couplings():
            try:
                reply = self.query(query).upper()
            except TransportTimeout:
                if self._unknown_command():
                    continue  # firmware without this coupling: it cannot have been left on
                raise
            if reply not in replies:
                raise self.unexpected_reply(f"reply {excerpt(reply)} to {query!r} is not one of {', '.join(replies)}")
            if reply != replies[0]:
                found.append(off)
        if not found:
            return
        live = [channel for channel in self.channels if self.query_bool(f"OUTP{channel}?")]
        if live:
            raise DeviceError(f"{self.name}: a previous user left the channels coupled (to undo: "
                              f"{'; '.join(found)}) with the output of channel(s) {', '.join(map(str, live))} on; "
                              "switch the outputs off at the instrument, then connect again")
        for command in found:
            self.write(command)

    def _unknown_command(self) -> bool:
        """After a query went unanswered: whether the instrument queued only "Undefined header" for it (its
        firmware lacks the command), read from the error queue once the link is back in step."""
        errors = self.read_errors()
        return bool(errors) and all(code == self.UNDEFINED_HEADER for code, _ in errors)

    def _couplings(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(query, the command that switches it off, its replies, uncoupled first) of every coupling between the
        channels."""
        state, track, feed = ("0", "1"), ("OFF", "ON", "INV"), ("NONE", "CH1", "CH2")
        return [("SOUR1:FREQ:COUP:STAT?", "SOUR1:FREQ:COUP:STAT OFF", state),
                ("SOUR1:VOLT:COUP:STAT?", "SOUR1:VOLT:COUP:STAT OFF", state),
                ("SOUR1:RATE:COUP:STAT?", "SOUR1:RATE:COUP:STAT OFF", state),
                *((f"SOUR{n}:TRAC?", f"SOUR{n}:TRAC OFF", track) for n in self.channels),
                *((f"SOUR{n}:COMB:FEED?", f"SOUR{n}:COMB:FEED NONE", feed) for n in self.channels)]

    def _model_of(self, idn: str) -> tuple[str, int]:
        parts = [part.strip() for part in idn.split(",")]
        model = parts[1].upper() if len(parts) >= 2 else ""
        if parts[0].upper() not in MAKERS or model not in MODELS:
            raise DeviceError(f"{self.name}: {self.resource} answers {excerpt(idn)}, not a Keysight 33500B or "
                              f"33600A generator ({', '.join(MODELS)}); check that the resource is the generator's")
        return model, MODELS[model]

    # -- AnalogOutput hooks ----------------------------------------------------------------------------------
    def _read_level_hw(self, channel: int) -> float | None:
        """The DC level (the offset) when the channel's function is DC; None for any other function."""
        function = self.query(f"SOUR{channel}:FUNC?").upper()
        if function not in FUNCTIONS:
            raise self.unexpected_reply(f"reply {excerpt(function)} to 'SOUR{channel}:FUNC?' is not a function "
                                        f"({', '.join(sorted(FUNCTIONS))})")
        self.function[channel] = function
        if function != "DC":
            self.centred.add(channel)  # an arb of unknown scaling may idle away from its offset
            return None
        return self.query_float(f"SOUR{channel}:VOLT:OFFS?")

    def _read_output_hw(self, channel: int) -> bool | None:
        return self.query_bool(f"OUTP{channel}?")

    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        """Set the offset, switching to the DC function in the same message if needed (which ends any armed
        waveform)."""
        offset = f"SOUR{channel}:VOLT:OFFS {_num(voltage_v)}"
        if self.function.get(channel) != "DC":
            self.function[channel] = None
            self.waveform_samples.pop(channel, None)
            self.amplitude_vpp.pop(channel, None)
            self.write(f"SOUR{channel}:FUNC DC;:{offset}")
        else:
            self.write(offset)
        self.check_errors(f"setting channel {channel} to {voltage_v:g} V")
        self.function[channel] = "DC"
        self.centred.discard(channel)

    def set_output(self, channel: int, enabled: bool) -> None:
        """Switch a channel's output on or off; a channel in `centred` stays off, as its way back to DC would pass
        through the arb's offset."""
        if enabled and channel in self.centred:
            raise LimitError(f"{self.name}: channel {channel} holds an arb that may idle away from its offset "
                             "(scaled about its centre, or found at connect), so its way back to DC could step; set "
                             "a DC level or load a waveform first, then switch the output on")
        super().set_output(channel, enabled)

    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        self.write(f"OUTP{channel} {'ON' if enabled else 'OFF'}")
        self.check_errors(f"switching channel {channel} output {'on' if enabled else 'off'}")

    def _load_waveform_hw(self, channel: int, samples_v: np.ndarray, sample_rate_hz: float) -> None:
        """Upload one waveform and arm it as a single triggered burst, holding the channel at its first sample.

        A live channel playing an arb first holds its level as DC, so that clearing the memory cannot change what
        it outputs. The upload is waited on (``*OPC?``, `UPLOAD_S_PER_POINT`) before anything else is sent. The
        arb is then selected at the smallest amplitude about its offset, burst armed in the same message, and only
        then given its amplitude: scaled about its first sample (`_scaling`), an armed arb idles at its offset
        whatever the amplitude, so no setting on the way moves the output. What a previous user may have left that
        would change what the armed arb outputs is reset: advance at the sample rate (not one point per trigger),
        burst phase 0 (the first point), normal polarity (not inverted about the offset), no trigger delay.
        """
        amplitude, offset, about_first = self._scaling(samples_v)
        if not about_first:
            self.centred.add(channel)  # from the first command on, until the channel is DC again
        data = np.clip((samples_v - offset) / (amplitude / 2), -1.0, 1.0).astype(np.float32)
        name = f"HIL_CH{channel}"
        level = self.level_v.get(channel)
        if self.output_on.get(channel) is not False and self.function.get(channel) != "DC" and level is not None:
            self._set_level_hw(channel, level)
        self.function[channel] = None  # from here until armed, the output is in transition
        self.write(f"SOUR{channel}:DATA:VOL:CLE")
        self.transport.write_binary(f"SOUR{channel}:DATA:ARB {name},", data, datatype="f", big_endian=False)
        self.wait_complete(len(data) * UPLOAD_S_PER_POINT, f"uploading channel {channel}'s waveform")
        smallest = smallest_vpp(self.load_ohm)
        for command in (f"SOUR{channel}:FUNC:ARB {name}", f"SOUR{channel}:FUNC:ARB:SRAT {_num(sample_rate_hz)}",
                        f"SOUR{channel}:FUNC:ARB:ADV SRAT",
                        f"SOUR{channel}:FUNC:ARB:FILT STEP", f"SOUR{channel}:BURS:MODE TRIG",
                        f"SOUR{channel}:BURS:NCYC 1", f"SOUR{channel}:BURS:PHAS 0", f"TRIG{channel}:SOUR BUS",
                        f"TRIG{channel}:DEL 0", f"OUTP{channel}:POL NORM",
                        f"SOUR{channel}:VOLT {_num(smallest)}", f"SOUR{channel}:VOLT:OFFS {_num(offset)}"):
            self.write(command)
        self.check_errors(f"uploading channel {channel}'s waveform")
        self.write(f"SOUR{channel}:FUNC ARB;:SOUR{channel}:BURS:STAT ON;:SOUR{channel}:VOLT {_num(amplitude)}")
        self.check_errors(f"arming channel {channel}'s waveform")
        self.function[channel] = "ARB"
        if about_first:
            self.centred.discard(channel)
        self.sample_rate_hz[channel] = sample_rate_hz
        self.amplitude_vpp[channel] = float(_num(amplitude))

    def _play_hw(self, channels: list[int]) -> None:
        """``*TRG`` when every channel not at DC plays (they start together), else ``TRIGn`` per channel: ``*TRG``
        fires every channel whose trigger source is BUS, so also one that is not this play's and may be armed (found
        at connect playing an arb, or left loaded). Then sleep the bursts' duration (samples / sample rate) with
        nothing pending on the link, and confirm their end with ``*OPC?`` (patient by `PLAY_MARGIN_S`), so that no
        later command cuts one short and a next play is not ignored as a trigger mid-burst. A Ctrl-C during the sleep
        leaves no reply outstanding: the safe state's commands then end the burst at once.
        """
        names = ", ".join(map(str, channels))
        duration_s = max(self.waveform_samples[channel] / self.sample_rate_hz[channel] for channel in channels)
        if all(channel in channels or self.function.get(channel) == "DC" for channel in self.channels):
            self.write("*TRG")
        else:
            for channel in channels:
                self.write(f"TRIG{channel}")
        self.clock.sleep(duration_s)
        what = f"the burst on channel(s) {names}"
        arbs = [n for n in channels if self.function.get(n) == "ARB" and n in self.amplitude_vpp]
        replies = self.wait_complete(PLAY_MARGIN_S, what, then=";".join([self._state_query(),
                                                                          *map(self._arb_query, arbs)]))
        state = 3 * self.n_channels
        changed = self._take_state(replies[:state], what) + self._arb_changes(arbs, replies[state:], what)
        if changed:  # the generator's output protection, its front panel, another program or a restart
            raise self.changed_unseen(changed, what)
        self.check_errors(f"triggering channel(s) {names}")

    def _state_query(self) -> str:
        """The queries of every channel's output state, function and offset, to send in one message."""
        return ";".join(f":OUTP{n}?;:SOUR{n}:FUNC?;:SOUR{n}:VOLT:OFFS?" for n in self.channels)

    @staticmethod
    def _arb_query(channel: int) -> str:
        """The queries of an arb channel's amplitude (Vpp) and sample rate, which scale and time what it plays."""
        return f":SOUR{channel}:VOLT?;:SOUR{channel}:FUNC:ARB:SRAT?"

    def _arb_changes(self, channels: list[int], replies: list[str], what: str) -> list[str]:
        """What differs between the amplitude and sample rate of each arb of ``channels`` (the replies to
        `_arb_query`, read after ``what``) and those it was armed with (the front panel or another program rescaled or
        retimed what the burst played), each as ``"channel <n> <setting> <held>, not <set>"``; a channel found changed
        has no waveform until one is loaded again, which sets both anew. One no longer playing an arb (`_take_state`
        found its function changed) is passed over."""
        changed = []
        for channel, (amplitude, rate) in zip(channels, zip(*[iter(replies)] * 2, strict=True), strict=True):
            if self.function.get(channel) != "ARB":
                continue
            try:
                amplitude_vpp, rate_hz = float(amplitude), float(rate)
            except ValueError:
                raise self.unexpected_reply(f"replies {excerpt(';'.join(replies))} after {what} are not each arb's "
                                            "amplitude and sample rate") from None
            found = []
            if not math.isclose(amplitude_vpp, self.amplitude_vpp[channel], rel_tol=1e-4):
                found.append(f"channel {channel} amplitude {amplitude_vpp:g} Vpp, not "
                             f"{self.amplitude_vpp[channel]:g} Vpp")
            if not math.isclose(rate_hz, self.sample_rate_hz[channel], rel_tol=1e-6):
                found.append(f"channel {channel} sample rate {rate_hz:g} Sa/s, not "
                             f"{self.sample_rate_hz[channel]:g} Sa/s")
            if found:
                self.waveform_samples.pop(channel, None)
                self.amplitude_vpp.pop(channel, None)
            changed += found
        return changed

    def _read_outputs_hw(self) -> None:
        """Before the safe state, the state `_state_query` reads, taken as the present one (`_take_state`), so that
        the way down starts from the level each channel is at."""
        command = self._state_query()
        self._take_state([part.strip() for part in self.query(command).split(";")], "the safe state's read")

    def _take_state(self, replies: list[str], what: str) -> list[str]:
        """What differs between each channel's output state, function and offset (the replies to `_state_query`,
        read after ``what``) and the state this driver left, each as ``"channel <n> <setting> <held>, not <set>"``.
        Where anything does, the state read becomes the driver's: the output state, the function, and the level, the
        offset read (DC) or unknown (another function: an arb of unknown scaling), so that the safe state ramps from
        the true level, not with a jump."""
        if len(replies) != 3 * self.n_channels:
            raise self.unexpected_reply(f"replies {excerpt(';'.join(replies))} after {what} are not each "
                                        "channel's output state, function and offset")
        changed = []
        for n, (output, function, offset) in zip(self.channels, zip(*[iter(replies)] * 3, strict=True), strict=True):
            try:
                offset_v = float(offset)
            except ValueError:
                offset_v = math.nan
            if output not in ("0", "1") or function.upper() not in FUNCTIONS or not math.isfinite(offset_v):
                raise self.unexpected_reply(f"replies {excerpt(';'.join(replies))} after {what} are not each "
                                            "channel's output state, function and offset")
            function, on, level = function.upper(), output == "1", self.level_v.get(n)
            if self.output_on.get(n) is not None and on != self.output_on[n]:
                state, was = ("on" if on else "off"), ("on" if self.output_on[n] else "off")
                changed.append(f"channel {n} output {state}, not {was}")
                self.output_on[n] = on
            if self.function.get(n) is not None and function != self.function[n]:
                changed.append(f"channel {n} function {function}, not {self.function[n]}")
            elif level is not None and n not in self.centred and not _same_level(offset_v, level):
                changed.append(f"channel {n} at {offset_v:g} V, not {level:g} V")
            else:
                continue
            self.output_on[n], self.function[n] = on, function
            self.waveform_samples.pop(n, None)
            self.level_v[n] = offset_v if function == "DC" and abs(offset_v) < SCPI_INFINITY else None
            if self.level_v[n] is None:
                self.centred.add(n)  # an arb of unknown scaling may idle away from its offset
        return changed

    def _snapshot_hw(self) -> dict[str, Any]:
        """The base's state plus model, load (ohms, None for high impedance), function and arb sample rate."""
        return {**super()._snapshot_hw(), "model": self.model,
                "load_ohm": {channel: self.load_ohm for channel in self.channels},
                "function": dict(self.function), "sample_rate_hz": dict(self.sample_rate_hz),
                "centred": sorted(self.centred)}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _check_waveform_hw(self, channel: int, samples_v: np.ndarray) -> None:
        """A live channel takes only a waveform scaled about its first sample (see `_scaling`)."""
        if not self._scaling(samples_v)[2] and self.output_on.get(channel) is not False:
            first = float(samples_v[0])
            reach = max(float(np.max(samples_v)) - first, first - float(np.min(samples_v)))
            peak = peak_v(self.load_ohm)
            raise LimitError(f"{self.name}: channel {channel}'s waveform reaches {reach:g} V from its first sample "
                             f"{first:g} V, more than the ±{peak - abs(first):g} V the instrument can scale about "
                             "it without a step; switch the output off before loading it")

    def _scaling(self, samples_v: np.ndarray) -> tuple[float, float, bool]:
        """Amplitude (Vpp) and offset (V) of a waveform's ±1 window, as sent (9 significant digits), and whether
        the window is about the first sample.

        About the first sample when the instrument reaches that window into its load: the channel then idles at
        its offset, so neither arming it nor switching back to DC moves the output. Otherwise about the samples'
        centre (kept inside the lab limits), which only a channel with its output off may take.
        """
        peak, smallest = peak_v(self.load_ohm), smallest_vpp(self.load_ohm)
        low, high = float(np.min(samples_v)), float(np.max(samples_v))
        offset = float(_num(samples_v[0]))
        reach = max(high - offset, offset - low, smallest / 2)
        if abs(offset) + reach <= peak:
            return _within(2 * reach, offset, peak), offset, True
        limit = self.limits["voltage_v"]
        amplitude = max(high - low, smallest)
        if amplitude > limit.max - limit.min:
            raise LimitError(f"{self.name}: the smallest amplitude, {amplitude:g} Vpp, does not fit the "
                             f"voltage limit {limit.describe()}")
        centre = min(max((high + low) / 2, limit.min + amplitude / 2), limit.max - amplitude / 2)
        offset = math.copysign(_bound(abs(centre)), centre)  # inwards: the window may touch a limit
        return _within(amplitude, offset, peak), offset, False
