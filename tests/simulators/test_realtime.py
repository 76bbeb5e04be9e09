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
