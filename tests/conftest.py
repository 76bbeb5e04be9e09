"""Shared fixtures: emulator servers on 127.0.0.1 and pseudo-terminals, stopped after each test; every test must
leave Ctrl-C's handler as it found it."""

import signal
from collections.abc import Callable, Iterator

import pytest

from simulators.emulators.server import PtyServer, TcpServer


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    """A factory: ``tcp_server(emulator)`` serves it on a free port until the test ends."""
    servers: list[TcpServer] = []

    def start(emulator: object, **options: object) -> TcpServer:
        server = TcpServer(emulator, **options).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pty_server() -> Iterator[Callable[..., PtyServer]]:
    """A factory: ``pty_server(emulator)`` serves it on a new pseudo-terminal pair until the test ends."""
    servers: list[PtyServer] = []

    def start(emulator: object) -> PtyServer:
        server = PtyServer(emulator).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def sigint_handler_restored() -> Iterator[None]:
    """Fail the test that leaves a SIGINT handler of its own behind (later tests' Ctrl-C would be swallowed)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r}")
