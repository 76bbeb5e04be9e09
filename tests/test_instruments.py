"""The capability classes' own promises, on real parts: simulated instruments, and the drivers on the byte-exact
protocol transport or against their emulators over TCP.

Each test pins one safety rule of `hil.instruments` that the contract tests leave open: the first offending index
named, the bounds of a batch taken inclusively, state recorded only after the hardware took it (and unknown after a
failure), steps and their spacing on the way down as on the way up, lab limits (not only the hardware's) enforced.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from drivers.keithley2450 import Keithley2450
from drivers.keysight_33500b import Keysight33500B
from hil import testing
from hil.clock import VirtualClock
from hil.errors import DeviceError, FramesDropped, LimitError
from hil.instruments import Camera, CrossbarArray, Readings, SourceMeter
from hil.systems.crossbar import CrossbarSystem
from hil.systems.optical import OpticalSystem
from hil.testing import Exchange, ProtocolTransport, expected_protocol
from hil.transport import VisaTransport
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.crossbar import MemristorCrossbar, SimulatedCrossbar
from simulators.emulators.keithley2450 import Keithley2450Emulator
from simulators.emulators.keysight_33500b import Keysight33500BEmulator
from simulators.emulators.server import TcpServer
from simulators.optical import OpticalTable, SimulatedCamera, SimulatedSLM
from simulators.oscillator import OscillatorNetwork
from simulators.resistive import ResistiveNetwork
from tests.drivers import test_keithley2450 as smu_protocol
from tests.drivers import test_keysight_33500b as awg_protocol

# -- a one-channel Keysight 33521B on the byte-exact transport -----------------------------------------------
AWG_IDN = b"Agilent Technologies,33521B,MY52000001,3.05-1.19-2.00-52-00"
AWG_OK = awg_protocol.ERRORS_CHECKED


def awg_connected(function: bytes = b"DC", output: bytes = b"0") -> list[Exchange]:
    """`connect` of a 33521B into 50 Ω whose channel holds ``function`` (at 0 V if DC) with output ``output``."""
    return awg_protocol.connected((function, b"+0.000000000000000E+00", output), idn=AWG_IDN)


def awg_steps(*levels: bytes) -> list[Exchange]:
    return [x for level in levels for x in ((b"SOUR1:VOLT:OFFS " + level, None), AWG_OK)]


def awg_upload(data: np.ndarray, rate: bytes, offset: bytes, errors: tuple[Exchange, ...] = (AWG_OK,)) -> list:
    """`load_waveform` on channel 1 up to arming, then ``errors`` for its error check."""
    return [*awg_protocol.uploading(1, data, rate, offset)[:-1], *errors]


def awg_arm(amplitude: bytes) -> list[Exchange]:
    return [(b"SOUR1:FUNC ARB;:SOUR1:BURS:STAT ON;:SOUR1:VOLT " + amplitude, None), AWG_OK]


def awg(**options: object):
    return lambda transport: Keysight33500B(transport, clock=VirtualClock(), **options)  # type: ignore[arg-type]


# -- a Keithley 2450 on the byte-exact transport -------------------------------------------------------------
SMU_OK = smu_protocol.NO_ERROR
SMU_ERROR: Exchange = (b"SYST:ERR?", b'-222,"Parameter data out of range;1;2026/11/28 10:00:00.000"')
SMU_CONFIGURED: list[Exchange] = [*smu_protocol.connected(), *smu_protocol.configured_voltage()]
SMU_LIVE = [*SMU_CONFIGURED, (b":OUTP ON", None), SMU_OK]


def smu(**options: object):
    return lambda transport: Keithley2450(transport, clock=VirtualClock(), **options)  # type: ignore[arg-type]


def configured(k: Keithley2450, output: bool = True) -> Keithley2450:
    k.connect()
    k.configure("voltage", 1e-3)
    if output:
        k.set_output(True)
    return k


# -- simulated instruments -----------------------------------------------------------------------------------
@pytest.fixture
def analog_output() -> Iterator[SimulatedAnalogOutput]:
    """A simulated DAQ output (no settling time, so its clock counts only the ramp's spacing) with a lab ramp."""
    world = OscillatorNetwork(seed=0, config={"converters": {"settle_s": 0.0}})
    limits = {"voltage_v": {"min": -2, "max": 2, "max_step": 0.5, "ramp_rate": 1.0}}
    with SimulatedAnalogOutput(world, name="out", limits=limits) as output:
        yield output


@pytest.fixture
def analog_input() -> Iterator[SimulatedAnalogInput]:
    with SimulatedAnalogInput(OscillatorNetwork(seed=0), name="probes") as probes:
        yield probes


@pytest.fixture
def optical() -> OpticalTable:
    return OpticalTable(seed=1, config={"slm": {"max_sequence": 3}, "camera": {"max_frames": 3}})


@pytest.fixture
def slm(optical: OpticalTable) -> Iterator[SimulatedSLM]:
    with SimulatedSLM(optical, name="slm") as device:
        yield device


@pytest.fixture
def camera(optical: OpticalTable) -> Iterator[SimulatedCamera]:
    with SimulatedCamera(optical, name="camera", limits={"exposure_s": {"max": 0.5}}) as device:
        yield device


@pytest.fixture
def crossbar() -> Iterator[SimulatedCrossbar]:
    world = MemristorCrossbar(preset="ideal", seed=0, config={"geometry": {"rows": 6, "cols": 3, "max_batch": 4}})
    with SimulatedCrossbar(world, name="xbar", limits={"read_voltage_v": {"min": -0.1, "max": 0.1}}) as device:
        yield device


def test_an_instruments_repr_names_it_its_capability_and_whether_it_is_connected(optical: OpticalTable) -> None:
    """In a notebook an instrument showed as ``<simulators.optical.SimulatedSLM object at 0x7f…>``."""
    slm = SimulatedSLM(optical, name="slm")
    assert repr(slm) == "<SimulatedSLM 'slm': spatial light modulator, not connected>"
    with slm:
        assert repr(slm) == "<SimulatedSLM 'slm': spatial light modulator, connected>"


def test_a_tensor_requiring_grad_is_shown_and_read_as_its_values(slm: SimulatedSLM,
                                                                   crossbar: SimulatedCrossbar) -> None:
    """A pattern or read voltages taken from a torch computation (requires_grad) failed in the simulator with torch's
    multi-line "functions with out=... arguments don't support automatic differentiation"."""
    slm.show(torch.full(slm.shape, 1.0, requires_grad=True))
    voltages = torch.full((2, crossbar.shape[0]), 0.05, requires_grad=True)
    currents = crossbar.read(voltages)
    assert not currents.requires_grad
    torch.testing.assert_close(currents, crossbar.read(voltages.detach()))


# -- AnalogOutput --------------------------------------------------------------------------------------------
def test_dc_ramps_are_spaced_by_the_ramp_rate_down_as_well_as_up(analog_output: SimulatedAnalogOutput) -> None:
    clock = analog_output.clock
    analog_output.set_voltage(1, 1.2)  # three 0.4 V steps at 1 V/s
    assert analog_output.level_v[1] == 1.2 and clock.now() == pytest.approx(1.2)
    analog_output.set_voltage(1, -0.3)  # three 0.5 V steps down
    assert analog_output.level_v[1] == -0.3 and clock.now() == pytest.approx(2.7)
    analog_output.safe_state()  # 0.3 V back up in one step
    assert analog_output.level_v[1] == 0.0 and clock.now() == pytest.approx(3.0)


def test_dc_ramp_sends_steps_of_at_most_max_step_both_ways_and_ends_on_the_target() -> None:
    exchanges = [*awg_connected(), *awg_steps(b"0.4", b"0.8", b"1.2", b"0.7", b"0.2", b"-0.3")]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5, "ramp_rate": 2.0}}), exchanges) as inst:
        inst.connect()
        inst.set_voltage(1, 1.2)
        inst.set_voltage(1, -0.3)
        assert inst.level_v[1] == -0.3 and inst.clock.now() == pytest.approx(1.35)


def test_a_channel_that_does_not_exist_is_refused_channel_zero_included(analog_output: SimulatedAnalogOutput) -> None:
    for channel in (0, -1, 2, 1.0, True):  # True is an int to Python, not a channel number
        with pytest.raises(LimitError, match="does not exist"):
            analog_output.set_voltage(channel, 0.1)  # type: ignore[arg-type]
        with pytest.raises(LimitError, match="does not exist"):
            analog_output.set_output(channel, True)  # type: ignore[arg-type]
        with pytest.raises(LimitError, match="does not exist"):
            analog_output.load_waveform(channel, np.zeros(8), 1e3)  # type: ignore[arg-type]
    assert analog_output.level_v == {1: 0.0} and analog_output.output_on == {1: False}


def test_a_waveform_must_be_one_dimensional(analog_output: SimulatedAnalogOutput) -> None:
    with pytest.raises(LimitError, match=r"shape \(2, 64\)"):
        analog_output.load_waveform(1, np.zeros((2, 64)), 1e3)
    assert analog_output.waveform_samples == {}


@pytest.mark.parametrize("first", [9.0, -5.5, math.nan, math.inf])
def test_a_waveform_whose_first_sample_is_bad_is_refused_before_anything_is_sent(first: float) -> None:
    with expected_protocol(awg(), awg_connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=r"waveform\[0\]"):
            inst.load_waveform(1, [first, 0, 0, 0, 0, 0, 0, 0], 1e3)
        assert inst.waveform_samples == {} and inst.level_v[1] == 0.0


def test_a_waveform_names_its_first_bad_sample() -> None:
    with expected_protocol(awg(), awg_connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=r"waveform\[2\]: 6 V"):
            inst.load_waveform(1, [0, 1, 6, math.nan, -7, 0, 0, 0], 1e3)


def test_set_voltage_from_an_unknown_level_is_refused_before_anything_is_sent() -> None:
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), awg_connected(function=b"ARB")) as inst:
        inst.connect()
        assert inst.level_v[1] is None
        with pytest.raises(LimitError, match="unknown"):
            inst.set_voltage(1, 0.2)
        assert inst.level_v[1] is None


@pytest.mark.parametrize("reading", [b"+9.91000000000000E+37", b"-9.90000000000000E+37"])
def test_scpis_not_a_number_for_a_level_is_an_unknown_level_which_the_safe_state_switches_off_first(
        reading: bytes) -> None:
    """An instrument answers a level it cannot give with SCPI's not-a-number (9.91e37) or -infinity (-9.9e37). Taken
    as a level, the safe state tried to ramp back from it in some 10³⁸ steps, was refused, and ended in an error."""
    exchanges = [*awg_protocol.connected((b"DC", reading, b"1"), idn=AWG_IDN), AWG_OK,
                 awg_protocol.outputs_read(b"1;DC;" + reading),
                 (b"OUTP1 OFF", None), AWG_OK, (b"SOUR1:VOLT:OFFS 0", None), AWG_OK]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as inst:
        inst.connect()
        assert inst.level_v[1] is None
        inst.safe_state()
        assert inst.level_v[1] == 0.0 and inst.output_on[1] is False


def test_a_failed_output_switch_leaves_the_output_state_unknown() -> None:
    exchanges = [*awg_connected(), (b"OUTP1 ON", None), (b"SYST:ERR?", b'-221,"Settings conflict"'), AWG_OK]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match="-221"):
            inst.set_output(1, True)
        assert inst.output_on[1] is None and inst.level_v[1] == 0.0


def test_a_channel_whose_output_state_is_unknown_is_ramped_to_the_waveforms_first_sample_as_if_live() -> None:
    exchanges = [*awg_connected(), (b"OUTP1 ON", None), (b"SYST:ERR?", b'-221,"Settings conflict"'), AWG_OK,
                 *awg_steps(b"0.4", b"0.8", b"1.2"),
                 *awg_upload(np.array([0.0, -1.0] * 4, dtype=np.float32), b"1000", b"1.2"), *awg_arm(b"4.4")]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError):
            inst.set_output(1, True)
        inst.load_waveform(1, [1.2, -1.0] * 4, 1000)
        assert inst.level_v[1] == 1.2 and inst.waveform_samples == {1: 8}


class KeepsItsSamples(SimulatedAnalogOutput):
    """An output whose driver keeps the samples it is given, to upload them at play (as one combining channels)."""

    def _load_waveform_hw(self, channel: int, samples_v: np.ndarray, sample_rate_hz: float) -> None:
        self.kept = samples_v
        super()._load_waveform_hw(channel, samples_v, sample_rate_hz)


def test_a_waveform_reaches_the_driver_as_a_copy_that_the_caller_cannot_change_after_its_check() -> None:
    """A float64 array reached the hook as the caller's own: changed after the check (here to 50 V, outside the
    limits), a driver that kept it would upload what no check saw."""
    world = OscillatorNetwork(seed=0, config={"converters": {"settle_s": 0.0}})
    with KeepsItsSamples(world, name="out", limits={"voltage_v": {"min": -2, "max": 2}}) as output:
        samples = np.zeros(64)
        output.load_waveform(1, samples, 1000.0)
        samples[:] = 50.0
        assert not np.shares_memory(output.kept, samples) and (output.kept == 0).all()


def test_a_failed_waveform_upload_leaves_the_level_unknown_and_nothing_loaded() -> None:
    data, failed = np.linspace(0, 1, 8, dtype=np.float32), ((b"SYST:ERR?", b'-222,"Data out of range"'), AWG_OK)
    exchanges = [*awg_connected(), *awg_upload(data, b"1000", b"-1"), *awg_arm(b"4"),
                 *awg_upload(data, b"1000", b"-1", failed)]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        assert inst.waveform_samples == {1: 8} and inst.level_v[1] == -1.0
        with pytest.raises(DeviceError, match="-222"):
            inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        assert inst.level_v[1] is None and inst.waveform_samples == {}  # the old waveform is gone too


# -- Camera --------------------------------------------------------------------------------------------------
def test_exposure_is_checked_against_the_lab_limit_not_only_the_hardwares(camera: SimulatedCamera) -> None:
    for exposure_s in (0.75, 1.0, 5e-6, -1e-3, 0.0, math.nan, math.inf):
        with pytest.raises(LimitError, match="exposure"):
            camera.set_exposure(exposure_s)
    assert camera.exposure_s is None
    camera.set_exposure(0.5)  # the lab's maximum itself
    assert camera.exposure_s == 0.5


def test_capture_needs_a_known_exposure(camera: SimulatedCamera) -> None:
    with pytest.raises(DeviceError, match="exposure unknown"):
        camera.capture(1)


def test_capture_takes_1_to_max_frames_inclusive(camera: SimulatedCamera) -> None:
    camera.set_exposure(1e-3)
    frames = camera.capture(camera.max_frames)
    assert len(frames.images) == camera.max_frames == 3
    for n_frames in (0, -1, camera.max_frames + 1, 2.0, "2"):
        with pytest.raises(LimitError, match="n_frames"):
            camera.capture(n_frames)  # type: ignore[arg-type]


def test_an_unknown_trigger_mode_is_refused(camera: SimulatedCamera) -> None:
    with pytest.raises(LimitError, match="trigger"):
        camera.set_trigger("rising")  # type: ignore[arg-type]
    assert camera.trigger == "software"


# -- SpatialLightModulator -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_show_names_the_first_bad_pixel_in_row_major_order(slm: SimulatedSLM, kind: str) -> None:
    pattern = np.zeros(slm.shape)
    pattern[3, 1], pattern[0, 5], pattern[7, 0] = 7.0, math.nan, -1.0
    with pytest.raises(LimitError, match=r"pattern phase\[0, 5\]: nan"):
        slm.show(pattern if kind == "numpy" else torch.tensor(pattern, dtype=torch.float32))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.01, 6.3])
def test_a_sequence_with_one_bad_pixel_is_refused(slm: SimulatedSLM, kind: str, value: float) -> None:
    phases = np.full((3, *slm.shape), 1.0)
    phases[1, 2, 3] = value
    with pytest.raises(LimitError, match=r"sequence phase\[1, 2, 3\]"):
        slm.show_sequence(phases if kind == "numpy" else torch.tensor(phases))


def test_a_sequence_of_the_wrong_shape_is_refused(slm: SimulatedSLM) -> None:
    rows, cols = slm.shape
    for phases in (np.zeros((2, rows, cols + 1)), np.zeros((2, rows - 1, cols)), np.zeros((rows, cols)),
                   np.zeros((1, 1, rows, cols))):
        with pytest.raises(LimitError, match="shape"):
            slm.show_sequence(phases)


def test_a_sequence_holds_1_to_max_sequence_patterns_inclusive(slm: SimulatedSLM) -> None:
    slm.show_sequence(np.zeros((slm.max_sequence, *slm.shape)))
    for n_patterns in (0, slm.max_sequence + 1):
        with pytest.raises(LimitError, match=r"1\.\.3 patterns"):
            slm.show_sequence(np.zeros((n_patterns, *slm.shape)))


# -- CrossbarArray -------------------------------------------------------------------------------------------
def test_a_read_takes_1_to_max_batch_vectors_inclusive(crossbar: SimulatedCrossbar) -> None:
    crossbar.program(np.full(crossbar.shape, 1e-5))
    rows, cols = crossbar.shape
    assert tuple(crossbar.read(np.full((crossbar.max_batch, rows), 0.05)).shape) == (crossbar.max_batch, cols)
    assert tuple(crossbar.read(np.full((1, rows), 0.05)).shape) == (1, cols)
    for batch in (0, crossbar.max_batch + 1):
        with pytest.raises(LimitError, match=r"1\.\.4 vectors"):
            crossbar.read(np.zeros((batch, rows)))


def test_read_voltages_are_checked_against_the_lab_limit_and_named(crossbar: SimulatedCrossbar) -> None:
    voltages = np.zeros((3, crossbar.shape[0]))
    voltages[2, 3] = 0.12  # inside the hardware's range, outside the lab's 0.1 V
    with pytest.raises(LimitError, match=r"read voltage\[2, 3\]: 0\.12 V"):
        crossbar.read(voltages)
    voltages[2, 3], voltages[1, 4] = 0.0, math.nan
    with pytest.raises(LimitError, match=r"read voltage\[1, 4\]"):
        crossbar.read(torch.tensor(voltages))


def test_reads_and_programs_of_the_wrong_shape_are_refused(crossbar: SimulatedCrossbar) -> None:
    rows, cols = crossbar.shape
    for voltages in (np.zeros((2, rows + 1)), np.zeros((2, cols)), np.zeros(rows)):
        with pytest.raises(LimitError, match="read voltages has shape"):
            crossbar.read(voltages)
    for conductances in (np.zeros((cols, rows)), np.zeros((rows, cols + 1)), np.zeros(rows * cols)):
        with pytest.raises(LimitError, match="conductances has shape"):
            crossbar.program(conductances)


def test_a_flipped_or_read_only_numpy_array_reaches_a_simulated_instrument_as_its_values() -> None:
    """A numpy view with negative strides (``np.flip``, ``[::-1]``), which torch takes no tensor of, raised torch's
    ValueError from inside the simulator; a read-only one (``np.broadcast_to``) gave torch's non-writable warning."""
    with SimulatedCrossbar(MemristorCrossbar(preset="ideal"), name="xbar") as crossbar, warnings.catch_warnings():
        warnings.simplefilter("error")
        conductances = np.linspace(0, 2e-5, 64 * 64).reshape(64, 64)
        crossbar.program(conductances[::-1])
        voltages = np.linspace(-0.1, 0.1, 3 * 64).reshape(3, 64)
        expected = crossbar.read(np.ascontiguousarray(voltages[:, ::-1]))
        assert torch.equal(crossbar.read(voltages[:, ::-1]), expected)
        torch.testing.assert_close(crossbar.read_pairs(np.flip(voltages, 1), 32), expected[:, 0::2] - expected[:, 1::2],
                                   rtol=1e-4, atol=1e-10)  # the pairs computed alone: rounded otherwise
        assert torch.equal(crossbar.read(np.broadcast_to(voltages[:1], (3, 64))), crossbar.read(voltages[[0, 0, 0]]))
        crossbar.program(np.ascontiguousarray(conductances[::-1]))
        assert torch.equal(crossbar.read(voltages[:, ::-1]), expected)  # the flipped programming was the same


class ListCrossbar(CrossbarArray):
    """A bench crossbar whose driver reads every column and returns the currents as it has them (here: lists)."""

    shape = (3, 4)

    def _identify_hw(self) -> str:
        return "list crossbar"

    def _program_hw(self, conductances_s) -> None:
        self.conductances_s = np.asarray(conductances_s, dtype=float)

    def _read_hw(self, voltages_v):
        return (np.asarray(voltages_v) @ self.conductances_s).tolist()


def test_a_drivers_differential_read_reads_every_column_and_subtracts_the_pairs() -> None:
    with ListCrossbar(name="xbar") as crossbar:
        conductances = np.array([[1, 2, 3, 5], [7, 11, 13, 17], [19, 23, 29, 31]]) * 1e-6
        crossbar.program(conductances)
        voltages = np.array([[0.1, -0.2, 0.3], [0.0, 0.1, 0.2]])
        currents = voltages @ conductances
        np.testing.assert_allclose(crossbar.read_pairs(voltages, 2), currents[:, 0::2] - currents[:, 1::2])
        np.testing.assert_allclose(crossbar.read_pairs(voltages, 1), currents[:, :1] - currents[:, 1:2])


class OnChipCrossbar(ListCrossbar):
    """A bench crossbar that subtracts its column pairs on chip and decodes the reply's float32 block in place."""

    block = "<f4"  # the reply's numbers: little-endian float32

    def _read_pairs_hw(self, voltages_v, pairs):
        currents = np.asarray(voltages_v) @ self.conductances_s
        self.reply = (currents[:, 0:2 * pairs:2] - currents[:, 1:2 * pairs:2]).astype(self.block).tobytes()
        return np.frombuffer(self.reply, dtype=self.block).reshape(len(currents), pairs)  # read-only, on the reply


@pytest.mark.parametrize("block", ["<f4", ">f4"])  # >f4: an IEEE 488.2 binary block's big-endian order
def test_a_drivers_own_differential_read_is_handed_on_as_a_copy_the_caller_may_scale(block: str) -> None:
    with type("BlockCrossbar", (OnChipCrossbar,), {"block": block})(name="xbar") as crossbar:
        system = CrossbarSystem({"crossbar": crossbar})
        x = np.array([[1.0, 0.5, -1.0], [0.25, 0.0, 0.5]])
        theta = torch.tensor([0.5, -1.0, 0.25, 1.0, -0.5, 0.0], dtype=torch.float32)
        outputs = system(torch.as_tensor(x, dtype=torch.float32), theta)
        torch.testing.assert_close(outputs, torch.as_tensor(x, dtype=torch.float32) @ theta.reshape(3, 2))
        reply = np.frombuffer(crossbar.reply, dtype=block)  # the reply as the chip sent it, not scaled in place
        np.testing.assert_allclose(reply / system.full_scale_a, outputs.numpy().ravel(), rtol=1e-6)


def test_the_contract_refuses_a_driver_whose_differential_read_subtracts_the_wrong_way() -> None:
    class Swapped(ListCrossbar):
        def _read_pairs_hw(self, voltages_v, pairs):
            currents = np.asarray(voltages_v) @ self.conductances_s
            return currents[:, 1:2 * pairs:2] - currents[:, 0:2 * pairs:2]

    contract = testing.CrossbarArrayContract()
    with ListCrossbar(name="xbar") as crossbar:
        contract.test_differential_read_is_each_even_column_less_the_odd_one_after_it(crossbar)
    with Swapped(name="xbar") as crossbar, pytest.raises(AssertionError, match="check the driver's _read_pairs_hw"):
        contract.test_differential_read_is_each_even_column_less_the_odd_one_after_it(crossbar)


@pytest.mark.parametrize("reply", [np.zeros((2, 3)), [[0.0, 0.0]], "garbage"])
def test_a_drivers_own_differential_read_of_the_wrong_shape_is_refused_naming_it(reply) -> None:
    class Misreading(ListCrossbar):
        def _read_pairs_hw(self, voltages_v, pairs):
            return reply

    with Misreading(name="xbar") as crossbar, pytest.raises(DeviceError, match=r"^xbar: a read returned .*pair "
                                                                                r"differences; fix the driver's "
                                                                                r"_read_pairs_hw$"):
        crossbar.read_pairs(np.zeros((2, 3)), 2)


def test_a_drivers_read_of_whole_numbers_is_subtracted_as_numbers() -> None:
    class CountingCrossbar(ListCrossbar):  # replies in unsigned integers, which numpy subtracts modulo 2**16
        def _read_hw(self, voltages_v):
            return np.array([[1, 2, 3, 5]] * len(voltages_v), dtype=np.uint16)

    with CountingCrossbar(name="xbar") as crossbar:
        np.testing.assert_array_equal(crossbar.read_pairs(np.zeros((2, 3)), 2), [[-1.0, -2.0]] * 2)


@pytest.mark.parametrize(("reply", "refusal"), [
    ("garbage", r"^xbar: a read returned str, not column currents; fix the driver's _read_hw$"),
    ([[1.0, 2.0]] * 2, r"^xbar: a read returned shape \(2, 2\), expected 2×4 column currents; fix the driver's "
                       r"_read_hw$"),
    ([[1.0, "x"]], r"^xbar: a read returned list, not column currents; fix the driver's _read_hw$"),
    (np.full((2, 4), "n/a"), r"^xbar: a read returned ndarray of <U3, not column currents; fix the driver's _read_hw$"),
])
def test_a_drivers_read_of_the_wrong_shape_is_refused_by_the_differential_read_naming_it(reply, refusal) -> None:
    class Misreading(ListCrossbar):
        def _read_hw(self, voltages_v):
            return reply

    with Misreading(name="xbar") as crossbar, pytest.raises(DeviceError, match=refusal):
        crossbar.read_pairs(np.zeros((2, 3)), 2)


@pytest.mark.parametrize(("reply", "refusal"), [
    ([[1.0, 2.0]] * 2, r"^xbar: a read returned shape \(2, 2\), expected 2×4 column currents; fix the driver's "
                       r"_read_hw$"),
    ("garbage", r"^xbar: a read returned str, not column currents; fix the driver's _read_hw$"),
])
def test_a_drivers_read_of_the_wrong_shape_is_refused_naming_it(reply, refusal) -> None:
    class Misreading(ListCrossbar):
        def _read_hw(self, voltages_v):
            return reply

    with Misreading(name="xbar") as crossbar, pytest.raises(DeviceError, match=refusal):
        crossbar.read(np.zeros((2, 3)))


def test_a_differential_read_of_a_crossbar_of_one_column_is_refused_saying_why() -> None:
    class OneColumn(ListCrossbar):
        shape = (3, 1)

    with OneColumn(name="xbar") as crossbar, pytest.raises(LimitError, match=r"^xbar: a differential read needs a "
                                                                             r"pair of columns; the crossbar has 1: "
                                                                             r"read it with read\(\)$"):
        crossbar.read_pairs(np.zeros((2, 3)), 1)


class BlockReadCrossbar(ListCrossbar):
    """A bench crossbar whose driver decodes each read's float32 block in place (read-only, on the reply's bytes)."""

    def _read_hw(self, voltages_v):
        reply = (np.asarray(voltages_v) @ self.conductances_s).astype("<f4").tobytes()
        return np.frombuffer(reply, dtype="<f4").reshape(len(voltages_v), self.shape[1])


class BufferReadCrossbar(ListCrossbar):
    """A bench crossbar whose driver reads into one buffer it keeps, filled anew by every read."""

    def _read_hw(self, voltages_v):
        self.buffer = getattr(self, "buffer", np.empty((len(voltages_v), self.shape[1])))
        return np.matmul(np.asarray(voltages_v), self.conductances_s, out=self.buffer)


def test_a_drivers_read_is_handed_on_as_a_copy_the_caller_may_change() -> None:
    """A read returned what the driver's _read_hw returned where it was a float array of the right shape: a reply
    decoded in place was read-only to the caller ('output array is read-only' at an in-place scaling), and a buffer
    the driver reuses changed the currents of every earlier read at the next."""
    with BlockReadCrossbar(name="xbar") as crossbar:
        crossbar.program(np.full((3, 4), 1e-6))
        currents = crossbar.read(np.full((2, 3), 0.1))
        currents -= 3e-7
        np.testing.assert_allclose(currents, 0.0, atol=1e-12)
    with BufferReadCrossbar(name="xbar") as crossbar:
        crossbar.program(np.full((3, 4), 1e-6))
        first = crossbar.read(np.full((2, 3), 0.1))
        crossbar.read(np.full((2, 3), -0.1))
        np.testing.assert_allclose(first, np.full((2, 4), 3e-7))


def test_a_drivers_read_is_returned_as_a_float_array() -> None:
    with ListCrossbar(name="xbar") as crossbar:
        crossbar.program(np.full((3, 4), 1e-6))
        currents = crossbar.read(np.full((2, 3), 0.1))
        assert isinstance(currents, np.ndarray) and currents.dtype == float
        np.testing.assert_allclose(currents, np.full((2, 4), 3e-7))


# -- SourceMeter ---------------------------------------------------------------------------------------------
@pytest.fixture
def smu_bench() -> Iterator[tuple[Keithley2450, Keithley2450Emulator]]:
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    with TcpServer(emulator) as server, \
            Keithley2450(VisaTransport(server.resource, timeout_s=2.0), clock=VirtualClock(),
                         limits={"voltage_v": {"max_step": 0.5}}) as k:
        yield k, emulator


def test_a_sweeps_first_point_is_checked_against_the_present_level(
        smu_bench: tuple[Keithley2450, Keithley2450Emulator]) -> None:
    k, emulator = smu_bench
    configured(k)
    k.set_level(1.0)
    k.sweep([1.2, 1.4], delay_s=0.0)  # 0.2 V from the present 1 V: allowed, though 1.2 V from zero
    assert k.level == 1.4 and emulator.level["VOLT"] == 1.4
    with pytest.raises(LimitError, match=r"sweep point 0 jumps 0\.6 V"):
        k.sweep([0.8, 0.8])  # its own points agree, but the first is 0.6 V from the present 1.4 V
    assert k.level == 1.4 and emulator.level["VOLT"] == 1.4


def test_a_failed_level_step_leaves_the_level_unknown_and_later_ramps_refused() -> None:
    exchanges = [*SMU_LIVE, (b":SOUR:VOLT 0.5", None), SMU_ERROR, SMU_OK]
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as k:
        configured(k)
        with pytest.raises(DeviceError, match="-222"):
            k.set_level(1.0)
        assert k.level is None
        with pytest.raises(LimitError, match="unknown"):
            k.set_level(0.2)


def test_a_failed_output_switch_leaves_the_smu_output_state_unknown() -> None:
    with expected_protocol(smu(), [*SMU_CONFIGURED, (b":OUTP ON", None), SMU_ERROR, SMU_OK]) as k:
        configured(k, output=False)
        with pytest.raises(DeviceError, match="-222"):
            k.set_output(True)
        assert k.output_on is None


@pytest.mark.parametrize(("max_step", "levels", "delay_s", "match"), [
    (0.5, [0.5, 0.6], 0.2, r"steps of up to 0\.5 V every 0\.2 s exceed ramp_rate 1 V/s"),  # the largest, not the last
    (0.25, [0.25, 0.5025], 0.5, r"sweep point 1 jumps 0\.2525 V, more than max_step 0\.25"),
    (0.5, [], 0.0, r"a sweep takes 1\.\.2500 levels"),
    (0.5, np.zeros(2501), 1.0, r"a sweep takes 1\.\.2500 levels"),
    (0.5, np.zeros((2, 2)), 1.0, r"a sweep takes 1\.\.2500 levels"),
    (0.5, [0.1], -0.1, r"sweep delay_s: -0\.1 s is outside 0\.\.10 s"),
    (0.5, [0.1], 10.5, r"sweep delay_s: 10\.5 s is outside 0\.\.10 s"),
    (0.5, [0.1], math.nan, r"sweep delay_s: nan refused; allowed 0\.\.10 s"),
])
def test_sweeps_breaking_a_limit_are_refused_before_anything_is_sent(max_step: float, levels, delay_s: float,
                                                                      match: str) -> None:
    with expected_protocol(smu(limits={"voltage_v": {"max_step": max_step, "ramp_rate": 1.0}}), SMU_LIVE) as k:
        configured(k)
        with pytest.raises(LimitError, match=match):
            k.sweep(levels, delay_s=delay_s)
        assert k.level == 0.0


def test_a_sweep_needs_the_output_on_and_sends_nothing_otherwise() -> None:
    with expected_protocol(smu(), SMU_CONFIGURED) as k:
        configured(k, output=False)
        with pytest.raises(DeviceError, match="output is off"):
            k.sweep([0.1, 0.2])
        assert k.level == 0.0


# -- AnalogInput ---------------------------------------------------------------------------------------------
def test_a_record_holds_1_to_max_samples_inclusive(analog_input: SimulatedAnalogInput) -> None:
    analog_input.arm(analog_input.max_samples, 1e3)  # only armed: never fetched
    for n_samples in (0, -1, analog_input.max_samples + 1, 100.0):
        with pytest.raises(LimitError, match="n_samples"):
            analog_input.arm(n_samples, 1e3)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0.0, -1e3, 2e6, math.nan, math.inf])
def test_a_sample_rate_outside_the_limits_is_refused(analog_input: SimulatedAnalogInput, rate: float) -> None:
    with pytest.raises(LimitError, match="sample_rate_hz"):
        analog_input.arm(100, rate)
    with pytest.raises(DeviceError, match="nothing armed"):
        analog_input.fetch()


def test_a_record_is_fetched_once_and_the_safe_state_drops_an_armed_one(analog_input: SimulatedAnalogInput) -> None:
    assert analog_input.acquire(10, 1e3).shape == (analog_input.n_channels, 10)
    with pytest.raises(DeviceError, match="nothing armed"):
        analog_input.fetch()
    analog_input.arm(10, 1e3)
    analog_input.safe_state()
    with pytest.raises(DeviceError, match="nothing armed"):
        analog_input.fetch()


@pytest.mark.parametrize("value", [10**400, "one volt"], ids=["huge integer", "text"])
def test_what_is_not_a_float_is_a_limit_error_naming_the_instrument(analog_output: SimulatedAnalogOutput,
                                                                     crossbar: SimulatedCrossbar, value) -> None:
    """An integer beyond the float range, or text, is refused as a value out of limits, not as a Python error."""
    refused = [lambda: analog_output.set_voltage(1, value), lambda: analog_output.load_waveform(1, [0.0, value], 1e3),
               lambda: crossbar.read([[value] * crossbar.shape[0]])]
    for call in refused:
        with pytest.raises(LimitError, match=r"^(out|xbar)"):
            call()


@pytest.mark.parametrize("value", ["0.1", True, None, math.nan], ids=["text", "True", "None", "NaN"])
def test_every_number_a_capability_takes_refuses_text_none_nan_and_bools(
        value: object, analog_output: SimulatedAnalogOutput, analog_input: SimulatedAnalogInput,
        camera: SimulatedCamera, slm: SimulatedSLM, crossbar: SimulatedCrossbar) -> None:
    """float() took "0.1" and True (an exposure of 1 s, a compliance of 1 A), numpy took them in a list, a None
    among numbers was reported as NaN, and sweep(delay_s="0.1") was a TypeError from numpy: each is now a
    `LimitError` naming the instrument and the argument, before anything is sent."""
    shown = repr(value) if value is not math.nan else "nan"
    refused = {
        "out channel 1 voltage": lambda: analog_output.set_voltage(1, value),
        "out sample_rate_hz": lambda: analog_output.load_waveform(1, [0.0, 0.1], value),
        "out:? channel 1 waveform\\[1\\]": lambda: analog_output.load_waveform(1, [0.0, value], 1e3),
        "probes sample_rate_hz": lambda: analog_input.acquire(10, value),
        "camera exposure_s": lambda: camera.set_exposure(value),
        "slm:? pattern( phase)?\\[0, 0\\]": lambda: slm.show(np.full(slm.shape, value, dtype=object)),
        "xbar:? read voltages?\\[0, 1\\]": lambda: crossbar.read([[0.0, value, 0.0, 0.0, 0.0, 0.0]]),
    }
    with expected_protocol(smu(name="smu"), SMU_LIVE) as k:
        configured(k)
        refused |= {
            "smu compliance": lambda: k.configure("voltage", value),
            "smu nplc": lambda: k.configure("voltage", 1e-3, value),
            "smu source voltage": lambda: k.set_level(value),
            "smu sweep delay_s": lambda: k.sweep([0.1], delay_s=value),
            "smu:? sweep levels?\\[1\\]": lambda: k.sweep([0.1, value]),
        }
        for what, call in refused.items():
            with pytest.raises(LimitError, match=rf"^{what}: {re.escape(shown)} (is not a number|refused)"):
                call()
        assert (k.level, k.compliance, k.nplc) == (0.0, 1e-3, 1.0)
    assert analog_output.level_v[1] == 0.0 and analog_output.waveform_samples == {} and camera.exposure_s is None


def test_play_takes_a_list_of_channels(analog_output: SimulatedAnalogOutput) -> None:
    """play(1) was a TypeError ('int' object is not iterable), as play(np.array(1)) was, and play("1") a channel '1'
    that does not exist."""
    analog_output.load_waveform(1, np.full(8, 0.3), 1e3)
    for channels in (1, "1", True, np.array(1)):
        with pytest.raises(LimitError, match=rf"^out: play takes a list of channels \(1\.\.1\), or None for every "
                                             rf"loaded one; got {re.escape(repr(channels))}$"):
            analog_output.play(channels)  # type: ignore[arg-type]
    with pytest.raises(LimitError, match=r"^out: play takes a list of channels \(1\.\.1\), or None for every "
                                         r"loaded one; got b'\\x01'$"):
        analog_output.play(b"\x01")  # type: ignore[arg-type]  # bytes iterate as numbers: channel 1
    analog_output.play(np.array([1]))
    analog_output.play((1,))


def test_play_of_no_channels_says_so_rather_than_that_no_waveform_is_loaded(
        analog_output: SimulatedAnalogOutput) -> None:
    """play([]) said "no waveform loaded; call load_waveform() before play()" with a waveform loaded: the empty list
    given, not the channel's memory, is what to fix."""
    analog_output.load_waveform(1, np.full(8, 0.3), 1e3)
    for channels in ([], (), np.array([], dtype=int)):
        with pytest.raises(LimitError, match=r"^out: play was given no channel; name the channels to play "
                                             r"\(1\.\.1\), or None for every loaded one$"):
            analog_output.play(channels)
    analog_output.play([1])


def test_a_mixin_listed_after_the_capability_is_refused_where_the_class_is_written() -> None:
    from drivers.scpi import ScpiDriver
    from hil.instruments import CrossbarArray, SourceMeter
    from simulators.world import SimulatedInstrument

    with pytest.raises(TypeError, match=r"^AcmeSmu: list ScpiDriver before the capability class: "
                                        r"class AcmeSmu\(ScpiDriver, SourceMeter\)$"):
        type("AcmeSmu", (SourceMeter, ScpiDriver), {})
    with pytest.raises(TypeError, match=r"list SimulatedInstrument before the capability class"):
        type("AcmeCrossbar", (CrossbarArray, SimulatedInstrument), {})
    type("AcmeSmu", (ScpiDriver, SourceMeter), {})  # the right order


def test_configure_at_an_unknown_level_switches_a_live_output_off_before_zeroing_it() -> None:
    """A failed step leaves a live output at an unknown level; configuring again (same mode) sets the level to 0,
    which from an unknown level could be a jump of any size: the output goes off first, as in the safe state."""
    zeroed = smu_protocol.configured_voltage()
    zeroed.insert(5, (b":SOUR:VOLT 0", None))  # the 2450 driver zeroes an unknown level within configure
    exchanges = [*SMU_LIVE, (b":SOUR:VOLT 0.5", None), SMU_ERROR, SMU_OK, (b":OUTP OFF", None), SMU_OK, *zeroed]
    with expected_protocol(smu(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as k:
        configured(k)
        with pytest.raises(DeviceError, match="-222"):
            k.set_level(1.0)
        assert k.level is None and k.output_on is True
        k.configure("voltage", 1e-3)
        assert k.level == 0.0 and k.output_on is False


def test_a_waveform_or_sweep_given_as_a_tensor_that_requires_grad_is_read_as_its_values(
        analog_output: SimulatedAnalogOutput) -> None:
    """A model's output (a tensor in an autograd graph) is checked and loaded, not a RuntimeError from numpy."""
    samples = torch.linspace(0.0, 0.4, 8, requires_grad=True) * 1.0
    analog_output.load_waveform(1, samples, 1e3)
    assert analog_output.waveform_samples == {1: 8} and analog_output.level_v[1] == 0.0
    with pytest.raises(LimitError, match=r"^out channel 1 waveform\[6\]: 2\.4 V is outside"):
        analog_output.load_waveform(1, samples * 7, 1e3)


def test_complex_values_are_refused_not_taken_for_their_real_part(analog_output: SimulatedAnalogOutput,
                                                                  slm: SimulatedSLM,
                                                                  crossbar: SimulatedCrossbar) -> None:
    """A field exp(iφ) given for a phase, or a complex waveform, is a mistake: numpy would keep only its real part."""
    field = np.exp(1j * np.full(slm.shape, 0.5))
    for pattern in (field, torch.tensor(field)):
        with pytest.raises(LimitError, match=r"^slm.*complex numbers refused"):
            slm.show(pattern)
    with pytest.raises(LimitError, match=r"^out: channel 1 waveform: complex numbers refused"):
        analog_output.load_waveform(1, np.full(8, 0.1 + 0.5j), 1e3)
    assert analog_output.waveform_samples == {}
    with pytest.raises(LimitError, match=r"^xbar.*complex numbers refused"):
        crossbar.read(np.full((1, crossbar.shape[0]), 0.05 + 0.05j))


class CtrlCWhenArmed(VirtualClock):
    """A clock whose next sleep, once armed, is interrupted as by Ctrl-C."""

    armed = False

    def sleep(self, seconds: float) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        super().sleep(seconds)


def test_ctrl_c_during_one_channels_ramp_down_still_leaves_the_other_channel_safe() -> None:
    emulator, clock = Keysight33500BEmulator(), CtrlCWhenArmed()
    with TcpServer(emulator) as server, \
            Keysight33500B(VisaTransport(server.resource, timeout_s=2.0), name="awg", clock=clock,
                           limits={"voltage_v": {"min": -2, "max": 2, "max_step": 0.5, "ramp_rate": 1.0}}) as inst:
        inst.safe_state()  # at power-on the channels play sines: no DC level to ramp from
        for channel in (1, 2):
            inst.set_voltage(channel, 1.5)
            inst.set_output(channel, True)
        clock.armed = True
        with pytest.raises(KeyboardInterrupt):
            inst.safe_state()
        channels = emulator.channels
        assert not channels[1].output_on and channels[1].offset_v == 1.0  # off where the interrupted ramp was
        assert not channels[2].output_on and channels[2].offset_v == 0.0  # reached its safe state all the same
        assert inst.level_v == {1: 1.0, 2: 0.0} and inst.output_on == {1: False, 2: False}


@pytest.mark.parametrize("enabled", ["off", "False", 0, 1, None, 1.0])
def test_an_output_is_switched_only_by_true_or_false(analog_output: SimulatedAnalogOutput, enabled: object) -> None:
    """The text "off" is truthy: taken as a switch, it put the output on."""
    with pytest.raises(LimitError, match=r"^out: an output is switched with True \(on\) or False \(off\)"):
        analog_output.set_output(1, enabled)  # type: ignore[arg-type]
    assert analog_output.output_on == {1: False}
    with expected_protocol(smu(), SMU_CONFIGURED) as k:
        configured(k, output=False)
        with pytest.raises(LimitError, match=r"switched with True \(on\) or False \(off\)"):
            k.set_output(enabled)  # type: ignore[arg-type]
        assert k.output_on is False
    analog_output.set_output(1, np.bool_(True))
    assert analog_output.output_on == {1: True}


def test_a_dc_level_replaces_the_loaded_waveform(analog_output: SimulatedAnalogOutput) -> None:
    """After set_voltage (or the safe state) the channel holds a DC level: playing the old waveform would jump from
    it to the waveform's first sample, and the simulator no longer has it (a KeyError from play)."""
    for replace in (lambda: analog_output.set_voltage(1, 0.0), analog_output.safe_state):
        analog_output.load_waveform(1, np.full(8, 0.3), 1e3)
        assert analog_output.waveform_samples == {1: 8}
        replace()
        assert analog_output.waveform_samples == {} and analog_output.level_v[1] == 0.0
        with pytest.raises(DeviceError, match="no waveform loaded"):
            analog_output.play()


def test_the_safe_state_of_a_channel_at_an_unknown_level_replaces_its_loaded_waveform() -> None:
    with SimulatedAnalogOutput(ResistiveNetwork(seed=0), name="out") as output:
        output.load_waveform(1, np.full(8, 0.3), 1e3)
        output.load_waveform(2, np.full(9, 0.3), 1e3)
        with pytest.raises(DeviceError, match="share length"):
            output.play([1, 2])
        assert output.level_v[1] is None and output.level_v[2] is None
        output.safe_state()
        assert output.waveform_samples == {} and output.level_v[1] == output.level_v[2] == 0.0
        with pytest.raises(DeviceError, match="no waveform loaded"):
            output.play([1])


def test_a_value_refused_by_a_rounding_hair_says_by_how_much(crossbar: SimulatedCrossbar, slm: SimulatedSLM) -> None:
    """float32(0.1) lies 1.5e-9 above a limit of 0.1: '0.1 V is outside -0.1..0.1 V' contradicted itself."""
    with pytest.raises(LimitError, match=r"^xbar read voltage\[0, 0\]: 0\.10000000149011612 V is outside "
                                         r"-0\.1\.\.0\.1 V by 1\.49e-09 V; float32 values round past limits"):
        crossbar.read(np.full((1, crossbar.shape[0]), 0.1, dtype=np.float32))
    with pytest.raises(LimitError, match=r"^slm pattern phase\[0, 0\]: 6\.2831854820251465 rad is outside "
                                         r"0\.\.6\.28319 rad by 1\.75e-07 rad; float32 values"):
        slm.show(np.full(slm.shape, 2 * math.pi, dtype=np.float32))
    with pytest.raises(LimitError, match=r"^xbar read voltage\[0, 0\]: 0\.2 V is outside -0\.1\.\.0\.1 V$"):
        crossbar.read(np.full((1, crossbar.shape[0]), 0.2))  # a plain miss reads as before


def test_true_is_not_a_count_of_frames_or_samples(camera: SimulatedCamera, analog_input: SimulatedAnalogInput) -> None:
    """True is an int to Python, as with channels: refused, not taken as one frame or one sample."""
    camera.set_exposure(1e-3)
    with pytest.raises(LimitError, match="n_frames must be an integer"):
        camera.capture(True)  # type: ignore[arg-type]
    with pytest.raises(LimitError, match="n_samples must be an integer"):
        analog_input.arm(True, 1e3)  # type: ignore[arg-type]


def test_the_safe_state_rests_at_the_allowed_level_nearest_zero_where_the_limits_exclude_zero() -> None:
    """A bench that must never see 0 V (limits 0.5..2 V) had every safe state fail with 'outside the limit', and a
    source-measure unit could not even be configured: both went to 0 V whatever the limits said."""
    with TcpServer(Keysight33500BEmulator()) as server, \
            Keysight33500B(VisaTransport(server.resource, timeout_s=2.0), name="awg", clock=VirtualClock(),
                           limits={"voltage_v": {"min": 0.5, "max": 2, "max_step": 0.5}}) as awg_:
        awg_.safe_state()  # at power-on the channels play sines: no DC level, switched off and set to rest
        assert awg_.level_v == {1: 0.5, 2: 0.5}
        awg_.set_voltage(1, 2.0)
        awg_.set_output(1, True)
        awg_.safe_state()
        assert awg_.level_v[1] == 0.5 and awg_.output_on[1] is False
    emulator = Keithley2450Emulator()
    with TcpServer(emulator) as server, \
            Keithley2450(VisaTransport(server.resource, timeout_s=2.0), name="smu", clock=VirtualClock(),
                         limits={"voltage_v": {"min": -5, "max": -1, "max_step": 1}}) as k:
        k.configure("voltage", 1e-3)
        k.set_level(-4.0)  # from the 0 V read at connect, which the limits exclude: ramped back from
        k.set_output(True)
        k.safe_state()
        assert k.level == emulator.level["VOLT"] == -1.0 and not emulator.output


def test_a_compliance_is_refused_where_its_other_sign_leaves_the_limits() -> None:
    """A compliance is symmetric: 3 V of compliance under a limit of 0..5 V (no reverse bias) let a negative
    current drive the device to −3 V. The refusal comes before anything is sent."""
    with expected_protocol(smu(limits={"voltage_v": {"min": 0, "max": 5}}), smu_protocol.connected()) as k:
        k.connect()
        with pytest.raises(LimitError, match=r"^Keithley2450: a compliance of 3 V lets the voltage reach ±3 V, "
                                             r"outside the limit 0\.\.5 V; give a smaller compliance, or a lab limit"):
            k.configure("current", 3.0)
        assert k.compliance is None


def test_a_negative_compliance_is_taken_as_its_magnitude() -> None:
    """The compliance is a magnitude that holds both signs: −1 mA configures the same ±1 mA limit as 1 mA."""
    with expected_protocol(smu(), SMU_CONFIGURED) as k:
        k.connect()
        k.configure("voltage", -1e-3)
        assert k.compliance == 1e-3


def test_configure_in_another_mode_with_the_output_state_unknown_ramps_down_and_switches_off_first() -> None:
    """After a failed switch the output may be on: a change of source mode treats it as live (ramp to rest, then
    off) before the source function changes, as it does an output known to be on."""
    current = [(b":SENS:VOLT:RSEN?", b"0"), (b":SOUR:VOLT:PROT?", b"NONE"), (b':SENS:FUNC "VOLT"', None),
               (b":SOUR:FUNC CURR", None), (b":SOUR:VOLT:PROT NONE", None), (b":SOUR:CURR 0", None),
               (b":SENS:VOLT:NPLC 1", None), (b":SOUR:CURR:READ:BACK ON", None), *smu_protocol.reading_as_is("VOLT"),
               (b":SOUR:CURR:RANG:AUTO ON", None), (b":SENS:VOLT:RANG:AUTO ON", None), (b":SOUR:CURR:VLIM 5", None),
               SMU_OK, (b":SOUR:CURR:VLIM?", b"5.000000E+00")]
    exchanges = [*SMU_CONFIGURED, (b":OUTP ON", None), SMU_ERROR, SMU_OK,
                 (b":SOUR:VOLT 0", None), SMU_OK, (b":OUTP OFF", None), SMU_OK, *current]
    with expected_protocol(smu(), exchanges) as k:
        configured(k, output=False)
        with pytest.raises(DeviceError, match="-222"):
            k.set_output(True)
        assert k.output_on is None
        k.configure("current", 5.0)
        assert (k.mode, k.level, k.output_on) == ("current", 0.0, False)


class DroppingCamera(SimulatedCamera):
    """A simulated camera whose frame counter skips one index after its second frame, as a camera reports a frame
    it dropped."""

    def _capture_hw(self, n_frames: int):
        images, indices = super()._capture_hw(n_frames)
        return images, np.where(np.arange(n_frames) >= 2, indices + 1, indices)


def test_a_batch_with_a_dropped_frame_is_refused_not_shifted_onto_the_wrong_inputs(optical: OpticalTable) -> None:
    """Frames after a gap in the counter belong to later inputs than their place in the batch says."""
    with DroppingCamera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(FramesDropped, match=r"^camera: frame\(s\) dropped after frame index 1 \(next index 3\)$"):
            camera.capture(3)



def test_the_safe_state_blanks_the_slm(slm: SimulatedSLM, optical: OpticalTable) -> None:
    """A pattern left on the SLM keeps steering light onto the sample: the safe state shows a blank (0 rad) one."""
    slm.show(np.full(slm.shape, math.pi))
    assert float(optical.shown.abs().max()) > 3
    slm.safe_state()
    assert float(optical.shown.abs().max()) == 0.0


def test_a_close_whose_safe_state_fails_still_disconnects_and_releases_the_link() -> None:
    """The safe state's error is raised, and the instrument is closed all the same: not left connected with the
    transport open, where a later call would act on a device the framework believes released."""
    failed = (b"SYST:ERR?", b'-221,"Settings conflict"')
    exchanges = [*awg_connected(output=b"1"), *awg_steps(b"0"), (b"OUTP1 OFF", None), failed, AWG_OK]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match="-221"):
            inst.close()
        assert not inst.connected and not inst.transport.is_open


def test_a_centred_waveform_is_refused_while_the_output_state_is_unknown() -> None:
    """After a failed switch the output may be on: a waveform the instrument can only scale about its centre (a
    step when armed) is refused before anything is sent, as with an output known to be on."""
    exchanges = [*awg_connected(), (b"OUTP1 ON", None), (b"SYST:ERR?", b'-221,"Settings conflict"'), AWG_OK]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match="-221"):
            inst.set_output(1, True)
        with pytest.raises(LimitError, match=r"switch the output off before loading it"):
            inst.load_waveform(1, [4.0, -4.0] * 4, 1e3)
        assert inst.waveform_samples == {} and inst.level_v[1] == 0.0


def test_a_flat_waveform_at_the_top_of_the_range_is_centred_within_it() -> None:
    """The smallest amplitude (1 mVpp into 50 Ω) about 5 V would reach past the instrument's 5 V: the window is
    moved inside the limits (offset 4.9995 V), not left at 5 V with its amplitude trimmed to nothing."""
    exchanges = [*awg_connected(), *awg_upload(np.ones(8, dtype=np.float32), b"1000", b"4.9995"), *awg_arm(b"0.001")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.full(8, 5.0), 1e3)
        assert inst.level_v[1] == 5.0 and inst.waveform_samples == {1: 8}


def test_an_upload_not_confirmed_by_opc_is_an_error_and_leaves_the_level_unknown() -> None:
    """``*OPC?`` answering other than 1 (a stale reply, another program) means the upload's end is not known."""
    data = np.linspace(0, 1, 8, dtype=np.float32)
    upload = awg_upload(data, b"1000", b"-1")
    at = upload.index((b"*OPC?", b"1"))
    exchanges = [*awg_connected(), *upload[:at], (b"*OPC?", b"0")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match=r"^Keysight33500B: reply '0' to '\*OPC\?' after uploading channel 1's "
                                              r"waveform is not 1"):
            inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        assert inst.level_v[1] is None and inst.waveform_samples == {}


class NaNAnalogInput(SimulatedAnalogInput):
    """A simulated DAQ input whose record holds one NaN, as a converter's overrange code decoded as NaN does."""

    def _fetch_hw(self):
        record = np.array(super()._fetch_hw(), dtype=np.float64)
        record[0, 1] = math.nan
        return record


def test_a_record_holding_a_nan_is_refused() -> None:
    """A NaN in a record would enter the training loss unnoticed: refused with the instrument named."""
    with NaNAnalogInput(OscillatorNetwork(seed=0), name="probes") as probes, \
            pytest.raises(DeviceError, match=r"^probes: record holds non-finite values"):
        probes.acquire(4, 1e3)


def test_a_live_arb_at_an_unknown_output_state_is_held_as_dc_before_the_memory_is_cleared() -> None:
    """After a failed switch the output may be on: before a new upload clears the waveform memory, the channel
    playing an arb is held at its level as DC, as a channel known to be on is."""
    data = np.linspace(0, 1, 8, dtype=np.float32)
    exchanges = [*awg_connected(), *awg_upload(data, b"1000", b"-1"), *awg_arm(b"4"),
                 (b"OUTP1 ON", None), (b"SYST:ERR?", b'-221,"Settings conflict"'), AWG_OK,
                 (b"SOUR1:FUNC DC;:SOUR1:VOLT:OFFS -1", None), AWG_OK,
                 *awg_upload(data, b"1000", b"-1"), *awg_arm(b"4")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        with pytest.raises(DeviceError, match="-221"):
            inst.set_output(1, True)
        inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        assert inst.level_v[1] == -1.0 and inst.waveform_samples == {1: 8}


def test_a_refused_dc_level_leaves_the_loaded_waveform_in_place(analog_output: SimulatedAnalogOutput) -> None:
    """Nothing changes when a level is refused: the waveform loaded before is still the one play() starts."""
    analog_output.load_waveform(1, np.full(8, 0.3), 1e3)
    with pytest.raises(LimitError):
        analog_output.set_voltage(1, 5.0)
    assert analog_output.waveform_samples == {1: 8} and analog_output.level_v[1] == 0.3
    analog_output.play()


@pytest.mark.parametrize("channel", [True, 1.0, 0])
def test_play_refuses_a_channel_that_does_not_exist(analog_output: SimulatedAnalogOutput, channel: object) -> None:
    """True and 1.0 compare equal to channel 1 but are not channel numbers, as everywhere else."""
    analog_output.load_waveform(1, np.full(8, 0.3), 1e3)
    with pytest.raises(LimitError, match="does not exist"):
        analog_output.play([channel])  # type: ignore[list-item]


#: A scripted reply that never comes because Ctrl-C arrives while it is awaited.
CTRL_C = b"<ctrl-c>"


class CtrlCTransport(ProtocolTransport):
    """A `ProtocolTransport` on which the read scripted to answer `CTRL_C` is interrupted, as by Ctrl-C."""

    def _read_raw(self) -> bytes:
        reply = super()._read_raw()
        if reply == CTRL_C + self.read_termination.encode():
            raise KeyboardInterrupt
        return reply


def _safe_state_interrupted(exchanges: list) -> tuple[Keysight33500B, KeyboardInterrupt]:
    """A 33500B connected over ``exchanges`` (`CtrlCTransport`, whose ``CTRL_C`` reply is a Ctrl-C) and put in its
    safe state, which raises the interrupt once every exchange is done: the driver, and the interrupt."""
    transport = CtrlCTransport(exchanges)
    transport.open()
    inst = Keysight33500B(transport, clock=VirtualClock())
    inst.connect()
    with pytest.raises(KeyboardInterrupt) as caught:
        inst.safe_state()
    transport.assert_done()
    return inst, caught.value


def test_ctrl_c_while_the_safe_state_reads_old_errors_still_reaches_the_safe_state() -> None:
    """The safe state first reads errors left in the queue; a Ctrl-C (or SIGTERM) then, the second of an impatient
    user, must not stop the way: the output is ramped to 0 V and switched off, and the interrupt raised after."""
    exchanges = [*awg_protocol.connected((b"DC", b"+1.000000000000000E+00", b"1"), idn=AWG_IDN),
                 (b"SYST:ERR?", CTRL_C),
                 (b"SOUR1:VOLT:OFFS 0", None),
                 (b"*ESE 1;*ESE?;*IDN?", b'+0,"No error"'), (None, b"1;" + AWG_IDN), (b"*ESE 0", None), AWG_OK,
                 (b"OUTP1 OFF", None), AWG_OK]
    inst, _ = _safe_state_interrupted(exchanges)
    assert inst.level_v == {1: 0.0} and inst.output_on == {1: False}


def test_ctrl_c_while_the_safe_state_reads_the_outputs_still_reaches_the_safe_state() -> None:
    """After the old errors, the safe state reads where the outputs are; a Ctrl-C then does not stop the way either:
    the output is ramped from the level the driver holds and switched off, and the interrupt raised after."""
    exchanges = [*awg_protocol.connected((b"DC", b"+1.000000000000000E+00", b"1"), idn=AWG_IDN), AWG_OK,
                 (awg_protocol.outputs_read(b"")[0], CTRL_C),
                 (b"SOUR1:VOLT:OFFS 0", None),
                 (b"*ESE 1;*ESE?;*IDN?", b"1;DC;+1.000000000000000E+00"), (None, b"1;" + AWG_IDN), (b"*ESE 0", None),
                 AWG_OK, (b"OUTP1 OFF", None), AWG_OK]
    inst, _ = _safe_state_interrupted(exchanges)
    assert inst.level_v == {1: 0.0} and inst.output_on == {1: False}


def test_ctrl_c_while_reading_old_errors_stays_an_interrupt_when_the_way_to_the_safe_state_then_fails() -> None:
    """After a Ctrl-C while the old errors are read, the instrument refuses a step of the way (an error queued by the
    ramp to 0 V): the output is still switched off, and what is raised is the interrupt, the failure as its
    cause, so that the run stops as the user asked rather than as after a device error."""
    exchanges = [*awg_protocol.connected((b"DC", b"+1.000000000000000E+00", b"1"), idn=AWG_IDN),
                 (b"SYST:ERR?", CTRL_C),
                 (b"SOUR1:VOLT:OFFS 0", None),
                 (b"*ESE 1;*ESE?;*IDN?", b'+0,"No error"'), (None, b"1;" + AWG_IDN), (b"*ESE 0", None),
                 (b"SYST:ERR?", b'-222,"Data out of range"'), AWG_OK,
                 (b"OUTP1 OFF", None), AWG_OK]
    inst, interrupt = _safe_state_interrupted(exchanges)
    assert isinstance(interrupt.__cause__, DeviceError) and "-222 Data out of range" in str(interrupt.__cause__)
    assert inst.level_v == {1: None} and inst.output_on == {1: False}


class BufferCamera(SimulatedCamera):
    """A bench camera whose driver hands over its frames in one float32 buffer, filled anew by every capture (as a
    camera SDK's is)."""

    def _capture_hw(self, n_frames: int):
        images, indices = super()._capture_hw(n_frames)
        buffer = getattr(self, "buffer", None)
        if buffer is None or buffer.shape != tuple(images.shape):
            buffer = self.buffer = np.empty(tuple(images.shape), dtype=np.float32)
        buffer[...] = np.asarray(images)
        return buffer, indices


def test_a_drivers_frames_are_handed_on_as_a_copy_so_the_next_capture_leaves_them_as_they_were() -> None:
    """The frames of a capture lay in the driver's buffer, which the next capture filled: the optical system's
    calibration, which subtracts a capture at half the exposure from one at the whole, found no signal, and said
    'the camera sees almost no light' of a lit camera. It now calibrates as on a camera that returns new frames."""
    calibrations = []
    for camera_class in (SimulatedCamera, BufferCamera):
        table = OpticalTable(seed=0)
        camera = camera_class(table, name="camera").connect()
        system = OpticalSystem({"slm": SimulatedSLM(table, name="slm").connect(), "camera": camera})
        calibrations.append(system.calibrate())
    assert calibrations[1] == calibrations[0]
    camera.set_trigger("software")  # the system left it on the SLM's triggers
    camera.set_exposure(1e-3)
    first = camera.capture(1).images
    kept = first.copy()
    camera.set_exposure(2e-3)
    camera.capture(1)
    np.testing.assert_array_equal(first, kept)


class ShortCamera(SimulatedCamera):
    """A simulated camera that returns one frame fewer than asked for, as a camera whose buffer overran does (or,
    with ``extra`` 1, one more)."""

    extra = -1

    def _capture_hw(self, n_frames: int):
        images, indices = super()._capture_hw(n_frames + 1)
        return images[:n_frames + self.extra], indices[:n_frames + self.extra]


def test_a_batch_missing_a_frame_is_refused_as_a_drop_and_one_with_a_frame_unasked_for_as_an_error(
        optical: OpticalTable) -> None:
    """N inputs need N frames: a short batch would pair the frames with the wrong inputs or drop the last. A frame
    lost at the end leaves no gap in the counter: too few frames are a drop as well, which a system may capture
    again; more frames than asked is the driver's error."""
    with ShortCamera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(FramesDropped, match=r"^camera: asked for 3 frame\(s\), got 2$"):
            camera.capture(3)
        camera.extra = 1
        with pytest.raises(DeviceError, match=r"^camera: asked for 3 frame\(s\), got 4 with 4 frame indices$") as error:
            camera.capture(3)
        assert not isinstance(error.value, FramesDropped)


class MisnumberingCamera(SimulatedCamera):
    """A simulated camera whose driver returns the frames of a capture with the counter indices ``keep`` of them
    (all frames by default) and the frames ``frames`` (all by default)."""

    keep: list[int] | None = None
    frames: list[int] | None = None

    def _capture_hw(self, n_frames: int):
        images, indices = super()._capture_hw(n_frames)
        indices = np.asarray(indices)
        return (images if self.frames is None else images[self.frames],
                indices if self.keep is None else indices[self.keep])


def test_frames_without_an_index_each_are_the_drivers_error_not_a_drop(optical: OpticalTable) -> None:
    """Three frames with two counter indices cannot be told apart from a gap: the frames were returned with indices
    that do not say which frame is which, a driver's error (not repeated as a drop), never frames to keep."""
    with MisnumberingCamera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        camera.keep = [0, 1]
        with pytest.raises(DeviceError, match=r"^camera: asked for 3 frame\(s\), got 3 with 2 frame indices$") as error:
            camera.capture(3)
        assert not isinstance(error.value, FramesDropped)


def test_a_frame_lost_mid_batch_is_said_where_it_was_lost(optical: OpticalTable) -> None:
    """A lost frame leaves both a gap in the counter and a short batch: the error names the gap (which frame was
    lost), as a frame lost at the end is named by the count. It is a `DeviceError` still, as it was: a program that
    catches a device's errors catches it."""
    with MisnumberingCamera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        camera.keep = camera.frames = [0, 2]
        with pytest.raises(DeviceError, match=r"^camera: frame\(s\) dropped after frame index 0 \(next index 2\)$") \
                as error:
            camera.capture(3)
        assert isinstance(error.value, FramesDropped)


def test_a_frame_counter_that_repeats_or_goes_back_is_refused(optical: OpticalTable) -> None:
    """Indices 0, 0, 1 or 1, 0, 2 are not three successive frames: the batch would be paired with the wrong inputs
    as surely as one with a gap."""
    with MisnumberingCamera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        for keep, (at, after) in (([0, 0, 1], (0, 0)), ([1, 0, 2], (4, 3))):  # the second capture's frames: 3, 4, 5
            camera.keep = keep
            with pytest.raises(DeviceError, match=rf"^camera: frame\(s\) dropped after frame index {at} \(next index "
                                                  rf"{after}\)$"):
                camera.capture(3)


class ShortRecordInput(SimulatedAnalogInput):
    """A simulated DAQ input whose record lacks its last sample, as a fetch cut short does."""

    def _fetch_hw(self):
        return np.asarray(super()._fetch_hw())[:, :-1]


def test_a_record_of_the_wrong_shape_is_refused() -> None:
    """A record shorter than armed is not padded or taken as it is: its samples no longer line up with the
    waveform that drove them."""
    with ShortRecordInput(OscillatorNetwork(seed=0), name="probes") as probes, \
            pytest.raises(DeviceError, match=r"^probes: record has shape \(\d+, 3\), expected \(\d+, 4\)"):
        probes.acquire(4, 1e3)


class FailingSetup(SimulatedCamera):
    """A simulated camera whose second exposure setting fails part-way, as a camera that times out does."""

    settings = 0

    def _set_exposure_hw(self, exposure_s: float) -> None:
        self.settings += 1
        if self.settings == 2:
            raise DeviceError(f"{self.name}: no reply to the exposure setting")
        super()._set_exposure_hw(exposure_s)


class FailingArm(SimulatedAnalogInput):
    """A simulated DAQ input whose second arm fails, as a DAQ that refuses a record does."""

    arms = 0

    def _arm_hw(self, n_samples: int, sample_rate_hz: float) -> None:
        self.arms += 1
        if self.arms == 2:
            raise DeviceError(f"{self.name}: the record was refused")
        super()._arm_hw(n_samples, sample_rate_hz)


def test_a_failed_exposure_setting_leaves_the_exposure_unknown_and_capture_waits(optical: OpticalTable) -> None:
    """After a setting that failed part-way the camera may hold either exposure: capture is refused until one is set,
    rather than scaled by the old one."""
    with FailingSetup(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(DeviceError, match="no reply"):
            camera.set_exposure(2e-3)
        assert camera.exposure_s is None
        with pytest.raises(DeviceError, match=r"exposure unknown; call set_exposure\(\) before capture\(\)"):
            camera.capture(1)


def test_a_failed_arm_leaves_no_earlier_record_to_fetch() -> None:
    """An arm the DAQ refused must not let fetch hand back the record armed before it, shaped as that one was."""
    with FailingArm(OscillatorNetwork(seed=0), name="probes") as probes:
        probes.arm(4, 1e3)
        with pytest.raises(DeviceError, match="the record was refused"):
            probes.arm(8, 1e3)
        with pytest.raises(DeviceError, match=r"^probes: nothing armed; call arm\(\) before fetch\(\)"):
            probes.fetch()


class NaNLevelOutput(SimulatedAnalogOutput):
    """A simulated DAQ output whose driver reads a level of NaN at connect (an overrange code decoded as NaN)."""

    def _read_level_hw(self, channel: int) -> float | None:
        return math.nan


def test_a_level_read_as_nan_is_unknown_and_the_safe_state_reaches_zero_and_off() -> None:
    """A NaN level was taken as known: the safe state failed at every call, and close() with it, saying 'put the
    instrument in its safe state first'. It is an unknown level: switched off first, then set to 0 V."""
    world = OscillatorNetwork(seed=0, config={"converters": {"settle_s": 0.0}})
    with NaNLevelOutput(world, name="out", limits={"voltage_v": {"max_step": 0.5}}) as output:
        assert output.level_v[1] is None
        output.safe_state()
        assert output.level_v == {1: 0.0} and output.output_on == {1: False}
    emulator = Keithley2450Emulator()
    with TcpServer(emulator) as server, \
            Keithley2450(VisaTransport(server.resource, timeout_s=2.0), name="smu", clock=VirtualClock(),
                         limits={"voltage_v": {"min": -5, "max": 5, "max_step": 0.5}}) as k:
        configured(k)
        k.set_level(1.0)
        k.level = math.nan  # as a driver that read NaN would leave it
        with pytest.raises(LimitError, match=r"^smu: the present level is unknown, so the sweep's first point"):
            k.sweep([1.0])
        k.safe_state()
        assert k.level == emulator.level["VOLT"] == 0.0 and not emulator.output


class GarbageRecordInput(SimulatedAnalogInput):
    """A simulated DAQ input whose driver returns ``record`` (a reply decoded wrongly) instead of volts."""

    record: object = None

    def _fetch_hw(self):
        return self.record


class BufferRecordInput(SimulatedAnalogInput):
    """A DAQ input whose driver reads every record into one buffer it keeps, as a DAQ library's stream reader does."""

    def _fetch_hw(self):
        record = super()._fetch_hw()
        self.buffer = getattr(self, "buffer", np.empty_like(record))
        self.buffer[...] = record
        return self.buffer


def test_a_drivers_record_is_handed_on_as_a_copy_so_the_next_record_leaves_it_as_it_was() -> None:
    """A record lay in the driver's buffer, which the next record filled: each record a caller kept changed to the
    last one taken."""
    world = OscillatorNetwork(seed=0)
    with SimulatedAnalogOutput(world, name="shaker") as shaker, BufferRecordInput(world, name="probes") as probes:
        shaker.set_voltage(1, 1.0)
        shaker.set_output(1, True)
        first = probes.acquire(64, 1e3)
        kept = first.copy()
        shaker.set_voltage(1, -1.0)
        assert not np.array_equal(probes.acquire(64, 1e3), kept)
        np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("record", [[[0.5, None, 0.1, 0.2]], np.array([["0.5"] * 4]), np.full((1, 4), 0.5 + 1j),
                                    np.full((1, 4), True)], ids=["None", "text", "complex", "true/false"])
def test_a_record_that_is_not_volts_is_the_drivers_error(record: object) -> None:
    """A record of None or text was numpy's TypeError from isfinite; a complex or true/false one was returned as
    volts."""
    with GarbageRecordInput(OscillatorNetwork(seed=0), name="probes") as probes:
        probes.record = np.broadcast_to(np.asarray(record, dtype=object if isinstance(record, list) else None),
                                        (probes.n_channels, 4))
        with pytest.raises(DeviceError, match=r"^probes: record holds \w+ values, not volts$"):
            probes.acquire(4, 1e3)


@pytest.mark.parametrize("indices", [[0, 1.5, 2], [0, math.nan, 2], None, ["0", "1", "2"], [2**63, 0, 1]],
                         ids=["fraction", "NaN", "None", "text", "beyond int64"])
def test_frame_indices_that_are_not_integers_are_the_drivers_error(optical: OpticalTable, indices: object) -> None:
    """Indices 0, 1.5, 2 were truncated to 0, 1, 2 and taken; NaN, None, text or an index beyond int64 was a
    ValueError, TypeError or OverflowError from numpy."""

    class Camera(SimulatedCamera):
        def _capture_hw(self, n_frames: int):
            return super()._capture_hw(n_frames)[0], indices

    with Camera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(DeviceError, match=r"^camera: frame indices .* are not integers$") as error:
            camera.capture(3)
        assert not isinstance(error.value, FramesDropped)


def test_a_camera_without_a_trigger_input_takes_software_triggering_and_refuses_external() -> None:
    """A camera whose driver writes no trigger hook captures at once: set_trigger("software"), the mode it is in,
    was refused as "not supported by this camera"; "external" is refused and leaves it in software mode."""

    class Webcam(Camera):
        shape, bit_depth = (4, 6), 8

        def _identify_hw(self) -> str:
            return "webcam"

        def _set_exposure_hw(self, exposure_s: float) -> None:
            pass

        def _capture_hw(self, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((n_frames, *self.shape)), np.arange(n_frames)

    with Webcam(name="webcam") as camera:
        camera.set_trigger("software")
        with pytest.raises(DeviceError, match=r"^webcam: trigger mode 'external' is not supported by this camera$"):
            camera.set_trigger("external")
        assert camera.trigger == "software"
        camera.set_exposure(1e-3)
        assert camera.capture(2).images.shape == (2, 4, 6)


def test_a_trigger_or_source_mode_given_as_an_array_is_refused_in_one_line(camera: SimulatedCamera) -> None:
    """`x not in ("software", "external")` compared an array element-wise: numpy's ValueError 'The truth value of an
    array ... is ambiguous' instead of the refusal."""
    with pytest.raises(LimitError, match=r"^camera: trigger must be 'software' or 'external', got array"):
        camera.set_trigger(np.array(["software", "external"]))  # type: ignore[arg-type]
    with pytest.raises(LimitError, match=r"^smu: source mode must be 'voltage' or 'current', got array"):
        SourceMeter._limit_of(Keithley2450(ProtocolTransport([]), name="smu"),
                              np.array(["voltage", "current"]))  # type: ignore[arg-type]



class BareSmu(SourceMeter):
    """A source-measure unit that does what it is told and records whether its output is on."""

    def _identify_hw(self) -> str:
        return "bare"

    def _configure_hw(self, mode, compliance, nplc) -> None:
        pass

    def _set_level_hw(self, level: float) -> None:
        pass

    def _set_output_hw(self, enabled: bool) -> None:
        self.relay = enabled

    def _measure_hw(self) -> Readings:
        return Readings(np.zeros(1), np.zeros(1), np.zeros(1, dtype=bool))


def test_a_drivers_readings_are_handed_on_as_copies_so_the_next_reading_leaves_them_as_they_were() -> None:
    """Readings lay in the arrays the driver returned: a driver that reads into buffers it keeps changed every
    reading a caller kept to the last one taken."""
    class BufferedSmu(BareSmu):
        voltage, current, limited = np.zeros(1), np.zeros(1), np.zeros(1, dtype=bool)

        def _set_level_hw(self, level: float) -> None:
            self.voltage[0], self.current[0] = level, level / 1e3  # a 1 kΩ load

        def _measure_hw(self) -> Readings:
            return Readings(self.voltage, self.current, self.limited)

    with BufferedSmu(name="smu") as smu:
        smu.configure("voltage", 1e-2)
        smu.set_output(True)
        smu.set_level(1.0)
        first = smu.measure()
        smu.set_level(2.0)
        assert smu.measure().voltage_v[0] == 2.0
        assert (first.voltage_v[0], first.current_a[0]) == (1.0, 1e-3)


@pytest.mark.parametrize(("reading", "refusal"), [
    ((0.0, 0.0), r"^smu: _measure_hw returned tuple, not Readings; fix the driver's _measure_hw$"),
    (Readings(np.zeros(1), np.zeros(3), np.zeros(1, dtype=bool)),
     r"^smu: _measure_hw returned readings of 1, 3, 1 points \(voltage, current, compliance\), expected 1 each; fix "
     r"the driver's _measure_hw$"),
    (Readings(np.zeros(1), np.array(["n/a"]), np.zeros(1, dtype=bool)),
     r"^smu: _measure_hw returned readings that are not numbers; fix the driver's _measure_hw$"),
    (Readings(0.0, 0.0, False),
     r"^smu: _measure_hw returned readings of scalar, scalar, scalar points \(voltage, current, compliance\), "
     r"expected 1 each; fix the driver's _measure_hw$"),
])
def test_a_drivers_reading_that_is_not_one_point_is_refused_naming_it(reading: object, refusal: str) -> None:
    class Misreading(BareSmu):
        def _measure_hw(self) -> Readings:
            return reading  # type: ignore[return-value]

    with Misreading(name="smu") as smu:
        smu.configure("voltage", 1e-3)
        with pytest.raises(DeviceError, match=refusal):
            smu.measure()
        smu.set_output(True)
        with pytest.raises(DeviceError, match=refusal):  # a sweep point by point, of a driver without list sweeps
            smu.sweep([0.0, 0.1])


def test_a_sweep_whose_currents_miss_a_point_is_refused_naming_the_driver() -> None:
    class ShortSweep(BareSmu):
        def _sweep_hw(self, levels, delay_s) -> Readings:
            return Readings(np.zeros(len(levels)), np.zeros(len(levels) - 1), np.zeros(len(levels), dtype=bool))

    with ShortSweep(name="smu") as smu:
        smu.configure("voltage", 1e-3)
        smu.set_output(True)
        with pytest.raises(DeviceError, match=r"^smu: _sweep_hw returned readings of 3, 2, 3 points .*expected 3 "
                                              r"each; fix the driver's _sweep_hw$"):
            smu.sweep([0.0, 0.1, 0.2])


@pytest.mark.parametrize(("identity", "kind"), [(None, "None"), (b"ACME,SMU1,0001,1.0", r"b'ACME,SMU1,0001,1\.0'")])
def test_an_identity_that_is_not_text_is_refused_at_connect_naming_the_hook(identity: object, kind: str) -> None:
    """A `_identify_hw` that leaves out its return (None) connected, and identify() and `hil devices` then ended in a
    bare AssertionError."""

    class Unidentified(BareSmu):
        def _identify_hw(self) -> str:
            return identity  # type: ignore[return-value]

    smu = Unidentified(name="smu")
    with pytest.raises(DeviceError, match=rf"^smu: Unidentified\._identify_hw\(\) returned {kind}, not the identity; "
                                          r"return the instrument's identity as text \(maker, model, serial, "
                                          r"firmware\)$"):
        smu.connect()
    assert not smu.connected and smu.identity is None


def test_a_zero_compliance_and_switching_on_at_a_level_outside_the_limits_are_refused() -> None:
    """Two checks of the base class no test held (removing either passed): a compliance of 0, and an output switched
    on while the recorded level lies outside the limits (left by a session with wider ones)."""
    with BareSmu(name="smu", limits={"voltage_v": {"min": -5, "max": 5}}) as k:
        with pytest.raises(LimitError, match=r"^smu: compliance must be non-zero$"):
            k.configure("voltage", 0.0)
        k.configure("voltage", 1e-3)
        k.level = 7.0  # as read at connect after a session with wider limits
        with pytest.raises(LimitError, match=r"^smu: the voltage source is at 7 V, outside the limit -5\.\.5 V"):
            k.set_output(True)
        assert k.output_on is False and k.relay is False


def test_a_nan_level_a_driver_left_is_unknown_to_a_waveform_load_and_to_the_safe_state() -> None:
    """A level of NaN (as a driver that read one back would leave it) is unknown everywhere, not only at connect: a
    waveform loaded on the live channel may not start at any voltage (abs(first - NaN) > max_step is false, so the
    jump passed), and the safe state switches the channel off before setting it to rest (a ramp from NaN is refused,
    so it failed)."""
    world = OscillatorNetwork(seed=0, config={"converters": {"settle_s": 0.0}})
    with NaNLevelOutput(world, name="out", limits={"voltage_v": {"max_step": 0.5}}) as output:
        output.safe_state()  # at 0 V, known
        output.set_output(1, True)
        output.level_v[1] = math.nan
        with pytest.raises(LimitError, match=r"put the instrument in its safe state first$"):
            output.load_waveform(1, np.full(8, 2.0), 1e3)
        assert 1 not in output.waveform_samples
        output.level_v[1] = math.nan
        output.safe_state()
        assert output.level_v == {1: 0.0} and output.output_on == {1: False}


class RecordingSmu(BareSmu):
    """A `BareSmu` that records what it sends."""

    def __init__(self, **common) -> None:
        super().__init__(**common)
        self.sent: list[tuple[str, object]] = []

    def _set_level_hw(self, level: float) -> None:
        self.sent.append(("level", level))

    def _set_output_hw(self, enabled: bool) -> None:
        super()._set_output_hw(enabled)
        self.sent.append(("output", enabled))


@pytest.mark.parametrize("mode", ["voltage", "current"], ids=["the same mode", "another mode"])
def test_configure_at_a_nan_level_switches_the_output_off_then_sets_rest(mode: str) -> None:
    """A level of NaN is unknown to configure: the live output is switched off before the level goes to rest, in the
    same mode (taken as known, nothing was done: the output stayed on at NaN) as in another (a ramp from NaN)."""
    with RecordingSmu(name="smu", limits={"voltage_v": {"min": -5, "max": 5, "max_step": 0.5}}) as k:
        k.configure("voltage", 1e-3)
        k.set_output(True)
        k.set_level(1.0)
        k.level = math.nan  # as a driver that read NaN would leave it
        k.sent.clear()
        k.configure(mode, 1e-3 if mode == "voltage" else 1.0)
        assert k.sent == [("output", False), ("level", 0.0)]
        assert k.level == 0.0 and k.output_on is False


@pytest.mark.parametrize("images", [None, 7.0, "frames", np.zeros((16, 16))], ids=["None", "number", "text", "2-D"])
def test_frames_that_are_not_a_batch_of_images_are_the_drivers_error(optical: OpticalTable, images: object) -> None:
    """None, a number or text from a driver's capture hook was a TypeError from len(); one frame without its frame
    axis (rows × cols) was counted by its rows."""

    class Camera(SimulatedCamera):
        def _capture_hw(self, n_frames: int):
            return images, super()._capture_hw(n_frames)[1]

    with Camera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(DeviceError, match=r"^camera: the frames are .*, not an array of frames × rows × columns$"):
            camera.capture(1)


@pytest.mark.parametrize("indices", [[[0], [1], [2]], [0, [1, 2], 3]], ids=["2-D", "ragged"])
def test_frame_indices_not_in_one_flat_list_are_the_drivers_error(optical: OpticalTable, indices: object) -> None:
    """Indices of one per frame but in a column (3 × 1) passed the count check and went on as a 2-D array; a ragged
    list was numpy's ValueError, not the driver's error."""

    class Camera(SimulatedCamera):
        def _capture_hw(self, n_frames: int):
            return super()._capture_hw(n_frames)[0], indices

    with Camera(optical, name="camera") as camera:
        camera.set_exposure(1e-3)
        with pytest.raises(DeviceError, match=r"^camera: frame indices .* are not integers$"):
            camera.capture(3)


def test_a_ragged_record_is_the_drivers_error() -> None:
    """A record whose channels have different lengths was numpy's ValueError from asarray, not the driver's error."""
    with GarbageRecordInput(OscillatorNetwork(seed=0), name="probes") as probes:
        probes.record = [[0.5] * 4] + [[0.5] * 3] * (probes.n_channels - 1) if probes.n_channels > 1 else [[0.5], 0.1]
        with pytest.raises(DeviceError, match=r"^probes: record is no array of volts"):
            probes.acquire(4, 1e3)
