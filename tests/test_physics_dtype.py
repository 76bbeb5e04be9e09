"""The physics models of the five systems in double precision: moved to float64 they compute in float64 and
complex128 throughout, agree with float32, and pass `torch.autograd.gradcheck` in x and θ."""

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch.overrides import TorchFunctionMode

from hil.lab import Lab, LabConfig
from hil.physics.optics import fourier_window
from tests.simulators.test_optical import padded_fft_window

REPO = Path(__file__).resolve().parents[1]
#: The default lab's systems with fewer inputs and parameters, so that a full gradcheck takes seconds.
SMALLER = {"optical": {"n_in": 8, "n_params": 16, "n_out": 4}, "crossbar": {"n_in": 8, "n_out": 4},
           "oscillator": {"n_in": 2, "n_params": 2}}
#: Its optical bench again with two stacked panels, whose model holds the free-space transfer between them.
STACKED = {
    "worlds": {"stacked_table": {"kind": "optical_table", "preset": "realistic", "seed": 0,
                                 "config": {"optics": {"planes": 2}}}},
    "instruments": {"stacked_slm": {"driver": "simulated_slm", "world": "stacked_table"},
                    "stacked_camera": {"driver": "simulated_camera", "world": "stacked_table"}},
    "systems": {"stacked": {"kind": "optical", "instruments": {"slm": "stacked_slm", "camera": "stacked_camera"},
                            "settings": {"n_in": 8, "n_params": 16, "n_out": 4, "planes": 2}}},
}
SYSTEMS = ["optical", "fiber", "crossbar", "oscillator", "resistive_network", "stacked"]


@pytest.fixture(scope="module")
def lab():
    config = yaml.safe_load((REPO / "lab.yaml").read_text(encoding="utf-8"))
    for section, entries in STACKED.items():
        config[section].update(entries)
    for name, settings in SMALLER.items():
        config["systems"][name]["settings"].update(settings)
    used = {instrument for system in config["systems"].values() for instrument in system["instruments"].values()}
    config["instruments"] = {name: entry for name, entry in config["instruments"].items() if name in used}
    with Lab(LabConfig.model_validate(config)) as lab:
        for name in ("optical", "fiber", "stacked"):
            lab.systems[name].calibrate()  # the oracle needs the working point; the fiber's model is measured
        yield lab


def draw(bounds: tuple[float, float], shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Values (float64) at 10 to 90 % of the half-range either side of the centre of ``bounds``: away from the ends,
    where an SLM's phase wraps (2π), and from the centre, where a crossbar weight changes device (w = 0)."""
    low, high = bounds
    magnitude = 0.1 + 0.8 * torch.rand(shape, generator=generator, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).double()
    return (low + high) / 2 + (high - low) / 2 * sign * magnitude


def inputs(system, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return draw(system.x_bounds, (batch, system.n_in), generator), draw(system.theta_bounds, (system.n_params,),
                                                                         generator)


class BelowDouble(TorchFunctionMode):
    """Records every torch call in the block that returns a floating or complex tensor of less than double
    precision."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, tuple | list) else (result,):
            if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                                   torch.complex64):
                self.calls.append(getattr(func, "__qualname__", repr(func)))
        return result


@pytest.mark.parametrize("name", SYSTEMS)
def test_a_model_in_double_computes_in_float64_throughout_and_agrees_with_float32(lab, name: str) -> None:
    """The oracle (the physics model at the world's hidden calibration: every term non-zero). ``.double()`` used to
    fail in the optical and fiber models' float32 lens and blur matrices, and the resistive model returned float32."""
    system = lab.systems[name]
    model = system.oracle_model()
    x, theta = inputs(system, batch=4)
    with torch.no_grad():
        single = model(x.float(), theta.float())
        for move in (torch.nn.Module.double, lambda module: module.to(torch.float64)):
            moved = move(copy.deepcopy(model))
            with BelowDouble() as below:
                double = moved(x, theta)
            assert double.dtype == torch.float64 and below.calls == []
            torch.testing.assert_close(double.float(), single, rtol=1e-5, atol=1e-5 * float(single.abs().max()))
    assert single.dtype == torch.float32


@pytest.mark.parametrize("name", SYSTEMS)
def test_a_model_in_double_passes_gradcheck_in_x_and_theta(lab, name: str) -> None:
    """The oracle, at inputs away from the points where a model is not differentiable (`draw`). The crossbar's
    oracle rounds θ to the chip's conductance levels (the gradient passes straight through, the numerical one is
    0), so there it is checked in x alone, and in x and θ on the nominal model, which does not round."""
    system = lab.systems[name]
    x, theta = inputs(system, batch=2)
    x.requires_grad_()
    model = system.oracle_model().double()
    if name == "crossbar":
        assert torch.autograd.gradcheck(lambda x: model(x, theta), (x,))
        model = system.physics_model().double()
    assert torch.autograd.gradcheck(model, (x, theta.requires_grad_()))


def test_a_stacked_panel_model_saved_with_its_transfer_as_a_complex_tensor_still_loads(lab) -> None:
    """Twins saved before the transfer function was held as real parts keep loading (`twin.from_run`)."""
    system = lab.systems["stacked"]
    model = system.oracle_model()
    state = model.state_dict()
    state["transfer"] = torch.view_as_complex(state["transfer"])
    loaded = system.physics_model()
    loaded.load_state_dict(state)
    x, theta = inputs(system, batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(x.float(), theta.float()), model(x.float(), theta.float()))


def test_a_stacked_panel_model_loads_its_own_state_in_float32_and_float64(lab) -> None:
    """A twin saved now (transfer held as real parts) loads into a model as built, and a double model's state into
    a double model (`twin.from_run`, a checkpoint's resume)."""
    system = lab.systems["stacked"]
    x, theta = inputs(system, batch=2)
    for dtype in (torch.float32, torch.float64):
        model = system.oracle_model().to(dtype)
        loaded = system.physics_model().to(dtype)
        loaded.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert torch.equal(loaded(x.to(dtype), theta.to(dtype)), model(x.to(dtype), theta.to(dtype)))


def test_the_fourier_lens_of_a_complex128_field_is_exact_to_double_rounding() -> None:
    generator = torch.Generator().manual_seed(5)
    fields = torch.randn(3, 32, 48, dtype=torch.complex128, generator=generator)
    shift = torch.tensor([0.37, -0.81], dtype=torch.float64)
    window = fourier_window(fields, 128, (45, 20), shift)
    reference = padded_fft_window(fields, 128, (45, 20), (0.37, -0.81))
    assert window.dtype == torch.complex128
    assert float((window - reference).abs().max()) < 1e-12 * float(reference.abs().max())


@pytest.mark.parametrize("name", ["optical", "fiber", "stacked"])
def test_a_model_in_double_given_float32_inputs_computes_in_float64(lab, name: str) -> None:
    """The optical and fiber models compute at the higher of their own precision and that of x and θ: a model
    moved to float64 and given float32 inputs (a dataset's tensors) gives what it gives for the same values in
    float64, to the rounding of the phases' encoding, not a float32 computation (nor a dtype error)."""
    system = lab.systems[name]
    model = system.oracle_model().double()
    x, theta = (value.float() for value in inputs(system, batch=4))
    with torch.no_grad():
        given = model(x, theta)
        double = model(x.double(), theta.double())
    assert given.dtype == torch.float64
    assert float((given - double).abs().max()) < 1e-7 * float(double.abs().max())


def test_a_resistive_network_in_float64_takes_plain_number_parameters_at_float64() -> None:
    """A float64 equilibrium with the device parameters left as plain numbers (the nominal ideality 1.752, slope
    factor, temperatures...) equals the one with those numbers given as float64 tensors: they used to enter as
    float32 tensors, 1.752 as 1.7519999..., a float64 result off in its eighth digit."""
    from hil.physics.resistive import DeviceParameters, Layout, equilibrium, nominal_parameters

    layout = Layout(3, 6, 2)
    nominal = nominal_parameters(layout)
    assert any(not isinstance(value, torch.Tensor) for value in nominal)
    plain = DeviceParameters(*(v.double() if isinstance(v, torch.Tensor) else v for v in nominal))
    tensors = DeviceParameters(*(torch.as_tensor(v).double() if isinstance(v, torch.Tensor)
                                 else torch.tensor(v, dtype=torch.float64) for v in nominal))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, layout.n_inputs, generator=generator, dtype=torch.float64)
    gates = 0.6 + 1.3 * torch.rand(layout.n_edges, generator=generator, dtype=torch.float64)
    voltages = equilibrium(layout, plain, x, gates)
    assert voltages.dtype == torch.float64 and torch.equal(voltages, equilibrium(layout, tensors, x, gates))


def test_each_optical_step_keeps_the_precision_of_the_pattern_it_is_given() -> None:
    """A fixed crosstalk (a plain number, as a simulator's) on a float64 pattern, and a float32 field propagated
    through a complex128 transfer function: each step computes at the pattern's or field's precision."""
    from hil.physics.optics import crosstalk, propagate

    generator = torch.Generator().manual_seed(0)
    drive = torch.rand(2, 6, 8, generator=generator, dtype=torch.float64)
    blurred = crosstalk(drive, 0.3)
    assert blurred.dtype == torch.float64
    torch.testing.assert_close(blurred, crosstalk(drive, torch.tensor(0.3, dtype=torch.float64)), rtol=1e-12, atol=0)
    transfer = torch.polar(torch.ones(12, 16, dtype=torch.float64), torch.rand(12, 16, generator=generator,
                                                                               dtype=torch.float64))
    field = torch.polar(torch.ones(2, 6, 8), torch.rand(2, 6, 8, generator=generator))
    assert propagate(field, transfer).dtype == torch.complex64
    assert propagate(field.to(torch.complex128), transfer).dtype == torch.complex128
