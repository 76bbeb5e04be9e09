"""PhysicalLayer: PAT gives the device's value and the twin's gradient; modes; θ kept within bounds."""

import textwrap

import pytest
import torch

from hil.errors import ConfigError
from hil.lab import Lab
from hil.nn import PhysicalLayer, physics_aware, set_mode
from hil.twin.models import build_twin

LAB = textwrap.dedent("""
    worlds:
      chip: {kind: memristor_crossbar, preset: realistic, seed: 4}
      table: {kind: optical_table, preset: ideal, seed: 0}
    instruments:
      crossbar: {driver: simulated_crossbar, world: chip}
      slm: {driver: simulated_slm, world: table}
      camera: {driver: simulated_camera, world: table}
    systems:
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 8, n_out: 4}}
      optical: {kind: optical, instruments: {slm: slm, camera: camera}}
""")


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(LAB)
    with Lab.load(path) as lab:
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


def test_phases_wrap_instead_of_clamping(lab) -> None:
    system = lab.systems["optical"]
    layer = PhysicalLayer(system, mode="device", theta_init="center")
    with torch.no_grad():
        layer.theta.fill_(2 * torch.pi + 0.25)
    layer.project_()
    torch.testing.assert_close(layer.theta, torch.full_like(layer.theta, 0.25))


def test_large_batches_are_split_into_device_calls(lab) -> None:
    system = lab.systems["crossbar"]
    calls = system.calls
    y = system.forward(torch.zeros(system.max_batch * 2 + 3, 8), torch.zeros(32))
    assert y.shape == (system.max_batch * 2 + 3, 4) and system.calls - calls == 3
