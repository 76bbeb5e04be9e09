"""PhysicalLayer: PAT gives the device's value and the twin's gradient; modes; θ kept within bounds."""

import copy
import io
import json
import math
import textwrap

import pytest
import torch
from torch import nn

from hil.errors import ConfigError, LimitError
from hil.nn import PhysicalLayer, float32_bounds, physical_layers, physics_aware, project_, set_mode
from hil.store import save_twin
from hil.systems.base import PhysicalSystem, PhysicsModel
from hil.twin.models import Twin, build_twin, frozen, load_twin, trainable
from tests.lab_text import lab_from_text

LAB = textwrap.dedent("""
    worlds:
      chip: {kind: memristor_crossbar, preset: realistic, seed: 4}
      exact: {kind: memristor_crossbar, preset: ideal, seed: 0, config: {geometry: {max_batch: 8}}}
      table: {kind: optical_table, preset: ideal, seed: 0}
    instruments:
      crossbar: {driver: simulated_crossbar, world: chip}
      exact: {driver: simulated_crossbar, world: exact}
      slm: {driver: simulated_slm, world: table}
      camera: {driver: simulated_camera, world: table}
    systems:
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 8, n_out: 4}}
      exact: {kind: crossbar, instruments: {crossbar: exact}, settings: {n_in: 8, n_out: 4}}
      optical: {kind: optical, instruments: {slm: slm, camera: camera}}
""")


@pytest.fixture
def lab(tmp_path):
    with lab_from_text(LAB, tmp_path) as lab:
        yield lab


def test_pat_forward_is_the_device_and_backward_is_the_twin(lab) -> None:
    system = lab.systems["crossbar"]
    twin = build_twin("physics", system)
    x = torch.rand(16, 8) * 2 - 1
    theta = (torch.rand(32) * 2 - 1).requires_grad_()
    x_pat = x.clone().requires_grad_()
    weights = torch.randn(16, 4)

    y = physics_aware(x_pat, theta, system, twin)
    (y * weights).sum().backward()
    grad_theta, grad_x = theta.grad.clone(), x_pat.grad.clone()

    theta.grad = None
    x_twin = x.clone().requires_grad_()
    (twin(x_twin, theta) * weights).sum().backward()
    torch.testing.assert_close(grad_theta, theta.grad)
    torch.testing.assert_close(grad_x, x_twin.grad)
    # the value is a fresh device measurement (realistic: noisy), not the twin's prediction
    with torch.no_grad():
        assert (y - twin(x, theta)).abs().max() > 1e-3


def test_pat_layer_measures_at_its_own_inputs_and_parameters_and_records_them(lab) -> None:
    system = lab.systems["exact"]  # ideal: the device is deterministic, so its value can be checked exactly
    twin = build_twin("physics", system)
    with torch.no_grad():
        twin.affine.gain.fill_(1.5)  # a twin unlike the device
    layer = PhysicalLayer(system, twin, mode="pat", seed=2)
    layer.record = []
    x = torch.rand(6, 8) * 2 - 1
    theta_seen = layer.theta.detach().clone()
    calls = system.calls
    y = layer(x)
    assert system.calls - calls == 1  # one device call
    torch.testing.assert_close(y.detach(), system.forward(x, theta_seen))
    weights = torch.randn(6, 4)
    (y * weights).sum().backward()
    theta = theta_seen.clone().requires_grad_()
    (twin(x, theta) * weights).sum().backward()
    torch.testing.assert_close(layer.theta.grad, theta.grad)
    # the twin is held, not trained: θ is the layer's only parameter and the only entry of its state
    assert list(layer.parameters()) == [layer.theta] and list(layer.state_dict()) == ["theta"]
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    assert not torch.equal(layer.theta.detach(), theta_seen)
    # the record keeps what the device saw, not the θ the optimiser has moved on to since
    (recorded_x, recorded_theta, recorded_y), = layer.record
    torch.testing.assert_close(recorded_theta, theta_seen)
    torch.testing.assert_close(recorded_x, x)
    torch.testing.assert_close(recorded_y, y.detach())
    layer.mode = "twin"
    calls = system.calls
    with torch.no_grad():
        torch.testing.assert_close(layer(x), twin(x, layer.theta))
    assert system.calls == calls  # twin mode never calls the device
    layer.project_()  # the SGD step above left the bounds
    layer.mode = "device"  # evaluation on the hardware: the device's value, not the (here 1.5 times too large) twin's
    torch.testing.assert_close(layer(x), system.forward(x, layer.theta.detach()))
    assert system.calls == calls + 2


def test_modes_and_bounds(lab) -> None:
    system = lab.systems["crossbar"]
    layer = PhysicalLayer(system, build_twin("physics", system), mode="device", seed=1)
    assert ((layer.theta >= -1) & (layer.theta <= 1)).all()
    x = torch.rand(4, 8)
    assert not layer(x).requires_grad  # device mode: evaluation, no gradient
    layer.mode = "twin"
    assert layer(x).requires_grad
    with torch.no_grad():
        layer.theta.add_(5.0)
    layer.project_()
    assert (layer.theta == 1.0).all()  # clamped: crossbar weights are not periodic
    with pytest.raises(ConfigError, match="needs a twin"):
        PhysicalLayer(system, None, mode="pat")(x)
    with pytest.raises(ConfigError, match="unknown mode"):
        set_mode(torch.nn.Sequential(layer), "quantum")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["twin", "pat", "device"])
@pytest.mark.parametrize(("shape", "message"), [((8,), r"x has shape \(8,\), expected batch×8$"),
                                                ((1, 1, 8), r"x has shape \(1, 1, 8\), expected batch×8$"),
                                                ((1, 7), r"x has shape \(1, 7\), expected batch×8$"),
                                                ((0, 8), "x is empty$")])
def test_inputs_without_a_batch_axis_are_refused_in_every_mode(lab, mode: str, shape: tuple, message: str) -> None:
    """One sample given without its batch axis went through the twin (in-silico training, a twin's evaluation) to
    torch's IndexError; the device refused it by name."""
    system = lab.systems["crossbar"]
    for kind in ("physics", "neural"):
        layer = PhysicalLayer(system, build_twin(kind, system), mode=mode)
        with pytest.raises(LimitError, match=r"^system 'crossbar': " + message):
            layer(torch.zeros(shape))
    assert PhysicalLayer(system, build_twin("physics", system), mode=mode)(torch.zeros(1, 8)).shape == (1, 4)


def test_mode_and_projection_reach_every_physical_layer(lab) -> None:
    system = lab.systems["exact"]
    twin = build_twin("physics", system)
    model = nn.Sequential(PhysicalLayer(system, twin, mode="device", seed=1), nn.Linear(4, 8), nn.Tanh(),
                          PhysicalLayer(system, twin, mode="device", seed=2))
    layers = physical_layers(model)
    assert layers == [model[0], model[3]]
    set_mode(model, "twin")
    assert [layer.mode for layer in layers] == ["twin", "twin"]
    with torch.no_grad():
        for layer in layers:
            layer.theta.sub_(5.0)
    project_(model)
    assert all((layer.theta == -1.0).all() for layer in layers)
    nested = nn.Sequential(nn.Sequential(nn.Linear(8, 8), layers[0]), nn.ModuleList([layers[1]]))
    assert physical_layers(nested) == layers  # found inside containers, not only among the model's children


def test_theta_starts_seeded_within_bounds_or_at_the_centre(lab) -> None:
    system = lab.systems["optical"]  # θ: phases in 0..2π
    low, high = system.theta_bounds
    first, again, other = (PhysicalLayer(system, seed=seed).theta.detach() for seed in (1, 1, 2))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert ((first >= low) & (first <= high)).all() and first.max() - first.min() > (high - low) / 2
    torch.testing.assert_close(PhysicalLayer(system, theta_init="center").theta.detach(),
                               torch.full((system.n_params,), torch.pi))
    assert torch.equal(PhysicalLayer(lab.systems["crossbar"], theta_init="center").theta.detach(), torch.zeros(32))
    with pytest.raises(ConfigError, match="theta_init"):
        PhysicalLayer(system, theta_init="zeros")
    crossbar = PhysicalLayer(lab.systems["crossbar"], seed=1).theta.detach()  # θ in -1..1: the lower half too
    assert crossbar.min() < -0.9 and crossbar.max() > 0.9


def test_sigmoid_input_map_spans_the_input_bounds(lab) -> None:
    system = lab.systems["exact"]
    layer = PhysicalLayer(system, mode="device", input_map="sigmoid", seed=3)
    raw = torch.tensor([-50.0, 0.0, 50.0]).repeat_interleave(8).reshape(3, 8)
    mapped = torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(8).reshape(3, 8)  # the crossbar's x: -1..1
    torch.testing.assert_close(layer(raw), system.forward(mapped, layer.theta.detach()))
    with pytest.raises(ConfigError, match="input_map"):
        PhysicalLayer(system, input_map="tanh")


def test_phases_wrap_instead_of_clamping(lab) -> None:
    system = lab.systems["optical"]
    layer = PhysicalLayer(system, mode="device", theta_init="center")
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([2 * torch.pi + 0.25, -0.25]).repeat(system.n_params // 2))
    layer.project_()
    expected = torch.tensor([0.25, 2 * torch.pi - 0.25]).repeat(system.n_params // 2)  # wrapped from above and below
    torch.testing.assert_close(layer.theta.detach(), expected)


class TurnTable(PhysicalSystem):
    """A device turning each input by a phase θ in -π..π (periodic): y = x cos θ, computed exactly."""

    kind = "turn_table"
    theta_periodic = True

    def __init__(self, theta_bounds: tuple[float, float] = (-math.pi, math.pi),
                 x_bounds: tuple[float, float] = (-1.0, 1.0)):
        super().__init__({}, n_in=2, n_out=2, n_params=2, x_bounds=x_bounds, theta_bounds=theta_bounds,
                         max_batch=8)

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return x * theta.cos()

    def physics_model(self) -> PhysicsModel:
        raise NotImplementedError


class TurnTwin(Twin):
    """The turn table's exact twin, in whatever dtype it is given."""

    kind = "turn"

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return x * theta.cos()


def test_a_phase_wraps_over_its_own_period_wherever_the_bounds_start() -> None:
    """Wrapping is modulo the width of the bounds, counted from their lower end: a period of -π..π, not 0..2π."""
    system = TurnTable()
    layer = PhysicalLayer(system, mode="device", theta_init="center")
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([math.pi + 0.25, -math.pi - 0.25]))
    layer.project_()
    torch.testing.assert_close(layer.theta.detach(), torch.tensor([-math.pi + 0.25, math.pi - 0.25]))
    x = torch.tensor([[1.0, -0.5]])
    torch.testing.assert_close(layer(x), x * torch.tensor([math.pi + 0.25, -math.pi - 0.25]).cos())  # the same phase


@pytest.mark.parametrize("kind", ["neural", "residual"])
def test_a_learned_twin_of_phases_is_the_same_after_the_wrap(lab, kind) -> None:
    """Equal to float32 rounding: θ + 2π rounds θ by up to 2.4e-7 rad, which weights of unit variance carry to at most
    2.0e-5 of the outputs' largest value (residual; 1.4e-6 neural; measured over seeds 0–299). A twin that jumped at
    the wrap would differ by the order of that value; the tolerance is 1e-4 of it, at the worst seed."""
    system = lab.systems["optical"]  # θ in [0, 2π): training wraps it, so the twin must not jump there
    torch.manual_seed(112)
    twin = build_twin(kind, system, hidden=(16,))
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.normal_()
    x = torch.rand(4, system.n_in)
    theta = torch.rand(system.n_params) * 2 * torch.pi
    with torch.no_grad():
        reference = twin(x, theta)
        tolerance = 1e-4 * float(reference.abs().max())
        torch.testing.assert_close(twin(x, theta + 2 * torch.pi), reference, rtol=0, atol=tolerance)
        torch.testing.assert_close(twin(x, torch.zeros_like(theta)), twin(x, torch.full_like(theta, 2 * torch.pi)),
                                   rtol=0, atol=tolerance)


def test_large_batches_are_split_into_device_calls_in_order(lab) -> None:
    system = lab.systems["exact"]  # ideal: the device computes its physics exactly; 8 rows per device call
    x = torch.rand(system.max_batch * 2 + 3, 8) * 2 - 1
    theta = torch.rand(32) * 2 - 1
    calls = system.calls
    y = system.forward(x, theta)
    assert y.shape == (system.max_batch * 2 + 3, 4) and system.calls - calls == 3
    with torch.no_grad():
        torch.testing.assert_close(y, build_twin("oracle", system)(x, theta))  # every row where it belongs


def test_pat_over_a_batch_of_several_device_calls_is_the_device_in_order_and_the_twin_s_gradient_at_the_batch(
        lab) -> None:
    """19 rows on a device taking 8 a call: three calls, their rows in the batch's order, and one backward pass
    through the twin at all 19 rows and the θ the three calls ran at."""
    system = lab.systems["exact"]  # ideal: the device computes its physics, so the oracle gives its values
    oracle = build_twin("oracle", system)
    layer = PhysicalLayer(system, oracle, mode="pat", seed=3)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(2 * system.max_batch + 3, 8, generator=generator) * 2 - 1).requires_grad_()
    weights = torch.randn(len(x), 4, generator=generator)
    calls = system.calls
    y = layer(x)
    assert system.calls - calls == 3
    (y * weights).sum().backward()
    x_twin, theta = x.detach().clone().requires_grad_(), layer.theta.detach().clone().requires_grad_()
    modelled = oracle(x_twin, theta)
    (modelled * weights).sum().backward()
    torch.testing.assert_close(y.detach(), modelled.detach())
    torch.testing.assert_close(layer.theta.grad, theta.grad, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x_twin.grad, rtol=0, atol=0)


def test_a_neural_twin_saved_before_the_phase_encoding_loads_as_it_was_saved(lab, tmp_path) -> None:
    system = lab.systems["optical"]
    old = build_twin("neural", system, hidden=(8,), theta_as_phase=False)  # θ scaled as it is, as before
    save_twin(old, tmp_path / "twin")
    spec = json.loads((tmp_path / "twin" / "twin.json").read_text())
    del spec["theta_as_phase"]  # a twin.json of then
    (tmp_path / "twin" / "twin.json").write_text(json.dumps(spec))
    loaded = load_twin(tmp_path / "twin", system)
    x, theta = torch.rand(3, system.n_in), torch.rand(system.n_params) * 2 * torch.pi
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, theta), old(x, theta))
    new = build_twin("neural", system, hidden=(8,))
    save_twin(new, tmp_path / "new")
    assert load_twin(tmp_path / "new", system).theta_as_phase is True


@pytest.mark.parametrize("mode", ["pat", "twin"])
def test_training_through_a_layer_spends_no_gradient_on_the_twins_own_parameters(lab, mode) -> None:
    """The twin is held, not trained: the backward pass gives x and θ their gradients and leaves the twin's
    parameters without one (computing them costs time on every step, and nothing uses them)."""
    system = lab.systems["exact"]
    twin = build_twin("residual", system, hidden=(8,))
    layer = PhysicalLayer(system, twin, mode=mode, seed=2)
    x = (torch.rand(6, 8) * 2 - 1).requires_grad_()
    weights = torch.randn(6, 4)
    (layer(x) * weights).sum().backward()
    assert all(parameter.grad is None for parameter in twin.parameters())
    theta, x_twin = layer.theta.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    (twin(x_twin, theta) * weights).sum().backward()  # the twin's own vector-Jacobian product, as before
    torch.testing.assert_close(layer.theta.grad, theta.grad, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x_twin.grad, rtol=0, atol=0)


def test_a_frozen_twin_is_trainable_again_after_its_block_even_one_that_raised_and_one_frozen_by_hand_stays_so(
        lab) -> None:
    twin = build_twin("residual", lab.systems["exact"], hidden=(8,))
    by_hand = twin.physics_twin.affine.gain.requires_grad_(False)
    with pytest.raises(RuntimeError, match="inside"), frozen(twin):
        assert not trainable(twin)
        raise RuntimeError("inside")
    assert trainable(twin) == [p for p in twin.parameters() if p is not by_hand] and not by_hand.requires_grad


def test_pat_forward_is_the_measurement_to_the_bit_however_far_the_twin_is_from_it(lab) -> None:
    """The next layer sees what the device measured, not the twin's prediction plus a rounded difference (a twin
    1000 times off lost the measurement's last 13 bits that way)."""
    system = lab.systems["exact"]  # ideal: the same call measures the same value
    twin = build_twin("physics", system)
    with torch.no_grad():
        twin.affine.gain.fill_(1000.0)
        twin.affine.offset.fill_(3.0)
    generator = torch.Generator().manual_seed(0)
    x, theta = torch.rand(16, 8, generator=generator) * 2 - 1, torch.rand(32, generator=generator) * 2 - 1
    measured = system.forward(x, theta)
    y = physics_aware(x, theta.clone().requires_grad_(), system, twin)
    assert torch.equal(y.detach(), measured)


@pytest.mark.parametrize(("name", "start", "bounds"), [
    ("optical", -1e-8, (0.0, 2 * math.pi)),  # just below 0: wraps to float32(2π), which lies above 2π
    ("gates", 5.0, (0.5, 1.1)),  # above the top: clamps to float32(1.1), which lies above 1.1
    ("gates", -5.0, (0.7, 1.5)),  # below the bottom: clamps to float32(0.7), which lies below 0.7
])
def test_projected_theta_is_always_accepted_by_the_device(lab, tmp_path, name, start, bounds) -> None:
    """θ after `project_` lies within the system's bounds as the system checks them (in float64), so a training
    step that moves a phase just below 0 does not stop the run with a LimitError."""
    if name == "gates":
        text = textwrap.dedent(f"""
            worlds:
              net: {{kind: resistive_network, preset: ideal, seed: 0}}
            instruments:
              out: {{driver: simulated_analog_output, world: net}}
              in: {{driver: simulated_analog_input, world: net}}
            systems:
              gates: {{kind: resistive_network, instruments: {{output: out, input: in}},
                       settings: {{gate_min_v: {bounds[0]}, gate_max_v: {bounds[1]}}}}}
        """)
        with lab_from_text(text, tmp_path) as other:
            _check_projection(other.systems["gates"], start, bounds)
    else:
        _check_projection(lab.systems[name], start, bounds)


def _check_projection(system, start: float, bounds: tuple[float, float]) -> None:
    assert system.theta_bounds == bounds
    layer = PhysicalLayer(system, mode="device", theta_init="center")
    with torch.no_grad():
        layer.theta.fill_(start)
    layer.project_()
    values = [float(v) for v in layer.theta.detach()]
    assert all(bounds[0] <= v <= bounds[1] for v in values)
    layer(torch.rand(2, system.n_in))  # the device takes it


def test_float32_bounds_are_the_outermost_float32_values_within_and_none_is_an_error() -> None:
    assert float32_bounds(-1.0, 1.0) == (-1.0, 1.0)
    low, high = float32_bounds(0.7, 2 * math.pi)
    assert low >= 0.7 and high <= 2 * math.pi
    assert float(torch.nextafter(torch.tensor(low), torch.tensor(0.0))) < 0.7  # the outermost: one step beyond is out
    assert float(torch.nextafter(torch.tensor(high), torch.tensor(7.0))) > 2 * math.pi
    with pytest.raises(ConfigError, match=r"^bounds 0\.1\.\.0\.100000000001\d* hold no float32 value; widen them$"):
        float32_bounds(0.1, 0.1 + 1e-12)  # searched for ever before


def test_with_an_exact_twin_the_pat_gradient_is_the_device_s_own_derivative() -> None:
    """gradcheck compares the backward pass (the twin's vector-Jacobian product) with finite differences of the
    device's measurements, in x and in θ (float32 device: a coarse step and tolerance)."""
    system, twin = TurnTable(), TurnTwin(TurnTable())
    x = torch.tensor([[0.3, -0.7], [0.9, 0.1]], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.4, -2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, theta: physics_aware(x, theta, system, twin), (x, theta), eps=1e-3,
                                    atol=1e-3, rtol=1e-3)


def test_a_layer_leaves_each_twin_parameter_trainable_or_frozen_as_it_found_it(lab) -> None:
    """The layer's pass holds the twin's parameters constant only for itself: refining the twin afterwards finds the
    trainable ones trainable again, and one frozen by its owner stays frozen."""
    system = lab.systems["exact"]
    twin = build_twin("residual", system, hidden=(8,))
    next(twin.parameters()).requires_grad_(False)
    before = [parameter.requires_grad for parameter in twin.parameters()]
    for mode in ("pat", "twin"):
        layer = PhysicalLayer(system, twin, mode=mode, seed=2)
        layer(torch.rand(3, 8)).sum().backward()
        assert [parameter.requires_grad for parameter in twin.parameters()] == before
    assert before.count(False) == 1


def test_a_twin_set_later_is_the_one_the_layer_uses_and_none_is_refused_by_the_system_s_name(lab) -> None:
    system = lab.systems["exact"]  # named exact, of kind crossbar
    layer = PhysicalLayer(system, mode="twin", seed=1)
    twin = build_twin("physics", system)
    layer.set_twin(twin)
    x = torch.rand(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), twin(x, layer.theta))
    layer.set_twin(None)
    with pytest.raises(ConfigError) as caught:
        layer(x)
    assert str(caught.value) == "physical layer on 'exact' in 'twin' mode needs a twin"


def test_an_unknown_mode_is_refused_when_it_is_given_not_when_the_layer_runs(lab) -> None:
    """It was refused at the first forward pass, which may come after a long twin fit."""
    system = lab.systems["exact"]
    with pytest.raises(ConfigError, match=r"^unknown mode 'Pat'; modes: pat, twin, device$"):
        PhysicalLayer(system, build_twin("physics", system), mode="Pat")  # type: ignore[arg-type]
    layer = PhysicalLayer(system, build_twin("physics", system), mode="twin")
    with pytest.raises(ConfigError, match=r"^unknown mode 'quantum'; modes: pat, twin, device$"):
        layer.mode = "quantum"  # type: ignore[assignment]
    assert layer.mode == "twin" and layer(torch.rand(3, 8)).shape == (3, system.n_out)


def test_sigmoid_input_map_uses_the_input_bounds_not_the_parameter_bounds() -> None:
    system = TurnTable()  # x in -1..1, θ in -π..π
    layer = PhysicalLayer(system, mode="device", input_map="sigmoid", seed=0)
    theta = layer.theta.detach()
    torch.testing.assert_close(layer(torch.tensor([[-50.0, 50.0]])), torch.tensor([[-1.0, 1.0]]) * theta.cos())


def test_a_layer_on_bounds_that_hold_no_float32_value_is_refused_when_built() -> None:
    with pytest.raises(ConfigError, match="hold no float32 value"):
        PhysicalLayer(TurnTable(theta_bounds=(0.1, 0.1 + 1e-12)), theta_init="center")


def test_projection_wraps_a_phase_just_below_0_onto_0_and_leaves_one_inside_unchanged(lab) -> None:
    """-1e-8 is the phase of 0 and 2π; float32(2π) is above 2π, so the wrap lands on 0, not on the float32 below 2π;
    the highest float32 within 0..2π is already inside and stays where it is."""
    system = lab.systems["optical"]
    layer = PhysicalLayer(system, mode="device", theta_init="center")
    _, inside_high = float32_bounds(*system.theta_bounds)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([-1e-8, inside_high]).repeat(system.n_params // 2))
    layer.project_()
    assert torch.equal(layer.theta.detach(), torch.tensor([0.0, inside_high]).repeat(system.n_params // 2))


def test_sigmoid_input_map_stays_within_input_bounds_that_float32_cannot_hold() -> None:
    """-0.2 + 0.6 × sigmoid(50) rounds in float32 to one step above float32(0.4): the device refused a saturated
    input mid-run (about a fifth of bounds given to a tenth are so)."""
    system = TurnTable(x_bounds=(-0.2, 0.4))
    layer = PhysicalLayer(system, TurnTwin(system), mode="device", input_map="sigmoid", theta_init="center")
    theta = layer.theta.detach()
    low, high = float32_bounds(-0.2, 0.4)
    torch.testing.assert_close(layer(torch.tensor([[-50.0, 50.0]])), torch.tensor([[low, high]]) * theta.cos(),
                               rtol=0, atol=0)
    layer.mode = "pat"  # inside the bounds the map's gradient is the sigmoid's
    x = torch.tensor([[0.3, -1.2]], requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, 0.6 * torch.sigmoid(x.detach()) * (1 - torch.sigmoid(x.detach())) * theta.cos())


IDEAL_LAB = textwrap.dedent("""
    worlds:
      table: {kind: optical_table, preset: ideal, seed: 0}
      fiber: {kind: multimode_fiber, preset: ideal, seed: 0}
      chip: {kind: memristor_crossbar, preset: ideal, seed: 0}
      oscillators: {kind: oscillator_network, preset: ideal, seed: 0}
      net: {kind: resistive_network, preset: ideal, seed: 0}
    instruments:
      slm: {driver: simulated_slm, world: table}
      camera: {driver: simulated_camera, world: table}
      fiber_slm: {driver: simulated_slm, world: fiber}
      fiber_camera: {driver: simulated_camera, world: fiber}
      crossbar: {driver: simulated_crossbar, world: chip}
      shaker: {driver: simulated_analog_output, world: oscillators, limits: {voltage_v: {min: -2.0, max: 2.0}}}
      probes: {driver: simulated_analog_input, world: oscillators}
      net_out: {driver: simulated_analog_output, world: net, limits: {voltage_v: {min: -2.5, max: 2.5}}}
      net_in: {driver: simulated_analog_input, world: net}
    systems:
      optical: {kind: optical, instruments: {slm: slm, camera: camera}}
      fiber: {kind: fiber, instruments: {slm: fiber_slm, camera: fiber_camera}}
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 16, n_out: 8}}
      oscillator: {kind: oscillator, instruments: {output: shaker, input: probes}}
      resistive: {kind: resistive_network, instruments: {output: net_out, input: net_in}}
""")


@pytest.mark.parametrize("name", ["optical", "fiber", "crossbar", "oscillator", "resistive"])
def test_on_an_ideal_bench_pat_through_the_oracle_gives_the_gradients_of_the_physics(tmp_path, name) -> None:
    """On the ideal preset the device computes its physics model with the world's hidden values: PAT through the
    oracle then gives every parameter of a network (digital layers before and after the physical one) the gradient
    of autograd through that physics, but for what the measured forward pass differs by (float32 rounding; the
    oscillators' ringing on from the call before: 3e-6 of the outputs, 2e-5 of a gradient), and the physics'
    derivatives are the device's (central differences: relative 1e-3 at most)."""
    with lab_from_text(IDEAL_LAB, tmp_path) as lab:
        system = lab.systems[name]
        system.calibrate()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, system.n_in), PhysicalLayer(system, build_twin("oracle", system),
                                                                       input_map="sigmoid", seed=1),
                              nn.Linear(system.n_out, 3))
        x, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
        gradients = {}
        for mode in ("pat", "twin"):
            model.zero_grad()
            set_mode(model, mode)
            nn.functional.cross_entropy(model(x), labels).backward()
            gradients[mode] = {key: p.grad.clone() for key, p in model.named_parameters()}
        for key, pat in gradients["pat"].items():
            twin = gradients["twin"][key]
            assert (pat - twin).abs().max() <= 1e-4 * twin.abs().max(), key
        h = 3e-3 * (system.theta_bounds[1] - system.theta_bounds[0])
        physics = system.oracle_model()
        theta = model[1].theta.detach().clamp(system.theta_bounds[0] + h, system.theta_bounds[1] - h)
        inputs = torch.sigmoid(model[0](x)).detach() * 0.8 + 0.1  # inside the bounds by more than the step
        inputs = system.x_bounds[0] + (system.x_bounds[1] - system.x_bounds[0]) * inputs
        direction = torch.randn(system.n_params, generator=torch.Generator().manual_seed(0)).sign()
        with torch.no_grad():
            measured = (system.forward(inputs, theta + h * direction) - system.forward(inputs, theta - h * direction))
        _, modelled = torch.autograd.functional.jvp(lambda t: physics(inputs, t), (theta,), (direction,))
        assert (measured / (2 * h) - modelled).norm() <= 1e-3 * modelled.norm()


@pytest.mark.parametrize("name", ["optical", "fiber", "crossbar", "oscillator", "resistive"])
def test_every_system_s_physics_twin_backward_is_its_forward_s_derivative_in_float64(tmp_path, name) -> None:
    """PAT's backward is the twin's vector-Jacobian product, so a twin's hand-made gradient (the resistive network's
    implicit differentiation of its equilibrium, detached step bounds) must be its forward's derivative: gradcheck
    in float64, in x and θ, well inside the bounds."""
    with lab_from_text(IDEAL_LAB, tmp_path) as lab:
        system = lab.systems[name]
        system.calibrate()
        twin = build_twin("oracle", system).double()
        generator = torch.Generator().manual_seed(0)

        def inside(bounds: tuple[float, float], *shape: int) -> torch.Tensor:
            unit = 0.1 + 0.8 * torch.rand(*shape, generator=generator, dtype=torch.float64)
            return (bounds[0] + (bounds[1] - bounds[0]) * unit).requires_grad_()

        x, theta = inside(system.x_bounds, 2, system.n_in), inside(system.theta_bounds, system.n_params)
        assert twin(x, theta).dtype == torch.float64
        assert torch.autograd.gradcheck(twin, (x, theta), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_a_deep_copy_of_a_network_drives_the_same_system_with_its_own_theta_and_twin(lab) -> None:
    """``copy.deepcopy(model)``, torch's way to keep the best network of a training loop, failed on copying the bench
    (its instruments' locks): the copy's layers drive the lab's system, and hold their own θ and a copy of the twin,
    one for the layers that shared it."""
    system = lab.systems["exact"]
    twin = build_twin("physics", system)
    model = nn.Sequential(PhysicalLayer(system, twin, mode="device", seed=1), nn.Linear(4, 8), nn.Tanh(),
                          PhysicalLayer(system, twin, mode="device", seed=2))
    model[0].record = [(torch.zeros(1, 8), model[0].theta.detach().clone(), torch.zeros(1, 4))]
    best = copy.deepcopy(model)
    assert best[0].system is system and best[3].system is system
    assert best[0].twin is best[3].twin and best[0].twin is not twin
    torch.testing.assert_close(best[0].twin.state_dict(), twin.state_dict(), rtol=0, atol=0)
    assert best[0].record is not model[0].record and len(best[0].record) == 1
    assert best[0].mode == "device" and best[0].input_map == "none"
    theta = model[0].theta.detach().clone()
    with torch.no_grad():
        best[0].theta.zero_()
    assert torch.equal(model[0].theta.detach(), theta)
    with torch.no_grad():
        best[0].theta.copy_(theta)
    x = torch.rand(3, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls = system.calls
    with torch.no_grad():
        torch.testing.assert_close(best(x), model(x))
    assert system.calls - calls == 4  # both networks measured on the lab's one device


def test_pickling_a_network_says_to_save_its_state_dict(lab) -> None:
    """``torch.save(model)`` failed with pickle's "cannot pickle '_thread.lock' object": a bench cannot be saved."""
    system = lab.systems["exact"]
    model = nn.Sequential(PhysicalLayer(system, build_twin("physics", system), mode="device", seed=1))
    with pytest.raises(TypeError, match=r"^a physical layer drives system 'exact', which cannot be saved \(its "
                                        r"instruments hold connections\); save the model's state_dict\(\) instead$"):
        torch.save(model, io.BytesIO())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # the way that works: θ and the digital layers' weights
    buffer.seek(0)
    assert list(torch.load(buffer, weights_only=True)) == ["0.theta"]


def test_a_network_moved_to_float64_computes_through_its_twin_in_float64_and_gradchecks(lab) -> None:
    """``model.double()`` left the held twin in float32: every twin or PAT pass then failed in the twin's matrix
    product (Float and Double). Its twin moves with the layer; through the twin the whole network (digital layers,
    sigmoid map, physics) passes gradcheck in float64, and PAT gives the device's value in float64."""
    system = lab.systems["exact"]
    twin = build_twin("physics", system)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), PhysicalLayer(system, twin, mode="twin", input_map="sigmoid", seed=1),
                          nn.Linear(4, 2)).double()
    assert model[1].theta.dtype == torch.float64 and all(p.dtype == torch.float64 for p in twin.parameters())
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    theta = model[1].theta.detach().clone().requires_grad_()
    network = lambda x, theta: torch.func.functional_call(model, {"1.theta": theta}, (x,))  # noqa: E731
    assert torch.autograd.gradcheck(network, (x, theta), eps=1e-6, atol=1e-7, rtol=1e-5)
    set_mode(model, "pat")
    with torch.no_grad():
        hidden = model[1](model[0](x))
    assert hidden.dtype == torch.float64
    with torch.no_grad():
        inputs = system.x_bounds[0] + (system.x_bounds[1] - system.x_bounds[0]) * torch.sigmoid(model[0](x))
    torch.testing.assert_close(hidden, system.forward(inputs, model[1].theta.detach()).double())
