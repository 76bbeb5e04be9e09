"""The simulated crossbar runs the crossbar-array contract."""

import pytest

from hil import testing


class TestSimulatedCrossbar(testing.CrossbarArrayContract):
    registry_name = "simulated_crossbar"

    @pytest.fixture
    def instrument(self):
        from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar

        world = MemristorCrossbar(preset="realistic", seed=0, config={"geometry": {"rows": 16, "cols": 8}})
        with SimulatedCrossbar(world, name="crossbar",
                               limits={"read_voltage_v": {"min": -0.15, "max": 0.15}}) as crossbar:
            yield crossbar
