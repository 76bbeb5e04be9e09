"""Shared fixtures: emulator servers on 127.0.0.1 and pseudo-terminals, stopped after each test; every test must
leave Ctrl-C's handler as it found it."""

import signal
from collections.abc import Iterator

import pytest

pytest_plugins = ["hil.testing"]  # the emulator fixtures tcp_server and pty_server



@pytest.fixture(autouse=True)
def sigint_handler_restored() -> Iterator[None]:
    """Fail the test that leaves a SIGINT handler of its own behind (later tests' Ctrl-C would be swallowed)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r}")


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal (a shell starts background jobs with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
