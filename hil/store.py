"""The run folder: everything a run leaves, written so that a crash loses nothing already written.

::

    runs/20261128-101500-optical-pat-digits/
      protocol.yaml        the resolved protocol            lab.yaml        the lab file as used
      snapshot.json        instruments, worlds and systems at the start
      events.jsonl         append-only event log: one JSON line per event, flushed as written
      data/*.h5            arrays in HDF5 (collected twin data, the twin's fidelity, the final evaluation), each written
                           whole and atomically
      twin/                the fitted twin (state dict + spec)
      checkpoint.pt        the latest checkpoint (atomically replaced, written in the background, checksummed)
      report/              plots (PNG) and summary.md
      .lock                held by the one process that has the run open: its pid, then ``report`` where it writes
                           the run's report only (``hil report``)

Every file other than the event log is written to a temporary name and renamed into place, so a reader (or a resumed
run) sees either the old or the new version, never half of one. The event log is appended line by line; a last line
torn by a crash is ignored when reading (and moved to ``events.discarded.jsonl`` before an event is appended after
it), and a damaged line before it makes the log unusable to a run (an error naming the line) rather than silently
shortened; a report reads the events around it and names the lines it left out.
On resume the events after the checkpoint (a partial epoch that will be redone) and a torn last line are moved, byte
for byte, to ``events.discarded.jsonl``, so the log has every event exactly once and nothing written is lost. One
process at a time may have a run open: a second (a resume while the run goes on) is refused; a reader (``hil report``
of a run going on, a run reusing its twin) opens it with ``watch``, without the lock, and writes nothing there.
In a folder its group may write (a lab's shared runs folder), what a run makes of that group (a setgid folder's) is
the group's to read and write too, whatever the umask, so that a colleague of the group can resume the run or write
its report; a file replaced keeps the permissions and group it had.

What each file holds (the datasets, the event kinds and their fields, the checkpoint's layout) and how to read it
without hil: the README's "What a run stores".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import h5py
import numpy as np
import torch

from hil.config import YamlDocument
from hil.errors import (
    ConfigError,
    HilError,
    NoLocks,
    RunFileError,
    RunHeld,
    WriteRefused,
    error_reason,
    signals_held,
)
from hil.filelock import lock, make_shared_folders, open_shared, share_with_group, shares, unlock

if TYPE_CHECKING:
    from hil.twin.models import Twin

EVENTS = "events.jsonl"
DISCARDED = "events.discarded.jsonl"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
#: How `RunStore.create` names a run folder: ``<date>-<time>-<name>``.
RUN_FOLDER_NAME = re.compile(r"\d{8}-\d{6}-")
#: A run's report summary, in its folder (written by `hil.report`).
SUMMARY = "report/summary.md"
#: The field of an event (or of snapshot.json) listing where the numbers JSON cannot hold (NaN, ±infinity) are: the
#: file holds each as the string "NaN", "Infinity" or "-Infinity" (strict JSON, which jq and JavaScript read), and
#: the path of keys and indices to it is here; hil's readers turn it back into the float and drop this field.
NON_FINITE = "non_finite"
#: A checkpoint file is this, the SHA-256 of the torch file that follows, then that file.
CHECKPOINT_MAGIC = b"hil checkpoint 1\n"


#: The HDF5 file format of a run's data (HDF5 1.10's: a reader built on HDF5 1.8, as older MATLABs are, cannot open it;
#: h5py, HDFView 3 and any reader on 1.10 or later can): its object headers and its arrays' chunk indexes carry
#: checksums, and each array a Fletcher-32 checksum, so that a damaged byte is an error where it is read, not a wrong
#: number (in the format before, 157 of 200 single flipped bits of a small file read back silently changed) nor a crash
#: of HDF5 (1.8's format has no checksum on a chunk index: four zeroed bytes there ended the process).
HDF5_FORMAT = ("v110", "v110")


#: What each array of a run's data files holds (its axes, dtype and unit), written as the array's ``description``
#: attribute (plain ASCII text), so that the file read without hil (h5py, MATLAB's h5readatt, HDFView) says it.
DESCRIPTIONS = {
    "data/twin_data.h5": {
        "x": "system inputs x, float32, theta group x input x n_in; within the system's x_bounds (root attribute "
             "system_snapshot), in the unit its module docstring in hil/systems/ gives",
        "theta": "physical parameters theta, float32, theta group x n_params; within the system's theta_bounds (root "
                 "attribute system_snapshot), in the unit its module docstring in hil/systems/ gives",
        "y": "system outputs y measured on the device, float32, theta group x input x n_out: the first measurement of "
             "each (x, theta), in the system's output unit (its module docstring in hil/systems/)",
        "y_repeats": "repeated measurements of y, float32, repeat x theta group x input x n_out: the first theta "
                     "groups measured again, theta written anew each time (y_repeats[0] is y[:G_r]); empty without "
                     "repeats",
        "measured_at": "when each theta group was measured, float64, theta group: Unix time (s since 1970-01-01 "
                       "UTC) when its first measurement returned; NaN where unknown (measured before a resume from "
                       "an earlier hil's checkpoint); absent in a copy of another run's (root attribute measured_in)",
    },
    "data/fidelity.h5": {
        "measured": "y measured on the device, float32, held-out theta group x input x n_out: the groups of root "
                    "attribute held_out_groups of twin_data.h5 (their x and theta are there), in that order",
        "predicted": "the twin's prediction of measured, float32, the same shape and order",
        "nmse": "per output, float32, n_out: the twin's mean squared error on the held-out groups over the output's "
                "variance (dimensionless; 1: no better than the output's mean)",
        "noise_floor": "per output, float32, n_out: the variance of repeated measurements over the output's variance "
                       "(dimensionless), the least NMSE a twin can reach; 0 where the twin data hold no repeats "
                       "(unknown, not noiseless)",
    },
    "data/evaluation.h5": {
        "labels": "true class of each test sample, int64 class index (names: root attribute class_names)",
        "device_predictions": "class the network predicted with its physical layers on the device, int64 class "
                              "index per test sample",
        "twin_predictions": "class the network predicted with its physical layers through the twin, int64 class "
                            "index per test sample",
        "confusion": "counts, int64, class x class: row the true class, column the class predicted on the device",
    },
}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An `OSError` while writing ``path`` (a full disk, a permission) as a `WriteRefused` naming it."""
    try:
        yield
    except OSError as error:
        raise WriteRefused(f"{path}: cannot write ({error.strerror or error})", "free disk space or fix the "
                           "folder's permissions: what the run wrote before is kept") from error


#: what fsync of a folder answers on a file system that cannot sync one
_NO_FOLDER_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})

try:  # macOS's sync through the drive's cache
    from fcntl import F_FULLFSYNC
    from fcntl import fcntl as file_control
except ImportError:  # elsewhere fsync writes through it
    F_FULLFSYNC = None


def _sync(fd: int) -> None:
    """Write the file (or folder) open as ``fd`` through to the disk: ``os.fsync``; on macOS, whose fsync leaves it in
    the drive's cache, which a power cut loses, ``F_FULLFSYNC`` (as SQLite does there), or fsync where the file system
    refuses that."""
    if F_FULLFSYNC is not None:
        try:
            file_control(fd, F_FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)


def _sync_folder(folder: Path) -> None:
    """Sync ``folder``'s entries to disk (a file just renamed into it), so that a power cut cannot undo them; skipped
    where a folder cannot be opened (Windows) or its file system cannot sync one (EINVAL, ENOTSUP: some shares)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        _sync(handle)
    except OSError as error:
        if error.errno not in _NO_FOLDER_SYNC:  # a disk error: the rename may not last
            raise
    finally:
        os.close(handle)


def make_folders(folder: Path) -> None:
    """Make ``folder`` and its missing parents, each synced into its parent once made, so that a power cut cannot
    lose a folder that files were then written into; each given the access of its parent's group
    (`make_shared_folders`)."""
    make_shared_folders(folder, lambda new: _sync_folder(new.parent))


#: How many times a rename that Windows refuses is tried, and the wait before the second try (s), doubled each time
#: after (1.3 s in all): an antivirus scanner or the search indexer opens a file just written for an instant, and
#: Windows refuses to rename a file, or over one, that a program holds open.
RENAME_TRIES, RENAME_WAIT_S = 8, 0.01


def _rename(source: Path, destination: Path) -> None:
    """``os.replace``; on Windows, tried again for a while where it is refused (a `PermissionError`: a program holding
    one of the files for an instant), and refused then only if the file is still held."""
    wait = RENAME_WAIT_S
    for _ in range(RENAME_TRIES - 1):
        try:
            os.replace(source, destination)
            return
        except PermissionError:
            if sys.platform != "win32":  # elsewhere: the folder's permissions, which waiting keeps
                raise
        time.sleep(wait)
        wait *= 2
    os.replace(source, destination)


def _access_of(replaced: Path, fd: int) -> None:
    """Give the file open as ``fd`` the permission bits and the group of ``replaced``, the file it is about to replace
    (where there is none, the access of its folder's group: `share_with_group`), as an editor's save does: made anew
    under this user's umask (022), a run's event log that the lab had made writable by its group (``chmod g+w``) was
    this user's alone once a colleague's resume rewound it, and the run's own user could no longer resume it. The group
    is kept only where this user is in it, and nothing on a system without POSIX permissions (Windows)."""
    if os.name != "posix":
        return
    try:
        old = os.stat(replaced)
    except OSError:  # a new file
        share_with_group(fd, replaced.parent)
        return
    with contextlib.suppress(OSError):  # a group this user is not in
        if os.fstat(fd).st_gid != old.st_gid:
            os.fchown(fd, -1, old.st_gid)
    with contextlib.suppress(OSError):  # a file system without permissions (FAT refuses some): the new file's stay
        os.fchmod(fd, stat.S_IMODE(old.st_mode))  # after the group: a change of group may clear the setgid bit


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file, synced, then renamed into place, its folder synced. A
    temporary file that failed (a full disk) is removed, so it does not keep the space the run needs once some is
    freed. The temporary file is made anew (one left there, even a symbolic link, is removed first, not written
    through), with the permission bits and group of the file it replaces (`_access_of`)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with _writing(path):
        make_folders(path.parent)
        try:
            temporary.unlink(missing_ok=True)
            with temporary.open("xb") as handle:
                _access_of(path, handle.fileno())
                handle.write(data)
                handle.flush()
                _sync(handle.fileno())
            _rename(temporary, path)
            _sync_folder(path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise


def save_twin(twin: Twin, folder: Path) -> None:
    """Write a twin's ``twin.json`` and ``twin.pt`` (`hil.twin.models.twin_files`) into ``folder``, each atomically;
    `hil.twin.models.load_twin` reads them back."""
    from hil.twin.models import twin_files

    for name, data in twin_files(twin).items():
        atomic_write(folder / name, data)


def _plain(path: Path) -> None:
    """Refuse a file of a run that is there but is no regular file (`RunFileError`): a symbolic link, through which
    hil would write into the file it names, outside the run (a shared folder's ``.lock`` made a link to a file of
    yours), or a named pipe, which a read waits on for ever."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # missing, or not to be looked at: the open that follows says so
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder: the open that follows says so
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a named pipe" if stat.S_ISFIFO(mode) else \
            "not a regular file"
        raise RunFileError(f"{path}: {what}, not a file a run writes; nothing was changed: remove it, or put the "
                           "run's own file back")


def _keep_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<stem>.discarded<suffix>``, ``<stem>.discarded-2<suffix>``, …"""
    number = 1
    while True:
        aside = path.with_name(f"{path.stem}.discarded{'' if number == 1 else f'-{number}'}{path.suffix}")
        if not aside.exists():
            _rename(path, aside)
            return aside
        number += 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _finite(value: Any, path: list[str | int], found: list[list[str | int]]) -> Any:
    """``value`` (plain, from `_jsonable`) with each non-finite float spelled as a string, its path added to
    ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(path)
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {key: _finite(v, [*path, key], found) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, [*path, index], found) for index, v in enumerate(value)]
    return value


def _strict(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its non-finite numbers spelled as strings and their paths under `NON_FINITE`."""
    found: list[list[str | int]] = []
    strict = _finite(record, [], found)
    if found:
        strict[NON_FINITE] = found
    return strict


def _restore_non_finite(event: dict[str, Any]) -> None:
    """Turn the strings `NON_FINITE` lists back into floats; a list that does not point at such strings is a
    `ValueError`."""
    paths = event.pop(NON_FINITE, [])
    if not isinstance(paths, list):
        raise ValueError(paths)
    for path in paths:
        if not isinstance(path, list) or not path:
            raise ValueError(path)
        holder: Any = event
        for key in path:
            if not ((isinstance(holder, dict) and isinstance(key, str) and key in holder)
                    or (isinstance(holder, list) and type(key) is int and 0 <= key < len(holder))):
                raise ValueError(path)
            parent, holder = holder, holder[key]
        if holder not in ("NaN", "Infinity", "-Infinity"):
            raise ValueError(path)
        parent[path[-1]] = float(holder)


class RunStore:
    """One run folder. Create with `create`, reopen (e.g. to resume or report) with `open`; ``watch``: read it only,
    without its lock, while another process has it open (`RunHeld`): such a store writes nothing; ``reporting``: its
    lock taken to write the run's report only, which `held_by_a_run` tells from a run going on."""

    def __init__(self, path: Path, *, watch: bool = False, reporting: bool = False):
        self.path = path
        #: SHA-256 (hex) of each file `save_arrays` wrote in this session, by relative path.
        self.digests: dict[str, str] = {}
        self._lock = None if watch else _hold(path, reporting)
        self._events: Any = None
        try:  # a damaged log is opened (a report reads around its damage); what needs it whole refuses it
            entries, self._torn, self._damaged = _scan_events(path / EVENTS)
            events = [event for event, _ in entries]
            self.next_seq = 1 + max((event["seq"] for event in events), default=0)
            #: The ``run_finished`` event that ended the log when the folder was opened (a finished run, which a
            #: resume leaves as it is); None for a run that had not finished.
            self.finished_before = events[-1] if events and events[-1]["kind"] == "run_finished" else None
            if not watch:
                with _writing(path / EVENTS):
                    self._events = open_shared(path / EVENTS, "ab", buffering=0)
        except BaseException:
            if self._lock is not None:
                _let_go(self._lock)
            raise
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None

    @classmethod
    def create(cls, parent: str | Path, name: str) -> RunStore:
        """A new run folder ``parent/<date>-<time>-<name>`` (a suffix keeps it unique)."""
        stem = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-') or 'run'}"
        parent = Path(parent)
        try:
            make_folders(parent)
            for suffix in ["", *(f"-{k}" for k in range(2, 1000))]:
                path = parent / f"{stem}{suffix}"
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                share_with_group(path, parent)
                try:
                    _sync_folder(parent)
                    return cls(path)
                except BaseException as error:  # a stop (SIGTERM) or an error before the folder held its log: a
                    shutil.rmtree(path, ignore_errors=True)  # folder that could never be resumed is not left behind
                    if isinstance(error, NoLocks):
                        raise ConfigError(f"cannot create a run folder in {parent} ({error.reason}): its file system "
                                          "takes no locks, by which hil keeps a run to one process; set output.root "
                                          "to a folder on a local disk", field="output.root") from None
                    if isinstance(error, WriteRefused) and isinstance(error.__cause__, OSError):
                        raise error.__cause__ from None  # its lock or log refused: the folder could not be made
                    raise
        except OSError as error:
            why, fix = error.strerror or str(error), "set output.root to a folder you can write to"
            if isinstance(error, FileExistsError):  # a file where a folder goes, not "File exists"
                why = f"{'it' if Path(error.filename) == parent else repr(error.filename)} is a file"
            elif error.errno in (errno.ENOSPC, errno.EDQUOT):
                fix = "free disk space there, or set output.root to a folder on another disk"
            raise ConfigError(f"cannot create a run folder in {parent} ({why}); {fix}", field="output.root") from None
        raise ConfigError(f"cannot create a run folder in {parent} (too many named {stem}); use another output.root "
                          "or output.name", field="output.root")

    @classmethod
    def open(cls, path: str | Path, *, watch: bool = False, reporting: bool = False) -> RunStore:
        """The run folder ``path``, its lock taken (a `RunHeld` if another process has it); ``watch``: read only,
        without the lock; ``reporting``: the lock taken to write the run's report only (`held_by_a_run`)."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such folder; hil runs lists the runs (--root FOLDER)")
        if not (path / EVENTS).exists():
            if path.is_dir() and all(entry.name == LOCK for entry in path.iterdir()):  # what a kill between making
                # a run's folder and opening its log leaves: the folder alone, or with its lock
                if held(path):  # a run making its folder: its log comes next
                    raise _held_by_another(path)
                raise ConfigError(f"{path} is not a run folder (no {EVENTS}): it holds no file of a run, as a run "
                                  "stopped as its folder was made leaves it; nothing ran that a resume could continue: "
                                  "start a new run from the protocol")
            if (path / "protocol.yaml").is_file():  # written after the log was made: the log was lost since
                raise RunFileError(f"{path / EVENTS}: missing (the run folder holds its protocol.yaml, written after "
                                   "it); nothing was changed: restore it from a backup, or start a new run")
            raise ConfigError(f"{path} is not a run folder (no {EVENTS})")
        return cls(path, watch=watch, reporting=reporting)

    @property
    def watching(self) -> bool:
        """Whether this store only reads its folder (opened with ``watch``), another process writing it."""
        return self._lock is None

    def close(self) -> None:
        """Wait for a checkpoint being written, then close the event log."""
        try:
            self.wait_for_checkpoint()
        finally:
            if self._events is not None:
                self._events.close()
            if self._lock is not None:
                _let_go(self._lock)

    def _check_folder(self) -> None:
        """Refuse to write once the run folder was removed, moved or replaced during the run: the log open is then not
        its ``events.jsonl``, and writing a file would make a new folder of that name holding no run (the run went on
        and finished, exit 0, into a folder that resume and hil runs do not know as a run). A store that watches a run
        another process writes refuses every write."""
        if self._events is None:
            raise RunFileError(f"{self.path}: opened to watch a run another process writes; it writes nothing there")
        if self._events.closed:
            return
        try:
            same = os.path.samestat(os.fstat(self._events.fileno()), os.stat(self.path / EVENTS))
        except (FileNotFoundError, NotADirectoryError):
            same = False
        except OSError:  # a folder that cannot be looked into: the write says why
            return
        if not same:
            raise RunFileError(f"{self.path}: the run folder was removed or moved during the run (its {EVENTS} is not "
                               "the log the run writes)", "nothing more is written there: put the folder back and "
                               f"resume with: {resume_command(self.path)}, or start a new run")

    # -- events -------------------------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event (with a sequence number and the wall time), written to the OS at once, whole or not
        at all: a write the disk refuses part-way is cut off again, so no torn line sits before a later event and
        the next event gets the same number."""
        if not isinstance(kind, str):  # a line whose kind is not text is not an event: damage to a later read
            raise TypeError(f"an event's kind is text, not {kind!r}")
        if "seq" in fields or "time" in fields or NON_FINITE in fields:
            raise ValueError(f"an event's seq and time are the store's own (and {NON_FINITE}); name the field "
                             "otherwise")
        record = {"seq": self.next_seq, "time": round(time.time(), 3), "kind": kind, **_jsonable(fields)}
        if self._damaged:  # its next number is unknown: a damaged line may hold it
            self._refuse_damaged(self._damaged)
        self._check_folder()
        if self._torn:
            self._move_torn_aside()
        line = memoryview((json.dumps(_strict(record), allow_nan=False) + "\n").encode("utf-8"))
        with _writing(self.path / EVENTS):
            end = self._events.seek(0, os.SEEK_END)
            try:
                while line:
                    line = line[self._events.write(line):]
                self.next_seq += 1  # taken with the line: a stop (SIGTERM) raised as the block closes gave the
                # next event the same number
            except BaseException:
                with contextlib.suppress(OSError):
                    self._events.truncate(end)
                raise
        return record

    def _move_torn_aside(self) -> None:
        """Move the torn last line the log had when opened, byte for byte, to the discarded log before an event is
        appended (a resumed run failing before its rewind logs one): glued to it, the event would be unreadable, and a
        second one would leave a damaged line before the end."""
        torn = self._torn
        self._set_aside([_whole_line(torn)])
        with _writing(self.path / EVENTS):
            self._events.truncate(self._events.seek(0, os.SEEK_END) - len(torn))
        self._torn = b""

    def _set_aside(self, lines: list[bytes]) -> int:
        """Append ``lines`` to the discarded log, synced; returns its size before them (to take them back). Lines it
        already ends with are not appended again: a move killed (kill -9) before the log lost them left them in both,
        and the next move would keep them aside twice; the size returned is then the size before them, so that taking
        them back leaves them in the log alone."""
        data = b"".join(lines)
        _plain(self.path / DISCARDED)
        with _writing(self.path / DISCARDED), open_shared(self.path / DISCARDED, "a+b", buffering=0) as handle:
            size = handle.seek(0, os.SEEK_END)
            if data and size >= len(data):
                handle.seek(size - len(data))
                if handle.read() == data:
                    return size - len(data)
            try:  # lines the disk takes part of (full) are cut off again: the next move appends them whole, not glued
                rest = memoryview(data)  # to the part, a damaged line and events kept aside twice
                while rest:
                    rest = rest[handle.write(rest):]
                _sync(handle.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    handle.truncate(size)
                raise
        return size

    def events(self) -> list[dict[str, Any]]:
        """Every event in the log; a last line torn by a crash is skipped, a damaged line before it is an error."""
        return [event for event, _ in self._lines()[0]]

    def readable_events(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The events of a log that may be damaged, for a report that says what it left out: those on the lines that
        are events, and the numbers of the damaged lines before the end (a torn last line is skipped, as always)."""
        entries, _, damaged = _scan_events(self.path / EVENTS)
        return [event for event, _ in entries], damaged

    def _lines(self) -> tuple[list[tuple[dict[str, Any], bytes]], bytes]:
        """The log's events with their raw lines, and the raw bytes of a torn last line (b"" if none)."""
        entries, torn, damaged = _scan_events(self.path / EVENTS)
        if damaged:
            self._refuse_damaged(damaged)
        return entries, torn

    def _refuse_damaged(self, damaged: list[int]) -> NoReturn:
        raise RunFileError(f"{self.path / EVENTS}:{damaged[0]}: damaged line (not a JSON event) before the end of "
                           "the log; nothing was changed: repair that line by hand, or start a new run")

    def rewind_events(self, next_seq: int) -> int:
        """Keep events before ``next_seq`` in the log; move later ones and a torn last line, byte for byte, to
        the discarded log. Returns how many lines moved."""
        self._check_folder()  # a store that watches a run another process writes rewinds nothing
        entries, torn = self._lines()
        kept = [line for event, line in entries if event["seq"] < next_seq]
        later = [line for event, line in entries if event["seq"] >= next_seq]
        if torn:
            later.append(_whole_line(torn))
        with signals_held():  # a SIGTERM before the rewrite would leave the events set aside in the log too (set
            # aside again, twice, by the next rewind), and one before the reopening would log into the replaced file
            size = self._set_aside(later) if later else None
            self._events.close()  # Windows refuses to replace a file that a handle holds open
            try:  # the log is opened again as it was where its rewrite fails (a full disk), to log that failure
                atomic_write(self.path / EVENTS, b"".join(kept))
            except BaseException:
                with contextlib.suppress(OSError):
                    self._events = (self.path / EVENTS).open("ab", buffering=0)
                if size is not None:  # taken back: the next rewind moves those events aside again
                    with contextlib.suppress(OSError), (self.path / DISCARDED).open("r+b") as handle:
                        handle.truncate(size)
                raise
            with _writing(self.path / EVENTS):
                self._events = (self.path / EVENTS).open("ab", buffering=0)
            self.next_seq, self._torn, self._damaged = next_seq, b"", []
        return len(later)

    # -- files --------------------------------------------------------------------------------------------------
    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write a file of the run, atomically (its folders made as needed)."""
        self._check_folder()
        self._check_subfolders(relative)
        atomic_write(self.path / relative, data)
        return self.path / relative

    def _check_subfolders(self, relative: str) -> None:
        """Refuse to write a file below a folder of the run that is a symbolic link (a ``report`` linked to a folder
        of yours), which the file would land in, outside the run."""
        for folder in Path(relative).parents:
            if folder != Path(".") and (self.path / folder).is_symlink():
                raise RunFileError(f"{self.path / folder}: a symbolic link, not a folder a run makes; nothing was "
                                   "written through it: remove it, and a run makes its own")

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_json(self, relative: str, value: Mapping[str, Any]) -> Path:
        """Write a mapping as strict JSON, a non-finite number as the event log holds one (`NON_FINITE`)."""
        return self.write_text(relative, json.dumps(_strict(dict(_jsonable(value))), indent=2, allow_nan=False) + "\n")

    def read_json(self, relative: str) -> dict[str, Any]:
        """A mapping `write_json` wrote, its non-finite numbers floats again."""
        value = json.loads((self.path / relative).read_text(encoding="utf-8"))
        _restore_non_finite(value)
        return value

    def save_arrays(self, relative: str, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
                    descriptions: Mapping[str, str] | None = None) -> Path:
        """Write named arrays (and scalar attributes, as JSON text) as one HDF5 file, atomically, each array with its
        entry of ``descriptions`` or else of `DESCRIPTIONS` as its ``description`` attribute. A file there that this
        run has not written (``digests``), i.e. one an attempt wrote after its last checkpoint before it was killed, is
        kept aside as ``<name>.discarded[-n].h5``, not overwritten: on a bench it holds a measurement."""
        self._check_folder()
        if relative not in self.digests and (self.path / relative).is_file():
            _keep_aside(self.path / relative)
        buffer = io.BytesIO()
        described = {**DESCRIPTIONS.get(relative, {}), **(descriptions or {})}
        with h5py.File(buffer, "w", libver=HDF5_FORMAT) as handle:
            for name, array in arrays.items():
                data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
                dataset = handle.create_dataset(name, data=data, compression="gzip" if data.size > 4096 else None,
                                                fletcher32=data.size > 0 and data.ndim > 0)  # a scalar: no chunk
                if name in described:
                    dataset.attrs["description"] = described[name]
            for key, value in (attrs or {}).items():
                handle.attrs[key] = json.dumps(_jsonable(value))
        self._check_folder()  # again: a folder removed while the file was made is not made anew, holding only it
        self._check_subfolders(relative)
        atomic_write(self.path / relative, buffer.getvalue())
        self.digests[relative] = hashlib.sha256(buffer.getvalue()).hexdigest()
        return self.path / relative

    def load_arrays(self, relative: str, fix: str = "restore it from a backup, or start a new run"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The arrays (as tensors) and attributes of an HDF5 file written by `save_arrays`; ``fix``: what to do if
        it is missing or damaged."""
        _plain(self.path / relative)  # a named pipe: HDF5's read would wait on it for ever
        try:
            with open_hdf5(self.path / relative) as handle:
                arrays = {name: _tensor(handle[name][()]) for name in handle}
                attrs = {key: json.loads(value) for key, value in handle.attrs.items()}
        except BlockingIOError:  # HDF5 locks a file it opens: another program has this one open for writing
            raise RunFileError(f"{self.path / relative}: open for writing in another program (HDF5's file lock "
                               "refused reading it); close it there, then try again") from None
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, RecursionError) as error:  # TypeError: a
            # group, strings, an array attribute; RuntimeError: HDF5's own structures damaged (a B-tree, a heap);
            # RecursionError: an attribute nested too deep to read
            reason = "it is a folder" if (self.path / relative).is_dir() else " ".join(str(error).split())
            raise RunFileError(f"{self.path / relative}: HDF5 data unreadable ({reason}); the file is missing or "
                               f"damaged: {fix}") from None
        return arrays, attrs

    def has(self, relative: str) -> bool:
        return (self.path / relative).exists()

    # -- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Replace the checkpoint atomically; it records the event sequence number it belongs to. ``state`` is
        serialised at once (it may change afterwards) and written in the background: the device keeps working while
        the disk writes, and a crash during the write leaves the previous checkpoint in place."""
        self.wait_for_checkpoint()
        self._check_folder()
        buffer = io.BytesIO()
        try:
            torch.save({**state, "next_seq": self.next_seq}, buffer)
        except Exception as error:
            raise HilError(f"{self.path / CHECKPOINT}: writing the checkpoint failed: {error}") from error
        payload = buffer.getvalue()

        def write() -> None:  # hashing and file I/O: the training thread keeps the interpreter meanwhile
            sealed = seal_checkpoint(payload)
            self._check_folder()  # a folder removed meanwhile is not made anew, holding only this checkpoint
            atomic_write(self.path / CHECKPOINT, sealed)

        self._writer = threading.Thread(target=self._guarded, args=(write,), name="checkpoint-writer", daemon=True)
        self._writer.start()

    def _guarded(self, work: Any) -> None:
        try:
            work()
        except BaseException as error:  # reported by wait_for_checkpoint, in the caller's thread
            self._writer_error = error

    def wait_for_checkpoint(self) -> None:
        """Block until the last checkpoint is on disk; raise if writing it failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._writer_error is not None:
            error, self._writer_error = self._writer_error, None
            if isinstance(error, HilError):  # e.g. the disk refused the file: already names it
                raise error
            raise HilError(f"{self.path / CHECKPOINT}: writing the checkpoint failed: {error}") from error

    def checkpoint_refused(self) -> None:
        """Raise where the checkpoint written in the background has failed (the disk refused it), without waiting for
        one still being written: the run stops at its next step or batch, rather than measure on for a whole step or
        epoch that nothing could resume from."""
        if self._writer is not None and not self._writer.is_alive():
            self.wait_for_checkpoint()

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint (tensors and plain values only: loaded with ``weights_only=True``); None if
        there is none."""
        self.wait_for_checkpoint()
        if not self.has(CHECKPOINT):
            return None
        _plain(self.path / CHECKPOINT)  # a named pipe: the read would wait on it for ever
        try:
            data = (self.path / CHECKPOINT).read_bytes()
        except OSError as error:
            reason = error.strerror or str(error)
        else:
            saved, reason = _unseal(data)
            if saved is not None:
                return saved
        raise RunFileError(f"{self.path / CHECKPOINT}: checkpoint unreadable ({reason}); the run cannot be "
                           "resumed from it: restore the file from a backup, or start a new run")


#: What a lock answers on a file system that takes none (an NFS mount without its lock service)
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})


def open_hdf5(path: Path) -> h5py.File:
    """The HDF5 file ``path``, open for reading; without HDF5's file lock where its file system takes none (an NFS
    mount without its lock service), where the read failed as if the file were damaged ("unable to lock file"), in hil
    report of a run there, which hil reads without its lock: a run's files are written whole and renamed into place,
    and need no lock to be read. A file another program has open for writing is still a `BlockingIOError`."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
    return h5py.File(path, "r", locking=False)


def _tensor(data: Any) -> torch.Tensor:
    """A dataset's values as a tensor: one of 0 dimensions too (h5py reads it as a numpy scalar), and one stored
    big-endian (in native byte order, which torch needs)."""
    data = np.asarray(data)
    return torch.from_numpy(data.astype(data.dtype.newbyteorder("="), copy=False))


def seal_checkpoint(payload: bytes) -> bytes:
    """A checkpoint file's bytes for a torch file's: `CHECKPOINT_MAGIC`, the payload's SHA-256, the payload."""
    return CHECKPOINT_MAGIC + hashlib.sha256(payload).digest() + payload


def _unseal(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint in a checkpoint file's bytes; or None, and why not."""
    digest, payload = data[len(CHECKPOINT_MAGIC):len(CHECKPOINT_MAGIC) + 32], data[len(CHECKPOINT_MAGIC) + 32:]
    if not data.startswith(CHECKPOINT_MAGIC):
        return None, "not a checkpoint of hil"
    if hashlib.sha256(payload).digest() != digest:
        return None, "damaged: its checksum does not match"
    try:
        saved = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # a foreign payload fails torch.load in many ways (zip, pickle, index)
        return None, error_reason(error)
    if isinstance(saved, dict) and "next_seq" in saved:
        return saved, ""
    return None, "not a checkpoint of hil"


def file_digests(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    """The SHA-256 (hex) of each named file in ``folder``; "" for one that is missing."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() if (folder / name).is_file() else ""
            for name in names}


def _whole_line(line: bytes) -> bytes:
    """``line`` ending in its newline (a torn last line may have lost it)."""
    return line if line.endswith(b"\n") else line + b"\n"


#: What cmd.exe or PowerShell reads apart from the word where it stands outside double quotes, of what a Windows path
#: may hold (``&``: the next command, ``;``: PowerShell's, ``(``: a subexpression, ...)
_WINDOWS_SHELL_SPECIAL = re.compile(r"[&^(),;=@{}'#]")


def shell_word(text: str) -> str:
    """``text`` as one word of a command to paste into the system's shell: quoted as a POSIX shell reads it; on
    Windows, in double quotes where it holds a space or a character of `_WINDOWS_SHELL_SPECIAL` (``R&D``), as cmd.exe
    and PowerShell both read it (their paths' backslashes are no escapes there, and single quotes are cmd.exe's
    characters of the word)."""
    if sys.platform != "win32":
        return shlex.quote(text)
    word = subprocess.list2cmdline([text])
    if word == text and _WINDOWS_SHELL_SPECIAL.search(text):  # no space, no quote: backslashes before the end doubled
        word = '"' + re.sub(r"(\\+)$", r"\1\1", text) + '"'
    return word


def local_time(seconds: Any) -> str:
    """An event's ``time`` (s since the epoch) as the local date and time; "an unknown time" for a log edited to hold
    something else."""
    try:
        return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def resume_command(path: Path) -> str:
    """The command that resumes the run in ``path``, its path quoted where the shell needs it (a space)."""
    return f"hil run --resume {shell_word(str(path))}"


def held(path: Path) -> bool:
    """Whether a process holds the run folder ``path`` open (its lock taken); looks without making the lock file, and
    takes it shared for an instant only (which `_hold` waits out)."""
    try:
        _plain(path / LOCK)  # no lock hil made (a link; a named pipe, which the open would wait on)
        handle = (path / LOCK).open("rb")
    except (RunFileError, OSError):
        return False
    with handle:
        try:
            lock(handle.fileno(), shared=True)
        except BlockingIOError:
            return True
        except OSError:
            return False
        unlock(handle.fileno())
        return False


#: What follows the pid in a run folder's lock file held to write the run's report only (`hil report`).
REPORTING = "report"


def _lock_words(path: Path) -> list[str]:
    """The words of the lock file of run folder ``path`` (the last process that took it): its pid, then `REPORTING`
    where it only wrote the run's report; [] if none."""
    try:
        return (path / LOCK).read_bytes().decode("ascii", "replace").split()
    except OSError:
        return []


def _holder(path: Path) -> str:
    """The pid the lock file of run folder ``path`` names (the last process that took it); "?" if none."""
    return next(iter(_lock_words(path)), "?")


def held_by_a_run(path: Path) -> bool:
    """Whether a run is going on in the run folder ``path``: a process holds it open (`held`) to run it, not to write
    its report (``hil report`` of a run killed or failed, which changes nothing of how the run ended)."""
    return held(path) and _lock_words(path)[1:2] != [REPORTING]


def _held_by_another(path: Path) -> RunHeld:
    holder = _holder(path)
    return RunHeld(f"{path} is open in another hil process (pid {holder})", "wait for it to end or stop it, then try "
                   "again", pid=holder)


#: How long (s) `_hold` waits for processes that only look at a run folder's lock (`held`, for an instant each) to let
#: it go, before it takes a lock held shared for longer as the folder's being open elsewhere.
PROBE_WAIT_S = 2.0


def _only_looked_at(handle: Any) -> bool:
    """Whether the lock on ``handle``'s file is held shared only (`held` looking, as hil runs does), not by a process
    that has the run open: `hil runs` listing the runs as a resume took the lock made the resume fail, naming the pid of
    the last process that had had the run open (a run killed long before)."""
    if not shares():  # Windows locks have no shared kind to tell a look from a hold: the looks are waited out
        return True
    try:
        lock(handle.fileno(), shared=True)
    except OSError:
        return False
    unlock(handle.fileno())
    return True


#: The lock files of run folders this process took (`_hold`), as its pid, their device and their inode (a forked
#: child holds none of its parent's). A run refused to this process is "already open in this process" only where it
#: took the folder's lock file, and the file names it: the pid the file names may be this process's number in another
#: container sharing the runs folder (the first process of each is pid 1), or on another computer (a network share).
_HELD_HERE: set[tuple[int, int, int]] = set()


def _lock_file_key(handle: Any) -> tuple[int, int, int]:
    """The key of the lock file open as ``handle`` in `_HELD_HERE`."""
    status = os.fstat(handle.fileno())
    return os.getpid(), status.st_dev, status.st_ino


def _other_owner(path: Path) -> str | None:
    """The name of the user who owns ``path`` (``uid N`` where the system's table has none), where that is another
    user; None where it is this user, or where the system has no owners to tell (Windows)."""
    try:
        import pwd

        uid = path.stat().st_uid
    except (ImportError, OSError):
        return None
    if uid == os.geteuid():
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _hold(path: Path, reporting: bool = False) -> Any:
    """The run folder's lock, held until the returned file is let go (`_let_go`); a run another process holds is an
    error naming that process. The lock file says the pid, and `REPORTING` after it where ``reporting``."""
    _plain(path / LOCK)
    try:
        with _writing(path / LOCK):
            handle = open_shared(path / LOCK, "a+b")
    except WriteRefused as refused:
        if held(path):  # another user's run going on: its lock file is not this user's to write
            raise _held_by_another(path) from None
        owner = _other_owner(path / LOCK if (path / LOCK).exists() else path)
        if owner is not None and isinstance(refused.__cause__, PermissionError):  # "free disk space or fix the
            # folder's permissions" sent a colleague to fix what only the run's owner can
            raise WriteRefused(f"{path}: a run folder owned by {owner}, which you cannot write "
                               f"({refused.__cause__.strerror})", f"ask {owner} to let your group write it (chmod -R "
                               f"g+w {shell_word(str(path))}), or copy it to a folder of yours and resume the copy"
                               ) from None
        raise
    deadline = time.monotonic() + PROBE_WAIT_S
    while True:
        try:
            lock(handle.fileno())
            break
        except BlockingIOError:
            if _only_looked_at(handle) and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            here = _lock_file_key(handle) in _HELD_HERE and _holder(path) == str(os.getpid())  # a store dropped
            handle.close()  # unclosed leaves its key, and the run may have been taken by another process since
            if here:
                raise RunFileError(f"{path} is already open in this process; close its store first") from None
            raise _held_by_another(path) from None
        except OSError as error:  # not a user's output that failed, as the command took it (errno, no file named)
            handle.close()
            reason = error.strerror or str(error)
            raise NoLocks(f"{path}: cannot lock the run folder ({reason}): its file system takes no locks, by which "
                          "hil keeps a run to one process", "copy the folder to a local disk and give that copy",
                          reason) from None
    try:  # a full disk refuses the pid (an OSError naming no file, which read as standard output's)
        with _writing(path / LOCK):
            handle.truncate(0)
            handle.write(f"{os.getpid()}{' ' + REPORTING if reporting else ''}\n".encode())
            handle.flush()
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        raise
    _HELD_HERE.add(_lock_file_key(handle))
    return handle


def _let_go(handle: Any) -> None:
    """Close the lock file `_hold` returned, its lock let go first: Windows drops the lock of a file closed so only
    when the system gets to it, and the run stayed held meanwhile (`held`), refused to a resume."""
    if handle.closed:  # a store closed before
        return
    with contextlib.suppress(OSError):
        _HELD_HERE.discard(_lock_file_key(handle))
    with contextlib.suppress(OSError):
        unlock(handle.fileno())
    handle.close()


def parse_event(line: bytes) -> dict[str, Any] | None:
    """The event on one line of a log (its newline kept), or None if the line is torn (no newline) or damaged."""
    if not line.endswith(b"\n"):
        return None
    try:
        event = json.loads(line.decode("utf-8"))  # a log of an earlier hil has bare NaN and Infinity: read as floats
        valid = isinstance(event, dict) and isinstance(event.get("seq"), int) and isinstance(event.get("kind"), str)
        if valid:
            _restore_non_finite(event)
    except (ValueError, RecursionError):  # not UTF-8, not JSON (or nested too deep to read), or a non_finite field
        return None  # that does not fit the event
    return event if valid else None


def _scan_events(path: Path) -> tuple[list[tuple[dict[str, Any], bytes]], bytes, list[int]]:
    """The events of a log with their raw lines, the raw bytes of its last line if that is not an event (torn
    by a crash), and the 1-based numbers of the lines before it that are not events (damage)."""
    _plain(path)  # first: a dangling link does not exist, and a log opened for appending would make its target
    if not path.exists():
        return [], b"", []
    try:
        with path.open("rb") as handle:
            lines = list(handle)
    except OSError as error:
        raise RunFileError(f"{path}: event log unreadable ({error.strerror or error}); restore it from a backup, "
                           "or start a new run") from None
    entries, damaged = [], []
    for number, line in enumerate(lines, 1):
        event = parse_event(line)
        if event is None:
            damaged.append(number)
        else:
            entries.append((event, line))
    torn = lines[damaged.pop() - 1] if damaged and damaged[-1] == len(lines) else b""
    return entries, torn, damaged


def recorded_start(folder: Path) -> dict[str, Any]:
    """What ``run_started`` says of a run (``protocol``, ``method``, ``system``, ``seed``), from the ``protocol.yaml``
    of its folder, for a run that ended before logging it (an instrument that could not be connected); {} where the
    file is missing, unreadable or not a protocol's, and without what it lacks."""
    try:
        data = YamlDocument.read(folder / "protocol.yaml").data
    except ConfigError:
        return {}
    if not isinstance(data, dict):
        return {}
    method = data.get("method")
    recorded = {"protocol": data.get("name"), "method": method.get("name") if isinstance(method, dict) else None,
                "system": data.get("system"), "seed": data.get("seed")}
    return {key: value for key, value in recorded.items() if value is not None}


def _protocol_name(folder: Path) -> Any:
    """The name in the ``protocol.yaml`` of a run folder (`recorded_start`); "?" where it has none."""
    return recorded_start(folder).get("protocol", "?")


#: How the error of a ``run_failed`` that says a failed safe state on the way out, after what ended the run, starts.
SAFE_STATE_FAILED = "going to the safe state failed: "


def ending_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events that end a run's log and say how its last attempt ended (``run_failed``, ``run_interrupted``): one,
    or the cause followed by a failed safe state on the way out (`SAFE_STATE_FAILED`). An ending just before the cause
    is an earlier attempt's, which a resume that failed before it rewound the log left (a hil that rewound it only once
    the instruments were connected, or a disk that refused the rewind)."""
    start = len(events)
    while start and events[start - 1]["kind"] in ("run_failed", "run_interrupted"):
        start -= 1
        if not str(events[start].get("error", "")).startswith(SAFE_STATE_FAILED):
            break
    return events[start:]


def failed_step(events: list[dict[str, Any]]) -> str | None:
    """The step a run failed in, as the ``run_failed`` of its log's ending (`ending_events`) names it; None where the
    run did not fail, or failed outside a step (as it prepared, between two, on the way out)."""
    return next((e["step"] for e in ending_events(events) if e["kind"] == "run_failed"
                 and isinstance(e.get("step"), str)), None)


def list_runs(parent: str | Path) -> list[dict[str, Any]]:
    """Summaries of the runs under ``parent``, newest first: folder, protocol, status, last figures. A run that
    failed in a step is "failed in" that step (`failed_step`: "failed in train"). A run without an ending is
    "running" while a process runs it (`held_by_a_run`), "incomplete" otherwise (killed, or crashed). A run whose
    log has a damaged line is listed (from its readable events) with the status "damaged log", one whose log
    cannot be read at all as "unreadable log", one that lost it (its ``protocol.yaml`` is there) as "log lost", and a
    folder named as a run's (`RUN_FOLDER_NAME`) that cannot be read as "unreadable folder"; a run that ended before
    its ``run_started`` event, with the name in its ``protocol.yaml``. Other folders are no runs and are left out."""
    runs = []
    for folder in sorted((entry for entry in Path(parent).iterdir() if entry.is_dir()), reverse=True):
        try:
            names = set(os.listdir(folder))
        except OSError:
            if RUN_FOLDER_NAME.match(folder.name):  # not another folder there (a file system's lost+found)
                runs.append(_unlisted(folder.name, "?", "unreadable folder"))
            continue
        if EVENTS not in names:
            if "protocol.yaml" in names:  # written after the log was made: the log was lost since
                runs.append(_unlisted(folder.name, _protocol_name(folder), "log lost"))
            continue
        path = folder / EVENTS
        try:
            entries, _, damaged = _scan_events(path)
        except RunFileError:
            runs.append(_unlisted(folder.name, "?", "unreadable log"))
            continue
        events = [event for event, _ in entries]
        started = next((e for e in events if e["kind"] == "run_started"), {})
        finished = next((e for e in reversed(events) if e["kind"] in ("run_finished", "run_failed",
                                                                          "run_interrupted")), None)
        evaluation = next((e for e in reversed(events) if e["kind"] == "evaluated"), {})
        step = failed_step(events)
        runs.append({
            "run": path.parent.name,
            "protocol": started["protocol"] if "protocol" in started else _protocol_name(path.parent),
            "status": "damaged log" if damaged else {
                "run_finished": "finished", "run_failed": f"failed in {step}" if step else "failed",
                "run_interrupted": "interrupted"}.get(finished["kind"], "?") if finished else
            "running" if held_by_a_run(path.parent) else "incomplete",
            "device_accuracy": evaluation.get("device_accuracy"),
            "events": len(events),
        })
    return runs


def _unlisted(run: str, protocol: Any, status: str) -> dict[str, Any]:
    """`list_runs`' line for a run whose events cannot be read: no figures, no events."""
    return {"run": run, "protocol": protocol, "status": status, "device_accuracy": None, "events": 0}
