"""Serial transport throughput: long replies read through `SerialTransport` against the bytes a pseudo-terminal
delivers to a plain ``os.read`` loop, in the same run.

A device on a USB virtual COM port (CDC-ACM) answers at USB speed, so a long ASCII reply (a record of 10 000
samples is ~120 kB) costs whatever the host spends reading it. For each reply size, a child process writes ``--replies``
replies of that size (one line each) into the master side of a pty; the timed reader is the transport (``read()``,
one reply at a time, its terminator found), pyserial's ``read_until`` on the same port (a byte per call: what the
transport did before), or a plain ``os.read`` of the slave side, blocking (in ``select``) until bytes are there,
until as many bytes arrived (what the pty delivers).
Figures are the medians of ``--repeats`` timings, the readers taking turns. It needs a pseudo-terminal and
``os.fork``: Linux or macOS, not Windows.

    .venv/bin/python benchmarks/transports.py [--sizes 100 10000 100000] [--replies 20] [--repeats 5]
"""

from __future__ import annotations

import os
import select
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.arguments import Parser, count, run  # noqa: E402
from hil.transport import SerialTransport  # noqa: E402


def feed(master: int, reply: bytes, count: int) -> tuple[int, int]:
    """A child process (the device: no lock shared with the reader) that, once running, waits for a byte on a pipe
    and then writes ``count`` copies of ``reply`` into the pty's master side; returns its pid and the pipe's end to
    write that byte to. The fork and the child's start, which are no part of a reply's reading, happen before it."""
    ready, go = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (ready[0], go[1]):  # the parent's ends: a parent gone leaves the child an end of file
                os.close(fd)
            os.write(ready[1], b"r")
            if os.read(go[0], 1) != b"g":
                return  # the benchmark stopped before this timing
            for _ in range(count):
                view = memoryview(reply)
                while view:
                    view = view[os.write(master, view):]
        finally:
            os._exit(0)
    os.read(ready[0], 1)  # the child runs, and waits
    for fd in (*ready, go[0]):
        os.close(fd)
    return pid, go[1]


def timed(read: Callable[[], None], master: int, reply: bytes, count: int) -> float:
    """Seconds that ``read`` takes to read ``count`` replies, from the moment the device is told to send them."""
    writer, go = feed(master, reply, count)
    started = time.perf_counter()
    os.write(go, b"g")
    read()
    elapsed = time.perf_counter() - started
    os.close(go)
    os.waitpid(writer, 0)
    return elapsed


def main() -> None:
    parser = Parser(prog="benchmarks/transports.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=count, nargs="+", default=[100, 10_000, 100_000], help="reply sizes (bytes)")
    parser.add_argument("--replies", type=count, default=20, help="replies per timing")
    parser.add_argument("--repeats", type=count, default=5)
    args = parser.parse_args()
    if not (hasattr(os, "openpty") and hasattr(os, "fork")):
        sys.exit("benchmarks/transports.py: needs a pseudo-terminal (os.openpty) and os.fork, which this system "
                 "lacks (Windows); run it on Linux or macOS")
    import tty  # POSIX's: termios

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    transport = SerialTransport(os.ttyname(slave), timeout_s=5.0)
    transport.open()
    raw = os.open(os.ttyname(slave), os.O_RDONLY | os.O_NOCTTY)
    print(f"{'reply, bytes':>12s} {'transport MB/s':>15s} {'read_until MB/s':>16s} {'os.read MB/s':>13s}   "
          "transport / read_until, / os.read")
    try:
        for size in args.sizes:
            reply = b"1" * (size - 1) + b"\n"
            total = size * args.replies

            def through_transport() -> None:
                for _ in range(args.replies):
                    transport.read()

            def through_read_until() -> None:
                for _ in range(args.replies):
                    transport._port.read_until(b"\n")

            def through_os_read(total: int = total) -> None:
                got = 0
                while got < total:  # a blocking read: the port's settings (VMIN 0) make os.read return at once
                    select.select([raw], [], [])
                    got += len(os.read(raw, 1 << 16))

            readers = {"transport": through_transport, "read_until": through_read_until, "os.read": through_os_read}
            times: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.repeats):
                for name, read in readers.items():
                    times[name].append(timed(read, master, reply, args.replies))
            rate = {name: total / statistics.median(spent) / 1e6 for name, spent in times.items()}
            print(f"{size:12d} {rate['transport']:15.2f} {rate['read_until']:16.2f} {rate['os.read']:13.2f}   "
                  f"{rate['transport'] / rate['read_until']:.0f}×, {rate['transport'] / rate['os.read']:.2f}",
                  flush=True)
    finally:
        transport.close()
        for fd in (raw, slave, master):
            os.close(fd)


if __name__ == "__main__":
    run(main)
