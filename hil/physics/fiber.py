"""Noiseless physics of an SLM coupled into a multimode fiber whose output speckle is imaged onto a camera.

The SLM is coarse-grained into macro-pixels: each ``block`` × ``block`` square couples as one channel with the
amplitude u_j = a_j · mean_block((1 − z)·e^{iφ} + z), a_j = (Σ_block A²)^½ the beam amplitude over it (so a
block of uniform phase carries all its power, and a grating whose mean phasor vanishes carries none). The fiber
is linear: the field
on the camera pixels is e = T·u, T = S·diag(e^{iδ})·M·C, with C the coupling of the macro-pixels into the fiber's
modes, M the fiber's transmission matrix between modes (mode-dependent loss included), δ the modes' slowly
drifting phases and S the speckle each output mode makes on the camera (orthonormal columns). The camera sees
|e|². Intensities are fractions of the power reaching the SLM, as in `hil.physics.optics`. Every function is
differentiable in its tensor arguments, computes at the precision of the SLM phases it is given (as
`hil.physics.optics`) and draws no random numbers.
"""

from __future__ import annotations

import functools

import torch

from hil.physics.optics import Scalar, slm_phase


def macro_amplitudes(beam: torch.Tensor, block: int) -> torch.Tensor:
    """The beam amplitude a_j = (Σ_block A²)^½ of every macro-pixel (row-major), for a beam (rows × cols)."""
    rows, cols = beam.shape
    if rows % block or cols % block:
        raise ValueError(f"a {rows}×{cols} SLM does not split into {block}×{block} macro-pixels")
    return beam.square().reshape(rows // block, block, cols // block, block).sum(dim=(1, 3)).reshape(-1).sqrt()


def macro_pixel_field(phase_rad: torch.Tensor, block: int, amplitudes: torch.Tensor,
                      zero_order: Scalar = 0.0) -> torch.Tensor:
    """Macro-pixel amplitudes u (N × macro-pixels, complex) for realised SLM phases (N × rows × cols):
    u_j = a_j·((1 − z)·mean_block(e^{iφ}) + z). The block means of cos φ and sin φ are each two matmuls with
    averaging matrices (`block_average`), several times faster here than a mean over strided block axes, and
    without a stacked copy of the two."""
    frames, rows, cols = phase_rad.shape
    if rows % block or cols % block:
        raise ValueError(f"a {rows}×{cols} SLM does not split into {block}×{block} macro-pixels")
    kind = (phase_rad.dtype, phase_rad.device)
    along_rows, along_cols = block_average(rows, block, *kind), block_average(cols, block, *kind).T
    real = (along_rows @ torch.cos(phase_rad) @ along_cols).reshape(frames, -1)
    imag = (along_rows @ torch.sin(phase_rad) @ along_cols).reshape(frames, -1)
    z = torch.as_tensor(zero_order, dtype=phase_rad.dtype)
    mean = torch.complex(real, imag)
    return amplitudes * ((1 - z) * mean + z)


@functools.lru_cache(maxsize=16)
def block_average(n: int, block: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | None = None) -> torch.Tensor:
    """The (n / block) × n matrix averaging each run of ``block`` consecutive entries. Cached: never modify it."""
    return torch.eye(n // block, dtype=dtype, device=device).repeat_interleave(block, dim=1) / block


def fiber_transmission(coupling: torch.Tensor, modes: torch.Tensor, speckle: torch.Tensor,
                       mode_phase_rad: torch.Tensor | None = None) -> torch.Tensor:
    """The whole transmission T = S·diag(e^{iδ})·M·C (camera pixels × macro-pixels, complex).

    ``coupling`` C: modes × macro-pixels; ``modes`` M: modes × modes; ``speckle`` S: pixels × modes;
    ``mode_phase_rad`` δ: the modes' extra phases (default none).
    """
    inner = modes @ coupling
    if mode_phase_rad is not None:
        inner = torch.polar(torch.ones_like(mode_phase_rad), mode_phase_rad)[:, None] * inner
    return speckle @ inner


def speckle_intensity(amplitudes: torch.Tensor, transmission: torch.Tensor) -> torch.Tensor:
    """Intensity |T·u|² on the output pixels (N × pixels) for macro-pixel amplitudes u (N × macro-pixels)."""
    field = amplitudes @ transmission.T
    return field.real.square() + field.imag.square()


def fiber_intensity(drive_rad: torch.Tensor, *, amplitudes: torch.Tensor, transmission: torch.Tensor, block: int,
                    gain: Scalar = 1.0, bow_rad: Scalar = 0.0, crosstalk_var_px2: Scalar = 0.0,
                    zero_order: Scalar = 0.0) -> torch.Tensor:
    """Intensity on the output pixels (N × pixels) for SLM drives (N × rows × cols, rad), through the SLM's LUT
    and crosstalk (`hil.physics.optics.slm_phase`), the zero order, the macro-pixels' beam ``amplitudes``
    (`macro_amplitudes`) and the fiber's ``transmission`` T."""
    phase = slm_phase(drive_rad, gain=gain, bow_rad=bow_rad, crosstalk_var_px2=crosstalk_var_px2)
    return speckle_intensity(macro_pixel_field(phase, block, amplitudes, zero_order), transmission)
