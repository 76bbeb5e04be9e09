"""Clocks: a virtual clock advances by what it is asked to wait, and with ``realtime`` also waits it."""

import time

import pytest
import torch

from hil.clock import VirtualClock, WallClock
from tests.lab_text import lab_from_text


@pytest.mark.parametrize("realtime", [False, True])
def test_a_virtual_clock_advances_by_each_wait_and_sleeps_it_only_in_real_time(realtime: bool,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = VirtualClock(realtime=realtime)
    for wait in (0.25, 0.0, -1.0, 1.5):
        clock.sleep(wait)
    assert clock.now() == 1.75  # a wait of 0 or less is none
    assert slept == ([0.25, 1.5] if realtime else [])


def test_a_lab_worlds_realtime_gives_its_instruments_a_clock_that_sleeps(tmp_path, monkeypatch) -> None:
    """``realtime: true`` in lab.yaml: a simulated device call takes its modelled device time in wall time too."""
    wall = FakeWall()  # the simulation computes in no wall time: every wait is the device time's
    monkeypatch.setattr("hil.clock.time", wall)
    slept = wall.slept
    lab = lab_from_text("worlds:\n  chip:\n    kind: memristor_crossbar\n    preset: ideal\n    realtime: true\n"
                        "instruments:\n  crossbar:\n    driver: simulated_crossbar\n    world: chip\n"
                        "systems:\n  crossbar:\n    kind: crossbar\n    instruments: {crossbar: crossbar}\n", tmp_path)
    with lab.open():
        system = lab.systems["crossbar"]
        before = system.device_time_s
        slept.clear()
        system.forward(torch.zeros(4, system.n_in), torch.zeros(system.n_params))
        spent = system.device_time_s - before
    assert spent > 0 and sum(slept) == pytest.approx(spent)


class FakeWall:
    """A wall clock, for `hil.clock`'s ``time``: its every sleep returns ``late_s`` after it was due, as
    ``time.sleep`` does (tens of µs); ``spend`` passes time as computing does."""

    def __init__(self, late_s: float = 0.0):
        self.wall_s, self.late_s, self.slept = 0.0, late_s, []

    def spend(self, seconds: float) -> None:
        self.wall_s += seconds

    def perf_counter(self) -> float:
        return self.wall_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.wall_s += seconds + self.late_s


def test_many_short_real_time_waits_take_their_sum_not_each_its_sleeps_lateness_more(monkeypatch) -> None:
    """A resistive network's sample waits are tens of µs, about what a sleep returns late: the clock makes up for
    the lateness in the waits that follow, so 10 000 waits of 20 µs take 0.2 s of wall time, not 1 s."""
    wall = FakeWall(late_s=80e-6)
    monkeypatch.setattr("hil.clock.time", wall)
    clock = VirtualClock(realtime=True)
    for _ in range(10_000):
        clock.sleep(20e-6)
    assert clock.now() == pytest.approx(0.2)
    assert 0.2 <= wall.wall_s <= 0.2 + wall.late_s


def test_a_real_time_clock_does_not_skip_the_waits_after_the_process_was_stopped(monkeypatch) -> None:
    """A run stopped (Ctrl-Z) for a minute in the middle of a wait: the device would not have given that minute
    back, so the waits after it are still slept (less at most `VirtualClock.MAKE_UP_S`)."""
    wall = FakeWall(late_s=60.0)
    monkeypatch.setattr("hil.clock.time", wall)
    clock = VirtualClock(realtime=True)
    clock.sleep(1.0)
    wall.late_s = 0.0
    for _ in range(5):
        clock.sleep(1.0)
    assert wall.slept == pytest.approx([1.0, 1.0 - VirtualClock.MAKE_UP_S, 1.0, 1.0, 1.0, 1.0])


def test_a_real_time_wait_counts_from_where_the_device_call_began(monkeypatch) -> None:
    """The simulation's computing of a call passes as the device's work would: a call of 1 s that took 0.3 s to
    compute waits 0.7 s more; one that took longer than its device time does not wait, and the next wait makes up
    for the overrun."""
    wall = FakeWall()
    monkeypatch.setattr("hil.clock.time", wall)
    clock = VirtualClock(realtime=True)
    began = clock.wall()
    wall.spend(0.3)
    clock.sleep(1.0, since=began)
    began = clock.wall()
    wall.spend(0.05)
    clock.sleep(0.01, since=began)
    clock.sleep(0.5)
    assert wall.slept == pytest.approx([0.7, 0.46])
    assert clock.now() == pytest.approx(1.51)
    assert wall.wall_s == pytest.approx(1.51)


class WindowsWall(FakeWall):
    """`FakeWall` with Windows' clocks before Python 3.13: ``time.monotonic`` ticks every 15.625 ms (GetTickCount64),
    ``time.perf_counter`` reads to the µs."""

    TICK_S = 0.015625

    def monotonic(self) -> float:
        return self.wall_s // self.TICK_S * self.TICK_S


def test_device_time_and_real_time_waits_are_measured_finely_on_windows(monkeypatch) -> None:
    """The clocks read time.monotonic, which ticks every 15.6 ms on Windows (before Python 3.13): a bench's call of
    4 ms cost 0 or 15.6 ms of device time, and 10 000 simulated waits of 20 µs, each slept 80 µs late, took 1 s of
    wall time, the lateness measured as none."""
    wall = WindowsWall(late_s=80e-6)
    monkeypatch.setattr("hil.clock.time", wall)
    bench = WallClock()
    before = bench.now()
    wall.spend(0.004)
    assert bench.now() - before == pytest.approx(0.004)
    clock = VirtualClock(realtime=True)
    for _ in range(10_000):
        clock.sleep(20e-6)
    assert 0.2 <= wall.wall_s - 0.004 <= 0.2 + wall.late_s
