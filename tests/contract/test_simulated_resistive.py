"""The generic simulated analog output and input keep their capability's contract on the resistive network."""

import pytest

from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.resistive import ResistiveNetwork
from tests.contract import contracts


class TestSimulatedAnalogOutputOnResistiveNetwork(contracts.AnalogOutputContract):
    registry_name = "simulated_analog_output"

    @pytest.fixture
    def instrument(self):
        world = ResistiveNetwork(preset="realistic", seed=0)
        with SimulatedAnalogOutput(world, name="daq_out", limits={"voltage_v": {"min": -2.5, "max": 2.5}}) as out:
            yield out


class TestSimulatedAnalogInputOnResistiveNetwork(contracts.AnalogInputContract):
    registry_name = "simulated_analog_input"

    @pytest.fixture
    def instrument(self):
        world = ResistiveNetwork(preset="realistic", seed=0)
        SimulatedAnalogOutput(world, name="daq_out").connect()
        with SimulatedAnalogInput(world, name="daq_in") as reader:
            yield reader
