"""Transports against real sockets on 127.0.0.1 and a real pseudo-terminal pair (no mocks of pyvisa/pyserial)."""

import _thread
import contextlib
import errno
import gc
import importlib.util
import itertools
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tty
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.errors import ConfigError, TransportError, TransportTimeout
from hil.transport import (
    CLAIMS_DIR,
    SerialTransport,
    TrafficLog,
    Transport,
    VisaTransport,
    _Claim,
    _library_reason,
    has_serial_line,
    instrument_key,
    open_transport,
    shared_temporary_folder,
    transport_class,
)
from simulators.emulators.scpi import ScpiEmulator, number, scpi
from simulators.emulators.server import TcpServer
from tests.test_store import disk_full_beyond
from tests.windows import windows_locks  # noqa: F401 - a fixture


class EchoEmulator(ScpiEmulator):
    """Echoes tokens after a short pause, stores and returns float32 blocks, and can hang."""

    identity = "hil,Echo,1,0"

    def reset(self) -> None:
        self.values = np.zeros(0, dtype="<f4")

    @scpi("ECHO?")
    def echo(self, token: str) -> str:
        time.sleep(0.0005)
        return token

    @scpi("SLEEP?")
    def sleep(self, seconds: str) -> str:
        time.sleep(number(seconds, 0, 5))
        return "done"

    @scpi("DATA")
    def data(self, name: str, block: bytes) -> None:
        self.values = np.frombuffer(block, dtype="<f4").copy()

    @scpi("DATA?")
    def data_query(self) -> bytes:
        from pyvisa.util import to_ieee_block

        return to_ieee_block(self.values, "f", False)

    @scpi("RAW?")
    def raw(self, hexadecimal: str) -> bytes:
        """Replies with the bytes ``hexadecimal`` spells: garbage, or a block of any format."""
        return bytes.fromhex(hexadecimal)


@pytest.fixture
def echo_tcp(tcp_server):
    emulator = EchoEmulator()
    return emulator, tcp_server(emulator)


@pytest.fixture
def echo_pty(pty_server):
    emulator = EchoEmulator()
    return emulator, pty_server(emulator)


#: A timeout for replies that do come, however loaded the machine: a test that expects no timeout waits it out only
#: where a reply is lost, and a loaded machine can stall the emulator's thread or the reader's past a short one.
IN_TIME_S = 10.0


def both_transports(echo_tcp, echo_pty, timeout_s: float = IN_TIME_S):
    return [VisaTransport(echo_tcp[1].resource, timeout_s=timeout_s), SerialTransport(echo_pty[1].resource,
                                                                                       timeout_s=timeout_s)]


def test_open_transport_picks_by_resource() -> None:
    assert isinstance(open_transport("TCPIP::10.0.0.2::5025::SOCKET"), VisaTransport)
    assert isinstance(open_transport("GPIB0::24::INSTR"), VisaTransport)
    assert isinstance(open_transport("USB0::0x0957::0x2807::MY1::INSTR"), VisaTransport)
    assert isinstance(open_transport("/dev/ttyUSB0"), SerialTransport)
    assert isinstance(open_transport("socket://127.0.0.1:5000"), SerialTransport)
    assert isinstance(open_transport("COM3"), SerialTransport)  # a Windows serial port, which pyserial opens


def test_a_visa_alias_that_begins_with_com_is_a_visa_resource_and_a_com_port_one_port_however_spelt() -> None:
    """NI MAX gives instruments aliases (Compressor, Comb_Laser), which the system's VISA opens: one that began with
    com was taken for a serial port, which pyserial could not open, and with the system's VISA refused as one ("is a
    serial port, which pyserial opens: visa_library applies only to VISA resources"). Windows' device name of a port,
    \\\\.\\COM12, is the port COM12."""
    assert transport_class("Compressor", "@ivi") is VisaTransport and not has_serial_line("Comb_Laser")
    assert transport_class("\\\\.\\COM12") is SerialTransport
    assert instrument_key("\\\\.\\COM12") == instrument_key("com12") == "COM12"


def test_query_and_binary_blocks_both_ways(echo_tcp, echo_pty) -> None:
    values = np.array([0.0, -1.5, 2.25, 1e-7, 3.0e5], dtype=np.float32)
    for transport, emulator in zip(both_transports(echo_tcp, echo_pty), (echo_tcp[0], echo_pty[0]), strict=True):
        with transport:
            assert transport.query("*IDN?") == "hil,Echo,1,0"
            transport.write_binary("DATA wave,", values, "f")
            np.testing.assert_array_equal(transport.query_binary("DATA?", "f"), values)
            np.testing.assert_array_equal(emulator.values, values)
            assert emulator.received[-2].startswith(b"DATA wave,#220")  # 5 float32 = 20 bytes


def test_timeout_names_resource_and_command(echo_tcp, echo_pty) -> None:
    for transport in both_transports(echo_tcp, echo_pty, timeout_s=0.3):
        with transport:
            with pytest.raises(TransportTimeout) as caught:  # the reply comes after 1 s: the timeout cut the wait
                transport.query("SLEEP? 1")
            assert transport.resource in str(caught.value)
            assert "SLEEP? 1" in str(caught.value)


def test_a_timeout_too_short_for_any_instrument_is_what_a_missing_reply_points_at(echo_tcp, echo_pty) -> None:
    """``timeout_s: 0.001`` (a timeout written in ms, as 1) made every instrument say to check that it was on and
    connected, which it was."""
    for transport in (VisaTransport(echo_tcp[1].resource, timeout_s=0.001),
                      SerialTransport(echo_pty[1].resource, timeout_s=0.001)):
        with transport:
            with pytest.raises(TransportTimeout) as caught:
                transport.query("SLEEP? 0.5")
            missing_reply = (f"{transport.resource}: no reply within 0.001 s to 'SLEEP? 0.5'; timeout_s (0.001 s) is "
                             "shorter than an instrument takes to answer: give it 1 s or more (it is in seconds), then "
                             "check that the instrument is on, connected and not busy")
            # pyserial reports a write that took longer than write_timeout (the thread descheduled for a
            # millisecond) as a write timeout, its bytes written or not: then the line's own advice, which names
            # timeout_s as well
            slow_write = (f"{transport.resource}: 'SLEEP? 0.5' could not be sent within 0.001 s; its 11 bytes take "
                          "0.0115 s at 9600 bit/s: give timeout_s more than that, or the line a higher baudrate (the "
                          "instrument's too)")
            assert str(caught.value) in ((missing_reply, slow_write) if transport.baudrate else (missing_reply,))


def test_patience_lets_one_slow_reply_through_then_the_timeout_holds_again(echo_tcp, echo_pty) -> None:
    for transport in both_transports(echo_tcp, echo_pty, timeout_s=0.3):
        with transport:
            with transport.patience(IN_TIME_S):  # the reply comes after 0.5 s, however loaded the machine
                assert transport.query("SLEEP? 0.5") == "done"
            assert transport.timeout_s == 0.3 and not transport.out_of_step
            with pytest.raises(TransportTimeout):
                transport.query("SLEEP? 0.5")
            assert transport.out_of_step  # the late "done" may still arrive


def test_an_exchange_interrupted_by_ctrl_c_leaves_the_link_out_of_step(echo_tcp, echo_pty, ctrl_c_raises) -> None:
    """The reply may still come and would answer the next query: a driver must resynchronise first."""
    for transport in both_transports(echo_tcp, echo_pty, timeout_s=0.3):
        with transport:
            threading.Timer(0.1, _thread.interrupt_main).start()  # Ctrl-C while the reply is awaited
            with pytest.raises(KeyboardInterrupt), transport.patience(3.0):
                transport.query("SLEEP? 3")
            assert transport.out_of_step


def test_unanswered_query_times_out_and_the_error_is_queued(echo_tcp) -> None:
    with VisaTransport(echo_tcp[1].resource, timeout_s=0.2) as transport:
        with pytest.raises(TransportTimeout, match="NOSUCH"):
            transport.query("NOSUCH?")
        with transport.patience(IN_TIME_S):  # answered: waited for, however loaded the machine
            assert transport.query("SYST:ERR?") == '-113,"Undefined header; NOSUCH?"'


def test_a_socket_is_looked_into_without_waiting_where_the_system_has_no_msg_dontwait(echo_tcp, monkeypatch) -> None:
    """Windows has no socket.MSG_DONTWAIT: looking for a line no read has taken (which a driver does after a reply),
    and telling an instrument that closed its connection from a slow one, failed there with an AttributeError's
    traceback, on every TCPIP SOCKET resource."""
    monkeypatch.delattr(socket, "MSG_DONTWAIT")  # as on Windows
    _, server = echo_tcp
    with VisaTransport(server.resource, timeout_s=IN_TIME_S) as transport:
        timeout = transport._socket.gettimeout()
        assert transport.query("ECHO? a") == "a" and not transport.unread()
        transport.write("ECHO? b")
        assert select.select([transport._socket], [], [], IN_TIME_S)[0]  # the reply has come, unread
        assert transport.unread() and transport.read() == "b" and not transport.unread()
        assert transport._socket.gettimeout() == timeout  # left as pyvisa-py set it
        server.stop()
        with pytest.raises(TransportError, match=r"the instrument closed the connection during 'ECHO\? c'") as caught:
            transport.query("ECHO? c")
        assert not isinstance(caught.value, TransportTimeout)


class WindowsTime:
    """`hil.transport`'s ``time`` with Windows' ``time.monotonic`` before Python 3.13, which ticks every 15.625 ms: here
    each reading falls a tick after the one before, as one does where a tick comes between them; ``perf_counter``
    reads a µs later at each reading, however long the machine running the test takes."""

    time, sleep = staticmethod(time.time), staticmethod(time.sleep)

    def __init__(self) -> None:
        self.ticks = self.readings = 0

    def monotonic(self) -> float:
        self.ticks += 1
        return self.ticks * 0.015625

    def perf_counter(self) -> float:
        self.readings += 1
        return self.readings * 1e-6


def test_a_short_timeout_runs_its_length_where_time_monotonic_ticks_every_15_ms(monkeypatch) -> None:
    """A reply's deadline was read on time.monotonic, which ticks every 15.6 ms on Windows (before Python 3.13): a
    timeout of 10 ms could pass before the first byte was looked for, the reply already there, and the query failed as
    unanswered. The transport's deadlines are read on time.perf_counter, as fine on every system."""
    monkeypatch.setattr("hil.transport.time", WindowsTime())
    with SerialTransport("loop://", timeout_s=0.01) as transport:  # pyserial's loop: the reply is the query itself
        assert transport.query("ECHO") == "ECHO"


def test_server_restart_then_reopen(echo_tcp) -> None:
    _, server = echo_tcp
    transport = VisaTransport(server.resource, timeout_s=IN_TIME_S)
    with transport:
        assert transport.query("ECHO? a") == "a"
        server.stop()  # the instrument drops the connection: said so, not taken for a slow reply
        with pytest.raises(TransportError, match=r"the instrument closed the connection during 'ECHO\? b'") as caught:
            transport.query("ECHO? b")
        assert server.resource in str(caught.value) and not isinstance(caught.value, TransportTimeout)
        server.start()  # the instrument comes back on the same port
        transport.reopen()
        assert transport.query("ECHO? c") == "c"


def test_a_dropped_connection_is_said_as_it_is_found_not_after_the_timeout(echo_tcp) -> None:
    """pyvisa-py reads a socket the instrument has closed as silence, for as long as the timeout: a dropped connection
    was said only once the whole timeout_s (seconds to minutes on a bench) had passed. The transport now waits for
    the socket itself and never hands pyvisa-py's read a closed one."""
    _, server = echo_tcp
    with VisaTransport(server.resource, timeout_s=1) as transport:
        assert transport.query("ECHO? a") == "a"
        server.stop()
        assert select.select([transport._socket], [], [], IN_TIME_S)[0]  # the close has come
        library_read, reads_after_the_close = transport._session.read, []
        transport._session.read = lambda count: reads_after_the_close.append(count) or library_read(count)
        with pytest.raises(TransportError, match=r"the instrument closed the connection during 'ECHO\? b'"):
            transport.query("ECHO? b")
        assert reads_after_the_close == []  # each would have waited out the timeout


def test_lost_pty_link_raises_transport_error(echo_pty) -> None:
    _, server = echo_pty
    with SerialTransport(server.resource, timeout_s=IN_TIME_S) as transport:
        assert transport.query("ECHO? x") == "x"
        server.stop()
        with pytest.raises(TransportError, match=server.resource):
            transport.query("ECHO? y")


def test_a_lost_pty_link_met_when_a_reply_is_given_patience_is_a_transport_error(echo_pty) -> None:
    """pyserial sets a timeout on the port itself: on a port that is gone it raises its own SerialException, an
    OSError, which the hil command would take for a failed standard output. The instrument's error it must be, and
    the timeout the usual one again."""
    _, server = echo_pty
    with SerialTransport(server.resource, timeout_s=0.3) as transport:
        assert transport.query("ECHO? x") == "x"
        server.stop()
        with pytest.raises(TransportError, match=re.escape(server.resource)), transport.patience(1.0):
            transport.query("ECHO? y")
        assert transport.timeout_s == 0.3


def test_refused_connection_is_a_transport_error() -> None:
    with TcpServer(EchoEmulator()) as server:
        resource = server.resource
    with pytest.raises(TransportError, match=resource):
        VisaTransport(resource, timeout_s=0.3).open()


def test_a_host_that_never_answers_the_connection_is_a_timeout_within_timeout_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A switched-off instrument's address answers nothing, not even a refusal (here: a port whose queue of
    connections is full, whose SYNs Linux drops). pyvisa-py waits 10 s for it whatever the timeout, then raises
    "could not connect: -1073807339", VISA's timeout code: the wait is timeout_s, and a timeout is said as one."""
    import socket

    import pyvisa

    open_resource, asked = pyvisa.ResourceManager.open_resource, []

    def recorded(self, resource: str, **options):
        asked.append(options)
        return open_resource(self, resource, **options)

    monkeypatch.setattr(pyvisa.ResourceManager, "open_resource", recorded)
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        waiting = [socket.socket() for _ in range(3)]
        for client in waiting:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        try:
            time.sleep(0.1)
            transport = VisaTransport(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout_s=0.3)
            with pytest.raises(TransportTimeout) as caught:
                transport.open()
            assert [options.get("open_timeout") for options in asked] == [300]  # ms: the wait pyvisa-py is given
            assert str(caught.value) == (f"TCPIP::127.0.0.1::{port}::SOCKET: no reply within 0.3 s to 'open'; check "
                                         "that the instrument is on, connected and not busy")
        finally:
            for client in waiting:
                client.close()


@pytest.mark.skipif(importlib.util.find_spec("usb") is not None, reason="PyUSB is installed here")
def test_a_resource_whose_library_is_missing_says_so_in_one_line() -> None:
    transport = VisaTransport("USB0::0x05E6::0x2450::04000000::INSTR")
    with pytest.raises(TransportError) as caught:
        transport.open()
    message = str(caught.value)
    assert message.startswith("USB0::0x05E6::0x2450::04000000::INSTR: a library this resource needs is missing or "
                              "cannot be loaded (Please install PyUSB") and "\n" not in message
    assert message.endswith("install it into hil's environment or correct visa_library (pyvisa-py, the default, "
                            "needs nothing more for LAN and serial resources)")


def test_a_visa_library_that_cannot_be_loaded_is_named_and_a_serial_port_takes_none(tmp_path) -> None:
    """Refused as the transport is made, before anything connects (`hil check` says it at the lab's line)."""
    with pytest.raises(ConfigError, match=r"^visa_library: VISA library '.*libvisa\.so' cannot be loaded \(Error "
                                          r"while accessing .*libvisa\.so.*\); install that VISA library, or correct "
                                          r"visa_library \(leave it out for pyvisa-py"):
        open_transport("TCPIP::127.0.0.1::5025::SOCKET", visa_library=str(tmp_path / "libvisa.so"))
    with pytest.raises(ConfigError, match="visa_library applies only to VISA resources"):
        open_transport("/dev/ttyUSB0", visa_library="")


def _system_visa_found() -> bool:
    from pyvisa.ctwrapper import IVIVisaLibrary

    return bool(IVIVisaLibrary.get_library_paths())


@pytest.mark.skipif(_system_visa_found(), reason="a system VISA (IVI) is installed here")
def test_a_system_visa_that_is_not_there_is_named_as_missing_not_as_the_cable() -> None:
    """pyvisa raises a plain OSError ("Could not open VISA library") for @ivi with no IVI VISA installed, and for
    '' where one is found but cannot be loaded."""
    with pytest.raises(ConfigError) as caught:
        open_transport("TCPIP::127.0.0.1::5025::SOCKET", visa_library="@ivi")
    message = str(caught.value)
    assert "VISA library '@ivi' cannot be loaded (Could not open VISA library); install" in message
    assert "cable" not in message and "\n" not in message


def test_closed_transport_refuses_to_send(echo_tcp) -> None:
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=0.3)
    with pytest.raises(TransportError, match="not open"):
        transport.query("*IDN?")


def test_two_threads_never_interleave_a_query(echo_tcp, echo_pty) -> None:
    for transport in both_transports(echo_tcp, echo_pty):
        mismatches: list[tuple[str, str]] = []

        def worker(tag: str, transport=transport, mismatches=mismatches) -> None:
            for k in range(40):
                token = f"{tag}{k}"
                reply = transport.query(f"ECHO? {token}")
                if reply != token:
                    mismatches.append((token, reply))

        with transport:
            threads = [threading.Thread(target=worker, args=(tag,)) for tag in "abcd"]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert mismatches == []


def test_traffic_log_records_both_directions(echo_tcp, tmp_path) -> None:
    log = tmp_path / "traffic.log"
    with VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log) as transport:
        transport.query("ECHO? hello")
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert "  >  b'ECHO? hello\\n'" in lines[0] and "  <  b'hello\\n'" in lines[1]
    assert isinstance(TrafficLog(log), TrafficLog)


def test_an_unwritable_traffic_log_is_named_not_taken_for_a_lost_connection(echo_tcp, tmp_path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    transport = VisaTransport(echo_tcp[1].resource, traffic_log=blocked / "traffic.log")
    with pytest.raises(TransportError, match=r"traffic log .*traffic.log: cannot write .*writable path"):
        transport.open()  # before anything is sent
    assert not transport.is_open


def test_a_traffic_log_the_disk_refuses_later_stops_with_a_warning_and_the_traffic_goes_on(echo_tcp, tmp_path) -> None:
    log = tmp_path / "traffic.log"
    with VisaTransport(echo_tcp[1].resource, timeout_s=0.3, traffic_log=log) as transport:
        transport.query("ECHO? a")
        stops = r"traffic log .*: cannot write .*logging stops here and the instruments go on"
        with disk_full_beyond(log.stat().st_size), pytest.warns(RuntimeWarning, match=stops):
            assert transport.query("ECHO? b") == "b"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # stopped for good: no warning per command
            assert transport.query("ECHO? c") == "c"
    assert len(log.read_text().splitlines()) == 2
    log.unlink()
    log.mkdir()  # the log cannot even be opened now: a reconnection goes on without it
    with transport:
        assert transport.query("ECHO? d") == "d"


class Babbler:
    """A TCP peer that answers any command with bytes and never a terminator (or one after ``ends_after`` chunks): a
    flood, or a trickle."""

    def __init__(self, chunk: bytes, pause_s: float, ends_after: int | None = None):
        import socket

        self.chunk, self.pause_s, self.stop = chunk, pause_s, threading.Event()
        self.ends_after = ends_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(100)
            try:
                for sent in itertools.count(1):
                    if self.stop.is_set():
                        break
                    connection.sendall(self.chunk + (b"\n" if sent == self.ends_after else b""))
                    time.sleep(self.pause_s)
            except OSError:  # the reader gave up and closed
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize(("chunk", "pause_s", "error", "message"), [
    (b"Y" * 65536, 0.0, TransportError, r"reply to '\*IDN\?' is longer than 1048576 bytes without its terminator "
                                        r"\(it begins 'YYYY"),
    (b"Z" * 16, 0.05, TransportTimeout, r"the reply to '\*IDN\?' did not end with the read termination '\\n' "
                                        r"within 0.5 s \(it began 'ZZZZ"),
])
def test_a_reply_that_never_ends_is_an_error_not_a_hang_or_a_full_memory(
        monkeypatch: pytest.MonkeyPatch, chunk: bytes, pause_s: float, error: type, message: str) -> None:
    monkeypatch.setattr("hil.transport.MAX_REPLY_BYTES", 2**20)
    babbler = Babbler(chunk, pause_s)
    transport = VisaTransport(f"TCPIP::127.0.0.1::{babbler.port}::SOCKET", timeout_s=0.5)
    transport.open()
    try:
        with pytest.raises(error, match=message):
            transport.query("*IDN?")
        assert transport.out_of_step  # the rest of the reply is still coming: not the answer to the next query
    finally:
        transport.close()
        babbler.close()


def test_a_reply_trickled_over_many_timeouts_is_a_timeout_not_a_reply_taken_late() -> None:
    """A reply trickled a byte at a time, each well within the timeout, was waited for whole (pyvisa-py's timeout
    counts only silence, and the read asked it for 256 bytes at once): 100 bytes at 20 ms each took 2 s against a
    0.2 s timeout, and longer replies longer still."""
    babbler = Babbler(b"1", 0.02, ends_after=100)
    transport = VisaTransport(f"TCPIP::127.0.0.1::{babbler.port}::SOCKET", timeout_s=0.2)
    transport.open()
    try:
        with pytest.raises(TransportTimeout, match=r"did not end with the read termination '\\n' within 0.2 s \(it "
                                                   r"began '1+'\)"):
            transport.query("*IDN?")
        assert transport.out_of_step
    finally:
        transport.close()
        babbler.close()


def test_a_block_whose_lines_each_come_within_the_timeout_is_still_read_within_it_whole() -> None:
    """A block's data may hold the termination, so VISA reads it line by line; each line's read had the whole
    timeout to itself, so a block of two lines 0.15 s apart was taken at 0.3 s against a 0.2 s timeout (and one of
    n lines at up to n times it). The lines share the block's deadline."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(100)
            for piece in (b"#19", b"1111\n", b"1111\n"):  # 9 bytes of data, "\n" among them, then the termination
                connection.sendall(piece)
                time.sleep(0.15)
            connection.recv(100)  # until the reader closes

    threading.Thread(target=serve, daemon=True).start()
    transport = VisaTransport(f"TCPIP::127.0.0.1::{listener.getsockname()[1]}::SOCKET", timeout_s=0.2)
    try:
        with transport, pytest.raises(TransportTimeout, match=r"did not end with the read termination '\\n' within "
                                                              r"0\.2 s \(it began '#191111"):
            transport.query_binary("CURV?", "B")
        assert transport.out_of_step
    finally:
        listener.close()


@pytest.mark.parametrize("via", ["visa", "serial"])
def test_a_block_whose_parts_each_come_within_the_timeout_is_still_read_within_it_whole(via: str) -> None:
    """Over a serial port a block is read in parts (its header's ``#`` and digit, its count, its data, the rest of
    the line), and each part's read had the whole timeout to itself: a block whose parts came 0.15 s apart was taken
    at 0.45 s against a 0.2 s timeout. The parts share the block's deadline, as a VISA read's lines do."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(100)
            for piece in (b"#", b"1", b"9", b"abcdefghi\n"):
                connection.sendall(piece)
                time.sleep(0.15)
            connection.recv(100)  # until the reader closes

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    transport = VisaTransport(f"TCPIP::127.0.0.1::{port}::SOCKET", timeout_s=0.2) if via == "visa" else \
        SerialTransport(f"socket://127.0.0.1:{port}", timeout_s=0.2)
    try:
        with transport, pytest.raises(TransportTimeout, match=r"within 0\.2 s"):
            transport.query_binary("CURV?", "B")
        assert transport.out_of_step
    finally:
        listener.close()


def test_a_reply_that_is_not_a_block_is_named_as_such_and_leaves_the_link_out_of_step(echo_tcp, echo_pty) -> None:
    """Not a lost connection: the instrument answered, with text; the rest of that text may still be unread, so a
    driver resynchronises before its next query."""
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            with pytest.raises(TransportError) as caught:
                transport.query_binary("ECHO? 9.91E37", "f")
            message = str(caught.value)
            assert message.startswith(f"{transport.resource}: reply to 'ECHO? 9.91E37' is not a definite-length "
                                      "block (") and "9." in message and "\n" not in message
            assert "cable" not in message and transport.out_of_step


def test_a_command_that_is_not_ascii_is_named_not_taken_for_a_failed_connection(echo_tcp, echo_pty) -> None:
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            for send, argument in ((transport.query, "ECHO? 5µA"), (transport.write, "VOLT 5µ")):
                with pytest.raises(TransportError, match=r": '.*' holds 'µ', which is not ASCII") as caught:
                    send(argument)
                assert "cable" not in str(caught.value)
            with pytest.raises(TransportError, match="not ASCII"):
                transport.write_binary("DATA µ,", [1.0])
            assert transport.query("ECHO? x") == "x"  # nothing was sent


def test_closing_a_transport_closes_the_traffic_log_it_opened(echo_tcp, tmp_path) -> None:
    import os

    log = tmp_path / "traffic.log"

    def open_on_log() -> list[str]:
        return [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(log)]

    transport = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log)
    with transport:
        transport.query("ECHO? a")
        assert open_on_log()
    assert open_on_log() == []
    with transport:  # a reconnection logs again, after what was there
        transport.query("ECHO? b")
    assert len(log.read_text().splitlines()) == 4


def test_a_block_ended_by_cr_lf_leaves_nothing_to_answer_the_next_query() -> None:
    """Lines ended by "\\r\\n" pass with the default read termination "\\n"; so must a block's."""
    from simulators.emulators.server import PtyServer

    emulator = EchoEmulator()
    emulator.values = np.arange(3, dtype="<f4")
    with PtyServer(emulator, terminator=b"\r\n") as server, \
            SerialTransport(server.resource, timeout_s=IN_TIME_S) as transport:
        assert transport.query("ECHO? a") == "a"
        np.testing.assert_array_equal(transport.query_binary("DATA?"), emulator.values)
        assert transport.query("ECHO? b") == "b"


def test_an_error_names_a_long_command_by_its_beginning(echo_tcp, echo_pty) -> None:
    """A list of a hundred values is one command: the message stays one readable line."""
    command = "NOSUCH? " + ",".join(["1.234567e-03"] * 100)
    for transport in both_transports(echo_tcp, echo_pty, timeout_s=0.3):
        with transport, pytest.raises(TransportTimeout) as caught:
            transport.query(command)
        assert "to 'NOSUCH? 1.234567e-03,1.234" in str(caught.value)
        assert f"({len(command)} characters)" in str(caught.value) and len(str(caught.value)) < 250


@pytest.mark.parametrize("via", ["tcp", "pty"])
def test_a_reply_in_another_line_ending_is_named_not_taken_for_silence(tcp_server, pty_server, via: str) -> None:
    """An instrument ending its lines with "\\r" answers; "no reply, check that it is on" would send one to the
    cable instead of to read_termination. pyvisa drops what a read got before it timed out: over a VISA link it is
    read from pyvisa-py's session, which keeps it."""
    server = (tcp_server if via == "tcp" else pty_server)(EchoEmulator(), terminator=b"\r")
    with (VisaTransport if via == "tcp" else SerialTransport)(server.resource, timeout_s=0.3) as transport:
        with pytest.raises(TransportTimeout) as caught:
            transport.query("*IDN?")
        assert str(caught.value) == (
            f"{server.resource}: the reply to '*IDN?' did not end with the read termination '\\n' within 0.3 s (it "
            "began 'hil,Echo,1,0\\r'); check that read_termination is the instrument's line ending and that timeout_s "
            "allows a reply this long")
        assert transport.out_of_step


@pytest.mark.parametrize("via", ["tcp", "pty"])
def test_a_read_termination_other_than_a_line_end_is_stripped(tcp_server, pty_server, via: str) -> None:
    """An instrument ending its replies with ";" (a driver's transport_options): read and query return the reply
    without it, as with "\\n", not "a;", which a driver's float() of a number refused."""
    server = (tcp_server if via == "tcp" else pty_server)(EchoEmulator(), terminator=b";", input_terminator=b";")
    with (VisaTransport if via == "tcp" else SerialTransport)(server.resource, timeout_s=IN_TIME_S,
                                                              read_termination=";", write_termination=";") as link:
        assert link.query("ECHO? 0.5") == "0.5"
        link.write("ECHO? b")
        assert link.read() == "b"


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan"), float("inf"), 1e10])
def test_a_timeout_that_is_not_positive_is_refused_before_anything_opens(timeout_s: float) -> None:
    """A zero, negative or NaN timeout would make every read fail at once, or (pyvisa's 0 ms) never wait: refused
    when the transport is made, for either kind. So is one longer than VISA's longest (infinity is pyvisa's "no
    timeout"), which failed only at open, said as a failed connection: 'check the cable or network'."""
    for make in (lambda: VisaTransport("TCPIP::127.0.0.1::5025::SOCKET", timeout_s=timeout_s),
                 lambda: SerialTransport("loop://", timeout_s=timeout_s)):
        with pytest.raises(ValueError, match="timeout_s must be > 0"):
            make()


def test_reopening_after_a_timeout_leaves_the_link_in_step(echo_tcp) -> None:
    """A fresh connection carries no late reply of the old one: after `reopen` a driver need not resynchronise."""
    with VisaTransport(echo_tcp[1].resource, timeout_s=0.2) as transport:
        with pytest.raises(TransportTimeout):
            transport.query("NOSUCH?")
        assert transport.out_of_step
        transport.reopen()
        assert not transport.out_of_step and transport.query("ECHO? a") == "a"


def test_reopening_a_serial_port_after_a_timeout_leaves_the_link_out_of_step(echo_pty) -> None:
    """A serial port opened again is the same line to the same instrument, which may still send the reply it owes:
    unlike a new socket connection, it must not count as in step."""
    with SerialTransport(echo_pty[1].resource, timeout_s=0.3) as transport:
        with pytest.raises(TransportTimeout):
            transport.query("SLEEP? 0.5")
        transport.reopen()
        assert transport.out_of_step
        assert transport.read() == "done"  # the late reply, on the port opened again


def test_patience_never_shortens_the_timeout() -> None:
    """A negative extra is no extra: the timeout inside the block is the usual one, not less."""
    transport = VisaTransport("TCPIP::127.0.0.1::5025::SOCKET", timeout_s=0.5)
    with transport.patience(-2.0):
        assert transport.timeout_s == 0.5
    assert transport.timeout_s == 0.5


def test_a_reply_byte_that_is_not_ascii_is_replaced_not_dropped(echo_tcp, echo_pty) -> None:
    """A garbled byte between two digits must not join them into another number: ``1\\xff5`` is not 15."""
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            assert transport.query("RAW? 31FF35") == "1\ufffd5"


@pytest.mark.parametrize("big_endian", [False, True])
def test_blocks_keep_the_byte_order_asked_for_both_ways(echo_tcp, echo_pty, big_endian: bool) -> None:
    values = np.array([1.5, -2.25, 3e5], dtype=np.float32)
    wire = values.astype(">f4" if big_endian else "<f4").tobytes()
    for transport, emulator in zip(both_transports(echo_tcp, echo_pty), (echo_tcp[0], echo_pty[0]), strict=True):
        with transport:
            transport.write_binary("DATA wave,", values, "f", big_endian=big_endian)
            block = (b"#212" + wire).hex()
            np.testing.assert_array_equal(transport.query_binary(f"RAW? {block}", "f", big_endian=big_endian), values)
            assert emulator.received[-2] == b"DATA wave,#212" + wire


@pytest.mark.parametrize("method", ["write_binary", "query_binary"])
def test_an_unknown_block_datatype_is_refused_before_anything_is_sent(echo_tcp, echo_pty, method: str) -> None:
    for transport, emulator in zip(both_transports(echo_tcp, echo_pty), (echo_tcp[0], echo_pty[0]), strict=True):
        with transport:
            arguments = ("DATA wave,", [1.0]) if method == "write_binary" else ("DATA?",)
            with pytest.raises(ValueError, match="datatype 'x' is not one of"):
                getattr(transport, method)(*arguments, datatype="x")
            assert transport.query("ECHO? a") == "a" and list(emulator.received) == [b"ECHO? a"]


@pytest.mark.parametrize(("reply", "begins"), [(b"#0\x01\x02", "b'#0'"), (b"#A12", "b'#A'"), (b"#2x5abc", "b'#2x5'")])
def test_a_serial_reply_that_is_not_a_definite_length_block_is_named_as_such(echo_pty, reply: bytes,
                                                                             begins: str) -> None:
    """An indefinite-length block (``#0``, as a 2450 sends in REAL format), a header without its digit count or a
    length that is no number is the reply's fault, not the cable's; its rest is unread, so the link is out of step."""
    with SerialTransport(echo_pty[1].resource, timeout_s=IN_TIME_S) as transport:
        with pytest.raises(TransportError) as caught:
            transport.query_binary(f"RAW? {reply.hex()}")
        assert f"is not a definite-length block (it begins {begins})" in str(caught.value)
        assert transport.out_of_step


@pytest.mark.parametrize(("block", "datatype", "count"), [(b"#13abc", "f", 3), (b"#15abcde", "h", 5),
                                                        (b"#210abcdefghij", "d", 10)])
def test_a_block_that_is_not_a_whole_number_of_values_is_refused_not_cut_short(echo_tcp, echo_pty, block: bytes,
                                                                                datatype: str, count: int) -> None:
    """``#13abc`` read as float32 was ``[]``: the three bytes dropped without a word. It is a garbage reply, named as
    such, read whole (the next query gets its own reply). No reply is late here, so the timeout is one no loaded
    machine reaches: under 0.3 s, a stall of the emulator's thread or the reader's failed the test as a timeout."""
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            with pytest.raises(TransportError, match=rf"reply to 'RAW\? [0-9a-f]+' is a block of {count} bytes, not "
                                                     "a whole number of") as caught:
                transport.query_binary(f"RAW? {block.hex()}", datatype)
            assert str(caught.value).startswith(transport.resource) and "\n" not in str(caught.value)
            assert transport.query("ECHO? next") == "next"


@pytest.mark.parametrize(("block", "detail"), [
    (b"#13abcdef", "its 3 bytes are followed by 3 more before the termination, 'def'"),
    (b"#3100" + b"x" * 120, "its 100 bytes are followed by 20 more before the termination, 'xxxx"),
    (b"#6100000xyz", "it announces 100000 bytes, which with its 8-byte header are more than 65536"),
])
def test_a_block_whose_length_is_not_the_bytes_sent_is_refused_not_cut_short(
        echo_tcp, echo_pty, monkeypatch: pytest.MonkeyPatch, block: bytes, detail: str) -> None:
    """A block header counting fewer bytes than the line holds was taken at its word, the rest of the line dropped
    (over a socket, pyvisa read the line and parsed the header; over a serial port the rest was read and discarded),
    and one announcing gigabytes was waited for. Both are the reply's fault, named as such."""
    monkeypatch.setattr("hil.transport.MAX_REPLY_BYTES", 2**16)
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            with pytest.raises(TransportError, match=re.escape(f"is not a definite-length block ({detail}")):
                transport.query_binary(f"RAW? {block.hex()}", "B")
            assert transport.out_of_step


@pytest.mark.parametrize("limit", [340, 345])
def test_a_block_at_the_reply_limit_is_taken_or_refused_alike_on_both_transports(
        echo_tcp, echo_pty, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """A block announcing `MAX_REPLY_BYTES` passed the header check and the serial transport read it whole, but a
    VISA read refuses the line that holds it, its header too, as longer than the limit. A block whose header and
    data together exceed the limit is now refused on both; one within it is read on both."""
    monkeypatch.setattr("hil.transport.MAX_REPLY_BYTES", limit)
    command = f"RAW? {(b'#3340' + b'x' * 340).hex()}"
    for transport in both_transports(echo_tcp, echo_pty):
        with transport:
            if limit < 345:  # "#3340" and the data
                with pytest.raises(TransportError, match=r"longer than 340 bytes without its terminator|it announces "
                                                         r"340 bytes, which with its 5-byte header are more than 340"):
                    transport.query_binary(command, "B")
                assert transport.out_of_step
            else:
                assert bytes(transport.query_binary(command, "B")) == b"x" * 340


def test_an_unanswered_block_query_on_a_serial_port_is_a_timeout(echo_pty) -> None:
    """Silence is a timeout, not an empty reply taken for a malformed block."""
    with SerialTransport(echo_pty[1].resource, timeout_s=0.3) as transport, \
            pytest.raises(TransportTimeout, match=r"no reply within 0.3 s to 'NOSUCH\?'"):
        transport.query_binary("NOSUCH?")


def test_a_serial_write_the_instrument_does_not_read_times_out() -> None:
    """A port whose other end reads nothing fills up: the write gives up at the timeout instead of blocking."""
    import os
    import tty

    master, slave = os.openpty()
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            transport.write("X" * 1_000_000)
        except BaseException as error:
            outcome.append(error)

    tty.setraw(slave)
    transport = SerialTransport(os.ttyname(slave), timeout_s=0.3)
    transport.open()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30)  # a guard against a write that blocks for ever (it holds the lock close needs), not a measurement
    assert not writer.is_alive(), "the write blocked"
    transport.close()
    os.close(slave)
    os.close(master)
    assert len(outcome) == 1 and isinstance(outcome[0], TransportTimeout)


def test_patience_lengthens_a_serial_ports_write_timeout_as_well_as_its_read_timeout(echo_pty) -> None:
    with SerialTransport(echo_pty[1].resource, timeout_s=0.3) as transport:
        with transport.patience(2.0):
            assert (transport._port.timeout, transport._port.write_timeout) == (2.3, 2.3)
        assert (transport._port.timeout, transport._port.write_timeout) == (0.3, 0.3)


def test_a_socket_connection_sends_at_once_without_nagles_delay(echo_tcp) -> None:
    """With Nagle's algorithm a query after a write waits ~40 ms for the instrument's delayed ACK."""
    import socket

    with VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S) as transport:
        assert transport._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_reply_beyond_the_longest_is_refused_even_with_its_terminator(monkeypatch: pytest.MonkeyPatch,
                                                                        tcp_server) -> None:
    from tests.emulators.test_server import BigReplyEmulator

    monkeypatch.setattr("hil.transport.MAX_REPLY_BYTES", 2**20)
    with VisaTransport(tcp_server(BigReplyEmulator(3 * 2**19)).resource, timeout_s=2.0) as transport, \
            pytest.raises(TransportError, match="is longer than 1048576 bytes"):
        transport.query("DATA?")


def test_a_traffic_log_shared_by_two_transports_stays_open_until_its_owner_closes_it(echo_tcp, tmp_path) -> None:
    """A `TrafficLog` given as an object belongs to whoever made it: closing one transport does not close it for
    the other."""
    log = TrafficLog(tmp_path / "traffic.log")
    log.open()
    first = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log)
    second = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log)
    with first, second:
        first.close()
        second.query("ECHO? after")
    log.close()
    assert "b'after\\n'" in log.path.read_text().splitlines()[-1]


def test_the_traffic_log_records_a_binary_write_and_shortens_a_long_one(echo_tcp, echo_pty, tmp_path) -> None:
    for transport in both_transports(echo_tcp, echo_pty):
        log = tmp_path / f"{type(transport).__name__}.log"
        transport._log = TrafficLog(log)
        with transport:
            transport.write_binary("DATA wave,", np.zeros(1000, dtype=np.float32))
        line = log.read_text().splitlines()[0]
        assert "  >  b'DATA wave,#44000\\x00" in line and line.endswith(" bytes)'") and len(line) < 3000


def test_a_traffic_log_that_stopped_then_reopened_must_open_again_at_the_next_connection(echo_tcp, tmp_path) -> None:
    """Only a log that has stopped reopens quietly; once it records again, one that cannot be created is an error
    before anything is sent, as at the first connection."""
    log = tmp_path / "traffic.log"
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=0.3, traffic_log=log)
    with transport:
        transport.query("ECHO? a")
        with disk_full_beyond(log.stat().st_size), pytest.warns(RuntimeWarning, match="logging stops here"):
            transport.query("ECHO? b")
    with transport:
        transport.query("ECHO? c")  # the log reopens and records again
    log.unlink()
    log.mkdir()
    with pytest.raises(TransportError, match=r"traffic log .*: cannot write"):
        transport.open()


def test_a_pty_carries_every_byte_of_a_block_unchanged(echo_pty) -> None:
    """A serial line passes control bytes (^C, ^D, CR, DEL, XON/XOFF) as data: the pty must be raw, or the line
    discipline would turn them into signals, edits and line endings, and echo the replies back as commands."""
    emulator, server = echo_pty
    wire = b"\x03\x04\r\n\x7f\x15\x11\x13\x1a\x00\xff\n"
    values = np.frombuffer(wire, dtype="<f4")
    with SerialTransport(server.resource, timeout_s=IN_TIME_S) as transport:
        transport.write_binary("DATA wave,", values, "f")
        assert transport.query_binary("DATA?", "f").tobytes() == wire
    assert emulator.values.tobytes() == wire and not emulator.errors


@contextlib.contextmanager
def unread_pty() -> Iterator[str]:
    """The path of a raw pseudo-terminal whose other end nothing reads: a line that takes ~12 KB, then no more."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def line_speed(path: str) -> int:
    """The speed (bit/s) that a serial port's settings give its line, read back from the kernel."""
    import termios

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        code = termios.tcgetattr(fd)[5]  # the output speed
    finally:
        os.close(fd)
    speeds = {getattr(termios, name): int(name[1:]) for name in dir(termios) if re.fullmatch(r"B\d+", name)}
    return speeds[code]


def in_a_thread(call: Callable[[], object]) -> BaseException | None:
    """What ``call()`` raised, or None; the 30 s join is a guard against a hang, not a measurement."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the call blocked"
    return outcome[0] if outcome else None


def write_in_a_thread(transport: Transport, command: str) -> BaseException | None:
    """What ``transport.write(command)`` raised, or None; a write that blocks for ever fails the test instead of
    hanging it (the 30 s join is a guard, not a measurement)."""
    return in_a_thread(lambda: transport.write(command))


@pytest.mark.parametrize(("baudrate", "advice"), [
    (4_000_000, "nothing is reading the line (the instrument, or the adapter or server behind the port): check that "
                "the instrument is on, that the cable is in, and that a USB adapter still shows"),
    (9600, "its 50001 bytes take 52.1 s at 9600 bit/s: give timeout_s more than that, or the line a higher baudrate "
           "(the instrument's too)"),
])
def test_a_serial_write_not_taken_in_time_says_so_not_that_no_reply_came(baudrate: int, advice: str) -> None:
    """A write that times out is not a missing reply: the message says the command could not be sent, and why —
    nothing reads the line, or the command takes longer than the timeout at the line's speed."""
    with unread_pty() as path:
        transport = SerialTransport(path, baudrate=baudrate, timeout_s=0.3)
        with transport:
            error = write_in_a_thread(transport, "X" * 50_000)
            assert isinstance(error, TransportTimeout) and transport.out_of_step
            assert str(error) == f"{path}: {'X' * 60!r}… (50000 characters) could " \
                                 f"not be sent within 0.3 s; {advice}"


def test_an_asrl_resource_sets_its_line_speed_and_says_when_a_write_is_not_taken() -> None:
    """pyvisa-py opens a pty as ``ASRL/dev/pts/N::INSTR``: ``baudrate`` is set on the line, and a write that the line
    does not take is named as such, as on a pyserial port (pyvisa reports it as a plain timeout)."""
    with unread_pty() as path, VisaTransport(f"ASRL{path}::INSTR", baudrate=4_000_000, timeout_s=0.3) as transport:
        assert line_speed(path) == 4_000_000
        error = write_in_a_thread(transport, "X" * 50_000)
        assert isinstance(error, TransportTimeout) and transport.out_of_step
        assert str(error).startswith(f"ASRL{path}::INSTR: {'X' * 60!r}… (50000 characters) could not be sent within "
                                     "0.3 s; nothing is reading the line")


def test_an_asrl_resource_without_a_baud_rate_learns_the_visa_librarys_for_its_advice() -> None:
    """An ASRL resource given no ``baudrate`` runs at the VISA library's speed (9600 bit/s), which the transport reads
    back once open: a write the line takes too slowly is then said to need more time at that speed, not that nothing
    reads the line."""
    with unread_pty() as path, VisaTransport(f"ASRL{path}::INSTR", timeout_s=0.3) as transport:
        assert transport.baudrate == line_speed(path) == 9600
        error = write_in_a_thread(transport, "X" * 50_000)
        assert isinstance(error, TransportTimeout)
        assert str(error).endswith("could not be sent within 0.3 s; its 50001 bytes take 52.1 s at 9600 bit/s: give "
                                   "timeout_s more than that, or the line a higher baudrate (the instrument's too)")


@pytest.mark.parametrize(("resource", "interface"), [("TCPIP::10.0.0.2::5025::SOCKET", "a VISA TCPIP resource"),
                                                     ("USB0::0x0957::0x2807::MY1::INSTR", "a VISA USB resource")])
def test_a_visa_resource_without_a_serial_line_refuses_a_baud_rate(resource: str, interface: str) -> None:
    with pytest.raises(ConfigError, match=f"baudrate is a serial line's speed, and {re.escape(resource)} is "
                                          f"{interface}, which has no serial line; leave baudrate out"):
        VisaTransport(resource, baudrate=9600)


@pytest.mark.parametrize("resource", ["TCPIP0::192.168.1.20::5025", "TCPIP::192.168.1.20::5025::INSTR"])
def test_a_port_written_as_a_vxi11_device_name_is_refused_showing_the_socket_resource(resource: str) -> None:
    """``TCPIP0::host::5025`` is VISA's VXI-11 instrument named "5025", not port 5025: pyvisa-py called the host's
    port 111 and the user was told to check the cable and power of an instrument that was on and connected."""
    head = resource.split("::")[0]
    with pytest.raises(ConfigError) as refused:
        VisaTransport(resource)
    assert refused.value.field == "resource"
    assert refused.value.detail == (
        f"{resource!r} names a VXI-11 instrument whose LAN device name is '5025', not port 5025; for the "
        f"instrument's socket on port 5025 write {head}::192.168.1.20::5025::SOCKET (or {head}::192.168.1.20::INSTR "
        "for VXI-11)")


def test_a_resource_class_in_lower_case_is_the_resource_visa_reads(echo_tcp) -> None:
    """VISA reads resource names in any case; pyvisa's parser took ``…::socket`` for a VXI-11 device name and
    refused it ("too many parts"), and ``usb0::…::instr`` for a USB device whose interface number is "instr"."""
    lower = echo_tcp[1].resource.replace("SOCKET", "socket")
    with VisaTransport(lower, timeout_s=IN_TIME_S) as transport:
        assert transport.query("ECHO? lower") == "lower"
    assert open_transport("asrl/dev/ttyUSB0::instr").resource == "asrl/dev/ttyUSB0::INSTR"
    assert has_serial_line("ASRL/dev/ttyUSB0::instr")  # a lab keeps a driver's baud rate for it
    with pytest.raises(ConfigError, match="baudrate is a serial line's speed, and usb0::0x0957::0x2807::MY1::INSTR "
                                          "is a VISA USB resource"):
        VisaTransport("usb0::0x0957::0x2807::MY1::instr", baudrate=9600)


def test_a_visa_alias_given_a_baud_rate_is_asked_for_the_resource_it_names() -> None:
    """An alias was said to have "no serial line", but the system VISA's alias (NI MAX) may name an ASRL port: hil
    cannot tell which before it opens, so it asks for the resource itself."""
    with pytest.raises(ConfigError, match=r"^baudrate: baudrate is a serial line's speed, and my_smu is a VISA alias, "
                                          r"which may or may not name one; give the resource itself, its ASRL name "
                                          r"\(ASRL3::INSTR, ASRL/dev/ttyUSB0::INSTR\) or device path \(/dev/ttyUSB0, "
                                          r"COM3\), to set baudrate$"):
        VisaTransport("my_smu", backend="", baudrate=9600)  # pyvisa-py takes no alias


def test_a_connection_that_fails_leaves_no_traffic_log_open(tmp_path) -> None:
    """The log opens before the connection: a refused one must give it back, as no close follows a failed open."""
    with TcpServer(EchoEmulator()) as server:
        resource = server.resource
    log = tmp_path / "traffic.log"
    transport = VisaTransport(resource, timeout_s=0.3, traffic_log=log)
    with pytest.raises(TransportError, match=resource):
        transport.open()
    assert [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(log)] == []


def fds_on(path: str) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == path for fd in os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("kind", ["serial", "asrl"])
def test_a_binary_write_not_taken_counts_every_byte_the_line_carries(kind: str) -> None:
    """A VISA block's advice counted the command and the values as given (float64: twice the float32 sent), not the
    block's header and the line ending; the serial port counted what it sent. Both name the bytes the line carries."""
    values = np.zeros(12_500)  # float64, sent as float32: 50000 bytes, far beyond what a pty nobody reads takes
    size = len("DATA wave,") + len("#550000") + 50_000 + len("\n")
    with unread_pty() as path:
        transport = SerialTransport(path, baudrate=9600, timeout_s=0.3) if kind == "serial" else \
            VisaTransport(f"ASRL{path}::INSTR", baudrate=9600, timeout_s=0.3)
        with transport:
            error = in_a_thread(lambda: transport.write_binary("DATA wave,", values, "f"))
            assert isinstance(error, TransportTimeout) and transport.out_of_step
            assert str(error).endswith(f"could not be sent within 0.3 s; its {size} bytes take "
                                       f"{size * 10 / 9600:.3g} s at 9600 bit/s: give timeout_s more than that, or the "
                                       "line a higher baudrate (the instrument's too)")


def test_an_asrl_baud_rate_the_visa_library_refuses_leaves_the_port_and_the_log_closed(tmp_path) -> None:
    """The resource is open when its speed is set: a speed refused there must close it (and the traffic log), as no
    close follows a failed open."""
    log = tmp_path / "traffic.log"
    with unread_pty() as path:
        before = fds_on(path)
        transport = VisaTransport(f"ASRL{path}::INSTR", baudrate=2**33, timeout_s=0.3, traffic_log=log)
        with pytest.raises(TransportError, match="invalid value for attribute VI_ATTR_ASRL_BAUD"):
            transport.open()
        assert fds_on(path) == before and fds_on(str(log)) == 0 and not transport.is_open


def test_closing_a_transport_twice_leaves_a_log_it_shares_open_for_the_other(echo_tcp, tmp_path) -> None:
    """Each open of a transport is one use of its log, ended by one close: a second close of a closed transport
    (an instrument closed, then its lab) must not end the other transport's use."""
    log = tmp_path / "traffic.log"
    first = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log)
    second = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log)
    with first, second:
        first.close()
        first.close()
        second.query("ECHO? after")
        assert fds_on(str(log)) == 1
    assert "b'after\\n'" in log.read_text().splitlines()[-1] and fds_on(str(log)) == 0


def test_a_close_too_many_on_a_traffic_log_does_not_keep_a_later_use_open(echo_tcp, tmp_path) -> None:
    log = TrafficLog(tmp_path / "traffic.log")
    log.close()  # never opened: nothing to end
    with VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S, traffic_log=log) as transport:
        transport.query("ECHO? a")
    assert fds_on(str(log.path)) == 0


def test_a_write_not_taken_on_a_link_without_a_line_speed_asks_whether_the_instrument_reads() -> None:
    """A USB or GPIB write that times out has no line speed to blame (pyvisa-py's SOCKET writes never time out, so
    the advice is checked on the transport of such a resource, unopened)."""
    transport = VisaTransport("USB0::0x0957::0x2807::MY1::INSTR")
    assert transport.baudrate is None
    assert transport._not_taken_advice(50_001) == "the instrument is not reading: check that it is on, connected " \
                                                  "and not busy"



def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(k)`` for k in 0..count−1 in as many threads, started together; wait for them all."""
    barrier = threading.Barrier(count)

    def start(k: int) -> None:
        barrier.wait()
        work(k)

    workers = [threading.Thread(target=start, args=(k,)) for k in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_instruments_opening_one_traffic_log_path_at_once_share_one_log(tmp_path) -> None:
    """Transports connected at once from several threads are handed one log for one path (the check for a log and
    its creation are one step), even when making the log takes a while."""

    class SlowToMake(TrafficLog):
        def __init__(self, path: Path) -> None:
            time.sleep(0.01)  # another thread looks for the log meanwhile
            super().__init__(path)

    logs: list[TrafficLog] = []
    in_threads(6, lambda k: logs.append(SlowToMake.shared(tmp_path / "traffic.log")))
    assert len(logs) == 6 and all(log is logs[0] for log in logs)


def test_a_shared_traffic_log_made_from_a_relative_path_writes_where_it_pointed_from_any_folder(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's lab names ``logs/bench.log`` relative to the folder it started in; resumed from another folder while
    the first attempt's log was not yet collected, the resume was handed that log for the same file (`shared`), which
    opened its relative path in the new folder: the bench's record was split in two (a flaky test in the suite)."""
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(started)
    first = TrafficLog.shared("logs/bench.log")
    monkeypatch.chdir(elsewhere)
    again = TrafficLog.shared(started / "logs" / "bench.log")
    assert again is first
    again.open()
    again.record("smu", ">", b"*IDN?\n")
    again.close()
    assert (started / "logs" / "bench.log").read_text().count("\n") == 1 and not (elsewhere / "logs").exists()


def test_transfers_logged_from_many_threads_to_one_log_stay_whole_lines(tmp_path) -> None:
    """Instruments driven from several threads (a camera grabbing while a DAC ramps) write their transfers to one log
    line by line, also where the file takes a line in pieces."""

    class InPieces:  # a file whose write lets other threads run halfway through a line
        def __init__(self, file: Any) -> None:
            self.file = file

        def write(self, text: str) -> None:
            self.file.write(text[:len(text) // 2])
            time.sleep(0.0002)
            self.file.write(text[len(text) // 2:])

        def flush(self) -> None:
            self.file.flush()

        def close(self) -> None:
            self.file.close()

    log, threads, lines = TrafficLog(tmp_path / "traffic.log"), 6, 40
    log.open()
    log._file = InPieces(log._file)

    def instrument(k: int) -> None:
        for n in range(lines):
            log.record(f"inst{k}", ">", f"VOLT {n}".encode() * 8)

    in_threads(threads, instrument)
    log.close()
    pattern = re.compile(r"\d+\.\d{6}  inst(\d)  >  b'(VOLT \d+)\2{7}'")
    matches = [pattern.fullmatch(line) for line in (tmp_path / "traffic.log").read_text().splitlines()]
    assert len(matches) == threads * lines and all(matches)
    assert sorted(m[1] for m in matches) == sorted(str(k) for k in range(threads) for _ in range(lines))


@contextlib.contextmanager
def device_pty(timeout_s: float = 0.3) -> Iterator[tuple[int, SerialTransport]]:
    """A raw pseudo-terminal: the device's end (a file descriptor the test writes replies to) and an open
    `SerialTransport` on the other."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    transport = SerialTransport(os.ttyname(slave), timeout_s=timeout_s)
    try:
        with transport:
            yield master, transport
    finally:
        os.close(slave)
        os.close(master)


def test_a_serial_read_takes_a_long_reply_whole_and_keeps_what_came_after_it_for_the_next() -> None:
    """Replies are read as many bytes at a time as the port holds (a byte per call took a second for 100 kB from a
    USB virtual COM port); what arrived after a reply's end, another reply or a binary block, is the next read's."""
    with device_pty() as (device, transport):
        long = "1," * 100_000 + "2"
        writer = threading.Thread(target=os.write, args=(device, f"{long}\n".encode()), daemon=True)
        writer.start()
        assert transport.read() == long
        writer.join(30)
        os.write(device, b"first\nsecond\n#14\x00\x00\x80?\nthird")
        assert (transport.read(), transport.read()) == ("first", "second")
        np.testing.assert_array_equal(transport.query_binary("DATA?", "f"), [1.0])
        with pytest.raises(TransportTimeout):  # "third" never ends; what came of it is not taken for the next reply
            transport.read()
        os.write(device, b"fourth\n")
        assert transport.read() == "fourth"
    with device_pty() as (device, transport):
        os.write(device, b"one\ntwo\n")
        assert transport.read() == "one"
        transport.close()  # what was left unread belongs to the closed session (pyserial flushes the port's too)
        transport.open()
        os.write(device, b"three\n")
        assert transport.read() == "three"


def test_a_pty_link_lost_inside_patience_is_told_by_its_own_error_not_the_timeout_restored_after_it(echo_pty) -> None:
    """The link fails on a query inside the block; restoring the usual timeout on the port that is gone fails too,
    and that second failure ('a change of timeout') must not replace the first, which names the query."""
    _, server = echo_pty
    with SerialTransport(server.resource, timeout_s=0.3) as transport:
        assert transport.query("ECHO? x") == "x"
        with pytest.raises(TransportError, match=r"during 'ECHO\? y'"), transport.patience(1.0):
            server.stop()
            transport.query("ECHO? y")
        assert transport.timeout_s == 0.3


def test_an_error_status_from_the_visa_session_s_read_is_a_transport_error_not_an_empty_reply(echo_tcp) -> None:
    """pyvisa-py's session is read directly; a status below 0 other than a timeout (a VXI-11 link's I/O error, a
    connection lost) must be an error: taken as the end of the reply, a query answered '' (or the part read)."""
    from pyvisa.constants import StatusCode

    _, server = echo_tcp

    class FailingSession:
        def read(self, count: int) -> tuple[bytes, StatusCode]:
            return b"1.5", StatusCode.error_io

    with VisaTransport(server.resource, timeout_s=0.5) as transport:
        assert transport._session is not None  # read directly, as on every pyvisa-py resource
        transport._session = FailingSession()
        with pytest.raises(TransportError, match=r"'MEAS\?'"):
            transport.query("MEAS?")


def open_elsewhere(resource: str, *, windows: bool = False, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess:
    """Open ``resource`` from another process (another hil run, `hil devices` during a run), as hil does;
    ``windows``: with Windows' locks (`tests.windows`); ``env``: its environment (this process's by default)."""
    program = ("from tests.windows import as_on_windows\nas_on_windows()\n" if windows else "") + (
               "import sys\nfrom hil.errors import InstrumentBusy\nfrom hil.transport import open_transport\n"
               "try:\n    with open_transport(sys.argv[1], timeout_s=2) as link:\n        print(link.query('*IDN?'))\n"
               "except InstrumentBusy as error:\n    sys.exit(str(error))\n")
    return subprocess.run([sys.executable, "-c", program, resource], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60, env=env)


def test_an_instrument_open_in_one_process_is_refused_to_another_naming_the_holder(echo_tcp, echo_pty) -> None:
    """A second hil run on the bench's SMU, or `hil devices` while a run went on, connected beside the run: each set
    levels under the other's measurements, and the listing's safe state on its way out switched the running run's
    output off, which went on measuring nothing, and finished as if all were well. The second is refused, naming
    the process that holds the instrument, whichever spelling of the resource it gives; once that one has closed
    the instrument, it opens."""
    port = echo_tcp[1].port
    for transport, other in ((VisaTransport(echo_tcp[1].resource, timeout_s=0.3), f"tcpip0::127.0.0.1::{port}::SOCKET"),
                             (SerialTransport(echo_pty[1].resource, timeout_s=0.3),
                              f"ASRL{echo_pty[1].resource}::INSTR")):
        with transport:
            refused = open_elsewhere(other)
            assert refused.returncode == 1, refused
            assert refused.stderr.strip() == (
                f"{other}: in use by another process (pid {os.getpid()}: {' '.join(sys.argv)}); two programs driving "
                "one instrument each change what the other set and measures: wait until it has ended, or stop it, "
                "then connect again")
            transport.reopen()  # held throughout: a reconnection leaves no gap for the other process
            assert transport.query("*IDN?") == "hil,Echo,1,0"
        taken = open_elsewhere(other)
        assert taken.returncode == 0 and taken.stdout == "hil,Echo,1,0\n", taken


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a system without fork (Windows)")
def test_a_forked_process_neither_takes_nor_lets_go_of_its_parents_claim(echo_tcp) -> None:
    """A process forked from one holding an instrument (``os.fork()`` for a helper) counted itself among the
    parent's users: it opened the instrument beside the parent, and its exit released the parent's claim (the file
    removed, the lock shared with the parent let go), so that another hil run opened the instrument the parent went
    on driving. The child now holds no claim of its parent's, and lets none go."""
    script = textwrap.dedent("""
        import os, sys
        from hil.errors import InstrumentBusy
        from hil.transport import _Claim, instrument_key, open_transport
        from tests.test_transport import open_elsewhere
        link = open_transport(sys.argv[1], timeout_s=2)
        link.open()
        child = os.fork()
        if child == 0:  # a helper: it tries the instrument, then ends normally (exit hooks, collected transports)
            try:
                open_transport(sys.argv[1], timeout_s=2).open()
            except InstrumentBusy:
                sys.exit(3)
            sys.exit(0)
        print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
        print(open_elsewhere(sys.argv[1]).returncode)
        print(link.query("*IDN?"))
        link.close()
        print(_Claim.path_of(instrument_key(sys.argv[1])).exists())
    """)
    done = subprocess.run([sys.executable, "-c", script, echo_tcp[1].resource], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    # refused to the child; refused to another process after the child ended; the parent's until it closes it
    assert done.stdout.split("\n") == ["3", "1", "hil,Echo,1,0", "False", ""]


@pytest.mark.usefixtures("windows_locks")
def test_an_instrument_is_claimed_where_the_system_has_no_fcntl(echo_tcp) -> None:
    """Windows has no fcntl: an instrument was opened there unclaimed, so a second hil run, or hil devices during a
    run, drove it beside the run. There, msvcrt's locks claim it as flock does elsewhere."""
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=0.3)
    with transport:
        refused = open_elsewhere(transport.resource, windows=True)
        assert refused.returncode == 1, refused
        assert refused.stderr.startswith(f"{transport.resource}: in use by another process (pid {os.getpid()}: ")
    taken = open_elsewhere(transport.resource, windows=True)
    assert taken.returncode == 0 and taken.stdout == "hil,Echo,1,0\n", taken


def test_a_serial_port_is_one_instrument_however_windows_spells_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows, VISA opens ASRL3::INSTR as COM3, which pyserial opens by that name: a run on one spelling and hil
    devices on the other each claimed the port as another instrument, and both drove it. Elsewhere an ASRL board
    number is no COM port."""
    spellings = ("COM3", "com3", "ASRL3::INSTR", "asrl3::instr", "ASRL3")
    with monkeypatch.context() as windows:  # as Windows names itself, for these calls alone
        windows.setattr(sys, "platform", "win32")
        keys = {instrument_key(resource) for resource in spellings}
    assert keys == {"COM3"}
    with monkeypatch.context() as linux:  # as Linux names itself, where this test runs on Windows too
        linux.setattr(sys, "platform", "linux")
        assert instrument_key("ASRL3::INSTR") == "ASRL3::INSTR"


def test_instruments_are_claimed_in_a_folder_every_user_of_the_machine_shares(monkeypatch, tmp_path) -> None:
    """On macOS and Windows the temporary folder ($TMPDIR, %TEMP%) is each user's own: a colleague's hil, in another
    session on the lab's computer, did not see a run's claims, and drove its instruments beside it. There the claims
    are in /tmp and in %ProgramData%, which every user shares; elsewhere in the temporary folder, as before."""
    monkeypatch.setenv("PROGRAMDATA", str(tmp_path))
    folders = {}
    for platform in ("darwin", "win32", "linux"):
        with monkeypatch.context() as system:  # as each system names itself, for this call alone
            system.setattr(sys, "platform", platform)
            folders[platform] = shared_temporary_folder()
    assert folders == {"darwin": Path("/tmp"), "win32": tmp_path, "linux": Path("/tmp")}


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' claims are in %ProgramData%, whatever %TEMP% is")
def test_an_instrument_is_claimed_in_one_folder_whatever_each_users_temporary_folder(echo_tcp, tmp_path) -> None:
    """A login that gives each user a temporary folder of their own ($TMPDIR: pam_tmpdir's /tmp/user/<uid>): a
    colleague's hil claimed the bench's instruments in a folder of its own, and connected beside a run going on."""
    with VisaTransport(echo_tcp[1].resource, timeout_s=0.3):
        refused = open_elsewhere(echo_tcp[1].resource, env={**os.environ, "TMPDIR": str(tmp_path)})
        assert refused.returncode == 1 and "in use by another process" in refused.stderr, refused


def test_a_usb_instrument_is_one_instrument_however_its_vendor_and_model_numbers_are_written() -> None:
    """NI MAX writes a USB instrument's numbers 0x05E6::0x2450, a manual may write them 0x05e6 or in decimal (1510,
    9296), which VISA reads alike: a run on one spelling and hil devices on another each claimed the instrument, and
    both drove it."""
    spellings = ("USB0::0x05E6::0x2450::04096331::INSTR", "usb::0x05e6::0x2450::04096331::instr",
                 "USB0::1510::9296::04096331::INSTR")
    assert {instrument_key(resource) for resource in spellings} == {"USB0::0x05E6::0x2450::04096331::0::INSTR"}


def test_a_serial_port_is_one_instrument_by_its_call_out_and_dial_in_devices_on_macos(monkeypatch) -> None:
    """macOS gives each serial port two devices, /dev/cu.X to call out and /dev/tty.X to dial in: a run on one and
    hil devices on the other each claimed the port as another instrument, and both drove it."""
    spellings = ("/dev/cu.usbserial-A1", "/dev/tty.usbserial-A1", "ASRL/dev/tty.usbserial-A1::INSTR")
    with monkeypatch.context() as macos:  # as macOS names itself, for these calls alone
        macos.setattr(sys, "platform", "darwin")
        keys = {instrument_key(resource) for resource in spellings}
    assert keys == {"serial:/dev/cu.usbserial-A1"}
    assert instrument_key("/dev/tty.usbserial-A1") == "serial:/dev/tty.usbserial-A1"  # elsewhere, a device of its own


def test_a_released_claim_leaves_no_file_behind(echo_tcp) -> None:
    """Each claim left its file in the temporary folder for good: a run of the test suite, its emulators each on a new
    port or pty, left some 600."""
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S)
    path = _Claim.path_of(instrument_key(transport.resource))
    with transport:
        assert path.read_text().startswith(f"pid {os.getpid()}: ")
        assert open_elsewhere(transport.resource).returncode == 1  # held
    assert not path.exists()
    assert open_elsewhere(transport.resource).returncode == 0 and not path.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="Linux's fs.protected_regular, on a sticky folder")
def test_a_claim_file_another_user_left_names_the_process_that_holds_it_now(echo_tcp, monkeypatch) -> None:
    """Linux refuses to open with O_CREAT another user's file in a sticky folder every user writes (the claims', with
    fs.protected_regular, on by default), though anyone may write that file: the claim was then taken read only, and
    another process was refused naming the last user who had held the instrument, long gone, not its holder."""
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S)
    path = _Claim.path_of(instrument_key(transport.resource))
    path.parent.mkdir(exist_ok=True)
    path.write_text("pid 99999999: hil run killed.yaml")  # of a colleague's hil, killed as it held the instrument
    opened = os.open

    def protected_regular(file, flags, *args, **kwargs):
        if Path(file) == path and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return opened(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", protected_regular)
    with transport:
        refused = open_elsewhere(transport.resource)
    assert refused.returncode == 1 and f"in use by another process (pid {os.getpid()}: " in refused.stderr, refused


@pytest.mark.skipif(sys.platform == "win32", reason="systemd-tmpfiles, a cleaner of Linux's /tmp")
def test_the_claims_folder_is_kept_from_tmp_cleaners_while_an_instrument_is_held(echo_tcp) -> None:
    """systemd-tmpfiles removes /tmp's files untouched for 10 days (Fedora, RHEL), skipping a folder it cannot lock:
    a run that held an instrument longer lost its claim file, and the next process drove the instrument beside it."""
    import fcntl

    with VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S):
        folder = os.open(CLAIMS_DIR, os.O_RDONLY)  # as systemd-tmpfiles opens it, then locks it before cleaning it
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(folder)


def test_transports_of_one_process_share_its_hold_on_an_instrument(echo_tcp) -> None:
    """Two links of one process to one instrument (a reconnection beside the old link, a test's second client) are
    one holder: both open, and the instrument stays held until the last has closed."""
    first = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S)
    second = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S)
    with first:
        with second:
            assert second.query("ECHO? two") == "two"
        assert open_elsewhere(echo_tcp[1].resource).returncode == 1
    assert open_elsewhere(echo_tcp[1].resource).returncode == 0


def test_a_traffic_log_that_cannot_be_written_leaves_the_instrument_free(echo_tcp, tmp_path) -> None:
    (tmp_path / "file").write_text("")
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=0.3, traffic_log=tmp_path / "file" / "bench.log")
    with pytest.raises(TransportError, match="cannot write"):
        transport.open()
    assert open_elsewhere(echo_tcp[1].resource).returncode == 0


def test_a_transport_dropped_without_a_close_releases_the_instrument_when_collected(echo_tcp) -> None:
    """A link dropped open (a driver's test that ends before its close, a notebook's variable given another value)
    kept its hold for the rest of the process, and a pty or port number used again later was refused to others."""
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=0.3)
    transport.open()
    del transport
    gc.collect()
    assert open_elsewhere(echo_tcp[1].resource).returncode == 0


def test_a_transport_collected_while_its_thread_claims_an_instrument_releases_its_hold(echo_tcp) -> None:
    """The collector, which runs at any allocation, may collect a transport dropped open (in a reference cycle, an
    exception's traceback) inside this very thread's claim or release of another instrument: its release then waited
    on the claims' lock, which that thread held, for ever."""
    transport = VisaTransport(echo_tcp[1].resource, timeout_s=IN_TIME_S)
    transport.open()
    with _Claim._held_lock:  # as in a claim of another instrument when the collector runs
        del transport
    assert open_elsewhere(echo_tcp[1].resource).returncode == 0


def test_a_serial_port_whose_device_has_gone_is_told_as_an_os_error_in_one_line() -> None:
    """pyserial and termios write a port's OS error as the pair ``(5, 'Input/output error')``: it is told as Python
    tells one, whichever of them raised it (setting the timeout, or draining a write)."""
    import termios

    master, slave = os.openpty()
    transport = SerialTransport(os.ttyname(slave), timeout_s=0.3)
    try:
        with transport:
            os.close(master)  # the device's end goes
            with pytest.raises(TransportError) as caught, transport.patience(1.0):
                pass
    finally:
        os.close(slave)
    assert str(caught.value).endswith("connection failed during 'a change of timeout' (Could not configure port: "
                                      "[Errno 5] Input/output error); check the cable or network and the "
                                      "instrument's power, then connect again")
    assert _library_reason(termios.error(5, "Input/output error")) == "[Errno 5] Input/output error"
