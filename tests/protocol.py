"""Byte-exact protocol tests: a transport that expects given writes and answers with given replies.

In the manner of pymeasure's ``expected_protocol``: a test lists the exchange as it must happen on the wire,
``[(b"SOUR1:VOLT:OFFS 0.5", None), (b"SYST:ERR?", b'+0,"No error"')]`` (writes and replies without their
terminators), runs the driver, and fails on the first byte that differs or on an exchange left over. This is the
only mock in the test suite, and it sits at the byte level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from pyvisa.util import from_ieee_block, to_ieee_block

from hil.transport import Transport

Exchange = tuple[bytes | None, bytes | None]
#: A scripted reply that never comes: the read times out.
TIMED_OUT = b"<no reply: timeout>"
T = TypeVar("T")


class ProtocolTransport(Transport):
    """Checks every write against the next expected one and returns the scripted replies."""

    def __init__(self, exchanges: Sequence[Exchange], resource: str = "protocol-test"):
        super().__init__(resource, timeout_s=1.0)
        self.exchanges = list(exchanges)
        self.position = 0
        self._pending_reply: bytes | None = None

    def _classify(self, error: Exception) -> str:
        return "timeout" if isinstance(error, TimeoutError) else "error"

    def _apply_timeout(self) -> None:
        """Scripted replies come at once."""

    def _open_raw(self) -> None:
        """Nothing to open: the wire is the list of exchanges."""

    def _close_raw(self) -> None:
        """Nothing to close."""

    def _next(self) -> Exchange:
        if self.position >= len(self.exchanges):
            raise AssertionError(f"unexpected traffic after the last of {len(self.exchanges)} exchanges")
        exchange = self.exchanges[self.position]
        self.position += 1
        return exchange

    def _write_raw(self, data: bytes) -> None:
        assert self._pending_reply is None, f"write {data!r} while reply {self._pending_reply!r} was unread"
        expected_write, reply = self._next()
        sent = data[: -len(self.write_termination)] if data.endswith(self.write_termination.encode()) else data
        assert sent == expected_write, f"exchange {self.position - 1}: expected {expected_write!r}, sent {sent!r}"
        self._pending_reply = reply

    def _read_raw(self) -> bytes:
        if self._pending_reply is None:
            expected_write, reply = self._next()
            assert expected_write is None, f"read while {expected_write!r} was expected to be written"
            if reply is None:
                raise AssertionError(f"exchange {self.position - 1} scripts neither a write nor a reply")
        else:
            reply, self._pending_reply = self._pending_reply, None
        if reply == TIMED_OUT:
            raise TimeoutError(f"exchange {self.position - 1}: scripted timeout")
        return reply + self.read_termination.encode()

    def _write_binary_raw(self, command: str, values: np.ndarray, datatype: str, big_endian: bool) -> None:
        self._write_raw(command.encode() + to_ieee_block(values, datatype, big_endian)
                        + self.write_termination.encode())

    def _query_binary_raw(self, command: str, datatype: str, big_endian: bool) -> Any:
        self._write_raw((command + self.write_termination).encode())
        reply = self._read_raw()[: -len(self.read_termination)]
        return from_ieee_block(reply, datatype, big_endian, container=np.array)

    def assert_done(self) -> None:
        assert self._pending_reply is None, f"reply {self._pending_reply!r} was never read"
        left = self.exchanges[self.position:]
        assert not left, f"{len(left)} exchange(s) never happened, first: {left[0]!r}"


@contextlib.contextmanager
def expected_protocol(factory: Callable[[ProtocolTransport], T], exchanges: Sequence[Exchange]) -> Iterator[T]:
    """Build an instrument on a `ProtocolTransport` that plays ``exchanges``; on exit, require all were used."""
    transport = ProtocolTransport(exchanges)
    transport.open()
    yield factory(transport)
    transport.assert_done()


def block(values: Sequence[float] | np.ndarray, datatype: str = "f", big_endian: bool = False) -> bytes:
    """The IEEE 488.2 definite-length block of ``values``, for writing expected exchanges."""
    return to_ieee_block(np.asarray(values), datatype, big_endian)
