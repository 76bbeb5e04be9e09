"""Twins: collection design and noise floor, fitting towards the hidden calibration, fidelity, save and load."""

import textwrap

import pytest
import torch

from hil.errors import ConfigError
from hil.lab import Lab
from hil.twin.collect import collect
from hil.twin.fidelity import fidelity
from hil.twin.fit import fit_twin, nmse
from hil.twin.models import build_twin, load_twin, save_twin

LAB = textwrap.dedent("""
    worlds:
      chip: {kind: memristor_crossbar, preset: realistic, seed: 7, config: {slow: {drift_scale: 0.0}}}
      net: {kind: resistive_network, preset: realistic, seed: 1}
    instruments:
      crossbar: {driver: simulated_crossbar, world: chip}
      out: {driver: simulated_analog_output, world: net}
      in: {driver: simulated_analog_input, world: net}
    systems:
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 16, n_out: 8}}
      resistive: {kind: resistive_network, instruments: {output: out, input: in}}
""")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(LAB)
    with Lab.load(path) as lab:
        yield lab


@pytest.fixture(scope="module")
def crossbar_data(lab):
    system = lab.systems["crossbar"]
    return collect(system, n_thetas=12, inputs_per_theta=64, repeats=4, repeat_thetas=3, design="sobol", seed=0)


def test_collection_is_a_bounded_design_with_repeats(lab, crossbar_data) -> None:
    system = lab.systems["crossbar"]
    data = crossbar_data
    assert data.x.shape == (12, 64, 16) and data.theta.shape == (12, 128) and data.y.shape == (12, 64, 8)
    assert data.y_repeats.shape == (4, 3, 64, 8)
    assert data.theta.min() >= -1 and data.theta.max() <= 1 and len(torch.unique(data.theta[:, 0])) == 12
    noise = data.noise_variance()
    assert (noise > 0).all() and (noise < 0.1 * data.output_variance()).all()  # repeats differ, by little
    pool = torch.full((5, 16), 0.25)
    mixed = collect(system, n_thetas=2, inputs_per_theta=8, design="mixed", data=pool, seed=1)
    assert (mixed.x[:, 4:] == 0.25).all() and not (mixed.x[:, :4] == 0.25).all()
    with pytest.raises(ConfigError, match="needs training data"):
        collect(system, n_thetas=2, inputs_per_theta=4, design="data", seed=0)


def test_physics_twin_fits_towards_the_oracle_and_its_jacobian_matches_the_device(lab, crossbar_data) -> None:
    system = lab.systems["crossbar"]
    train, held_out = crossbar_data.split(0.25, seed=0)
    assert train.n_groups == 9 and held_out.n_groups == 3
    twin = build_twin("physics", system)
    nominal = nmse(twin, held_out).mean().item()
    result = fit_twin(twin, train, held_out, epochs=40, lr=0.02, patience=8)
    fitted = nmse(twin, held_out).mean().item()
    oracle = nmse(build_twin("oracle", system), held_out).mean().item()
    kept = nmse(twin, held_out, train.output_variance()).mean().item()
    assert result.validation_loss[result.best_epoch] == pytest.approx(kept, rel=1e-4)  # the best state is kept
    assert fitted < oracle + 0.5 * (nominal - oracle)  # more than half of the gap to the oracle is closed
    report = fidelity(system, twin, held_out, crossbar_data.noise_variance(), directions=2, repeats=2)
    assert report.jacobian_cosine_theta > 0.9 and report.jacobian_cosine_x > 0.9
    assert (report.noise_floor < report.nmse * 1.5).all()


def test_saved_twin_loads_only_for_its_system_kind(lab, crossbar_data, tmp_path) -> None:
    system = lab.systems["crossbar"]
    twin = build_twin("residual", system, hidden=(16,))
    with torch.no_grad():
        twin.physics_twin.affine.gain.fill_(1.5)
    save_twin(twin, tmp_path / "twin")
    loaded = load_twin(tmp_path / "twin", system)
    x, theta = crossbar_data.x[0], crossbar_data.theta[0]
    torch.testing.assert_close(loaded(x, theta), twin(x, theta))
    with pytest.raises(ConfigError, match="is for a 'crossbar' system"):
        load_twin(tmp_path / "twin", lab.systems["resistive"])


def test_neural_twin_learns_a_small_network(lab) -> None:
    system = lab.systems["resistive"]
    data = collect(system, n_thetas=24, inputs_per_theta=64, design="sobol", seed=2)
    train, held_out = data.split(0.25, seed=0)
    twin = build_twin("neural", system, hidden=(64, 64))
    before = nmse(twin, held_out).mean().item()
    fit_twin(twin, train, held_out, epochs=60, lr=3e-3, patience=15)
    after = nmse(twin, held_out).mean().item()
    assert after < 0.3 < before
