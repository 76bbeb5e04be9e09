"""Capturing and restoring a simulated bench's state makes what follows repeat exactly."""

import enum
import random
import threading
from typing import ClassVar

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from hil.config import Strict
from hil.state import capture, restore
from hil.twin.models import OutputAffine
from simulators.analog import AnalogWorld, ConverterConfig, SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar
from simulators.world import OrnsteinUhlenbeck


class NoisyConfig(Strict):
    converters: ConverterConfig = Field(default_factory=lambda: ConverterConfig(adc_noise_v=0.01))


class NoisyGain(AnalogWorld):
    """Input = output × (1 + a slowly wandering gain) + noise."""

    kind = "noisy_gain"
    Config = NoisyConfig
    presets: ClassVar[dict[str, dict]] = {"realistic": {}}
    n_outputs = 1
    n_inputs = 1

    def _construct(self) -> None:
        super()._construct()
        self.gain = OrnsteinUhlenbeck(0.05, 1.0, (1,), self.rng)

    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        return drive_v * (1 + self.gain.at(self.clock.now())) + 0.01 * self.normal(drive_v.shape)


def test_restored_world_and_instruments_repeat_the_same_readings() -> None:
    world = NoisyGain(seed=5)
    ao, ai = SimulatedAnalogOutput(world, name="ao").connect(), SimulatedAnalogInput(world, name="ai").connect()
    ao.set_output(1, True)
    ao.set_voltage(1, 1.0)
    ai.acquire(10, 1e3)
    saved = [capture(world), capture(ao), capture(ai)]
    first = [ai.acquire(50, 1e3) for _ in range(3)]
    ao.set_voltage(1, -2.0)  # change the instrument's state too
    for obj, state in zip((world, ao, ai), saved, strict=True):
        restore(obj, state)
    again = [ai.acquire(50, 1e3) for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        assert (a == b).all()
    assert ao.level_v[1] == 1.0


def test_captured_state_is_plain_tensors_and_values(tmp_path) -> None:
    world = NoisyGain(seed=1)
    path = tmp_path / "state.pt"
    torch.save(capture(world), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["clock"]["__object__"]["_now"] == 0.0
    assert "gain" in loaded and "rng" in loaded


class Wander:
    """A plugin's own slow-state helper, defined outside hil and its simulators (here, in the tests package)."""

    def __init__(self, generator: torch.Generator):
        self.generator, self.level = generator, 0.0

    def step(self) -> float:
        self.level += float(torch.randn(1, generator=self.generator))
        return self.level


class PluginWorld(NoisyGain):
    kind = "plugin_world"

    def _construct(self) -> None:
        super()._construct()
        self.wander = Wander(self.rng)


def test_a_plugin_worlds_own_state_holders_are_captured() -> None:
    world = PluginWorld(seed=3)
    world.wander.step()
    saved = capture(world)
    first = [world.wander.step() for _ in range(3)]
    restore(world, saved)
    assert [world.wander.step() for _ in range(3)] == first


class Holder:
    """A plugin world's state: tensors and arrays changed in place, a numpy scalar, generators in a container,
    a helper shared by two attributes, a shape kept as a tuple."""

    def __init__(self) -> None:
        self.values = torch.zeros(3)
        self.table = np.zeros(3)
        self.level = np.float64(0.5)
        self.generators = {"shot": torch.Generator().manual_seed(1)}
        self.wander = Wander(torch.Generator().manual_seed(2))
        self.same_wander = self.wander
        self.shape = (1, 3)

    def step(self) -> list[float]:
        self.values += 1
        self.table += 1
        self.level = np.float64(self.level + 1)
        shot = float(torch.rand(1, generator=self.generators["shot"]))
        return [shot, self.wander.step(), self.same_wander.step()]


def test_restoring_twice_from_one_capture_repeats_exactly() -> None:
    """What is captured and what is restored are copies: changing the object in place afterwards changes
    neither the capture nor a second restore from it, and shared objects stay shared."""
    holder = Holder()
    saved = capture(holder)
    first = [holder.step() for _ in range(3)]
    for _ in range(2):
        restore(holder, saved)
        assert holder.values.tolist() == [0.0, 0.0, 0.0] and holder.table.tolist() == [0.0, 0.0, 0.0]
        assert holder.level == 0.5 and holder.same_wander is holder.wander and holder.shape == (1, 3)
        assert [holder.step() for _ in range(3)] == first


class LazyPluginWorld(NoisyGain):
    """A plugin world whose helper (with a generator of its own) is built on first use, not at construction."""

    kind = "lazy_plugin_world"

    def drift(self) -> float:
        if getattr(self, "wander", None) is None:
            self.wander = Wander(torch.Generator().manual_seed(7))
        return self.wander.step()


def test_a_helper_built_on_first_use_is_restored_into_a_fresh_world() -> None:
    """A resumed run restores into a world just built, where such a helper does not exist yet."""
    world = LazyPluginWorld(seed=3)
    world.drift()
    saved = capture(world)
    first = [world.drift() for _ in range(3)]
    fresh = LazyPluginWorld(seed=3)
    restore(fresh, saved)
    assert [fresh.drift() for _ in range(3)] == first


class Plugin:
    class Drift:
        """A helper class nested in another: saved as ``module:Plugin.Drift``."""

        def __init__(self) -> None:
            self.level = 0.0


def test_a_helper_of_a_class_nested_in_another_is_restored_into_a_fresh_holder() -> None:
    """Its class was looked up with one getattr of ``Plugin.Drift``, so the resume failed with an AttributeError."""
    holder = Holder()
    holder.drift = Plugin.Drift()
    holder.drift.level = 2.5
    saved = capture(holder)
    fresh = Holder()
    restore(fresh, saved)
    assert type(fresh.drift) is Plugin.Drift and fresh.drift.level == 2.5


class Owned:
    """A helper that refers back to its owner (a cycle), and keeps a list holding something not capturable."""

    def __init__(self, owner: object) -> None:
        self.owner, self.level = owner, 0.0
        self.mixed = [torch.zeros(1), threading.Event()]


def test_a_cycle_is_captured_once_and_a_list_not_wholly_capturable_is_left_as_it_is() -> None:
    holder = Holder()
    holder.helper = Owned(holder)
    event = holder.helper.mixed[1]
    saved = capture(holder)
    holder.helper.level = 1.0
    restore(holder, saved)
    assert holder.helper.level == 0.0 and holder.helper.owner is holder and holder.helper.mixed[1] is event


def test_an_instruments_capture_leaves_out_its_world_which_is_captured_on_its_own() -> None:
    world = MemristorCrossbar(preset="ideal")
    crossbar = SimulatedCrossbar(world, name="crossbar")
    assert crossbar.world is world and "world" not in capture(crossbar)


def test_a_generator_in_a_dict_is_restored_in_place_so_what_shares_it_still_does() -> None:
    holder = Holder()
    holder.shot = holder.generators["shot"]
    saved = capture(holder)
    restore(holder, saved)
    assert holder.shot is holder.generators["shot"]


def test_a_list_that_shrank_since_its_capture_is_restored_whole() -> None:
    holder = Holder()
    holder.readings = [0.5, torch.ones(2)]
    saved = capture(holder)
    holder.readings.clear()
    restore(holder, saved)
    assert holder.readings[0] == 0.5 and torch.equal(holder.readings[1], torch.ones(2))


def test_a_dict_keyed_by_what_a_checkpoint_cannot_hold_is_left_out(tmp_path) -> None:
    holder = Holder()
    holder.by_type = {float: 1.0}
    saved = capture(holder)
    assert "by_type" not in saved



def test_a_module_of_hils_is_not_descended_into() -> None:
    """Modules (a twin, a model) are the run's to save, in their state dicts."""
    holder = Holder()
    holder.affine = OutputAffine(2)
    assert "affine" not in capture(holder)


def test_a_numpy_float_is_captured_as_a_plain_float_so_the_checkpoint_loads_as_weights_only(tmp_path) -> None:
    """numpy's float64 is a float: it was kept as it was, a numpy scalar that torch.load(weights_only=True) refuses."""
    saved = capture(Holder())
    assert type(saved["level"]) is float
    torch.save(saved, tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["level"] == 0.5


def test_a_datetime64_or_timedelta64_in_nanoseconds_is_left_out_not_restored_as_an_integer() -> None:
    """A datetime64 or timedelta64 of nanoseconds gives an int for its item (one of seconds a datetime, left out), so
    it was captured and restored as that int: the world resumed with a count of nanoseconds where it had a time."""
    holder = Holder()
    holder.stamp, holder.span = np.datetime64("2026-12-06T18:00:00.000000000"), np.timedelta64(5, "ns")
    assert {"stamp", "span"}.isdisjoint(capture(holder))


def test_a_worlds_scratch_buffers_are_left_out_and_its_reads_repeat_exactly_without_them(tmp_path) -> None:
    """The crossbar's read keeps its temporaries in the world's `Scratch` (4 MB after a read of 4096 vectors), which a
    checkpoint took whole at every epoch; they are `transient`: left out, and a restored world reads the same."""
    world = MemristorCrossbar(seed=4)
    crossbar = SimulatedCrossbar(world, name="xbar").connect()
    crossbar.program(torch.full(crossbar.shape, 20e-6))
    voltages = torch.linspace(-0.2, 0.2, 4096 * 64).reshape(4096, 64)
    crossbar.read(voltages)
    saved = capture(world)
    torch.save(saved, tmp_path / "world.pt")
    first = crossbar.read(voltages[:300])
    assert "scratch" in vars(world) and "scratch" not in saved
    assert (tmp_path / "world.pt").stat().st_size < 300_000
    restore(world, saved)
    assert torch.equal(crossbar.read(voltages[:300]), first)


class Mode(enum.StrEnum):
    IDLE = "idle"
    DRIVEN = "driven"


class Range(enum.IntEnum):
    LOW = 1
    HIGH = 10


class Polarity(enum.Enum):
    POSITIVE = 1
    NEGATIVE = -1


class Status(enum.IntFlag):
    READY = 1
    ARMED = 2


#: What a plugin world's attributes may hold: enum members (a mode, a range, flags), numpy scalars (a datetime64
#: among them) and arrays of any dtype (big-endian from a file, strings), numbers and strings, in lists and dicts.
_ATTRIBUTE = st.recursive(
    st.sampled_from([*Mode, *Range, *Polarity, Status.READY | Status.ARMED, Status(0)])
    | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3)
    | st.none() | st.booleans()
    | st.sampled_from([np.float32(1.5), np.int16(-3), np.bool_(True), np.str_("a"), np.complex64(1 + 2j),
                       np.datetime64("2026-12-06"), np.timedelta64(5, "s")])
    | st.sampled_from(["<f8", ">f8", ">i4", "uint16", "bool", "complex64", "<U2", "O", "datetime64[s]"]).map(
        lambda dtype: np.zeros(3, dtype=dtype)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["mode", "range", "stamp", "table", "names", "levels"]), _ATTRIBUTE,
                       min_size=1))
def test_what_is_captured_loads_as_weights_only_and_restores_into_a_fresh_holder(tmp_path_factory, attributes) -> None:
    """An IntEnum or StrEnum is an int or a str, and was kept as the member, which torch.load(weights_only=True)
    refuses: the run wrote each checkpoint and could not resume from any ("checkpoint unreadable"); a plain Enum
    member was taken for a state holder, rebuilt with its class's __new__ (a TypeError); a datetime64 became a
    datetime the load refuses; and an array of strings or in big-endian order stopped the capture with torch's error."""
    holder = Holder()
    vars(holder).update(attributes)
    saved = capture(holder)
    path = tmp_path_factory.mktemp("state") / "state.pt"
    torch.save(saved, path)
    fresh = Holder.__new__(Holder)
    restore(fresh, torch.load(path, weights_only=True))
    for name, value in attributes.items():
        if name in saved:
            assert _same(vars(fresh)[name], value), name


def _same(restored: object, value: object) -> bool:
    """Whether ``restored`` is ``value`` as a checkpoint gives it back: an enum member itself, a numpy scalar as its
    plain value, an array equal in values, a tuple as a list."""
    if isinstance(value, enum.Enum):
        return restored is value
    if isinstance(value, np.ndarray):
        return isinstance(restored, np.ndarray) and np.array_equal(restored, value)
    if isinstance(value, list):
        return isinstance(restored, list) and len(restored) == len(value) and all(map(_same, restored, value))
    if isinstance(value, dict):
        return isinstance(restored, dict) and restored.keys() == value.keys() and all(
            _same(restored[key], value[key]) for key in value)
    plain = value.item() if isinstance(value, np.generic) else value
    return type(restored) is type(plain) and restored == plain


def test_numpy_scalars_restore_as_the_plain_values_a_checkpoint_holds() -> None:
    """A checkpoint holds a numpy scalar as its plain value; the check that a restored attribute keeps its sort took
    numpy's bool (no number to numpy) for another sort than the bool restored, and refused the checkpoint."""

    class Holder:
        def __init__(self) -> None:
            self.flag, self.gain, self.count, self.label = np.bool_(True), np.float32(1.5), np.int64(3), np.str_("a")

    fresh = Holder()
    restore(fresh, capture(Holder()))
    assert (fresh.flag, fresh.gain, fresh.count, fresh.label) == (True, 1.5, 3, "a")


class NumpyAndPythonNoise(NoisyGain):
    """A world of one's own drawing its noise from numpy's and Python's generators, as much research code does."""

    kind = "numpy_and_python_noise"

    def _construct(self) -> None:
        super()._construct()
        self.numpy_rng = np.random.default_rng(self.seed)
        self.legacy_rng = np.random.RandomState(self.seed)
        self.python_rng = random.Random(self.seed)

    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        noise = (self.numpy_rng.standard_normal(tuple(drive_v.shape)) + self.legacy_rng.standard_normal()
                 + self.python_rng.gauss(0.0, 1.0))
        return drive_v + 0.01 * torch.as_tensor(noise, dtype=torch.float32)


def test_a_worlds_numpy_and_python_generators_are_restored_so_a_resumed_world_repeats_exactly(tmp_path) -> None:
    """A world drawing from numpy's Generator or RandomState, or Python's random.Random, had them left out of the
    checkpoint: a resumed run drew its noise anew from the seed, and ended elsewhere than the run it resumed, unsaid."""
    world = NumpyAndPythonNoise(seed=3)
    output, reader = SimulatedAnalogOutput(world, name="out"), SimulatedAnalogInput(world, name="in")
    for instrument in (output, reader):
        instrument.connect()
    reader.acquire(4, 1000.0)  # the generators moved on from their seed
    torch.save(capture(world), tmp_path / "world.pt")
    expected = reader.acquire(4, 1000.0)
    resumed = NumpyAndPythonNoise(seed=3)  # built anew from the seed, as a resumed run's lab builds it
    restore(resumed, torch.load(tmp_path / "world.pt", weights_only=True))
    reader = SimulatedAnalogInput(resumed, name="in")
    SimulatedAnalogOutput(resumed, name="out").connect()
    reader.connect()
    np.testing.assert_array_equal(reader.acquire(4, 1000.0), expected)
