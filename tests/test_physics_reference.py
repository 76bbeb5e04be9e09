"""Each world's noiseless physics (`hil.physics`) against an independent reference written here from first
principles in numpy float64: Kirchhoff's current law and the device laws of the resistive network, the gradient that
equilibrium propagation estimates, an exact nodal solve of the crossbar's wires, the centred FFT and the Gaussian
beam for the optics, a finer RK4 and the conserved energy for the oscillators, and the power through the fiber.
The simulators and the systems' models share these functions, so agreeing with each other cannot catch a formula
they share; these references can."""

import math

import numpy as np
import pytest
import torch

from hil.physics import crossbar, optics, oscillator, resistive
from hil.systems.resistive import nudge_gate_voltage

K_OVER_Q = 1.380649e-23 / 1.602176634e-19  # V/K, exact SI values


# -- resistive network -------------------------------------------------------------------------------------------
def _diode_current(voltage: np.ndarray, i_s: np.ndarray, n_vt: float, r_s: float) -> np.ndarray:
    """I solving I = I_S·(exp((V − I·R_S)/(N·kT/q)) − 1), by bisection (the residual increases with I)."""
    low, high = np.full_like(voltage, -2 * i_s.max()), np.maximum(voltage, 0) / r_s + 1e-3
    for _ in range(200):
        mid = (low + high) / 2
        above = mid - i_s * np.expm1((voltage - mid * r_s) / n_vt) > 0
        low, high = np.where(above, low, mid), np.where(above, mid, high)
    return (low + high) / 2


def test_resistive_equilibrium_obeys_kirchhoff_with_the_device_laws_written_independently() -> None:
    """Away from the reference temperature and with spread devices: every free node's currents, from the documented
    device laws (softplus transistor, Shockley diode with R_S, SPICE I_S(T), linear threshold tempco), sum to zero."""
    layout = resistive.Layout(3, 6, 2)
    generator = torch.Generator().manual_seed(0)
    temperature = 305.0
    nominal = resistive.nominal_parameters(layout)
    params = nominal._replace(
        threshold_v=0.7 + 0.02 * torch.randn(layout.n_edges, generator=generator, dtype=torch.float64),
        nudge_threshold_v=torch.tensor([0.69, 0.72], dtype=torch.float64),
        saturation_current_a=2.52e-9 * torch.exp(0.3 * torch.randn(layout.n_diodes, generator=generator,
                                                                   dtype=torch.float64)),
        temperature_k=temperature)
    inputs = 2 * torch.rand(16, 3, generator=generator, dtype=torch.float64) - 1
    gates = 0.6 + 1.3 * torch.rand(layout.n_edges, generator=generator, dtype=torch.float64)
    targets = 0.4 * torch.randn(16, 2, generator=generator, dtype=torch.float64)
    nudges = torch.tensor([1.0, 1.3], dtype=torch.float64)
    free = resistive.equilibrium(layout, params, inputs, gates, targets, nudges).numpy()

    u_t, t0 = K_OVER_Q * temperature, 298.15

    def conductance(gate: np.ndarray, threshold_ref: np.ndarray) -> np.ndarray:
        s = 1.3 * u_t
        return 1e-4 * s * np.log1p(np.exp((gate - threshold_ref + 2e-3 * (temperature - t0)) / s))

    g_in = conductance(gates.numpy()[:18], params.threshold_v.numpy()[:18]).reshape(3, 6)
    g_out = conductance(gates.numpy()[18:], params.threshold_v.numpy()[18:]).reshape(6, 2)
    g_nudge = conductance(nudges.numpy(), params.nudge_threshold_v.numpy())
    n_vt = 1.752 * u_t
    ratio = temperature / t0
    i_s = params.saturation_current_a.numpy() * ratio ** (3 / 1.752) * np.exp((ratio - 1) * 1.11 / n_vt)
    v_in, hidden, out = inputs.numpy(), free[:, :6], free[:, 6:]
    into_hidden = np.einsum("bi,ij->bj", v_in, g_in) - hidden * g_in.sum(0)
    hidden_to_out = g_out[None] * (hidden[:, :, None] - out[:, None, :])  # b × hidden × outputs
    diodes = _diode_current(hidden, i_s[:6], n_vt, 1e3) - _diode_current(-hidden, i_s[6:], n_vt, 1e3)
    kcl_hidden = into_hidden - hidden_to_out.sum(2) - diodes
    kcl_out = hidden_to_out.sum(1) - out / 1e4 + g_nudge * (targets.numpy() - out)
    scale = np.abs(hidden_to_out).max()  # ~50 µA
    assert scale > 1e-5
    assert np.abs(np.concatenate([kcl_hidden, kcl_out], 1)).max() < 1e-9 * scale  # measured 9e-11


def test_diode_co_content_is_the_integral_of_its_current() -> None:
    i_s, n_vt, r_s = 2.52e-9, 1.752 * K_OVER_Q * 298.15, 1e3
    for end in (-1.0, 0.3, 0.6, 1.5):
        voltage = torch.linspace(0, end, 20001, dtype=torch.float64)
        integral = torch.trapezoid(resistive.diode_current(voltage, i_s, n_vt, r_s), voltage)
        co_content = resistive.diode_co_content(torch.tensor(end, dtype=torch.float64), i_s, n_vt, r_s)
        assert float(co_content) == pytest.approx(float(integral), rel=1e-7)  # measured 9e-9 (the trapezoid rule's)


def test_equilibrium_propagation_estimate_approaches_the_true_gradient_as_beta_goes_to_zero() -> None:
    """hil.systems.resistive: the update of edge e is ∝ −(ΔV_e(β)² − ΔV_e(0)²)/β·∂G_e/∂θ_e. With the nudge conductance
    β·g_unit (co-content β·g_unit·C, C = ½Σ(V_out − target)²), (ΔV_e(β)² − ΔV_e(0)²)/(2β·g_unit)·∂G_e/∂θ_e → ∂C/∂θ_e,
    the gradient autograd gives through the free equilibrium; the error shrinks in proportion to β."""
    layout = resistive.Layout(3, 6, 2)
    params = resistive.DeviceParameters(*(value.double() if isinstance(value, torch.Tensor) else value
                                          for value in resistive.nominal_parameters(layout)))
    generator = torch.Generator().manual_seed(1)
    inputs = 2 * torch.rand(8, 3, generator=generator, dtype=torch.float64) - 1
    gates = 0.6 + 1.3 * torch.rand(layout.n_edges, generator=generator, dtype=torch.float64)
    targets = 0.4 * torch.randn(8, 2, generator=generator, dtype=torch.float64)
    g_unit = 1e-4

    theta = gates.clone().requires_grad_()
    outputs = resistive.equilibrium(layout, params, inputs, theta)[:, layout.n_hidden:]
    (true,) = torch.autograd.grad(((outputs - targets) ** 2).sum() / 2, theta)
    u_t = resistive.thermal_voltage(resistive.REFERENCE_TEMPERATURE_K)
    theta = gates.clone().requires_grad_()
    (slope,) = torch.autograd.grad(resistive.transistor_conductance(theta, 0.7, 1e-4, 1.3, u_t).sum(), theta)

    def edge_voltages(beta: float) -> torch.Tensor:
        gate = torch.tensor(nudge_gate_voltage(beta, g_unit, 10.0), dtype=torch.float64)
        if beta:  # the nudge gate realises β·g_unit by the nominal law
            assert float(resistive.transistor_conductance(gate, 0.7, 1e-4, 1.3, u_t)) == pytest.approx(beta * g_unit)
        free = resistive.equilibrium(layout, params, inputs, gates, targets if beta else None, gate)
        return resistive.edge_voltages(layout, resistive.node_voltages(layout, inputs, free))

    free_state = edge_voltages(0.0)
    errors = []
    for beta in (0.1, 0.01):
        estimate = (edge_voltages(beta) ** 2 - free_state**2).sum(0) / (2 * beta * g_unit) * slope
        errors.append(float((estimate - true).norm() / true.norm()))
    assert errors[1] < 0.015  # measured 0.0086 (0.08 at β = 0.1)
    assert 7 < errors[0] / errors[1] < 13  # first order in β


# -- crossbar ----------------------------------------------------------------------------------------------------
def _exact_column_currents(voltages: np.ndarray, conductance: np.ndarray, wire_ohm: float) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """(column currents batch × cols, device currents batch × rows × cols) of the crossbar with a wire of
    ``wire_ohm`` between neighbouring cells and at both ends (rows driven at column 0's end, columns read into
    virtual ground past the last row): Kirchhoff's law at every row- and column-wire node, solved by
    Jacobi-preconditioned conjugate gradients to 1e-14 (the nodal matrix is symmetric positive definite)."""
    g_wire = 1 / wire_ohm

    def apply(state: np.ndarray) -> np.ndarray:  # currents leaving every node for node voltages (batch × 2 × r × c)
        row, col = state[:, 0], state[:, 1]
        device = conductance * (row - col)
        out_row, out_col = device.copy(), -device
        out_row[:, :, 0] += g_wire * row[:, :, 0]
        along = g_wire * (row[:, :, :-1] - row[:, :, 1:])
        out_row[:, :, :-1] += along
        out_row[:, :, 1:] -= along
        out_col[:, -1, :] += g_wire * col[:, -1, :]
        along = g_wire * (col[:, :-1, :] - col[:, 1:, :])
        out_col[:, :-1, :] += along
        out_col[:, 1:, :] -= along
        return np.stack([out_row, out_col], 1)

    batch, (rows, cols) = len(voltages), conductance.shape
    rhs = np.zeros((batch, 2, rows, cols))
    rhs[:, 0, :, 0] = g_wire * voltages
    diagonal = conductance + 2 * g_wire
    state = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual / diagonal
    product = (residual * direction).sum(axis=(1, 2, 3))
    for _ in range(5000):
        applied = apply(direction)
        step = product / (direction * applied).sum(axis=(1, 2, 3))
        state += step[:, None, None, None] * direction
        residual -= step[:, None, None, None] * applied
        if np.sqrt((residual**2).sum(axis=(1, 2, 3)) / (rhs**2).sum(axis=(1, 2, 3))).max() < 1e-14:
            break
        preconditioned = residual / diagonal
        new_product = (residual * preconditioned).sum(axis=(1, 2, 3))
        direction = preconditioned + (new_product / product)[:, None, None, None] * direction
        product = new_product
    return state[:, 1, -1, :] * g_wire, conductance * (state[:, 0] - state[:, 1])


def test_crossbar_exact_solver_agrees_with_a_dense_nodal_solve() -> None:
    """The reference itself, against a dense solve of the same network built node by node on a small tile."""
    rows, cols, wire = 5, 7, 20.0
    rng = np.random.default_rng(0)
    conductance, voltages = rng.uniform(0, 25e-6, (rows, cols)), rng.uniform(-0.2, 0.2, (3, rows))
    size = 2 * rows * cols
    matrix, drive = np.zeros((size, size)), np.zeros((size, 3))

    def link(a: int, b: int | None, g: float) -> None:
        matrix[a, a] += g
        if b is not None:
            matrix[b, b] += g
            matrix[a, b] -= g
            matrix[b, a] -= g

    for i in range(rows):
        for j in range(cols):
            row_node, col_node = i * cols + j, rows * cols + i * cols + j
            link(row_node, col_node, conductance[i, j])
            if j + 1 < cols:
                link(row_node, row_node + 1, 1 / wire)
            if i + 1 < rows:
                link(col_node, col_node + cols, 1 / wire)
        link(i * cols, None, 1 / wire)
        drive[i * cols] = voltages[:, i] / wire
    for j in range(cols):
        link(rows * cols + (rows - 1) * cols + j, None, 1 / wire)
    nodes = np.linalg.solve(matrix, drive)
    dense = nodes[rows * cols + (rows - 1) * cols:].T / wire
    currents, _ = _exact_column_currents(voltages, conductance, wire)
    np.testing.assert_allclose(currents, dense, rtol=0, atol=1e-10 * np.abs(dense).max())


@pytest.mark.parametrize(("wire_ohm", "far_first", "far_exact", "worst_column", "error_of_drop"),
                         [(0.35, 0.0364, 0.035, 0.030, 0.030), (1.0, 0.104, 0.095, 0.080, 0.084)])
def test_first_order_ir_drop_against_an_exact_solve_of_the_64x64_tile(wire_ohm, far_first, far_exact,
                                                                      worst_column, error_of_drop) -> None:
    """The figures of `ir_drop_factor`'s docstring and of the crossbar's ``wire_resistance_ohm`` description: every
    device at g_max (25 µS), every row at the same positive voltage. At 0.35 Ω the far corner's read drops 3.6 % to
    first order and 3.5 % exactly, the worst column's current 3.0 %, matched within 3.0 % of that drop; at 1 Ω 8.4 %
    of an 8.0 % drop."""
    conductance = np.full((64, 64), 25e-6)
    voltages = np.full((1, 64), 0.2)
    exact, devices = _exact_column_currents(voltages, conductance, wire_ohm)
    factor = crossbar.ir_drop_factor(torch.tensor(conductance), wire_ohm).numpy()
    first_order = voltages @ (conductance * factor)
    ideal = voltages @ conductance
    assert 1 - factor.min() == pytest.approx(far_first, abs=1e-4)
    assert 1 - factor[0, -1] == pytest.approx(far_first, abs=1e-4)  # the far corner: row 0, last column
    assert 1 - devices[0, 0, -1] / (0.2 * 25e-6) == pytest.approx(far_exact, abs=5e-4)
    drop = ideal - exact
    assert (drop / ideal).max() == pytest.approx(worst_column, abs=5e-4)
    assert (np.abs(first_order - exact) / drop).max() == pytest.approx(error_of_drop, abs=5e-4)


def test_first_order_ir_drop_of_column_currents_holds_for_inputs_of_either_sign() -> None:
    """The column term of the first-order drop raises device (i, j)'s column by r·Σ_n G_nj·V_n·(rows − max(n, i)),
    which involves the other rows' voltages; summed over the column it is still V @ (G ⊙ F) because the shared
    segments are symmetric, so the column currents are right to first order for mixed-sign inputs too: what is left is
    second order, and halves with the wire resistance relative to the first-order drop."""
    rng = np.random.default_rng(1)
    conductance = rng.uniform(0, 25e-6, (32, 32))
    voltages = rng.uniform(-0.2, 0.2, (4, 32))
    ratios = []
    for wire in (2.0, 1.0):
        exact, _ = _exact_column_currents(voltages, conductance, wire)
        first_order = voltages @ (conductance * crossbar.ir_drop_factor(torch.tensor(conductance), wire).numpy())
        ideal = voltages @ conductance
        ratios.append(np.abs(first_order - exact).max() / np.abs(ideal - exact).max())
    assert ratios[0] < 0.05
    assert ratios[1] == pytest.approx(ratios[0] / 2, rel=0.1)


# -- optics ------------------------------------------------------------------------------------------------------
def test_lens_is_the_centred_fft_of_the_zero_padded_field_with_the_axis_on_the_middle_pixel() -> None:
    """Camera pixel (rows//2, cols//2) holds the zero frequency, as numpy's fftshift puts it; a shift of whole pixels
    rolls the image by them; a window is the crop."""
    rng = np.random.default_rng(2)
    for rows, cols, size, camera, shift, window in ((16, 24, 64, (20, 30), (0, 0), None),
                                                    (17, 23, 63, (21, 31), (2, -3), (3, 5, 7, 9))):
        field = rng.normal(size=(2, rows, cols)) + 1j * rng.normal(size=(2, rows, cols))
        padded = np.zeros((2, size, size), complex)
        padded[:, :rows, :cols] = field
        plane = np.roll(np.fft.fftshift(np.fft.fft2(padded, norm="ortho"), axes=(1, 2)), shift, axis=(1, 2))
        top, left = size // 2 - camera[0] // 2, size // 2 - camera[1] // 2
        expected = plane[:, top:top + camera[0], left:left + camera[1]]
        if window is not None:
            expected = expected[:, window[0]:window[0] + window[2], window[1]:window[1] + window[3]]
        got = optics.fourier_window(torch.tensor(field), size, camera, [float(s) for s in shift], window)
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_angular_spectrum_propagates_a_gaussian_beam_as_the_analytical_solution() -> None:
    """A Gaussian beam of waist w0 = 32 µm (4 pixels of 8 µm) at 532 nm, Rayleigh range z_R = π·w0²/λ = 6.0 mm:
    field w0/w·exp(−r²/w²)·exp(ik·r²/2R)·exp(−i·atan(z/z_R)) (exp(ikz) removed, as `angular_spectrum` does), its width
    w(z) = w0·√(1 + (z/z_R)²) out to 3.3 z_R, with its power kept on the panel."""
    pitch, wavelength, waist, n = 8e-6, 532e-9, 32e-6, 64
    axis = (np.arange(n) - (n - 1) / 2) * pitch
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    start = np.exp(-r2 / waist**2)
    norm = 1 / np.sqrt((start**2).sum())
    rayleigh = math.pi * waist**2 / wavelength
    for distance in (2e-3, 6e-3, 2e-2):
        transfer = optics.angular_spectrum((n, n), pitch, wavelength, distance)
        field = optics.propagate(torch.tensor(start * norm), transfer).numpy()
        width = waist * math.sqrt(1 + (distance / rayleigh) ** 2)
        curvature = distance * (1 + (rayleigh / distance) ** 2)
        expected = norm * waist / width * np.exp(-r2 / width**2 + 1j * math.pi * r2 / (wavelength * curvature)
                                                 - 1j * math.atan(distance / rayleigh))
        assert np.abs(field - expected).max() < 1e-4 * np.abs(expected).max()  # measured ≤ 1.2e-5 (H is complex64)
        assert (np.abs(field) ** 2).sum() == pytest.approx(1.0, abs=1e-4)


def test_angular_spectrum_keeps_the_propagating_power_and_drops_the_evanescent() -> None:
    """On its own grid (no cropping), free space is unitary on propagating plane waves and removes evanescent ones:
    at a 0.3 µm pitch and 532 nm the corners of the spectrum beyond 1/λ carry their power away."""
    rng = np.random.default_rng(3)
    for pitch, evanescent in ((8e-6, False), (0.3e-6, True)):
        transfer = optics.angular_spectrum((16, 16), pitch, 532e-9, 2e-6)
        rows, cols = transfer.shape
        field = np.exp(2j * np.pi * rng.random((rows, cols)))
        spectrum = np.fft.fft2(field)
        frequencies = np.fft.fftfreq(rows, pitch)[:, None] ** 2 + np.fft.fftfreq(cols, pitch)[None, :] ** 2
        propagating = frequencies < 1 / 532e-9**2
        assert propagating.all() != evanescent
        expected = (np.abs(spectrum[propagating]) ** 2).sum() / (rows * cols)
        out = optics.propagate(torch.tensor(field), transfer).numpy()
        assert (np.abs(out) ** 2).sum() == pytest.approx(expected, rel=1e-6)


def test_free_space_grid_holds_8um_pixels_at_532nm_up_to_about_12cm() -> None:
    """`MAX_GRID_SIDE`'s comment: a 64 × 64 panel's grid, 64 + 2·λ·d/p² samples a side, reaches 2048 at 11.9 cm;
    as two stacked 32-pixel-wide panels, at 12.0 cm."""
    assert optics.grid_problem((64, 64), 8e-6, 532e-9, 0.119) is None
    assert optics.grid_problem((64, 64), 8e-6, 532e-9, 0.1195) is not None
    assert optics.grid_problem((64, 32), 8e-6, 532e-9, 0.120) is None
    assert optics.grid_problem((64, 32), 8e-6, 532e-9, 0.1205) is not None


def test_blur_is_a_normalised_discrete_gaussian_of_the_given_variance() -> None:
    offsets = np.arange(41) - 20
    for variance in (0.3, 1.0, 2.5):
        kernel = optics.blur_matrix(41, variance, torch.float64).numpy()
        assert (kernel[20] * offsets**2).sum() == pytest.approx(variance, rel=1e-9)
        np.testing.assert_allclose(kernel.sum(1), 1, atol=1e-12)  # the reflecting edges lose no light


# -- oscillator --------------------------------------------------------------------------------------------------
def _step_eigenvalue(omega_h: float) -> complex:
    """The eigenvalue of one `simulate` step of an undamped linear oscillator (ω = 1 rad/s, h = ``omega_h`` s)."""
    one = torch.ones(1, dtype=torch.float64)
    start = torch.eye(2, dtype=torch.float64)
    states = oscillator.simulate(torch.zeros(2, 1, 1, dtype=torch.float64), 1 / omega_h, one, 0 * one, 0 * one,
                                 torch.zeros(1, 1, dtype=torch.float64), state0=start)
    eigenvalues = np.linalg.eigvals(states[:, 1].numpy().T)
    return complex(eigenvalues[np.argmax(eigenvalues.imag)])


def test_rk4_errors_are_those_the_oscillator_docstrings_give() -> None:
    """Module docstring: a 400 Hz mode at h = 250 µs (ωh = 0.63) rings 1.1e-3 slow and loses 4.1e-4 of its amplitude
    per step (0.4 % per period); `MAX_OMEGA_STEP`: at ωh = 1, 0.56 % slow and 0.61 % lost per step."""
    for omega_h, shift, loss in ((2 * math.pi * 400 * 2.5e-4, -1.1e-3, 4.1e-4), (1.0, -5.6e-3, 6.1e-3)):
        eigenvalue = _step_eigenvalue(omega_h)
        assert np.angle(eigenvalue) / omega_h - 1 == pytest.approx(shift, rel=0.03)
        assert 1 - abs(eigenvalue) == pytest.approx(loss, rel=0.03)
    per_period = 1 - abs(_step_eigenvalue(2 * math.pi * 400 * 2.5e-4)) ** 10
    assert per_period == pytest.approx(0.004, rel=0.05)


def test_free_modes_decay_between_the_slowest_and_fastest_half_damping_rate() -> None:
    """`slowest_decay_rate`: with diagonal damping, every underdamped mode of the linearised network decays at a rate
    between min γ/2 and max γ/2, so a gap of ``gap_s`` leaves at most e^(−γ_min·gap/2) of a ring (the oscillator
    system's 10⁻⁴ for 0.1 s: 8.1e-5); the eigenvalues of [[0, I], [−K, −Γ]] are computed here from the equations of
    motion."""
    p = _nominal_oscillators()
    omega, gamma, kappa = (p[key].numpy() for key in ("omega", "gamma", "kappa"))
    stiffness = np.diag(omega**2 + kappa.sum(1)) - kappa
    system = np.block([[np.zeros((4, 4)), np.eye(4)], [-stiffness, -np.diag(gamma)]])
    rates = -np.linalg.eigvals(system).real
    assert rates.min() >= oscillator.slowest_decay_rate(p["gamma"]) * (1 - 1e-9)
    assert rates.max() <= gamma.max() / 2 * (1 + 1e-9)
    assert math.exp(-oscillator.slowest_decay_rate(p["gamma"]) * 0.1) == pytest.approx(8.1e-5, rel=0.01)


def _nominal_oscillators() -> dict[str, torch.Tensor]:
    params = oscillator.nominal_parameters(oscillator.NOMINAL_FREQ_HZ, oscillator.NOMINAL_Q,
                                           oscillator.NOMINAL_NONLINEAR_LENGTH_M, oscillator.NOMINAL_COUPLING_HZ,
                                           oscillator.NOMINAL_DRIVE_GAIN, None, 4)
    return {key: value.double() for key, value in params.items()}


def test_oscillator_integration_agrees_with_a_fine_independent_rk4() -> None:
    """The equations of motion of the module docstring, integrated here in numpy with 25 RK4 steps per sample
    (10 µs) and the drive held over each sample (RK4's error 25⁴ times below that of one step per sample).
    `integrate` with 8 steps per sample converges to it; at its own step (250 µs, ωh = 0.63 for the 400 Hz mode) it
    is 1.9 % of the swing off, the phase that the documented 1.1e-3 per step accumulates over the ring-down."""
    p = _nominal_oscillators()
    omega, gamma, beta, kappa = (p[key].numpy() for key in ("omega", "gamma", "beta", "kappa"))
    rate, samples = 4000.0, 120
    drive = np.random.default_rng(4).uniform(-1, 1, (2, samples))
    accel = drive[..., None] * p["drive_gain"].numpy()
    states = [oscillator.integrate(torch.tensor(accel), rate, p["omega"], p["gamma"], p["beta"], p["kappa"],
                                   substeps=substeps).numpy() for substeps in (8, 1)]

    def acceleration(x: np.ndarray, v: np.ndarray, applied: np.ndarray) -> np.ndarray:
        coupling = (kappa * (x[:, :, None] - x[:, None, :])).sum(2)
        return applied - gamma * v - omega**2 * x - beta * x**3 - coupling

    x, v, h = np.zeros((2, 4)), np.zeros((2, 4)), 1 / (rate * 25)
    reference = [np.concatenate([x, v], 1)]
    for t in range(samples):
        for _ in range(25):
            k1x, k1v = v, acceleration(x, v, accel[:, t])
            k2x, k2v = v + h / 2 * k1v, acceleration(x + h / 2 * k1x, v + h / 2 * k1v, accel[:, t])
            k3x, k3v = v + h / 2 * k2v, acceleration(x + h / 2 * k2x, v + h / 2 * k2v, accel[:, t])
            k4x, k4v = v + h * k3v, acceleration(x + h * k3x, v + h * k3v, accel[:, t])
            x = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
            v = v + h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)
        reference.append(np.concatenate([x, v], 1))
    reference = np.stack(reference, 1)
    swing = np.abs(reference).max(axis=1, keepdims=True)
    assert swing[:, :, :4].max() > 1e-4  # the Duffing term matters: L = 0.5 mm
    assert (np.abs(states[0] - reference) / swing).max() < 2e-5  # measured 4.0e-6
    assert (np.abs(states[1] - reference) / swing).max() < 0.03  # measured 0.019


def test_undamped_undriven_oscillators_conserve_their_energy() -> None:
    """γ = 0, no drive: ½Σv² + ½Σω²x² + ¼Σβx⁴ + ½Σ_{i<j}κ_ij(x_i − x_j)² is constant (to RK4's error at 20 steps
    per 250 µs sample); a wrong sign or an unsymmetric coupling would make it drift."""
    p = _nominal_oscillators()
    start = torch.tensor([[3e-4, -1e-4, 4e-4, 1e-4, 0.0, 0.05, 0.0, -0.1]], dtype=torch.float64)
    states = oscillator.simulate(torch.zeros(1, 400, 4, dtype=torch.float64), 4000.0, p["omega"],
                                 torch.zeros(4, dtype=torch.float64), p["beta"], p["kappa"], substeps=20,
                                 state0=start)[0].numpy()
    x, v = states[:, :4], states[:, 4:]
    omega, beta, kappa = (p[key].numpy() for key in ("omega", "beta", "kappa"))
    springs = (np.triu(kappa)[None] * (x[:, :, None] - x[:, None, :]) ** 2).sum((1, 2)) / 2
    energy = (v**2).sum(1) / 2 + (omega**2 * x**2).sum(1) / 2 + (beta * x**4).sum(1) / 4 + springs
    assert (beta * x**4).sum(1).max() / 4 > 0.01 * energy[0]  # the cubic stiffness stores a share of it
    assert np.abs(energy / energy[0] - 1).max() < 1e-6  # measured 9e-8


# -- fiber -------------------------------------------------------------------------------------------------------
def test_fiber_power_is_the_coupled_macro_pixel_power_times_the_modes_transmissions() -> None:
    """Macro-pixel fields computed pixel by pixel here; a lossless fiber (no mode-dependent loss) with as many modes
    as macro-pixels delivers η·Σ|u_j|² to the camera (orthonormal speckle); with 3 dB of mode-dependent loss the
    power lies between 10^(−0.3) and 1 times that, on average over random patterns the modes' mean transmission
    (losses evenly spaced over 0..3 dB: 0.7226; the ratio's spread over patterns is 0.019, so 0.0012 on the mean)."""
    from simulators.fiber import MultimodeFiber

    rng = np.random.default_rng(5)
    phases = rng.uniform(0, 2 * np.pi, (256, 64, 64))
    for loss_db in (0.0, 3.0):
        world = MultimodeFiber(preset="ideal", seed=6, config={"construction": {"mode_dependent_loss_db": loss_db}})
        beam = world.beam.double().numpy()
        field = np.zeros((256, 64), complex)
        for block_row in range(8):
            for block_col in range(8):
                rows, cols = slice(8 * block_row, 8 * block_row + 8), slice(8 * block_col, 8 * block_col + 8)
                amplitude = np.sqrt((beam[rows, cols] ** 2).sum())
                field[:, 8 * block_row + block_col] = amplitude * np.exp(1j * phases[:, rows, cols]).mean((1, 2))
        coupled = 0.7 * (np.abs(field) ** 2).sum(1)
        power = world.propagate(torch.tensor(phases, dtype=torch.float32), torch.zeros(256)).sum((1, 2)).numpy()
        ratio = power / coupled
        if loss_db == 0:
            np.testing.assert_allclose(ratio, 1, rtol=1e-4)
        else:
            assert ratio.min() >= 10 ** (-loss_db / 10) - 1e-4 and ratio.max() <= 1 + 1e-4
            mean = np.mean(10 ** (-loss_db * np.arange(64) / 63 / 10))
            assert ratio.mean() == pytest.approx(mean, abs=0.005)  # measured 0.7229
