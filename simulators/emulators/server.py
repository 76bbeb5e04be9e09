"""Serve an emulated instrument over its real wire: a TCP socket on 127.0.0.1, or a pseudo-terminal pair.

A real driver then opens ``TCPIP::127.0.0.1::PORT::SOCKET`` with pyvisa-py, or the pty's path with pyserial,
and runs unchanged against the emulator. The emulator is any object with ``handle(message) -> reply | None``;
messages are framed by `split_messages`, which skips over binary blocks.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import select
import socket
import threading
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from hil.errors import ConfigError, DeviceWarning, brief, raised_at
from hil.transport import LINE_END
from simulators.emulators.scpi import split_messages

#: `_Server._reply`'s mark of an emulator's fault (not a reply)
_FAULT = object()


class MessageHandler(Protocol):
    """What a server serves: an emulator answering one program message at a time (`ScpiEmulator` is one)."""

    def handle(self, message: bytes) -> bytes | None:
        """The reply to ``message`` (without its terminator, which the server adds), or None for no reply. Called
        from the server's threads, one per client: an emulator that several clients may reach locks its state."""


class _Server:
    """Shared framing loop; subclasses own the byte channel. Messages are read up to ``input_terminator`` and
    replies end with ``terminator`` (a driver's write and read terminations)."""

    def __init__(self, emulator: MessageHandler, terminator: bytes = LINE_END.encode(),
                 input_terminator: bytes = LINE_END.encode()):
        self.emulator = emulator
        self.terminator, self.input_terminator = terminator, input_terminator
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: the first of the emulator's faults (an exception from ``handle``, a reply not bytes), as one line; the
        #: server stops answering the client it was serving then (see `_serve_bytes`)
        self.failure: str | None = None

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"{type(self).__name__}")
        self._threads = [*(t for t in self._threads if t.is_alive()), thread]  # those of gone clients: forgotten
        thread.start()

    def _serve_bytes(self, receive, send) -> None:  # type: ignore[no-untyped-def]
        """Read with ``receive()`` (b"" at end, None on idle), answer each complete message with ``send``."""
        buffer = b""
        while not self._stop.is_set():
            data = receive()
            if data is None:
                continue
            if data == b"":
                return
            messages, buffer = split_messages(buffer + data, self.input_terminator)
            for message in messages:
                reply = self._reply(message)
                if reply is None:
                    continue
                if reply is _FAULT:  # the client sees its link lost (TCP) or no reply (a pty), not a half answer
                    return
                send(reply + self.terminator)

    def _reply(self, message: bytes) -> bytes | object | None:
        """The emulator's reply to ``message`` (None: none), or `_FAULT` where the emulator raised or answered other
        than bytes: an emulator's bug, noted in `failure` and warned of as one line naming the emulator, the message,
        the error and where it was raised, instead of a traceback that ends the server's thread."""
        name = type(self.emulator).__name__
        try:
            reply = self.emulator.handle(message)
        except Exception as error:
            said = str(error).partition("\n")[0]  # one line, whatever the exception's text
            fault = f"{name}.handle({message!r}) raised {type(error).__name__}: {said} ({raised_at(error)})"
        else:
            if reply is None or isinstance(reply, bytes | bytearray):
                return reply
            fault = f"{name}.handle({message!r}) returned {brief(reply)}, not bytes or None; return the reply as bytes"
        if self.failure is None:
            self.failure = fault
        warnings.warn(f"emulator stopped answering: {fault}", DeviceWarning, stacklevel=1)
        return _FAULT

    def _join(self) -> None:
        """Wait for the serving threads to end (`stop`), except the one calling: a lab collected without closing stops
        its emulators from whichever thread the collector runs in, one of theirs among them."""
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        self._threads.clear()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class TcpServer(_Server):
    """Serves the emulator on ``host:port`` (a free port when ``port`` is 0); several clients may connect.

    ``stop()`` then ``start()`` restarts it on the same port, as a power-cycled instrument would come back.
    """

    def __init__(self, emulator: MessageHandler, host: str = "127.0.0.1", port: int = 0, **options: bytes):
        super().__init__(emulator, **options)
        self.host, self.port = host, port
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []

    @property
    def resource(self) -> str:
        """The pyvisa resource string of this server."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def start(self) -> TcpServer:
        self._stop.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen()
        except OSError:  # e.g. the port is taken: the socket is not left to the garbage collector
            listener.close()
            raise
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept_loop, listener)
        return self

    def stop(self) -> None:
        """Close the listener and drop every connection (clients see a lost connection)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections.clear()
        self._join()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(0.05)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections.append(connection)
            self._spawn(self._connection_loop, connection)

    def _connection_loop(self, connection: socket.socket) -> None:
        def receive() -> bytes | None:
            try:
                return connection.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return b""

        def send(data: bytes) -> None:
            """All of ``data``, however long the client takes to read it (``sendall`` would give up after the
            socket's short timeout, bounding the whole reply), unless the server stops or the client has gone: an
            instrument carries out what it was sent whether or not its replies are read (a client that timed out
            and reset the connection may have sent `OUTP OFF` after the query)."""
            view = memoryview(data)
            while view and not self._stop.is_set():
                try:
                    view = view[connection.send(view):]
                except TimeoutError:
                    continue
                except OSError:  # reset or shut: the reply goes nowhere, and what was received is still handled
                    return

        with contextlib.suppress(OSError):
            self._serve_bytes(receive, send)
        with contextlib.suppress(OSError):
            connection.close()
        with contextlib.suppress(ValueError):  # stop() may have cleared the list
            self._connections.remove(connection)


class PtyServer(_Server):
    """Serves the emulator on a pseudo-terminal pair; `resource` is the path a serial driver opens."""

    def __init__(self, emulator: MessageHandler, **options: bytes):
        super().__init__(emulator, **options)
        self._master: int | None = None
        self._slave: int | None = None
        self.resource = ""

    def start(self) -> PtyServer:
        import tty  # POSIX only: imported here, so that the TCP server runs where the system has no terminals

        self._stop.clear()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass as on a real serial line
        os.set_blocking(self._master, False)  # a reply the client does not read must not block `stop`
        self.resource = os.ttyname(self._slave)
        self._spawn(self._loop, self._master)
        return self

    def stop(self) -> None:
        """Close both ends: a client then sees its port fail."""
        self._stop.set()
        self._join()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _loop(self, master: int) -> None:
        def receive() -> bytes | None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                return None
            try:
                return os.read(master, 65536)
            except BlockingIOError:
                return None
            except OSError:
                return b""

        def send(data: bytes) -> None:
            """All of ``data``, as fast as the client reads it, unless the server stops."""
            view = memoryview(data)
            while view and not self._stop.is_set():
                _, writable, _ = select.select([], [master], [], 0.05)
                if writable:
                    with contextlib.suppress(BlockingIOError):
                        view = view[os.write(master, view):]

        with contextlib.suppress(OSError):
            self._serve_bytes(receive, send)


def serve(driver: type, options: Mapping[str, Any], via: str = "tcp", port: int = 0,
          name: str | None = None) -> TcpServer | PtyServer:
    """Start the emulator of a driver class (its ``emulator``, ``module:Class``) with ``options`` (the emulator's
    ``__init__`` arguments), over TCP on 127.0.0.1 (``port`` 0: a free one) or a pty. A driver without an emulator,
    a bad option, ``via`` or port is a `ConfigError` naming the driver (``name``, default its class name), with the
    option at fault as its ``field``."""
    from hil.registry import load_target

    name = name or driver.__name__
    target = getattr(driver, "emulator", None)
    if target is None:
        from simulators.world import SimulatedInstrument

        if issubclass(driver, SimulatedInstrument):
            raise ConfigError(f"{name} is a simulated instrument: it runs on a world of the lab file, not behind an "
                              "emulator; give it world: in the lab file")
        raise ConfigError(f"{name} has no emulator (drivers with one: {', '.join(drivers_with_emulators())}); a "
                          "bench instrument without one is reached at its resource, and a driver names its emulator "
                          'on its class: emulator: ClassVar[str] = "module:Class"')
    if via not in ("tcp", "pty"):
        raise ConfigError(f"via must be 'tcp' or 'pty', got {via!r}", field="via")
    if via == "pty" and not hasattr(os, "openpty"):
        raise ConfigError(f"cannot serve the {name} emulator on a pseudo-terminal: this system has none (Windows); "
                          "serve it via tcp", field="via")
    try:
        emulator_class = load_target(target)
    except ConfigError as error:
        raise ConfigError(f"emulator of {name}: {error.detail}") from None
    arguments = _emulator_arguments(emulator_class, options, name)
    try:
        emulator = emulator_class(**arguments)
    except (TypeError, ValueError, ConfigError) as error:  # a ConfigError names its option (field)
        field = getattr(error, "field", None)
        detail = error.detail if isinstance(error, ConfigError) else error
        options = "" if field else f"; options: {_accepted(emulator_class)}"  # a value of a named option: not its name
        raise ConfigError(f"bad emulator option for {name}: {detail}{options}", field=field) from None
    wire = getattr(driver, "transport_options", {})  # the driver's line endings, if not the transport's
    framing = {"terminator": wire.get("read_termination", LINE_END).encode(),
               "input_terminator": wire.get("write_termination", LINE_END).encode()}
    try:
        return (TcpServer(emulator, port=port, **framing) if via == "tcp" else PtyServer(emulator, **framing)).start()
    except OSError as error:
        raise ConfigError(f"cannot serve the {name} emulator on port {port}: {error.strerror or error}; choose "
                          "another port, or 0 for a free one", field="port") from None


def drivers_with_emulators() -> list[str]:
    """The registered drivers that name an emulator (a simulated instrument needs none: it runs in-process)."""
    from hil.registry import available, load_target

    names = []
    for name, target in available("instruments").items():
        try:
            if getattr(load_target(target), "emulator", None) is not None:
                names.append(name)
        except ConfigError:  # a plugin that cannot be loaded is not served either
            continue
    return sorted(names)


def _accepted(emulator_class: type) -> str:
    return ", ".join(inspect.signature(emulator_class).parameters) or "none"


def _emulator_arguments(emulator_class: type, options: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``options`` checked against the emulator's ``__init__``: each must be one of its parameters and, where the
    parameter is annotated, a value of that type (pydantic, strict: an int is a float, a bool or text is not). Else a
    `ConfigError` naming the option, as its ``field``."""
    parameters = inspect.signature(emulator_class).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    try:
        hints = typing.get_type_hints(emulator_class.__init__)
    except Exception:  # an annotation that does not resolve: the emulator checks its own arguments
        hints = {}
    arguments = {}
    for key, value in options.items():
        if key not in parameters and not open_ended:
            raise ConfigError(f"the {name} emulator has no such option; options: {_accepted(emulator_class)}",
                              field=key)
        try:
            arguments[key] = TypeAdapter(hints[key]).validate_python(value, strict=True) if key in hints else value
        except ValidationError:
            raise ConfigError(f"{value!r} is not {_type_name(hints[key])} (an option of the {name} emulator)",
                              field=key) from None
    return arguments


def _type_name(annotation: Any) -> str:
    """``float`` → "a float", ``int | None`` → "an int or null"."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    names = [kind.__name__ if isinstance(kind, type) else str(kind)
             for kind in (typing.get_args(annotation) if union else (annotation,))]
    words = ["null" if n == "NoneType" else f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names]
    return " or ".join(words)
