"""Byte transports to instruments: the only module that touches pyvisa and pyserial.

A `Transport` writes commands, reads replies and transfers IEEE 488.2 binary blocks. One lock per transport is
held for a whole write-and-read transaction, because instruments are not thread-safe. Every call has a timeout;
a timeout or a lost connection raises `TransportTimeout` / `TransportError` naming the resource and the last
command. `reopen()` reconnects after a dropped connection. An optional traffic log records every transfer (the first
512 bytes of a longer one, and its length), with a timestamp, for debugging on a bench (like pyserial's ``spy://``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from hil.errors import ConfigError, InstrumentBusy, TransportError, TransportTimeout, excerpt
from hil.filelock import lock, make_shared_folders, open_shared, shares, unlock

#: pyvisa datatype codes accepted by the binary-block methods (struct format characters).
BLOCK_DATATYPES = "bBhHiIlLqQfd"
#: The line ending of messages both ways, unless a driver's ``transport_options`` name another.
LINE_END = "\n"
#: A timeout (s) below which a missing reply is most likely the timeout's: an instrument's answer to a simple query
#: over LAN, USB or GPIB takes milliseconds, and a reading more.
SHORT_TIMEOUT_S = 0.05
#: The longest timeout (s) a transport takes: VISA's, 2³² − 1 ms (49 days); every call has one.
MAX_TIMEOUT_S = 4_294_967
#: The longest text reply read (bytes): far beyond any instrument's, and far below the memory an endless one takes.
MAX_REPLY_BYTES = 64 * 2**20
#: An OS error as termios and pyserial write it, ``(5, 'Input/output error')``.
_ERRNO_PAIR = re.compile(r"\((\d+), '([^']*)'\)")


def definite_block(values: Sequence[float] | np.ndarray, datatype: str = "f", big_endian: bool = False) -> bytes:
    """``values`` as an IEEE 488.2 definite-length block (``#``, digits, byte count, data), each value packed with
    the struct code ``datatype`` (see `BLOCK_DATATYPES`), as pyvisa builds it."""
    from pyvisa.util import to_ieee_block

    return to_ieee_block(np.asarray(values), datatype, big_endian)


class _Unterminated(TimeoutError):
    """A read that timed out after ``received`` came without the read termination."""

    def __init__(self, received: bytes):
        super().__init__(f"{len(received)} bytes without the terminator")
        self.received = received


class _NotTaken(TimeoutError):
    """A write that timed out: the line took not all of a command's ``size`` bytes, because nothing reads them, or
    they take longer than the timeout to send at the line's speed."""

    def __init__(self, size: int):
        super().__init__(f"{size} bytes not taken")
        self.size = size


class TrafficLogStopped(RuntimeWarning, UserWarning):
    """A traffic log that stopped (a full disk) while the instruments go on: a RuntimeWarning, and one of hil's own
    (a UserWarning), which the hil command shows on one line, as its errors."""


class TrafficLog:
    """Appends one line per transfer to a text file: ``time  instrument (resource)  >|<  bytes`` (the resource alone
    where no instrument is named); flushed as written. The file (and its folder) is created when the first transport
    using it opens, so validating a lab file writes nothing, and closed when the last one closes.

    Transports given one path share one log (`shared`), so a bench's instruments logging to one file leave one
    record in the order of the exchanges, written through one handle.

    In a folder its group may write (a lab's), the file and the folders made for it are the group's to write too
    (`hil.filelock.share_with_group`): the log a lab file names is written by each user's runs in turn.

    The log serves debugging and never stands between hil and an instrument: a file that cannot be created is an
    error before anything is sent, but one that fails later (a full disk) stops logging with a warning, and the
    commands, the safe state's among them, still go out.
    """

    _shared: ClassVar[weakref.WeakValueDictionary[Path, TrafficLog]] = weakref.WeakValueDictionary()
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # opened where the path pointed when the log was made: a resumed run, working in another folder, is handed
        # this log for the same file (`shared`) and must not write a second one relative to its own folder
        self._target = self.path.absolute()
        self._file: IO[str] | None = None
        self._users = 0
        self._stopped = False
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, path: str | Path) -> TrafficLog:
        """The one log of ``path`` (resolved: ``logs/a.log`` and ``./logs/a.log`` are one) while anything uses it."""
        key = Path(path).resolve()
        with cls._shared_lock:
            log = cls._shared.get(key)
            if log is None:
                log = cls._shared[key] = cls(path)
            return log

    def open(self) -> None:
        """Begin a use of the log, creating the file (appending to one that exists) at the first; `TransportError` if
        it cannot be. A log that stopped (`record`) tries again, quietly: a reconnection never fails for the log's
        sake. Each `open` is ended by one `close`."""
        with self._lock:
            if self._file is None:
                try:
                    make_shared_folders(self._target.parent)  # in a lab's shared folder: its group's, as the file
                    self._file = open_shared(self._target, "a", encoding="utf-8")
                except OSError as error:
                    if not self._stopped:
                        raise TransportError(f"traffic log {self.path}: cannot write ({error.strerror or error}); "
                                             "give traffic_log a writable path") from None
                else:
                    self._stopped = False
            self._users += 1

    def record(self, source: str, direction: str, data: bytes) -> None:
        """Write one line (nothing before `open`, or after logging stopped); ``source`` names the instrument or
        resource, ``direction`` is ``>`` for sent and ``<`` for received; ``data`` beyond its first 512 bytes is
        left out, its length said."""
        shown = data if len(data) <= 512 else data[:512] + f"... ({len(data)} bytes)".encode()
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(f"{time.time():.6f}  {source}  {direction}  {shown!r}\n")
                self._file.flush()
            except OSError as error:
                self._stopped = True
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
                warnings.warn(f"traffic log {self.path}: cannot write ({error.strerror or error}); logging stops "
                              "here and the instruments go on (free space, or give traffic_log another path)",
                              TrafficLogStopped, stacklevel=2)

    def close(self) -> None:
        """End a use of the log (`open`); the last closes the file."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._file is not None:
                self._file.close()
                self._file = None


def shared_temporary_folder() -> Path:
    """A folder every user of the machine writes to, as its instruments are theirs alike: /tmp, and on Windows
    %ProgramData%, whatever the temporary folder of this user is ($TMPDIR, %TEMP%): each user's own on macOS and
    Windows, and on Linux where a login sets it so (pam_tmpdir's /tmp/user/<uid>, a lab's profile), where two users'
    runs each claimed the bench's instruments in a folder of their own and both drove them."""
    if sys.platform != "win32":
        return Path("/tmp")
    return Path(os.environ["PROGRAMDATA"]) if os.environ.get("PROGRAMDATA") else Path(tempfile.gettempdir())


#: Where a process holding an instrument writes its claim (`_Claim`): one file per resource, shared by every user.
CLAIMS_DIR = shared_temporary_folder() / "hil-instruments"


class _Claim:
    """A process's hold on one instrument, for as long as a transport of it is open: a lock (`hil.filelock`: flock,
    or msvcrt's on Windows) on a file named after the resource in `CLAIMS_DIR`, holding the holder's pid and command
    line. A second process opening the same resource (another ``hil run``, ``hil devices`` during a run) is refused,
    naming the holder: it would set levels under the first one's measurements, and its safe state on the way out
    would switch the first one's output off. Transports of one process share its claim (counted); the system drops
    the lock when the process ends, however it ends. A process forked from the holder is another process: it holds
    none of its parent's claims (`_forget_in_child`), and releases none of them as its copies of the transports are
    closed or collected."""

    _held: ClassVar[dict[str, _Claim]] = {}
    #: Re-entrant: a transport dropped open is released by the collector, which may run inside this thread's `take`
    #: or `release` (at any allocation), its lock held.
    _held_lock: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, key: str, path: Path, fd: int):
        self.key, self.path, self.fd, self.users = key, path, fd, 1
        self.pid = os.getpid()  # the holder: a forked child shares the lock's open file, and must not let it go
        self.folder = self._keep_folder()

    @staticmethod
    def _keep_folder() -> int | None:
        """`CLAIMS_DIR` open, a shared lock on it, which keeps systemd-tmpfiles from removing it and the claims in it
        (it skips a folder another process has locked): /tmp's files untouched for 10 days are removed (Fedora, RHEL),
        and a run that held an instrument longer lost its claim file; the next process made a new one, and drove the
        instrument beside the run. None where a folder cannot be opened or locked shared (Windows, which has no such
        cleaning)."""
        if not shares():
            return None
        try:
            fd = os.open(CLAIMS_DIR, os.O_RDONLY)
        except OSError:
            return None
        try:
            lock(fd, shared=True)
        except OSError:
            os.close(fd)
            return None
        return fd

    @classmethod
    def _forget_in_child(cls) -> None:
        """In a forked child: hold none of the parent's claims (a transport opened here claims its instrument anew,
        refused while the parent holds it), with a lock of its own (the parent's may have been held at the fork)."""
        cls._held = {}
        cls._held_lock = threading.RLock()

    @staticmethod
    def path_of(key: str) -> Path:
        """The claim file of the instrument ``key`` names."""
        return CLAIMS_DIR / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock")

    @classmethod
    def take(cls, key: str) -> _Claim | None:
        """Claim ``key`` for this process; a `TransportError` (without the resource, which the caller adds) where
        another process holds it. None where claims are not supported."""
        with cls._held_lock:
            claim = cls._held.get(key)
            if claim is not None:
                claim.users += 1
                return claim
            path = cls.path_of(key)
            for _ in range(10):  # a file its holder removed as it released it, locked here meanwhile: open it anew
                fd = cls._lock(path)
                if fd is None:
                    return None
                with contextlib.suppress(OSError):
                    if os.path.samestat(os.fstat(fd), os.stat(path)):
                        break
                os.close(fd)
            else:
                return None
            with contextlib.suppress(OSError):  # a read-only claim names no holder
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)  # no pwrite on Windows
                os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}"[:500].encode("utf-8", "replace"))
            claim = cls._held[key] = cls(key, path, fd)
            return claim

    @staticmethod
    def _lock(path: Path) -> int | None:
        """The claim file at ``path``, opened (created where missing) and locked; `InstrumentBusy` where another
        process holds it, None where it cannot be had (a temporary folder that cannot be written or locked)."""
        try:
            CLAIMS_DIR.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # shared by every user of the machine, as the instruments are
                CLAIMS_DIR.chmod(0o1777)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
                with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows before Python 3.13
                    os.fchmod(fd, 0o666)  # the umask's cut undone: another user's hil writes its claim too
            except PermissionError:  # another user's file, from before: Linux's fs.protected_regular refuses making
                try:  # one in a sticky folder, not opening it, and the holder named was the last one to write it
                    fd = os.open(path, os.O_RDWR)
                except PermissionError:  # not writable: locked all the same, read only
                    fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None  # an unwritable temporary folder: the instrument is opened unclaimed, as before claims
        try:
            lock(fd)
        except BlockingIOError:  # held: EWOULDBLOCK
            os.lseek(fd, 0, os.SEEK_SET)  # no pread on Windows
            holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "a process"
            os.close(fd)
            raise InstrumentBusy(f"in use by another process ({holder}); two programs driving one instrument "
                                 "each change what the other set and measures: wait until it has ended, or stop "
                                 "it, then connect again") from None
        except OSError:  # no locks on that file system (ENOLCK: an NFS temporary folder): unclaimed, as above
            os.close(fd)
            return None
        return fd

    def release(self) -> None:
        """End one use; the last releases the instrument to other processes, removing its file (a process that
        opened it meanwhile finds it gone once it has the lock, and opens the path anew). Nothing in a forked child,
        whose lock is its parent's: the parent still holds the instrument."""
        if self.pid != os.getpid():
            return
        with self._held_lock:
            self.users -= 1
            if self.users == 0:
                self._held.pop(self.key, None)
                with contextlib.suppress(OSError):  # no holder named, where the file stays
                    os.ftruncate(self.fd, 0)
                with contextlib.suppress(OSError):  # another user's file stays (the folder is sticky), as one open
                    os.unlink(self.path)  # does on Windows
                with contextlib.suppress(OSError):
                    unlock(self.fd)  # as Windows asks before the file is closed, which drops the lock elsewhere
                os.close(self.fd)
                if self.folder is not None:
                    os.close(self.folder)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_Claim._forget_in_child)


class Transport(ABC):
    """A connection to one instrument.

    Subclasses implement the ``_..._raw`` hooks; this class adds the lock, the timeouts, the error translation
    and the traffic log. ``timeout_s`` bounds every single read or write.
    """

    def __init__(self, resource: str, *, timeout_s: float = 2.0, read_termination: str = LINE_END,
                 write_termination: str = LINE_END, traffic_log: str | Path | TrafficLog | None = None):
        if not 0 < timeout_s <= MAX_TIMEOUT_S:  # infinity, pyvisa's "none", failed at open as a lost connection
            raise ValueError(f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S} s (VISA's longest: every call has a "
                             f"timeout), got {timeout_s}")
        self.resource = resource
        #: The name of the instrument using this transport, put before the resource in error messages.
        self.owner: str | None = None
        #: The serial line's speed (bit/s) where the transport knows it; None for a link without one (LAN, USB).
        self.baudrate: int | None = None
        self.timeout_s = float(timeout_s)
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.last_command: str | None = None
        #: Set by a timeout or an interrupted exchange: a late reply may still arrive and would answer the next query
        #: (a driver resynchronises).
        self.out_of_step = False
        #: Set where the instrument closed or reset the connection (`reopen` may reach it again, as a driver's safe
        #: state does); cleared at each open.
        self.link_lost = False
        self._lock = threading.RLock()
        self._open = False
        self._claim: _Claim | None = None  # this process's hold on the instrument while open
        self._unclaim: Any = None  # the `weakref.finalize` that releases it where the transport is dropped open
        self._keep_claim = False  # set while `reopen` closes and opens again
        self._log = traffic_log if isinstance(traffic_log, TrafficLog) or traffic_log is None \
            else TrafficLog.shared(traffic_log)  # used while the transport is open

    # -- life cycle -------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Connect. Raises `TransportError` if the resource cannot be opened."""
        with self._lock, self._translate("open"):
            if not self._open:
                if self._log is not None:
                    self._log.open()
                try:
                    self._take_claim()
                    self._open_raw()
                except BaseException:
                    if self._log is not None:
                        self._log.close()
                    if not self._keep_claim:
                        self._release_claim()
                    raise
                self._open = True
                self.link_lost = False
                if self._fresh():
                    self.out_of_step = False

    def _fresh(self) -> bool:
        """Whether the connection just opened is new to the instrument, and so carries no reply it owed the last
        (a TCP socket); not a serial line, USB or GPIB, where a reply late for the last may still come."""
        return False

    def close(self) -> None:
        """Disconnect, releasing the instrument to other processes (`_Claim`); safe to call twice."""
        with self._lock:
            if self._open:
                self._open = False
                with contextlib.suppress(Exception):
                    self._close_raw()
                if self._log is not None:
                    self._log.close()
            if not self._keep_claim:
                self._release_claim()

    def reopen(self) -> None:
        """Close and connect again, e.g. after the instrument was power-cycled or the link dropped; the instrument
        stays claimed throughout, so another process cannot take it in between."""
        with self._lock:
            self._keep_claim = True
            try:
                self.close()
                self.open()
            finally:
                self._keep_claim = False
                if not self._open:
                    self._release_claim()

    def claim(self) -> None:
        """Claim the instrument for this process (`_Claim`) without opening the link, so that a lab can hold every
        instrument it is about to connect before it sends anything to any; `InstrumentBusy` where another process
        holds it. `close` releases it (`open` keeps it)."""
        with self._lock:
            self._take_claim()

    def _claim_key(self) -> str | None:
        """What names the instrument across processes (`_Claim`), or None for a link no other process can reach."""
        return instrument_key(self.resource)

    def _take_claim(self) -> None:
        if self._claim is None and (key := self._claim_key()) is not None:
            try:
                self._claim = _Claim.take(key)
            except InstrumentBusy as error:
                raise InstrumentBusy(f"{self._where()}: {error}") from None
            if self._claim is not None:  # a transport dropped without a close releases its use when collected
                self._unclaim = weakref.finalize(self, self._claim.release)

    def _release_claim(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            self._unclaim.detach()
            claim.release()

    @property
    def is_open(self) -> bool:
        return self._open

    def unread(self) -> bool:
        """Whether bytes have come that no read has taken yet, looked at without waiting. Right after a reply, a
        line the instrument sent unasked, or the reply meant for this query behind one meant for another."""
        with self._lock:
            return self._open and self._unread_raw()

    def _unread_raw(self) -> bool:
        """`unread` on the open connection; False where the library cannot tell."""
        return False

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transport]:
        """Hold the lock across several calls that must not be interleaved with another thread's."""
        with self._lock:
            yield self

    @contextlib.contextmanager
    def patience(self, extra_s: float) -> Iterator[Transport]:
        """Inside the block, every read or write may take ``extra_s`` seconds longer than ``timeout_s`` (for a
        reply the instrument needs time to measure); the lock is held throughout."""
        with self._lock:
            usual = self.timeout_s
            self.timeout_s = usual + max(0.0, float(extra_s))
            try:
                self._retime()
                yield self
            except BaseException:
                self.timeout_s = usual
                with contextlib.suppress(Exception):  # a link that failed in the block: its first error is told
                    self._retime()
                raise
            self.timeout_s = usual
            self._retime()

    def _retime(self) -> None:
        """Give an open connection the present ``timeout_s``; a port that is gone (pyserial sets the timeout on the
        port itself) is a `TransportError`."""
        if self._open:
            with self._translate("a change of timeout"):
                self._apply_timeout()

    def write(self, command: str) -> None:
        """Send one command (the write termination is appended)."""
        with self._lock, self._translate(command):
            self._require_open(command)
            self.last_command = command
            data = (command + self.write_termination).encode("ascii")
            self._record(">", data)
            self._write_raw(data)

    def read(self) -> str:
        """Read one reply up to the read termination, which is stripped."""
        with self._lock, self._translate(self.last_command or "read"):
            self._require_open("read")
            data = self._read_raw()
            self._record("<", data)
            reply = data.removesuffix(self.read_termination.encode("ascii"))  # ";" as "\n": not a line end alone
            return reply.decode("ascii", errors="replace").rstrip("\r\n")

    def query(self, command: str) -> str:
        """Write ``command`` and read its reply, atomically with respect to other threads."""
        with self._lock:
            self.write(command)
            return self.read()

    def write_binary(self, command: str, values: Sequence[float] | np.ndarray, datatype: str = "f",
                     big_endian: bool = False) -> None:
        """Send ``command`` followed by ``values`` as an IEEE 488.2 definite-length block.

        ``datatype`` is a struct code (``f`` float32, ``h`` int16, ...). The command should end where the block
        begins (e.g. ``"DATA:ARB name,"``).
        """
        if datatype not in BLOCK_DATATYPES:
            raise ValueError(f"datatype {datatype!r} is not one of {BLOCK_DATATYPES}")
        with self._lock, self._translate(command):
            self._require_open(command)
            self.last_command = command
            self._write_binary_raw(command, np.asarray(values), datatype, big_endian)

    def query_binary(self, command: str, datatype: str = "f", big_endian: bool = False) -> np.ndarray:
        """Write ``command`` and read an IEEE 488.2 definite-length block reply as a numpy array."""
        if datatype not in BLOCK_DATATYPES:
            raise ValueError(f"datatype {datatype!r} is not one of {BLOCK_DATATYPES}")
        with self._lock, self._translate(command):
            self._require_open(command)
            self.last_command = command
            return self._block_values(command, self._query_binary_raw(command), datatype, big_endian)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _require_open(self, command: str) -> None:
        if not self._open:
            raise TransportError(f"{self.resource}: not open (sending {excerpt(command)}); call open() or reopen()")

    def _where(self) -> str:
        """The instrument's name and resource, or the resource alone, to begin an error message."""
        return f"{self.owner} ({self.resource})" if self.owner else self.resource

    def _not_a_block(self, command: str, detail: str) -> TransportError:
        """The error for a reply to ``command`` that is not a definite-length block. The rest of it may still be
        unread and would answer the next query: the link is out of step (a driver resynchronises)."""
        self.out_of_step = True
        return TransportError(f"{self._where()}: reply to {excerpt(command)} is not a definite-length block "
                              f"({detail}); check that the command returns one and that the resource is this "
                              "instrument")

    def _block_width(self, command: str, head: bytes) -> int:
        """The digits of the byte count of a definite-length block that ``head`` begins (``#``, then a digit 1..9
        saying how many); else the reply is not a block."""
        width = head[1:2]
        if head[:1] != b"#" or not width.isdigit() or width == b"0":
            raise self._not_a_block(command, f"it begins {head[:2]!r}")
        return int(width)

    def _block_header(self, command: str, head: bytes) -> tuple[int, int]:
        """The offset and byte count of the data of the block ``head`` begins (it may hold more), header and data
        together at most `MAX_REPLY_BYTES`, the longest reply a VISA read takes; else the reply is not a block."""
        offset = 2 + self._block_width(command, head)
        if len(head) < offset or not head[2:offset].isdigit():  # int() would take " 5"
            raise self._not_a_block(command, f"it begins {head[:offset]!r}")
        count = int(head[2:offset])
        if offset + count > MAX_REPLY_BYTES:
            raise self._not_a_block(command, f"it announces {count} bytes, which with its {offset}-byte header are "
                                             f"more than {MAX_REPLY_BYTES}")
        return offset, count

    def _block_end(self, command: str, data: bytes, rest: bytes) -> bytes:
        """``data``, a block's bytes, where ``rest``, what followed it up to the read termination, is that alone
        (a ``"\r"`` before it allowed); more is a block shorter than the bytes sent, the reply's fault."""
        extra = rest.removesuffix(self.read_termination.encode("ascii"))
        if extra.strip(b"\r"):
            raise self._not_a_block(command, f"its {len(data)} bytes are followed by {len(extra)} more before the "
                                             f"termination, {excerpt(extra[:40].decode('ascii', 'replace'))}")
        return data

    def _block_values(self, command: str, data: bytes, datatype: str, big_endian: bool) -> np.ndarray:
        """The values of a block's ``data`` bytes (read whole, up to the termination); a byte count that is not a
        whole number of values is a garbage reply (its values would be cut short), refused as such."""
        from pyvisa.util import from_binary_block

        size = struct.calcsize(datatype)
        if len(data) % size:
            raise TransportError(f"{self._where()}: reply to {excerpt(command)} is a block of {len(data)} bytes, not a "
                                 f"whole number of {size}-byte values ({datatype!r}); check that the command returns "
                                 "this data type and that the resource is this instrument")
        return np.asarray(from_binary_block(data, 0, len(data), datatype, big_endian, container=np.array))

    def _record(self, direction: str, data: bytes) -> None:
        if self._log is not None:
            self._log.record(self._where(), direction, data)

    @contextlib.contextmanager
    def _translate(self, command: str) -> Iterator[None]:
        """Turn a library's exception into the project's, naming the resource and the command."""
        try:
            yield
        except TransportError:
            raise
        except Exception as error:
            where = self._where()
            if isinstance(error, UnicodeEncodeError):  # raised before anything is sent
                raise TransportError(
                    f"{where}: {excerpt(command)} holds {error.object[error.start:error.end]!r}, which is not ASCII, "
                    "the only text an instrument takes; nothing was sent: write the command in ASCII") from None
            if isinstance(error, _NotTaken):
                self.out_of_step = True  # a part may have gone out, and a reply to it may still come
                raise TransportTimeout(f"{where}: {excerpt(command)} could not be sent within {self.timeout_s:g} s; "
                                       f"{self._not_taken_advice(error.size)}") from error
            kind = self._classify(error)
            if kind == "closed" or isinstance(error, ConnectionError):  # reset, or written to after the close
                self.link_lost = True
            if kind == "closed":
                raise TransportError(
                    f"{where}: the instrument closed the connection during {excerpt(command)}; check that it was not "
                    "restarted and that no other program took it over, then connect again") from error
            if kind == "timeout":
                self.out_of_step = True
                if isinstance(error, _Unterminated) and error.received:  # an answer, in another line ending?
                    raise TransportTimeout(
                        f"{where}: the reply to {excerpt(command)} did not end with the read termination "
                        f"{self.read_termination!r} within {self.timeout_s:g} s (it began "
                        f"{excerpt(error.received.decode('ascii', 'replace'))}); check that read_termination is the "
                        "instrument's line ending and that timeout_s allows a reply this long") from error
                raise TransportTimeout(
                    f"{where}: no reply within {self.timeout_s:g} s to {excerpt(command)}; "
                    f"{self._no_reply_advice()}") from error
            reason = _library_reason(error)
            if kind == "missing":
                raise TransportError(
                    f"{where}: a library this resource needs is missing or cannot be loaded ({reason}); install it "
                    "into hil's environment or correct visa_library (pyvisa-py, the default, needs nothing more for "
                    "LAN and serial resources)") from error
            raise TransportError(
                f"{where}: connection failed during {excerpt(command)} ({reason}); "
                "check the cable or network and the instrument's power, then connect again") from error
        except BaseException:  # Ctrl-C or a signal mid-exchange: a reply may still come and answer the next query
            self.out_of_step = True
            raise

    def _no_reply_advice(self) -> str:
        """What to check where no reply came within the timeout: the timeout itself where it is shorter than an
        instrument takes to answer even a simple query over its link (a millisecond timeout, written for seconds)."""
        check = "check that the instrument is on, connected and not busy"
        if self.timeout_s < SHORT_TIMEOUT_S:
            return (f"timeout_s ({self.timeout_s:g} s) is shorter than an instrument takes to answer: give it 1 s or "
                    f"more (it is in seconds), then {check}")
        return check

    def _not_taken_advice(self, size: int) -> str:
        """Why a write of ``size`` bytes was not taken within the timeout, and what to do."""
        if self.baudrate is None:
            return "the instrument is not reading: check that it is on, connected and not busy"
        line_s = size * 10 / self.baudrate  # a start bit, 8 data bits and a stop bit per byte
        if line_s > self.timeout_s:
            return (f"its {size} bytes take {line_s:.3g} s at {self.baudrate} bit/s: give timeout_s more than that, "
                    "or the line a higher baudrate (the instrument's too)")
        return ("nothing is reading the line (the instrument, or the adapter or server behind the port): check that "
                "the instrument is on, that the cable is in, and that a USB adapter still shows")

    @abstractmethod
    def _classify(self, error: Exception) -> str:
        """Return ``"timeout"`` for a library's timeout exception, ``"closed"`` where the peer is known to have
        closed the connection, ``"missing"`` where the library lacks an optional part for this kind of resource,
        anything else for other failures."""

    @abstractmethod
    def _apply_timeout(self) -> None:
        """Give the open connection the present ``timeout_s``."""

    @abstractmethod
    def _open_raw(self) -> None: ...

    @abstractmethod
    def _close_raw(self) -> None: ...

    @abstractmethod
    def _write_raw(self, data: bytes) -> None: ...

    @abstractmethod
    def _read_raw(self) -> bytes: ...

    @abstractmethod
    def _write_binary_raw(self, command: str, values: np.ndarray, datatype: str, big_endian: bool) -> None: ...

    @abstractmethod
    def _query_binary_raw(self, command: str) -> bytes:
        """Send ``command`` and read its definite-length block reply whole: the block's data bytes."""


class VisaTransport(Transport):
    """A pyvisa resource: ``TCPIP::host::port::SOCKET``, ``TCPIP::host::INSTR``, ``ASRL...``, ``USB...``, ``GPIB...``.

    ``backend`` is pyvisa's library spec: ``@py`` (pyvisa-py) by default; ``@ivi`` or a library's path for the
    system's VISA; ``""`` for the system's VISA where one is found, else pyvisa-py. pyvisa keeps one ResourceManager
    per backend; this transport closes only its own resource, never the manager, so closing one instrument never
    closes another. ``baudrate`` (bit/s) is set on an ``ASRL`` resource once open
    (default: the VISA library's, 9600 for most); any other resource has no serial line and refuses it.
    """

    def __init__(self, resource: str, *, backend: str = "@py", baudrate: int | None = None, **options: Any):
        from pyvisa import rname

        resource = _visa_spelling(resource)
        try:
            parsed = rname.parse_resource_name(resource)
            interface = parsed.interface_type
        except rname.InvalidResourceName as error:
            if backend == "@py":  # pyvisa-py takes resource names only; another VISA may also take an alias
                raise ConfigError(f"{resource!r} is not a VISA resource ({error}); write e.g. "
                                  "TCPIP::host::5025::SOCKET, TCPIP::host::INSTR, USB0::…::INSTR or GPIB0::24::INSTR, "
                                  "or a serial device path", field="resource") from None
            interface = None
        device = getattr(parsed, "lan_device_name", "") if interface == "TCPIP" else ""
        if device.isdigit():  # a port written where VXI-11's device name goes: pyvisa-py would call port 111
            host = f"{resource.split('::')[0]}::{parsed.host_address}"
            raise ConfigError(f"{resource!r} names a VXI-11 instrument whose LAN device name is {device!r}, not port "
                              f"{device}; for the instrument's socket on port {device} write "
                              f"{host}::{device}::SOCKET (or {host}::INSTR for VXI-11)", field="resource")
        if baudrate is not None and interface is None:  # the VISA library's alias may well name a serial port
            raise ConfigError(f"baudrate is a serial line's speed, and {resource} is a VISA alias, which may or may "
                              "not name one; give the resource itself, its ASRL name (ASRL3::INSTR, "
                              "ASRL/dev/ttyUSB0::INSTR) or device path (/dev/ttyUSB0, COM3), to set baudrate",
                              field="baudrate")
        if baudrate is not None and interface != "ASRL":
            raise ConfigError(f"baudrate is a serial line's speed, and {resource} is a VISA {interface} resource, "
                              "which has no serial line; leave baudrate out (a serial instrument is named by its ASRL "
                              "resource, ASRL/dev/ttyUSB0::INSTR, or its device path, /dev/ttyUSB0 or COM3)",
                              field="baudrate")
        if backend != "@py":  # pyvisa-py is hil's own; another VISA library is the system's, and may not be there
            _load_visa_library(backend)
        super().__init__(resource, **options)
        self.backend = backend
        self.baudrate = baudrate
        self._inst: Any = None
        self._socket: socket.socket | None = None  # a pyvisa-py SOCKET connection's own socket
        self._session: Any = None  # pyvisa-py's session of the resource, read directly (`_read_raw`)

    def _classify(self, error: Exception) -> str:
        import pyvisa

        timeout = pyvisa.constants.StatusCode.error_timeout
        if isinstance(error, _Unterminated) or (isinstance(error, pyvisa.errors.VisaIOError)
                                                and error.error_code == timeout):
            return "closed" if self._peer_closed() else "timeout"
        if str(error) == f"could not connect: {timeout!s}":  # pyvisa-py's SOCKET open that timed out
            return "timeout"
        if isinstance(error, ValueError) and str(error).startswith("Please install"):
            # pyvisa-py without PyUSB, linux-gpib, PyVICP (a VISA library that cannot be loaded is refused as the
            # transport is made: `_load_visa_library`)
            return "missing"
        return "error"

    def _peer_closed(self) -> bool:
        """Whether the instrument has closed a SOCKET connection (pyvisa-py reports that as a timeout): the socket
        then reads as at its end, or was reset."""
        sock = self._socket
        if sock is None:
            return False
        try:
            return _peek(sock) == b""
        except BlockingIOError:
            return False  # open, with nothing to read
        except OSError:
            return True

    def _read_ahead(self) -> bool:
        """Whether pyvisa-py holds bytes it has taken from the socket and not yet handed on (its SOCKET session reads
        past a line's end)."""
        return bool(getattr(self._session, "_pending_buffer", None))

    def _unread_raw(self) -> bool:
        if self._read_ahead():
            return True
        sock = self._socket
        if sock is None:
            return False
        try:
            return _peek(sock) != b""
        except OSError:  # nothing to read (BlockingIOError), or a link a later read finds lost
            return False

    def _open_raw(self) -> None:
        import pyvisa

        manager = pyvisa.ResourceManager(self.backend)
        self._inst = manager.open_resource(  # pyvisa-py waits 10 s to connect unless given an open_timeout
            self.resource, open_timeout=round(self.timeout_s * 1000), timeout=round(self.timeout_s * 1000),
            read_termination=self.read_termination, write_termination=self.write_termination)
        if isinstance(self._inst, pyvisa.resources.SerialInstrument):
            self._set_line_speed()
        session = getattr(manager.visalib, "sessions", {}).get(self._inst.session)
        self._session = session if callable(getattr(session, "read", None)) else None
        sock = getattr(session, "interface", None)
        if isinstance(sock, socket.socket):
            self._prepare_socket(sock)
            self._socket = sock

    def _set_line_speed(self) -> None:
        """Give a serial (ASRL) resource the ``baudrate`` asked for, or learn the library's, which the advice for a
        write not taken in time needs."""
        try:
            if self.baudrate is None:
                self.baudrate = int(self._inst.baud_rate)
            else:
                self._inst.baud_rate = self.baudrate
        except BaseException:
            self._close_raw()
            raise

    def _fresh(self) -> bool:
        return self._socket is not None

    def _prepare_socket(self, sock: socket.socket) -> None:
        """Check and tune a pyvisa-py SOCKET connection.

        pyvisa-py connects without blocking and reports success even when the connection was refused, so the
        socket's pending error is checked here, at open, rather than at the first command. Nagle's algorithm
        is turned off: with it, a write followed by a query waits ~40 ms for the instrument's delayed ACK
        (pyvisa-py 0.8 cannot set VI_ATTR_TCPIP_NODELAY itself).
        """
        pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if pending:
            self._close_raw()
            raise OSError(pending, os.strerror(pending))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _apply_timeout(self) -> None:
        self._inst.timeout = round(self.timeout_s * 1000)

    def _close_raw(self) -> None:
        inst, self._inst, self._socket, self._session = self._inst, None, None, None
        if inst is not None:
            inst.close()

    @contextlib.contextmanager
    def _sending(self, size: int) -> Iterator[None]:
        """A timeout while sending ``size`` bytes is the instrument not taking them (`_NotTaken`), not a missing
        reply; pyvisa reports both alike."""
        from pyvisa.constants import StatusCode
        from pyvisa.errors import VisaIOError

        try:
            yield
        except VisaIOError as error:
            if error.error_code == StatusCode.error_timeout and not self._peer_closed():
                raise _NotTaken(size) from error
            raise

    def _write_raw(self, data: bytes) -> None:
        with self._sending(len(data)):
            self._inst.write_raw(data)

    def _read_raw(self, deadline: float | None = None) -> bytes:
        """One reply, in chunks as pyvisa's ``read_raw`` reads it, but complete within the timeout (or by
        ``deadline``, a `time.perf_counter` instant, where a block's lines share one) and at most
        `MAX_REPLY_BYTES` long, so that an instrument flooding bytes without a terminator cannot fill the memory
        nor one trickling them hang the reader. pyvisa-py waits for a whole chunk as long as bytes keep coming (its
        timeout counts only silence), so a chunk must not be larger than the reply's pace fills before the deadline:
        chunks start at a byte, grow fourfold after one that came within a quarter of the time left, and shrink
        fourfold after one that did not. pyvisa-py's session is read directly where there is one: pyvisa drops the
        bytes of a read that times out, which tell a reply in another line ending from silence."""
        from pyvisa.constants import StatusCode
        from pyvisa.errors import VisaIOError

        more = StatusCode.success_max_count_read
        deadline = time.perf_counter() + self.timeout_s if deadline is None else deadline
        reply, count = bytearray(), 1
        with self._inst.ignore_warning(StatusCode.success_device_not_present, more):
            while True:
                started = time.perf_counter()
                if self._session is None:
                    chunk, status = self._inst.visalib.read(self._inst.session, count)
                else:
                    self._await_bytes(reply, deadline)
                    chunk, status = self._session.read(count)
                    if status == StatusCode.error_timeout:
                        raise _Unterminated(bytes(reply + chunk))
                    if status < 0:
                        raise VisaIOError(status)
                reply += chunk
                if status != more:
                    return bytes(reply)
                now = time.perf_counter()
                count = min(4 * count, self._inst.chunk_size) if 4 * (now - started) < deadline - now \
                    else max(1, count // 4)
                if len(reply) > MAX_REPLY_BYTES:
                    self.out_of_step = True  # the rest is still coming and would answer the next query
                    raise TransportError(f"{self._where()}: reply to {excerpt(self.last_command or '')} "
                                         f"is longer than {MAX_REPLY_BYTES} bytes without its terminator (it begins "
                                         f"{excerpt(reply[:60].decode('ascii', 'replace'))}); check the instrument")
                if now > deadline:
                    raise _Unterminated(bytes(reply))

    def _await_bytes(self, reply: bytearray, deadline: float) -> None:
        """On a SOCKET connection with nothing read ahead, wait until the instrument's next bytes come (or the socket
        closes) by ``deadline`` (a `time.perf_counter` instant); `_Unterminated` with the ``reply`` so far where none
        came, or where the instrument closed the connection: pyvisa-py reads a closed socket as silence, so a dropped
        connection was reported only once the whole timeout had passed."""
        sock = self._socket
        if sock is None or self._read_ahead():
            return
        if not select.select([sock], [], [], max(0.0, deadline - time.perf_counter()))[0] or self._peer_closed():
            raise _Unterminated(bytes(reply))

    def _write_binary_raw(self, command: str, values: np.ndarray, datatype: str, big_endian: bool) -> None:
        if self._log is not None:
            self._record(">", command.encode() + definite_block(values, datatype, big_endian))
        size = values.size * struct.calcsize(f"<{datatype}")  # the block's values, as sent (values may be wider)
        with self._sending(len(command) + len(f"#{len(str(size))}{size}") + size + len(self.write_termination)):
            self._inst.write_binary_values(command, values, datatype=datatype, is_big_endian=big_endian)

    def _query_binary_raw(self, command: str) -> bytes:
        """Read line by line (`_read_raw`), as the block's data may hold the termination: all within the timeout."""
        data = (command + self.write_termination).encode("ascii")
        self._record(">", data)
        self._write_raw(data)
        deadline = time.perf_counter() + self.timeout_s
        reply = self._read_raw(deadline)
        offset, count = self._block_header(command, reply)
        while len(reply) < offset + count + len(self.read_termination):
            if time.perf_counter() > deadline:
                raise _Unterminated(reply)
            try:
                reply += self._read_raw(deadline)
            except _Unterminated as error:  # said with the lines before it, as the reply began
                raise _Unterminated(reply + error.received) from None
        self._record("<", reply)
        return self._block_end(command, reply[offset:offset + count], reply[offset + count:])


class SerialTransport(Transport):
    """A pyserial port: a device path (``/dev/ttyUSB0``, a pty) or a URL (``socket://host:port``, ``loop://``).

    Binary blocks use pyvisa's IEEE 488.2 helpers, so both transports speak the same block format.
    """

    def __init__(self, resource: str, *, baudrate: int = 9600, **options: Any):
        _check_serial_url(resource)
        super().__init__(resource, **options)
        self.baudrate = baudrate
        self._port: Any = None
        #: Bytes read past the end of a reply (a device that sent two at once): the start of the next read.
        self._unread = b""

    def _classify(self, error: Exception) -> str:
        return "timeout" if isinstance(error, TimeoutError) else "error"

    def _claim_key(self) -> str | None:
        return None if self.resource.startswith("loop://") else super()._claim_key()

    def _open_raw(self) -> None:
        import serial

        self._port = serial.serial_for_url(self.resource, baudrate=self.baudrate, timeout=self.timeout_s,
                                           write_timeout=self.timeout_s)

    def _apply_timeout(self) -> None:
        self._port.timeout = self._port.write_timeout = self.timeout_s

    def _unread_raw(self) -> bool:
        try:
            return bool(self._unread) or self._port.in_waiting > 0
        except (OSError, ValueError):  # a port gone: a later read says so
            return bool(self._unread)

    def _close_raw(self) -> None:
        port, self._port, self._unread = self._port, None, b""
        if port is not None:
            port.close()

    def _write_raw(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialTimeoutException as error:
            raise _NotTaken(len(data)) from error

    def _read_exact(self, count: int, deadline: float | None = None) -> bytes:
        """``count`` bytes, within the timeout (or by ``deadline``, a `time.perf_counter` instant, where the parts of a
        block share one), as the port delivers them."""
        deadline = time.perf_counter() + self.timeout_s if deadline is None else deadline
        data, self._unread = bytearray(self._unread[:count]), self._unread[count:]
        while len(data) < count:
            need = count - len(data)
            chunk = self._port.read(max(1, min(need, self._port.in_waiting))) if time.perf_counter() < deadline else b""
            if not chunk:  # the timeout passed (the read waits up to it for a first byte)
                raise TimeoutError(f"got {len(data)} of {count} bytes")
            data += chunk
        return bytes(data)

    def _read_raw(self, deadline: float | None = None) -> bytes:
        """Up to and including the read termination, within the timeout (or by ``deadline``, as `_read_exact`).
        Whatever the port holds is read at once (pyserial's ``read_until`` reads a byte per call: 0.1 MB/s, where a
        USB virtual COM port delivers tens of MB/s); bytes past the termination are kept for the next read."""
        terminator = self.read_termination.encode("ascii")
        data, searched = bytearray(self._unread), 0
        deadline = time.perf_counter() + self.timeout_s if deadline is None else deadline
        while (end := data.find(terminator, searched)) < 0:
            chunk = self._port.read(max(1, self._port.in_waiting)) if time.perf_counter() < deadline else b""
            if not chunk:  # the timeout passed (the read waits up to it for a first byte)
                self._unread = b""
                raise _Unterminated(bytes(data))
            searched = max(0, len(data) - len(terminator) + 1)
            data += chunk
        end += len(terminator)
        self._unread = bytes(data[end:])
        return bytes(data[:end])

    def _write_binary_raw(self, command: str, values: np.ndarray, datatype: str, big_endian: bool) -> None:
        data = command.encode("ascii") + definite_block(values, datatype, big_endian) \
            + self.write_termination.encode("ascii")
        self._record(">", data)
        self._write_raw(data)

    def _query_binary_raw(self, command: str) -> bytes:
        data = (command + self.write_termination).encode("ascii")
        self._record(">", data)
        self._write_raw(data)
        deadline = time.perf_counter() + self.timeout_s  # for the whole block, read in parts
        head = self._read_exact(2, deadline)
        head += self._read_exact(self._block_width(command, head), deadline)
        offset, count = self._block_header(command, head)
        block = head + self._read_exact(count, deadline)
        rest = self._read_raw(deadline)  # up to the termination, with a "\r" before it where lines end with "\r\n"
        self._record("<", block + rest)
        return self._block_end(command, block[offset:], rest)


#: VISA's resource classes, which end a resource name: VISA takes them in any case, pyvisa's parser in upper case only
_RESOURCE_CLASSES = ("INSTR", "SOCKET", "INTFC", "BACKPLANE", "RAW", "SERVANT")


def _load_visa_library(backend: str) -> None:
    """Load the VISA library ``backend`` (pyvisa keeps it for the resources opened later), which touches no
    instrument: one that cannot be loaded is a `ConfigError` at ``visa_library`` as the lab is built (`hil check`
    says it), not only once its instruments connect."""
    import pyvisa

    try:
        pyvisa.ResourceManager(backend)
    except (OSError, ValueError) as error:  # a path (LibraryError), @ivi with no system VISA, an unknown @wrapper
        raise ConfigError(f"VISA library {backend!r} cannot be loaded ({_library_reason(error).rstrip(':')}); install "
                          "that VISA library, or correct visa_library (leave it out for pyvisa-py, which needs "
                          "nothing more for LAN and serial resources)", field="visa_library") from None


def _library_reason(error: Exception) -> str:
    """What a library said, on one line, an OS error as Python writes it (``[Errno 5] Input/output error``) where
    termios or pyserial wrote the pair (a port whose device has gone)."""
    return _ERRNO_PAIR.sub(r"[Errno \1] \2", " ".join(str(error).split()))


def _visa_spelling(resource: str) -> str:
    """``resource`` with its resource class in upper case (``TCPIP::host::5025::socket`` is a socket resource for
    VISA, which reads names in any case, but not for pyvisa, which read it as a VXI-11 device named ``5025`` or
    refused it)."""
    head, separator, last = resource.rpartition("::")
    return f"{head}::{last.upper()}" if separator and last.upper() in _RESOURCE_CLASSES else resource


def _peek(sock: socket.socket) -> bytes:
    """The next byte ``sock`` holds, looked at without taking it and without waiting: `BlockingIOError` where none
    has come, b"" where the peer closed the connection. Windows has no ``MSG_DONTWAIT``: there the socket is made
    non-blocking for the look."""
    if hasattr(socket, "MSG_DONTWAIT"):
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    finally:
        sock.settimeout(timeout)


def instrument_key(resource: str) -> str:
    """One name for each instrument, however its resource is spelt: a serial port by its device's real path (a
    device path, a link to it, or its ASRL resource), a VISA resource in pyvisa's canonical form with the host in
    lower case (``tcpip::Bench-SMU::5025::SOCKET`` is ``TCPIP0::bench-smu::5025::SOCKET``) and a USB instrument's
    vendor and model numbers in upper-case hexadecimal (1510 and 0x05e6 are 0x05E6); anything else as
    written. On Windows, ``ASRL3::INSTR`` is ``COM3``, as VISA opens it there. Two names of one host (an address and a
    host name) remain two."""
    from pyvisa import rname

    if resource.startswith("/"):
        return _serial_device(resource)
    if _pyserial_port(resource):
        port = COM_PORT.fullmatch(resource)
        return port[1].upper() if port else resource
    try:
        parsed = rname.parse_resource_name(_visa_spelling(resource))
    except rname.InvalidResourceName:
        return resource
    if parsed.interface_type == "ASRL" and str(getattr(parsed, "board", "")).startswith("/"):
        return _serial_device(parsed.board)
    if parsed.interface_type == "ASRL" and sys.platform == "win32" and str(getattr(parsed, "board", "")).isdigit():
        return f"COM{int(parsed.board)}"  # the name pyserial opens the port by
    if hasattr(parsed, "host_address"):
        parsed.host_address = parsed.host_address.lower()
    for number in ("manufacturer_id", "model_code"):  # a USB instrument's 0x05E6, 0x05e6 and 1510 are one
        with contextlib.suppress(AttributeError, ValueError):
            setattr(parsed, number, f"0x{int(getattr(parsed, number), 0):04X}")
    return str(parsed)


def _serial_device(path: str) -> str:
    """`instrument_key` of the serial device at ``path``: its real path; on macOS, a port's dial-in device
    ``/dev/tty.X`` is the port of its call-out device ``/dev/cu.X``."""
    real = os.path.realpath(path)
    if sys.platform == "darwin" and real.startswith("/dev/tty."):
        real = "/dev/cu." + real.removeprefix("/dev/tty.")
    return "serial:" + real


#: A Windows serial port, as pyserial opens it: ``COM3``, or ``\\.\COM12`` (its device name); group 1 is ``COMn``.
COM_PORT = re.compile(r"(?:\\\\\.\\)?(COM\d+)", re.IGNORECASE)


def _check_serial_url(resource: str) -> None:
    """Refuse (`ConfigError` at ``resource``) a URL that pyserial cannot open whatever the line: a protocol it has no
    handler for, or a ``socket://`` or ``rfc2217://`` URL without a host and a port 0..65535. pyserial parses a URL
    only as it opens it, and then said ``'debug|info|warning|error'`` (its own message failing) for a bad port, after
    `hil check` had passed the lab."""
    if "://" not in resource:
        return
    import importlib.util
    from urllib.parse import urlsplit

    import serial

    protocol = resource.partition("://")[0].lower()
    if not any(importlib.util.find_spec(f"{package}.protocol_{protocol}") for package in
               serial.protocol_handler_packages if protocol.isidentifier()):
        raise ConfigError(f"{resource!r}: pyserial opens no {protocol}:// URL; write socket://host:port, "
                          "rfc2217://host:port, loop:// or a serial device path", field="resource")
    if protocol in ("socket", "rfc2217"):
        url = urlsplit(resource)
        try:
            port = url.port
        except ValueError:  # not a number, or beyond 65535
            port = None
        if not url.hostname or port is None:
            raise ConfigError(f"{resource!r}: a {protocol}:// URL names a host and a port 0..65535: write "
                              f"{protocol}://host:port", field="resource")


def _pyserial_port(resource: str) -> bool:
    """Whether a resource string is one that pyserial opens: a device path, a ``COM`` port or a URL (not a VISA alias
    that begins with com, such as ``Compressor``, given in NI MAX)."""
    return resource.startswith("/") or "://" in resource or COM_PORT.fullmatch(resource) is not None


def has_serial_line(resource: str) -> bool:
    """Whether a resource string names a serial line, whose speed (``baudrate``) its transport sets: a port that
    pyserial opens, or a VISA ``ASRL`` resource."""
    from pyvisa import rname

    if _pyserial_port(resource):
        return True
    try:
        return rname.parse_resource_name(_visa_spelling(resource)).interface_type == "ASRL"
    except rname.InvalidResourceName:
        return False


def transport_class(resource: str, visa_library: str = "@py") -> type[Transport]:
    """The transport for a resource string: a pyserial URL or device path, otherwise a VISA resource."""
    if not _pyserial_port(resource):
        return VisaTransport
    if visa_library != "@py":
        raise ConfigError(f"{resource!r} is a serial port, which pyserial opens: visa_library applies only to VISA "
                          "resources; leave it out", field="visa_library")
    return SerialTransport


def open_transport(resource: str, *, visa_library: str = "@py", **options: Any) -> Transport:
    """A transport for a resource string (`transport_class`), which the instrument opens at connect; a VISA
    resource goes through ``visa_library`` (pyvisa's library spec, see `VisaTransport`)."""
    if transport_class(resource, visa_library) is VisaTransport:
        return VisaTransport(resource, backend=visa_library, **options)
    return SerialTransport(resource, **options)
