"""Keithley 2450 SourceMeter emulator (SCPI command set) with a resistor across its terminals.

The physics: a load of ``load_ohm`` ohms. Sourcing a voltage V gives I = V/R; if |I| would exceed the current limit
(ILIM) the instrument clamps I at ±ILIM, the voltage drops to ILIM·R and the limit is "tripped". Sourcing a current
is the mirror image with the voltage limit (VLIM). With the output off, nothing flows (0 V, 0 A). The overvoltage
protection (``:SOURce:VOLTage:PROTection PROT<n>|NONE``) clamps the voltage across the terminals at its level in
either source function (each function keeps its own level), and ``:SOURce:VOLTage:PROTection:TRIPped?`` says when it
does. The load is wired to the ``load_terminals`` (front by default); the terminals selected by ``:ROUTe:TERMinals
FRONt|REAR`` (a change switches the output off) see the load, or else an open circuit: no current, and a current
source runs to its voltage limit. ``noise_a`` adds seeded Gaussian noise (A, standard deviation) to every current
reading.

Emulated: source function (refused with -221 while the measure function is resistance, as on the 2450), level,
limit and range (fixed, or auto: the smallest range holding the level with its 105 % overrange), the power
envelope (±21 V at up to ±1.05 A, ±210 V at up to ±105 mA: a range change, fixed or following the level, or a
limit beyond what the source range allows, lowers the limit to the envelope's and records a warning in
`warnings`, not in the error queue, as the 2450 does), source readback, measure function, NPLC,
measure range (fixed or auto, with the 9.9E+37 overflow reading beyond 105 % of a fixed range), remote sense
(a change switches the output off, as the 2400 family documents), output, the reading buffers (``:READ?``,
``:TRACe:DATA?``, ``:TRACe:ACTual?``, ``:TRACe:CLEar``; each holds the last 100 000 readings, as the 2450's default
buffers filling continuously do), source lists (``:SOURce:LIST:<f>[:APPend]``, at most
100 values a command, 2500 in all), list sweeps (``:SOURce:SWEep:<f>:LIST`` then ``:INITiate``), the data
format (``:FORMat:DATA ASCii|REAL|SREAL``: in REAL/SREAL, ``:READ?`` and ``:TRACe:DATA?`` reply with one IEEE
488.2 indefinite-length block, ``#0``, of little-endian float64/float32 values, and refuse the elements that are
not numbers with the 2450's error 1133, as only READing, RELative and SOURce are available there), the ASCII
precision (``:FORMat:ASCii:PRECision``, 0 = automatic, printed as 7 digits), reading-buffer names and the measure
function taken only as quoted strings (``"defbuffer1"``, ``"CURR"`` or ``"CURR:DC"``; bare, -104) and the 2450's
error-queue format ``<code>,"<message>;<severity>;<date time>"``. A sweep runs to completion as soon as
``:INITiate`` is read.
Not emulated: the TSP command set, linear/log sweeps, the trigger-model blocks, limit tests, statistics,
digitizing, the interlock, the protection level's tolerance, output-off modes and the front panel.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from hil.errors import ConfigError
from simulators.emulators.scpi import (
    ILLEGAL_VALUE,
    MISSING_PARAMETER,
    OUT_OF_RANGE,
    PARAMETER_NOT_ALLOWED,
    SETTINGS_CONFLICT,
    UNDEFINED_HEADER,
    Param,
    ScpiEmulator,
    ScpiError,
    Text,
    boolean,
    choice,
    number,
    scpi,
    string,
)

TOO_MUCH_DATA = (-223, "Too much data")
#: The 2450's own error for a buffer element that a binary format (REAL, SREAL) cannot carry.
BINARY_ELEMENT = (1133, "Buffer element not available in a binary format")

#: Source and measure ranges: volts and amperes. A range holds up to 105 % of its nominal value.
RANGES = {"VOLT": (20e-3, 200e-3, 2.0, 20.0, 200.0),
          "CURR": (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)}
OVERRANGE = 1.05
#: Largest source level and limit magnitude per function.
MAXIMUM = {"VOLT": 210.0, "CURR": 1.05}
#: The power envelope (±21 V at up to ±1.05 A, ±210 V at up to ±105 mA): on this source range (V or A) the limit
#: (A or V) is at most this.
ENVELOPE = {"VOLT": (200.0, 0.105), "CURR": (1.0, 21.0)}
#: Smallest limit magnitude: the current limit when sourcing voltage, the voltage limit when sourcing current.
MINIMUM_LIMIT = {"VOLT": 1e-9, "CURR": 0.02}
#: The reading the 2450 returns for a measurement beyond its range.
OVERFLOW = 9.9e37
LIST_CHUNK = 100
LIST_MAX = 2500
BUFFERS = ("defbuffer1", "defbuffer2")
#: The buffer a command that names none uses.
DEFAULT_BUFFER = Text("defbuffer1")
#: Source status bits of a buffered reading (SOURSTATus element).
STAT_LIMIT, STAT_SENSE, STAT_OUTPUT = 32, 64, 128
#: The 2450's wording of the standard SCPI errors.
MESSAGES = {-222: "Parameter data out of range", -224: "Illegal parameter value", -104: "Data type error",
            -113: "Undefined header", -109: "Missing parameter", -108: "Parameter not allowed",
            -221: "Settings conflict", -223: "Too much data", -102: "Syntax error",
            -161: "Invalid block data"}
UNITS = {"VOLT": "Volt DC", "CURR": "Amp DC", "RES": "Ohm"}
#: Buffer elements a reply can hold, in SCPI capitalisation, and their keys in a buffer entry.
ELEMENT_NAMES = ("READing", "SOURce", "SOURSTATus", "STATus", "RELative", "UNIT", "SOURUNIT")
ELEMENTS = {"READING": "READ", "SOURCE": "SOUR", "SOURSTATUS": "SOURSTAT", "STATUS": "STAT",
            "RELATIVE": "REL", "UNIT": "UNIT", "SOURUNIT": "SOURUNIT"}
#: Overvoltage protection levels (V) of ``:SOURce:VOLTage:PROTection PROT<n>``; NONE: none.
PROTECTION_LEVELS_V = (2, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160, 180)
PROTECTION_NAMES = ("NONE", *(f"PROT{level}" for level in PROTECTION_LEVELS_V))
#: The ``load_terminals`` option as :ROUTe:TERMinals names them.
TERMINALS = {"front": "FRON", "rear": "REAR"}
#: Elements a binary format (REAL, SREAL) can hold.
BINARY_ELEMENTS = {"READ", "SOUR", "REL"}


def _function(text: Param, *options: str) -> str:
    """A function name (VOLTage, CURRent, RESistance) as its short form (VOLT, CURR, RES)."""
    chosen = choice(text, *options)
    return next("".join(c for c in option if c.isupper()) for option in options if option.upper() == chosen)


def _handler(pattern: str, method: str, *fixed: str) -> Callable[..., Any]:
    """A SCPI handler for ``pattern`` that calls ``method(*fixed, *parameters)``.

    Every numeric suffix (``#``) of the pattern must be 1: the 2450 has one channel. Missing or extra
    parameters are SCPI errors, as in the base dispatcher.
    """
    n_suffixes = pattern.count("#")

    def handler(self: Keithley2450Emulator, *arguments: Any) -> Any:
        if any(suffix != 1 for suffix in arguments[:n_suffixes]):
            raise ScpiError(UNDEFINED_HEADER, f"{pattern}: suffix must be 1")
        target = getattr(self, method)
        parameters = (*fixed, *arguments[n_suffixes:])
        try:
            inspect.signature(target).bind(*parameters)
        except TypeError:
            needed = sum(1 for p in inspect.signature(target).parameters.values()
                         if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD)
            raise ScpiError(MISSING_PARAMETER if len(parameters) < needed else PARAMETER_NOT_ALLOWED,
                            pattern) from None
        return target(*parameters)

    return scpi(pattern)(handler)


class Keithley2450Emulator(ScpiEmulator):
    """A Keithley 2450 on the SCPI command set, driving a resistor of ``load_ohm`` ohms.

    ``noise_a`` is the standard deviation (A) of Gaussian noise on current readings, drawn from a generator
    seeded with ``seed``. ``load_terminals`` ("front" or "rear") are the terminals the load is wired to; the
    others see an open circuit. The state is public (``output``, ``function``, ``level``, ``limit``, ``buffer``,
    ...) so that tests can inspect it.
    """

    identity = "KEITHLEY INSTRUMENTS,MODEL 2450,04000000,1.7.12b"
    #: Readings each default buffer holds: the 2450's default capacity of defbuffer1 and defbuffer2, which fill
    #: continuously (the oldest reading overwritten by the newest once full), so that an emulator serving a long run
    #: or ``hil emulate`` for days holds at most this many, as the instrument does, not every reading it ever took.
    buffer_capacity = 100_000

    def __init__(self, load_ohm: float = 1000.0, noise_a: float = 0.0, seed: int = 0, load_terminals: str = "front"):
        if not (math.isfinite(load_ohm) and load_ohm > 0):
            raise ConfigError(f"load_ohm must be a positive number of ohms, got {load_ohm:g} Ω", field="load_ohm")
        if not (math.isfinite(noise_a) and noise_a >= 0):
            raise ConfigError(f"noise_a must be at least 0 A, got {noise_a:g} A", field="noise_a")
        if load_terminals not in TERMINALS:
            raise ConfigError(f"load_terminals must be 'front' or 'rear', got {load_terminals!r}",
                              field="load_terminals")
        self.load_ohm = float(load_ohm)
        self.load_terminals = TERMINALS[load_terminals]
        #: Warnings of the event log (not the error queue), such as a limit lowered by the power envelope.
        self.warnings: list[str] = []
        self.noise_a = float(noise_a)
        self.rng = np.random.default_rng(seed)
        super().__init__()

    def reset(self) -> None:
        """The 2450's *RST state: voltage source at 0 V, 105 µA limit, measuring current, output off."""
        self.function = "VOLT"
        self.level = {"VOLT": 0.0, "CURR": 0.0}
        self.limit = {"VOLT": 105e-6, "CURR": 21.0}
        self.source_range: dict[str, float | None] = {"VOLT": None, "CURR": None}  # None: auto
        self.readback = {"VOLT": True, "CURR": True}
        self.sense_function = "CURR"
        self.nplc = {"VOLT": 1.0, "CURR": 1.0, "RES": 1.0}
        self.measure_range: dict[str, float | None] = {"VOLT": None, "CURR": None, "RES": None}
        self.remote_sense = {"VOLT": False, "CURR": False, "RES": False}
        #: Reading modifiers a previous user may leave on: relative offset (state, level), mx+b math (state, m, b),
        #: repeating average filter (state, count) and autozero, per measure function.
        self.relative = {f: [False, 0.0] for f in ("VOLT", "CURR", "RES")}
        self.math = {f: [False, 1.0, 0.0] for f in ("VOLT", "CURR", "RES")}
        self.average = {f: [False, 10] for f in ("VOLT", "CURR", "RES")}
        self.autozero = {"VOLT": True, "CURR": True, "RES": True}
        self.output = False
        self.source_list: dict[str, list[float]] = {"VOLT": [], "CURR": []}
        self.sweep: dict[str, Any] | None = None
        self.buffer: dict[str, deque[dict[str, Any]]] = {
            name: deque(maxlen=self.buffer_capacity) for name in BUFFERS}
        self.time_s = 0.0
        self.data_format = "ASC"  # :FORMat:DATA: ASC, REAL (float64) or SREAL (float32)
        self.ascii_precision = 0  # :FORMat:ASCii:PRECision: significant digits of ASCII numbers, 0 = automatic
        self.terminals = "FRON"  # :ROUTe:TERMinals: FRON or REAR
        #: :SOURce:VOLTage:PROTection (PROT<n> or NONE) per source function: the Reference Manual lists "function
        #: change" among what affects it, taken here to mean that each source function keeps its own.
        self.protection = {"VOLT": "NONE", "CURR": "NONE"}

    @scpi("*LANG?")
    def language(self) -> str:
        """The command set: this emulator is a 2450 on SCPI."""
        return "SCPI"

    # -- errors in the 2450's format -------------------------------------------------------------------------
    def push_error(self, error: tuple[int, str]) -> None:
        """Queue an error as the 2450 words it: ``message;severity;date time`` (severity 1: error)."""
        code, message = error
        text, _, detail = message.partition("; ")
        text = MESSAGES.get(code, text)
        if detail:
            text = f"{text} ({detail.replace(';', ',')})"
        stamp = datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        super().push_error((code, f"{text};1;{stamp}"))

    def format_error(self, code: int, message: str) -> str:
        if code == 0:
            return '0,"No error;0;0 0"'
        if message.count(";") < 2:  # an entry the base queued directly (queue overflow)
            message = f"{message};1;{datetime.datetime.now().strftime('%Y/%m/%d %H:%M:%S.%f')[:-3]}"
        return f'{code},"{message}"'

    # -- physics ---------------------------------------------------------------------------------------------
    def operating_point(self, function: str | None = None,
                        level: float | None = None) -> tuple[float, float, bool]:
        """(volts, amperes, limit tripped) across the load at a source function and level (default: now), the
        voltage clamped by the overvoltage protection (which then holds the output below the limit: not tripped)."""
        voltage, current, tripped = self._unprotected_point(function, level)
        protection = self._protection_v()
        if abs(voltage) > protection:
            voltage = math.copysign(protection, voltage)
            current = voltage / self.load_ohm if self.terminals == self.load_terminals else 0.0
            tripped = False  # below the voltage at which the current (or voltage) limit held the unprotected output
        return voltage, current, tripped

    def _protection_v(self) -> float:
        level = self.protection[self.function]
        return math.inf if level == "NONE" else float(level.removeprefix("PROT"))

    def _unprotected_point(self, function: str | None, level: float | None) -> tuple[float, float, bool]:
        function = function or self.function
        level = self.level[function] if level is None else level
        if not self.output:
            return 0.0, 0.0, False
        limit = self.limit[function]
        if self.terminals != self.load_terminals:  # an open circuit: no current; a current source runs to its limit
            if function == "VOLT" or level == 0:
                return (level if function == "VOLT" else 0.0), 0.0, False
            return math.copysign(limit, level), 0.0, True
        if function == "VOLT":
            current = level / self.load_ohm
            if abs(current) > limit:
                current = math.copysign(limit, current)
                return current * self.load_ohm, current, True
            return level, current, False
        voltage = level * self.load_ohm
        if abs(voltage) > limit:
            voltage = math.copysign(limit, voltage)
            return voltage, voltage / self.load_ohm, True
        return voltage, level, False

    def _read(self, function: str | None = None, level: float | None = None, delay_s: float = 0.0) -> dict:
        """Take one reading at a level; returns the buffer entry."""
        function = function or self.function
        level = self.level[function] if level is None else level
        voltage, current, tripped = self.operating_point(function, level)
        if self.noise_a:
            current += float(self.rng.normal(0.0, self.noise_a))
        sense = self.sense_function
        measured = {"VOLT": voltage, "CURR": current, "RES": voltage / current if current else OVERFLOW}[sense]
        fixed = self.measure_range[sense]
        if fixed is not None and abs(measured) > OVERRANGE * fixed:
            measured = OVERFLOW
        elif self.relative[sense][0] or self.math[sense][0]:
            measured -= self.relative[sense][1] if self.relative[sense][0] else 0.0
            _, factor, offset = self.math[sense]
            measured = factor * measured + offset if self.math[sense][0] else measured
        if self.average[sense][0]:  # a repeating filter: one reading costs count conversions
            delay_s += (self.average[sense][1] - 1) * self.nplc[sense] / 50.0
        actual = voltage if function == "VOLT" else current
        status = (STAT_LIMIT * tripped + STAT_OUTPUT * self.output
                  + STAT_SENSE * self.remote_sense[self.sense_function])
        self.time_s += delay_s + self.nplc[self.sense_function] / 50.0
        return {"READ": measured, "SOUR": actual if self.readback[function] else level, "SOURSTAT": status,
                "STAT": 0, "REL": self.time_s, "UNIT": UNITS[self.sense_function],
                "SOURUNIT": UNITS[function]}

    # -- helpers ---------------------------------------------------------------------------------------------
    def _buffer_name(self, text: Param) -> str:
        """A reading buffer named by a string (``"defbuffer1"``, quoted, as the 2450's syntax asks)."""
        if string(text) not in BUFFERS:
            raise ScpiError(ILLEGAL_VALUE, f"no reading buffer named {text!r}")
        return text

    def _elements(self, names: tuple[Param, ...]) -> list[str]:
        """Buffer element names (READing, SOURce, ...) as keys of a buffer entry; READing when none given. In the
        binary formats only READing, RELative and SOURce are available (EXTRa is not emulated)."""
        chosen = [ELEMENTS[choice(name, *ELEMENT_NAMES)] for name in names] or ["READ"]
        if self.data_format != "ASC" and not set(chosen) <= BINARY_ELEMENTS:
            raise ScpiError(BINARY_ELEMENT, f"only READing, RELative and SOURce in the {self.data_format} format")
        return chosen

    def _text(self, value: float) -> str:
        """A number as ASCII replies print it: 7 significant digits when automatic, else the set precision."""
        digits = self.ascii_precision or 7
        return f"{value:.{digits - 1}E}"

    def _render(self, entries: list[dict], elements: list[str]) -> str | bytes:
        """Entries as text, or in REAL/SREAL as one indefinite-length block (``#0``, as the 2450 sends) of
        little-endian float64/float32."""
        if self.data_format != "ASC":
            values = np.array([entry[element] for entry in entries for element in elements],
                              dtype="<f8" if self.data_format == "REAL" else "<f4").tobytes()
            return b"#0" + values
        parts = []
        for entry in entries:
            for element in elements:
                value = entry[element]
                parts.append(value if isinstance(value, str) else
                             str(value) if element in ("SOURSTAT", "STAT") else self._text(value))
        return ",".join(parts)

    def _level_value(self, function: str, text: Param) -> float:
        value = number(text, -MAXIMUM[function], MAXIMUM[function])
        fixed = self.source_range[function]
        if fixed is not None and abs(value) > OVERRANGE * fixed:
            raise ScpiError(OUT_OF_RANGE, f"{value:g} is beyond the fixed {fixed:g} source range")
        return value

    @staticmethod
    def _smallest_range(function: str, value: float, overrange: float = 1.0) -> float:
        """The smallest range that holds ``value`` up to ``overrange`` times its nominal value (the top range for
        anything larger): 1 for a range asked for by value, `OVERRANGE` for the one autorange sources on."""
        for candidate in RANGES[function]:
            if abs(value) <= overrange * candidate * (1 + 1e-9):
                return candidate
        return RANGES[function][-1]

    def _source_range_now(self, function: str) -> float:
        fixed = self.source_range[function]
        return fixed if fixed is not None else self._smallest_range(function, self.level[function], OVERRANGE)

    def _fit_envelope(self, function: str) -> None:
        """Lower a limit the present source range cannot hold to the envelope's, with a warning that does not
        reach the error queue, as the 2450 does."""
        top, cap = ENVELOPE[function]
        if self._source_range_now(function) >= top and self.limit[function] > cap:
            name = "current" if function == "VOLT" else "voltage"
            self.warnings.append(f"{name} limit lowered from {self.limit[function]:g} to {cap:g} for the {top:g} "
                                 "source range")
            self.limit[function] = cap

    def _pick_range(self, function: str, text: Param) -> float:
        return self._smallest_range(function, number(text, -MAXIMUM[function], MAXIMUM[function]))

    # -- source subsystem ------------------------------------------------------------------------------------
    def _set_source_function(self, text: Param) -> None:
        function = _function(text, "VOLTage", "CURRent")
        if self.sense_function == "RES":
            raise ScpiError(SETTINGS_CONFLICT, "the source function cannot change while the measure function "
                                               "is resistance")
        self.function = function

    def _get_source_function(self) -> str:
        return self.function

    def _set_level(self, function: str, text: Param) -> None:
        self.level[function] = self._level_value(function, text)
        self._fit_envelope(function)

    def _get_level(self, function: str) -> str:
        return self._text(self.level[function])

    def _set_limit(self, function: str, text: Param) -> None:
        other = "CURR" if function == "VOLT" else "VOLT"
        value = abs(number(text, -MAXIMUM[other], MAXIMUM[other]))
        if value < MINIMUM_LIMIT[function]:
            raise ScpiError(OUT_OF_RANGE, f"limit {value:g} below {MINIMUM_LIMIT[function]:g}")
        fixed = self.measure_range[other]
        if fixed is not None and value <= 1e-3 * fixed:
            raise ScpiError(SETTINGS_CONFLICT, f"limit {value:g} not above 0.1 % of the {fixed:g} range")
        self.limit[function] = value
        self._fit_envelope(function)

    def _get_limit(self, function: str) -> str:
        return self._text(self.limit[function])

    def _set_protection(self, text: Param) -> None:
        self.protection[self.function] = choice(text, *PROTECTION_NAMES)

    def _get_protection(self) -> str:
        return self.protection[self.function]

    def _protection_tripped(self) -> str:
        return "1" if abs(self._unprotected_point(None, None)[0]) > self._protection_v() else "0"

    def _tripped(self, function: str) -> str:
        return "1" if function == self.function and self.operating_point()[2] else "0"

    def _set_source_range(self, function: str, text: Param) -> None:
        chosen = self._pick_range(function, text)
        if abs(self.level[function]) > OVERRANGE * chosen:
            raise ScpiError(SETTINGS_CONFLICT, f"level {self.level[function]:g} exceeds the {chosen:g} range")
        self.source_range[function] = chosen
        self._fit_envelope(function)

    def _get_source_range(self, function: str) -> str:
        return self._text(self._source_range_now(function))

    def _set_source_auto(self, function: str, text: Param) -> None:
        if boolean(text):
            self.source_range[function] = None
            self._fit_envelope(function)
        elif self.source_range[function] is None:
            self.source_range[function] = self._source_range_now(function)

    def _get_source_auto(self, function: str) -> str:
        return "1" if self.source_range[function] is None else "0"

    def _set_readback(self, function: str, text: Param) -> None:
        self.readback[function] = boolean(text)

    def _get_readback(self, function: str) -> str:
        return "1" if self.readback[function] else "0"

    def _set_list(self, function: str, *values: Param) -> None:
        self.source_list[function] = self._list_values(function, values, [])

    def _append_list(self, function: str, *values: Param) -> None:
        self.source_list[function] = self._list_values(function, values, self.source_list[function])

    def _list_values(self, function: str, values: tuple[Param, ...], existing: list[float]) -> list[float]:
        if not values:
            raise ScpiError(MISSING_PARAMETER, "a source list needs at least one value")
        if len(values) > LIST_CHUNK:
            raise ScpiError(TOO_MUCH_DATA, f"{len(values)} values in one command; at most {LIST_CHUNK}, "
                                           "append the rest")
        if len(existing) + len(values) > LIST_MAX:
            raise ScpiError(TOO_MUCH_DATA, f"a source list holds at most {LIST_MAX} values")
        return [*existing, *(self._level_value(function, value) for value in values)]

    def _get_list(self, function: str) -> str:
        return ",".join(self._text(value) for value in self.source_list[function])

    def _set_sweep(self, function: str, start: Param, delay: Param = "0", count: Param = "1",
                   fail_abort: Param = "ON", buffer: Param = DEFAULT_BUFFER) -> None:
        points = self.source_list[function]
        if function != self.function:
            raise ScpiError(SETTINGS_CONFLICT, f"the source function is {self.function}, not {function}")
        if not points:
            raise ScpiError(SETTINGS_CONFLICT, "the source list is empty")
        first = number(start, 1, len(points))
        delay_s = number(delay, 0, 10_000)
        if 0 < delay_s < 50e-6:
            raise ScpiError(OUT_OF_RANGE, "delay must be 0 or 50 us to 10000 s")
        repeats = number(count, 1, 268_435_455)  # 0 (run forever) is not emulated
        if first != int(first) or repeats != int(repeats):
            raise ScpiError(OUT_OF_RANGE, "start index and count are integers")
        self.sweep = {"function": function, "start": int(first), "delay_s": delay_s, "count": int(repeats),
                      "abort": boolean(fail_abort), "buffer": self._buffer_name(buffer)}

    # -- sense subsystem -------------------------------------------------------------------------------------
    def _set_sense_function(self, text: Param) -> None:
        """The measure function, a string (``"CURR"``, ``"VOLT:DC"``), as ``[:SENSe[1]]:FUNCtion "<function>"``."""
        name = string(text).upper().removesuffix(":DC")
        self.sense_function = _function(name, "VOLTage", "CURRent", "RESistance")

    def _get_sense_function(self) -> str:
        return f'"{self.sense_function}:DC"' if self.sense_function != "RES" else '"RES"'

    def _set_nplc(self, function: str, text: Param) -> None:
        self.nplc[function] = number(text, 0.01, 10.0, default=1.0)

    def _get_nplc(self, function: str) -> str:
        return self._text(self.nplc[function])

    def _set_measure_range(self, function: str, text: Param) -> None:
        chosen = self._pick_range(function, text)
        source = "CURR" if function == "VOLT" else "VOLT"  # the source whose limit this range measures
        if self.limit[source] <= 1e-3 * chosen:
            raise ScpiError(SETTINGS_CONFLICT, f"the {self.limit[source]:g} limit is not above 0.1 % of the "
                                               f"{chosen:g} range")
        self.measure_range[function] = chosen

    def _get_measure_range(self, function: str) -> str:
        fixed = self.measure_range[function]
        return self._text(fixed if fixed is not None else RANGES[function][-1])

    def _set_measure_auto(self, function: str, text: Param) -> None:
        if boolean(text):
            self.measure_range[function] = None
        elif self.measure_range[function] is None:
            self.measure_range[function] = RANGES[function][-1]

    def _get_measure_auto(self, function: str) -> str:
        return "1" if self.measure_range[function] is None else "0"

    def _set_remote_sense(self, function: str, text: Param) -> None:
        """A change switches the output off (what the 2400 family documents; assumed of the 2450 too)."""
        enabled = boolean(text)
        if enabled != self.remote_sense[function]:
            self.output = False
        self.remote_sense[function] = enabled

    def _get_remote_sense(self, function: str) -> str:
        return "1" if self.remote_sense[function] else "0"

    def _set_flag(self, table: str, function: str, text: Param) -> None:
        """Switch a reading modifier (``relative``, ``math``, ``average``) on or off."""
        getattr(self, table)[function][0] = boolean(text)

    def _get_flag(self, table: str, function: str) -> str:
        return "1" if getattr(self, table)[function][0] else "0"

    def _set_relative_level(self, function: str, text: Param) -> None:
        self.relative[function][1] = number(text)

    def _set_autozero(self, function: str, text: Param) -> None:
        self.autozero[function] = boolean(text)

    # -- handlers --------------------------------------------------------------------------------------------
    _sour_func = _handler("SOURce#:FUNCtion[:MODE]", "_set_source_function")
    _sour_func_q = _handler("SOURce#:FUNCtion[:MODE]?", "_get_source_function")
    _volt = _handler("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "_set_level", "VOLT")
    _volt_q = _handler("SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]?", "_get_level", "VOLT")
    _curr = _handler("SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]", "_set_level", "CURR")
    _curr_q = _handler("SOURce#:CURRent[:LEVel][:IMMediate][:AMPLitude]?", "_get_level", "CURR")
    _ilim = _handler("SOURce#:VOLTage:ILIMit[:LEVel]", "_set_limit", "VOLT")
    _ilim_q = _handler("SOURce#:VOLTage:ILIMit[:LEVel]?", "_get_limit", "VOLT")
    _vlim = _handler("SOURce#:CURRent:VLIMit[:LEVel]", "_set_limit", "CURR")
    _vlim_q = _handler("SOURce#:CURRent:VLIMit[:LEVel]?", "_get_limit", "CURR")
    _ilim_trip = _handler("SOURce#:VOLTage:ILIMit[:LEVel]:TRIPped?", "_tripped", "VOLT")
    _vlim_trip = _handler("SOURce#:CURRent:VLIMit[:LEVel]:TRIPped?", "_tripped", "CURR")
    _volt_prot = _handler("SOURce#:VOLTage:PROTection[:LEVel]", "_set_protection")
    _volt_prot_q = _handler("SOURce#:VOLTage:PROTection[:LEVel]?", "_get_protection")
    _volt_prot_trip = _handler("SOURce#:VOLTage:PROTection[:LEVel]:TRIPped?", "_protection_tripped")
    _volt_rang = _handler("SOURce#:VOLTage:RANGe", "_set_source_range", "VOLT")
    _volt_rang_q = _handler("SOURce#:VOLTage:RANGe?", "_get_source_range", "VOLT")
    _curr_rang = _handler("SOURce#:CURRent:RANGe", "_set_source_range", "CURR")
    _curr_rang_q = _handler("SOURce#:CURRent:RANGe?", "_get_source_range", "CURR")
    _volt_auto = _handler("SOURce#:VOLTage:RANGe:AUTO", "_set_source_auto", "VOLT")
    _volt_auto_q = _handler("SOURce#:VOLTage:RANGe:AUTO?", "_get_source_auto", "VOLT")
    _curr_auto = _handler("SOURce#:CURRent:RANGe:AUTO", "_set_source_auto", "CURR")
    _curr_auto_q = _handler("SOURce#:CURRent:RANGe:AUTO?", "_get_source_auto", "CURR")
    _volt_rb = _handler("SOURce#:VOLTage:READ:BACK", "_set_readback", "VOLT")
    _volt_rb_q = _handler("SOURce#:VOLTage:READ:BACK?", "_get_readback", "VOLT")
    _curr_rb = _handler("SOURce#:CURRent:READ:BACK", "_set_readback", "CURR")
    _curr_rb_q = _handler("SOURce#:CURRent:READ:BACK?", "_get_readback", "CURR")
    _volt_list = _handler("SOURce#:LIST:VOLTage", "_set_list", "VOLT")
    _volt_list_q = _handler("SOURce#:LIST:VOLTage?", "_get_list", "VOLT")
    _volt_list_app = _handler("SOURce#:LIST:VOLTage:APPend", "_append_list", "VOLT")
    _curr_list = _handler("SOURce#:LIST:CURRent", "_set_list", "CURR")
    _curr_list_q = _handler("SOURce#:LIST:CURRent?", "_get_list", "CURR")
    _curr_list_app = _handler("SOURce#:LIST:CURRent:APPend", "_append_list", "CURR")
    _volt_sweep = _handler("SOURce#:SWEep:VOLTage:LIST", "_set_sweep", "VOLT")
    _curr_sweep = _handler("SOURce#:SWEep:CURRent:LIST", "_set_sweep", "CURR")

    _sens_func = _handler("[SENSe#:]FUNCtion[:ON]", "_set_sense_function")
    _sens_func_q = _handler("[SENSe#:]FUNCtion[:ON]?", "_get_sense_function")
    _sens_volt_nplc = _handler("[SENSe#:]VOLTage[:DC]:NPLCycles", "_set_nplc", "VOLT")
    _sens_volt_nplc_q = _handler("[SENSe#:]VOLTage[:DC]:NPLCycles?", "_get_nplc", "VOLT")
    _sens_curr_nplc = _handler("[SENSe#:]CURRent[:DC]:NPLCycles", "_set_nplc", "CURR")
    _sens_curr_nplc_q = _handler("[SENSe#:]CURRent[:DC]:NPLCycles?", "_get_nplc", "CURR")
    _sens_volt_rang = _handler("[SENSe#:]VOLTage[:DC]:RANGe[:UPPer]", "_set_measure_range", "VOLT")
    _sens_volt_rang_q = _handler("[SENSe#:]VOLTage[:DC]:RANGe[:UPPer]?", "_get_measure_range", "VOLT")
    _sens_curr_rang = _handler("[SENSe#:]CURRent[:DC]:RANGe[:UPPer]", "_set_measure_range", "CURR")
    _sens_curr_rang_q = _handler("[SENSe#:]CURRent[:DC]:RANGe[:UPPer]?", "_get_measure_range", "CURR")
    _sens_volt_auto = _handler("[SENSe#:]VOLTage[:DC]:RANGe:AUTO", "_set_measure_auto", "VOLT")
    _sens_volt_auto_q = _handler("[SENSe#:]VOLTage[:DC]:RANGe:AUTO?", "_get_measure_auto", "VOLT")
    _sens_curr_auto = _handler("[SENSe#:]CURRent[:DC]:RANGe:AUTO", "_set_measure_auto", "CURR")
    _sens_curr_auto_q = _handler("[SENSe#:]CURRent[:DC]:RANGe:AUTO?", "_get_measure_auto", "CURR")
    _sens_volt_rsen = _handler("[SENSe#:]VOLTage[:DC]:RSENse", "_set_remote_sense", "VOLT")
    _sens_volt_rsen_q = _handler("[SENSe#:]VOLTage[:DC]:RSENse?", "_get_remote_sense", "VOLT")
    _sens_curr_rsen = _handler("[SENSe#:]CURRent[:DC]:RSENse", "_set_remote_sense", "CURR")
    _sens_curr_rsen_q = _handler("[SENSe#:]CURRent[:DC]:RSENse?", "_get_remote_sense", "CURR")

    _sens_volt_rel = _handler("[SENSe#:]VOLTage[:DC]:RELative:STATe", "_set_flag", "relative", "VOLT")
    _sens_curr_rel = _handler("[SENSe#:]CURRent[:DC]:RELative:STATe", "_set_flag", "relative", "CURR")
    _sens_volt_rel_q = _handler("[SENSe#:]VOLTage[:DC]:RELative:STATe?", "_get_flag", "relative", "VOLT")
    _sens_curr_rel_q = _handler("[SENSe#:]CURRent[:DC]:RELative:STATe?", "_get_flag", "relative", "CURR")
    _sens_volt_rel_level = _handler("[SENSe#:]VOLTage[:DC]:RELative", "_set_relative_level", "VOLT")
    _sens_curr_rel_level = _handler("[SENSe#:]CURRent[:DC]:RELative", "_set_relative_level", "CURR")
    _sens_volt_aver = _handler("[SENSe#:]VOLTage[:DC]:AVERage[:STATe]", "_set_flag", "average", "VOLT")
    _sens_curr_aver = _handler("[SENSe#:]CURRent[:DC]:AVERage[:STATe]", "_set_flag", "average", "CURR")
    _sens_volt_azer = _handler("[SENSe#:]VOLTage[:DC]:AZERo[:STATe]", "_set_autozero", "VOLT")
    _sens_curr_azer = _handler("[SENSe#:]CURRent[:DC]:AZERo[:STATe]", "_set_autozero", "CURR")
    _calc_volt_math = _handler("CALCulate#:VOLTage[:DC]:MATH:STATe", "_set_flag", "math", "VOLT")
    _calc_curr_math = _handler("CALCulate#:CURRent[:DC]:MATH:STATe", "_set_flag", "math", "CURR")
    _calc_volt_math_q = _handler("CALCulate#:VOLTage[:DC]:MATH:STATe?", "_get_flag", "math", "VOLT")
    _calc_curr_math_q = _handler("CALCulate#:CURRent[:DC]:MATH:STATe?", "_get_flag", "math", "CURR")

    @scpi("FORMat[:DATA]")
    def _format(self, text: Param) -> None:
        self.data_format = _function(text, "ASCii", "REAL", "SREAL")

    @scpi("FORMat[:DATA]?")
    def _format_q(self) -> str:
        return self.data_format

    @scpi("FORMat:ASCii:PRECision")
    def _precision(self, text: Param) -> None:
        value = number(text, 0, 16, default=0)
        if value != int(value):
            raise ScpiError(OUT_OF_RANGE, "the ASCII precision is a whole number of digits, 0 (automatic) to 16")
        self.ascii_precision = int(value)

    @scpi("FORMat:ASCii:PRECision?")
    def _precision_q(self) -> str:
        return str(self.ascii_precision)

    @scpi("ROUTe:TERMinals")
    def _terminals(self, text: Param) -> None:
        """Select the front or rear terminals; a change switches the output off."""
        terminals = _function(text, "FRONt", "REAR")
        if terminals != self.terminals:
            self.output = False
        self.terminals = terminals

    @scpi("ROUTe:TERMinals?")
    def _terminals_q(self) -> str:
        return self.terminals

    @scpi("OUTPut#[:STATe]")
    def _output(self, n: int, state: Param) -> None:
        if n != 1:
            raise ScpiError(UNDEFINED_HEADER, "OUTPut suffix must be 1")
        self.output = boolean(state)

    @scpi("OUTPut#[:STATe]?")
    def _output_q(self, n: int) -> str:
        if n != 1:
            raise ScpiError(UNDEFINED_HEADER, "OUTPut suffix must be 1")
        return "1" if self.output else "0"

    # -- measuring, triggering and buffers -------------------------------------------------------------------
    @scpi("READ?")
    def _read_q(self, buffer: Param = DEFAULT_BUFFER, *elements: Param) -> str:
        name, chosen = self._buffer_name(buffer), self._elements(elements)
        entry = self._read()
        self.buffer[name].append(entry)
        return self._render([entry], chosen)

    def _measure(self, function: str, buffer: Param = DEFAULT_BUFFER, *elements: Param) -> str:
        """``:MEASure:<function>?``: select the measure function, then read as ``READ?``."""
        self.sense_function = function
        return self._read_q(buffer, *elements)

    _measure_q = _handler("MEASure?", "_read_q")  # the present function
    _measure_volt_q = _handler("MEASure:VOLTage[:DC]?", "_measure", "VOLT")
    _measure_curr_q = _handler("MEASure:CURRent[:DC]?", "_measure", "CURR")
    _measure_res_q = _handler("MEASure:RESistance?", "_measure", "RES")

    @scpi("INITiate[:IMMediate]")
    def _initiate(self) -> None:
        """Run the configured sweep (or take one reading into defbuffer1 when none is configured)."""
        if self.sweep is None:
            self.buffer["defbuffer1"].append(self._read())
            return
        sweep = self.sweep
        points = self.source_list[sweep["function"]][sweep["start"] - 1:]
        self.output = True  # the sweep's trigger model switches the output on
        for _ in range(sweep["count"]):
            for level in points:
                self.level[sweep["function"]] = level
                self._fit_envelope(sweep["function"])
                entry = self._read(sweep["function"], level, sweep["delay_s"])
                self.buffer[sweep["buffer"]].append(entry)
                if sweep["abort"] and entry["SOURSTAT"] & STAT_LIMIT:
                    return

    @scpi("ABORt")
    def _abort(self) -> None:
        """Every sweep has finished by the time a command is read: nothing to stop."""

    @scpi("TRACe:DATA?")
    def _trace_data(self, start: Param, end: Param, buffer: Param = DEFAULT_BUFFER, *elements: Param) -> str:
        name, chosen = self._buffer_name(buffer), self._elements(elements)
        stored = self.buffer[name]
        first = number(start, 1, max(len(stored), 1))
        last = number(end, first, max(len(stored), 1))
        if not stored or first != int(first) or last != int(last):
            raise ScpiError(OUT_OF_RANGE, f"indices {start}..{end} outside the {len(stored)} stored readings")
        return self._render(list(itertools.islice(stored, int(first) - 1, int(last))), chosen)

    @scpi("TRACe:ACTual?")
    def _trace_actual(self, buffer: Param = DEFAULT_BUFFER) -> str:
        return str(len(self.buffer[self._buffer_name(buffer)]))

    @scpi("TRACe:CLEar")
    def _trace_clear(self, buffer: Param = DEFAULT_BUFFER) -> None:
        self.buffer[self._buffer_name(buffer)].clear()
