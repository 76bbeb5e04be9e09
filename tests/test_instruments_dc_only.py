"""An analog output of DC levels only, as a user adds one: a multichannel DC source on a serial line with a line
protocol of its own, served by its emulator over a pseudo-terminal. It writes no waveform hooks, passes the analog
output's contract (the waveform tests skipped), refuses waveforms before anything is sent, and the systems that
drive their output with waveforms refuse it when they are built."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from hil import testing
from hil.errors import ConfigError, DeviceError
from hil.instruments import AnalogOutput
from hil.limits import Limit
from hil.systems.oscillator import OscillatorSystem
from hil.systems.resistive import ResistiveNetworkSystem
from hil.transport import SerialTransport, Transport
from simulators.analog import SimulatedAnalogInput, SimulatedAnalogOutput
from simulators.oscillator import OscillatorNetwork
from simulators.resistive import ResistiveNetwork

#: The DC source's range (V) and resolution (16 bits over it).
RANGE_V = 5.0
LSB_V = 2 * RANGE_V / 2**16


class DcSourceEmulator:
    """An 8-channel ±5 V, 16-bit DC source's line protocol: ``V3 1.25`` sets channel 3 and ``V3?`` reads it, ``O3 1``
    switches its output on and ``O3?`` reads that (``1``/``0``), ``*IDN?`` identifies; a setting answers ``OK``, what
    it does not know ``ERR``. Every message it received is kept in ``received``."""

    def __init__(self) -> None:
        self.levels_v = [0.0] * 8
        self.outputs = [False] * 8
        self.received: list[bytes] = []

    def handle(self, message: bytes) -> bytes:
        self.received.append(message)
        if message == b"*IDN?":
            return b"ACME,DC8,0001,1.0"
        found = re.fullmatch(rb"([VO])([1-8])(\?| (\S+))", message)
        if found is None:
            return b"ERR unknown command"
        channel, value = int(found[2]) - 1, found[4]
        if found[1] == b"V":
            if value is None:
                return f"{self.levels_v[channel]:.6f}".encode()
            self.levels_v[channel] = min(max(round(float(value) / LSB_V) * LSB_V, -RANGE_V), RANGE_V - LSB_V)
        else:
            if value is None:
                return b"1" if self.outputs[channel] else b"0"
            self.outputs[channel] = value == b"1"
        return b"OK"


class DcSource(AnalogOutput):
    """The DC source's driver: DC levels only, so it leaves the waveform hooks unwritten."""

    n_channels = 8

    def __init__(self, transport: Transport, **common: Any):
        self.transport = transport
        super().__init__(**common)

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage_v": Limit("V", -RANGE_V, RANGE_V - LSB_V)}

    def _connect_hw(self) -> None:
        self.transport.open()
        self._identity = self.transport.query("*IDN?")
        super()._connect_hw()

    def _close_hw(self) -> None:
        self.transport.close()

    def _identify_hw(self) -> str:
        return self._identity

    def _send(self, command: str) -> None:
        reply = self.transport.query(command)
        if reply != "OK":
            raise DeviceError(f"{self.name}: {command!r} was answered {reply!r}")

    def _read_level_hw(self, channel: int) -> float:
        command = f"V{channel}?"
        reply = self.transport.query(command)
        try:
            return float(reply)
        except ValueError:  # an ERR ..., or a line cut short: the instrument's words, not a float()'s traceback
            raise DeviceError(f"{self.name}: reply {reply!r} to {command!r} is not a number") from None

    def _read_output_hw(self, channel: int) -> bool:
        command = f"O{channel}?"
        reply = self.transport.query(command)
        if reply not in ("0", "1"):  # not taken for "off": the output may be on
            raise DeviceError(f"{self.name}: reply {reply!r} to {command!r} is not 1 or 0")
        return reply == "1"

    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        self._send(f"V{channel} {voltage_v:.6f}")

    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        self._send(f"O{channel} {int(enabled)}")


def dc_source(server: Any) -> DcSource:
    return DcSource(SerialTransport(server.resource, timeout_s=2.0), name="dc",
                    limits={"voltage_v": {"min": -2, "max": 2, "max_step": 0.5}})


class TestDcSource(testing.AnalogOutputContract):
    registry_name = f"{__name__}:DcSource"

    @pytest.fixture
    def instrument(self, pty_server) -> Iterator[DcSource]:
        with dc_source(pty_server(DcSourceEmulator())) as dc:
            yield dc


def test_an_output_of_dc_levels_only_refuses_waveforms_before_anything_is_sent(pty_server) -> None:
    """A DC-only driver had to write waveform hooks (abstract) and fake waveforms to be used at all."""
    emulator = DcSourceEmulator()
    with dc_source(pty_server(emulator)) as dc:
        dc.set_voltage(1, 1.0)
        dc.set_output(1, True)
        sent = len(emulator.received)
        refusal = r"^dc: plays DC levels only \(DcSource writes no waveform hooks\); set each level with " \
                  r"set_voltage\(\), or use an analog output that plays waveforms$"
        with pytest.raises(DeviceError, match=refusal):
            dc.load_waveform(1, np.linspace(-1.0, 1.0, 16), 1e3)
        with pytest.raises(DeviceError, match=refusal):
            dc.play([1])
        assert len(emulator.received) == sent, "a refused waveform sent something"
        assert dc.level_v[1] == 1.0 and dc.output_on[1] is True
        assert not dc.plays_waveforms and set(dc.limits) == {"voltage_v"}  # a DC source has no sample rate
    assert emulator.levels_v == [0.0] * 8 and not any(emulator.outputs)


def test_a_driver_that_writes_one_waveform_hook_of_two_is_refused_when_built() -> None:
    """Leaving both unwritten declares an output of DC levels only; leaving one is a mistake, named."""

    class HalfAwg(DcSource):
        def _play_hw(self, channels: list[int]) -> None:
            """Plays, but nothing can be loaded to play."""

    with pytest.raises(ConfigError, match=r"^driver: HalfAwg writes _play_hw but not _load_waveform_hw: write both "
                                          r"to play waveforms, or neither for an output of DC levels only$"):
        HalfAwg(SerialTransport("loop://"))


def test_an_output_of_dc_levels_only_gets_no_sample_rate_limit_from_the_default_hardware_limits() -> None:
    """A driver that keeps `AnalogOutput.hardware_limits` gets its voltage limit alone: a sample rate limit would
    be one a lab file could narrow for waveforms that the output never plays."""

    class DefaultLimits(DcSource):
        hardware_limits = AnalogOutput.hardware_limits

    dc = DefaultLimits(SerialTransport("loop://"), limits={"voltage_v": {"max_step": 0.5}})
    assert dc.limits == {"voltage_v": Limit("V", -10.0, 10.0, max_step=0.5)}
    with pytest.raises(ConfigError, match=r"^limits\.sample_rate_hz: no limit named 'sample_rate_hz' on this "
                                          r"instrument; it has: voltage_v$"):
        DefaultLimits(SerialTransport("loop://"), limits={"sample_rate_hz": {"max": 1e3}})


@pytest.mark.parametrize(("system", "world"), [(ResistiveNetworkSystem, ResistiveNetwork),
                                               (OscillatorSystem, OscillatorNetwork)])
def test_a_system_that_drives_its_output_with_waveforms_refuses_one_of_dc_levels_only_when_built(
        pty_server, system: type, world: type) -> None:
    """Both play a batch as a waveform: with a DC-only output, the first device call would fail, not the build."""
    refusal = rf"^instruments\.output: system 'bench': output dc plays DC levels only \(DcSource writes no waveform " \
              rf"hooks\), and this {system.kind} system drives its output with waveforms; give it an analog output " \
              r"that plays them$"
    with dc_source(pty_server(DcSourceEmulator())) as dc, \
            SimulatedAnalogInput(world(preset="ideal"), name="ai") as reader, pytest.raises(ConfigError, match=refusal):
        system({"output": dc, "input": reader}, name="bench")


def test_the_contracts_waveform_tests_skip_an_output_of_dc_levels_only_and_run_for_one_that_plays_them(
        pty_server) -> None:
    contract = testing.AnalogOutputContract()
    waveform_tests = (contract.test_waveform_load_and_play, contract.test_a_channel_named_twice_in_one_play_is_refused)
    with dc_source(pty_server(DcSourceEmulator())) as dc:
        for test in waveform_tests:
            with pytest.raises(pytest.skip.Exception, match=r"^DcSource plays DC levels only$"):
                test(dc)
    with SimulatedAnalogOutput(ResistiveNetwork(preset="ideal"), name="ao") as ao:
        for test in waveform_tests:
            test(ao)
            assert ao.waveform_samples[1] >= 16  # loaded: the test ran


def test_the_contract_fails_a_driver_whose_connect_does_not_read_the_present_state(pty_server) -> None:
    """A driver whose own `_connect_hw` leaves out ``super()._connect_hw()`` passed every contract test: connected
    again, the record of the earlier connection was taken for what the instrument holds."""

    class Unread(DcSource):
        def _connect_hw(self) -> None:
            self.transport.open()
            self._identity = self.transport.query("*IDN?")

    contract = testing.AnalogOutputContract()
    unread = r"^connect read level_v of channels \[\], not 1\.\.8: Unread\._connect_hw must call " \
             r"super\(\)\._connect_hw\(\) once the connection is open, which reads them \(_read_level_hw, " \
             r"_read_output_hw\)"
    with Unread(SerialTransport(pty_server(DcSourceEmulator()).resource), name="dc") as dc, \
            pytest.raises(AssertionError, match=unread):
        contract.test_connect_reads_the_present_state_of_every_channel(dc)


class GarblingDcSourceEmulator(DcSourceEmulator):
    """Answers a query of a level, or of an output, with a line the driver cannot read as one."""

    def __init__(self, garbled: bytes = b"V") -> None:
        super().__init__()
        self.garbled = garbled

    def handle(self, message: bytes) -> bytes:
        return b"ERR busy" if message.startswith(self.garbled) and message.endswith(b"?") else super().handle(message)


class FloatOfAnyReply(DcSource):
    """A driver that reads a level with a bare float() of the reply, as the DC source's did."""

    def _read_level_hw(self, channel: int) -> float:
        return float(self.transport.query(f"V{channel}?"))


def test_a_driver_that_fails_at_connect_on_a_reply_it_cannot_read_is_one_line_naming_the_instrument(
        pty_server, tmp_path, capsys) -> None:
    """The driver's float() of a garbage reply ended hil devices in a traceback; the lab says which instrument, which
    driver, what it raised and where, and what a driver should raise."""
    from hil.cli import main

    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(f"instruments:\n  dc:\n    driver: {__name__}:FloatOfAnyReply\n"
                        f"    resource: {pty_server(GarblingDcSourceEmulator()).resource}\n")
    assert main(["devices", "--lab", str(lab_file)]) == 2
    line = FloatOfAnyReply._read_level_hw.__wrapped__.__code__.co_firstlineno + 1
    assert capsys.readouterr().err == (
        f"hil: error: dc: {__name__}.FloatOfAnyReply._read_level_hw raised ValueError: could not convert string to "
        f"float: 'ERR busy' ({__file__}:{line}); fix the driver there (a reply it cannot read is a DeviceError naming "
        "the command and the reply)\n")


class JsonReading:
    """A driver's mixin, as `ScpiDriver` is one: its hooks come to the driver class from a class that is no
    `Instrument`."""

    def _read_level_hw(self, channel: int) -> float:
        return json.loads(self.transport.query(f"V{channel}?"))  # type: ignore[attr-defined]


class JsonOfAnyReplyFromAMixin(JsonReading, DcSource):
    """A driver whose level reading is its mixin's."""


def test_a_hook_a_driver_takes_from_a_mixin_is_reported_as_its_own_are(pty_server) -> None:
    """Only the hooks a driver class defined itself were wrapped: one from a mixin (as ScpiDriver's hooks are) raised
    its exception bare mid-run."""
    emulator = DcSourceEmulator()
    with JsonOfAnyReplyFromAMixin(SerialTransport(pty_server(emulator).resource, timeout_s=2.0), name="dc") as dc:
        emulator.levels_v[0] = float("nan")  # channel 1 answers 'nan', which JSON does not know
        with pytest.raises(DeviceError, match=rf"^dc: {__name__}\.JsonReading\._read_level_hw raised "
                                              r"JSONDecodeError: .*; fix the driver there"):
            dc._read_level_hw(1)
    assert JsonOfAnyReplyFromAMixin._read_level_hw.__wrapped__ is JsonReading._read_level_hw
    assert not hasattr(JsonOfAnyReplyFromAMixin._set_level_hw.__wrapped__, "__wrapped__")  # wrapped once


class JsonOfAnyReply(DcSource):
    """A driver that reads a level with json.loads() of the reply, runs out of memory switching an output on and
    asserts that no level is 1.5 V."""

    def _read_level_hw(self, channel: int) -> float:
        return json.loads(self.transport.query(f"V{channel}?"))

    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        if enabled:
            raise MemoryError
        super()._set_output_hw(channel, enabled)

    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        assert voltage_v != 1.5, "a check of the driver's own"
        super()._set_level_hw(channel, voltage_v)


def test_a_drivers_own_error_names_the_drivers_line_and_running_out_of_memory_passes_as_it_is(pty_server) -> None:
    """The line named is the driver's own that called the library which raised (json's decoder, here), not the
    library's; a MemoryError is no device's fault and passes unchanged, as does a failed assert (the byte-exact
    transport's, in a protocol test). hil's simulators, hil's own computation, keep their errors as they are (a bug
    there is hil's, reported with its traceback)."""
    emulator = DcSourceEmulator()
    with JsonOfAnyReply(SerialTransport(pty_server(emulator).resource, timeout_s=2.0), name="dc") as dc:
        emulator.levels_v[0] = float("nan")  # channel 1 answers 'nan', which JSON does not know
        line = JsonOfAnyReply._read_level_hw.__wrapped__.__code__.co_firstlineno + 1
        with pytest.raises(DeviceError, match=rf"^dc: {__name__}\.JsonOfAnyReply\._read_level_hw raised "
                                              rf"JSONDecodeError: Expecting value: line 1 column 1 \(char 0\) "
                                              rf"\({re.escape(__file__)}:{line}\); fix the driver there") as raised:
            dc._read_level_hw(1)
        assert isinstance(raised.value.__cause__, json.JSONDecodeError)
        with pytest.raises(MemoryError):
            dc.set_output(1, True)
        with pytest.raises(AssertionError, match=r"^a check of the driver's own"):
            dc.set_voltage(1, 1.5)
    assert not hasattr(SimulatedAnalogOutput._set_level_hw, "__wrapped__")


@pytest.mark.parametrize(("garbled", "said"), [(b"V", "reply 'ERR busy' to 'V1?' is not a number"),
                                               (b"O", "reply 'ERR busy' to 'O1?' is not 1 or 0")])
def test_the_example_driver_says_which_reply_to_which_command_it_cannot_read(pty_server, garbled: bytes,
                                                                             said: str) -> None:
    """The README gives this driver as the complete example of one with a line protocol of its own, after saying to
    raise DeviceError naming the instrument, the command and the reply; its level was a bare float() of the reply
    (a ValueError), and an output answered with anything but 1 was taken for off, though it may be on."""
    dc = DcSource(SerialTransport(pty_server(GarblingDcSourceEmulator(garbled)).resource, timeout_s=2.0), name="dc")
    with pytest.raises(DeviceError, match=rf"^dc: {re.escape(said)}$"):
        dc.connect()
    assert not dc.connected


def test_the_link_of_a_driver_that_failed_at_connect_is_closed_with_the_lab(pty_server, tmp_path) -> None:
    """A driver of its own protocol opens its transport in _connect_hw; where connect then failed, nothing closed it
    (ScpiDriver closes its own), and the port stayed open after the lab had closed."""
    from hil.lab import Lab

    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(f"instruments:\n  dc:\n    driver: {__name__}:DcSource\n"
                        f"    resource: {pty_server(GarblingDcSourceEmulator()).resource}\n")
    lab = Lab.load(lab_file)
    with pytest.raises(DeviceError, match=r"^dc: reply 'ERR busy' to 'V1\?' is not a number$"):
        lab.open()
    assert not lab.instruments["dc"].transport.is_open
