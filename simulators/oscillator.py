"""A simulated network of coupled Duffing oscillators, driven through an analog output, read through an analog input.

The bench (after the mechanical PNNs of Wright et al., Nature 601, 549 (2022)): N resonators (cantilevers or
pendula, 150–400 Hz, Q 5–8) coupled by springs to their neighbours, all shaken by one voice-coil actuator on analog
output channel 1, each watched by an eddy-current displacement probe on an analog input channel. The physics is
`hil.physics.oscillator`; this module adds the bench's non-idealities:

- *construction* (hidden, seeded): spread of the resonance frequencies, damping rates, Duffing coefficients β,
  coupling stiffnesses κ, actuator gains and sensor gains;
- *per shot*: force noise (floor vibration shaking the common base: one white acceleration applied to every
  oscillator), sensor noise (white, per channel), plus the DAC and ADC of `simulators.analog`;
- *slow state*: the room temperature wanders (Ornstein-Uhlenbeck on the virtual clock) and shifts every resonance
  frequency by its temperature coefficient; it is read at the start of each acquisition.

The oscillators keep ringing between acquisitions: each starts from the state the previous one ended in, rung
(noiselessly) over the idle time on the virtual clock under the level the analog output held meanwhile (a DC level,
or a loaded waveform's first sample; 0 V when off), so a network held under a DC level stays deflected.

Integration (RK4, ``integration.max_step_s`` or finer where the motion needs it: `hil.physics.oscillator.integrate`) is
sequential in time, so a long waveform (records separated by quiet gaps) is cut into pieces that are integrated in
parallel as one batch. A run of zero drive at least `split_quiet_s` long (the time in which the slowest mode decays by
``integration.split_decay``) is cut where the drive resumes, and a very long run also every 4 `split_quiet_s` inside it;
so every piece but the last ends with a quiet tail. Pass 1 integrates every piece from rest; pass p+1 starts piece k
from pass p's end state of piece k−1 (piece 0 from the true state). Noise is drawn once for the whole waveform, so every
pass sees the same realisation. The start state of piece k is then wrong by the true state at cut k−p+1 carried through
p−1 pieces, each ending in a tail that decays it by d = e^(−γ_min·tail/2): the error is about d^(p−1) × |state at a
cut|, where that state is itself only the ring-down residue (about d × the amplitude before the gap) plus the noise
floor. Passes are added until d^(p−1) ≤ ``integration.tolerance`` (at least 2, so that the noise floor carries over):
for the default oscillator system (0.1 s gaps, d ≈ 10⁻⁴) two passes leave the records within float32 precision of a
sequential integration. Through a strongly driven stretch the Duffing nonlinearity can amplify a small state error, so
this is an estimate, tested against sequential integration. A waveform without long enough quiet runs is integrated
sequentially, exactly. Device time is the playback time (`AnalogWorld.acquire` advances the clock).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from hil.config import Strict
from hil.errors import DeviceError, HilError, counted
from hil.physics import oscillator as physics
from simulators.analog import AnalogWorld, ConverterConfig, NoiseV
from simulators.world import OrnsteinUhlenbeck

#: Inside a long quiet run, cuts are this many `split_quiet_s` apart (so those pieces decay by split_decay⁴).
INSIDE_CUT_SPACING = 4
#: Beyond this many e-folds of the slowest mode an idle network is taken to be at rest (e⁻³⁰ ≈ 10⁻¹³).
REST_AFTER_E_FOLDS = 30.0


DESIGN = physics.DESIGN_RANGES
ResonanceHz = Annotated[float, Field(**DESIGN["freq_hz"].bounds)]
QualityFactor = Annotated[float, Field(**DESIGN["q"].bounds)]
DriveGain = Annotated[float, Field(**DESIGN["drive_gain_m_s2_per_v"].bounds)]
MAX_OSCILLATORS = 4096  # the statistical tests draw spreads over 2000
OscillatorIndex = Annotated[int, Field(ge=0, lt=MAX_OSCILLATORS)]


class NetworkConfig(Strict):
    """The nominal design of the network: what the drawings say (the construction spread is applied on top)."""

    freq_hz: list[ResonanceHz] = Field(list(physics.NOMINAL_FREQ_HZ), min_length=1, max_length=MAX_OSCILLATORS,
                                       description="nominal resonance frequency of each oscillator (Hz); design value")
    q: list[QualityFactor] = Field(list(physics.NOMINAL_Q), min_length=1,
                                   description="nominal quality factor of each oscillator, Q = ω/γ (1); design value")
    nonlinear_length_m: float = Field(physics.NOMINAL_NONLINEAR_LENGTH_M, **DESIGN["nonlinear_length_m"].bounds,
                                      description="displacement at which the cubic (Duffing) stiffness equals the "
                                                  "linear one, β = ω²/L² (m); design value")
    coupling_hz: float = Field(physics.NOMINAL_COUPLING_HZ, **DESIGN["coupling_hz"].bounds,
                               description="nearest-neighbour coupling, κ = (2π·f)² (Hz); design value")
    drive_gain_m_s2_per_v: list[DriveGain] = Field(list(physics.NOMINAL_DRIVE_GAIN), min_length=1,
                                                   description="actuator acceleration per drive volt on each "
                                                               "oscillator (m/s²/V); design value")
    sensor_gain: float | None = Field(None, **DESIGN["sensor_gain"].bounds,
                                      description="sensor gain (V/m for displacement, V/(m/s) for velocity); null: "
                                                  "that of the sensed quantity's probe, 7870 V/m or 3.94 V/(m/s); "
                                                  "source: Bently Nevada 3300 XL 8 mm proximity probe, 7.87 V/mm "
                                                  "(200 mV/mil), and 330500 Velomitor, 100 mV/(in/s)")
    sensed: list[OscillatorIndex] = Field(list(physics.NOMINAL_SENSED), min_length=1, max_length=MAX_OSCILLATORS,
                                          description="oscillator (0-based) read by each analog input channel")
    sense: Literal["displacement", "velocity"] = Field("displacement", description="what the sensors measure")

    @model_validator(mode="after")
    def _consistent(self) -> NetworkConfig:
        n = len(self.freq_hz)
        if len(self.q) != n or len(self.drive_gain_m_s2_per_v) != n:  # one given, the others left at the design's
            raise ValueError(f"freq_hz gives {counted(n, 'oscillator')}, but q has {counted(len(self.q), 'value')} "
                             f"and drive_gain_m_s2_per_v {len(self.drive_gain_m_s2_per_v)}; give the three one value "
                             "per oscillator each")
        beyond = next((item for item, i in enumerate(self.sensed) if not 0 <= i < n), None)
        if beyond is not None:  # the first: the list may hold thousands
            raise ValueError(f"sensed holds oscillator indices 0..{n - 1}, got {self.sensed[beyond]} (item {beyond}, "
                             "counting from 0)")
        return self


class ConstructionConfig(Strict):
    """Hidden deviations of this instance from the design, drawn once from the seed."""

    freq_spread: float = Field(0.02, ge=0, le=0.2, description="relative std of the resonance frequencies (1); source: "
                                                        "assumed, a few % mismatch of nominally identical "
                                                        "machined resonators (f ∝ t/L², ±1 % on t or L)")
    damping_spread: float = Field(0.15, ge=0, le=1, description="log-normal std of the damping rates γ (1); source: "
                                                           "assumed, clamping losses vary more than stiffness "
                                                           "between nominally identical resonators")
    nonlinearity_spread: float = Field(0.25, ge=0, le=1, description="log-normal std of the Duffing coefficients β "
                                                                "(1); source: assumed, β depends on clamping and "
                                                                "geometric nonlinearity and is rarely within 25 % of "
                                                                "design")
    coupling_spread: float = Field(0.10, ge=0, le=1, description="log-normal std of each coupling stiffness κ_ij, "
                                                            "symmetric (1); source: assumed, spring/magnet "
                                                            "spacing tolerance")
    drive_gain_spread: float = Field(0.05, ge=0, le=0.2, description="relative std of the actuator gains (1); source: "
                                                              "assumed, voice-coil force constants are specified "
                                                              "to about ±10 %")
    sensor_gain_spread: float = Field(0.03, ge=0, le=0.2, description="relative std of the sensor gains (1); source: "
                                                               "sensitivity tolerance ±5 % of vibration sensors (The "
                                                               "Modal Shop, 'Percent difference vs deviation in "
                                                               "accelerometer calibration')")


class ShotConfig(Strict):
    """Noise drawn at every acquisition. A white density S (one-sided) becomes independent samples of std
    S·√(fs/2), i.e. a noise bandwidth of the Nyquist frequency."""

    force_noise_m_s2_rthz: float = Field(0.01, ge=0, le=10, description="base acceleration noise density shaking every "
                                                                  "oscillator, white (m/s²/√Hz); source: vibration "
                                                                  "criterion VC-A (50 µm/s rms per one-third octave "
                                                                  "band, Ungar & Gordon / IEST) at 250 Hz")
    sensor_noise_v_rthz: float = Field(1e-5, ge=0, le=1, description="sensor output noise density, white (V/√Hz); "
                                                                "source: assumed, ≈1.3 nm/√Hz displacement "
                                                                "resolution of an eddy-current probe × 7.87 V/mm")


class SlowConfig(Strict):
    """Room temperature wander and the resonance drift it causes."""

    temperature_sigma_k: float = Field(0.5, ge=0, le=20, description="stationary std of the room temperature (K); "
                                                               "source: assumed, air-conditioned lab ±0.5 K")
    temperature_tau_s: float = Field(1800.0, gt=0, le=1e7, description="correlation time of the temperature (s); "
                                                                "source: assumed, HVAC cycle of tens of minutes")
    freq_temperature_coefficient_per_k: float = Field(-2.8e-4, ge=-0.01, le=0.01, description="relative resonance "
                                                                            "shift per kelvin (1/K); source: "
                                                                            "aluminium E(T) slope −0.039 GPa/K of 68 "
                                                                            "GPa (Greer, ISB J. Phys. 5 (2011), "
                                                                            "tuning fork), f ∝ √E")


class IntegrationConfig(Strict):
    """How the physics is integrated (not a non-ideality)."""

    max_step_s: float = Field(physics.MAX_STEP_S, ge=1e-6, le=1e-2, description="largest RK4 step (s); smaller ones "
                              "where a swing stiffens the motion (hil.physics.oscillator.integrate)")
    split_decay: float = Field(0.1, gt=0, lt=1, description="decay of the slowest mode that a quiet stretch must "
                                                             "give before the waveform may be cut there (1)")
    tolerance: float = Field(1e-3, gt=0, lt=1, description="passes are added until the start state of every piece "
                                                            "is off by at most this fraction of the state at its cut "
                                                            "(1)")
    max_passes: int = Field(6, ge=1, le=16, description="most passes of the parallel scheme (1 drops the carried "
                                                         "state at every cut: for testing the scheme only)")
    parallel: bool = Field(True, description="split long waveforms at quiet stretches (False: always sequential)")


class OscillatorConverters(ConverterConfig):
    """The DAQ card of the bench: 16-bit ±10 V analog output and input, with the input's random noise.

    Its own defaults (not a ``ConverterConfig`` built with other values) so that a lab file overriding one field
    keeps the others at their realistic values."""

    adc_noise_v: NoiseV = Field(2.4e-4, description="ADC input-referred noise, rms (V); source: NI "
                               "USB-6361 AI random noise ≈0.24 mV rms on the ±10 V range (X Series specifications)")


class OscillatorConfig(Strict):
    """Configuration of an oscillator network; the defaults are the ``realistic`` preset."""

    network: NetworkConfig = Field(default_factory=NetworkConfig)
    construction: ConstructionConfig = Field(default_factory=ConstructionConfig)
    shot: ShotConfig = Field(default_factory=ShotConfig)
    slow: SlowConfig = Field(default_factory=SlowConfig)
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig)
    converters: OscillatorConverters = Field(default_factory=OscillatorConverters,
                                        description="DAQ card; source: NI USB-6361 class, 16-bit ±10 V, AI random "
                                                    "noise ≈0.24 mV rms on the ±10 V range (X Series "
                                                    "specifications)")


class OscillatorNetwork(AnalogWorld):
    """N coupled Duffing oscillators on one drive channel and ``len(sensed)`` sensor channels (see module doc)."""

    kind = "oscillator_network"
    Config = OscillatorConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "ideal": {
            "construction": {"freq_spread": 0.0, "damping_spread": 0.0, "nonlinearity_spread": 0.0,
                             "coupling_spread": 0.0, "drive_gain_spread": 0.0, "sensor_gain_spread": 0.0},
            "shot": {"force_noise_m_s2_rthz": 0.0, "sensor_noise_v_rthz": 0.0},
            "slow": {"temperature_sigma_k": 0.0},
            "converters": {"dac_bits": None, "adc_bits": None, "adc_noise_v": 0.0, "adc_clip": False},
        },
        "realistic": {},
        "harsh": {
            "construction": {"freq_spread": 0.05, "damping_spread": 0.4, "nonlinearity_spread": 0.6,
                             "coupling_spread": 0.3, "drive_gain_spread": 0.15, "sensor_gain_spread": 0.08},
            "shot": {"force_noise_m_s2_rthz": 0.03, "sensor_noise_v_rthz": 3e-5},
            "slow": {"temperature_sigma_k": 1.5},
            # a 12-bit DAQ (NI USB-6008 class: its input's 4.9 mV codes over ±10 V, used here for the drive too, which
            # on that card is 0..5 V) with 3x the noise
            "converters": {"dac_bits": 12, "adc_bits": 12, "adc_noise_v": 7.2e-4},
        },
    }
    config: OscillatorConfig

    @property
    def n_outputs(self) -> int:
        return 1

    @property
    def n_inputs(self) -> int:
        return len(self.config.network.sensed)

    def _construct(self) -> None:
        super()._construct()
        net, spread = self.config.network, self.config.construction
        nominal = physics.nominal_parameters(net.freq_hz, net.q, net.nonlinear_length_m, net.coupling_hz,
                                             net.drive_gain_m_s2_per_v, net.sensor_gain, len(net.sensed), net.sense)
        self.nominal = nominal
        n, rng = len(net.freq_hz), self.construction_rng
        omega = nominal["omega"] * (1 + spread.freq_spread * self.normal((n,), rng))
        gamma = nominal["gamma"] * torch.exp(spread.damping_spread * self.normal((n,), rng))
        beta = nominal["beta"] * torch.exp(spread.nonlinearity_spread * self.normal((n,), rng))
        upper = torch.triu(self.normal((n, n), rng), diagonal=1)
        kappa = nominal["kappa"] * torch.exp(spread.coupling_spread * (upper + upper.T))
        drive_gain = nominal["drive_gain"] * (1 + spread.drive_gain_spread * self.normal((n,), rng))
        sense_gain = nominal["sense_gain"] * (1 + spread.sensor_gain_spread * self.normal((len(net.sensed),), rng))
        self._hidden = {"omega": omega.clamp_min(1e-3 * float(nominal["omega"].min())), "gamma": gamma,
                        "beta": beta, "kappa": kappa, "drive_gain": drive_gain, "sense_gain": sense_gain}
        slow = self.config.slow
        self.temperature = OrnsteinUhlenbeck(slow.temperature_sigma_k, slow.temperature_tau_s, (), self.rng)
        self.state = torch.zeros(2 * n)  # [x, ẋ] of every oscillator, carried between acquisitions
        self._idle_since_s = 0.0
        self.last_passes = 0  # passes of the parallel scheme in the last acquisition (1: sequential)

    # -- what the world knows about itself ----------------------------------------------------------------------
    def hidden_parameters(self) -> dict[str, torch.Tensor]:
        """Construction values: omega (rad/s), gamma (1/s), beta (1/(m²s²)), kappa (1/s²), drive_gain (m/s²/V),
        sense_gain (V/m or V/(m/s)); the slow temperature drift is not included."""
        return {key: value.clone() for key, value in self._hidden.items()}

    def temperature_k(self, *, peek: bool = False) -> float:
        """The room temperature's deviation from its mean now (K); advances the slow state to the clock (with
        ``peek``, reads it without advancing it)."""
        drift = self.temperature.peek if peek else self.temperature.at
        return float(drift(self.clock.now()))

    def parameters_now(self, *, peek: bool = False) -> dict[str, torch.Tensor]:
        """The physical parameters at this instant: the construction values with the temperature drift applied."""
        shift = 1 + self.config.slow.freq_temperature_coefficient_per_k * self.temperature_k(peek=peek)
        return {**self._hidden, "omega": self._hidden["omega"] * shift}

    def split_quiet_s(self) -> float:
        """Quiet time after which the waveform may be cut for parallel integration (s)."""
        rate = physics.slowest_decay_rate(self._hidden["gamma"])
        return math.log(1 / self.config.integration.split_decay) / rate

    # -- the response -------------------------------------------------------------------------------------------
    def respond(self, drive_v: torch.Tensor, sample_rate_hz: float) -> torch.Tensor:
        """Sensor voltages (channels × T) for the drive (1 × T volts), with force and sensor noise."""
        net, shot = self.config.network, self.config.shot
        n_samples = drive_v.shape[1]
        with torch.no_grad():
            self.hold()
            params = self.parameters_now()
            start = self.state
            accel = drive_v[0, :, None].float() * params["drive_gain"]
            if shot.force_noise_m_s2_rthz > 0:
                per_sample = shot.force_noise_m_s2_rthz * math.sqrt(sample_rate_hz / 2)
                accel = accel + per_sample * self.normal((n_samples, 1))
            quiet = (drive_v == 0).all(0).numpy()
            states = self._integrate(accel, sample_rate_hz, params, start, quiet)
            self.state = states[-1].clone()
            self._idle_since_s = self.clock.now() + n_samples / sample_rate_hz
            volts = physics.sense(states[:-1], params["sense_gain"], net.sensed, net.sense).T.contiguous()
            if shot.sensor_noise_v_rthz > 0:
                volts = volts + shot.sensor_noise_v_rthz * math.sqrt(sample_rate_hz / 2) * self.normal(volts.shape)
        return volts

    def hold(self) -> None:
        """Bring the carried state up to now: since the last acquisition or level change the network has rung under
        the level the output held (its DC level, 0 V when off; no noise). Called before either changes it."""
        now = self.clock.now()
        if now > self._idle_since_s:
            held_v = float(self.output.drive(1)[0, 0]) if self.output is not None else 0.0
            with torch.no_grad():
                self.state = self._ring_down(self.parameters_now(peek=True), now - self._idle_since_s, held_v)
            self._idle_since_s = now

    def _ring_down(self, params: dict[str, torch.Tensor], idle_s: float, held_v: float = 0.0) -> torch.Tensor:
        """The carried state after ``idle_s`` (s) under the constant drive ``held_v`` (V), without noise. After
        `REST_AFTER_E_FOLDS` of the slowest mode it has forgotten where it started: at rest, or under a drive its
        static deflection, reached by integrating that long only."""
        if idle_s <= 0 or (held_v == 0 and not bool(self.state.any())):
            return self.state
        forget_s = REST_AFTER_E_FOLDS / physics.slowest_decay_rate(params["gamma"])
        if idle_s >= forget_s and held_v == 0:
            return torch.zeros_like(self.state)
        idle_s = min(idle_s, forget_s)
        steps = max(1, math.ceil(idle_s / self.config.integration.max_step_s))
        accel = (held_v * params["drive_gain"]).expand(1, steps, len(self.state) // 2)
        return self._simulate(accel, steps / idle_s, params, self.state[None])[0, -1]

    def _simulate(self, accel: torch.Tensor, sample_rate_hz: float, params: dict[str, torch.Tensor],
                  state0: torch.Tensor | None) -> torch.Tensor:
        substeps = physics.substeps_for(sample_rate_hz, self.config.integration.max_step_s)
        try:
            return physics.integrate(accel, sample_rate_hz, params["omega"], params["gamma"], params["beta"],
                                     params["kappa"], substeps=substeps, state0=state0)
        except HilError as error:
            raise DeviceError(f"simulated {self.kind}: {error}") from None

    def cuts(self, quiet: np.ndarray, sample_rate_hz: float) -> tuple[list[int], float]:
        """Where the waveform may be cut, and the shortest quiet tail (s) that ends a piece.

        Every quiet run (zero drive) of at least `split_quiet_s` is cut at its end (where the drive resumes) and,
        if it is at least 8 `split_quiet_s` long, also every 4 `split_quiet_s` before that; so each piece but the
        last ends with at least `split_quiet_s` of quiet. No cuts (sequential integration) when
        ``integration.parallel`` is off or no run is long enough.
        """
        need = math.ceil(self.split_quiet_s() * sample_rate_hz)
        if not self.config.integration.parallel or need >= len(quiet):
            return [], math.inf
        edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        long = ends - starts >= need
        spacing = INSIDE_CUT_SPACING * need
        found: list[tuple[int, int]] = []  # (cut, quiet samples before it inside its piece)
        for start, end in zip(starts[long].tolist(), ends[long].tolist(), strict=True):
            inside = list(range(end - spacing, start + spacing - 1, -spacing))[::-1]
            for cut in [*inside, end] if end < len(quiet) else inside:
                previous = found[-1][0] if found else 0
                found.append((cut, cut - max(start, previous)))
        if not found:
            return [], math.inf
        return [cut for cut, _ in found], min(tail for _, tail in found) / sample_rate_hz

    def _integrate(self, accel: torch.Tensor, sample_rate_hz: float, params: dict[str, torch.Tensor],
                   start: torch.Tensor, quiet: np.ndarray) -> torch.Tensor:
        """States (T+1) × 2N for the applied acceleration (T × N) from ``start``: sequential, or split at
        quiet stretches and integrated in parallel (see module doc)."""
        cuts, tail_s = self.cuts(quiet, sample_rate_hz)
        if not cuts:
            self.last_passes = 1
            return self._simulate(accel[None], sample_rate_hz, params, start[None])[0]
        setting = self.config.integration
        decay = max(1e-300, math.exp(-physics.slowest_decay_rate(params["gamma"]) * tail_s))
        passes = min(setting.max_passes, 1 + max(1, math.ceil(math.log(setting.tolerance) / math.log(decay))))
        bounds = [0, *cuts, len(accel)]
        lengths = torch.tensor(np.diff(bounds))
        pieces = torch.zeros(len(lengths), int(lengths.max()), accel.shape[1], dtype=torch.float32)
        for k, (a, b) in enumerate(pairwise(bounds)):
            pieces[k, : b - a] = accel[a:b]
        initial = torch.zeros(len(lengths), len(start), dtype=torch.float32)
        initial[0] = start
        rows = torch.arange(len(lengths))
        for _ in range(passes):
            states = self._simulate(pieces, sample_rate_hz, params, initial)
            ends = states[rows, lengths]
            initial = torch.cat([start[None], ends[:-1]])
        self.last_passes = passes
        parts = [states[k, : int(length)] for k, length in enumerate(lengths)]
        return torch.cat([*parts, ends[-1:]])
