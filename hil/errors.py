"""The one exception hierarchy of hil.

Every error a user can cause or meet on a bench is a `HilError`; the CLI prints its message on one line and
exits with status 2. Messages name the thing, the value, and the allowed range or the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sysconfig
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted for a one-line message, cut to ``limit`` characters with its full length said (an
    instrument's garbage reply can be megabytes long)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` ``noun`` s (or ``plural``), singular for one (a test set of one sample, an input of one channel)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a one-line message, cut to ``limit`` characters with its full length said."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class HilError(Exception):
    """Base of every error hil raises on purpose."""


class ConfigError(HilError):
    """A lab or protocol file is malformed, refers to something unknown, or asks for something not allowed.

    `source` is the file, `line` the 1-based line of the offending field (when known) and `field` its dotted
    path, so the message reads ``lab.yaml:12: instruments.awg.limits.voltage_v.max: ...``.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.source, self.line, self.field, self.detail = source, line, field, message
        where = ""
        if source:
            where = f"{source}:{line}: " if line else f"{source}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class Diverged(HilError):
    """Training left numbers that are not finite: ``what`` diverged (``"training"``, ``"the twin's online
    refinement"``) ``where`` (``"at training step 3"``, ``"at epoch 2, batch 5"``); ``detail`` says how and what to do.
    """

    def __init__(self, what: str, where: str, detail: str):
        super().__init__(f"{what} diverged {where}: {detail}")
        self.what, self.where, self.detail = what, where, detail

    def __reduce__(self) -> tuple[type[Diverged], tuple[str, str, str]]:  # pickled (a worker's failure) as it was made
        return type(self), (self.what, self.where, self.detail)

    def at(self, where: str) -> Diverged:
        """The same divergence, placed ``where`` (the orchestrator knows the epoch and batch a method's step is)."""
        return Diverged(self.what, where, self.detail)


class LimitError(HilError):
    """A value is NaN, infinite, or outside the limits of an instrument; raised before anything is sent."""


class TransportError(HilError):
    """Talking to an instrument failed: the connection is lost, refused, or the reply is not a reply."""


class TransportTimeout(TransportError):
    """An instrument did not answer within its timeout."""


class InstrumentBusy(TransportError):
    """Another process has the instrument open (`hil.transport` claims each instrument for the process using it), or
    another open lab of this process has it connected (`hil.lab.Lab.open`)."""


class DeviceError(HilError):
    """An instrument reported an error, returned a malformed value, or lost data (e.g. a dropped frame)."""


class PluginSlip(DeviceError):
    """A plugin's hook (a driver's ``_..._hw``, a simulated world's) raised an exception of its own, a slip in its code
    (`hil.hooks.reported`): the run stops as for a device's failure, its data kept, and resumes once the code is fixed,
    not once the instrument is back, which never went."""


class SystemSlip(PluginSlip):
    """A plugin system's hook raised an exception of its own (a slip in its code, or in a plugin world's under it):
    the run stops as for a device's failure, its data kept, and resumes once the code is fixed."""


class FramesDropped(DeviceError):
    """Frames a camera exposed did not all reach the host (a gap in its frame counter, or too few): the capture
    can be repeated (a busy or marginal link loses one now and then)."""


class DeviceWarning(UserWarning):
    """A device misbehaved and hil recovered (e.g. a capture repeated after frames were dropped)."""


def run_warning(category: type[Warning]) -> bool:
    """Whether a warning of ``category`` is one the hil command shows and a run logs as its own: a `UserWarning`
    (hil's, or a library's), not a library's deprecation, which is said to its code's authors, even one that is also
    a UserWarning (pyparsing 3.3's PyparsingDeprecationWarning, which matplotlib before 3.10.7 raises drawing text)."""
    return issubclass(category, UserWarning) and not issubclass(category, DeprecationWarning)


class InterlockError(HilError):
    """A safety or quality interlock tripped (saturation, compliance, laser power, twin drift)."""


class RunFileError(HilError):
    """A file of a run folder is missing, damaged or unreadable, or the folder cannot be created. ``brief``: what
    happened, without ``advice``, what to do (the message is both), for a message that has already said that."""

    def __init__(self, brief: str, advice: str = ""):
        super().__init__(f"{brief}; {advice}" if advice else brief)
        self.brief, self.advice = brief, advice


class RunHeld(RunFileError):
    """The run folder is open in another hil process (a run, a resume, a report), whose pid is ``pid`` ("?" where
    its lock file does not say)."""

    def __init__(self, brief: str, advice: str = "", pid: str = "?"):
        super().__init__(brief, advice)
        self.pid = pid


class NoLocks(RunFileError):
    """The file system of a run folder takes no locks (`hil.filelock`: an NFS mount without its lock service), by which
    hil keeps a run to one process; ``reason``: what the lock answered."""

    def __init__(self, brief: str, advice: str, reason: str):
        super().__init__(brief, advice)
        self.reason = reason


class WriteRefused(RunFileError):
    """The disk refused to write a file of the run (full, read-only, a permission): a resume goes on once it takes
    it again."""


class Interrupted(HilError):
    """The run stopped at a user's Ctrl-C (after saving), or at once at a second one, SIGTERM or SIGHUP (from its
    last checkpoint); resume it with ``hil run --resume``. ``exit_status``: 130, or 128 + the signal's number."""

    def __init__(self, message: str, exit_status: int = 130):
        super().__init__(message)
        self.exit_status = exit_status


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a library's, torch's or a plugin's, may span several), or its type where
    it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def with_type(error: BaseException) -> str:
    """An exception's type and message, on one line: ``ZeroDivisionError: integer modulo by zero``."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def error_reason(error: BaseException) -> str:
    """The first sentence of a library error's message (torch's run to paragraphs), or its type if it has none."""
    text = str(error).strip()
    return text.split("\n")[0].split(". ")[0] if text else type(error).__name__


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: a `MemoryError`, or torch's `RuntimeError` saying it could
    not allocate the memory or compute its size (which overflowed)."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
        text in str(error) for text in ("can't allocate memory", "size calculation overflowed")))


def raised_at(error: BaseException, within: str | None = None) -> str:
    """Where ``error`` was raised, as ``file:line`` of its innermost frame (for a one-line message about a plugin's
    bug: a driver's or an emulator's), or of the innermost frame in the file ``within`` (the plugin's line that
    called the library which raised); "" where it has no traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [frame for frame in frames if frame.filename == within]
    frame = (ours or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame is not None else ""


#: Where hil's own code and the libraries lie: frames there are not a plugin's (`raised_in_plugin`).
_NOT_PLUGINS = (*(str(Path(__file__).resolve().parents[1] / part) + os.sep for part in ("hil", "simulators",
                                                                                     "drivers")),
                *{path + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")
                  if (path := sysconfig.get_paths().get(key))})


def raised_in_plugin(error: BaseException, within: str) -> str:
    """Where a plugin's code raised ``error``, as ``file:line``: the innermost frame of its traceback outside hil and
    the libraries (a plugin world's ``respond`` that a plugin system's ``_run`` reached through hil's simulated
    instruments), else `raised_at` within the file ``within`` (the hook's)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not os.path.abspath(frame.filename).startswith(_NOT_PLUGINS) and not frame.filename.startswith("<")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else raised_at(error, within)


class Terminated(KeyboardInterrupt):
    """A `stop_signals` signal (a scheduler, ``timeout``, a closed terminal): stop at once, as a second Ctrl-C does;
    instruments are made safe on the way out. ``signum`` is the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def handling(signals: tuple[int, ...], handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """Within the block, ``handler`` receives ``signals`` (only in the main thread: elsewhere nothing changes);
    the handlers before it come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before if before is not None else signal.SIG_DFL)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def stop_signals() -> tuple[int, ...]:
    """The signals that stop hil at once, of those the system has: SIGTERM, SIGHUP (not on Windows) and SIGBREAK
    (Ctrl-Break, Windows only)."""
    return tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name))


def terminate_on_signals() -> contextlib.AbstractContextManager[None]:
    """Within the block, the `stop_signals` raise `Terminated` in the main thread (elsewhere: nothing changes)."""
    return handling(stop_signals(), _terminate)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and the `stop_signals` until the block is done (only in the main thread), then deliver the first
    to the handler it would have reached."""
    received: list[int] = []
    try:
        with handling((signal.SIGINT, *stop_signals()), lambda signum, frame: received.append(signum)):
            yield
    finally:
        if received:
            signal.raise_signal(received[0])
