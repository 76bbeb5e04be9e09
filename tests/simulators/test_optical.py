"""The simulated optical table: every non-ideality at its configured magnitude and absent in ``ideal``, seeds,
device time, and the optical system against its physics model and its oracle."""

import math
import re
import textwrap
import warnings

import pytest
import torch

from hil.errors import ConfigError, DeviceError, DeviceWarning, FramesDropped, LimitError
from hil.instruments import Camera
from hil.lab import Lab
from hil.physics.optics import (
    TWO_PI,
    FourierWorkspace,
    angular_spectrum,
    beam_amplitude,
    camera_intensity,
    fourier_window,
    lens_matrices,
    lens_ramp,
    lut_phase,
    propagate,
    separable_factors,
    slm_phase,
    wrap_drive,
)
from hil.state import capture
from hil.systems.fiber import FiberSystem
from hil.systems.optical import OpticalSystem, block_source, encode, region_matrix, ring_corners
from simulators.fiber import MultimodeFiber
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM, ou_path, poisson_small

K = 0.383  # the realistic camera's DN per electron


pytestmark = pytest.mark.usefixtures("one_thread")


#: Every construction non-ideality at its realistic magnitude (for noiseless but non-ideal benches).
CONSTRUCTION = {"lut_gain_error": 0.03, "lut_bow_rad": 0.15, "crosstalk_px": 0.5, "zero_order": 0.06,
                "misalignment_px": 0.3, "prnu": 0.006, "dsnu_e": 1.5, "black_level_dn": 10.0}
AOI = (18, 20, 29, 25)  # top, left, height, width


class NoAoiCamera(SimulatedCamera):
    """A camera without area-of-interest readout (the capability's default hook)."""

    _set_roi_hw = Camera._set_roi_hw


def bench(preset: str = "realistic", seed: int = 0, camera_class: type[SimulatedCamera] = SimulatedCamera,
          **config):
    world = OpticalTable(preset=preset, seed=seed, config=config)
    return world, SimulatedSLM(world, name="slm").connect(), camera_class(world, name="camera").connect()


def crop(images: torch.Tensor, window: tuple[int, int, int, int] = AOI) -> torch.Tensor:
    top, left, height, width = window
    return images[..., top:top + height, left:left + width]


def blocks(count: int, seed: int = 0, size: int = 8) -> torch.Tensor:
    """Random phase blocks of ``size`` px over the 64 × 64 SLM."""
    generator = torch.Generator().manual_seed(seed)
    values = TWO_PI * torch.rand(count, 64 // size, 64 // size, generator=generator)
    return values.repeat_interleave(size, 1).repeat_interleave(size, 2)


def frames(slm, camera, patterns: torch.Tensor, exposure_s: float = 1e-3) -> torch.Tensor:
    camera.set_exposure(exposure_s)
    camera.set_trigger("external")
    slm.show_sequence(patterns)
    return camera.capture(len(patterns)).images


def noiseless(world: OpticalTable, patterns: torch.Tensor, exposure_s: float, **hidden) -> torch.Tensor:
    """The camera DN the physics gives for ``patterns``, with the world's geometry and the given parameters."""
    params = {"gain": 1.0, "bow_rad": 0.0, "crosstalk_px": 0.0, "zero_order": 0.0, "shift_px": (0.0, 0.0), **hidden}
    phase = slm_phase(patterns, gain=params["gain"], bow_rad=params["bow_rad"],
                      crosstalk_var_px2=params["crosstalk_px"] ** 2)
    intensity = camera_intensity(phase, beam=world.beam, zero_order=params["zero_order"], fft_size=256,
                                 camera_shape=(64, 64), shift_px=params["shift_px"])
    return intensity * float(world.signal_rate()[0]) * exposure_s * K


def hidden_over_seeds(name: str, seeds: int = 400) -> torch.Tensor:
    return torch.tensor([float(torch.as_tensor(OpticalTable(seed=s).hidden_parameters()[name]).reshape(-1)[0])
                         for s in range(seeds)])


#: A 16 × 16 SLM and camera on a 64-sample Fourier plane: cheap frames for the per-shot statistics.
SMALL = {"slm": {"shape": (16, 16)}, "camera": {"shape": (16, 16)}, "optics": {"fft_size": 64}}


def small(**sections) -> dict:
    """`SMALL` with the given config sections merged into it (one level deep)."""
    return {name: {**SMALL.get(name, {}), **sections.get(name, {})} for name in {*SMALL, *sections}}


def temporal_variance(images: torch.Tensor) -> tuple[float, float]:
    """The temporal variance of frames (N × rows × cols), averaged over the pixels (DN²), and its standard error for
    independent, near-normal pixels: var·√(2/(N − 1))/√pixels."""
    variance = float(images.var(0).mean())
    return variance, variance * math.sqrt(2 / (len(images) - 1) / images[0].numel())


def padded_fft_window(field: torch.Tensor, fft_size: int, camera_shape: tuple[int, int],
                      shift_px: tuple[float, float]) -> torch.Tensor:
    """The reference Fourier lens in float64: the field times `lens_ramp`'s phase, zero-padded to ``fft_size``,
    unitary FFT, the camera's window around sample fft_size // 2."""
    rows, cols = field.shape[-2:]
    half = fft_size // 2
    y = torch.arange(rows, dtype=torch.float64)[:, None] * (half + shift_px[0])
    x = torch.arange(cols, dtype=torch.float64)[None, :] * (half + shift_px[1])
    ramp = torch.polar(torch.ones(rows, cols, dtype=torch.float64), (TWO_PI / fft_size) * (y + x))
    spectrum = torch.fft.fft2(field.to(torch.complex128) * ramp, s=(fft_size, fft_size), norm="ortho")
    top, left = half - camera_shape[0] // 2, half - camera_shape[1] // 2
    return spectrum[..., top:top + camera_shape[0], left:left + camera_shape[1]]


# -- the Fourier lens -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "fft_size", "camera_shape"),
                         [((64, 64), 256, (64, 64)), ((32, 48), 128, (45, 20)), ((17, 9), 40, (40, 3))])
def test_pruned_lens_equals_the_window_of_the_padded_fft(shape, fft_size, camera_shape) -> None:
    generator = torch.Generator().manual_seed(sum(shape) + fft_size)
    fields = torch.randn(6, *shape, dtype=torch.complex64, generator=generator)
    for shift in [(0.0, 0.0), (0.37, -0.81), (-3.2, 5.5)]:
        reference = padded_fft_window(fields, fft_size, camera_shape, shift)
        window = fourier_window(fields, fft_size, camera_shape, torch.tensor(shift))
        peak = float(reference.abs().max())
        assert float((window - reference).abs().max()) < 1e-6 * peak, shift
        float32 = torch.fft.fft2(fields * lens_ramp(shape, fft_size, shift), s=(fft_size, fft_size), norm="ortho")
        top, left = fft_size // 2 - camera_shape[0] // 2, fft_size // 2 - camera_shape[1] // 2
        cropped = float32[..., top:top + camera_shape[0], left:left + camera_shape[1]]
        assert float((window - cropped).abs().max()) < 2e-5 * peak  # lens_ramp's own float32 phase error
    a, b = lens_matrices(shape, fft_size, camera_shape)
    assert a.shape == (camera_shape[0], shape[0]) and b.shape == (camera_shape[1], shape[1])
    with pytest.raises(ValueError, match="larger than the Fourier plane"):
        lens_matrices(shape, fft_size, (fft_size + 1, 1))


@pytest.mark.parametrize("planes", [1, 2])
def test_camera_intensity_equals_the_padded_fft_with_and_without_workspace(planes: int) -> None:
    generator = torch.Generator().manual_seed(planes)
    width = 64 // planes
    beam = beam_amplitude((64, width), 25.0)
    transfer = angular_spectrum((64, width), 8e-6, 532e-9, 5e-3) if planes > 1 else None
    phases = TWO_PI * torch.rand(40, 64, 64, generator=generator)
    shift, zero_order = (0.45, -0.3), 0.07
    field = beam * ((1 - zero_order) * torch.polar(torch.ones(()), phases[..., :width]) + zero_order)
    for plane in range(1, planes):
        spectrum = torch.fft.fft2(field, s=tuple(transfer.shape)) * transfer
        arriving = torch.fft.ifft2(spectrum)[..., :64, :width]
        panel = phases[..., plane * width:(plane + 1) * width]
        field = arriving * ((1 - zero_order) * torch.polar(torch.ones(()), panel) + zero_order)
    reference = padded_fft_window(field, 256, (64, 64), shift).abs().square()
    common = {"beam": beam, "zero_order": zero_order, "fft_size": 256, "camera_shape": (64, 64),
              "shift_px": torch.tensor(shift), "planes": planes, "transfer": transfer}
    workspace = FourierWorkspace(chunk=16)  # 40 frames: two whole chunks and a part
    for intensity in (camera_intensity(phases, **common), camera_intensity(phases, **common, workspace=workspace),
                      camera_intensity(phases, **common, workspace=workspace)):
        torch.testing.assert_close(intensity.double(), reference, rtol=0, atol=2e-6 * float(reference.max()))


def test_workspace_folds_a_separable_beam_into_the_lens_and_multiplies_any_other() -> None:
    generator = torch.Generator().manual_seed(5)
    gaussian, flat = beam_amplitude((64, 64), 25.0), beam_amplitude((64, 64), None)
    uneven = gaussian * (1 + 0.2 * torch.rand(64, 64, generator=generator))
    for beam in (gaussian, flat):
        column, row = separable_factors(beam)
        torch.testing.assert_close(column[:, None] * row, beam, rtol=1e-6, atol=0)
    assert separable_factors(uneven) is None
    phases = TWO_PI * torch.rand(20, 64, 64, generator=generator)
    for beam in (gaussian, uneven):
        for zero_order in (0.0, 0.07):
            common = {"beam": beam, "zero_order": zero_order, "fft_size": 256, "camera_shape": (64, 64),
                      "shift_px": torch.tensor((0.45, -0.3)), "window": AOI}
            reference = camera_intensity(phases, **common)
            folded = camera_intensity(phases, **common, workspace=FourierWorkspace(chunk=8))
            torch.testing.assert_close(folded, reference, rtol=0, atol=1e-6 * float(reference.max()))


@pytest.mark.parametrize("fixed", ["none", "theta", "scattered", "all"])
def test_workspace_computes_the_rows_the_same_in_every_frame_once_and_gives_the_same_intensity(fixed: str) -> None:
    """Rows whose realised phase is the same in every frame (θ's blocks on an ideal SLM) are computed once, from
    the first frame, and added to each frame's other rows: the lens is linear, so the intensity is unchanged."""
    generator = torch.Generator().manual_seed(7)
    phases = TWO_PI * torch.rand(40, 64, 64, generator=generator)
    rows = {"none": torch.zeros(64, dtype=torch.bool), "theta": torch.arange(64) >= 16,
            "scattered": torch.rand(64, generator=generator) < 0.5, "all": torch.ones(64, dtype=torch.bool)}[fixed]
    phases[:, rows] = phases[:1, rows]

    def realise(drives: torch.Tensor, frames: slice) -> torch.Tensor:  # a pixel's phase its drive's alone
        return 0.9 * drives + 0.1

    gaussian = beam_amplitude((64, 64), 25.0)
    for beam in (gaussian, gaussian * (1 + 0.2 * torch.rand(64, 64, generator=generator))):  # folded, multiplied
        for zero_order in (0.0, 0.07):
            common = {"beam": beam, "zero_order": zero_order, "fft_size": 256, "camera_shape": (64, 64),
                      "shift_px": torch.tensor((0.45, -0.3)), "window": AOI}
            reference = camera_intensity(realise(phases, slice(None)), **common)
            intensity = FourierWorkspace(chunk=16).intensity(phases, **common, realise=realise, fixed_rows=rows)
            torch.testing.assert_close(intensity, reference, rtol=0, atol=2e-6 * float(reference.max()))


@pytest.mark.parametrize("preset", ["ideal", "realistic"])
def test_a_table_computes_the_rows_driven_alike_once_only_where_each_pixel_is_its_own(preset: str) -> None:
    """An ideal table (no crosstalk, no flicker) computes the rows driven alike in every frame once, and renders a
    batch as each frame alone (to a DN, the rounding of the sums' order); a realistic table, whose crosstalk mixes
    rows and whose flicker changes every frame, computes every row of every frame."""
    generator = torch.Generator().manual_seed(3)
    drives = TWO_PI * torch.rand(12, 64, 64, generator=generator)
    drives[:, 16:] = drives[:1, 16:]
    world = OpticalTable(preset=preset)
    given, intensity = [], world.workspace.intensity

    def recorded(*args, fixed_rows=None, **kwargs):
        given.append(fixed_rows)
        return intensity(*args, fixed_rows=fixed_rows, **kwargs)

    world.workspace.intensity = recorded
    times = torch.zeros(12, dtype=torch.float64)
    frames = world.render(drives, 1e-3, times)
    if preset == "realistic":
        assert given == [None]
        return
    assert torch.equal(given[0], torch.arange(64) >= 16)
    alone = torch.cat([world.render(drives[k:k + 1], 1e-3, times[k:k + 1]) for k in range(12)])
    assert given[1:] == [None] * 12
    torch.testing.assert_close(frames, alone, rtol=0, atol=1.0)


def test_lens_of_a_window_is_the_rows_and_columns_of_the_whole_cameras() -> None:
    cases = [((64, 64), 256, (64, 64), AOI), ((17, 9), 40, (40, 3), (0, 1, 40, 2))]
    for shape, fft_size, camera_shape, window in cases:
        a, b = lens_matrices(shape, fft_size, camera_shape, (0.3, -1.2))
        part_a, part_b = lens_matrices(shape, fft_size, camera_shape, (0.3, -1.2), window=window)
        top, left, height, width = window
        assert torch.equal(part_a, a[top:top + height]) and torch.equal(part_b, b[left:left + width])
    for window in [(60, 0, 5, 5), (0, 0, 0, 5), (-1, 0, 2, 2)]:
        with pytest.raises(ValueError, match="off the 64×64 camera"):
            lens_matrices((64, 64), 256, (64, 64), window=window)


@pytest.mark.parametrize("planes", [1, 2])
def test_camera_intensity_of_a_window_is_the_crop_of_the_whole_camera(planes: int) -> None:
    width = 64 // planes
    common = {"beam": beam_amplitude((64, width), 25.0), "zero_order": 0.07, "fft_size": 256,
              "camera_shape": (64, 64), "shift_px": torch.tensor((0.45, -0.3)), "planes": planes,
              "transfer": angular_spectrum((64, width), 8e-6, 532e-9, 5e-3) if planes > 1 else None}
    phases = TWO_PI * torch.rand(40, 64, 64, generator=torch.Generator().manual_seed(planes))
    whole = camera_intensity(phases, **common)
    workspace = FourierWorkspace(chunk=16)
    for window in [AOI, (0, 0, 64, 64), (63, 0, 1, 64), (5, 40, 30, 1)]:
        for intensity in (camera_intensity(phases, **common, window=window),
                          camera_intensity(phases, **common, window=window, workspace=workspace)):
            assert intensity.shape == (40, *window[2:])
            torch.testing.assert_close(intensity, crop(whole, window), rtol=0, atol=1e-6 * float(whole.max()))


def test_chunked_render_equals_the_whole_batch_steps() -> None:
    """The table renders one panel chunk by chunk (SLM steps and lens together); the numbers are those of the
    whole-batch steps, flicker included."""
    construction = {"lut_gain_error": 0.03, "lut_bow_rad": 0.15, "crosstalk_px": 0.5, "zero_order": 0.06,
                    "misalignment_px": 0.3}
    world = OpticalTable(preset="ideal", seed=5, config={"construction": construction, "shot": {"flicker_rad": 0.1}})
    drives = world.program(blocks(70))
    times = torch.arange(70, dtype=torch.float64)
    state = world.rng.get_state()
    chunked = world.render(drives, 1e-3, times)
    world.rng.set_state(state)
    whole = world.expose(world.propagate(world.realised_phase(drives), times), 1e-3, times)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5 * float(whole.max()))


def test_stacked_planes_render_a_frame_at_a_time_on_a_large_grid_with_the_whole_batch_numbers() -> None:
    """Panels 10 cm apart need a 1728 × 1696 grid (22 MiB per frame and temporary): a capture of the camera's 1024
    frames propagated them all at once, tens of GiB."""
    world = OpticalTable(preset="ideal", seed=5, config={"construction": CONSTRUCTION, "shot": {"flicker_rad": 0.1},
                                                         "optics": {"planes": 2, "plane_distance_m": 0.1}})
    drives = world.program(blocks(3))
    times = torch.arange(3, dtype=torch.float64)
    batches, propagate = [], world.propagate
    world.propagate = lambda phase, times_s: batches.append(len(phase)) or propagate(phase, times_s)
    state = world.rng.get_state()
    chunked = world.render(drives, 1e-3, times)
    assert batches == [1, 1, 1]
    world.rng.set_state(state)
    whole = world.expose(propagate(world.realised_phase(drives), times), 1e-3, times)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5 * float(whole.max()))


# -- seeds ------------------------------------------------------------------------------------------------------
def test_same_seed_same_frames_and_another_seed_other_hidden_parameters() -> None:
    patterns = blocks(4)
    first, second = (frames(*bench(seed=7)[1:], patterns) for _ in range(2))
    assert torch.equal(first, second)
    one, other = OpticalTable(seed=7).hidden_parameters(), OpticalTable(seed=8).hidden_parameters()
    assert one["lut_gain"] != other["lut_gain"] and not torch.equal(one["shift_px"], other["shift_px"])
    assert not torch.equal(one["pixel_gain"], other["pixel_gain"])


def test_reading_the_hidden_parameters_changes_no_later_frame() -> None:
    outputs = []
    for oracle in (False, True):
        world, slm, camera = bench(seed=4)
        frames(slm, camera, blocks(1))
        if oracle:
            world.hidden_parameters()
        outputs.append(frames(slm, camera, blocks(4, seed=1)))
    assert torch.equal(*outputs)


# -- construction -----------------------------------------------------------------------------------------------
def test_lut_error_has_the_configured_spread_and_shapes_the_frames() -> None:
    gains, bows = hidden_over_seeds("lut_gain"), hidden_over_seeds("lut_bow_rad")
    assert float((gains - 1).std()) == pytest.approx(0.03, rel=0.12)
    assert float(bows.std()) == pytest.approx(0.15, rel=0.12)
    world, slm, camera = bench("ideal", seed=3, construction={"lut_gain_error": 0.03, "lut_bow_rad": 0.15})
    patterns = blocks(3)
    measured = frames(slm, camera, patterns)
    true = noiseless(world, patterns, 1e-3, gain=world.lut_gain, bow_rad=world.lut_bow_rad)
    torch.testing.assert_close(measured, true, rtol=1e-4, atol=1e-3 * float(true.max()))
    assert (measured - noiseless(world, patterns, 1e-3)).abs().max() > 0.05 * true.max()
    ideal = OpticalTable(preset="ideal", seed=3)
    assert ideal.lut_gain == 1.0 and ideal.lut_bow_rad == 0.0


def test_the_lut_gain_stays_positive_at_the_largest_error_allowed() -> None:
    """A gain error of up to 1 (its limit was) drew gains of 0 or below one seed in six: a phase that falls as the
    drive rises. The error is at most 0.3 now, and seed 725's draw of 3.7σ below (a gain of −0.10) is floored at 0.1."""
    with pytest.raises(ConfigError, match=r"lut_gain_error"):
        OpticalTable(config={"construction": {"lut_gain_error": 0.31}})
    assert OpticalTable(seed=725, config={"construction": {"lut_gain_error": 0.3}}).lut_gain == 0.1


def test_lut_bow_is_the_parabola_4u_one_minus_u_at_every_drive() -> None:
    """φ = gain·d + bow·4u(1 − u), u = d/2π, written out, at drives where the parabola differs from other bows
    with the same ends and peak (sin πu is 0.707 at u = 0.25, the parabola 0.75); a per-frame bow broadcasts. The
    simulator's realised phase is that LUT, and its flicker is a per-frame bow: of rms flicker·4u(1 − u)/√2."""
    u = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0], dtype=torch.float64)
    drive = TWO_PI * u
    gain, bow = 1.07, 0.4
    explicit = gain * drive + bow * 4 * u * (1 - u)
    torch.testing.assert_close(lut_phase(drive.float(), gain, bow).double(), explicit, rtol=0, atol=1e-5)
    torch.testing.assert_close(lut_phase(drive.float(), torch.tensor(gain), torch.tensor(bow)).double(), explicit,
                               rtol=0, atol=1e-5)
    assert float(lut_phase(drive.float(), gain, bow)[2] - gain * math.pi / 2) == pytest.approx(0.75 * bow, abs=1e-5)
    bows = torch.tensor([-0.3, 0.0, 0.2]).reshape(3, 1, 1)
    per_frame = lut_phase(drive.float().expand(3, 1, -1), 1.0, bows)
    torch.testing.assert_close(per_frame.double(), drive + bows.double() * 4 * u * (1 - u), rtol=0, atol=1e-5)
    config = small(construction={"lut_gain_error": 0.03, "lut_bow_rad": 0.15}, shot={"flicker_rad": 0.1})
    world = OpticalTable(preset="ideal", seed=3, config=config)
    drives = drive.float().expand(8000, 1, -1).contiguous()
    phase = world.realised_phase(drives).double()
    shape = 4 * u * (1 - u)
    torch.testing.assert_close(phase.mean(0)[0], world.lut_gain * drive + world.lut_bow_rad * shape, rtol=0,
                               atol=5 * 0.1 / math.sqrt(2 * 8000))
    torch.testing.assert_close(phase.std(0)[0], 0.1 / math.sqrt(2) * shape, rtol=0.04, atol=1e-6)


def test_crosstalk_width_is_drawn_around_the_configured_value_and_blurs_the_phase() -> None:
    widths = hidden_over_seeds("crosstalk_px", 300)
    assert float(widths.min()) >= 0.4 and float(widths.max()) <= 0.6
    assert float(widths.mean()) == pytest.approx(0.5, rel=0.03)
    world = OpticalTable(preset="ideal", seed=2, config={"construction": {"crosstalk_px": 0.5}})
    impulse = torch.zeros(1, 64, 64)
    impulse[..., 32, 32] = 2.0
    row = world.realised_phase(impulse)[0, 32]
    column = world.realised_phase(impulse)[0, :, 32]
    offsets = torch.arange(64.0) - 32
    for profile in (row, column):  # a discrete Gaussian of variance σ² along each axis
        weights = profile / profile.sum()
        assert float((weights * offsets).sum()) == pytest.approx(0.0, abs=1e-6)
        assert float((weights * offsets**2).sum()) == pytest.approx(world.crosstalk_px**2, rel=1e-4)
    assert float(row.sum() * column.sum() / row[32]) == pytest.approx(2.0, rel=1e-5)  # the blur keeps the total
    edge = torch.zeros(1, 64, 64)
    edge[..., 32:] = 2.0
    assert torch.equal(OpticalTable(preset="ideal").realised_phase(edge), edge)


def test_zero_order_fraction_is_measured_on_the_optical_axis() -> None:
    fractions = hidden_over_seeds("zero_order", 300)
    assert float(fractions.min()) >= 0.048 and float(fractions.max()) <= 0.072
    grating = (torch.arange(64) // 8 % 2 * math.pi).expand(1, 64, 64).clone()  # its modulated field has no DC
    for preset, config in (("ideal", {"construction": {"zero_order": 0.06}}), ("ideal", {})):
        world, slm, camera = bench(preset, seed=5, **config)
        axis = (frames(slm, camera, grating)[0, 32, 32], frames(slm, camera, torch.zeros(1, 64, 64))[0, 32, 32])
        assert math.sqrt(float(axis[0] / axis[1])) == pytest.approx(world.zero_order, abs=1e-4)
    assert world.zero_order == 0.0


@pytest.mark.statistical
@pytest.mark.parametrize(("crosstalk", "zero_order", "spread"), [(0.5, 0.06, 0.2), (1.0, 0.1, 0.6)])
def test_crosstalk_width_and_zero_order_spread_uniformly_over_the_configured_range(crosstalk, zero_order,
                                                                                  spread) -> None:
    """Device to device, σ and z are drawn uniformly within ±spread of their means: standard deviation
    spread·mean/√3, and over 400 devices the draws reach within 3 % of the range's ends (a miss has probability
    0.97⁴⁰⁰ < 10⁻⁵). The sample standard deviation of a uniform variable has a relative standard error
    √((9/5 − 1)/4n) = 0.022 for n = 400: the tolerance is four of them."""
    seeds = 400
    config = small(construction={"crosstalk_px": crosstalk, "crosstalk_spread": spread, "zero_order": zero_order,
                                 "zero_order_spread": spread})
    draws = [OpticalTable(seed=s, config=config).hidden_parameters() for s in range(seeds)]
    for name, mean in (("crosstalk_px", crosstalk), ("zero_order", zero_order)):
        values = torch.tensor([float(hidden[name]) for hidden in draws])
        half_width = spread * mean
        assert float(values.std()) == pytest.approx(half_width / math.sqrt(3), rel=4 * math.sqrt(0.8 / (4 * seeds)))
        assert float(values.mean()) == pytest.approx(mean, abs=4 * half_width / math.sqrt(3 * seeds))
        assert mean - half_width - 1e-6 <= float(values.min()) < mean - 0.94 * half_width, name
        assert mean + 0.94 * half_width < float(values.max()) <= mean + half_width + 1e-6, name



@pytest.mark.parametrize("world_class", [OpticalTable, MultimodeFiber])
def test_a_zero_order_spread_that_would_draw_an_unmodulated_slm_is_refused(world_class) -> None:
    """The zero-order fraction is drawn uniformly within ±spread of its mean, at most 1: a mean of 0.6 with a spread of
    0.8 reaches 1.08, and one device in fourteen (29 of 400 seeds) drew an SLM that modulates nothing, its frames
    blind to every pattern, and a spread no longer uniform. Refused, naming the two fields; up to the edge, taken."""
    with pytest.raises(ConfigError, match=r"^config\.construction: zero_order 0\.6 with zero_order_spread 0\.8 draws "
                                          r"fractions up to 1\.08, on some devices an SLM that modulates nothing; "
                                          r"lower either, so that zero_order × \(1 \+ zero_order_spread\) stays below "
                                          r"1$") as caught:
        world_class(config={"construction": {"zero_order": 0.6, "zero_order_spread": 0.8}})
    assert caught.value.field == "config.construction"
    assert world_class(config={"construction": {"zero_order": 0.5, "zero_order_spread": 0.99}}).zero_order < 1


@pytest.mark.statistical
def test_harsh_construction_has_its_preset_magnitudes() -> None:
    """The harsh table's construction section is in force, measured against its preset's numbers (realistic's in
    brackets): over 2000 devices, the LUT's gain error 8 % (3 %) and bow 0.4 rad (0.15), the sample std's relative
    standard error 1/√(2n) = 1.6 %; crosstalk widths uniform within ±20 % of 1 px (0.5 px) and zero-order fractions
    within ±20 % of 0.12 (0.06), the uniform sample std's √(0.8/(4n)) = 1 %, the means to σ/√n; the misalignment 0.8
    px (0.3) per axis, 4000 values, 1.1 %. On one 64 × 64 camera: PRNU 1.5 % (0.6 %) and DSNU 4 e⁻ (1.5), 4096
    pixels, 1.1 %, and the black level 20 DN (10). Tolerances five standard errors."""
    devices = 2000
    worlds = [OpticalTable(preset="harsh", seed=seed, config=SMALL) for seed in range(devices)]

    def drawn(name: str) -> torch.Tensor:
        return torch.tensor([float(getattr(world, name)) for world in worlds], dtype=torch.float64)

    spread = 5 / math.sqrt(2 * devices)
    assert float((drawn("lut_gain") - 1).std()) == pytest.approx(0.08, rel=spread)
    assert float(drawn("lut_bow_rad").std()) == pytest.approx(0.4, rel=spread)
    for name, mean in (("crosstalk_px", 1.0), ("zero_order", 0.12)):
        values, std = drawn(name), 0.2 * mean / math.sqrt(3)
        assert float(values.std()) == pytest.approx(std, rel=5 * math.sqrt(0.8 / (4 * devices))), name
        assert float(values.mean()) == pytest.approx(mean, abs=5 * std / math.sqrt(devices)), name
    shifts = torch.stack([world.shift_px for world in worlds]).double()
    assert float(shifts.std()) == pytest.approx(0.8, rel=5 / math.sqrt(2 * shifts.numel()))
    world = OpticalTable(preset="harsh", seed=1)
    pixels = world.pixel_gain.numel()
    assert float(world.pixel_gain.double().std()) == pytest.approx(0.015, rel=5 / math.sqrt(2 * pixels))
    assert float(world.dark_offset_e.double().std()) == pytest.approx(4.0, rel=5 / math.sqrt(2 * pixels))
    dark_dn = world.hidden_parameters()["dark_dn"].double()
    assert float(dark_dn.mean()) == pytest.approx(20.0, abs=5 * K * 4.0 / math.sqrt(pixels))


@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_free_space_between_narrow_panels_does_not_wrap_around(width: int) -> None:
    """Over 5 mm at 532 nm, light from 8 µm pixels walks 21 pixels sideways: the transfer function's grid must
    hold it, or it re-enters the panel from the other side. Reference: the panel inside a 16× wider field, on its
    own (larger) grid."""
    phase = TWO_PI * torch.rand(64, width, generator=torch.Generator().manual_seed(0))
    field = torch.polar(torch.ones(64, width), phase)
    out = propagate(field, angular_spectrum((64, width), 8e-6, 532e-9, 5e-3))
    wide = torch.zeros(64 * 16, width * 16, dtype=torch.complex64)
    wide[:64, :width] = field
    reference = propagate(wide, angular_spectrum(tuple(wide.shape), 8e-6, 532e-9, 5e-3))[:64, :width]
    assert float((out - reference).norm() / reference.norm()) < 0.025  # 2n samples: 1.31, 0.33, 0.047 for 8..32

def test_a_free_space_grid_too_large_to_compute_is_refused_naming_the_distance_and_its_memory() -> None:
    """Panels 1 m apart at 20 µm need a grid of 625 072 × 625 040 samples: the world's construction, and the model
    at its first call, tried to allocate terabytes for it."""
    optics = {"planes": 2, "plane_distance_m": 1.0, "wavelength_m": 2e-5}
    with pytest.raises(ConfigError, match=re.escape("optics.plane_distance_m 1 m needs a free-space grid of "
                                                    "625072×625040 samples between panels (2.91e+03 GiB per frame, "
                                                    "at most 2048×2048)")):
        OpticalTable(config={"optics": optics})
    _, slm, camera = bench(optics={"planes": 2})
    with pytest.raises(ConfigError, match=re.escape("plane_distance_m 1 m needs a free-space grid of 625072×625040 "
                                                    "samples")) as caught:
        OpticalSystem({"slm": slm, "camera": camera}, planes=2, n_params=32, plane_distance_m=1.0, wavelength_m=2e-5)
    assert caught.value.field == "plane_distance_m"
    wide = {"planes": 2, "plane_distance_m": 0.1}  # 8 µm at 532 nm: 1728 × 1696 samples, taken
    assert tuple(OpticalTable(config={"optics": wide}).transfer.shape) == (1728, 1696)


def test_misalignment_moves_the_zero_order_spot_by_the_hidden_shift() -> None:
    shifts = torch.stack([OpticalTable(seed=s).shift_px for s in range(200)])
    assert float(shifts.std()) == pytest.approx(0.3, rel=0.1)
    world, slm, camera = bench("ideal", seed=12, construction={"misalignment_px": 0.3})
    spot = frames(slm, camera, torch.zeros(1, 64, 64))[0]
    grid = torch.arange(64.0) - 32
    centroid = torch.stack([(spot.sum(1) * grid).sum(), (spot.sum(0) * grid).sum()]) / spot.sum()
    torch.testing.assert_close(centroid, world.shift_px, atol=0.01, rtol=0)
    assert float(world.shift_px.abs().max()) > 0.05
    assert torch.equal(OpticalTable(preset="ideal", seed=11).shift_px, torch.zeros(2))


def test_prnu_is_a_fixed_per_pixel_gain_of_the_configured_spread() -> None:
    world, slm, camera = bench("ideal", seed=4, construction={"prnu": 0.006})
    patterns = blocks(2)
    measured = frames(slm, camera, patterns)
    flat = noiseless(world, patterns, 1e-3)
    lit = flat > 1e-3 * flat.max()
    gain = measured[lit] / flat[lit]
    torch.testing.assert_close(gain, world.pixel_gain.expand_as(flat)[lit], rtol=1e-4, atol=0)
    assert float(world.pixel_gain.std()) == pytest.approx(0.006, rel=0.05)
    assert torch.equal(OpticalTable(preset="ideal", seed=4).pixel_gain, torch.ones(64, 64))
    # the realistic preset's own PRNU is the README's 0.6 %: 4096 pixels give the std a standard error of 1.1 %
    assert float(OpticalTable(seed=4).pixel_gain.std()) == pytest.approx(0.006, rel=5 / math.sqrt(2 * 4096))
    # a Gaussian gain of 50 % spread was negative on 2 % of the pixels: they read no light, silently
    with pytest.raises(ConfigError, match=r"^config\.construction\.prnu: .*less than or equal to 0\.2") as caught:
        OpticalTable(config={"construction": {"prnu": 0.5}})
    assert caught.value.field == "config.construction.prnu"


@pytest.mark.parametrize(("power_w", "wavelength_m", "quantum_efficiency"), [(2.5e-10, 532e-9, 0.65),
                                                                            (1e-9, 633e-9, 0.3)])
def test_a_frame_counts_the_laser_photons_times_the_quantum_efficiency(power_w, wavelength_m,
                                                                      quantum_efficiency) -> None:
    """EMVA 1288: electrons = QE × photons, photons = P·t·λ/(h·c) for the light on the sensor. A camera as wide as the
    Fourier plane catches all the light (the lens is unitary): on an ideal bench a blank SLM's frame totals
    K·QE·P·t·λ/(h·c) DN (2.5e-10 W at 532 nm: 6.70e8 photons/s), whatever the beam and the SLM's size."""
    exposure_s = 2e-3
    config = small(camera={"shape": (64, 64), "quantum_efficiency": quantum_efficiency},
                   optics={"power_w": power_w, "wavelength_m": wavelength_m})
    _, slm, camera = bench("ideal", seed=2, **config)
    total = float(frames(slm, camera, torch.zeros(1, 16, 16), exposure_s=exposure_s).double().sum())
    photons = power_w * exposure_s * wavelength_m / (6.62607015e-34 * 299_792_458.0)
    assert total == pytest.approx(K * quantum_efficiency * photons, rel=1e-5)


@pytest.mark.statistical
def test_dark_frames_show_black_level_dsnu_dark_current_and_read_noise() -> None:
    """EMVA 1288 dark measurements: no light (the laser power set to nothing)."""
    _, slm, camera = bench(seed=6, optics={"power_w": 1e-30})
    short = frames(slm, camera, torch.zeros(200, 64, 64), exposure_s=0.01)
    long = frames(slm, camera, torch.zeros(200, 64, 64), exposure_s=1.0)
    assert float(short.mean()) == pytest.approx(10 + K * 3.0 * 0.01, abs=0.05)
    assert float(long.mean() - short.mean()) == pytest.approx(K * 3.0 * 0.99, rel=0.08)  # dark current
    temporal = float(short.var(0).mean())
    assert math.sqrt(temporal) == pytest.approx(math.sqrt((K * 2.33) ** 2 + 1 / 12), rel=0.03)  # read noise
    # EMVA 1288's absolute sensitivity threshold σ_y.dark/K + 1/2 gives the data sheet's 71.2 dB over 10 700 e⁻
    assert 20 * math.log10(10_700 / (math.sqrt(temporal) / K + 0.5)) == pytest.approx(71.2, abs=0.3)
    spatial = float(short.mean(0).var()) - temporal / len(short)
    assert math.sqrt(spatial) == pytest.approx(K * 1.5, rel=0.06)  # DSNU
    ideal = frames(*bench("ideal", seed=6, optics={"power_w": 1e-30})[1:], torch.zeros(4, 64, 64), exposure_s=1.0)
    assert float(ideal.abs().max()) < 1e-12


@pytest.mark.statistical
@pytest.mark.parametrize(("dark_current", "shot_noise"), [(3.0, True), (30.0, True), (30.0, False)])
def test_dark_current_carries_its_shot_noise(dark_current: float, shot_noise: bool) -> None:
    """The dark electrons are counted like photo-electrons: over 1 s, 3 e⁻ (drawn exactly, below the Poisson
    threshold) and 30 e⁻ (normal above it) add their Poisson variance K²·dark current·exposure to the read noise's,
    temporal variance = K²·(dark current·exposure + σ_read²) + 1/12 (ADC rounding); without shot noise, read noise
    alone at any exposure. Tolerances: five standard errors of the variances (400 frames of 256 pixels)."""
    config = small(optics={"power_w": 1e-30}, shot={"dark_current_e_per_s": dark_current, "shot_noise": shot_noise})
    _, slm, camera = bench(seed=6, **config)
    short, short_error = temporal_variance(frames(slm, camera, torch.zeros(400, 16, 16), exposure_s=0.01))
    long, long_error = temporal_variance(frames(slm, camera, torch.zeros(400, 16, 16), exposure_s=1.0))
    dark_variance = K**2 * dark_current * (1.0 - 0.01) if shot_noise else 0.0
    assert long == pytest.approx(K**2 * (dark_current * shot_noise + 2.33**2) + 1 / 12, abs=5 * long_error)
    assert long - short == pytest.approx(dark_variance, abs=5 * math.hypot(long_error, short_error))


# -- area of interest -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("planes", [1, 2])
def test_an_aoi_frame_is_the_crop_of_the_full_frame(planes: int) -> None:
    """Noiseless but with every construction non-ideality (per-pixel gain and dark offset included)."""
    _, slm, camera = bench("ideal", seed=5, construction=CONSTRUCTION, optics={"planes": planes})
    patterns = blocks(6)
    full = frames(slm, camera, patterns)
    camera.set_roi(*AOI)
    part = frames(slm, camera, patterns)
    assert part.shape == (6, *AOI[2:])
    torch.testing.assert_close(part, crop(full), rtol=0, atol=1e-5 * float(full.max()))
    camera.set_roi(None)
    torch.testing.assert_close(frames(slm, camera, patterns), full, rtol=0, atol=1e-5 * float(full.max()))


@pytest.mark.statistical
def test_an_aoi_frame_has_the_noise_of_the_full_frame_cropped() -> None:
    """Realistic camera noise (shot, read, rounding; no flicker or wander, which are common to all pixels of a
    frame): per pixel, the same mean and variance."""
    _, slm, camera = bench(seed=8, shot={"flicker_rad": 0.0}, slow={"power_wander": 0.0})
    camera.set_exposure(2e-3)
    slm.show(blocks(1)[0])
    full = crop(camera.capture(400).images).reshape(400, -1)
    camera.set_roi(*AOI)
    part = camera.capture(400).images.reshape(400, -1)
    assert not torch.equal(part, full)
    z = (part.mean(0) - full.mean(0)) / ((part.var(0) + full.var(0)) / 400).sqrt()
    assert float(z.mean()) == pytest.approx(0.0, abs=0.15) and float(z.std()) == pytest.approx(1.0, abs=0.1)
    lit = full.mean(0) > 30
    assert int(lit.sum()) > 100
    ratio = part.var(0)[lit] / full.var(0)[lit]
    assert float(ratio.log().mean()) == pytest.approx(0.0, abs=0.03)


def test_a_camera_must_return_frames_of_its_aoi() -> None:
    class Ignoring(SimulatedCamera):
        def _capture_hw(self, n_frames: int):  # takes the AOI but reads full frames
            roi, self.roi = self.roi, None
            try:
                return super()._capture_hw(n_frames)
            finally:
                self.roi = roi

    _, _, camera = bench("ideal", camera_class=Ignoring)
    camera.set_exposure(1e-3)
    camera.set_roi(*AOI)
    with pytest.raises(DeviceError, match=r"frames of \(64, 64\) px, expected \(29, 25\)"):
        camera.capture(1)
    _, _, plain = bench("ideal", camera_class=NoAoiCamera)
    with pytest.raises(DeviceError, match="AOI not supported"):
        plain.set_roi(*AOI)
    plain.set_roi(None)
    assert plain.roi is None


# -- programming ------------------------------------------------------------------------------------------------
def test_phases_are_rounded_to_the_gray_levels_only_when_quantising() -> None:
    phases = TWO_PI * torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(0))
    drives = OpticalTable().program(phases)
    levels = drives / (TWO_PI / 256)
    torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)
    error = torch.remainder(drives - phases + math.pi, TWO_PI) - math.pi
    assert float(error.abs().max()) <= math.pi / 256 + 1e-5
    assert float(error.std()) == pytest.approx(TWO_PI / 256 / math.sqrt(12), rel=0.02)
    assert torch.equal(OpticalTable().program(torch.full((1, 64, 64), TWO_PI)), torch.zeros(1, 64, 64))
    wrapped = torch.where(phases >= TWO_PI - math.pi / 256, phases - TWO_PI, phases)  # gray 256 is gray 0
    torch.testing.assert_close(OpticalTable(preset="ideal").program(phases), wrapped)


def test_wrap_takes_any_phase_into_the_drive_range_by_whole_turns() -> None:
    levels, half_step = 256, math.pi / 256
    phases = (10 * torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(1)) - 5) * TWO_PI
    edges = torch.tensor([-half_step, 0.0, TWO_PI - half_step, TWO_PI, -3 * TWO_PI - 0.5 * half_step])
    phases = torch.cat([phases.reshape(-1), edges]).requires_grad_()
    drives = wrap_drive(phases, levels)
    assert float(drives.detach().min()) >= -half_step - 1e-6 and float(drives.detach().max()) < TWO_PI - half_step
    turns = (phases - drives) / TWO_PI
    torch.testing.assert_close(turns, turns.round(), atol=1e-4, rtol=0)
    torch.testing.assert_close(drives[-5:].detach(), torch.tensor([-half_step, 0.0, -half_step, 0.0,
                                                                   -0.5 * half_step]), atol=1e-5, rtol=0)
    drives.sum().backward()
    assert torch.equal(phases.grad, torch.ones_like(phases))
    out = torch.empty(len(phases))
    assert wrap_drive(phases.detach(), levels, out=out) is out
    torch.testing.assert_close(out, drives.detach(), atol=0, rtol=0)


def test_a_new_sequence_leaves_the_displayed_pattern_and_earlier_frames_alone() -> None:
    """The SLM's sequence memory is reused by the next sequence; what was shown and captured stays."""
    _, slm, camera = bench("ideal", seed=3, programming={"quantise": True})
    captured = frames(slm, camera, blocks(3, seed=1))
    kept = captured.clone()
    slm.show_sequence(blocks(3, seed=2))
    camera.set_trigger("software")
    torch.testing.assert_close(camera.capture(1).images[0], captured[-1], rtol=1e-5, atol=1e-6)
    assert torch.equal(captured, kept)


# -- per shot ---------------------------------------------------------------------------------------------------
def test_flicker_has_the_configured_amplitude_at_mid_gray_and_none_at_zero() -> None:
    world = OpticalTable(preset="ideal", config={"shot": {"flicker_rad": 0.1}})
    drives = torch.zeros(4000, 2, 2)
    drives[:, 1] = math.pi  # mid gray: u = 0.5
    phase = world.realised_phase(drives)
    assert float(phase[:, 1].std()) == pytest.approx(0.1 / math.sqrt(2), rel=0.04)  # rms of 0.1·sin(uniform)
    assert float(phase[:, 1].abs().sub(math.pi).abs().max()) <= 0.1 + 1e-6
    assert float(phase[:, 0].abs().max()) == 0.0
    assert float(OpticalTable(preset="ideal").realised_phase(drives).std(0).max()) == 0.0


def test_flicker_is_one_ripple_per_frame_shared_by_every_pixel() -> None:
    """The flicker is the liquid crystal's ripple, one random phase per frame (a per-frame bow): on a whole panel
    at mid gray every pixel of a frame holds the same phase, while frame to frame it varies with rms flicker/√2
    (2000 frames: relative standard error √(1/8)/√2000 = 0.8 %, tolerance five). Independent draws per pixel would
    have the same rms at any one pixel, so the tests at one pixel alone cannot tell."""
    world = OpticalTable(preset="ideal", config=small(shot={"flicker_rad": 0.1}))
    phase = world.realised_phase(torch.full((2000, 16, 16), math.pi))
    assert float(phase.std(dim=(1, 2)).max()) < 1e-6
    assert float(phase[:, 0, 0].std()) == pytest.approx(0.1 / math.sqrt(2), rel=5 * math.sqrt(1 / 8 / 2000))


def test_shot_noise_follows_the_photon_transfer_curve() -> None:
    """Temporal variance against mean, pixel by pixel (EMVA 1288 photon transfer): the slope is K."""
    _, slm, camera = bench(seed=8, shot={"flicker_rad": 0.0}, slow={"power_wander": 0.0})
    camera.set_exposure(2e-3)
    slm.show(blocks(1)[0])
    shots = camera.capture(100).images.reshape(100, -1)
    mean, variance = shots.mean(0) - 10, shots.var(0)
    lit = (mean > 30) & (shots.max(0).values < 4000)
    slope = float(torch.linalg.lstsq(torch.stack([mean[lit], torch.ones(int(lit.sum()))], 1),
                                     variance[lit, None]).solution[0])
    assert slope == pytest.approx(K, rel=0.05)  # shot noise: variance = K · signal (read noise: the dark test)
    _, slm, camera = bench("ideal", seed=8)
    camera.set_exposure(2e-3)
    slm.show(blocks(1)[0])
    assert float(camera.capture(3).images.var(0).max()) == 0.0


def test_photon_counts_are_exact_poisson_below_the_threshold_and_normal_above() -> None:
    world, slm, camera = bench("ideal", seed=9, shot={"shot_noise": True})
    patterns = blocks(8)
    counts = frames(slm, camera, patterns) / K
    mean = noiseless(world, patterns, 1e-3) / K
    small, large = mean < 10, mean > 20
    assert small.sum() > 1000 and large.sum() > 1000
    assert bool((counts[small] - counts[small].round()).abs().max() < 1e-3)  # whole electrons
    assert float(((counts[large] - counts[large].round()).abs() > 1e-3).float().mean()) > 0.99
    generator = torch.Generator().manual_seed(0)
    for rate in (0.2, 2.5, 9.0):
        sample = poisson_small(torch.full((200_000,), rate), generator)
        assert float(sample.mean()) == pytest.approx(rate, rel=0.01)
        assert float(sample.var()) == pytest.approx(rate, rel=0.02)
        assert float((sample == 0).float().mean()) == pytest.approx(math.exp(-rate), abs=3e-3)


def test_frames_are_rounded_and_clipped_to_the_adc_only_when_realistic() -> None:
    _, slm, camera = bench(seed=1)
    bright = frames(slm, camera, torch.zeros(1, 64, 64), exposure_s=0.05)
    assert float(bright.max()) == 4095.0 and float(bright.min()) >= 0.0
    assert torch.equal(bright, bright.round())
    _, slm, camera = bench("ideal", seed=1)
    ideal = frames(slm, camera, torch.zeros(1, 64, 64), exposure_s=0.05)
    assert float(ideal.max()) > 4095.0 and not torch.equal(ideal, ideal.round())


def test_the_adc_clips_at_code_zero_below_a_black_level_of_zero() -> None:
    """The ADC's codes are 0..2^bits − 1: with no black level the dark pixels' read noise and DSNU (about 1.06 DN
    rms together) would read below zero about half the time; realistic clips them at code 0 (a pixel reads 0 with
    probability Φ(0.5/1.06) ≈ 0.68), and a camera without clipping passes the negative values. The fraction's
    standard error is about 0.014, set by the 256 pixels' fixed DSNU (Φ's spread over them ≈ 0.22 / √256); the
    tolerance is five of them."""
    config = small(optics={"power_w": 1e-30}, construction={"black_level_dn": 0.0})
    dark = frames(*bench(seed=7, **config)[1:], torch.zeros(100, 16, 16), exposure_s=1e-3)
    assert float(dark.min()) == 0.0
    assert float((dark == 0).float().mean()) == pytest.approx(0.68, abs=0.07)
    unclipped_config = small(optics={"power_w": 1e-30}, construction={"black_level_dn": 0.0}, shot={"clipping": False})
    unclipped = frames(*bench(seed=7, **unclipped_config)[1:], torch.zeros(100, 16, 16), exposure_s=1e-3)
    assert float((unclipped < 0).float().mean()) > 0.3


def test_bright_pixels_saturate_at_the_full_well_when_it_is_below_the_adc_range() -> None:
    """A full well of 4000 e⁻ is K·4000 = 1532 DN, well inside the 12-bit ADC: a saturated pixel reads its dark offset
    plus that, K·(full well + DSNU) + black level, rounded, exactly; a pixel far below the full well is not clipped
    (its mean follows the linear model within 5 standard errors)."""
    full_well = 4000.0
    world, slm, camera = bench(seed=3, **small(camera={"full_well_e": full_well}, shot={"flicker_rad": 0.0},
                                               slow={"power_wander": 0.0}, optics={"waist_m": 50e-6}))
    exposure, n = 1e-3, 40
    camera.set_exposure(exposure)
    slm.show(torch.zeros(16, 16))
    images = camera.capture(n).images
    hidden = world.hidden_parameters()
    intensity = world.propagate(world.realised_phase(world.shown), torch.zeros(1))[0]
    electrons = intensity * float(world.signal_rate()[0]) * exposure * hidden["pixel_gain"] + 3.0 * exposure
    noise_e = (electrons + 2.33**2).sqrt()
    top = (hidden["dark_dn"] + K * full_well).round()
    assert float(top.max()) < 4095 - 100
    saturated, linear = electrons > full_well + 6 * noise_e, electrons < full_well - 6 * noise_e
    assert int(saturated.sum()) >= 10 and int(linear.sum()) >= 10
    assert torch.equal(images[:, saturated], top[saturated].expand(n, -1))
    assert bool((images <= top).all())
    expected = K * electrons[linear] + hidden["dark_dn"][linear]
    standard_error = (K * noise_e[linear] / math.sqrt(n)).hypot(torch.tensor(1 / math.sqrt(12 * n)))
    assert float(((images.mean(0)[linear] - expected) / standard_error).abs().max()) < 5


class CameraReportingItsAdc(SimulatedCamera):
    """A camera whose driver does not know that its full well fills before the ADC's range."""

    def __init__(self, world: OpticalTable, **common):
        super().__init__(world, **common)
        self.saturation_dn = None


def test_calibration_aims_below_a_full_well_that_fills_before_the_adc_range() -> None:
    """With a full well of 4000 e⁻ pixels saturate at 10 + 0.383·4000 = 1542 DN, which the simulated camera reports.
    The exposure search aims at half of that, so the blank SLM's signal rate is measured on unsaturated pixels: it
    equals the noiseless rate within 2 % (it came out 27× too low, at a working exposure of 1 s, when the search aimed
    at half the ADC's 4095 DN). A camera that reports the ADC's range instead is refused, naming the plateau."""
    world, slm, camera = bench(seed=13, camera={"full_well_e": 4000.0}, slow={"power_wander": 0.0})
    assert camera.saturation_dn == 1542 and camera.full_scale_dn == 1542
    assert bench(seed=13)[2].saturation_dn is None  # 10 + 0.383·10 700 DN lies above the ADC's 4095
    system = OpticalSystem({"slm": slm, "camera": camera})
    system.calibrate()
    true_rate = float(world.signal_rate()[0]) * K
    assert system.reference_rate_dn_s == pytest.approx(true_rate, rel=0.02)
    assert camera.exposure_s < 0.01
    world = OpticalTable(seed=13, config={"camera": {"full_well_e": 4000.0}})
    camera = CameraReportingItsAdc(world, name="camera").connect()
    assert camera.full_scale_dn == 4095
    system = OpticalSystem({"slm": SimulatedSLM(world, name="slm").connect(), "camera": camera})
    with pytest.raises(DeviceError, match=r"^system 'optical': the brightest pixel read 154\d DN at .* ms and 154\d "
                                          r"DN at .* ms exposure: the camera saturates below the 4095 DN it reports as "
                                          r"full scale; set the driver's saturation_dn"):
        system.calibrate()


def test_light_that_saturates_the_camera_at_its_shortest_exposures_is_refused_naming_the_cure() -> None:
    """A thousand times the realistic power fills the full well within 10 µs. The search stops at twice the camera's
    shortest exposure (the calibration reads at half of what it finds), and says so, where it used to hand the
    calibration an exposure it could not halve ("exposure_s: 5e-06 s is outside 1e-05..1 s")."""
    _, slm, camera = bench(optics={"power_w": 2.5e-7})
    with pytest.raises(DeviceError, match=r"^system 'optical': the camera saturates at 2e-05 s exposure, twice its "
                                          r"shortest; attenuate the light on it \(a neutral-density filter"):
        OpticalSystem({"slm": slm, "camera": camera}).calibrate()


def test_a_refused_calibration_leaves_no_working_point_to_run_on() -> None:
    """The reference rate was kept before the light was checked: after "sees almost no light" a forward pass skipped
    the calibration and returned outputs scaled by the camera's dark current."""
    _, slm, camera = bench(optics={"power_w": 1e-30})
    system = OpticalSystem({"slm": slm, "camera": camera})
    with pytest.raises(DeviceError, match="sees almost no light"):
        system.calibrate()
    assert system.reference_rate_dn_s is None
    with pytest.raises(DeviceError, match="sees almost no light"):  # calibrates again, and refuses again
        system.forward(*inputs(2))


def test_dim_light_is_calibrated_at_a_long_exposure_not_taken_for_a_plateau() -> None:
    """At a 250th of the realistic power the first captures read little more than the 10 DN black level. Their growth
    with exposure, judged against that dark offset, was taken for a full well filling early ("the camera saturates
    below the 4095 DN it reports"); the search now goes on to an exposure about 250 times the realistic one."""
    exposures = {}
    for power_w in (2.5e-10, 1e-12):
        world, slm, camera = bench(optics={"power_w": power_w}, slow={"power_wander": 0.0})
        system = OpticalSystem({"slm": slm, "camera": camera})
        system.calibrate()
        exposures[power_w] = camera.exposure_s
        assert system.reference_rate_dn_s == pytest.approx(float(world.signal_rate()[0]) * K, rel=0.05)
    assert exposures[1e-12] / exposures[2.5e-10] == pytest.approx(250, rel=0.3)


@pytest.mark.parametrize("config, exposure, rise, full_scale", [
    ({"optics": {"power_w": 1e-30}}, "1", "[1-9]", 4095),  # the laser off: dark current alone, at 1 s
    ({"camera": {"gain_dn_per_e": 1e-4}}, "2e-05", "0", 11),  # a full well spanning one DN above the black level
])
def test_a_camera_that_sees_no_light_is_refused_saying_what_it_read(config, exposure, rise, full_scale) -> None:
    """With the laser off the search ended at the longest exposure and calibrated on dark current (a reference rate
    of 4734 DN/s); a gain at which the full well spans one code asked only "is the laser on?". Both now stop, saying
    what the camera read."""
    _, slm, camera = bench(**config)
    with pytest.raises(DeviceError, match=rf"^system 'optical': the camera sees almost no light: at {exposure} s "
                                          rf"exposure its brightest pixel rises {rise} DN above its dark level, of "
                                          rf"{full_scale} DN full scale; is the laser on and its beam on the camera\? "
                                          r"If it is, raise the laser power or the camera's gain$"):
        OpticalSystem({"slm": slm, "camera": camera}).calibrate()


@pytest.mark.statistical
def test_harsh_preset_has_its_stronger_per_shot_noise_and_power_wander() -> None:
    """The harsh table's per-shot and slow sections are in force, measured: read noise 7 e⁻ and dark current 20 e⁻/s
    (realistic 2.33 e⁻, 3 e⁻/s) in the temporal variance of dark frames, K²·(σ_read² + dark current·exposure) + 1/12,
    and in its ratio to realistic's (5.5 here); flicker 0.3 rad (realistic 0.1) at mid gray, of rms flicker/√2; the
    laser power's rms wander 1.5 % (realistic 0.5 %). Tolerances: five standard errors (variances of 400 frames of
    256 pixels; 4000 flicker draws, √(1/8)/√4000 relative for the rms of a sine of a uniform phase; 1000 wander
    samples every correlation time)."""
    variances = {}
    for preset, read_e, dark_e_per_s, flicker, wander in (("realistic", 2.33, 3.0, 0.1, 0.005),
                                                           ("harsh", 7.0, 20.0, 0.3, 0.015)):
        world, slm, camera = bench(preset, seed=2, **small(optics={"power_w": 1e-30}))
        variance, standard_error = temporal_variance(frames(slm, camera, torch.zeros(400, 16, 16), exposure_s=0.5))
        expected = K**2 * (read_e**2 + dark_e_per_s * 0.5) + 1 / 12
        assert variance == pytest.approx(expected, abs=5 * standard_error), preset
        variances[preset] = (variance, standard_error, expected)
        mid_gray = world.realised_phase(torch.full((4000, 2, 2), math.pi))[:, 0, 0]
        assert float(mid_gray.std()) == pytest.approx(flicker / math.sqrt(2), rel=5 * math.sqrt(1 / 8 / 4000)), preset
        tau = world.config.slow.power_tau_s
        power = world.signal_rate(torch.arange(1, 1001) * tau) / (world.config.camera.quantum_efficiency
                                                                  * world.photon_rate) - 1
        assert float(power.std()) == pytest.approx(wander, rel=0.12), preset
    (harsh, harsh_error, harsh_expected), (realistic, realistic_error, realistic_expected) = (
        variances["harsh"], variances["realistic"])
    ratio_error = harsh / realistic * math.hypot(harsh_error / harsh, realistic_error / realistic)
    assert harsh / realistic == pytest.approx(harsh_expected / realistic_expected, abs=5 * ratio_error)
    assert harsh_expected / realistic_expected > 5


# -- slow state -------------------------------------------------------------------------------------------------
def test_laser_power_wanders_as_configured_and_is_steady_in_ideal() -> None:
    world = OpticalTable(seed=2)
    times = torch.arange(1, 4001) * 30.0  # every half correlation time
    power = world.signal_rate(times) / (world.config.camera.quantum_efficiency * world.photon_rate) - 1
    assert float(power.std()) == pytest.approx(0.005, rel=0.1)
    lag = float(torch.corrcoef(torch.stack([power[:-1], power[1:]]))[0, 1])
    assert lag == pytest.approx(math.exp(-0.5), abs=0.05)
    # The frames carry the wander as the factor 1 + w at their time, exactly on a bench with nothing else: a
    # realistic one's blank-SLM spot saturates the camera: its frames' totals varied by 0.33 % for a wander of 0.51 %.
    world, slm, camera = bench("ideal", seed=2, slow={"power_wander": 0.005})
    totals, wander = [], []
    for _ in range(40):
        camera.clock.sleep(120.0)
        totals.append(float(frames(slm, camera, torch.zeros(1, 64, 64), exposure_s=2e-4).double().sum()))
        wander.append(float(world.power.value))  # the wander at the frame, where capturing it left it
    ratio = torch.tensor(totals, dtype=torch.float64) / (1 + torch.tensor(wander, dtype=torch.float64))
    torch.testing.assert_close(ratio, ratio.mean().expand(40), rtol=1e-5, atol=0)
    assert 0.0025 < float(torch.tensor(wander).std()) < 0.01
    ideal = OpticalTable(preset="ideal").signal_rate(times)
    assert bool((ideal == ideal[0]).all())


@pytest.mark.parametrize("world_class", [OpticalTable, MultimodeFiber])
def test_laser_power_wander_has_the_configured_rms_and_correlation_time_on_either_bench(world_class) -> None:
    """The realistic laser wanders by 0.5 % rms with a correlation time of 60 s, on the fiber bench as on the table.
    N = 8000 independent pairs of readings one correlation time apart (each pair 10 correlation times after the
    last): their correlation is e^(−1), standard error (1 − ρ²)/√N = 0.0097, so the tolerance of five of them tells a
    correlation time a fifth off (ρ = 0.435 or 0.287); their rms has a relative standard error of √((1 + ρ²)/(4N)) =
    0.6 % (the readings of a pair are correlated), tolerance five of them. ``ideal`` holds the power steady."""
    count, rho = 8000, math.exp(-1)
    world = world_class(seed=5)
    tau = world.config.slow.power_tau_s
    assert (world.config.slow.power_wander, tau) == (0.005, 60.0)
    starts = (torch.arange(count, dtype=torch.float64) * 11 + 1)[:, None]
    times = (starts + torch.tensor([0.0, 1.0], dtype=torch.float64)) * tau
    nominal = world.config.camera.quantum_efficiency * world.photon_rate
    pairs = (world.signal_rate(times.reshape(-1)).double() / nominal - 1).reshape(count, 2)
    assert float(pairs.std()) == pytest.approx(0.005, rel=5 * math.sqrt((1 + rho**2) / (4 * count)))
    correlation = float(torch.corrcoef(pairs.T)[0, 1])
    assert correlation == pytest.approx(rho, abs=5 * (1 - rho**2) / math.sqrt(count))
    ideal = world_class(preset="ideal", seed=5).signal_rate(times.reshape(-1))
    assert bool((ideal == ideal[0]).all())


def test_ornstein_uhlenbeck_path_matches_its_exact_law() -> None:
    from simulators.world import OrnsteinUhlenbeck

    process = OrnsteinUhlenbeck(2.0, 10.0, (500,), torch.Generator().manual_seed(0))
    start = process.value.clone()
    path = ou_path(process, torch.tensor([5.0, 2000.0]))
    decay = math.exp(-0.5)
    residual = (path[0] - decay * start) / (2.0 * math.sqrt(1 - decay**2))
    assert float(residual.std()) == pytest.approx(1.0, rel=0.1) and abs(float(residual.mean())) < 0.15
    assert float(path[1].std()) == pytest.approx(2.0, rel=0.1)
    assert abs(float(torch.corrcoef(torch.stack([path[1], start]))[0, 1])) < 0.15
    assert process.time_s == 2000.0 and torch.equal(process.value, path[1])


def test_a_frame_long_after_the_last_one_is_finite_and_its_wander_a_fresh_draw() -> None:
    """More than ~700 correlation times of idle virtual time (12 h at the realistic 60 s, 4 h at harsh's 20 s) make
    the wander's decay e^(−Δt/τ) and its inverse leave float64's range: the frames must stay finite, and the
    wander be a stationary draw that has forgotten its start; later steps keep their correlation."""
    from simulators.world import OrnsteinUhlenbeck

    for preset in ("realistic", "harsh"):
        world, slm, camera = bench(preset, seed=1, **small())
        world.clock.sleep(1e6)
        images = frames(slm, camera, torch.zeros(2, 16, 16))
        assert bool(torch.isfinite(images).all()) and float(images.max()) > 100, preset
    process = OrnsteinUhlenbeck(2.0, 10.0, (4000,), torch.Generator().manual_seed(0))
    start = process.value.clone()
    path = ou_path(process, torch.tensor([1e5, 2e5, 2e5 + 5.0]))
    assert bool(torch.isfinite(path).all())
    assert float(path[0].std()) == pytest.approx(2.0, rel=0.05) and float(path[1].std()) == pytest.approx(2.0, rel=0.05)
    assert abs(float(torch.corrcoef(torch.stack([path[0], start]))[0, 1])) < 0.07
    assert abs(float(torch.corrcoef(torch.stack([path[1], path[0]]))[0, 1])) < 0.07
    assert float(torch.corrcoef(torch.stack([path[2], path[1]]))[0, 1]) == pytest.approx(math.exp(-0.5), abs=0.05)
    assert process.time_s == 2e5 + 5.0 and torch.equal(process.value, path[2])


def test_ornstein_uhlenbeck_peek_reads_the_next_value_without_advancing() -> None:
    from simulators.world import OrnsteinUhlenbeck

    process = OrnsteinUhlenbeck(2.0, 10.0, (50,), torch.Generator().manual_seed(0))
    start, state = process.value.clone(), process.generator.get_state()
    peeked = process.peek(5.0)
    assert not torch.equal(peeked, start)
    assert process.time_s == 0.0 and torch.equal(process.value, start)
    assert torch.equal(process.generator.get_state(), state)
    assert torch.equal(process.at(5.0), peeked)


# -- device time ------------------------------------------------------------------------------------------------
def test_device_time_follows_refresh_settle_and_exposure() -> None:
    world, slm, camera = bench()
    clock = world.clock
    start = clock.now()
    slm.show(torch.zeros(64, 64))
    assert clock.now() - start == pytest.approx(1 / 60 + 0.01)  # the next refresh, then the settle time
    camera.set_exposure(1e-3)
    start = clock.now()
    camera.capture(10)  # software trigger: the camera's frame period (80 fps) bounds short exposures
    assert clock.now() - start == pytest.approx(10 / 80)
    camera.set_exposure(0.05)
    start = clock.now()
    camera.capture(3)
    assert clock.now() - start == pytest.approx(3 * 0.05)
    camera.set_trigger("external")
    for exposure, refreshes in ((1e-3, 1), (0.01, 2)):  # settle + exposure = 11 ms, 20 ms: 1, 2 refreshes
        camera.set_exposure(exposure)
        slm.show_sequence(torch.zeros(12, 64, 64))
        start = clock.now()
        camera.capture(12)
        assert clock.now() - start == pytest.approx(12 * refreshes / 60)


# -- errors -----------------------------------------------------------------------------------------------------
def test_triggered_capture_needs_a_loaded_sequence_long_enough() -> None:
    """Said of the camera by its name, with what to do: it read 'simulated camera: asked for 3 triggered frames but
    the SLM sequence has 2 pattern(s) left', which of a lab's cameras left unsaid (a fiber bench has one too)."""
    _, slm, camera = bench()
    camera.set_exposure(1e-3)
    camera.set_trigger("external")
    with pytest.raises(DeviceError, match=r"^camera: external trigger but no SLM sequence is loaded; the camera would "
                                          r"wait for triggers that never come: show_sequence\(\) on the SLM first$"):
        camera.capture(1)
    slm.show_sequence(torch.zeros(2, 64, 64))
    with pytest.raises(DeviceError, match=r"^camera: asked for 3 triggered frames but the SLM sequence has 2 patterns "
                                          r"left; capture at most 2, or show a longer sequence$"):
        camera.capture(3)
    camera.capture(1)
    camera.capture(1)
    with pytest.raises(DeviceError, match=r"^camera: asked for 1 triggered frame but the SLM sequence has 0 patterns "
                                          r"left; show a new sequence first$"):  # played out
        camera.capture(1)


def test_a_played_out_sequence_is_not_kept_in_a_checkpoint(tmp_path) -> None:
    """The SLM's sequence stayed in the world after its last pattern was captured, and with it in every checkpoint
    (4.2 MB of the optical world's 4.3 MB at a batch of 256, written each epoch)."""
    world, slm, camera = bench()
    camera.set_exposure(1e-3)
    camera.set_trigger("external")
    slm.show_sequence(torch.rand(64, 64, 64) * 6)
    camera.capture(40)
    assert capture(world)["sequence"].shape == (64, 64, 64)  # still playing: kept
    camera.capture(24)
    torch.save(capture(world), tmp_path / "world.pt")
    assert world.sequence.shape == (0, 64, 64) and (tmp_path / "world.pt").stat().st_size < 200_000


@pytest.mark.parametrize(("camera_shape", "n_out", "roi_px", "radius", "off"), [
    ((64, 64), 1, 4, 31.0, "left"),  # one region, left of the centre
    ((64, 64), 2, 5, 30.0, "bottom"),  # an odd roi_px reaches further down than up
    ((63, 63), 2, 4, 30.0, "top"),  # an odd camera's centre is nearer its top
    ((64, 48), 4, 5, 31.0, "right"),  # a narrow camera: the regions leave it at the side
])
def test_regions_of_interest_off_any_one_side_of_the_camera_are_refused(camera_shape, n_out: int, roi_px: int,
                                                                       radius: float, off: str) -> None:
    """Each side of the camera is checked on its own: a ring off one side alone (``off``) is refused."""
    _, slm, camera = bench(camera={"shape": list(camera_shape)})
    with pytest.raises(ConfigError, match=rf"roi_radius_px {radius:g} px puts regions of interest off the "
                                          rf"{camera_shape[0]}×{camera_shape[1]} camera"):
        OpticalSystem({"slm": slm, "camera": camera}, n_out=n_out, roi_px=roi_px, roi_radius_px=radius)


@pytest.mark.parametrize(("camera_shape", "radius", "window"), [
    ((64, 64), 32.0, (0, 0, 64, 64)),  # the regions touch all four edges: on the camera still
    ((48, 64), 16.0, (7, 15, 34, 34)),  # a camera wider than tall: its rows and columns are not swapped
])
def test_regions_of_interest_that_reach_the_cameras_edges_are_taken(camera_shape, radius: float, window) -> None:
    _, slm, camera = bench(camera={"shape": list(camera_shape)})
    system = OpticalSystem({"slm": slm, "camera": camera}, n_out=8, roi_px=4, roi_radius_px=radius)
    assert system.window == window


@pytest.mark.parametrize(("settings", "message"), [
    ({"n_in": 64}, "n_params: n_in 64 + n_params 48 blocks do not fit: the panel holds 64 blocks of 8 px; give "
                   "block: 4 (which holds 256), or fewer n_in + n_params"),
    ({"planes": 2}, "n_params: n_params 48 do not fit: panels 2 to 2 hold 32 blocks of 8 px; give block: 4 (which "
                    "holds 128), or fewer n_params"),
    ({"n_in": 129, "block": 4, "planes": 2}, "n_in: n_in 129 inputs do not fit: panel 1 holds 128 blocks of 4 px; "
                                             "give block: 2 (which holds 512), or fewer n_in"),
    ({"n_params": 5000}, "n_params: n_in 16 + n_params 5000 blocks do not fit: the panel holds 64 blocks of 8 px; "
                         "give fewer n_in + n_params"),
])
def test_sizes_that_do_not_fit_the_default_block_say_which_block_holds_them(settings: dict, message: str) -> None:
    """A lab that sets one size keeps the others' defaults: n_in 64 beside the default block 8, or two planes beside
    the default n_params 48, was refused saying only what the panel holds, not what to give."""
    _, slm, camera = bench()
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        OpticalSystem({"slm": slm, "camera": camera}, **settings)


def test_bad_configurations_are_refused_with_the_field() -> None:
    with pytest.raises(ConfigError, match=r"optics\.planes 3"):
        OpticalTable(config={"optics": {"planes": 3}})
    with pytest.raises(ConfigError, match=r"config\.shot\.flicker_rad"):
        OpticalTable(config={"shot": {"flicker_rad": -1}})
    with pytest.raises(ConfigError, match="unknown preset"):
        OpticalTable(preset="perfect")
    _, slm, camera = bench()
    with pytest.raises(ConfigError, match="n_in 70"):
        OpticalSystem({"slm": slm, "camera": camera}, n_in=70)
    with pytest.raises(ConfigError, match="overlap"):
        OpticalSystem({"slm": slm, "camera": camera}, n_out=40)
    with pytest.raises(ConfigError, match="x_phase_rad 7"):
        OpticalSystem({"slm": slm, "camera": camera}, x_phase_rad=7.0)
    with pytest.raises(ConfigError, match="needs instrument"):
        OpticalSystem({"slm": slm})
    for settings, field, message in (
            ({"n_params": 1_000_000}, "n_params", "n_in 16 + n_params 1000000 blocks do not fit: the panel holds 64"),
            ({"roi_px": 0}, "roi_px", "roi_px must be a whole number of pixels, at least 1; got 0"),
            ({"roi_radius_px": math.nan}, "roi_radius_px", "roi_radius_px must be a finite distance ≥ 0 px"),
            # was said of roi_px, with corners of 30 digits
            ({"roi_radius_px": 1e30}, "roi_radius_px", "roi_radius_px 1e+30 px puts regions of interest off the "
                                                       "64×64 camera; give a smaller radius (or a smaller roi_px)"),
            ({"roi_radius_px": 31.0}, "roi_radius_px", "roi_radius_px 31 px puts regions of interest off"),
            ({"reference_repeats": 0}, "reference_repeats", "reference_repeats must be a positive integer up to "
                                                             "max_batch (1024), got 0"),
            ({"reference_repeats": 10**12}, "reference_repeats", "got 1000000000000"),  # out of memory at calibrate
            ({"waist_px": 0.0}, "waist_px", "waist_px must be a positive number of SLM pixels or null"),  # NaN model
            ({"waist_px": math.nan}, "waist_px", "waist_px must be a positive number of SLM pixels or null"),
            ({"waist_px": 1e-300}, "waist_px", "waist_px 1e-300 px gives no finite beam on the SLM"),  # a NaN twin
            ({"waist_px": 1e300}, "waist_px", "waist_px 1e+300 px gives no finite beam"),  # an OverflowError mid-run
            ({"max_batch": 0}, "max_batch", "max_batch must be a positive integer, or null for the longest "
                                            "sequence (1024); got 0"),  # was taken as null
            ({"max_batch": True}, "max_batch", "got True"),  # was a TypeError at the first call
            # YAML's true and text were TypeErrors from torch or Python that named no setting
            ({"block": True}, "block", "block must be a positive integer, got True"),
            ({"block": "8"}, "block", "block must be a positive integer, got '8'"),
            ({"planes": 1.0}, "planes", "planes must be a positive integer, got 1.0"),
            ({"fft_size": "256"}, "fft_size", "fft_size must be a positive integer, got '256'"),
            ({"x_phase_rad": "3"}, "x_phase_rad", "x_phase_rad '3' rad must be a number in (0, 2π]"),
            ({"x_phase_rad": True}, "x_phase_rad", "x_phase_rad True rad must be a number in (0, 2π]"),
            ({"roi_radius_px": True}, "roi_radius_px", "roi_radius_px must be a finite distance ≥ 0 px; got True"),
            ({"wavelength_m": "532e-9"}, "wavelength_m", "wavelength_m must be a number in 1e-07..2e-05 m, got "
                                                         "'532e-9'; check its unit"),
            ({"wavelength_m": 532}, "wavelength_m", "wavelength_m must be a number in 1e-07..2e-05 m, got 532"),
            ({"slm_pitch_m": 8}, "slm_pitch_m", "slm_pitch_m must be a number in 1e-07..0.0001 m, got 8"),
            ({"plane_distance_m": 0}, "plane_distance_m", "plane_distance_m must be a number in 1e-06..1 m, got 0"),
            # laid out one by one before the overlap was found: 10^12 outputs hung
            ({"n_out": 10**12}, "n_out", "n_out 1000000000000 regions of interest of 5 px do not fit on the")):
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            OpticalSystem({"slm": slm, "camera": camera}, **settings)
        assert caught.value.field == field
    assert OpticalSystem({"slm": slm, "camera": camera}, max_batch=100).max_batch == 100


def test_an_slm_phase_limit_narrower_than_the_phases_of_theta_is_refused_at_build() -> None:
    """θ are phases over 0..2π: an SLM limited to 0..π failed at the first device call, mid-run."""
    world, _, camera = bench()
    slm = SimulatedSLM(world, name="slm", limits={"phase_rad": {"min": 0, "max": math.pi}}).connect()
    with pytest.raises(ConfigError, match=r"the SLM's phase limit 0\.\.3\.14159 rad must hold 0\.\.2π rad") as caught:
        OpticalSystem({"slm": slm, "camera": camera})
    assert caught.value.field == "instruments.slm"


# -- the optical system -----------------------------------------------------------------------------------------
def inputs(count: int, n_in: int = 16, n_params: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, n_in, generator=generator), TWO_PI * torch.rand(n_params, generator=generator)


@pytest.mark.parametrize("planes", [1, 2])
def test_ideal_world_equals_the_physics_model(planes: int) -> None:
    _, slm, camera = bench("ideal", seed=12, optics={"planes": planes})
    system = OpticalSystem({"slm": slm, "camera": camera}, planes=planes, n_params=48 if planes == 1 else 32)
    x, theta = inputs(32, n_params=system.n_params)
    y = system.forward(x, theta)
    with torch.no_grad():
        model = system.physics_model()(x, theta)
    torch.testing.assert_close(y, model, rtol=1e-4, atol=1e-5 * float(y.abs().max()))
    assert 0.05 < float(y.mean()) < 5  # order-1 outputs


def test_the_system_reads_the_bounding_box_of_its_regions_with_or_without_camera_aoi() -> None:
    outputs = []
    for camera_class in (SimulatedCamera, NoAoiCamera):
        _, slm, camera = bench("ideal", seed=12, camera_class=camera_class, construction=CONSTRUCTION)
        system = OpticalSystem({"slm": slm, "camera": camera})
        x, theta = inputs(16)
        outputs.append(system.forward(x, theta))
        assert system.camera_aoi is (camera_class is SimulatedCamera)
        assert camera.roi == (system.window if system.camera_aoi else None)
        with torch.no_grad():
            model = system.physics_model()
            windowed = model(x, theta)
            model.window = None  # the same model over the whole camera
            model.regions = region_matrix((64, 64), ring_corners((64, 64), 10, 5, 12.0), 5)
            torch.testing.assert_close(model(x, theta), windowed, rtol=1e-5, atol=1e-6)
    regions = region_matrix((64, 64), ring_corners((64, 64), 10, 5, 12.0), 5).reshape(64, 64, 10).sum(-1) > 0
    top, left, height, width = system.window
    assert int(regions.sum()) == int(crop(regions, system.window).sum()) == int((system.regions > 0).sum())
    for edge in (regions[top], regions[top + height - 1], regions[:, left], regions[:, left + width - 1]):
        assert bool(edge.any())  # the window is the tightest box
    assert height * width < 0.25 * 64 * 64
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-7)


def test_oracle_matches_the_noise_averaged_bench_far_better_than_the_nominal_model() -> None:
    _, slm, camera = bench(seed=13, slow={"power_wander": 0.0})
    system = OpticalSystem({"slm": slm, "camera": camera})
    system.calibrate()
    x, theta = inputs(32)
    measured = torch.stack([system.forward(x, theta) for _ in range(12)]).mean(0)
    with torch.no_grad():
        nominal, oracle = system.physics_model()(x, theta), system.oracle_model()(x, theta)
    error_nominal = float((nominal - measured).norm() / measured.norm())
    error_oracle = float((oracle - measured).norm() / measured.norm())
    assert error_oracle < 0.2 * error_nominal and error_oracle < 0.015


def test_oracle_equals_a_noiseless_bench_down_to_its_per_pixel_gain() -> None:
    """With every construction non-ideality (PRNU and DSNU included) and no per-shot or slow noise, the device is
    its physics: the oracle's outputs are the device's to float rounding (10⁻⁵ relative). PRNU of 0.6 % moves
    each output, a mean of 25 pixels, by about 0.1 %: the oracle with a uniform gain misses by far more than that
    tolerance, so every term of the oracle's calibration, the per-pixel gain included, is checked. A dark current
    (without its shot noise) of 1000 e⁻/s, 2 e⁻ over the 2 ms working exposure, checks the offset's dark term."""
    world, slm, camera = bench("ideal", seed=13, construction=CONSTRUCTION, shot={"dark_current_e_per_s": 1000.0})
    system = OpticalSystem({"slm": slm, "camera": camera})
    system.calibrate()
    x, theta = inputs(32)
    measured = system.forward(x, theta)
    with torch.no_grad():
        oracle = system.oracle_model()(x, theta)
        hidden = system.hidden_calibration(world)
        uniform = system.physics_model().load_hidden({**hidden, "pixel_gain": torch.ones(64, 64)})(x, theta)
    assert float((oracle - measured).norm() / measured.norm()) < 1e-5
    assert float((uniform - measured).norm() / measured.norm()) > 2e-4


def test_system_device_time_is_one_sequence_at_the_refresh_rate() -> None:
    """A call's device time is its sequences at the SLM's refresh rate; the calibration's captures count too (they
    were left out of ``device_time_s``, and of the run's report), though they are no forward call."""
    world, slm, camera = bench(seed=14)
    system = OpticalSystem({"slm": slm, "camera": camera})
    system.calibrate()
    assert system.device_time_s == pytest.approx(world.clock.now()) and world.clock.now() > 1
    assert system.calls == 0
    period = math.ceil((0.01 + camera.exposure_s) * 60) / 60
    before, start = system.device_time_s, world.clock.now()
    system.forward(*inputs(20))
    assert system.device_time_s - before == pytest.approx(20 * period)
    assert world.clock.now() - start == pytest.approx(20 * period)
    assert system.max_batch == 1024


def test_inputs_outside_bounds_are_refused() -> None:
    _, slm, camera = bench()
    system = OpticalSystem({"slm": slm, "camera": camera})
    with pytest.raises(LimitError, match="theta"):
        system.forward(torch.zeros(1, 16), torch.full((48,), 7.0))


def test_physics_model_is_differentiable_in_its_calibration() -> None:
    _, slm, camera = bench("ideal")
    model = OpticalSystem({"slm": slm, "camera": camera}).physics_model()
    x, theta = inputs(4)
    theta.requires_grad_(True)
    model(x, theta).square().sum().backward()
    for name in ("lut_gain", "lut_bow_rad", "crosstalk_var_px2", "zero_order", "shift_px", "scale", "offset"):
        assert getattr(model, name).grad is not None and torch.isfinite(getattr(model, name).grad).all(), name
    assert theta.grad is not None and float(theta.grad.abs().sum()) > 0


def test_lab_file_builds_the_bench_and_runs_the_system(tmp_path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        worlds:
          table: {kind: optical_table, preset: realistic, seed: 3}
        instruments:
          slm: {driver: simulated_slm, world: table}
          camera: {driver: simulated_camera, world: table, limits: {exposure_s: {max: 0.1}}}
        systems:
          optical: {kind: optical, instruments: {slm: slm, camera: camera}, settings: {n_in: 8, n_params: 24}}
    """))
    lab = Lab.load(path)
    with lab.open():
        system = lab.systems["optical"]
        y = system.forward(*inputs(5, n_in=8, n_params=24))
        assert y.shape == (5, 10) and torch.isfinite(y).all()
        assert lab["camera"].limits["exposure_s"].max == 0.1
    assert not lab["slm"].connected and not lab["camera"].connected


def test_the_slm_layout_numbers_blocks_row_major_x_first_then_theta_panel_after_panel() -> None:
    # one plane, 4 × 4 blocks of 4 px: blocks 0..2 show x, 3..4 θ, the rest 0
    source = block_source((16, 16), 4, 1, n_in=3, n_params=2)
    expected = torch.tensor([[1, 2, 3, 4], [5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(source, expected.repeat_interleave(4, 0).repeat_interleave(4, 1))
    # two planes of 8 × 8 px, 2 × 2 blocks each: x in panel 1 (rest 0), θ fills panel 2
    source = block_source((8, 16), 4, 2, n_in=3, n_params=4)
    expected = torch.tensor([[1, 2, 4, 5], [3, 0, 6, 7]])
    assert torch.equal(source, expected.repeat_interleave(4, 0).repeat_interleave(4, 1))


def test_encode_shows_x_times_x_phase_rad_theta_as_is_and_zero_elsewhere() -> None:
    source = block_source((8, 8), 4, 1, n_in=2, n_params=1)
    x, theta = torch.tensor([[0.25, 1.0], [0.5, 0.0]]), torch.tensor([4.0])
    phases = encode(x, theta, source, x_phase_rad=2.0)
    expected = torch.tensor([[[0.5, 2.0], [4.0, 0.0]], [[1.0, 0.0], [4.0, 0.0]]])
    assert torch.equal(phases, expected.repeat_interleave(4, 1).repeat_interleave(4, 2))


def test_a_region_is_the_mean_of_its_square_of_pixels() -> None:
    frame = torch.arange(100, dtype=torch.float32).reshape(10, 10)
    matrix = region_matrix((10, 10), [(2, 3), (6, 0)], 3)
    torch.testing.assert_close(frame.reshape(1, -1) @ matrix,
                               torch.stack([frame[2:5, 3:6].mean(), frame[6:9, 0:3].mean()])[None])


@pytest.mark.parametrize(("n_out", "size", "radius"), [(10, 5, 12.0), (4, 3, 7.5), (3, 4, 20.0)])
def test_regions_are_centred_on_the_ring_at_half_steps_of_angle(n_out: int, size: int, radius: float) -> None:
    """Region k's centre pixel (top-left + size // 2) is the pixel nearest the ring point at angle 2π(k + ½)/n_out
    around the camera's centre pixel (rows // 2, cols // 2)."""
    corners = ring_corners((64, 48), n_out, size, radius)
    for k, (top, left) in enumerate(corners):
        angle = TWO_PI * (k + 0.5) / n_out
        assert (top + size // 2, left + size // 2) == (round(32 + radius * math.sin(angle)),
                                                        round(24 + radius * math.cos(angle)))


def test_max_batch_is_capped_by_the_slm_sequence_and_the_camera_frames() -> None:
    _, slm, camera = bench("ideal")
    longest = min(slm.max_sequence, camera.max_frames)
    assert OpticalSystem({"slm": slm, "camera": camera}).max_batch == longest
    assert OpticalSystem({"slm": slm, "camera": camera}, max_batch=10 * longest).max_batch == longest
    assert OpticalSystem({"slm": slm, "camera": camera}, max_batch=7, reference_repeats=4).max_batch == 7


@pytest.mark.parametrize("max_batch", [1, 15])
def test_a_max_batch_below_the_default_reference_repeats_calibrates_and_runs(max_batch: int) -> None:
    """A bench that shows one pattern at a time (max_batch 1) was refused for reference_repeats, a setting the lab did
    not write (its default 16 was above max_batch); the reference frames are captured in several sequences."""
    for system_class, world_class in ((OpticalSystem, OpticalTable), (FiberSystem, MultimodeFiber)):
        world = world_class(preset="ideal", seed=0)
        slm, camera = SimulatedSLM(world, name="slm").connect(), SimulatedCamera(world, name="camera").connect()
        system = system_class({"slm": slm, "camera": camera}, n_in=1, n_params=1, n_out=1, max_batch=max_batch)
        assert system.max_batch == max_batch and system.reference_repeats == 16
        system.calibrate()
        y = system.forward(torch.full((max_batch + 1, 1), 0.5), torch.ones(1))
        assert y.shape == (max_batch + 1, 1) and bool(y.isfinite().all())
    with pytest.raises(ConfigError, match=re.escape("reference_repeats must be a positive integer up to 16, got 17")):
        OpticalSystem({"slm": slm, "camera": camera}, max_batch=1, reference_repeats=17)


def test_a_capture_longer_than_max_batch_is_every_frame_in_order() -> None:
    _, slm, camera = bench("ideal", seed=12)
    patterns = TWO_PI * torch.rand(12, 64, 64, generator=torch.Generator().manual_seed(5))
    whole = OpticalSystem({"slm": slm, "camera": camera}).capture(patterns, 1e-3)
    split = OpticalSystem({"slm": slm, "camera": camera}, max_batch=5, reference_repeats=4).capture(patterns, 1e-3)
    assert split.shape == whole.shape and whole.shape[0] == 12
    torch.testing.assert_close(split, whole)


def test_the_nominal_model_takes_its_offsets_from_the_dark_level_calibrate_measured() -> None:
    """`calibrate` measures the dark level; the nominal model's offsets are it (zero before), within the dark
    level's rounding, so a twin starts from the bench's black level rather than from none."""
    world, slm, camera = bench("ideal", seed=12, construction={"black_level_dn": 10.0})
    system = OpticalSystem({"slm": slm, "camera": camera})
    assert torch.equal(system.physics_model().offset.detach(), torch.zeros(10))
    system.calibrate()
    expected = system.hidden_calibration(world)["offset"]
    assert float(expected.min()) > 0
    torch.testing.assert_close(system.physics_model().offset.detach(), expected, rtol=0.05, atol=0)


def test_systems_sharing_a_camera_each_capture_at_the_working_exposure_it_calibrated() -> None:
    """Two systems on one SLM and camera (two layers of one bench) find different working exposures; each captures
    at its own, and its outputs and nominal offsets stay what they were: the first read at the exposure the other
    calibrated last (0.06 off, on outputs of order 1, with a black level)."""
    _, slm, camera = bench("ideal", seed=12, construction=CONSTRUCTION)
    first = OpticalSystem({"slm": slm, "camera": camera})
    second = OpticalSystem({"slm": slm, "camera": camera}, n_in=4, n_params=12, block=16)
    x, theta = inputs(16)
    first.calibrate()
    expected, offset = first.forward(x, theta), first.physics_model().offset.detach()
    second.calibrate()
    assert camera.exposure_s == second.working_exposure_s < 0.5 * first.working_exposure_s
    assert torch.equal(first.forward(x, theta), expected) and camera.exposure_s == first.working_exposure_s
    second.forward(*inputs(2, n_in=4, n_params=12))
    assert torch.equal(first.physics_model().offset.detach(), offset)


def test_a_system_restored_without_a_working_exposure_on_a_camera_connected_anew_says_what_to_do() -> None:
    """A checkpoint of an earlier hil kept no working exposure, and a bench camera connected anew has none set: the
    nominal model divided by None (a TypeError traceback), and a device call failed with the camera's 'call
    set_exposure() before capture()', which a run cannot do."""
    _, slm, camera = bench("ideal", seed=12, construction=CONSTRUCTION)
    system = OpticalSystem({"slm": slm, "camera": camera})
    system.calibrate()
    system.working_exposure_s = camera.exposure_s = None
    message = (r"^system 'optical': no working exposure: it was restored from a checkpoint of an earlier hil, which "
               r"kept none, and the camera, connected anew, has none set; resume the run with the hil that started "
               r"it, or start a new run from the protocol$")
    with pytest.raises(DeviceError, match=message):
        system.physics_model()
    with pytest.raises(DeviceError, match=message):
        system.forward(*inputs(2))


def test_angular_spectrum_is_the_documented_transfer_function_of_a_positive_distance() -> None:
    """H = exp(i·2π·d·(√(1/λ² − f²) − 1/λ)): a positive distance delays every tilted component behind the axial
    one (paraxially −π·λ·d·f²), and components beyond 1/λ are dropped."""
    pitch, wavelength, distance = 8e-6, 532e-9, 5e-3
    transfer = angular_spectrum((16, 16), pitch, wavelength, distance).to(torch.complex128)
    size = transfer.shape[0]
    for index in (1, 3, size // 4):
        frequency = index / (size * pitch)
        phase = TWO_PI * distance * (math.sqrt(1 / wavelength**2 - frequency**2) - 1 / wavelength)
        expected = complex(math.cos(phase), math.sin(phase))
        assert abs(complex(transfer[0, index]) - expected) < 1e-5 and abs(complex(transfer[index, 0]) - expected) < 1e-5
        assert phase < 0 and phase == pytest.approx(-math.pi * wavelength * distance * frequency**2, rel=1e-2)
    assert complex(transfer[0, 0]) == pytest.approx(1.0)
    coarse = angular_spectrum((4, 4), 0.2e-6, wavelength, 1e-6)  # its highest frequencies exceed 1/λ
    assert float(coarse.abs().min()) == 0.0 and float(coarse.abs().max()) == 1.0


def test_frames_are_lost_on_the_link_at_the_configured_rate_and_in_no_preset() -> None:
    """``shot.frame_drop_probability``: each frame is lost with that chance (the capture then comes short and says
    so); no preset loses any. The rate is counted over 20 000 frames of the camera's captures of 1000 (a tiny bench,
    its 8 × 8 SLM on an 8-sample lens): the lost fraction's standard error √(0.2·0.8/20 000) = 0.0028 makes the
    tolerance of five of them 7 % of the rate (2000 frames alone left 18 %, which a rate of 0.16 passed)."""
    tiny = {"slm": {"shape": (8, 8)}, "camera": {"shape": (8, 8)}, "optics": {"fft_size": 8}}
    _, _, camera = bench("ideal", **tiny, shot={"frame_drop_probability": 0.2})
    camera.set_exposure(1e-3)
    lost = 0
    for _ in range(200):
        try:
            camera.capture(1)
        except FramesDropped as error:
            assert str(error) == "camera: asked for 1 frame(s), got 0"
            lost += 1
    assert 0 < lost < 200
    frames_seen = 20 * 1000
    arrived = sum(len(camera._capture_hw(1000)[1]) for _ in range(20))
    assert abs(1 - arrived / frames_seen - 0.2) < 5 * math.sqrt(0.2 * 0.8 / frames_seen)
    for preset in ("ideal", "realistic", "harsh"):
        assert OpticalTable(preset=preset).config.shot.frame_drop_probability == 0.0


def test_a_sequence_whose_frames_were_dropped_is_shown_again_with_a_warning_and_the_same_outputs() -> None:
    """A camera on a busy link loses a frame now and then; the frames after the gap would belong to other inputs, so
    the capture was refused and the run stopped ("the batch is discarded, retry it"). The system now shows the
    sequence again (a warning each time, the device time counted), so outputs are those of a link that loses none."""
    x, theta = inputs(256)
    outputs, device_s = [], []
    for drop in (0.0, 0.002):
        _, slm, camera = bench("ideal", shot={"frame_drop_probability": drop})
        system = OpticalSystem({"slm": slm, "camera": camera})
        system.calibrate()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outputs.append(system.forward(x, theta))
        device_s.append(system.device_time_s)
        assert len(caught) == system.recaptures and (system.recaptures > 0) == (drop > 0)
    assert torch.equal(outputs[0], outputs[1]) and device_s[1] > device_s[0]
    assert all(issubclass(w.category, DeviceWarning) for w in caught)
    assert re.fullmatch(r"camera: (frame\(s\) dropped after frame index \d+ \(next index \d+\)|asked for 256 "
                        r"frame\(s\), got \d+); showing the 256 patterns again \(try [23] of 3\)",
                        str(caught[0].message))


def test_a_link_that_drops_frames_on_every_try_stops_the_system_naming_it() -> None:
    """Three tries of one sequence, all short: the link needs looking at, and the error says where to look."""
    _, slm, camera = bench("ideal", shot={"frame_drop_probability": 0.5})
    system = OpticalSystem({"slm": slm, "camera": camera})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeviceWarning)
        with pytest.raises(FramesDropped, match=r"^camera: .*, on each of 3 tries of the same sequence; check the "
                                                r"camera's link \(cable, bandwidth, other devices on its bus\)$"):
            system.calibrate()
    assert system.recaptures >= 2  # the failing sequence's two, after any of the calibration's earlier captures


def test_a_sequence_is_shown_and_captured_three_times_in_all_before_its_dropped_frames_stop_the_system() -> None:
    """Each repeat says which try it is, and the third is the last: a fourth try would hold the run on a link that
    needs looking at, and the error's "on each of 3 tries" would be untrue."""
    _, slm, camera = bench("ideal", shot={"frame_drop_probability": 0.5})
    system = OpticalSystem({"slm": slm, "camera": camera})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FramesDropped, match=r", on each of 3 tries of the same sequence; "):
            system.calibrate()
    tries = [int(re.search(r"\(try (\d) of 3\)$", str(w.message))[1]) for w in caught]
    assert tries[-2:] == [2, 3] and set(tries) <= {2, 3} and len(tries) == system.recaptures


def test_a_capture_that_fails_for_another_reason_than_dropped_frames_is_not_repeated() -> None:
    """Only lost frames are worth a second try: a camera error (here, no exposure set) repeated would be reported
    as a link that drops frames on every try ("check the camera's link"), hiding what is wrong."""
    _, slm, camera = bench("ideal")
    system = OpticalSystem({"slm": slm, "camera": camera})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DeviceError, match=r"^camera: exposure unknown; call set_exposure\(\) before capture\(\)$") \
                as error:
            system.capture(blocks(4))
    assert not isinstance(error.value, FramesDropped) and caught == [] and system.recaptures == 0


def test_the_frames_a_seeded_bench_loses_are_the_same_on_every_run() -> None:
    """A simulated run is reproduced by its seed: which frames the link loses is drawn from the world's generator,
    like its noise, so a rehearsal that failed on a lost frame fails there again."""
    lost = []
    for _ in range(2):
        _, _, camera = bench("ideal", seed=3, camera={"shape": (8, 8)}, shot={"frame_drop_probability": 0.3})
        camera.set_exposure(1e-3)
        counts = []
        for _ in range(40):
            try:
                counts.append(len(camera.capture(4).images))
            except FramesDropped as error:
                counts.append(str(error))
        lost.append(counts)
    assert lost[0] == lost[1] and any(isinstance(count, str) for count in lost[0])


def test_a_camera_larger_than_the_fft_is_said_as_shapes_are_elsewhere_and_with_the_fix() -> None:
    """It read 'camera.shape (300, 20) must fit in optics.fft_size 256', a Python tuple where the panel's size
    reads 64×64, and nothing to do."""
    with pytest.raises(ConfigError, match=r"^config: camera\.shape 300×20 must fit in optics\.fft_size 256; use a "
                                          r"smaller camera or a larger fft_size$"):
        OpticalTable(config={"camera": {"shape": [300, 20]}})
