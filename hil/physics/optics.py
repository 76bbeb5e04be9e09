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
   the field (shift theorem, `lens_ramp`). As the field is zero outside the panel and the camera sees only a
   window of the Fourier plane, the transform is computed pruned, as A·E·Bᵀ with the needed rows and columns
   of the DFT matrix (`lens_matrices`): the same numbers as the padded FFT, without forming the padding. A camera
   reading out only an area of interest (``window`` = (top, left, height, width) in camera pixels) needs only
   those rows of A and of B: the window costs in proportion to its pixels, and its values are those of the whole
   camera's frame, cropped.

Intensities are fractions of the power that reaches the SLM: the beam is normalised to Σ|A|² = 1 and the
transforms are unitary, so the camera sees at most 1 in total. Every function is differentiable in its tensor
arguments and draws no random numbers. Each step of the chain computes at the precision of the pattern or field it
is given (float32 and complex64, or float64 and complex128), its other tensor arguments cast to it; `beam_amplitude`,
`angular_spectrum` and `lens_ramp` make float32 (complex64) tensors, and `FourierWorkspace`, the simulators' path,
works in float32 alone.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

TWO_PI = 2 * math.pi
#: What a bench's optics can have (m, inclusive): ultraviolet to mid-infrared light, an SLM pixel from a
#: metasurface's to the coarsest panel's, and a path between stacked panels up to a metre. Shared by the simulated
#: worlds and the systems, so that a unit slip (532 for 532 nm) is refused where it is written.
WAVELENGTH_RANGE_M = (1e-7, 2e-5)
SLM_PITCH_RANGE_M = (1e-7, 1e-4)
PLANE_DISTANCE_RANGE_M = (1e-6, 1.0)

Scalar = float | torch.Tensor
#: An area of interest of a camera: (top, left, height, width) in camera pixels.
Window = tuple[int, int, int, int]


def beam_amplitude(shape: tuple[int, int], waist_px: float | None) -> torch.Tensor:
    """Real amplitude of the input beam on one panel (rows × cols), normalised to unit power (Σ A² = 1).

    ``waist_px``: the 1/e² intensity radius of a Gaussian beam centred on the panel, in SLM pixels; None: flat.
    """
    rows, cols = shape
    if waist_px is None:
        amplitude = torch.ones(rows, cols, dtype=torch.float32)
    else:
        y = torch.arange(rows, dtype=torch.float32) - (rows - 1) / 2
        x = torch.arange(cols, dtype=torch.float32) - (cols - 1) / 2
        amplitude = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / waist_px**2)
    return amplitude / amplitude.square().sum().sqrt()


def wrap_drive(phase_rad: torch.Tensor, levels: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The commanded phase (rad) wrapped into [−π/levels, 2π − π/levels), as an SLM of ``levels`` gray levels wraps
    it: phases within half a gray level below a multiple of 2π go to its gray 0, as the device's rounding does. The
    phase itself is not rounded to a gray level (0.1 rad stays 0.1 rad), so that it stays differentiable.
    ``out``: a tensor of the same shape to write it into (no gradients)."""
    half_turn_step = 0.5 / levels  # half a gray level, in turns
    turns = torch.mul(phase_rad, 1 / TWO_PI, out=out).add_(half_turn_step).floor_()  # half the cost of remainder
    return torch.add(phase_rad, turns, alpha=-TWO_PI, out=out)


def lut_phase(drive_rad: torch.Tensor, gain: Scalar, bow_rad: Scalar) -> torch.Tensor:
    """The phase (rad) the liquid crystal gives for a drive d (rad): gain·d + bow·4u(1 − u), u = d/2π.

    ``gain`` and ``bow_rad`` broadcast against the drive (e.g. a per-frame bow of shape N × 1 × 1). Written
    as d·((gain + c) − c·d/2π) with c = 4·bow/2π: two passes over the pattern. Plain numbers 1 and 0 (an exact
    LUT) return the drive itself (no work); tensors are always applied (learnable).
    """
    if not isinstance(gain, torch.Tensor) and not isinstance(bow_rad, torch.Tensor) and gain == 1 and bow_rad == 0:
        return drive_rad
    c = torch.as_tensor(bow_rad, dtype=drive_rad.dtype) * (4 / TWO_PI)
    slope = torch.as_tensor(gain, dtype=drive_rad.dtype) + c
    return torch.addcmul(slope, c / TWO_PI, drive_rad, value=-1) * drive_rad


def blur_matrix(n: int, variance_px2: Scalar, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The n × n matrix (``dtype``) of a 1-D discrete Gaussian blur of variance σ² (pixels²), edges reflecting.

    It is the heat kernel exp(σ²/2 · L) of the lattice Laplacian L (L = shift₊ + shift₋ − 2, reflecting at the
    edges): a discrete Gaussian whose variance is exactly σ², the identity at σ² = 0, and differentiable in σ²
    there too (d/dσ² = L/2), so a twin can learn the width from zero.
    """
    variance = torch.as_tensor(variance_px2, dtype=dtype)
    off_diagonal = torch.ones(n - 1, dtype=dtype)
    laplacian = torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1)
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
    blur = blur_matrix if isinstance(variance_px2, torch.Tensor) else _fixed_blur_matrix
    across = blur(cols, variance_px2, drive_rad.dtype)
    down = across if rows == cols else blur(rows, variance_px2, drive_rad.dtype)
    return down @ (drive_rad @ across.T)


@functools.lru_cache(maxsize=16)
def _fixed_blur_matrix(n: int, variance_px2: float, dtype: torch.dtype) -> torch.Tensor:
    """`blur_matrix` for a plain number, cached per dtype (a simulator's crosstalk is fixed): never modify it."""
    return blur_matrix(n, variance_px2, dtype)


def slm_phase(drive_rad: torch.Tensor, *, gain: Scalar = 1.0, bow_rad: Scalar = 0.0,
              crosstalk_var_px2: Scalar = 0.0) -> torch.Tensor:
    """The realised phase (rad) of an SLM for a drive (rad): crosstalk (variance in px²), then the LUT."""
    return lut_phase(crosstalk(drive_rad, crosstalk_var_px2), gain, bow_rad)


def modulated_field(phase_rad: torch.Tensor, illumination: torch.Tensor, zero_order: Scalar = 0.0) -> torch.Tensor:
    """The field after the SLM, E = illumination·((1 − z)·e^{iφ} + z): complex, … × rows × cols.

    ``illumination`` is the (real or complex) field arriving on the pixels.
    """
    illumination = illumination.to(phase_rad.dtype.to_complex())
    z = torch.as_tensor(zero_order, dtype=phase_rad.dtype)
    modulated, constant = illumination * (1 - z), illumination * z
    return modulated * torch.complex(torch.cos(phase_rad), torch.sin(phase_rad)) + constant


def angular_spectrum(shape: tuple[int, int], pitch_m: float, wavelength_m: float, distance_m: float) -> torch.Tensor:
    """Free-space transfer function over ``distance_m`` on a zero-padded grid (complex64), rows × cols of
    `padded_size` each.

    H(fy, fx) = exp(i·2π·d·√(1/λ² − fx² − fy²)); evanescent components are dropped. The padding keeps light
    that leaves the aperture from wrapping around; `propagate` crops back to the panel.
    """
    rows, cols = (padded_size(n, pitch_m, wavelength_m, distance_m) for n in shape)
    fy = torch.fft.fftfreq(rows, d=pitch_m, dtype=torch.float64)
    fx = torch.fft.fftfreq(cols, d=pitch_m, dtype=torch.float64)
    argument = 1 / wavelength_m**2 - fy[:, None] ** 2 - fx[None, :] ** 2
    phase = TWO_PI * distance_m * argument.clamp(min=0).sqrt()
    # remove the plane-wave phase 2π·d/λ common to all components (a global phase): keeps float32 accurate
    phase = phase - TWO_PI * distance_m / wavelength_m
    transfer = torch.polar((argument > 0).to(torch.float64), phase)
    return transfer.to(torch.complex64)


def padded_size(n: int, pitch_m: float, wavelength_m: float, distance_m: float) -> int:
    """Samples along one axis of the angular-spectrum grid for a panel of ``n`` pixels: ``n + 2·λ·d/p²``, at least
    2n, rounded up to a multiple of 8.

    Light at the panel's highest spatial frequency, 1/(2p), walks ``λ·d/(2p²)`` pixels sideways over ``d``: the grid
    must hold the panel plus that walk-off on both sides, ``n + λ·d/p²``, or light wraps around into the panel
    (``λ·d/p²`` samples also sample H's phase without aliasing; Matsushima & Shimobaba, Opt. Express 17, 19662,
    2009). Twice that margin also holds most of the band-limited kernel's slowly decaying tails: a random-phase
    field on 8 µm pixels after 5 mm at 532 nm (a 21-pixel walk-off) is then within 1.2–1.9 % (rms) of the same field
    propagated on a 16× wider grid, for panels of 64 rows 8 to 64 pixels wide, and within 1.3–2.6 % for 8 × 8 to
    32 × 32 panels (four random fields each); a grid of 2n left 8- and 16-pixel panels 130 % and 33 % off.
    """
    size = max(2 * n, n + math.ceil(2 * wavelength_m * distance_m / pitch_m**2))
    return -(-size // 8) * 8


#: The most samples per side of the angular-spectrum grid between stacked panels (32 MiB per frame at complex64):
#: 8 µm pixels at 532 nm stay under it up to about 12 cm, and it keeps a grid that a long path, a fine pitch or a
#: long wavelength asks for (terabytes per frame) from being allocated.
MAX_GRID_SIDE = 2048


def grid_problem(shape: tuple[int, int], pitch_m: float, wavelength_m: float, distance_m: float) -> str | None:
    """What is wrong with the angular-spectrum grid (`padded_size`) of a panel of ``shape`` px over ``distance_m``:
    more samples than `MAX_GRID_SIDE` squared, with the memory it would take; None if it is fine."""
    rows, cols = (padded_size(n, pitch_m, wavelength_m, distance_m) for n in shape)
    if rows * cols <= MAX_GRID_SIDE**2:
        return None
    return (f"needs a free-space grid of {rows}×{cols} samples between panels ({rows * cols * 8 / 2**30:.3g} GiB per "
            f"frame, at most {MAX_GRID_SIDE}×{MAX_GRID_SIDE})")


def propagate(field: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """Propagate a field (… × rows × cols, complex) through free space given by ``transfer`` (from
    `angular_spectrum`, applied at the field's precision)."""
    rows, cols = field.shape[-2:]
    spectrum = torch.fft.fft2(field, s=tuple(transfer.shape))
    return torch.fft.ifft2(spectrum * transfer.to(spectrum.dtype))[..., :rows, :cols]


def lens_ramp(shape: tuple[int, int], fft_size: int, shift_px: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Linear phase (complex, rows × cols) that puts the optical axis on the camera's centre pixel and moves the
    image by ``shift_px`` = (dy, dx) camera pixels (shift theorem): the lens is the unitary FFT of the field times
    this ramp, zero-padded to ``fft_size`` and cropped around sample ``fft_size // 2``. `lens_matrices` folds it
    into the pruned transform; this form is the reference it is tested against."""
    shift = torch.as_tensor(shift_px, dtype=torch.float32)
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None]
    cols = torch.arange(shape[1], dtype=torch.float32)[None, :]
    half = fft_size // 2
    phase = (TWO_PI / fft_size) * (rows * (half + shift[0]) + cols * (half + shift[1]))
    return torch.complex(torch.cos(phase), torch.sin(phase))


def _check_camera(fft_size: int, camera_shape: tuple[int, int], window: Window | None = None) -> None:
    rows, cols = camera_shape
    if rows > fft_size or cols > fft_size:
        raise ValueError(f"camera {rows}×{cols} is larger than the Fourier plane ({fft_size}×{fft_size} samples)")
    if window is not None:
        top, left, height, width = window
        if min(top, left) < 0 or min(height, width) < 1 or top + height > rows or left + width > cols:
            raise ValueError(f"window {tuple(window)} (top, left, height, width) is empty or off the {rows}×{cols} "
                             "camera")


def full_window(camera_shape: tuple[int, int], window: Window | None) -> Window:
    """``window``, or the whole camera for None."""
    if window is None:
        return (0, 0, int(camera_shape[0]), int(camera_shape[1]))
    top, left, height, width = (int(v) for v in window)
    return top, left, height, width


def crop(maps: torch.Tensor, window: Window | None) -> torch.Tensor:
    """The ``window`` (top, left, height, width) of per-pixel maps (… × rows × cols); all of them for None."""
    if window is None:
        return maps
    top, left, height, width = window
    return maps[..., top:top + height, left:left + width]


def window_pixels(values: torch.Tensor, camera_shape: tuple[int, int], window: Window) -> torch.Tensor:
    """The rows of ``values`` (camera pixels × …, row-major) inside ``window``, in the window's row-major order."""
    rows, cols = camera_shape
    top, left, height, width = window
    grid = values.reshape(rows, cols, *values.shape[1:])[top:top + height, left:left + width]
    return grid.reshape(height * width, *values.shape[1:])


@functools.lru_cache(maxsize=32)
def _dft_window(n: int, fft_size: int, first: int, outputs: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """The block of the unitary DFT matrix of size ``fft_size`` that ``outputs`` consecutive camera pixels see of a
    field of ``n`` samples, the first of them ``first`` pixels from the optical axis, with `lens_ramp`'s half-plane
    shift folded in (outputs × n, of the complex ``dtype``):

        W[m, j] = exp(−2πi·j·(first + m)/fft_size) / √fft_size,

    i.e. DFT rows fft_size//2 + first + m and columns j < n, times exp(2πi·j·(fft_size//2)/fft_size); a whole
    camera of c pixels has first = −(c//2). The phase is reduced modulo 2π in integers and evaluated in float64.
    Cached per geometry and dtype: never modify it."""
    m = torch.arange(outputs, dtype=torch.int64) + first
    j = torch.arange(n, dtype=torch.int64)
    turns = torch.remainder(torch.outer(m, j), fft_size).to(torch.float64) / fft_size
    window = torch.polar(torch.full(turns.shape, fft_size**-0.5, dtype=torch.float64), -TWO_PI * turns)
    return window.to(device=device, dtype=dtype)


def lens_matrices(shape: tuple[int, int], fft_size: int, camera_shape: tuple[int, int],
                  shift_px: torch.Tensor | Sequence[float] = (0.0, 0.0),
                  device: torch.device | None = None, window: Window | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The pruned Fourier lens: A (camera rows × rows) and B (camera cols × cols), of the complex counterpart of the
    real ``dtype`` (complex64 for float32), such that for a field E (… × rows × cols) A·E·Bᵀ equals the camera
    window of the unitary FFT of E·`lens_ramp`(shift) zero-padded to ``fft_size`` (exactly: the padding is zero and
    only the window is kept).

    A[m, j] = exp(−2πi·j·(m − camera rows//2 − dy)/fft_size) / √fft_size, and B alike with dx. With a
    ``window`` (top, left, height, width) of the camera, A has only rows top..top+height−1 and B columns
    left..left+width−1: A·E·Bᵀ is then that crop of the camera's frame. The shift-free part is cached per
    geometry and dtype (`_dft_window`); the shift's ramp is applied per call and is differentiable in
    ``shift_px``. A camera-sized window of a panel costs 2·(panel side) complex multiply-adds per pixel instead of
    an FFT of fft_size² samples per frame.
    """
    _check_camera(fft_size, camera_shape, window)
    device = torch.device("cpu") if device is None else torch.device(device)
    shift = torch.as_tensor(shift_px, dtype=dtype, device=device)
    top, left, height, width = full_window(camera_shape, window)
    matrices = []
    for axis, start, outputs in ((0, top, height), (1, left, width)):
        window_block = _dft_window(shape[axis], fft_size, start - camera_shape[axis] // 2, outputs, device,
                                   dtype.to_complex())
        phase = (TWO_PI / fft_size) * torch.arange(shape[axis], dtype=dtype, device=device) * shift[axis]
        matrices.append(window_block * torch.polar(torch.ones_like(phase), phase))
    return matrices[0], matrices[1]


def fourier_window(field: torch.Tensor, fft_size: int, camera_shape: tuple[int, int],
                   shift_px: torch.Tensor | Sequence[float] = (0.0, 0.0),
                   window: Window | None = None) -> torch.Tensor:
    """The field on the camera (… × camera rows × cols, complex, or the ``window``'s shape): the Fourier lens of a
    field after the last panel (… × rows × cols), as A·E·Bᵀ (`lens_matrices`), at the field's precision."""
    precision = field.dtype.to_real()
    a, b = lens_matrices(tuple(field.shape[-2:]), fft_size, camera_shape, shift_px, field.device, window, precision)
    return torch.matmul(a, field.to(precision.to_complex())) @ b.T


def _real_form(b: torch.Tensor) -> torch.Tensor:
    """R (2·cols × 2·camera cols, real) with [Re E | Im E]·R = E·Bᵀ, its real and imaginary parts interleaved as
    in a complex tensor: one real matrix product, on a field kept as two real planes (no complex field is built)."""
    bt = b.T
    return torch.stack([torch.cat([bt.real, -bt.imag]), torch.cat([bt.imag, bt.real])], dim=-1).reshape(
        2 * bt.shape[0], 2 * bt.shape[1])


def _phase_window(phase_rad: torch.Tensor, beam: torch.Tensor, zero_order: Scalar, a: torch.Tensor,
                  b: torch.Tensor) -> torch.Tensor:
    """A·E·Bᵀ for E = beam·((1 − z)·e^{iφ} + z) (one panel, real beam): (1 − z)·A·(beam·e^{iφ})·Bᵀ + z·A·beam·Bᵀ,
    the last term one matrix for all frames."""
    frames, rows = phase_rad.shape[:2]
    z = torch.as_tensor(zero_order, dtype=phase_rad.dtype)
    parts = torch.cat([beam * torch.cos(phase_rad), beam * torch.sin(phase_rad)], dim=-1)
    half = torch.view_as_complex((parts @ _real_form(b)).view(frames, rows, b.shape[0], 2))
    constant = a @ beam.to(a.dtype) @ b.T
    return torch.matmul(a * (1 - z), half) + z * constant


def separable_factors(beam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(c, r) with beam = c·rᵀ (c: rows, r: cols) if the real beam is separable to float rounding, else None."""
    if beam.is_complex():
        return None
    peak = int(beam.abs().argmax())
    i, j = divmod(peak, beam.shape[1])
    column, row = beam[:, j], beam[i, :] / beam[i, j]
    outer = column[:, None] * row[None, :]
    return (column, row) if torch.allclose(outer, beam, rtol=1e-5, atol=1e-6 * float(beam[i, j].abs())) else None


def large_empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor for a whole batch, its memory allocated by numpy.

    numpy (≥ 1.22, Linux) asks for transparent huge pages on large allocations, so a fresh buffer of tens of MB is
    faulted in with a few faults instead of thousands: filling a fresh 16 MB buffer costs about a third as much
    as with ``torch.empty`` here. The tensor is an ordinary CPU tensor (not resizable in place).
    """
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


#: Frames per chunk in the simulators' per-frame loops (64 frames of 64 × 64 float32: 1 MiB), small enough that a
#: chunk's intermediates stay in cache between the steps.
CHUNK_FRAMES = 64


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    return spectrum.real.square() + spectrum.imag.square()


class FourierWorkspace:
    """Reusable buffers and lens matrices for a simulator's Fourier lens (no gradients; same result).

    A batch is processed ``chunk`` frames at a time, so that the field's two real planes, its half transform and
    the camera window stay in cache between the steps, and nothing is allocated per frame. cos φ and sin φ are
    written to planes of their own (contiguous writes cost half what interleaved ones do) and multiplied by the
    cos and sin halves of the real form of B, the second product added to the first. The lens matrices
    (`lens_matrices`, with the zero order's constant term) are kept while the geometry (the camera's read-out
    window included), the shift, the zero order and the beam stay the same. A separable beam (Gaussian or flat),
    A_beam = c·rᵀ, is folded into them, A·diag(c)·e^{iφ}·diag(r)·Bᵀ: one pass per frame less.
    """

    #: a checkpoint leaves it out (`hil.state`): it holds only what a call rebuilds or overwrites
    transient: ClassVar[bool] = True

    def __init__(self, chunk: int = CHUNK_FRAMES):
        self.chunk = chunk
        self._key: tuple[object, ...] | None = None
        self._lens: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool] | None = None
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def lens(self, beam: torch.Tensor, zero_order: Scalar, fft_size: int, camera_shape: tuple[int, int],
             shift_px: torch.Tensor | Sequence[float],
             window: Window | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """(1 − z)·A, the real form of B (`_real_form`), z·A·beam·Bᵀ (None when z = 0) and whether the beam is
        folded into A and B, for this bench (and camera window)."""
        shift = tuple(float(s) for s in torch.as_tensor(shift_px).reshape(-1))
        window = full_window(camera_shape, window)
        key = (tuple(beam.shape), beam.data_ptr(), beam._version, fft_size, tuple(camera_shape), window, shift,
               float(zero_order))
        if key != self._key or self._lens is None:
            a, b = lens_matrices(tuple(beam.shape), fft_size, camera_shape, shift, window=window)
            z = float(zero_order)
            constant = z * (a @ beam.to(torch.complex64) @ b.T) if z else None
            factors = separable_factors(beam)
            if factors is not None:
                a, b = a * factors[0], b * factors[1]
            self._lens = ((1 - z) * a, _real_form(b), constant, factors is not None)
            self._key, self._buffers = key, None
        return self._lens

    def intensity(self, phase_rad: torch.Tensor, beam: torch.Tensor, zero_order: Scalar, fft_size: int,
                  camera_shape: tuple[int, int], shift_px: torch.Tensor | Sequence[float],
                  realise: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
                  window: Window | None = None, fixed_rows: torch.Tensor | None = None) -> torch.Tensor:
        """`camera_intensity` of one panel lit by a real beam: |(1 − z)·A·(beam·e^{iφ})·Bᵀ + z·A·beam·Bᵀ|², over
        the camera or its ``window``.

        With ``realise``, ``phase_rad`` are drives and ``realise(drives[frames], frames)`` gives the realised phase
        of each chunk of frames (a slice), so that the SLM's own steps run in cache too. ``fixed_rows`` (a bool per
        SLM row): rows whose realised phase is the same in every frame, which ``realise`` must then compute pixel by
        pixel (no crosstalk across rows): the lens being linear, their share of the field is computed once, from the
        first frame, and each frame computes its other rows alone.
        """
        scaled_a, real_b, constant, beam_folded = self.lens(beam, zero_order, fft_size, camera_shape, shift_px,
                                                            window)
        frames, rows, cols = phase_rad.shape
        cam_rows, cam_cols = scaled_a.shape[0], real_b.shape[1] // 2
        if self._buffers is None or self._buffers[0].shape[1] < self.chunk:
            self._buffers = (torch.empty(2, self.chunk, rows, cols, dtype=torch.float32),
                             torch.empty(self.chunk, rows, 2 * cam_cols, dtype=torch.float32),
                             torch.empty(self.chunk, cam_rows, cam_cols, dtype=torch.complex64))
        planes_buffer, half_buffer, window_buffer = self._buffers
        of_cos, of_sin = real_b[:cols], real_b[cols:]
        intensity = large_empty(frames, cam_rows, cam_cols)

        def field(phase: torch.Tensor, row_a: torch.Tensor, row_beam: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            """A·(beam·e^{iφ})·Bᵀ (count × window, complex) of the realised phase of some rows (count × n × cols),
            ``row_a`` and ``row_beam`` those rows' columns of A and rows of the beam."""
            count, n = phase.shape[:2]
            planes = planes_buffer.view(-1)[:2 * count * n * cols].view(2, count, n, cols)
            cosines, sines = torch.cos(phase, out=planes[0]), torch.sin(phase, out=planes[1])
            if not beam_folded:
                planes.mul_(row_beam)
            half = torch.matmul(cosines.view(-1, cols), of_cos,
                                out=half_buffer.view(-1)[:count * n * 2 * cam_cols].view(-1, 2 * cam_cols))
            half.addmm_(sines.view(-1, cols), of_sin)
            return torch.matmul(row_a, torch.view_as_complex(half.view(count, n, cam_cols, 2)), out=out)

        def realised(drives: torch.Tensor, frames: slice) -> torch.Tensor:
            return drives if realise is None else realise(drives, frames)

        with torch.no_grad():
            varying = torch.arange(rows)
            if fixed_rows is not None and bool(fixed_rows.any()):
                varying, fixed = torch.nonzero(~fixed_rows).flatten(), torch.nonzero(fixed_rows).flatten()
                phase = realised(phase_rad[:1, fixed], slice(0, 1))
                base = field(phase, scaled_a[:, fixed].contiguous(), beam[fixed], torch.empty(1, cam_rows, cam_cols,
                                                                                             dtype=torch.complex64))[0]
                constant = base if constant is None else base.add_(constant)
            row_a, row_beam = (scaled_a, beam) if len(varying) == rows else (scaled_a[:, varying].contiguous(),
                                                                             beam[varying])
            for start in range(0, frames, self.chunk):
                stop = min(frames, start + self.chunk)
                count = stop - start
                drives = phase_rad[start:stop] if len(varying) == rows else phase_rad[start:stop, varying]
                if len(varying):
                    window = field(realised(drives, slice(start, stop)), row_a, row_beam, window_buffer[:count])
                    if constant is not None:
                        window.add_(constant)
                else:  # every row fixed: every frame is the first
                    window = window_buffer[:count].copy_(constant.expand(count, -1, -1))
                squares = torch.view_as_real(window).square_()
                torch.add(squares[..., 0], squares[..., 1], out=intensity[start:stop])
        return intensity


def camera_intensity(phase_rad: torch.Tensor, *, beam: torch.Tensor, zero_order: Scalar, fft_size: int,
                     camera_shape: tuple[int, int], shift_px: torch.Tensor | Sequence[float] = (0.0, 0.0),
                     planes: int = 1, transfer: torch.Tensor | None = None,
                     workspace: FourierWorkspace | None = None, window: Window | None = None) -> torch.Tensor:
    """Intensity on the camera (N × camera rows × cols, fractions of the SLM power) for realised SLM phases
    (N × rows × cols, rad); with a ``window`` (top, left, height, width), only that crop of it (N × height ×
    width), computed alone.

    ``beam`` is the panel's input amplitude (`beam_amplitude`); with ``planes`` > 1 the SLM columns are split
    into that many panels, joined by ``transfer`` (`angular_spectrum`). The Fourier lens is the pruned transform
    of `lens_matrices`. ``workspace`` (simulators) reuses buffers and records no gradients; the result is the
    same.
    """
    if phase_rad.dim() != 3:
        raise ValueError(f"phases must be N × rows × cols, got shape {tuple(phase_rad.shape)}")
    rows, cols = phase_rad.shape[1:]
    if cols % planes:
        raise ValueError(f"{cols} SLM columns do not split into {planes} panels")
    width = cols // planes
    one_panel = planes == 1 and not beam.is_complex()
    if workspace is not None and one_panel:
        return workspace.intensity(phase_rad, beam, zero_order, fft_size, camera_shape, shift_px, window=window)
    with torch.no_grad() if workspace is not None else contextlib.nullcontext():
        a, b = lens_matrices((rows, width), fft_size, camera_shape, shift_px, phase_rad.device, window,
                             phase_rad.dtype)
        if one_panel:
            return _power(_phase_window(phase_rad, beam, zero_order, a, b))
        if planes == 1:
            field = modulated_field(phase_rad, beam, zero_order)
        else:
            if transfer is None:
                raise ValueError("stacked planes need the free-space transfer function between panels")
            field = modulated_field(phase_rad[..., :width], beam, zero_order)
            for plane in range(1, planes):
                panel = phase_rad[..., plane * width:(plane + 1) * width]
                field = modulated_field(panel, propagate(field, transfer), zero_order)
        return _power(torch.matmul(a, field) @ b.T)
