"""`PhysicalSystem`'s own checks of what a device call returns, on a system whose device misbehaves."""

import importlib
import re
import sys
import warnings
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hil.clock import VirtualClock
from hil.errors import ConfigError, DeviceError, LimitError
from hil.registry import lookup
from hil.systems.base import PhysicalSystem, PhysicsModel


class Misreading(PhysicalSystem):
    """A system whose device call returns whatever ``reading`` makes of the inputs."""

    kind = "misreading"

    def __init__(self, reading: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__({}, name="bench", n_in=2, n_out=3, n_params=1, x_bounds=(-1, 1), theta_bounds=(-1, 1),
                         max_batch=8)
        self.reading = reading

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.reading(x)

    def physics_model(self) -> PhysicsModel:
        raise NotImplementedError


@pytest.mark.parametrize(("reading", "message"), [
    (lambda x: torch.zeros(len(x), 2), r"^system 'bench': device returned shape \(4, 2\); expected \(4, 3\)$"),
    (lambda x: torch.full((len(x), 3), float("nan")), r"^system 'bench': device returned non-finite values"),
    (lambda x: torch.full((len(x), 3), float("inf")), r"^system 'bench': device returned non-finite values"),
    (lambda x: torch.zeros(len(x), 3).index_fill_(1, torch.tensor([2]), float("nan")),
     r"^system 'bench': device returned non-finite values"),
])
def test_a_reading_of_the_wrong_shape_or_not_finite_is_a_device_error(reading, message: str) -> None:
    system = Misreading(reading)
    with pytest.raises(DeviceError, match=message):
        system.forward(torch.zeros(4, 2), torch.zeros(1))
    assert system.calls == 1


def test_a_reading_of_large_finite_values_passes() -> None:
    """Finite float32 readings whose sum overflows (3e38 each) are finite readings, not a device error."""
    system = Misreading(lambda x: torch.full((len(x), 3), 3e38))
    assert torch.equal(system.forward(torch.zeros(4, 2), torch.zeros(1)), torch.full((4, 3), 3e38))


def test_a_good_reading_passes_and_a_batch_beyond_max_batch_is_split() -> None:
    system = Misreading(lambda x: x.sum(1, keepdim=True).expand(len(x), 3))
    x = torch.rand(20, 2)
    torch.testing.assert_close(system.forward(x, torch.zeros(1)), x.sum(1, keepdim=True).expand(20, 3))
    assert system.calls == 3  # 8 + 8 + 4


@pytest.mark.parametrize("label", ["n_in", "n_out", "n_params", "max_batch"])
@pytest.mark.parametrize("value", [True, 0, 2.0])
def test_counts_that_are_not_positive_integers_are_refused(label: str, value) -> None:
    """YAML's ``true`` is not a count: ``max_batch: true`` passed as 1 (a bool is an int) and failed later."""
    counts = {"n_in": 2, "n_out": 3, "n_params": 1, "max_batch": 8, label: value}
    with pytest.raises(ConfigError, match=f"^{label}: {label} must be a positive integer, got {value!r}$"):
        PhysicalSystem.__init__(Misreading.__new__(Misreading), {}, x_bounds=(-1, 1), theta_bounds=(-1, 1), **counts)


class Calibrated(PhysicsModel):
    """A model with one calibration parameter (2 values), a buffer and a plain attribute."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(2))
        self.register_buffer("shape_hint", torch.zeros(3))
        self.levels = 256

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_load_hidden_sets_tensors_and_refuses_what_is_not_one_of_the_right_size() -> None:
    model = Calibrated().load_hidden({"gain": [2.0, 3.0], "shape_hint": torch.ones(3)})
    assert model.gain.tolist() == [2.0, 3.0] and model.shape_hint.tolist() == [1.0, 1.0, 1.0]
    fix = (r" \(its tensors: gain, shape_hint\); name it as the model's parameter in the world's "
           r"hidden_parameters\(\), or map it in the system's hidden_calibration\(world\)$")
    unknown = r"^the simulated world's hidden value '{}' is no tensor of Calibrated"
    for hidden, message in (({"levels": 8}, unknown.format("levels") + fix),
                            ({"offset": 1.0}, unknown.format("offset") + fix),
                            ({"gain": [1.0, 2.0, 3.0]}, r"Calibrated\.gain holds 2 values \(2,\); the hidden value "
                                                        "has 3")):
        with pytest.raises(ConfigError, match=message):
            model.load_hidden(hidden)


@pytest.mark.parametrize("label", ["x_bounds", "theta_bounds"])
@pytest.mark.parametrize("bounds", [(2.0, 0.0), (1.0, 1.0), (0.0, float("nan")), (float("-inf"), 1.0), (1.0,), None])
def test_bounds_that_are_not_two_finite_numbers_the_lower_first_are_refused_naming_the_system(label, bounds) -> None:
    """A system of one's own taking θ's bounds from two settings given the wrong way round (gate_min_v above
    gate_max_v) was built and listed by hil devices; hil check then said "bounds 2.0..0.0 hold no float32 value; widen
    them", naming neither the system nor the file, and x bounds the wrong way round refused every input."""
    others = {"x_bounds": (-1, 1), "theta_bounds": (-1, 1), label: bounds}
    with pytest.raises(ConfigError, match=rf"^system 'bench': {label} {re.escape(repr(bounds))} must be two finite "
                                          r"numbers, the lower first; check the settings they come from$"):
        PhysicalSystem.__init__(Misreading.__new__(Misreading), {}, name="bench", n_in=2, n_out=3, n_params=1,
                                max_batch=8, **others)


class PlainGain(torch.nn.Module):
    """A physics model written as a plain torch module, not a `PhysicsModel`: a physics twin takes it as it is."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.gain


class OnAWorldOfAHiddenGain(Misreading):
    """A system on one simulated instrument, whose world's hidden gain is (2, 3, 4)."""

    def __init__(self):
        super().__init__(lambda x: torch.zeros(len(x), 3))
        world = SimpleNamespace(hidden_parameters=lambda: {"gain": torch.tensor([2.0, 3.0, 4.0])})
        self.instruments = {"probe": SimpleNamespace(world=world)}

    def physics_model(self) -> torch.nn.Module:
        return PlainGain()


def test_an_oracle_is_built_of_a_physics_model_written_as_a_plain_torch_module() -> None:
    """A physics twin took such a model, but an oracle twin stopped hil run (and then hil check) with "AttributeError:
    'PlainGain' object has no attribute 'load_hidden'" in a traceback."""
    oracle = OnAWorldOfAHiddenGain().oracle_model()
    assert isinstance(oracle, PlainGain) and oracle.gain.tolist() == [2.0, 3.0, 4.0]


class Recording(Misreading):
    """A `Misreading` that also records the rows of every device call."""

    def __init__(self, reading: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(reading)
        self.chunks: list[torch.Tensor] = []

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        self.chunks.append(x.clone())
        return super()._run(x, theta)


@pytest.mark.parametrize(("batch", "sizes"), [(8, [8]), (16, [8, 8]), (20, [8, 8, 4])])
def test_a_batch_is_split_into_consecutive_chunks_of_max_batch_rows(batch: int, sizes: list[int]) -> None:
    """Full chunks of ``max_batch`` then the rest, in order: a chunk of max_batch − 1 rows also made three calls
    of twenty rows."""
    system = Recording(lambda x: x.sum(1, keepdim=True).expand(len(x), 3))
    x = torch.rand(batch, 2, generator=torch.Generator().manual_seed(1))
    system.forward(x, torch.zeros(1))
    assert [len(chunk) for chunk in system.chunks] == sizes and system.calls == len(sizes)
    assert torch.equal(torch.cat(system.chunks), x)


@pytest.mark.parametrize(("x", "theta", "message"), [
    (torch.tensor([[0.0, 1.5]]), torch.zeros(1), r"x\[0, 1\] = 1\.5 is outside -1\.\.1$"),
    (torch.tensor([[-1.5, 0.0]]), torch.zeros(1), r"x\[0, 0\] = -1\.5 is outside -1\.\.1$"),
    (torch.zeros(1, 2), torch.tensor([1.25]), r"theta\[0\] = 1\.25 is outside -1\.\.1$"),
    (torch.zeros(1, 2), torch.tensor([-1.25]), r"theta\[0\] = -1\.25 is outside -1\.\.1$"),
    (torch.zeros(0, 2), torch.zeros(1), r"x is empty$"),
    (torch.zeros(2), torch.zeros(1), r"x has shape \(2,\), expected batch×2; give one input as a batch of one: "
                                     r"x\[None\], of shape 1×2$"),  # one input vector: said how to give it
    (torch.zeros(3), torch.zeros(1), r"x has shape \(3,\), expected batch×2$"),
])
def test_values_outside_the_bounds_and_an_empty_batch_are_refused_before_any_call(x, theta, message: str) -> None:
    system = Misreading(lambda x: torch.zeros(len(x), 3))
    with pytest.raises(LimitError, match=message):
        system.forward(x, theta)
    assert system.calls == 0


@pytest.mark.parametrize(("x", "theta", "message"), [
    (torch.full((1, 2), 0.5 + 0.5j), torch.zeros(1), r"x is complex \(torch\.complex64\); give real numbers$"),
    (torch.zeros(1, 2), torch.tensor([0.5j]), r"theta is complex \(torch\.complex64\); give real numbers$"),
    (np.full((1, 2), 0.5j), torch.zeros(1), r"x is complex \(torch\.complex128\); give real numbers$"),
    ([["a", 0.0]], torch.zeros(1), r"x is not an array of numbers \(list\); give a tensor of shape batch×2$"),
    ([[0.0], [0.0, 0.0]], torch.zeros(1), r"x is not an array of numbers \(list\); give a tensor of shape "
                                          r"batch×2$"),
    (None, torch.zeros(1), r"x is not an array of numbers \(NoneType\); give a tensor of shape batch×2$"),
    (torch.zeros(1, 2), "0", r"theta is not an array of numbers \(str\); give a tensor of shape 1$"),
])
def test_complex_values_and_what_is_not_numbers_are_refused_before_any_call(x, theta, message: str) -> None:
    """A complex x or θ ran on its real part alone (a UserWarning at most); text, None or a ragged list raised torch's
    own TypeError or ValueError."""
    system = Misreading(lambda x: torch.zeros(len(x), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "casting complex values to real discards the imaginary part"
        with pytest.raises(LimitError, match="^system 'bench': " + message):
            system.forward(x, theta)
    assert system.calls == 0


def test_a_flipped_or_read_only_numpy_input_is_read_as_its_values() -> None:
    """A numpy view with negative strides (``x[:, ::-1]``, ``np.flip``), which torch takes no tensor of, was refused as
    "not an array of numbers"; a read-only one (``np.broadcast_to``) gave torch's warning about non-writable arrays."""
    system = Misreading(lambda x: torch.cat([x, x[:, :1]], 1))
    x = np.array([[0.25, -0.5], [0.75, 1.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(system.forward(x[:, ::-1], np.flip(np.zeros(1))), system.forward(x[:, ::-1].copy(),
                                                                                             np.zeros(1)))
        assert torch.equal(system.forward(np.broadcast_to(x[:1], (2, 2)), np.zeros(1)),
                           system.forward(np.repeat(x[:1], 2, axis=0), np.zeros(1)))


def test_inputs_and_a_reading_in_big_endian_order_are_read_as_their_values() -> None:
    """An instrument's binary block is big-endian (IEEE 488.2), and pyvisa reads it as ``>f4``: x or θ given so, or
    a plugin system's _run returning it, were refused as "not an array of numbers" (torch takes no such array)."""
    x = np.array([[0.25, -0.5], [0.75, 1.0]], dtype=">f4")
    system = Misreading(lambda x: np.concatenate([x.numpy(), x[:, :1].numpy()], 1).astype(">f8"))
    assert torch.equal(system.forward(x, np.zeros(1, dtype=">f8")),
                       torch.tensor([[0.25, -0.5, 0.25], [0.75, 1.0, 0.75]]))


def test_a_reading_in_another_dtype_becomes_float32_and_carries_no_graph_of_the_inputs() -> None:
    system = Misreading(lambda x: x.double().sum(1, keepdim=True).expand(len(x), 3))
    y = system.forward(torch.rand(4, 2).requires_grad_(), torch.zeros(1))
    assert y.dtype == torch.float32 and not y.requires_grad
    y = Misreading(lambda x: x.sum(1, keepdim=True).expand(len(x), 3).numpy()).forward(torch.rand(4, 2),
                                                                                       torch.zeros(1))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32


def test_a_reading_computed_with_a_parameter_of_the_system_is_a_measurement_without_its_graph() -> None:
    """A system whose _run scaled its reading by an nn.Parameter of its own (a calibration it holds) returned the
    graph with it: torch warned from the finiteness check, and fitting a twin to data collected from it stopped with
    "RuntimeError: Trying to backward through the graph a second time"."""
    gain = torch.nn.Parameter(torch.full((3,), 2.0))
    system = Misreading(lambda x: x.sum(1, keepdim=True) * gain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = system.forward(torch.ones(4, 2), torch.zeros(1))
    assert not y.requires_grad and torch.equal(y, torch.full((4, 3), 4.0))


def test_a_reading_in_a_reused_numpy_buffer_is_copied() -> None:
    """A system returning the float32 buffer its DAQ reads into (as nidaqmx's readers fill one) returned a tensor
    sharing it: the next call's reading overwrote the outputs already collected for a twin, silently; a flipped view
    of it was refused as "not numbers"."""
    buffer = np.zeros((4, 3), dtype=np.float32)

    def read_into_buffer(x: torch.Tensor) -> np.ndarray:
        buffer[: len(x)] = x.sum(1, keepdim=True).numpy()
        return buffer[: len(x)]

    system = Misreading(read_into_buffer)
    first = system.forward(torch.full((2, 2), 0.25), torch.zeros(1))
    system.forward(torch.full((2, 2), -0.5), torch.zeros(1))
    assert torch.equal(first, torch.full((2, 3), 0.5))
    flipped = Misreading(lambda x: read_into_buffer(x)[::-1]).forward(torch.tensor([[0.5, 0.5], [0.0, 0.25]]),
                                                                       torch.zeros(1))
    assert torch.equal(flipped, torch.tensor([[0.25] * 3, [1.0] * 3]))


def test_a_systems_repr_gives_its_shapes_and_bounds() -> None:
    """In a notebook a system showed as ``<hil.systems.optical.OpticalSystem object at 0x7f…>``, saying nothing of
    the shapes and bounds a forward pass takes."""
    assert repr(Misreading(lambda x: x)) == "<Misreading 'bench': x batch×2 in -1..1, θ 1 in -1..1, y batch×3>"


class Timed(Misreading):
    """A `Misreading` on a virtual clock: a device call takes 1 s; its calibration 10 s, runs one call, then fails
    if told to."""

    def __init__(self, fail_calibration: bool = False):
        super().__init__(lambda x: torch.zeros(len(x), 3))
        self.virtual_clock, self.fail_calibration = VirtualClock(), fail_calibration

    @property
    def clock(self) -> VirtualClock:
        return self.virtual_clock

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        self.virtual_clock.sleep(1.0)
        return super()._run(x, theta)

    def _calibrate(self) -> dict[str, float]:
        self.virtual_clock.sleep(10.0)
        self.forward(torch.zeros(1, 2), torch.zeros(1))
        if self.fail_calibration:
            raise DeviceError("bench: no light")
        return {"exposure_s": 0.01}


def test_device_time_counts_the_calibration_once_and_a_failed_use_too() -> None:
    system = Timed()
    assert system.calibrate() == {"exposure_s": 0.01}
    assert (system.device_time_s, system.calls) == (11.0, 1)  # not 12: the call inside it is not counted twice
    system.forward(torch.zeros(2, 2), torch.zeros(1))
    assert (system.device_time_s, system.calls) == (12.0, 2)
    failing = Timed(fail_calibration=True)
    with pytest.raises(DeviceError, match="no light"):
        failing.calibrate()
    assert failing.device_time_s == 11.0
    failing.forward(torch.zeros(2, 2), torch.zeros(1))
    assert failing.device_time_s == 12.0  # the failure left nothing half-counted


SLIPPING_WORLD = '''
from simulators.resistive import ResistiveNetwork


class SlippingNetwork(ResistiveNetwork):
    kind = "slipping_network"

    def respond(self, drive_v, sample_rate_hz):
        return {}["slip"]


class SlippingHold(ResistiveNetwork):
    kind = "slipping_hold"

    def hold(self):
        return {}["hold"]


class SlippingHidden(ResistiveNetwork):
    kind = "slipping_hidden"

    def hidden_parameters(self):
        return {}["hidden"]
'''

RELAYING_SYSTEM = '''
from hil.systems.resistive import ResistiveNetworkSystem


class Relaying(ResistiveNetworkSystem):
    def _run(self, x, theta):
        return super()._run(x, theta)
'''


@pytest.mark.parametrize("system_kind", ["relaying_system:Relaying", "hil.systems.resistive:ResistiveNetworkSystem"])
def test_a_plugin_worlds_slip_under_a_system_s_run_is_said_at_the_worlds_respond(
        tmp_path, monkeypatch: pytest.MonkeyPatch, system_kind: str) -> None:
    """A plugin world's own error, which a system's _run reached through hil's simulated instruments, was placed at
    a plugin system's line that called them (its output.play), as if the system had the slip; under hil's own
    resistive-network system, hil run ended in the KeyError's traceback of 50 lines (exit status 1)."""
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput

    (tmp_path / "slipping_world.py").write_text(SLIPPING_WORLD)
    (tmp_path / "relaying_system.py").write_text(RELAYING_SYSTEM)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("slipping_world", "relaying_system"):  # this test's files, not an earlier parameter's
        monkeypatch.delitem(sys.modules, module, raising=False)
    from slipping_world import SlippingNetwork

    world = SlippingNetwork()
    output = SimulatedAnalogOutput(world, name="out", limits={"voltage_v": {"min": -2.5, "max": 2.5}})
    reader = SimulatedAnalogInput(world, name="in")
    for instrument in (output, reader):
        instrument.connect()
    system = lookup("systems", system_kind)({"output": output, "input": reader}, name="net")
    world_file = tmp_path / "slipping_world.py"
    line = world_file.read_text().splitlines().index('        return {}["slip"]') + 1
    with pytest.raises(DeviceError, match=rf"^simulated slipping_network: slipping_world\.SlippingNetwork\.respond "
                                          rf"raised KeyError: 'slip' \({re.escape(str(world_file))}:{line}\); fix it "
                                          "there$"):
        system(torch.zeros(2, system.n_in), torch.full((system.n_params,), 1.0))

def test_a_plugin_worlds_slip_in_its_hidden_parameters_is_said_in_one_line_at_its_line(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hil check and an oracle twin read a world's hidden parameters: a slip there ended them in a traceback."""
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput

    world_file = tmp_path / "slipping_world.py"
    world_file.write_text(SLIPPING_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slipping_world", raising=False)
    from slipping_world import SlippingHidden

    world = SlippingHidden()
    output = SimulatedAnalogOutput(world, name="out", limits={"voltage_v": {"min": -2.5, "max": 2.5}})
    reader = SimulatedAnalogInput(world, name="in")
    system = lookup("systems", "resistive_network")({"output": output, "input": reader}, name="net")
    line = world_file.read_text().splitlines().index('        return {}["hidden"]') + 1
    with pytest.raises(DeviceError, match=rf"^simulated slipping_hidden: slipping_world\.SlippingHidden\."
                                          rf"hidden_parameters raised KeyError: 'hidden' "
                                          rf"\({re.escape(str(world_file))}:{line}\); fix it there$"):
        system.oracle_model()


NARROW_WORLD = '''
import torch

from simulators.resistive import ResistiveNetwork


class NarrowNetwork(ResistiveNetwork):
    kind = "narrow_network"

    def respond(self, drive_v, sample_rate_hz):
        return super().respond(drive_v, sample_rate_hz)[:1]


class ArrayNetwork(ResistiveNetwork):
    kind = "array_network"

    def respond(self, drive_v, sample_rate_hz):
        return super().respond(drive_v, sample_rate_hz).numpy()


class NanNetwork(ResistiveNetwork):
    kind = "nan_network"

    def respond(self, drive_v, sample_rate_hz):
        return super().respond(drive_v, sample_rate_hz) / 0 * 0


class GainedNetwork(ResistiveNetwork):
    """A world computing its response with a torch parameter of its own, as a physics module holds its values."""

    kind = "gained_network"

    def _construct(self):
        super()._construct()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def respond(self, drive_v, sample_rate_hz):
        return self.gain * super().respond(drive_v, sample_rate_hz)
'''


def test_a_plugin_worlds_response_of_the_wrong_shape_is_said_at_its_respond(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin world whose respond returned one channel of its eight was reported by the analog input as "in: record
    has shape (1, 2), expected (8, 2)", naming neither the world nor its respond."""
    from hil.systems.resistive import ResistiveNetworkSystem
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput

    (tmp_path / "narrow_world.py").write_text(NARROW_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    from narrow_world import NarrowNetwork

    world = NarrowNetwork(preset="ideal")
    output = SimulatedAnalogOutput(world, name="out", limits={"voltage_v": {"min": -2.5, "max": 2.5}})
    reader = SimulatedAnalogInput(world, name="in")
    for instrument in (output, reader):
        instrument.connect()
    system = ResistiveNetworkSystem({"output": output, "input": reader}, name="net")
    with pytest.raises(DeviceError, match=rf"^simulated narrow_network: narrow_world\.NarrowNetwork\.respond returned "
                                          rf"shape \(1, 2\) for a drive of {world.n_outputs} channels × 2 samples; "
                                          r"return a tensor of the voltages at its 8 inputs, n_inputs × samples: "
                                          r"\(8, 2\)$"):
        system(torch.zeros(2, system.n_in), torch.full((system.n_params,), 1.0))
    with pytest.raises(DeviceError, match=r"NarrowNetwork\.respond returned shape \(1, 64\) .*: \(8, 64\)$"):
        reader.acquire(64, 1e3)


@pytest.mark.parametrize(("world", "returned", "fix"), [
    ("ArrayNetwork", "ndarray", r"return a tensor .*: \(8, 64\)"),
    ("NanNetwork", r"non-finite voltages \(NaN or infinite\)", "fix its computation there"),
])
def test_a_plugin_worlds_response_as_a_numpy_array_or_not_finite_is_said_at_its_respond(
        tmp_path, monkeypatch: pytest.MonkeyPatch, world: str, returned: str, fix: str) -> None:
    """An array for the tensor: the ideal preset's input failed with "AttributeError: 'numpy.ndarray' object has no
    attribute 'numpy'", the realistic one's with "in: record is no array of volts (round(): argument 'input' ...)";
    NaN was "in: record holds non-finite values", naming neither the world nor its respond."""
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput

    (tmp_path / "narrow_world.py").write_text(NARROW_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = getattr(importlib.import_module("narrow_world"), world)
    for preset in ("ideal", "realistic"):
        built = cls(preset=preset)
        SimulatedAnalogOutput(built, name="out").connect()
        with SimulatedAnalogInput(built, name="in") as reader, pytest.raises(
                DeviceError, match=rf"^simulated {cls.kind}: narrow_world\.{world}\.respond returned {returned} for a "
                                   rf"drive of \d+ channels × 64 samples; {fix}$"):
            reader.acquire(64, 1e3)


def test_a_plugin_worlds_response_computed_with_a_torch_parameter_is_read_as_its_values(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input's record kept the parameter's graph, and a system's call stopped with "system 'net': ..._run raised
    RuntimeError: Can't call numpy() on Tensor that requires grad", blaming the system's line that read the input."""
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
    from simulators.resistive import ResistiveNetwork

    (tmp_path / "narrow_world.py").write_text(NARROW_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    from narrow_world import GainedNetwork

    records = []
    for world in (GainedNetwork(preset="ideal"), ResistiveNetwork(preset="ideal")):
        with SimulatedAnalogOutput(world, name="out", limits={"voltage_v": {"min": -2.5, "max": 2.5}}) as output, \
                SimulatedAnalogInput(world, name="in") as reader:
            output.set_voltage(1, 1.0)
            output.set_output(1, True)
            records.append(reader.acquire(16, 1e3))
    assert np.abs(records[1]).max() > 0
    np.testing.assert_allclose(records[0], 0.5 * records[1], rtol=1e-6)


def test_a_plugin_worlds_slip_in_hold_is_said_at_its_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slip in a plugin world's hold, which its output calls before every change of a level (its safe state's too),
    was a bare KeyError."""
    from simulators.analog import SimulatedAnalogOutput

    (tmp_path / "slipping_world.py").write_text(SLIPPING_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slipping_world", raising=False)
    from slipping_world import SlippingHold

    world_file = tmp_path / "slipping_world.py"
    line = world_file.read_text().splitlines().index('        return {}["hold"]') + 1
    output = SimulatedAnalogOutput(SlippingHold(), name="out").connect()
    for act in (lambda: output.set_voltage(1, 0.5), output.close):  # the safe state on close sets every level
        with pytest.raises(DeviceError, match=rf"^simulated slipping_hold: slipping_world\.SlippingHold\.hold "
                                              rf"raised KeyError: 'hold' \({re.escape(str(world_file))}:{line}\); fix "
                                              "it there$"):
            act()
    assert not output.connected
