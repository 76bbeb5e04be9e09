"""The byte-exact protocol kit is part of `hil.testing`, so a package adding a device can write the protocol tests
the project's own drivers have (tests/ is not installed with hil)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil import testing
from hil.errors import TransportTimeout

IDN = b"KEITHLEY INSTRUMENTS,MODEL 2450,04000000,1.7.12b"
CONNECT = [(b"*CLS", None), (b"*IDN?", IDN), (b"*LANG?", b"SCPI"), (b":FORM:DATA ASC;:FORM:ASC:PREC 0", None),
           (b":OUTP?", b"0"), (b":ROUT:TERM?", b"FRON"), (b"SYST:ERR?", b'0,"No error;0;0 0"'),
           (b":SOUR:FUNC?", b"VOLT"), (b":SOUR:VOLT?", b"0.5")]


def smu(transport: testing.ProtocolTransport):
    from drivers.keithley2450 import Keithley2450

    return Keithley2450(transport, name="smu")


def test_a_scripted_exchange_drives_a_driver_byte_for_byte() -> None:
    with testing.expected_protocol(smu, CONNECT) as instrument:
        instrument.connect()
        assert instrument.level == 0.5 and instrument.output_on is False


def test_a_byte_that_differs_fails_at_once_and_names_both() -> None:
    with pytest.raises(AssertionError, match=r"^exchange 1: expected b'\*ID', sent b'\*IDN\?'"), \
            testing.expected_protocol(smu, [CONNECT[0], (b"*ID", IDN)]) as instrument:
        instrument.connect()


def test_an_exchange_left_over_fails_and_a_scripted_timeout_times_out() -> None:
    with pytest.raises(AssertionError, match="1 exchange"), \
            testing.expected_protocol(smu, [*CONNECT, (b":OUTP?", b"0")]) as instrument:
        instrument.connect()
    with pytest.raises(TransportTimeout), \
            testing.expected_protocol(smu, [CONNECT[0], (b"*IDN?", testing.TIMED_OUT)]) as instrument:
        instrument.connect()


def test_traffic_beyond_the_script_fails_as_the_tests_error_not_as_a_lost_connection() -> None:
    """A driver that sends more than the script holds fails the test, naming the script's end: translated like a
    library's error, it would be a TransportError, which a driver may take for a lost link and go on past."""
    with pytest.raises(AssertionError, match=r"^unexpected traffic after the last of 8 exchanges$"), \
            testing.expected_protocol(smu, CONNECT[:-1]) as instrument:
        instrument.connect()


def test_block_is_an_ieee_definite_length_block() -> None:
    assert testing.block([1.0], "f") == b"#14\x00\x00\x80?"


@pytest.mark.parametrize("server", ["tcp_server", "pty_server"])
def test_both_server_fixtures_serve_an_instrument_that_ends_lines_with_cr(request, server) -> None:
    """A driver whose ``transport_options`` end lines with ``\\r`` is tested on its own line endings, over TCP or a
    pty alike: each fixture passes them to its server."""
    from hil.transport import SerialTransport, VisaTransport
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    served = request.getfixturevalue(server)(Keithley2450Emulator(), terminator=b"\r", input_terminator=b"\r")
    transport_class = VisaTransport if server == "tcp_server" else SerialTransport
    transport = transport_class(served.resource, timeout_s=1.0, read_termination="\r", write_termination="\r")
    transport.open()
    try:
        assert "MODEL 2450" in transport.query("*IDN?")
    finally:
        transport.close()


EMULATOR_BUGS = '''
import pytest

from hil.errors import TransportError
from hil.transport import SerialTransport, VisaTransport


class Raising:
    def handle(self, message):
        return {b"ID?": b"ACME DCS-8,1234"}[message]


class Text:
    def handle(self, message):
        return "OK"


@pytest.mark.parametrize(("server", "emulator"), [("tcp_server", Raising), ("pty_server", Text)])
def test_a_query(request, server, emulator):
    served = request.getfixturevalue(server)(emulator())
    transport = (VisaTransport if server == "tcp_server" else SerialTransport)(served.resource, timeout_s=0.5)
    transport.open()
    try:
        with pytest.raises(TransportError):  # the link lost (TCP) or no reply (a pty)
            transport.query("V1?")
    finally:
        transport.close()
'''


def test_an_emulator_that_raises_or_answers_text_fails_the_test_that_served_it_saying_so(tmp_path: Path) -> None:
    """In a package's own tests (its conftest loading hil.testing): an emulator's error ended the server's thread, and
    the test saw only the driver's timeout ('no reply within 0.5 s to 'V1?'; check that the instrument is on ...'),
    the cause left among pytest's warnings. The server notes the fault and stops answering that client."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["hil.testing"]\n')
    (tmp_path / "test_acme.py").write_text(EMULATOR_BUGS)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_acme.py",
                             "-W", "ignore::DeprecationWarning"],  # a library's (pyvisa-py 0.7's xdrlib) is not counted
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert re.findall(r"^the emulator stopped answering when .*$", result.stdout, re.MULTILINE) == [
        f"the emulator stopped answering when Raising.handle(b'V1?') raised KeyError: b'V1?' ({tmp_path}/test_acme.py:"
        "10); the driver's timeouts and errors in this test follow from it",
        "the emulator stopped answering when Text.handle(b'V1?') returned 'OK', not bytes or None; return the reply as "
        "bytes; the driver's timeouts and errors in this test follow from it"]
    assert result.stdout.splitlines()[-1].startswith("2 passed, 2 warnings, 2 errors"), result.stdout
