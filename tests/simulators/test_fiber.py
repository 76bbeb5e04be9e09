"""The simulated multimode fiber: its construction and drift at their configured magnitudes and absent in
``ideal``, seeds, device time, and the fiber system against its measured physics model and its oracle."""

import math
import re
import textwrap

import pytest
import torch

from hil.errors import ConfigError, DeviceError
from hil.instruments import Camera
from hil.lab import Lab
from hil.physics.fiber import macro_amplitudes, macro_pixel_field
from hil.physics.optics import TWO_PI
from hil.systems.fiber import FiberSystem, hadamard
from simulators.fiber import MultimodeFiber
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM, ou_path

QUIET = {"slow": {"power_wander": 0.0, "mode_drift_rad": 0.0}}
#: The SLM's and camera's construction non-idealities at realistic magnitudes (for noiseless but non-ideal benches).
CONSTRUCTION = {"lut_gain_error": 0.03, "lut_bow_rad": 0.15, "crosstalk_px": 0.5, "zero_order": 0.06,
                "prnu": 0.006, "dsnu_e": 1.5, "black_level_dn": 10.0, "mode_dependent_loss_db": 3.0}


class NoAoiCamera(SimulatedCamera):
    """A camera without area-of-interest readout (the capability's default hook)."""

    _set_roi_hw = Camera._set_roi_hw


pytestmark = pytest.mark.usefixtures("one_thread")


def bench(preset: str = "realistic", seed: int = 0, camera_class: type[SimulatedCamera] = SimulatedCamera,
          **config):
    world = MultimodeFiber(preset=preset, seed=seed, config=config)
    return world, SimulatedSLM(world, name="slm").connect(), camera_class(world, name="camera").connect()


def inputs(count: int, n_in: int = 16, n_params: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, n_in, generator=generator), TWO_PI * torch.rand(n_params, generator=generator)


def error(model: torch.nn.Module, measured: torch.Tensor, x: torch.Tensor, theta: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x, theta) - measured).norm() / measured.norm())


def test_same_seed_same_outputs_and_another_seed_another_fiber() -> None:
    outputs = []
    for _ in range(2):
        _, slm, camera = bench(seed=4)
        camera.set_exposure(5e-3)
        slm.show(TWO_PI * torch.rand(64, 64, generator=torch.Generator().manual_seed(1)))
        outputs.append(camera.capture(2).images)
    assert torch.equal(*outputs)
    one, other = MultimodeFiber(seed=4).hidden_parameters(), MultimodeFiber(seed=5).hidden_parameters()
    assert not torch.allclose(one["transmission"], other["transmission"])


def test_a_fiber_bench_and_an_optical_table_of_one_seed_are_different_devices() -> None:
    """The lab gives every world seed 0: worlds of different kinds must still draw independent numbers."""
    fiber, table = MultimodeFiber(seed=0), OpticalTable(seed=0)
    assert not torch.allclose(fiber.pixel_gain, table.pixel_gain)
    assert fiber.lut_gain != table.lut_gain
    assert not torch.equal(fiber.normal((16,)), table.normal((16,)))  # the per-shot streams too


def test_reading_the_hidden_parameters_changes_no_later_frame() -> None:
    outputs = []
    for oracle in (False, True):
        world, slm, camera = bench(seed=4)
        camera.set_exposure(5e-3)
        slm.show(TWO_PI * torch.rand(64, 64, generator=torch.Generator().manual_seed(1)))
        camera.capture(1)
        if oracle:
            world.hidden_parameters()
        outputs.append(camera.capture(4).images)
    assert torch.equal(*outputs)


def test_fiber_matrices_are_orthonormal_and_mode_dependent_loss_spans_the_configured_range() -> None:
    world = MultimodeFiber(seed=2)
    eye = torch.eye(64, dtype=torch.complex64)
    torch.testing.assert_close(world.speckle.mH @ world.speckle, eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(world.coupling @ world.coupling.mH, 0.7 * eye, atol=1e-4, rtol=0)
    power = torch.linalg.svdvals(world.modes) ** 2
    assert 10 * math.log10(float(power.max() / power.min())) == pytest.approx(3.0, abs=1e-3)
    assert float(power.max()) == pytest.approx(1.0, abs=1e-4)
    ideal = torch.linalg.svdvals(MultimodeFiber(preset="ideal", seed=2).modes)
    torch.testing.assert_close(ideal, torch.ones(64), atol=1e-4, rtol=0)


def test_macro_pixels_average_the_phasors_of_their_blocks() -> None:
    generator = torch.Generator().manual_seed(3)
    phases = TWO_PI * torch.rand(5, 32, 48, generator=generator)
    amplitudes = torch.rand(8 * 12, generator=generator)
    blocks = torch.polar(torch.ones(()), phases).reshape(5, 8, 4, 12, 4).mean(dim=(2, 4)).reshape(5, -1)
    expected = amplitudes * (0.9 * blocks + 0.1)
    torch.testing.assert_close(macro_pixel_field(phases, 4, amplitudes, 0.1), expected, rtol=0, atol=1e-6)


def test_a_grating_inside_a_macro_pixel_couples_no_light() -> None:
    beam = torch.rand(64, 64)
    grating = (TWO_PI * (torch.arange(64) % 4) / 4).expand(1, 64, 64)
    field = macro_pixel_field(grating, 8, macro_amplitudes(beam, 8))
    assert float(field.abs().max()) < 1e-6
    flat = macro_pixel_field(torch.zeros(1, 64, 64), 8, macro_amplitudes(beam, 8))
    assert float(flat.abs().square().sum()) == pytest.approx(float(beam.square().sum()), rel=1e-5)


@pytest.mark.statistical
def test_mode_phases_drift_as_configured_and_stay_put_in_ideal() -> None:
    world = MultimodeFiber(seed=3)
    phases = ou_path(world.mode_phase, torch.arange(1, 401) * 900.0)  # every half correlation time
    assert float(phases.std()) == pytest.approx(0.3, rel=0.05)
    lag = torch.corrcoef(torch.stack([phases[:-1].reshape(-1), phases[1:].reshape(-1)]))[0, 1]
    assert float(lag) == pytest.approx(math.exp(-0.5), abs=0.03)
    world = MultimodeFiber(seed=3)  # the path above ran ahead of this world's clock
    before = world.transmission()
    world.clock.sleep(36_000.0)  # 20 correlation times: independent phases
    after = world.transmission()
    change = torch.angle(torch.diagonal(world.speckle.mH @ after @ (world.speckle.mH @ before).mH))
    assert float(change.std()) == pytest.approx(0.3 * math.sqrt(2), rel=0.25)
    ideal = MultimodeFiber(preset="ideal", seed=3)
    first = ideal.transmission()
    ideal.clock.sleep(36_000.0)
    assert torch.equal(first, ideal.transmission())


@pytest.mark.parametrize("grain_px", [2.0, 3.0, 4.5])
def test_speckle_grain_is_the_configured_correlation_length(grain_px: float) -> None:
    """The speckle fields are band-limited to a disc of radius 1/(2·grain) cycles per pixel, so (fully developed
    speckle) the intensity's autocorrelation is the Airy pattern |2J₁(x)/x|², x = π·r/grain: 0.52, 0.76, 0.88 one
    pixel away for grains of 2, 3, 4.5 px, zero at r = 1.22·grain. Measured along both axes over 200 frames of
    64 × 64 pixels, to 0.04: the largest deviation over 12 fibers was 0.021 (a 64-mode speckle is not quite a
    Gaussian field, and the disc is cut from a 64 × 64 frequency grid); a white speckle would have none at 1 px."""
    world = MultimodeFiber(preset="ideal", seed=1, config={"fiber": {"speckle_grain_px": grain_px}})
    drives = TWO_PI * torch.rand(200, 64, 64, generator=torch.Generator().manual_seed(0))
    intensity = world.propagate(world.realised_phase(drives), torch.zeros(200, dtype=torch.float64)).double()
    fluctuation = intensity - intensity.mean(dim=(1, 2), keepdim=True)
    spectrum = torch.fft.fft2(fluctuation)
    autocovariance = torch.fft.ifft2(spectrum.real.square() + spectrum.imag.square()).real.sum(0)
    correlation = autocovariance / autocovariance[0, 0]
    lag = torch.arange(1, 7, dtype=torch.float64)
    x = math.pi * lag / grain_px
    airy = (2 * torch.special.bessel_j1(x) / x).square()
    torch.testing.assert_close(correlation[0, 1:7], airy, rtol=0, atol=0.04)  # along the rows
    torch.testing.assert_close(correlation[1:7, 0], airy, rtol=0, atol=0.04)  # along the columns


def test_ideal_world_equals_the_measured_physics_model() -> None:
    _, slm, camera = bench("ideal", seed=6)
    system = FiberSystem({"slm": slm, "camera": camera})
    with pytest.raises(DeviceError, match="calibrate"):
        system.physics_model()
    system.calibrate()
    x, theta = inputs(32)
    y = system.forward(x, theta)
    with torch.no_grad():
        model = system.physics_model()(x, theta)
    torch.testing.assert_close(y, model, rtol=1e-4, atol=1e-5 * float(y.abs().max()))
    assert 0.2 < float(y.mean()) < 5  # order-1 outputs


def test_the_system_captures_at_its_working_exposure_whatever_the_camera_was_set_to_since() -> None:
    """Another system sharing the camera, or a bench camera connected anew, leaves it at another exposure; the
    system's outputs stay what they were. A system restored from a checkpoint that kept no working exposure runs
    at the camera's."""
    _, slm, camera = bench("ideal", seed=6, construction=CONSTRUCTION)
    system = FiberSystem({"slm": slm, "camera": camera})
    system.calibrate()
    x, theta = inputs(8)
    expected, working = system.forward(x, theta), system.working_exposure_s
    camera.set_exposure(working / 3)
    assert torch.equal(system.forward(x, theta), expected) and camera.exposure_s == working
    system.working_exposure_s = None
    assert torch.equal(system.forward(x, theta), expected) and system.working_exposure_s == working


@pytest.mark.parametrize("waist_px", [None, 12.0, 40.0])
def test_the_oracle_holds_when_the_model_assumes_another_beam_than_the_world(waist_px: float | None) -> None:
    """The world's beam has a 25 px waist; a model assuming another (or a flat beam) is exact all the same once the
    calibration is measured (T absorbs the beam), and so must its oracle be (it was off by 35 % for a flat beam)."""
    _, slm, camera = bench("ideal", seed=6)
    system = FiberSystem({"slm": slm, "camera": camera}, waist_px=waist_px)
    system.calibrate()
    x, theta = inputs(16)
    y = system.forward(x, theta)
    with torch.no_grad():
        measured, oracle = system.physics_model()(x, theta), system.oracle_model()(x, theta)
    torch.testing.assert_close(measured, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))
    torch.testing.assert_close(oracle, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))


def test_chunked_render_equals_the_whole_batch_steps() -> None:
    """The fiber renders the SLM's steps chunk by chunk; the numbers are those of the whole-batch steps, flicker
    and drift included."""
    world = MultimodeFiber(preset="ideal", seed=5, config={"construction": CONSTRUCTION, "shot": {"flicker_rad": 0.1},
                                                           "slow": {"mode_drift_rad": 0.3}})
    drives = world.program(TWO_PI * torch.rand(150, 64, 64, generator=torch.Generator().manual_seed(2)))
    times = torch.arange(150, dtype=torch.float64)
    rng, drift = world.rng.get_state(), (world.mode_phase.value.clone(), world.mode_phase.time_s)
    chunked = world.render(drives, 1e-3, times)
    world.rng.set_state(rng)
    world.mode_phase.value, world.mode_phase.time_s = drift
    whole = world.expose(world.propagate(world.realised_phase(drives), times), 1e-3, times)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5 * float(whole.max()))
    assert float(whole.std(0).max()) > 0  # the frames differ


def test_frames_of_one_batch_are_not_changed_by_the_next_of_another_size() -> None:
    """The speckle field of a batch is computed in the world's buffer, reused by the next batch (grown or cut to its
    size): the frames handed out are the caller's, and equal those of a world that computed nothing before."""
    generator = torch.Generator().manual_seed(3)
    drives = [TWO_PI * torch.rand(count, 64, 64, generator=generator) for count in (40, 90, 10)]
    world, fresh = (MultimodeFiber(preset="ideal", seed=2, config={"construction": CONSTRUCTION}) for _ in range(2))
    frames = [world.render(world.program(d), 1e-3, torch.zeros(len(d), dtype=torch.float64)) for d in drives]
    for d, kept in zip(drives, frames, strict=True):
        assert torch.equal(kept, fresh.render(fresh.program(d), 1e-3, torch.zeros(len(d), dtype=torch.float64)))
        fresh = MultimodeFiber(preset="ideal", seed=2, config={"construction": CONSTRUCTION})
    assert len({float(f.sum()) for f in frames}) == 3  # three different batches


def test_an_aoi_frame_is_the_crop_of_the_full_frame() -> None:
    """Noiseless but with the construction non-idealities (per-pixel gain and dark offset included) and a
    drifting fiber (the same virtual times in both captures)."""
    patterns = TWO_PI * torch.rand(5, 64, 64, generator=torch.Generator().manual_seed(1))
    captured = []
    for aoi in (None, (7, 30, 40, 21)):
        _, slm, camera = bench("ideal", seed=3, construction=CONSTRUCTION, slow={"mode_drift_rad": 0.3})
        camera.set_exposure(5e-3)
        camera.set_trigger("external")
        if aoi is not None:
            camera.set_roi(*aoi)
        slm.show_sequence(patterns)
        captured.append(camera.capture(5).images)
    full, part = captured
    assert part.shape == (5, 40, 21)
    torch.testing.assert_close(part, full[:, 7:47, 30:51], rtol=0, atol=1e-5 * float(full.max()))


def test_the_system_reads_the_bounding_box_of_its_regions_with_or_without_camera_aoi() -> None:
    outputs = []
    for camera_class in (SimulatedCamera, NoAoiCamera):
        _, slm, camera = bench("ideal", seed=6, camera_class=camera_class, construction=CONSTRUCTION)
        system = FiberSystem({"slm": slm, "camera": camera})
        system.calibrate()
        outputs.append(system.forward(*inputs(16)))
        assert system.camera_aoi is (camera_class is SimulatedCamera)
        assert camera.roi == (system.window if system.camera_aoi else None)
    assert system.window == (9, 9, 46, 46)  # the 3 × 3 grid of 4-px regions
    assert int((system.regions > 0).sum()) == len(system.region_pixels) == 8 * 16
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-7)


def test_oracle_matches_the_noise_averaged_bench_far_better_than_the_measured_model() -> None:
    _, slm, camera = bench(seed=7, **QUIET)
    system = FiberSystem({"slm": slm, "camera": camera})
    system.calibrate()
    x, theta = inputs(32)
    measured = torch.stack([system.forward(x, theta) for _ in range(16)]).mean(0)
    nominal = error(system.physics_model(), measured, x, theta)
    oracle = error(system.oracle_model(), measured, x, theta)
    assert oracle < 0.25 * nominal and oracle < 0.02


@pytest.mark.parametrize("seed", [8, 10, 11])
def test_the_measured_model_goes_stale_as_the_fiber_drifts(seed: int) -> None:
    """After five correlation times the mode phases are new draws of rms 1 rad: each mode's field keeps a
    correlation e^{−σ²} = 0.37 with the one measured, the speckle an intensity correlation e^{−2σ²} = 0.14, so the
    model measured before misses nearly the whole speckle's fluctuation, while fresh it misses only its own
    calibration error (the SLM's nominal LUT, crosstalk and zero order, measurement noise). Read on 32 regions (about
    45 speckle grains), the stale error is over twice the fresh one for each of 400 fibers (seeds 0-399: 2.3 at
    least, 4.9 typically); on the default 8 regions, and at 0.6 rad, that ratio ranged from 1.4 to 9."""
    world, slm, camera = bench(seed=seed, slow={"power_wander": 0.0, "mode_drift_rad": 1.0})
    system = FiberSystem({"slm": slm, "camera": camera}, n_out=32)
    system.calibrate()
    model = system.physics_model()
    x, theta = inputs(32)
    fresh = error(model, system.forward(x, theta), x, theta)
    world.clock.sleep(5 * 1800.0)
    now = system.forward(x, theta)
    stale = error(model, now, x, theta)
    assert stale > 2 * fresh and stale > 0.3
    assert error(system.oracle_model(), now, x, theta) < 0.5 * fresh


def test_the_phase_stepping_patterns_are_made_one_sequence_at_a_time() -> None:
    """Calibration made every phase-stepping pattern at once (4 × 2^⌈log₂ n⌉ SLM frames: 32 GiB for 1000 modulated
    macro-pixels on a 1080 × 1920 SLM) before showing them max_batch at a time."""
    _, slm, camera = bench(seed=9)
    system = FiberSystem({"slm": slm, "camera": camera}, max_batch=40)
    shown, capture = [], system.capture
    system.capture = lambda phases, *args: shown.append(len(phases)) or capture(phases, *args)
    system.calibrate()
    assert max(shown) == 40


def test_system_device_time_is_one_sequence_at_the_refresh_rate() -> None:
    world, slm, camera = bench(seed=9)
    system = FiberSystem({"slm": slm, "camera": camera})
    start = world.clock.now()
    info = system.calibrate()
    assert info["transmission_patterns"] == 32 * 4
    assert world.clock.now() - start > (128 + 4 * 16) / 60  # at least one refresh per pattern
    assert system.device_time_s == pytest.approx(world.clock.now() - start)  # the calibration's device time counts
    period = math.ceil((0.01 + camera.exposure_s) * 60) / 60
    before = system.device_time_s
    system.forward(*inputs(10))
    assert system.device_time_s - before == pytest.approx(10 * period)


def test_bad_settings_are_refused() -> None:
    _, slm, camera = bench()
    with pytest.raises(ConfigError, match="no reference macro-pixel"):
        FiberSystem({"slm": slm, "camera": camera}, n_in=32, n_params=32)
    system = FiberSystem({"slm": slm, "camera": camera}, block=4, n_in=8, n_params=8)
    system.calibrate()
    with pytest.raises(ConfigError, match=r"^block 4 differs from the fiber's macro-pixels \(8 px\), which an oracle "
                                          r"twin cannot represent; give the system block: 8, or another twin kind$"):
        system.oracle_model()
    with pytest.raises(ConfigError, match=r"fiber\.macro_px 7"):
        MultimodeFiber(config={"fiber": {"macro_px": 7}})
    assert torch.equal(hadamard(4) @ hadamard(4).T, 4 * torch.eye(4))


def test_fiber_matrices_too_large_to_simulate_are_refused_naming_the_field_and_their_memory() -> None:
    """4096 modes on a 1024 × 1024 camera (or from 1024 × 1024 one-pixel macro-pixels) made a 32 GiB matrix at
    construction, a few times over; 64 modes there are taken."""
    for config, message in (
            ({"camera": {"shape": (1024, 1024)}, "fiber": {"modes": 4096}},
             "config: fiber.modes 4096 × 1048576 camera pixels make a speckle basis of 32 GiB (complex64), over the "
             "0.5 GiB the simulation takes; use fewer modes or a smaller camera.shape"),
            ({"slm": {"shape": (1024, 1024)}, "fiber": {"modes": 4096, "macro_px": 1}},
             "config: fiber.modes 4096 × 1048576 macro-pixels make a coupling matrix of 32 GiB (complex64), over the "
             "0.5 GiB the simulation takes; use fewer modes or a larger fiber.macro_px")):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            MultimodeFiber(config=config)
    assert MultimodeFiber.resolve("realistic", {"camera": {"shape": (1024, 1024)}}).fiber.modes == 64


@pytest.mark.parametrize(("settings", "field", "message"), [
    ({"roi_px": 0}, "roi_px", "roi_px must be a positive integer, got 0"),  # was a ZeroDivisionError
    ({"reference_repeats": 0}, "reference_repeats", "reference_repeats must be a positive integer up to max_batch"),
    ({"roi_px": True}, "roi_px", "roi_px must be a positive integer, got True"),  # YAML's true is not a size
    ({"reference_repeats": True}, "reference_repeats",
     "reference_repeats must be a positive integer up to max_batch \\(1024\\), got True"),
    ({"waist_px": 0}, "waist_px", "waist_px must be a positive number"),  # was a model of NaN
    ({"waist_px": -5.0}, "waist_px", "waist_px must be a positive number"),
    ({"waist_px": 3.0}, "waist_px", "waist_px 3 px leaves 32 of 64 macro-pixels without light"),
    ({"max_batch": 0}, "max_batch", "max_batch must be a positive integer, or null"),  # was taken as null
    # a one-pixel macro-pixel cannot be switched off: its 'reference alone' kept it lit, biasing the measured T
    ({"block": 1}, "block", "block 1 px cannot show a grating that couples no light, which measuring the "
                            "transmission matrix needs; use block 2 or more"),
])
def test_settings_the_system_cannot_use_are_config_errors_naming_them(settings, field, message) -> None:
    _, slm, camera = bench("ideal")
    with pytest.raises(ConfigError, match=f"^{field}: {message}") as error:
        FiberSystem({"slm": slm, "camera": camera}, **settings)
    assert error.value.field == field and "\n" not in str(error.value)
    system = FiberSystem({"slm": slm, "camera": camera}, waist_px=5.0)  # the narrowest that lights every block
    system.calibrate()
    x, theta = inputs(4)
    with torch.no_grad():
        assert torch.isfinite(system.physics_model()(x, theta)).all()


@pytest.mark.parametrize("block", [True, "8", 2.0])
def test_a_block_that_is_not_a_whole_number_of_pixels_is_a_config_error_naming_it(block) -> None:
    """YAML's true and text were TypeErrors from torch that named no setting."""
    _, slm, camera = bench("ideal")
    with pytest.raises(ConfigError, match=f"^block: block must be a positive integer, got {block!r}$") as error:
        FiberSystem({"slm": slm, "camera": camera}, block=block)
    assert error.value.field == "block"


def test_the_mode_basis_is_speckle_of_the_configured_grain() -> None:
    """Every mode's field lies in the grain's spatial-frequency band; more modes than the band holds are refused
    (QR used to fill the surplus with pixel-scale noise)."""
    world = MultimodeFiber(config={"fiber": {"modes": 357}})  # the band of 3 px grains on 64 × 64 pixels
    spectra = torch.fft.fft2(world.speckle.T.reshape(-1, 64, 64)).abs().square()
    fy, fx = torch.fft.fftfreq(64)[:, None], torch.fft.fftfreq(64)[None, :]
    outside = spectra[:, fy**2 + fx**2 > 1 / 36].sum((1,)) / spectra.sum((1, 2))
    assert float(outside.max()) < 1e-4
    with pytest.raises(ConfigError, match=r"fiber\.modes 358 exceeds the 357 independent speckle patterns"):
        MultimodeFiber(config={"fiber": {"modes": 358}})


@pytest.mark.statistical
def test_harsh_preset_has_its_stronger_noise_loss_and_drift() -> None:
    """The harsh fiber bench's sections are in force, measured: read noise 7 e⁻ and dark current 20 e⁻/s (realistic
    2.33 e⁻, 3 e⁻/s) in the temporal variance of dark frames, K²·(σ_read² + dark current·exposure) + 1/12, to five
    standard errors (400 frames of 256 pixels); flicker 0.3 rad (realistic 0.1) at mid gray, of rms flicker/√2
    (5 standard errors of 4000 draws); mode-dependent loss 8 dB (3); mode drift of rms 0.9 rad with a correlation
    time of 600 s (0.3 rad, 1800 s), within 5 % (25 600 mode phases) and the lag correlation at half a correlation
    time within 0.03."""
    gain = 0.383
    small = {"slm": {"shape": (16, 16)}, "camera": {"shape": (16, 16)}, "optics": {"power_w": 1e-30},
             "fiber": {"speckle_grain_px": 1.5}}  # 89 speckle patterns fit on 16 × 16 pixels, enough for 64 modes
    for preset, read_e, dark_e_per_s, flicker, loss_db, drift_rad, drift_tau_s in (
            ("realistic", 2.33, 3.0, 0.1, 3.0, 0.3, 1800.0), ("harsh", 7.0, 20.0, 0.3, 8.0, 0.9, 600.0)):
        world, slm, camera = bench(preset, seed=2, **small)
        camera.set_exposure(0.5)
        camera.set_trigger("external")
        slm.show_sequence(torch.zeros(400, 16, 16))
        dark = camera.capture(400).images
        variance = float(dark.var(0).mean())
        standard_error = variance * math.sqrt(2 / 399 / 256)
        expected = gain**2 * (read_e**2 + dark_e_per_s * 0.5) + 1 / 12
        assert variance == pytest.approx(expected, abs=5 * standard_error), preset
        mid_gray = world.realised_phase(torch.full((4000, 2, 2), math.pi))[:, 0, 0]
        assert float(mid_gray.std()) == pytest.approx(flicker / math.sqrt(2), rel=5 * math.sqrt(1 / 8 / 4000)), preset
        power = torch.linalg.svdvals(world.modes) ** 2
        assert 10 * math.log10(float(power.max() / power.min())) == pytest.approx(loss_db, abs=1e-3), preset
        phases = ou_path(world.mode_phase, world.clock.now() + torch.arange(1, 401) * drift_tau_s / 2)
        assert float(phases.std()) == pytest.approx(drift_rad, rel=0.05), preset
        lag = torch.corrcoef(torch.stack([phases[:-1].reshape(-1), phases[1:].reshape(-1)]))[0, 1]
        assert float(lag) == pytest.approx(math.exp(-0.5), abs=0.03), preset


def test_lab_file_builds_the_fiber_bench_and_runs_the_system(tmp_path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        worlds:
          mmf: {kind: multimode_fiber, preset: harsh, seed: 2, config: {fiber: {modes: 32}}}
        instruments:
          slm: {driver: simulated_slm, world: mmf}
          camera: {driver: simulated_camera, world: mmf}
        systems:
          fiber: {kind: fiber, instruments: {slm: slm, camera: camera}, settings: {n_in: 8, n_out: 4, n_params: 8}}
    """))
    lab = Lab.load(path)
    with lab.open():
        y = lab.systems["fiber"].forward(*inputs(3, n_in=8, n_params=8))
        assert y.shape == (3, 4) and torch.isfinite(y).all()
    assert not lab["slm"].connected and not lab["camera"].connected


def test_more_outputs_than_the_camera_holds_are_refused_before_they_are_laid_out() -> None:
    """10^12 outputs were laid out one by one on the camera, which hung."""
    _, slm, camera = bench("ideal")
    with pytest.raises(ConfigError, match=r"^n_out: n_out 1000000000000 regions of interest of 4 px do not fit"):
        FiberSystem({"slm": slm, "camera": camera}, n_out=10**12)


def test_the_measured_model_takes_its_offsets_from_the_dark_intercept_calibrate_measured() -> None:
    """`calibrate` measures the dark level with the reference; the measured model's offsets are it, within the
    dark level's rounding, so a twin starts from the bench's black level rather than from none."""
    world, slm, camera = bench("ideal", seed=6, construction={"black_level_dn": 10.0})
    system = FiberSystem({"slm": slm, "camera": camera})
    system.calibrate()
    expected = system.hidden_calibration(world)["offset"]
    assert float(expected.min()) > 0
    torch.testing.assert_close(system.physics_model().offset.detach(), expected, rtol=0.05, atol=0)
