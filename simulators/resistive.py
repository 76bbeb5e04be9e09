"""A nonlinear resistive network that settles to its electrical equilibrium, driven and read through analog I/O.

The bench of Kendall et al. 2020 and Dillavou et al. 2022 (a network of variable resistors), with the transistor edges
of Dillavou et al., PNAS 2024 (doi:10.1073/pnas.2319718121): input nodes clamped by analog-output voltages, hidden
and output nodes free, programmable edges (MOSFETs whose channel conductance follows a gate voltage held as a DC
level on an analog-output channel), antiparallel diode pairs from the hidden nodes to ground, a load resistor on
every output, and a nudge transistor from every output to a target voltage (see `hil.physics.resistive`, which
also gives the channel wiring). The analog input reads every free node.

One sample is one step of the analog output's waveform: the network settles within ``timing.network_settle_s``
(microseconds), at most one sample period (the sample clock stops at 1/``network_settle_s``), so a batch of B
inputs plays as a B-sample waveform while the gates hold their DC levels, and each sample is the equilibrium for
that step's drive.

Non-idealities (defaults: the ``realistic`` preset):

- *construction*: threshold-voltage spread of every transistor, log-normal saturation-current spread of every
  diode, tolerance of every resistor (diode series resistors and output loads);
- *per shot*: read noise on every node (plus the converters' DAC rounding, ADC noise and rounding);
- *slow state*: the temperature wanders (Ornstein-Uhlenbeck in the virtual clock) and moves the thermal voltage
  kT/q, every threshold (linear tempco) and every saturation current (SPICE law).

Device time: every sample costs one sample period (on the analog output's clock); every DC level change (a gate)
costs the converters' ``settle_s``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from hil.config import Strict
from hil.errors import DeviceError, HilError
from hil.physics import resistive as physics
from simulators.analog import AnalogWorld, Bits, ConverterConfig, NoiseV, RangeV, SampleRateHz, SettleS
from simulators.world import OrnsteinUhlenbeck, derive_seed


class Geometry(Strict):
    """The layered network: inputs → hidden → outputs, every layer fully connected by programmable edges."""

    n_inputs: int = Field(3, ge=1, le=64, description="input nodes, each clamped by an analog-output channel")
    n_hidden: int = Field(6, ge=1, le=512, description="hidden nodes, each with an antiparallel diode pair to ground")
    n_outputs: int = Field(2, ge=1, le=64, description="output nodes, each with a load resistor and a nudge "
                                                       "transistor to its target")


class Devices(Strict):
    """Nominal (datasheet) device values: what a twin assumes before calibration."""

    threshold_v: float = Field(
        physics.NOMINAL_THRESHOLD_V, ge=-5, le=5, description="MOSFET threshold voltage (V); source: ALD1101/ALD1106 "
        "small-signal MOSFET arrays, V_GS(th) 0.7 V typical")
    transconductance_a_per_v2: float = Field(
        physics.NOMINAL_TRANSCONDUCTANCE_A_PER_V2, gt=0, le=1, description="MOSFET k = µnCox·W/L (A/V²), so that one "
        "volt of overdrive gives 10 kΩ, the load's value; source: µnCox ≈ 100 µA/V² of a CMOS process at W/L = 1")
    slope_factor: float = Field(
        physics.NOMINAL_SLOPE_FACTOR, ge=1, le=5, description="subthreshold slope factor n (1); source: EKV model, "
        "1.2-1.5 for bulk CMOS")
    threshold_tempco_v_per_k: float = Field(
        physics.NOMINAL_THRESHOLD_TEMPCO_V_PER_K, ge=-0.1, le=0.1, description="threshold temperature coefficient "
        "(V/K); source: about −2 mV/K for silicon MOSFETs and junctions")
    saturation_current_a: float = Field(
        physics.NOMINAL_SATURATION_CURRENT_A, gt=0, le=1e-6, description="diode saturation current I_S at the "
        "reference temperature (A); source: 1N4148/1N914 SPICE model (IS=2.52n N=1.752 RS=0.568)")
    ideality: float = Field(
        physics.NOMINAL_IDEALITY, ge=1, le=10, description="diode emission coefficient N (1); source: 1N4148 SPICE "
        "model")
    series_resistance_ohm: float = Field(
        physics.NOMINAL_SERIES_RESISTANCE_OHM, gt=0, le=1e7, description="resistor in series with every diode, which "
        "softens the activation (Ω); the diode's own 0.57 Ω (1N4148 SPICE RS) is negligible beside it")
    load_resistance_ohm: float = Field(
        physics.NOMINAL_LOAD_RESISTANCE_OHM, gt=0, le=1e9, description="load resistor from every output node to "
        "ground (Ω)")
    reference_temperature_k: float = Field(
        physics.REFERENCE_TEMPERATURE_K, ge=200, le=400, description="temperature of the datasheet values and the mean "
        "ambient temperature (K); source: datasheets specify at 25 °C")


class Construction(Strict):
    """Hidden device-to-device spread, drawn once per instance from the seed."""

    threshold_sigma_v: float = Field(
        0.02, ge=0, le=0.5, description="standard deviation of every transistor's threshold voltage (V); source: ALD "
        "EPAD matched-pair arrays (ALD110800, ALD111933) guarantee offsets ≤ 10-20 mV within a package; "
        "unmatched devices spread wider")
    saturation_current_log_sigma: float = Field(
        0.37, ge=0, le=3, description="standard deviation of ln I_S over the diodes (1); source: Fairchild "
        "1N914B/1N4448 datasheet, V_F = 620-720 mV at 5 mA taken as ±3σ: σ(V_F) ≈ 17 mV = 0.37·N·kT/q")
    resistor_tolerance: float = Field(
        0.01, ge=0, lt=1, description="every fixed resistor lies uniformly within ±tolerance of its nominal value "
        "(1); source: E96 metal-film resistors, ±1 %")


class Shot(Strict):
    """Noise drawn at every sample."""

    read_noise_v: float = Field(
        10e-6, ge=0, le=0.1, description="rms voltage noise on every node at sampling (V), before the ADC; source: "
        "kT/C noise at 298 K of the node's C ≈ 40 pF (node, cable and ADC input, as in network_settle_s), √(kT/C) = "
        "10 µV")


class Slow(Strict):
    """Slow state that evolves with the virtual clock."""

    temperature_sigma_k: float = Field(
        0.5, ge=0, le=20, description="stationary standard deviation of the ambient temperature (K); source: lab "
        "temperature surveys report 0.3-0.8 K rms over days (U. Maryland physics lab survey)")
    temperature_tau_s: float = Field(
        1800.0, gt=0, le=1e7, description="correlation time of the temperature wander (s); source: air-conditioning "
        "cycles of tens of minutes")


class Timing(Strict):
    """Device time."""

    network_settle_s: float = Field(
        5e-6, ge=0, le=1, description="time for the nodes to settle to 16-bit accuracy after a step (s): about 11·R·C "
        "with R ≈ 10 kΩ and C ≈ 40 pF of node, cable and ADC input (the C of read_noise_v); the analog output's and "
        "input's sample clock stops at 1/this")


class ResistiveConverters(ConverterConfig):
    """The DAQ of the bench: a 16-bit ±10 V analog output and a 16-bit analog input on its ±2 V range."""

    output_range_v: RangeV = Field(
        10.0, description="outputs span ±range (V); source: NI X Series analog outputs, ±10 V")
    input_range_v: RangeV = Field(
        2.0, description="inputs span ±range (V); beyond it they clip (adc_clip); source: NI X "
        "Series ±2 V range (64 µV nominal resolution), which covers the ±1 V network")
    dac_bits: Bits | None = Field(
        16, description="DAC resolution over the output span (bits), null: exact; source: NI X "
        "Series analog outputs, 16 bits")
    adc_bits: Bits | None = Field(
        16, description="ADC resolution over the input span (bits), null: exact; source: NI X Series "
        "(NI 6358: 16 bits, one ADC per channel)")
    adc_noise_v: NoiseV = Field(
        60e-6, description="ADC input-referred noise, rms (V); source: about one code of a 16-bit ADC "
        "on a ±2 V range (NI X Series, 64 µV)")
    max_sample_rate_hz: SampleRateHz = Field(
        1e6, description="fastest shared sample clock (Hz); source: NI 6358, 1.25 MS/s per channel, "
        "simultaneous")
    settle_s: SettleS = Field(
        1e-4, description="time for one DC level (a gate) to settle after it is written (s); source: a "
        "software-timed single-channel update of a PCIe DAQ takes tens of µs, and a gate behind 10 kΩ and 100 pF "
        "needs 11·RC = 11 µs to settle to 16 bits")


class ResistiveNetworkConfig(Strict):
    """Everything a `ResistiveNetwork` can be configured with; defaults are the ``realistic`` preset."""

    geometry: Geometry = Field(default_factory=Geometry)
    devices: Devices = Field(default_factory=Devices)
    construction: Construction = Field(default_factory=Construction)
    shot: Shot = Field(default_factory=Shot)
    slow: Slow = Field(default_factory=Slow)
    timing: Timing = Field(default_factory=Timing)
    converters: ResistiveConverters = Field(default_factory=ResistiveConverters)


class ResistiveNetwork(AnalogWorld):
    """A simulated nonlinear resistive network (see the module docstring); its instruments are the generic
    `SimulatedAnalogOutput` (inputs, gates, targets, nudge gates) and `SimulatedAnalogInput` (free nodes)."""

    kind = "resistive_network"
    Config = ResistiveNetworkConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "ideal": {
            "construction": {"threshold_sigma_v": 0.0, "saturation_current_log_sigma": 0.0,
                             "resistor_tolerance": 0.0},
            "shot": {"read_noise_v": 0.0},
            "slow": {"temperature_sigma_k": 0.0},
            "converters": {"dac_bits": None, "adc_bits": None, "adc_noise_v": 0.0, "adc_clip": False},
        },
        "realistic": {},
        "harsh": {
            "construction": {"threshold_sigma_v": 0.05, "saturation_current_log_sigma": 0.8,
                             "resistor_tolerance": 0.05},
            "shot": {"read_noise_v": 30e-6},
            "slow": {"temperature_sigma_k": 1.5, "temperature_tau_s": 600.0},
            "converters": {"dac_bits": 14, "adc_bits": 14, "adc_noise_v": 180e-6},
        },
    }

    config: ResistiveNetworkConfig

    def _construct(self) -> None:
        super()._construct()
        geometry, devices, spread = self.config.geometry, self.config.devices, self.config.construction
        self.layout = physics.Layout(geometry.n_inputs, geometry.n_hidden, geometry.n_outputs)
        rng = self.construction_rng
        n_edges, n_out, n_diodes = self.layout.n_edges, self.layout.n_outputs, self.layout.n_diodes
        self.threshold_v = devices.threshold_v + spread.threshold_sigma_v * self.normal((n_edges,), rng)
        self.nudge_threshold_v = devices.threshold_v + spread.threshold_sigma_v * self.normal((n_out,), rng)
        self.saturation_current_a = devices.saturation_current_a * torch.exp(
            spread.saturation_current_log_sigma * self.normal((n_diodes,), rng))
        self.series_resistance_ohm = devices.series_resistance_ohm * self._tolerance((n_diodes,))
        self.load_resistance_ohm = devices.load_resistance_ohm * self._tolerance((n_out,))
        slow = self.config.slow
        self.slow_rng = torch.Generator().manual_seed(derive_seed(self.seed, 2, self.kind))
        self.temperature_drift = OrnsteinUhlenbeck(slow.temperature_sigma_k, slow.temperature_tau_s, (),
                                                   self.slow_rng)

    def _tolerance(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Factors uniform in 1 ± tolerance."""
        tolerance = self.config.construction.resistor_tolerance
        return 1 + tolerance * (2 * self.uniform(shape, self.construction_rng) - 1)

    # -- channels ---------------------------------------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        return self.layout.n_drive_channels

    @property
    def n_inputs(self) -> int:
        return self.layout.n_free

    @property
    def max_sample_rate_hz(self) -> float:
        """The converters' fastest clock, or 1/``timing.network_settle_s`` if slower: every sample must settle."""
        settle = self.config.timing.network_settle_s
        return min(self.config.converters.max_sample_rate_hz, 1 / settle if settle > 0 else float("inf"))

    # -- state ------------------------------------------------------------------------------------------------------
    def temperature_k(self, *, peek: bool = False) -> float:
        """The ambient temperature (K) now, on the virtual clock; with ``peek``, read without advancing the drift."""
        drift = self.temperature_drift.peek if peek else self.temperature_drift.at
        return self.config.devices.reference_temperature_k + float(drift(self.clock.now()))

    def device_parameters(self) -> physics.DeviceParameters:
        """The true device parameters now (the present temperature included)."""
        devices = self.config.devices
        return physics.DeviceParameters(
            threshold_v=self.threshold_v, nudge_threshold_v=self.nudge_threshold_v,
            saturation_current_a=self.saturation_current_a, series_resistance_ohm=self.series_resistance_ohm,
            load_resistance_ohm=self.load_resistance_ohm, ideality=devices.ideality,
            temperature_k=self.temperature_k(), transconductance_a_per_v2=devices.transconductance_a_per_v2,
            slope_factor=devices.slope_factor, threshold_tempco_v_per_k=devices.threshold_tempco_v_per_k,
            reference_temperature_k=devices.reference_temperature_k)

    def hidden_parameters(self) -> dict[str, Any]:
        """Thresholds (V, at the reference temperature), saturation currents (A, idem), resistances (Ω), the
        diode ideality and the present temperature (K, read without advancing its drift)."""
        return {"threshold_v": self.threshold_v.clone(), "nudge_threshold_v": self.nudge_threshold_v.clone(),
                "saturation_current_a": self.saturation_current_a.clone(),
                "series_resistance_ohm": self.series_resistance_ohm.clone(),
                "load_resistance_ohm": self.load_resistance_ohm.clone(),
                "ideality": self.config.devices.ideality, "temperature_k": self.temperature_k(peek=True)}

    # -- physics ----------------------------------------------------------------------------------------------------
    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        """Free-node voltages (hidden, outputs) × samples for the drive (inputs, gates, targets, nudge gates)."""
        settle = self.config.timing.network_settle_s
        if settle > 0 and sample_rate_hz > 1 / settle:  # as the clock's limit says it: 1/(1/settle) may round below
            raise DeviceError(f"simulated {self.kind}: a sample period of {1e6 / sample_rate_hz:g} µs is shorter than "
                              f"the network's settling time {settle * 1e6:g} µs; sample at most at "
                              f"{1 / settle:g} Hz")
        layout = self.layout
        drive = drive_v.T.to(torch.float32)
        gates_end = layout.n_inputs + layout.n_edges
        try:
            voltages = physics.equilibrium(
                layout, self.device_parameters(), input_v=drive[:, : layout.n_inputs],
                gate_v=drive[:, layout.n_inputs: gates_end],
                target_v=drive[:, gates_end: gates_end + layout.n_outputs],
                nudge_gate_v=drive[:, gates_end + layout.n_outputs:])
        except HilError as error:  # the simulated device did not settle: a device's failure, said as one
            raise DeviceError(f"simulated {self.kind}: {error}; drive it within narrower voltages") from None
        noise = self.config.shot.read_noise_v
        if noise > 0:
            voltages = voltages + noise * self.normal(voltages.shape)
        return voltages.T
