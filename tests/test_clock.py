"""Clocks: a virtual clock advances by what it is asked to wait, and with ``realtime`` also waits it."""

import time

import pytest
import torch

from hil.clock import VirtualClock
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
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
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
