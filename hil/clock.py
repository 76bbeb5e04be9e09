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
    """Real time: ``now()`` is a monotonic reading in seconds and ``sleep()`` really waits. Both clocks read
    ``time.perf_counter``, the finest on every system: ``time.monotonic`` ticks every 15.6 ms on Windows before
    Python 3.13, so that a device call of a few ms read as 0 or 15.6 ms."""

    realtime = True

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Modelled time shared by the instruments of one simulated world.

    ``sleep(dt)`` advances ``now()`` by ``dt`` seconds; with ``realtime=True`` it also waits ``dt`` seconds of wall
    time, as the bench's device would work them. The simulation's own computing of a device call (a world passes
    where the call began, `wall`) counts into the wait, as the device would have been working meanwhile; and what
    a wait ran late (``time.sleep`` returns tens of µs late, more than a sample's wait; a call computed for longer
    than its device time) is taken off the waits after it, so that many short waits take their sum, not twice it.
    """

    #: The most wall time (s) later waits make up for: a sleep's lateness, not a stopped process's (Ctrl-Z), whose
    #: wall time a bench's device would not have given back.
    MAKE_UP_S = 0.1

    def __init__(self, realtime: bool = False):
        self.realtime = realtime
        self._now = 0.0
        self._lock = threading.Lock()
        self._behind_s = 0.0  # how late the last wait ended, in wall time, up to MAKE_UP_S

    def now(self) -> float:
        return self._now

    @staticmethod
    def wall() -> float:
        """A monotonic wall-clock reading (s, as `WallClock`'s): where a device call begins, for `sleep`'s ``since``."""
        return time.perf_counter()

    def sleep(self, seconds: float, since: float | None = None) -> None:
        """Advance ``now()`` by ``seconds``; in real time also wait them, counted from ``since`` (a `wall` reading
        taken as the device call began, before the simulation computed it), or from now."""
        if seconds <= 0:
            return
        with self._lock:
            self._now += seconds
        if self.realtime:
            self._wait(seconds, since)

    def _wait(self, seconds: float, since: float | None) -> None:
        """Wait ``seconds`` of wall time less the time since ``since`` and how late the wait before ended."""
        started = time.perf_counter()
        computed = started - since if since is not None and since < started else 0.0
        wait = seconds - computed - self._behind_s
        if wait > 0:
            time.sleep(wait)
        self._behind_s = min(max(time.perf_counter() - started - wait, 0.0), self.MAKE_UP_S)


Clock = WallClock | VirtualClock
