"""Files that several processes and users of a machine share. Locks on whole files, which keep a run folder or an
instrument to one process: held until unlocked or the file is closed, and dropped by the system when the process ends,
however it ends. ``flock`` where the system has it (Linux, macOS); on Windows, which has no ``fcntl``, msvcrt's lock on
one byte of the file, at `WINDOWS_LOCK_OFFSET`. And the access of what hil makes in a folder that its group shares
(`share_with_group`, `make_shared_folders`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def share_with_group(made: int | Path, folder: Path) -> None:
    """Give a file (open as the descriptor ``made``) or a folder (the path ``made``) just made in ``folder`` the access
    ``folder`` gives its group, where that is write access and ``made`` is of that group too (a lab's shared runs
    folder: ``chmod g+w``, setgid or of its people's own group): read and write, and search for a folder. Made under
    the umask most accounts have (022), a run there was its user's alone to write: a colleague of the group could
    neither resume it nor write its report; and a traffic log that the lab's file names was refused to every run but
    its first user's. Nothing elsewhere: not for a file of another group than the folder's (a user's own group, in
    /tmp), nor where permissions cannot be set (Windows, FAT)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        shared = os.stat(folder)
        group = stat.S_IMODE(shared.st_mode) & stat.S_IRWXG
        now = os.fstat(made) if isinstance(made, int) else os.stat(made)
        if not group & stat.S_IWGRP or now.st_gid != shared.st_gid:
            return
        if isinstance(made, int):
            os.fchmod(made, stat.S_IMODE(now.st_mode) | (group & ~stat.S_IXGRP))
        else:
            os.chmod(made, stat.S_IMODE(now.st_mode) | group)


def make_shared_folders(folder: Path, made: Callable[[Path], None] = lambda new: None) -> None:
    """Make ``folder`` and its missing parents, the outermost first, each it makes given the access of its parent's
    group (`share_with_group`); ``made(new)`` is called after each (one another process made meanwhile included). A
    file where a folder goes is a `FileExistsError`."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            if not new.is_dir():  # a file of that name
                raise
        else:
            share_with_group(new, new.parent)
        made(new)


def open_shared(path: Path, mode: str, **options: Any) -> Any:
    """``path.open(mode, ...)``, a file it makes given the access of its folder's group (`share_with_group`)."""
    new = not path.exists()
    handle = path.open(mode, **options)
    if new:
        share_with_group(handle.fileno(), path.parent)
    return handle
