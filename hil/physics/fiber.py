"""Noiseless physics of an SLM coupled into a multimode fiber whose output speckle is imaged onto a camera.

The SLM's field (`hil.physics.optics.modulated_field`) is coarse-grained into macro-pixels: each
``block`` × ``block`` square couples as one channel, with the amplitude u_j = Σ_block E / block (so a block of
uniform phase carries all its power, and a grating inside a block carries none). The fiber is linear: the field
on the camera pixels is e = T·u, T = S·diag(e^{iδ})·M·C, with C the coupling of the macro-pixels into the fiber's
modes, M the fiber's transmission matrix between modes (mode-dependent loss included), δ the modes' slowly
drifting phases and S the speckle each output mode makes on the camera (orthonormal columns). The camera sees
|e|². Intensities are fractions of the power reaching the SLM, as in `hil.physics.optics`. Every function is
differentiable in its tensor arguments and draws no random numbers.
"""

from __future__ import annotations

import torch

from hil.physics.optics import Scalar, modulated_field, slm_phase


def macro_pixel_field(field: torch.Tensor, block: int) -> torch.Tensor:
    """Macro-pixel amplitudes (N × macro-pixels, row-major) of a field (N × rows × cols): Σ_block E / block."""
    frames, rows, cols = field.shape
    if rows % block or cols % block:
        raise ValueError(f"a {rows}×{cols} field does not split into {block}×{block} macro-pixels")
    blocks = field.reshape(frames, rows // block, block, cols // block, block)
    return blocks.sum(dim=(2, 4)).reshape(frames, -1) / block


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


def fiber_intensity(drive_rad: torch.Tensor, *, beam: torch.Tensor, transmission: torch.Tensor, block: int,
                    gain: Scalar = 1.0, bow_rad: Scalar = 0.0, crosstalk_px: Scalar = 0.0,
                    zero_order: Scalar = 0.0) -> torch.Tensor:
    """Intensity on the output pixels (N × pixels) for SLM drives (N × rows × cols, rad), through the SLM's LUT,
    crosstalk and zero order (`hil.physics.optics.slm_phase`) and the fiber's ``transmission`` T."""
    phase = slm_phase(drive_rad, gain=gain, bow_rad=bow_rad, crosstalk_px=crosstalk_px)
    amplitudes = macro_pixel_field(modulated_field(phase, beam, zero_order), block)
    return speckle_intensity(amplitudes, transmission)
