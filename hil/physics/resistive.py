"""Noiseless physics of a nonlinear resistive network at its electrical equilibrium.

The network is the analog neural network of Kendall et al. 2020 ("Training end-to-end analog neural networks with
equilibrium propagation") and of Dillavou et al. 2022 (coupled learning on a self-adjusting resistor network), in
layers: input nodes clamped by voltage sources, free hidden and output nodes, and ground.

Elements (currents in A, voltages in V, conductances in S):

- *programmable edges* from every input to every hidden node and from every hidden to every output node: MOSFETs
  in deep triode used as voltage-controlled resistors. The channel conductance follows the gate voltage through a
  smooth (EKV-style) law ``G = k·s·ln(1 + exp((V_g − V_th)/s))`` with ``s = n·kT/q``: linear in the overdrive
  ``V_g − V_th`` above threshold, exponential below it. Linear in the drain-source voltage (the small-signal
  conductance), so every element has a co-content and the network an energy.
- *diodes*: two antiparallel diode branches from every hidden node to ground, the saturating activation. Each branch
  is a Shockley diode in series with a resistor, ``I = I_S·(exp((V − I·R_S)/(N·kT/q)) − 1)``, solved in closed form
  with the Wright omega function ω (``ω + ln ω = y``).
- *loads*: a resistor from every output node to ground.
- *nudge*: every output node connects through a transistor (its own gate, the nudge gate) to a target node held by a
  voltage source; it injects ``β·(V_target − V_out)``, the nudge of equilibrium propagation and coupled learning.
  A nudge gate at 0 V leaves the transistor off (its subthreshold leak is ~1e-15 S): the free state.

Temperature enters through the thermal voltage kT/q, the threshold voltages (a linear temperature coefficient) and
the diodes' saturation current (the SPICE law with ``EG`` and ``XTI``).

The equilibrium is Kirchhoff's current law at every free node, equivalently the minimum of the network's total
co-content (`energy`). `equilibrium` solves it for a batch by a damped Newton method in float64 to ``tol_v`` and
returns float32, or float64 where an input or a device parameter is; gradients (to inputs, gates and every device
parameter) come from implicit differentiation: one Newton step taken with the autograd graph at the converged point.
Nothing here draws random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, reduce
from typing import NamedTuple

import torch
import torch.nn.functional as F

from hil.errors import HilError

#: Boltzmann constant over the elementary charge (V/K): kT/q = BOLTZMANN_V_PER_K · T.
BOLTZMANN_V_PER_K = 8.617333262e-5

#: Nominal (datasheet) device values; the simulator's construction spread and a twin's calibration start from them.
NOMINAL_THRESHOLD_V = 0.7
NOMINAL_TRANSCONDUCTANCE_A_PER_V2 = 1e-4
NOMINAL_SLOPE_FACTOR = 1.3
NOMINAL_THRESHOLD_TEMPCO_V_PER_K = -2e-3
NOMINAL_SATURATION_CURRENT_A = 2.52e-9
NOMINAL_IDEALITY = 1.752
NOMINAL_SERIES_RESISTANCE_OHM = 1e3
NOMINAL_LOAD_RESISTANCE_OHM = 1e4
REFERENCE_TEMPERATURE_K = 298.15
SILICON_BANDGAP_EV = 1.11
SATURATION_CURRENT_XTI = 3.0


@dataclass(frozen=True)
class Layout:
    """The numbering of a layered network of ``n_inputs`` → ``n_hidden`` → ``n_outputs`` nodes.

    *Nodes* (as measured and returned): inputs ``0..n_inputs-1``, then hidden nodes, then outputs.
    *Edges* (programmable, one gate each, the order of θ): input i → hidden j at ``i·n_hidden + j``, then hidden j →
    output k at ``n_inputs·n_hidden + j·n_outputs + k``. *Diodes*: hidden j → ground at ``j`` (anode at the hidden
    node), ground → hidden j at ``n_hidden + j``.

    The bench wiring (1-based channels): the analog output drives the inputs on channels ``1..n_inputs``, the gates
    next (edge order), then the targets and the nudge gates (one per output each); the analog input reads the hidden
    nodes and then the outputs on channels ``1..n_hidden + n_outputs``.
    """

    n_inputs: int
    n_hidden: int
    n_outputs: int

    def __post_init__(self) -> None:
        for label in ("n_inputs", "n_hidden", "n_outputs"):
            value = getattr(self, label)
            if not isinstance(value, int) or value < 1:
                raise HilError(f"resistive network: {label} must be a positive integer, got {value!r}")

    @property
    def n_edges(self) -> int:
        return self.n_inputs * self.n_hidden + self.n_hidden * self.n_outputs

    @property
    def n_diodes(self) -> int:
        return 2 * self.n_hidden

    @property
    def n_free(self) -> int:
        """Free nodes: hidden and outputs (what the analog input reads)."""
        return self.n_hidden + self.n_outputs

    @property
    def n_nodes(self) -> int:
        """Measured nodes: inputs, hidden, outputs."""
        return self.n_inputs + self.n_free

    @property
    def n_drive_channels(self) -> int:
        """Analog-output channels: inputs, gates, targets, nudge gates."""
        return self.n_inputs + self.n_edges + 2 * self.n_outputs

    def channels(self) -> dict[str, list[int]]:
        """The 1-based channels of the bench wiring: ``inputs``, ``gates``, ``targets``, ``nudge_gates`` on the
        analog output, ``read`` (hidden then outputs) on the analog input."""
        first_gate = self.n_inputs + 1
        first_target = first_gate + self.n_edges
        first_nudge = first_target + self.n_outputs
        return {"inputs": list(range(1, first_gate)), "gates": list(range(first_gate, first_target)),
                "targets": list(range(first_target, first_nudge)),
                "nudge_gates": list(range(first_nudge, first_nudge + self.n_outputs)),
                "read": list(range(1, self.n_free + 1))}

    @cached_property
    def edge_nodes(self) -> torch.Tensor:
        """Edges × 2: the (from, to) node of every programmable edge, in the measured-node numbering."""
        hidden = torch.arange(self.n_hidden) + self.n_inputs
        outputs = torch.arange(self.n_outputs) + self.n_inputs + self.n_hidden
        first = torch.cartesian_prod(torch.arange(self.n_inputs), hidden)
        second = torch.cartesian_prod(hidden, outputs)
        return torch.cat([first.reshape(-1, 2), second.reshape(-1, 2)])

    # -- the solver's numbering: ground 0, inputs, targets (fixed), then hidden, outputs (free) --------------------
    @property
    def n_fixed(self) -> int:
        return 1 + self.n_inputs + self.n_outputs

    @cached_property
    def _branches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) solver nodes of the linear branches: programmable edges, nudge transistors, loads."""
        to_solver = torch.cat([torch.arange(1, 1 + self.n_inputs),
                               torch.arange(self.n_fixed, self.n_fixed + self.n_free)])
        edges = to_solver[self.edge_nodes]
        outputs = torch.arange(self.n_outputs) + self.n_fixed + self.n_hidden
        targets = torch.arange(self.n_outputs) + 1 + self.n_inputs
        a = torch.cat([edges[:, 0], outputs, outputs])
        b = torch.cat([edges[:, 1], targets, torch.zeros(self.n_outputs, dtype=torch.long)])
        return a, b

    @cached_property
    def _diodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(anode, cathode) solver nodes of the diodes."""
        hidden = torch.arange(self.n_hidden) + self.n_fixed
        ground = torch.zeros(self.n_hidden, dtype=torch.long)
        return torch.cat([hidden, ground]), torch.cat([ground, hidden])

    @cached_property
    def _stamp(self) -> torch.Tensor:
        """Flat indices of the (aa, bb, ab, ba) Jacobian entries of every branch, linear then diodes."""
        a = torch.cat([self._branches[0], self._diodes[0]])
        b = torch.cat([self._branches[1], self._diodes[1]])
        size = self.n_fixed + self.n_free
        return torch.cat([a * size + a, b * size + b, a * size + b, b * size + a])


class DeviceParameters(NamedTuple):
    """The physical parameters of a network's devices (tensors or floats, broadcast over the batch).

    ``threshold_v`` (edges) and ``nudge_threshold_v`` (outputs) and ``saturation_current_a`` (diodes) are at
    ``reference_temperature_k``; ``temperature_k`` is the operating temperature.
    """

    threshold_v: torch.Tensor
    nudge_threshold_v: torch.Tensor
    saturation_current_a: torch.Tensor
    series_resistance_ohm: torch.Tensor
    load_resistance_ohm: torch.Tensor
    ideality: torch.Tensor | float = NOMINAL_IDEALITY
    temperature_k: torch.Tensor | float = REFERENCE_TEMPERATURE_K
    transconductance_a_per_v2: torch.Tensor | float = NOMINAL_TRANSCONDUCTANCE_A_PER_V2
    slope_factor: torch.Tensor | float = NOMINAL_SLOPE_FACTOR
    threshold_tempco_v_per_k: torch.Tensor | float = NOMINAL_THRESHOLD_TEMPCO_V_PER_K
    reference_temperature_k: torch.Tensor | float = REFERENCE_TEMPERATURE_K


def nominal_parameters(layout: Layout) -> DeviceParameters:
    """Every device at its datasheet value, at the reference temperature (float32)."""
    return DeviceParameters(
        threshold_v=torch.full((layout.n_edges,), NOMINAL_THRESHOLD_V, dtype=torch.float32),
        nudge_threshold_v=torch.full((layout.n_outputs,), NOMINAL_THRESHOLD_V, dtype=torch.float32),
        saturation_current_a=torch.full((layout.n_diodes,), NOMINAL_SATURATION_CURRENT_A,
                                        dtype=torch.float32),
        series_resistance_ohm=torch.full((layout.n_diodes,), NOMINAL_SERIES_RESISTANCE_OHM,
                                         dtype=torch.float32),
        load_resistance_ohm=torch.full((layout.n_outputs,), NOMINAL_LOAD_RESISTANCE_OHM, dtype=torch.float32))


# -- device laws -------------------------------------------------------------------------------------------------
def thermal_voltage(temperature_k: torch.Tensor | float) -> torch.Tensor | float:
    """kT/q in volts at ``temperature_k`` kelvin."""
    return BOLTZMANN_V_PER_K * temperature_k


def transistor_conductance(gate_v: torch.Tensor, threshold_v: torch.Tensor | float,
                           transconductance_a_per_v2: torch.Tensor | float, slope_factor: torch.Tensor | float,
                           thermal_voltage_v: torch.Tensor | float) -> torch.Tensor:
    """Channel conductance (S) of a MOSFET in deep triode: ``k·s·softplus((V_g − V_th)/s)``, ``s = n·kT/q``."""
    s = slope_factor * thermal_voltage_v
    return transconductance_a_per_v2 * s * F.softplus((gate_v - threshold_v) / s)


def transistor_gate_for_conductance(conductance_s: torch.Tensor, threshold_v: torch.Tensor | float,
                                    transconductance_a_per_v2: torch.Tensor | float,
                                    slope_factor: torch.Tensor | float,
                                    thermal_voltage_v: torch.Tensor | float) -> torch.Tensor:
    """The gate voltage (V) at which `transistor_conductance` equals ``conductance_s`` (> 0)."""
    s = slope_factor * thermal_voltage_v
    u = conductance_s / (transconductance_a_per_v2 * s)
    return threshold_v + s * (u + torch.log(-torch.expm1(-u)))  # s·ln(e^u − 1), stable for large u


def threshold_at(threshold_ref_v: torch.Tensor, temperature_k: torch.Tensor | float,
                 reference_temperature_k: torch.Tensor | float,
                 tempco_v_per_k: torch.Tensor | float) -> torch.Tensor:
    """Threshold voltage (V) at ``temperature_k``: linear in the temperature change."""
    return threshold_ref_v + tempco_v_per_k * (temperature_k - reference_temperature_k)


def saturation_current_at(saturation_current_ref_a: torch.Tensor, temperature_k: torch.Tensor | float,
                          reference_temperature_k: torch.Tensor | float, ideality: torch.Tensor | float,
                          bandgap_ev: float = SILICON_BANDGAP_EV, xti: float = SATURATION_CURRENT_XTI) -> torch.Tensor:
    """Diode saturation current (A) at ``temperature_k``, the SPICE law:
    ``I_S(T) = I_S(T0)·(T/T0)^(XTI/N)·exp((T/T0 − 1)·EG/(N·kT/q))``."""
    ratio = temperature_k / reference_temperature_k
    exponent = (ratio - 1) * bandgap_ev / (ideality * thermal_voltage(temperature_k))
    exponent = exponent if isinstance(exponent, torch.Tensor) else torch.tensor(exponent, dtype=torch.float32)
    return saturation_current_ref_a * ratio ** (xti / ideality) * torch.exp(exponent)


def _log_wright_omega(y: torch.Tensor) -> torch.Tensor:
    """ln ω(y), where the Wright omega ω solves ω + ln ω = y; float64, differentiable in y at the solution."""
    with torch.no_grad():
        y0 = y.detach()
        ell = torch.where(y0 > 1, torch.log(y0 - torch.log(y0.clamp(min=1.0))), y0)
        for _ in range(8):  # Newton on e^ℓ + ℓ − y: convex and increasing, so it converges from either side
            w = torch.exp(ell)
            ell = ell - (w + ell - y0) / (w + 1)
    w = torch.exp(ell)
    return ell - (w + ell - y) / (w + 1)  # one step with the graph: d ln ω / dy = 1 / (1 + ω)


def _diode(voltage_v: torch.Tensor, saturation_current_a: torch.Tensor, emission_voltage_v: torch.Tensor,
           series_resistance_ohm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(current, small-signal conductance, ln ω) of a Shockley diode with series resistance."""
    y = (torch.log(saturation_current_a * series_resistance_ohm / emission_voltage_v)
         + (voltage_v + saturation_current_a * series_resistance_ohm) / emission_voltage_v)
    log_omega = _log_wright_omega(y)
    omega = torch.exp(log_omega)
    current = emission_voltage_v / series_resistance_ohm * omega - saturation_current_a
    conductance = omega / (1 + omega) / series_resistance_ohm
    return current, conductance, log_omega


def diode_current(voltage_v: torch.Tensor, saturation_current_a: torch.Tensor | float,
                  emission_voltage_v: torch.Tensor | float,
                  series_resistance_ohm: torch.Tensor | float) -> torch.Tensor:
    """Current (A) through a diode in series with ``series_resistance_ohm`` at ``voltage_v`` across both;
    ``emission_voltage_v`` = N·kT/q. Exact: ``I = (N·kT/q)/R_S·ω(y) − I_S`` with the Wright omega function."""
    voltage_v = torch.as_tensor(voltage_v)
    args = [torch.as_tensor(a, dtype=voltage_v.dtype) for a in (saturation_current_a, emission_voltage_v,
                                                                 series_resistance_ohm)]
    return _diode(voltage_v, *args)[0]


def diode_co_content(voltage_v: torch.Tensor, saturation_current_a: torch.Tensor | float,
                     emission_voltage_v: torch.Tensor | float, series_resistance_ohm: torch.Tensor | float
                     ) -> torch.Tensor:
    """The co-content ∫I dV (W) of the diode branch from 0 to ``voltage_v``:
    ``R_S·I²/2 + N·kT/q·(I − I_S·ln(1 + I/I_S))``."""
    voltage_v = torch.as_tensor(voltage_v)
    i_s, n_vt, r_s = (torch.as_tensor(a, dtype=voltage_v.dtype) for a in (saturation_current_a,
                                                                            emission_voltage_v,
                                                                            series_resistance_ohm))
    current, _, log_omega = _diode(voltage_v, i_s, n_vt, r_s)
    log_ratio = log_omega + torch.log(n_vt / (r_s * i_s))  # ln(1 + I/I_S)
    return r_s * current**2 / 2 + n_vt * (current - i_s * log_ratio)


# -- the network -------------------------------------------------------------------------------------------------
class _Network(NamedTuple):
    fixed_v: torch.Tensor  # batch × fixed nodes
    conductance_s: torch.Tensor  # batch × linear branches
    saturation_current_a: torch.Tensor  # diodes
    emission_voltage_v: torch.Tensor  # scalar
    series_resistance_ohm: torch.Tensor  # diodes


def _as64(value: torch.Tensor | float) -> torch.Tensor:
    """``value`` in float64; a Python number as float32 holds it first, as the simulators' tensors hold theirs
    (whatever torch's default dtype)."""
    if isinstance(value, float | int):
        value = torch.tensor(value, dtype=torch.float32)
    return torch.as_tensor(value).to(torch.float64)


def _assemble(layout: Layout, params: DeviceParameters, input_v: torch.Tensor, gate_v: torch.Tensor,
              target_v: torch.Tensor | None, nudge_gate_v: torch.Tensor | float | None
              ) -> tuple[_Network, torch.dtype]:
    """The network in float64, and the precision of its inputs and device parameters: float32, or the highest
    floating dtype among the tensors. At float64, plain numbers become float64 tensors at once (`_as64` would
    round them to float32 first, as a float32 model holds them)."""
    values = (input_v, gate_v, target_v, nudge_gate_v, *params)
    precision = reduce(torch.promote_types, [v.dtype for v in values if isinstance(v, torch.Tensor)
                                             and v.is_floating_point()], torch.float32)
    if precision == torch.float64:
        input_v, gate_v, target_v, nudge_gate_v, *fields = (
            v if v is None or isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64) for v in values)
        params = DeviceParameters(*fields)
    input_v = _as64(input_v)
    if input_v.dim() != 2 or input_v.shape[1] != layout.n_inputs:
        raise HilError(f"resistive network: input_v has shape {tuple(input_v.shape)}, expected batch × "
                       f"{layout.n_inputs}")
    batch = input_v.shape[0]
    temperature = _as64(params.temperature_k)
    reference = _as64(params.reference_temperature_k)
    u_t = thermal_voltage(temperature)
    k, n = _as64(params.transconductance_a_per_v2), _as64(params.slope_factor)
    tempco = _as64(params.threshold_tempco_v_per_k)
    gates = _as64(gate_v).expand(batch, layout.n_edges)
    nudge = torch.zeros((), dtype=torch.float64) if nudge_gate_v is None else nudge_gate_v
    nudge = _as64(nudge).expand(batch, layout.n_outputs)
    targets = torch.zeros(batch, layout.n_outputs, dtype=torch.float64) if target_v is None else _as64(target_v)
    targets = targets.expand(batch, layout.n_outputs)
    g_edges = transistor_conductance(gates, threshold_at(_as64(params.threshold_v), temperature, reference, tempco),
                                     k, n, u_t)
    g_nudge = transistor_conductance(nudge, threshold_at(_as64(params.nudge_threshold_v), temperature, reference,
                                                         tempco), k, n, u_t)
    g_load = (1 / _as64(params.load_resistance_ohm)).expand(batch, layout.n_outputs)
    ideality = _as64(params.ideality)
    fixed = torch.cat([torch.zeros(batch, 1, dtype=torch.float64), input_v, targets], dim=1)
    return _Network(fixed_v=fixed, conductance_s=torch.cat([g_edges, g_nudge, g_load], dim=1),
                    saturation_current_a=saturation_current_at(_as64(params.saturation_current_a), temperature,
                                                               reference, ideality),
                    emission_voltage_v=ideality * u_t,
                    series_resistance_ohm=_as64(params.series_resistance_ohm).expand(layout.n_diodes)), precision


def _residual(layout: Layout, net: _Network, free_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(KCL residual at the free nodes: current leaving each node (A), diode conductances (S))."""
    v = torch.cat([net.fixed_v, free_v], dim=1)
    a, b = layout._branches
    anode, cathode = layout._diodes
    i_lin = net.conductance_s * (v[:, a] - v[:, b])
    i_d, g_d, _ = _diode(v[:, anode] - v[:, cathode], net.saturation_current_a, net.emission_voltage_v,
                         net.series_resistance_ohm)
    current = torch.cat([i_lin, i_d], dim=1)
    leaving = torch.zeros(v.shape, dtype=current.dtype)
    leaving = leaving.index_add(1, torch.cat([a, anode]), current).index_add(1, torch.cat([b, cathode]), -current)
    return leaving[:, layout.n_fixed:], g_d


def _jacobian(layout: Layout, conductance_s: torch.Tensor) -> torch.Tensor:
    """d(residual)/d(free voltages), batch × free × free, from every branch's conductance."""
    size = layout.n_fixed + layout.n_free
    g = conductance_s.detach()
    flat = torch.zeros(g.shape[0], size * size, dtype=g.dtype)
    flat.index_add_(1, layout._stamp, torch.cat([g, g, -g, -g], dim=1))
    return flat.reshape(-1, size, size)[:, layout.n_fixed:, layout.n_fixed:]


def equilibrium(layout: Layout, params: DeviceParameters, input_v: torch.Tensor, gate_v: torch.Tensor,
                target_v: torch.Tensor | None = None, nudge_gate_v: torch.Tensor | float | None = None, *,
                tol_v: float = 1e-9, max_iter: int = 100, max_step_v: float = 0.5,
                initial_v: torch.Tensor | None = None) -> torch.Tensor:
    """Free-node voltages (batch × (n_hidden + n_outputs), hidden then outputs, V) at equilibrium: float32, or
    float64 where an input or a device parameter is (plain numbers then enter in float64).

    ``input_v``: batch × n_inputs; ``gate_v``: n_edges or batch × n_edges; ``target_v``: batch × n_outputs
    (default 0 V); ``nudge_gate_v``: n_outputs or batch × n_outputs or a scalar (default 0 V: nudge off).
    Damped Newton (steps capped at ``max_step_v``) in float64 until every node moves less than ``tol_v``;
    differentiable in every argument and parameter by implicit differentiation.
    """
    net, precision = _assemble(layout, params, input_v, gate_v, target_v, nudge_gate_v)
    batch = net.fixed_v.shape[0]
    with torch.no_grad():
        free = (torch.zeros(batch, layout.n_free, dtype=torch.float64) if initial_v is None
                else _as64(initial_v).detach().clone())
        detached = _Network(*(t.detach() for t in net))
        for _ in range(max_iter):
            residual, g_d = _residual(layout, detached, free)
            jac = _jacobian(layout, torch.cat([detached.conductance_s, g_d], dim=1))
            step = torch.linalg.solve(jac, -residual)
            largest = step.abs().amax(dim=1, keepdim=True)
            free = free + step * (max_step_v / largest.clamp(min=max_step_v))
            if float(largest.max()) < tol_v:
                break
        else:
            raise HilError(f"resistive network: equilibrium not reached in {max_iter} Newton steps (last step "
                           f"{float(largest.max()):.3g} V, tolerance {tol_v:g} V)")
        _, g_d = _residual(layout, detached, free)
        jac = _jacobian(layout, torch.cat([detached.conductance_s, g_d], dim=1))
    residual, _ = _residual(layout, net, free)  # with the graph: dV*/dp = −J⁻¹ ∂F/∂p
    return (free - torch.linalg.solve(jac, residual)).to(precision)


def energy(layout: Layout, params: DeviceParameters, input_v: torch.Tensor, gate_v: torch.Tensor,
           free_v: torch.Tensor, target_v: torch.Tensor | None = None,
           nudge_gate_v: torch.Tensor | float | None = None) -> torch.Tensor:
    """The network's total co-content (W, per batch row, float64) at free-node voltages ``free_v``; its gradient
    in ``free_v`` is the KCL residual, so `equilibrium` is its minimum."""
    net, _ = _assemble(layout, params, input_v, gate_v, target_v, nudge_gate_v)
    v = torch.cat([net.fixed_v, _as64(free_v)], dim=1)
    a, b = layout._branches
    anode, cathode = layout._diodes
    linear = (net.conductance_s * (v[:, a] - v[:, b]) ** 2 / 2).sum(dim=1)
    diodes = diode_co_content(v[:, anode] - v[:, cathode], net.saturation_current_a, net.emission_voltage_v,
                              net.series_resistance_ohm).sum(dim=1)
    return linear + diodes


def node_voltages(layout: Layout, input_v: torch.Tensor, free_v: torch.Tensor) -> torch.Tensor:
    """Every measured node (batch × n_nodes: inputs, hidden, outputs) from the inputs and the free nodes."""
    return torch.cat([torch.as_tensor(input_v, dtype=free_v.dtype), free_v], dim=1)


def edge_voltages(layout: Layout, nodes_v: torch.Tensor) -> torch.Tensor:
    """The voltage across every programmable edge (batch × n_edges, V, from-node minus to-node)."""
    return nodes_v[:, layout.edge_nodes[:, 0]] - nodes_v[:, layout.edge_nodes[:, 1]]


__all__ = [
    "BOLTZMANN_V_PER_K", "DeviceParameters", "Layout", "diode_co_content", "diode_current", "edge_voltages",
    "energy", "equilibrium", "node_voltages", "nominal_parameters", "saturation_current_at", "thermal_voltage",
    "threshold_at", "transistor_conductance", "transistor_gate_for_conductance",
]
