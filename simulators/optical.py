"""Simulated optical benches: a phase-only SLM, some optics, and a camera that sees what the SLM shows.

`SLMCameraWorld` holds what every such bench shares: the SLM (gray-level programming, lookup table, pixel
crosstalk, zero order, phase flicker, refresh and settle time), the laser (power, slow power wander) and the
camera (the EMVA 1288 linear model). Subclasses give the optics between the SLM and the camera (`propagate`):
`OpticalTable` here (a Fourier lens, optionally after stacked diffractive planes) and
`simulators.fiber.MultimodeFiber`. `SimulatedSLM` and `SimulatedCamera` serve any of them. The noiseless
physics is `hil.physics.optics`; this module adds the non-idealities, split by time scale:

- *construction* (hidden, from the seed): the LUT's gain error and bow, the crosstalk width, the unmodulated
  (zero-order) field fraction, the camera's misalignment, its per-pixel gain (PRNU) and dark offset (DSNU);
- *programming*: phases are rounded to the SLM's 2^bits gray levels when a pattern or a sequence is loaded;
- *per shot*: phase flicker (a random phase of the liquid crystal's ripple per frame, largest at mid gray),
  photon shot noise (exact Poisson below ``poisson_exact_below_e`` electrons, a normal of the same mean and
  variance above), dark current and its shot noise, read noise, full-well and ADC clipping, ADC rounding;
- *slow state*: the laser's relative power wanders (Ornstein–Uhlenbeck in the virtual time of each frame).

Device time: a displayed pattern costs one refresh period and the settle time; a triggered capture of a loaded
sequence costs, per pattern, the whole refresh periods that cover settle time plus exposure (and at least the
camera's frame period); a software-triggered capture costs one camera frame period (or the exposure) per frame.

Camera model (EMVA 1288): electrons μ = QE·photons·(1 + PRNU) + dark current·exposure, photons = intensity ×
power·exposure·λ/(h·c) × (1 + wander); shot and read noise; clipped at the full well; DN = K·(μ + DSNU) + black
level, rounded and clipped to 0..2^bits − 1. The frames are float32 digital numbers (integers unless ``ideal``).

Area of interest: the camera may read out only a window of its sensor (``roi`` = (top, left, height, width),
set through `SimulatedCamera.set_roi`). The world then computes only that window: the optics' intensity on its
pixels alone (`propagate`), its slice of the PRNU and DSNU maps, noise on its pixels only. Every pixel follows
the same model as in a full frame, so an AOI frame is distributed as the full frame cropped (the random draws
differ). The AOI leaves device time as it is: the simulated sensor is already a small window of the real one,
whose frame rate ``camera_max_fps`` is.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from hil.config import Strict
from hil.errors import DeviceError, counted
from hil.instruments import Camera, SpatialLightModulator
from hil.limits import Limit
from hil.physics.optics import (
    CHUNK_FRAMES,
    PLANE_DISTANCE_RANGE_M,
    SLM_PITCH_RANGE_M,
    TWO_PI,
    WAVELENGTH_RANGE_M,
    FourierWorkspace,
    Window,
    angular_spectrum,
    beam_amplitude,
    camera_intensity,
    crop,
    full_window,
    grid_problem,
    large_empty,
    slm_phase,
    wrap_drive,
)
from simulators.world import OrnsteinUhlenbeck, SimulatedInstrument, World, merge, require_world

PLANCK_J_S = 6.62607015e-34
LIGHT_SPEED_M_S = 299_792_458.0

#: A panel's or a sensor's side (pixels), at most what a simulated frame on a CPU can hold.
Pixels = Annotated[int, Field(ge=1, le=1024)]

_PLUTO = "HOLOEYE PLUTO-2 phase-only LCOS data sheet"
_IMX250 = ("EMVA 1288 data of Sony IMX250 cameras (MATRIX VISION mvBlueFOX3-2051: SNRmax 40.3 dB, "
           "dynamic range 71.2 dB, 12-bit ADC, 80 fps)")


class SLMConfig(Strict):
    """The phase-only SLM (scaled down to a small panel for CPU speed)."""

    shape: tuple[Pixels, Pixels] = Field((64, 64), description="rows × columns of pixels (1); source: scaled down from "
                                   f"1080 × 1920 ({_PLUTO}) so a batch of patterns stays cheap on a CPU")
    bit_depth: int = Field(8, ge=1, le=16, description="gray levels are 2^bit_depth (1); source: " + _PLUTO)
    pitch_m: float = Field(8e-6, ge=SLM_PITCH_RANGE_M[0], le=SLM_PITCH_RANGE_M[1], description="pixel pitch (m); "
                           "source: " + _PLUTO)
    max_sequence: int = Field(1024, ge=1, le=1_000_000, description="patterns one loaded sequence holds (1); source: "
                              "assumption, on-board sequence memory of about 2 GB (1024 full-HD 8-bit patterns)")


class CameraConfig(Strict):
    """The camera's sensor (a region of interest of a global-shutter CMOS camera)."""

    shape: tuple[Pixels, Pixels] = Field((64, 64), description="rows × columns of pixels (1); source: a 64 × 64 region "
                                   "of interest, to keep simulated frames cheap")
    bit_depth: int = Field(12, ge=8, le=16, description="ADC resolution (1); source: " + _IMX250)
    quantum_efficiency: float = Field(0.65, gt=0, le=1, description="electrons per photon at the laser "
                                      "wavelength (1); source: Sony IMX250 spectral response, ≈ 65 % at 532 nm")
    full_well_e: float = Field(10_700.0, ge=100, le=1e7, description="saturation capacity (e⁻); source: SNRmax 40.3 "
                               "dB → 10^(40.3/10) e⁻, " + _IMX250)
    gain_dn_per_e: float = Field(0.383, ge=1e-4, le=1e3, description="overall system gain K (DN/e⁻): the ADC's 4095 "
                                 "codes over the full well; source: " + _IMX250)
    max_frames: int = Field(1024, ge=1, le=1_000_000, description="frames one capture returns (1); source: "
                            "assumption, frame buffer of the acquisition")


class OpticsConfig(Strict):
    """The laser and the input beam on the SLM."""

    wavelength_m: float = Field(532e-9, ge=WAVELENGTH_RANGE_M[0], le=WAVELENGTH_RANGE_M[1], description="laser "
                                "wavelength (m); source: frequency-doubled Nd:YAG, a common SLM bench laser")
    power_w: float = Field(2.5e-10, gt=0, le=1.0, description="optical power reaching the SLM after attenuation (W); "
                           "source: assumption, ND filters chosen so a typical exposure is about a millisecond")
    beam: Literal["gaussian", "flat"] = Field("gaussian", description="input beam profile on the SLM; source: "
                                              "a TEM00 laser beam, expanded")
    waist_m: float = Field(200e-6, gt=0, le=0.1, description="1/e² intensity radius of the Gaussian beam (m); source: "
                           "assumption, a beam expanded to fill 80 % of the panel")


class TableOpticsConfig(OpticsConfig):
    """The optics of the optical table: stacked panels and a Fourier lens onto the camera."""

    fft_size: int = Field(256, ge=8, le=8192, description="Fourier-plane samples per side: the panel is zero-padded to "
                          "it and one camera pixel is one sample, i.e. the lens has f = fft_size · SLM pitch · "
                          "camera pitch / λ; 256 puts 4 camera pixels across the diffraction-limited spot of a "
                          "64-pixel panel (1); source: benches sample the spot with 2-5 camera pixels")
    planes: int = Field(1, ge=1, le=8, description="side-by-side panels the beam crosses in turn, one SLM and a "
                        "mirror (1); source: multi-plane light conversion, Labroille et al., Opt. Express 22, "
                        "15599 (2014)")
    plane_distance_m: float = Field(5e-3, ge=PLANE_DISTANCE_RANGE_M[0], le=PLANE_DISTANCE_RANGE_M[1],
                                    description="free-space path between consecutive panels (m); source: assumption, "
                                    "millimetres as in multi-plane light converters (the angular-spectrum grid grows "
                                    "with it, `hil.physics.optics.padded_size`)")


class ConstructionConfig(Strict):
    """Hidden, fixed per device: drawn once from the seed."""

    lut_gain_error: float = Field(0.03, ge=0, le=0.3, description="std of the LUT's relative phase-gain error (1); "
                                  "the drawn gain is at least 0.1 (a phase falling as the drive rises is no LC "
                                  "SLM's); source: Chen et al., Appl. Sci. 8, 2323 (2018): a LUT calibrated at "
                                  "another wavelength or temperature leaves errors of a few % of the phase range")
    lut_bow_rad: float = Field(0.15, ge=0, le=math.pi, description="std of the LUT's bow, the mid-range deviation of "
                               "the phase curve from a line (rad); source: as lut_gain_error")
    crosstalk_px: float = Field(0.5, ge=0, le=2, description="mean width σ of the fringing-field blur (SLM "
                                "pixels); source: Persson et al., Opt. Express 20, 22334 (2012) and Moser et al., "
                                "Opt. Express 27, 25046 (2019): fringing over ~ the LC thickness, 3-4 µm at 8 µm "
                                "pitch")
    crosstalk_spread: float = Field(0.2, ge=0, le=1, description="device-to-device spread of σ: drawn uniformly "
                                    "within ±spread × crosstalk_px (1); source: assumption")
    zero_order: float = Field(0.06, ge=0, lt=1, description="mean fraction of the field amplitude left "
                              "unmodulated (1); source: assumption, of the order of the 7 % of the panel's area "
                              "outside its pixels (93 % fill factor, " + _PLUTO + "), which alone would give 0.07")
    zero_order_spread: float = Field(0.2, ge=0, le=1, description="device-to-device spread of the zero-order "
                                     "fraction, uniform within ±spread (1); source: assumption")
    prnu: float = Field(0.006, ge=0, le=0.2, description="std of the per-pixel relative gain, PRNU (1), at most 0.2 "
                        "so that the Gaussian gain stays positive (5σ); source: EMVA 1288 reports of Sony Pregius "
                        "sensors, 0.5-1 %")
    dsnu_e: float = Field(1.5, ge=0, le=1e4, description="std of the per-pixel dark offset, DSNU (e⁻); source: EMVA "
                          "1288 reports of Sony Pregius sensors, 1-2 e⁻")
    black_level_dn: float = Field(10.0, ge=0, le=65535, description="mean dark offset of the ADC (DN); source: "
                                  "assumption, a black level set above zero so that read noise is not clipped")

    @model_validator(mode="after")
    def _some_field_modulated(self) -> ConstructionConfig:
        top = self.zero_order * (1 + self.zero_order_spread)
        if top >= 1:  # drawn as min(1, ...): a whole field unmodulated on some devices, the spread no longer uniform
            raise ValueError(f"zero_order {self.zero_order:g} with zero_order_spread {self.zero_order_spread:g} draws "
                             f"fractions up to {top:g}, on some devices an SLM that modulates nothing; lower either, "
                             "so that zero_order × (1 + zero_order_spread) stays below 1")
        return self


class TableConstructionConfig(ConstructionConfig):
    """The optical table's construction: the SLM's and the camera's, and the camera's misalignment."""

    misalignment_px: float = Field(0.3, ge=0, le=10, description="std of the camera's offset from the optical axis, "
                                   "per axis (camera pixels); source: assumption, a camera aligned on the zero-order "
                                   "spot to within a pixel")


class ProgrammingConfig(Strict):
    """Drawn or applied when patterns are written."""

    quantise: bool = Field(True, description="round phases to the 2^bit_depth gray levels (switch); source: "
                           "SLMs are addressed with gray levels, " + _PLUTO)


class ShotConfig(Strict):
    """Drawn at every frame."""

    flicker_rad: float = Field(0.1, ge=0, le=math.pi, description="peak phase flicker at mid gray (rad), a random "
                               "phase of the liquid crystal's ripple per frame, shaped 4u(1 − u) over the gray "
                               "range; source: order of magnitude of the flicker of digitally addressed LCOS, Lizana "
                               "et al., Opt. Express 18, 10581 (2010); analog-addressed panels flicker less")
    shot_noise: bool = Field(True, description="photon and dark-current shot noise, Poisson (switch); source: "
                             "EMVA 1288 linear camera model")
    poisson_exact_below_e: float = Field(10.0, ge=0, le=1000, description="mean electron counts below which shot "
                                         "noise is drawn exactly (Poisson); above it, from a normal of the same mean "
                                         "and variance (e⁻); source: the usual rule that Poisson(μ ≥ 10) is close to "
                                         "normal; with the 2.33 e⁻ of read noise the skewness left out is below 0.17")
    read_noise_e: float = Field(2.33, ge=0, le=1e4, description="temporal dark (read) noise, rms (e⁻); source: dynamic "
                                "range 71.2 dB over 10 700 e⁻, i.e. EMVA 1288's μ_e.min = σ_y.dark/K + 1/2 = 2.95 "
                                "e⁻ with σ_y.dark² = K²σ_d² + 1/12 DN² (quantisation), " + _IMX250)
    dark_current_e_per_s: float = Field(3.0, ge=0, le=1e6, description="dark current (e⁻/s); source: EMVA 1288 "
                                        "reports of Sony Pregius sensors at room temperature, a few e⁻/s")
    frame_drop_probability: float = Field(0.0, ge=0, le=0.5, description="chance that a frame is lost between "
                                          "camera and host, drawn per frame (1); source: none by default, as a camera "
                                          "on a link of its own (USB3 Vision, GigE Vision) at 80 fps loses none; set "
                                          "it to rehearse a shared or marginal link")
    adc_rounding: bool = Field(True, description="round the output to whole digital numbers (switch); source: "
                               "EMVA 1288 linear camera model")
    clipping: bool = Field(True, description="clip at the full well and to the ADC's codes 0..2^bits − 1 "
                           "(switch); source: EMVA 1288 linear camera model")


class SlowConfig(Strict):
    """Evolves with the virtual clock."""

    power_wander: float = Field(0.005, ge=0, le=0.2, description="stationary rms of the relative laser power (1); "
                                "source: 0.5 % rms, a typical diode-pumped solid-state laser specification")
    power_tau_s: float = Field(60.0, gt=0, le=1e7, description="correlation time of the power wander (s); source: "
                               "assumption, thermal time constants of laser and attenuators")


class TimingConfig(Strict):
    """Device time."""

    slm_refresh_hz: float = Field(60.0, ge=1, le=1e5, description="SLM frame rate (Hz); source: " + _PLUTO)
    slm_settle_s: float = Field(0.01, ge=0, le=1, description="liquid-crystal response time to a new pattern (s); "
                                "source: nematic LCOS at visible wavelengths, Otón et al., Appl. Opt. 48, 4616 "
                                "(2009): small phase changes at ~130 Hz, full 2π swings at ~32 Hz")
    camera_max_fps: float = Field(80.0, ge=1, le=1e6, description="camera frame rate limit (Hz); source: " + _IMX250)


class SLMCameraConfig(Strict):
    """What every SLM → optics → camera world configures."""

    slm: SLMConfig = Field(default_factory=SLMConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    construction: ConstructionConfig = Field(default_factory=ConstructionConfig)
    programming: ProgrammingConfig = Field(default_factory=ProgrammingConfig)
    shot: ShotConfig = Field(default_factory=ShotConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)

    @model_validator(mode="after")
    def _beam_noise_and_black_level(self) -> SLMCameraConfig:
        if self.optics.beam == "gaussian" and self.optics.waist_m < self.slm.pitch_m:
            raise ValueError(f"optics.waist_m {self.optics.waist_m:g} m is under one SLM pixel (slm.pitch_m "
                             f"{self.slm.pitch_m:g} m), so the beam would light no pixel; widen it, or use beam: flat")
        full_well = self.camera.full_well_e
        for name, noise_e in (("shot.read_noise_e", self.shot.read_noise_e),
                              ("construction.dsnu_e", self.construction.dsnu_e)):
            if noise_e > full_well / 10:
                raise ValueError(f"{name} {noise_e:g} e⁻ is over a tenth of camera.full_well_e {full_well:g} e⁻, so "
                                 "the frames would show noise, not light; lower it")
        top_dn = 2**self.camera.bit_depth - 1
        if self.construction.black_level_dn >= top_dn:
            raise ValueError(f"construction.black_level_dn {self.construction.black_level_dn:g} DN leaves no codes "
                             f"below the camera's top code {top_dn} DN (bit_depth {self.camera.bit_depth}); "
                             "lower it")
        return self


class OpticalTableConfig(SLMCameraConfig):
    """The optical table: SLM, Fourier lens (after optional stacked planes), camera."""

    optics: TableOpticsConfig = Field(default_factory=TableOpticsConfig)
    construction: TableConstructionConfig = Field(default_factory=TableConstructionConfig)
    slow: SlowConfig = Field(default_factory=SlowConfig)

    @model_validator(mode="after")
    def _geometry(self) -> OpticalTableConfig:
        rows, cols = self.slm.shape
        if cols % self.optics.planes:
            raise ValueError(f"slm.shape columns {cols} must split evenly into optics.planes {self.optics.planes}")
        if max(rows, cols // self.optics.planes) > self.optics.fft_size:
            raise ValueError(f"optics.fft_size {self.optics.fft_size} must be at least the panel size "
                             f"{rows}×{cols // self.optics.planes}")
        if max(self.camera.shape) > self.optics.fft_size:
            raise ValueError(f"camera.shape {self.camera.shape[0]}×{self.camera.shape[1]} must fit in optics.fft_size "
                             f"{self.optics.fft_size}; use a smaller camera or a larger fft_size")
        optics = self.optics
        problem = optics.planes > 1 and grid_problem((rows, cols // optics.planes), self.slm.pitch_m,
                                                     optics.wavelength_m, optics.plane_distance_m)
        if problem:
            raise ValueError(f"optics.plane_distance_m {optics.plane_distance_m:g} m {problem}; shorten it, or use a "
                             "coarser slm.pitch_m or a shorter optics.wavelength_m")
        return self


#: Every SLM and camera non-ideality switched off (shared by the worlds' ``ideal`` presets).
IDEAL_SLM_CAMERA: dict[str, Any] = {
    "construction": {"lut_gain_error": 0.0, "lut_bow_rad": 0.0, "crosstalk_px": 0.0, "zero_order": 0.0,
                     "prnu": 0.0, "dsnu_e": 0.0, "black_level_dn": 0.0},
    "programming": {"quantise": False},
    "shot": {"flicker_rad": 0.0, "shot_noise": False, "read_noise_e": 0.0, "dark_current_e_per_s": 0.0,
             "adc_rounding": False, "clipping": False},
    "slow": {"power_wander": 0.0},
}
#: Two to three times the realistic magnitudes, the dark current about seven times (3 → 20 e⁻/s: a warm sensor).
HARSH_SLM_CAMERA: dict[str, Any] = {
    "construction": {"lut_gain_error": 0.08, "lut_bow_rad": 0.4, "crosstalk_px": 1.0, "zero_order": 0.12,
                     "prnu": 0.015, "dsnu_e": 4.0, "black_level_dn": 20.0},
    "shot": {"flicker_rad": 0.3, "read_noise_e": 7.0, "dark_current_e_per_s": 20.0},
    "slow": {"power_wander": 0.015, "power_tau_s": 20.0},
}


def ou_path(process: OrnsteinUhlenbeck, times_s: torch.Tensor) -> torch.Tensor:
    """An Ornstein–Uhlenbeck process at increasing times (N,), N × its shape, advancing it to the last time.

    The exact update x_k = a_k·x_{k−1} + σ·√(1 − a_k²)·ξ_k (a_k = e^{−Δt_k/τ}) is solved for all k at once with
    cumulative sums, x_k = A_k·(x_0 + Σ_{j≤k} s_j·ξ_j / A_j), A_k = Π_{j≤k} a_j (in float64, in pieces so that
    1/A stays finite; a single step too long for that, Δt > 600·τ, is the update itself).
    """
    times = torch.as_tensor(times_s, dtype=torch.float64).reshape(-1)
    shape = tuple(process.value.shape)
    if process.sigma == 0 or len(times) == 0:
        process.time_s = max(process.time_s, float(times.max())) if len(times) else process.time_s
        return process.value.expand(len(times), *shape).clone()
    deltas = torch.diff(times, prepend=times.new_tensor([process.time_s])).clamp(min=0)
    log_a = -deltas / process.tau_s
    cumulative = torch.cumsum(log_a, 0)
    if float(cumulative[-1]) < -600 and len(times) > 1:
        half = len(times) // 2
        return torch.cat([ou_path(process, times[:half]), ou_path(process, times[half:])])
    column = (-1, *([1] * len(shape)))
    steps = (process.sigma * torch.sqrt(-torch.expm1(2 * log_a))).reshape(column)
    noise = torch.randn((len(times), *shape), generator=process.generator, dtype=torch.float32).to(torch.float64)
    start = process.value.to(torch.float64)
    if float(cumulative[-1]) < -600:  # one step: 1/A would overflow
        path = torch.exp(log_a).reshape(column) * start + steps * noise
    else:
        path = torch.exp(cumulative).reshape(column) * (start + torch.cumsum(steps * torch.exp(-cumulative).reshape(
            column) * noise, 0))
    path = path.to(torch.float32)
    process.value = path[-1].clone()
    process.time_s = max(process.time_s, float(times[-1]))
    return path


def poisson_small(mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Exact Poisson counts (float32) for small means (a 1-D tensor), by inversion of the CDF in float64.

    The count is the smallest k whose CDF reaches a uniform draw. All samples step through k = 0, 1, 2, …
    together (a sample whose draw is below the CDF stays there, as the CDF only grows); the working set is
    compacted whenever half of it has finished, so the work is about (mean + 1) steps per sample. The working
    set is one float64 array of rows (uniform, mean, term, CDF, steps), compacted in one gather; finished samples
    are found by numpy (`flatnonzero`, `count_nonzero`), several times faster than torch's ``nonzero`` on a CPU.
    """
    counts = torch.zeros(mean.shape, dtype=torch.float32)
    state = large_empty(5, len(mean), dtype=torch.float64)
    uniform, rate, term, cdf, steps = state
    uniform.uniform_(generator=generator)
    rate.copy_(mean)
    torch.exp(rate.neg(), out=term)
    cdf.copy_(term)
    steps.zero_()
    active: torch.Tensor | None = None  # indices of the working set's samples; None: all, in order
    going = torch.empty(len(mean), dtype=torch.bool)
    for k in range(1, 10_000):
        torch.gt(uniform, cdf, out=going)
        still = int(np.count_nonzero(going.numpy()))
        if still == 0:
            break
        if still <= len(going) // 2:
            keep = torch.from_numpy(np.flatnonzero(going.numpy()))
            if active is None:
                counts.copy_(steps)
                active = keep
            else:
                counts.index_copy_(0, active, steps.to(torch.float32))
                active = active[keep]
            state, going = state.index_select(1, keep), going[:still]
            uniform, rate, term, cdf, steps = state
            steps.add_(1)
        else:
            steps.add_(going)
        term.mul_(rate).div_(k)
        cdf.add_(term)
    if active is None:
        counts.copy_(steps)
    else:
        counts.index_copy_(0, active, steps.to(torch.float32))
    return counts


class SLMCameraWorld(World):
    """A bench where a camera sees, through some optics, what a phase-only SLM shows.

    Subclasses set ``Config`` (an `SLMCameraConfig` with ``construction``, ``slow`` and ``optics`` sections) and
    give `propagate`. Patterns are stored as *drives*: the nominal phase of each pixel's gray level, in [0, 2π).
    """

    kind = "slm_camera"

    def _construct(self) -> None:
        config = self.config
        g = self.construction_rng
        c = config.construction
        self.levels = 2**config.slm.bit_depth
        self.lut_gain = max(0.1, 1.0 + c.lut_gain_error * float(torch.randn((), generator=g)))
        self.lut_bow_rad = c.lut_bow_rad * float(torch.randn((), generator=g))
        self.crosstalk_px = c.crosstalk_px * (1 + c.crosstalk_spread * (2 * float(torch.rand((), generator=g)) - 1))
        self.zero_order = min(1.0, c.zero_order * (1 + c.zero_order_spread
                                                   * (2 * float(torch.rand((), generator=g)) - 1)))
        shape = config.camera.shape
        self.pixel_gain = 1 + c.prnu * torch.randn(shape, generator=g)
        self.dark_offset_e = c.dsnu_e * torch.randn(shape, generator=g)
        rows, cols = config.slm.shape
        self.panel_shape = (rows, cols // getattr(config.optics, "planes", 1))
        waist_px = config.optics.waist_m / config.slm.pitch_m if config.optics.beam == "gaussian" else None
        self.waist_px = waist_px
        self.beam = beam_amplitude(self.panel_shape, waist_px)
        self.photon_rate = config.optics.power_w * config.optics.wavelength_m / (PLANCK_J_S * LIGHT_SPEED_M_S)
        self.power = OrnsteinUhlenbeck(config.slow.power_wander, config.slow.power_tau_s, (), self.rng)
        self.shown = torch.zeros(1, rows, cols)
        self.sequence: torch.Tensor | None = None
        self.position = 0
        self.exposure_s = 1e-3
        self.roi: Window | None = None  # the camera's area of interest; None: the full frame

    @property
    def window(self) -> Window:
        """The camera pixels read out, (top, left, height, width): the AOI, or the whole sensor."""
        return full_window(tuple(self.config.camera.shape), self.roi)  # type: ignore[arg-type]

    def crop(self, maps: torch.Tensor) -> torch.Tensor:
        """The read-out window of per-pixel values (… × camera rows × cols)."""
        return maps if self.roi is None else crop(maps, self.window)

    # -- the SLM ------------------------------------------------------------------------------------------------
    @property
    def frame_period_s(self) -> float:
        return 1 / self.config.timing.slm_refresh_hz

    def program(self, phases_rad: Any, out: torch.Tensor | None = None) -> torch.Tensor:
        """Drives (N × rows × cols) for commanded phases: rounded to the gray levels (programming) and wrapped into
        [0, 2π); without rounding, wrapped as the rounding would (`hil.physics.optics.wrap_drive`). ``out``: a
        buffer of that shape to write the drives into. Computed `CHUNK_FRAMES` frames at a time, so that the
        temporaries are small and each pass runs in cache."""
        phases = torch.as_tensor(phases_rad, dtype=torch.float32)
        drives = torch.empty_like(phases) if out is None else out
        for start in range(0, len(phases), CHUNK_FRAMES):
            frames = slice(start, start + CHUNK_FRAMES)
            self._program_chunk(phases[frames], drives[frames])
        return drives

    def _program_chunk(self, phases: torch.Tensor, out: torch.Tensor) -> None:
        if not self.config.programming.quantise:
            wrap_drive(phases, self.levels, out=out)
            return
        step = TWO_PI / self.levels
        gray = torch.mul(phases, 1 / step, out=out).round_()
        wraps = torch.mul(gray, 1 / self.levels, out=self._scratch("work", gray.shape)).floor_()
        gray.sub_(wraps, alpha=self.levels).mul_(step)

    def show(self, phase_rad: Any) -> None:
        """Display one pattern: it appears at the next refresh and then settles."""
        began = self.clock.wall()
        self.shown = self.program(phase_rad).reshape(1, *self.config.slm.shape)
        self.sequence, self.position = None, 0
        self.clock.sleep(self.frame_period_s + self.config.timing.slm_settle_s, since=began)

    def load_sequence(self, phases_rad: Any) -> None:
        """Load a sequence of patterns, played one per camera trigger (upload time neglected). The drives go to
        the SLM's sequence memory, a buffer reused by the next sequence."""
        shape = tuple(torch.as_tensor(phases_rad).shape)
        self.sequence, self.position = self.program(phases_rad, out=self._scratch("sequence", shape)), 0

    # -- the camera ---------------------------------------------------------------------------------------------
    def capture(self, n_frames: int, trigger: str) -> torch.Tensor:
        """``n_frames`` frames (N × rows × cols of the AOI, DN) at the present exposure, advancing the clock.

        ``external``: frame k shows the next pattern of the loaded sequence; ``software``: every frame shows the
        displayed pattern.
        """
        began = self.clock.wall()
        timing, exposure = self.config.timing, self.exposure_s
        camera_period = max(exposure, 1 / timing.camera_max_fps)
        if trigger == "external":
            if self.sequence is None:
                raise DeviceError("external trigger but no SLM sequence is loaded; the camera would wait for "
                                  "triggers that never come: show_sequence() on the SLM first")
            left = len(self.sequence) - self.position
            if n_frames > left:
                fix = f"capture at most {left}, or show a longer sequence" if left else "show a new sequence first"
                raise DeviceError(f"asked for {counted(n_frames, 'triggered frame')} but the SLM sequence has "
                                  f"{counted(left, 'pattern')} left; {fix}")
            drives = self.sequence[self.position:self.position + n_frames]
            self.position += n_frames
            self.shown = drives[-1:].clone()  # the sequence memory is reused by the next sequence
            if self.position == len(self.sequence):  # played out: nothing to keep (or checkpoint: 16 MB by default)
                self.sequence, self.position = self.sequence.new_empty((0, *self.sequence.shape[1:])), 0
            period = max(math.ceil((timing.slm_settle_s + exposure) / self.frame_period_s - 1e-9)
                         * self.frame_period_s, camera_period)
            start = timing.slm_settle_s
        else:
            drives = self.shown.expand(n_frames, *self.shown.shape[1:])
            period, start = camera_period, 0.0
        times = self.clock.now() + start + exposure / 2 + period * torch.arange(n_frames, dtype=torch.float64)
        images = self.render(drives, exposure, times)
        self.clock.sleep(period * n_frames, since=began)
        return images

    def render(self, drives: torch.Tensor, exposure_s: float, times_s: torch.Tensor) -> torch.Tensor:
        """Frames (N × AOI rows × cols, DN) for drives (N × rows × cols) exposed at ``times_s`` (mid-exposure)."""
        return self.expose(self.propagate(self.realised_phase(drives), times_s), exposure_s, times_s)

    def realised_phase(self, drives: torch.Tensor) -> torch.Tensor:
        """The phase (rad) the liquid crystal holds during each frame: crosstalk, the device's LUT, and a new
        draw of the flicker per frame. The flicker has the LUT bow's shape 4u(1 − u) (none at gray 0 and at full
        range), so it is drawn as a per-frame addition to the bow, ``flicker_rad``·sin(2π·U)."""
        return self._lc_phase(drives, self._frame_bow(len(drives)))

    def _frame_bow(self, frames: int) -> float | torch.Tensor:
        """The LUT's bow (rad) during each of ``frames`` frames (frames × 1 × 1), with a new flicker draw each."""
        if self.config.shot.flicker_rad > 0:
            ripple = torch.sin(TWO_PI * torch.rand(frames, 1, 1, generator=self.rng, dtype=torch.float32))
            return self.lut_bow_rad + self.config.shot.flicker_rad * ripple
        return self.lut_bow_rad

    def _lc_phase(self, drives: torch.Tensor, bow_rad: float | torch.Tensor,
                  frames: slice = slice(None)) -> torch.Tensor:
        """The realised phase of ``drives``, the batch's ``frames``, whose per-frame bow (`_frame_bow`) is
        ``bow_rad``."""
        if isinstance(bow_rad, torch.Tensor):
            bow_rad = bow_rad[frames]
        return slm_phase(drives, gain=self.lut_gain, bow_rad=bow_rad, crosstalk_var_px2=self.crosstalk_px**2)

    @abstractmethod
    def propagate(self, phase_rad: torch.Tensor, times_s: torch.Tensor) -> torch.Tensor:
        """Camera intensity over the AOI (N × AOI rows × cols, fractions of the SLM power) for realised SLM
        phases, computed for the AOI's pixels only."""

    def signal_rate(self, times_s: torch.Tensor | None = None) -> torch.Tensor:
        """Mean photo-electrons per second per unit intensity fraction (e⁻/s), with the power wander at ``times_s``
        (s), advancing it; by default now, read without advancing it."""
        now = times_s is None
        times = torch.as_tensor([self.clock.now()] if now else times_s, dtype=torch.float64)
        wander = ou_path(self.power.fork() if now else self.power, times)
        return self.config.camera.quantum_efficiency * self.photon_rate * (1 + wander)

    def saturation_dn(self) -> float | None:
        """The camera's saturation level as its datasheet gives it (DN): the mean black level plus K × the full
        well, where that lies below the ADC's top code; None where the ADC saturates first or nothing clips."""
        config = self.config
        camera = config.camera
        level = math.floor(config.construction.black_level_dn + camera.full_well_e * camera.gain_dn_per_e)
        return float(level) if config.shot.clipping and level < 2**camera.bit_depth - 1 else None

    def expose(self, intensity: torch.Tensor, exposure_s: float, times_s: torch.Tensor) -> torch.Tensor:
        """The EMVA 1288 camera: DN frames for intensities over the AOI (fractions of the SLM power); works in place.

        The affine steps are merged where that changes nothing but float rounding: electrons are
        dark + signal·g (one pass), DN are K·e + (K·DSNU + black level) (one pass), and the full-well clip, being
        monotonic, becomes a per-pixel upper bound on the (rounded) DN, merged with the ADC's range.
        """
        camera, shot, c = self.config.camera, self.config.shot, self.config.construction
        electrons = intensity.mul_((self.signal_rate(times_s) * exposure_s).reshape(-1, 1, 1))
        dark_e = shot.dark_current_e_per_s * exposure_s
        if c.prnu > 0:
            if dark_e > 0:
                torch.addcmul(electrons.new_tensor(dark_e), electrons, self.crop(self.pixel_gain), out=electrons)
            else:
                electrons.mul_(self.crop(self.pixel_gain))
        elif dark_e > 0:
            electrons.add_(dark_e)
        if shot.shot_noise:
            electrons = self._shot_and_read_noise(electrons, shot.read_noise_e)
        elif shot.read_noise_e > 0:
            read_noise = torch.randn(electrons.shape, generator=self.rng, dtype=torch.float32)
            electrons.add_(read_noise, alpha=shot.read_noise_e)
        gain = camera.gain_dn_per_e
        offset_dn: float | torch.Tensor = c.black_level_dn
        if c.dsnu_e > 0:
            offset_dn = self.crop(self.dark_offset_e) * gain + c.black_level_dn
        if isinstance(offset_dn, torch.Tensor) or offset_dn:
            counts = torch.addcmul(torch.as_tensor(offset_dn, dtype=torch.float32), electrons,
                                   electrons.new_tensor(gain), out=electrons)
        else:
            counts = electrons.mul_(gain)
        if shot.adc_rounding:
            counts.round_()
        if shot.clipping:
            top = torch.as_tensor(offset_dn, dtype=torch.float32).add(camera.full_well_e * gain)
            if shot.adc_rounding:
                top.round_()
            counts.clamp_(min=counts.new_zeros(()), max=top.clamp_(max=2**camera.bit_depth - 1))
        return counts

    def _shot_and_read_noise(self, mean_e: torch.Tensor, read_noise_e: float) -> torch.Tensor:
        """Poisson(mean) + read noise, in place: exact below the threshold, a normal of the same moments above it.

        Shot and read noise are independent, so above the threshold their sum is drawn as one normal of variance
        mean + σ_read²; one standard normal per pixel gives that draw and, below the threshold, the read noise
        added to an exact Poisson count drawn by `poisson_small`.
        """
        normal = self._scratch("normal", mean_e.shape).normal_(generator=self.rng)
        threshold = self.config.shot.poisson_exact_below_e
        flat = mean_e.view(-1)
        small = None
        if threshold > 0:
            below = torch.lt(flat, threshold, out=self._scratch("mask", flat.shape, torch.bool))
            index = torch.from_numpy(np.flatnonzero(below.numpy()))  # numpy's is several times faster
            small = flat[index] if len(index) else None
        std = torch.add(mean_e, read_noise_e**2, out=self._scratch("work", mean_e.shape)).sqrt_()
        noisy = torch.addcmul(mean_e, std, normal, out=mean_e)
        if small is not None:
            counts = poisson_small(small, self.rng)
            counts.add_(normal.view(-1)[index], alpha=read_noise_e)
            noisy.view(-1).index_copy_(0, index, counts)
        return noisy

    def hidden_parameters(self) -> dict[str, Any]:
        """The hidden SLM and camera parameters, and the signal rate now (with the present power wander)."""
        c, camera = self.config.construction, self.config.camera
        return {
            "lut_gain": self.lut_gain, "lut_bow_rad": self.lut_bow_rad, "crosstalk_px": self.crosstalk_px,
            "crosstalk_var_px2": self.crosstalk_px**2,
            "zero_order": self.zero_order, "pixel_gain": self.pixel_gain.clone(),
            "dark_dn": camera.gain_dn_per_e * self.dark_offset_e + c.black_level_dn,
            "dark_rate_dn_per_s": camera.gain_dn_per_e * self.config.shot.dark_current_e_per_s,
            "signal_rate_dn_per_s": float(self.signal_rate()[0]) * camera.gain_dn_per_e,
        }


class OpticalTable(SLMCameraWorld):
    """An SLM imaged through a Fourier lens onto a camera; with ``optics.planes`` > 1 the beam first crosses the
    SLM's side-by-side panels, joined by free space (multi-plane light conversion with one SLM and a mirror)."""

    kind = "optical_table"
    Config = OpticalTableConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "ideal": merge(IDEAL_SLM_CAMERA, {"construction": {"misalignment_px": 0.0}}),
        "realistic": {},
        "harsh": merge(HARSH_SLM_CAMERA, {"construction": {"misalignment_px": 0.8}}),
    }

    def _construct(self) -> None:
        super()._construct()
        optics = self.config.optics
        self.shift_px = self.config.construction.misalignment_px * torch.randn(2, generator=self.construction_rng)
        self.transfer = None
        if optics.planes > 1:
            self.transfer = angular_spectrum(self.panel_shape, self.config.slm.pitch_m, optics.wavelength_m,
                                             optics.plane_distance_m)
        self.workspace = FourierWorkspace()

    def render(self, drives: torch.Tensor, exposure_s: float, times_s: torch.Tensor) -> torch.Tensor:
        """As `SLMCameraWorld.render`, the same computation without whole-batch intermediates: with one panel the
        SLM's steps (`realised_phase`) and the lens run chunk by chunk in the lens's workspace; stacked panels are
        propagated as many frames at a time as fill the samples of `CHUNK_FRAMES` 64 × 64 frames (at least one)."""
        optics = self.config.optics
        bow = self._frame_bow(len(drives))
        if optics.planes > 1:
            assert self.transfer is not None
            chunk = max(1, CHUNK_FRAMES * 64 * 64 // self.transfer.numel())
            _, _, height, width = self.window
            intensity = large_empty(len(drives), height, width)
            for start in range(0, len(drives), chunk):
                frames = slice(start, start + chunk)
                intensity[frames] = self.propagate(self._lc_phase(drives[frames], bow, frames), times_s[frames])
            return self.expose(intensity, exposure_s, times_s)

        def realise(chunk: torch.Tensor, frames: slice) -> torch.Tensor:
            return self._lc_phase(chunk, bow, frames)

        fixed_rows = None
        if len(drives) > 1 and self.crosstalk_px <= 0 and not isinstance(bow, torch.Tensor):
            # each pixel's phase its drive's alone, the same in every frame: rows driven alike in every frame (θ's
            # blocks) hold one field, which the lens computes once
            change = torch.sub(drives, drives[:1], out=self._scratch("drive_change", drives.shape)).abs_()
            fixed_rows = change.amax(dim=0).amax(dim=1) == 0  # 1.9 ms for 1024 frames, the first all(eq) 7 ms
        intensity = self.workspace.intensity(drives, self.beam, self.zero_order, optics.fft_size,
                                             tuple(self.config.camera.shape), self.shift_px, realise=realise,
                                             window=self.roi, fixed_rows=fixed_rows)
        return self.expose(intensity, exposure_s, times_s)

    def propagate(self, phase_rad: torch.Tensor, times_s: torch.Tensor) -> torch.Tensor:
        optics = self.config.optics
        return camera_intensity(phase_rad, beam=self.beam, zero_order=self.zero_order, fft_size=optics.fft_size,
                                camera_shape=tuple(self.config.camera.shape), shift_px=self.shift_px,
                                planes=optics.planes, transfer=self.transfer, workspace=self.workspace,
                                window=self.roi)

    def hidden_parameters(self) -> dict[str, Any]:
        return {**super().hidden_parameters(), "shift_px": self.shift_px.clone()}


# ---------------------------------------------------------------------------------------------------------------
class SimulatedSLM(SimulatedInstrument, SpatialLightModulator):
    """The phase-only SLM of an `SLMCameraWorld`: shape, bit depth and sequence length from the world's config."""

    def __init__(self, world: SLMCameraWorld, **common: Any):
        require_world(world, SLMCameraWorld, "SLM", "an SLM-and-camera world")
        self.shape = tuple(world.config.slm.shape)
        self.bit_depth = world.config.slm.bit_depth
        self.max_sequence = world.config.slm.max_sequence
        super().__init__(world, **common)

    def _show_hw(self, phase_rad: Any) -> None:
        self.world.show(torch.as_tensor(phase_rad, dtype=torch.float32)[None])  # type: ignore[attr-defined]

    def _show_sequence_hw(self, phases_rad: Any) -> None:
        self.world.load_sequence(torch.as_tensor(phases_rad, dtype=torch.float32))  # type: ignore[attr-defined]

    def _snapshot_hw(self) -> dict[str, Any]:
        return {**super()._snapshot_hw(), "shape": list(self.shape), "bit_depth": self.bit_depth}


class SimulatedCamera(SimulatedInstrument, Camera):
    """The camera of an `SLMCameraWorld`: frames as float32 DN tensors, a frame counter, software or external
    (SLM sequence) trigger, an area of interest (the world computes only its pixels); frames lost on the link with
    the chance ``shot.frame_drop_probability``."""

    def __init__(self, world: SLMCameraWorld, **common: Any):
        require_world(world, SLMCameraWorld, "camera", "an SLM-and-camera world")
        self.shape = tuple(world.config.camera.shape)
        self.bit_depth = world.config.camera.bit_depth
        self.max_frames = world.config.camera.max_frames
        self.saturation_dn = world.saturation_dn()
        super().__init__(world, **common)
        self._next_index = 0

    def hardware_limits(self) -> dict[str, Limit]:
        return {"exposure_s": Limit("s", 10e-6, 1.0)}

    def _set_exposure_hw(self, exposure_s: float) -> None:
        self.world.exposure_s = exposure_s  # type: ignore[attr-defined]

    def _set_trigger_hw(self, trigger: str) -> None:
        """Both software and external (SLM sequence) triggers are supported."""

    def _set_roi_hw(self, roi: Window | None) -> None:
        self.world.roi = roi  # type: ignore[attr-defined]

    def _capture_hw(self, n_frames: int) -> tuple[torch.Tensor, np.ndarray]:
        self.world.exposure_s = self.exposure_s  # type: ignore[attr-defined]
        self.world.roi = None if self.roi is None else tuple(self.roi)  # type: ignore[attr-defined]
        try:
            images = self.world.capture(n_frames, self.trigger)  # type: ignore[attr-defined]
        except DeviceError as error:  # the world's refusal, said of the camera that asked
            raise DeviceError(f"{self.name}: {error}") from None
        indices = np.arange(self._next_index, self._next_index + n_frames)
        self._next_index += n_frames
        drop = self.world.config.shot.frame_drop_probability  # type: ignore[attr-defined]
        if drop > 0:  # frames exposed (the clock counts them) that never reach the host
            arrived = torch.rand(n_frames, generator=self.world.rng, dtype=torch.float32) >= drop
            images, indices = images[arrived], indices[arrived.numpy()]
        return images, indices
