"""Locks on whole files, which keep a run folder or an instrument to one process: held until unlocked or the file is
closed, and dropped by the system when the process ends, however it ends. ``flock`` where the system has it (Linux,
macOS); on Windows, which has no ``fcntl``, msvcrt's lock on one byte of the file, at `WINDOWS_LOCK_OFFSET`."""

from __future__ import annotations

import errno
import os

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: Where a file is locked on Windows (bytes from its start): far past what a lock file holds (a pid, a command line),
#: as a Windows lock keeps other processes from reading the bytes it covers.
WINDOWS_LOCK_OFFSET = 2**30


def lock(fd: int, *, shared: bool = False) -> None:
    """Lock the file open as ``fd`` without waiting: `BlockingIOError` where another open file (of this process or
    another) holds it, another `OSError` where its file system takes no locks (an NFS mount without its lock
    service). Windows has no shared lock: ``shared`` is exclusive there. Moves ``fd``'s position on Windows."""
    if fcntl is not None:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return
    import msvcrt

    os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)  # msvcrt locks from the file's position on
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except PermissionError:  # what Windows answers for a byte another open file has locked
        raise BlockingIOError(errno.EAGAIN, "locked by another process") from None


def unlock(fd: int) -> None:
    """Let go of `lock`'s lock on ``fd`` (Windows asks that it be let go before the file is closed)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    import msvcrt

    os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def shares() -> bool:
    """Whether `lock`'s ``shared`` locks are shared (not on Windows)."""
    return fcntl is not None
