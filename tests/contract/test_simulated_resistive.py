"""The generic simulated analog output and input keep their capability's contract on the resistive network."""

import pytest

from hil import testing
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.resistive import ResistiveNetwork


class TestSimulatedAnalogOutputOnResistiveNetwork(testing.AnalogOutputContract):
    registry_name = "simulated_analog_output"

    @pytest.fixture
    def instrument(self):
        world = ResistiveNetwork(preset="realistic", seed=0)
        with SimulatedAnalogOutput(world, name="daq_out", limits={"voltage_v": {"min": -2.5, "max": 2.5}}) as out:
            yield out


class TestSimulatedAnalogInputOnResistiveNetwork(testing.AnalogInputContract):
    registry_name = "simulated_analog_input"

    @pytest.fixture
    def instrument(self):
        world = ResistiveNetwork(preset="realistic", seed=0)
        SimulatedAnalogOutput(world, name="daq_out").connect()
        with SimulatedAnalogInput(world, name="daq_in") as reader:
            yield reader
