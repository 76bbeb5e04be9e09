"""A simulated multimode fiber bench: SLM → fiber → camera, served by `SimulatedSLM` and `SimulatedCamera`.

The SLM and the camera are those of `simulators.optical.SLMCameraWorld` (LUT error, crosstalk, zero order,
quantisation, flicker, the EMVA 1288 camera, laser power wander). Between them, the noiseless physics of
`hil.physics.fiber`: the SLM is coarse-grained into ``macro_px`` × ``macro_px`` macro-pixels that couple
into the fiber's modes through a fixed random coupling C (orthonormal rows or columns times √η, η the
``coupling_efficiency``, a fraction of the power); the fiber mixes the modes with a fixed random transmission
matrix M = U·diag(√τ)·V (U, V Haar unitary, τ the modes' transmissions spread over ``mode_dependent_loss_db``);
each output mode makes a fixed random speckle on the camera (orthonormal columns S, grains of
``speckle_grain_px``). Non-idealities beyond the SLM's and the camera's:

- *construction*: the mode-dependent loss (the coupling, the transmission matrix and the speckle basis are the
  fiber itself, hidden but not errors);
- *slow state*: every mode's phase drifts (an Ornstein–Uhlenbeck process per mode in the virtual time of each
  frame), so a transmission matrix measured earlier slowly goes stale.

With an area of interest on the camera, only the speckle basis' rows of the AOI's pixels are used: the
intensity is computed for those pixels alone.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from hil.config import Strict
from hil.physics.fiber import fiber_transmission, macro_amplitudes, macro_pixel_field
from hil.physics.optics import CHUNK_FRAMES, large_empty, window_pixels
from simulators.optical import (
    HARSH_SLM_CAMERA,
    IDEAL_SLM_CAMERA,
    ConstructionConfig,
    SLMCameraConfig,
    SLMCameraWorld,
    SlowConfig,
    ou_path,
)
from simulators.world import OrnsteinUhlenbeck, merge

#: The most entries (modes × camera pixels, modes × macro-pixels) of the fiber's complex64 matrices: 0.5 GiB each,
#: a few copies of which construction holds at once (64 modes on a 1024 × 1024 camera fit).
MAX_MATRIX_ENTRIES = 2**26


class FiberConfig(Strict):
    """The fiber and the coupling optics."""

    modes: int = Field(64, ge=1, le=4096, description="guided modes (1); source: scaled down for CPU speed from "
                       "~2000 modes of a 50 µm, NA 0.22 step-index fiber at 532 nm (V ≈ 65, V²/2)")
    macro_px: int = Field(8, ge=1, le=1024, description="side of the SLM squares that couple as one channel (SLM "
                          "pixels); source: assumption, the coarse graining of wavefront-shaping experiments (Popoff "
                          "et al., Phys. Rev. Lett. 104, 100601, 2010)")
    coupling_efficiency: float = Field(0.7, gt=0, le=1, description="fraction of the macro-pixel power coupled "
                                       "into guided modes (1); source: assumption, free-space coupling into a "
                                       "multimode fiber")
    speckle_grain_px: float = Field(3.0, gt=0, le=1000, description="correlation length of the output speckle on the "
                                    "camera (camera pixels); source: assumption, a speckle grain sampled by ~3 px")


class FiberConstructionConfig(ConstructionConfig):
    """The fiber bench's construction: the SLM's and the camera's, and the fiber's mode-dependent loss."""

    mode_dependent_loss_db: float = Field(3.0, ge=0, le=40, description="spread of the modes' transmissions, best to "
                                          "worst (dB); source: assumption, the few dB typical of metre lengths "
                                          "of step-index multimode fiber")


class FiberSlowConfig(SlowConfig):
    """The laser's power wander and the fiber's drifting mode phases."""

    mode_drift_rad: float = Field(0.3, ge=0, le=math.pi, description="stationary rms of each mode's drifting phase "
                                  "(rad); source: assumption, thermal drift of a fiber on an optical table, under "
                                  "which measured transmission matrices stay usable for tens of minutes")
    mode_drift_tau_s: float = Field(1800.0, gt=0, le=1e7, description="correlation time of the mode phases (s); "
                                    "source: as mode_drift_rad")


class MultimodeFiberConfig(SLMCameraConfig):
    """The multimode-fiber bench."""

    fiber: FiberConfig = Field(default_factory=FiberConfig)
    construction: FiberConstructionConfig = Field(default_factory=FiberConstructionConfig)
    slow: FiberSlowConfig = Field(default_factory=FiberSlowConfig)

    @model_validator(mode="after")
    def _geometry(self) -> MultimodeFiberConfig:
        rows, cols = self.slm.shape
        block = self.fiber.macro_px
        if rows % block or cols % block:
            raise ValueError(f"slm.shape {rows}×{cols} must split into fiber.macro_px {block} squares")
        pixels = self.camera.shape[0] * self.camera.shape[1]
        modes = self.fiber.modes
        for count, what, matrix, cure in ((pixels, "camera pixels", "speckle basis", "a smaller camera.shape"),
                                          (rows * cols // block**2, "macro-pixels", "coupling matrix",
                                           "a larger fiber.macro_px")):
            if modes * count > MAX_MATRIX_ENTRIES:
                raise ValueError(f"fiber.modes {modes} × {count} {what} make a {matrix} of "
                                 f"{modes * count * 8 / 2**30:.3g} GiB (complex64), over the "
                                 f"{MAX_MATRIX_ENTRIES * 8 / 2**30:.3g} GiB the simulation takes; use fewer modes or "
                                 f"{cure}")
        if self.fiber.modes > pixels:
            raise ValueError(f"fiber.modes {self.fiber.modes} must not exceed the camera's {pixels} pixels")
        grains = speckle_degrees_of_freedom(tuple(self.camera.shape), self.fiber.speckle_grain_px)
        if self.fiber.modes > grains:
            raise ValueError(f"fiber.modes {self.fiber.modes} exceeds the {grains} independent speckle patterns "
                             f"that grains of {self.fiber.speckle_grain_px:g} px allow on the camera's "
                             f"{self.camera.shape[0]}×{self.camera.shape[1]} pixels; use fewer modes or a smaller "
                             "speckle_grain_px")
        return self


def _speckle_aperture(shape: tuple[int, int], grain_px: float) -> torch.Tensor:
    """The spatial frequencies (rows × cols, bool) a speckle of grains ``grain_px`` across holds on the camera."""
    fy = torch.fft.fftfreq(shape[0])[:, None]
    fx = torch.fft.fftfreq(shape[1])[None, :]
    return fy**2 + fx**2 <= (1 / (2 * grain_px)) ** 2


def speckle_degrees_of_freedom(shape: tuple[int, int], grain_px: float) -> int:
    """How many orthogonal speckle fields of grain ``grain_px`` fit on a camera of ``shape``: the spatial
    frequencies inside the grain's band (a mode basis of more is not speckle: QR fills the rest with noise)."""
    return int(_speckle_aperture(shape, grain_px).sum())


def _haar_unitary(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random n × n unitary (QR of a complex Gaussian matrix, phases of R's diagonal removed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.complex64, generator=generator))
    diagonal = torch.diagonal(r)
    return q * (diagonal / diagonal.abs())[None, :]


def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A random rows × cols complex matrix with orthonormal rows (rows ≤ cols) or columns (rows > cols)."""
    if rows <= cols:
        q, _ = torch.linalg.qr(torch.randn(cols, rows, dtype=torch.complex64, generator=generator))
        return q.mH
    q, _ = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.complex64, generator=generator))
    return q


class MultimodeFiber(SLMCameraWorld):
    """An SLM coupled into a multimode fiber whose output speckle is imaged onto the camera."""

    kind = "multimode_fiber"
    Config = MultimodeFiberConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "ideal": merge(IDEAL_SLM_CAMERA, {"construction": {"mode_dependent_loss_db": 0.0},
                                          "slow": {"mode_drift_rad": 0.0}}),
        "realistic": {},
        "harsh": merge(HARSH_SLM_CAMERA, {"construction": {"mode_dependent_loss_db": 8.0},
                                          "slow": {"mode_drift_rad": 0.9, "mode_drift_tau_s": 600.0}}),
    }

    def _construct(self) -> None:
        super()._construct()
        g, fiber = self.construction_rng, self.config.fiber
        rows, cols = self.config.slm.shape
        self.macro_px = fiber.macro_px
        n_macro = (rows // fiber.macro_px) * (cols // fiber.macro_px)
        self.coupling = _orthonormal(fiber.modes, n_macro, g) * fiber.coupling_efficiency**0.5
        loss_db = self.config.construction.mode_dependent_loss_db * torch.randperm(fiber.modes, generator=g) \
            / max(fiber.modes - 1, 1)
        transmission = (10 ** (-loss_db / 10)).to(torch.complex64)
        self.modes = _haar_unitary(fiber.modes, g) * transmission.sqrt()[None, :] @ _haar_unitary(fiber.modes, g)
        self.speckle = self._speckle_basis(fiber.modes, fiber.speckle_grain_px, g)
        slow = self.config.slow
        self.mode_phase = OrnsteinUhlenbeck(slow.mode_drift_rad, slow.mode_drift_tau_s, (fiber.modes,), self.rng)
        self._mode_coupling = self.modes @ self.coupling
        self.macro_amplitudes = macro_amplitudes(self.beam, self.macro_px)

    def _speckle_basis(self, modes: int, grain_px: float, generator: torch.Generator) -> torch.Tensor:
        """Orthonormal speckle fields of the output modes on the camera (pixels × modes): white complex noise
        low-passed to grains of ``grain_px``, then orthonormalised."""
        rows, cols = self.config.camera.shape
        white = torch.randn(modes, rows, cols, dtype=torch.complex64, generator=generator)
        aperture = _speckle_aperture((rows, cols), grain_px).to(torch.complex64)
        fields = torch.fft.ifft2(torch.fft.fft2(white) * aperture).reshape(modes, -1).T
        q, _ = torch.linalg.qr(fields)
        return q

    def render(self, drives: torch.Tensor, exposure_s: float, times_s: torch.Tensor) -> torch.Tensor:
        """As `SLMCameraWorld.render`, with the SLM's steps (`realised_phase`) and the coupling into macro-pixels run
        `CHUNK_FRAMES` frames at a time, in cache: the same computation without whole-batch intermediates."""
        bow = self._frame_bow(len(drives))
        amplitudes = torch.empty(len(drives), len(self.macro_amplitudes), dtype=torch.complex64)
        for start in range(0, len(drives), CHUNK_FRAMES):
            frames = slice(start, start + CHUNK_FRAMES)
            phase = self._lc_phase(drives[frames], bow, frames)
            amplitudes[frames] = macro_pixel_field(phase, self.macro_px, self.macro_amplitudes, self.zero_order)
        return self.expose(self.speckle_frames(amplitudes, times_s), exposure_s, times_s)

    def propagate(self, phase_rad: torch.Tensor, times_s: torch.Tensor) -> torch.Tensor:
        amplitudes = macro_pixel_field(phase_rad, self.macro_px, self.macro_amplitudes, self.zero_order)
        return self.speckle_frames(amplitudes, times_s)

    def speckle_frames(self, amplitudes: torch.Tensor, times_s: torch.Tensor) -> torch.Tensor:
        """Camera intensity over the AOI (N × AOI rows × cols) for macro-pixel amplitudes (N × macro-pixels)."""
        guided = amplitudes @ self._mode_coupling.T
        drift = ou_path(self.mode_phase, times_s)
        if self.config.slow.mode_drift_rad > 0:
            guided = guided * torch.polar(torch.ones_like(drift), drift)
        _, _, height, width = self.window
        speckle = self.window_speckle()
        # The field in the world's buffer and the intensity in a fresh one of numpy's (`large_empty`): 17 and 8 MB for
        # 1024 frames, which torch's allocations faulted in anew at every batch
        field = torch.matmul(guided, speckle.T, out=self._scratch("field", (len(guided), len(speckle)), guided.dtype))
        parts = torch.view_as_real(field).square_()  # |T·u|², as `speckle_intensity`
        intensity = large_empty(len(amplitudes), height, width)
        torch.add(parts[..., 0], parts[..., 1], out=intensity.view(len(amplitudes), -1))
        return intensity

    def window_speckle(self) -> torch.Tensor:
        """The speckle basis' rows of the camera pixels read out (AOI pixels × modes, row-major), kept per AOI."""
        if self.roi is None:
            return self.speckle
        window = self.window
        if getattr(self, "_speckle_roi", None) != window:
            shape = tuple(self.config.camera.shape)
            self._speckle_window = window_pixels(self.speckle, shape, window)  # type: ignore[arg-type]
            self._speckle_roi = window
        return self._speckle_window

    def transmission(self) -> torch.Tensor:
        """The whole transmission now (camera pixels × macro-pixels, complex), with the present mode drift, read
        without advancing it."""
        drift = ou_path(self.mode_phase.fork(), torch.tensor([self.clock.now()], dtype=torch.float32))[0]
        return fiber_transmission(self.coupling, self.modes, self.speckle, drift)

    def hidden_parameters(self) -> dict[str, Any]:
        return {**super().hidden_parameters(), "transmission": self.transmission(), "macro_px": self.macro_px}
