"""Randomised fault injection on the wire between a driver and its emulator.

`FaultyTcpServer` and `FaultyPtyServer` serve an emulator as `TcpServer` and `PtyServer` do, but at message ``at``
(the first complete program message being 0) play one `FAULTS` kind instead of the plain reply. `session` runs a
realistic driver session (connect, configure, set levels or waveforms, measure, safe state, close) against one and
reports what came of it: the error raised, the longest single call, and whether the instrument was left in its
safe state and in step. ``python -m tests.emulators.faults --sessions 20`` runs that many sessions per fault kind,
driver and link, each at a random message, and prints a summary with every finding.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.clock import VirtualClock
from hil.errors import HilError
from simulators.emulators.server import PtyServer, TcpServer

#: What can go wrong at one message: the instrument keeps silent, closes the link (TCP) or vanishes (a serial
#: adapter pulled), answers garbage, half a reply, a reply in pieces, a reply and an unsolicited line, a reply
#: trickled byte by byte, the reply held back until the next query's, an error queued, or a binary block whose
#: length is wrong (the command's, or a reply that is one).
FAULTS = ("timeout", "closed", "garbage", "cut", "split", "extra", "trickle", "stale", "error", "block")
#: The reply timeout (s) of the transports under test.
TIMEOUT_S = 0.3


class _Faulty:
    """The fault-injecting framing loop shared by both servers (a mixin before `TcpServer` or `PtyServer`)."""

    def __init__(self, emulator: Any, kind: str | None = None, at: int = -1, seed: int = 0, **options: Any):
        super().__init__(emulator, **options)  # type: ignore[call-arg]
        self.kind, self.at, self.rng = kind, at, random.Random(seed)
        self.count = 0  # messages seen, on every connection
        self.fired: str | None = None  # what was done, once done
        self._held: bytes | None = None  # a reply held back ("stale")
        self.sending = False  # while a reply goes out in pieces, slowly ("split", "trickle")
        self.due: str | None = None  # the fault to play on the present message

    def _serve_bytes(self, receive, send) -> None:  # type: ignore[no-untyped-def]
        super()._serve_bytes(receive, lambda data: self._send(data, send))  # type: ignore[misc]

    def _reply(self, message: bytes) -> bytes | object | None:
        """The emulator's reply, with the fault's part before it played: a link closed (the reply dropped, or the
        message too), an error queued, or a block's header made wrong."""
        self.due = self.kind if self.fired is None and self.count >= self.at else None
        self.count += 1
        if self.due == "closed":
            self.fired = "closed before" if self.rng.random() < 0.5 else "closed after"
            if self.fired == "closed after":
                super()._reply(message)  # type: ignore[misc]
            self._close()
            raise ConnectionAbortedError("the link dropped")  # the server stops serving this client
        if self.due == "error":
            self.fired = "error"
            self.emulator.push_error((-222, "Data out of range"))  # type: ignore[attr-defined]
        if self.due == "block" and b"#" in message and b"ARB" in message.upper():
            self.fired = "block header"
            message = _misstate_block(message, self.rng)
        return super()._reply(message)  # type: ignore[misc]

    def _send(self, data: bytes, send: Callable[[bytes], None]) -> None:
        """Send a reply (``data`` ends with the terminator) as the fault due, if any, has it."""
        end = self.terminator  # type: ignore[attr-defined]
        reply = data[:-len(end)]
        if self._held is not None:  # the reply held back comes first, late
            reply, self._held = self._held + end + reply, None
        kind = self.due if self.fired is None else None
        self.fired = self.fired or kind
        if kind is None:
            send(reply + end)
        elif kind == "garbage":
            send(bytes(self.rng.choice(range(256)) for _ in range(self.rng.randint(1, 40))).replace(end, b"") + end)
        elif kind == "cut":
            send(reply[:self.rng.randrange(max(1, len(reply)))])
        elif kind == "stale":
            self._held = reply
        elif kind == "block":
            send(self.rng.choice([b"#15abc", b"#13abc", b"#3100" + b"x" * 50, b"#0abc"]) + end)
        elif kind == "extra":
            line = self.rng.choice([b"1", b"0", b"+1.000000E+00", b'0,"No error"', b"KEITHLEY"])
            send(reply + end + line + end if self.rng.random() < 0.5 else line + end + reply + end)
        elif kind in ("split", "trickle"):
            self.sending = True
            try:
                self._slowly(kind, reply + end, send)
            finally:
                self.sending = False
        # "timeout": nothing is sent

    def _slowly(self, kind: str, whole: bytes, send: Callable[[bytes], None]) -> None:
        """Send ``whole`` (a reply and its terminator) in pieces with pauses within the timeout ("split"), or byte
        by byte with pauses that may outlast it ("trickle")."""
        if kind == "split":
            cuts = sorted(self.rng.sample(range(1, len(whole)), k=min(3, len(whole) - 1)))
            for start, stop in zip([0, *cuts], [*cuts, len(whole)], strict=True):
                send(whole[start:stop])
                time.sleep(self.rng.uniform(0, TIMEOUT_S / 8))
            return
        pause = self.rng.choice([TIMEOUT_S / 50, TIMEOUT_S / 5])
        for byte in whole:
            send(bytes([byte]))
            time.sleep(pause)

    def _close(self) -> None:
        """Drop the link: the TCP connection (the server still listens), or the pty's device end."""


def _misstate_block(message: bytes, rng: random.Random) -> bytes:
    """``message`` with its block's byte count one more or one less than the bytes that follow."""
    start = message.index(b"#")
    digits = int(message[start + 1:start + 2])
    count = int(message[start + 2:start + 2 + digits])
    wrong = str(count + (1 if count == 0 else rng.choice([-1, 1]))).rjust(digits, "0")[-digits:].encode()
    return message[:start + 2] + wrong + message[start + 2 + digits:]


class FaultyTcpServer(_Faulty, TcpServer):
    pass


class FaultyPtyServer(_Faulty, PtyServer):
    def _close(self) -> None:
        master, self._master = self._master, None
        if master is not None:
            with contextlib.suppress(OSError):
                os.close(master)


# -- sessions -----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    driver: str
    via: str
    kind: str | None
    at: int
    fired: str | None = None  # the fault as played
    messages: int = 0  # the messages the instrument received
    error: BaseException | None = None  # the session's first error
    close_error: BaseException | None = None  # the safe state's, at close
    longest_s: float = 0.0  # the longest single call
    longest_call: str = ""
    hung: bool = False
    connected: bool = False  # whether the session connected (and so may have changed the outputs)
    unsafe: str | None = None  # what of the instrument is not in its safe state at the end
    checked: bool = False  # whether the safe state was checked (not where the link is gone for good)
    believed: list[str] = field(default_factory=list)  # where the driver's belief differs from the instrument
    probe_error: BaseException | None = None  # the error of a query after the session, if any
    problems: list[str] = field(default_factory=list)


def _smu(transport: Any) -> Any:
    from drivers.keithley2450 import Keithley2450

    return Keithley2450(transport, name="smu", clock=VirtualClock(), limits={"voltage_v": {"min": -5, "max": 5}})


def _awg(transport: Any) -> Any:
    from drivers.keysight_33500b import Keysight33500B

    return Keysight33500B(transport, name="awg", clock=VirtualClock(), limits={"voltage_v": {"min": -5, "max": 5}})


def _smu_steps(k: Any, emulator: Any) -> list[tuple[str, Callable[[], Any]]]:
    def measured() -> None:
        readings = k.measure()
        v, i = float(readings.voltage_v[0]), float(readings.current_a[0])
        if abs(v - k.level) > 1e-6 or abs(i - k.level / emulator.load_ohm) > 1e-9:
            raise AssertionError(f"measure read ({v}, {i}) at {k.level} V")

    def swept() -> None:
        readings = k.sweep([1.0, 1.5, 2.0])
        if not np.allclose(readings.voltage_v, [1.0, 1.5, 2.0]):
            raise AssertionError(f"sweep read {readings.voltage_v}")

    return [("connect", k.connect), ("configure", lambda: k.configure("voltage", 0.01)),
            ("set_level", lambda: k.set_level(1.0)), ("output on", lambda: k.set_output(True)),
            ("measure", measured), ("sweep", swept), ("set_level", lambda: k.set_level(0.5)), ("measure", measured)]


def _awg_steps(a: Any, emulator: Any) -> list[tuple[str, Callable[[], Any]]]:
    samples = np.linspace(-1.0, 1.0, 64)
    return [("connect", a.connect), ("set_voltage", lambda: a.set_voltage(1, 0.5)),
            ("output on", lambda: a.set_output(1, True)), ("load", lambda: a.load_waveform(2, samples, 1e5)),
            ("play", lambda: a.play([2])), ("set_voltage", lambda: a.set_voltage(1, 0.2))]


def _smu_beliefs(k: Any, emulator: Any) -> list[str]:
    wrong = []
    if k.output_on is not None and k.output_on != emulator.output:
        wrong.append(f"output {k.output_on} (is {emulator.output})")
    if k.level is not None and abs(k.level - emulator.level[emulator.function]) > 1e-9:
        wrong.append(f"level {k.level} (is {emulator.level[emulator.function]})")
    return wrong


def _awg_beliefs(a: Any, emulator: Any) -> list[str]:
    wrong = []
    for n, channel in emulator.channels.items():
        if a.output_on.get(n) is not None and a.output_on[n] != channel.output_on:
            wrong.append(f"output {n} {a.output_on[n]} (is {channel.output_on})")
        level = a.level_v.get(n)
        if level is not None and a.function.get(n) == "DC" and abs(level - channel.offset_v) > 1e-6:
            wrong.append(f"level {n} {level} (is {channel.offset_v} {channel.function})")
    return wrong


def _smu_safe(emulator: Any, touched: bool) -> str | None:
    """What is not safe: the output on, or (where hil connected and so may have set it) the level not 0."""
    if emulator.output or (touched and emulator.level[emulator.function] != 0):
        return f"output {emulator.output}, {emulator.function} level {emulator.level[emulator.function]}"
    return None


def _awg_safe(emulator: Any, touched: bool) -> str | None:
    wrong = [f"channel {n}: output {c.output_on}, {c.function} offset {c.offset_emf_v}"
             for n, c in emulator.channels.items()
             if c.output_on or (touched and (c.function != "DC" or c.offset_emf_v != 0))]
    return "; ".join(wrong) or None


def _drivers() -> dict[str, tuple[Callable[[], Any], Callable[..., Any], Callable[..., Any], Callable[..., Any],
                                   Callable[..., str | None], dict[str, Any]]]:
    from drivers.keithley2450 import Keithley2450
    from drivers.keysight_33500b import Keysight33500B
    from simulators.emulators.keithley2450 import Keithley2450Emulator
    from simulators.emulators.keysight_33500b import Keysight33500BEmulator

    return {"keithley2450": (Keithley2450Emulator, _smu, _smu_steps, _smu_beliefs, _smu_safe,
                             Keithley2450.transport_options),
            "keysight33500b": (Keysight33500BEmulator, _awg, _awg_steps, _awg_beliefs, _awg_safe,
                               Keysight33500B.transport_options)}


def session(driver: str, via: str, kind: str | None, at: int, seed: int = 0, watchdog_s: float = 60.0) -> Outcome:
    """One driver session over ``via`` ("tcp" or "pty") with ``kind`` of fault at message ``at``."""
    from hil.transport import SerialTransport, VisaTransport

    make_emulator, make, steps_of, beliefs, is_safe, wire = _drivers()[driver]
    emulator = make_emulator()
    framing = {"terminator": wire.get("read_termination", "\n").encode(),
               "input_terminator": wire.get("write_termination", "\n").encode()}
    server_class = FaultyTcpServer if via == "tcp" else FaultyPtyServer
    server = server_class(emulator, kind=kind, at=at, seed=seed, **framing).start()
    transport = (VisaTransport if via == "tcp" else SerialTransport)(server.resource, timeout_s=TIMEOUT_S, **wire)
    instrument = make(transport)
    outcome = Outcome(driver, via, kind, at)

    def timed(name: str, call: Callable[[], Any]) -> None:
        start = time.monotonic()
        try:
            call()
        finally:
            spent = time.monotonic() - start
            if spent > outcome.longest_s:
                outcome.longest_s, outcome.longest_call = spent, name

    def run() -> None:
        for name, call in steps_of(instrument, emulator):
            try:
                timed(name, call)
                outcome.connected = True
            except BaseException as error:
                outcome.error = error
                break
        if server.fired is None:
            server.kind = None  # not at the probe's message, which is no part of the session
        if instrument.connected:
            outcome.believed = beliefs(instrument, emulator)
            try:  # a reply meant for an earlier query, taken for this one's, shows a link out of step unnoticed
                probe: list[str] = []
                timed("probe", lambda: probe.append(instrument.query("*IDN?")))
                if probe != [emulator.identity]:
                    outcome.problems.append(f"out of step unnoticed: *IDN? read {probe[0]!r} (the session's error: "
                                            f"{outcome.error!r})")
            except HilError as error:  # a link closed, or a reply still trickling in: as it should be
                outcome.probe_error = error
        try:
            timed("close", instrument.close)
        except BaseException as error:
            outcome.close_error = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(watchdog_s)
    outcome.hung = thread.is_alive()
    time.sleep(0.05)  # what the driver wrote last is served before the emulator's state is read
    while server.sending:
        time.sleep(0.05)
    time.sleep(0.05)
    outcome.fired, outcome.messages = server.fired, server.count
    vanished = via == "pty" and (server.fired or "").startswith("closed")
    outcome.checked = not (vanished or outcome.hung)
    if outcome.checked:
        outcome.unsafe = is_safe(emulator, outcome.connected)
    server.stop()
    _judge(outcome, instrument.name)
    return outcome


def _judge(outcome: Outcome, name: str) -> None:
    """Fill ``outcome.problems`` from the project's rule for a fault."""
    for when, error in (("session", outcome.error), ("close", outcome.close_error)):
        if error is None:
            continue
        text = str(error)
        if not isinstance(error, HilError):
            outcome.problems.append(f"{when}: not a hil error: {type(error).__name__}: {text[:200]} "
                                    f"@ {traceback.extract_tb(error.__traceback__)[-1][:3]}")
        elif "\n" in text:
            outcome.problems.append(f"{when}: more than one line: {text[:200]!r}")
        elif not text.startswith(name):
            outcome.problems.append(f"{when}: does not name {name} first: {text[:200]}")
        messages[_template(text)] += 1
    if outcome.hung:
        outcome.problems.append("hung")
    if outcome.unsafe:
        outcome.problems.append(f"not in its safe state ({outcome.unsafe}); error {outcome.error!r}, at close "
                                f"{outcome.close_error!r}")
    if outcome.believed and outcome.error is None:
        outcome.problems.append(f"believes wrongly, without an error: {', '.join(outcome.believed)}")
    if outcome.kind == "split" and outcome.error is not None:
        outcome.problems.append(f"a reply in pieces within the timeout failed: {outcome.error}")


#: Every error message seen, with numbers, ports and quoted text replaced, and how often.
messages: collections.Counter[str] = collections.Counter()


def _template(text: str) -> str:
    text = re.sub(r"'[^']*'(… \(\d+ characters\))?", "'…'", text)
    text = re.sub(r"/dev/pts/\d+|TCPIP::127\.0\.0\.1::\d+::SOCKET", "RESOURCE", text)
    return re.sub(r"\b\d+(\.\d+)?\b", "N", text)


def count_messages(driver: str) -> int:
    """The messages a fault-free session sends (over TCP): the range of ``at``."""
    outcome = session(driver, "tcp", None, 10**9)
    assert not outcome.problems and outcome.error is None and outcome.close_error is None, outcome
    return outcome.messages - 1  # not the probe after the session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions per fault kind, driver and link")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(FAULTS))
    parser.add_argument("--drivers", default="keithley2450,keysight33500b")
    parser.add_argument("--via", default="tcp,pty")
    parser.add_argument("--messages", action="store_true", help="print every error message seen, by template")
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    problems: collections.Counter[str] = collections.Counter()
    for driver in arguments.drivers.split(","):
        total = count_messages(driver)
        for via in arguments.via.split(","):
            for kind in arguments.kinds.split(","):
                errors: collections.Counter[str] = collections.Counter()
                longest, bad = 0.0, 0
                for _ in range(arguments.sessions):
                    at, seed = rng.randrange(total), rng.randrange(2**31)
                    outcome = session(driver, via, kind, at, seed)
                    longest = max(longest, outcome.longest_s)
                    errors[type(outcome.error).__name__ if outcome.error else "none"] += 1
                    if outcome.problems:
                        bad += 1
                    for problem in outcome.problems:
                        problems[f"{driver}/{via}/{kind}: {problem}"] += 1
                        print(f"  {driver} {via} {kind} at={at} seed={seed} ({outcome.fired}): {problem}", flush=True)
                print(f"{driver:15} {via:4} {kind:8} sessions={arguments.sessions} with problems={bad} "
                      f"longest call={longest:.2f}s errors={dict(errors)}", flush=True)
    print(f"{sum(problems.values())} problems")
    if arguments.messages:
        for text, count in messages.most_common():
            print(f"{count:5}  {text}")


if __name__ == "__main__":
    main()
