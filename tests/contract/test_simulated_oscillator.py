"""The simulated analog output and input, on the coupled-oscillator world, run their capability's contract."""

import pytest

from hil import testing
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.oscillator import OscillatorNetwork


class TestSimulatedAnalogOutputOnOscillators(testing.AnalogOutputContract):
    registry_name = "simulated_analog_output"

    @pytest.fixture
    def instrument(self):
        world = OscillatorNetwork(seed=0)
        with SimulatedAnalogOutput(world, name="shaker", limits={"voltage_v": {"min": -2, "max": 2}}) as output:
            yield output


class TestSimulatedAnalogInputOnOscillators(testing.AnalogInputContract):
    registry_name = "simulated_analog_input"

    @pytest.fixture
    def instrument(self):
        world = OscillatorNetwork(seed=0)
        with SimulatedAnalogInput(world, name="probes") as probes:
            yield probes
