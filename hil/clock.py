"""Clocks that measure device time: the wall clock on a bench, a virtual clock in a simulator.

Every instrument has a clock. A system reads its instruments' clock before and after a call to learn the device
time the call cost: real seconds on a bench, modelled seconds on a simulator, where waiting advances the
virtual clock instantly (or sleeps the same time with ``realtime=True``, so that a simulated run takes the
bench's wall time: to rehearse a session, to try what a long device wait does to a Ctrl-C or a timeout, or to
measure host work overlapping the device's waits, pipelining, which hil does not do yet).
"""

from __future__ import annotations

import threading
import time


class WallClock:
    """Real time: ``now()`` is a monotonic reading in seconds and ``sleep()`` really waits."""

    realtime = True

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Modelled time shared by the instruments of one simulated world.

    ``sleep(dt)`` advances ``now()`` by ``dt`` seconds; with ``realtime=True`` it also waits ``dt`` seconds of wall
    time, less what earlier waits overslept (``time.sleep`` returns tens of µs late, more than a sample's wait):
    many short waits then take their sum, as on a bench, not twice it.
    """

    #: The most oversleep (s) later waits make up for: a sleep's lateness, not a stopped process's (Ctrl-Z), whose
    #: wall time a bench's device would not have given back.
    MAKE_UP_S = 0.1

    def __init__(self, realtime: bool = False):
        self.realtime = realtime
        self._now = 0.0
        self._lock = threading.Lock()
        self._overslept_s = 0.0

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._now += seconds
        if self.realtime:
            self._wait(seconds)

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds`` of wall time, less the oversleep of the waits before (at most `MAKE_UP_S`)."""
        wait = seconds - self._overslept_s
        started = time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._overslept_s = min(max(time.monotonic() - started - wait, 0.0), self.MAKE_UP_S)


Clock = WallClock | VirtualClock
