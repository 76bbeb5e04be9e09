"""Keithley 2450 SourceMeter on its SCPI command set (not TSP, not "SCPI 2400" emulation), as a `SourceMeter`.

Command spellings follow the Keithley 2450 Reference Manual (2450-901-01), section 6 (SCPI command reference);
short forms throughout, numbers as ``f"{value:.9g}"``. After every group of settings the driver reads the
error queue (``SYST:ERR?``), so a refused setting raises `DeviceError` with the instrument's own message.

Covered: source function, level (ramped by the base class), compliance (``ILIM``/``VLIM``, read back after `configure`
and `set_source_range`), the power envelope (±21 V at up to ±1.05 A, ±210 V at up to ±105 mA: a level, sweep level,
source range or compliance that would put the source on the 200 V range with a current limit above 105 mA, or on the 1 A
range with a voltage limit above 21 V, is refused before sending, as the 2450 would lower the limit with only a
warning), source and measure range (fixed or auto), NPLC, remote sense, source readback, autozero on and relative
offset, math and averaging off (what a previous user left set would otherwise change or slow readings), ASCII data at
full precision (``:FORM:DATA ASC``, ``:FORM:ASC:PREC 0`` at connect and by `configure`), overvoltage protection
(``:SOUR:VOLT:PROT``, set by `configure` from the voltage limit), front or rear terminals (``:ROUT:TERM``, chosen at
connect), output, one reading with the limit state (read in one message with the output state, source function, level
and limit, the measure function, its relative offset and math, and the ASCII precision, which must be as the driver left
them), and list sweeps of up to 2500 points in one go (``:SOUR:LIST``/``:APP``, ``:SOUR:SWE:<f>:LIST``, ``:INIT``,
buffer read, with that state).
Not covered: linear/log sweeps, custom trigger models, digital I/O, limit tests (``:CALC``), statistics,
resistance/4-wire ohms, interlock, output-off modes, TSP.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from drivers.scpi import ScpiDriver
from hil.config import shown
from hil.errors import ConfigError, DeviceError, LimitError, excerpt
from hil.instruments import SCPI_INFINITY, Readings, SourceMeter, SourceMode
from hil.limits import Limit, real_number
from hil.transport import Transport

#: Source and measure ranges (nominal full scale); a range holds up to 105 % of its nominal value.
VOLTAGE_RANGES_V = (20e-3, 200e-3, 2.0, 20.0, 200.0)
CURRENT_RANGES_A = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
OVERRANGE = 1.05
#: The power envelope, per source mode: on this source range (V or A) the compliance is at most this (A or V);
#: ±21 V at up to ±1.05 A, ±210 V at up to ±105 mA. Beyond it the 2450 lowers the limit with a mere warning.
ENVELOPE = {"voltage": (200.0, 0.105), "current": (1.0, 21.0)}
#: The source's programming resolution relative to its range, at most (2450 specifications: 2.5·10⁻⁵ of a voltage
#: range, 500 µV on 20 V; 5·10⁻⁵ of a current range, 50 pA on 1 µA).
SOURCE_RESOLUTION = 5e-5
#: Smallest compliance the 2450 accepts: 1 nA when sourcing voltage, 20 mV when sourcing current.
MIN_COMPLIANCE = {"voltage": 1e-9, "current": 0.02}
#: A reading of this size or more is the 2450's overflow value (9.9E+37, SCPI's infinity): beyond the fixed measure
#: range.
OVERFLOW = SCPI_INFINITY
#: Values one ``:SOUR:LIST`` / ``:SOUR:LIST:...:APP`` command may carry (Reference Manual, :SOURce:LIST).
LIST_CHUNK = 100
#: SOURSTATus bit 5: "source function level was limited" (the compliance limit was hit).
STAT_LIMIT = 32
#: Sweep delays between 0 and this are refused by the instrument (0 = none, else 50 µs .. 10 ks).
MIN_SWEEP_DELAY_S = 50e-6
#: Mains frequency assumed for timing bounds (the slower of 50 and 60 Hz).
MAINS_HZ = 50.0
#: Reading buffer used by `measure` and `sweep`.
BUFFER = "defbuffer1"

#: Overvoltage protection levels (V, ``PROT<n>``; above the highest: ``NONE``), Reference Manual 2450-901-01,
#: ``smu.source.protect.level``; they clamp the output voltage in either source function.
PROTECTION_LEVELS_V = (2, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160, 180)
#: Tolerance of a protection level (relative): 5 % (2450 specifications, "Overvoltage protection: user-selectable
#: values, 5 % tolerance"), so a level may clamp as low as 95 % of its value. A level is chosen whose lowest clamp
#: still holds the voltage limit, so that it never clips a level within the limit.
PROTECTION_TOLERANCE = 0.05
PROTECTION_NAMES = ("NONE", *(f"PROT{level}" for level in PROTECTION_LEVELS_V))

#: The ``terminals`` option as :ROUTe:TERMinals names them.
TERMINALS = {"front": "FRON", "rear": "REAR"}

_SOURCE = {"voltage": "VOLT", "current": "CURR"}
_MEASURE = {"voltage": "CURR", "current": "VOLT"}
_LIMIT = {"voltage": "ILIM", "current": "VLIM"}
_RANGES = {"VOLT": VOLTAGE_RANGES_V, "CURR": CURRENT_RANGES_A}
_UNIT = {"VOLT": "V", "CURR": "A"}


def _fmt(value: float) -> str:
    """A number as sent to the instrument: up to 9 significant digits, no trailing zeros."""
    return f"{value:.9g}"


def protection_level(voltage_limit: Limit) -> str:
    """The overvoltage protection (``PROT<n>`` or ``NONE``) for a bench whose voltage limit is ``voltage_limit``:
    the lowest level that, at the low end of its `PROTECTION_TOLERANCE`, still holds the limit's largest magnitude
    (``NONE`` beyond 95 % of 180 V, 171 V)."""
    largest = max(abs(voltage_limit.min), abs(voltage_limit.max))
    return next((f"PROT{level}" for level in PROTECTION_LEVELS_V
                 if level * (1 - PROTECTION_TOLERANCE) >= largest * (1 - 1e-12)), "NONE")


def _same_setting(read: float, kept: float, function: str, fixed: float | None) -> bool:
    """Whether a level read back is the one set: equal to the 7 digits a reply may have, or within the programming
    resolution (`SOURCE_RESOLUTION`) of the source range it is on (``fixed``, or the one autorange picks, taken at
    its nominal value: the coarser), to which the 2450 may round what it holds."""
    ranges = _RANGES[function]
    on = fixed if fixed is not None else next((r for r in ranges if abs(kept) <= r * (1 + 1e-9)), ranges[-1])
    return math.isclose(read, kept, rel_tol=1e-5, abs_tol=SOURCE_RESOLUTION * on)


def _status(text: str) -> int:
    """A SOURSTATus value: decimal, float (``3.2E+01``) or ``0x`` hexadecimal."""
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else int(float(text))


class Keithley2450(ScpiDriver, SourceMeter):
    """Keithley 2450 SourceMeter over any transport (LAN socket 5025, USB-TMC, GPIB), SCPI command set.

    ``remote_sense`` selects 4-wire sensing (``:SENS:<f>:RSEN ON``) at `configure`, sent only where the
    instrument's differs (a change may switch the output off, so it is refused while the output is on). `connect`
    refuses an instrument that is not a 2450 and reads the output state, source function and level, so that a
    later ramp (or `safe_state`) starts from the true level. ``terminals`` ("front" or "rear") are those the device
    under test is wired to: `connect` selects them where a previous user left the others, with the output off,
    and refuses to connect with it on. Ranges are driver settings applied to the present source function:
    `set_source_range` / `set_measure_range` take a value (the smallest range that holds it is used) or None for
    auto; changing the source mode in `configure` returns both to auto. The instrument's own overvoltage protection
    backs the lab's voltage limit (`protection_level`): `configure` sets it, and refuses to change it under a live
    output, as the manual asks for it to be set before the output is switched on.
    """

    emulator: ClassVar[str] = "simulators.emulators.keithley2450:Keithley2450Emulator"

    def __init__(self, transport: Transport, *, remote_sense: bool = False, terminals: str = "front",
                 **common: Any):
        if not isinstance(terminals, str) or terminals not in TERMINALS:  # a list is unhashable: a TypeError
            raise ConfigError(f"{shown(terminals)} is neither 'front' nor 'rear' (the 2450 terminals the device under "
                              "test is wired to)", field="terminals")
        if not isinstance(remote_sense, bool | np.bool_):  # bool() takes "no" and "false" as true
            raise ConfigError(f"{shown(remote_sense)} is not true or false (whether the 2450 senses at 4 wires)",
                              field="remote_sense")
        super().__init__(transport, **common)
        self.remote_sense = bool(remote_sense)
        self.terminals = terminals
        #: Overvoltage protection (``PROT<n>`` or ``NONE``) that `configure` sets, from the voltage limit.
        self.protection = protection_level(self.limits["voltage_v"])
        #: Fixed source / measure range (V or A) of the present mode; None = auto.
        self.source_range: float | None = None
        self.measure_range: float | None = None

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage_v": Limit("V", -210.0, 210.0), "current_a": Limit("A", -1.05, 1.05),
                "nplc": Limit("PLC", 0.01, 10.0)}

    # -- connection ------------------------------------------------------------------------------------------
    def _prepare_hw(self) -> None:
        """Refuse anything but a 2450 on SCPI (``*LANG?``); set ASCII data; read the output; select the
        configured terminals; read the source function and level."""
        hint = "(MENU > System > Settings > Command Set: SCPI, then restart it)"
        if "MODEL 2400" in self.idn.upper():  # perhaps a 2450 emulating a 2400
            raise DeviceError(f"{self.name}: {self.resource} answers {excerpt(self.idn)}, not a Keithley 2450 "
                              f"on its SCPI command set {hint}")
        if "MODEL 2450" not in self.idn.upper():
            raise DeviceError(f"{self.name}: {self.resource} answers {excerpt(self.idn)}, not a Keithley 2450; "
                              "check that the resource is the 2450's")
        language = self.query("*LANG?").upper()  # a 2450 set to TSP still answers *IDN? as above
        if language != "SCPI":
            raise DeviceError(f"{self.name}: the 2450 runs its {excerpt(language)} command set; this driver needs SCPI "
                              f"{hint}")
        # a previous user's REAL or SREAL would make every reading a binary block, and a set ASCII precision would
        # round every number read (readings, the level, the limit read back) to a few digits
        self.write(":FORM:DATA ASC;:FORM:ASC:PREC 0")
        # what this driver has not set itself is unknown until configure() sets it
        self.compliance = self.nplc = self.source_range = self.measure_range = None
        self.output_on = self.query_bool(":OUTP?")
        self._select_terminals()
        self.check_errors(f"setting ASCII data and the {self.terminals} terminals")
        function = self.query(":SOUR:FUNC?").upper()
        modes = {"VOLT": "voltage", "CURR": "current"}
        if function[:4] not in modes:
            raise self.unexpected_reply(f"reply {excerpt(function)} to ':SOUR:FUNC?' is not VOLT or CURR")
        self.mode = modes[function[:4]]  # type: ignore[assignment]
        self.level = self.query_float(f":SOUR:{function[:4]}?")

    def _select_terminals(self) -> None:
        """Select the configured terminals (``:ROUT:TERM``) where a previous user left the others: with the output
        off; with it on, refuse to connect (the switch would take the output off the device under test)."""
        reply = self.query(":ROUT:TERM?").upper()
        names = {code: name for name, code in TERMINALS.items()}
        if reply[:4] not in names:
            raise self.unexpected_reply(f"reply {excerpt(reply)} to ':ROUT:TERM?' is not FRON or REAR")
        selected, wanted = names[reply[:4]], self.terminals
        if selected == wanted:
            return
        if self.output_on:
            raise DeviceError(f"{self.name}: the 2450's {selected} terminals are selected with the output on, but "
                              f"its terminals option is {wanted}; switch the output off at the instrument (or set "
                              f"terminals: {selected} if the device under test is wired there), then connect again")
        self.write(f":ROUT:TERM {TERMINALS[wanted]}")

    # -- settings --------------------------------------------------------------------------------------------
    def configure(self, mode: SourceMode, compliance: float, nplc: float = 1.0) -> None:
        """Source ``mode`` with ``compliance`` (A when sourcing voltage, V when sourcing current), measuring
        the other quantity with ``nplc`` power-line cycles; the 2450 takes compliances from 1 nA / 20 mV."""
        self._require_connected()
        if isinstance(mode, str) and mode in MIN_COMPLIANCE:  # else the base class refuses it
            try:
                magnitude = abs(float(compliance))
            except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond the float range
                magnitude = math.nan  # the base class names the bad value
            if math.isfinite(magnitude) and magnitude < MIN_COMPLIANCE[mode]:
                unit = "A" if mode == "voltage" else "V"
                raise LimitError(f"{self.name}: compliance {magnitude:g} {unit} is below the 2450's minimum "
                                 f"{MIN_COMPLIANCE[mode]:g} {unit}")
            fixed = self.measure_range if mode == self.mode else None
            if fixed is not None and math.isfinite(magnitude) and magnitude <= 1e-3 * fixed:
                unit = _UNIT[_MEASURE[mode]]
                raise LimitError(f"{self.name}: compliance {magnitude:g} {unit} must exceed 0.1 % of the fixed "
                                 f"{fixed:g} {unit} measure range; use set_measure_range(None) first")
            if math.isfinite(magnitude):  # the source range stays only in the same mode; else the level goes to rest
                same = mode == self.mode
                fixed_range = self.source_range if same else None
                rest = self._rest(mode)
                level = self.level if same and self.level is not None else rest
                if same and self.output_on is False and self._outside_envelope(mode, magnitude, level, fixed_range) \
                        and not self._outside_envelope(mode, magnitude, rest, fixed_range):
                    self._set_level_hw(rest)  # an idle level a previous user left: nothing is sourced, so rest it
                    self.level = level = rest
                self._check_envelope(mode, magnitude, level, fixed_range, "the source would be")
        super().configure(mode, compliance, nplc)

    def _configure_hw(self, mode: SourceMode, compliance: float, nplc: float) -> None:
        """Send the settings of ``mode``, the limit last, and read the limit back. Remote sense is sent only where it
        differs from the instrument's: a change may switch the output off, so with the output on it is refused
        before anything is sent; so is a change of the overvoltage protection, which is sent after the source
        function (whose change may reset it). An unknown level (another mode) is set to its rest (0, or the allowed
        level nearest it) before the ranges and the limit. A failure once sending has begun clears the compliance:
        nothing sources until configure succeeds."""
        source, measure = _SOURCE[mode], _MEASURE[mode]
        sense = "ON" if self.remote_sense else "OFF"
        change_sense = self.query_bool(f":SENS:{measure}:RSEN?") != self.remote_sense
        if change_sense and self.output_on is not False:
            raise LimitError(f"{self.name}: remote sense must change to {sense}, and the 2450 may switch the live "
                             "output off for it; call set_output(False) before configure()")
        protection = self.query(":SOUR:VOLT:PROT?").upper()
        if protection not in PROTECTION_NAMES:
            raise self.unexpected_reply(f"reply {excerpt(protection)} to ':SOUR:VOLT:PROT?' is not an overvoltage "
                                        "protection level (PROT2 .. PROT180 or NONE)")
        limit = self.limits["voltage_v"]
        if protection != self.protection and self.output_on is not False:
            raise LimitError(f"{self.name}: the overvoltage protection must change from {protection} to "
                             f"{self.protection} (for the voltage limit {limit.min:g}..{limit.max:g} V), which "
                             "the 2450 takes before the output is on; call set_output(False) before configure()")
        if mode != self.mode:
            self.source_range = self.measure_range = None
        zero = self.level is None  # a level left by a previous user could put the source on a range whose power
        # envelope lowers the new limit; the base class would set its rest after configuring anyway
        rest = self._rest(mode)
        commands = [
            f':SENS:FUNC "{measure}"',  # first: the 2450 refuses a new source function while measuring RES
            f":SOUR:FUNC {source}",
            f":SOUR:VOLT:PROT {self.protection}",
            *([f":SOUR:{source} {_fmt(rest)}"] if zero else []),
            *([f":SENS:{measure}:RSEN {sense}"] if change_sense else []),
            f":SENS:{measure}:NPLC {_fmt(nplc)}",
            f":SOUR:{source}:READ:BACK ON",  # the SOUR element is then the measured source value
            # what a previous user may have left on would change or slow every reading
            f":SENS:{measure}:REL:STAT OFF", f":CALC:{measure}:MATH:STAT OFF", f":SENS:{measure}:AVER OFF",
            f":SENS:{measure}:AZER ON", ":FORM:ASC:PREC 0",
            *self._range_commands(f":SOUR:{source}", self.source_range),
            *self._range_commands(f":SENS:{measure}", self.measure_range),
            f":SOUR:{source}:{_LIMIT[mode]} {_fmt(compliance)}",
        ]
        try:
            for command in commands:
                self.write(command)
            self.check_errors(f"configuring the {mode} source")
        except BaseException:
            # the source function, the protection or the limit may have changed, or not: nothing sources until
            # configure() has succeeded again (the base class keeps the previous compliance otherwise)
            self.compliance = None
            raise
        self._check_limit(mode, compliance, f"configuring the {mode} source")
        if zero:
            self.level = rest

    @staticmethod
    def _outside_envelope(mode: SourceMode, compliance: float | None, level: float, fixed: float | None) -> bool:
        """Whether the source range (``fixed``, or the one autorange picks for ``level``) has a power envelope
        (`ENVELOPE`) below ``compliance``. Autorange is taken to leave a range above its nominal value (20 V,
        100 mA), not at the 105 % it can hold: the cautious reading where the manual is silent."""
        top, cap = ENVELOPE[mode]
        ranges = _RANGES[_SOURCE[mode]]
        on = fixed if fixed is not None else next((r for r in ranges if abs(level) <= r * (1 + 1e-9)), ranges[-1])
        return compliance is not None and on >= top and compliance > cap * (1 + 1e-9)

    def _check_envelope(self, mode: SourceMode, compliance: float | None, level: float, fixed: float | None,
                        what: str) -> None:
        """Refuse, before anything is sent, a source range (``fixed``, or the autorange of ``level``) whose power
        envelope (`ENVELOPE`) is below ``compliance``: the 2450 would lower its limit with only a warning."""
        if not self._outside_envelope(mode, compliance, level, fixed):
            return
        top, cap = ENVELOPE[mode]
        unit, limit_unit = _UNIT[_SOURCE[mode]], _UNIT[_MEASURE[mode]]
        keep = f"a source range below {top:g} {unit}" if fixed is not None else \
            f"|level| within {_RANGES[_SOURCE[mode]][-2]:g} {unit}"
        raise LimitError(f"{self.name}: {what} on the {top:g} {unit} source range, where the 2450 allows a "
                         f"compliance of at most {cap:g} {limit_unit}, not {compliance:g} {limit_unit}; keep {keep} "
                         f"or configure a compliance of at most {cap:g} {limit_unit}")

    def _check_limit(self, mode: SourceMode, compliance: float, what: str) -> None:
        """Read the limit back: a range change beyond the power envelope lowers it with a warning, not an error."""
        command = f":SOUR:{_SOURCE[mode]}:{_LIMIT[mode]}?"
        held = self.query_float(command)
        if not math.isclose(held, compliance, rel_tol=1e-5):
            self.compliance = None  # nothing sources until configure() has set one again
            self.transport.out_of_step = True  # or the reply was another query's: the next query resynchronises
            unit = _UNIT[_MEASURE[mode]]
            raise DeviceError(f"{self.name}: after {what} the 2450 holds a compliance of {held:g} {unit}, not the "
                              f"{compliance:g} {unit} set (its power envelope lowers it on the 200 V or 1 A source "
                              "range); configure() again with a level and range inside the envelope")

    @staticmethod
    def _range_commands(prefix: str, value: float | None) -> list[str]:
        if value is None:
            return [f"{prefix}:RANG:AUTO ON"]
        return [f"{prefix}:RANG:AUTO OFF", f"{prefix}:RANG {_fmt(value)}"]

    def _send_range(self, prefix: str, value: float | None, what: str) -> None:
        """Fix the range of ``prefix`` (e.g. ``:SOUR:VOLT``) to ``value``, or auto for None, and check errors."""
        for command in self._range_commands(prefix, value):
            self.write(command)
        self.check_errors(what)

    def _pick_range(self, value: float, function: str, what: str) -> float:
        """The smallest of the 2450's ranges for ``function`` (VOLT or CURR) that holds ``value``."""
        ranges, unit = _RANGES[function], _UNIT[function]
        allowed = ", ".join(f"{r:g}" for r in ranges)
        try:
            number = real_number(value)  # not True as 1
        except (TypeError, ValueError):
            raise LimitError(f"{self.name}: {what} {shown(value)} is not a number") from None
        except OverflowError:  # an integer beyond the float range
            raise LimitError(f"{self.name}: {what} beyond the float range refused; the 2450's ranges are {allowed} "
                             f"{unit}, or None for auto") from None
        if not (math.isfinite(number) and 0 < number <= ranges[-1]):
            raise LimitError(f"{self.name}: {what} {number:g} {unit} refused; the 2450's ranges are "
                             f"{allowed} {unit}, or None for auto")
        return next(r for r in ranges if number <= r * (1 + 1e-9))

    def set_source_range(self, value: float | None) -> float | None:
        """Fix the source range to the smallest that holds ``value`` (V or A by mode), or None for auto.

        Returns the range chosen. A range that cannot hold the present level is refused.
        """
        self._require_configured()
        function = _SOURCE[self.mode]  # type: ignore[index]
        chosen = None if value is None else self._pick_range(value, function, "source range")
        if chosen is not None and self.level is not None and abs(self.level) > OVERRANGE * chosen:
            raise LimitError(f"{self.name}: the {chosen:g} {_UNIT[function]} source range cannot hold the "
                             f"present level {self.level:g} {_UNIT[function]}")
        what = "autorange would put the source" if chosen is None else \
            f"source range {float(value):g} {_UNIT[function]} would put the source"  # type: ignore[arg-type]
        self._check_envelope(self.mode, self.compliance, self.level or 0.0, chosen, what)  # type: ignore[arg-type]
        self._send_range(f":SOUR:{function}", chosen, "setting the source range")
        self.source_range = chosen
        self._check_limit(self.mode, self.compliance, "setting the source range")  # type: ignore[arg-type]
        return chosen

    def set_measure_range(self, value: float | None) -> float | None:
        """Fix the measure range (A when sourcing voltage, V when sourcing current) to the smallest that holds
        ``value``, or None for auto. Readings beyond 105 % of a fixed range raise `DeviceError` (overflow).

        Returns the range chosen. The compliance must exceed 0.1 % of a fixed range (2450 rule).
        """
        self._require_configured()
        function = _MEASURE[self.mode]  # type: ignore[index]
        chosen = None if value is None else self._pick_range(value, function, "measure range")
        if chosen is not None and self.compliance is not None and self.compliance <= 1e-3 * chosen:
            raise LimitError(f"{self.name}: the compliance {self.compliance:g} {_UNIT[function]} must exceed "
                             f"0.1 % of the {chosen:g} {_UNIT[function]} measure range; choose a smaller range, or "
                             "configure() a larger compliance first")
        self._send_range(f":SENS:{function}", chosen, "setting the measure range")
        self.measure_range = chosen
        return chosen

    def _check_levels(self, levels: Any, what: str) -> None:
        """Refuse, before anything is sent, levels (V or A by mode) beyond 105 % of a fixed source range, or whose
        largest would break the power envelope (`_check_envelope`) at the present range and compliance."""
        if self.mode is None:
            return
        try:
            values = np.abs(np.asarray(levels, dtype=np.float64))
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond the float range
            return  # the base class names the bad value
        values = values[np.isfinite(values)]
        if not values.size:
            return
        unit = _UNIT[_SOURCE[self.mode]]
        if self.source_range is not None and (values > OVERRANGE * self.source_range).any():
            beyond = values[values > OVERRANGE * self.source_range][0]
            raise LimitError(f"{self.name}: {what} {beyond:g} {unit} exceeds the fixed {self.source_range:g} "
                             f"{unit} source range; call set_source_range()")
        top = float(values.max())
        self._check_envelope(self.mode, self.compliance, top, self.source_range, f"{what} {top:g} {unit} would be")

    def set_level(self, level: float) -> None:
        self._check_levels([level], f"source {self.mode}")
        super().set_level(level)

    def _set_level_hw(self, level: float) -> None:
        source = _SOURCE[self.mode]  # type: ignore[index]
        self.write(f":SOUR:{source} {_fmt(level)}")
        self.check_errors(f"setting the source to {level:g} {_UNIT[source]}")

    def _set_output_hw(self, enabled: bool) -> None:
        self.write(f":OUTP {'ON' if enabled else 'OFF'}")
        self.check_errors(f"switching the output {'on' if enabled else 'off'}")

    # -- measuring -------------------------------------------------------------------------------------------
    def _readings(self, source: np.ndarray, reading: np.ndarray, limited: np.ndarray) -> Readings:
        """Readings from the SOUR and READ elements; an overflowed or non-finite value is a `DeviceError`."""
        bad = ~np.isfinite(reading) | (np.abs(reading) >= OVERFLOW) | ~np.isfinite(source)
        if bad.any():
            at = int(np.argmax(bad))
            unit, source_unit = _UNIT[_MEASURE[self.mode]], _UNIT[_SOURCE[self.mode]]  # type: ignore[index]
            where = "beyond the measure range" if self.measure_range is None else \
                f"beyond the fixed {self.measure_range:g} {unit} measure range; use set_measure_range(None)"
            value = "an overflow" if abs(reading[at]) >= OVERFLOW else f"{reading[at]:g} {unit}"  # 9.9e+37: SCPI's
            raise DeviceError(f"{self.name}: reading {at} is {value} (source {source[at]:g} {source_unit}): "
                              f"{where}")
        voltage, current = (source, reading) if self.mode == "voltage" else (reading, source)
        return Readings(voltage_v=voltage, current_a=current, in_compliance=limited.astype(bool))

    def _reading_bound_s(self) -> float:
        """The longest one reading may take (s): integration and its two autozero references at 50 Hz mains, on
        every measure range an autorange may try, plus 0.1 s for source settling. A bound for timeouts."""
        tries = 1 if self.measure_range is not None else len(_RANGES[_MEASURE[self.mode]])  # type: ignore[index]
        return tries * 3 * (self.nplc or 1.0) / MAINS_HZ + 0.1

    def _measure_hw(self) -> Readings:
        """One reading (``:READ?`` of the source and measured values), then, in one message, the limit state
        (``:TRIP?``) and what the reading relies on (`_check_unchanged`). The reading may take up to
        `_reading_bound_s` longer than the transport's timeout."""
        command = f':READ? "{BUFFER}", SOUR, READ'
        with self.transport.patience(self._reading_bound_s()):
            values = self.query_floats(command)
        if len(values) != 2:
            raise self.unexpected_reply(f"reply to {command!r} has {len(values)} values, expected 2")
        command = f":SOUR:{_SOURCE[self.mode]}:{_LIMIT[self.mode]}:TRIP?;{self._state_query()}"  # type: ignore[index]
        tripped, *state = [part.strip() for part in self.query(command).split(";")]
        if tripped not in ("0", "1"):
            raise self.unexpected_reply(f"reply {excerpt(tripped)} to {command!r} does not start with 0 or 1")
        self._check_unchanged(state, command, "a reading", self.level)
        return self._readings(np.array([values[0]]), np.array([values[1]]), np.array([tripped == "1"]))

    def _state_query(self) -> str:
        """The queries of what a reading relies on, to send in the message of a query it already makes: the output
        state, the source function, its level and limit, the measure function, its relative offset and math
        (``REL``, ``mx+b``: front-panel keys that change every reading), and the ASCII precision (fewer digits
        round every reading)."""
        source, limit, measure = _SOURCE[self.mode], _LIMIT[self.mode], _MEASURE[self.mode]  # type: ignore[index]
        return (f":OUTP?;:SOUR:FUNC?;:SOUR:{source}?;:SOUR:{source}:{limit}?;:SENS:FUNC?;:SENS:{measure}:REL:STAT?;"
                f":CALC:{measure}:MATH:STAT?;:FORM:ASC:PREC?")

    def _check_unchanged(self, replies: list[str], command: str, what: str, level: float | None) -> None:
        """Refuse what was measured during ``what`` where the replies to `_state_query` (sent in ``command``) are not
        the state this driver left, at ``level`` (`_take_state`): the 2450 switches its output off by itself
        (overtemperature, an open interlock), and its front panel, another program or a restart change the rest
        unseen."""
        changed = self._take_state(replies, command, what, level)
        if changed:
            raise self.changed_unseen(changed, what)

    def _read_outputs_hw(self) -> None:
        """Before the safe state, the state `_state_query` reads, taken as the present one (`_take_state`), so that
        the way down starts from the level the source is at."""
        if self.mode is not None:
            command = self._state_query()
            replies = [part.strip() for part in self.query(command).split(";")]
            self._take_state(replies, command, "the safe state's read", self.level)

    def _take_state(self, replies: list[str], command: str, what: str, level: float | None) -> list[str]:
        """What differs between the replies to `_state_query` (sent in ``command``, read after ``what``) and the
        state this driver left, at ``level`` (None: unknown, not compared), each as ``"its <setting> <held>, not
        <set>"``. Where anything does, the state read becomes the driver's: the output state, the level (where
        ``level`` was known), and, after another source function, no mode; the compliance is then cleared, so that
        nothing sources until `configure` has set it all again."""
        source, measure = _SOURCE[self.mode], _MEASURE[self.mode]  # type: ignore[index]
        try:
            output, function, held_level, held, sensed, relative, math_on, precision = replies
            if {output, relative, math_on} - {"0", "1"}:
                raise ValueError(replies)
            held_level, held, digits = float(held_level), float(held), int(precision)
        except ValueError:
            raise self.unexpected_reply(f"replies {excerpt(';'.join(replies))} to {command!r} after {what} are not "
                                        "the output state, the source function, its level and limit, the measure "
                                        "function, its relative offset and math states and the ASCII precision") \
                from None
        unit, limit_unit = _UNIT[source], _UNIT[measure]
        changed = []
        if self.output_on is not None and (output == "1") != self.output_on:
            changed.append(f"its output {'on' if output == '1' else 'off'}, not {'on' if self.output_on else 'off'}")
        if function.upper()[:4] != source:
            changed.append(f"its source function {excerpt(function)}, not {source}")
        elif level is not None and not _same_setting(held_level, level, source, self.source_range):
            changed.append(f"its source at {held_level:g} {unit}, not {level:g} {unit}")
        if self.compliance is not None and not math.isclose(held, self.compliance, rel_tol=1e-5):
            changed.append(f"a limit of {held:g} {limit_unit}, not {self.compliance:g} {limit_unit}")
        if sensed.strip('"').upper()[:4] != measure:
            changed.append(f"its measure function {excerpt(sensed)}, not {measure}")
        changed += [f"its {name} on, not off" for name, on in (("relative offset", relative), ("math", math_on))
                    if on == "1"]
        if digits != 0:  # 0: every digit a reading has (set at connect and by configure)
            changed.append(f"its ASCII precision at {digits} digits, not automatic (0)")
        if changed:
            self.output_on = output == "1"
            if function.upper()[:4] != source:
                self.mode = self.level = None
            elif level is not None:
                self.level = held_level
            self.compliance = None  # nothing sources until configure() has set it all again
        return changed

    def _check_sweep_hw(self, levels: np.ndarray, delay_s: float) -> None:
        """The delay is 0 or at least 50 µs (the 2450's; `SourceMeter.sweep` has bounded it to 10 s); levels within
        a fixed source range and the power envelope."""
        if 0 < delay_s < MIN_SWEEP_DELAY_S:
            raise LimitError(f"{self.name}: sweep delay {delay_s:g} s refused; the 2450 takes 0 or at least "
                             f"{MIN_SWEEP_DELAY_S:g} s")
        self._check_levels(levels, "sweep level")

    def _sweep_hw(self, levels: np.ndarray, delay_s: float) -> Readings:
        """A list sweep run by the instrument's trigger model; readings come back from ``defbuffer1``.

        Compliance per point comes from the buffer's SOURSTATus element, bit 5 (value 32, "source function
        level was limited", Reference Manual: ``:TRACe:DATA?`` and ``bufferVar.sourcestatuses``), not from
        comparing readings with the limit. The sweep runs to the end even when points hit the limit
        (failAbort OFF). A sweep expected to outlast half the transport timeout is polled with ``:TRAC:ACT?``
        instead of waiting on ``*WAI``, then waited on with ``*OPC?`` (the trigger model may still run when the
        count is reached); either way it may take up to `_reading_bound_s` per point. The buffer is read with
        `_state_query` in the same message: an output its protection switched off during the sweep, or another change,
        is a `DeviceError` (`_check_unchanged`), not readings of a dead output.
        """
        source, n = _SOURCE[self.mode], len(levels)  # type: ignore[index]
        self.write(f':TRAC:CLE "{BUFFER}"')
        for start in range(0, n, LIST_CHUNK):
            header = f":SOUR:LIST:{source}:APP" if start else f":SOUR:LIST:{source}"
            self.write(f"{header} {', '.join(_fmt(v) for v in levels[start:start + LIST_CHUNK])}")
        self.write(f":SOUR:SWE:{source}:LIST 1, {_fmt(delay_s)}, 1, OFF")
        self.check_errors("loading the sweep")
        self.write(":INIT")
        expected_s = n * (delay_s + 2 * (self.nplc or 1.0) / MAINS_HZ + 1e-3)
        longest_s = n * (delay_s + self._reading_bound_s())
        if expected_s < 0.5 * self.transport.timeout_s:
            self.write("*WAI")
        else:
            self._wait_for_buffer(n, expected_s, longest_s)
            self.wait_complete(self._reading_bound_s(), f"the sweep of {n} points")  # the trigger model may still run
            longest_s = 0.0
        command = f':TRAC:DATA? 1, {n}, "{BUFFER}", SOUR, READ, SOURSTAT;{self._state_query()}'
        with self.transport.patience(longest_s):
            data, *state = self.query(command).split(";")
        self._check_unchanged([part.strip() for part in state], command, f"the sweep of {n} points", levels[-1])
        parts = data.split(",")
        if len(parts) != 3 * n:
            raise self.unexpected_reply(f"reply to {command!r} has {len(parts)} values, expected {3 * n}")
        try:
            source_values = np.array([float(p) for p in parts[0::3]])
            reading_values = np.array([float(p) for p in parts[1::3]])
            limited = np.array([_status(p) & STAT_LIMIT != 0 for p in parts[2::3]])
        except (ValueError, OverflowError):
            raise self.unexpected_reply(f"reply to {command!r} is not source, reading, status triples (starts "
                                        f"{excerpt(','.join(parts[:3]))})") from None
        return self._readings(source_values, reading_values, limited)

    def _wait_for_buffer(self, n: int, expected_s: float, longest_s: float) -> None:
        """Sleep the expected sweep time, then poll the buffer count; abort a sweep not done in ``longest_s``."""
        deadline = self.clock.now() + longest_s + 10 * self.transport.timeout_s
        self.clock.sleep(expected_s)
        while True:
            count = self.query_float(f':TRAC:ACT? "{BUFFER}"')
            if count >= n:
                return
            if self.clock.now() > deadline:
                self.write(":ABOR")
                raise DeviceError(f"{self.name}: sweep of {n} points stopped at {count:g} readings; aborted")
            self.clock.sleep(min(1.0, max(0.05, expected_s / 20)))

    # -- errors and safety -----------------------------------------------------------------------------------
    def parse_error(self, reply: str) -> tuple[int, str]:
        """Split a 2450 error-queue entry ``<code>,"<message>;<severity>;<date time>"`` into code, message."""
        code, message = super().parse_error(reply)
        fields = message.rsplit(";", 2)
        return code, fields[0] if len(fields) == 3 else message

    def _snapshot_hw(self) -> dict[str, Any]:
        return {**super()._snapshot_hw(), "source_range": self.source_range,
                "measure_range": self.measure_range, "remote_sense": self.remote_sense, "terminals": self.terminals,
                "overvoltage_protection": self.protection}
