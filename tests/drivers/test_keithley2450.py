"""Keithley 2450 driver: byte-exact protocol, limits refused before sending, and runs against the emulator.

The emulator runs are the real driver over pyvisa-py (``TCPIP::127.0.0.1::PORT::SOCKET``) talking to
`Keithley2450Emulator` served by `TcpServer`, with a 1 kΩ resistor across the terminals.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from drivers.keithley2450 import Keithley2450
from hil.clock import VirtualClock
from hil.errors import ConfigError, DeviceError, LimitError, TransportError, TransportTimeout
from hil.instruments import SourceMeter
from hil.testing import TIMED_OUT, Exchange, ProtocolTransport, expected_protocol
from hil.transport import VisaTransport
from simulators.emulators.keithley2450 import Keithley2450Emulator
from simulators.emulators.scpi import SETTINGS_CONFLICT, ScpiError
from simulators.emulators.server import TcpServer
from tests.test_store import disk_full_beyond

IDN = b"KEITHLEY INSTRUMENTS,MODEL 2450,04000000,1.7.12b"
NO_ERROR: Exchange = (b"SYST:ERR?", b'0,"No error;0;0 0"')


def connected(output: bytes = b"0", function: bytes = b"VOLT", level: bytes = b"0.000000E+00",
              terminals: bytes = b"FRON", select: bytes | None = None) -> list[Exchange]:
    """What `connect` sends and reads: clear status, identity, command set, ASCII data, output state, terminals
    (``select`` them where they differ), the error check, source function and level."""
    return [(b"*CLS", None), (b"*IDN?", IDN), (b"*LANG?", b"SCPI"), (b":FORM:DATA ASC;:FORM:ASC:PREC 0", None),
            (b":OUTP?", output),
            (b":ROUT:TERM?", terminals), *([(b":ROUT:TERM " + select, None)] if select else []), NO_ERROR,
            (b":SOUR:FUNC?", function), (b":SOUR:" + function + b"?", level)]


def reading_as_is(measure: str) -> list[Exchange]:
    """`configure` turns off whatever would change or slow a reading (relative, math, averaging), autozero on, and
    sets the ASCII precision back to automatic (all of a reading's digits)."""
    m = measure.encode()
    return [(b":SENS:" + m + b":REL:STAT OFF", None), (b":CALC:" + m + b":MATH:STAT OFF", None),
            (b":SENS:" + m + b":AVER OFF", None), (b":SENS:" + m + b":AZER ON", None), (b":FORM:ASC:PREC 0", None)]


def configured_voltage(compliance: bytes = b"0.001", nplc: bytes = b"1", protection: bytes = b"NONE") -> list[Exchange]:
    """`configure("voltage", ...)` with auto ranges, remote sense already off and the overvoltage protection already
    ``protection`` (NONE for the 2450's own ±210 V limit): source V, measure I, then the error check and the limit
    read back."""
    return [(b":SENS:CURR:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", protection), (b':SENS:FUNC "CURR"', None),
            (b":SOUR:FUNC VOLT", None), (b":SOUR:VOLT:PROT " + protection, None),
            (b":SENS:CURR:NPLC " + nplc, None), (b":SOUR:VOLT:READ:BACK ON", None), *reading_as_is("CURR"),
            (b":SOUR:VOLT:RANG:AUTO ON", None), (b":SENS:CURR:RANG:AUTO ON", None),
            (b":SOUR:VOLT:ILIM " + compliance, None), NO_ERROR, (b":SOUR:VOLT:ILIM?", compliance)]


OUTPUT_ON: list[Exchange] = [(b":OUTP ON", None), NO_ERROR]


def swept(levels: bytes, n_points: int, data: bytes, delay: bytes = b"0", limit: bytes = b"1.000000E-03"
          ) -> list[Exchange]:
    """A voltage `sweep` short enough to wait on with ``*WAI``: the source list ``levels``, the sweep with ``delay``
    (s), the error check, the run, and the buffer read answered with ``data`` (the current ``limit`` read with it)."""
    return [(b':TRAC:CLE "defbuffer1"', None), (b":SOUR:LIST:VOLT " + levels, None),
            (b":SOUR:SWE:VOLT:LIST 1, " + delay + b", 1, OFF", None), NO_ERROR, (b":INIT", None), (b"*WAI", None),
            buffer_read(n_points, data, levels.split(b",")[-1].strip(), limit)]


@contextlib.contextmanager
def on_for_a_sweep(sweep: list[Exchange]) -> Iterator[Keithley2450]:
    """A 2450 connected, sourcing voltage at a 1 mA compliance with its output on, that expects ``sweep`` next."""
    with expected_protocol(smu(), connected() + configured_voltage() + OUTPUT_ON + sweep) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_output(True)
        yield k


#: A voltage read and its reply; the error check's reply for a query the instrument discarded.
READ: Exchange = (b':READ? "defbuffer1", SOUR, READ', b"2.000000E+00,1.000000E-03")


def state_read(output: bytes = b"0", function: bytes = b"VOLT", level: bytes = b"0.000000E+00",
               limit: bytes = b"1.000000E-03", source: bytes = b"VOLT") -> tuple[bytes, bytes]:
    """The queries of what a measurement relies on, sent in the message of the query that ends it, and their replies:
    the output state, the source function, its level and limit (those of the ``source`` function), the measure
    function with its relative offset and math off, and the ASCII precision automatic, which must be as the driver
    left them."""
    name, measure = (b"ILIM", b"CURR") if source == b"VOLT" else (b"VLIM", b"VOLT")
    return (b":OUTP?;:SOUR:FUNC?;:SOUR:%s?;:SOUR:%s:%s?;:SENS:FUNC?;:SENS:%s:REL:STAT?;:CALC:%s:MATH:STAT?;"
            b":FORM:ASC:PREC?" % (source, source, name, measure, measure),
            b";".join([output, function, level, limit, b'"%s:DC"' % measure, b"0", b"0", b"0"]))


def unchanged(tripped: bytes = b"0", source: bytes = b"VOLT", **state: bytes) -> Exchange:
    """What `measure` reads after its reading, in one message: the limit state, then `state_read`."""
    query, reply = state_read(source=source, **state)
    name = b"ILIM" if source == b"VOLT" else b"VLIM"
    return b":SOUR:%s:%s:TRIP?;" % (source, name) + query, tripped + b";" + reply


def buffer_read(n_points: int, data: bytes, last: bytes, limit: bytes = b"1.000000E-03") -> Exchange:
    """The read of a voltage sweep's ``n_points`` from the buffer, answered with ``data``, and `state_read` in the
    same message, answered as the sweep leaves the 2450: output on, at the ``last`` level, with its ``limit``."""
    query, reply = state_read(output=b"1", level=last, limit=limit)
    return b':TRAC:DATA? 1, %d, "defbuffer1", SOUR, READ, SOURSTAT;' % n_points + query, data + b";" + reply


INTERRUPTED: Exchange = (b"SYST:ERR?", b'-410,"Query INTERRUPTED;1;2026/11/28 10:00:00.000"')


@contextlib.contextmanager
def read_again_after_a_timeout(then: list[Exchange]) -> Iterator[Keithley2450]:
    """A 2450 sourcing voltage whose read timed out and was read again, the resynchronisation before it taking the
    late reply; it expects ``then`` next."""
    exchanges = [*connected(), *configured_voltage(), (READ[0], TIMED_OUT),
                 (b"*ESE 1;*ESE?;*IDN?", READ[1]), (None, b"1;" + IDN), (b"*ESE 0", None),
                 READ, unchanged(), *then]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(TransportTimeout):
            k.measure()
        k.measure()
        yield k


class PatienceRecorded(ProtocolTransport):
    """A `ProtocolTransport` that records the timeout (s) each command was written under."""

    def __init__(self, exchanges: list[Exchange]):
        super().__init__(exchanges)
        self.timeouts: dict[bytes, float] = {}

    def _write_raw(self, data: bytes) -> None:
        self.timeouts[data.rstrip(b"\n")] = self.timeout_s
        super()._write_raw(data)


def smu(clock: VirtualClock | None = None, **options: object) -> Callable[[ProtocolTransport], Keithley2450]:
    return lambda transport: Keithley2450(transport, clock=clock or VirtualClock(), **options)  # type: ignore[arg-type]


# -- (a) byte-exact protocol ---------------------------------------------------------------------------------
def test_connect_identifies_and_reads_the_source_state() -> None:
    with expected_protocol(smu(), connected(output=b"1", function=b"CURR", level=b"1.000000E-03")) as k:
        k.connect()
        assert k.identify() == IDN.decode()
        assert (k.mode, k.level, k.output_on) == ("current", 1e-3, True)
        assert k.compliance is None  # unknown until configure() sets it


def test_connect_refuses_another_model_and_closes() -> None:
    """A 2450 set to emulate a 2400 answers as one: the advice is its command-set menu."""
    exchanges = [(b"*CLS", None), (b"*IDN?", b"KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234,C30")]
    with expected_protocol(smu(), exchanges) as k:
        with pytest.raises(DeviceError, match=r"not a Keithley 2450 on its SCPI command set \(MENU > System"):
            k.connect()
        assert not k.connected and not k.transport.is_open


def test_connect_to_another_instrument_asks_for_the_resource_not_for_a_command_set() -> None:
    """Another maker's instrument at the address is no 2450 in another command set: its menu would be no help."""
    exchanges = [(b"*CLS", None), (b"*IDN?", b"Keysight Technologies,33522B,MY00000000,4.00-3.15-2.00-58-00")]
    with expected_protocol(smu(), exchanges) as k, \
            pytest.raises(DeviceError, match=r"^Keithley2450: protocol-test answers 'Keysight Technologies,33522B,"
                                             r".*', not a Keithley 2450; check that the resource is the 2450's$"):
        k.connect()


def test_connect_refuses_a_2450_on_its_tsp_command_set_and_closes() -> None:
    exchanges = [(b"*CLS", None), (b"*IDN?", IDN), (b"*LANG?", b"TSP")]
    with expected_protocol(smu(), exchanges) as k:
        with pytest.raises(DeviceError, match="runs its 'TSP' command set; this driver needs SCPI"):
            k.connect()
        assert not k.connected and not k.transport.is_open


def test_connect_selects_the_configured_terminals_where_a_previous_user_left_the_others_with_the_output_off() -> None:
    with expected_protocol(smu(terminals="rear"), connected(select=b"REAR")) as k:
        k.connect()
        assert k.snapshot()["terminals"] == "rear"
    with expected_protocol(smu(), connected(terminals=b"REAR", select=b"FRON")) as k:
        k.connect()


def test_connect_refuses_other_terminals_with_the_output_on_and_leaves_it_on() -> None:
    exchanges = connected(output=b"1", terminals=b"REAR")[:6]  # nothing written after the terminals are read
    with expected_protocol(smu(), exchanges) as k:
        with pytest.raises(DeviceError, match=r"^Keithley2450: the 2450's rear terminals are selected with the "
                                              r"output on, but its terminals option is front; switch the output off"):
            k.connect()
        assert not k.connected and not k.transport.is_open


@pytest.mark.parametrize("terminals", ["side", "FRONT", None, ["front"]])
def test_unknown_terminals_are_a_config_error(terminals: object) -> None:
    """A list was a TypeError (unhashable type), not the driver's refusal."""
    with pytest.raises(ConfigError, match=r"^terminals: .* is neither 'front' nor 'rear'"):
        Keithley2450(None, terminals=terminals)  # type: ignore[arg-type]


@pytest.mark.parametrize(("remote_sense", "said"), [("no", "'no'"), ("false", "'false'"), (1, "1")])
def test_a_remote_sense_that_is_not_true_or_false_is_a_config_error(remote_sense: object, said: str) -> None:
    """bool() took remote_sense="no" as true: a script's 2450 sensed at 4 wires where 2 were wired."""
    with pytest.raises(ConfigError) as caught:
        Keithley2450(None, remote_sense=remote_sense)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.detail) == (
        "remote_sense", f"{said} is not true or false (whether the 2450 senses at 4 wires)")
    assert Keithley2450(None, remote_sense=np.True_).remote_sense is True  # type: ignore[arg-type]


def test_configure_voltage_source_with_current_compliance() -> None:
    with expected_protocol(smu(), connected() + configured_voltage()) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        assert (k.mode, k.compliance, k.nplc, k.level) == ("voltage", 1e-3, 1.0, 0.0)


def test_configure_refuses_a_mode_given_as_an_array_in_one_line_and_sends_nothing() -> None:
    """The 2450's own compliance check asked ``mode in MIN_COMPLIANCE`` first: an array was a TypeError ('unhashable
    type'), not the base class's refusal."""
    with expected_protocol(smu(), connected()) as k:
        k.connect()
        with pytest.raises(LimitError, match=r"^Keithley2450: source mode must be 'voltage' or 'current', got array"):
            k.configure(np.array(["voltage", "current"]), 1e-3)  # type: ignore[arg-type]


def test_configure_current_source_ramps_a_live_output_to_zero_and_switches_it_off() -> None:
    exchanges = [
        *connected(output=b"1", level=b"2.000000E+00"), (b":SOUR:VOLT 1", None), NO_ERROR,
        (b":SOUR:VOLT 0", None), NO_ERROR, (b":OUTP OFF", None), NO_ERROR,
        (b":SENS:VOLT:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"NONE"), (b':SENS:FUNC "VOLT"', None),
        (b":SOUR:FUNC CURR", None), (b":SOUR:VOLT:PROT NONE", None),
        (b":SOUR:CURR 0", None),  # the level a previous user left could lower the limit (power envelope)
        (b":SENS:VOLT:RSEN ON", None),
        (b":SENS:VOLT:NPLC 0.1", None), (b":SOUR:CURR:READ:BACK ON", None), *reading_as_is("VOLT"),
        (b":SOUR:CURR:RANG:AUTO ON", None), (b":SENS:VOLT:RANG:AUTO ON", None), (b":SOUR:CURR:VLIM 5", None),
        NO_ERROR, (b":SOUR:CURR:VLIM?", b"5.000000E+00"),
    ]
    with expected_protocol(smu(remote_sense=True, limits={"voltage_v": {"max_step": 1.0}}), exchanges) as k:
        k.connect()
        k.configure("current", 5.0, nplc=0.1)
        assert (k.mode, k.level, k.output_on, k.compliance) == ("current", 0.0, False, 5.0)


def test_remote_sense_is_sent_only_where_it_differs_and_never_with_the_output_on() -> None:
    sensed = [(b":SENS:CURR:RSEN?", b"1"), *configured_voltage()[1:]]  # already ON: nothing sent for it
    exchanges = [*connected(), *sensed, *OUTPUT_ON, *sensed, (b":SENS:CURR:RSEN?", b"0")]
    with expected_protocol(smu(remote_sense=True), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_output(True)
        k.configure("voltage", 1e-3)  # the output stays on
        with pytest.raises(LimitError, match=r"remote sense must change to ON.*call set_output\(False\) before"):
            k.configure("voltage", 1e-3)  # a previous user switched it off since: changing it could switch off
        assert k.output_on is True


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-2.0, 2.0, "PROT5"),  # PROT2 may clamp anywhere from 1.9 V (5 % tolerance): it could clip a level at the limit
    (0.0, 1.9, "PROT2"), (-1.904, 1.904, "PROT5"),  # 1.904 V is within 5 % of 2 V, yet beyond PROT2's lowest clamp
    (-5.0, 0.0, "PROT10"), (-20.0, 10.0, "PROT40"), (-171.0, 171.0, "PROT180"),
    (-171.4, 171.4, "NONE"), (-172.0, 172.0, "NONE"), (-210.0, 210.0, "NONE"),
])
def test_the_overvoltage_protection_is_the_lowest_level_clear_of_the_voltage_limit(low: float, high: float,
                                                                                    expected: str) -> None:
    k = Keithley2450(None, limits={"voltage_v": {"min": low, "max": high}})  # type: ignore[arg-type]
    assert (k.protection, k.snapshot()["overvoltage_protection"]) == (expected, expected)


def test_configure_sets_the_overvoltage_protection_of_the_lab_limit_only_with_the_output_off() -> None:
    narrowed = smu(limits={"voltage_v": {"min": -2, "max": 2}})
    exchanges = [*connected(), *configured_voltage(protection=b"PROT5")]
    exchanges[len(connected()) + 1] = (b":SOUR:VOLT:PROT?", b"NONE")  # as a previous user left it
    with expected_protocol(narrowed, exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
    live = [*connected(output=b"1"), (b":SENS:CURR:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"PROT20")]
    with expected_protocol(narrowed, live) as k:
        k.connect()
        with pytest.raises(LimitError, match=r"overvoltage protection must change from PROT20 to PROT5 \(for the "
                                             r"voltage limit -2\.\.2 V\).*call set_output\(False\) before"):
            k.configure("voltage", 1e-3)  # nothing sent: the output stays on as it was
        assert k.output_on is True
    garbage = [*connected(), (b":SENS:CURR:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"5")]
    with expected_protocol(narrowed, garbage) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"reply '5' to ':SOUR:VOLT:PROT\?' is not an overvoltage protection"):
            k.configure("voltage", 1e-3)


def test_set_level_ramps_in_steps_of_the_lab_max_step() -> None:
    clock = VirtualClock()
    limits = {"voltage_v": {"max_step": 0.5, "ramp_rate": 1.0}}
    exchanges = connected() + configured_voltage() + [
        (b":SOUR:VOLT 0.4", None), NO_ERROR,
        (b":SOUR:VOLT 0.8", None), NO_ERROR,
        (b":SOUR:VOLT 1.2", None), NO_ERROR,
    ]
    with expected_protocol(smu(clock, limits=limits), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_level(1.2)
        assert k.level == 1.2
        assert clock.now() == pytest.approx(1.2)  # three 0.4 V steps at 1 V/s


def test_output_on_and_off() -> None:
    with expected_protocol(smu(), connected() + configured_voltage() + OUTPUT_ON + [(b":OUTP OFF", None),
                                                                                    NO_ERROR]) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_output(True)
        assert k.output_on is True
        k.set_output(False)
        assert k.output_on is False


def test_measure_reads_source_and_reading_then_the_limit_state() -> None:
    exchanges = connected() + configured_voltage() + [
        (b':READ? "defbuffer1", SOUR, READ', b"2.000000E+00,1.000000E-03"),
        unchanged(tripped=b"1"),
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        readings = k.measure()
        assert readings.voltage_v.tolist() == [2.0]
        assert readings.current_a.tolist() == [1e-3]
        assert readings.in_compliance.tolist() == [True]


def test_after_a_timeout_the_late_reply_is_discarded_before_the_next_query() -> None:
    exchanges = [*connected(), *configured_voltage(), (READ[0], TIMED_OUT),
                 (b"*ESE 1;*ESE?;*IDN?", READ[1]), (None, b"1;" + IDN),  # the late reply first, then the marker
                 (b"*ESE 0", None), READ, unchanged()]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(TransportTimeout, match="no reply"):
            k.measure()
        assert k.measure().current_a.tolist() == [1e-3]
        assert not k.transport.out_of_step


def test_a_resynchronisation_that_times_out_is_finished_by_the_next_and_interrupted_queries_forgiven() -> None:
    exchanges = [*connected(), *configured_voltage(), (READ[0], TIMED_OUT),
                 (b"*ESE 1;*ESE?;*IDN?", TIMED_OUT),  # the instrument is still busy
                 (b"*ESE 4;*ESE?;*IDN?", READ[1]), (None, b"1;" + IDN), (None, b"4;" + IDN),  # only the new marker
                 (b"*ESE 0", None), READ, unchanged(),
                 (b":SOUR:VOLT 0.5", None), INTERRUPTED, INTERRUPTED, NO_ERROR,  # two queries interrupted
                 (b":SOUR:VOLT 0.6", None), INTERRUPTED, NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(TransportTimeout):
            k.measure()
        with pytest.raises(TransportTimeout):
            k.measure()
        assert k.measure().current_a.tolist() == [1e-3]
        k.set_level(0.5)  # a -410 per resynchronisation is expected in the next check
        with pytest.raises(DeviceError, match="-410"):
            k.set_level(0.6)  # and only there


def test_safe_state_goes_on_when_reading_old_errors_times_out_then_reports_it() -> None:
    exchanges = [*connected(output=b"1", level=b"5.000000E-01"), (b"SYST:ERR?", TIMED_OUT),
                 (b":SOUR:VOLT 0", None), (b"*ESE 1;*ESE?;*IDN?", NO_ERROR[1]), (None, b"1;" + IDN), (b"*ESE 0", None),
                 NO_ERROR,
                 (b":OUTP OFF", None), NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(TransportTimeout, match="SYST:ERR"):
            k.safe_state()
        assert (k.level, k.output_on) == (0.0, False)


def test_measure_while_sourcing_current_reads_voltage() -> None:
    exchanges = [
        *connected(function=b"CURR"), (b":SENS:VOLT:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"NONE"),
        (b':SENS:FUNC "VOLT"', None), (b":SOUR:FUNC CURR", None), (b":SOUR:VOLT:PROT NONE", None),
        (b":SENS:VOLT:NPLC 1", None), (b":SOUR:CURR:READ:BACK ON", None), *reading_as_is("VOLT"),
        (b":SOUR:CURR:RANG:AUTO ON", None), (b":SENS:VOLT:RANG:AUTO ON", None),
        (b":SOUR:CURR:VLIM 10", None), NO_ERROR, (b":SOUR:CURR:VLIM?", b"1.000000E+01"),
        (b':READ? "defbuffer1", SOUR, READ', b"1.000000E-03,4.000000E+00"),
        unchanged(function=b"CURR", limit=b"1.000000E+01", source=b"CURR"),
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("current", 10.0)
        readings = k.measure()
        assert (readings.voltage_v[0], readings.current_a[0], readings.in_compliance[0]) == (4.0, 1e-3, False)


def test_sweep_loads_the_list_runs_it_and_reads_the_buffer_with_source_status() -> None:
    with on_for_a_sweep(swept(
            b"0.1, 0.2, 0.3", 3,
            b"1.000000E-01,1.000000E-04,128,2.000000E-01,2.000000E-04,128,1.500000E-01,1.000000E-03,160",
            delay=b"0.001")) as k:
        readings = k.sweep([0.1, 0.2, 0.3], delay_s=1e-3)
        assert readings.voltage_v.tolist() == [0.1, 0.2, 0.15]
        assert readings.current_a.tolist() == [1e-4, 2e-4, 1e-3]
        assert readings.in_compliance.tolist() == [False, False, True]  # status 160 = output on + limited
        assert k.level == 0.3


def test_sweep_of_150_points_appends_beyond_100_values_per_command() -> None:
    first = ", ".join(str(v) for v in range(1, 101)).encode()
    rest = ", ".join(str(v) for v in range(101, 151)).encode()
    data = b",".join(b"%d,1.000000E-05,128" % v for v in range(1, 151))
    exchanges = connected() + configured_voltage(nplc=b"0.01") + OUTPUT_ON + [
        (b':TRAC:CLE "defbuffer1"', None),
        (b":SOUR:LIST:VOLT " + first, None),
        (b":SOUR:LIST:VOLT:APP " + rest, None),
        (b":SOUR:SWE:VOLT:LIST 1, 0, 1, OFF", None), NO_ERROR,
        (b":INIT", None), (b"*WAI", None),
        buffer_read(150, data, b"150"),
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3, nplc=0.01)
        k.set_output(True)
        readings = k.sweep(np.arange(1, 151))
        assert readings.voltage_v.tolist() == list(range(1, 151))
        assert not readings.in_compliance.any()


def test_long_sweep_polls_the_buffer_count_instead_of_waiting_on_one_reply() -> None:
    clock = VirtualClock()
    levels = np.linspace(0.1, 5.0, 50)
    data = b",".join(b"%.9g,1.000000E-03,128" % v for v in levels)
    exchanges = connected() + configured_voltage() + OUTPUT_ON + [
        (b':TRAC:CLE "defbuffer1"', None),
        (b":SOUR:LIST:VOLT " + ", ".join(f"{v:.9g}" for v in levels).encode(), None),
        (b":SOUR:SWE:VOLT:LIST 1, 0, 1, OFF", None), NO_ERROR,
        (b":INIT", None),
        (b':TRAC:ACT? "defbuffer1"', b"20"),
        (b':TRAC:ACT? "defbuffer1"', b"50"),
        (b"*OPC?", b"1"),  # the trigger model may still run when the last reading is in the buffer
        buffer_read(50, data, b"5"),
    ]
    transport = PatienceRecorded(exchanges)
    k = Keithley2450(transport, clock=clock)
    k.connect()
    k.configure("voltage", 1e-3)
    k.set_output(True)
    readings = k.sweep(levels)
    transport.assert_done()
    assert transport.timeouts[b"*OPC?"] == pytest.approx(1.0 + k._reading_bound_s())  # the usual 1 s, and more
    assert len(readings.current_a) == 50
    expected_s = 50 * (2 * 1 / 50 + 1e-3)  # 1 PLC at 50 Hz, twice, plus 1 ms per point
    assert clock.now() == pytest.approx(expected_s + expected_s / 20)  # one wait, one poll interval


def test_ranges_fixed_and_auto_are_kept_across_configure() -> None:
    exchanges = connected() + configured_voltage() + [
        (b":SOUR:VOLT:RANG:AUTO OFF", None), (b":SOUR:VOLT:RANG 2", None), NO_ERROR, (b":SOUR:VOLT:ILIM?", b"0.001"),
        (b":SENS:CURR:RANG:AUTO OFF", None), (b":SENS:CURR:RANG 0.01", None), NO_ERROR,
        (b":SENS:CURR:RANG:AUTO ON", None), NO_ERROR,
        (b":SENS:CURR:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"NONE"), (b':SENS:FUNC "CURR"', None),
        (b":SOUR:FUNC VOLT", None), (b":SOUR:VOLT:PROT NONE", None),
        (b":SENS:CURR:NPLC 1", None), (b":SOUR:VOLT:READ:BACK ON", None), *reading_as_is("CURR"),
        (b":SOUR:VOLT:RANG:AUTO OFF", None), (b":SOUR:VOLT:RANG 2", None), (b":SENS:CURR:RANG:AUTO ON", None),
        (b":SOUR:VOLT:ILIM 0.002", None), NO_ERROR, (b":SOUR:VOLT:ILIM?", b"0.002"),
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        assert k.set_source_range(2.0) == 2.0
        assert k.set_measure_range(5e-3) == 10e-3  # the smallest range that holds 5 mA
        assert k.set_measure_range(None) is None
        k.configure("voltage", 2e-3)
        assert (k.source_range, k.measure_range) == (2.0, None)


def test_instrument_error_raises_device_error_with_its_message() -> None:
    exchanges = connected() + configured_voltage()[:-2] + [
        (b"SYST:ERR?", b'-222,"Parameter data out of range;1;2026/11/28 10:00:00.000"'),
        (b"SYST:ERR?", b'-113,"Undefined header;1;2026/11/28 10:00:00.001"'),
        NO_ERROR,
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError) as caught:
            k.configure("voltage", 1e-3)
        message = str(caught.value)
        assert "-222 Parameter data out of range; -113 Undefined header" in message
        assert "configuring the voltage source" in message and "2026" not in message
        assert k.compliance is None  # the failed configuration is not recorded


@pytest.mark.parametrize(("reply", "tail", "match"), [
    (b"OVERFLOW", [], "not a list of numbers"),
    (b"1.0", [], "has 1 values, expected 2"),
    (b"1.0,2.0,3.0", [], "has 3 values, expected 2"),
    (b"nan,1.000000E-03", [unchanged()], r"is 0\.001 A \(source nan V\)"),
    (b"2.000000E+00,9.900000E+37", [unchanged()], r"is an overflow \(source 2 V\)"),
])
def test_garbage_reading_raises_device_error(reply: bytes, tail: list[Exchange], match: str) -> None:
    exchanges = connected() + configured_voltage() + [(b':READ? "defbuffer1", SOUR, READ', reply), *tail]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(DeviceError, match=match):
            k.measure()


def test_garbage_error_queue_and_buffer_replies_raise_device_error() -> None:
    exchanges = [*connected(), (b":OUTP OFF", None), (b"SYST:ERR?", b"no error")]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match="error-queue reply 'no error' is malformed"):
            k.set_output(False)
    exchanges = [*connected(), (b":OUTP OFF", None), (b"SYST:ERR?", b"A" * 1_000_000)]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError) as caught:
            k.set_output(False)
        assert f"error-queue reply {'A' * 60!r}… (1000000 characters) is malformed; check that" in str(caught.value)
    with on_for_a_sweep(swept(b"0.1, 0.2", 2, b"0.1,1E-4,LIMIT,0.2,2E-4,128")) as k, \
            pytest.raises(DeviceError, match="not source, reading, status triples"):
        k.sweep([0.1, 0.2])


def test_safe_state_ramps_to_zero_then_switches_off() -> None:
    exchanges = [
        *connected(output=b"1", level=b"1.000000E+00"),
        NO_ERROR,  # errors left by earlier commands are read first
        state_read(output=b"1", level=b"1.000000E+00"),  # then where the output is
        (b":SOUR:VOLT 0.5", None), NO_ERROR,
        (b":SOUR:VOLT 0", None), NO_ERROR,
        (b":OUTP OFF", None), NO_ERROR,
    ]
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as k:
        k.connect()
        k.safe_state()
        assert (k.level, k.output_on) == (0.0, False)


def test_safe_state_reaches_zero_despite_a_stale_error_then_reports_it() -> None:
    exchanges = [
        *connected(output=b"1", level=b"5.000000E-01"),
        (b"SYST:ERR?", b'-113,"Undefined header;1;2026/11/28 10:00:00.000"'), NO_ERROR,
        state_read(output=b"1", level=b"5.000000E-01"),
        (b":SOUR:VOLT 0", None), NO_ERROR, (b":OUTP OFF", None), NO_ERROR,
    ]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"-113 Undefined header.*safe state, which was reached"):
            k.safe_state()
        assert (k.level, k.output_on) == (0.0, False)


def test_safe_state_switches_the_output_off_when_the_ramp_is_refused() -> None:
    exchanges = [
        *connected(output=b"1", level=b"1.000000E+00"), NO_ERROR, state_read(output=b"1", level=b"1.000000E+00"),
        (b":SOUR:VOLT 0.5", None),
        (b"SYST:ERR?", b'-222,"Parameter data out of range;1;2026/11/28 10:00:00.000"'), NO_ERROR,
        (b":OUTP OFF", None), NO_ERROR,
    ]
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match="-222"):
            k.safe_state()


# -- (b) limits refused before anything is sent --------------------------------------------------------------
SETUP = connected() + configured_voltage(compliance=b"0.0001") + OUTPUT_ON


def _ready(k: Keithley2450) -> None:
    k.connect()
    k.configure("voltage", 1e-4)
    k.set_output(True)


@pytest.mark.parametrize(("action", "match"), [
    (lambda k: k.set_level(300.0), "outside -210..210 V"),
    (lambda k: k.set_level(math.nan), "nan refused"),
    (lambda k: k.configure("voltage", 2.0), "compliance: 2 A is outside"),
    (lambda k: k.configure("voltage", 1e-12), "below the 2450's minimum 1e-09 A"),
    (lambda k: k.configure("current", 0.01), "below the 2450's minimum 0.02 V"),
    (lambda k: k.configure("voltage", 1e-3, nplc=20), "nplc: 20 PLC is outside"),
    (lambda k: k.configure("voltage", 1e-3, nplc=0.005), "nplc: 0.005 PLC is outside"),
    (lambda k: k.sweep([0.2, 0.4, 1.0]), "sweep point 2 jumps 0.6 V, more than max_step 0.5"),
    (lambda k: k.sweep([0.2, math.inf]), "sweep level"),
    (lambda k: k.sweep([0.2], delay_s=1e-5), "sweep delay 1e-05 s refused; the 2450 takes 0 or at least 5e-05 s$"),
    (lambda k: k.set_source_range(500.0), "source range 500 V refused"),
    (lambda k: k.set_measure_range(0.0), "measure range 0 A refused"),
    (lambda k: k.set_measure_range(1.0), "must exceed 0.1 % of the 1 A measure range"),
])
def test_limits_are_refused_before_anything_is_sent(action: Callable[[Keithley2450], object],
                                                     match: str) -> None:
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), SETUP) as k:
        _ready(k)
        with pytest.raises(LimitError, match=match):
            action(k)
        assert k.level == 0.0  # nothing was sent, so the level is still known


def configured_current(compliance: bytes) -> list[Exchange]:
    """`configure("current", ...)` from a current source with auto ranges and remote sense already off."""
    return [(b":SENS:VOLT:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"NONE"), (b':SENS:FUNC "VOLT"', None),
            (b":SOUR:FUNC CURR", None), (b":SOUR:VOLT:PROT NONE", None),
            (b":SENS:VOLT:NPLC 1", None), (b":SOUR:CURR:READ:BACK ON", None), *reading_as_is("VOLT"),
            (b":SOUR:CURR:RANG:AUTO ON", None), (b":SENS:VOLT:RANG:AUTO ON", None),
            (b":SOUR:CURR:VLIM " + compliance, None), NO_ERROR, (b":SOUR:CURR:VLIM?", compliance)]


ENVELOPE = "where the 2450 allows a compliance of at most"


@pytest.mark.parametrize(("action", "match"), [
    (lambda k: k.set_level(30.0), rf"^Keithley2450: source voltage 30 V would be on the 200 V source range, "
                                  rf"{ENVELOPE} 0.105 A, not 0.5 A; keep \|level\| within 20 V or configure a "
                                  r"compliance of at most 0.105 A$"),
    (lambda k: k.sweep([10.0, 20.5, 10.0]), r"sweep level 20.5 V would be on the 200 V source range"),
    (lambda k: k.set_source_range(150.0), r"source range 150 V would put the source on the 200 V source range, "
                                          r".*; keep a source range below 200 V or configure"),
])
def test_the_power_envelope_of_the_200_v_range_is_refused_before_anything_is_sent(
        action: Callable[[Keithley2450], object], match: str) -> None:
    exchanges = [*connected(), *configured_voltage(compliance=b"0.5"), *OUTPUT_ON, (b":SOUR:VOLT 20", None),
                 NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 0.5)
        k.set_output(True)
        k.set_level(20.0)  # the 20 V range, where 0.5 A is allowed
        with pytest.raises(LimitError, match=r"source voltage 20.5 V would be on the 200 V source range"):
            k.set_level(20.5)  # the range holds 21 V, but autorange may leave it above 20 V: refused, to be safe
        with pytest.raises(LimitError, match=match):
            action(k)
        assert (k.level, k.compliance, k.source_range) == (20.0, 0.5, None)


def test_the_power_envelope_of_the_1_a_range_is_refused_before_anything_is_sent() -> None:
    exchanges = [*connected(function=b"CURR"), *configured_current(b"30"), (b":SOUR:CURR 0.1", None), NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("current", 30.0)
        k.set_level(0.1)
        with pytest.raises(LimitError, match=rf"source current 0.2 A would be on the 1 A source range, {ENVELOPE} "
                                             r"21 V, not 30 V; keep \|level\| within 0.1 A"):
            k.set_level(0.2)


def test_a_compliance_beyond_the_envelope_of_a_level_left_live_is_refused_and_one_left_idle_is_zeroed_first() -> None:
    with expected_protocol(smu(), connected(output=b"1", level=b"1.000000E+02")) as k:
        k.connect()
        with pytest.raises(LimitError, match=rf"the source would be on the 200 V source range, {ENVELOPE} 0.105 A, "
                                             "not 0.2 A"):
            k.configure("voltage", 0.2)
        assert k.compliance is None and k.level == 100.0
    exchanges = [*connected(level=b"1.000000E+02"), (b":SOUR:VOLT 0", None), NO_ERROR,
                 *configured_voltage(compliance=b"0.2")]
    with expected_protocol(smu(), exchanges) as k:  # the output is off: nothing is sourced, so 100 V goes to 0 V
        k.connect()
        k.configure("voltage", 0.2)
        assert (k.compliance, k.level, k.output_on) == (0.2, 0.0, False)
    failed_switch = [(b":OUTP OFF", None), (b"SYST:ERR?", b'-221,"Settings conflict;1;2026/11/28 10:00:00.000"'),
                     NO_ERROR]
    with expected_protocol(smu(), [*connected(level=b"1.000000E+02"), *failed_switch]) as k:
        k.connect()
        with pytest.raises(DeviceError):
            k.set_output(False)
        assert k.output_on is None  # the output may be on: 100 V may be live, so it is not moved
        with pytest.raises(LimitError, match="the source would be on the 200 V source range"):
            k.configure("voltage", 0.2)


def test_a_level_configure_sets_is_the_limits_rest_where_they_exclude_zero() -> None:
    """Under a lab limit of −5..−1 V (a device that must never see 0 V) the level configure sets, from another mode's
    or from an idle one beyond the compliance's power envelope, is −1 V, never 0 V, though the output is off."""
    limits = {"voltage_v": {"min": -5.0, "max": -1.0}}
    configured = configured_voltage(protection=b"PROT10")
    exchanges = [*connected(function=b"CURR", level=b"1.000000E-03"), *configured[:5], (b":SOUR:VOLT -1", None),
                 *configured[5:]]
    with expected_protocol(smu(limits=limits), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        assert (k.mode, k.level, k.output_on) == ("voltage", -1.0, False)
    exchanges = [*connected(level=b"-1.000000E+02"), (b":SOUR:VOLT -1", None), NO_ERROR,
                 *configured_voltage(compliance=b"0.2")]
    with expected_protocol(smu(limits={"voltage_v": {"min": -200.0, "max": -1.0}}), exchanges) as k:
        k.connect()
        k.configure("voltage", 0.2)
        assert (k.level, k.output_on) == (-1.0, False)


def test_a_limit_the_instrument_lowered_is_a_device_error_and_nothing_sources_until_configured_again() -> None:
    lowered = (b"SOUR:VOLT:ILIM?", b"1.050000E-01")
    exchanges = [*connected(), *configured_voltage(compliance=b"0.5")[:-1], (b":" + lowered[0], lowered[1])]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"^Keithley2450: after configuring the voltage source the 2450 holds a "
                                              r"compliance of 0.105 A, not the 0.5 A set \(its power envelope"):
            k.configure("voltage", 0.5)
        assert k.compliance is None
    exchanges = [*connected(), *configured_voltage(compliance=b"0.5"), (b":SOUR:VOLT:RANG:AUTO OFF", None),
                 (b":SOUR:VOLT:RANG 2", None), NO_ERROR, (b":" + lowered[0], lowered[1])]
    with expected_protocol(smu(), exchanges) as k:  # as if another program had changed the range meanwhile
        k.connect()
        k.configure("voltage", 0.5)
        with pytest.raises(DeviceError, match=r"after setting the source range the 2450 holds a compliance of 0\.105"):
            k.set_source_range(2.0)
        with pytest.raises(DeviceError, match=r"call configure\(mode, compliance\) first"):
            k.set_level(1.0)


def test_sweep_faster_than_the_ramp_rate_is_refused_before_anything_is_sent() -> None:
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5, "ramp_rate": 1.0}}), SETUP) as k:
        _ready(k)
        with pytest.raises(LimitError, match=r"exceed ramp_rate 1 V/s; use a delay of at least 0.2 s"):
            k.sweep([0.2, 0.4], delay_s=0.1)


def test_a_failed_sweep_leaves_the_level_unknown_so_the_safe_state_switches_off_first() -> None:
    exchanges = [*SETUP, *swept(b"0.5, 1", 2, b"5.000000E-01,garbage", limit=b"1E-4"),  # garbled: resynchronised
                 (b"*ESE 1;*ESE?;*IDN?", b"1;" + IDN), (b"*ESE 0", None),
                 NO_ERROR, state_read(output=b"1", level=b"1", limit=b"1E-4"),
                 (b":OUTP OFF", None), NO_ERROR, (b":SOUR:VOLT 0", None), NO_ERROR]
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as k:
        _ready(k)
        with pytest.raises(DeviceError, match="has 2 values, expected 6"):
            k.sweep([0.5, 1.0])
        assert k.level is None  # the instrument may be anywhere on the sweep
        with pytest.raises(LimitError, match="present level is unknown"):
            k.sweep([0.5])
        with pytest.raises(LimitError, match="the voltage source is at an unknown level"):
            k.set_output(True)
        k.safe_state()
        assert (k.level, k.output_on) == (0.0, False)


def test_sourcing_before_configure_is_refused_without_traffic() -> None:
    with expected_protocol(smu(), [*connected(), (b":OUTP OFF", None), NO_ERROR]) as k:
        k.connect()
        # The mode and level are read at connect, but not the compliance another session left: until configure
        # sets one, nothing may source. Switching off is always allowed.
        for refused in (lambda: k.set_output(True), lambda: k.set_level(1.0), k.measure, lambda: k.sweep([0.1])):
            with pytest.raises(DeviceError, match=r"call configure\(mode, compliance\) first"):
                refused()
        k.set_output(False)


def test_sourcing_before_connect_is_refused_without_traffic() -> None:
    """Before connect the source mode is unknown: the 2450's own level checks (range, power envelope) step aside for
    the refusal that says what to do, rather than failing on the unknown mode."""
    with expected_protocol(smu(), []) as k:
        for refused in (lambda: k.set_level(1.0), lambda: k.sweep([0.1]), lambda: k.set_source_range(1.0)):
            with pytest.raises(DeviceError, match=r"^Keithley2450: not connected; call connect\(\) first$"):
                refused()


def test_levels_beyond_a_fixed_source_range_are_refused_before_anything_is_sent() -> None:
    exchanges = [*SETUP, (b":SOUR:VOLT:RANG:AUTO OFF", None), (b":SOUR:VOLT:RANG 2", None), NO_ERROR,
                 (b":SOUR:VOLT:ILIM?", b"1.000000E-04")]
    with expected_protocol(smu(), exchanges) as k:
        _ready(k)
        k.set_source_range(1.5)
        with pytest.raises(LimitError, match="3 V exceeds the fixed 2 V source range"):
            k.set_level(3.0)
        with pytest.raises(LimitError, match=r"2\.2 V exceeds the fixed 2 V source range"):
            k.sweep([1.0, 2.2])


# -- (c) the unchanged driver against the emulator over pyvisa-py --------------------------------------------
Bench = tuple[Keithley2450, Keithley2450Emulator]


@pytest.fixture
def bench() -> Iterator[Bench]:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    with TcpServer(emulator) as server:
        k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(),
                         limits={"voltage_v": {"max_step": 2.0}})
        k.connect()
        try:
            yield k, emulator
        finally:
            k.close()


@pytest.fixture
def left_by(tcp_server: Callable[..., TcpServer]) -> Iterator[Callable[..., Bench]]:
    """A factory: ``left_by(*messages)`` is an emulator that took a previous user's ``messages`` (without error)
    and a driver not yet connected to it; the driver is closed after the test."""
    drivers: list[Keithley2450] = []

    def start(*messages: bytes, **options: object) -> Bench:
        emulator = Keithley2450Emulator(load_ohm=1000.0, **options)  # type: ignore[arg-type]
        for message in messages:
            emulator.handle(message)
        assert not emulator.errors, emulator.errors
        k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock(),
                         limits={"voltage_v": {"max_step": 2.0}})
        drivers.append(k)
        return k, emulator

    yield start
    for k in drivers:
        k.close()


def test_a_full_disk_under_the_traffic_log_does_not_keep_the_safe_state_from_the_instrument(tmp_path) -> None:
    emulator, log = Keithley2450Emulator(load_ohm=1000.0), tmp_path / "traffic.log"
    with TcpServer(emulator) as server:
        k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0, traffic_log=log), clock=VirtualClock())
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_output(True)
        k.set_level(0.5)
        with disk_full_beyond(log.stat().st_size), pytest.warns(RuntimeWarning, match="logging stops here"):
            k.close()  # the safe state, then the connection closed
    assert (emulator.output, emulator.level["VOLT"]) == (False, 0.0)


def test_the_emulator_answers_the_manuals_measure_queries_as_the_instrument_does() -> None:
    """For trying it by hand (`hil emulate keithley_2450`): :MEASure:<function>? selects the function and reads."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    for message in (b":SOUR:FUNC VOLT", b":SOUR:VOLT:ILIM 0.01", b":SOUR:VOLT 2", b":OUTP ON"):
        assert emulator.handle(message) is None
    assert float(emulator.handle(b":MEAS:CURR?")) == pytest.approx(2e-3, rel=1e-6)
    assert emulator.handle(b":SENS:FUNC?") == b'"CURR:DC"'
    assert float(emulator.handle(b":MEASure:VOLTage:DC?")) == pytest.approx(2.0, rel=1e-6)
    assert float(emulator.handle(b"MEAS?")) == pytest.approx(2.0, rel=1e-6)  # the present function
    assert float(emulator.handle(b":MEAS:RES?")) == pytest.approx(1000.0, rel=1e-6)
    assert not emulator.errors


def test_emulated_measure_across_the_load_follows_ohms_law(bench: Bench) -> None:
    k, emulator = bench
    assert (emulator.output, emulator.function) == (False, "VOLT")
    k.configure("voltage", 10e-3)
    k.set_level(2.5)
    k.set_output(True)
    readings = k.measure()
    assert readings.voltage_v[0] == pytest.approx(2.5)
    assert readings.current_a[0] == pytest.approx(2.5e-3, rel=1e-6)
    assert not readings.in_compliance[0]
    k.set_output(False)
    assert k.measure().current_a[0] == 0.0


def test_emulated_overvoltage_protection_clamps_what_another_program_sources_beyond_the_lab_limit(
        tcp_server: Callable[..., TcpServer]) -> None:
    emulator = Keithley2450Emulator(load_ohm=1e6)
    k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock(),
                     limits={"voltage_v": {"min": -2, "max": 2, "max_step": 2.0}})
    with k.connect():
        k.configure("voltage", 1e-3)
        assert emulator.protection == {"VOLT": "PROT5", "CURR": "NONE"}
        k.set_level(-2.0)
        k.set_output(True)
        assert k.measure().voltage_v[0] == pytest.approx(-2.0)  # the lab's whole range is clear of the protection
        assert emulator.handle(b":SOUR:VOLT:PROT:TRIP?") == b"0"
        emulator.handle(b":SOUR:VOLT -20")  # another program, or the front panel
        assert emulator.operating_point()[0] == pytest.approx(-5.0)
        assert emulator.handle(b":SOUR:VOLT:PROT:TRIP?") == b"1"
        with pytest.raises(DeviceError, match="source at -20 V, not -2 V"):
            k.measure()  # nor is what another program sources taken as data
        emulator.handle(b":SOUR:VOLT -2")
        k.configure("current", 2.0)  # the current source has a protection of its own: set after the function
        assert emulator.protection == {"VOLT": "PROT5", "CURR": "PROT5"}
        k.set_output(True)
        for message in (b":SOUR:CURR:VLIM 20", b":SOUR:CURR 1e-5"):  # 10 V across 1 MΩ: clamped at 5 V
            emulator.handle(message)
        assert emulator.operating_point()[0] == pytest.approx(5.0)
        assert emulator.handle(b":SOUR:VOLT:PROT:TRIP?") == b"1"
    assert not emulator.errors


def test_emulated_protection_holding_the_output_is_not_the_current_limit() -> None:
    """20 V into 100 Ω with a 0.1 A limit would be limited at 10 V; PROT5 holds it at 5 V, 50 mA: the protection
    is active, the current limit is not."""
    emulator = Keithley2450Emulator(load_ohm=100.0)
    for message in (b":SOUR:VOLT:ILIM 0.1", b":SOUR:VOLT:PROT PROT5", b":SOUR:VOLT 20", b":OUTP ON"):
        emulator.handle(message)
    assert emulator.operating_point() == (5.0, 0.05, False)
    assert (emulator.handle(b":SOUR:VOLT:ILIM:TRIP?"), emulator.handle(b":SOUR:VOLT:PROT:TRIP?")) == (b"0", b"1")
    assert not emulator.errors


def test_a_configure_that_fails_half_way_leaves_nothing_to_source_until_configured_again(
        tcp_server: Callable[..., TcpServer]) -> None:
    """The source function changed, the protection refused: the driver must not go on as the voltage source it
    was, switching on a current source without the protection."""

    class RefusingProtection(Keithley2450Emulator):
        refuse = False

        def _set_protection(self, text: object) -> None:
            if self.refuse:
                raise ScpiError(SETTINGS_CONFLICT, "protection refused")
            super()._set_protection(text)  # type: ignore[arg-type]

    emulator = RefusingProtection(load_ohm=1e6)
    k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock(),
                     limits={"voltage_v": {"min": -2, "max": 2}})
    with k.connect():
        k.configure("voltage", 1e-3)
        emulator.refuse = True
        with pytest.raises(DeviceError, match="-221"):
            k.configure("current", 1.0)
        assert emulator.function == "CURR"
        with pytest.raises(DeviceError, match="not configured"):
            k.set_output(True)
        assert emulator.output is False
        emulator.refuse = False
        k.configure("current", 1.0)
        assert emulator.protection["CURR"] == "PROT5"
        k.set_output(True)


def test_emulated_configure_clears_what_a_previous_user_left_on_the_readings(bench: Bench) -> None:
    k, emulator = bench
    for command in (b":SENS:CURR:REL 1e-3", b":SENS:CURR:REL:STAT ON", b":SENS:CURR:AVER ON"):
        emulator.handle(command)
    k.configure("voltage", 10e-3)
    k.set_level(2.5)
    k.set_output(True)
    assert k.measure().current_a[0] == pytest.approx(2.5e-3, rel=1e-6)  # 1.5 mA with the offset left on
    emulator.handle(b":SENS:CURR:REL:STAT ON")
    assert float(emulator.handle(b':READ? "defbuffer1"')) == pytest.approx(1.5e-3, rel=1e-6)  # what it does with it


def test_emulated_configure_works_after_a_previous_user_measured_resistance(bench: Bench) -> None:
    k, emulator = bench
    emulator.handle(b':SENS:FUNC "RES"')  # the 2450 then refuses any :SOUR:FUNC
    k.configure("current", 5.0)
    k.set_output(True)
    k.set_level(2e-3)
    assert k.measure().voltage_v[0] == pytest.approx(2.0)
    assert (emulator.function, emulator.sense_function) == ("CURR", "VOLT")


def test_emulated_remote_sense_left_on_is_not_changed_under_a_live_output(left_by: Callable[..., Bench]) -> None:
    k, emulator = left_by(b":SENS:CURR:RSEN ON;:SOUR:VOLT:ILIM 0.01;:SOUR:VOLT 1;:OUTP ON")
    k.connect()
    with pytest.raises(LimitError, match="remote sense must change to OFF"):
        k.configure("voltage", 10e-3)
    assert emulator.output and emulator.remote_sense["CURR"]  # nothing was changed
    k.set_output(False)
    k.configure("voltage", 10e-3)
    assert not emulator.remote_sense["CURR"]
    k.set_output(True)
    k.configure("voltage", 5e-3)  # nothing to change: the output stays on
    assert emulator.output and k.output_on


@pytest.mark.parametrize("data_format", [b"REAL", b"SREAL"])
def test_emulated_readings_work_after_a_previous_user_left_a_binary_format(left_by: Callable[..., Bench],
                                                                            data_format: bytes) -> None:
    k, emulator = left_by(b":FORM:DATA " + data_format)
    k.connect()
    k.configure("voltage", 10e-3)
    k.set_output(True)
    k.set_level(2.0)
    assert k.measure().current_a[0] == pytest.approx(2e-3)
    assert k.sweep([1.0, 0.5]).current_a.tolist() == pytest.approx([1e-3, 0.5e-3])
    assert emulator.data_format == "ASC"


def test_emulated_readings_keep_their_digits_after_a_previous_user_left_a_short_ascii_precision(
        left_by: Callable[..., Bench]) -> None:
    k, emulator = left_by(b":FORM:ASC:PREC 3")  # every ASCII number rounded to 3 digits
    k.connect()
    k.configure("voltage", 12.34e-3)  # its read-back would have been 1.23E-02: a false "limit lowered"
    k.set_output(True)
    k.set_level(1.2345)
    assert k.measure().current_a[0] == pytest.approx(1.2345e-3, rel=1e-6)
    assert emulator.ascii_precision == 0

def test_emulated_connect_selects_the_front_terminals_a_previous_user_left_on_rear(left_by: Callable[..., Bench]
                                                                                      ) -> None:
    k, emulator = left_by(b":ROUT:TERM REAR")
    k.connect()
    k.configure("voltage", 10e-3)
    k.set_output(True)
    k.set_level(2.0)
    assert k.measure().current_a[0] == pytest.approx(2e-3)  # 0 A: an open circuit, on the rear terminals
    assert emulator.terminals == "FRON"


def test_emulated_connect_refuses_rear_terminals_left_live_and_changes_nothing(left_by: Callable[..., Bench]
                                                                                ) -> None:
    k, emulator = left_by(b":ROUT:TERM REAR;:SOUR:VOLT:ILIM 0.01;:SOUR:VOLT 1;:OUTP ON")
    with pytest.raises(DeviceError, match="rear terminals are selected with the output on"):
        k.connect()
    assert (emulator.terminals, emulator.output, emulator.level["VOLT"]) == ("REAR", True, 1.0)


def test_emulated_power_envelope_never_lowers_the_compliance_unseen(left_by: Callable[..., Bench]) -> None:
    k, emulator = left_by(b":SOUR:VOLT 100;:SOUR:FUNC CURR")  # a previous user's 100 V, on the 200 V range
    k.connect()
    k.configure("voltage", 0.5)  # sourced at 100 V, the 0.5 A limit would be lowered to 0.105 A
    assert emulator.limit["VOLT"] == 0.5
    k.set_output(True)
    for level in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0):
        k.set_level(level)
    with pytest.raises(LimitError, match="source voltage 22 V would be on the 200 V source range"):
        k.set_level(22.0)
    assert (emulator.limit["VOLT"], emulator.level["VOLT"], emulator.warnings) == (0.5, 20.0, [])


def test_emulated_compliance_clamps_and_trips(bench: Bench) -> None:
    k, emulator = bench
    k.configure("voltage", 1e-3)
    k.set_output(True)
    k.set_level(4.0)  # 4 mA wanted, 1 mA allowed: the voltage drops to 1 mA x 1 kOhm
    readings = k.measure()
    assert (readings.voltage_v[0], readings.current_a[0], readings.in_compliance[0]) == \
        (pytest.approx(1.0), pytest.approx(1e-3), True)
    k.set_level(0.0)
    k.configure("current", 5.0)
    k.set_output(True)
    k.set_level(10e-3)  # 10 V wanted, 5 V allowed
    readings = k.measure()
    assert (readings.voltage_v[0], readings.current_a[0], readings.in_compliance[0]) == \
        (pytest.approx(5.0), pytest.approx(5e-3), True)
    assert emulator.function == "CURR" and emulator.limit["CURR"] == 5.0


def test_emulated_sweep_follows_ohms_law_and_flags_clamped_points(
        bench: Bench) -> None:
    k, emulator = bench
    k.configure("voltage", 3e-3, nplc=0.1)
    k.set_output(True)
    levels = np.linspace(-1.0, 5.0, 50)
    readings = k.sweep(levels)
    clamped = np.abs(levels) / 1000.0 > 3e-3
    assert 0 < clamped.sum() < 50
    np.testing.assert_allclose(readings.current_a, np.clip(levels / 1000.0, -3e-3, 3e-3), rtol=1e-6)
    np.testing.assert_allclose(readings.voltage_v, np.clip(levels, -3.0, 3.0), rtol=1e-6)
    np.testing.assert_array_equal(readings.in_compliance, clamped)
    assert k.level == 5.0 and emulator.level["VOLT"] == 5.0


def test_emulated_long_sweep_is_appended_and_polled(bench: Bench) -> None:
    k, emulator = bench
    k.configure("voltage", 0.1)
    k.set_output(True)
    levels = np.linspace(0.0, 2.0, 250)  # 3 list commands; about 10 s at 1 PLC: polled, not waited on
    readings = k.sweep(levels)
    np.testing.assert_allclose(readings.current_a, levels / 1000.0, rtol=1e-6, atol=1e-12)
    assert emulator.source_list["VOLT"] == pytest.approx(levels.tolist())
    assert sum(m.startswith(b":SOUR:LIST:VOLT:APP ") for m in emulator.received) == 2
    assert b':TRAC:ACT? "defbuffer1"' in emulator.received


def test_emulated_fixed_measure_range_overflow_raises(bench: Bench) -> None:
    """Said in words and units: it read 'reading 0 is 9.9e+37 (source 2): beyond the fixed 0.001 measure range',
    SCPI's overflow code given as a current, and no unit."""
    k, _ = bench
    k.configure("voltage", 10e-3)
    k.set_measure_range(1e-3)
    k.set_output(True)
    k.set_level(2.0)  # 2 mA on the 1 mA range
    with pytest.raises(DeviceError, match=r"^Keithley2450: reading 0 is an overflow \(source 2 V\): beyond the fixed "
                                          r"0\.001 A measure range; use set_measure_range\(None\)$"):
        k.measure()
    k.set_measure_range(None)
    assert k.measure().current_a[0] == pytest.approx(2e-3)


def test_emulated_fixed_source_range_is_set_on_the_instrument_and_refuses_a_level_beyond_it(bench: Bench) -> None:
    """A fixed source range reaches the instrument (autorange off, then the range), a level beyond 105 % of it is
    refused before anything is sent, and autorange again lets the level go there."""
    k, emulator = bench
    k.configure("voltage", 10e-3)
    assert k.set_source_range(1.5) == 2.0 and emulator.source_range["VOLT"] == 2.0
    k.set_output(True)
    k.set_level(2.0)
    with pytest.raises(LimitError, match=r"source voltage 2\.5 V exceeds the fixed 2 V source range"):
        k.set_level(2.5)
    assert (k.level, emulator.level["VOLT"]) == (2.0, 2.0)
    assert k.set_source_range(None) is None and emulator.source_range["VOLT"] is None
    k.set_level(2.5)
    assert emulator.level["VOLT"] == 2.5 and k.measure().current_a[0] == pytest.approx(2.5e-3)
    assert not emulator.errors


def test_emulated_raw_out_of_range_command_queues_the_error(
        bench: Bench) -> None:
    k, _ = bench
    k.write(":SOUR:VOLT 300")
    code, message = k.parse_error(k.query("SYST:ERR?"))
    assert code == -222 and message.startswith("Parameter data out of range")
    assert k.parse_error(k.query("SYST:ERR?")) == (0, "No error")
    assert float(k.query(":SOUR:VOLT?")) == 0.0  # the refused level was not applied
    k.write(":SOUR:VOLT:BOGUS 1")
    with pytest.raises(DeviceError, match="-113 Undefined header"):
        k.check_errors()


def test_emulated_safe_state_leaves_the_output_off_at_zero(bench: Bench) -> None:
    k, emulator = bench
    k.configure("voltage", 10e-3)
    k.set_output(True)
    k.set_level(4.0)
    assert emulator.output and emulator.level["VOLT"] == 4.0
    k.safe_state()
    assert not emulator.output and emulator.level["VOLT"] == 0.0
    assert k.query(":OUTP?") == "0"
    ramp_down = [m for m in emulator.received if m.startswith(b":SOUR:VOLT ")][-2:]
    assert ramp_down == [b":SOUR:VOLT 2", b":SOUR:VOLT 0"]  # 2 V max_step from 4 V


def _sourcing_2_v(bench: Bench) -> Bench:
    k, emulator = bench
    k.configure("voltage", 10e-3)
    k.set_output(True)
    k.set_level(2.0)
    assert k.measure().current_a[0] == pytest.approx(2e-3)
    return k, emulator


def test_emulated_output_the_2450_switched_off_itself_gives_no_reading(bench: Bench) -> None:
    """Its overtemperature protection, an open interlock or its front-panel OUTPUT key switch the output off without
    a byte from the driver: a reading then is of a dead output (0 V, 0 A), which must not be taken as data."""
    k, emulator = _sourcing_2_v(bench)
    emulator.output = False  # what the 2450's own protection does
    with pytest.raises(DeviceError, match=r"^Keithley2450: after a reading the instrument has its output off, not on "
                                          r"as this driver left it \(its protection switched an output off, .*\): what "
                                          r"was measured meanwhile is not of the settings sent; check the instrument "
                                          r"and the device under test, then try again$"):
        k.measure()
    assert k.output_on is False
    k.safe_state()
    assert (emulator.output, emulator.level["VOLT"]) == (False, 0.0)


def test_emulated_level_another_program_set_is_no_reading_and_the_safe_state_ramps_from_it(bench: Bench) -> None:
    """Another program (or the front panel) sets 9 V: the reading is refused, and the safe state ramps down from 9 V
    in steps of max_step (2 V), not from the 2 V the driver set, which would step 9 V to 0 V at once."""
    k, emulator = _sourcing_2_v(bench)
    emulator.handle(b":SOUR:VOLT 9")
    with pytest.raises(DeviceError, match=r"the instrument has its source at 9 V, not 2 V as this driver left it"):
        k.measure()
    emulator.received.clear()
    k.safe_state()
    levels = [float(m.split()[1]) for m in emulator.received if m.startswith(b":SOUR:VOLT ")]
    assert levels == pytest.approx([7.2, 5.4, 3.6, 1.8, 0.0])
    assert (emulator.output, emulator.level["VOLT"]) == (False, 0.0)


def test_emulated_output_the_2450_switched_off_mid_sweep_gives_no_readings(tcp_server: Callable[..., TcpServer]
                                                                            ) -> None:
    """Its overtemperature protection switches the output off after the third point: the rest of the sweep reads a
    dead output (0 V, 0 A), which must not be taken as data."""

    class Overheating(Keithley2450Emulator):
        readings_left: int | None = None

        def _read(self, *args: object, **kwargs: object) -> dict:
            if self.readings_left == 0:
                self.output = False
            if self.readings_left is not None:
                self.readings_left -= 1
            return super()._read(*args, **kwargs)  # type: ignore[arg-type]

    emulator = Overheating(load_ohm=1000.0)
    k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock())
    with k.connect():
        k.configure("voltage", 10e-3)
        k.set_output(True)
        assert k.sweep([0.5, 1.0, 1.5]).current_a.tolist() == pytest.approx([0.5e-3, 1e-3, 1.5e-3])
        emulator.readings_left = 3
        with pytest.raises(DeviceError, match=r"after the sweep of 6 points the instrument has its output off, not on"):
            k.sweep([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
        assert (k.output_on, k.level) == (False, 3.5)
    assert (emulator.output, emulator.level["VOLT"]) == (False, 0.0)


def test_emulated_level_the_2450_holds_at_its_programming_resolution_is_the_level_set(
        tcp_server: Callable[..., TcpServer]) -> None:
    """A 2450 that holds a level at its programming resolution (500 µV on the 20 V range) reads back 0.1235 V for
    0.1234567 V: not a level changed unseen."""

    class Resolving(Keithley2450Emulator):
        def _level_value(self, function: str, text: object) -> float:
            value = super()._level_value(function, text)  # type: ignore[arg-type]
            resolution = 2.5e-5 * self._source_range_now(function) if function == "VOLT" else 0.0
            return round(value / resolution) * resolution if resolution else value

    emulator = Resolving(load_ohm=1000.0)
    k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock())
    with k.connect():
        k.configure("voltage", 10e-3)
        k.set_source_range(20.0)
        k.set_output(True)
        k.set_level(0.1234567)
        assert emulator.level["VOLT"] == pytest.approx(0.1235)
        assert k.measure().current_a[0] == pytest.approx(0.1235e-3)
        emulator.handle(b":SOUR:VOLT 0.125")  # 1.5 mV away: three steps of the resolution, another program's
        with pytest.raises(DeviceError, match=r"its source at 0\.125 V, not 0\.123457 V"):
            k.measure()


def test_emulated_level_the_front_panel_set_after_the_last_reading_is_ramped_down_from(bench: Bench) -> None:
    """Turned to 9 V at the front panel after the last reading, then a Ctrl-C: the safe state reads where the source
    is and ramps down from 9 V in steps of max_step (2 V), not from the 2 V the driver set, which stepped 9 V to 0 V
    at once."""
    k, emulator = _sourcing_2_v(bench)
    emulator.handle(b":SOUR:VOLT 9")
    emulator.received.clear()
    k.safe_state()
    levels = [float(m.split()[1]) for m in emulator.received if m.startswith(b":SOUR:VOLT ")]
    assert levels == pytest.approx([7.2, 5.4, 3.6, 1.8, 0.0])
    assert (emulator.output, emulator.level["VOLT"]) == (False, 0.0)
    with pytest.raises(DeviceError, match="not configured"):  # the source was changed unseen: configure again
        k.set_output(True)


def test_a_safe_state_whose_read_of_the_output_times_out_goes_on_from_the_level_held_then_reports_it() -> None:
    exchanges = [*connected(output=b"1", level=b"5.000000E-01"), NO_ERROR, (state_read()[0], TIMED_OUT),
                 (b":SOUR:VOLT 0", None), (b"*ESE 1;*ESE?;*IDN?", b"1;VOLT;0.5"), (None, b"1;" + IDN),
                 (b"*ESE 0", None), NO_ERROR, (b":OUTP OFF", None), NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(TransportTimeout, match=r":OUTP\?;:SOUR:FUNC\?"):
            k.safe_state()
        assert (k.level, k.output_on) == (0.0, False)


def test_emulated_restart_on_a_link_that_outlives_it_gives_no_reading(bench: Bench) -> None:
    """Power-cycled on a link that outlives it (GPIB), the 2450 comes back at its power-on state: output off, 0 V,
    105 µA."""
    k, emulator = _sourcing_2_v(bench)
    emulator.reset()
    with pytest.raises(DeviceError, match=r"the instrument has its output off, not on; its source at 0 V, not 2 V; a "
                                          r"limit of 0\.000105 A, not 0\.01 A as this driver left it"):
        k.measure()
    assert (k.output_on, k.level) == (False, 0.0)


def test_emulated_measure_function_the_front_panel_changed_gives_no_reading(bench: Bench) -> None:
    """Swiped to voltage at the front panel, the 2450 would read the voltage where the driver takes the current."""
    k, emulator = _sourcing_2_v(bench)
    emulator.handle(b':SENS:FUNC "VOLT"')
    with pytest.raises(DeviceError, match=r"the instrument has its measure function '\"VOLT:DC\"', not CURR as this "):
        k.measure()
    with pytest.raises(DeviceError, match="not configured"):
        k.set_output(True)
    k.configure("voltage", 10e-3)
    assert k.measure().current_a[0] == pytest.approx(2e-3)


@pytest.mark.parametrize(("keys", "said"), [((b":SENS:CURR:REL 1e-3", b":SENS:CURR:REL:STAT ON"), "relative offset"),
                                             ((b":CALC:CURR:MATH:STAT ON",), "math")])
def test_emulated_reading_modifier_the_front_panel_switched_on_gives_no_reading(bench: Bench, keys: tuple[bytes, ...],
                                                                                said: str) -> None:
    """The front panel's REL key (or mx+b math) changes every reading from then on: 1 mA less, here, with no
    sign of it in the reply."""
    k, emulator = _sourcing_2_v(bench)
    for key in keys:
        emulator.handle(key)
    with pytest.raises(DeviceError, match=rf"the instrument has its {said} on, not off as this driver left it"):
        k.measure()
    k.configure("voltage", 10e-3)  # sets them off again
    assert k.measure().current_a[0] == pytest.approx(2e-3)


def test_emulated_ascii_precision_the_front_panel_lowered_gives_no_reading(bench: Bench) -> None:
    """Three digits round 2 mA through 1 kΩ's readings, and every level and limit read back, to 0.1 %, with no sign of
    it in the reply: refused, and set back to all digits by configure."""
    k, emulator = _sourcing_2_v(bench)
    emulator.handle(b":FORM:ASC:PREC 3")
    with pytest.raises(DeviceError, match=r"the instrument has its ASCII precision at 3 digits, not automatic \(0\) "
                                          "as this driver left it"):
        k.measure()
    k.configure("voltage", 10e-3)
    assert emulator.ascii_precision == 0
    assert k.measure().current_a[0] == pytest.approx(2e-3)


def test_emulated_source_function_another_program_changed_leaves_nothing_to_source_until_configured(
        bench: Bench) -> None:
    k, emulator = _sourcing_2_v(bench)
    emulator.handle(b":SOUR:FUNC CURR")  # sourcing 0 A now, the output on
    with pytest.raises(DeviceError, match=r"the instrument has its source function 'CURR', not VOLT as this driver"):
        k.measure()
    with pytest.raises(DeviceError, match="not configured"):
        k.set_output(True)
    k.safe_state()
    assert emulator.output is False
    k.configure("voltage", 10e-3)
    k.set_output(True)
    k.set_level(1.0)
    assert k.measure().current_a[0] == pytest.approx(1e-3)


def test_a_reply_to_the_state_read_with_a_reading_that_is_not_its_six_fields_is_a_device_error() -> None:
    with expected_protocol(smu(), [*connected(), *configured_voltage(), READ, (unchanged()[0], b"0;0")]) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(DeviceError, match=r"replies '0' to ':SOUR:VOLT:ILIM:TRIP\?;:OUTP\?;.*' after a reading "
                                              r"are not the output state, the source function, its level and limit, "
                                              r"the measure function, its relative offset and math states and the "
                                              r"ASCII precision"):
            k.measure()


def test_a_connection_the_instrument_closed_is_opened_again_to_reach_the_safe_state() -> None:
    """The 2450 closed the connection (a LAN reset, a firewall's idle timeout during a long twin fit) while still
    sourcing: the safe state then failed on the dead socket ("Broken pipe") and left the output on at its level."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    with TcpServer(emulator) as server:
        k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(),
                         limits={"voltage_v": {"max_step": 2.0}})
        k.connect()
        k.configure("voltage", 10e-3)
        k.set_output(True)
        k.set_level(4.0)
        server.stop()  # the connection is dropped; the instrument, still on, listens again
        server.start()
        with pytest.raises(TransportError, match="the instrument closed the connection"):
            k.measure()
        k.close()
        assert not emulator.output and emulator.level["VOLT"] == 0.0


def test_an_instrument_gone_with_its_connection_leaves_the_first_failure_of_the_safe_state() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    server = TcpServer(emulator).start()
    k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(), name="smu")
    k.connect()
    server.stop()  # switched off: nothing listens any more
    with pytest.raises(TransportError, match=r"^smu \(TCPIP::[^)]+\): (connection failed|the instrument closed the "
                                             r"connection) during ':OUTP OFF'.* \(and before it: smu \(TCPIP::[^)]+\): "
                                             r"(connection failed|the instrument closed the connection) during "
                                             r"'SYST:ERR\?'.*\)$") as failed:
        k.close()
    assert "new connection" not in str(failed.value)  # the reconnection refused: the safe state's failure as it was


def test_a_link_lost_before_the_safe_state_leaves_its_failure_then_a_second_try_says_the_connection_failed() -> None:
    """A link found lost by an earlier command (still open) is tried first: the instrument gone, the safe state's own
    failure is raised, not that of the new connection; once that reconnection failed (the link closed), the next
    safe state opens it again at once, and says it could not, not that the link is not open."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    server = TcpServer(emulator).start()
    k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(), name="smu")
    k.connect()
    server.stop()  # switched off: nothing listens any more
    with pytest.raises(TransportError, match="the instrument closed the connection during ':OUTP\\?'"):
        k.query(":OUTP?")
    assert k.transport.link_lost and k.transport.is_open
    with pytest.raises(TransportError, match=r"^smu \(TCPIP::[^)]+\): (connection failed|the instrument closed the "
                                             r"connection) during ':OUTP OFF'"):
        k.safe_state()
    assert k.transport.link_lost and not k.transport.is_open
    with pytest.raises(TransportError, match=r"^smu \(TCPIP::[^)]+\): connection failed during 'open'"):
        k.safe_state()


def test_a_connection_closed_by_the_program_is_not_opened_again_by_the_safe_state() -> None:
    """Only a link the instrument lost is opened again: one closed on purpose stays closed, and the safe state says
    it is not open."""
    with TcpServer(Keithley2450Emulator(load_ohm=1000.0)) as server:
        k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(), name="smu")
        k.connect()
        k.transport.close()
        with pytest.raises(TransportError, match=r"not open \(sending ':OUTP OFF'\)"):
            k.safe_state()
        assert not k.transport.is_open


def test_another_instrument_met_on_the_new_connection_is_sent_nothing() -> None:
    """The new connection made for the safe state may reach another instrument (an address taken by another): it is
    said, and the other instrument gets no command beyond the identity query."""
    with TcpServer(Keithley2450Emulator(load_ohm=1000.0)) as server:
        k = Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(), name="smu")
        k.connect()
        k.configure("voltage", 10e-3)
        server.stop()
        other = Keithley2450Emulator()
        other.identity = "KEITHLEY INSTRUMENTS,MODEL 2450,04000001,1.7.12b"
        with TcpServer(other, port=server.port):
            with pytest.raises(DeviceError, match=r"on the new connection made to reach the safe state, TCPIP::\S+ "
                                                  r"answers 'KEITHLEY INSTRUMENTS,MODEL 2450,04000001,1\.7\.12b', not "
                                                  r"smu's identity '.*04000000.*': nothing was sent"):
                k.close()
            assert list(other.received) == [b"*IDN?"]


# -- the emulator on its own ---------------------------------------------------------------------------------
def test_emulator_accepts_long_and_short_forms() -> None:
    emulator = Keithley2450Emulator()
    assert emulator.handle(b":SOURce1:VOLTage:LEVel:IMMediate:AMPLitude 1.5") is None
    assert emulator.handle(b":sour:volt?") == b"1.500000E+00"
    reply = emulator.handle(b'SENSe:FUNCtion "VOLTage";:SENS:VOLT:NPLCycles 0.5;:VOLT:NPLC?')
    assert reply == b"5.000000E-01" and emulator.sense_function == "VOLT"
    assert emulator.handle(b"*IDN?") == IDN
    assert emulator.handle(b"SYST:ERR?") == b'0,"No error;0;0 0"'


def test_the_emulators_buffers_keep_the_last_readings_as_the_2450s_fill_continuously() -> None:
    """Every reading went into a list that never shrank (the driver reads with ``:READ?`` into defbuffer1 and never
    clears it): an emulator serving a long run or ``hil emulate`` grew by some 340 bytes a reading, 68 MB after
    200 000, and ``:TRACe:ACTual?`` counted past what a 2450 holds. Its default buffers hold 100 000 readings, the
    oldest overwritten by the newest."""
    assert all(stored.maxlen == 100_000 for stored in Keithley2450Emulator().buffer.values())

    class Small(Keithley2450Emulator):
        buffer_capacity = 3

    emulator = Small(load_ohm=1e6)  # 5 V draws 5 uA: within the limit, read back as set
    assert emulator.handle(b":OUTP ON") is None
    for level in range(1, 6):
        emulator.handle(b":SOUR:VOLT %d;:READ? \"defbuffer1\", SOUR" % level)
    assert emulator.handle(b':TRAC:ACT? "defbuffer1"') == b"3"
    assert emulator.handle(b':TRAC:DATA? 1, 3, "defbuffer1", SOUR') == b"3.000000E+00,4.000000E+00,5.000000E+00"
    assert emulator.handle(b':TRAC:DATA? 2, 2, "defbuffer1", SOUR') == b"4.000000E+00"
    assert emulator.handle(b"SYST:ERR?").startswith(b'0,"No error')


def test_emulator_errors_use_the_2450_format_and_a_failed_query_sends_nothing() -> None:
    emulator = Keithley2450Emulator()
    assert emulator.handle(b':TRAC:DATA? 1, 5, "defbuffer1"') is None  # empty buffer
    assert emulator.handle(b":SOUR:LIST:VOLT " + b", ".join(b"0.1" for _ in range(101))) is None
    assert emulator.handle(b":SOUR2:VOLT 1") is None
    pattern = rb'^%d,"%s[^;"]*;1;\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}"$'
    expected = ((-222, b"Parameter data out of range"), (-223, b"Too much data"), (-113, b"Undefined header"))
    for code, text in expected:
        reply = emulator.handle(b"SYST:ERR?")
        assert reply is not None and re.match(pattern % (code, text), reply), reply
    assert emulator.handle(b"SYST:ERR?") == b'0,"No error;0;0 0"'


def test_emulator_refuses_a_source_function_change_while_measuring_resistance() -> None:
    emulator = Keithley2450Emulator()
    assert emulator.handle(b':SENS:FUNC "RES";:SOUR:FUNC CURR;:SOUR:FUNC?') is None
    reply = emulator.handle(b"SYST:ERR?")
    assert reply is not None and reply.startswith(b'-221,"Settings conflict'), reply
    assert emulator.handle(b':SENS:FUNC "CURR";:SOUR:FUNC CURR;:SOUR:FUNC?') == b"CURR"


def test_emulator_a_remote_sense_change_switches_the_output_off() -> None:
    emulator = Keithley2450Emulator()
    emulator.handle(b":OUTP ON;:SENS:CURR:RSEN OFF")
    assert emulator.output  # no change
    emulator.handle(b":SENS:CURR:RSEN ON")
    assert not emulator.output and emulator.remote_sense["CURR"]


def test_emulator_binary_formats_reply_in_blocks_and_refuse_elements_that_are_not_numbers() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    emulator.handle(b":SOUR:VOLT:ILIM 0.01;:SOUR:VOLT 2;:OUTP ON")
    for name, dtype in ((b"REAL", "<f8"), (b"SREAL", "<f4")):
        assert emulator.handle(b":FORM:DATA " + name + b";:FORM?") == name
        reply = emulator.handle(b':READ? "defbuffer1", SOUR, READ')
        assert reply is not None and reply.startswith(b"#0")  # an indefinite-length block, as the 2450 sends
        assert np.frombuffer(reply[2:], dtype=dtype).tolist() == pytest.approx([2.0, 2e-3])
        for element in (b"SOURSTAT", b"STAT", b"UNIT", b"SOURUNIT"):
            assert emulator.handle(b':TRAC:DATA? 1, 1, "defbuffer1", READ, ' + element) is None
            error = emulator.handle(b"SYST:ERR?")
            assert error is not None and error.startswith(b'1133,"Buffer element not available'), error
    assert emulator.handle(b"*RST;:FORM:DATA?") == b"ASC"
    assert emulator.handle(b':READ? "defbuffer1", READ, UNIT') == b"0.000000E+00,Amp DC"


def test_emulator_terminals_without_the_load_are_an_open_circuit_and_a_change_switches_the_output_off() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0, load_terminals="rear")
    emulator.handle(b":SOUR:VOLT:ILIM 0.01;:SOUR:VOLT 2;:OUTP ON")
    assert emulator.operating_point() == (2.0, 0.0, False)  # front: nothing connected, no current
    emulator.handle(b":SOUR:FUNC CURR;:SOUR:CURR:VLIM 5;:SOUR:CURR -1e-3")
    assert emulator.operating_point() == (-5.0, 0.0, True)  # a current source runs to its voltage limit
    assert emulator.handle(b":ROUTe:TERMinals REAR;:ROUT:TERM?") == b"REAR"
    assert not emulator.output
    emulator.handle(b":OUTP ON")
    assert emulator.operating_point() == (-1.0, -1e-3, False)
    emulator.handle(b":ROUT:TERM REAR")
    assert emulator.output  # no change
    with pytest.raises(ConfigError, match="load_terminals must be 'front' or 'rear', got 'top'"):
        Keithley2450Emulator(load_terminals="top")


def test_emulator_power_envelope_lowers_the_limit_with_a_warning_outside_the_error_queue() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    emulator.handle(b":SOUR:VOLT:ILIM 1;:SOUR:VOLT 21")
    assert emulator.limit["VOLT"] == 1.0 and not emulator.warnings  # 21 V: autorange keeps the 20 V range
    emulator.handle(b":SOUR:VOLT 22;:SOUR:VOLT 5")
    assert emulator.handle(b":SOUR:VOLT:ILIM?;:SOUR:VOLT:RANG?") == b"1.050000E-01;2.000000E+01"  # not restored
    assert emulator.warnings == ["current limit lowered from 1 to 0.105 for the 200 source range"]
    emulator.handle(b":SOUR:VOLT:ILIM 1;:SOUR:VOLT:RANG 200")  # a fixed range does the same
    emulator.handle(b":SOUR:VOLT:ILIM 0.5")  # and so does a limit beyond the present range's envelope
    assert emulator.limit["VOLT"] == 0.105 and len(emulator.warnings) == 3
    emulator.handle(b":SOUR:FUNC CURR;:SOUR:CURR:VLIM 100;:SOUR:CURR 0.105")
    assert emulator.limit["CURR"] == 100.0  # the 100 mA range holds 105 mA
    emulator.handle(b":SOUR:CURR 0.2")
    assert emulator.limit["CURR"] == 21.0 and len(emulator.warnings) == 4
    assert emulator.handle(b"SYST:ERR?") == b'0,"No error;0;0 0"'


def test_emulator_noise_is_seeded() -> None:
    def readings(seed: int) -> bytes | None:
        emulator = Keithley2450Emulator(load_ohm=1e3, noise_a=1e-6, seed=seed)
        emulator.handle(b":OUTP ON;:SOUR:VOLT:ILIM 0.01;:SOUR:VOLT 1")
        return emulator.handle(b':READ? "defbuffer1", READ')

    assert readings(1) == readings(1) != readings(2)
    assert float(readings(1) or b"nan") == pytest.approx(1e-3, abs=1e-5)


class PointByPoint2450(Keithley2450):
    """The 2450's driver as it would be for an instrument without list sweeps: the base class's sweep."""

    _sweep_hw = SourceMeter._sweep_hw


def test_a_source_meter_without_list_sweeps_sweeps_point_by_point() -> None:
    clock = VirtualClock()
    with TcpServer(Keithley2450Emulator(load_ohm=1000.0)) as server, \
            PointByPoint2450(VisaTransport(server.resource, timeout_s=2.0), clock=clock,
                             limits={"voltage_v": {"max_step": 0.5}}) as k:
        k.configure("voltage", 10e-3)
        k.set_output(True)
        started = clock.now()
        readings = k.sweep([0.5, 1.0, 0.5], delay_s=0.1)
        assert readings.voltage_v.tolist() == pytest.approx([0.5, 1.0, 0.5])
        assert readings.current_a.tolist() == pytest.approx([0.5e-3, 1e-3, 0.5e-3], rel=1e-6)
        assert not readings.in_compliance.any() and k.level == 0.5
        assert clock.now() - started == pytest.approx(0.3)


def test_emulated_a_level_left_beyond_the_lab_limit_is_not_switched_on(tcp_server: Callable[..., TcpServer]) -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    assert emulator.handle(b":SOUR:VOLT 10") is None  # a previous user's 10 V, output off
    k = Keithley2450(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), clock=VirtualClock(),
                     limits={"voltage_v": {"min": -2, "max": 2, "max_step": 2.0}})
    with k.connect():
        k.configure("voltage", 1e-3)
        with pytest.raises(LimitError, match=r"^Keithley2450: the voltage source is at 10 V, outside the limit -2\.\.2 "
                                             r"V; set a level within it before switching the output on$"):
            k.set_output(True)
        assert emulator.output is False
        k.set_level(1.0)  # ramped back from 10 V, with the output off
        k.set_output(True)
        assert emulator.operating_point()[0] == pytest.approx(1.0)


def test_a_protection_change_is_refused_while_the_output_state_is_unknown() -> None:
    """After a failed switch the output may be on: a change of the overvoltage protection, which the 2450 takes
    only before the output is on, is refused before anything is sent, as with an output known to be on."""
    error = (b"SYST:ERR?", b'-222,"Parameter data out of range;1;2026/11/28 10:00:00.000"')
    exchanges = [*connected(), *configured_voltage(), (b":OUTP ON", None), error, NO_ERROR,
                 (b":SENS:CURR:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"PROT20")]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(DeviceError, match="-222"):
            k.set_output(True)
        assert k.output_on is None
        with pytest.raises(LimitError, match=r"overvoltage protection must change from PROT20 to NONE"):
            k.configure("voltage", 1e-3)


def test_a_late_reply_that_looks_like_the_marker_is_discarded_too() -> None:
    """A query that timed out answers "1" late, as the first marker's ``*ESE?`` does: only a line with the marker
    and the identity ends the resynchronisation, or the marker's own line would answer the next query."""
    read = (b':READ? "defbuffer1", SOUR, READ', b"2.000000E+00,1.000000E-03")
    exchanges = [*connected(), *configured_voltage(), read, (unchanged()[0], TIMED_OUT),
                 (b"*ESE 1;*ESE?;*IDN?", b"1"), (None, b"1;" + IDN),  # the late "1" first, then the marker
                 (b"*ESE 0", None), read, unchanged()]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(TransportTimeout, match="TRIP"):
            k.measure()
        assert k.measure().in_compliance.tolist() == [False]
        assert not k.transport.out_of_step


def test_a_query_interrupted_later_is_reported_once_a_check_has_found_none_from_the_resynchronisation() -> None:
    """On a socket link a resynchronisation leaves no -410 in the queue; once an error check has found the queue
    empty, a -410 from a later interrupted query is reported, not forgiven on the old resynchronisation's account."""
    then = [(b":SOUR:VOLT 0.5", None), NO_ERROR,  # no -410 came of the resynchronisation
            (b":SOUR:VOLT 0.6", None), INTERRUPTED, NO_ERROR]
    with read_again_after_a_timeout(then) as k:
        k.set_level(0.5)
        with pytest.raises(DeviceError, match="-410"):
            k.set_level(0.6)


def test_one_resynchronisation_forgives_one_interrupted_query_not_every_one_in_the_queue() -> None:
    """A -410 beyond the one a resynchronisation may have caused is another query's, interrupted: reported."""
    with read_again_after_a_timeout([(b":SOUR:VOLT 0.5", None), INTERRUPTED, INTERRUPTED, NO_ERROR]) as k, \
            pytest.raises(DeviceError, match=r"instrument reported after setting the source to 0\.5 V: -410 Query "
                                             r"INTERRUPTED; what was sent may not have been carried out: look each "
                                             r"code up in the instrument's manual"):
        k.set_level(0.5)


def test_a_sense_change_is_refused_while_the_output_state_is_unknown() -> None:
    """After a failed switch the output may be on: changing remote sense, which may switch a live output off, is
    refused before anything is sent, as with an output known to be on."""
    error = (b"SYST:ERR?", b'-222,"Parameter data out of range;1;2026/11/28 10:00:00.000"')
    exchanges = [*connected(), *configured_voltage(), (b":OUTP ON", None), error, NO_ERROR,
                 (b":SENS:CURR:RSEN?", b"1")]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(DeviceError, match="-222"):
            k.set_output(True)
        with pytest.raises(LimitError, match=r"remote sense must change to OFF"):
            k.configure("voltage", 1e-3)


@pytest.mark.parametrize("level", [b"5", b"2.2"])
def test_a_source_range_that_cannot_hold_the_present_level_is_refused_before_sending(level: bytes) -> None:
    """The 2 V range holds up to 2.1 V: at 2.2 V or 5 V, fixing it would clip the source."""
    with expected_protocol(smu(), [*connected(level=level), *configured_voltage()]) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(LimitError, match=rf"the 2 V source range cannot hold the present level {level.decode()} V"):
            k.set_source_range(2.0)
        assert k.source_range is None


def test_a_reconnected_smu_must_be_configured_again() -> None:
    """The compliance is never read: after close and connect, another program may have changed it, so nothing
    sources until configure() has set it again."""
    closed = [NO_ERROR, state_read(), (b":SOUR:VOLT 0", None), NO_ERROR, (b":OUTP OFF", None), NO_ERROR]
    with expected_protocol(smu(), [*connected(), *configured_voltage(), *closed, *connected()]) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.close()
        k.connect()
        assert k.compliance is None and k.nplc is None
        with pytest.raises(DeviceError, match="not configured"):
            k.set_output(True)


def test_an_error_queue_reply_without_its_quotes_is_malformed() -> None:
    """The 2450 quotes its message with severity and time; a reply without them is not from this instrument's
    error queue (another command set, a link out of step)."""
    with expected_protocol(smu(), [*connected(), (b"SYST:ERR?", b"-222,Parameter data out of range")]) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"^Keithley2450: error-queue reply '-222,Parameter data out of range' "
                                              r"is malformed"):
            k.check_errors()


def test_a_source_function_reply_that_is_neither_volt_nor_curr_is_a_device_error() -> None:
    """A garbled reply at connect is named, not a KeyError; the connection is closed."""
    with expected_protocol(smu(), connected(function=b"XYZZY")[:-1]) as k:
        with pytest.raises(DeviceError, match=r"^Keithley2450: reply 'XYZZY' to ':SOUR:FUNC\?' is not VOLT or CURR"):
            k.connect()
        assert not k.connected and not k.transport.is_open


def test_configure_refuses_a_compliance_below_the_fixed_measure_ranges_resolution_before_sending() -> None:
    """The 2450 needs the compliance above 0.1 % of a fixed measure range: 10 µA on the 100 mA range is refused
    before anything is sent, the two currents given with their unit (it read 'compliance 1e-05 must exceed 0.1 % of
    the fixed 0.1 measure range')."""
    fixed = [(b":SENS:CURR:RANG:AUTO OFF", None), (b":SENS:CURR:RANG 0.1", None), NO_ERROR]
    with expected_protocol(smu(), [*connected(), *configured_voltage(), *fixed]) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        k.set_measure_range(0.1)
        with pytest.raises(LimitError, match=r"^Keithley2450: compliance 1e-05 A must exceed 0\.1 % of the fixed "
                                             r"0\.1 A measure range; use set_measure_range\(None\) first$"):
            k.configure("voltage", 1e-5)
        assert k.compliance == 1e-3


def test_a_measurement_waits_as_long_as_a_reading_may_take() -> None:
    """A reading at 10 PLC on autorange may take longer than the transport's timeout: the read is given that time."""
    read = (b':READ? "defbuffer1", SOUR, READ', b"1.000000E+00,1.000000E-03")
    transport = PatienceRecorded([*connected(), *configured_voltage(nplc=b"10"), read,
                                  unchanged()])
    k = Keithley2450(transport, clock=VirtualClock())
    k.connect()
    k.configure("voltage", 1e-3, nplc=10)
    k.measure()
    transport.assert_done()
    assert transport.timeouts[read[0]] == pytest.approx(1.0 + k._reading_bound_s())
    assert transport.timeouts[unchanged()[0]] == 1.0


def test_a_sweep_whose_buffer_stops_filling_is_aborted_at_its_deadline() -> None:
    """A sweep stuck in the trigger model (a missed trigger) is polled until its longest duration plus ten timeouts
    have passed, then aborted with ``:ABOR``: never polled forever."""
    stuck = (b':TRAC:ACT? "defbuffer1"', b"1")
    sweep = [(b':TRAC:CLE "defbuffer1"', None), (b":SOUR:LIST:VOLT 0.1, 0.2", None),
             (b":SOUR:SWE:VOLT:LIST 1, 10, 1, OFF", None), NO_ERROR, (b":INIT", None), *[stuck] * 13, (b":ABOR", None)]
    with on_for_a_sweep(sweep) as k:
        with pytest.raises(DeviceError, match=r"^Keithley2450: sweep of 2 points stopped at 1 readings; aborted"):
            k.sweep([0.1, 0.2], delay_s=10.0)
        assert k.level is None


def test_source_status_given_in_hexadecimal_or_as_a_float_is_read_for_the_limit_bit() -> None:
    """SOURSTATus comes as ``0x00a0`` or ``1.6E+02`` as well as ``160`` depending on the format set: the limit bit
    (32) is read from each."""
    data = b"1.000000E-01,1.000000E-04,0x0080,2.000000E-01,1.000000E-03,0x00a0,3.000000E-01,1.000000E-03,1.6E+02"
    with on_for_a_sweep(swept(b"0.1, 0.2, 0.3", 3, data)) as k:
        assert k.sweep([0.1, 0.2, 0.3]).in_compliance.tolist() == [False, True, True]


def test_connect_refuses_another_model_whose_serial_number_holds_2450() -> None:
    exchanges = [(b"*CLS", None), (b"*IDN?", b"KEITHLEY INSTRUMENTS,MODEL 2460,04024501,1.7.12b")]
    with expected_protocol(smu(), exchanges) as k, pytest.raises(DeviceError, match="not a Keithley 2450"):
        k.connect()


def test_a_terminals_reply_that_is_neither_front_nor_rear_is_a_device_error() -> None:
    exchanges = [*connected()[:5], (b":ROUT:TERM?", b"BOTH")]
    with expected_protocol(smu(), exchanges) as k, \
            pytest.raises(DeviceError, match=r"reply 'BOTH' to ':ROUT:TERM\?' is not FRON or REAR"):
        k.connect()


def test_a_limit_read_back_one_percent_off_is_a_device_error() -> None:
    """Only the 2450's own rounding passes: a limit it lowered even a little is not the one set."""
    exchanges = connected() + configured_voltage()[:-1] + [(b":SOUR:VOLT:ILIM?", b"9.900000E-04")]
    with expected_protocol(smu(), exchanges) as k, \
            pytest.raises(DeviceError, match=r"holds a compliance of 0\.00099 A, not the 0\.001 A set"):
        k.connect()
        k.configure("voltage", 1e-3)


def test_a_limit_read_back_other_than_the_one_set_resynchronises_the_next_query() -> None:
    """An unsolicited line read as the limit (here the level's reply, 1 A) would make every later reply answer the
    query before it, the safe state's error checks among them: the next query resynchronises first."""
    exchanges = [*connected(), *configured_voltage()[:-1], (b":SOUR:VOLT:ILIM?", b"1"),
                 (b":OUTP OFF", None), (b"*ESE 1;*ESE?;*IDN?", b"1.000000E-03"), (None, b"1;" + IDN),
                 (b"*ESE 0", None), NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"holds a compliance of 1 A, not the 0\.001 A set"):
            k.configure("voltage", 1e-3)
        k.set_output(False)
        assert k.output_on is False


def test_a_sweep_reply_with_more_values_than_points_is_a_device_error() -> None:
    data = b"1.000000E-01,1.000000E-04,128,2.000000E-01,2.000000E-04,128,3.000000E-01,3.000000E-04,128"
    with on_for_a_sweep(swept(b"0.1, 0.2", 2, data)) as k, pytest.raises(DeviceError, match="has 9 values, expected 6"):
        k.sweep([0.1, 0.2])


def test_an_error_message_holding_a_semicolon_is_kept_whole() -> None:
    """The 2450 appends ``;<severity>;<date time>`` to the message: only those two fields are cut off."""
    exchanges = [*connected(), (b":OUTP OFF", None),
                 (b"SYST:ERR?", b'-222,"Parameter data out of range; level;1;2026/11/28 10:00:00.000"'), NO_ERROR]
    with expected_protocol(smu(), exchanges) as k:
        k.connect()
        with pytest.raises(DeviceError, match=r"reported after switching the output off: -222 Parameter data out of "
                                              r"range; level; what was sent may not have been carried out"):
            k.set_output(False)


def test_emulated_the_smallest_compliances_are_accepted(bench: Bench) -> None:
    """1 nA when sourcing voltage, 20 mV when sourcing current: the 2450's minimum is allowed, not refused."""
    k, emulator = bench
    k.configure("voltage", 1e-9)
    k.configure("current", 0.02)
    assert emulator.limit == {"VOLT": 1e-9, "CURR": 0.02}


def test_emulated_a_compliance_of_exactly_0_1_percent_of_the_fixed_measure_range_is_refused(bench: Bench) -> None:
    """The limit must exceed 0.1 % of a fixed measure range, whichever of the two is set first."""
    k, emulator = bench
    k.configure("voltage", 1e-3)
    k.set_measure_range(1e-3)
    with pytest.raises(LimitError, match=r"must exceed 0\.1 % of the fixed 0\.001 A measure range"):
        k.configure("voltage", 1e-6)
    k.set_measure_range(None)
    k.configure("voltage", 1e-6)
    with pytest.raises(LimitError, match=r"must exceed 0\.1 % of the 0\.001 A measure range; choose a smaller range, "
                                         r"or configure\(\) a larger compliance first$"):
        k.set_measure_range(1e-3)
    assert emulator.measure_range["CURR"] is None and not emulator.errors


def test_emulated_a_compliance_at_the_envelopes_edge_is_kept_on_the_200_v_range(bench: Bench) -> None:
    """±210 V at up to ±105 mA: 105 mA itself is inside the envelope."""
    k, emulator = bench
    k.configure("voltage", 0.105)
    k.set_level(30.0)
    assert emulator.limit["VOLT"] == 0.105 and emulator.warnings == []


_LIST_OF_100 = b", ".join([b"0.001"] * 100)


@pytest.mark.parametrize(("setup", "message", "code"), [
    ([b":SOUR:VOLT:RANG 2"], b":SOUR:VOLT 2.2", -222),  # beyond 105 % of the fixed source range
    ([b":SOUR:VOLT 5"], b":SOUR:VOLT:RANG 2", -221),  # a fixed range that cannot hold the level
    ([], b":SOUR:VOLT 300", -222),
    ([], b":SOUR:VOLT:ILIM 1e-10", -222),  # below the 1 nA minimum
    ([], b":SOUR:VOLT:ILIM 2", -222),  # beyond 1.05 A
    ([b":SENS:CURR:RANG 1e-3"], b":SOUR:VOLT:ILIM 1e-6", -221),  # not above 0.1 % of the fixed measure range
    ([b":SOUR:VOLT:ILIM 1e-6"], b":SENS:CURR:RANG 1e-3", -221),  # the same, the other way round
    ([], b":SENS:CURR:NPLC 20", -222),
    ([], b":SENS:CURR:NPLC 0.005", -222),
    ([], b":FORM:ASC:PREC 3.5", -222),
    ([], b":OUTP2 ON", -113),  # one channel
    ([b":SOUR:LIST:VOLT 1"], b":SOUR:SWE:VOLT:LIST 1, 1e-5", -222),  # a delay of 0 or 50 us .. 10 ks
    ([b":SOUR:LIST:CURR 1e-3"], b":SOUR:SWE:CURR:LIST 1", -221),  # the source function is VOLT
    ([b":READ?"], b':TRAC:DATA? 1, 2, "defbuffer1"', -222),  # one reading stored
    ([b":SOUR:LIST:VOLT " + _LIST_OF_100, *[b":SOUR:LIST:VOLT:APP " + _LIST_OF_100] * 24],
     b":SOUR:LIST:VOLT:APP 0.001", -223),  # 2500 values at most
])
def test_emulator_refuses_what_the_2450_refuses(setup: list[bytes], message: bytes, code: int) -> None:
    """What the driver refuses before sending must fail in the emulator too, or a driver that sent it would pass."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    for sent in setup:
        emulator.handle(sent)
    assert not emulator.errors
    assert emulator.handle(message) is None
    assert emulator.errors[0][0] == code


@pytest.mark.parametrize("message", [b":TRAC:ACT? defbuffer1", b":TRAC:CLE defbuffer1", b":SENS:FUNC CURR",
                                     b":READ? defbuffer1, SOUR, READ", b":SOUR:SWE:VOLT:LIST 1, 0, 1, OFF, defbuffer1"])
def test_emulator_refuses_a_buffer_name_or_measure_function_not_sent_as_a_string(message: bytes) -> None:
    """The 2450 takes a reading buffer's name and the measure function as SCPI strings, quoted
    (``"<bufferName>"``, ``"<function>"``: Reference Manual 2450-901-01, :TRACe:DATA?, :SOURce:SWEep:<function>:LIST,
    [:SENSe[1]]:FUNCtion; pymeasure and QCoDeS quote them too); the emulator took them bare, so a driver that
    dropped the quotes would pass here and fail on a bench. The quoted forms are taken."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    emulator.handle(b":SOUR:LIST:VOLT 1")
    assert emulator.handle(message) is None
    assert emulator.errors and emulator.errors[0][0] == -104
    emulator.errors.clear()
    quoted = re.sub(rb"(defbuffer1|CURR$)", rb'"\1"', message)
    emulator.handle(quoted)
    assert not emulator.errors, quoted
    emulator.handle(b':SENS:FUNC "VOLT:DC"')  # the form `:SENS:FUNC?` replies with, and QCoDeS sends
    assert not emulator.errors and emulator.sense_function == "VOLT"


@pytest.mark.parametrize(("fail_abort", "points"), [(b"OFF", 3), (b"ON", 2)])
def test_emulator_a_list_sweep_switches_the_output_on_and_fail_abort_stops_it_at_the_limit(fail_abort: bytes,
                                                                                           points: int) -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    for message in (b":SOUR:VOLT:ILIM 1e-3", b":SOUR:LIST:VOLT 0.5, 2, 0.5",
                    b":SOUR:SWE:VOLT:LIST 1, 0, 1, " + fail_abort, b":INIT"):
        assert emulator.handle(message) is None
    assert emulator.output and len(emulator.buffer["defbuffer1"]) == points  # 2 V on 1 kOhm hits the 1 mA limit


def test_emulator_the_limit_of_the_other_source_function_is_never_tripped() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    emulator.handle(b":SOUR:VOLT:ILIM 1e-3;:SOUR:VOLT 5;:OUTP ON")
    assert emulator.handle(b":SOUR:VOLT:ILIM:TRIP?") == b"1"
    assert emulator.handle(b":SOUR:CURR:VLIM:TRIP?") == b"0"


def test_emulator_reset_switches_the_output_off() -> None:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    emulator.handle(b":OUTP ON;*RST")
    assert emulator.handle(b":OUTP?") == b"0"


def test_a_level_compliance_or_range_beyond_the_float_range_is_refused_in_one_line_and_sends_nothing() -> None:
    """An integer beyond the float range (10**400) was an OverflowError traceback from the 2450's own checks of a
    level, a compliance and a range; a range of True was taken as 1. Each is now a `LimitError` naming the argument."""
    with expected_protocol(smu(), connected() + configured_voltage()) as k:
        k.connect()
        k.configure("voltage", 1e-3)
        with pytest.raises(LimitError, match=r"^Keithley2450 source voltage: a number beyond the float range is "
                                             r"outside -210\.\.210 V$"):
            k.set_level(10**400)
        with pytest.raises(LimitError, match=r"^Keithley2450 compliance: a number beyond the float range is outside "):
            k.configure("voltage", 10**400)
        with pytest.raises(LimitError, match=r"^Keithley2450: source range beyond the float range refused; the "
                                             r"2450's ranges are 0\.02, 0\.2, 2, 20, 200 V, or None for auto$"):
            k.set_source_range(10**400)
        with pytest.raises(LimitError, match=r"^Keithley2450: measure range True is not a number$"):
            k.set_measure_range(True)  # type: ignore[arg-type]
        assert (k.level, k.compliance, k.source_range, k.measure_range) == (0.0, 1e-3, None, None)
