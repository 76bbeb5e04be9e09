"""What Windows does differently from Linux, simulated where hil meets the system, for tests that run on Linux:
its file locks (``msvcrt.locking``: byte ranges, exclusive only, held per handle, where Windows has no ``fcntl``)
and its ``os.replace``, which refuses a file held open. On Windows itself the tests take its own."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import sys
import types

import pytest

try:
    import fcntl
except ImportError:  # Windows: its own msvcrt
    fcntl = None  # type: ignore[assignment]

#: Whether this system's locks can stand for Windows' (Linux's open-file-description locks, which macOS lacks).
SIMULATED_LOCKS = fcntl is not None and hasattr(fcntl, "F_OFD_SETLK")

#: What Python's os module lacks on Windows, of what hil's locks might use
NOT_ON_WINDOWS = ("pread", "pwrite", "fchmod")
#: msvcrt's locking modes, as Windows numbers them
LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = range(5)


#: A duplicate of each handle holding a lock, by the handle, its file (device, inode) and the lock's start: Windows
#: drops the locks of a file closed without letting them go only when the system gets to it ("depends upon available
#: system resources"), which nothing can wait for; here, the duplicate keeps them until let go (`locking`).
_HOLDING: dict[tuple[int, int, int, int], int] = {}


def locking(fd: int, mode: int, nbytes: int) -> None:
    """``msvcrt.locking``: lock (or unlock) ``nbytes`` from ``fd``'s position; a byte another handle has locked, even
    one of this process, is a `PermissionError` (EACCES), as Windows answers. Linux's open-file-description locks
    hold per handle as Windows' do (one open to read only takes a read lock, all Linux lets it take, which the other
    handles' locks refuse likewise); a lock whose handle is closed before it is let go stays (`_HOLDING`)."""
    start = os.lseek(fd, 0, os.SEEK_CUR)
    writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    kind = fcntl.F_UNLCK if mode == LK_UNLCK else fcntl.F_WRLCK if writable else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, start, nbytes, 0))
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise PermissionError(errno.EACCES, "Permission denied") from None
        raise
    held = (fd, os.fstat(fd).st_dev, os.fstat(fd).st_ino, start)
    if kind == fcntl.F_UNLCK:
        with contextlib.suppress(KeyError):
            os.close(_HOLDING.pop(held))
    elif held not in _HOLDING:
        _HOLDING[held] = os.dup(fd)


def msvcrt() -> types.ModuleType:
    """A module standing for Windows' ``msvcrt`` (its file locks)."""
    module = types.ModuleType("msvcrt")
    module.locking = locking  # type: ignore[attr-defined]
    for name, value in zip(("LK_UNLCK", "LK_LOCK", "LK_NBLCK", "LK_RLCK", "LK_NBRLCK"), range(5), strict=True):
        setattr(module, name, value)
    return module


def as_on_windows() -> None:
    """From now on, in this process, hil's file locks as on Windows (`windows_locks`), for a process started to hold
    a run or an instrument as hil there does, before it imports hil. The standard modules that take msvcrt's presence
    for Windows are imported first, as Linux's. Nothing on Windows itself."""
    if fcntl is None:
        return
    import getpass  # noqa: F401
    import multiprocessing.spawn  # noqa: F401
    import subprocess  # noqa: F401

    sys.modules["fcntl"] = None  # type: ignore[assignment] - an import of it fails, as on Windows
    sys.modules["msvcrt"] = msvcrt()
    for name in NOT_ON_WINDOWS:
        delattr(os, name)


@pytest.fixture
def windows_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """hil's file locks as on Windows: no ``fcntl``, msvcrt's byte-range locks, no ``os.pread``, ``os.pwrite`` nor
    ``os.fchmod`` (on Windows, its own)."""
    from hil import filelock

    if not filelock.shares():
        return
    if not SIMULATED_LOCKS:
        pytest.skip("needs Linux's open-file-description locks to stand for Windows' locks")
    monkeypatch.setattr(filelock, "fcntl", None)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # an import of it fails, as on Windows
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt())
    for name in NOT_ON_WINDOWS:
        monkeypatch.delattr(os, name)


def open_here(path: str | os.PathLike[str]) -> bool:
    """Whether a file descriptor of this process has ``path`` open (read from /proc)."""
    real = os.path.realpath(path)
    return any(os.path.realpath(f"/proc/self/fd/{fd}") == real for fd in os.listdir("/proc/self/fd"))


def replace_refusing_open_files(replace):  # type: ignore[no-untyped-def]
    """``os.replace`` as Windows does it: a file open (through Python's open, which does not share its deletion)
    can be neither renamed nor replaced, a `PermissionError` (WinError 5, "Access is denied")."""

    def refusing(source, destination, **kwargs):  # type: ignore[no-untyped-def]
        for path in (source, destination):
            if os.path.exists(path) and open_here(path):
                raise PermissionError(errno.EACCES, "Access is denied", os.fspath(path))
        return replace(source, destination, **kwargs)

    return refusing
