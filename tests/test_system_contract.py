"""Every built-in system keeps `hil.testing.PhysicalSystemContract` on its simulated world, and every built-in world
`hil.testing.WorldContract`; a plugin's broken system or world fails them."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field

from hil.config import Strict
from hil.errors import ConfigError
from hil.registry import BUILTIN
from hil.systems.crossbar import CrossbarSystem
from hil.systems.fiber import FiberSystem
from hil.systems.optical import OpticalSystem
from hil.systems.oscillator import OscillatorSystem
from hil.systems.resistive import ResistiveNetworkSystem
from hil.testing import PhysicalSystemContract, WorldContract
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


class TestOpticalTable(WorldContract):
    registry_name = "optical_table"

    @pytest.fixture
    def world(self):
        return OpticalTable()


class TestMultimodeFiber(WorldContract):
    registry_name = "multimode_fiber"

    @pytest.fixture
    def world(self):
        return MultimodeFiber()


class TestMemristorCrossbar(WorldContract):
    registry_name = "memristor_crossbar"

    @pytest.fixture
    def world(self):
        return MemristorCrossbar()


class TestOscillatorNetwork(WorldContract):
    registry_name = "oscillator_network"

    @pytest.fixture
    def world(self):
        return OscillatorNetwork()


class TestResistiveNetwork(WorldContract):
    registry_name = "resistive_network"

    @pytest.fixture
    def world(self):
        return ResistiveNetwork()


@pytest.mark.parametrize(("contract", "group"), [(PhysicalSystemContract, "systems"), (WorldContract, "worlds")])
def test_every_built_in_system_and_world_keeps_its_contract_here(contract: type, group: str) -> None:
    kept = [cls for cls in globals().values() if isinstance(cls, type) and issubclass(cls, contract)]
    missing = set(BUILTIN[group]) - {cls.registry_name for cls in kept if cls is not contract}
    assert not missing, f"registered without a contract test: {sorted(missing)}"


class Unbounded(ResistiveNetwork):
    """A plugin's world whose new field has no upper bound, and a list of numbers with none at all."""

    kind = "unbounded_network"

    class Config(ResistiveNetwork.Config):
        heater_power_w: float = Field(0.5, ge=0)
        setpoints_k: list[float] = Field(default_factory=lambda: [300.0])


def test_a_world_with_a_number_lacking_a_bound_fails_the_world_contract() -> None:
    with pytest.raises(AssertionError, match=r"^Unbounded\.Config: heater_power_w, setpoints_k\[\] lack a lower or an "
                                             r"upper bound; give each Field\(ge=\.\.\., le=\.\.\.\), the upper at the "
                                             "largest value a bench of the kind could have"):
        WorldContract().test_every_number_of_its_config_has_a_lower_and_an_upper_bound(Unbounded())


class Numberless(ResistiveNetwork):
    """A plugin's world whose Config holds no numbers of its own (none to bound)."""

    kind = "numberless_network"

    class Config(Strict):
        label: str = "bench"


def test_a_world_whose_config_holds_no_numbers_keeps_the_bounds_contract() -> None:
    """It failed saying its Config held no numbers: a check of the walk over the built-in worlds, not a contract."""
    WorldContract().test_every_number_of_its_config_has_a_lower_and_an_upper_bound(object.__new__(Numberless))


class TestVastBatches(TestCrossbarSystem):
    """A system that takes any batch (a bench with no limit the driver knows): its split is tested at a batch that
    fits the memory."""

    @pytest.fixture
    def build(self):
        def build(preset: str, seed: int) -> CrossbarSystem:
            world = MemristorCrossbar(preset=preset, seed=seed, config={"geometry": {"rows": 16, "cols": 16}})
            system = CrossbarSystem({"crossbar": SimulatedCrossbar(world, name="crossbar").connect()}, n_out=6)
            system.max_batch = 2**62
            return system
        return build


class Heater(Strict):
    power_w: float = Field(0.5, ge=0)


class Labelled(ResistiveNetwork):
    """A plugin's world whose Config holds lists of names and switches, which are no numbers, and a number in an
    optional part that has no upper bound."""

    kind = "labelled_network"

    class Config(ResistiveNetwork.Config):
        probes: list[str] = Field(default_factory=lambda: ["north", "south"])
        enabled: tuple[bool, ...] = (True, False)
        heater: Heater | None = None


class Keyed(ResistiveNetwork):
    """A plugin's world whose Config gives a gain for each probe by name, without bounds."""

    kind = "keyed_network"

    class Config(ResistiveNetwork.Config):
        gains: dict[str, float] = Field(default_factory=lambda: {"north": 1.0})


@pytest.mark.parametrize(("world", "unbounded"), [(Labelled, r"heater\.power_w"), (Keyed, r"gains\[\]")])
def test_only_the_numbers_of_a_world_config_are_held_to_bounds_lists_and_optional_parts_walked(world,
                                                                                              unbounded) -> None:
    with pytest.raises(AssertionError, match=rf"^{world.__name__}\.Config: {unbounded} lack a lower or an upper "
                                             "bound;"):
        WorldContract().test_every_number_of_its_config_has_a_lower_and_an_upper_bound(world())


class Misnamed(ResistiveNetwork):
    """A plugin's world whose harsh preset misspells a field."""

    kind = "misnamed_network"
    presets: ClassVar[dict[str, dict[str, Any]]] = {**ResistiveNetwork.presets, "harsh": {"shot": {"noize": 1}}}


class WithoutIdeal(ResistiveNetwork):
    kind = "without_ideal"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"realistic": {}}


@pytest.mark.parametrize(("world", "error", "message"), [
    (Misnamed, ConfigError, r"^config\.shot\.noize: unknown key 'noize'; allowed: read_noise_v$"),
    (WithoutIdeal, AssertionError,
     r"^WithoutIdeal\.presets has realistic; give ideal too \(ideal: every non-ideality off; realistic: \{\}, "
     r"the Config's defaults\)\n"),
])
def test_a_world_with_a_preset_that_cannot_be_built_or_no_ideal_one_fails_the_world_contract(world, error,
                                                                                              message: str) -> None:
    with pytest.raises(error, match=message):
        WorldContract().test_every_preset_builds_and_ideal_is_one(world())


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


class Rounded(CrossbarModel):
    def forward(self, x, theta):
        return super().forward(x, theta.round())


class RoundsTheta(CrossbarSystem):
    """A physics model that rounds θ (to the device's levels, say) and so passes θ no gradient."""

    def physics_model(self):
        return Rounded(self.shape, self.n_in, self.n_out, self.read_voltage_v, self.g_min_s, self.g_max_s)


class GlobalNoise(CrossbarSystem):
    """A system that draws its noise from torch's global generator, not its world's."""

    def _run(self, x, theta):
        return super()._run(x, theta) + 1e-3 * torch.randn(len(x), self.n_out)
'''

ACME_TESTS = '''
import pytest

from hil.testing import PhysicalSystemContract, WorldContract
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


class TestRoundsTheta(TestKept):
    registry_name = "acme_systems:RoundsTheta"

    @pytest.fixture
    def build(self):
        from acme_systems import RoundsTheta
        return builder(RoundsTheta)


class TestGlobalNoise(TestKept):
    registry_name = "acme_systems:GlobalNoise"

    @pytest.fixture
    def build(self):
        from acme_systems import GlobalNoise
        return builder(GlobalNoise)
'''


def test_a_plugin_runs_the_contract_and_a_wrong_physics_model_or_noise_of_no_seed_fails_it(tmp_path: Path) -> None:
    """In a package's own tests, as a plugin runs them: the contract passes a system that keeps it, and fails one whose
    physics model is 0.1 % off its device, one whose physics model passes θ no gradient, and one whose noise ignores
    the world's seed, saying which check and why."""
    (tmp_path / "acme_systems.py").write_text(ACME_SYSTEMS)
    (tmp_path / "test_acme.py").write_text(ACME_TESTS)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "test_acme.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "1000"})  # the failures' messages in full
    failed = re.findall(r"^FAILED test_acme\.py::(\w+)::(\w+) - (.*)$", result.stdout, re.MULTILINE)
    assert [(cls, test) for cls, test, _ in failed] == [
        ("TestGainOff", "test_on_the_ideal_world_the_forward_pass_is_the_physics_model"),
        ("TestRoundsTheta", "test_on_the_ideal_world_the_forward_pass_is_the_physics_model"),
        ("TestRoundsTheta", "test_the_physics_model_gives_x_and_theta_a_finite_gradient"),
        ("TestGlobalNoise", "test_on_the_ideal_world_the_forward_pass_is_the_physics_model"),
        ("TestGlobalNoise", "test_a_batch_beyond_max_batch_is_split_and_its_rows_are_what_each_gives_alone"),
        ("TestGlobalNoise", "test_the_same_seed_gives_the_same_outputs")], result.stdout
    physics, gradient, seed = failed[0][2], failed[2][2], failed[-1][2]
    assert re.match(r"AssertionError: GainOff's forward pass on its ideal world differs from its physics model "
                    r"\(oracle_model\(\)\) at output \[\d+, \d+\]: \S+, expected \S+ \(within \S+, 0\.0001 of the "
                    r"largest output\); check physics_model\(\) and hidden_calibration\(\) against _run",
                    physics), physics
    assert gradient == ("AssertionError: RoundsTheta's physics model gives theta no gradient; write physics_model() "
                        "with differentiable torch operations"), gradient
    assert seed == ("AssertionError: two systems on worlds of the same seed measured different outputs: draw from the "
                    "world's generators"), seed
    assert result.stdout.splitlines()[-1].startswith("6 failed, 26 passed"), result.stdout


class Buffered(CrossbarSystem):
    """A crossbar system that returns its outputs in one tensor it fills anew at every call."""

    def _run(self, x, theta):
        if not hasattr(self, "buffer"):
            self.buffer = torch.zeros(self.max_batch, self.n_out)
        out = self.buffer[: len(x)]
        out.copy_(super()._run(x, theta))
        return out


def test_a_system_returning_a_buffer_it_fills_anew_fails_the_contract() -> None:
    world = MemristorCrossbar(preset="ideal", seed=0, config={"geometry": {"rows": 8, "cols": 8}})
    with SimulatedCrossbar(world, name="crossbar") as crossbar:
        system = Buffered({"crossbar": crossbar})
        with pytest.raises(AssertionError, match=r"^the next call changed the outputs a call returned: return a new "
                                                 r"tensor \(y\.clone\(\)\), not a buffer the system fills anew"):
            TestCrossbarSystem().test_outputs_stay_as_they_were_after_the_next_call(lambda: system)
