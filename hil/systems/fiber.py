"""The fiber system: x and θ as phases of SLM macro-pixels coupled into a multimode fiber, y from the speckle.

Layout. The SLM is cut into ``block`` × ``block`` macro-pixels, numbered row-major. The first ``n_in`` show the
inputs, phase = ``x_phase_rad``·x (x ∈ [0, 1]); the next ``n_params`` show θ (rad, θ ∈ [0, 2π]); the rest (at
least one) always show 0 and serve as the reference field of the transmission-matrix measurement. A batch is
one SLM sequence, played one pattern per camera frame (external trigger).

Outputs. y_k is the mean of camera region of interest k (``roi_px`` squares on a regular grid over the camera),

    y_k = n_pixels · mean_ROI_k(DN) / (exposure_s · R),

R (DN/s) the camera's total signal rate for a blank SLM, measured by `calibrate`: y ≈ 1 for light spread evenly.

Physics model. The light in a region pixel is |Σ_j T_ij u_j|², u_j the macro-pixel amplitudes of the SLM field
(`hil.physics.fiber.macro_pixel_field`, unit beam power) and T the transmission matrix onto the region pixels in
y units (learnable ``tm_real`` + i·``tm_imag``); then y_k = mean_ROI_k |T u|² + offset_k. The SLM's LUT,
crosstalk and zero order are further calibration parameters.

`calibrate` (run at the first `forward` if not called): R from a blank SLM at two exposures (the difference
cancels the dark offset); the working exposure (brightest pixel near half of full scale over fixed probe
patterns); then the transmission matrix onto the region pixels by phase stepping (Popoff et al., Phys. Rev. Lett.
104, 100601, 2010): the modulated macro-pixels show the rows of a Hadamard matrix (phases 0 or π) plus a common
step α ∈ {0, π/2, π, 3π/2} against the reference macro-pixels, giving conj(r_i)·(T s)_i. The reference intensity
|r_i|² and the dark level come from the reference alone at two exposures, the modulated macro-pixels showing a
grating that couples no light; where |r_i|² is within twice its noise the row is damped (Tikhonov). The physics
model's nominal T and offsets are these measurements.

Area of interest. R and the working exposure are measured on the full frame; every other capture (the reference,
the phase stepping, `forward`) reads only ``window``, the bounding box of the regions, through the camera's AOI
(see `hil.systems.optical.SLMCameraSystem`); the regions are restricted to it, so y is the same.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hil.errors import ConfigError, DeviceError
from hil.physics.fiber import fiber_intensity, macro_amplitudes
from hil.physics.optics import TWO_PI, beam_amplitude, large_empty, wrap_drive
from hil.systems.base import PhysicsModel, check_counts
from hil.systems.optical import (
    REFERENCE_REPEATS,
    SLMCameraSystem,
    block_source,
    check_regions_fit,
    encode,
    region_matrix,
)

PHASE_STEPS = (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)


def hadamard(n: int) -> torch.Tensor:
    """The n × n Sylvester Hadamard matrix (n a power of two), entries ±1."""
    matrix = torch.ones(1, 1, dtype=torch.float32)
    while len(matrix) < n:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)])
    return matrix


def grid_corners(camera_shape: tuple[int, int], n_out: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of ``n_out`` squares of ``size`` px spread on a regular grid over the camera."""
    side = math.ceil(math.sqrt(n_out))
    rows, cols = camera_shape
    return [(round((k // side + 0.5) * rows / side) - size // 2, round((k % side + 0.5) * cols / side) - size // 2)
            for k in range(n_out)]


class FiberSystem(SLMCameraSystem):
    """x and θ as SLM macro-pixel phases, through a multimode fiber, y from camera regions of the speckle.

    Settings: ``n_in``, ``n_out``, ``n_params``; ``block`` (macro-pixel side, SLM px, at least 2), ``x_phase_rad``;
    ``roi_px`` (region side, camera px); ``waist_px`` (the beam waist the model assumes, SLM px; None: flat);
    ``reference_repeats`` (frames per exposure for the rate and reference measurements); ``max_batch``.
    """

    kind = "fiber"

    def __init__(self, instruments: dict[str, Any], *, name: str = "", n_in: int = 16, n_out: int = 8,
                 n_params: int = 16, block: int = 8, x_phase_rad: float = math.pi, roi_px: int = 4,
                 waist_px: float | None = 25.0, reference_repeats: int = REFERENCE_REPEATS,
                 max_batch: int | None = None):
        check_counts(roi_px=roi_px, block=block)
        if block == 1:
            raise ConfigError("block 1 px cannot show a grating that couples no light, which measuring the "
                              "transmission matrix needs; use block 2 or more", field="block")
        super().__init__(instruments, name=name, n_in=n_in, n_out=n_out, n_params=n_params, x_phase_rad=x_phase_rad,
                         waist_px=waist_px, reference_repeats=reference_repeats, max_batch=max_batch)
        shape, camera_shape = tuple(self.slm.shape), tuple(self.camera.shape)
        self.source = block_source(shape, block, 1, n_in, n_params)  # type: ignore[arg-type]
        self.n_macro = (shape[0] // block) * (shape[1] // block)
        self.n_modulated = n_in + n_params
        if self.n_modulated >= self.n_macro:
            raise ConfigError(f"n_in + n_params = {self.n_modulated} leave no reference macro-pixel out of "
                              f"{self.n_macro}; use fewer or a smaller block", field="n_params")
        self.block = block
        dark = int((macro_amplitudes(self._beam(), block) == 0).sum())
        if dark:
            raise ConfigError(f"waist_px {waist_px:g} px leaves {dark} of {self.n_macro} macro-pixels without light "
                              "(their beam amplitude underflows), which the model cannot divide out; use a wider waist "
                              "or null (a flat beam)", field="waist_px")
        check_regions_fit(camera_shape, n_out, roi_px)  # type: ignore[arg-type]
        regions = region_matrix(camera_shape, grid_corners(camera_shape, n_out, roi_px), roi_px)  # type: ignore[arg-type]
        self.region_pixels = (regions.sum(1) > 0).nonzero().squeeze(1)  # in the whole camera's frame
        self.region_weights = regions[self.region_pixels]  # region pixels × n_out
        self.read_regions(regions)
        self.window_region_pixels = (self.regions.sum(1) > 0).nonzero().squeeze(1)  # in the window's frames
        self.n_pixels = camera_shape[0] * camera_shape[1]
        rows, cols = shape
        blocks = torch.arange(self.n_macro).reshape(rows // block, cols // block)
        self.macro_index = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)
        self.transmission: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None

    # -- the device ---------------------------------------------------------------------------------------------
    def patterns(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The SLM phases (batch × rows × cols) that encode x and θ (a fresh tensor, no gradients)."""
        return encode(x, theta, self.source, self.x_phase_rad, out=large_empty(len(x), *self.source.shape))

    def _scale(self, exposure_s: float) -> float:
        assert self.reference_rate_dn_s is not None
        return self.n_pixels / (exposure_s * self.reference_rate_dn_s)

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.transmission is None:
            self.calibrate()
        exposure = self.working_exposure()
        frames = self.capture(self.patterns(x, theta), exposure)
        return (frames @ self.regions).mul_(self._scale(exposure))

    def _macro_patterns(self, phases: torch.Tensor) -> torch.Tensor:
        """SLM patterns (N × rows × cols) from macro-pixel phases (N × n_macro)."""
        return phases.index_select(1, self.macro_index.reshape(-1)).reshape(len(phases), *self.macro_index.shape)

    def _beam(self) -> torch.Tensor:
        return beam_amplitude(tuple(self.slm.shape), self.waist_px)  # type: ignore[arg-type]

    def _grating_off(self) -> torch.Tensor:
        """The reference alone: modulated macro-pixels show a grating whose mean field over a macro-pixel is 0 (a
        period of 4, 2 or ``block`` columns: a block of 1 px has none, and is refused)."""
        period = 4 if self.block % 4 == 0 else 2 if self.block % 2 == 0 else self.block
        columns = torch.arange(self.slm.shape[1]) % period
        grating = (TWO_PI * columns / period).expand(*self.slm.shape)
        modulated = self.macro_index < self.n_modulated
        return torch.where(modulated, grating, 0.0).to(torch.float32)

    def _calibrate(self) -> dict[str, Any]:
        """Measure R, set the working exposure and measure the transmission matrix (see module)."""
        self.transmission = None  # until measured again: a calibration that fails leaves none to run on
        reference_s, exposure, _ = self.working_point(first_exposure_s=1e-3, probe_factor=1)
        scale = self._scale(exposure)
        pixels = self.window_region_pixels

        # the reference alone (|r_i|², in y units per pixel), its standard error, and the dark intercept
        reference_rate, intercept, error = self.signal_rate(self._grating_off(), exposure, self.reference_repeats)
        reference_power = (reference_rate[pixels] * exposure * scale).clamp(min=0)
        reference = reference_power.sqrt()  # |r_i|
        damping = 2 * error[pixels] * exposure * scale  # Tikhonov term: pixels with a reference lost in noise

        # phase stepping against the reference
        size = 1 << (self.n_modulated - 1).bit_length()
        signs = hadamard(size)[:, :self.n_modulated]
        steps = torch.tensor(PHASE_STEPS, dtype=torch.float32)
        phases = torch.zeros(size, len(steps), self.n_macro, dtype=torch.float32)
        phases[..., :self.n_modulated] = torch.remainder(math.pi * (1 - signs)[:, None, :] / 2
                                                         + steps[None, :, None], TWO_PI)
        frames = torch.cat([self.capture(self._macro_patterns(chunk), exposure)[:, pixels]  # a sequence's patterns
                            for chunk in phases.reshape(-1, self.n_macro).split(self.max_batch)])
        intensity = frames.reshape(size, len(steps), -1) * scale
        rotation = torch.polar(torch.ones(len(steps), dtype=torch.float32), -steps) / len(steps)
        product = torch.einsum("hkp,k->ph", intensity.to(torch.complex64), rotation)  # conj(r_i)·(T s_h)_i
        weight = reference / (reference_power + damping).clamp(min=1e-30)  # 1/|r_i|, damped where |r_i|² ≲ noise
        measured = product @ signs.to(torch.complex64) / size * weight[:, None]  # T_ij·conj(r_i)/|r_i|

        amplitude = macro_amplitudes(self._beam(), self.block)  # u_j of a macro-pixel at phase 0
        n_reference = self.n_macro - self.n_modulated
        transmission = torch.empty(len(pixels), self.n_macro, dtype=torch.complex64)
        transmission[:, :self.n_modulated] = measured / amplitude[:self.n_modulated]
        transmission[:, self.n_modulated:] = reference.to(torch.complex64)[:, None] \
            / (n_reference * amplitude[self.n_modulated:])[None, :]
        self.transmission = transmission
        self.offset = (intercept[pixels] * scale) @ self.region_weights
        return {"exposure_s": exposure, "reference_rate_dn_per_s": self.reference_rate_dn_s,
                "reference_exposure_s": reference_s, "transmission_patterns": size * len(steps)}

    # -- models -------------------------------------------------------------------------------------------------
    def physics_model(self) -> FiberModel:
        """Nominal physics: the transmission matrix and offsets measured by `calibrate` (which must have run),
        an ideal LUT, no crosstalk and no zero order."""
        if self.transmission is None or self.offset is None:
            raise DeviceError(f"system {self.name!r}: the fiber's transmission matrix is unknown; call calibrate()")
        return FiberModel(source=self.source, x_phase_rad=self.x_phase_rad, levels=2**self.slm.bit_depth,
                          block=self.block,
                          amplitudes=macro_amplitudes(self._beam(), self.block),
                          region_weights=self.region_weights, transmission=self.transmission, offset=self.offset)

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        """The world's hidden values in the model's terms, at the working exposure (needs `calibrate`). The model's
        beam (``waist_px``) need not be the world's: the light reaches the camera as T·diag(a), so the world's
        macro-pixel amplitudes over the model's are folded into the transmission matrix."""
        hidden = world.hidden_parameters()
        if hidden["macro_px"] != self.block:  # known before calibrating: hil check says it, not the run's fit step
            raise ConfigError(f"block {self.block} differs from the fiber's macro-pixels ({hidden['macro_px']} px), "
                              f"which an oracle twin cannot represent; give the system block: {hidden['macro_px']}, "
                              "or another twin kind")
        if self.reference_rate_dn_s is None:
            raise DeviceError(f"system {self.name!r}: calibrate() before asking for the oracle")
        exposure = self.working_exposure()
        scale = self._scale(exposure)
        pixels = self.region_pixels
        gain = hidden["pixel_gain"].reshape(-1)[pixels]
        weight = (scale * exposure * hidden["signal_rate_dn_per_s"] * gain).sqrt()
        transmission = hidden["transmission"][pixels] * weight[:, None].to(torch.complex64)
        beam = getattr(world, "macro_amplitudes", None)  # the world's beam; the model's is waist_px's
        if beam is not None:  # only T·diag(a) reaches the camera: fold the ratio of the beams into T
            transmission = transmission * (beam / macro_amplitudes(self._beam(), self.block)).to(torch.complex64)
        dark = (hidden["dark_dn"] + hidden["dark_rate_dn_per_s"] * exposure).reshape(-1)[pixels]
        return {
            "lut_gain": hidden["lut_gain"], "lut_bow_rad": hidden["lut_bow_rad"],
            "crosstalk_var_px2": hidden["crosstalk_var_px2"], "zero_order": hidden["zero_order"],
            "tm_real": transmission.real, "tm_imag": transmission.imag, "offset": (dark * scale) @ self.region_weights,
        }


class FiberModel(PhysicsModel):
    """The fiber system's noiseless physics (`hil.physics.fiber`) with the bench's calibration as parameters:
    the transmission matrix onto the region pixels in y units (``tm_real``, ``tm_imag``: pixels × macro-pixels),
    ``offset`` per output, and the SLM's ``lut_gain``, ``lut_bow_rad``, ``crosstalk_var_px2``, ``zero_order``. It
    computes at the precision of its parameters (float32 as built; ``.double()``: float64 and complex128), or of x
    and θ where theirs is higher."""

    def __init__(self, *, source: torch.Tensor, x_phase_rad: float, levels: int, block: int,
                 amplitudes: torch.Tensor, region_weights: torch.Tensor, transmission: torch.Tensor,
                 offset: torch.Tensor):
        super().__init__()
        self.x_phase_rad, self.levels, self.block = x_phase_rad, levels, block
        self.register_buffer("source", source)
        self.register_buffer("amplitudes", amplitudes)
        self.register_buffer("region_weights", region_weights)
        self.tm_real = nn.Parameter(transmission.real.clone().to(torch.float32))
        self.tm_imag = nn.Parameter(transmission.imag.clone().to(torch.float32))
        self.offset = nn.Parameter(offset.clone().to(torch.float32))
        self.lut_gain = nn.Parameter(torch.tensor(1.0, dtype=torch.float32))
        self.lut_bow_rad = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))
        self.crosstalk_var_px2 = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))
        self.zero_order = nn.Parameter(torch.tensor(0.0, dtype=torch.float32))

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        phases = encode(x, theta, self.source, self.x_phase_rad)
        drive = wrap_drive(phases.to(torch.promote_types(phases.dtype, self.tm_real.dtype)), self.levels)
        transmission = torch.complex(self.tm_real, self.tm_imag)
        intensity = fiber_intensity(drive, amplitudes=self.amplitudes, transmission=transmission, block=self.block,
                                    gain=self.lut_gain, bow_rad=self.lut_bow_rad,
                                    crosstalk_var_px2=self.crosstalk_var_px2, zero_order=self.zero_order)
        return intensity @ self.region_weights + self.offset
