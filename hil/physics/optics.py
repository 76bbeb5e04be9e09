"""Noiseless physics of a phase-only SLM imaged onto a camera through a Fourier lens.

The chain, for a batch of SLM patterns (… × rows × cols):

1. *drive*: the nominal phase (rad) of the gray level sent to each pixel, 2π·g/2^bits, in [0, 2π);
2. *pixel crosstalk* (fringing fields): the drive is blurred by a separable discrete Gaussian of variance σ²
   (pixels²), edges reflecting (`crosstalk`);
3. *lookup table*: the liquid crystal turns the blurred drive d into the phase φ = gain·d + bow·4u(1 − u),
   u = d/2π (`lut_phase`): a gain error and a bow, as after a LUT calibrated at another wavelength;
4. *zero order*: a fraction z of the field is not modulated, E = A·((1 − z)·e^{iφ} + z), A the input beam
   (`modulated_field`);
5. *stacked planes* (optional): the SLM is split into ``planes`` side-by-side panels; the beam lights panel 1,
   crosses free space (angular spectrum, `propagate`) to panel 2, and so on, as in multi-plane light conversion
   with one SLM and a mirror;
6. *Fourier lens*: the camera sits in the back focal plane of a lens after the last panel. The field is
   zero-padded to ``fft_size`` samples per side and Fourier transformed (unitary); one camera pixel is one
   sample, with the optical axis on camera pixel (rows // 2, cols // 2). This fixes the focal length:
   f = fft_size · slm_pitch · camera_pitch / λ. A camera shifted by (dy, dx) pixels is a linear phase ramp on
   the field (shift theorem, `lens_ramp`).

Intensities are fractions of the power that reaches the SLM: the beam is normalised to Σ|A|² = 1 and the
transforms are unitary, so the camera sees at most 1 in total. Every function is differentiable in its tensor
arguments and draws no random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

TWO_PI = 2 * math.pi

Scalar = float | torch.Tensor


def beam_amplitude(shape: tuple[int, int], waist_px: float | None) -> torch.Tensor:
    """Real amplitude of the input beam on one panel (rows × cols), normalised to unit power (Σ A² = 1).

    ``waist_px``: the 1/e² intensity radius of a Gaussian beam centred on the panel, in SLM pixels; None: flat.
    """
    rows, cols = shape
    if waist_px is None:
        amplitude = torch.ones(rows, cols)
    else:
        y = torch.arange(rows, dtype=torch.float32) - (rows - 1) / 2
        x = torch.arange(cols, dtype=torch.float32) - (cols - 1) / 2
        amplitude = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / waist_px**2)
    return amplitude / amplitude.square().sum().sqrt()


def wrap_drive(phase_rad: torch.Tensor, levels: int) -> torch.Tensor:
    """The drive (rad, in [0, 2π)) an SLM of ``levels`` gray levels gives a commanded phase (rad): phases within
    half a gray level below a multiple of 2π round to its gray 0, as the device's rounding does."""
    half_step = math.pi / levels
    return phase_rad - TWO_PI * torch.floor((phase_rad + half_step) / TWO_PI)


def lut_phase(drive_rad: torch.Tensor, gain: Scalar, bow_rad: Scalar) -> torch.Tensor:
    """The phase (rad) the liquid crystal gives for a drive d (rad): gain·d + bow·4u(1 − u), u = d/2π.

    ``gain`` and ``bow_rad`` broadcast against the drive (e.g. a per-frame bow of shape N × 1 × 1). Written
    as d·((gain + c) − c·d/2π) with c = 4·bow/2π: two passes over the pattern.
    """
    c = torch.as_tensor(bow_rad, dtype=torch.float32) * (4 / TWO_PI)
    slope = torch.as_tensor(gain, dtype=torch.float32) + c
    return torch.addcmul(slope, c / TWO_PI, drive_rad, value=-1) * drive_rad


def blur_matrix(n: int, variance_px2: Scalar) -> torch.Tensor:
    """The n × n matrix of a 1-D discrete Gaussian blur of variance σ² (pixels²), edges reflecting.

    It is the heat kernel exp(σ²/2 · L) of the lattice Laplacian L (L = shift₊ + shift₋ − 2, reflecting at the
    edges): a discrete Gaussian whose variance is exactly σ², the identity at σ² = 0, and differentiable in σ²
    there too (d/dσ² = L/2), so a twin can learn the width from zero.
    """
    variance = torch.as_tensor(variance_px2, dtype=torch.float32)
    laplacian = torch.diag(torch.full((n - 1,), 1.0), 1) + torch.diag(torch.full((n - 1,), 1.0), -1)
    laplacian = laplacian - torch.diag(laplacian.sum(dim=1))
    return torch.linalg.matrix_exp(variance / 2 * laplacian)


def crosstalk(drive_rad: torch.Tensor, variance_px2: Scalar) -> torch.Tensor:
    """Pixel crosstalk: the drive (… × rows × cols) blurred along both axes by a discrete Gaussian of variance
    σ² (pixels²).

    A plain number σ² ≤ 0 returns the drive unchanged (no work); a tensor is always applied (learnable).
    """
    if not isinstance(variance_px2, torch.Tensor) and variance_px2 <= 0:
        return drive_rad
    rows, cols = drive_rad.shape[-2:]
    blurred = drive_rad @ blur_matrix(cols, variance_px2).T
    return blur_matrix(rows, variance_px2) @ blurred


def slm_phase(drive_rad: torch.Tensor, *, gain: Scalar = 1.0, bow_rad: Scalar = 0.0,
              crosstalk_var_px2: Scalar = 0.0) -> torch.Tensor:
    """The realised phase (rad) of an SLM for a drive (rad): crosstalk (variance in px²), then the LUT."""
    return lut_phase(crosstalk(drive_rad, crosstalk_var_px2), gain, bow_rad)


def modulated_field(phase_rad: torch.Tensor, illumination: torch.Tensor, zero_order: Scalar = 0.0,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """The field after the SLM, E = illumination·((1 − z)·e^{iφ} + z): complex, … × rows × cols.

    ``illumination`` is the (real or complex) field arriving on the pixels. With ``out`` (a complex tensor of
    the result's shape, possibly a view into a larger buffer) the result is written there without allocating;
    that path does not record gradients.
    """
    illumination = illumination.to(torch.complex64)
    z = torch.as_tensor(zero_order, dtype=torch.float32)
    modulated, constant = illumination * (1 - z), illumination * z
    cos, sin = torch.cos(phase_rad), torch.sin(phase_rad)
    if out is None:
        return modulated * torch.complex(cos, sin) + constant
    parts = torch.view_as_real(out)
    real, imag = parts[..., 0], parts[..., 1]
    torch.mul(cos, modulated.real, out=real)
    real.addcmul_(sin, modulated.imag, value=-1).add_(constant.real)
    torch.mul(cos, modulated.imag, out=imag)
    imag.addcmul_(sin, modulated.real).add_(constant.imag)
    return out


def angular_spectrum(shape: tuple[int, int], pitch_m: float, wavelength_m: float, distance_m: float,
                     pad: int = 2) -> torch.Tensor:
    """Free-space transfer function over ``distance_m`` on a grid ``pad``× the panel (complex64).

    H(fy, fx) = exp(i·2π·d·√(1/λ² − fx² − fy²)); evanescent components are dropped. The padding keeps light
    that leaves the aperture from wrapping around; `propagate` crops back to the panel.
    """
    rows, cols = shape[0] * pad, shape[1] * pad
    fy = torch.fft.fftfreq(rows, d=pitch_m, dtype=torch.float64)
    fx = torch.fft.fftfreq(cols, d=pitch_m, dtype=torch.float64)
    argument = 1 / wavelength_m**2 - fy[:, None] ** 2 - fx[None, :] ** 2
    phase = TWO_PI * distance_m * argument.clamp(min=0).sqrt()
    # remove the plane-wave phase 2π·d/λ common to all components (a global phase): keeps float32 accurate
    phase = phase - TWO_PI * distance_m / wavelength_m
    transfer = torch.polar((argument > 0).to(torch.float64), phase)
    return transfer.to(torch.complex64)


def propagate(field: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """Propagate a field (… × rows × cols) through free space given by ``transfer`` (from `angular_spectrum`)."""
    rows, cols = field.shape[-2:]
    spectrum = torch.fft.fft2(field, s=tuple(transfer.shape))
    return torch.fft.ifft2(spectrum * transfer)[..., :rows, :cols]


def lens_ramp(shape: tuple[int, int], fft_size: int, shift_px: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Linear phase (complex, rows × cols) that puts the optical axis on the camera's centre pixel and moves the
    image by ``shift_px`` = (dy, dx) camera pixels (shift theorem)."""
    shift = torch.as_tensor(shift_px, dtype=torch.float32)
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None]
    cols = torch.arange(shape[1], dtype=torch.float32)[None, :]
    half = fft_size // 2
    phase = (TWO_PI / fft_size) * (rows * (half + shift[0]) + cols * (half + shift[1]))
    return torch.complex(torch.cos(phase), torch.sin(phase))


def _crop(fft_size: int, camera_shape: tuple[int, int]) -> tuple[slice, slice]:
    rows, cols = camera_shape
    if rows > fft_size or cols > fft_size:
        raise ValueError(f"camera {rows}×{cols} is larger than the Fourier plane ({fft_size}×{fft_size} samples)")
    half = fft_size // 2
    return slice(half - rows // 2, half - rows // 2 + rows), slice(half - cols // 2, half - cols // 2 + cols)


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    return spectrum.real.square() + spectrum.imag.square()


class FourierWorkspace:
    """A reusable zero-padded buffer for a simulator's Fourier lens (no gradients).

    Allocating and zeroing a ``fft_size``² complex buffer per frame costs as much as the FFT itself; the workspace
    keeps one buffer of ``chunk`` frames whose padding stays zero. Processing a batch a few frames at a time also
    keeps the transforms in cache: 2-3× faster on a CPU than one FFT over the whole batch.
    """

    def __init__(self, chunk: int = 16):
        self.chunk = chunk
        self._key: tuple[int, ...] | None = None
        self._field = torch.empty(0, dtype=torch.complex64)

    def buffer(self, frames: int, shape: tuple[int, int], fft_size: int) -> torch.Tensor:
        """A zero-padded buffer of ``frames`` ≤ ``chunk`` frames; the caller writes only the top-left corner."""
        key = (*shape, fft_size)
        if key != self._key:
            self._field = torch.zeros(self.chunk, fft_size, fft_size, dtype=torch.complex64)
            self._key = key
        return self._field[:frames]


def fourier_camera(field: torch.Tensor, fft_size: int, camera_shape: tuple[int, int]) -> torch.Tensor:
    """Camera intensity (… × camera rows × cols) of a field after `lens_ramp`: |unitary FFT|², zero-padded to
    ``fft_size`` and cropped around the optical axis."""
    rows, cols = _crop(fft_size, camera_shape)
    spectrum = torch.fft.fft2(field, s=(fft_size, fft_size), norm="ortho")
    return _power(spectrum[..., rows, cols])


def camera_intensity(phase_rad: torch.Tensor, *, beam: torch.Tensor, zero_order: Scalar, fft_size: int,
                     camera_shape: tuple[int, int], shift_px: torch.Tensor | Sequence[float] = (0.0, 0.0),
                     planes: int = 1, transfer: torch.Tensor | None = None,
                     workspace: FourierWorkspace | None = None) -> torch.Tensor:
    """Intensity on the camera (N × camera rows × cols, fractions of the SLM power) for realised SLM phases
    (N × rows × cols, rad).

    ``beam`` is the panel's input amplitude (`beam_amplitude`); with ``planes`` > 1 the SLM columns are split
    into that many panels, joined by ``transfer`` (`angular_spectrum`). ``workspace`` (simulators) avoids
    allocations and records no gradients; the result is the same.
    """
    if phase_rad.dim() != 3:
        raise ValueError(f"phases must be N × rows × cols, got shape {tuple(phase_rad.shape)}")
    frames, rows, cols = phase_rad.shape
    if cols % planes:
        raise ValueError(f"{cols} SLM columns do not split into {planes} panels")
    width = cols // planes
    ramp = lens_ramp((rows, width), fft_size, shift_px)
    if planes == 1:
        illumination, field = beam * ramp, None
    else:
        if transfer is None:
            raise ValueError("stacked planes need the free-space transfer function between panels")
        field = modulated_field(phase_rad[..., :width], beam, zero_order)
        for plane in range(1, planes):
            panel = phase_rad[..., plane * width:(plane + 1) * width]
            field = modulated_field(panel, propagate(field, transfer), zero_order)
        field = field * ramp
    if workspace is None:
        if field is None:
            field = modulated_field(phase_rad, illumination, zero_order)
        return fourier_camera(field, fft_size, camera_shape)
    crop_rows, crop_cols = _crop(fft_size, camera_shape)
    with torch.no_grad():
        if field is None:
            field = modulated_field(phase_rad, illumination, zero_order,
                                    out=torch.empty(frames, rows, width, dtype=torch.complex64))
        cropped = torch.empty(frames, *camera_shape, dtype=torch.complex64)
        for start in range(0, frames, workspace.chunk):
            stop = min(frames, start + workspace.chunk)
            padded = workspace.buffer(stop - start, (rows, width), fft_size)
            padded[:, :rows, :width].copy_(field[start:stop])
            cropped[start:stop].copy_(torch.fft.fft2(padded, norm="ortho")[:, crop_rows, crop_cols])
        parts = torch.view_as_real(cropped)
        intensity = parts[..., 0].square()
        return intensity.addcmul_(parts[..., 1], parts[..., 1])
