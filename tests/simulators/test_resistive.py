"""The resistive network: its physics, its simulated non-idealities at their configured magnitudes, its device time,
and the system on top of it (ideal world = physics model, oracle ≫ nominal twin, energy-based access)."""

import functools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hil.errors import ConfigError, DeviceError, LimitError
from hil.lab import Lab
from hil.physics import resistive as physics
from hil.systems.resistive import ResistiveNetworkSystem
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput, quantise
from simulators.resistive import ResistiveNetwork

LAYOUT = physics.Layout(3, 6, 2)
#: Every non-ideality off except the ones a test switches on.
IDEAL = ResistiveNetwork.presets["ideal"]


def bench(preset: str = "ideal", seed: int = 0, **config):
    world = ResistiveNetwork(preset=preset, config=config, seed=seed)
    output = SimulatedAnalogOutput(world, name="ao").connect()
    reader = SimulatedAnalogInput(world, name="ai").connect()
    return world, ResistiveNetworkSystem({"output": output, "input": reader}, name="net")


def inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, LAYOUT.n_inputs, generator=generator)
    theta = 0.6 + 1.3 * torch.rand(LAYOUT.n_edges, generator=generator)
    return x, theta


def dc_drive(world: ResistiveNetwork, n_samples: int, seed: int = 0) -> torch.Tensor:
    """A constant drive (channels × samples): random inputs and gates, targets 0 V, nudges off."""
    generator = torch.Generator().manual_seed(seed)
    layout = world.layout
    levels = torch.cat([2 * torch.rand(layout.n_inputs, generator=generator) - 1,
                        0.6 + 1.3 * torch.rand(layout.n_edges, generator=generator),
                        torch.zeros(2 * layout.n_outputs)])
    return levels[:, None].expand(-1, n_samples)


# -- the physics -------------------------------------------------------------------------------------------------
def test_equilibrium_obeys_kirchhoff_and_minimises_the_energy() -> None:
    params = physics.nominal_parameters(LAYOUT)
    x, theta = inputs(64)
    input_v = 2 * x - 1
    target, nudge = torch.full((64, 2), 0.3), torch.tensor([0.9, 1.2])
    free = physics.equilibrium(LAYOUT, params, input_v, theta, target, nudge).double().requires_grad_()
    energy = physics.energy(LAYOUT, params, input_v, theta, free, target, nudge)
    (kcl,) = torch.autograd.grad(energy.sum(), free)
    assert kcl.abs().max() < 1e-9  # A; branch currents are ~1e-5 A
    for direction in torch.eye(LAYOUT.n_free, dtype=torch.float64)[:3]:
        moved = physics.energy(LAYOUT, params, input_v, theta, free.detach() + 1e-3 * direction, target, nudge)
        assert (moved > energy.detach()).all()


def test_diode_law_is_shockley_with_series_resistance() -> None:
    voltage = torch.linspace(-1.0, 1.5, 101, dtype=torch.float64)
    i_s, n_vt, r_s = 2.52e-9, 1.752 * physics.thermal_voltage(298.15), 1e3
    current = physics.diode_current(voltage, i_s, n_vt, r_s)
    implicit = i_s * torch.expm1((voltage - current * r_s) / n_vt)
    torch.testing.assert_close(current, implicit, rtol=1e-9, atol=1e-18)
    assert current[0] == pytest.approx(-i_s) and current[-1] == pytest.approx((1.5 - 0.6) / r_s, rel=0.1)


def test_transistor_law_and_its_inverse() -> None:
    gate = torch.linspace(0.3, 2.0, 50, dtype=torch.float64)
    u_t = physics.thermal_voltage(298.15)
    conductance = physics.transistor_conductance(gate, 0.7, 1e-4, 1.3, u_t)
    torch.testing.assert_close(physics.transistor_gate_for_conductance(conductance, 0.7, 1e-4, 1.3, u_t), gate)
    assert conductance[-1] == pytest.approx(1e-4 * 1.3, rel=1e-3)  # linear in the overdrive above threshold
    below = physics.transistor_conductance(torch.tensor([0.5, 0.5 + 1.3 * u_t]), 0.7, 1e-4, 1.3, u_t)
    assert below[1] / below[0] == pytest.approx(math.e, rel=0.01)  # exponential below threshold


def test_temperature_laws_follow_their_documented_formulas_away_from_the_reference() -> None:
    k_over_q = 1.380649e-23 / 1.602176634e-19  # exact SI (2019) values of k and q, V/K
    reference, ideality = physics.REFERENCE_TEMPERATURE_K, physics.NOMINAL_IDEALITY
    temperature = torch.tensor([233.15, 273.15, 323.15, 373.15], dtype=torch.float64)  # −65 K .. +75 K
    torch.testing.assert_close(physics.thermal_voltage(temperature), k_over_q * temperature, rtol=1e-9, atol=0)
    assert physics.thermal_voltage(300.0) == pytest.approx(0.025852, abs=1e-6)
    threshold = physics.threshold_at(torch.tensor(0.7, dtype=torch.float64), temperature, reference, -2e-3)
    torch.testing.assert_close(threshold, 0.7 - 2e-3 * (temperature - reference), rtol=0, atol=1e-12)
    assert threshold[0] == pytest.approx(0.83) and threshold[-1] == pytest.approx(0.55)  # −2 mV/K: hot turns on early
    i_s = physics.saturation_current_at(torch.tensor(2.52e-9, dtype=torch.float64), temperature, reference, ideality)
    ratio = temperature / reference  # I_S(T) = I_S(T0)·(T/T0)^(XTI/N)·exp((T/T0 − 1)·EG/(N·kT/q)), EG 1.11, XTI 3
    expected = 2.52e-9 * ratio ** (3.0 / ideality) * torch.exp((ratio - 1) * 1.11 / (ideality * k_over_q * temperature))
    torch.testing.assert_close(i_s, expected, rtol=1e-9, atol=0)
    at_reference = physics.saturation_current_at(torch.tensor(2.52e-9, dtype=torch.float64), reference, reference,
                                                 ideality)
    assert at_reference.item() == pytest.approx(2.52e-9, rel=1e-12)
    ten_kelvin = physics.saturation_current_at(torch.tensor(1.0, dtype=torch.float64), reference + 10, reference,
                                               ideality)
    assert 2.0 < ten_kelvin.item() < 2.5  # a junction's I_S more than doubles every 10 K


def test_gradients_of_the_equilibrium_match_finite_differences() -> None:
    x, theta = inputs(4)
    input_v = (2 * x - 1).double()
    nominal = physics.nominal_parameters(LAYOUT)
    for name, step in (("threshold_v", 1e-3), ("saturation_current_a", 1e-10), ("load_resistance_ohm", 10.0)):
        value = getattr(nominal, name).double().requires_grad_()

        def output(v: torch.Tensor, name: str = name) -> torch.Tensor:
            return physics.equilibrium(LAYOUT, nominal._replace(**{name: v}), input_v, theta).double()[:, -2:].sum()

        output(value).backward()
        bump = torch.zeros_like(value)
        bump[0] = step
        numeric = (output(value.detach() + bump) - output(value.detach() - bump)) / (2 * step)
        assert value.grad[0].item() == pytest.approx(numeric.item(), rel=0.01), name


# -- construction non-idealities ---------------------------------------------------------------------------------
BIG = {"geometry": {"n_inputs": 10, "n_hidden": 200, "n_outputs": 10}}


def test_construction_spread_has_the_configured_magnitude() -> None:
    world = ResistiveNetwork(config=BIG, seed=3)
    thresholds = torch.cat([world.threshold_v, world.nudge_threshold_v])  # 4010 transistors
    assert thresholds.mean().item() == pytest.approx(0.7, abs=0.003)
    assert thresholds.std().item() == pytest.approx(0.02, rel=0.05)  # README's 20 mV; standard error 1.1 %
    log_spread = torch.log(world.saturation_current_a / world.config.devices.saturation_current_a)  # 400 diodes
    assert log_spread.std().item() == pytest.approx(0.37, rel=0.1)  # the 1N914B's; standard error 3.5 %
    relative = torch.cat([world.series_resistance_ohm / 1e3, world.load_resistance_ohm / 1e4]) - 1  # 410
    assert relative.abs().max() <= 0.01  # README's 1 % resistors
    assert relative.std().item() == pytest.approx(0.01 / math.sqrt(3), rel=0.1)


def test_nudge_transistors_have_the_threshold_spread_too() -> None:
    """The nudge transistors (output → target) spread as the edges do, by the realistic 20 mV (README). In the test
    above they are 10 of 4010 thresholds, invisible. 64 outputs × 10 seeds: the sample standard deviation has a
    standard error of 1/√(2·640) = 2.8 %, the mean one of 20 mV/√640; tolerances five of them. ideal: none."""
    config = {"geometry": {"n_inputs": 1, "n_hidden": 1, "n_outputs": 64}}
    thresholds = torch.cat([ResistiveNetwork(seed=seed, config=config).nudge_threshold_v for seed in range(10)])
    assert float(thresholds.mean()) == pytest.approx(0.7, abs=5 * 0.02 / math.sqrt(640))
    assert float(thresholds.std()) == pytest.approx(0.02, rel=5 / math.sqrt(2 * 640))
    assert (ResistiveNetwork(preset="ideal", config=config).nudge_threshold_v == 0.7).all()


def test_the_harsh_network_has_its_preset_magnitudes() -> None:
    """The harsh preset's sections are in force, measured: thresholds spread by 50 mV over the 10 250 transistors of
    a 10-512-10 network (standard error of the sample std 1/√(2n) = 0.7 %), saturation currents by 0.8 in ln I_S over
    its 1024 diodes (2.2 %), resistors uniform within ±5 % (1034 of them: the uniform sample std's standard error
    √(0.8/(4n)) = 1.4 %); read noise of 30 µV on the default network's 8 free nodes over 4000 samples (0.4 %), and
    through the 14-bit ADC on its ±2 V range, with its 180 µV of noise, √(30² + 180² + code²/12) µV; the temperature
    wandering by 1.5 K with a correlation time of 600 s, from 8000 independent pairs of readings 600 s apart (their
    correlation e^(−1), standard error (1 − ρ²)/√N = 0.0097; their rms, √((1 + ρ²)/(4N)) = 0.6 %). Tolerances five
    standard errors."""
    world = ResistiveNetwork(preset="harsh", seed=3, config={"geometry": {"n_inputs": 10, "n_hidden": 512,
                                                                          "n_outputs": 10}})
    thresholds = torch.cat([world.threshold_v, world.nudge_threshold_v]).double()
    assert float(thresholds.std()) == pytest.approx(0.05, rel=5 / math.sqrt(2 * len(thresholds)))
    log_spread = torch.log(world.saturation_current_a.double() / world.config.devices.saturation_current_a)
    assert float(log_spread.std()) == pytest.approx(0.8, rel=5 / math.sqrt(2 * len(log_spread)))
    relative = torch.cat([world.series_resistance_ohm / 1e3, world.load_resistance_ohm / 1e4]).double() - 1
    assert float(relative.abs().max()) <= 0.05
    assert float(relative.std()) == pytest.approx(0.05 / math.sqrt(3), rel=5 * math.sqrt(0.8 / (4 * len(relative))))
    world, system = bench("harsh", seed=3, slow={"temperature_sigma_k": 0.0})
    samples = 4000
    record = world.respond(dc_drive(world, samples), 1e5).double()  # the world's own noise, before the ADC
    nodes = record.shape[0]
    assert float(record.std(dim=1).mean()) == pytest.approx(30e-6, rel=5 / math.sqrt(2 * nodes * samples))
    output = world.output
    for channel in range(1, output.n_channels + 1):
        output.set_voltage(channel, 1.2 if channel > world.layout.n_inputs else 0.3)
        output.set_output(channel, True)
    digitised = system.instruments["input"].acquire(samples, 1e5)
    code = 2 * 2.0 / 2**14
    assert np.allclose(digitised / code, np.round(digitised / code))  # every reading is a 14-bit code
    expected = math.sqrt(30e-6**2 + 180e-6**2 + code**2 / 12)
    assert float(np.std(digitised, axis=1).mean()) == pytest.approx(expected, rel=5 / math.sqrt(2 * nodes * samples))
    world, count, rho = ResistiveNetwork(preset="harsh", seed=4), 8000, math.exp(-1)
    reference, pairs = world.config.devices.reference_temperature_k, []
    for _ in range(count):
        world.clock.sleep(10 * 600.0)
        first = world.temperature_k() - reference
        world.clock.sleep(600.0)
        pairs.append((first, world.temperature_k() - reference))
    temperatures = np.array(pairs)
    assert temperatures.std() == pytest.approx(1.5, rel=5 * math.sqrt((1 + rho**2) / (4 * count)))
    assert np.corrcoef(temperatures.T)[0, 1] == pytest.approx(rho, abs=5 * (1 - rho**2) / math.sqrt(count))


def test_ideal_world_has_no_spread() -> None:
    world = ResistiveNetwork(preset="ideal", config=BIG, seed=3)
    assert (world.threshold_v == 0.7).all() and (world.saturation_current_a == 2.52e-9).all()
    assert (world.series_resistance_ohm == 1e3).all() and (world.load_resistance_ohm == 1e4).all()


@pytest.mark.parametrize("field", ["threshold_sigma_v", "saturation_current_log_sigma", "resistor_tolerance"])
def test_each_construction_spread_reaches_the_output_as_its_hidden_values(field: str) -> None:
    realistic = ResistiveNetwork.Config().construction.model_dump()[field]
    _, system = bench("ideal", seed=5, construction={field: realistic})
    x, theta = inputs(64)
    measured = system.forward(x, theta)
    with torch.no_grad():
        nominal = system.physics_model()(x, theta)
        oracle = system.oracle_model()(x, theta)
    assert (measured - nominal).abs().max() > 1e-3  # present: the nominal physics misses it
    torch.testing.assert_close(measured, oracle, atol=1e-5, rtol=0)  # and it is exactly the hidden values


# -- per-shot non-idealities -------------------------------------------------------------------------------------
def test_read_noise_has_the_configured_rms_and_is_absent_when_ideal() -> None:
    world = ResistiveNetwork(seed=1, config={"slow": {"temperature_sigma_k": 0.0}})
    drive = dc_drive(world, 4000)
    record = world.respond(drive, 1e5)  # the world's own noise, before the ADC
    assert record.std(dim=1).mean().item() == pytest.approx(10e-6, rel=0.03)  # the realistic kT/C noise, 10 µV
    ideal = ResistiveNetwork(preset="ideal", seed=1)
    assert (ideal.respond(drive[:, :100], 1e5).std(dim=1) == 0).all()


def test_read_noise_is_drawn_anew_at_every_acquisition() -> None:
    """Read noise is per shot: two acquisitions of one constant drive carry independent noise, sample by sample
    (their correlation within five standard errors, 5/√N, of 0; N = 500 samples × 8 nodes), each of the
    configured rms (standard error 1/√(2N)); one draw reused would make them equal."""
    world = ResistiveNetwork(preset="ideal", seed=1, config={"shot": {"read_noise_v": 10e-6}})
    drive = dc_drive(world, 500)
    first, second = (world.respond(drive, 1e5).double() for _ in range(2))
    level = torch.cat([first, second], dim=1).mean(dim=1, keepdim=True)  # each node's noiseless voltage
    noise = torch.stack([(first - level).flatten(), (second - level).flatten()])
    assert float(noise[0].std()) == pytest.approx(10e-6, rel=5 / math.sqrt(2 * noise.shape[1]))
    assert abs(float(torch.corrcoef(noise)[0, 1])) < 5 / math.sqrt(noise.shape[1])


@pytest.mark.statistical
def test_read_noise_is_independent_from_node_to_node() -> None:
    world = ResistiveNetwork(preset="ideal", seed=1, config={"shot": {"read_noise_v": 10e-6}})
    n_samples = 2000
    record = world.respond(dc_drive(world, n_samples), 1e5).double()  # a constant drive: only the noise varies
    assert record.std(dim=1).mean().item() == pytest.approx(10e-6, rel=0.05)
    correlation = torch.corrcoef(record)
    off_diagonal = correlation[~torch.eye(world.layout.n_free, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(n_samples)  # 5 standard errors of a zero correlation


def test_converters_add_their_noise_and_rounding_at_the_configured_magnitude() -> None:
    world, system = bench("realistic", seed=2, slow={"temperature_sigma_k": 0.0})
    converters, output, reader = world.config.converters, world.output, system.instruments["input"]
    for channel in range(1, output.n_channels + 1):
        output.set_voltage(channel, 1.2 if channel > world.layout.n_inputs else 0.3)
        output.set_output(channel, True)
    record = reader.acquire(4000, 1e5)
    code = 2 * converters.input_range_v / 2**converters.adc_bits
    expected = math.sqrt(10e-6**2 + 60e-6**2 + code**2 / 12)  # realistic read noise and ADC noise (one 16-bit code)
    assert np.std(record, axis=1).mean() == pytest.approx(expected, rel=0.04)
    assert np.allclose(record / code, np.round(record / code))  # every reading is a code


def test_ideal_converters_pass_the_physics_exactly() -> None:
    _, system = bench("ideal")
    x, theta = inputs(32)
    first, second = system.forward(x, theta), system.forward(x, theta)
    assert torch.equal(first, second)
    _, rounded = bench("ideal", converters={"dac_bits": 16})
    coarse = rounded.forward(x, theta)
    x_dac = (quantise(2 * x - 1, 10.0, 16) + 1) / 2  # what a 16-bit ±10 V DAC puts on the inputs
    theta_dac = quantise(theta, 10.0, 16)
    with torch.no_grad():
        model = rounded.physics_model()
        torch.testing.assert_close(coarse, model(x_dac, theta_dac), atol=2e-6, rtol=0)
    assert (coarse - first).abs().max() > 1e-5  # the DAC's rounding is visible


def test_an_input_beyond_the_adc_range_clips_except_when_ideal() -> None:
    peaks = {}
    for preset in ("ideal", "realistic"):
        world, system = bench(preset, slow={"temperature_sigma_k": 0.0}, converters={"input_range_v": 0.05})
        output = world.output
        for channel, level in enumerate(dc_drive(world, 1)[:, 0].tolist(), start=1):
            output.set_voltage(channel, level)
            output.set_output(channel, True)
        peaks[preset] = np.abs(system.instruments["input"].acquire(100, 1e5)).max()
    assert peaks["ideal"] > 0.1 and peaks["realistic"] <= np.float32(0.05)  # the range as the float32 samples hold it


# -- slow state --------------------------------------------------------------------------------------------------
def test_temperature_wanders_as_configured_and_not_when_ideal() -> None:
    world = ResistiveNetwork(seed=4)
    slow, reference = world.config.slow, world.config.devices.reference_temperature_k
    readings = []
    for _ in range(4000):
        world.clock.sleep(slow.temperature_tau_s / 2)
        readings.append(world.temperature_k() - reference)
    drift = np.array(readings)
    assert drift.std() == pytest.approx(0.5, rel=0.15)  # the realistic 0.5 K
    lag_one = np.corrcoef(drift[:-1], drift[1:])[0, 1]
    assert lag_one == pytest.approx(math.exp(-0.5), abs=0.05)
    ideal = ResistiveNetwork(preset="ideal", seed=4)
    ideal.clock.sleep(1e4)
    assert ideal.temperature_k() == reference


def test_reading_the_hidden_parameters_changes_no_later_temperature() -> None:
    readings = []
    for oracle in (False, True):
        world = ResistiveNetwork(seed=3, config={"slow": {"temperature_sigma_k": 3.0, "temperature_tau_s": 60.0}})
        temperatures = []
        for _ in range(3):
            world.clock.sleep(30.0)
            if oracle:
                world.hidden_parameters()
            world.clock.sleep(10.0)
            temperatures.append(world.temperature_k())
        readings.append(temperatures)
    assert readings[0] == readings[1]


def test_temperature_drift_moves_the_output_as_the_physics_at_the_new_temperature() -> None:
    world, system = bench("ideal", seed=6, slow={"temperature_sigma_k": 3.0, "temperature_tau_s": 60.0})
    x, theta = inputs(32)
    system.forward(x, theta)  # gates written: from now on a call reads the network at the clock's present time
    before_k = world.temperature_k()
    before = system.forward(x, theta)
    world.clock.sleep(600.0)
    oracle = system.oracle_model()  # the hidden temperature now, at which the next call samples the network
    after = system.forward(x, theta)
    assert abs(oracle.temperature_k.item() - before_k) > 0.5
    assert (after - before).abs().max() > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(after, oracle(x, theta), atol=1e-5, rtol=0)


def _diode_current(voltage_v: torch.Tensor, i_s: float, n_vt: float, r_s: float) -> torch.Tensor:
    """I solving I = I_S·(exp((V − I·R_S)/(N·kT/q)) − 1), by bisection (the left side minus the right rises in I)."""
    low, high = torch.full_like(voltage_v, -i_s), voltage_v.abs() / r_s + i_s
    for _ in range(100):
        middle = (low + high) / 2
        above = middle > i_s * torch.expm1((voltage_v - middle * r_s) / n_vt)
        low, high = torch.where(above, low, middle), torch.where(above, middle, high)
    return (low + high) / 2


def test_a_drifted_world_obeys_kirchhoff_with_every_device_law_at_its_temperature() -> None:
    world = ResistiveNetwork(preset="ideal", seed=5, config={"slow": {"temperature_sigma_k": 20.0}})
    devices, layout = world.config.devices, world.layout
    n_in, n_hidden, n_out = layout.n_inputs, layout.n_hidden, layout.n_outputs
    generator = torch.Generator().manual_seed(0)
    batch = 64
    x = 2 * torch.rand(batch, n_in, generator=generator) - 1
    gates = 0.6 + 1.3 * torch.rand(batch, layout.n_edges, generator=generator)
    targets = torch.rand(batch, n_out, generator=generator) - 0.5
    nudges = 1.5 * torch.rand(batch, n_out, generator=generator)
    free = world.respond(torch.cat([x, gates, targets, nudges], dim=1).T, 1e5).T.double()
    temperature, reference = world.temperature_k(peek=True), devices.reference_temperature_k  # what respond used
    assert abs(temperature - reference) > 10  # far from the reference, where every temperature law matters
    # the documented laws, written out afresh at the world's temperature
    thermal = 1.380649e-23 / 1.602176634e-19 * temperature
    s = devices.slope_factor * thermal

    def conductance(gate_v: torch.Tensor, threshold_ref_v: torch.Tensor) -> torch.Tensor:
        threshold = threshold_ref_v.double() + devices.threshold_tempco_v_per_k * (temperature - reference)
        return devices.transconductance_a_per_v2 * s * torch.log1p(torch.exp((gate_v.double() - threshold) / s))

    n_vt = devices.ideality * thermal
    ratio = temperature / reference
    i_s = (world.saturation_current_a.double() * ratio ** (3.0 / devices.ideality)
           * math.exp((ratio - 1) * 1.11 / n_vt))
    r_s, x, hidden, out = world.series_resistance_ohm.double(), x.double(), free[:, :n_hidden], free[:, n_hidden:]
    leaving = torch.zeros(batch, n_hidden + n_out, dtype=torch.float64)  # current out of every free node
    conductance_sum = torch.zeros_like(leaving)  # of every branch at the node
    for i in range(n_in):
        for j in range(n_hidden):  # edge input i → hidden j
            g = conductance(gates[:, i * n_hidden + j], world.threshold_v[i * n_hidden + j])
            leaving[:, j] += g * (hidden[:, j] - x[:, i])
            conductance_sum[:, j] += g
    for j in range(n_hidden):
        for k in range(n_out):  # edge hidden j → output k
            edge = n_in * n_hidden + j * n_out + k
            g = conductance(gates[:, edge], world.threshold_v[edge])
            leaving[:, j] += g * (hidden[:, j] - out[:, k])
            leaving[:, n_hidden + k] += g * (out[:, k] - hidden[:, j])
            conductance_sum[:, [j, n_hidden + k]] += g[:, None]
        leaving[:, j] += (_diode_current(hidden[:, j], i_s[j].item(), n_vt, r_s[j].item())
                          - _diode_current(-hidden[:, j], i_s[n_hidden + j].item(), n_vt, r_s[n_hidden + j].item()))
        conductance_sum[:, j] += 1 / r_s[j] + 1 / r_s[n_hidden + j]
    for k in range(n_out):
        g_nudge = conductance(nudges[:, k], world.nudge_threshold_v[k])
        g_load = 1 / world.load_resistance_ohm[k].double()
        leaving[:, n_hidden + k] += g_load * out[:, k] + g_nudge * (out[:, k] - targets[:, k].double())
        conductance_sum[:, n_hidden + k] += g_load + g_nudge
    # the float32 readings round both ends of every branch by at most 2⁻²⁴ of the largest node voltage
    rounding = conductance_sum * 2.0**-23 * max(x.abs().max().item(), free.abs().max().item())
    assert (leaving.abs() <= rounding).all()  # ~1e-10 A, where the branch currents are ~1e-5 A


# -- the system --------------------------------------------------------------------------------------------------
def test_ideal_world_agrees_with_the_physics_model() -> None:
    _, system = bench("ideal")
    x, theta = inputs(200)
    with torch.no_grad():
        model = system.physics_model()
        torch.testing.assert_close(system.forward(x, theta), model(x, theta), atol=1e-6, rtol=0)
        target = torch.full((200, 2), 0.4)
        torch.testing.assert_close(system.equilibrium(x, theta, target, beta=0.5),
                                   model.equilibrium(x, theta, target, beta=0.5), atol=1e-6, rtol=0)
    y = system.forward(x, theta)
    assert y.std().item() > 0.1 and y.abs().max().item() < 1.5  # normalised to order 1


def test_oracle_matches_the_realistic_world_far_better_than_the_nominal_model() -> None:
    _, system = bench("realistic", seed=7, slow={"temperature_sigma_k": 0.0})
    x, theta = inputs(256)
    averaged = torch.stack([system.forward(x, theta) for _ in range(8)]).mean(dim=0)
    with torch.no_grad():
        oracle_error = (system.oracle_model()(x, theta) - averaged).pow(2).mean().sqrt()
        nominal_error = (system.physics_model()(x, theta) - averaged).pow(2).mean().sqrt()
    assert oracle_error < 3e-4 and oracle_error < nominal_error / 10


def test_same_seed_same_numbers_other_seed_other_device() -> None:
    x, theta = inputs(16)
    first, second, other = (bench("realistic", seed=seed)[1] for seed in (11, 11, 12))
    assert torch.equal(first.forward(x, theta), second.forward(x, theta))
    hidden = [system.hidden_calibration(system.instruments["output"].world) for system in (first, other)]
    assert not torch.equal(hidden[0]["threshold_v"], hidden[1]["threshold_v"])
    assert not torch.equal(hidden[0]["log_saturation_current"], hidden[1]["log_saturation_current"])


def test_device_time_is_sample_period_times_samples_plus_gate_settling() -> None:
    world, system = bench("realistic")
    settle, rate = world.config.converters.settle_s, system.sample_rate_hz
    x, theta = inputs(100)
    started = world.clock.now()
    system.forward(x, theta)  # every gate written once
    assert world.clock.now() - started == pytest.approx(LAYOUT.n_edges * settle + 100 / rate)
    started = world.clock.now()
    system.forward(x, theta)  # same θ: only the samples
    assert world.clock.now() - started == pytest.approx(100 / rate)
    theta[3] += 0.1
    started = world.clock.now()
    system.forward(x[:1], theta)  # one gate changed; one sample plays as the shortest waveform (2 points)
    assert world.clock.now() - started == pytest.approx(settle + 2 / rate)
    started = world.clock.now()
    system.equilibrium(x, theta, torch.zeros(100, 2), beta=0.5)  # nudge gates switched on
    assert world.clock.now() - started == pytest.approx(LAYOUT.n_outputs * settle + 100 / rate)
    assert system.device_time_s == pytest.approx(world.clock.now())


def test_samples_faster_than_the_network_settles_are_refused() -> None:
    world = ResistiveNetwork(preset="ideal")
    with pytest.raises(DeviceError, match="settling time 5 µs"):
        world.respond(dc_drive(world, 4), 1e6)


def test_nudging_pulls_the_outputs_towards_the_target() -> None:
    _, system = bench("realistic", seed=8)
    x, theta = inputs(50)
    target = torch.full((50, 2), 0.8)
    free = system.equilibrium(x, theta)
    assert free.shape == (50, LAYOUT.n_nodes)
    torch.testing.assert_close(free[:, -2:] / system.output_scale_v, system.forward(x, theta), atol=1e-3, rtol=0)
    gaps = [(system.equilibrium(x, theta, target, beta)[:, -2:] / system.output_scale_v - target).abs().mean()
            for beta in (0.0, 0.1, 1.0)]
    assert gaps[0] > gaps[1] > gaps[2]
    drops = system.edge_voltages(free)
    assert drops.shape == (50, LAYOUT.n_edges)
    torch.testing.assert_close(drops[:, 0], free[:, 0] - free[:, LAYOUT.n_inputs])  # input 0 → hidden 0


def test_equilibrium_propagation_through_the_device_gives_the_loss_gradient() -> None:
    _, system = bench("ideal")
    x, theta = inputs(8)
    target = torch.full((8, 2), 0.5)
    beta = 0.01
    free = system.equilibrium(x, theta)
    nudged = system.equilibrium(x, theta, target, beta)
    slope = torch.func.grad(lambda g: physics.transistor_conductance(
        g, 0.7, 1e-4, 1.3, physics.thermal_voltage(298.15)).sum())(theta)  # ∂G/∂θ, nominal
    contrast = (system.edge_voltages(nudged) ** 2 - system.edge_voltages(free) ** 2).sum(dim=0)
    estimate = 0.5 * slope * contrast / beta  # W/V of co-content per unit β
    model = system.physics_model()
    theta_grad = theta.clone().requires_grad_()
    out = model(x, theta_grad) * system.output_scale_v
    loss = 0.5 * system.g_unit_s * (out - target * system.output_scale_v).pow(2).sum()
    (exact,) = torch.autograd.grad(loss, theta_grad)
    assert torch.nn.functional.cosine_similarity(estimate, exact, dim=0) > 0.99
    assert (estimate - exact).norm() < 0.05 * exact.norm()


def test_bad_arguments_are_refused_with_the_value_and_the_range() -> None:
    _, system = bench("ideal")
    x, theta = inputs(4)
    with pytest.raises(LimitError, match=r"theta\[2\] = 2.5 is outside 0.5..2"):
        system.forward(x, theta.index_fill(0, torch.tensor([2]), 2.5))
    with pytest.raises(LimitError, match="give target"):
        system.equilibrium(x, theta, beta=0.5)
    with pytest.raises(LimitError, match=r"beta must be within 0..1.3"):
        system.equilibrium(x, theta, torch.zeros(4, 2), beta=5.0)
    with pytest.raises(LimitError, match=r"^resistive network: beta = 1e\+300 needs a nudge gate of 1e\+300 V, above "
                                         r"the gate range's 2 V; beta must be within 0\.\.1\.3\d*$"):
        system.equilibrium(x, theta, torch.zeros(4, 2), beta=1e300)  # the gate was printed in 301 digits
    nodes = system.equilibrium(x, theta)
    assert system.edge_voltages(nodes).shape[0] == 4
    with pytest.raises(LimitError, match=rf"^system 'net': nodes have shape \(4, {nodes.shape[1] - 1}\), "
                                         rf"expected batch×{nodes.shape[1]} \(as equilibrium gives them\)$"):
        system.edge_voltages(nodes[:, 1:])  # an IndexError
    for beta in (True, "0.5"):  # float() took them, as 1 and 0.5
        with pytest.raises(LimitError, match=rf"^resistive network: beta = {beta!r} is not a number$"):
            system.equilibrium(x, theta, torch.zeros(4, 2), beta=beta)
    with pytest.raises(LimitError, match=r"target\[0, 1\] = 3 is outside -2..2"):
        system.equilibrium(x, theta, torch.tensor([[0.0, 3.0]] * 4), beta=0.5)


def test_a_system_too_big_for_its_instruments_is_a_config_error() -> None:
    world = ResistiveNetwork(preset="ideal")
    instruments = {"output": SimulatedAnalogOutput(world), "input": SimulatedAnalogInput(world)}
    with pytest.raises(ConfigError, match="needs 47 output channels"):
        ResistiveNetworkSystem(instruments, n_hidden=8)
    with pytest.raises(ConfigError, match="unknown key"):
        ResistiveNetwork(config={"shot": {"readnoise": 1.0}})
    bigger = ResistiveNetwork(preset="ideal", config={"geometry": {"n_hidden": 8}})
    system = ResistiveNetworkSystem({"output": SimulatedAnalogOutput(bigger), "input": SimulatedAnalogInput(bigger)})
    with pytest.raises(ConfigError, match="3-6-2 network but its world is"):
        system.oracle_model()


@pytest.mark.parametrize(("settings", "field", "message"), [
    ({"input_min_v": -5.0, "input_max_v": 5.0}, "input_min_v", "input_min_v -5 V is outside ao's limits"),
    ({"input_max_v": 3.0}, "input_max_v", "input_max_v 3 V is outside ao's limits"),
    ({"gate_min_v": -3.0}, "gate_min_v", "gate_min_v -3 V is outside ao's limits"),
    ({"gate_max_v": 3.0}, "gate_max_v", r"gate_max_v 3 V is outside ao's limits \(-2.5..2.5 V\)"),
])
def test_voltage_ranges_beyond_the_analog_output_are_config_errors(settings, field, message) -> None:
    """Refused when the system is built, not at its first call (where a gate or an input sample would be refused)."""
    world = ResistiveNetwork(preset="ideal")
    output = SimulatedAnalogOutput(world, name="ao", limits={"voltage_v": {"min": -2.5, "max": 2.5}})
    with pytest.raises(ConfigError, match=f"^{field}: {message}") as error:
        ResistiveNetworkSystem({"output": output, "input": SimulatedAnalogInput(world, name="ai")}, **settings)
    assert error.value.field == field and "\n" not in str(error.value)
    other = ResistiveNetwork(preset="ideal")  # an analog world has one output
    positive = SimulatedAnalogOutput(other, name="ao", limits={"voltage_v": {"min": 0.5, "max": 2.5}})
    with pytest.raises(ConfigError, match="exclude 0 V, the level of the targets and nudge gates"):
        ResistiveNetworkSystem({"output": positive, "input": SimulatedAnalogInput(other)}, input_min_v=0.5)


@pytest.mark.parametrize(("settings", "field", "message"), [
    ({"n_hidden": True}, "n_hidden", "n_hidden must be a positive integer, got True"),  # was a 3-1-2 network
    ({"n_inputs": True}, "n_inputs", "n_inputs must be a positive integer, got True"),  # was blamed on n_in
    ({"input_min_v": "0"}, "input_min_v", "input_min_v must be a number"),  # text: was a TypeError from numpy
    ({"gate_max_v": None}, "gate_max_v", "gate_max_v must be a number"),
    ({"output_scale_v": True}, "output_scale_v", r"output_scale_v must be a number in 1e-06\.\.1000 V, got True"),
    ({"output_scale_v": 1e-12}, "output_scale_v",  # was taken: outputs of 10¹¹
     r"output_scale_v must be a number in 1e-06\.\.1000 V, got 1e-12; check its unit"),
    ({"sample_rate_hz": True}, "sample_rate_hz", "sample_rate_hz must be a positive number, got True"),  # was 1 Hz
])
def test_a_setting_of_the_wrong_type_is_a_config_error_naming_it(settings, field: str, message: str) -> None:
    world = ResistiveNetwork(preset="ideal")
    instruments = {"output": SimulatedAnalogOutput(world, name="ao"), "input": SimulatedAnalogInput(world, name="ai")}
    with pytest.raises(ConfigError, match=f"^{field}: {message}") as error:
        ResistiveNetworkSystem(instruments, **settings)
    assert error.value.field == field and "\n" not in str(error.value)


def test_a_network_larger_than_the_instruments_is_refused_before_its_channels_are_listed() -> None:
    """n_hidden: 10⁹ built lists of every channel (tens of GB) before counting them against the instruments: the
    process was killed for memory. Run under a 4 GiB address-space limit, it is refused at once."""
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from hil.errors import ConfigError
        from hil.systems.resistive import ResistiveNetworkSystem
        from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
        from simulators.resistive import ResistiveNetwork
        world = ResistiveNetwork(preset="ideal")
        try:
            ResistiveNetworkSystem({"output": SimulatedAnalogOutput(world, name="ao"),
                                    "input": SimulatedAnalogInput(world, name="ai")}, n_hidden=10**9)
        except ConfigError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout == ("instruments.output: system 'resistive_network': a 3-1000000000-2 network needs "
                             "5000000007 output channels, ao has 37; give fewer nodes (n_inputs, n_hidden, "
                             "n_outputs), or an instrument with more channels\n"), result.stderr[-300:]


def test_a_sample_rate_beyond_the_instruments_is_a_config_error() -> None:
    world = ResistiveNetwork(preset="ideal", config={"timing": {"network_settle_s": 0.0}})
    instruments = {"output": SimulatedAnalogOutput(world, name="ao"), "input": SimulatedAnalogInput(world, name="ai")}
    with pytest.raises(ConfigError, match=r"^sample_rate_hz: sample_rate_hz 2e\+06 Hz is outside ao's limits "
                                          r"\(1..1e\+06 Hz\); set sample_rate_hz within them in the system's "
                                          r"settings$"):
        ResistiveNetworkSystem(instruments, sample_rate_hz=2e6)


def test_a_sample_rate_faster_than_the_network_settles_is_a_config_error_not_a_failure_of_every_call() -> None:
    """A network overridden to settle in 0.1 ms (more node capacitance) under the system's default 100 kHz: every
    call used to fail at the world with a DeviceError; the simulated DAQ's sample clock now stops at 1/settle, so
    the system is refused when it is built, naming sample_rate_hz, and a waveform at that rate by the instrument."""
    world = ResistiveNetwork(preset="ideal", config={"timing": {"network_settle_s": 1e-4}})
    output, reader = SimulatedAnalogOutput(world, name="ao").connect(), SimulatedAnalogInput(world, name="ai").connect()
    with pytest.raises(ConfigError, match=r"^sample_rate_hz: sample_rate_hz 100000 Hz is outside ao's limits "
                                          r"\(1..10000 Hz\); set sample_rate_hz within them in the system's "
                                          r"settings$"):
        ResistiveNetworkSystem({"output": output, "input": reader})
    with pytest.raises(LimitError, match=r"^ao sample_rate_hz: 20000 Hz is outside 1\.\.10000 Hz$"):
        output.load_waveform(1, [0.0, 0.1], 2e4)
    system = ResistiveNetworkSystem({"output": output, "input": reader}, sample_rate_hz=1e4)
    assert system.forward(*inputs(4)).shape == (4, 2)
    default = SimulatedAnalogInput(ResistiveNetwork(preset="ideal"), name="ai")  # 5 µs: at most 200 kHz
    assert default.limits["sample_rate_hz"].max == pytest.approx(2e5)


def test_the_fastest_sample_clock_the_limits_allow_is_one_the_network_settles_at() -> None:
    """The limit is 1/settle and 1/(1/7 µs) rounds below 7 µs: the world compared periods, so a system at the limit
    the instruments allow failed at every call saying that 7 µs is shorter than 7 µs."""
    world = ResistiveNetwork(preset="ideal", config={"timing": {"network_settle_s": 7e-6}})
    output, reader = SimulatedAnalogOutput(world, name="ao").connect(), SimulatedAnalogInput(world, name="ai").connect()
    rate = output.limits["sample_rate_hz"].max
    assert 1 / rate < 7e-6  # the rounding this is about
    system = ResistiveNetworkSystem({"output": output, "input": reader}, sample_rate_hz=rate)
    assert system.forward(*inputs(4)).shape == (4, 2)


def test_max_batch_follows_the_instruments_memory() -> None:
    """A batch is one waveform of one sample per row: no call may exceed the output's or the input's memory."""

    class SmallOutput(SimulatedAnalogOutput):
        waveform_points = (2, 64)

    class SmallInput(SimulatedAnalogInput):
        max_samples = 50

    world = ResistiveNetwork(preset="ideal")
    system = ResistiveNetworkSystem({"output": SmallOutput(world).connect(), "input": SmallInput(world).connect()})
    assert system.max_batch == 50
    x, theta = inputs(120)
    y = system.forward(x, theta)
    assert system.calls == 3 and y.shape == (120, 2)
    nodes = system.equilibrium(x, theta, torch.zeros(120, 2), beta=0.5)
    assert system.calls == 6 and nodes.shape == (120, LAYOUT.n_nodes)
    other = ResistiveNetwork(preset="ideal")  # an analog world has one output
    assert ResistiveNetworkSystem({"output": SmallOutput(other), "input": SmallInput(other)},
                                  max_batch=20).max_batch == 20


@pytest.mark.parametrize(("key", "value"), [("transconductance_a_per_v2", 2e-4), ("slope_factor", 1.5),
                                            ("threshold_tempco_v_per_k", -4e-3), ("reference_temperature_k", 310.0)])
def test_an_oracle_of_a_world_whose_fixed_device_constants_differ_is_refused(key: str, value: float) -> None:
    """The model holds these four at their datasheet values; its oracle of such a world would be off by up to 0.18
    in y (transconductance 2e-4) while claiming to be the best twin."""
    _, system = bench("ideal", devices={key: value})
    with pytest.raises(DeviceError, match=rf"devices\.{key} = {value:g} differs from the physics model's fixed"):
        system.oracle_model()
    _, system = bench("ideal", devices={"ideality": 1.9, "saturation_current_a": 1e-8})  # calibration: represented
    x, theta = inputs(16)
    with torch.no_grad():
        torch.testing.assert_close(system.oracle_model()(x, theta), system.forward(x, theta), atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["ideal", "realistic", "harsh"])
def test_every_preset_runs_and_its_oracle_explains_it(preset: str) -> None:
    _, system = bench(preset, seed=9, slow={"temperature_sigma_k": 0.0})
    x, theta = inputs(64)
    y = system.forward(x, theta)
    with torch.no_grad():
        error = (system.oracle_model()(x, theta) - y).abs().max().item()
    noise = 3 * ResistiveNetwork.resolve(preset, {}).converters.adc_noise_v / system.output_scale_v
    assert error < 1e-5 + 5 * noise


def test_calibrate_sets_the_working_point() -> None:
    world, system = bench("ideal")
    settings = system.calibrate()
    output = world.output
    assert settings["gate_v"] == pytest.approx(1.25)
    assert all(output.level_v[c] == 1.25 for c in system.channels["gates"])
    assert all(output.level_v[c] == 0.0 for c in system.channels["nudge_gates"])
    assert all(output.output_on[c] for c in settings["channels_on"])


def test_built_from_a_lab_file(tmp_path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        worlds:
          network: {kind: resistive_network, preset: realistic, seed: 3}
        instruments:
          daq_out: {driver: simulated_analog_output, world: network, limits: {voltage_v: {min: -2.5, max: 2.5}}}
          daq_in: {driver: simulated_analog_input, world: network}
        systems:
          net:
            kind: resistive_network
            instruments: {output: daq_out, input: daq_in}
            settings: {sample_rate_hz: 50000.0}
        """))
    lab = Lab.load(path).open()
    try:
        system = lab.systems["net"]
        x, theta = inputs(10)
        y = system.forward(x, theta)
        assert y.shape == (10, 2) and torch.isfinite(y).all()
        assert system.device_time_s == pytest.approx(LAYOUT.n_edges * 1e-4 + 10 / 5e4)
    finally:
        lab.close()
    assert not lab["daq_out"].connected


def test_a_network_that_does_not_settle_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real solver held to one Newton step, as a network that does not settle: its HilError reached the caller
    as a framework error, not as the simulated device's failure, and said nothing of what to do."""
    monkeypatch.setattr(physics, "equilibrium", functools.partial(physics.equilibrium, max_iter=1))
    world = ResistiveNetwork(preset="ideal", seed=0)
    with pytest.raises(DeviceError, match=r"^simulated resistive_network: resistive network: equilibrium not "
                                          r"reached in 1 Newton steps .*; drive it within narrower voltages$"):
        world.respond(dc_drive(world, 10), 1e5)


def test_equilibrium_reports_the_inputs_as_driven_over_the_configured_input_range() -> None:
    """x ∈ [0, 1] maps linearly onto [input_min_v, input_max_v]: x = 0 at the minimum, x = 1 at the maximum."""
    world = ResistiveNetwork(preset="ideal")
    system = ResistiveNetworkSystem({"output": SimulatedAnalogOutput(world, name="ao").connect(),
                                     "input": SimulatedAnalogInput(world, name="ai").connect()},
                                    input_min_v=-0.5, input_max_v=1.0)
    x, theta = inputs(8)
    x[0], x[1] = 0.0, 1.0
    nodes = system.equilibrium(x, theta)
    torch.testing.assert_close(nodes[:, :LAYOUT.n_inputs], -0.5 + 1.5 * x)
    with torch.no_grad():
        torch.testing.assert_close(system.physics_model().equilibrium(x, theta), nodes, atol=1e-6, rtol=0)


def test_a_batch_shorter_than_the_shortest_waveform_reads_its_own_samples() -> None:
    """A batch below the analog output's shortest waveform is padded; the system reads the batch's samples, the
    first ones, not the padding."""

    class LongWaveforms(SimulatedAnalogOutput):
        waveform_points = (8, 4096)

    world = ResistiveNetwork(preset="ideal")
    system = ResistiveNetworkSystem({"output": LongWaveforms(world).connect(),
                                     "input": SimulatedAnalogInput(world).connect()})
    x, theta = inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(system.forward(x, theta), system.physics_model()(x, theta), atol=1e-6, rtol=0)


def test_forward_and_equilibrium_split_a_batch_of_two_max_batches_into_two_calls() -> None:
    world = ResistiveNetwork(preset="ideal")
    system = ResistiveNetworkSystem({"output": SimulatedAnalogOutput(world).connect(),
                                     "input": SimulatedAnalogInput(world).connect()}, max_batch=50)
    x, theta = inputs(100)
    system.forward(x, theta)
    assert system.calls == 2
    system.equilibrium(x, theta, torch.zeros(100, 2), beta=0.5)
    assert system.calls == 4
