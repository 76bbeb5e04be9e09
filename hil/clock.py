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

    ``sleep(dt)`` advances ``now()`` by ``dt`` seconds; with ``realtime=True`` it also waits ``dt`` seconds.
    """

    def __init__(self, realtime: bool = False):
        self.realtime = realtime
        self._now = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._now += seconds
        if self.realtime:
            time.sleep(seconds)


Clock = WallClock | VirtualClock
