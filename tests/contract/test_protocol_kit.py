"""The byte-exact protocol kit is part of `hil.testing`, so a package adding a device can write the protocol tests
the project's own drivers have (tests/ is not installed with hil)."""

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
