"""The simulated SLM and camera run the contracts of their capabilities, on the optical table and on the fiber."""

import pytest

from hil import testing
from simulators.fiber import MultimodeFiber
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM


class TestSimulatedSLM(testing.SpatialLightModulatorContract):
    registry_name = "simulated_slm"

    @pytest.fixture(params=[OpticalTable, MultimodeFiber])
    def instrument(self, request):
        slm = SimulatedSLM(request.param(seed=1), name="slm", limits={"phase_rad": {"max": 6.28}})
        with slm:
            yield slm


class TestSimulatedCamera(testing.CameraContract):
    registry_name = "simulated_camera"

    @pytest.fixture(params=[OpticalTable, MultimodeFiber])
    def instrument(self, request):
        camera = SimulatedCamera(request.param(seed=1), name="camera", limits={"exposure_s": {"max": 0.5}})
        with camera:
            yield camera
