"""The simulated memristor crossbar, its physics and the crossbar system.

Each non-ideality is switched on alone over the ``ideal`` preset and measured through the instrument or the
system, against formulas written out here from their sources (IBM aihwkit's PCM model, the configured spreads).
"""

import math
import re
import textwrap

import pytest
import torch

from hil import state as state_io
from hil.errors import ConfigError, DeviceError, LimitError
from hil.lab import Lab
from hil.physics.crossbar import ir_drop_factor
from hil.systems.crossbar import CrossbarSystem
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar

G_MAX = 25e-6
V_READ = 0.2


def make(preset: str = "ideal", seed: int = 0, **config) -> tuple[MemristorCrossbar, SimulatedCrossbar]:
    world = MemristorCrossbar(preset=preset, config=config, seed=seed)
    return world, SimulatedCrossbar(world, name="crossbar").connect()


def measured_conductances(crossbar: SimulatedCrossbar) -> torch.Tensor:
    """Each row read alone at 0.2 V: the conductances (rows × cols, S) when nothing else perturbs the read."""
    return crossbar.read(V_READ * torch.eye(crossbar.shape[0])) / V_READ


def uniform(shape: tuple[int, ...], low: float, high: float, seed: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -- construction ---------------------------------------------------------------------------------------------------
def test_device_to_device_conductance_scale_has_the_configured_spread() -> None:
    _, crossbar = make(construction={"conductance_scale_spread": 0.1})
    crossbar.program(torch.full(crossbar.shape, G_MAX / 2))
    ratio = measured_conductances(crossbar) / (G_MAX / 2)
    assert float(ratio.std()) == pytest.approx(0.1, rel=0.05)  # 4096 devices: standard error 1.1 %
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.006)
    _, ideal = make()
    ideal.program(torch.full(ideal.shape, G_MAX / 2))
    torch.testing.assert_close(measured_conductances(ideal), torch.full(ideal.shape, G_MAX / 2))


def binomial_tolerance(devices: int, fraction: float) -> float:
    """Five standard deviations of the count of ``devices`` each stuck with probability ``fraction``: a seeded chip's
    count falls outside with probability 6·10⁻⁷."""
    return 5 * math.sqrt(devices * fraction * (1 - fraction))


def test_the_conductance_scale_has_the_configured_spread_up_to_the_largest_allowed() -> None:
    """The scale is 1 + spread·N(0, 1), clamped at 0 (a device that conducts nothing). At the largest spread allowed,
    0.3 (harsh's), the clamp leaves the spread of 1024 × 1024 devices within five standard errors (1/√(2n) = 0.07 %)
    and clamps Φ(−1/0.3) = 0.043 % of them (450 ± 21 devices). A spread of 1 was taken: 16 % of the devices then
    conducted nothing, unasked, beside the 0.1 % stuck ones, and the rest spread by 0.87, not 1; it is refused."""
    n = 1024 * 1024
    world = MemristorCrossbar(preset="ideal", seed=1, config={"geometry": {"rows": 1024, "cols": 1024},
                                                              "construction": {"conductance_scale_spread": 0.3}})
    scale = world.conductance_scale.double()
    assert float(scale.std()) == pytest.approx(0.3, rel=5 / math.sqrt(2 * n))
    dead = 0.5 * math.erfc(1 / 0.3 / math.sqrt(2))
    assert abs(int((scale == 0).sum()) - n * dead) < binomial_tolerance(n, dead)
    for spread in (0.5, 1.0):
        with pytest.raises(ConfigError, match=r"less than or equal to 0\.3") as caught:
            MemristorCrossbar(config={"construction": {"conductance_scale_spread": spread}})
        assert caught.value.field == "config.construction.conductance_scale_spread"


def test_stuck_devices_occur_at_the_configured_fractions_and_ignore_programming() -> None:
    """Stuck-on devices read g_max and stuck-off ones g_min, whatever is programmed. Fractions of 2 % and 3 % of
    65 536 devices give counts of 1311 ± 36 and 1966 ± 44, so the five-standard-deviation tolerances (14 % and
    11 % of the counts) catch a fraction off by a fifth; at 0.1 % (65.5 ± 8.1 devices) they would let one off by
    half pass. A g_min above 0 tells a stuck-off device at g_min from one at 0 S."""
    g_min, on_fraction, off_fraction = 2e-6, 0.02, 0.03
    _, crossbar = make(geometry={"rows": 256, "cols": 256}, devices={"g_min_s": g_min},
                       construction={"stuck_on_fraction": on_fraction, "stuck_off_fraction": off_fraction})
    devices = 256 * 256
    crossbar.program(torch.full(crossbar.shape, G_MAX / 2))
    first = measured_conductances(crossbar)
    on = torch.isclose(first, torch.tensor(G_MAX), rtol=1e-5, atol=0)
    off = torch.isclose(first, torch.tensor(g_min), rtol=1e-5, atol=0)
    working = torch.isclose(first, torch.tensor(G_MAX / 2), rtol=1e-5, atol=0)
    assert bool((on | off | working).all())  # every device reads g_max, g_min or what it was programmed to
    assert abs(int(on.sum()) - devices * on_fraction) < binomial_tolerance(devices, on_fraction)
    assert abs(int(off.sum()) - devices * off_fraction) < binomial_tolerance(devices, off_fraction)
    crossbar.program(torch.full(crossbar.shape, G_MAX / 4))
    second = measured_conductances(crossbar)
    torch.testing.assert_close(second[on | off], first[on | off])
    torch.testing.assert_close(second[working], torch.full_like(second[working], G_MAX / 4))
    _, ideal = make(geometry={"rows": 256, "cols": 256})
    ideal.program(torch.full(ideal.shape, G_MAX / 2))
    torch.testing.assert_close(measured_conductances(ideal), torch.full(ideal.shape, G_MAX / 2))


def test_the_realistic_chip_has_the_readmes_stuck_fractions_to_within_a_fifth() -> None:
    """The README's 0.1 % stuck on and 0.1 % stuck off, counted on a 1024 × 1024 chip of the realistic preset (its
    wire set to 0, which a chip this large needs and which draws nothing): 1049 ± 32 devices each, so the
    five-standard-deviation tolerance is 15 % of the count."""
    devices, fraction = 1024 * 1024, 0.001
    world = MemristorCrossbar(preset="realistic", seed=1, config={"geometry": {"rows": 1024, "cols": 1024},
                                                                  "construction": {"wire_resistance_ohm": 0.0}})
    hidden = world.hidden_parameters()
    on = hidden["stuck_conductance_s"] == G_MAX
    off = (hidden["conductance_scale"] == 0) & ~on
    for stuck in (on, off):
        assert abs(int(stuck.sum()) - devices * fraction) < binomial_tolerance(devices, fraction)


def test_conductances_take_only_the_configured_levels() -> None:
    _, crossbar = make(construction={"levels": 16})
    targets = uniform(crossbar.shape, 0, G_MAX, seed=1)
    crossbar.program(targets)
    step = G_MAX / 15
    nearest = torch.round(targets / step) * step
    torch.testing.assert_close(measured_conductances(crossbar), nearest, rtol=1e-5, atol=1e-12)
    assert int(torch.unique(torch.round(nearest / step)).numel()) == 16


def test_column_gain_and_offset_have_the_configured_spreads() -> None:
    world, crossbar = make(geometry={"rows": 4, "cols": 1024},
                           construction={"column_gain_spread": 0.01, "column_offset_v": 1e-3})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    offset_a = crossbar.read(torch.zeros(1, 4))[0]
    full_a = crossbar.read(torch.full((1, 4), V_READ))[0]
    gain = (full_a - offset_a) / (V_READ * 4 * G_MAX)
    tia = world.config.converters.tia_gain_ohm
    assert float((offset_a * tia).std()) == pytest.approx(1e-3, rel=0.1)  # 1024 columns: standard error 2.2 %
    assert float(gain.std()) == pytest.approx(0.01, rel=0.1)
    assert float(gain.mean()) == pytest.approx(1.0, abs=0.002)


def test_a_column_gain_spread_that_could_invert_a_column_is_refused() -> None:
    """The column gain is 1 + spread·N(0, 1): a spread of 0.5 (its limit was) drew a negative gain for 2.3 % of the
    columns, which then read positive currents as negative (4 of the 64 columns of seed 0). It is at most 0.2 now, 5σ
    from a gain of 0, the bound of the camera's PRNU and of the oscillators' gain spreads."""
    with pytest.raises(ConfigError, match=r"less than or equal to 0\.2") as caught:
        MemristorCrossbar(config={"construction": {"column_gain_spread": 0.5}})
    assert caught.value.field == "config.construction.column_gain_spread"
    world, crossbar = make(seed=0, geometry={"rows": 4, "cols": 1024}, construction={"column_gain_spread": 0.2})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    assert bool((crossbar.read(torch.full((1, 4), V_READ)) > 0).all())
    assert float(world.column_gain.std()) == pytest.approx(0.2, rel=5 / math.sqrt(2 * 1024))


def test_the_realistic_chip_has_the_readme_magnitudes() -> None:
    """The tests above switch each non-ideality on over ``ideal`` with a value of their own; here the realistic
    preset itself is held to the README's table. On a 64 × 1024 chip (65 536 devices): the conductance scale's
    std 10 % (standard error 1/√(2n) = 0.3 %), 0.1 % stuck on and 0.1 % stuck off (65.5 ± 8.1 devices each), the
    column gain's 1 % and offset's 1 mV (1024 columns: 2.2 %), tolerances five standard errors (four for the
    counts); drift exponents with aihwkit's mean at g_max/2 (scale 1); the 8-bit ADC's step in every read. The
    wire, the levels, the DAC and the read noise (far below the ADC's step here) from the configuration."""
    # 0.35 Ω per cell is the preset's (asserted below); 1024 columns of it would drop the far end's read past 100 %
    world, crossbar = make("realistic", geometry={"rows": 64, "cols": 1024}, construction={"wire_resistance_ohm": 0.05})
    hidden = world.hidden_parameters()
    on = hidden["stuck_conductance_s"] == G_MAX
    off = (hidden["conductance_scale"] == 0) & ~on
    working = hidden["conductance_scale"][~(on | off)]
    n = 64 * 1024
    assert float(working.std()) == pytest.approx(0.1, rel=5 / math.sqrt(2 * n))
    assert abs(int(on.sum()) - 0.001 * n) < 4 * math.sqrt(0.001 * n)
    assert abs(int(off.sum()) - 0.001 * n) < 4 * math.sqrt(0.001 * n)
    assert float(hidden["column_gain"].std()) == pytest.approx(0.01, rel=5 / math.sqrt(2 * 1024))
    tia = world.config.converters.tia_gain_ohm
    assert float((hidden["column_offset_a"] * tia).std()) == pytest.approx(1e-3, rel=5 / math.sqrt(2 * 1024))
    crossbar.program(torch.full(crossbar.shape, G_MAX / 2))
    mean, std = folded_normal_moments(0.049, 0.008)  # aihwkit's μ and σ of ν at g_max/2, both at their clips
    assert float(world.drift_nu.mean()) == pytest.approx(mean, abs=5 * std / math.sqrt(n))
    codes = crossbar.read(uniform((16, 64), -V_READ, V_READ, seed=30)) / (2 / tia / 2**8)
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)
    assert bool((codes.round() % 2 == 1).any())  # the step is 8 bits', not a multiple of it
    assert (MemristorCrossbar().config.construction.wire_resistance_ohm, hidden["levels"],
            world.config.converters.dac_bits) == (0.35, 64, 8)
    assert world.config.shot.read_noise_scale == world.config.programming.noise_scale == 1.0


def test_the_harsh_chip_has_its_documented_magnitudes() -> None:
    """The harsh preset as `MemristorCrossbar`'s docstring gives it, measured on a 512 × 1024 chip (n = 524 288
    devices; its wire set to 0, as the preset's 1 Ω per cell would drop a chip this large past 100 %, and g_min to
    1 µS, which tells a stuck-off device from one whose drawn scale was below 0): the conductance scale's spread 0.3
    (standard error of the sample std 1/√(2n) = 0.1 %), 0.3 % stuck on and 0.3 % stuck off (1573 ± 40 devices
    each), the column gain's 3 % and offset's 3 mV (1024 columns: 2.2 %); at level 9 of the 16, twice aihwkit's
    programming noise (σ ≈ 2 µS) and twice its drift exponents (ν = 2·|N(0.049, 0.008²)|), tolerances five standard
    errors (five binomial standard deviations for the counts). The wire, the levels, the converters and the read and
    amplifier noise from the configuration."""
    rows, cols, g_min = 512, 1024, 1e-6
    n = rows * cols
    world, crossbar = make("harsh", seed=2, geometry={"rows": rows, "cols": cols}, devices={"g_min_s": g_min},
                           construction={"wire_resistance_ohm": 0.0})
    hidden = world.hidden_parameters()
    on = hidden["stuck_conductance_s"] == G_MAX
    off = hidden["stuck_conductance_s"] == g_min
    working = hidden["conductance_scale"][~(on | off)]
    assert float(working.std()) == pytest.approx(0.3, rel=5 / math.sqrt(2 * n))
    for stuck in (on, off):
        assert abs(int(stuck.sum()) - 0.003 * n) < binomial_tolerance(n, 0.003)
    assert float(hidden["column_gain"].std()) == pytest.approx(0.03, rel=5 / math.sqrt(2 * cols))
    tia = world.config.converters.tia_gain_ohm
    assert float((hidden["column_offset_a"] * tia).std()) == pytest.approx(3e-3, rel=5 / math.sqrt(2 * cols))
    target = torch.full(crossbar.shape, g_min + 9 / 15 * (G_MAX - g_min))  # level 9 of the 16
    crossbar.program(target)
    sigma = 2 * float(aihwkit_programming_sigma_s(target[0, 0]))
    assert float((world.programmed_s - target).std()) == pytest.approx(sigma, rel=5 / math.sqrt(2 * n))
    mean, std = folded_normal_moments(0.049, 0.008)  # aihwkit's μ and σ of ν at 0.64·g_max, both at their clips
    assert float(world.drift_nu.mean()) == pytest.approx(2 * mean, abs=5 * 2 * std / math.sqrt(n))
    config = MemristorCrossbar(preset="harsh").config
    assert (config.construction.wire_resistance_ohm, config.construction.levels, config.converters.dac_bits,
            config.converters.adc_bits) == (1.0, 16, 6, 6)
    assert (config.shot.read_noise_scale, config.shot.output_noise_a) == (2.0, 0.9e-6)


def test_ir_drop_first_order_agrees_with_the_exact_resistive_network() -> None:
    rows, cols, wire = 6, 8, 50.0
    conductance = uniform((rows, cols), 0, G_MAX, seed=2).double()
    voltages = uniform((3, rows), -V_READ, V_READ, seed=3).double()
    exact = _exact_network_currents(voltages, conductance, wire)
    ideal = voltages @ conductance
    first_order = voltages @ (conductance * ir_drop_factor(conductance, wire))
    drop = (ideal - exact).abs().max()
    assert float(drop / ideal.abs().max()) > 0.01  # the wires matter at this resistance
    assert float((first_order - exact).abs().max() / drop) < 0.05  # the neglected part is second order


def _exact_network_currents(voltages: torch.Tensor, conductance: torch.Tensor, wire: float) -> torch.Tensor:
    """Kirchhoff's current law for every row and column node; rows driven at column 0's end, columns read into
    virtual ground past the last row, a wire resistance ``wire`` between neighbouring nodes and at both ends."""
    rows, cols = conductance.shape
    n = rows * cols
    u = lambda i, j: i * cols + j  # noqa: E731 - row-wire node
    c = lambda i, j: n + i * cols + j  # noqa: E731 - column-wire node
    g_wire = 1 / wire
    matrix = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    drive = torch.zeros(2 * n, voltages.shape[0], dtype=torch.float64)
    for i in range(rows):
        for j in range(cols):
            g = float(conductance[i, j])
            links = [(u(i, j), c(i, j), g)]
            if j + 1 < cols:
                links.append((u(i, j), u(i, j + 1), g_wire))
            if i + 1 < rows:
                links.append((c(i, j), c(i + 1, j), g_wire))
            for a, b, value in links:
                matrix[a, a] += value
                matrix[b, b] += value
                matrix[a, b] -= value
                matrix[b, a] -= value
        matrix[u(i, 0), u(i, 0)] += g_wire  # to the driver
        drive[u(i, 0)] += g_wire * voltages[:, i]
    for j in range(cols):
        matrix[c(rows - 1, j), c(rows - 1, j)] += g_wire  # to the virtual ground
    nodes = torch.linalg.solve(matrix, drive)
    return torch.stack([nodes[c(rows - 1, j)] * g_wire for j in range(cols)], dim=1)


def test_an_array_whose_first_order_ir_drop_would_reverse_currents_is_refused() -> None:
    """The first-order factor 1 − x of the far corner, x = r·g_max·(rows(rows + 1) + cols(cols + 1))/2 with every
    device at g_max, turns negative for x ≥ 1: a realistic (0.35 Ω) tile of 512 × 512 has x = 2.3, and read its far
    devices' currents reversed without a word. 256 × 256 (x = 0.58) is still taken."""
    with pytest.raises(ConfigError, match=r"^config: construction\.wire_resistance_ohm 0\.35 Ω on 512 × 512 devices "
                                          r"up to g_max_s 2\.5e-05 S drops the far corner's read by 230 % to first "
                                          r"order \(the IR-drop model holds under 100 %\); lower wire_resistance_ohm "
                                          r"or g_max_s, or use a smaller array$"):
        MemristorCrossbar(preset="realistic", config={"geometry": {"rows": 512, "cols": 512}})
    world, crossbar = make("realistic", geometry={"rows": 256, "cols": 256})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    assert bool((ir_drop_factor(world.conductances(), 0.35) > 0).all())
    assert bool((crossbar.read(torch.full((1, 256), 0.02)) > 0).all())


def test_stuck_fractions_adding_up_to_more_than_every_device_are_refused_with_their_values() -> None:
    """It read 'stuck_on_fraction + stuck_off_fraction must be at most 1', the values given left unsaid."""
    with pytest.raises(ConfigError, match=r"^config\.construction: stuck_on_fraction 0\.7 and stuck_off_fraction 0\.4 "
                                          r"add up to 1\.1, more than all the devices; give fractions that add up to "
                                          r"at most 1$"):
        MemristorCrossbar(config={"construction": {"stuck_on_fraction": 0.7, "stuck_off_fraction": 0.4}})


def test_ir_drop_in_the_world_follows_the_configured_wire_resistance() -> None:
    _, crossbar = make(construction={"wire_resistance_ohm": 0.35})
    conductance = uniform(crossbar.shape, 0, G_MAX, seed=4)
    crossbar.program(conductance)
    voltages = uniform((50, 64), -V_READ, V_READ, seed=5)
    currents = crossbar.read(voltages)
    expected = voltages @ (conductance * ir_drop_factor(conductance, 0.35))
    torch.testing.assert_close(currents, expected, rtol=1e-4, atol=1e-10)
    drop = (voltages @ conductance - currents).abs().max() / currents.abs().max()
    assert 1e-3 < float(drop) < 0.05


# -- programming ----------------------------------------------------------------------------------------------------
def aihwkit_programming_sigma_s(target_s: torch.Tensor) -> torch.Tensor:
    relative = target_s / G_MAX
    return (0.26348 + 1.9650 * relative - 1.1731 * relative**2) * 1e-6


@pytest.mark.parametrize("scale", [1.0, 2.0])  # 2: the harsh preset's prog_noise_scale
def test_programming_noise_follows_the_aihwkit_pcm_polynomial(scale: float) -> None:
    _, crossbar = make(programming={"noise_scale": scale})
    targets = uniform(crossbar.shape, 0.2 * G_MAX, G_MAX, seed=6)  # far from 0 S, where the noise is clipped
    crossbar.program(targets)
    first = measured_conductances(crossbar)
    z = (first - targets) / (scale * aihwkit_programming_sigma_s(targets))
    assert abs(float(z.mean())) < 0.06 and float(z.std()) == pytest.approx(1.0, rel=0.05)  # 4096 devices
    crossbar.program(targets)  # drawn anew at every programming
    redrawn = (measured_conductances(crossbar) - targets) / (scale * aihwkit_programming_sigma_s(targets))
    assert abs(float(torch.corrcoef(torch.stack([z.flatten(), redrawn.flatten()]))[0, 1])) < 0.08
    crossbar.program(torch.zeros(crossbar.shape))
    assert float(measured_conductances(crossbar).min()) >= 0  # no negative conductance
    _, ideal = make()
    ideal.program(targets)
    torch.testing.assert_close(measured_conductances(ideal), targets)


@pytest.mark.parametrize("relative", [0.1, 0.4, 0.7, 1.0])
def test_programming_noise_has_the_polynomials_spread_at_each_conductance(relative: float) -> None:
    """The programming noise depends on the target: σ = c0 + c1·g/g_max + c2·(g/g_max)², 0.45 µS at 0.1·g_max and
    1.06 µS at 0.7·g_max. Spread over targets from 0.2 to 1·g_max (the test above), a σ the same at every conductance,
    of the polynomial's rms there, gives z-scores of unit spread too; here every device of a 64 × 64 chip is
    programmed to one target, four times over. The sample standard deviation of 4096 devices has a relative standard
    error of 1/√(2·4095) = 1.1 %, the mean one of σ/64: tolerances five of them."""
    _, crossbar = make(programming={"noise_scale": 1.0})
    target = torch.full(crossbar.shape, relative * G_MAX)
    crossbar.program(target)
    error = measured_conductances(crossbar) - target
    sigma = float(aihwkit_programming_sigma_s(target[0, 0]))
    assert float(error.std()) == pytest.approx(sigma, rel=5 / math.sqrt(2 * 4095))
    assert abs(float(error.mean())) < 5 * sigma / 64


def test_programming_noise_scales_with_g_max_over_the_reference_g_max() -> None:
    g_max, reference = 40e-6, 16e-6  # σ = polynomial (µS) × 2.5; neither g_max nor the reference is aihwkit's 25 µS
    _, crossbar = make(devices={"g_max_s": g_max},
                       programming={"noise_scale": 1.0, "reference_g_max_s": reference})
    targets = uniform(crossbar.shape, 0.2 * g_max, g_max, seed=22)
    crossbar.program(targets)
    relative = targets / g_max
    sigma = (0.26348 + 1.9650 * relative - 1.1731 * relative**2) * 1e-6 * g_max / reference
    z = (measured_conductances(crossbar) - targets) / sigma
    assert abs(float(z.mean())) < 0.06 and float(z.std()) == pytest.approx(1.0, rel=0.05)  # 4096 devices


# -- slow state -----------------------------------------------------------------------------------------------------
def folded_normal_moments(mean: float, std: float) -> tuple[float, float]:
    """Mean and standard deviation of |N(mean, std²)|."""
    folded_mean = (std * math.sqrt(2 / math.pi) * math.exp(-mean**2 / (2 * std**2))
                   + mean * math.erf(mean / (std * math.sqrt(2))))
    return folded_mean, math.sqrt(mean**2 + std**2 - folded_mean**2)


@pytest.mark.parametrize(("relative", "mean", "std", "scale"), [
    (0.5, 0.049, 0.008, 1.0),  # aihwkit: μ = −0.0155·ln 0.5 + 0.0244 clipped up to 0.049; σ clipped up to 0.008
    (0.05, -0.0155 * math.log(0.05) + 0.0244, -0.0125 * math.log(0.05) - 0.0059, 1.0),
    (0.05, -0.0155 * math.log(0.05) + 0.0244, -0.0125 * math.log(0.05) - 0.0059, 2.0),  # harsh's drift_scale
])
def test_drift_follows_the_power_law_with_aihwkit_exponents(relative: float, mean: float, std: float,
                                                            scale: float) -> None:
    world, crossbar = make(slow={"drift_scale": scale}, geometry={"rows": 128, "cols": 128})
    target = relative * G_MAX
    crossbar.program(torch.full(crossbar.shape, target))
    exponents = []
    for wait_s in (100.0, 10_000.0):
        world.clock.sleep(wait_s - (world.clock.now() - world.programmed_at_s))
        age = world.clock.now() - world.programmed_at_s
        ratio = measured_conductances(crossbar) / target
        exponents.append(-torch.log(ratio) / math.log((age + 20.0) / 20.0))
    torch.testing.assert_close(exponents[0], exponents[1], rtol=2e-3, atol=1e-5)  # one ν per device: a power law
    expected_mean, expected_std = folded_normal_moments(mean, std)  # ν = |N(μ, σ)|·drift_scale
    assert float(exponents[1].mean()) == pytest.approx(scale * expected_mean, rel=0.02)  # 16 384 devices
    assert float(exponents[1].std()) == pytest.approx(scale * expected_std, rel=0.03)  # standard error 0.6 %
    ideal_world, ideal = make()
    ideal.program(torch.full(ideal.shape, target))
    ideal_world.clock.sleep(10_000.0)
    torch.testing.assert_close(measured_conductances(ideal), torch.full(ideal.shape, target))


# -- per shot -------------------------------------------------------------------------------------------------------
def test_a_drift_t0_shorter_than_the_read_time_is_refused() -> None:
    """The 1/f variance grows as ln((t + t0 + t_read)/(2·t_read)), negative for t + t0 < t_read: a t0 of 1 ns read
    at once gave NaN currents without a word."""
    with pytest.raises(ConfigError, match=r"^config: slow\.drift_t0_s 1e-09 s is shorter than "
                                          r"shot\.read_noise_t_read_s 2\.5e-07 s"):
        MemristorCrossbar(config={"slow": {"drift_t0_s": 1e-9}})
    _, crossbar = make(shot={"read_noise_scale": 1.0}, slow={"drift_t0_s": 250e-9})  # the least t0: no noise at t = 0
    crossbar.program(torch.full(crossbar.shape, G_MAX / 2))
    assert bool(torch.isfinite(crossbar.read(torch.full((4, 64), V_READ))).all())


def aihwkit_read_sigma_s(conductance_s: torch.Tensor, age_s: float) -> torch.Tensor:
    q = (0.0088 / (conductance_s / G_MAX).pow(0.65).clamp(min=1e-3)).clamp(max=0.2)
    t = age_s + 20.0
    return conductance_s * q * math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))


@pytest.mark.parametrize("scale", [1.0, 2.0])  # 2: the harsh preset's read_noise_scale
def test_read_noise_follows_the_aihwkit_one_over_f_model_per_device_and_read(scale: float) -> None:
    world, crossbar = make(shot={"read_noise_scale": scale})
    conductance = uniform(crossbar.shape, 0, G_MAX, seed=7)
    crossbar.program(conductance)
    voltage = uniform((64,), -V_READ, V_READ, seed=8)
    world.clock.sleep(30.0)
    age = world.clock.now() - world.programmed_at_s
    currents = crossbar.read(voltage.expand(4000, 64))
    variance = (voltage**2) @ (scale * aihwkit_read_sigma_s(conductance, age)) ** 2
    ratio = currents.var(dim=0) / variance
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.03)  # 64 columns × 4000 reads: standard error 0.4 %
    assert float((ratio - 1).abs().max()) < 0.15
    torch.testing.assert_close(currents.mean(dim=0), voltage @ conductance, rtol=0, atol=float(
        5 * variance.max().sqrt() / math.sqrt(4000)))
    correlation = torch.corrcoef(torch.stack([currents[:-1, 0], currents[1:, 0]]))[0, 1]
    assert abs(float(correlation)) < 0.07  # independent from read to read
    _, ideal = make()
    ideal.program(conductance)
    assert float(ideal.read(voltage.expand(100, 64)).var(dim=0).max()) == 0.0


def test_read_noise_grows_from_t0_not_from_the_programming() -> None:
    """aihwkit's 1/f variance is ∝ ln((t + t0 + t_read)/(2·t_read)), t the time since programming. Read 30 s after
    programming with the default t0 = 20 s, dropping t0 lowers it by under 3 % (the test above cannot tell); with a
    t0 of 10⁴ s it is ln(2·10¹⁰) against ln(6·10⁷), a third lower. 4000 reads of 64 columns: standard error 0.4 %."""
    t0 = 1e4
    world, crossbar = make(shot={"read_noise_scale": 1.0}, slow={"drift_t0_s": t0})
    conductance = uniform(crossbar.shape, 0, G_MAX, seed=32)
    crossbar.program(conductance)
    world.clock.sleep(30.0)
    age = world.clock.now() - world.programmed_at_s
    voltage = uniform((64,), -V_READ, V_READ, seed=33)
    currents = crossbar.read(voltage.expand(4000, 64))
    sigma = aihwkit_read_sigma_s(conductance, age) * math.sqrt(math.log((age + t0 + 250e-9) / (2 * 250e-9))
                                                               / math.log((age + 20.0 + 250e-9) / (2 * 250e-9)))
    ratio = currents.var(dim=0) / ((voltage**2) @ sigma**2)
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.03)


def test_amplifier_noise_has_the_configured_rms() -> None:
    _, crossbar = make(shot={"output_noise_a": 0.3e-6})
    crossbar.program(torch.full(crossbar.shape, G_MAX / 2))
    currents = crossbar.read(torch.zeros(1000, 64))
    assert float(currents.std()) == pytest.approx(0.3e-6, rel=0.02)  # 64 000 samples
    assert abs(float(currents.mean())) < 5e-9


def test_read_noise_under_drift_scales_with_the_drifted_conductance_and_the_programmed_q() -> None:
    # σ = |g(t)|·Q(g_prog)·√ln(...): with a typical ν·ln((t + t0)/t0) ≈ 0.5-1 here, Q(g(t)) would raise the variance
    # by e^(1.3·ν·ln) and |g_prog| by e^(2·ν·ln), a factor of 2 or more.
    repeats = 200
    world, crossbar = make(slow={"drift_scale": 1.0}, shot={"read_noise_scale": 1.0},
                           geometry={"rows": 32, "cols": 32, "max_batch": 32 * repeats})
    programmed = uniform(crossbar.shape, 0.02 * G_MAX, 0.3 * G_MAX, seed=23)  # Q between its clips at both times
    crossbar.program(programmed)
    world.clock.sleep(1e6)
    age = world.clock.now() - world.programmed_at_s
    drifted = world.conductances()
    assert float((drifted / programmed).median()) < 0.6  # most devices have drifted far
    currents = crossbar.read((V_READ * torch.eye(32)).repeat(repeats, 1)).reshape(repeats, 32, 32) / V_READ
    sigma = drifted * aihwkit_read_sigma_s(programmed, age) / programmed
    ratio = currents.var(dim=0) / sigma**2
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.03)  # 1024 devices × 200 reads: standard error 0.3 %
    most_drifted = (drifted / programmed).flatten() < (drifted / programmed).quantile(0.25)
    assert float(ratio.flatten()[most_drifted].mean()) == pytest.approx(1.0, abs=0.05)  # standard error 0.6 %
    torch.testing.assert_close(currents.mean(dim=0), drifted, rtol=0, atol=float(
        5 * sigma.max() / math.sqrt(repeats)))


def test_amplifier_noise_has_the_configured_rms_times_the_column_gain_with_read_noise_on() -> None:
    world, crossbar = make("realistic", geometry={"cols": 256}, construction={"column_gain_spread": 0.2},
                           converters={"dac_bits": None, "adc_bits": None})
    assert world.config.shot.read_noise_scale > 0 and world.config.shot.output_noise_a == 0.3e-6
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=24))
    currents = crossbar.read(torch.zeros(2000, 64))  # no read voltage: no read noise, only the amplifiers'
    ratio = currents.std(dim=0) / (0.3e-6 * world.column_gain.abs())
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.01)  # 256 columns × 2000 reads: standard error 0.1 %
    assert float((ratio - 1).abs().max()) < 0.1  # per column: standard error 1.6 %
    torch.testing.assert_close(currents.mean(dim=0), world.column_offset_a, rtol=0, atol=float(
        5 * 0.3e-6 * world.column_gain.abs().max() / math.sqrt(2000)))
    alternating = 0.1 * (1 - 2 * (torch.arange(64) % 2))  # ±0.1 V: far from clipping, read noise ≈ 2 × amplifier
    driven = crossbar.read(alternating.expand(2000, 64)).std(dim=0)
    assert torch.all(driven > 1.5 * currents.std(dim=0))  # the read noise is on


@pytest.mark.parametrize("shot", [{"read_noise_scale": 1.0, "output_noise_a": 0.3e-6}, {"output_noise_a": 0.3e-6}])
def test_read_and_amplifier_noise_are_drawn_anew_at_every_read_call(shot: dict) -> None:
    """Per shot means per read call too, not only per row of one call: two calls of 2000 reads of one input give
    independent noise (their sample-by-sample correlation within 5 standard errors, 5/√(2000·64), of 0) and each
    call the full variance; a chip of the same seed draws the same. Both paths are covered: 1/f read noise with the
    amplifiers' (one draw of their summed variance) and the amplifiers' noise alone."""
    reads = []
    for _ in range(2):
        _, crossbar = make(seed=3, shot=shot)
        crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=27))
        voltage = uniform((64,), -V_READ, V_READ, seed=28).expand(2000, 64)
        reads.append((crossbar.read(voltage), crossbar.read(voltage)))
    assert torch.equal(reads[0][0], reads[1][0]) and torch.equal(reads[0][1], reads[1][1])
    first, second = reads[0]
    mean = torch.cat([first, second]).mean(dim=0)
    correlation = torch.corrcoef(torch.stack([(first - mean).flatten(), (second - mean).flatten()]))[0, 1]
    assert abs(float(correlation)) < 5 / math.sqrt(first.numel())
    ratio = float(second.var(dim=0).mean() / first.var(dim=0).mean())
    assert ratio == pytest.approx(1.0, abs=5 * math.sqrt(2 * 2 / (2000 * 64)))  # F-ratio of 64 × 1999 degrees


def test_read_noise_passes_through_the_ir_drop_as_the_signal_does() -> None:
    """A device's 1/f noise is a fluctuation of its conductance, so the wires scale it as they scale the device:
    σ = F·|g|·Q·√ln(...), F the first-order IR-drop factor (`ir_drop_factor`). At 5 Ω per cell and g up to g_max
    the far corner keeps F ≈ 0.7, its variance half the drop-free one. 100 reads of every device, 4096 devices:
    the mean ratio of measured to expected variance has standard error √(2/99)/√4096 = 0.2 % (tolerance five),
    over the quarter of devices with the largest drop 0.4 % (tolerance 2.5 %, against 1/F² ≈ 1.5 without F)."""
    repeats, wire = 100, 5.0
    world, crossbar = make(shot={"read_noise_scale": 1.0}, construction={"wire_resistance_ohm": wire},
                           geometry={"max_batch": 64 * repeats})
    conductance = uniform(crossbar.shape, 0.2 * G_MAX, G_MAX, seed=29)
    crossbar.program(conductance)
    currents = crossbar.read((V_READ * torch.eye(64)).repeat(repeats, 1)).reshape(repeats, 64, 64) / V_READ
    age = world.clock.now() - world.programmed_at_s
    factor = ir_drop_factor(conductance, wire)
    assert float(factor.min()) < 0.75
    ratio = currents.var(dim=0) / (factor * aihwkit_read_sigma_s(conductance, age)) ** 2
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.01)
    dropped = factor < factor.quantile(0.25)
    assert float(ratio[dropped].mean()) == pytest.approx(1.0, abs=0.025)
    torch.testing.assert_close(currents.mean(dim=0), conductance * factor, rtol=0, atol=float(
        5 * aihwkit_read_sigma_s(conductance, age).max() / math.sqrt(repeats)))


def test_row_dac_rounds_the_read_voltages() -> None:
    _, crossbar = make(converters={"dac_bits": 4})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    levels = torch.tensor([-0.2, -0.11, -0.0374, 0.0, 0.0126, 0.0374, 0.13, 0.2])
    voltages = torch.zeros(len(levels), 64)
    voltages[:, 0] = levels
    step = 0.4 / 16
    applied = torch.round(levels / step).clamp(-8, 7) * step  # two's complement: the top code is 0.175 V
    torch.testing.assert_close(crossbar.read(voltages)[:, 5], applied * G_MAX, rtol=1e-5, atol=1e-12)


def test_column_adc_rounds_and_clips_the_currents() -> None:
    world, crossbar = make(converters={"adc_bits": 6, "adc_clip": True})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    step = 2 * 1.0 / world.config.converters.tia_gain_ohm / 64
    voltages = torch.zeros(4, 64)
    voltages[0], voltages[1], voltages[2, 0], voltages[3, 0] = V_READ, -V_READ, 0.01, 0.1
    currents = crossbar.read(voltages)
    codes = currents / step
    torch.testing.assert_close(codes, torch.round(codes), rtol=0, atol=1e-4)
    assert torch.all(currents[0] == 31 * step) and torch.all(currents[1] == -32 * step)  # clipped at ±range
    torch.testing.assert_close(currents[3], torch.full((64,), round(0.1 * G_MAX / step) * step))
    assert torch.all(currents[2] == 0)  # 0.25 µA is below half a step


def test_exact_adc_still_clips_at_its_range_when_clipping_is_on() -> None:
    world, crossbar = make(converters={"adc_bits": None, "adc_clip": True})
    crossbar.program(torch.full(crossbar.shape, G_MAX))
    limit = 1.0 / world.config.converters.tia_gain_ohm  # 60 µA: 12 full-scale devices at 0.2 V
    voltages = torch.zeros(4, 64)
    voltages[0], voltages[1], voltages[2, :5], voltages[3, 0] = V_READ, -V_READ, V_READ, 0.0123
    currents = crossbar.read(voltages)
    assert torch.all(currents[0] == limit) and torch.all(currents[1] == -limit)  # 320 µA unclipped
    torch.testing.assert_close(currents[2], torch.full((64,), 5 * V_READ * G_MAX))  # 25 µA: within range, exact
    torch.testing.assert_close(currents[3], torch.full((64,), 0.0123 * G_MAX))
    _, unclipped = make(converters={"adc_bits": None, "adc_clip": False})
    unclipped.program(torch.full(unclipped.shape, G_MAX))
    torch.testing.assert_close(unclipped.read(voltages[:1]), torch.full((1, 64), 64 * V_READ * G_MAX))


# -- seeds ----------------------------------------------------------------------------------------------------------
def test_same_seed_same_numbers_and_another_seed_another_chip() -> None:
    outputs = []
    for seed in (5, 5, 6):
        world, crossbar = make("realistic", seed=seed)
        crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=9))
        outputs.append((world.hidden_parameters(), crossbar.read(uniform((20, 64), -0.2, 0.2, seed=10))))
    (hidden_a, y_a), (hidden_b, y_b), (hidden_c, y_c) = outputs
    assert torch.equal(y_a, y_b)
    for name in ("conductance_scale", "column_gain", "column_offset_a"):
        assert torch.equal(hidden_a[name], hidden_b[name]) and not torch.equal(hidden_a[name], hidden_c[name])
    assert not torch.equal(y_a, y_c)


# -- differential read ----------------------------------------------------------------------------------------------
def test_differential_read_of_an_ideal_chip_is_the_difference_of_its_column_reads() -> None:
    _, crossbar = make()
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
    voltages = uniform((50, 64), -V_READ, V_READ, seed=2)
    currents = crossbar.read(voltages)
    differences = currents[:, 0::2] - currents[:, 1::2]
    torch.testing.assert_close(crossbar.read_pairs(voltages, 32), differences, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(crossbar.read_pairs(voltages, 3), differences[:, :3], rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("preset", ["realistic", "harsh"])
def test_differential_read_through_column_adcs_digitises_each_column_then_subtracts(preset: str) -> None:
    reads = []
    for differential in (True, False):
        _, crossbar = make(preset, seed=4)
        crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
        voltages = uniform((50, 64), -V_READ, V_READ, seed=2)
        if differential:
            reads.append(crossbar.read_pairs(voltages, 20))
        else:
            currents = crossbar.read(voltages)
            reads.append(currents[:, 0:40:2] - currents[:, 1:40:2])
    assert torch.equal(reads[0], reads[1])  # the same draws, the same ADC codes


def test_differential_read_without_adcs_has_the_mean_and_noise_of_two_column_reads_subtracted() -> None:
    # Computed as the pairs alone: one Gaussian per pair, of the two columns' variances added.
    config = {"shot": {"read_noise_scale": 1.0, "output_noise_a": 0.3e-6},
              "construction": {"column_gain_spread": 0.01, "column_offset_v": 1e-3}, "converters": {"dac_bits": 8}}
    _, crossbar = make(**config)
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
    voltages = uniform((1, 64), -V_READ, V_READ, seed=2).expand(4096, 64)
    currents = crossbar.read(voltages)
    subtracted = currents[:, 0::2] - currents[:, 1::2]
    differences = crossbar.read_pairs(voltages, 32)
    spread = subtracted.std(dim=0)
    assert float(spread.min()) > 0.5e-6  # the amplifier noise of two columns, √2 · 0.3 µA, at the least
    assert torch.allclose(differences.std(dim=0), spread, rtol=0.06)  # 4096 reads: standard error 1.1 %
    assert torch.allclose(differences.mean(dim=0), subtracted.mean(dim=0), rtol=0, atol=float(4 * spread.max() / 45))


@pytest.mark.parametrize("preset", ["ideal", "realistic"])  # the pairs computed alone, and every column digitised
def test_a_differential_read_is_a_tensor_of_its_own_that_a_later_read_leaves_alone(preset: str) -> None:
    _, crossbar = make(preset)
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
    first = crossbar.read_pairs(uniform((10, 64), -V_READ, V_READ, seed=2), 32)
    kept = first.clone()
    crossbar.read_pairs(uniform((10, 64), -V_READ, V_READ, seed=3), 32)
    assert torch.equal(first, kept)


def test_differential_reads_of_every_number_of_pairs_keep_the_states_of_the_last_few() -> None:
    world, crossbar = make()
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
    voltages = uniform((3, 64), -V_READ, V_READ, seed=2)
    full = crossbar.read(voltages)
    for pairs in [*range(1, 33), 2, 32]:
        subtracted = full[:, 0:2 * pairs:2] - full[:, 1:2 * pairs:2]
        torch.testing.assert_close(crossbar.read_pairs(voltages, pairs), subtracted, rtol=1e-5, atol=1e-10)
    assert sorted(world._state._paired) == [2, 30, 31, 32]  # a sweep over 512 pairs of 1024 columns kept 0.5 GB


def test_differential_read_after_restoring_a_checkpoint_that_kept_no_differential_states() -> None:
    world, crossbar = make()
    crossbar.program(uniform(crossbar.shape, 0, G_MAX, seed=1))
    voltages = uniform((10, 64), -V_READ, V_READ, seed=2)
    crossbar.read(voltages)
    saved = state_io.capture(world)
    del saved["_state"]["__object__"]["_paired"]  # as a hil before the differential read saved its read state
    expected = crossbar.read_pairs(voltages, 32)
    resumed, resumed_crossbar = make()
    state_io.restore(resumed, saved)
    assert torch.equal(resumed_crossbar.read_pairs(voltages, 32), expected)


@pytest.mark.parametrize("preset", ["realistic", "harsh"])
def test_reads_of_other_sizes_in_turn_give_what_reads_into_fresh_buffers_give(preset: str) -> None:
    """A read keeps its temporaries in the world's buffers, of the last size or cut from a larger one: the numbers
    are those of a world that starts every read without buffers."""
    (_, crossbar), (fresh, fresh_crossbar) = make(preset, seed=3), make(preset, seed=3)
    for instrument in (crossbar, fresh_crossbar):
        instrument.program(uniform(instrument.shape, 0, G_MAX, seed=9))
    for rows in (20, 20, 3, 20, 41, 1):
        voltages = uniform((rows, 64), -0.2, 0.2, seed=rows)
        fresh.__dict__.pop("scratch", None)
        assert torch.equal(crossbar.read(voltages), fresh_crossbar.read(voltages))


def test_same_seed_same_drift_and_another_seed_another() -> None:
    """The drift exponents ν are drawn at programming from the world's seeded stream: two chips of one seed
    programmed alike have drifted alike after 10⁴ s (ν·ln(501) moves g by tens of %), another seed's differently.
    (Read right after programming, as the seed test above does, the drift is still below the ADC's step.)"""
    drifted = []
    for seed in (5, 5, 6):
        world, crossbar = make(seed=seed, slow={"drift_scale": 1.0})
        crossbar.program(uniform(crossbar.shape, 0.05 * G_MAX, G_MAX, seed=9))
        world.clock.sleep(1e4)
        drifted.append(world.conductances())
    assert torch.equal(drifted[0], drifted[1])
    assert float((drifted[0] - drifted[2]).abs().max()) > 0.01 * G_MAX


# -- the system -----------------------------------------------------------------------------------------------------
def make_system(preset: str = "ideal", seed: int = 0, settings: dict | None = None,
                **config) -> tuple[MemristorCrossbar, CrossbarSystem]:
    world, crossbar = make(preset, seed, **config)
    return world, CrossbarSystem({"crossbar": crossbar}, **(settings or {}))


@pytest.mark.parametrize(("geometry", "settings"), [
    ({}, {}),
    ({}, {"n_in": 40, "n_out": 10, "read_voltage_v": 0.1, "g_min_s": 1e-6}),
    ({"rows": 16, "cols": 130}, {"n_out": 60}),  # wider than PAIRING_MATMUL_MAX_COLS: strided pairing
])
def test_ideal_world_equals_the_nominal_physics_model(geometry: dict, settings: dict) -> None:
    _, system = make_system(settings=settings, geometry=geometry)
    theta = uniform((system.n_params,), -1, 1, seed=11)
    x = uniform((300, system.n_in), -1, 1, seed=12)
    y = system.forward(x, theta)
    with torch.no_grad():
        modelled = system.physics_model()(x, theta)
    torch.testing.assert_close(y, modelled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, x @ theta.reshape(system.n_in, system.n_out), rtol=1e-4, atol=1e-4)


def test_physics_model_is_differentiable_in_inputs_parameters_and_calibration() -> None:
    _, system = make_system("realistic", geometry={"rows": 8, "cols": 8})
    model = system.oracle_model()
    x = uniform((5, 8), -1, 1, seed=13).requires_grad_()
    theta = uniform((system.n_params,), -1, 1, seed=14).requires_grad_()
    model(x, theta).square().sum().backward()
    for tensor in (x, theta, model.conductance_scale, model.wire_resistance_ohm, model.column_gain,
                   model.column_offset, model.stuck_level):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0



def test_the_weight_gradient_is_the_same_at_zero_as_beside_it() -> None:
    """θ = 0 (``theta_init: center``) is where one device of the pair takes over from the other: the ideal
    model's y = Wᵀx has ∂y/∂W = x there as everywhere, not twice that."""
    _, system = make_system("ideal", geometry={"rows": 4, "cols": 4})
    model, x = system.physics_model(), uniform((3, 4), -1, 1, seed=15)
    for value in (0.0, 1e-3, -1e-3):
        theta = torch.full((system.n_params,), value, requires_grad=True)
        model(x, theta).sum().backward()
        torch.testing.assert_close(theta.grad, x.sum(0)[:, None].expand(4, 2).reshape(-1), rtol=1e-5, atol=1e-6)

def test_oracle_matches_the_noise_averaged_realistic_world_much_better_than_nominal() -> None:
    _, system = make_system("realistic", seed=3, slow={"drift_scale": 0.0})
    theta = uniform((system.n_params,), -1, 1, seed=15)
    x = uniform((64, system.n_in), -1, 1, seed=16)
    repeats, programmings, total = 32, 6, torch.zeros(64, system.n_out)
    for _ in range(programmings):  # average over programming noise as well as read noise
        system.forward(x[:1], -theta)
        total += system.forward(x.repeat(repeats, 1), theta).reshape(repeats, 64, -1).mean(dim=0)
    averaged = total / programmings
    with torch.no_grad():
        oracle = ((system.oracle_model()(x, theta) - averaged) ** 2).mean()
        nominal = ((system.physics_model()(x, theta) - averaged) ** 2).mean()
    assert float(oracle) < 0.1 * float(nominal)
    assert float(nominal) > 0.01  # the realistic chip is visibly off its nominal physics


def test_oracle_equals_the_realistic_construction_with_per_shot_and_programming_noise_off() -> None:
    # Every construction non-ideality of ``realistic`` on (device spread, stuck devices, 64 levels, wire resistance,
    # column gain and offset, clipping), everything drawn per programming or per read off, converters exact.
    _, system = make_system("realistic", seed=4, programming={"noise_scale": 0.0}, slow={"drift_scale": 0.0},
                            shot={"read_noise_scale": 0.0, "output_noise_a": 0.0},
                            converters={"dac_bits": None, "adc_bits": None},
                            construction={"stuck_on_fraction": 0.01, "stuck_off_fraction": 0.01})
    theta = uniform((system.n_params,), -1, 1, seed=25)
    # every row at ±1 drives each column past the ADC's ±60 µA (about 64 · 0.2 V · 25 µS / 4 = 80 µA): clipped
    full = torch.ones(1, system.n_in)
    x = torch.cat([uniform((128, system.n_in), -1, 1, seed=26), full, -full])
    y = system.forward(x, theta)
    model, nominal = system.oracle_model(), system.physics_model()
    with torch.no_grad():
        assert float((model(x, theta) - y).abs().max()) < 1e-4  # float32 rounding of outputs up to ~10
        # each hidden part alone, set to its nominal value, moves the model far beyond that tolerance
        for name in ("column_offset", "wire_resistance_ohm", "column_gain", "conductance_scale", "stuck_level",
                     "current_limit_a"):
            part = getattr(model, name)
            kept = part.clone()
            part.copy_(getattr(nominal, name))
            assert float((model(x, theta) - y).abs().max()) > 3e-3, name
            part.copy_(kept)


def test_device_time_follows_programming_and_reads_and_theta_is_written_only_when_it_changes() -> None:
    world, system = make_system("realistic", geometry={"rows": 16, "cols": 32, "max_batch": 100})
    timing = world.config.timing
    program_s = timing.call_overhead_s + 16 * 32 * timing.program_time_per_device_s
    read_s = lambda n: timing.call_overhead_s + n * timing.read_time_per_vector_s  # noqa: E731
    theta = uniform((system.n_params,), -1, 1, seed=17)
    system.forward(torch.zeros(250, 16), theta)  # split into 100 + 100 + 50
    assert system.calls == 3 and system.programmings == 1
    assert system.device_time_s == pytest.approx(program_s + 2 * read_s(100) + read_s(50))
    before = world.clock.now()
    system.forward(torch.zeros(7, 16), theta)
    assert system.programmings == 1 and world.clock.now() - before == pytest.approx(read_s(7))
    system.forward(torch.zeros(7, 16), theta * 0.5)
    assert system.programmings == 2 and world.clock.now() - before == pytest.approx(program_s + 2 * read_s(7))


def test_harsh_is_worse_than_realistic() -> None:
    errors = {}
    for preset in ("realistic", "harsh"):
        _, system = make_system(preset, seed=1)
        theta = uniform((system.n_params,), -1, 1, seed=18)
        x = uniform((256, system.n_in), -1, 1, seed=19)
        errors[preset] = float(((system.forward(x, theta) - x @ theta.reshape(64, 32)) ** 2).mean())
    assert errors["harsh"] > 2 * errors["realistic"]


def test_a_crossbar_of_one_row_and_one_column_pair_is_a_one_weight_layer() -> None:
    _, crossbar = make(geometry={"rows": 1, "cols": 2, "max_batch": 1})
    system = CrossbarSystem({"crossbar": crossbar})
    assert (system.n_in, system.n_out, system.n_params, system.max_batch) == (1, 1, 1, 1)
    x = torch.tensor([[0.5], [-1.0], [1.0]])  # three device calls of one row
    torch.testing.assert_close(system.forward(x, torch.tensor([0.5])), 0.5 * x, atol=0.02, rtol=0)
    assert system.calls == 3


def test_a_crossbar_of_one_column_has_no_pair_for_an_output_and_says_so() -> None:
    """It was refused for n_out, which the lab did not write: "0 is outside 1..0"."""
    _, crossbar = make(geometry={"rows": 4, "cols": 1})
    with pytest.raises(ConfigError, match=r"^instruments\.crossbar: system 'crossbar': crossbar has 1 column, and an "
                                          r"output is the difference of a pair of columns \(G\+ and G−\); give the "
                                          r"crossbar at least 2 columns$"):
        CrossbarSystem({"crossbar": crossbar})


# -- errors ---------------------------------------------------------------------------------------------------------
def test_bad_settings_and_values_are_refused_with_the_allowed_range() -> None:
    _, crossbar = make()
    with pytest.raises(ConfigError, match=r"n_out: 33 is outside 1\.\.32"):
        CrossbarSystem({"crossbar": crossbar}, n_out=33)
    with pytest.raises(ConfigError, match=r"read_voltage_v: 0\.3 V is outside 0\.\.0\.2 V"):
        CrossbarSystem({"crossbar": crossbar}, read_voltage_v=0.3)
    with pytest.raises(ConfigError, match=r"g_max_s: 3e-05 S is outside"):
        CrossbarSystem({"crossbar": crossbar}, g_max_s=30e-6)
    # 1 pS for 1 µS: within the limit, and outputs of noise scaled by 10⁶ without a word before
    with pytest.raises(ConfigError, match=r"^g_max_s: g_min_s\.\.g_max_s \(0\.\.1e-12 S\) spans under 0\.001 of "
                                          r"the crossbar's conductance limit 0\.\.2\.5e-05 S, below any device's "
                                          r"programming resolution: the outputs would be noise; check the unit$"):
        CrossbarSystem({"crossbar": crossbar}, g_max_s=1e-12)
    assert CrossbarSystem({"crossbar": crossbar}, g_min_s=10e-6, g_max_s=10.03e-6).g_max_s == 10.03e-6
    # 1 pV: outputs of noise scaled by 10¹⁰ (the sweep of every setting found it)
    with pytest.raises(ConfigError, match=r"^read_voltage_v: 1e-12 V is under 0\.001 of the crossbar's read voltage "
                                          r"limit -0\.2\.\.0\.2 V, below any row DAC's resolution: the outputs would "
                                          r"be noise; check the unit$"):
        CrossbarSystem({"crossbar": crossbar}, read_voltage_v=1e-12)
    assert CrossbarSystem({"crossbar": crossbar}, read_voltage_v=2e-4).read_voltage_v == 2e-4
    # text, a bool and a list were float()ed (False as 0 S) or a TypeError, where the other systems refuse them
    for label, value in (("g_min_s", "1e-6"), ("g_max_s", False), ("read_voltage_v", [0.1]), ("g_min_s", math.nan)):
        with pytest.raises(ConfigError, match=rf"^{label}: {label} must be a number, got {re.escape(repr(value))}$"):
            CrossbarSystem({"crossbar": crossbar}, **{label: value})
    system = CrossbarSystem({"crossbar": crossbar})
    with pytest.raises(LimitError, match=r"theta\[5\] = 1\.5 is outside -1\.\.1"):
        system.forward(torch.zeros(1, 64), torch.zeros(system.n_params).index_fill(0, torch.tensor(5), 1.5))
    with pytest.raises(LimitError, match="read voltage"):
        crossbar.read(torch.full((1, 64), 0.25))
    with pytest.raises(ConfigError, match=r"config\.construction\.levels"):
        MemristorCrossbar(config={"construction": {"levels": 1}})
    with pytest.raises(ConfigError, match="unknown preset"):
        MemristorCrossbar(preset="perfect")


def test_built_from_a_lab_file(tmp_path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        worlds:
          chip: {kind: memristor_crossbar, preset: realistic, seed: 3, config: {geometry: {rows: 16, cols: 24}}}
        instruments:
          xbar:
            driver: simulated_crossbar
            world: chip
            limits: {read_voltage_v: {min: -0.1, max: 0.1}}
        systems:
          layer: {kind: crossbar, instruments: {crossbar: xbar}, settings: {n_out: 8}}
    """))
    lab = Lab.load(path).open()
    try:
        system = lab.systems["layer"]
        assert (system.n_in, system.n_out, system.read_voltage_v) == (16, 8, 0.1)
        y = system.forward(uniform((10, 16), -1, 1, seed=20), uniform((128,), -1, 1, seed=21))
        assert y.shape == (10, 8) and torch.isfinite(y).all()
    finally:
        lab.close()


def test_rewrite_parameters_makes_the_next_call_program_the_same_theta_again() -> None:
    """``rewrite_parameters`` is how repeated measurements see the programming noise: the same θ is programmed
    anew (once), and the realistic chip then reads differently."""
    _, system = make_system("realistic", seed=2, geometry={"rows": 8, "cols": 8}, shot={"read_noise_scale": 0.0,
                                                                                        "output_noise_a": 0.0})
    theta, x = uniform((system.n_params,), -1, 1, seed=30), uniform((16, 8), -1, 1, seed=31)
    first = system.forward(x, theta)
    assert torch.equal(system.forward(x, theta), first) and system.programmings == 1
    system.rewrite_parameters()
    second = system.forward(x, theta)
    assert system.programmings == 2 and not torch.allclose(second, first)
    assert torch.equal(system.forward(x, theta), second) and system.programmings == 2


def test_systems_sharing_one_chip_each_reprogram_it_after_the_other() -> None:
    """Two systems on one crossbar (layers on two systems of one chip): each reprograms the chip when the other has
    programmed it since; the first read the second's weights, its unchanged θ taken for still programmed."""
    _, crossbar = make(geometry={"rows": 4, "cols": 4})
    first, second = CrossbarSystem({"crossbar": crossbar}, n_in=4), CrossbarSystem({"crossbar": crossbar}, n_in=2)
    x, mine, theirs = torch.eye(4), torch.full((8,), 0.5), torch.full((4,), -0.5)
    expected = first.forward(x, mine)
    second.forward(x[:, :2], theirs)
    torch.testing.assert_close(first.forward(x, mine), expected)
    assert first.programmings == 2 and second.programmings == 1
    assert torch.equal(first.forward(x, mine), expected) and first.programmings == 2  # still its own: no rewrite


def test_a_programming_that_fails_part_way_makes_the_other_system_sharing_the_chip_reprogram_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A programming that stopped part-way (a failed write-verify, Ctrl-C) left the chip recording its last whole
    programming's system, which then read the half-written weights, its unchanged θ taken for still programmed."""
    _, crossbar = make(geometry={"rows": 4, "cols": 4})
    first, second = CrossbarSystem({"crossbar": crossbar}, n_in=4), CrossbarSystem({"crossbar": crossbar}, n_in=2)
    x, mine, theirs = torch.eye(4), torch.full((8,), 0.5), torch.full((4,), -0.5)
    expected = first.forward(x, mine)
    program = crossbar.program

    def written_then_failed(conductances_s: torch.Tensor) -> None:
        program(conductances_s)
        raise DeviceError("crossbar: write-verify failed")

    monkeypatch.setattr(crossbar, "program", written_then_failed)
    with pytest.raises(DeviceError, match="write-verify failed"):
        second.forward(x[:, :2], theirs)
    monkeypatch.undo()
    torch.testing.assert_close(first.forward(x, mine), expected)
    assert first.programmings == 2


def test_default_settings_use_the_whole_array_and_the_crossbar_limits() -> None:
    world, crossbar = make(geometry={"rows": 16, "cols": 24})
    crossbar = SimulatedCrossbar(world, name="crossbar", limits={"conductance_s": {"min": 2e-6, "max": 20e-6},
                                                                 "read_voltage_v": {"min": -0.15, "max": 0.1}})
    system = CrossbarSystem({"crossbar": crossbar.connect()})
    assert (system.n_in, system.n_out, system.n_params) == (16, 12, 192)
    assert (system.g_min_s, system.g_max_s, system.read_voltage_v) == (2e-6, 20e-6, 0.1)
    assert system.full_scale_a == pytest.approx(0.1 * 18e-6)


def test_the_default_read_voltage_is_0_2_v_not_the_whole_range_of_the_row_drivers() -> None:
    """Row drivers that can give ±1 V (the limit: what the hardware can do) were read at ±1 V by default, which on a
    chip programmed through its row drivers reprograms the devices it reads; a read is 0.2 V, or the lab's narrower
    limit, and a read voltage the lab gives is taken as given."""
    _, crossbar = make(geometry={"rows": 4, "cols": 4}, converters={"read_voltage_range_v": 1.0})
    assert CrossbarSystem({"crossbar": crossbar}).read_voltage_v == 0.2
    assert CrossbarSystem({"crossbar": crossbar}, read_voltage_v=1.0).read_voltage_v == 1.0
    world, _ = make(geometry={"rows": 4, "cols": 4}, converters={"read_voltage_range_v": 1.0})
    narrowed = SimulatedCrossbar(world, name="crossbar", limits={"read_voltage_v": {"min": -0.3, "max": 0.12}})
    assert CrossbarSystem({"crossbar": narrowed.connect()}).read_voltage_v == 0.12


@pytest.mark.parametrize("settings", [{}, {"read_voltage_v": 0.1}])
def test_a_read_voltage_limit_of_one_sign_is_said_to_be_one(settings: dict) -> None:
    """Inputs of both signs are read at voltages of both signs: a limit of 0..0.1 V was said as "-0 V is outside
    0..-0 V", of a read voltage the lab had not written."""
    world, _ = make(geometry={"rows": 4, "cols": 4})
    crossbar = SimulatedCrossbar(world, name="xbar", limits={"read_voltage_v": {"min": 0.0, "max": 0.1}}).connect()
    with pytest.raises(ConfigError, match=r"^instruments\.crossbar: xbar's read_voltage_v limit 0\.\.0\.1 V holds no "
                                          r"read voltage of both signs, and inputs -1\.\.1 are read as "
                                          r"-read_voltage_v\.\.read_voltage_v; give the limit a min below 0 V and a "
                                          r"max above it$"):
        CrossbarSystem({"crossbar": crossbar}, **settings)


def test_the_first_order_ir_drop_is_refused_from_100_percent_exactly() -> None:
    """The bound of the IR-drop check is the model's own, 100 %: at 0.35 Ω and 25 µS, square tiles from 338 × 338
    (x = 1.003) are refused, as the field's description says, and 337 × 337 (x = 0.997) is taken."""
    with pytest.raises(ConfigError, match=r"on 338 × 338 devices .* by 100 % to first order"):
        MemristorCrossbar(preset="realistic", config={"geometry": {"rows": 338, "cols": 338}})
    MemristorCrossbar(preset="realistic", config={"geometry": {"rows": 337, "cols": 337}})


def test_a_programming_whose_drawn_devices_drop_a_read_by_100_percent_is_refused_and_changes_nothing() -> None:
    """The configuration's check takes nominal devices; this chip's spread (device scales up to 1.44) reversed the
    current of 82 devices of a 337 × 337 tile programmed at g_max, their drop factors negative."""
    world = MemristorCrossbar(preset="realistic", seed=0, config={"geometry": {"rows": 337, "cols": 337}})
    g_max, before = world.config.devices.g_max_s, world.programmed_s.clone()
    started, generator = world.clock.now(), world.rng.get_state()
    with pytest.raises(DeviceError, match=r"drop the read of device \(\d+, \d+\) by 10\d % to first order \(0.35 "
                       r"Ω per cell on 337 × 337 devices, with this chip's spread\); the IR-drop model holds"):
        world.program(torch.full(world.shape, g_max))
    assert torch.equal(world.programmed_s, before) and world.clock.now() == started
    assert torch.equal(world.rng.get_state(), generator)  # the programming after it is as if it never came
    world.program(torch.full(world.shape, g_max / 2))
    factor = ir_drop_factor(world.conductances(), world.config.construction.wire_resistance_ohm)
    assert 0 < float(factor.min()) < 0.6
