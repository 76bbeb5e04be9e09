"""Simulators in real time (``realtime: true``): a device call takes its device time in wall time, the
simulation's computing of it included, as the bench's device would work meanwhile."""

import pytest
import torch

from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM
from tests.simulators.test_analog import Divider
from tests.test_clock import FakeWall

COMPUTE_S = 2e-3  # what the simulation takes to compute each call, on the fake wall clock


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeWall:
    fake = FakeWall()
    monkeypatch.setattr("hil.clock.time", fake)
    return fake


def computing(wall: FakeWall, compute):
    """``compute`` taking `COMPUTE_S` of wall time."""
    def timed(*args, **kwargs):
        wall.spend(COMPUTE_S)
        return compute(*args, **kwargs)
    return timed


def test_an_optical_world_waits_its_frames_and_settling_less_what_it_computed(wall: FakeWall, monkeypatch) -> None:
    world = OpticalTable(preset="ideal", realtime=True)
    slm, camera = SimulatedSLM(world, name="slm").connect(), SimulatedCamera(world, name="camera").connect()
    monkeypatch.setattr(world, "program", computing(wall, world.program))
    monkeypatch.setattr(world, "render", computing(wall, world.render))
    camera.set_exposure(2e-3)
    wall.slept.clear()
    before, started = world.clock.now(), wall.wall_s
    slm.show(torch.zeros(64, 64))
    camera.capture(4)
    device_s = world.clock.now() - before
    assert device_s > 4 * COMPUTE_S
    assert sum(wall.slept) == pytest.approx(device_s - 2 * COMPUTE_S)
    assert wall.wall_s - started == pytest.approx(device_s)


def test_an_analog_world_waits_its_record_and_settling_less_what_it_computed(wall: FakeWall, monkeypatch) -> None:
    world = Divider(preset="ideal", config={"converters": {"settle_s": 5e-3}}, realtime=True)
    output = SimulatedAnalogOutput(world, name="ao").connect()
    analog_input = SimulatedAnalogInput(world, name="ai").connect()
    monkeypatch.setattr(world, "hold", computing(wall, world.hold))
    monkeypatch.setattr(world, "respond", computing(wall, world.respond))
    wall.slept.clear()
    before, started = world.clock.now(), wall.wall_s
    output.set_voltage(1, 1.0)
    analog_input.acquire(10, 1e3)
    device_s = world.clock.now() - before
    assert device_s == pytest.approx(5e-3 + 10e-3)
    assert wall.slept == pytest.approx([5e-3 - COMPUTE_S, 10e-3 - COMPUTE_S])
    assert wall.wall_s - started == pytest.approx(device_s)


@pytest.mark.parametrize("preset", ["ideal", "realistic"])  # pairs computed alone; every column digitised
def test_a_crossbar_waits_its_programming_and_reads_less_what_it_computed(wall: FakeWall, monkeypatch,
                                                                          preset: str) -> None:
    from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar

    world = MemristorCrossbar(preset=preset, realtime=True, config={
        "geometry": {"rows": 8, "cols": 8}, "timing": {"program_time_per_device_s": 1e-4, "call_overhead_s": 5e-3}})
    crossbar = SimulatedCrossbar(world, name="crossbar").connect()
    monkeypatch.setattr(world, "_check_ir_drop", computing(wall, world._check_ir_drop))
    monkeypatch.setattr(world, "_analog_read", computing(wall, world._analog_read))
    wall.slept.clear()
    before, started = world.clock.now(), wall.wall_s
    crossbar.program(torch.full((8, 8), 1e-5))
    crossbar.read(torch.zeros(3, 8))
    crossbar.read_pairs(torch.zeros(5, 8), 4)
    device_s = world.clock.now() - before
    assert device_s == pytest.approx(3 * 5e-3 + 64 * 1e-4 + 8 * 133e-9)
    assert sum(wall.slept) == pytest.approx(device_s - 3 * COMPUTE_S)
    assert wall.wall_s - started == pytest.approx(device_s)


@pytest.mark.parametrize("realtime", [True, False])
def test_a_worlds_snapshot_says_whether_it_sleeps_its_device_time(realtime: bool) -> None:
    """A run's wall time holds the device time where its worlds sleep it: the snapshot left out which they did."""
    assert OpticalTable(preset="ideal", realtime=realtime).describe()["realtime"] is realtime
