"""Properties of the simulated benches and their systems over drawn settings and inputs (hypothesis, derandomized):
a noiseless world is its physics model for every layout the checks accept, at the bounds of x and θ and across
the split of a batch beyond ``max_batch``; a checkpoint continues exactly, reading hidden values changes nothing;
values a system cannot take are refused; camera frames stay within the camera's codes."""

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil import state as state_io
from hil.errors import ConfigError, LimitError
from hil.physics.optics import TWO_PI
from hil.systems.crossbar import CrossbarSystem
from hil.systems.fiber import FiberSystem
from hil.systems.optical import OpticalSystem
from hil.systems.oscillator import OscillatorSystem
from hil.systems.resistive import ResistiveNetworkSystem
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar
from simulators.fiber import MultimodeFiber
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM
from simulators.oscillator import OscillatorNetwork
from simulators.resistive import ResistiveNetwork


def drawn(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("one_thread")


#: How x and θ fill their bounds: uniformly, all at the low or the high bound, or each at one of the two.
EDGES = ("uniform", "low", "high", "ends")


def values(shape: tuple[int, ...], bounds: tuple[float, float], edge: str, seed: int) -> torch.Tensor:
    low, high = bounds
    generator = torch.Generator().manual_seed(seed)
    if edge == "uniform":
        return low + (high - low) * torch.rand(shape, generator=generator)
    if edge == "ends":
        return torch.where(torch.rand(shape, generator=generator) < 0.5, low, high)
    return torch.full(shape, low if edge == "low" else high)


def batches(max_batch: int) -> st.SearchStrategy[int]:
    return st.sampled_from([1, max_batch, max_batch + 1, 2 * max_batch + 1])


def forward_drawn(system, data, max_batch: int, edge: str,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drawn x (a drawn number of rows about ``max_batch``) and θ filling their bounds as ``edge`` says, and the
    system's output for them."""
    x = values((data.draw(batches(max_batch)), system.n_in), system.x_bounds, edge, seed)
    theta = values((system.n_params,), system.theta_bounds, edge, seed + 1)
    return x, theta, system.forward(x, theta)


# -- a noiseless world is its physics ---------------------------------------------------------------------------
CROSSBAR_CONSTRUCTION = {"conductance_scale_spread": 0.1, "stuck_on_fraction": 0.05, "stuck_off_fraction": 0.05,
                         "levels": 64, "wire_resistance_ohm": 0.35, "column_gain_spread": 0.01, "column_offset_v": 1e-3}


@drawn(120)
@given(rows=st.integers(1, 40), cols=st.integers(2, 140), data=st.data(), construction=st.booleans(),
       edge=st.sampled_from(EDGES), seed=st.integers(0, 100))
def test_a_noiseless_crossbar_is_its_physics_model_for_any_layout(rows: int, cols: int, data, construction: bool,
                                                                   edge: str, seed: int) -> None:
    """Nominal physics on ``ideal``; the oracle with every construction non-ideality (and exact converters)."""
    max_batch = data.draw(st.integers(1, 6))
    config = {"geometry": {"rows": rows, "cols": cols, "max_batch": max_batch}}
    if construction:
        config["construction"] = {**CROSSBAR_CONSTRUCTION, "levels": data.draw(st.sampled_from([None, 2, 64]))}
    world = MemristorCrossbar(preset="ideal", seed=seed, config=config)
    chosen = {"n_in": data.draw(st.integers(1, rows)), "n_out": data.draw(st.integers(1, cols // 2)),
              "read_voltage_v": data.draw(st.sampled_from([0.2, 0.05, 2.1e-4])),
              "g_min_s": data.draw(st.sampled_from([0.0, 1e-6, 24e-6]))}
    system = CrossbarSystem({"crossbar": SimulatedCrossbar(world, name="crossbar").connect()}, **chosen)
    x, theta, y = forward_drawn(system, data, max_batch, edge, seed)
    with torch.no_grad():
        modelled = (system.oracle_model() if construction else system.physics_model())(x, theta)
    tolerance = {"rtol": 1e-4, "atol": 1e-4 * max(1.0, float(y.abs().max()))}  # g_min near g_max: cancellation
    torch.testing.assert_close(y, modelled, **tolerance)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(system.forward(x[order], theta), y[order], **tolerance)


OPTICAL_CONSTRUCTION = {"lut_gain_error": 0.03, "lut_bow_rad": 0.15, "crosstalk_px": 0.5, "zero_order": 0.06,
                        "misalignment_px": 2.0, "prnu": 0.006, "dsnu_e": 1.5, "black_level_dn": 10.0}


@drawn(120)
@given(slm=st.sampled_from([(16, 16), (32, 48), (15, 15), (9, 27), (8, 24)]),
       camera=st.sampled_from([(16, 16), (20, 36), (9, 9), (37, 37), (3, 30)]),
       planes=st.sampled_from([1, 1, 2, 3]), fft_size=st.sampled_from([64, 65, 99]),
       waist_px=st.sampled_from([None, 25.0, 3.0]), construction=st.booleans(), edge=st.sampled_from(EDGES),
       data=st.data())
def test_a_noiseless_optical_table_is_its_physics_model_for_any_layout(slm, camera, planes: int, fft_size: int,
                                                                       waist_px, construction: bool, edge: str,
                                                                       data) -> None:
    """Nominal physics on ``ideal``; the oracle with every construction non-ideality (a camera misaligned by up to
    a few pixels, PRNU, DSNU, a dark current) and no per-shot or slow noise. Layouts the checks refuse are skipped."""
    beam = {"beam": "flat"} if waist_px is None else {"waist_m": waist_px * 8e-6}
    config = {"slm": {"shape": slm}, "camera": {"shape": camera},
              "optics": {"planes": planes, "fft_size": fft_size, **beam}}
    if construction:
        config |= {"construction": OPTICAL_CONSTRUCTION, "shot": {"dark_current_e_per_s": 1000.0}}
    try:
        world = OpticalTable(preset="ideal", seed=data.draw(st.integers(0, 9)), config=config)
    except ConfigError:
        return
    rows, cols = slm
    block = data.draw(st.sampled_from([b for b in range(1, rows + 1)
                                       if rows % b == 0 and cols % planes == 0 and (cols // planes) % b == 0] or [1]))
    max_batch = data.draw(st.integers(1, 4))
    try:
        system = OpticalSystem({"slm": SimulatedSLM(world, name="slm").connect(),
                                "camera": SimulatedCamera(world, name="camera").connect()},
                               n_in=data.draw(st.integers(1, 12)), n_params=data.draw(st.integers(1, 24)),
                               n_out=data.draw(st.integers(1, 12)), block=block, planes=planes,
                               roi_px=data.draw(st.integers(1, 7)), roi_radius_px=data.draw(st.floats(0, 30)),
                               fft_size=fft_size, waist_px=waist_px, max_batch=max_batch, reference_repeats=1)
    except ConfigError:
        return
    x, theta, y = forward_drawn(system, data, max_batch, edge, 1)
    with torch.no_grad():
        modelled = (system.oracle_model() if construction else system.physics_model())(x, theta)
    torch.testing.assert_close(y, modelled, rtol=1e-3, atol=1e-4 * max(1.0, float(y.abs().max())))


@drawn(80)
@given(slm=st.sampled_from([(16, 16), (24, 24), (8, 24), (32, 48)]), camera=st.sampled_from([(16, 16), (9, 9),
                                                                                              (20, 36)]),
       macro_px=st.sampled_from([2, 3, 4, 8]), modes=st.sampled_from([1, 4, 16]),
       waist_px=st.sampled_from([None, 25.0, 3.0]), model_waist_px=st.sampled_from([None, 25.0, 3.0]),
       edge=st.sampled_from(EDGES), data=st.data())
def test_a_noiseless_fiber_is_its_measured_model_and_its_oracle_for_any_layout(slm, camera, macro_px: int,
                                                                               modes: int, waist_px, model_waist_px,
                                                                               edge: str, data) -> None:
    beam = {"beam": "flat"} if waist_px is None else {"waist_m": waist_px * 8e-6}
    try:
        world = MultimodeFiber(preset="ideal", seed=3, config={
            "slm": {"shape": slm}, "camera": {"shape": camera}, "optics": beam,
            "fiber": {"macro_px": macro_px, "modes": modes, "speckle_grain_px": 1.0}})
    except ConfigError:
        return
    max_batch = data.draw(st.integers(1, 5))
    try:
        system = FiberSystem({"slm": SimulatedSLM(world, name="slm").connect(),
                              "camera": SimulatedCamera(world, name="camera").connect()},
                             n_in=data.draw(st.integers(1, 8)), n_params=data.draw(st.integers(1, 8)),
                             n_out=data.draw(st.integers(1, 9)), block=macro_px, roi_px=data.draw(st.integers(1, 5)),
                             waist_px=model_waist_px, max_batch=max_batch, reference_repeats=1)
    except ConfigError:
        return
    x, theta, y = forward_drawn(system, data, max_batch, edge, 1)
    with torch.no_grad():
        measured, oracle = system.physics_model()(x, theta), system.oracle_model()(x, theta)
    tolerance = {"rtol": 1e-3, "atol": 1e-4 * max(1.0, float(y.abs().max()))}
    torch.testing.assert_close(measured, y, **tolerance)
    torch.testing.assert_close(oracle, y, **tolerance)


# -- checkpoints ------------------------------------------------------------------------------------------------
def bench(kind: str, preset: str, seed: int):
    """(world, instruments, system) of ``kind``, small enough for many draws."""
    if kind == "crossbar":
        world = MemristorCrossbar(preset=preset, seed=seed, config={"geometry": {"rows": 8, "cols": 8, "max_batch": 3}})
        instruments = {"crossbar": SimulatedCrossbar(world, name="crossbar").connect()}
        return world, instruments, CrossbarSystem(instruments)
    if kind in ("optical", "fiber"):
        world = (OpticalTable if kind == "optical" else MultimodeFiber)(
            preset=preset, seed=seed, config={"slm": {"shape": (32, 32), "max_sequence": 3},
                                              "camera": {"shape": (32, 32)}})
        instruments = {"slm": SimulatedSLM(world, name="slm").connect(),
                       "camera": SimulatedCamera(world, name="camera").connect()}
        if kind == "optical":
            return world, instruments, OpticalSystem(instruments, n_in=4, n_params=8, n_out=4, roi_px=3,
                                                     roi_radius_px=6.0, reference_repeats=2)
        return world, instruments, FiberSystem(instruments, n_in=4, n_params=4, n_out=4, reference_repeats=2)
    world = (OscillatorNetwork if kind == "oscillator" else ResistiveNetwork)(preset=preset, seed=seed)
    instruments = {"output": SimulatedAnalogOutput(world, name="ao").connect(),
                   "input": SimulatedAnalogInput(world, name="ai").connect()}
    if kind == "oscillator":
        return world, instruments, OscillatorSystem(instruments, n_in=2, n_params=2, max_batch=3)
    return world, instruments, ResistiveNetworkSystem(instruments, name="net", max_batch=3)


def inputs(system, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (values((batch, system.n_in), system.x_bounds, "uniform", seed),
            values((system.n_params,), system.theta_bounds, "uniform", seed + 1))


def checkpoint(world, instruments, system) -> dict:
    """What a run's checkpoint keeps of a bench, through torch.save and torch.load(weights_only=True)."""
    state = {"world": state_io.capture(world), "system": state_io.capture(system),
             "instruments": {role: state_io.capture(i) for role, i in instruments.items()}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def restore(world, instruments, system, state: dict) -> None:
    state_io.restore(world, state["world"])
    state_io.restore(system, state["system"])
    for role, instrument in instruments.items():
        state_io.restore(instrument, state["instruments"][role])


def continuation(world, system, x: torch.Tensor, theta: torch.Tensor) -> list[torch.Tensor]:
    """Calls after a checkpoint: the batch, a row of it, and the batch again after 100 s of drift."""
    outputs = [system.forward(x, theta), system.forward(x[:1], theta)]
    world.clock.sleep(100.0)
    return [*outputs, system.forward(x, theta)]


@pytest.mark.parametrize("kind", ["crossbar", "optical", "fiber", "oscillator", "resistive"])
@drawn(3)
@given(preset=st.sampled_from(["realistic", "harsh"]), seed=st.integers(0, 3), calls_before=st.integers(0, 2),
       new_theta=st.booleans(), rewind=st.booleans())
def test_a_checkpoint_continues_exactly_and_reading_hidden_values_changes_nothing(
        kind: str, preset: str, seed: int, calls_before: int, new_theta: bool, rewind: bool) -> None:
    """The bench restored from a checkpoint (into a fresh bench of another seed, or rewound in place after running
    on) gives bit for bit what it gave after the checkpoint; there, the hidden values and the oracle were read."""
    world, instruments, system = bench(kind, preset, seed)
    for call in range(calls_before):
        system.forward(*inputs(system, 2, call))
    saved = checkpoint(world, instruments, system)
    world.clock.sleep(37.0)
    world.hidden_parameters()
    if system.calls or kind not in ("optical", "fiber"):  # their oracle needs the calibration of a first call
        system.oracle_model()
    x, theta = inputs(system, 4, 10 if new_theta else max(calls_before - 1, 0))
    expected = continuation(world, system, x, theta)
    if rewind:
        system.forward(*inputs(system, 3, 99))
        world.clock.sleep(500.0)
    else:
        world, instruments, system = bench(kind, preset, seed + 100)
    restore(world, instruments, system, saved)
    world.clock.sleep(37.0)
    for got, wanted in zip(continuation(world, system, x, theta), expected, strict=True):
        assert torch.equal(got, wanted)


# -- refusals and physical outputs ------------------------------------------------------------------------------
@drawn(150)
@given(batch=st.integers(1, 5), data=st.data(), bad=st.sampled_from([float("nan"), float("inf"), -float("inf"),
                                                                     1.0001, -1.5, 1e30]),
       which=st.sampled_from(["x", "theta"]))
def test_a_value_outside_the_bounds_anywhere_is_refused_naming_its_index(batch: int, data, bad: float,
                                                                          which: str) -> None:
    world = MemristorCrossbar(preset="realistic", config={"geometry": {"rows": 4, "cols": 6, "max_batch": 2}})
    system = CrossbarSystem({"crossbar": SimulatedCrossbar(world, name="crossbar").connect()})
    x, theta = values((batch, 4), (-1, 1), "uniform", 0), values((12,), (-1, 1), "uniform", 1)
    target = x if which == "x" else theta
    index = tuple(data.draw(st.integers(0, size - 1)) for size in target.shape)
    target[index] = bad
    with pytest.raises(LimitError, match=rf"^system 'crossbar': {which}{list(index)} = .* is outside -1\.\.1$"
                       .replace("[", r"\[").replace("]", r"\]")):
        system.forward(x, theta)
    assert system.calls == 0 and world.clock.now() == 0


@drawn(60)
@given(world_class=st.sampled_from([OpticalTable, MultimodeFiber]), preset=st.sampled_from(["realistic", "harsh"]),
       power_w=st.sampled_from([1e-12, 2.5e-10, 1.0]), exposure_s=st.sampled_from([10e-6, 1e-3, 1.0]),
       bits=st.sampled_from([8, 12, 16]), full_well_e=st.sampled_from([100.0, 10700.0, 1e7]),
       gain=st.sampled_from([1e-4, 0.383, 1e3]), roi=st.sampled_from([None, (3, 5, 7, 9)]), seed=st.integers(0, 5))
def test_camera_frames_are_whole_codes_of_the_camera_for_any_light(world_class, preset: str, power_w: float,
                                                                   exposure_s: float, bits: int, full_well_e: float,
                                                                   gain: float, roi, seed: int) -> None:
    config = {"optics": {"power_w": power_w}, "slm": {"shape": (16, 16)},
              "camera": {"bit_depth": bits, "full_well_e": full_well_e, "gain_dn_per_e": gain, "shape": (16, 16)}}
    if world_class is MultimodeFiber:
        config["fiber"] = {"macro_px": 4, "modes": 8}
    world = world_class(preset=preset, seed=seed, config=config)
    slm, camera = SimulatedSLM(world, name="slm").connect(), SimulatedCamera(world, name="camera").connect()
    camera.set_exposure(exposure_s)
    camera.set_trigger("external")
    if roi is not None:
        camera.set_roi(*roi)
    slm.show_sequence(TWO_PI * torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)))
    frames = torch.as_tensor(camera.capture(3).images)
    assert bool(frames.isfinite().all()) and torch.equal(frames, frames.round())
    assert float(frames.min()) >= 0 and float(frames.max()) <= 2**bits - 1
