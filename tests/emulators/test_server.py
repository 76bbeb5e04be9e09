"""`serve`: the emulator's options are checked against its ``__init__`` before it is built, and it speaks its
driver's line endings."""

import gc
import os
import threading
import warnings
from typing import ClassVar

import pytest

from drivers.keithley2450 import Keithley2450
from hil.errors import ConfigError
from hil.transport import open_transport
from simulators.emulators.server import PtyServer, TcpServer, serve


class OpenEmulator:
    """An emulator that takes any option."""

    def __init__(self, **settings: object):
        self.settings = settings

    def handle(self, message: bytes) -> bytes | None:
        return None


class FussyEmulator(OpenEmulator):
    def __init__(self, gain: float = 1.0, label: str | None = None):
        super().__init__(gain=gain, label=label)


class OpenDriver:
    emulator = f"{__name__}:OpenEmulator"


class FussyDriver:
    emulator = f"{__name__}:FussyEmulator"


def test_an_emulator_taking_any_option_gets_them_unchecked() -> None:
    server = serve(OpenDriver, {"anything": [1, "two"]})
    try:
        assert server.emulator.settings == {"anything": [1, "two"]}
    finally:
        server.stop()


def test_options_of_the_annotated_types_pass_and_an_int_counts_as_a_float() -> None:
    server = serve(FussyDriver, {"gain": 3, "label": None})
    try:
        assert server.emulator.settings == {"gain": 3.0, "label": None}
    finally:
        server.stop()


@pytest.mark.parametrize(("options", "field", "message"), [
    ({"gain": True}, "gain", "True is not a float (an option of the fussy emulator)"),
    ({"gain": "2"}, "gain", "'2' is not a float (an option of the fussy emulator)"),
    ({"label": 5}, "label", "5 is not a str or null (an option of the fussy emulator)"),
    ({"gian": 2.0}, "gian", "the fussy emulator has no such option; options: gain, label"),
])
def test_an_option_of_another_type_or_name_is_refused_by_name(options: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        serve(FussyDriver, options, name="fussy")
    assert (caught.value.field, caught.value.detail) == (field, message)


@pytest.mark.parametrize(("options", "field", "message"), [
    ({"load_ohm": -3}, "load_ohm", "bad emulator option for keithley_2450: load_ohm must be a positive number of ohms, "
                                   "got -3 Ω"),
    ({"noise_a": -1e-9}, "noise_a", "bad emulator option for keithley_2450: noise_a must be at least 0 A, "
                                    "got -1e-09 A"),
    ({"load_terminals": "side"}, "load_terminals", "bad emulator option for keithley_2450: load_terminals must be "
                                                   "'front' or 'rear', got 'side'"),
])
def test_a_bad_value_of_a_named_option_is_said_with_its_unit_and_without_the_list_of_options(
        options: dict, field: str, message: str) -> None:
    """A value the emulator refuses read '... got -3.0; options: load_ohm, noise_a, seed, load_terminals': the value
    not as written, without its unit, and the list of options as if the option's name were wrong."""
    with pytest.raises(ConfigError) as caught:
        serve(Keithley2450, options, name="keithley_2450")
    assert (caught.value.field, caught.value.detail) == (field, message)


class EchoEmulator(OpenEmulator):
    """Answers every message with itself, as received."""

    def handle(self, message: bytes) -> bytes | None:
        return message


class CarriageReturnDriver:
    """An instrument whose lines end with a carriage return alone, as many serial instruments' do."""

    emulator = f"{__name__}:EchoEmulator"
    transport_options: ClassVar[dict[str, str]] = {"read_termination": "\r", "write_termination": "\r"}


class MixedEndingsDriver(CarriageReturnDriver):
    """An instrument that takes commands ended by a line feed and ends its replies with a carriage return."""

    transport_options: ClassVar[dict[str, str]] = {"read_termination": "\r", "write_termination": "\n"}


@pytest.mark.parametrize("driver", [CarriageReturnDriver, MixedEndingsDriver])
@pytest.mark.parametrize("via", ["tcp", "pty"])
def test_the_emulator_speaks_the_line_endings_of_its_driver(via: str, driver: type) -> None:
    server = serve(driver, {}, via=via)
    try:
        transport = open_transport(server.resource, timeout_s=1.0, **driver.transport_options)
        with transport:
            assert transport.query("FIRST? a") == "FIRST? a"
            assert transport.query("SECOND?") == "SECOND?"
    finally:
        server.stop()


class BigReplyEmulator:
    """Answers every message with ``size`` bytes."""

    def __init__(self, size: int):
        self.size = size
        self.answered = threading.Event()

    def handle(self, message: bytes) -> bytes | None:
        self.answered.set()
        return b"x" * self.size


def test_a_long_reply_reaches_a_client_that_reads_it_late() -> None:
    """A reply far beyond the socket buffers, to a client busy elsewhere when it comes: the server waits for the
    client, as an instrument's output queue does, instead of dropping the connection."""
    import socket
    import time

    size = 8 * 2**20
    with TcpServer(BigReplyEmulator(size)) as server, \
            socket.create_connection((server.host, server.port)) as client:
        client.sendall(b"DATA?\n")
        time.sleep(0.3)  # busy: the reply fills the buffers and waits
        client.settimeout(5)
        received = 0
        while received < size + 1:
            chunk = client.recv(2**20)
            if not chunk:
                break
            received += len(chunk)
    assert received == size + 1


def test_a_pty_server_stops_while_a_reply_waits_for_a_client_that_left() -> None:
    """A client that asks and closes the port before the reply is read: the reply fills the pty and waits, and
    stopping the server must not leave its thread blocked in that write."""
    import os

    emulator = BigReplyEmulator(2**20)
    server = PtyServer(emulator).start()
    try:
        client = os.open(server.resource, os.O_RDWR | os.O_NOCTTY)
        os.write(client, b"DATA?\n")
        os.close(client)
        threads = list(server._threads)
        emulator.answered.wait(5)
    finally:
        server.stop()
    assert not [thread for thread in threads if thread.is_alive()]


class HeldReplyEmulator:
    """Holds its reply to ``HOLD?`` until ``release`` is set; records every other message."""

    def __init__(self) -> None:
        self.holding, self.release, self.handled = threading.Event(), threading.Event(), threading.Event()
        self.received: list[bytes] = []

    def handle(self, message: bytes) -> bytes | None:
        if message == b"HOLD?":
            self.holding.set()
            self.release.wait(5)
            return b"late"
        self.received.append(message)
        self.handled.set()
        return None


def test_commands_sent_after_a_query_are_carried_out_when_the_client_resets_before_its_reply() -> None:
    """A client that timed out on a query and reset the connection had sent more (a safe state's `OUTP OFF`): the
    emulator stopped at the failed reply and never handled them, where an instrument carries them out."""
    import socket
    import struct

    emulator = HeldReplyEmulator()
    with TcpServer(emulator) as server:
        client = socket.create_connection((server.host, server.port))
        client.sendall(b"HOLD?\nOUTP OFF\n")
        assert emulator.holding.wait(5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        emulator.release.set()
        assert emulator.handled.wait(5)
    assert emulator.received == [b"OUTP OFF"]


def test_a_tcp_server_forgets_the_connections_that_ended() -> None:
    """Served for days (hil emulate), with a client connecting for each command: nothing may pile up per client."""
    from hil.transport import VisaTransport

    with TcpServer(EchoEmulator()) as server:
        for k in range(5):
            with VisaTransport(server.resource, timeout_s=2.0) as transport:
                assert transport.query(f"PING? {k}") == f"PING? {k}"
                serving = server._threads[-1]
            serving.join(5)  # the server's thread for that client sees it leave
            assert not serving.is_alive()
        assert server._connections == [] and len(server._threads) <= 2


def test_a_server_on_a_port_in_use_closes_its_socket_and_says_so() -> None:
    """The socket of a refused start was left to the garbage collector (a ResourceWarning, and a descriptor held until
    then)."""
    first = TcpServer(OpenEmulator()).start()
    try:
        second = TcpServer(OpenEmulator(), port=first.port)
        before = len(os.listdir("/proc/self/fd"))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            with pytest.raises(OSError):
                second.start()
            gc.collect()
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        first.stop()


class FaultyEmulator:
    """Answers PING? and nothing else: any other message raises, and BAD? answers text."""

    def handle(self, message: bytes) -> bytes | None:
        if message == b"BAD?":
            return "text"  # type: ignore[return-value]
        if message == b"LINES?":
            raise ValueError("first line\nsecond line")
        return {b"PING?": b"PONG"}[message]


@pytest.mark.parametrize(("message", "fault"), [
    ("V1?", "FaultyEmulator.handle(b'V1?') raised KeyError: b'V1?' ("),
    ("BAD?", "FaultyEmulator.handle(b'BAD?') returned 'text', not bytes or None; return the reply as bytes"),
    ("LINES?", "FaultyEmulator.handle(b'LINES?') raised ValueError: first line ("),
])
def test_an_emulator_fault_is_one_line_and_ends_only_that_link(message: str, fault: str) -> None:
    """An emulator that raised, or answered text, ended its server's thread with a traceback, and the driver waited
    for a reply until its timeout; the server notes the fault (`failure`), warns of it in one line, and drops that
    client's link, which a new connection finds answering again."""
    from hil.errors import DeviceWarning, TransportError
    from hil.transport import VisaTransport

    with TcpServer(FaultyEmulator()) as server:  # pyvisa-py's read sees the dropped link at its timeout only
        with VisaTransport(server.resource, timeout_s=0.5) as transport, \
                pytest.warns(DeviceWarning, match="^emulator stopped answering: ") as warned:
            with pytest.raises(TransportError):
                transport.query(message)
            server._threads[-1].join(5)
        with VisaTransport(server.resource, timeout_s=5.0) as transport:
            assert transport.query("PING?") == "PONG"
    assert server.failure is not None and server.failure.startswith(fault) and "\n" not in server.failure
    assert str(warned[0].message) == f"emulator stopped answering: {server.failure}"
    if "KeyError" in fault:
        assert server.failure.endswith(f"{__file__}:{FaultyEmulator.handle.__code__.co_firstlineno + 5})")
