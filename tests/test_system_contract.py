"""Every built-in system keeps `hil.testing.PhysicalSystemContract` on its simulated world, and a plugin's broken
system fails it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil.registry import available
from hil.systems.crossbar import CrossbarSystem
from hil.systems.fiber import FiberSystem
from hil.systems.optical import OpticalSystem
from hil.systems.oscillator import OscillatorSystem
from hil.systems.resistive import ResistiveNetworkSystem
from hil.testing import PhysicalSystemContract
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar
from simulators.fiber import MultimodeFiber
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM
from simulators.oscillator import OscillatorNetwork
from simulators.resistive import ResistiveNetwork


class TestOpticalSystem(PhysicalSystemContract):
    registry_name = "optical"

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> OpticalSystem:
            world = OpticalTable(preset=preset, seed=seed)
            return OpticalSystem({"slm": SimulatedSLM(world, name="slm").connect(),
                                  "camera": SimulatedCamera(world, name="camera").connect()})
        return build


class TestFiberSystem(PhysicalSystemContract):
    registry_name = "fiber"

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> FiberSystem:
            world = MultimodeFiber(preset=preset, seed=seed)
            return FiberSystem({"slm": SimulatedSLM(world, name="slm").connect(),
                                "camera": SimulatedCamera(world, name="camera").connect()})
        return build


class TestCrossbarSystem(PhysicalSystemContract):
    registry_name = "crossbar"

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> CrossbarSystem:
            world = MemristorCrossbar(preset=preset, seed=seed, config={"geometry": {"rows": 16, "cols": 16}})
            return CrossbarSystem({"crossbar": SimulatedCrossbar(world, name="crossbar").connect()}, n_out=6)
        return build


class TestOscillatorSystem(PhysicalSystemContract):
    registry_name = "oscillator"

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> OscillatorSystem:
            world = OscillatorNetwork(preset=preset, seed=seed)
            output = SimulatedAnalogOutput(world, name="shaker", limits={"voltage_v": {"min": -2.0, "max": 2.0}})
            return OscillatorSystem({"output": output.connect(),
                                     "input": SimulatedAnalogInput(world, name="probes").connect()})
        return build


class TestResistiveNetworkSystem(PhysicalSystemContract):
    registry_name = "resistive_network"

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> ResistiveNetworkSystem:
            world = ResistiveNetwork(preset=preset, seed=seed)
            output = SimulatedAnalogOutput(world, name="out", limits={"voltage_v": {"min": -2.5, "max": 2.5}})
            return ResistiveNetworkSystem({"output": output.connect(),
                                           "input": SimulatedAnalogInput(world, name="in").connect()})
        return build


def test_every_built_in_system_keeps_the_contract_here() -> None:
    contracts = [cls for cls in globals().values() if isinstance(cls, type) and issubclass(cls, PhysicalSystemContract)]
    tested = {cls.registry_name for cls in contracts if cls is not PhysicalSystemContract}
    assert tested == set(available("systems"))


ACME_SYSTEMS = '''
import torch

from hil.systems.crossbar import CrossbarModel, CrossbarSystem


class Kept(CrossbarSystem):
    """A crossbar system as it is: it keeps the contract."""


class TooLarge(CrossbarModel):
    def forward(self, x, theta):
        return 1.001 * super().forward(x, theta)


class GainOff(CrossbarSystem):
    """A physics model whose outputs are 0.1 % too large (a read-out gain the bench does not have)."""

    def physics_model(self):
        return TooLarge(self.shape, self.n_in, self.n_out, self.read_voltage_v, self.g_min_s, self.g_max_s)


class GlobalNoise(CrossbarSystem):
    """A system that draws its noise from torch's global generator, not its world's."""

    def _run(self, x, theta):
        return super()._run(x, theta) + 1e-3 * torch.randn(len(x), self.n_out)
'''

ACME_TESTS = '''
import pytest

from hil.testing import PhysicalSystemContract
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar


def builder(cls):
    def build(preset, seed):
        world = MemristorCrossbar(preset=preset, seed=seed, config={"geometry": {"rows": 8, "cols": 8}})
        return cls({"crossbar": SimulatedCrossbar(world, name="crossbar").connect()})
    return build


class TestKept(PhysicalSystemContract):
    registry_name = "acme_systems:Kept"

    @pytest.fixture
    def build(self):
        from acme_systems import Kept
        return builder(Kept)


class TestGainOff(TestKept):
    registry_name = "acme_systems:GainOff"

    @pytest.fixture
    def build(self):
        from acme_systems import GainOff
        return builder(GainOff)


class TestGlobalNoise(TestKept):
    registry_name = "acme_systems:GlobalNoise"

    @pytest.fixture
    def build(self):
        from acme_systems import GlobalNoise
        return builder(GlobalNoise)
'''


def test_a_plugin_runs_the_contract_and_a_wrong_physics_model_or_noise_of_no_seed_fails_it(tmp_path: Path) -> None:
    """In a package's own tests, as a plugin runs them: the contract passes a system that keeps it, and fails one whose
    physics model is 0.1 % off its device and one whose noise ignores the world's seed, saying which check and why."""
    (tmp_path / "acme_systems.py").write_text(ACME_SYSTEMS)
    (tmp_path / "test_acme.py").write_text(ACME_TESTS)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "test_acme.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "1000"})  # the failures' messages in full
    failed = re.findall(r"^FAILED test_acme\.py::(\w+)::(\w+) - (.*)$", result.stdout, re.MULTILINE)
    assert [(cls, test) for cls, test, _ in failed] == [
        ("TestGainOff", "test_on_the_ideal_world_the_forward_pass_is_the_physics_model"),
        ("TestGlobalNoise", "test_on_the_ideal_world_the_forward_pass_is_the_physics_model"),
        ("TestGlobalNoise", "test_a_batch_beyond_max_batch_is_split_and_its_rows_are_what_each_gives_alone"),
        ("TestGlobalNoise", "test_the_same_seed_gives_the_same_outputs")], result.stdout
    physics, seed = failed[0][2], failed[-1][2]
    assert re.match(r"AssertionError: GainOff's forward pass on its ideal world differs from its physics model "
                    r"\(oracle_model\(\)\) at output \[\d+, \d+\]: \S+, expected \S+ \(within \S+, 0\.0001 of the "
                    r"largest output\); check physics_model\(\) and hidden_calibration\(\) against _run",
                    physics), physics
    assert seed == ("AssertionError: two systems on worlds of the same seed measured different outputs: draw from the "
                    "world's generators"), seed
    assert result.stdout.splitlines()[-1].startswith("4 failed, 14 passed"), result.stdout
