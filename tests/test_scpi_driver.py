"""The SCPI driver mixin against the echo emulator on 127.0.0.1: resynchronisation and its lock."""

import re
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scpi import ScpiDriver
from hil.errors import DeviceError, TransportError, TransportTimeout
from hil.instruments import Instrument
from hil.testing import ProtocolTransport, expected_protocol
from hil.transport import SerialTransport, VisaTransport
from tests.test_transport import IN_TIME_S, EchoEmulator


class EchoDriver(ScpiDriver):
    name = "echo"


class WatchedTransport(VisaTransport):
    """Signals when a thread other than the one holding ``holder`` reads ``out_of_step``."""

    def __init__(self, *arguments, **options):
        self.checked, self.holder = threading.Event(), None
        super().__init__(*arguments, **options)

    @property
    def out_of_step(self) -> bool:
        if self.holder is not None and threading.current_thread() is not self.holder:
            self.checked.set()
        return self._out_of_step

    @out_of_step.setter
    def out_of_step(self, value: bool) -> None:
        self._out_of_step = value


def test_a_query_waiting_for_the_link_resynchronises_after_the_timeout_of_the_query_before_it(tcp_server) -> None:
    """Thread A's query holds the link and times out while thread B's query waits for it: B must see that the link
    is out of step, or A's late reply answers B."""
    transport = WatchedTransport(tcp_server(EchoEmulator()).resource, timeout_s=1.0)
    driver = EchoDriver(transport)
    replies: list[str] = []
    with transport:
        driver.idn = driver.query("*IDN?")
        holding, released = threading.Event(), threading.Event()

        def slow_query_that_times_out() -> None:  # thread A: a query whose reply comes after its timeout
            with transport.transaction():
                transport.holder = threading.current_thread()
                transport.write("ECHO? late")
                holding.set()
                transport.checked.wait(1)  # B has looked at the flag (before taking the lock, without the fix)
                transport.out_of_step = True  # as the timeout sets it; the reply "late" is on its way
                transport.holder = None
            released.set()

        first = threading.Thread(target=slow_query_that_times_out)
        first.start()
        holding.wait(5)
        second = threading.Thread(target=lambda: replies.append(driver.query("ECHO? mine")))
        second.start()
        first.join()
        second.join()
    assert released.is_set() and replies == ["mine"]


def test_a_drivers_timeout_is_one_line_naming_the_instrument_then_the_resource(tcp_server) -> None:
    """The driver lends the transport its name: an error reads ``echo (resource): ...``, so that a lab of several
    instruments on similar addresses says which one failed."""
    transport = VisaTransport(tcp_server(EchoEmulator()).resource, timeout_s=0.2)
    driver = EchoDriver(transport)
    with transport, pytest.raises(TransportTimeout) as caught:
        driver.query("NOSUCH?")
    message = str(caught.value)
    assert message.startswith(f"echo ({transport.resource}): no reply within 0.2 s to 'NOSUCH?'")
    assert "\n" not in message


@pytest.fixture
def echo_driver(tcp_server) -> Iterator[EchoDriver]:
    """An `EchoDriver` on the echo emulator over TCP: ``ECHO? "<text>"`` makes the instrument reply ``text``."""
    transport = VisaTransport(tcp_server(EchoEmulator()).resource, timeout_s=1.0)
    with transport:
        yield EchoDriver(transport)


def test_a_backlog_longer_than_a_resynchronisation_reads_is_refused_and_the_next_query_gets_its_own_reply(
        echo_driver: EchoDriver) -> None:
    """A link out of step behind more stale replies than one resynchronisation reads (another program's queries, a
    flood of late replies) is a `DeviceError`, never a stale reply taken for the answer; it stays out of step, so the
    next query resynchronises again, past the rest of the backlog, and reads its own reply."""
    transport = echo_driver.transport
    echo_driver.idn = echo_driver.query("*IDN?")
    for index in range(echo_driver.max_error_reads + 8):
        transport.write(f"ECHO? stale{index}")
    transport.out_of_step = True
    with pytest.raises(DeviceError, match=r"^echo: out of step with the instrument after a timeout \(no answer to its "
                                          r"marker among 32 replies\); power-cycle it and connect again$"):
        echo_driver.query("ECHO? first")
    assert transport.out_of_step
    assert echo_driver.query("ECHO? second") == "second" and not transport.out_of_step
    echo_driver.check_errors()  # the markers' *ESE commands left no error


def test_a_reply_padded_with_spaces_reads_as_its_value(echo_driver: EchoDriver) -> None:
    assert echo_driver.query('ECHO? " 1 "') == "1" and echo_driver.query_bool('ECHO? " 1 "') is True


@pytest.mark.parametrize("reply", ["inf", "-INF", "nan"])
def test_a_number_that_is_not_finite_is_a_device_error(echo_driver: EchoDriver, reply: str) -> None:
    with pytest.raises(DeviceError, match="is not a finite number"):
        echo_driver.query_float(f"ECHO? {reply}")


def test_a_list_with_an_empty_value_is_a_device_error_not_a_shorter_list(echo_driver: EchoDriver) -> None:
    with pytest.raises(DeviceError, match="is not a list of numbers"):
        echo_driver.query_floats('ECHO? "1,,2"')


def test_a_positive_error_code_is_an_error_too() -> None:
    """Instruments number their own errors above 0 (the 2450's 5074 "Output interlock"); only 0 means none."""
    exchanges = [(b"SYST:ERR?", b'5074,"Output interlock asserted"'), (b"SYST:ERR?", b'0,"No error"')]
    with expected_protocol(EchoDriver, exchanges) as driver, \
            pytest.raises(DeviceError, match=r"^echo: instrument reported: 5074 Output interlock asserted; what was "
                                             r"sent may not have been carried out: look each code up in the "
                                             r"instrument's manual, correct the setting or the command, then try "
                                             r"again$"):
        driver.check_errors()


@pytest.mark.parametrize("reply", [b"1", b"+0", b"-222,Data out of range", b'5,"unterminated', b'x,"No error"'])
def test_an_error_queue_reply_not_of_the_scpi_form_is_malformed_and_resynchronises(reply: bytes) -> None:
    """A bare ``1`` (an unsolicited line, or the reply to another query) was read as error 1 with no message, and the
    check read on, taking the reply meant for the error query before it: every later query then read the reply
    before its own. An entry is ``<code>,"<message>"`` or malformed, and malformed resynchronises the next query."""
    exchanges = [(b"SYST:ERR?", reply), (b"*ESE 1;*ESE?;*IDN?", b'+0,"No error"'), (None, b"1;hil,Echo,1,0"),
                 (b"*ESE 0", None), (b"SYST:ERR?", b'+0,"No error"')]
    with expected_protocol(EchoDriver, exchanges) as driver:
        with pytest.raises(DeviceError, match=r"^echo: error-queue reply .* is malformed; check that the resource"):
            driver.check_errors()
        driver.check_errors()


def test_an_operation_complete_reply_other_than_1_is_a_device_error() -> None:
    with expected_protocol(EchoDriver, [(b"*OPC?", b"0")]) as driver, \
            pytest.raises(DeviceError, match=r"reply '0' to '\*OPC\?' after the upload is not 1"):
        driver.wait_complete(1.0, "the upload")


@pytest.mark.parametrize("sent", ["310a", "0a"], ids=["a reply with a line ending too many", "an empty reply"])
def test_a_blank_line_in_the_replies_never_makes_one_query_answer_the_next(echo_driver: EchoDriver, sent: str) -> None:
    """No SCPI reply is empty: a blank line is a line ending too many, and the reply that follows it would answer
    the next query, and so on for every query after. The query that reads it is refused, and the next one
    resynchronises first."""
    echo_driver.idn = echo_driver.query("*IDN?")
    if sent == "310a":  # "1\n" and the instrument's own line ending after it, at once: seen with the reply
        with pytest.raises(DeviceError, match=r"^echo: reply '1' to 'RAW\? 310a' came with more after it"):
            echo_driver.query(f"RAW? {sent}")
    else:
        assert echo_driver.query(f"RAW? {sent}") == ""
    assert [echo_driver.query(f"ECHO? {token}") for token in "bc"] == ["b", "c"]


def test_a_reply_of_the_wrong_form_resynchronises_the_next_query() -> None:
    """An unsolicited line answers the next query, and so on for every query after: a reply of the wrong form was
    refused, but the link stayed in step, so the reply meant for it answered the query after it, and the safe
    state's error checks read replies meant for earlier queries. Refused, it marks the link out of step: the next
    query resynchronises first."""
    exchanges = [(b"ECHO? 5", b"b"), (b"*ESE 1;*ESE?;*IDN?", b"5"), (None, b"1;hil,Echo,1,0"), (b"*ESE 0", None),
                 (b"ECHO? c", b"c")]
    with expected_protocol(EchoDriver, exchanges) as driver:
        driver.idn = "hil,Echo,1,0"
        with pytest.raises(DeviceError, match=r"^echo: reply 'b' to 'ECHO\? 5' is not a finite number; check that the "
                                              r"resource is this instrument .*resynchronises the link\)$"):
            driver.query_float("ECHO? 5")
        assert driver.query("ECHO? c") == "c"


@pytest.mark.parametrize("via", ["tcp", "pty"])
def test_a_reply_that_came_with_a_line_unasked_for_is_refused_and_resynchronises(tcp_server, pty_server,
                                                                                  via: str) -> None:
    """A reply and a line unasked for, come together (here ``a`` and ``b`` to ``RAW?``): either could be the
    reply, and the other would answer the next query, and so on. A reply that parsed was taken, and the line after
    it answered the next query; bytes waiting after a reply now refuse it, and the next query resynchronises."""
    transport = VisaTransport(tcp_server(EchoEmulator()).resource, timeout_s=IN_TIME_S) if via == "tcp" else \
        SerialTransport(pty_server(EchoEmulator()).resource, timeout_s=IN_TIME_S)
    driver = EchoDriver(transport)
    with transport:
        driver.idn = driver.query("*IDN?")
        with pytest.raises(DeviceError, match=r"^echo: reply 'a' to 'RAW\? 610a62' came with more after it; check "):
            driver.query("RAW? 610a62")  # "a\nb"
        assert [driver.query(f"ECHO? {token}") for token in "cd"] == ["c", "d"]


@pytest.mark.parametrize(("reply", "error", "message"), [
    (b"#13abcdef", TransportError, "is not a definite-length block (its 3 bytes are followed by 3 more before the "
                                   "termination, 'def')"),
    (b"#15abc", TransportTimeout, "did not end with the read termination"),
    (b"#13", TransportTimeout, "did not end with the read termination"),
    (b"abc", TransportError, "is not a definite-length block (it begins b'ab')"),
])
def test_a_scripted_block_reply_is_read_as_the_transports_read_one(reply: bytes, error: type[Exception],
                                                                   message: str) -> None:
    """The protocol transport parsed a block with pyvisa: one longer than its header said was cut to it (``#13abcdef``
    read as ``abc``), where both transports refuse it, and one shorter was a 'connection failed'; a driver's test saw
    neither."""
    with ProtocolTransport([(b"RAW?", reply)]) as transport, pytest.raises(error, match=re.escape(message)):
        transport.query_binary("RAW?", "B")
    with ProtocolTransport([(b"RAW?", b"#13abc")]) as transport:
        assert bytes(transport.query_binary("RAW?", "B")) == b"abc"


class LateIdentityEmulator(EchoEmulator):
    """Holds back its identity, once `hold_back` is called, until `release`: the reply is late for any timeout, and
    comes when the test says (not after a sleep raced against the timeout, which a loaded machine could make the
    reply win, or half win)."""

    def __init__(self) -> None:
        super().__init__()
        self._held, self._released = threading.Event(), threading.Event()

    def hold_back(self) -> None:
        """Hold back the reply to the next ``*IDN?`` until `release`."""
        self._released.clear()
        self._held.set()

    def release(self) -> None:
        self._released.set()

    def _idn(self) -> str:
        if self._held.is_set():
            self._held.clear()
            if not self._released.wait(30):  # the test failed before it released the reply
                raise TimeoutError("the held-back identity was never released")
        return self.identity


class ReopenedSerialTransport(SerialTransport):
    """Calls ``on_open`` each time the port has been opened (pyserial has then discarded what the line held): a reply
    released there comes on the new connection, as one the instrument owed the last connection does."""

    on_open = None

    def _open_raw(self) -> None:
        super()._open_raw()
        if self.on_open is not None:
            self.on_open()


class EchoInstrument(ScpiDriver, Instrument):
    def hardware_limits(self) -> dict:
        return {}

    def _safe_state_hw(self) -> None:
        """Nothing to make safe."""


def test_a_serial_instrument_whose_identity_came_late_connects_at_the_next_try(pty_server) -> None:
    """A serial line opened again still carries the reply the instrument owed the last connection: the next connect
    resynchronises before asking for the identity, though it knows none yet, and the late identity does not answer
    it."""
    emulator = LateIdentityEmulator()
    emulator.hold_back()
    transport = ReopenedSerialTransport(pty_server(emulator).resource, timeout_s=0.3)
    instrument = EchoInstrument(transport, name="echo")
    with pytest.raises(TransportTimeout, match=r"no reply within 0\.3 s to '\*IDN\?'"):
        instrument.connect()
    transport.timeout_s = IN_TIME_S
    transport.on_open = emulator.release  # the late identity comes once the port is open again
    with instrument:
        assert instrument.identify() == "hil,Echo,1,0"
        assert instrument.query("ECHO? a") == "a"


def test_a_serial_port_now_holding_another_instrument_resynchronises_at_connect_on_the_marker_alone(
        pty_server) -> None:
    """A connection that ends out of step (the identity came late) leaves the next connect to resynchronise; the
    port may hold another instrument by then, whose identity is not the one read at the last connection: matched
    against that, no marker would ever do and the instrument could not be connected again."""
    emulator = LateIdentityEmulator()
    transport = ReopenedSerialTransport(pty_server(emulator).resource, timeout_s=IN_TIME_S)
    instrument = EchoInstrument(transport, name="echo")
    with instrument:
        assert instrument.identify() == "hil,Echo,1,0"
    emulator.identity = "hil,Other,2,0"  # another instrument, slow to answer at first
    emulator.hold_back()
    transport.timeout_s = 0.3  # a reply held back: the timeout's length is all it costs
    with pytest.raises(TransportTimeout, match=r"no reply within 0\.3 s to '\*IDN\?'"):
        instrument.connect()
    transport.timeout_s = IN_TIME_S
    transport.on_open = emulator.release
    with instrument:
        assert instrument.identify() == "hil,Other,2,0"
        assert instrument.query("ECHO? a") == "a"



#: Replies to a block query (one line: a line ending only where it cuts a block's length): a block header, its length
#: perhaps no number, or a few bytes; then any bytes.
_LINE = st.binary(max_size=12).filter(lambda data: b"\n" not in data)
_LENGTH = st.text("0123456789 x-+", max_size=3).map(str.encode) | st.sampled_from([b"\n", b"\n5"])
_BLOCKISH = st.builds(bytes.__add__, st.builds(bytes.__add__, st.sampled_from([b"#1", b"#2", b"#3"]), _LENGTH)
                      | _LINE.map(lambda data: data[:3]), _LINE)


@pytest.mark.parametrize("via", ["tcp", "pty"])
def test_whatever_a_block_query_is_answered_the_next_query_gets_its_own_reply(tcp_server, pty_server,
                                                                               via: str) -> None:
    """A reply to a block query is read whole or refused as the reply's fault with the link out of step, never as a
    failed connection: a serial reply whose block header had a length that is no number (``#2x5abc``) was "connection
    failed … check the cable", in step, and the rest of its line ("abc") answered the next query."""
    transport = VisaTransport(tcp_server(EchoEmulator()).resource, timeout_s=0.1) if via == "tcp" else \
        SerialTransport(pty_server(EchoEmulator()).resource, timeout_s=0.1)
    driver = EchoDriver(transport)
    checks = iter(range(10**6))

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(_BLOCKISH)
    def next_query_is_answered_by_its_own_reply(reply: bytes) -> None:
        try:  # a cut block waits 0.1 s for silence; a reply late under load ends out of step too, which is checked
            transport.query_binary(f"RAW? {reply.hex()}", "B")
        except TransportError as error:
            assert "cable" not in str(error) and transport.out_of_step, error
        check = f"c{next(checks)}"
        with transport.patience(IN_TIME_S):  # an answer is waited for, however loaded the machine
            assert driver.query(f"ECHO? {check}") == check

    with transport:
        with transport.patience(IN_TIME_S):
            driver.idn = driver.query("*IDN?")
        next_query_is_answered_by_its_own_reply()
