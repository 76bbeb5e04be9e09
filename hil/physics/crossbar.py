"""Noiseless physics of a memristor crossbar read as a vector-matrix multiplier.

The array has ``rows`` word lines (inputs, driven with read voltages) and ``cols`` bit lines (outputs, held at
virtual ground by transimpedance amplifiers). A signed weight ``w`` in [−1, 1] is a differential pair of devices
on two adjacent columns: output ``j`` reads ``I+`` on column ``2j`` and ``I−`` on column ``2j + 1``.

Everything here is a pure, differentiable torch function of inputs and physical parameters, in SI units
(siemens, volts, amperes, ohms). The simulated crossbar calls these functions with its hidden values and adds
noise around them; the crossbar system's physics model calls them with learnable calibration parameters.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor


def target_conductances(weights: Tensor, g_min_s: float, g_max_s: float, shape: tuple[int, int]) -> Tensor:
    """Target conductances (S) of a ``rows × cols`` array holding ``weights`` (n_in × n_out, in [−1, 1]).

    ``G+ = G_min + (G_max − G_min)·max(w, 0)`` on column ``2j`` and ``G− = G_min + (G_max − G_min)·max(−w, 0)``
    on column ``2j + 1`` of rows ``0..n_in−1``; every other device is set to ``G_min``.
    """
    n_in, n_out = weights.shape
    span = g_max_s - g_min_s
    # where, not clamp: clamp passes the gradient to both devices at w = 0, doubling d(G+ − G−)/dw there
    positive = weights > 0
    pairs = torch.stack([torch.where(positive, weights, 0.0), torch.where(positive, 0.0, -weights)], dim=-1)
    pairs = pairs.reshape(n_in, 2 * n_out)
    pairs = g_min_s + span * pairs
    rows, cols = shape
    if (n_in, 2 * n_out) == (rows, cols):
        return pairs
    full = torch.full((rows, cols), g_min_s, dtype=pairs.dtype, device=pairs.device)
    return torch.cat([torch.cat([pairs, full[:n_in, 2 * n_out:]], dim=1), full[n_in:]], dim=0)


def quantise_levels(conductance_s: Tensor, g_low_s: float, g_high_s: float, levels: int) -> Tensor:
    """Round conductances to the nearest of ``levels`` evenly spaced programmable states in [g_low, g_high] (S).

    The gradient passes straight through the rounding, so a model using it stays trainable.
    """
    step = (g_high_s - g_low_s) / (levels - 1)
    rounded = (torch.round((conductance_s - g_low_s) / step) * step + g_low_s).clamp(g_low_s, g_high_s)
    if not conductance_s.requires_grad:
        return rounded
    return conductance_s + (rounded - conductance_s).detach()


def device_conductance(programmed_s: Tensor, scale: Tensor, stuck_s: Tensor) -> Tensor:
    """The conductance each device presents (S): ``scale · programmed + stuck``.

    ``scale`` is each device's conductance scale (1 nominal, 0 for a stuck device); ``stuck_s`` is the fixed
    conductance of a stuck device (0 for a working one).
    """
    return programmed_s * scale + stuck_s


@functools.lru_cache(maxsize=16)
def _shared_segments(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``S[m, j] = min(m, j) + 1``: wire segments shared by the paths of cells m and j to the line's driven end.

    Cached per size and dtype; callers must not modify the result.
    """
    index = torch.arange(n, dtype=dtype, device=device)
    return torch.minimum(index[:, None], index[None, :]) + 1


@functools.lru_cache(maxsize=16)
def _shared_segments_flipped(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return _shared_segments(n, dtype, device).flip(0, 1)


def ir_drop_factor(conductance_s: Tensor, wire_resistance_ohm: Tensor | float) -> Tensor:
    """First-order IR-drop factor ``F`` (rows × cols): the array reads as if each device had conductance ``G·F``.

    Rows are driven at column 0's end, columns are read at row ``rows−1``'s end, and every wire segment between
    neighbouring cells (and between the last cell and the driver or amplifier) has resistance ``r``. To first order
    in ``r``, with the device currents of the drop-free array, the voltage across device (i, j) is reduced by
    ``V_i·r·Σ_m G_im·(min(m, j) + 1)`` along its row and raised at its column by
    ``r·Σ_n G_nj·V_n·(rows − max(n, i))``. Both are linear in the row voltages, so the column currents are
    ``V @ (G ⊙ F)`` with ``F = 1 − r·(G @ S_cols + S_rows' @ G)``, where ``S[m, j] = min(m, j) + 1`` and
    ``S_rows'`` is ``S_rows`` flipped (counted from the amplifier end). Valid while ``1 − F`` is small (a few %);
    the neglected terms are of order ``(1 − F)²``: against an exact solve of the wire network (64 × 64 devices at
    g_max, positive inputs), 3.0 % of the drop at 0.35 Ω per cell (a 3.0 % drop) and 8.4 % at 1 Ω (an 8.0 % drop).
    """
    rows, cols = conductance_s.shape
    kind = (conductance_s.dtype, conductance_s.device)
    along_rows = conductance_s @ _shared_segments(cols, *kind)
    along_cols = _shared_segments_flipped(rows, *kind) @ conductance_s
    return 1 - wire_resistance_ohm * (along_rows + along_cols)


def column_currents(voltages_v: Tensor, effective_s: Tensor, gain: Tensor | None, offset_a: Tensor | None) -> Tensor:
    """Column currents (batch × cols, A) for row voltages (batch × rows, V), as read by the column amplifiers.

    ``effective_s`` is the array's effective conductance matrix (after IR drop); ``gain`` (cols) and
    ``offset_a`` (cols, A) are each column's read-out gain and offset referred to its input current. ``gain``
    None: already multiplied into ``effective_s`` (a simulator reading many times with one matrix); ``offset_a``
    None: no offsets (a plain matmul, which spares the addition's pass over the batch).
    """
    weights = effective_s if gain is None else effective_s * gain
    return voltages_v @ weights if offset_a is None else torch.addmm(offset_a, voltages_v, weights)


#: Widest read-out that `differential_output` pairs with a matmul (measured: at batch 1024 the matmul takes 26 µs
#: and the strided subtraction 32 µs for 64 columns; 97 µs against 62 µs for 128).
PAIRING_MATMUL_MAX_COLS = 64


def pair_differences(columns: Any, pairs: int) -> Any:
    """``c_2j − c_2j+1`` of the first ``pairs`` column pairs (… × pairs) of per-column values (… × cols): currents
    of a differential read-out, or a pair's weights; a torch tensor or a numpy array."""
    return columns[..., 0:2 * pairs:2] - columns[..., 1:2 * pairs:2]


def differential_output(currents_a: Tensor, n_out: int, full_scale_a: float) -> Tensor:
    """``y_j = (I_2j − I_2j+1) / full_scale`` (batch × n_out), with ``full_scale = V_read·(G_max − G_min)``.

    One device pair at full weight driven at the full read voltage gives ``y = 1``, so ``y ≈ Wᵀx``. Up to
    `PAIRING_MATMUL_MAX_COLS` columns it is one matmul with the pairing matrix (`pair_matrix`), which costs less
    than subtracting strided columns; beyond, the matmul's cost grows with cols² and the subtraction wins.
    """
    if currents_a.shape[-1] <= PAIRING_MATMUL_MAX_COLS:
        pairing = pair_matrix(currents_a.shape[-1], n_out, full_scale_a, currents_a.dtype, currents_a.device)
        return currents_a @ pairing
    return pair_differences(currents_a, n_out) * (1 / full_scale_a)


@functools.lru_cache(maxsize=16)
def pair_matrix(cols: int, n_out: int, full_scale_a: float, dtype: torch.dtype = torch.float32,
                device: torch.device | None = None) -> Tensor:
    """The cols × n_out matrix of ``differential_output``: +1/full_scale at (2j, j), −1/full_scale at (2j + 1, j).

    Cached; callers must not modify it.
    """
    matrix = torch.zeros(cols, n_out, dtype=dtype, device=device)
    outputs = torch.arange(n_out, device=device)
    matrix[2 * outputs, outputs] = 1 / full_scale_a
    matrix[2 * outputs + 1, outputs] = -1 / full_scale_a
    return matrix
