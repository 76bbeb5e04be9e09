"""`ResistiveNetworkSystem`: a nonlinear resistive network driven by an analog output and read by an analog input.

The network (`hil.physics.resistive`) has ``n_inputs`` input nodes, ``n_hidden`` hidden nodes with diode pairs to
ground and ``n_outputs`` output nodes with loads, fully connected layer to layer by programmable edges (transistors
whose conductance follows their gate voltage). Channels follow `hil.physics.resistive.Layout.channels`: the analog
output drives the inputs, the gates, the targets and the nudge gates; the analog input reads hidden and output nodes.

- ``x`` (batch × n_inputs) in [0, 1] maps linearly to input-node voltages in [``input_min_v``, ``input_max_v``];
- ``θ`` (n_edges, edge order of `Layout`) are the gate voltages in [``gate_min_v``, ``gate_max_v``];
- ``y`` (batch × n_outputs) are the output-node voltages divided by ``output_scale_v`` (0.5 V by default: the
  diodes clamp the hidden nodes near ±0.6 V, so |y| ≲ 1.2).

A batch plays as a waveform on the input channels (one sample each, at ``sample_rate_hz``) while the gates hold DC
levels; gates are rewritten only when θ changes. Energy-based access for equilibrium propagation and coupled
learning:

- `equilibrium(x, θ, target=None, beta=0.0)` → every node voltage (batch × n_nodes, V: inputs as driven, hidden and
  outputs as measured). ``beta`` = 0 is the free state; otherwise each output is connected to its ``target``
  (batch × n_outputs, in y units) through a nudge conductance ``beta · g_unit_s`` (``g_unit_s`` = the load's
  nominal conductance, 0.1 mS), which injects ``beta·g_unit_s·(target − V_out)``. The nudge conductance is set
  through the nudge transistors' gates with the nominal transistor law, so on a bench (and in the simulator) the
  realised β carries the nudge transistors' threshold error.
- `edge_voltages(nodes)` → the voltage across every programmable edge (batch × n_edges, V, from minus to); the
  equilibrium-propagation update of edge e is ∝ −(ΔV_e(β)² − ΔV_e(0)²)/β times ∂G_e/∂θ_e.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from hil.errors import ConfigError, DeviceError, LimitError, counted
from hil.instruments import AnalogInput, AnalogOutput, Instrument, shape_differs
from hil.physics import resistive as physics
from hil.systems.base import (
    PhysicalSystem,
    PhysicsModel,
    check_counts,
    check_output_scale,
    check_setting_within,
    is_count,
    is_number,
)

#: Off level of a nudge gate (V): far below threshold, the nudge transistor conducts ~1e-15 S.
NUDGE_OFF_V = 0.0
#: Device constants the physics model holds fixed at their datasheet values (not calibration parameters).
MODEL_CONSTANTS = {"transconductance_a_per_v2": physics.NOMINAL_TRANSCONDUCTANCE_A_PER_V2,
                   "slope_factor": physics.NOMINAL_SLOPE_FACTOR,
                   "threshold_tempco_v_per_k": physics.NOMINAL_THRESHOLD_TEMPCO_V_PER_K,
                   "reference_temperature_k": physics.REFERENCE_TEMPERATURE_K}



def input_voltages(x: torch.Tensor, input_min_v: float, input_max_v: float) -> torch.Tensor:
    """Input-node voltages (V) for x in [0, 1]."""
    return input_min_v + x * (input_max_v - input_min_v)


def nudge_gate_voltage(beta: float, g_unit_s: float, gate_max_v: float) -> float:
    """The nudge-gate voltage (V) that gives a nudge conductance of ``beta·g_unit_s`` by the nominal transistor law
    at the reference temperature; 0 V (off) for ``beta`` = 0. `LimitError` if it needs more than ``gate_max_v``."""
    try:
        if isinstance(beta, bool | str | bytes):  # float() would take True as 1, and "0.5"
            raise TypeError
        beta = float(beta)
    except (TypeError, ValueError):
        raise LimitError(f"resistive network: beta = {beta!r} is not a number") from None
    if not np.isfinite(beta) or beta < 0:
        raise LimitError(f"resistive network: beta = {beta!r} must be a finite number ≥ 0")
    if beta == 0:
        return NUDGE_OFF_V
    gate = float(physics.transistor_gate_for_conductance(
        torch.tensor(beta * g_unit_s, dtype=torch.float64), physics.NOMINAL_THRESHOLD_V,
        physics.NOMINAL_TRANSCONDUCTANCE_A_PER_V2, physics.NOMINAL_SLOPE_FACTOR,
        physics.thermal_voltage(physics.REFERENCE_TEMPERATURE_K)))
    if gate > gate_max_v:
        raise LimitError(f"resistive network: beta = {beta:g} needs a nudge gate of {gate:.4g} V, above the gate "
                         f"range's {gate_max_v:g} V; beta must be within 0..{max_beta(g_unit_s, gate_max_v):.4g}")
    return max(gate, NUDGE_OFF_V)


def max_beta(g_unit_s: float, gate_max_v: float) -> float:
    """The largest β a nudge gate at ``gate_max_v`` gives (nominal law)."""
    conductance = physics.transistor_conductance(
        torch.tensor(gate_max_v, dtype=torch.float64), physics.NOMINAL_THRESHOLD_V,
        physics.NOMINAL_TRANSCONDUCTANCE_A_PER_V2, physics.NOMINAL_SLOPE_FACTOR,
        physics.thermal_voltage(physics.REFERENCE_TEMPERATURE_K))
    return float(conductance) / g_unit_s


class ResistiveNetworkModel(PhysicsModel):
    """The noiseless network with learnable calibration: thresholds of every edge and nudge transistor (V, at the
    reference temperature), ln of every diode's saturation current (ln A), every diode's series resistance and
    every output load (kΩ), the diodes' ideality and the temperature (K); nominal values at construction."""

    def __init__(self, layout: physics.Layout, *, input_min_v: float = -1.0, input_max_v: float = 1.0,
                 gate_max_v: float = 2.0, output_scale_v: float = 0.5):
        super().__init__()
        self.layout = layout
        self.input_min_v, self.input_max_v = input_min_v, input_max_v
        self.gate_max_v, self.output_scale_v = gate_max_v, output_scale_v
        self.g_unit_s = 1 / physics.NOMINAL_LOAD_RESISTANCE_OHM
        nominal = physics.nominal_parameters(layout)
        self.threshold_v = nn.Parameter(nominal.threshold_v.clone())
        self.nudge_threshold_v = nn.Parameter(nominal.nudge_threshold_v.clone())
        self.log_saturation_current = nn.Parameter(torch.log(nominal.saturation_current_a))
        self.series_resistance_kohm = nn.Parameter(nominal.series_resistance_ohm / 1e3)
        self.load_resistance_kohm = nn.Parameter(nominal.load_resistance_ohm / 1e3)
        self.ideality = nn.Parameter(torch.tensor(physics.NOMINAL_IDEALITY, dtype=torch.float32))
        self.temperature_k = nn.Parameter(torch.tensor(physics.REFERENCE_TEMPERATURE_K, dtype=torch.float32))

    def device_parameters(self) -> physics.DeviceParameters:
        """The calibration as the physics' device parameters."""
        return physics.DeviceParameters(
            threshold_v=self.threshold_v, nudge_threshold_v=self.nudge_threshold_v,
            saturation_current_a=torch.exp(self.log_saturation_current),
            series_resistance_ohm=self.series_resistance_kohm * 1e3,
            load_resistance_ohm=self.load_resistance_kohm * 1e3, ideality=self.ideality,
            temperature_k=self.temperature_k)

    def equilibrium(self, x: torch.Tensor, theta: torch.Tensor, target: torch.Tensor | None = None,
                    beta: float = 0.0) -> torch.Tensor:
        """Every node voltage (batch × n_nodes, V), as `ResistiveNetworkSystem.equilibrium` measures it."""
        inputs = input_voltages(x, self.input_min_v, self.input_max_v)
        nudge_gate = nudge_gate_voltage(beta, self.g_unit_s, self.gate_max_v)
        if beta != 0 and target is None:
            raise LimitError(f"beta = {beta:g} nudges towards a target; give target (batch × "
                             f"{self.layout.n_outputs})")
        target_v = None if beta == 0 else target * self.output_scale_v
        free = physics.equilibrium(self.layout, self.device_parameters(), inputs, theta, target_v=target_v,
                                   nudge_gate_v=nudge_gate)
        return physics.node_voltages(self.layout, inputs, free)

    def edge_voltages(self, nodes: torch.Tensor) -> torch.Tensor:
        """The voltage across every programmable edge (batch × n_edges, V)."""
        return physics.edge_voltages(self.layout, nodes)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Output-node voltages / ``output_scale_v`` in the free state (batch × n_outputs)."""
        inputs = input_voltages(x, self.input_min_v, self.input_max_v)
        free = physics.equilibrium(self.layout, self.device_parameters(), inputs, theta)
        return free[:, self.layout.n_hidden:] / self.output_scale_v


class ResistiveNetworkSystem(PhysicalSystem):
    """A resistive network on an analog output (``output``) and an analog input (``input``); see the module
    docstring for x, θ, y and the energy-based API. `calibrate()` puts the bench at its working point.

    ``max_batch`` (rows per device call, one sample each) is capped by the analog output's waveform memory and the
    analog input's record length. The input and gate ranges must lie within the analog output's ``voltage_v``
    limit (a `ConfigError` naming the setting otherwise), so that no call is refused for a level the settings
    allow."""

    kind = "resistive_network"
    roles = {"output": AnalogOutput, "input": AnalogInput}  # noqa: RUF012 - the base declares it a ClassVar
    waveform_roles = ("output",)  # a batch plays as waveforms on the input and target channels
    energy_based = True

    def __init__(self, instruments: Mapping[str, Instrument], *, name: str = "", n_inputs: int = 3,
                 n_hidden: int = 6, n_outputs: int = 2, input_min_v: float = -1.0, input_max_v: float = 1.0,
                 gate_min_v: float = 0.5, gate_max_v: float = 2.0, output_scale_v: float = 0.5,
                 sample_rate_hz: float = 1e5, max_batch: int = 4096):
        check_counts(n_inputs=n_inputs, n_hidden=n_hidden, n_outputs=n_outputs)
        self.layout = physics.Layout(n_inputs, n_hidden, n_outputs)
        for label, low, high in (("input", input_min_v, input_max_v), ("gate", gate_min_v, gate_max_v)):
            for end, value in (("min", low), ("max", high)):
                if not is_number(value):
                    raise ConfigError(f"{label}_{end}_v must be a number (V), got {value!r}", field=f"{label}_{end}_v")
            if not low < high:
                raise ConfigError(f"{label}_min_v ({low!r}) must be below {label}_max_v ({high!r})",
                                  field=f"{label}_min_v")
        check_output_scale(output_scale_v)
        if not (is_number(sample_rate_hz) and sample_rate_hz > 0):
            raise ConfigError(f"sample_rate_hz must be a positive number, got {sample_rate_hz!r}",
                              field="sample_rate_hz")
        output, reader = instruments.get("output"), instruments.get("input")
        if is_count(max_batch) and isinstance(output, AnalogOutput) \
                and isinstance(reader, AnalogInput):  # one sample per row: capped by the instruments' memory
            max_batch = min(max_batch, output.waveform_points[1], reader.max_samples)
        super().__init__(instruments, name=name, n_in=n_inputs, n_out=n_outputs, n_params=self.layout.n_edges,
                         x_bounds=(0.0, 1.0), theta_bounds=(gate_min_v, gate_max_v), max_batch=max_batch)
        for role, needed in (("output", self.layout.n_drive_channels), ("input", self.layout.n_free)):
            have = getattr(self.instruments[role], "n_channels", 0)
            if have < needed:
                raise ConfigError(f"system {self.name!r}: a {n_inputs}-{n_hidden}-{n_outputs} network needs "
                                  f"{counted(needed, role + ' channel')}, {self.instruments[role].name} has {have}; "
                                  "give fewer nodes (n_inputs, n_hidden, n_outputs), or an instrument with more "
                                  "channels",
                                  field=f"instruments.{role}")
        self.channels = self.layout.channels()  # after the count: a network of 10⁹ nodes would fill the memory
        self._check_voltages(input_min_v, input_max_v, gate_min_v, gate_max_v)
        for role in ("output", "input"):
            check_setting_within("sample_rate_hz", sample_rate_hz, self.instruments[role], "sample_rate_hz")
        self.input_min_v, self.input_max_v = float(input_min_v), float(input_max_v)
        self.gate_max_v, self.output_scale_v = float(gate_max_v), float(output_scale_v)
        self.sample_rate_hz = float(sample_rate_hz)
        #: The unit of ``beta``: the output load's nominal conductance (S).
        self.g_unit_s = 1 / physics.NOMINAL_LOAD_RESISTANCE_OHM
        self.n_nodes, self.n_edges = self.layout.n_nodes, self.layout.n_edges

    def _check_voltages(self, input_min_v: float, input_max_v: float, gate_min_v: float, gate_max_v: float) -> None:
        """Every level the system writes lies within the analog output's voltage limit: inputs (and targets, which
        share their range), gates (and nudge gates, up to ``gate_max_v``), and 0 V (targets and nudge gates off)."""
        output = self.instruments["output"]
        for label, value in (("input_min_v", input_min_v), ("input_max_v", input_max_v),
                             ("gate_min_v", gate_min_v), ("gate_max_v", gate_max_v)):
            check_setting_within(label, value, output, "voltage_v")
        volts = output.limits["voltage_v"]
        if not volts.min <= NUDGE_OFF_V <= volts.max:
            raise ConfigError(f"{output.name}'s limits ({volts.describe()}) exclude {NUDGE_OFF_V:g} V, the level of "
                              "the targets and nudge gates when the nudge is off", field="instruments.output")

    # -- one device call --------------------------------------------------------------------------------------------
    def _measure(self, inputs_v: torch.Tensor, theta: torch.Tensor, targets_v: torch.Tensor,
                 nudge_gate_v: float) -> torch.Tensor:
        """Set the gates, play the inputs and targets as waveforms, read the free nodes: batch × n_free (V)."""
        output: AnalogOutput = self.instruments["output"]  # type: ignore[assignment]
        reader: AnalogInput = self.instruments["input"]  # type: ignore[assignment]
        levels = [*theta.tolist(), *[nudge_gate_v] * self.layout.n_outputs]
        for channel, level in zip(self.channels["gates"] + self.channels["nudge_gates"], levels, strict=True):
            if output.level_v.get(channel) != level:
                output.set_voltage(channel, level)
        played = self.channels["inputs"] + self.channels["targets"]
        for channel in played + self.channels["gates"] + self.channels["nudge_gates"]:
            if output.output_on.get(channel) is not True:
                output.set_output(channel, True)
        batch = len(inputs_v)
        n_samples = max(batch, output.waveform_points[0])
        waves = torch.cat([inputs_v, targets_v], dim=1).to(torch.float64).numpy()
        waves = np.concatenate([waves, np.repeat(waves[-1:], n_samples - batch, axis=0)])
        for column, channel in enumerate(played):
            output.load_waveform(channel, waves[:, column], self.sample_rate_hz)
        reader.arm(n_samples, self.sample_rate_hz)
        output.play(played)
        record = reader.fetch()[: self.layout.n_free, :batch]
        return torch.as_tensor(record.T, dtype=torch.float32)

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        inputs = input_voltages(x, self.input_min_v, self.input_max_v)
        targets = torch.zeros(len(x), self.layout.n_outputs, dtype=torch.float32)
        free = self._measure(inputs, theta, targets, NUDGE_OFF_V)
        return free[:, self.layout.n_hidden:] / self.output_scale_v

    # -- energy-based access ----------------------------------------------------------------------------------------
    def equilibrium(self, x: torch.Tensor, theta: torch.Tensor, target: torch.Tensor | None = None,
                    beta: float = 0.0) -> torch.Tensor:
        """Every node voltage (batch × n_nodes, V: inputs as driven, then hidden and outputs as measured).

        ``beta`` = 0: the free state (``target`` ignored). ``beta`` > 0: nudged towards ``target`` (batch ×
        n_outputs, y units) through a conductance of ``beta·g_unit_s`` per output. Batches beyond ``max_batch``
        are split; device time and calls are counted as in `forward`.
        """
        x = self._checked(x, (None, self.n_in), self.x_bounds, "x")
        theta = self._checked(theta, (self.n_params,), self.theta_bounds, "theta")
        nudge_gate = nudge_gate_voltage(beta, self.g_unit_s, self.gate_max_v)
        if beta == 0:
            targets = torch.zeros(len(x), self.n_out, dtype=torch.float32)
        else:
            if target is None:
                raise LimitError(f"system {self.name!r}: beta = {beta:g} nudges towards a target; give target "
                                 f"(batch × {self.n_out})")
            low, high = self.input_min_v / self.output_scale_v, self.input_max_v / self.output_scale_v
            targets = self._checked(target, (len(x), self.n_out), (low, high), "target")
        outputs = []
        for x_chunk, target_chunk in zip(x.split(self.max_batch), targets.split(self.max_batch), strict=True):
            inputs = input_voltages(x_chunk, self.input_min_v, self.input_max_v)
            free = self._counted(self._measure, inputs, theta, target_chunk * self.output_scale_v, nudge_gate)
            outputs.append(physics.node_voltages(self.layout, inputs, free))
        return torch.cat(outputs)

    def edge_voltages(self, nodes: torch.Tensor) -> torch.Tensor:
        """The voltage across every programmable edge (batch × n_edges, V, from-node minus to-node) of node voltages
        as `equilibrium` gives them (batch × n_nodes)."""
        nodes = torch.as_tensor(nodes, dtype=torch.float32)
        if shape_differs(nodes.shape, (None, self.layout.n_nodes)):  # an index past the nodes was an IndexError
            raise LimitError(f"system {self.name!r}: nodes have shape {tuple(nodes.shape)}, expected "
                             f"batch×{self.layout.n_nodes} (as equilibrium gives them)")
        return physics.edge_voltages(self.layout, nodes)

    # -- models -----------------------------------------------------------------------------------------------------
    def physics_model(self) -> ResistiveNetworkModel:
        return ResistiveNetworkModel(self.layout, input_min_v=self.input_min_v, input_max_v=self.input_max_v,
                                     gate_max_v=self.gate_max_v, output_scale_v=self.output_scale_v)

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        """The world's true thresholds, ln saturation currents, resistances (kΩ), ideality and temperature.

        `DeviceError` if the world's transconductance, slope factor, threshold tempco or reference temperature
        differ from the constants the model holds (`MODEL_CONSTANTS`): no calibration could then match it."""
        layout = getattr(world, "layout", None)
        if layout != self.layout:
            raise ConfigError(f"system {self.name!r} is a {self.layout.n_inputs}-{self.layout.n_hidden}-"
                              f"{self.layout.n_outputs} network but its world is {layout}", field="n_hidden")
        devices = getattr(getattr(world, "config", None), "devices", None)
        for key, fixed in MODEL_CONSTANTS.items():  # the model holds these at their datasheet values
            value = getattr(devices, key, fixed)
            if abs(value - fixed) > 1e-9 * abs(fixed):
                raise DeviceError(f"system {self.name!r}: the world's devices.{key} = {value:g} differs from the "
                                  f"physics model's fixed {fixed:g}; the model cannot represent it")
        hidden = world.hidden_parameters()
        return {"threshold_v": hidden["threshold_v"], "nudge_threshold_v": hidden["nudge_threshold_v"],
                "log_saturation_current": torch.log(torch.as_tensor(hidden["saturation_current_a"])),
                "series_resistance_kohm": torch.as_tensor(hidden["series_resistance_ohm"]) / 1e3,
                "load_resistance_kohm": torch.as_tensor(hidden["load_resistance_ohm"]) / 1e3,
                "ideality": hidden["ideality"], "temperature_k": hidden["temperature_k"]}

    def _calibrate(self) -> dict[str, Any]:
        """The working point: gates at mid-range, nudge gates off (0 V), inputs and targets at 0 V, every used
        analog-output channel on. Returns what it set."""
        output: AnalogOutput = self.instruments["output"]  # type: ignore[assignment]
        mid = (self.theta_bounds[0] + self.theta_bounds[1]) / 2
        played = self.channels["inputs"] + self.channels["targets"]
        levels = {**dict.fromkeys(self.channels["gates"], mid),
                  **dict.fromkeys(self.channels["nudge_gates"], NUDGE_OFF_V),
                  **dict.fromkeys(played, 0.0)}
        for channel, level in levels.items():
            output.set_voltage(channel, level)
        channels = sorted(played + self.channels["gates"] + self.channels["nudge_gates"])
        for channel in channels:
            output.set_output(channel, True)
        return {"gate_v": mid, "nudge_gate_v": NUDGE_OFF_V, "input_v": 0.0, "target_v": 0.0,
                "channels_on": channels}

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "layout": [self.layout.n_inputs, self.layout.n_hidden, self.layout.n_outputs],
                "input_range_v": [self.input_min_v, self.input_max_v], "output_scale_v": self.output_scale_v,
                "sample_rate_hz": self.sample_rate_hz, "g_unit_s": self.g_unit_s}
