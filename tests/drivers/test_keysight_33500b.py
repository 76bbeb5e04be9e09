"""Keysight 33500B driver: byte-exact protocol, limits refused before any traffic, and runs against the
emulator served over TCP through pyvisa-py."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.keysight_33500b import Keysight33500B
from hil.clock import VirtualClock
from hil.errors import ConfigError, DeviceError, LimitError, TransportTimeout
from hil.testing import TIMED_OUT, Exchange, ProtocolTransport, block, expected_protocol
from hil.transport import VisaTransport
from simulators.emulators.keysight_33500b import Keysight33500BEmulator
from simulators.emulators.scpi import SETTINGS_CONFLICT, UNDEFINED_HEADER, ScpiError

IDN = b"Keysight Technologies,33522B,MY00000000,4.00-3.15-2.00-58-00"
ZERO = b"+0.000000000000000E+00"
ERRORS_CHECKED = (b"SYST:ERR?", b'+0,"No error"')
DC_OFF = (b"DC", ZERO, b"0")


class PatienceRecorded(ProtocolTransport):
    """A `ProtocolTransport` that records the timeout (s) each command was last written under."""

    def __init__(self, exchanges):
        super().__init__(exchanges)
        self.timeouts: dict[bytes, float] = {}

    def _write_raw(self, data: bytes) -> None:
        self.timeouts[data.rstrip(b"\n")[:40]] = self.timeout_s
        super()._write_raw(data)


def awg(**options):
    return lambda transport: Keysight33500B(transport, **options)


def connected(*channels: tuple[bytes, bytes, bytes], idn: bytes = IDN, load: bytes = b"50"):
    """The connect exchange; each channel is (FUNC? reply, VOLT:OFFS? reply if DC, OUTP? reply)."""
    channels = channels or (DC_OFF, DC_OFF)
    exchanges = [(b"*CLS", None), (b"*IDN?", idn), *limits(len(channels)), (b"FORM:BORD SWAP", None)]
    for n in range(1, len(channels) + 1):
        exchanges += [(b"OUTP%d:LOAD %s" % (n, load), None), (b"SOUR%d:VOLT:UNIT VPP" % n, None)]
    if len(channels) == 2:
        exchanges += couplings()
    exchanges.append(ERRORS_CHECKED)
    for n, (function, offset, output) in enumerate(channels, 1):
        exchanges.append((b"SOUR%d:FUNC?" % n, function))
        if function == b"DC":
            exchanges.append((b"SOUR%d:VOLT:OFFS?" % n, offset))
        exchanges.append((b"OUTP%d?" % n, output))
    return exchanges


def limits(n_channels: int, *on: int) -> list[tuple[bytes, bytes]]:
    """The voltage-limit queries at connect, one a channel, answered off except for the channels ``on``."""
    return [(b"SOUR%d:VOLT:LIM:STAT?" % n, b"1" if n in on else b"0") for n in range(1, n_channels + 1)]


def couplings(left: dict[bytes, bytes] | None = None) -> list[tuple[bytes, bytes]]:
    """A two-channel model's coupling queries at connect, answered as uncoupled except where ``left`` (query: reply)
    says what a previous user left."""
    queries = [(b"SOUR1:FREQ:COUP:STAT?", b"0"), (b"SOUR1:VOLT:COUP:STAT?", b"0"), (b"SOUR1:RATE:COUP:STAT?", b"0"),
               (b"SOUR1:TRAC?", b"OFF"), (b"SOUR2:TRAC?", b"OFF"), (b"SOUR1:COMB:FEED?", b"NONE"),
               (b"SOUR2:COMB:FEED?", b"NONE")]
    return [(query, (left or {}).get(query, reply)) for query, reply in queries]


def uploading(channel: int, data: np.ndarray, rate: bytes, offset: bytes,
              smallest: bytes = b"0.001") -> list[tuple[bytes, bytes | None]]:
    """`load_waveform` up to arming: the upload and its wait, the burst settings (advance at the sample rate, phase 0,
    no trigger delay, normal polarity), the smallest amplitude (1 mVpp into 50 Ω) and the offset, then the error
    check."""
    source = b"SOUR%d:" % channel
    return [(source + b"DATA:VOL:CLE", None), (source + b"DATA:ARB HIL_CH%d," % channel + block(data), None),
            (b"*OPC?", b"1"),
            (source + b"FUNC:ARB HIL_CH%d" % channel, None), (source + b"FUNC:ARB:SRAT " + rate, None),
            (source + b"FUNC:ARB:ADV SRAT", None),
            (source + b"FUNC:ARB:FILT STEP", None), (source + b"BURS:MODE TRIG", None),
            (source + b"BURS:NCYC 1", None), (source + b"BURS:PHAS 0", None), (b"TRIG%d:SOUR BUS" % channel, None),
            (b"TRIG%d:DEL 0" % channel, None), (b"OUTP%d:POL NORM" % channel, None),
            (source + b"VOLT " + smallest, None), (source + b"VOLT:OFFS " + offset, None), ERRORS_CHECKED]


def burst_ended(*channels: bytes, arbs: tuple[tuple[int, bytes, bytes], ...] = ()) -> tuple[bytes, bytes]:
    """``*OPC?`` confirming a burst's end, with each channel's output state, function and offset read in the same
    message, then the amplitude and sample rate of each channel the burst played; ``channels`` are the first replies
    (``b"0;ARB;-1"``: off, playing an arb, about -1 V), ``arbs`` the others (channel, Vpp, Sa/s)."""
    queries = b";".join(b":OUTP%d?;:SOUR%d:FUNC?;:SOUR%d:VOLT:OFFS?" % (n, n, n) for n in range(1, len(channels) + 1))
    queries += b"".join(b";:SOUR%d:VOLT?;:SOUR%d:FUNC:ARB:SRAT?" % (n, n) for n, _, _ in arbs)
    return (b"*OPC?;" + queries, b";".join([b"1", *channels, *(reply for _, *replies in arbs for reply in replies)]))


def outputs_read(*channels: bytes) -> tuple[bytes, bytes]:
    """The safe state's read of each channel's output state, function and offset; ``channels`` are their replies."""
    query, reply = burst_ended(*channels)
    return query.removeprefix(b"*OPC?;"), reply.removeprefix(b"1;")


#: Both channels off, each holding an arb about -1 V, as `_loaded` leaves them.
BOTH_LOADED = burst_ended(b"0;ARB;-1", b"0;ARB;-1", arbs=((1, b"4", b"1000"), (2, b"4", b"1000")))


def arming(channel: int, amplitude: bytes) -> list[tuple[bytes, bytes | None]]:
    """The one message that selects the arb, arms the burst and gives it its amplitude, then the error check."""
    source = b"SOUR%d:" % channel
    return [(b";:".join([source + b"FUNC ARB", source + b"BURS:STAT ON", source + b"VOLT " + amplitude]), None),
            ERRORS_CHECKED]


# -- byte-exact protocol -------------------------------------------------------------------------------------
def test_connect_sets_byte_order_load_and_units_then_reads_each_channel():
    exchanges = connected((b"DC", b"+2.500000000000000E-01", b"1"), (b"SIN", b"", b"0"))
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        assert inst.identify() == IDN.decode()
        assert (inst.model, inst.n_channels) == ("33522B", 2)
        assert inst.level_v == {1: 0.25, 2: None}
        assert inst.output_on == {1: True, 2: False}
        assert inst.function == {1: "DC", 2: "SIN"}


def test_single_channel_model_into_high_impedance():
    idn = b"Agilent Technologies,33521B,MY52000001,3.05-1.19-2.00-52-00"
    with expected_protocol(awg(load_ohm=None), connected(DC_OFF, idn=idn, load=b"INF")) as inst:
        inst.connect()
        assert inst.n_channels == 1
        assert (inst.limits["voltage_v"].min, inst.limits["voltage_v"].max) == (-10.0, 10.0)
        with pytest.raises(LimitError, match="channel 2 does not exist"):
            inst.set_voltage(2, 1.0)


@pytest.mark.parametrize(("model", "fewest"), [(b"33611A", 32), (b"33622A", 32), (b"33521B", 8), (b"33522B", 8)])
def test_the_fewest_waveform_points_follow_the_model(model, fewest):
    idn = b"Keysight Technologies," + model + b",MY00000000,1.00-1.00-1.00-1.00-00"
    channels = (DC_OFF,) * (2 if model.endswith((b"2A", b"2B")) else 1)
    with expected_protocol(awg(), connected(*channels, idn=idn)) as inst:
        inst.connect()
        assert inst.waveform_points == (fewest, 65_536)
        with pytest.raises(LimitError, match=rf"takes 1-D waveforms of {fewest}\.\.65536 points"):
            inst.load_waveform(1, np.zeros(fewest - 1), 1e3)  # nothing sent


def assert_connect_refused(exchanges: list[Exchange], match: str) -> None:
    """``connect`` over ``exchanges`` is a `DeviceError` matching ``match`` that leaves the link closed."""
    with expected_protocol(awg(), exchanges) as inst:
        with pytest.raises(DeviceError, match=match):
            inst.connect()
        assert not inst.connected and not inst.transport.is_open


def test_unknown_model_is_refused_and_the_connection_closed():
    exchanges = [(b"*CLS", None), (b"*IDN?", b"RIGOL TECHNOLOGIES,DG4162,DG4E0000,00.01.12")]
    assert_connect_refused(exchanges, "DG4162")


def test_connect_switches_off_the_channel_coupling_a_previous_user_left_with_the_outputs_off():
    left = {b"SOUR1:VOLT:COUP:STAT?": b"1", b"SOUR1:RATE:COUP:STAT?": b"1", b"SOUR2:TRAC?": b"INV",
            b"SOUR1:COMB:FEED?": b"CH2"}
    exchanges = connected()
    at = exchanges.index(couplings()[-1]) + 1
    exchanges[at - len(couplings()):at] = [*couplings(left), (b"OUTP1?", b"0"), (b"OUTP2?", b"0"),
                                           (b"SOUR1:VOLT:COUP:STAT OFF", None), (b"SOUR1:RATE:COUP:STAT OFF", None),
                                           (b"SOUR2:TRAC OFF", None), (b"SOUR1:COMB:FEED NONE", None)]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()


def test_connect_refuses_channels_left_coupled_with_an_output_on_and_changes_nothing():
    head = connected()[:connected().index(couplings()[0])]  # up to the output loads and amplitude units
    exchanges = [*head, *couplings({b"SOUR1:FREQ:COUP:STAT?": b"1"}), (b"OUTP1?", b"0"), (b"OUTP2?", b"1")]
    assert_connect_refused(exchanges, r"left the channels coupled \(to undo: SOUR1:FREQ:COUP:STAT OFF\) with "
                                      r"the output of channel\(s\) 2 on; switch the outputs off")


def test_a_coupling_the_firmware_does_not_know_is_passed_over_and_another_error_is_not():
    rate = (b"SOUR1:RATE:COUP:STAT?", TIMED_OUT)  # unanswered: an older firmware has no such command
    resync = [(b"*ESE 1;*ESE?;*IDN?", b"1;" + IDN), (b"*ESE 0", None)]
    couplings_ = couplings()
    at = connected().index(couplings_[0])
    skipped = [*couplings_[:2], rate, *resync, (b"SYST:ERR?", b'-113,"Undefined header"'), ERRORS_CHECKED,
               *couplings_[3:]]
    exchanges = [*connected()[:at], *skipped, *connected()[at + len(couplings_):]]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        assert inst.connected
    busy = [*connected()[:at], *couplings_[:2], rate, *resync, (b"SYST:ERR?", b'-350,"Queue overflow"'),
            ERRORS_CHECKED]
    with expected_protocol(awg(), busy) as inst, pytest.raises(TransportTimeout, match="SOUR1:RATE:COUP:STAT"):
        inst.connect()


def test_connect_refuses_voltage_limits_left_on_and_sends_nothing():
    """The 33500B takes no output load (``OUTPn:LOAD``, which connect sends) while a channel's voltage limits are on
    (33500 Series Operating and Service Guide, Output Termination: "You cannot change output termination with
    voltage limits enabled"), and inside them it would hold levels the lab allows. Connect sent the load regardless
    and failed on the instrument's error; now it names the limits, before it has changed anything."""
    exchanges = [(b"*CLS", None), (b"*IDN?", IDN), *limits(2, 2)]
    assert_connect_refused(exchanges, r"^Keysight33500B: the voltage limits of channel\(s\) 2 are on "
                                      r"\(SOURn:VOLT:LIM:STAT\), with which the instrument takes no output load")


def test_emulator_voltage_limits_left_on_refuse_a_load_and_the_driver_to_connect(tcp_server):
    emulator = Keysight33500BEmulator()
    assert _ask(emulator, b"SOUR2:VOLT:LIM:HIGH 1;:SOUR2:VOLT:LIM:LOW -1;:SOUR2:VOLT:LIM:STAT ON") is None
    assert _ask(emulator, b"SOUR2:VOLT:LIM:STAT?;:SOUR1:VOLT:LIM:STAT?") == b"1;0"
    assert _ask(emulator, b"SOUR2:VOLT:LIM:HIGH?;:SOUR2:VOLT:LIM:LOW?") == \
        b"+1.000000000000000E+00;-1.000000000000000E+00"
    assert _ask(emulator, b"OUTP2:LOAD 1000") is None
    assert emulator.errors.popleft()[0] == -221 and emulator.channels[2].load_ohm == 50.0
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), name="awg")
    with pytest.raises(DeviceError, match=r"voltage limits of channel\(s\) 2 are on"):
        inst.connect()
    assert not emulator.errors and emulator.byte_order == "NORM"  # nothing was sent
    assert _ask(emulator, b"SOUR2:VOLT:LIM:STAT OFF") is None
    inst.connect()
    assert emulator.channels[2].load_ohm == 50.0 and emulator.byte_order == "SWAP"
    inst.close()


def test_a_garbage_coupling_reply_is_a_device_error():
    exchanges = [*connected()[:connected().index(couplings()[0])], (b"SOUR1:FREQ:COUP:STAT?", b"0"),
                 (b"SOUR1:VOLT:COUP:STAT?", b"maybe")]
    with expected_protocol(awg(), exchanges) as inst, \
            pytest.raises(DeviceError, match=r"reply 'MAYBE' to 'SOUR1:VOLT:COUP:STAT\?' is not one of 0, 1"):
        inst.connect()


@pytest.mark.parametrize(("load_ohm", "peak_v"), [(50.0, 5.0), (None, 10.0), (1000.0, 10 * 1000 / 1050),
                                                  (1.0, 10 / 51)])
def test_voltage_limit_follows_the_load(load_ohm, peak_v):
    limit = awg(load_ohm=load_ohm)(None).limits["voltage_v"]
    assert (limit.min, limit.max) == (pytest.approx(-peak_v), pytest.approx(peak_v))


@pytest.mark.parametrize("load_ohm", [0.5, 20e3, math.nan, "fifty"])
def test_impossible_load_is_a_config_error(load_ohm):
    with pytest.raises(ConfigError, match="load_ohm"):
        Keysight33500B(None, load_ohm=load_ohm)  # type: ignore[arg-type]


@pytest.mark.parametrize(("load_ohm", "said"), [("50", "'50'"), (True, "True"), (np.array([50.0]), "a numpy array of "
                                                                                       "shape (1,)")])
def test_a_load_that_float_takes_but_is_no_number_is_refused_with_the_range_to_give(load_ohm, said):
    """float() took "50" and True: a load given as text or as true from Python was taken as 50 Ω or 1 Ω (a limit
    of ±0.2 V), and the message for what it refused said nothing of what to give."""
    with pytest.raises(ConfigError) as caught:
        Keysight33500B(None, load_ohm=load_ohm)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.detail) == (
        "load_ohm", f"{said} is not a number of ohms; give one in 1..10000 Ω, or null for high impedance")


def test_lab_limits_may_narrow_but_not_widen():
    assert awg(limits={"voltage_v": {"max": 2.0}})(None).limits["voltage_v"].max == 2.0
    with pytest.raises(ConfigError, match="widen"):
        awg(limits={"voltage_v": {"max": 6.0}})(None)


def test_set_voltage_on_a_dc_channel():
    exchanges = [*connected(), (b"SOUR1:VOLT:OFFS 0.5", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.set_voltage(1, 0.5)
        assert inst.level_v[1] == 0.5


def test_set_voltage_selects_the_dc_function_first():
    exchanges = [*connected(DC_OFF, (b"SIN", b"", b"0")),
                 (b"SOUR2:FUNC DC;:SOUR2:VOLT:OFFS -1.5", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.set_voltage(2, -1.5)
        assert inst.function[2] == "DC" and inst.level_v[2] == -1.5


def test_set_voltage_ramps_in_steps_of_max_step():
    exchanges = [*connected()]
    for step in (b"0.4", b"0.8", b"1.2"):
        exchanges += [(b"SOUR1:VOLT:OFFS " + step, None), ERRORS_CHECKED]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as inst:
        inst.connect()
        inst.set_voltage(1, 1.2)
        assert inst.level_v[1] == pytest.approx(1.2)


def test_output_on_and_off():
    exchanges = [*connected(), (b"OUTP2 ON", None), ERRORS_CHECKED, (b"OUTP2 OFF", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.set_output(2, True)
        assert inst.output_on[2] is True
        inst.set_output(2, False)
        assert inst.output_on[2] is False


def test_waveform_upload_sends_normalised_float32_block_and_arms_a_bus_triggered_burst():
    samples = [0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0]  # window 4 Vpp about 0 V: data = volts / 2
    data = np.array([0.0, 0.5, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5], dtype=np.float32)
    assert block(data)[:4] == b"#232"
    exchanges = [*connected(), *uploading(1, data, b"1000", b"0"), *arming(1, b"4")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, samples, 1000.0)
        assert inst.waveform_samples == {1: 8}
        assert inst.function[1] == "ARB" and inst.level_v[1] == 0.0  # held at the first sample
        assert inst.sample_rate_hz[1] == 1000.0


def test_the_upload_is_waited_on_with_patience_for_its_points_before_anything_else():
    samples = np.linspace(-1, 1, 5000)
    data = ((samples + 1) / 2).astype(np.float32)  # 4 Vpp about the first sample, -1 V
    transport = PatienceRecorded([*connected(), *uploading(1, data, b"1000", b"-1"), *arming(1, b"4")])
    inst = Keysight33500B(transport)
    inst.connect()
    inst.load_waveform(1, samples, 1e3)
    transport.assert_done()
    assert transport.timeouts[b"*OPC?"] == pytest.approx(1.0 + 5000 * 20e-6)  # the usual 1 s and 20 µs a point


def test_a_waveform_is_scaled_about_its_first_sample_where_the_range_allows():
    samples = np.array([-1.0, 3.0] * 4)  # about -1 V: ±4 V reaches 3 V and -5 V, inside ±5 V into 50 Ω
    data = np.array([0.0, 1.0] * 4, dtype=np.float32)
    exchanges = [*connected(), *uploading(1, data, b"2500000", b"-1"), *arming(1, b"8")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, samples, 2.5e6)


def test_a_waveform_the_range_cannot_hold_about_its_first_sample_is_refused_live_before_any_ramp():
    samples = np.array([-4.0, 4.0] * 4)  # about -4 V it would need ±8 V: only centring fits the ±5 V
    limits = {"voltage_v": {"max_step": 0.5}}
    with expected_protocol(awg(limits=limits), connected((b"DC", ZERO, b"1"), DC_OFF)) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=r"reaches 8 V from its first sample -4 V.*switch the output off"):
            inst.load_waveform(1, samples, 1e3)
        assert inst.level_v[1] == 0.0  # nothing was sent or ramped


def test_a_centred_waveform_loads_with_the_output_off_and_keeps_it_off_until_the_channel_is_dc_again():
    samples = np.array([-4.0, 4.0] * 4)
    data = np.array([-1.0, 1.0] * 4, dtype=np.float32)
    exchanges = [*connected(), *uploading(1, data, b"1000", b"0"), *arming(1, b"8"),
                 (b"SOUR1:FUNC DC;:SOUR1:VOLT:OFFS -4", None), ERRORS_CHECKED, (b"OUTP1 ON", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, samples, 1e3)
        assert inst.level_v[1] == -4.0 and inst.centred == {1}
        with pytest.raises(LimitError, match=r"may idle away from its offset.*set a DC level"):
            inst.set_output(1, True)
        inst.set_voltage(1, -4.0)  # the output is off: the pass through the centre harms nothing
        inst.set_output(1, True)


def test_a_waveform_scaled_about_its_first_sample_ends_the_hold_and_an_arb_found_at_connect_starts_one():
    samples = np.array([-4.0, 4.0] * 4)
    exchanges = [*connected((b"ARB", b"", b"0"), DC_OFF),
                 *uploading(1, np.array([-1.0, 1.0] * 4, dtype=np.float32), b"1000", b"0"), *arming(1, b"8"),
                 *uploading(1, np.array([0.0, 1.0] * 4, dtype=np.float32), b"1000", b"0"), *arming(1, b"8"),
                 (b"OUTP1 ON", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(LimitError, match="or found at connect"):  # an arb of unknown scaling
            inst.set_output(1, True)
        inst.load_waveform(1, samples, 1e3)  # centred
        inst.load_waveform(1, np.array([0.0, 4.0] * 4), 1e3)  # about its first sample: idles at its offset
        assert inst.centred == set()
        inst.set_output(1, True)


def test_scaling_about_the_first_sample_never_passes_the_instruments_peak_after_rounding():
    rng = np.random.default_rng(7)
    for load_ohm in (None, 50.0, 1000.0):
        with expected_protocol(awg(load_ohm=load_ohm), []) as inst:
            peak = inst.limits["voltage_v"].max  # 10·R/(R + 50) V, to the 9 digits sent, rounded down
            for _ in range(3000):
                first, top = rng.uniform(-peak, peak), peak * rng.uniform(0.999999, 1.0)
                samples = np.array([first, top, max(2 * first - top, -peak), first])  # up to the peak
                amplitude, offset, about_first = inst._scaling(samples)
                assert abs(offset) + amplitude / 2 <= peak
                if about_first:
                    assert amplitude / 2 >= (top - first) * (1 - 1e-7)


def test_flat_waveform_uses_the_smallest_amplitude_about_its_first_sample():
    data = np.zeros(8, dtype=np.float32)
    exchanges = [*connected(), *uploading(1, data, b"10", b"0"), *arming(1, b"0.001")]
    with expected_protocol(awg(limits={"voltage_v": {"min": 0.0}}), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.zeros(8), 10.0)


def _loaded(channel: int) -> list:
    data = np.linspace(0, 1, 8, dtype=np.float32)  # -1..1 V about the first sample, -1 V
    return [*uploading(channel, data, b"1000", b"-1"), *arming(channel, b"4")]


def test_a_live_channel_is_ramped_to_the_first_sample_then_held_as_dc_while_the_next_waveform_loads():
    first, second = np.array([1.2, -1.0] * 4), np.array([1.0, -1.0] * 4)
    exchanges = [*connected((b"DC", ZERO, b"1"), DC_OFF)]
    for step in (b"0.4", b"0.8", b"1.2"):
        exchanges += [(b"SOUR1:VOLT:OFFS " + step, None), ERRORS_CHECKED]
    exchanges += [*uploading(1, np.array([0.0, -1.0] * 4, dtype=np.float32), b"1000", b"1.2"),
                  *arming(1, b"4.4"),
                  (b"SOUR1:FUNC DC;:SOUR1:VOLT:OFFS 1.2", None), ERRORS_CHECKED,  # before the memory is cleared
                  *uploading(1, np.array([0.0, -1.0] * 4, dtype=np.float32), b"1000", b"1"),  # 0.2 V step
                  *arming(1, b"4")]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, first, 1000)
        assert inst.level_v[1] == 1.2
        inst.load_waveform(1, second, 1000)  # 0.2 V from the held level: within max_step, no ramp
        assert inst.level_v[1] == 1.0


def test_play_every_loaded_channel_with_one_bus_trigger_or_one_channel_alone_and_waits_for_the_burst_to_end():
    longer = np.linspace(-1, 1, 4000)
    exchanges = [*connected(), *_loaded(1), *_loaded(2), (b"*TRG", None), BOTH_LOADED, ERRORS_CHECKED,
                 *uploading(2, ((longer + 1) / 2).astype(np.float32), b"100000", b"-1"), *arming(2, b"4"),
                 (b"TRIG2", None), burst_ended(b"0;ARB;-1", b"0;ARB;-1", arbs=((2, b"4", b"100000"),)),
                 ERRORS_CHECKED]
    transport, clock = PatienceRecorded(exchanges), VirtualClock()
    inst = Keysight33500B(transport, clock=clock)
    inst.connect()
    inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
    inst.load_waveform(2, np.linspace(-1, 1, 8), 1000)
    started = clock.now()
    inst.play()
    assert clock.now() - started == pytest.approx(8 / 1000)  # the burst is slept with nothing pending on the link
    assert transport.timeouts[BOTH_LOADED[0][:40]] == pytest.approx(1.0 + 0.1)  # then its end confirmed, with a margin
    inst.load_waveform(2, longer, 1e5)
    started = clock.now()
    inst.play([2])
    assert clock.now() - started == pytest.approx(4000 / 1e5)
    transport.assert_done()


def test_play_without_a_waveform_sends_nothing():
    with expected_protocol(awg(), connected()) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match="no waveform loaded"):
            inst.play()
        with pytest.raises(DeviceError, match="no waveform loaded on channel 1"):
            inst.play([1])


def test_instrument_error_raises_device_error_with_its_message_and_forgets_the_level():
    exchanges = [*connected(), (b"SOUR1:VOLT:OFFS 4.5", None),
                 (b"SYST:ERR?", b'-222,"Data out of range;value clipped to upper limit"'),
                 (b"SYST:ERR?", b'-221,"Settings conflict"'), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match=r"-222 Data out of range;value clipped to upper limit; -221 "):
            inst.set_voltage(1, 4.5)
        assert inst.level_v[1] is None


def test_an_output_at_an_unknown_level_stays_off_until_a_level_is_set():
    """A level the instrument refused part-way is unknown: switching the output on could put anything on the device,
    so it is refused with nothing sent, and allowed again once a level is set."""
    exchanges = [*connected(), (b"SOUR1:VOLT:OFFS 4.5", None),
                 (b"SYST:ERR?", b'-222,"Data out of range;value clipped to upper limit"'), ERRORS_CHECKED,
                 (b"SOUR1:VOLT:OFFS 0.5", None), ERRORS_CHECKED, (b"OUTP1 ON", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError):
            inst.set_voltage(1, 4.5)
        with pytest.raises(LimitError, match=r"channel 1 is at an unknown level; set a voltage .* before switching"):
            inst.set_output(1, True)
        inst.set_voltage(1, 0.5)
        inst.set_output(1, True)
        assert inst.output_on[1] is True


@pytest.mark.parametrize(("exchange", "reply"), [(b"OUTP1?", b"ON?"), (b"SOUR1:FUNC?", b"\x15garbage")])
def test_garbage_reply_raises_device_error(exchange, reply):
    exchanges = [(sent, reply if sent == exchange else answer) for sent, answer in connected()]
    exchanges = exchanges[:[sent for sent, _ in exchanges].index(exchange) + 1]
    with expected_protocol(awg(), exchanges) as inst:
        with pytest.raises(DeviceError, match="reply"):
            inst.connect()
        assert not inst.transport.is_open


@pytest.mark.parametrize("level", [b"+9.9E+37x", b"NAN", b"+1E+999"])  # the last overflows to infinity
def test_non_numeric_level_is_a_device_error(level):
    exchanges = connected((b"DC", level, b"0"), DC_OFF)[:-4]
    with expected_protocol(awg(), exchanges) as inst, pytest.raises(DeviceError, match="not a finite number"):
        inst.connect()


def test_safe_state_switches_an_unknown_channel_off_first_and_ramps_a_known_one():
    exchanges = [*connected((b"ARB", b"", b"1"), (b"DC", b"+1.000000000000000E+00", b"1")),
                 ERRORS_CHECKED,  # errors left by earlier commands are read first
                 outputs_read(b"1;ARB;+0.0E+00", b"1;DC;+1.000000000000000E+00"),  # then where the outputs are
                 (b"OUTP1 OFF", None), ERRORS_CHECKED,
                 (b"SOUR1:FUNC DC;:SOUR1:VOLT:OFFS 0", None), ERRORS_CHECKED,
                 (b"SOUR2:VOLT:OFFS 0.5", None), ERRORS_CHECKED, (b"SOUR2:VOLT:OFFS 0", None), ERRORS_CHECKED,
                 (b"OUTP2 OFF", None), ERRORS_CHECKED]
    with expected_protocol(awg(limits={"voltage_v": {"max_step": 0.5}}), exchanges) as inst:
        inst.connect()
        inst.safe_state()
        assert inst.level_v == {1: 0.0, 2: 0.0} and inst.output_on == {1: False, 2: False}


def test_safe_state_switches_a_channel_off_when_its_ramp_fails_and_reports_a_stale_error_after():
    exchanges = [*connected((b"DC", b"+1.500000000000000E+00", b"1"), DC_OFF),
                 (b"SYST:ERR?", b'-113,"Undefined header"'), ERRORS_CHECKED,
                 outputs_read(b"1;DC;+1.500000000000000E+00", b"0;DC;" + ZERO),
                 (b"SOUR1:VOLT:OFFS 0", None), (b"SYST:ERR?", b'-222,"Data out of range"'), ERRORS_CHECKED,
                 (b"OUTP1 OFF", None), ERRORS_CHECKED,
                 (b"SOUR2:VOLT:OFFS 0", None), ERRORS_CHECKED, (b"OUTP2 OFF", None), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match=r"-222.*before it.*-113"):
            inst.safe_state()
        assert inst.output_on == {1: False, 2: False}


def test_safe_state_ramps_back_from_a_level_outside_the_lab_limits():
    exchanges = [*connected((b"DC", b"+4.000000000000000E+00", b"1"), DC_OFF), ERRORS_CHECKED,
                 outputs_read(b"1;DC;+4.000000000000000E+00", b"0;DC;" + ZERO),
                 *[x for v in (b"3", b"2", b"1", b"0") for x in ((b"SOUR1:VOLT:OFFS " + v, None), ERRORS_CHECKED)],
                 (b"OUTP1 OFF", None), ERRORS_CHECKED,
                 (b"SOUR2:VOLT:OFFS 0", None), ERRORS_CHECKED, (b"OUTP2 OFF", None), ERRORS_CHECKED]
    with expected_protocol(awg(limits={"voltage_v": {"min": -3, "max": 3, "max_step": 1}}), exchanges) as inst:
        inst.connect()
        inst.safe_state()
        assert inst.level_v == {1: 0.0, 2: 0.0} and inst.output_on == {1: False, 2: False}


def test_snapshot_adds_model_load_and_function():
    with expected_protocol(awg(load_ohm=1000), connected(DC_OFF, (b"SQU", b"", b"0"), load=b"1000")) as inst:
        inst.connect()
        snapshot = inst.snapshot()
    assert snapshot["model"] == "33522B"
    assert snapshot["load_ohm"] == {1: 1000.0, 2: 1000.0}
    assert snapshot["function"] == {1: "DC", 2: "SQU"}
    assert snapshot["level_v"] == {1: 0.0, 2: None}
    assert snapshot["limits"]["voltage_v"]["max"] == pytest.approx(10 * 1000 / 1050)


# -- limits are refused before anything is sent --------------------------------------------------------------
@pytest.mark.parametrize("voltage_v", [5.01, -6.0, math.nan, math.inf, "one volt"])
def test_out_of_range_voltage_sends_nothing(voltage_v):
    with expected_protocol(awg(), connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError):
            inst.set_voltage(1, voltage_v)
        assert inst.level_v[1] == 0.0


@pytest.mark.parametrize(("samples", "rate", "match"), [
    (np.zeros(7), 1e3, r"shape \(7,\)"),
    (np.zeros(65_537), 1e3, r"shape \(65537,\)"),
    ([0, 1, 2, 3, 4, 5, 5.5, 0], 1e3, r"waveform\[6\]"),
    ([0, 1, 2, np.nan, 4, 5, 0, 0], 1e3, r"waveform\[3\]"),
    (np.zeros(8), 200e6, "sample_rate_hz"),
    (np.zeros(8), 0.0, "sample_rate_hz"),
])
def test_bad_waveform_sends_nothing(samples, rate, match):
    with expected_protocol(awg(), connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=match):
            inst.load_waveform(1, samples, rate)
        assert inst.waveform_samples == {} and inst.level_v[1] == 0.0


def test_waveform_outside_the_lab_limits_sends_nothing():
    with expected_protocol(awg(limits={"voltage_v": {"min": -1.0, "max": 1.0}}), connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=r"waveform\[1\]"):
            inst.load_waveform(2, [0, 1.5, 0, 0, 0, 0, 0, 0], 1e3)


# -- the unchanged driver against the emulator over TCP ------------------------------------------------------
@pytest.fixture
def bench(tcp_server):
    """An emulated 33522B on a TCP socket and a driver talking to it through pyvisa-py."""
    emulator = Keysight33500BEmulator()
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), name="awg")
    yield inst.connect(), emulator
    inst.close()


def test_emulator_dc_level_and_output(bench):
    inst, emulator = bench
    assert inst.identify().startswith("Keysight Technologies,33522B")
    assert emulator.channels[1].load_ohm == 50.0 and emulator.byte_order == "SWAP"
    inst.set_voltage(1, 1.25)
    inst.set_output(1, True)
    assert emulator.output_v(1) == 1.25
    assert inst.query("SOUR1:VOLT:OFFS?") == "+1.250000000000000E+00"
    assert inst._read_level_hw(1) == 1.25 and inst._read_output_hw(1) is True


def test_a_connection_the_awg_closed_is_opened_again_to_reach_the_safe_state(tcp_server):
    """The 33500B closed the connection (a LAN reset) while its output was on: the safe state failed on the dead
    socket and left it on."""
    emulator = Keysight33500BEmulator()
    server = tcp_server(emulator)
    inst = Keysight33500B(VisaTransport(server.resource, timeout_s=2.0), name="awg").connect()
    inst.set_voltage(1, 1.25)
    inst.set_output(1, True)
    server.stop()  # the connection is dropped; the instrument, still on, listens again
    server.start()
    inst.close()
    assert not emulator.channels[1].output_on and emulator.channels[1].offset_v == 0.0


@pytest.fixture
def playing(tcp_server):
    """An emulated 33522B and a driver (max_step 1 V) whose channel 1 plays an arb about 0.5 V, live, while channel 2
    holds 2 V, live: a resistive network's inputs and a gate."""
    emulator = Keysight33500BEmulator()
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), name="awg",
                          clock=VirtualClock(), limits={"voltage_v": {"max_step": 1.0}}).connect()
    inst.safe_state()  # from its power-on sine
    for channel, level in ((1, 0.5), (2, 2.0)):
        inst.set_voltage(channel, level)
        inst.set_output(channel, True)
    inst.load_waveform(1, np.linspace(0.5, 1.0, 16), 1e4)
    inst.play([1])
    yield inst, emulator
    inst.close()


def test_emulated_output_the_generator_switched_off_itself_is_no_play(playing):
    """Its output protection switches an overloaded output off (as does its front-panel key) without a byte from
    the driver: what a reader records meanwhile is of a dead output, and must not be taken as data."""
    inst, emulator = playing
    emulator.channels[1].output_on = False  # what the output protection does
    with pytest.raises(DeviceError, match=r"^awg: after the burst on channel\(s\) 1 the instrument has channel 1 "
                                          r"output off, not on as this driver left it \(its protection switched an "
                                          r"output off, .*\): what was measured meanwhile is not of the settings sent; "
                                          r"check the instrument and the device under test, then try again$"):
        inst.play([1])
    assert inst.output_on == {1: False, 2: True}
    inst.safe_state()
    assert [(state.output_on, state.offset_v) for state in emulator.channels.values()] == [(False, 0.0)] * 2


@pytest.mark.parametrize(("command", "said"), [
    (b"SOUR1:VOLT 0.2", r"channel 1 amplitude 0\.2 Vpp, not 1 Vpp"),
    (b"SOUR1:FUNC:ARB:SRAT 20000", r"channel 1 sample rate 20000 Sa/s, not 10000 Sa/s"),
])
def test_emulated_arb_the_front_panel_rescaled_or_retimed_is_no_play_until_loaded_again(playing, command, said):
    """The front panel's amplitude or sample-rate knob (or another program) changes what the armed arb plays, with
    its output, function and offset as they were: a reader records the device under another drive, which must not be
    taken as data. The channel has no waveform until one is loaded again, which sets both anew (after the safe state,
    as after any failed play: the level is then unknown)."""
    inst, emulator = playing
    assert _ask(emulator, command) is None
    with pytest.raises(DeviceError, match=rf"after the burst on channel\(s\) 1 the instrument has {said} as this "
                                          "driver left it"):
        inst.play([1])
    with pytest.raises(DeviceError, match="no waveform loaded on channel 1"):
        inst.play([1])
    inst.safe_state()
    inst.load_waveform(1, np.linspace(0.5, 1.0, 16), 1e4)
    inst.play([1])
    assert (emulator.channels[1].amplitude_vpp, emulator.channels[1].sample_rate_hz) == pytest.approx((1.0, 1e4))


def _safe_state_ramps_the_gate_down_from_4_5_v(inst: Keysight33500B, emulator: Keysight33500BEmulator) -> None:
    """The safe state of ``playing``'s generator, its gate (channel 2) at 4.5 V: ramped down in steps of max_step (1 V)
    from there, every channel then off at 0 V."""
    emulator.received.clear()
    inst.safe_state()
    steps = [float(m.split()[-1]) for m in emulator.received if m.startswith(b"SOUR2:VOLT:OFFS ")]
    assert steps == pytest.approx([3.6, 2.7, 1.8, 0.9, 0.0])
    assert [(state.output_on, state.offset_v) for state in emulator.channels.values()] == [(False, 0.0)] * 2


def test_emulated_level_another_program_set_is_no_play_and_the_safe_state_ramps_from_it(playing):
    """Another program (or the front panel) sets the gate to 4.5 V: the play is refused, and the safe state ramps
    the gate down from 4.5 V in steps of max_step (1 V), not from the 2 V the driver set, which would step 4.5 V to
    1 V at once."""
    inst, emulator = playing
    assert _ask(emulator, b"SOUR2:VOLT:OFFS 4.5") is None
    with pytest.raises(DeviceError, match=r"the instrument has channel 2 at 4\.5 V, not 2 V as this driver left it"):
        inst.play([1])
    assert inst.level_v[2] == 4.5
    _safe_state_ramps_the_gate_down_from_4_5_v(inst, emulator)


def test_emulated_level_another_program_set_after_the_last_play_is_ramped_down_from(playing):
    """Set to 4.5 V by another program after the last play, then the run's end: the safe state reads where the gate
    is and ramps it down from 4.5 V in steps of max_step (1 V), not from the 2 V the driver set."""
    inst, emulator = playing
    assert _ask(emulator, b"SOUR2:VOLT:OFFS 4.5") is None
    _safe_state_ramps_the_gate_down_from_4_5_v(inst, emulator)


def test_emulated_restart_on_a_link_that_outlives_it_is_no_play(playing):
    """Power-cycled on a link that outlives it (GPIB), the generator comes back at its power-on state: outputs off,
    a sine, no arb in memory."""
    inst, emulator = playing
    emulator.reset()
    with pytest.raises(DeviceError, match=r"channel 1 output off, not on; channel 1 function SIN, not ARB; channel 2 "
                                          r"output off, not on; channel 2 function SIN, not DC as this driver left it "
                                          r"\(.*\) \(it reported: -211 Trigger ignored.*\): what was measured"):
        inst.play([1])  # the restarted generator had no arb to trigger
    assert (inst.output_on, inst.level_v, inst.centred) == ({1: False, 2: False}, {1: None, 2: None}, {1, 2})
    with pytest.raises(DeviceError, match="no waveform loaded on channel 1"):
        inst.play([1])
    inst.safe_state()
    assert [(state.output_on, state.offset_v) for state in emulator.channels.values()] == [(False, 0.0)] * 2


def test_a_reply_to_the_state_read_at_a_bursts_end_that_is_not_each_channels_is_a_device_error():
    exchanges = [*connected(), *_loaded(1), *_loaded(2), (b"*TRG", None), (BOTH_LOADED[0], b"1;0;ARB;-1;0;ARB"),
                 (b"*TRG", None), (b"*ESE 1;*ESE?;*IDN?", b"1;" + IDN), (b"*ESE 0", None),
                 (BOTH_LOADED[0], b"1;0;ARB;-1;0;XYZ;-1;4;1000;4;1000")]
    with expected_protocol(lambda transport: Keysight33500B(transport, clock=VirtualClock()), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)
        inst.load_waveform(2, np.linspace(-1, 1, 8), 1000)
        with pytest.raises(DeviceError, match=r"reply '1;0;ARB;-1;0;ARB' to '\*OPC\?;:OUTP1\?;.*' after the burst "
                                              r"on channel\(s\) 1, 2 is not 1 and 10 replies"):
            inst.play()
        with pytest.raises(DeviceError, match=r"replies '0;ARB;-1;0;XYZ;-1' after the burst on channel\(s\) 1, 2 are "
                                              r"not each channel's output state, function and offset"):
            inst.play()


@pytest.mark.parametrize("load_ohm", [None, 50.0, 1000.0, 333.0, 7.0])
def test_every_level_and_waveform_inside_the_limit_is_taken_and_played_as_asked(tcp_server, load_ohm):
    """Numbers are sent to 9 digits, rounded to the nearest, which crossed the instrument's bounds where 10·R/(R + 50)
    V or 2 mVpp·R/(R + 50) has more: into 1 kΩ a flat waveform's amplitude, 0.0019047619, was below the smallest,
    into 7 Ω a level at the limit, 1.22807018 V, above the peak, and into 333 Ω a flat waveform at the limit was given
    an offset past it and an amplitude trimmed below the smallest: each refused with -222, a `DeviceError`."""
    emulator = Keysight33500BEmulator()
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), name="awg", load_ohm=load_ohm,
                          clock=VirtualClock()).connect()
    peak = inst.limits["voltage_v"].max
    volts = st.sampled_from([peak, -peak, 0.0]) | st.floats(-peak, peak)

    @settings(max_examples=12, deadline=None, derandomize=True, database=None)
    @given(st.lists(volts, min_size=8, max_size=12))
    def taken_and_played(samples: list[float]) -> None:
        inst.set_voltage(1, samples[0])
        inst.load_waveform(1, samples, 1e6)
        inst.play([1])
        np.testing.assert_allclose(emulator.played[-1].volts_v, samples, rtol=0, atol=1e-7 * peak)

    try:
        taken_and_played()
    finally:
        inst.close()


def test_emulator_plays_the_requested_volts(bench):
    inst, emulator = bench
    t = np.arange(500) / 50e3
    samples_1 = 0.3 + 2.0 * np.sin(2 * np.pi * 1e3 * t)
    samples_2 = np.linspace(-4.5, 0.5, 100)
    inst.load_waveform(1, samples_1, 50e3)
    inst.load_waveform(2, samples_2, 1e6)
    inst.set_output(1, True)
    assert emulator.played == []
    inst.play()
    (first, second) = emulator.played
    assert (first.channel, first.sample_rate_hz, first.output_on) == (1, 50e3, True)
    assert (second.channel, second.sample_rate_hz, second.output_on) == (2, 1e6, False)
    np.testing.assert_allclose(first.volts_v, samples_1, rtol=0, atol=2.5e-7)
    np.testing.assert_allclose(second.volts_v, samples_2, rtol=0, atol=4e-7)
    assert emulator.output_v(1) == pytest.approx(samples_1[0], abs=1e-6)  # idles at the first sample
    inst.play([2])
    assert [p.channel for p in emulator.played] == [1, 2, 2]
    assert inst.query("SOUR1:DATA:VOL:CAT?") == '"HIL_CH1"'


def test_emulator_plays_the_requested_volts_whatever_advance_phase_polarity_and_delay_a_previous_user_left(tcp_server):
    emulator = Keysight33500BEmulator()
    for n in (1, 2):
        assert _ask(emulator, b"SOUR%d:BURS:PHAS 90;:OUTP%d:POL INV;:TRIG%d:DEL 0.5;:SOUR%d:FUNC:ARB:ADV TRIG"
                    % (n, n, n, n)) is None
    assert not emulator.errors
    samples = np.linspace(-1.0, 2.0, 16)
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg") as inst:
        inst.load_waveform(1, samples, 1e3)
        inst.set_output(1, True)
        assert emulator.output_v(1) == pytest.approx(-1.0, abs=1e-6)  # idles at the first sample
        inst.play()
        np.testing.assert_allclose(emulator.played[0].volts_v, samples, atol=1e-6)
        state = emulator.channels[1]
        assert (state.burst_phase_deg, state.polarity, state.trigger_delay_s, state.arb_advance) == \
            (0.0, "NORM", 0.0, "SRAT")


def test_emulator_a_play_never_triggers_a_burst_a_previous_user_armed_on_the_other_channel(tcp_server):
    """``*TRG`` fires every channel on the bus trigger: where a channel this driver has not set to DC nor loaded may
    be armed (found at connect playing an arb, live), a play starts its own channels one by one."""
    emulator = Keysight33500BEmulator()
    assert _ask(emulator, b"SOUR2:DATA:ARB OLD,0,1,0,-1,0,1,0,-1;:SOUR2:FUNC:ARB OLD;:SOUR2:FUNC ARB;"
                          b":SOUR2:BURS:STAT ON;:TRIG2:SOUR BUS;:OUTP2 ON") is None and not emulator.errors
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg") as inst:
        inst.load_waveform(1, np.linspace(-1.0, 1.0, 16), 1e3)
        inst.play()
        assert [p.channel for p in emulator.played] == [1]


def test_emulator_channels_stay_independent_whatever_coupling_a_previous_user_left(tcp_server):
    emulator = Keysight33500BEmulator()
    assert _ask(emulator, b"SOUR1:VOLT:COUP:STAT ON;:SOUR1:TRAC INV;:SOUR2:COMB:FEED CH1;:SOUR1:FREQ:COUP ON") is None
    assert not emulator.errors
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg") as inst:
        inst.set_voltage(1, 1.0)
        inst.set_voltage(2, -0.5)
        inst.set_output(1, True)
        inst.set_output(2, True)
        assert (emulator.output_v(1), emulator.output_v(2)) == (1.0, -0.5)  # coupled: -0.5 and -1.0 (combined)
        assert (emulator.coupled, emulator.tracking) == ({"FREQ": False, "RATE": False, "VOLT": False}, "OFF")


def test_emulator_each_channel_plays_at_its_own_sample_rate_whatever_rate_coupling_a_previous_user_left(tcp_server):
    emulator = Keysight33500BEmulator()
    assert _ask(emulator, b"SOUR1:RATE:COUP ON") is None and not emulator.errors
    samples = np.linspace(-1.0, 1.0, 16)
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg") as inst:
        inst.load_waveform(1, samples, 1e3)
        inst.load_waveform(2, samples, 4e3)  # coupled, this would set channel 1's rate too
        inst.play()
        assert {p.channel: p.sample_rate_hz for p in emulator.played} == {1: 1e3, 2: 4e3}
        assert emulator.coupled["RATE"] is False


def test_emulator_a_level_left_beyond_the_lab_limit_is_not_switched_on(tcp_server):
    emulator = Keysight33500BEmulator()
    assert _ask(emulator, b"SOUR1:FUNC DC;:SOUR1:VOLT:OFFS 4") is None  # a previous user's 4 V, output off
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg",
                        limits={"voltage_v": {"min": -2, "max": 2, "max_step": 5}}) as inst:
        with pytest.raises(LimitError, match=r"^awg: channel 1 is at 4 V, outside the limit -2\.\.2 V; set a voltage "
                                             r"within it before switching the output on$"):
            inst.set_output(1, True)
        assert emulator.channels[1].output_on is False
        inst.set_voltage(1, 1.5)
        inst.set_output(1, True)
        assert emulator.output_v(1) == 1.5


def test_emulator_of_a_firmware_without_rate_coupling_connects_after_one_timeout(tcp_server):
    class OlderFirmware(Keysight33500BEmulator):
        def _rate_coupling_query(self, channel: int) -> str:
            raise ScpiError(UNDEFINED_HEADER, "RATE:COUP")

    emulator = OlderFirmware()
    assert _ask(emulator, b"SOUR1:VOLT:COUP ON") is None
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=0.3), name="awg") as inst:
        assert not inst.transport.out_of_step and not emulator.errors
        assert emulator.coupled["VOLT"] is False  # the couplings it knows are still switched off
        inst.set_voltage(1, 0.5)
        assert emulator.channels[1].offset_v == 0.5


def test_emulator_of_a_firmware_without_voltage_limits_connects_after_one_timeout(tcp_server):
    """The driver asked every channel's SOURn:VOLT:LIM:STAT? with no way past a firmware that lacks it, as it has for
    a coupling such a firmware lacks: the connect would fail on the unanswered query."""
    class OlderFirmware(Keysight33500BEmulator):
        def _limit_state_query(self, channel: int) -> str:
            raise ScpiError(UNDEFINED_HEADER, "VOLT:LIM")

    emulator = OlderFirmware()
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=0.3), name="awg") as inst:
        assert not inst.transport.out_of_step and not emulator.errors
        inst.set_voltage(1, 0.5)
        assert emulator.channels[1].offset_v == 0.5


def test_emulator_that_leaves_the_voltage_limit_query_unanswered_for_another_reason_is_not_connected(tcp_server):
    """An unanswered voltage-limit query is passed over only where the instrument queued "Undefined header" for it
    alone (a firmware without voltage limits); with another error queued, the limits may be on: the connect fails on
    the timeout, naming the query, and closes the link with nothing set (no output load sent)."""
    class Conflicted(Keysight33500BEmulator):
        def _limit_state_query(self, channel: int) -> str:
            raise ScpiError(SETTINGS_CONFLICT, "VOLT:LIM")

    emulator = Conflicted()
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=0.3), name="awg")
    with pytest.raises(TransportTimeout, match=r"^awg \(.*\): no reply within 0\.3 s to 'SOUR1:VOLT:LIM:STAT\?'"):
        inst.connect()
    assert not inst.connected and not inst.transport.is_open
    assert not any(b"LOAD" in message for message in emulator.received)


def test_emulator_coupling_copies_settings_and_combining_adds_the_other_channel():
    e = Keysight33500BEmulator()
    assert _ask(e, b"SOUR1:FUNC DC;:SOUR2:FUNC DC;:OUTP1 ON;:OUTP2 ON;:SOUR1:TRAC INV;:SOUR1:VOLT:OFFS 1") is None
    assert (e.output_v(1), e.output_v(2)) == (1.0, 1.0)  # INV inverts the waveform, not the DC offset (manual)
    assert (e.channels[1].polarity, e.channels[2].polarity) == ("NORM", "INV")
    assert _ask(e, b"SOUR2:VOLT:OFFS 0.5") is None  # tracking: a change to either channel is reflected in both
    assert (e.output_v(1), e.output_v(2)) == (0.5, 0.5)
    assert _ask(e, b"SOUR1:TRAC OFF;:SOUR1:VOLT:COUP ON;:SOUR2:VOLT:OFFS 0.25") is None
    assert (e.output_v(1), e.output_v(2)) == (0.25, 0.25)
    assert _ask(e, b"SOUR1:VOLT:COUP OFF;:SOUR1:VOLT:OFFS 2;:SOUR2:COMB:FEED CH1") is None
    assert (e.output_v(1), e.output_v(2)) == (2.0, 2.25)
    assert _ask(e, b"SOUR1:RATE:COUP ON;:SOUR2:FUNC:ARB:SRAT 2e3") is None
    assert (e.channels[1].sample_rate_hz, e.channels[2].sample_rate_hz) == (2e3, 2e3)
    assert _ask(e, b"SOUR2:COMB:FEED CH2") is None and e.errors[-1][0] == -221  # not with itself
    single = Keysight33500BEmulator(channels=1)
    assert _ask(single, b"SOUR1:TRAC?") is None and single.errors[-1][0] == -113


def test_emulator_a_live_channel_holds_its_level_through_waveform_loads_and_back_to_dc(bench):
    inst, emulator = bench
    inst.set_voltage(1, 0.3)
    inst.set_output(1, True)
    states = []
    dispatch = emulator._dispatch

    def watched(header: str, params: list) -> object:  # the output after every command, inside messages too
        reply = dispatch(header, params)
        if not emulator.burst_running(1):  # between bursts: the output must hold
            states.append((emulator.output_v(1), emulator.channels[1].amplitude_vpp))
        return reply

    emulator._dispatch = watched
    for samples in ([0.3, 2.0, -1.0, 0.3] * 2, [0.3, 1.0, 0.5, 0.0] * 2):
        inst.load_waveform(1, samples, 1e3)
        inst.play([1])
    inst.set_voltage(1, 0.3)
    assert len(states) > 30
    for level, amplitude in states:  # still at 0.3 V, or an unarmed arb at 1 mVpp for one command
        assert level == pytest.approx(0.3, abs=1e-6) or (level is None and amplitude <= 1e-3)


def test_emulator_play_returns_once_the_burst_has_ended_so_nothing_cuts_it_short(bench):
    inst, emulator = bench
    samples = np.sin(np.linspace(0, 2 * np.pi, 2000))
    inst.load_waveform(1, samples, 40e3)  # 50 ms
    inst.set_output(1, True)
    inst.play()
    inst.play()  # a trigger while the first burst ran would be ignored (-211)
    inst.set_voltage(1, 0.0)  # FUNC DC while a burst ran would cut it short
    assert [(p.cut, len(p.volts_v)) for p in emulator.played] == [(False, 2000), (False, 2000)]
    np.testing.assert_allclose(emulator.played[1].volts_v, samples, atol=1e-6)



class CtrlCInLongSleep(VirtualClock):
    """A clock on which the first sleep of a second or more is interrupted, as by Ctrl-C."""

    def sleep(self, seconds: float) -> None:
        if seconds >= 1.0:
            raise KeyboardInterrupt
        super().sleep(seconds)


def test_ctrl_c_during_a_burst_leaves_no_reply_pending_and_the_safe_state_ends_the_burst(tcp_server):
    emulator = Keysight33500BEmulator()
    inst = Keysight33500B(VisaTransport(tcp_server(emulator).resource, timeout_s=2.0), name="awg",
                          clock=CtrlCInLongSleep()).connect()
    inst.load_waveform(1, np.linspace(0.0, 0.5, 8), 1.0)  # an 8 s burst
    inst.set_output(1, True)
    with pytest.raises(KeyboardInterrupt):
        inst.play()
    assert inst.level_v[1] is None  # somewhere in the waveform
    assert not inst.transport.out_of_step and inst.query("*IDN?") == inst.idn  # no reply was left pending
    assert emulator.burst_running(1)
    inst.safe_state()  # switches the channel off first, then to 0 V: that ends the burst
    state = emulator.channels[1]
    assert emulator.played[0].cut and not state.output_on and state.function == "DC" and state.offset_v == 0.0
    assert not emulator.errors
    inst.close()

def test_emulator_reports_a_raw_out_of_range_command(bench):
    inst, emulator = bench
    inst.transport.write("SOUR1:VOLT:OFFS 7")  # channel 1 plays a 0.1 Vpp sine (power-on): 4.95 V at most
    assert inst.transport.query("SYST:ERR?") == '-222,"Data out of range;value clipped to upper limit"'
    assert emulator.channels[1].offset_v == pytest.approx(4.95)
    inst.transport.write("SOUR2:VOLTAGE:OFFSET -12;:BOGUS:HEADER")
    with pytest.raises(DeviceError, match=r"-222 Data out of range.*-113 Undefined header"):
        inst.check_errors()
    inst.check_errors()  # the queue is empty now


def test_emulator_safe_state_leaves_outputs_off_at_zero(bench):
    inst, emulator = bench
    inst.load_waveform(1, np.linspace(0, 3, 64), 1e4)
    inst.set_output(1, True)
    inst.play()
    inst.set_voltage(2, -2.0)
    inst.set_output(2, True)
    inst.safe_state()
    for n in (1, 2):
        state = emulator.channels[n]
        assert (state.output_on, state.function, state.offset_v) == (False, "DC", 0.0)
        assert not state.burst_state
        assert emulator.output_v(n) == 0.0
    assert inst.waveform_samples == {}
    assert not emulator.errors


def test_emulator_high_impedance_single_channel(tcp_server):
    emulator = Keysight33500BEmulator(model="33521B")
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), load_ohm=None) as inst:
        assert inst.n_channels == 1
        inst.set_voltage(1, 8.0)
        assert emulator.channels[1].load_ohm is None and emulator.channels[1].offset_v == 8.0
        inst.load_waveform(1, np.linspace(-9.5, 9.5, 16), 1e3)
        inst.play()
        np.testing.assert_allclose(emulator.played[0].volts_v, np.linspace(-9.5, 9.5, 16), atol=1e-6)
    assert emulator.channels[1].output_on is False and emulator.channels[1].offset_v == 0.0


def test_emulator_33600a_takes_waveforms_of_32_points_and_more(tcp_server):
    emulator = Keysight33500BEmulator(model="33612A")
    with Keysight33500B(VisaTransport(tcp_server(emulator).resource), name="awg") as inst:
        with pytest.raises(LimitError, match=r"32\.\.65536 points"):
            inst.load_waveform(1, np.linspace(-1, 1, 16), 1e6)
        inst.load_waveform(1, np.linspace(-1, 1, 32), 1e6)
        inst.play()
        np.testing.assert_allclose(emulator.played[0].volts_v, np.linspace(-1, 1, 32), atol=1e-6)
    assert _ask(emulator, b"FORM:BORD SWAP;:DATA:ARB SHORT,#264" + np.zeros(16, "<f4").tobytes()) is None
    assert _ask(emulator, b"SYST:ERR?") == b'-222,"Data out of range; 16 points, not 32..65536"'


# -- the emulator's own dialect ------------------------------------------------------------------------------
def _ask(emulator: Keysight33500BEmulator, message: bytes) -> bytes | None:
    return emulator.handle(message)


def test_emulator_long_and_short_forms_and_reply_formats():
    e = Keysight33500BEmulator()
    assert _ask(e, b":SOURce2:FUNCtion:SHAPe DC;:SOUR2:VOLTAGE:LEVEL:IMMEDIATE:OFFSET 0.5") is None
    assert _ask(e, b"SOUR2:FUNC?;:SOUR2:VOLT:OFFS?") == b"DC;+5.000000000000000E-01"
    assert _ask(e, b"OUTPUT2:STATE ON;:OUTP2?;:OUTP1?") == b"1;0"
    assert _ask(e, b"OUTP2:LOAD INF;:OUTP2:LOAD?;:SOUR2:VOLT:OFFS?") == b"+9.900000000000000E+37;" \
                                                                          b"+1.000000000000000E+00"
    assert _ask(e, b"SYST:ERR?") == b'+0,"No error"'


def test_emulator_errors_as_the_instrument():
    e = Keysight33500BEmulator(channels=1)
    cases = [(b"SOUR1:FUNC ARB", b"-221"), (b"SOUR2:FUNC DC", b"-113"), (b"FUNC:ARB NOPE", b"-224"),
             (b"OUTP1 MAYBE", b"-224"), (b"FUNC DC;:BURS:STAT ON", b"-221"), (b"*TRG", b"-211"),
             (b"DATA:ARB A,0.1,0.2", b"-222"), (b"VOLT:OFFS", b"-109")]
    for message, code in cases:
        assert _ask(e, message) is None
        assert _ask(e, b"SYST:ERR?").startswith(code + b","), message
    assert _ask(e, b"SYST:ERR?") == b'+0,"No error"'


def test_emulator_burst_phase_starts_the_arb_further_in_and_inverted_polarity_mirrors_it_about_the_offset():
    e = Keysight33500BEmulator()
    ramp = np.arange(8) / 8  # 0 .. 0.875
    _ask(e, b"FORM:BORD SWAP;:DATA:ARB R,#232" + ramp.astype("<f4").tobytes())
    _ask(e, b"FUNC:ARB R;:FUNC ARB;:BURS:MODE TRIG;:BURS:NCYC 1;:BURS:STAT ON;:TRIG:SOUR BUS;:OUTP1 ON")
    _ask(e, b"VOLT 2;:VOLT:OFFS 1;:BURS:PHAS 90;:OUTP1:POL INV;:TRIG1:DEL 0.25")
    assert _ask(e, b"BURS:PHAS?;:OUTP1:POL?;:TRIG1:DEL?") == \
        b"+9.000000000000000E+01;INV;+2.500000000000000E-01"
    rotated = np.roll(ramp, -2)  # 90° of 8 points: from the third point on
    assert e.output_v(1) == pytest.approx(1 - rotated[0])  # idles at the rotated first point, mirrored
    _ask(e, b"*TRG")
    np.testing.assert_allclose(e.played[0].volts_v, 1 - rotated, atol=1e-7)
    _ask(e, b"BURS:PHAS -90;:OUTP1:POL NORM")
    _ask(e, b"*TRG")
    np.testing.assert_allclose(e.played[1].volts_v, 1 + np.roll(ramp, 2), atol=1e-7)
    assert _ask(e, b"BURS:PHAS 400;:SYST:ERR?") == b'-222,"Data out of range;value clipped to upper limit"'
    assert _ask(e, b"OUTP1:POL SIDEWAYS;:SYST:ERR?") is None


def _armed(e: Keysight33500BEmulator, rate: bytes) -> None:
    """Channel 1 armed with an 8-point ramp at ``rate`` Sa/s, on a bus trigger, output on."""
    ramp = np.arange(8, dtype="<f4") / 8
    _ask(e, b"FORM:BORD SWAP;:DATA:ARB R,#232" + ramp.tobytes())
    _ask(e, b"FUNC:ARB R;:FUNC:ARB:SRAT " + rate + b";:FUNC ARB;:BURS:MODE TRIG;:BURS:NCYC 1;:BURS:STAT ON;"
            b":TRIG:SOUR BUS;:OUTP1 ON")
    assert not e.errors


def test_emulator_a_burst_runs_its_duration_ignores_triggers_meanwhile_and_a_change_cuts_it_short():
    e = Keysight33500BEmulator()
    _armed(e, b"0.01")  # 800 s: still running through this test, however slow the machine
    _ask(e, b"*TRG")
    assert e.burst_running(1) and e.output_v(1) is None  # the output varies
    assert _ask(e, b"*TRG;:SYST:ERR?") == b'-211,"Trigger ignored;burst in progress on channel 1"'
    assert len(e.played) == 1 and not e.played[0].cut
    _ask(e, b"VOLT:OFFS 0.5")  # a command that changes the output ends the burst there
    assert e.played[0].cut and len(e.played[0].volts_v) < 8 and not e.burst_running(1)
    _ask(e, b"TRIG1")
    for command in (b"FUNC DC", b"VOLT 1", b"OUTP1 OFF", b"BURS:STAT OFF", b"FUNC:ARB R", b"DATA:VOL:CLE",
                    b"BURS:PHAS 10", b"OUTP1:POL INV", b"*RST"):
        e = Keysight33500BEmulator()
        _armed(e, b"0.01")
        _ask(e, b"*TRG;:TRIG1:SOUR BUS;:TRIG1:DEL 0;:FORM:BORD NORM")  # trigger settings change no output
        assert not e.played[0].cut, command
        _ask(e, command)
        assert e.played[0].cut, command


def test_emulator_keeps_the_last_bursts_it_played_not_every_one():
    """Every burst's samples were kept in `played` for good: an emulator serving a long run or ``hil emulate`` grew by
    the burst's samples with each (32 kB a 4000-point burst, 64 MB after 2000). It keeps the last bursts, up to
    `played_samples_kept` samples, and a command still cuts a running burst it kept."""
    class Small(Keysight33500BEmulator):
        played_samples_kept = 20

    e = Small()
    _armed(e, b"1e8")  # bursts of 80 ns: over before the next trigger
    for _ in range(5):
        _ask(e, b"*OPC?;*TRG")
    assert [len(p.volts_v) for p in e.played] == [8, 8] and not e.errors  # 16 samples; a third would make 24
    _ask(e, b"*OPC?;:BURS:NCYC 3;*TRG;*OPC?")
    assert [len(p.volts_v) for p in e.played] == [20]  # the newest alone, its first 20 samples
    _ask(e, b"FUNC:ARB:SRAT 0.01;:BURS:NCYC 1;*TRG")  # 800 s: running until cut
    assert [len(p.volts_v) for p in e.played] == [8] and e.burst_running(1)
    _ask(e, b"VOLT:OFFS 0.5")
    assert e.played[-1].cut and len(e.played[-1].volts_v) < 8 and not e.burst_running(1)


def test_emulator_records_a_burst_longer_than_it_keeps_by_its_first_samples_and_runs_it_whole():
    """A burst of 10^8 cycles (the most NCYC takes) was built whole before it was recorded: of a 65 536-point arb,
    47.7 TiB, refused as a device-specific error (-300) to a command the 33500B plays; of 8 points, 6.4 GB. Its first
    `played_samples_kept` samples are recorded, and it runs its full length."""
    class Small(Keysight33500BEmulator):
        played_samples_kept = 20

    e = Small()
    _armed(e, b"1e8")
    _ask(e, b"BURS:NCYC 100000000;*TRG")
    assert not e.errors and e.burst_running(1)
    (playback,) = e.played
    np.testing.assert_allclose(playback.volts_v, np.tile(e.played[0].volts_v[:8], 3)[:20])
    _, start, end = e.bursts[1]
    assert end - start == pytest.approx(8.0)  # 8e8 samples at 1e8 Sa/s
    _ask(e, b"OUTP1 OFF")
    assert e.played[0].cut and not e.burst_running(1)


def test_emulator_opc_answers_once_every_burst_has_ended():
    e = Keysight33500BEmulator()
    _armed(e, b"400")  # 20 ms
    assert _ask(e, b"*TRG") is None
    ends = e.bursts[1][2]
    assert _ask(e, b"*OPC?") == b"1" and time.monotonic() >= ends  # answered after the burst, not before
    assert not e.burst_running(1) and e.output_v(1) == pytest.approx(0.0)
    assert _ask(e, b"*TRG;*WAI;:VOLT:OFFS 0.1;*OPC?") == b"1"
    assert [(p.cut, len(p.volts_v)) for p in e.played] == [(False, 8), (False, 8)]


def test_emulator_volatile_memory_byte_order_and_dac_data():
    e = Keysight33500BEmulator(memory_points=20)
    big = np.linspace(-1, 1, 8).astype(">f4").tobytes()
    assert _ask(e, b"DATA:ARB BIG,#232" + big) is None  # FORM:BORD NORM (power-on): big-endian
    dac = np.array([-32767, 0, 32767, 0, 1, 2, 3, 4], dtype="<i2").tobytes()
    _ask(e, b"FORM:BORD SWAP")
    assert _ask(e, b"DATA:ARB:DAC CODES,#216" + dac) is None
    assert _ask(e, b"DATA:VOL:CAT?;:DATA:VOL:FREE?") == b'"BIG","CODES";+4'
    np.testing.assert_allclose(e.channels[1].memory["BIG"], np.linspace(-1, 1, 8), atol=1e-7)
    assert e.channels[1].memory["CODES"][:3].tolist() == [-1.0, 0.0, 1.0]
    assert _ask(e, b"DATA:ARB BIG,#232" + big) is None  # now read as little-endian: garbage
    assert _ask(e, b"SYST:ERR?") == b'-222,"Data out of range; points must lie within -1..+1"'
    little = np.linspace(-1, 1, 8).astype("<f4").tobytes()
    assert _ask(e, b"DATA:ARB BIG,#232" + little) is None
    assert _ask(e, b"SYST:ERR?").startswith(b"-221,")  # the name is taken
    assert _ask(e, b"DATA:ARB MORE,#232" + little) is None
    assert _ask(e, b"SYST:ERR?").startswith(b"-225,")  # 16 + 8 > 20 points
    assert _ask(e, b"DATA:ARB ODD,#13abc") is None
    assert _ask(e, b"SYST:ERR?").startswith(b"-161,")
    assert _ask(e, b"DATA:VOL:CLE;:DATA:VOL:CAT?") == b'""'


def test_a_known_model_number_from_another_maker_is_refused_and_the_connection_closed():
    """A model number alone is not the instrument: another maker's generator answering 33522B (a clone, a wrong
    address) is refused before anything is set, in the words the 2450's driver uses for another instrument (it read
    '*IDN? answered ..., not a model this driver knows; check the resource address', naming no resource)."""
    exchanges = [(b"*CLS", None), (b"*IDN?", b"ACME INSTRUMENTS,33522B,0000,1.0")]
    assert_connect_refused(exchanges, r"^Keysight33500B: \S+ answers 'ACME INSTRUMENTS,33522B,0000,1\.0', not a "
                                      r"Keysight 33500B or 33600A generator \(33509B, .*, 33622A\); check that the "
                                      r"resource is the generator's$")


def test_a_garbled_error_queue_reply_is_a_one_line_error_naming_the_instrument():
    """Text that is not ``<code>,"<message>"`` says the link or the resource is wrong; it is not taken for an error
    code of its own."""
    exchanges = [*connected(), (b"SYST:ERR?", b"\x15garbage")]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match=r"^Keysight33500B: error-queue reply '\\x15garbage' is malformed; "
                                              r"check that the resource is this instrument"):
            inst.check_errors()


def test_an_error_queue_that_never_empties_says_so():
    """After `max_error_reads` errors the check stops reading and says the queue did not empty, rather than
    presenting what it read as the whole story."""
    error = (b"SYST:ERR?", b'-100,"Command error"')
    with expected_protocol(awg(), [*connected(), *[error] * 32]) as inst:
        inst.connect()
        with pytest.raises(DeviceError, match=r"-100 Command error; its error queue did not empty; what was sent"):
            inst.check_errors()


def test_play_of_bursts_of_different_lengths_waits_for_the_longest():
    """Channels played together end when the longest burst ends: ``*OPC?`` is asked only after that one, so that
    its margin covers latency and not the rest of a burst still playing."""
    longer = np.linspace(-1, 1, 4000)
    exchanges = [*connected(), *_loaded(1), *uploading(2, ((longer + 1) / 2).astype(np.float32), b"100000", b"-1"),
                 *arming(2, b"4"), (b"*TRG", None),
                 burst_ended(b"0;ARB;-1", b"0;ARB;-1", arbs=((1, b"4", b"1000"), (2, b"4", b"100000"))), ERRORS_CHECKED]
    with expected_protocol(lambda transport: Keysight33500B(transport, clock=VirtualClock()), exchanges) as inst:
        inst.connect()
        inst.load_waveform(1, np.linspace(-1, 1, 8), 1000)  # 8 ms
        inst.load_waveform(2, longer, 1e5)  # 40 ms
        started = inst.clock.now()
        inst.play()
        assert inst.clock.now() - started == pytest.approx(4000 / 1e5)


def test_an_empty_reply_to_an_output_state_query_is_an_error_not_taken_for_off():
    """An empty line (a link out of step, another program's reply) says nothing of the output: taken as off, a live
    output would be loaded and configured as if it were safe."""
    exchanges = connected((b"DC", ZERO, b""), DC_OFF)[:-3]  # nothing read after the reply
    assert_connect_refused(exchanges, r"^Keysight33500B: reply '' to 'OUTP1\?' is not 0 or 1")


def test_a_first_sample_of_minus_zero_is_sent_as_an_offset_of_0():
    """``-np.sin(0)`` is -0.0: the offset goes out as ``0``, never ``-0``, so the wire is the same for either zero."""
    samples = [-0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0]
    data = np.array([-0.0, 0.5, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5], dtype=np.float32)
    with expected_protocol(awg(), [*connected(), *uploading(1, data, b"1000", b"0"), *arming(1, b"4")]) as inst:
        inst.connect()
        inst.load_waveform(1, samples, 1000.0)


@pytest.mark.parametrize("queued", [[], [b'-113,"Undefined header"', b'-222,"Data out of range"']],
                         ids=["nothing", "another error beside"])
def test_an_unanswered_coupling_query_is_a_timeout_unless_undefined_header_alone_was_queued(queued):
    """A slow instrument queues nothing, and one that also refused something else is not merely old firmware."""
    rate = (b"SOUR1:RATE:COUP:STAT?", TIMED_OUT)
    resync = [(b"*ESE 1;*ESE?;*IDN?", b"1;" + IDN), (b"*ESE 0", None)]
    couplings_ = couplings()
    at = connected().index(couplings_[0])
    exchanges = [*connected()[:at], *couplings_[:2], rate, *resync, *((b"SYST:ERR?", e) for e in queued),
                 ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst, pytest.raises(TransportTimeout, match="SOUR1:RATE:COUP:STAT"):
        inst.connect()


def test_a_channel_whose_output_state_is_unknown_takes_no_centred_waveform():
    """After a failed switch the relay may be on: a waveform the range holds only about its centre is refused."""
    exchanges = [*connected(), (b"OUTP1 ON", None), (b"SYST:ERR?", b'-221,"Settings conflict"'), ERRORS_CHECKED]
    with expected_protocol(awg(), exchanges) as inst:
        inst.connect()
        with pytest.raises(DeviceError):
            inst.set_output(1, True)
        assert inst.output_on[1] is None
        with pytest.raises(LimitError, match="switch the output off before loading it"):
            inst.load_waveform(1, np.array([-4.0, 4.0] * 4), 1e3)


def test_a_load_of_a_fraction_of_an_ohm_is_sent_as_it_is():
    with expected_protocol(awg(load_ohm=75.5), connected(load=b"75.5")) as inst:
        inst.connect()


def test_a_waveform_whose_smallest_window_does_not_fit_the_lab_limits_sends_nothing():
    """Near the peak, a flat waveform is centred at the smallest amplitude, 1 mVpp: wider than a 0.6 mV limit."""
    with expected_protocol(awg(limits={"voltage_v": {"min": 4.9994, "max": 5.0}}), connected()) as inst:
        inst.connect()
        with pytest.raises(LimitError, match=r"the smallest amplitude, 0\.001 Vpp, does not fit the voltage limit"):
            inst.load_waveform(1, np.full(8, 4.9998), 1e3)


def test_emulator_a_flat_waveform_at_the_peak_is_centred_inside_the_range(bench):
    """4.9998 V with its 1 mVpp window about it would reach 5.0003 V: the window is moved down inside ±5 V."""
    inst, emulator = bench
    inst.load_waveform(1, np.full(8, 4.9998), 1e3)
    assert emulator._signal_v(1) == pytest.approx(4.9998, abs=1e-7) and not emulator.errors


def test_emulator_keeps_the_window_inside_the_range_as_the_instrument_does():
    """|offset| + amplitude/2 stays within 10 V open circuit (5 V into 50 Ω): an amplitude beyond is clipped with
    -222, and a function change from DC that would pass it lowers the amplitude with -221."""
    e = Keysight33500BEmulator()
    assert _ask(e, b"FUNC SIN;:VOLT:OFFS 2;:VOLT 8") is None
    assert e.errors[0][0] == -222 and _ask(e, b"VOLT?") == b"+6.000000000000000E+00"
    e = Keysight33500BEmulator()
    assert _ask(e, b"FUNC DC;:VOLT 8;:VOLT:OFFS 4;:FUNC SIN") is None
    assert e.errors[0][0] == -221 and _ask(e, b"VOLT?") == b"+2.000000000000000E+00"


@pytest.mark.parametrize(("message", "reply"), [(b"OUTP1:LOAD 0.5", b"+1.000000000000000E+00"),
                                                (b"FUNC:ARB:SRAT 2E8", b"+1.600000000000000E+08"),
                                                (b"FUNC:ARB:SRAT 0", b"+1.000000000000000E-06")])
def test_emulator_clips_a_load_or_sample_rate_beyond_the_33500bs_with_222(message, reply):
    """1 Ω..10 kΩ (or INF) and 1 µSa/s..160 MSa/s on a 33500B (1 GSa/s on a 33600A only)."""
    e = Keysight33500BEmulator()
    assert _ask(e, message) is None
    assert e.errors[0][0] == -222 and _ask(e, message.split()[0] + b"?") == reply


def test_emulator_an_output_switched_off_puts_0_v_across_the_load():
    e = Keysight33500BEmulator()
    _ask(e, b"FUNC DC;:VOLT:OFFS 1")
    assert e.output_v(1) == 0.0
    _ask(e, b"OUTP1 ON")
    assert e.output_v(1) == 1.0


def test_emulator_a_burst_plays_its_count_of_cycles_and_a_gated_burst_ignores_bus_triggers():
    e = Keysight33500BEmulator()
    _armed(e, b"40000")
    assert _ask(e, b"BURS:NCYC 3;*TRG;*OPC?") == b"1" and len(e.played[-1].volts_v) == 24
    assert _ask(e, b"BURS:MODE GAT;*TRG;*OPC?") == b"1" and len(e.played) == 1


def test_an_emulator_channel_count_the_model_lacks_says_what_to_give():
    """It read 'a 33511B has 1 channel(s), not 2', the count to give and the models that have it left unsaid."""
    with pytest.raises(ConfigError, match=r"^channels: a 33511B has 1 channel, not 2; give channels: 1, or a model "
                                          r"with 2 channels \(33510B, 33512B, 33520B, 33522B, 33612A, 33622A\)$"):
        Keysight33500BEmulator(model="33511B", channels=2)
    with pytest.raises(ConfigError, match=r"^channels: a 33522B has 2 channels, not 3; give channels: 2$"):
        Keysight33500BEmulator(channels=3)
