"""Noiseless physics of a network of coupled Duffing oscillators driven by one voltage and read by sensors.

Each oscillator i (a cantilever, a pendulum, a plate mode; unit mass) obeys

    ẍ_i + γ_i ẋ_i + ω_i² x_i + β_i x_i³ + Σ_j κ_ij (x_i − x_j) = g_i · u(t)

with x in metres, ω in rad/s, γ in 1/s, β in 1/(m²·s²), κ in 1/s² (coupling stiffness per unit mass), g in
m/s² per volt (the actuator's gain) and u the drive in volts. Sensor k reads oscillator ``sensed[k]``:
``s_k · x`` (displacement, s in V/m) or ``s_k · ẋ`` (velocity, s in V/(m/s)).

Time is discrete as on a DAQ card whose output and input share one sample clock: the drive is held constant over
each sample interval (zero-order hold) and sample n of a record is the state at the instant sample n of the drive
starts. Integration is classical fixed-step Runge-Kutta 4 with ``substeps`` steps per sample; on a linear mode its
error is, to leading order, a relative frequency shift of −(ωh)⁴/120 (the mode rings slow) and an amplitude loss of
(ωh)⁶/144 per step. For a 400 Hz mode at h = 250 µs (ωh = 0.63) the shift is −1.1·10⁻³ and the loss 4.1·10⁻⁴
per step (0.4 % per period); higher orders trim the leading terms' −1.3·10⁻³ and 4.3·10⁻⁴. The cubic term stiffens a
large swing (instantaneous ω² + 3βx²), so `integrate` also bounds ω·h by the stiffest frequency the motion reaches
(`MAX_OMEGA_STEP`), refining the step where a strong drive needs it: at a fixed step RK4 first drifts (11 % in the
window RMS of a 5 V record at 400 Hz) and then diverges to NaN (5 V at 400 Hz with L = 50 µm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hil.errors import HilError

#: The reference bench: nominal design values shared by the simulator's defaults and the system's defaults.
NOMINAL_FREQ_HZ = (150.0, 210.0, 290.0, 400.0)
NOMINAL_Q = (5.0, 6.0, 7.0, 8.0)
NOMINAL_NONLINEAR_LENGTH_M = 5e-4
NOMINAL_COUPLING_HZ = 60.0
NOMINAL_DRIVE_GAIN = (90.0, 150.0, 260.0, 450.0)
#: Sensor gains by what is sensed: V/m of a displacement probe (Bently Nevada 3300 XL 8 mm proximity probe,
#: 7.87 V/mm) and V/(m/s) of a velocity transducer (Bently Nevada 330500 Velomitor, 100 mV/(in/s)).
NOMINAL_SENSOR_GAIN = {"displacement": 7870.0, "velocity": 3.94}
NOMINAL_SENSED = (0, 1, 2, 3)


@dataclass(frozen=True)
class DesignRange:
    """What one design value may be: ``low..high`` (``unit``), the low end itself allowed or not."""

    low: float
    high: float
    low_allowed: bool
    unit: str = ""

    @property
    def bounds(self) -> dict[str, float]:
        """The range as a pydantic ``Field``'s keyword arguments (``gt`` or ``ge``, and ``le``)."""
        return {"ge" if self.low_allowed else "gt": self.low, "le": self.high}

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies within the range."""
        return (self.low <= value if self.low_allowed else self.low < value) and value <= self.high

    def __str__(self) -> str:
        """E.g. "above 0 and at most 100000 Hz"."""
        words = ("from", "to") if self.low_allowed else ("above", "and at most")
        return f"{words[0]} {self.low:g} {words[1]} {self.high:g} {self.unit}".rstrip()


#: What each design value may be, shared by the simulated network's fields and the oscillator system's settings.
#: Past any bench of the kind (MEMS resonators reach 100 kHz and a Q of 10⁶), so that a unit slip (kHz for Hz, mm
#: for m) is refused rather than integrated. The low end is excluded where it means no oscillator: frequencies,
#: quality factors (above ½: underdamped), nonlinear lengths and sensor gains.
DESIGN_RANGES = {
    "freq_hz": DesignRange(0.0, 1e5, False, "Hz"),
    "q": DesignRange(0.5, 1e6, False),
    "drive_gain_m_s2_per_v": DesignRange(-1e4, 1e4, True, "m/s²/V"),  # negative: an actuator wired the other way
    "nonlinear_length_m": DesignRange(0.0, 1.0, False, "m"),
    "coupling_hz": DesignRange(0.0, 1e4, True, "Hz"),
    "sensor_gain": DesignRange(0.0, 1e6, False, "V/m or V/(m/s)"),
}

#: Largest RK4 step (s); a sample interval is split into ceil(interval / MAX_STEP_S) steps.
MAX_STEP_S = 2.5e-4
#: Largest RK4 step h times the stiffest instantaneous angular frequency the motion reaches (1). RK4 is stable up to
#: 2√2; at 1 a linear mode rings 0.56 % slow and loses 0.61 % of its amplitude per step (the leading terms (ωh)⁴/120
#: and (ωh)⁶/144 say 0.83 % and 0.69 %). The reference bench (lab.yaml) driven at 1 V with ±1 inputs and θ reaches
#: 0.74–0.78 at MAX_STEP_S with its 250 Hz carrier and 0.87–0.98 with a carrier on the 400 Hz mode (0.63 at rest), so it
#: keeps its step.
MAX_OMEGA_STEP = 1.0
#: `integrate` refines the step at most this many times below the one it started with.
MAX_REFINEMENT = 64


def nominal_parameters(freq_hz: Sequence[float], q: Sequence[float], nonlinear_length_m: float, coupling_hz: float,
                       drive_gain: Sequence[float], sensor_gain: float | None, n_sensed: int,
                       sense: str = "displacement") -> dict[str, torch.Tensor]:
    """Physical parameters (float32 tensors) of a design.

    ``freq_hz`` and ``q`` give ω = 2πf and γ = ω/Q per oscillator; β = ω²/L² where ``nonlinear_length_m`` L is the
    displacement at which the cubic stiffness equals the linear one; nearest neighbours (i, i+1) are coupled with
    κ = (2π·``coupling_hz``)²; ``drive_gain`` is g per oscillator (m/s²/V); every sensor has gain ``sensor_gain``
    (V/m, or V/(m/s) when ``sense`` is velocity; None: `NOMINAL_SENSOR_GAIN` of the ``sense``).
    """
    if sensor_gain is None:
        sensor_gain = NOMINAL_SENSOR_GAIN[sense]
    omega = 2 * math.pi * torch.tensor(freq_hz, dtype=torch.float32)
    n = len(omega)
    if len(q) != n or len(drive_gain) != n:
        raise ValueError(f"freq_hz, q and drive_gain need one value per oscillator ({n}); got {len(q)} and "
                         f"{len(drive_gain)}")
    kappa = torch.zeros(n, n, dtype=torch.float32)
    link = (2 * math.pi * coupling_hz) ** 2
    index = torch.arange(n - 1)
    kappa[index, index + 1] = link
    kappa[index + 1, index] = link
    return {
        "omega": omega,
        "gamma": omega / torch.tensor(q, dtype=torch.float32),
        "beta": omega**2 / nonlinear_length_m**2,
        "kappa": kappa,
        "drive_gain": torch.tensor(drive_gain, dtype=torch.float32),
        "sense_gain": torch.full((n_sensed,), float(sensor_gain), dtype=torch.float32),
    }


def substeps_for(sample_rate_hz: float, max_step_s: float = MAX_STEP_S) -> int:
    """RK4 steps per sample so that no step exceeds ``max_step_s``."""
    return max(1, math.ceil(1.0 / (sample_rate_hz * max_step_s) - 1e-9))


def stiffest_frequency(omega: torch.Tensor, beta: torch.Tensor, kappa: torch.Tensor,
                       states: torch.Tensor | None = None) -> float:
    """An upper bound (rad/s) on the network's instantaneous angular frequencies: the square root of Gershgorin's
    bound on the tangent stiffness, max_i ω_i² + 2·Σ_j |κ_ij| + 3·β_i·x_i², with x_i the largest displacement of
    oscillator i over ``states`` (… × 2N; at rest if None). NaN or inf if the states are."""
    with torch.no_grad():
        bound = omega.detach() ** 2 + 2 * kappa.detach().abs().sum(1)
        if states is not None:
            n = len(omega)
            bound = bound + 3 * beta.detach().abs() * states.detach()[..., :n].reshape(-1, n).square().amax(0)
        return math.sqrt(float(bound.max()))


def slowest_decay_rate(gamma: torch.Tensor) -> float:
    """The slowest amplitude decay rate (1/s) of the free network: min γ/2 (modal damping rates lie between the
    smallest and the largest γ_i/2 for diagonal damping)."""
    return float(gamma.min()) / 2


def simulate(accel: torch.Tensor, sample_rate_hz: float, omega: torch.Tensor, gamma: torch.Tensor,
             beta: torch.Tensor, kappa: torch.Tensor, *, substeps: int = 1,
             state0: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the network under an applied acceleration, held constant over each sample.

    ``accel``: batch × T × N (m/s²; the drive's g·u plus any force noise). ``state0``: batch × 2N initial
    [x, ẋ] (rest if None). Returns the states batch × (T+1) × 2N at the sample instants 0..T; differentiable in
    every argument.
    """
    batch, steps, n = accel.shape
    stiffness = torch.diag(omega**2 + kappa.sum(1)) - kappa
    # ds/dt = s @ linear + [0, a − β x³] for s = [x, ẋ] (row vectors).
    eye = torch.eye(n, dtype=accel.dtype)
    zeros = torch.zeros(n, n, dtype=accel.dtype)
    linear = torch.cat([torch.cat([zeros, -stiffness.T], 1), torch.cat([eye, -torch.diag(gamma)], 1)], 0)
    pick_x = torch.cat([torch.cat([zeros, eye], 1), torch.cat([zeros, zeros], 1)], 0)  # x into the ẋ slots
    cubic = torch.cat([torch.zeros(n, dtype=accel.dtype), beta])
    forcing = torch.cat([torch.zeros_like(accel), accel], 2).transpose(0, 1)  # T × batch × 2N
    state = torch.zeros(batch, 2 * n, dtype=accel.dtype) if state0 is None else state0
    h = 1.0 / (sample_rate_hz * substeps)

    def rate(s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.addmm(u, s, linear) - cubic * (s @ pick_x) ** 3

    states = [state]
    for t in range(steps):
        u = forcing[t]
        for _ in range(substeps):
            k1 = rate(state, u)
            k2 = rate(state + (h / 2) * k1, u)
            k3 = rate(state + (h / 2) * k2, u)
            k4 = rate(state + h * k3, u)
            state = state + (h / 6) * (k1 + 2 * (k2 + k3) + k4)
        states.append(state)
    return torch.stack(states, 1)


def integrate(accel: torch.Tensor, sample_rate_hz: float, omega: torch.Tensor, gamma: torch.Tensor,
              beta: torch.Tensor, kappa: torch.Tensor, *, substeps: int = 1,
              state0: torch.Tensor | None = None) -> torch.Tensor:
    """`simulate` with as many RK4 steps per sample as the motion needs: at least ``substeps`` and enough that the
    network at rest has ω·h ≤ `MAX_OMEGA_STEP` (`stiffest_frequency`); while the states reached exceed it (the
    Duffing term stiffens large swings, or the integration diverged), the steps are doubled and the record integrated
    again. `HilError` beyond `MAX_REFINEMENT` times the steps it started with."""
    rest = stiffest_frequency(omega, beta, kappa)
    substeps = max(substeps, math.ceil(rest / (sample_rate_hz * MAX_OMEGA_STEP) - 1e-9))
    first = substeps
    while True:
        states = simulate(accel, sample_rate_hz, omega, gamma, beta, kappa, substeps=substeps, state0=state0)
        reach = stiffest_frequency(omega, beta, kappa, states) / (sample_rate_hz * substeps)
        if reach <= MAX_OMEGA_STEP:
            return states
        if substeps * 2 > first * MAX_REFINEMENT:
            reached = f"reaches ω·h = {reach:.3g}" if math.isfinite(reach) else "diverges (its states are not finite)"
            raise HilError(f"oscillator network: the motion is too stiff to integrate; at {substeps} RK4 steps per "
                           f"sample it {reached} (ω·h at most {MAX_OMEGA_STEP:g}); drive it less")
        substeps *= 2


def sense(states: torch.Tensor, sense_gain: torch.Tensor, sensed: Sequence[int],
          mode: str = "displacement") -> torch.Tensor:
    """Sensor voltages (… × T × C) from states (… × T × 2N): gain × displacement (or velocity) of each sensed
    oscillator."""
    n = states.shape[-1] // 2
    offset = 0 if mode == "displacement" else n
    return states[..., [offset + i for i in sensed]] * sense_gain


def respond(drive_v: torch.Tensor, sample_rate_hz: float, omega: torch.Tensor, gamma: torch.Tensor,
            beta: torch.Tensor, kappa: torch.Tensor, drive_gain: torch.Tensor, sense_gain: torch.Tensor,
            sensed: Sequence[int], mode: str = "displacement", *, substeps: int = 1) -> torch.Tensor:
    """Sensor voltages (batch × T × C) for drives (batch × T volts) starting from rest: the noiseless bench."""
    accel = drive_v[..., None] * drive_gain
    states = integrate(accel, sample_rate_hz, omega, gamma, beta, kappa, substeps=substeps)
    return sense(states[:, :-1], sense_gain, sensed, mode)
