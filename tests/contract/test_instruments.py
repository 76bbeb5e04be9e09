"""Every registered instrument class runs its capability's contract: drivers against their emulators."""

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

from hil import testing
from hil.registry import BUILTIN, TARGET, available
from hil.transport import VisaTransport


class TestKeysight33500B(testing.AnalogOutputContract):
    registry_name = "keysight_33500b"

    @pytest.fixture
    def instrument(self, tcp_server):
        from drivers.keysight_33500b import Keysight33500B
        from simulators.emulators.keysight_33500b import Keysight33500BEmulator

        server = tcp_server(Keysight33500BEmulator())
        with Keysight33500B(VisaTransport(server.resource), name="awg",
                            limits={"voltage_v": {"min": -2, "max": 2, "max_step": 0.5}}) as awg:
            yield awg


class TestKeithley2450(testing.SourceMeterContract):
    registry_name = "keithley_2450"

    @pytest.fixture
    def instrument(self, tcp_server):
        from drivers.keithley2450 import Keithley2450
        from simulators.emulators.keithley2450 import Keithley2450Emulator

        server = tcp_server(Keithley2450Emulator(load_ohm=1e3))
        with Keithley2450(VisaTransport(server.resource), name="smu",
                          limits={"voltage_v": {"min": -5, "max": 5, "max_step": 0.5},
                                  "current_a": {"min": -0.01, "max": 0.01}}) as smu:
            yield smu


def _concrete(cls: type) -> list[type]:
    found = [cls] if "registry_name" in vars(cls) else []
    return found + [c for sub in cls.__subclasses__() for c in _concrete(sub)]


def test_every_registered_instrument_of_hil_has_a_contract_test() -> None:
    """Each of this project's instrument classes (other packages test theirs with `hil.testing`), and no contract
    test names a class that is not registered (a contract of a class named ``module:Class``, as a user's driver
    is, checks that name itself)."""
    for path in Path(__file__).parent.glob("test_*.py"):  # contract classes of modules not collected in this run
        importlib.import_module(f"tests.contract.{path.stem}")
    covered = {cls.registry_name for cls in _concrete(testing.InstrumentContract)}
    missing = set(BUILTIN["instruments"]) - covered
    assert not missing, f"registered without a contract test: {sorted(missing)}"
    unregistered = sorted(name for name in covered - set(available()) if not TARGET.fullmatch(name))
    assert not unregistered, f"contract tests of unregistered names: {unregistered}"


def _broken_2450(breakage: str) -> type:
    """A Keithley 2450 driver with one mistake a new driver could make, which only a reading can reveal."""
    from drivers.keithley2450 import Keithley2450
    from hil.instruments import Readings

    class Broken(Keithley2450):
        def _measure_hw(self) -> Readings:
            readings = super()._measure_hw()
            if breakage == "swapped":
                return Readings(readings.current_a, readings.voltage_v, readings.in_compliance)
            if breakage == "compliance never reported":
                return Readings(readings.voltage_v, readings.current_a, np.zeros(1, dtype=bool))
            return readings

        def _set_level_hw(self, level: float) -> None:
            super()._set_level_hw(abs(level) if breakage == "sign lost" else level)

        def _check_unchanged(self, replies: list[str], command: str, what: str, level: float | None) -> None:
            if breakage != "sign lost":  # a new driver reads no level back: its sign lost is the contract's to find
                super()._check_unchanged(replies, command, what, level)

        def _set_output_hw(self, enabled: bool) -> None:
            if enabled or breakage != "output never switched off":
                super()._set_output_hw(enabled)

    return Broken


@pytest.mark.parametrize(("breakage", "load_ohm", "test"), [
    ("swapped", 1e3, "test_the_voltage_source_holds_its_level_unless_in_compliance"),
    ("sign lost", 1e3, "test_the_voltage_source_holds_its_level_unless_in_compliance"),
    ("swapped", 1e3, "test_the_current_source_holds_its_level_unless_in_compliance"),
    ("compliance never reported", 1e4, "test_the_current_source_holds_its_level_unless_in_compliance"),
    ("output never switched off", 1e3, "test_after_close_the_instrument_is_found_at_zero_and_off"),
])
def test_the_source_meter_contract_refuses_a_driver_that_misleads(tcp_server, breakage, load_ohm, test) -> None:
    """The contract fails a driver whose readings contradict a source-measure unit's physics, or whose safe state is
    only recorded, and passes the same driver, unbroken, on the same emulated load (10 kΩ puts the current source in
    compliance)."""
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    limits = {"voltage_v": {"min": -5, "max": 5, "max_step": 0.5}, "current_a": {"min": -0.01, "max": 0.01}}
    contract = testing.SourceMeterContract()
    for cls, passes in ((_broken_2450("none"), True), (_broken_2450(breakage), False)):
        server = tcp_server(Keithley2450Emulator(load_ohm=load_ohm))
        with cls(VisaTransport(server.resource), name="smu", limits=limits) as smu:
            if passes:
                getattr(contract, test)(smu)
            else:
                with pytest.raises(AssertionError):
                    getattr(contract, test)(smu)


@pytest.mark.parametrize("breakage", ["output never switched off", "level never sent back to 0"])
def test_the_analog_output_contract_refuses_a_safe_state_only_recorded(tcp_server, breakage) -> None:
    """Connected again after close, the output is found off and at 0 V; an unbroken driver passes the same test."""
    from drivers.keysight_33500b import Keysight33500B
    from simulators.emulators.keysight_33500b import Keysight33500BEmulator

    class Broken(Keysight33500B):
        def _set_output_hw(self, channel: int, enabled: bool) -> None:
            if enabled or breakage != "output never switched off":
                super()._set_output_hw(channel, enabled)

        def _set_level_hw(self, channel: int, voltage_v: float) -> None:
            if voltage_v != 0 or breakage != "level never sent back to 0":
                super()._set_level_hw(channel, voltage_v)

    contract = testing.AnalogOutputContract()
    for cls, passes in ((Keysight33500B, True), (Broken, False)):
        server = tcp_server(Keysight33500BEmulator())
        with cls(VisaTransport(server.resource), name="awg", limits={"voltage_v": {"min": -2, "max": 2}}) as awg:
            if passes:
                contract.test_after_close_the_instrument_is_found_at_zero_and_off(awg)
            else:
                with pytest.raises(AssertionError):
                    contract.test_after_close_the_instrument_is_found_at_zero_and_off(awg)


def test_the_source_meter_contract_sweeps_within_a_ramp_rate_under_test(tcp_server) -> None:
    """Limits under test with a ``ramp_rate`` (as a bench's may have) are kept by the contract's own sweep: it spaces
    the points as the limit asks, rather than failing a sound driver with a sweep the limits refuse."""
    from drivers.keithley2450 import Keithley2450
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    limits = {"voltage_v": {"min": -5, "max": 5, "max_step": 0.5, "ramp_rate": 20.0},
              "current_a": {"min": -0.01, "max": 0.01}}
    server = tcp_server(Keithley2450Emulator(load_ohm=1e3))
    with Keithley2450(VisaTransport(server.resource), name="smu", limits=limits) as smu:
        testing.SourceMeterContract().test_sweep_returns_one_reading_per_level(smu)


def test_the_source_meter_contract_takes_the_rest_of_a_current_limit_that_excludes_zero(tcp_server) -> None:
    """Limits under test whose current excludes 0 (a bench that must keep a bias current) rest the current source
    at their value nearest 0 (`Limit.rest`), as the contract's other safe-state checks expect: its current-mode
    check asked for 0 and failed a sound driver."""
    from drivers.keithley2450 import Keithley2450
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    limits = {"voltage_v": {"min": -5, "max": 5, "max_step": 0.5}, "current_a": {"min": 1e-4, "max": 0.01}}
    server = tcp_server(Keithley2450Emulator(load_ohm=1e3))
    with Keithley2450(VisaTransport(server.resource), name="smu", limits=limits) as smu:
        testing.SourceMeterContract().test_current_mode_holds_the_voltage_compliance(smu)
        assert smu.level == 1e-4


def test_the_analog_contracts_play_and_record_within_a_sample_rate_limit_under_test() -> None:
    """An analog output or input whose slowest sample rate is above 1 kHz (a fast digitizer, or limits narrowed to
    the bench's) passes its contract: the contracts play and record at a rate its ``sample_rate_hz`` limit allows."""
    from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
    from simulators.resistive import ResistiveNetwork

    world = ResistiveNetwork(preset="realistic", seed=0)
    limits = {"sample_rate_hz": {"min": 1e4, "max": 1e5}}
    with SimulatedAnalogOutput(world, name="daq_out", limits={**limits, "voltage_v": {"min": -2.5, "max": 2.5}}) \
            as out, SimulatedAnalogInput(world, name="daq_in", limits=limits) as reader:
        testing.AnalogOutputContract().test_waveform_load_and_play(out)
        testing.AnalogInputContract().test_acquire_has_the_asked_shape(reader)


def test_the_analog_output_contract_keeps_a_unipolar_voltage_limit() -> None:
    """An output limited to 0..2 V (a unipolar DAC, or a bench that must never see a negative level) passes the
    waveform test: the contract's waveform spans half of each side of the limit, not ±half its maximum."""
    from simulators.analog import SimulatedAnalogOutput
    from simulators.resistive import ResistiveNetwork

    world = ResistiveNetwork(preset="realistic", seed=0)
    with SimulatedAnalogOutput(world, name="daq_out", limits={"voltage_v": {"min": 0, "max": 2}}) as out:
        testing.AnalogOutputContract().test_waveform_load_and_play(out)


def test_the_analog_output_contract_rests_within_a_limit_that_excludes_zero() -> None:
    """A bench that must never see 0 V (0.5..2 V): the safe state rests at 0.5 V, and the contract expects that."""
    from simulators.analog import SimulatedAnalogOutput
    from simulators.resistive import ResistiveNetwork

    contract = testing.AnalogOutputContract()
    world = ResistiveNetwork(preset="realistic", seed=0)
    with SimulatedAnalogOutput(world, name="daq_out", limits={"voltage_v": {"min": 0.5, "max": 2}}) as out:
        contract.test_safe_state_is_zero_volts_and_off(out)
        contract.test_bad_levels_are_refused_and_nothing_changes(out, math.nan)
        contract.test_after_close_the_instrument_is_found_at_zero_and_off(out)


def test_the_camera_contract_exposes_within_a_narrow_exposure_limit() -> None:
    """A camera whose exposure limit spans less than a decade (1..5 ms, say) passes its contract: the contract
    exposes ten times the shortest exposure only where the limit allows it."""
    from simulators.optical import OpticalTable, SimulatedCamera

    camera = SimulatedCamera(OpticalTable(seed=1), name="camera", limits={"exposure_s": {"min": 1e-3, "max": 5e-3}})
    with camera:
        testing.CameraContract().test_capture_returns_consecutive_frames(camera)
        testing.CameraContract().test_aoi_capture_has_the_aoi_shape_and_full_frame_returns(camera)


def test_the_slm_contract_shows_patterns_within_a_narrowed_phase_limit() -> None:
    """An SLM whose phase limit is narrowed (0.5..3 rad: a lookup table calibrated over part of the range) passes
    its contract: the patterns it shows lie within the limit."""
    from simulators.optical import OpticalTable, SimulatedSLM

    with SimulatedSLM(OpticalTable(seed=1), name="slm", limits={"phase_rad": {"min": 0.5, "max": 3.0}}) as slm:
        testing.SpatialLightModulatorContract().test_show_and_sequence_accept_patterns_in_range(slm)


@pytest.mark.parametrize(("saturation_dn", "passes"), [(None, True), (1542.0, True), (5000.0, True), (0.0, False)])
def test_the_camera_contract_checks_the_full_scale_a_camera_reports(saturation_dn, passes) -> None:
    """A saturation level above the ADC's top code leaves the top code as full scale; none at all is refused."""
    from simulators.optical import OpticalTable, SimulatedCamera

    with SimulatedCamera(OpticalTable(seed=1), name="camera") as camera:
        camera.saturation_dn = saturation_dn
        if passes:
            testing.CameraContract().test_full_scale_lies_within_the_adc_codes(camera)
        else:
            with pytest.raises(AssertionError):
                testing.CameraContract().test_full_scale_lies_within_the_adc_codes(camera)


def test_a_registry_name_for_another_class_says_which_class_each_is() -> None:
    """The contract's registry check says what it compared (a plugin's suite need not rewrite hil's assertions)."""
    from simulators.analog import SimulatedAnalogOutput
    from simulators.oscillator import OscillatorNetwork

    contract = testing.AnalogOutputContract()
    contract.registry_name = "simulated_analog_input"
    with SimulatedAnalogOutput(OscillatorNetwork(preset="ideal"), name="ao") as output, \
            pytest.raises(AssertionError, match=r"registry_name 'simulated_analog_input' names simulators\.analog\."
                                                r"SimulatedAnalogInput, but the instrument fixture built a "
                                                r"simulators\.analog\.SimulatedAnalogOutput"):
        contract.test_is_the_class_registered_under_its_name(output)


def test_a_registry_name_of_a_parent_class_is_not_the_class_under_test() -> None:
    """A driver subclassing another (a vendor's model of a family) passed the check with its parent's name, which a
    lab would load instead of the class the contract tested."""
    from drivers.keithley2450 import Keithley2450

    class Keithley2450Variant(Keithley2450):
        pass

    contract = testing.SourceMeterContract()
    contract.registry_name = "keithley_2450"
    instrument = Keithley2450Variant.__new__(Keithley2450Variant)  # the check reads its type alone
    with pytest.raises(AssertionError, match=r"registry_name 'keithley_2450' names drivers\.keithley2450\."
                                             r"Keithley2450, but the instrument fixture built a .*Keithley2450Variant"):
        contract.test_is_the_class_registered_under_its_name(instrument)
