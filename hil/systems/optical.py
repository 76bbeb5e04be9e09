"""The optical system: x and θ as phase blocks on an SLM, y as light in regions of interest of a camera.

Layout. The SLM (rows × cols) is split into ``planes`` side-by-side panels of rows × cols/planes pixels, each
cut into ``block`` × ``block`` squares numbered row-major, panel after panel. With one plane, the first ``n_in``
squares show the inputs, phase = ``x_phase_rad``·x (x ∈ [0, 1]), the next ``n_params`` show θ (rad, θ ∈ [0, 2π]),
and the rest show 0. With stacked planes, the inputs fill the first squares of panel 1 (the rest of panel 1
shows 0) and θ fills panels 2, 3, … in order. A batch is one SLM sequence, played one pattern per camera frame
(external trigger).

Outputs. y_k is the mean of camera region of interest k (``roi_px`` × ``roi_px`` squares centred on a ring of
``roi_radius_px`` around the optical axis, away from the zero-order spot), normalised:

    y_k = (fft_size / block)² · mean_ROI_k(DN) / (exposure_s · R),

where R (DN/s) is the camera's total signal rate for a blank SLM (all the light in the zero-order spot), measured
by `calibrate`. (fft_size / block)² is the number of Fourier-plane samples per speckle grain of a random block
pattern, so y is of order 1 near the axis. The physics model computes the same quantity from
`hil.physics.optics`: y_k = scale · (fft_size / block)² · mean_ROI_k(g·I) / Σ_camera(g·I_blank) + offset_k, with I
the camera intensity of the pattern, I_blank that of a blank SLM and g the per-pixel gain.

`calibrate` (run at the first `forward` if not called): finds the exposure at which a blank SLM's brightest
pixel sits near half of full scale, measures R there and at half that exposure (the difference cancels the
camera's dark offset; the intercept gives the dark level per pixel), then sets the working exposure so that the
brightest pixel over a fixed set of probe patterns sits near half of full scale. These steps read the full frame.

Area of interest. Every other capture reads only ``window``, the bounding box of the regions of interest, through
the camera's AOI (`hil.instruments.Camera.set_roi`), which raises a camera's frame rate and spares a simulator the
pixels nobody uses; the region matrices are restricted to the window, so y is the same. A camera that refuses the
AOI (`DeviceError`) is read in full frames, cropped in software. The physics model computes the window alone too
(and the whole camera only for the blank SLM's total).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from hil.errors import ConfigError, DeviceError, DeviceWarning, FramesDropped
from hil.instruments import Camera, Instrument, SpatialLightModulator
from hil.physics.optics import (
    PLANE_DISTANCE_RANGE_M,
    SLM_PITCH_RANGE_M,
    TWO_PI,
    WAVELENGTH_RANGE_M,
    Window,
    angular_spectrum,
    beam_amplitude,
    camera_intensity,
    crop,
    grid_problem,
    large_empty,
    slm_phase,
    window_pixels,
    wrap_drive,
)
from hil.systems.base import PhysicalSystem, PhysicsModel, check_counts, check_in_range, is_count, is_number

#: Fixed seed of the probe patterns `calibrate` sets the working exposure on.
PROBE_SEED = 1288
#: The least signal (a fraction of the camera's full scale) the blank SLM's brightest pixel must show above its dark
#: level at the exposure the search found: 2 %, 82 DN of 4095 (the realistic simulated camera shows 4 DN with the
#: laser off, at its longest exposure of 1 s, dark current and the estimate's noise together).
MIN_SIGNAL_FRACTION = 0.02
#: Times one sequence is shown and captured before frames dropped on every try stop the run (`FramesDropped`): a
#: busy link loses a frame now and then, one that loses them three times in a row needs looking at.
CAPTURE_ATTEMPTS = 3
PROBES = 16
#: Frames per exposure of `calibrate`'s reference measurements (``reference_repeats``) by default. At most max_batch
#: may be asked for (all the frames are held at once: 10¹² ran out of memory), or this many where max_batch is smaller,
#: captured in several sequences: a bench whose SLM shows one pattern at a time (max_batch 1) calibrates by default.
REFERENCE_REPEATS = 16


def block_source(shape: tuple[int, int], block: int, panels: int, n_in: int, n_params: int) -> torch.Tensor:
    """Which value each SLM pixel shows (rows × cols, int64): 0 for a fixed zero phase, 1 + i for input x_i and
    1 + n_in + j for parameter θ_j, following the module's layout."""
    rows, cols = shape
    if cols % panels:
        raise ConfigError(f"SLM of {cols} columns does not split into {panels} panels", field="planes")
    width = cols // panels
    if block < 1 or rows % block or width % block:
        raise ConfigError(f"block {block} must divide the panel size {rows}×{width}", field="block")
    per_panel = (rows // block) * (width // block)
    if panels == 1 and n_in + n_params > per_panel:
        fix = _fix_fit(rows, width, block, n_in + n_params, 1, "n_in + n_params")
        raise ConfigError(f"n_in {n_in} + n_params {n_params} blocks do not fit: the panel holds {per_panel} "
                          f"blocks of {block} px; {fix}", field="n_params")
    if n_in > per_panel:
        raise ConfigError(f"n_in {n_in} inputs do not fit: panel 1 holds {per_panel} blocks of {block} px; "
                          f"{_fix_fit(rows, width, block, n_in, 1, 'n_in')}", field="n_in")
    if panels > 1 and n_params > per_panel * (panels - 1):
        raise ConfigError(f"n_params {n_params} do not fit: panels 2 to {panels} hold {per_panel * (panels - 1)} "
                          f"blocks of {block} px; {_fix_fit(rows, width, block, n_params, panels - 1, 'n_params')}",
                          field="n_params")
    panel_values = torch.zeros(panels, per_panel, dtype=torch.int64)
    panel_values[0, :n_in] = torch.arange(1, n_in + 1)
    thetas = torch.arange(n_in + 1, n_in + 1 + n_params)
    if panels == 1:
        panel_values[0, n_in:n_in + n_params] = thetas
    else:
        panel_values[1:].view(-1)[:n_params] = thetas
    grid = panel_values.reshape(panels, rows // block, width // block)
    grid = grid.repeat_interleave(block, 1).repeat_interleave(block, 2)  # panels × rows × width
    return grid.permute(1, 0, 2).reshape(rows, cols)


def _fix_fit(rows: int, width: int, block: int, needed: int, panels: int, values: str) -> str:
    """What to do where ``needed`` blocks (of ``values``) do not fit in ``panels`` panels of rows × width px at
    ``block`` px: give the largest smaller block (of 2 px or more) that divides the panel and holds them, else fewer
    values. A lab that sets one size (n_in: 64) keeps the others' defaults (block 8), which hold only the defaults."""
    for smaller in range(block - 1, 1, -1):
        holds = (rows // smaller) * (width // smaller) * panels
        if rows % smaller == 0 and width % smaller == 0 and holds >= needed:
            return f"give block: {smaller} (which holds {holds}), or fewer {values}"
    return f"give fewer {values}"


def encode(x: torch.Tensor, theta: torch.Tensor, source: torch.Tensor, x_phase_rad: float,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """SLM phases (batch × rows × cols, rad) for inputs x (batch × n_in) and parameters θ (n_params); written to
    ``out`` (batch × rows × cols, contiguous; no gradients) if given."""
    batch = len(x)
    values = torch.cat([x.new_zeros(batch, 1), x * x_phase_rad, theta.expand(batch, -1)], dim=1)
    if out is not None:
        torch.index_select(values, 1, source.reshape(-1), out=out.view(batch, -1))
        return out
    return values.index_select(1, source.reshape(-1)).reshape(batch, *source.shape)


def region_matrix(camera_shape: tuple[int, int], corners: list[tuple[int, int]], size: int) -> torch.Tensor:
    """The matrix (pixels × regions) whose product with flattened frames gives each square region's mean."""
    rows, cols = camera_shape
    off = off_camera(camera_shape, corners, size)
    if off is not None:
        top, left = corners[off]
        raise ConfigError(f"region of interest {off} at ({top}, {left}), {size} px wide, is off the {rows}×{cols} "
                          "camera", field="roi_px")
    matrix = torch.zeros(rows, cols, len(corners), dtype=torch.float32)
    for k, (top, left) in enumerate(corners):
        matrix[top:top + size, left:left + size, k] = 1 / size**2
    if (matrix > 0).sum(-1).max() > 1:
        raise ConfigError("regions of interest overlap; use fewer outputs, smaller roi_px or a larger radius",
                          field="roi_px")
    return matrix.reshape(rows * cols, len(corners))


def off_camera(camera_shape: tuple[int, int], corners: list[tuple[int, int]], size: int) -> int | None:
    """The first of the square regions of ``size`` px at ``corners`` (top, left) that is not wholly on the camera;
    None where all are."""
    rows, cols = camera_shape
    return next((k for k, (top, left) in enumerate(corners)
                 if top < 0 or left < 0 or top + size > rows or left + size > cols), None)


def _beam_is_finite(shape: tuple[int, int], waist_px: float) -> bool:
    """Whether the Gaussian beam of ``waist_px`` on an SLM of ``shape`` is finite everywhere (1e-300 px underflows to
    no light, 1e300 px overflows its square)."""
    try:
        return bool(beam_amplitude(shape, waist_px).isfinite().all())
    except OverflowError:
        return False


def check_regions_fit(camera_shape: tuple[int, int], n_out: int, size: int) -> None:
    """Refuse more square regions of ``size`` px than the camera holds side by side, before any are laid out."""
    rows, cols = camera_shape
    fit = (rows // size) * (cols // size)
    if n_out > fit:
        raise ConfigError(f"n_out {n_out} regions of interest of {size} px do not fit on the {rows}×{cols} camera "
                          f"(at most {fit}); use fewer outputs or a smaller roi_px", field="n_out")


def region_window(regions: torch.Tensor, camera_shape: tuple[int, int]) -> Window:
    """The bounding box (top, left, height, width) of the pixels a region matrix (pixels × regions) uses."""
    used = torch.nonzero(regions.reshape(*camera_shape, -1).ne(0).any(-1))
    (top, left), (bottom, right) = used.min(0).values.tolist(), used.max(0).values.tolist()
    return top, left, bottom - top + 1, right - left + 1


def ring_corners(camera_shape: tuple[int, int], n_out: int, size: int, radius_px: float) -> list[tuple[int, int]]:
    """Top-left corners of ``n_out`` squares of ``size`` px centred on a ring around the camera's centre pixel."""
    centre_row, centre_col = camera_shape[0] // 2, camera_shape[1] // 2
    corners = []
    for k in range(n_out):
        angle = TWO_PI * (k + 0.5) / n_out
        row = round(centre_row + radius_px * math.sin(angle))
        col = round(centre_col + radius_px * math.cos(angle))
        corners.append((row - size // 2, col - size // 2))
    return corners


def probe_inputs(n_in: int, n_params: int, x_bounds: tuple[float, float], theta_bounds: tuple[float, float],
                 count: int = PROBES) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded set of ``count`` (x, θ) probes spanning the bounds (θ one vector per probe)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    x = x_bounds[0] + (x_bounds[1] - x_bounds[0]) * torch.rand(count, n_in, generator=generator, dtype=torch.float32)
    theta = theta_bounds[0] + (theta_bounds[1] - theta_bounds[0]) * torch.rand(count, n_params, generator=generator,
                                                                                dtype=torch.float32)
    return x, theta


class SLMCameraSystem(PhysicalSystem):
    """Common machinery of systems made of an SLM and a camera: sequence capture, exposure search, signal rate.

    Works through the `SpatialLightModulator` and `Camera` capabilities only. Captures read ``window`` (set by
    subclasses: the bounding box of their regions of interest) through the camera's AOI, or the full frame where
    asked; a camera that refuses the AOI is read in full frames, cropped here (``camera_aoi`` becomes False).
    """

    theta_periodic = True  # θ are SLM phases
    #: The camera pixels the system reads, (top, left, height, width); None: the full frame.
    window: Window | None = None
    #: Whether the camera's AOI does the windowing (False after it refused it).
    camera_aoi: bool = True

    roles: ClassVar[dict[str, type[Instrument]]] = {"slm": SpatialLightModulator, "camera": Camera}

    def __init__(self, instruments: dict[str, Any], *, name: str, n_in: int, n_out: int, n_params: int,
                 x_phase_rad: float, waist_px: float | None, reference_repeats: int, max_batch: int | None):
        """θ are phases in [0, 2π] (periodic: training wraps them); x ∈ [0, 1] is shown as a phase up to
        ``x_phase_rad``; ``waist_px`` is the beam waist the model assumes (SLM px; None: a flat beam); a device call
        is at most ``max_batch`` patterns (None: the longest sequence both the SLM and the camera take)."""
        slm, camera = instruments.get("slm"), instruments.get("camera")
        largest = min(getattr(slm, "max_sequence", 1), getattr(camera, "max_frames", 1))
        if max_batch is not None and not is_count(max_batch):
            raise ConfigError(f"max_batch must be a positive integer, or null for the longest sequence ({largest}); "
                              f"got {max_batch!r}", field="max_batch")
        if waist_px is not None and not (is_number(waist_px) and waist_px > 0):
            raise ConfigError(f"waist_px must be a positive number of SLM pixels or null (a flat beam), got "
                              f"{waist_px!r}", field="waist_px")
        max_batch = largest if max_batch is None else min(max_batch, largest)
        super().__init__(instruments, name=name, n_in=n_in, n_out=n_out, n_params=n_params, x_bounds=(0.0, 1.0),
                         theta_bounds=(0.0, TWO_PI), max_batch=max_batch)
        if waist_px is not None and not _beam_is_finite(tuple(self.slm.shape), waist_px):  # type: ignore[arg-type]
            raise ConfigError(f"waist_px {waist_px:g} px gives no finite beam on the SLM (it underflows or overflows); "
                              "use a waist of a size an SLM could have, or null (a flat beam)", field="waist_px")
        self.waist_px = waist_px
        if not (is_number(x_phase_rad) and 0 < x_phase_rad <= TWO_PI):
            raise ConfigError(f"x_phase_rad {x_phase_rad!r} rad must be a number in (0, 2π]: x ∈ [0, 1] becomes a "
                              "phase of the SLM's range", field="x_phase_rad")
        self.x_phase_rad = float(x_phase_rad)
        phase = self.slm.limits["phase_rad"]
        if not phase.min <= 0.0 < TWO_PI <= phase.max:
            raise ConfigError(f"the SLM's phase limit {phase.describe()} must hold 0..2π rad: θ are phases over that "
                              "whole range", field="instruments.slm")
        if not is_count(reference_repeats, max(self.max_batch, REFERENCE_REPEATS)):  # its frames are held at once
            largest = f"max_batch ({self.max_batch})" if self.max_batch >= REFERENCE_REPEATS else REFERENCE_REPEATS
            raise ConfigError(f"reference_repeats must be a positive integer up to {largest}, got "
                              f"{reference_repeats!r}", field="reference_repeats")
        self.reference_repeats = reference_repeats
        self.reference_rate_dn_s: float | None = None
        #: The exposure (s) `calibrate` set: every device call captures at it, whatever the camera was set to since
        #: (another system sharing the camera, a bench camera connected anew by a resumed run).
        self.working_exposure_s: float | None = None
        #: Sequences shown and captured again because the camera dropped frames.
        self.recaptures = 0

    def read_regions(self, regions: torch.Tensor) -> None:
        """Read ``regions`` (camera pixels × outputs): ``window`` becomes their bounding box and ``regions`` their
        rows inside it (window pixels × outputs)."""
        camera_shape = tuple(self.camera.shape)
        self.window = region_window(regions, camera_shape)  # type: ignore[arg-type]
        self.regions = window_pixels(regions, camera_shape, self.window)  # type: ignore[arg-type]

    @property
    def slm(self) -> SpatialLightModulator:
        return self.instruments["slm"]  # type: ignore[return-value]

    @property
    def camera(self) -> Camera:
        return self.instruments["camera"]  # type: ignore[return-value]

    def capture(self, phases: torch.Tensor, exposure_s: float | None = None, full_frame: bool = False) -> torch.Tensor:
        """Show ``phases`` (N × rows × cols) as sequences of at most ``max_batch`` patterns and capture one frame
        each (external trigger): N × pixels of ``window`` (row-major), or of the whole camera with ``full_frame``;
        DN (float32)."""
        camera = self.camera
        left_to_crop = self._read_out(None if full_frame else self.window)
        if exposure_s is not None and camera.exposure_s != exposure_s:
            camera.set_exposure(exposure_s)
        if camera.trigger != "external":
            camera.set_trigger("external")
        captured = []
        for chunk in phases.split(self.max_batch):
            images = self._capture_sequence(chunk)
            frames = torch.as_tensor(images if isinstance(images, torch.Tensor) else np.asarray(images),
                                     dtype=torch.float32)
            captured.append(crop(frames, left_to_crop).reshape(len(chunk), -1))
        return captured[0] if len(captured) == 1 else torch.cat(captured)

    def _capture_sequence(self, phases: torch.Tensor) -> Any:
        """Show ``phases`` as one sequence and capture a frame of each; a capture that drops frames is repeated,
        with a `DeviceWarning` (counted in ``recaptures``), up to `CAPTURE_ATTEMPTS` tries in all."""
        tries = 1
        while True:
            self.slm.show_sequence(phases)
            try:
                return self.camera.capture(len(phases)).images
            except FramesDropped as error:
                if tries == CAPTURE_ATTEMPTS:
                    raise FramesDropped(f"{error}, on each of {CAPTURE_ATTEMPTS} tries of the same sequence; check "
                                        "the camera's link (cable, bandwidth, other devices on its bus)") from None
                tries += 1
                self.recaptures += 1
                warnings.warn(f"{error}; showing the {len(phases)} patterns again (try {tries} of "
                              f"{CAPTURE_ATTEMPTS})", DeviceWarning, stacklevel=2)

    def _read_out(self, window: Window | None) -> Window | None:
        """Set the camera's AOI to ``window`` (None: the full frame). Returns the crop left to do on the frames:
        the window if the camera has refused the AOI (it then reads full frames), else None."""
        camera = self.camera
        if window is not None and self.camera_aoi:
            if camera.roi is None or tuple(camera.roi) != tuple(window):
                try:
                    camera.set_roi(*window)
                except DeviceError:
                    self.camera_aoi = False
            if self.camera_aoi:
                return None
        if camera.roi is not None:
            camera.set_roi(None)
        return window

    def find_exposure(self, phases: torch.Tensor, start_s: float, target: float = 0.5,
                      full_frame: bool = False) -> float:
        """The exposure (s) at which the brightest pixel over ``phases`` (in ``window``, or in the full frame)
        sits near ``target`` × the camera's full scale (`Camera.full_scale_dn`).

        A brightest pixel that hardly grows as the exposure grows is saturated below that full scale (a full well
        that fills before the ADC's range): `DeviceError`, since every exposure found from it would saturate. The
        search stays at or above twice the camera's shortest exposure, so that `signal_rate` can halve what it finds;
        light that saturates the camera there is a `DeviceError` too.
        """
        limit = self.camera.limits["exposure_s"]
        shortest = min(2 * limit.min, limit.max)
        exposure = min(max(start_s, shortest), limit.max)
        top = self.camera.full_scale_dn
        below: tuple[float, float] | None = None  # (exposure s, peak DN) of the last capture below full scale
        for _ in range(12):
            peak = float(self.capture(phases, exposure, full_frame).max())
            if peak >= 0.98 * top:
                if exposure <= shortest:
                    raise DeviceError(f"system {self.name!r}: the camera saturates at {shortest:g} s exposure, twice "
                                      "its shortest; attenuate the light on it (a neutral-density filter, less laser "
                                      "power) or lower its gain")
                proposal, below = exposure / 8, None
            else:
                if peak <= 0:
                    raise DeviceError(f"system {self.name!r}: no light on the camera at {exposure:g} s exposure")
                if below is not None:
                    self._refuse_plateau(*below, exposure, peak, top)
                if abs(peak / top - target) < 0.1:
                    return exposure
                proposal, below = exposure * target * top / peak, (exposure, peak)
            proposal = min(max(proposal, shortest), limit.max)
            if proposal == exposure:
                return exposure
            exposure = proposal
        return exposure

    def _refuse_plateau(self, shorter_s: float, shorter_peak: float, exposure_s: float, peak: float,
                        top: float) -> None:
        """Raise if the camera saturates below ``top`` (DN): the peak grew by under a quarter of (growth − 1) × the
        shorter exposure's peak, which is above a tenth of ``top`` (not the dark level: in dim light that peak is
        mostly dark offset, which does not grow). A linear pixel grows by (growth − 1) × its signal, more than that
        while its dark offset is under three quarters of the peak."""
        growth = exposure_s / shorter_s
        if growth >= 1.2 and shorter_peak >= 0.1 * top and peak - shorter_peak < 0.25 * (growth - 1) * shorter_peak:
            raise DeviceError(f"system {self.name!r}: the brightest pixel read {shorter_peak:.0f} DN at "
                              f"{shorter_s * 1e3:.3g} ms and {peak:.0f} DN at {exposure_s * 1e3:.3g} ms exposure: "
                              "the camera saturates below "
                              f"the {top:.0f} DN it reports as full scale; set the driver's saturation_dn to that "
                              "level, or a camera gain at which the full well fills the ADC's range")

    def signal_rate(self, phases: torch.Tensor, exposure_s: float, repeats: int,
                    full_frame: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pixel signal rate (DN/s), dark intercept (DN) and the rate's standard error (DN/s) of one pattern
        (rows × cols), over ``window`` (or the full frame), from ``repeats`` frames at ``exposure_s`` and at half
        of it: the difference cancels the camera's dark offset."""
        sequence = phases.expand(repeats, *phases.shape)
        high = self.capture(sequence, exposure_s, full_frame)
        low = self.capture(sequence, exposure_s / 2, full_frame)
        spread = (high.var(0) + low.var(0)) / repeats if repeats > 1 else torch.zeros(high.shape[1],
                                                                                       dtype=torch.float32)
        high, low = high.mean(0), low.mean(0)
        return (high - low) / (exposure_s / 2), 2 * low - high, spread.sqrt() / (exposure_s / 2)

    def working_point(self, first_exposure_s: float, probe_factor: float) -> tuple[float, float, torch.Tensor]:
        """Measure the blank SLM's total signal rate R (DN/s, kept as ``reference_rate_dn_s``) at an exposure
        found from ``first_exposure_s``, then set the working exposure on seeded probe patterns, searched from
        ``probe_factor`` × that exposure. Everything here reads the full frame (R is the whole camera's rate).
        Returns (reference exposure s, working exposure s, dark level per camera pixel in DN)."""
        self.reference_rate_dn_s = self.working_exposure_s = None  # until found: a failure leaves none to run on
        blank = torch.zeros(1, *self.slm.shape, dtype=torch.float32)
        reference_s = self.find_exposure(blank, start_s=max(self.camera.limits["exposure_s"].min, first_exposure_s),
                                         full_frame=True)
        rate, intercept, _ = self.signal_rate(blank[0], reference_s, self.reference_repeats, full_frame=True)
        signal = float((rate * reference_s).max())
        top = self.camera.full_scale_dn
        if signal < MIN_SIGNAL_FRACTION * top:
            raise DeviceError(f"system {self.name!r}: the camera sees almost no light: at {reference_s:g} s exposure "
                              f"its brightest pixel rises {max(signal, 0):.0f} DN above its dark level, of "
                              f"{top:.0f} DN full scale; is the laser on and its beam on the camera? If it is, raise "
                              "the laser power or the camera's gain")
        x, theta = probe_inputs(self.n_in, self.n_params, self.x_bounds, self.theta_bounds)
        probes = torch.cat([self.patterns(x[i:i + 1], theta[i]) for i in range(len(x))])
        exposure = self.find_exposure(probes, start_s=reference_s * probe_factor, full_frame=True)
        self.camera.set_exposure(exposure)
        self.reference_rate_dn_s, self.working_exposure_s = float(rate.sum()), exposure
        return reference_s, exposure, intercept

    def working_exposure(self) -> float:
        """The working exposure (s) a device call captures at: ``working_exposure_s``, or the camera's present one
        for a system restored from a checkpoint of an earlier hil, which kept none (it ran at the camera's). Where
        the camera has none either (a bench camera connected anew by the resume), `DeviceError`."""
        if self.working_exposure_s is None:
            if self.camera.exposure_s is None:
                raise DeviceError(f"system {self.name!r}: no working exposure: it was restored from a checkpoint of an "
                                  "earlier hil, which kept none, and the camera, connected anew, has none set; resume "
                                  "the run with the hil that started it, or start a new run from the protocol")
            self.working_exposure_s = self.camera.exposure_s
        return self.working_exposure_s


class OpticalSystem(SLMCameraSystem):
    """x and θ as phase blocks on an SLM, Fourier-transformed onto a camera, y from regions of interest.

    Settings: ``n_in``, ``n_out``, ``n_params``; the layout ``block``, ``planes`` and ``x_phase_rad``; the regions
    ``roi_px`` and ``roi_radius_px``; the bench geometry the physics model assumes: ``fft_size`` (Fourier-plane
    samples per side, see `hil.physics.optics`), ``waist_px`` (beam waist in SLM pixels; None: flat),
    and for stacked planes ``plane_distance_m``, ``wavelength_m``, ``slm_pitch_m``; ``max_batch`` (default: what
    one SLM sequence and one capture hold).
    """

    kind = "optical"

    def __init__(self, instruments: dict[str, Any], *, name: str = "", n_in: int = 16, n_out: int = 10,
                 n_params: int = 48, block: int = 8, planes: int = 1, x_phase_rad: float = math.pi,
                 roi_px: int = 5, roi_radius_px: float = 12.0, fft_size: int = 256, waist_px: float | None = 25.0,
                 plane_distance_m: float = 5e-3, wavelength_m: float = 532e-9, slm_pitch_m: float = 8e-6,
                 reference_repeats: int = REFERENCE_REPEATS, max_batch: int | None = None):
        check_counts(block=block, planes=planes, fft_size=fft_size)
        for label, value, bounds in (("plane_distance_m", plane_distance_m, PLANE_DISTANCE_RANGE_M),
                                     ("wavelength_m", wavelength_m, WAVELENGTH_RANGE_M),
                                     ("slm_pitch_m", slm_pitch_m, SLM_PITCH_RANGE_M)):
            check_in_range(label, value, bounds, "m")
        super().__init__(instruments, name=name, n_in=n_in, n_out=n_out, n_params=n_params, x_phase_rad=x_phase_rad,
                         waist_px=waist_px, reference_repeats=reference_repeats, max_batch=max_batch)
        shape, camera_shape = tuple(self.slm.shape), tuple(self.camera.shape)
        self.source = block_source(shape, block, planes, n_in, n_params)  # type: ignore[arg-type]
        self.block, self.planes = block, planes
        self.fft_size = fft_size
        self.plane_distance_m, self.wavelength_m, self.slm_pitch_m = plane_distance_m, wavelength_m, slm_pitch_m
        problem = planes > 1 and grid_problem((shape[0], shape[1] // planes), slm_pitch_m, wavelength_m,
                                              plane_distance_m)
        if problem:
            raise ConfigError(f"plane_distance_m {plane_distance_m:g} m {problem}; shorten it, or check slm_pitch_m "
                              "and wavelength_m", field="plane_distance_m")
        if max(camera_shape) > fft_size:
            raise ConfigError(f"camera {camera_shape} is larger than the Fourier plane ({fft_size} samples)",
                              field="fft_size")
        self.camera_shape: tuple[int, int] = camera_shape  # type: ignore[assignment]
        if not is_count(roi_px):
            raise ConfigError(f"roi_px must be a whole number of pixels, at least 1; got {roi_px!r}", field="roi_px")
        if not (is_number(roi_radius_px) and roi_radius_px >= 0):
            raise ConfigError(f"roi_radius_px must be a finite distance ≥ 0 px; got {roi_radius_px!r}",
                              field="roi_radius_px")
        check_regions_fit(camera_shape, n_out, roi_px)  # type: ignore[arg-type]
        corners = ring_corners(camera_shape, n_out, roi_px, roi_radius_px)  # type: ignore[arg-type]
        if off_camera(camera_shape, corners, roi_px) is not None:  # type: ignore[arg-type]
            rows, cols = camera_shape
            raise ConfigError(f"roi_radius_px {roi_radius_px:g} px puts regions of interest off the {rows}×{cols} "
                              "camera; give a smaller radius (or a smaller roi_px)", field="roi_radius_px")
        self.read_regions(region_matrix(camera_shape, corners, roi_px))  # type: ignore[arg-type]
        self.output_scale = (fft_size / block) ** 2
        self.dark_dn: torch.Tensor | None = None

    # -- the device ---------------------------------------------------------------------------------------------
    def patterns(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The SLM phases (batch × rows × cols) that encode x and θ (a fresh tensor, no gradients)."""
        return encode(x, theta, self.source, self.x_phase_rad, out=large_empty(len(x), *self.source.shape))

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.reference_rate_dn_s is None:
            self.calibrate()
        exposure = self.working_exposure()
        frames = self.capture(self.patterns(x, theta), exposure)
        return (frames @ self.regions).mul_(self.output_scale / (exposure * self.reference_rate_dn_s))

    def _calibrate(self) -> dict[str, Any]:
        """Measure the blank SLM's signal rate R and the dark level, then set the working exposure (see module)."""
        reference_s, exposure, self.dark_dn = self.working_point(first_exposure_s=1e-4, probe_factor=20)
        return {"exposure_s": exposure, "reference_rate_dn_per_s": self.reference_rate_dn_s,
                "reference_exposure_s": reference_s, "dark_level_dn": float(self.dark_dn.mean())}

    # -- models -------------------------------------------------------------------------------------------------
    def physics_model(self) -> OpticalModel:
        """Nominal physics: ideal LUT, no crosstalk, no zero order, aligned camera, uniform gain, scale 1, and the
        dark offsets measured by `calibrate` (zero before it)."""
        offset = torch.zeros(self.n_out, dtype=torch.float32)
        if self.dark_dn is not None and self.reference_rate_dn_s is not None:
            offset = self.output_scale * (self._in_window(self.dark_dn) @ self.regions) \
                / (self.working_exposure() * self.reference_rate_dn_s)
        transfer = None
        if self.planes > 1:
            width = self.slm.shape[1] // self.planes
            transfer = angular_spectrum((self.slm.shape[0], width), self.slm_pitch_m, self.wavelength_m,
                                        self.plane_distance_m)
        return OpticalModel(source=self.source, x_phase_rad=self.x_phase_rad, levels=2**self.slm.bit_depth,
                            regions=self.regions, window=self.window,
                            camera_shape=self.camera_shape, fft_size=self.fft_size, waist_px=self.waist_px,
                            planes=self.planes, transfer=transfer, output_scale=self.output_scale, offset=offset)

    def _in_window(self, values: torch.Tensor) -> torch.Tensor:
        """Per-pixel values of the whole camera (rows × cols, or flat) restricted to ``window`` (flat)."""
        return window_pixels(values.reshape(-1), self.camera_shape, self.window)  # type: ignore[arg-type]

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        """The world's hidden values in the model's terms, at the working exposure (needs `calibrate`)."""
        if self.reference_rate_dn_s is None:
            raise DeviceError(f"system {self.name!r}: calibrate() before asking for the oracle")
        hidden = world.hidden_parameters()
        exposure = self.working_exposure()
        model = self.physics_model()
        with torch.no_grad():
            model.load_hidden({"shift_px": hidden["shift_px"], "pixel_gain": hidden["pixel_gain"]})
            blank_total = float(model.blank_total())
        dark = hidden["dark_dn"] + hidden["dark_rate_dn_per_s"] * exposure
        offset = self.output_scale * (self._in_window(dark) @ self.regions) / (exposure * self.reference_rate_dn_s)
        return {
            "lut_gain": hidden["lut_gain"], "lut_bow_rad": hidden["lut_bow_rad"],
            "crosstalk_var_px2": hidden["crosstalk_var_px2"], "zero_order": hidden["zero_order"],
            "shift_px": hidden["shift_px"], "pixel_gain": hidden["pixel_gain"],
            "scale": hidden["signal_rate_dn_per_s"] * blank_total / self.reference_rate_dn_s, "offset": offset,
        }


class OpticalModel(PhysicsModel):
    """The optical system's noiseless physics (`hil.physics.optics`) with the bench's calibration as parameters:
    ``lut_gain``, ``lut_bow_rad`` (rad), ``crosstalk_var_px2`` (variance of the crosstalk blur, SLM px²),
    ``zero_order``, ``shift_px`` (camera px, dy and dx), ``pixel_gain`` (per camera pixel), ``scale`` and ``offset``
    (per output). ``regions`` (pixels × outputs) cover the camera ``window`` (None: the whole camera), the only
    pixels `forward` computes. It computes at the precision of its parameters (float32 as built; ``.double()`` or
    ``.to(torch.float64)``: float64 and complex128), or of x and θ where theirs is higher. The free-space
    ``transfer`` between stacked panels is held as real and imaginary parts (rows × cols × 2), so that a change of
    dtype converts it too (``Module.to`` drops a complex buffer's imaginary part)."""

    def __init__(self, *, source: torch.Tensor, x_phase_rad: float, levels: int, regions: torch.Tensor,
                 camera_shape: tuple[int, int], fft_size: int, waist_px: float | None, planes: int,
                 transfer: torch.Tensor | None, output_scale: float, offset: torch.Tensor,
                 window: Window | None = None):
        super().__init__()
        self.x_phase_rad, self.levels, self.camera_shape, self.fft_size = x_phase_rad, levels, camera_shape, fft_size
        self.planes, self.output_scale, self.window = planes, output_scale, window
        self.register_buffer("source", source)
        self.register_buffer("regions", regions)
        rows, cols = source.shape
        self.register_buffer("beam", beam_amplitude((rows, cols // planes), waist_px))
        self.register_buffer("transfer", None if transfer is None else torch.view_as_real(transfer))
        self.register_load_state_dict_pre_hook(_transfer_as_real)
        self.lut_gain = nn.Parameter(torch.tensor(1.0, dtype=torch.float32))
        self.lut_bow_rad = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))
        self.crosstalk_var_px2 = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))
        self.zero_order = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))
        self.shift_px = nn.Parameter(torch.zeros(2, dtype=torch.float32))
        self.pixel_gain = nn.Parameter(torch.ones(camera_shape, dtype=torch.float32))
        self.scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float32))
        self.offset = nn.Parameter(offset.clone().to(torch.float32))

    def intensity(self, drive_rad: torch.Tensor, window: Window | None = None) -> torch.Tensor:
        """Camera intensity (batch × camera rows × cols, or the ``window``'s) for SLM drives (batch × rows × cols,
        rad)."""
        phase = slm_phase(drive_rad, gain=self.lut_gain, bow_rad=self.lut_bow_rad,
                          crosstalk_var_px2=self.crosstalk_var_px2)
        return camera_intensity(phase, beam=self.beam, zero_order=self.zero_order, fft_size=self.fft_size,
                                camera_shape=self.camera_shape, shift_px=self.shift_px, planes=self.planes,
                                transfer=None if self.transfer is None else torch.view_as_complex(self.transfer),
                                window=window)

    def blank_total(self) -> torch.Tensor:
        """Σ over the whole camera of g·I for a blank SLM: the model's counterpart of the measured rate R."""
        blank = torch.zeros(1, *self.source.shape, dtype=self.pixel_gain.dtype)
        return (self.intensity(blank)[0] * self.pixel_gain).sum()

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        phases = encode(x, theta, self.source, self.x_phase_rad)
        phases = phases.to(torch.promote_types(phases.dtype, self.pixel_gain.dtype))
        intensity = self.intensity(wrap_drive(phases, self.levels), self.window) * crop(self.pixel_gain, self.window)
        means = intensity.reshape(len(x), -1) @ self.regions
        return self.scale * self.output_scale * means / self.blank_total() + self.offset


def _transfer_as_real(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load a state saved with the transfer function as a complex tensor (before it was held as real parts)."""
    transfer = state_dict.get(prefix + "transfer")
    if isinstance(transfer, torch.Tensor) and transfer.is_complex():
        state_dict[prefix + "transfer"] = torch.view_as_real(transfer)
