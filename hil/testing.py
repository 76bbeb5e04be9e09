"""A test kit for instrument classes, in the manner of python-microscope's ``testsuite``: contract mixins shared
by every instrument class, real and simulated, and pytest fixtures that serve emulators. It needs pytest (the
``dev`` extra), and is what a package adding its own device tests with. Its ``conftest.py`` (at the root of its
tests) loads this module as a pytest plugin, which makes the fixtures `tcp_server` and `pty_server` available::

    pytest_plugins = ["hil.testing"]

and a test module subclasses the capability's contract::

    import pytest

    from acme_hil.emulator import AcmeEmulator
    from acme_hil.smu import AcmeSmu
    from hil.testing import SourceMeterContract
    from hil.transport import VisaTransport


    class TestAcmeSmu(SourceMeterContract):
        registry_name = "acme_hil.smu:AcmeSmu"  # as lab.yaml names it ("acme_smu" once registered): checked

        @pytest.fixture
        def instrument(self, tcp_server):  # connected, with the limits under test
            with AcmeSmu(VisaTransport(tcp_server(AcmeEmulator()).resource), name="smu",
                         limits={"voltage_v": {"min": -5, "max": 5, "max_step": 0.5}}) as smu:
                yield smu

A concrete test class provides that ``instrument`` fixture and inherits the tests of its capability.

Byte-exact protocol tests, which pin down the exact bytes a driver sends and what it makes of the replies, use
`expected_protocol` (a `ProtocolTransport` playing a scripted exchange), in the manner of pymeasure's::

    from hil.testing import expected_protocol

    def test_configure_sends_the_compliance_last():
        with expected_protocol(lambda transport: AcmeSmu(transport, name="smu"),
                               [(b"*CLS", None), (b"*IDN?", b"ACME,SMU1,0,1"), ...]) as smu:
            smu.connect()
            ...

A package adding a physical system tests it likewise with `PhysicalSystemContract`, on simulated worlds of its bench
(its docstring has the example), and a simulated world of its own with `WorldContract`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pytest
import torch
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hil.errors import ConfigError, DeviceError, LimitError, TransportError
from hil.instruments import (
    AnalogInput,
    AnalogOutput,
    Camera,
    CrossbarArray,
    Readings,
    SourceMeter,
    SpatialLightModulator,
)
from hil.registry import instrument_class, subclass_of
from hil.systems.base import PhysicalSystem
from hil.transport import Transport, _Unterminated, definite_block

if TYPE_CHECKING:
    from simulators.emulators.server import PtyServer, TcpServer

S = TypeVar("S", "TcpServer", "PtyServer")


def _serving(server_class: type[S]) -> Iterator[Callable[..., S]]:
    """The body of `tcp_server` and `pty_server`: a factory serving emulators with ``server_class`` until the test
    ends, then each stopped, and the test failed where an emulator raised or answered other than bytes (the server
    stopped answering then, `TcpServer.failure`, and the driver's error, a timeout or a lost link, does not say
    why)."""
    servers: list[S] = []

    def start(emulator: object, **options: object) -> S:
        server = server_class(emulator, **options).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    found = next((server.failure for server in servers if server.failure), None)
    if found:
        pytest.fail(f"the emulator stopped answering when {found}; the driver's timeouts and errors in this test "
                    "follow from it", pytrace=False)


@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    """A factory: ``tcp_server(emulator)`` serves it on a free port of 127.0.0.1 until the test ends. For a driver
    whose ``transport_options`` end lines otherwise than with ``\\n``, pass the server the same line endings,
    ``terminator=b"\\r"`` (its replies) and ``input_terminator=b"\\r"`` (the commands it reads), and open the
    transport with the driver's ``transport_options``. An emulator that raises, or answers other than bytes, stops
    answering that client (its link is dropped); the test then fails at teardown, naming the message, the error and
    where it was raised."""
    from simulators.emulators.server import TcpServer

    yield from _serving(TcpServer)


@pytest.fixture
def pty_server() -> Iterator[Callable[..., PtyServer]]:
    """A factory: ``pty_server(emulator)`` serves it on a new pseudo-terminal pair until the test ends; it takes
    the line endings as `tcp_server` does, and likewise fails a test whose emulator raised."""
    from simulators.emulators.server import PtyServer

    yield from _serving(PtyServer)


# -- byte-exact protocol tests -----------------------------------------------------------------------------------
#: One exchange on the wire: what the driver writes and what the instrument replies, without terminators; None
#: for no write (a read only) or no reply.
Exchange = tuple[bytes | None, bytes | None]
#: A scripted reply that never comes: the read times out.
TIMED_OUT = b"<no reply: timeout>"
T = TypeVar("T")


class ProtocolTransport(Transport):
    """A transport that checks every write against the next expected one and returns the scripted replies; it
    fails on the first byte that differs, and `assert_done` on an exchange left over."""

    def __init__(self, exchanges: Sequence[Exchange], resource: str = "protocol-test"):
        super().__init__(resource, timeout_s=1.0)
        self.exchanges = list(exchanges)
        self.position = 0
        self._pending_reply: bytes | None = None

    def _classify(self, error: Exception) -> str:
        return "timeout" if isinstance(error, TimeoutError) else "error"

    @contextlib.contextmanager
    def _translate(self, command: str) -> Iterator[None]:
        """As a transport's, except that a byte that differs from the script stays the test's `AssertionError`,
        rather than a `TransportError` telling the test's author to check the cable."""
        try:
            with super()._translate(command):
                yield
        except TransportError as error:
            if isinstance(error.__cause__, AssertionError):
                raise error.__cause__ from None
            raise

    def _apply_timeout(self) -> None:
        """Scripted replies come at once."""

    def _claim_key(self) -> None:
        """No instrument to hold: the script is this transport's own."""
        return None

    def _open_raw(self) -> None:
        """Nothing to open: the wire is the list of exchanges."""

    def _close_raw(self) -> None:
        """Nothing to close."""

    def _next(self) -> Exchange:
        if self.position >= len(self.exchanges):
            raise AssertionError(f"unexpected traffic after the last of {len(self.exchanges)} exchanges")
        exchange = self.exchanges[self.position]
        self.position += 1
        return exchange

    def _write_raw(self, data: bytes) -> None:
        assert self._pending_reply is None, f"write {data!r} while reply {self._pending_reply!r} was unread"
        expected_write, reply = self._next()
        sent = data[: -len(self.write_termination)] if data.endswith(self.write_termination.encode()) else data
        assert sent == expected_write, f"exchange {self.position - 1}: expected {expected_write!r}, sent {sent!r}"
        self._pending_reply = reply

    def _read_raw(self) -> bytes:
        if self._pending_reply is None:
            expected_write, reply = self._next()
            assert expected_write is None, f"read while {expected_write!r} was expected to be written"
            if reply is None:
                raise AssertionError(f"exchange {self.position - 1} scripts neither a write nor a reply")
        else:
            reply, self._pending_reply = self._pending_reply, None
        if reply == TIMED_OUT:
            raise TimeoutError(f"exchange {self.position - 1}: scripted timeout")
        return reply + self.read_termination.encode()

    def _write_binary_raw(self, command: str, values: np.ndarray, datatype: str, big_endian: bool) -> None:
        self._write_raw(command.encode() + definite_block(values, datatype, big_endian)
                        + self.write_termination.encode())

    def _query_binary_raw(self, command: str) -> bytes:
        """The scripted reply read as the transports read a block (`Transport._block_header`, `_block_end`): one
        longer than its header says is refused, and one shorter is a timeout, as the rest never comes."""
        self._write_raw((command + self.write_termination).encode())
        reply = self._read_raw()
        offset, count = self._block_header(command, reply)
        if len(reply) < offset + count + len(self.read_termination):
            raise _Unterminated(reply)
        return self._block_end(command, reply[offset:offset + count], reply[offset + count:])

    def assert_done(self) -> None:
        assert self._pending_reply is None, f"reply {self._pending_reply!r} was never read"
        left = self.exchanges[self.position:]
        assert not left, f"{len(left)} exchange(s) never happened, first: {left[0]!r}"


@contextlib.contextmanager
def expected_protocol(factory: Callable[[ProtocolTransport], T], exchanges: Sequence[Exchange]) -> Iterator[T]:
    """Build an instrument on a `ProtocolTransport` that plays ``exchanges``; on exit, require all were used."""
    transport = ProtocolTransport(exchanges)
    transport.open()
    yield factory(transport)
    transport.assert_done()


def block(values: Sequence[float] | np.ndarray, datatype: str = "f", big_endian: bool = False) -> bytes:
    """The IEEE 488.2 definite-length block of ``values``, for writing expected exchanges."""
    return definite_block(values, datatype, big_endian)


# -- contracts ---------------------------------------------------------------------------------------------------
def _sample_rate_hz(instrument: AnalogOutput | AnalogInput) -> float:
    """1 kHz, or the rate nearest to it that the instrument's ``sample_rate_hz`` limit allows."""
    limit = instrument.limits["sample_rate_hz"]
    return min(max(1e3, limit.min), limit.max)


def _check_registered(contract: object, built: object, named_by: Callable[[str], type], what: str,
                      fixture: str) -> None:
    """Fail unless the contract's ``registry_name`` (``what``, as lab.yaml gives it) names ``built``'s class, as
    ``named_by`` loads it; ``fixture`` is what built it."""
    cls = type(built)
    name = getattr(contract, "registry_name", None)
    if name is None:
        pytest.fail(f"{type(contract).__name__} sets no registry_name; set it to {what} as lab.yaml gives it: "
                    f"'{cls.__module__}:{cls.__qualname__}', or the name it is registered under")
    try:
        named, unknown = named_by(name), None
    except ConfigError as error:
        named, unknown = None, str(error)
    if named is None:
        pytest.fail(f"registry_name {name!r} of {type(contract).__name__}: {unknown}")
    assert cls is named, (  # a parent's name would load the parent, not the class under test
        f"registry_name {name!r} names {named.__module__}.{named.__qualname__}, but the {fixture} fixture built a "
        f"{cls.__module__}.{cls.__qualname__}")


class InstrumentContract:
    """What every instrument promises."""

    registry_name: str

    def test_is_the_class_registered_under_its_name(self, instrument) -> None:
        _check_registered(self, instrument, instrument_class, "the driver's name", "instrument")

    def test_identifies_itself(self, instrument) -> None:
        assert isinstance(instrument.identify(), str) and instrument.identify().strip()

    def test_snapshot_is_json_with_identity_and_limits(self, instrument) -> None:
        snapshot = json.loads(json.dumps(instrument.snapshot()))
        assert snapshot["identity"] == instrument.identify()
        assert snapshot["limits"] and all({"min", "max", "unit"} <= set(v) for v in snapshot["limits"].values())

    def test_safe_state_is_idempotent_and_close_twice_is_harmless(self, instrument) -> None:
        instrument.safe_state()
        instrument.safe_state()
        instrument.close()
        instrument.close()
        assert not instrument.connected

    def test_the_safe_state_of_a_closed_instrument_is_harmless(self, instrument) -> None:
        """The framework calls every instrument's safe state on exit, closed ones included: there is nothing to do
        then, and nothing may be sent or raised."""
        instrument.close()
        instrument.safe_state()
        assert not instrument.connected

    def test_a_closed_instrument_refuses_to_act(self, instrument) -> None:
        instrument.close()
        with pytest.raises(DeviceError, match="not connected"):
            instrument.identify()

    def test_limits_are_finite_and_ordered(self, instrument) -> None:
        for limit in instrument.limits.values():
            assert math.isfinite(limit.min) and math.isfinite(limit.max) and limit.min <= limit.max


def _skip_unless_waveforms(instrument: AnalogOutput) -> None:
    """Skip a waveform test for an output of DC levels only (`AnalogOutput.plays_waveforms`)."""
    if not instrument.plays_waveforms:
        pytest.skip(f"{type(instrument).__name__} plays DC levels only")


def _forget_the_record(output: AnalogOutput) -> None:
    """Clear what a closed output recorded of its channels, so that what is there after `connect` is what it read."""
    output.level_v.clear()
    output.output_on.clear()


class AnalogOutputContract(InstrumentContract):
    """What every analog output promises; the waveform tests are skipped for an output of DC levels only."""

    def test_dc_level_within_limits_is_recorded(self, instrument: AnalogOutput) -> None:
        instrument.safe_state()
        target = 0.5 * instrument.limits["voltage_v"].max
        instrument.set_voltage(1, target)
        assert instrument.level_v[1] == pytest.approx(target)

    @pytest.mark.parametrize("value", [math.nan, math.inf, 1e6, -1e6])
    def test_bad_levels_are_refused_and_nothing_changes(self, instrument: AnalogOutput, value: float) -> None:
        instrument.safe_state()
        with pytest.raises(LimitError):
            instrument.set_voltage(1, value)
        assert instrument.level_v[1] == instrument.limits["voltage_v"].rest

    def test_unknown_channel_is_refused(self, instrument: AnalogOutput) -> None:
        with pytest.raises(LimitError, match="channel"):
            instrument.set_output(instrument.n_channels + 1, True)

    def test_a_channel_named_twice_in_one_play_is_refused(self, instrument: AnalogOutput) -> None:
        """A second trigger of the same channel would land mid-burst (ignored, or cutting it short)."""
        _skip_unless_waveforms(instrument)
        instrument.safe_state()
        low, _ = instrument.waveform_points
        instrument.load_waveform(1, np.full(max(low, 16), instrument.limits["voltage_v"].rest),
                                 _sample_rate_hz(instrument))
        with pytest.raises(LimitError, match="channel 1 given 2 times"):
            instrument.play([1, 1])

    def test_waveform_load_and_play(self, instrument: AnalogOutput) -> None:
        _skip_unless_waveforms(instrument)
        instrument.safe_state()
        low, _ = instrument.waveform_points
        limit = instrument.limits["voltage_v"]
        samples = np.linspace(0.5 * limit.min, 0.5 * limit.max, max(low, 64))
        instrument.load_waveform(1, samples, _sample_rate_hz(instrument))
        instrument.play([1])
        assert instrument.level_v[1] == samples[0]  # held at the first sample before and after each play

    def test_safe_state_is_zero_volts_and_off(self, instrument: AnalogOutput) -> None:
        """Zero volts, or the allowed level nearest it where the limits exclude 0 V (`Limit.rest`)."""
        instrument.safe_state()
        instrument.set_voltage(1, 0.5 * instrument.limits["voltage_v"].max)
        instrument.set_output(1, True)
        instrument.safe_state()
        assert all(level == instrument.limits["voltage_v"].rest for level in instrument.level_v.values())
        assert not any(instrument.output_on.values())

    def test_connect_reads_the_present_state_of_every_channel(self, instrument: AnalogOutput) -> None:
        """`AnalogOutput._connect_hw` reads each channel's level and output (None where the hardware cannot tell); a
        driver whose own `_connect_hw` does not call it would take the record of an earlier connection, or nothing,
        for the instrument's state."""
        instrument.close()
        _forget_the_record(instrument)
        instrument.connect()
        channels = set(range(1, instrument.n_channels + 1))
        for record in ("level_v", "output_on"):
            read = sorted(getattr(instrument, record))
            assert set(read) == channels, (
                f"connect read {record} of channels {read}, not 1..{instrument.n_channels}: "
                f"{type(instrument).__name__}._connect_hw must call super()._connect_hw() once the connection is open, "
                "which reads them (_read_level_hw, _read_output_hw)")

    def test_after_close_the_instrument_is_found_at_zero_and_off(self, instrument: AnalogOutput) -> None:
        """The safe state is the instrument's, not only the driver's record: connected again, the hooks that read the
        present state find every channel off and at 0 V (or `Limit.rest`; or cannot tell: None)."""
        instrument.safe_state()
        instrument.set_voltage(1, 0.5 * instrument.limits["voltage_v"].max)
        instrument.set_output(1, True)
        instrument.close()
        _forget_the_record(instrument)
        instrument.connect()
        assert all(on in (False, None) for on in instrument.output_on.values()), "an output was left on"
        limit = instrument.limits["voltage_v"]
        resolution = 1e-3 * (limit.max - limit.min)  # a level read back is the DAC's, to its resolution
        assert all(level is None or abs(level - limit.rest) <= resolution for level in instrument.level_v.values()), \
            f"a level was left: {instrument.level_v}"


class SourceMeterContract(InstrumentContract):
    def configured(self, instrument: SourceMeter) -> SourceMeter:
        instrument.configure("voltage", compliance=0.5 * instrument.limits["current_a"].max)
        instrument.set_output(True)
        return instrument

    def test_measure_returns_one_finite_point(self, instrument: SourceMeter) -> None:
        readings = self.configured(instrument).measure()
        assert len(readings.voltage_v) == len(readings.current_a) == len(readings.in_compliance) == 1
        assert np.isfinite(readings.current_a).all()

    def test_sweep_returns_one_reading_per_level(self, instrument: SourceMeter) -> None:
        smu = self.configured(instrument)
        top = 0.2 * smu.limits["voltage_v"].max
        step = smu.limits["voltage_v"].max_step or top
        levels = np.arange(0, top + 1e-12, min(step, top / 4))
        readings = smu.sweep(levels, delay_s=smu.limits["voltage_v"].step_interval_s(min(step, top / 4)))
        assert len(readings.voltage_v) == len(levels)

    @pytest.mark.parametrize("value", [math.nan, 1e6])
    def test_bad_levels_are_refused_and_nothing_changes(self, instrument: SourceMeter, value: float) -> None:
        smu = self.configured(instrument)
        with pytest.raises(LimitError):
            smu.set_level(value)
        assert smu.level == smu.limits["voltage_v"].rest

    def test_safe_state_is_zero_and_off(self, instrument: SourceMeter) -> None:
        smu = self.configured(instrument)
        smu.set_level(0.1 * smu.limits["voltage_v"].max)
        smu.safe_state()
        assert smu.level == smu.limits["voltage_v"].rest and smu.output_on is False

    def test_after_close_the_instrument_is_found_at_zero_and_off(self, instrument: SourceMeter) -> None:
        """The safe state is the instrument's, not only the driver's record: connected again, a driver that reads the
        present state (as it should, to ramp from the true level) finds the output off and the level at 0 (or
        `Limit.rest`)."""
        smu = self.configured(instrument)
        smu.set_level(0.1 * smu.limits["voltage_v"].max)
        smu.close()
        smu.connect()
        assert smu.output_on in (False, None), "the output was left on"  # None: the driver cannot read it
        limit = smu.limits["voltage_v"]
        resolution = 1e-3 * (limit.max - limit.min)  # a level read back is the source's, to its resolution
        assert smu.level is None or abs(smu.level - limit.rest) <= resolution, f"the level was left at {smu.level:g}"

    def test_nothing_sources_before_configure(self, instrument: SourceMeter) -> None:
        """A compliance left on the instrument by another session is unknown: configure must set one first."""
        for refused in (lambda: instrument.set_output(True), lambda: instrument.set_level(0.0), instrument.measure):
            with pytest.raises(DeviceError, match="configure"):
                refused()
        instrument.safe_state()
        assert instrument.output_on is False

    @staticmethod
    def assert_sourced(readings: Readings, mode: str, level: float, compliance: float) -> None:
        """A source-measure unit's physics, whatever the load: the sourced quantity is the level (within 0.1 %),
        unless the compliance limits the source, which the reading must then say, with the measured quantity at the
        compliance (within 0.1 %)."""
        sourced, measured = (readings.voltage_v[0], readings.current_a[0]) if mode == "voltage" else \
            (readings.current_a[0], readings.voltage_v[0])
        if readings.in_compliance[0]:
            assert abs(measured) == pytest.approx(compliance, rel=1e-3), \
                f"in compliance, the measured {'current' if mode == 'voltage' else 'voltage'} {measured:g} is not " \
                f"at the compliance {compliance:g}"
        else:
            assert sourced == pytest.approx(level, rel=1e-3, abs=1e-12), \
                f"sourcing {mode} {level:g}, the reading says {sourced:g}, and not in compliance (voltage and " \
                "current swapped, the level not sent, or the compliance state not read?)"
            assert abs(measured) <= compliance * (1 + 1e-3)

    def test_the_voltage_source_holds_its_level_unless_in_compliance(self, instrument: SourceMeter) -> None:
        """Readings are checked against physics, not only for finiteness: a driver that swaps voltage and current,
        loses the level's sign or never sends it, or never reports the compliance, fails here."""
        smu = self.configured(instrument)
        for level in (0.2 * smu.limits["voltage_v"].max, 0.2 * smu.limits["voltage_v"].min):
            smu.set_level(level)
            self.assert_sourced(smu.measure(), "voltage", level, smu.compliance)  # type: ignore[arg-type]

    def test_the_current_source_holds_its_level_unless_in_compliance(self, instrument: SourceMeter) -> None:
        instrument.configure("current", compliance=0.5 * instrument.limits["voltage_v"].max)
        instrument.set_output(True)
        for level in (0.1 * instrument.limits["current_a"].max, 0.1 * instrument.limits["current_a"].min):
            instrument.set_level(level)
            self.assert_sourced(instrument.measure(), "current", level, instrument.compliance)  # type: ignore[arg-type]

    def test_current_mode_holds_the_voltage_compliance(self, instrument: SourceMeter) -> None:
        compliance = 0.5 * instrument.limits["voltage_v"].max
        instrument.configure("current", compliance=compliance)
        instrument.set_output(True)
        instrument.set_level(0.1 * instrument.limits["current_a"].max)
        readings = instrument.measure()
        assert instrument.mode == "current" and instrument.level == 0.1 * instrument.limits["current_a"].max
        assert np.isfinite(readings.voltage_v).all() and abs(readings.voltage_v[0]) <= 1.001 * compliance
        instrument.safe_state()  # at 0 A, or the allowed current nearest it (`Limit.rest`)
        assert instrument.level == instrument.limits["current_a"].rest and instrument.output_on is False


class AnalogInputContract(InstrumentContract):
    def test_acquire_has_the_asked_shape(self, instrument: AnalogInput) -> None:
        record = instrument.acquire(100, _sample_rate_hz(instrument))
        assert record.shape == (instrument.n_channels, 100) and np.isfinite(record).all()

    def test_fetch_without_arm_is_refused(self, instrument: AnalogInput) -> None:
        with pytest.raises(DeviceError, match="arm"):
            instrument.fetch()


class SpatialLightModulatorContract(InstrumentContract):
    def test_show_and_sequence_accept_patterns_in_range(self, instrument: SpatialLightModulator) -> None:
        limit = instrument.limits["phase_rad"]
        instrument.show(np.full(instrument.shape, (limit.min + limit.max) / 2))  # π on the default 0..2π
        instrument.show_sequence(np.full((3, *instrument.shape), limit.min))

    @pytest.mark.parametrize("value", [math.nan, -0.1, 7.0])
    def test_bad_phases_are_refused(self, instrument: SpatialLightModulator, value: float) -> None:
        pattern = np.zeros(instrument.shape)
        pattern[0, 0] = value
        with pytest.raises(LimitError, match=r"\[0, 0\]"):
            instrument.show(pattern)

    def test_wrong_shape_is_refused(self, instrument: SpatialLightModulator) -> None:
        with pytest.raises(LimitError, match="shape"):
            instrument.show(np.zeros((instrument.shape[0] + 1, instrument.shape[1])))


def _exposure_s(camera: Camera) -> float:
    """Ten times the shortest exposure, or the longest the camera's ``exposure_s`` limit allows if that is less."""
    limit = camera.limits["exposure_s"]
    return min(limit.min * 10, limit.max)


class CameraContract(InstrumentContract):
    def test_capture_returns_consecutive_frames(self, instrument: Camera) -> None:
        instrument.set_exposure(_exposure_s(instrument))
        frames = instrument.capture(3)
        assert len(frames.images) == 3 and tuple(frames.images.shape[1:]) == tuple(instrument.shape)
        assert (np.diff(frames.indices) == 1).all()

    def test_full_scale_lies_within_the_adc_codes(self, instrument: Camera) -> None:
        """``saturation_dn`` (None, or the level where the full well fills first) leaves a full scale of 1 DN up
        to the ADC's top code, which the optical systems' exposure search aims below."""
        assert 1 <= instrument.full_scale_dn <= 2**instrument.bit_depth - 1

    def test_exposure_outside_limits_is_refused(self, instrument: Camera) -> None:
        with pytest.raises(LimitError):
            instrument.set_exposure(instrument.limits["exposure_s"].max * 10)

    def test_aoi_capture_has_the_aoi_shape_and_full_frame_returns(self, instrument: Camera) -> None:
        """A camera reads out its area of interest, or refuses AOIs cleanly and stays on the full frame."""
        instrument.set_exposure(_exposure_s(instrument))
        rows, cols = instrument.shape
        aoi = (1, 2, max(1, rows // 2), max(1, cols // 3))
        try:
            instrument.set_roi(*aoi)
        except DeviceError:
            assert instrument.roi is None
        else:
            assert instrument.roi == aoi and instrument.frame_shape == aoi[2:]
            assert tuple(instrument.capture(2).images.shape) == (2, *aoi[2:])
            assert json.loads(json.dumps(instrument.snapshot()))["roi"] == list(aoi)
        instrument.set_roi(None)
        assert instrument.roi is None and instrument.frame_shape == tuple(instrument.shape)
        assert tuple(instrument.capture(1).images.shape[1:]) == tuple(instrument.shape)

    def test_aoi_off_the_sensor_or_empty_is_refused(self, instrument: Camera) -> None:
        rows, cols = instrument.shape
        for bad in [(0, 0, rows + 1, cols), (rows - 1, 0, 2, 1), (0, cols - 2, 1, 3), (-1, 0, 1, 1), (0, 0, 0, 1),
                    (0, 0, 1, -1), (0.5, 0, 1, 1), (0, 0, 1, None)]:
            with pytest.raises(LimitError, match=instrument.name):
                instrument.set_roi(*bad)
        assert instrument.roi is None and instrument.frame_shape == tuple(instrument.shape)


class CrossbarArrayContract(InstrumentContract):
    def test_program_then_read_a_batch(self, instrument: CrossbarArray) -> None:
        limit = instrument.limits["conductance_s"]
        instrument.program(np.full(instrument.shape, (limit.min + limit.max) / 2))
        currents = instrument.read(np.full((5, instrument.shape[0]), 0.5 * instrument.limits["read_voltage_v"].max))
        assert tuple(currents.shape) == (5, instrument.shape[1])

    def test_conductance_outside_limits_is_refused(self, instrument: CrossbarArray) -> None:
        with pytest.raises(LimitError):
            instrument.program(np.full(instrument.shape, instrument.limits["conductance_s"].max * 2))

    def test_differential_read_gives_a_current_per_column_pair(self, instrument: CrossbarArray) -> None:
        limit = instrument.limits["conductance_s"]
        instrument.program(np.full(instrument.shape, (limit.min + limit.max) / 2))
        voltages = np.full((5, instrument.shape[0]), 0.5 * instrument.limits["read_voltage_v"].max)
        pairs = instrument.shape[1] // 2
        assert tuple(instrument.read_pairs(voltages, pairs).shape) == (5, pairs)
        assert tuple(instrument.read_pairs(voltages, 1).shape) == (5, 1)
        for bad in (0, pairs + 1, True, 1.0):
            with pytest.raises(LimitError, match=instrument.name):
                instrument.read_pairs(voltages, bad)
        with pytest.raises(LimitError, match=instrument.name):
            instrument.read_pairs(voltages * 4 * instrument.limits["read_voltage_v"].max / voltages.max(), pairs)

    def test_differential_read_is_each_even_column_less_the_odd_one_after_it(self, instrument: CrossbarArray) -> None:
        # Pair j: column 2j at (1 + j/pairs)/2 of the span, column 2j + 1 at its bottom; row 0 alone driven, at half
        # the read voltage (one device's current: no column near its read-out's range). Averaged over a batch, the
        # differential read is the column read's difference within a fifth of a full-span device's current and five
        # standard errors of the reads' noise; a swapped pair is off by at least one full-span device's current.
        conductance, voltage = instrument.limits["conductance_s"], instrument.limits["read_voltage_v"]
        rows, cols = instrument.shape
        pairs = cols // 2
        targets = np.full(instrument.shape, conductance.min)
        targets[:, 0:2 * pairs:2] += (conductance.max - conductance.min) * (1 + np.arange(pairs) / pairs) / 2
        instrument.program(targets)
        voltages = np.zeros((min(256, instrument.max_batch), rows))
        voltages[:, 0] = voltage.max / 2
        currents = np.asarray(instrument.read(voltages), dtype=float)
        subtracted = currents[:, 0:2 * pairs:2] - currents[:, 1:2 * pairs:2]
        differences = np.asarray(instrument.read_pairs(voltages, pairs), dtype=float)
        standard_error = np.sqrt((differences.var(axis=0) + subtracted.var(axis=0)) / len(voltages))
        tolerance = 0.2 * voltage.max / 2 * (conductance.max - conductance.min) + 5 * standard_error
        deviation = np.abs(differences.mean(axis=0) - subtracted.mean(axis=0))
        assert np.all(deviation <= tolerance), (
            f"read_pairs differs from read's I_2j − I_2j+1 by up to {deviation.max():.3g} A (allowed "
            f"{tolerance[deviation.argmax()]:.3g} A, pair {deviation.argmax()}): check the driver's _read_pairs_hw")


# -- systems and worlds ------------------------------------------------------------------------------------------
#: How far a system's forward on its world's ``ideal`` preset may lie from its physics model, as a fraction of the
#: outputs' largest magnitude: float32 rounding (1e-7) and what a call leaves ringing into the next (the oscillators':
#: 3e-6), with room; a gain off by 0.1 % is ten times more.
PHYSICS_TOLERANCE = 1e-4


#: The largest ``max_batch`` the system contract splits a batch at.
SPLIT_TEST_MAX_BATCH = 64


def _within(bounds: tuple[float, float], *shape: int, seed: int) -> torch.Tensor:
    """Values drawn uniformly within ``bounds`` (float32, ``shape``), from ``seed``."""
    low, high = bounds
    return low + (high - low) * torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _assert_close(measured: torch.Tensor, expected: torch.Tensor, what: str, fix: str) -> None:
    """Fail unless ``measured`` (batch × n_out) lies within ``expected`` to `PHYSICS_TOLERANCE` of its own largest
    magnitude, saying ``what`` differs, at which output, and ``fix``."""
    assert tuple(expected.shape) == tuple(measured.shape), \
        f"{what}: shape {tuple(measured.shape)}, expected {tuple(expected.shape)}; {fix}"
    deviation = (measured - expected).abs()
    allowed = PHYSICS_TOLERANCE * float(measured.abs().max())
    worst = divmod(int(deviation.argmax()), measured.shape[1])
    assert float(deviation.max()) <= allowed, (
        f"{what} at output {list(worst)}: {float(measured[worst]):.6g}, expected {float(expected[worst]):.6g} "
        f"(within {allowed:.3g}, {PHYSICS_TOLERANCE:g} of the largest output); {fix}")


class PhysicalSystemContract:
    """What every physical system promises, checked on simulated worlds of its bench.

    A concrete test class sets ``registry_name`` (the system's ``kind`` as lab.yaml names it) and gives a ``build``
    fixture: a function ``build(preset, seed)`` returning the system on connected simulated instruments of a new
    world of that preset and seed (the contract calibrates it, and closes its instruments when the test ends)::

        class TestAcmeSystem(PhysicalSystemContract):
            registry_name = "acme_hil.system:AcmeSystem"

            @pytest.fixture
            def build(self):
                def build(preset: str, seed: int) -> AcmeSystem:
                    world = AcmeWorld(preset=preset, seed=seed)
                    return AcmeSystem({"output": SimulatedAnalogOutput(world, name="out").connect(),
                                       "input": SimulatedAnalogInput(world, name="in").connect()})
                return build
    """

    registry_name: str

    @pytest.fixture
    def built(self, build: Callable[[str, int], PhysicalSystem]) -> Iterator[Callable[..., PhysicalSystem]]:
        """``build``, each system calibrated, and its instruments closed when the test ends."""
        systems: list[PhysicalSystem] = []

        def calibrated(preset: str = "ideal", seed: int = 0) -> PhysicalSystem:
            system = build(preset, seed)
            systems.append(system)
            system.calibrate()
            return system

        yield calibrated
        for system in systems:
            for instrument in system.instruments.values():
                instrument.close()

    def test_is_the_class_registered_under_its_name(self, built) -> None:
        _check_registered(self, built(), lambda name: subclass_of("systems", name, PhysicalSystem),
                          "the system's kind", "build")

    def test_on_the_ideal_world_the_forward_pass_is_the_physics_model(self, built) -> None:
        """For random x and θ within the bounds, the device's outputs are its physics model's (`oracle_model`: the
        world's hidden calibration loaded), to float tolerance."""
        system = built()
        x, theta = _within(system.x_bounds, 8, system.n_in, seed=1), _within(system.theta_bounds, system.n_params,
                                                                              seed=2)
        with torch.no_grad():
            modelled = system.oracle_model()(x, theta)
        _assert_close(system(x, theta), modelled, f"{type(system).__name__}'s forward pass on its ideal world differs "
                      "from its physics model (oracle_model())", "check physics_model() and hidden_calibration() "
                      "against _run, and that the ideal preset switches every non-ideality off")

    def test_the_physics_model_gives_x_and_theta_a_finite_gradient(self, built) -> None:
        """Physics-aware training and the twins train θ, and the layers before the physical one, through the physics
        model: a rounding, a comparison or an integer cast in it passes no gradient, and a root at 0 an infinite
        one."""
        system = built()
        x = _within(system.x_bounds, 8, system.n_in, seed=1).requires_grad_()
        theta = _within(system.theta_bounds, system.n_params, seed=2).requires_grad_()
        system.oracle_model()(x, theta).sum().backward()
        for name, tensor in (("x", x), ("theta", theta)):
            gradient = tensor.grad
            assert gradient is not None and bool(torch.isfinite(gradient).all()) and bool(gradient.any()), (
                f"{type(system).__name__}'s physics model gives {name} "
                f"{'no' if gradient is None or not gradient.any() else 'a non-finite'} gradient; write physics_model() "
                "with differentiable torch operations")

    def test_values_outside_the_bounds_or_of_the_wrong_shape_are_refused_before_any_call(self, built) -> None:
        system = built()
        x, theta = _within(system.x_bounds, 2, system.n_in, seed=1), _within(system.theta_bounds, system.n_params,
                                                                              seed=2)
        (x_low, x_high), (low, high) = system.x_bounds, system.theta_bounds
        above, below = x.clone(), theta.clone()
        above[1, -1], below[0] = x_high + 0.1 * (x_high - x_low), low - 0.1 * (high - low)
        calls, device_time_s = system.calls, system.device_time_s
        for bad_x, bad_theta, refusal in [(above, theta, rf"x\[1, {system.n_in - 1}\] = "),
                                          (x, below, r"theta\[0\] = "),
                                          (torch.cat([x, x[:, :1]], 1), theta, "x has shape"),
                                          (x[0], theta, "x has shape"),
                                          (x, torch.cat([theta, theta[:1]]), "theta has shape")]:
            with pytest.raises(LimitError, match=rf"^system {re.escape(repr(system.name))}: {refusal}"):
                system(bad_x, bad_theta)
        assert (system.calls, system.device_time_s) == (calls, device_time_s), "a refused call reached the device"

    def test_a_batch_beyond_max_batch_is_split_and_its_rows_are_what_each_gives_alone(self, built) -> None:
        """A batch of ``max_batch`` + 1 rows takes two device calls, and its rows at either side of the split are
        what each gives alone. ``max_batch`` is lowered to `SPLIT_TEST_MAX_BATCH` where larger (a smaller batch is
        always allowed), so that a system of a vast ``max_batch`` is not asked for a batch that fills the memory."""
        system = built()
        system.max_batch = min(system.max_batch, SPLIT_TEST_MAX_BATCH)
        x, theta = _within(system.x_bounds, system.max_batch + 1, system.n_in, seed=1), \
            _within(system.theta_bounds, system.n_params, seed=2)
        calls = system.calls
        batch = system(x, theta)
        assert system.calls - calls == 2, f"{system.max_batch + 1} rows took {system.calls - calls} device calls"
        rows = [0, system.max_batch - 1, system.max_batch]
        _assert_close(batch[rows], torch.cat([system(x[row:row + 1], theta) for row in rows]),
                      f"rows {rows} of a batch of {len(x)} (max_batch {system.max_batch}) differ from each row alone",
                      "a row's output must not depend on the other rows of its call")

    def test_outputs_stay_as_they_were_after_the_next_call(self, built) -> None:
        """A system returning a tensor it fills anew at every call (a DAQ's buffer) would overwrite the outputs a twin
        or a training step already holds."""
        system = built()
        theta = _within(system.theta_bounds, system.n_params, seed=2)
        first = system(_within(system.x_bounds, 2, system.n_in, seed=1), theta)
        kept = first.clone()
        system(_within(system.x_bounds, 2, system.n_in, seed=3), theta)
        assert torch.equal(first, kept), ("the next call changed the outputs a call returned: return a new tensor "
                                          "(y.clone()), not a buffer the system fills anew")

    def test_device_time_is_counted(self, built) -> None:
        """A device call advances its world's clock, and the system counts that time: a system that waits (a
        settling time) sleeps on ``self.clock``, which a simulator's world models."""
        system = built()
        device_time_s = system.device_time_s
        system(_within(system.x_bounds, 2, system.n_in, seed=1), _within(system.theta_bounds, system.n_params, seed=2))
        assert system.device_time_s > device_time_s, (
            "a forward pass took no device time: the simulated instruments must advance their world's clock "
            "(clock.sleep(seconds)) by the time the bench would take")

    def test_the_same_seed_gives_the_same_outputs(self, built) -> None:
        """Two worlds of the realistic preset and one seed are one device: everything random is drawn from the
        world's generators (``rng``, ``construction_rng``), not from torch's or numpy's global ones."""
        first, second = built("realistic", 3), built("realistic", 3)
        x, theta = _within(first.x_bounds, 4, first.n_in, seed=1), _within(first.theta_bounds, first.n_params, seed=2)
        assert torch.equal(first(x, theta), second(x, theta)), \
            "two systems on worlds of the same seed measured different outputs: draw from the world's generators"


def _unwrapped(annotation: object) -> tuple[object, list[object]]:
    """The type ``annotation`` holds and the constraints an ``Annotated`` around it gives."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, []
    held, *infos = typing.get_args(annotation)
    return held, [c for info in infos for c in getattr(info, "metadata", [info])]


def config_numbers(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, list[object]]]:
    """(dotted name, constraints) of every number in a world's ``Config``: nested models walked, optional ones and
    those in a list, tuple or dict too, the numbers of a list or tuple and a dict's values named ``name[]``, an
    optional number's constraints read where they are; bools, literals and strings are not numbers."""
    for name, field in model.model_fields.items():
        yield from _numbers(field.annotation, f"{prefix}{name}", list(FieldInfo.merge_field_infos(field).metadata))


def _numbers(annotation: object, name: str, constraints: list[object]) -> Iterator[tuple[str, list[object]]]:
    """(name, constraints) of the numbers a value of type ``annotation`` holds, ``constraints`` those of its field."""
    held, own = _unwrapped(annotation)
    options = [_unwrapped(a) for a in typing.get_args(held) if a is not type(None)]
    union = typing.get_origin(held) in (typing.Union, types.UnionType)
    if isinstance(held, type) and issubclass(held, BaseModel):
        yield from config_numbers(held, f"{name}.")
    elif held in (int, float) or (union and all(option in (int, float) for option, _ in options)):
        yield name, constraints + own + [c for _, option_constraints in options for c in option_constraints]
    elif union:  # an optional model or list
        for option in typing.get_args(held):
            yield from _numbers(option, name, constraints + own)
    elif typing.get_origin(held) in (list, tuple):
        items = typing.get_args(held)
        for index, item in enumerate(items):
            if item not in items[:index]:  # tuple[float, float]: one name
                yield from _numbers(item, f"{name}[]", [])
    elif typing.get_origin(held) is dict and len(typing.get_args(held)) == 2:  # its values
        yield from _numbers(typing.get_args(held)[1], f"{name}[]", [])


def unbounded_numbers(model: type[BaseModel]) -> list[str]:
    """The dotted names of the numbers in a world's ``Config`` (`config_numbers`) without both a lower and an upper
    bound."""
    return [name for name, constraints in config_numbers(model)
            if not (any(isinstance(c, Ge | Gt) for c in constraints)
                    and any(isinstance(c, Le | Lt) for c in constraints))]


class WorldContract:
    """What every simulated world promises. A concrete test class sets ``registry_name`` (the world's ``kind`` as
    lab.yaml names it) and gives a ``world`` fixture: the world built with its defaults (``AcmeWorld()``)."""

    registry_name: str

    def test_is_the_class_registered_under_its_name(self, world) -> None:
        from simulators.world import World

        _check_registered(self, world, lambda name: subclass_of("worlds", name, World), "the world's kind", "world")

    def test_every_number_of_its_config_has_a_lower_and_an_upper_bound(self, world) -> None:
        """A unit slip in a lab file (``pitch_m: 8`` for 8 µm) is then refused at its line."""
        config = type(world).Config
        unbounded = unbounded_numbers(config)
        assert not unbounded, (f"{type(world).__name__}.Config: {', '.join(unbounded)} lack a lower or an upper bound; "
                               "give each Field(ge=..., le=...), the upper at the largest value a bench of the kind "
                               "could have")

    def test_every_preset_builds_and_ideal_is_one(self, world) -> None:
        """A lab names ``ideal``, ``realistic`` or ``harsh``: a preset that misnames a field or leaves its bounds
        fails here rather than in a lab file that picks it."""
        cls = type(world)
        missing = [preset for preset in ("ideal", "realistic") if preset not in cls.presets]
        assert not missing, (f"{cls.__name__}.presets has {', '.join(cls.presets) or 'none'}; give "
                             f"{' and '.join(missing)} too (ideal: every non-ideality off; realistic: {{}}, the "
                             "Config's defaults)")
        for preset in cls.presets:
            assert isinstance(cls(preset=preset, seed=world.seed), cls)
