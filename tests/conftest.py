"""Shared fixtures: emulator servers on 127.0.0.1 and pseudo-terminals, stopped after each test; every test must
leave Ctrl-C's handler, the import path, the working folder and torch's default dtype as it found them."""

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

pytest_plugins = ["hil.testing"]  # the emulator fixtures tcp_server and pty_server
# Hypothesis keeps its examples and caches in the repository's .hypothesis (git ignores it), not in the working folder
# pytest is run from, unless HYPOTHESIS_STORAGE_DIRECTORY names another
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(__file__).resolve().parents[1] / ".hypothesis")



@dataclass(frozen=True)
class Synced:
    """One ``os.fsync``: the file or folder synced (read back from /proc), a file's size then (None for a folder),
    and a folder's temporaries (``.*.tmp``) then."""

    path: Path
    size: int | None
    temporaries: tuple[str, ...]


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Synced]:
    """Every ``os.fsync`` from now on, in order (``monkeypatch.undo()`` stops the recording); the test is skipped where
    there is no /proc to read the synced files from (macOS, Windows)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor holds")
    synced: list[Synced] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            synced.append(Synced(path, None, tuple(sorted(p.name for p in path.glob(".*.tmp")))))
        else:
            synced.append(Synced(path, os.fstat(fd).st_size, ()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return synced


@pytest.fixture(autouse=True)
def sigint_handler_restored() -> Iterator[None]:
    """Fail the test that leaves a SIGINT handler of its own behind (later tests' Ctrl-C would be swallowed)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r}")


def _process_state() -> dict[str, object]:
    import torch

    return {"sys.path": list(sys.path), "the working folder": os.getcwd(),
            "torch's default dtype": torch.get_default_dtype()}


@pytest.fixture(autouse=True)
def process_state_restored() -> Iterator[None]:
    """Fail the test that leaves the import path, the working folder or torch's default dtype changed (later tests
    would import other modules, find other files or compute in another dtype); `monkeypatch` restores its changes
    before this check."""
    import torch

    before = _process_state()
    yield
    after = _process_state()
    changed = [name for name in before if after[name] != before[name]]
    if changed:
        sys.path[:] = before["sys.path"]
        os.chdir(before["the working folder"])
        torch.set_default_dtype(before["torch's default dtype"])
        pytest.fail(f"the test left {' and '.join(changed)} changed; restore it (monkeypatch does)", pytrace=False)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal (a shell starts background jobs with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
