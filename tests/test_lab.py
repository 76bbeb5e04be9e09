"""lab.yaml: schema errors located by file, line and field; instruments always left safe and closed."""

import gc
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from drivers.keithley2450 import Keithley2450
from hil.config import YamlDocument, dump_yaml
from hil.errors import (
    ConfigError,
    DeviceError,
    InstrumentBusy,
    LimitError,
    Terminated,
    TransportError,
    signals_held,
    terminate_on_signals,
)
from hil.instruments import AnalogOutput, SourceMeter
from hil.lab import Lab, _in_order
from hil.limits import Limit
from hil.registry import BUILTIN, available
from hil.transport import Transport
from simulators.analog import SimulatedAnalogOutput
from simulators.emulators.keithley2450 import Keithley2450Emulator
from simulators.emulators.server import TcpServer, drivers_with_emulators
from tests.test_transport import line_speed

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


#: An emulated bench SMU and a simulated crossbar chip, in this order (a lab file's text, for `write`).
SMU_AND_CROSSBAR = """\
worlds:
  chip: {kind: memristor_crossbar}
instruments:
  smu: {driver: keithley_2450, emulate: true}
  xbar: {driver: simulated_crossbar, world: chip}
"""


def emulators(lab: Lab) -> dict[str, object]:
    return {type(server.emulator).__name__: server.emulator for server in lab._servers.values()}


def test_default_lab_opens_identifies_and_closes_safe() -> None:
    lab = Lab.load(REPO / "lab.yaml")
    with lab:
        assert set(lab.instruments) >= {"awg", "smu"}
        assert "33522B" in lab["awg"].identify() and "2450" in lab["smu"].identify()
        found = emulators(lab)
        awg, smu = found["Keysight33500BEmulator"], found["Keithley2450Emulator"]
        with pytest.raises(LimitError, match="present value is unknown"):
            lab["awg"].set_voltage(1, 1.0)  # at power-on it plays a sine: no DC level to ramp from
        lab.safe_state()
        lab["awg"].set_voltage(1, 1.0)
        lab["awg"].set_output(1, True)
        lab["smu"].configure("voltage", compliance=0.001)
        lab["smu"].set_output(True)
        lab["smu"].set_level(1.0)
        snapshot = lab["smu"].snapshot()
        assert snapshot["limits"]["voltage_v"]["max"] == 5.0  # narrowed by lab.yaml
    assert not lab["awg"].connected and not lab["smu"].connected
    assert lab._servers == {}
    assert awg.channels[1].output_on is False and awg.channels[1].offset_emf_v == 0.0
    assert smu.output is False and smu.level["VOLT"] == 0.0


def test_an_exception_in_the_block_leaves_every_instrument_safe() -> None:
    lab = Lab.load(REPO / "lab.yaml")
    with pytest.raises(RuntimeError, match="boom"), lab:
        awg = emulators(lab)["Keysight33500BEmulator"]
        lab.safe_state()
        lab["awg"].set_voltage(1, 2.0)
        lab["awg"].set_output(1, True)
        raise RuntimeError("boom")
    assert awg.channels[1].output_on is False and awg.channels[1].offset_emf_v == 0.0


def test_ctrl_c_in_the_block_leaves_every_instrument_safe(ctrl_c_raises: None) -> None:
    lab = Lab.load(REPO / "lab.yaml")
    with pytest.raises(KeyboardInterrupt), lab:
        smu = emulators(lab)["Keithley2450Emulator"]
        lab["smu"].configure("voltage", compliance=0.001)
        lab["smu"].set_output(True)
        lab["smu"].set_level(2.0)
        signal.raise_signal(signal.SIGINT)
    assert smu.output is False and smu.level["VOLT"] == 0.0


def test_ctrl_c_during_the_labs_safe_state_still_reaches_every_instrument(
        ctrl_c_raises: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C while the first instrument goes to its safe state (the last connected) is held until every other one
    is safe too, then raised."""
    with Lab.load(REPO / "lab.yaml") as lab:
        smu = emulators(lab)["Keithley2450Emulator"]
        lab["smu"].configure("voltage", compliance=0.001)
        lab["smu"].set_output(True)
        lab["smu"].set_level(2.0)
        first = lab._connected[-1]
        assert first is not lab["smu"]
        original = first._safe_state_hw

        def interrupted() -> None:
            signal.raise_signal(signal.SIGINT)
            original()

        monkeypatch.setattr(first, "_safe_state_hw", interrupted)
        with pytest.raises(KeyboardInterrupt):
            lab.safe_state()
        monkeypatch.undo()  # one Ctrl-C, not another as the lab closes
        assert smu.output is False and smu.level["VOLT"] == 0.0


def test_second_ctrl_c_is_held_until_clean_up_is_done(ctrl_c_raises: None) -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        signal.raise_signal(signal.SIGINT)
        finished.append("clean-up ran to the end")
    assert finished == ["clean-up ran to the end"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_held_until_clean_up_is_done_then_stop(signum: int) -> None:
    finished = []
    with terminate_on_signals(), pytest.raises(Terminated) as stopped, signals_held():
        signal.raise_signal(signum)
        finished.append("clean-up ran to the end")
    assert finished == ["clean-up ran to the end"] and stopped.value.signum == signum


def test_sigterm_stops_and_is_held_where_the_system_has_no_sighup(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Windows has no SIGHUP: naming it raised AttributeError as every hil command began."""
    from hil.cli import main

    monkeypatch.delattr(signal, "SIGHUP")
    finished = []
    with terminate_on_signals(), pytest.raises(Terminated) as stopped, signals_held():
        signal.raise_signal(signal.SIGTERM)
        finished.append("clean-up ran to the end")
    assert finished == ["clean-up ran to the end"] and stopped.value.signum == signal.SIGTERM
    assert main(["runs", "--root", str(tmp_path)]) == 0


def test_sigterm_in_the_block_leaves_every_instrument_safe() -> None:
    lab = Lab.load(REPO / "lab.yaml")
    with terminate_on_signals(), pytest.raises(Terminated), lab:
        smu = emulators(lab)["Keithley2450Emulator"]
        lab["smu"].configure("voltage", compliance=0.001)
        lab["smu"].set_output(True)
        lab["smu"].set_level(2.0)
        signal.raise_signal(signal.SIGTERM)
    assert smu.output is False and smu.level["VOLT"] == 0.0


def test_missing_instrument_names_it_and_closes_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, """
        instruments:
          awg: {driver: keysight_33500b, emulate: true}
          smu: {driver: keithley_2450, resource: "TCPIP::127.0.0.1::1::SOCKET", timeout_s: 0.3}
    """)
    lab = Lab.load(path)
    with pytest.raises(TransportError, match=r"^smu \(TCPIP::127.0.0.1::1::SOCKET\): connection failed"):
        lab.open()
    assert not lab["awg"].connected and lab._servers == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            colour: blue
     """, r"lab.yaml:5: instruments\.awg\.colour: unknown key 'colour'; allowed: driver, resource"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            limits:
              voltage_v: {min: -20, max: 1}
     """, r"lab.yaml:6: instruments\.awg\.limits\.voltage_v\.min: -20 V would widen"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            timeout_s: soon
     """, r"lab.yaml:5: instruments\.awg\.timeout_s: Input should be a valid number"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            timeout_s: 5000000
     """, r"lab.yaml:5: instruments\.awg\.timeout_s: Input should be less than or equal to 4294967"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
           emulate: true
     """, r"lab.yaml:4: instruments\.awg\.emulate: invalid YAML"),
    ("""
        instruments:
          awg: {driver: keysight_33500b, emulate: true}
          awg: {driver: keithley_2450, emulate: true}
     """, r"lab.yaml:3: instruments\.awg: duplicate key 'awg' \(first on line 2\)"),
    ("""
        instruments:
          awg: {driver: keysight_99999, emulate: true}
     """, r"lab.yaml:2: instruments\.awg\.driver: unknown driver 'keysight_99999'; known: "),
    # a misspelt kind of a world or a system: named at its line, with the kind meant and those known
    ("""
        worlds:
          table: {kind: optical_tabel}
        instruments:
          slm: {driver: simulated_slm, world: table}
     """, r"lab.yaml:2: worlds\.table\.kind: unknown world kind 'optical_tabel' \(did you mean 'optical_table'\?\); "
         r"known: memristor_crossbar, multimode_fiber, optical_table, "),
    ("""
        worlds:
          table: {kind: optical_table}
        instruments:
          slm: {driver: simulated_slm, world: table}
          camera: {driver: simulated_camera, world: table}
        systems:
          optical: {kind: optcal, instruments: {slm: slm, camera: camera}}
     """, r"lab.yaml:7: systems\.optical\.kind: unknown system kind 'optcal' \(did you mean 'optical'\?\); known: "
         r"crossbar, fiber, optical, "),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            settings: {load: 50}
     """, r"lab.yaml:5: instruments\.awg\.settings\.load: unknown setting 'load' for keysight_33500b; "
         r"allowed: load_ohm"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            settings:
              load_ohm: -5
     """, r"lab.yaml:6: instruments\.awg\.settings\.load_ohm: -5 Ω is outside 1\.\.10000 Ω"),
    ("""
        instruments:
          smu:
            driver: keithley_2450
            emulate: true
            settings: {terminals: side}
     """, r"lab.yaml:5: instruments\.smu\.settings\.terminals: 'side' is neither 'front' nor 'rear'"),
("""
        instruments:
          awg:
            driver: keysight_33500b
            limits: {current_a: {max: 1}}
            emulate: true
     """, r"lab.yaml:4: instruments\.awg\.limits\.current_a: no limit named 'current_a'"),
    ("""
        instruments:
          awg: {driver: keysight_33500b}
     """, r"lab.yaml:2: instruments\.awg: give exactly one of resource"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: {load: 50}
     """, r"lab.yaml:4: instruments\.awg\.emulate\.load: the keysight_33500b emulator has no such option; "
         r"options: channels, model, memory_points$"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate:
              channels: two
     """, r"lab.yaml:5: instruments\.awg\.emulate\.channels: 'two' is not an int or null \(an option of the "
         r"keysight_33500b emulator\)$"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            limits:
              voltage_v: {max: .nan}
     """, r"lab.yaml:6: instruments\.awg\.limits\.voltage_v\.max: .*finite"),
    ("""
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            limits:
              voltage_v: {min: -1, max: true}
     """, r"lab.yaml:6: instruments\.awg\.limits\.voltage_v\.max: expected a number \(got True\)$"),
    ("""
        worlds:
          table: {kind: optical_table}
          fiber_bench: {kind: multimode_fiber}
        instruments:
          slm: {driver: simulated_slm, world: table}
          camera: {driver: simulated_camera, world: fiber_bench}
        systems:
          optical:
            kind: optical
            instruments: {slm: slm, camera: camera}
     """, r"lab.yaml:10: systems\.optical\.instruments: the simulated instruments of one system must share one "
         r"world \(the physics that links them\); here: slm on 'table', camera on 'fiber_bench'$"),
    ("""
        worlds:
          oscillators: {kind: oscillator_network}
        instruments:
          drive: {driver: simulated_analog_output, world: oscillators}
          probes: {driver: simulated_analog_input, world: oscillators}
        systems:
          oscillator:
            kind: oscillator
            instruments: {output: probes, input: drive}
     """, r"lab.yaml:9: systems\.oscillator\.instruments\.output: system 'oscillator': output must be an analog "
         r"output, got SimulatedAnalogInput$"),
    ("""
        worlds:
          oscillators: {kind: oscillator_network}
        instruments:
          awg: {driver: keysight_33500b, emulate: true}
          probes: {driver: simulated_analog_input, world: oscillators}
        systems:
          oscillator:
            kind: oscillator
            instruments: {output: awg, input: probes}
     """, r"lab.yaml:9: systems\.oscillator\.instruments: output \('awg'\) is a bench instrument and the others "
         r"simulated, which see only their world; give every role a simulated instrument or every role a bench one$"),
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          xbar: {driver: simulated_crossbar, world: chip}
        systems:
          crossbar:
            kind: crossbar
            instruments: {crossbar: xbar, spare: xbar}
     """, r"lab.yaml:8: systems\.crossbar\.instruments\.spare: system kind 'crossbar' has no role 'spare'; its "
         r"roles: crossbar$"),
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          xbar: {driver: simulated_crossbar, world: chip, traffic_log: x.log, visa_library: ""}
     """, r"lab.yaml:4: instruments\.xbar: traffic_log, visa_library set for a simulated instrument \(world\), which "
         r"has no transport; leave them out$"),
    ("""
        instruments:
          smu: {driver: keithley_2450, resource: /dev/ttyUSB0, baudrate: 49}
     """, r"lab.yaml:2: instruments\.smu\.baudrate: Input should be greater than or equal to 50 \(got 49\)$"),
    ("""
        instruments:
          smu: {driver: keithley_2450, emulate: true, traffic_log: .}
     """, r"lab.yaml:2: instruments\.smu\.traffic_log: '\.' is a folder; name a file in it \(got '\.'\)$"),
    ("""
        instruments:
          smu: {driver: keithley_2450, emulate: true, traffic_log: "  "}
     """, r"lab.yaml:2: instruments\.smu\.traffic_log: a blank name; name a file \(e\.g\. logs/awg\.log\) "
         r"\(got '  '\)$"),
    ("""
        worlds:
          oscillators: {kind: oscillator_network}
        instruments:
          drive: {driver: simulated_analog_output, world: oscillators}
          probes: {driver: simulated_analog_input, world: oscillators}
        systems:
          oscillator:
            kind: oscillator
            instruments: {output: drive, input: probes}
            settings: {sense: position}
     """, r"lab.yaml:10: systems\.oscillator\.settings\.sense: Input should be 'displacement' or 'velocity' \(got "
         r"'position'\)$"),
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          xbar: {driver: simulated_crossbar, world: chip, emulate: true}
     """, r"lab.yaml:4: instruments\.xbar: give exactly one of resource .*; got \['emulate', 'world'\]$"),
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          xbar: {driver: simulated_crossbar, world: chip}
        systems:
          crossbar: {kind: crossbar, instruments: {crossbar: xbar2}}
     """, r"lab.yaml:6: systems\.crossbar\.instruments\.crossbar: no instrument named 'xbar2' in this lab$"),
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          xbar: {driver: simulated_crossbar, world: chip}
        systems:
          crossbar: {kind: crossbar, instruments: {crossbar: xbar}, settings: {n_inn: 4}}
     """, r"lab.yaml:6: systems\.crossbar\.settings\.n_inn: unknown setting 'n_inn' for crossbar; allowed: g_max_s, "
         r"g_min_s, n_in, n_out, read_voltage_v$"),
    ("""
        instruments:
          awg: {driver: "not a module:Awg", emulate: true}
     """, r"lab.yaml:2: instruments\.awg\.driver: unknown driver 'not a module:Awg'; known: "),
    ("""
        instruments:
          awg: {driver: "hil.lab:NoSuchDriver", emulate: true}
     """, r"lab.yaml:2: instruments\.awg\.driver: driver 'hil\.lab:NoSuchDriver': hil\.lab:NoSuchDriver cannot be "
         r"loaded: AttributeError: module 'hil\.lab' has no attribute 'NoSuchDriver'$"),  # no hint to install it
    ("""
        worlds:
          chip: {kind: memristor_crossbar}
        instruments:
          smu: {driver: keithley_2450, world: chip}
     """, r"lab.yaml:4: instruments\.smu\.world: keithley_2450 is a bench driver; give it a resource or emulate, not a "
         r"world$"),
    ("""
        instruments:
          awg: {driver: "hil.lab:Lab", emulate: true}
     """, r"lab.yaml:2: instruments\.awg\.driver: driver 'hil\.lab:Lab' is not an Instrument subclass$"),
    ("""
        instruments:
          xbar: {driver: simulated_crossbar, emulate: true}
     """, r"lab.yaml:2: instruments\.xbar: simulated_crossbar takes no transport, so it needs a world: give it "
         r"world: \(a world of this lab\), not a resource or emulate$"),
    ("""
        instruments:
          dc: {driver: "tests.test_lab:PortDcSource", resource: /dev/ttyUSB0}
     """, r"lab.yaml:2: instruments\.dc\.driver: tests\.test_lab:PortDcSource \(tests\.test_lab\.PortDcSource\) takes "
         r"no transport, which the lab passes a bench driver by that name: write def __init__\(self, transport, \*, "
         r"<options>, \*\*common\), passing \*\*common on to super\(\)\.__init__\(\) \(or, for a SCPI instrument, list "
         r"ScpiDriver before the capability class: its __init__ takes it\)$"),
])
def test_bad_lab_files_fail_with_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as caught:
        Lab.load(path).build()
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


class HalfWrittenSmu(SourceMeter):
    """A driver whose author has not written its hooks yet."""


class PortDcSource(AnalogOutput):
    """A driver of a line protocol of its own whose ``__init__`` calls its transport ``port``: the lab passes it as
    ``transport``, and was told to list ScpiDriver before the capability class, and that the driver needs a world."""

    def __init__(self, port: Transport, **common: Any):
        self.port = port
        super().__init__(**common)

    def _identify_hw(self) -> str:
        return self.port.query("ID?")

    def _read_level_hw(self, channel: int) -> float | None:
        return None

    def _read_output_hw(self, channel: int) -> bool | None:
        return None

    def _set_level_hw(self, channel: int, voltage_v: float) -> None:
        self.port.query(f"V{channel} {voltage_v:.3f}")

    def _set_output_hw(self, channel: int, enabled: bool) -> None:
        self.port.query(f"O{channel} {int(enabled)}")


@pytest.mark.parametrize(("target", "expected"), [
    ("acme_hil.no_such_module:AcmeSmu", r"driver 'acme_smu': acme_hil\.no_such_module:AcmeSmu cannot be loaded: "
                                        r"ModuleNotFoundError: No module named 'acme_hil'$"),
    ("tests.test_lab:AcmeSmu", r"driver 'acme_smu': tests\.test_lab:AcmeSmu cannot be loaded: AttributeError"),
    ("tests.test_lab:HalfWrittenSmu", r"acme_smu \(tests\.test_lab\.HalfWrittenSmu\) cannot be used: it does not "
                                      r"implement _configure_hw, _identify_hw, _measure_hw, _set_level_hw, "
                                      r"_set_output_hw$"),
])
def test_a_driver_that_cannot_be_loaded_or_used_is_located_at_its_name(tmp_path: Path, target: str, expected: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BUILTIN["instruments"], "acme_smu", target)
    available.cache_clear()
    path = write(tmp_path, """
        instruments:
          smu: {driver: acme_smu, resource: "TCPIP::127.0.0.1::1::SOCKET"}
     """)
    try:
        with pytest.raises(ConfigError, match=rf"lab.yaml:2: instruments\.smu\.driver: {expected}") as caught:
            Lab.load(path).build()
    finally:
        available.cache_clear()
    assert "\n" not in str(caught.value)


class UnemulatedSmu(Keithley2450):
    """A bench driver whose author wrote no emulator."""

    emulator = None


def test_emulating_a_driver_without_an_emulator_names_those_with_one(tmp_path: Path) -> None:
    path = write(tmp_path, """
        instruments:
          smu: {driver: "tests.test_lab:UnemulatedSmu", emulate: true}
     """)
    with_one = re.escape(", ".join(drivers_with_emulators()))  # hil's and those of any plugin installed beside it
    with pytest.raises(ConfigError, match=r"lab.yaml:2: instruments\.smu\.emulate: tests.test_lab:UnemulatedSmu has "
                                          rf"no emulator \(drivers with one: {with_one}\); a bench instrument "
                                          r"without one is reached at its resource, and a driver names its emulator on "
                                          r'its class: emulator: ClassVar\[str\] = "module:Class"$'):
        Lab.load(path).build()


def test_instruments_a_lab_file_does_not_name_keep_their_place_after_its_own() -> None:
    """The lab's reorder after a reopen (its instruments and systems in the file's order) moved the file's names to
    the end, so an instrument added by hand (``lab.instruments["probe"] = ...``) came first: connected before the
    file's and closed after them, where its docstring said it keeps its place at the end."""
    items = {"probe": 0, "smu": 1, "awg": 2}
    _in_order(items, ["awg", "smu", "not built"])
    assert list(items) == ["awg", "smu", "probe"]


def test_emulate_without_options_serves_the_emulator(tmp_path: Path) -> None:
    """``emulate: {}`` was 'give exactly one of resource, emulate or world; got none'."""
    lab = Lab.load(write(tmp_path, "instruments:\n  smu: {driver: keithley_2450, emulate: {}}\n"))
    try:
        lab.build()
        assert list(emulators(lab)) == ["Keithley2450Emulator"]
    finally:
        lab.close()


def test_with_open_only_connects_no_more_and_a_closed_lab_opens_again_on_new_emulators(tmp_path: Path) -> None:
    """``with lab.open(only=...)`` went on to connect every instrument (``__enter__`` opened the lab again), among
    them the ones the caller left out because they may be off; and a lab opened again after closing tried the
    emulators it had stopped ("connection refused ... check the cable"); and the instrument rebuilt on a new
    emulator was connected last, not in its place in the file."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR + textwrap.dedent("""\
        systems:
          crossbar: {kind: crossbar, instruments: {crossbar: xbar}}
    """)))
    with lab.open(only=["xbar"]):
        assert (lab["xbar"].connected, lab["smu"].connected) == (True, False)
        system, chip = lab.system("crossbar"), lab.worlds["chip"]
    first_smu = lab["smu"]
    assert not first_smu.connected and not lab["xbar"].connected
    with lab:
        assert "2450" in lab["smu"].identify() and lab["smu"] is not first_smu  # on a new emulator
        assert list(lab.instruments) == ["smu", "xbar"] and lab._connected == [lab["smu"], lab["xbar"]]  # file order
        assert lab.system("crossbar") is system and lab.worlds["chip"] is chip  # what no emulator served is kept
    assert not lab["smu"].connected and lab._servers == {}


def test_a_system_rebuilt_on_a_new_emulator_after_a_reopen_keeps_its_place_in_the_file(tmp_path: Path) -> None:
    """A system on an emulated bench instrument is built anew when the lab opens again; it went to the end of
    ``lab.systems``, so what lists the lab's systems (`hil devices`, a run's checkpoint of its systems) listed them
    in another order than the file on every reopen."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR + textwrap.dedent("""\
        systems:
          probe: {kind: "tests.test_orchestrator:SourceMeterProbe", instruments: {smu: smu}}
          crossbar: {kind: crossbar, instruments: {crossbar: xbar}}
    """)))
    with lab:
        first = lab.system("probe")
    with lab:
        assert lab.system("probe") is not first and list(lab.systems) == ["probe", "crossbar"]


def test_an_instrument_or_world_the_lab_lacks_pasted_many_times_is_shown_short(tmp_path: Path) -> None:
    """A name the lab does not have, in a system's instruments, in an instrument's world, or asked of a loaded lab,
    was echoed whole: a line of 10 000 characters for one pasted many times."""
    long, short = "y" * 10_000, r"'yyyyyyyyyyyyyyyyyyy…, 10002 characters"
    for text, expected in (
            (SMU_AND_CROSSBAR + f"systems:\n  crossbar: {{kind: crossbar, instruments: {{crossbar: {long}}}}}\n",
             rf"lab\.yaml:7: systems\.crossbar\.instruments\.crossbar: no instrument named {short} in this lab$"),
            (SMU_AND_CROSSBAR.replace("world: chip", f"world: {long}"),
             rf"lab\.yaml:5: instruments\.xbar\.world: no world named {short} in this lab$")):
        with pytest.raises(ConfigError, match=expected):
            Lab.load(write(tmp_path, text)).build()
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR))
    try:
        lab.build()
        with pytest.raises(ConfigError, match=rf"lab\.yaml: no instrument named {short}; the lab has: smu, xbar$"):
            lab[long]
    finally:
        lab.close()  # the emulator build started


def test_an_instrument_or_system_of_a_lab_not_built_yet_says_to_open_it(tmp_path: Path) -> None:
    """``lab = Lab.load("lab.yaml")`` then ``lab["smu"]`` or ``lab.system("crossbar")`` said the lab had no such
    instrument ("the lab has: " and nothing) although its file declares it: it is only not built yet."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR + """\
systems:
  crossbar: {kind: crossbar, instruments: {crossbar: xbar}}
"""))
    with pytest.raises(ConfigError, match=r"lab\.yaml: instrument 'smu' is not built yet; call lab\.open\(\) first"):
        lab["smu"]
    with pytest.raises(ConfigError, match=r"lab\.yaml: system 'crossbar' is not built yet; call lab\.open\(\) first"):
        lab.system("crossbar")
    with pytest.raises(ConfigError, match=r"lab\.yaml: no instrument named 'smuu'; the lab has: smu, xbar$"):
        lab["smuu"]
    with pytest.raises(ConfigError, match=r"lab\.yaml: no system named 'xbar'; the lab has: crossbar$"):
        lab.system("xbar")
    with lab.open(only="xbar"):
        assert lab.system("crossbar").instruments["crossbar"] is lab["xbar"]


def test_an_unknown_name_lists_the_instruments_and_systems_added_by_hand_too(tmp_path: Path) -> None:
    """An instrument or system added to a lab by hand (``lab.instruments["probe"] = ...``), which the lab connects
    and closes with its own, was left out of the names an unknown one is told to choose from."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR + """\
systems:
  crossbar: {kind: crossbar, instruments: {crossbar: xbar}}
"""))
    lab.build()
    lab.instruments["probe"] = lab["xbar"]
    lab.systems["spare"] = lab.system("crossbar")
    try:
        with pytest.raises(ConfigError, match=r"lab\.yaml: no instrument named 'prob'; the lab has: smu, xbar, probe$"):
            lab["prob"]
        with pytest.raises(ConfigError, match=r"lab\.yaml: no system named 'spar'; the lab has: crossbar, spare$"):
            lab.system("spar")
    finally:
        lab.close()


def test_a_labs_repr_says_whether_it_is_open_and_what_it_has(tmp_path: Path) -> None:
    """In a notebook a lab showed as ``<hil.lab.Lab object at 0x7f…>``, whether open or not."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR))
    assert repr(lab) == f"<Lab {tmp_path / 'lab.yaml'}, not built: instruments smu, xbar; systems none>"
    with lab.open(only="xbar"):
        assert repr(lab) == (f"<Lab {tmp_path / 'lab.yaml'}, open (1 of 2 instruments connected): instruments smu, "
                             "xbar; systems none>")
    assert repr(lab) == f"<Lab {tmp_path / 'lab.yaml'}, built, not open: instruments smu, xbar; systems none>"


def test_open_only_an_instrument_the_lab_does_not_have_is_refused_naming_it(tmp_path: Path) -> None:
    """``lab.open(only=["smuu"])`` (a misspelt name) connected nothing and said nothing: the bench program then met
    "smu: not connected" at its first command, far from the typo. A name given alone is one name, not its letters."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR))
    with pytest.raises(ConfigError, match=r"lab\.yaml: no instrument named 'smuu' to open; the lab has: smu, xbar$"):
        lab.open(only=["xbar", "smuu"])
    assert not lab["xbar"].connected and lab._servers == {}  # what it had connected is closed again
    with lab.open(only="smu"):
        assert (lab["smu"].connected, lab["xbar"].connected) == (True, False)


def test_a_list_of_too_few_items_in_a_world_config_says_so(tmp_path: Path) -> None:
    """``shape: [64]`` for rows and columns was 'required field is missing', of a field the file has."""
    lab = Lab.load(write(tmp_path, "worlds:\n  table: {kind: optical_table, config: {slm: {shape: [64]}}}\n"))
    with pytest.raises(ConfigError, match=r"lab\.yaml:2: worlds\.table\.config\.slm\.shape\.1: too few items: item 1 "
                                          r"is missing \(counting from 0\)$"):
        lab.build()


def test_open_keeps_what_was_built_connects_only_what_is_asked_a_failed_build_stops_emulators(tmp_path: Path) -> None:
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR))
    try:
        lab.build()
        built = (lab.worlds["chip"], lab.instruments["xbar"])
        lab.open(only=["xbar"])  # builds again, and connects only what it is asked to
        assert (lab.worlds["chip"], lab.instruments["xbar"]) == built and lab.instruments["xbar"].world is built[0]
        assert (lab.instruments["xbar"].connected, lab.instruments["smu"].connected) == (True, False)
    finally:
        lab.close()
    broken = Lab.load(write(tmp_path, """
        instruments:
          smu: {driver: keithley_2450, emulate: true}
          awg: {driver: keysight_99999, emulate: true}
    """))
    with pytest.raises(ConfigError, match="unknown driver 'keysight_99999'"):
        broken.build()
    assert emulators(broken) == {}  # the 2450's emulator, started first, was stopped


def test_a_lab_dropped_without_closing_stops_the_emulators_it_started(tmp_path: Path) -> None:
    """``lab = Lab.load(...).open()`` in a notebook cell run again drops the lab before without closing it: its
    emulators went on serving, each with its listening socket and threads, for the rest of the session (ten runs of
    the cell left 20 threads and 20 file descriptors behind once every lab was gone). Collected with their
    lab, its instruments stop them."""
    path = write(tmp_path, """
        instruments:
          smu: {driver: keithley_2450, emulate: true}
          awg: {driver: keysight_33500b, emulate: {via: pty}}
    """)

    def serving() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name in ("TcpServer", "PtyServer") and t.is_alive()]

    before = serving()
    lab = Lab.load(path).open()
    port = lab._servers["smu"].port
    assert len(serving()) == len(before) + 3  # the 2450's listener and its client's connection, the 33500B's pty
    del lab
    gc.collect()
    assert serving() == before
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_an_instrument_connected_after_open_is_left_safe_by_the_lab(tmp_path: Path) -> None:
    """``lab.open(["xbar"])``, then ``lab["smu"].connect()`` for a look at the SMU: neither ``lab.safe_state()``
    nor ``lab.close()`` reached it, which went on sourcing, connected, after the lab was closed."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR)).open(["xbar"])
    smu, emulator = lab["smu"].connect(), emulators(lab)["Keithley2450Emulator"]
    smu.configure("voltage", compliance=0.001)
    smu.set_output(True)
    smu.set_level(1.0)
    lab.safe_state()
    assert emulator.output is False and emulator.level["VOLT"] == 0.0
    smu.set_output(True)
    smu.set_level(1.0)
    lab.close()
    assert not smu.connected and not lab["xbar"].connected
    assert emulator.output is False and emulator.level["VOLT"] == 0.0


def test_an_emulated_instrument_kept_from_before_the_lab_closed_says_to_take_it_anew(tmp_path: Path) -> None:
    """``smu = lab["smu"]`` in one notebook cell, ``lab.close()`` and ``lab.open()`` in others: the lab built the
    SMU anew on a new emulator, and the one kept said "not connected; call connect() first", whose connect() then
    told to check the cable and the instrument's power."""
    lab = Lab.load(write(tmp_path, SMU_AND_CROSSBAR))
    with lab:
        smu = lab["smu"]
    taken_anew = r"^smu: its emulator was stopped as its lab \(.*lab\.yaml\) closed; open the lab again and take " \
                 r"the instrument anew, lab\['smu'\], and any system using it, lab\.system\(\.\.\.\)$"
    with lab:
        assert lab["smu"] is not smu and lab["smu"].connected
        with pytest.raises(DeviceError, match=taken_anew):
            smu.set_level(1.0)
        with pytest.raises(DeviceError, match=taken_anew):
            smu.connect()
        assert lab["xbar"].connected  # a simulated instrument is the same one, connected again


def test_a_second_lab_of_this_process_may_not_open_a_bench_instrument_the_first_has_open(tmp_path: Path) -> None:
    """``lab = Lab.load("lab.yaml").open()`` run again in a notebook, the first lab still open: the second lab
    connected the same bench SMU (the claim on it is this process's), and the first one's close then switched off
    the output the second was sourcing 0.5 V from: its measurements read 0 V, and nothing said why."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    with TcpServer(emulator) as server:
        path = write(tmp_path, f"""
            instruments:
              smu: {{driver: keithley_2450, resource: "{server.resource}"}}
        """)
        first = Lab.load(path).open()
        first["smu"].configure("voltage", compliance=0.01)
        first["smu"].set_output(True)
        first["smu"].set_level(1.0)
        second = Lab.load(path)
        with pytest.raises(InstrumentBusy, match=r"^instrument 'smu' \(TCPIP::127\.0\.0\.1::\d+::SOCKET\) is connected "
                           r"by another lab of this process \(.*lab\.yaml, as 'smu'\); close that lab first "
                           r"\(lab\.close\(\)\)$"):
            second.open()
        assert emulator.output is True and emulator.level["VOLT"] == 1.0  # nothing was sent to it
        assert first["smu"].measure().voltage_v[0] == pytest.approx(1.0)
        first.close()
        with second:
            assert second["smu"].connected and emulator.output is False


def _script_on_a_bench_smu(tmp_path: Path, script: str) -> tuple[Keithley2450Emulator,
                                                                 subprocess.CompletedProcess[str]]:
    """Run the Python ``script`` in a new interpreter, given as ``sys.argv[1]`` a lab file whose ``smu`` is a 2450
    emulator served by this process: the emulator (as the script's process left it on ending) and the process."""
    emulator = Keithley2450Emulator(load_ohm=1000.0)
    with TcpServer(emulator) as server:
        path = write(tmp_path, f"""
            instruments:
              smu: {{driver: keithley_2450, resource: "{server.resource}"}}
        """)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(path)], capture_output=True,
                              text=True, timeout=120, cwd=REPO)
    return emulator, done


def test_python_exiting_with_the_lab_open_leaves_the_bench_safe(tmp_path: Path) -> None:
    """A script, or a notebook's kernel shut down, that opened a lab and never closed it left a bench SMU sourcing
    1 V as Python exited: nothing put it in its safe state. The interpreter's exit now closes what is connected."""
    emulator, done = _script_on_a_bench_smu(tmp_path, """
        import sys
        from hil.lab import Lab
        smu = Lab.load(sys.argv[1]).open()["smu"]
        smu.configure("voltage", compliance=0.001)
        smu.set_output(True)
        smu.set_level(1.0)
        print(smu.connected)
    """)
    assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr
    assert done.stderr == ""
    assert emulator.output is False and emulator.level["VOLT"] == 0.0


def test_a_bench_instrument_dropped_unclosed_is_left_safe_as_python_exits(tmp_path: Path) -> None:
    """A script whose function opened the lab, set the SMU to 1 V and returned without closing it dropped the lab and
    its instruments, which the exit hook then no longer knew: the bench SMU went on sourcing 1 V after Python exited.
    A bench instrument is held until it is closed, so that the exit still makes it safe."""
    emulator, done = _script_on_a_bench_smu(tmp_path, """
        import gc, sys
        from hil.lab import Lab

        def measure():
            smu = Lab.load(sys.argv[1]).open()["smu"]
            smu.configure("voltage", compliance=0.001)
            smu.set_output(True)
            smu.set_level(1.0)

        measure()
        gc.collect()
    """)
    assert (done.returncode, done.stderr) == (0, "")
    assert emulator.output is False and emulator.level["VOLT"] == 0.0


def test_a_forked_process_ending_leaves_its_parents_instruments_as_they_are(tmp_path: Path) -> None:
    """A process forked from one with a lab open (``os.fork()`` for a helper that then exits normally) ran the exit
    hook on the instruments it inherited: its exit put the parent's bench SMU in its safe state, switching off the
    1 V the parent went on measuring. An instrument is closed at exit by the process that connected it alone."""
    emulator, done = _script_on_a_bench_smu(tmp_path, """
        import os, sys
        from hil.lab import Lab
        smu = Lab.load(sys.argv[1]).open()["smu"]
        smu.configure("voltage", compliance=0.01)
        smu.set_output(True)
        smu.set_level(1.0)
        child = os.fork()
        if child == 0:
            sys.exit(0)
        os.waitpid(child, 0)
        print(smu.measure().voltage_v[0])
    """)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(1.0)  # the child's exit sent the parent's SMU nothing
    assert emulator.output is False and emulator.level["VOLT"] == 0.0  # the parent's exit made it safe


def test_an_instrument_kept_from_a_lab_dropped_unclosed_keeps_its_emulator(tmp_path: Path) -> None:
    """``smu = Lab.load(...).open()["smu"]`` in a notebook cell: the lab, dropped at once, stopped the emulator of
    the SMU still held, whose first command then failed with a lost connection. The emulator now serves as long as
    its instrument is kept, and stops once it is dropped."""
    path = write(tmp_path, SMU_AND_CROSSBAR)
    before = {t for t in threading.enumerate() if t.name == "TcpServer"}
    smu = Lab.load(path).open()["smu"]
    gc.collect()
    smu.configure("voltage", compliance=0.01)
    smu.set_output(True)
    smu.set_level(1.0)
    assert smu.measure().voltage_v[0] == pytest.approx(1.0)
    smu.close()
    del smu
    gc.collect()
    assert {t for t in threading.enumerate() if t.name == "TcpServer" and t.is_alive()} == before


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        Lab.load(tmp_path / "nope.yaml")


def test_emulator_over_a_pty_serves_the_same_driver(tmp_path: Path) -> None:
    path = write(tmp_path, """
        instruments:
          smu: {driver: keithley_2450, emulate: {via: pty, load_ohm: 100}}
    """)
    with Lab.load(path) as lab:
        assert lab["smu"].transport.resource.startswith("/dev/pts/")
        lab["smu"].configure("voltage", compliance=0.1)
        lab["smu"].set_output(True)
        lab["smu"].set_level(0.5)
        assert lab["smu"].measure().current_a[0] == pytest.approx(0.005)


def test_an_emulator_over_a_pty_is_refused_at_its_line_where_the_system_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, """
        instruments:
          smu: {driver: keithley_2450, emulate: {via: pty, load_ohm: 100}}
    """)
    monkeypatch.delattr(os, "openpty")  # Windows
    with pytest.raises(ConfigError, match=r"lab\.yaml:2: instruments\.smu\.emulate\.via: cannot serve the "
                                          r"keithley_2450 emulator on a pseudo-terminal: this system has none "
                                          r"\(Windows\); serve it via tcp$"):
        Lab.load(path).open()


def test_the_emulators_tcp_server_loads_where_the_system_has_no_terminals() -> None:
    """``tty`` (POSIX only) was imported with the module, so on Windows no emulator, and no default lab, started."""
    code = ("import sys; sys.modules['tty'] = None; from simulators.emulators.server import TcpServer; "
            "from simulators.emulators.keithley2450 import Keithley2450Emulator; "
            "server = TcpServer(Keithley2450Emulator()).start(); server.stop(); print('served')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "served\n", done.stderr


def test_a_plugin_cannot_take_a_built_in_name_and_is_told_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "acme_hil-0.1.dist-info"  # an installed package's metadata, as pip leaves it
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-hil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hil.instruments]\nkeithley_2450 = acme_hil.smu:AcmeSmu\n"
                                           "acme_smu = acme_hil.smu:AcmeSmu\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    available.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"'keithley_2450' = 'acme_hil\.smu:AcmeSmu' \(group hil\.instruments\) "
                                             r"is ignored: the name is taken by drivers\.keithley2450:Keithley2450"):
            names = available()
    finally:
        available.cache_clear()
    assert names["keithley_2450"] == BUILTIN["instruments"]["keithley_2450"]
    assert names["acme_smu"] == "acme_hil.smu:AcmeSmu"


def test_yaml_merge_keys_and_anchors_work_in_a_lab_file(tmp_path: Path) -> None:
    """Keys must be names (``on:`` is refused), but a merge key ``<<: *anchor`` is YAML's way to share settings."""
    path = write(tmp_path, """
        worlds:
          table: {kind: optical_table}
        instruments:
          slm: &simulated {driver: simulated_slm, world: table}
          camera:
            <<: *simulated
            driver: simulated_camera
    """)
    with Lab.load(path) as lab:
        assert lab["camera"].capability == "camera" and lab["camera"].world is lab["slm"].world


def test_numbers_in_exponent_notation_are_numbers_and_round_trip(tmp_path: Path) -> None:
    """``1e5`` and ``1.5e7`` are floats, as in YAML 1.2 (PyYAML's YAML 1.1 reads them as text, which a setting got
    as a string); text that looks like one is quoted when written, so a run's protocol.yaml reads back the same."""
    path = write(tmp_path, """
        worlds:
          resistive: {kind: resistive_network}
        instruments:
          out: {driver: simulated_analog_output, world: resistive, limits: {voltage_v: {min: -2.5, max: 2.5}}}
          in: {driver: simulated_analog_input, world: resistive}
        systems:
          network:
            kind: resistive_network
            instruments: {output: out, input: in}
            settings: {sample_rate_hz: 1e5}
    """)
    with Lab.load(path) as lab:  # the setting as text was "'<=' not supported between 'float' and 'str'"
        assert lab.systems["network"].sample_rate_hz == 1e5
    assert YamlDocument.parse("a: 1.5e7\nb: -2E-3\nc: .5e+2\nd: 1e\ne: '1e7'\n").data == {
        "a": 1.5e7, "b": -2e-3, "c": 50.0, "d": "1e", "e": "1e7"}
    values = {"name": "1e7", "lr": 1e-05, "size": 15000000.0, "text": "1.5E+3"}
    assert YamlDocument.parse(dump_yaml(values)).data == values


WORLDS_OF_A_PLUGIN = '''
from pydantic import BaseModel

from hil.config import Strict
from simulators.analog import AnalogWorld
from simulators.world import World


class Settings(BaseModel):
    gain: float = 1.0


class NoConfig(World):
    kind = "no_config"


class LaxConfig(World):
    kind = "lax_config"
    Config = Settings


class NoKind(World):
    class Config(Strict):
        gain: float = 1.0


class NoConverters(AnalogWorld):
    kind = "no_converters"

    class Config(Strict):
        gain: float = 1.0

    n_outputs = n_inputs = 1

    def respond(self, drive_v, sample_rate_hz):
        return drive_v
'''


@pytest.mark.parametrize(("kind", "expected"), [
    ("NoConfig", r"NoConfig\.Config must be a hil\.config\.Strict model"),
    ("LaxConfig", r"LaxConfig\.Config must be a hil\.config\.Strict model .*\(Strict refuses a misspelt key\)$"),
    ("NoConverters", r"NoConverters\.Config needs a converters: ConverterConfig field"),
    ("NoKind", r"world kind 'unusable_worlds:NoKind' \(unusable_worlds\.NoKind\) does not set kind, the name its "
               r"seeds are derived from \(worlds of different kinds with one seed are independent devices\); set "
               r'kind = "\.\.\." on the class$'),
])
def test_a_world_class_without_a_usable_config_is_named_at_its_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     kind: str, expected: str) -> None:
    """A world written without a Config, with a plain pydantic one (which would ignore a misspelt key), or an
    analog world without converters is a config error at its ``kind`` line, not an AttributeError; so is one without
    its own kind, which drew the same hidden device as every other such world."""
    (tmp_path / "unusable_worlds.py").write_text(WORLDS_OF_A_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, f"""
        worlds:
          bench: {{kind: "unusable_worlds:{kind}"}}
        instruments:
          out: {{driver: simulated_analog_output, world: bench}}
    """)
    with pytest.raises(ConfigError, match=rf"lab\.yaml:2: worlds\.bench\.kind: {expected}"), Lab.load(path):
        pass


def test_settings_too_large_for_a_systems_arithmetic_are_located_not_a_traceback(tmp_path: Path) -> None:
    """Each setting of the oscillator is within its own range, but a gap of 1e300 s at 1e300 Hz overflows (the lab's
    answer to a system's OverflowError, which this system now checks itself: see
    test_a_system_that_runs_out_of_memory_while_built_is_one_line_at_its_settings)."""
    path = write(tmp_path, """
        worlds:
          osc: {kind: oscillator_network}
        instruments:
          out: {driver: simulated_analog_output, world: osc}
          in: {driver: simulated_analog_input, world: osc}
        systems:
          s:
            kind: oscillator
            instruments: {output: out, input: in}
            settings: {sample_rate_hz: 1.0e+300, gap_s: 1.0e+300}
    """)
    lab = Lab.load(path)
    with pytest.raises(ConfigError, match=r"lab.yaml:10: systems\.s\.settings\.gap_s: gap_s 1e\+300 s at 1e\+300 Hz "
                                          r"holds more samples than any instrument records; shorten gap_s$"):
        lab.build()


def test_lab_safe_state_reaches_every_instrument_when_one_fails(tmp_path: Path) -> None:
    """An interlock's safe state goes on past an instrument that fails (its cable pulled), as close does."""
    path = write(tmp_path, """
        instruments:
          awg:
            driver: keysight_33500b
            emulate: true
            limits: {voltage_v: {min: -2.0, max: 2.0, max_step: 0.5}}
          smu: {driver: keithley_2450, emulate: true, timeout_s: 0.5}
    """)
    lab = Lab.load(path)
    with lab:
        awg = emulators(lab)["Keysight33500BEmulator"]
        lab["awg"].safe_state()
        lab["awg"].set_voltage(1, 1.0)
        lab["awg"].set_output(1, True)
        lab._servers["smu"].stop()  # cable pulled
        with pytest.raises(TransportError, match=r"^smu"):
            lab.safe_state()  # the smu, connected last, is tried first
        assert awg.channels[1].output_on is False and awg.channels[1].offset_emf_v == 0.0
        with pytest.raises(TransportError, match=r"^smu"):
            lab.close()
    assert not lab["awg"].connected and not lab["smu"].connected and lab._servers == {}


def test_an_instrument_connected_before_open_is_left_safe_and_closed_by_the_lab() -> None:
    """open() passed over an instrument already connected, so close() left it live, and stopped its emulator."""
    lab = Lab.load(REPO / "lab.yaml")
    lab.build()
    lab["awg"].connect()
    with lab:
        awg = emulators(lab)["Keysight33500BEmulator"]
        lab["awg"].safe_state()
        lab["awg"].set_voltage(1, 1.0)
        lab["awg"].set_output(1, True)
    assert not lab["awg"].connected and lab._servers == {}
    assert awg.channels[1].output_on is False and awg.channels[1].offset_emf_v == 0.0


OPTICAL_LAB = """
worlds:
  table: {kind: optical_table, config: {%s}}
instruments:
  slm: {driver: simulated_slm, world: table}
  camera: {driver: simulated_camera, world: table}
systems:
  optical:
    kind: optical
    instruments: {slm: slm, camera: camera}
    settings: {n_in: 16, n_params: 16, n_out: 4, %s}
"""

OSCILLATOR_LAB = """
worlds:
  osc: {kind: oscillator_network}
instruments:
  out: {driver: simulated_analog_output, world: osc}
  in: {driver: simulated_analog_input, world: osc}
systems:
  oscillator:
    kind: oscillator
    instruments: {output: out, input: in}
    settings:
      %s
"""


@pytest.mark.parametrize(("text", "expected"), [
    (OPTICAL_LAB % ("", "fft_size: .nan"),  # was a device call returning NaN, mid-run
     r"lab.yaml:10: systems\.optical\.settings\.fft_size: Input should be a valid integer \(got nan\)$"),
    (OPTICAL_LAB % ("", "block: true"),  # was torch's error for repeat_interleave, over eleven lines
     r"lab.yaml:10: systems\.optical\.settings\.block: expected a number \(got True\)$"),
    (OPTICAL_LAB % ("", "wavelength_m: green"),  # was accepted (used only with planes > 1)
     r"lab.yaml:10: systems\.optical\.settings\.wavelength_m: Input should be a valid number; write a plain number "
     r"such as 3 or 0\.5, unquoted \(got 'green'\)$"),
    (OSCILLATOR_LAB % "output_scale_v: .inf",  # was accepted: every output divided by infinity, 0
     r"lab.yaml:11: systems\.oscillator\.settings\.output_scale_v: Input should be a finite number \(got inf\)$"),
    (OSCILLATOR_LAB % "sensed:\n        - true\n        - 1",  # was an error at the first device call
     r"lab.yaml:12: systems\.oscillator\.settings\.sensed\.0: expected a number \(got True\)$"),
    ("""
instruments:
  smu:
    driver: keithley_2450
    emulate: true
    settings: {remote_sense: "false"}
""", r"lab.yaml:5: instruments\.smu\.settings\.remote_sense: expected true or false \(got 'false'\)$"),
    (OPTICAL_LAB % ("", "wavelength_m: '" + "5" * 300 + "'"),  # was echoed whole, 300 digits
     r"lab.yaml:10: systems\.optical\.settings\.wavelength_m: Input should be a valid number; write a plain number "
     r"such as 3 or 0\.5, unquoted \(got '5{19}…, 302 characters\)$"),
])
def test_a_setting_not_of_its_type_as_written_is_refused_at_its_line(tmp_path: Path, text: str,
                                                                      expected: str) -> None:
    """Settings are checked against the annotations of their class's ``__init__`` before it sees them: a NaN or an
    infinity, true for a number, text for a number or a switch (``bool("false")`` is True: the Keithley switched to
    4-wire sensing) are refused where they are written, not taken, or a traceback or NaN later."""
    lab = Lab.load(write(tmp_path, text))
    with pytest.raises(ConfigError, match=expected):
        lab.build()
    assert lab._servers == {}


def test_settings_of_their_type_are_taken_as_written(tmp_path: Path) -> None:
    """An integer is a number, a list a sequence, null an optional value: the check refuses only what is wrong."""
    text = OSCILLATOR_LAB % "{sample_rate_hz: 4000, carrier_hz: null, freq_hz: [150, 210.5, 290, 400], sense: velocity}"
    with Lab.load(write(tmp_path, text.replace("    settings:\n      {", "    settings: {"))) as lab:
        system = lab.systems["oscillator"]
        assert system.sample_rate_hz == 4000 and system.carrier_hz is None


class OffsetOutput(SimulatedAnalogOutput):
    """A plugin's analog output with a setting of a fixed number of values, annotated as a tuple."""

    def __init__(self, world: Any, *, offsets_v: tuple[float, float] = (0.0, 0.0), **common: Any):
        super().__init__(world, **common)
        self.offsets_v = offsets_v


@pytest.mark.parametrize(("offsets", "expected"), [
    ("[0.1, -0.2]", None),
    ("[0.1]", r"lab.yaml:3: instruments\.out\.settings\.offsets_v\.1: too few items: item 1 is missing \(counting "
              r"from 0\)$"),
    ("[0.1, true]", r"lab.yaml:3: instruments\.out\.settings\.offsets_v\.1: expected a number \(got True\)$"),
])
def test_a_tuple_setting_is_written_as_a_yaml_list(tmp_path: Path, offsets: str, expected: str | None) -> None:
    """A tuple is written as a list in YAML: a class's tuple setting was refused whatever it held ("Input should be a
    valid tuple"), while its items are checked as any setting's."""
    lab = Lab.load(write(tmp_path, f"""
        worlds: {{osc: {{kind: oscillator_network}}}}
        instruments:
          out: {{driver: "tests.test_lab:OffsetOutput", world: osc, settings: {{offsets_v: {offsets}}}}}
        """))
    if expected is not None:
        with pytest.raises(ConfigError, match=expected):
            lab.build()
        return
    assert lab.build()["out"].offsets_v == [0.1, -0.2]  # as the lab file wrote it; the class makes of it what it needs


#: A plugin world whose Config bounds nothing, and whose construction fails on a negative size.
LOOSE_WORLD = """
import torch
from hil.config import Strict
from simulators.world import World


class LooseConfig(Strict):
    size: int = 4
    gain: float = 1.0
    gains: list[float] = [1.0]


class Loose(World):
    kind = "loose"
    Config = LooseConfig

    def _construct(self):
        self.noise = torch.zeros(self.config.size)
"""


@pytest.fixture
def loose_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The lab text of a world of kind `Loose`, its config to fill in with %s. The module is forgotten afterwards:
    tests/contract/test_out_of_tree.py expects no ``acme_worlds`` to be importable."""
    (tmp_path / "acme_worlds.py").write_text(LOOSE_WORLD)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "worlds:\n  w: {kind: 'acme_worlds:Loose', config: {%s}}\n"
    sys.modules.pop("acme_worlds", None)


@pytest.mark.parametrize(("text", "expected"), [
    ("size: -4", r"lab.yaml:2: worlds\.w\.config: the realistic acme_worlds:Loose cannot be simulated with this "
                 r"config \(RuntimeError: .*\); give values of a size a bench could have$"),
    (None,  # was a ZeroDivisionError traceback; now the optical system names it
     r"lab.yaml:10: systems\.optical\.settings\.planes: planes must be a positive integer, got 0$"),
])
def test_a_value_that_breaks_a_worlds_or_systems_construction_is_located_not_a_traceback(
        tmp_path: Path, loose_world: str, text: str | None, expected: str) -> None:
    """Values a Config or a class does not bound, but cannot work with (a negative size, a zero it divides by),
    are one located line, not a torch or Python traceback."""
    lab = Lab.load(write(tmp_path, loose_world % text if text else OPTICAL_LAB % ("", "planes: 0")))
    with pytest.raises(ConfigError, match=expected):
        lab.build()


@pytest.mark.parametrize(("text", "expected"), [
    ("""
        description: "Default lab
        instruments:
          awg: {driver: keysight_33500b, emulate: true}
     """, r"lab.yaml:1: description: invalid YAML: while scanning a quoted scalar found unexpected end of stream on "
         r"line 4$"),
    ("""
        instruments:
          slm: {driver: simulated_slm, world: table
          camera: {driver: simulated_camera, world: table}
     """, r"lab.yaml:2: instruments\.slm: invalid YAML: while parsing a flow mapping expected ',' or '}', but got ':' "
         r"on line 3$"),
    ("instruments:\n  awg:\n\tdriver: keysight_33500b\n",
     r"lab.yaml:3: instruments\.awg\.driver: invalid YAML: .* found character '\\t' that cannot start any token; use "
     r"spaces: YAML does not allow a tab there$"),
    (f"worlds:\n  table:\n    kind: optical_table\n    seed: {'9' * 5000}\n",  # was a ValueError's traceback
     r"lab.yaml:4: worlds\.table\.seed: invalid YAML: an integer of 5000 characters is more than Python reads; give "
     r"a smaller number$"),
])
def test_a_yaml_mistake_is_located_where_it_is_made(tmp_path: Path, text: str, expected: str) -> None:
    """A quote or a brace left open is reported where it opens, not at the end of the file or the next line where
    YAML notices; a tab used to indent is named under the key it indents."""
    with pytest.raises(ConfigError, match=expected):
        Lab.load(write(tmp_path, text))


@pytest.mark.parametrize(("config", "expected"), [
    ("gain: 1.0e+300", r"lab.yaml:2: worlds\.w\.config\.gain: 1e\+300 is beyond the float32 range \(±3\.4e\+38\) "
                       r"that the simulation computes in; give a value a bench could have$"),
    ("gains: [1, 1.0e+300]", r"lab.yaml:2: worlds\.w\.config\.gains\.1: 1e\+300 is beyond the float32 range"),
])
def test_a_world_config_number_beyond_float32_is_refused_at_its_field(tmp_path: Path, loose_world: str, config: str,
                                                                      expected: str) -> None:
    """The simulators compute in float32, where 1e300 is infinite: such a value is refused at the world's config
    (a list's item by its index), not turned into NaN or an overflow at the first device call. The built-in worlds
    bound every number well inside float32 (tests/simulators/test_config_bounds.py); a plugin's may not."""
    with pytest.raises(ConfigError, match=expected):
        Lab.load(write(tmp_path, loose_world % config)).build()


def test_a_bound_is_checked_before_the_float32_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lab.yaml:2: worlds\.table\.config\.slow\.power_wander: Input should be "
                                          r"greater than or equal to 0"):
        Lab.load(write(tmp_path, OPTICAL_LAB % ("slow: {power_wander: -1.0e+39}", ""))).build()


@pytest.mark.parametrize(("raised", "said"), [
    ("MemoryError()", "a value is too large: building with it needs more memory than this machine has (MemoryError); "
                      "give smaller settings"),
    ("RuntimeError('DefaultCPUAllocator: can\\'t allocate memory')",  # torch's way of saying it
     "a value is too large: building with it needs more memory than this machine has (RuntimeError: "
     "DefaultCPUAllocator: can't allocate memory); give smaller settings"),
    ("ValueError('size must be even')", "size must be even"),  # the class's own words, without its type
    ("OverflowError('cannot convert float infinity to integer')",  # round(1e300 * 1e300)
     "a value is too large (cannot convert float infinity to integer); give smaller settings"),
])
def test_a_system_that_runs_out_of_memory_while_built_is_one_line_at_its_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: str, said: str) -> None:
    """A size a system does not bound (resistive n_hidden: 1000000000000) ran out of memory as a traceback."""
    module = f"acme_{raised.partition('(')[0].lower()}"  # one per case: a module is imported once
    (tmp_path / f"{module}.py").write_text(
        "from hil.systems.base import PhysicalSystem\n\n\n"
        "class Greedy(PhysicalSystem):\n"
        "    kind = 'greedy'\n\n"
        "    def __init__(self, instruments, *, name='', size: int = 1):\n"
        f"        raise {raised}\n\n"
        "    def _run(self, x, theta):\n        return x\n\n"
        "    def physics_model(self):\n        return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = Lab.load(write(tmp_path, f"""
        systems:
          s: {{kind: "{module}:Greedy", instruments: {{}}, settings: {{size: 1000000000000}}}}
    """))
    with pytest.raises(ConfigError, match=f"lab.yaml:2: systems\\.s\\.settings: {re.escape(said)}$"):
        lab.build()


@pytest.mark.parametrize(("field", "advice"), [
    ("network: {nonlinear_length_m: 1.0e-300}", "give a value a bench could have"),  # 0 is refused: it divides by it
    ("shot: {sensor_noise_v_rthz: 1.0e-300}", "give 0, or a value a bench could have")])
def test_a_world_config_number_nearer_0_than_float32_holds_is_refused_at_its_field(tmp_path: Path, field: str,
                                                                                   advice: str) -> None:
    """A positive value that float32 rounds to 0 (a Duffing length of 1e-300 m, which the physics divides by) is
    refused, while 0 itself stays allowed where its field allows it; the refusal offers 0 only where the field takes
    it (it offered 0 for the length, which is then refused as not greater than 0)."""
    text = OSCILLATOR_LAB.replace("{kind: oscillator_network}", "{kind: oscillator_network, config: {" + field + "}}")
    lab = Lab.load(write(tmp_path, text % "{}"))
    name = field.replace(": {", ".").split(":")[0]
    with pytest.raises(ConfigError, match=rf"lab.yaml:2: worlds\.osc\.config\.{re.escape(name)}: 1e-300 is nearer 0 "
                                          r"than the float32 the simulation computes in holds \(1\.18e-38\); "
                                          rf"{advice}$"):
        lab.build()
    if "nonlinear" in field:  # the advice taken: refused
        zero = Lab.load(write(tmp_path, text.replace("1.0e-300", "0") % "{}"))
        with pytest.raises(ConfigError, match="nonlinear_length_m: Input should be greater than 0"):
            zero.build()


@pytest.mark.parametrize("command", [["devices", "--lab", "P"], ["check", "--lab", "P", "P"],
                                     ["run", "--lab", "P", "P"]])
def test_a_protocol_given_as_the_lab_file_is_named_as_one(capsys: pytest.CaptureFixture[str],
                                                          command: list[str]) -> None:
    """``hil devices --lab experiments/x.yaml`` listed the protocol's keys as unknown lab keys ('name', and 8 more)."""
    from hil.cli import main

    protocol = REPO / "experiments" / "crossbar_pat_digits.yaml"
    assert main([str(protocol) if part == "P" else part for part in command]) == 2
    assert capsys.readouterr().err == (f"hil: error: {protocol} is a protocol, not a lab file; give a lab file (e.g. "
                                       "lab.yaml) with --lab or as the protocol's lab:\n")


def test_a_protocol_named_as_its_own_lab_is_named_as_one(tmp_path: Path) -> None:
    """A protocol's ``lab:`` naming a protocol was 'name: unknown key 'name'; allowed: ... (and 8 more problems)'."""
    from hil.protocol import check_protocol

    path = tmp_path / "p.yaml"
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("lab: lab.yaml", f"lab: {path}"))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))} is a protocol, not a lab file; give a lab file"):
        check_protocol(path)


def test_a_document_read_already_is_named_by_its_file_when_it_is_not_what_was_asked_for() -> None:
    """`Lab.load` and `load_protocol` take a document read already (`hil check` reads its file once): one of the
    other kind is named by its file, as a path given is, not by the document object's repr."""
    from hil.config import YamlDocument
    from hil.protocol import load_protocol

    protocol, lab = REPO / "experiments" / "crossbar_pat_digits.yaml", REPO / "lab.yaml"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(protocol))} is a protocol, not a lab file; give a lab"):
        Lab.load(YamlDocument.read(protocol))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(lab))} is a lab file; hil run takes a protocol"):
        load_protocol(YamlDocument.read(lab))


@pytest.mark.parametrize("command", [["devices", "--lab", "L"], ["check", "L"], ["check", "--lab", "L", "P"],
                                     ["run", "--lab", "L", "P"]])
def test_a_lab_file_with_a_protocols_key_misspelt_into_it_is_a_lab_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """A lab file whose ``systems:`` lost its s was called a protocol (or checked as one, its name missing)."""
    from hil.cli import main

    lab = write(tmp_path, (REPO / "lab.yaml").read_text(encoding="utf-8").replace("\nsystems:", "\nsystem:"))
    line = lab.read_text(encoding="utf-8").splitlines().index("system:") + 1
    protocol = REPO / "experiments" / "crossbar_pat_digits.yaml"
    assert main([str({"L": lab, "P": protocol}.get(part, part)) for part in command]) == 2
    assert capsys.readouterr().err == (f"hil: error: {lab}:{line}: system: unknown key 'system'; allowed: "
                                       "description, worlds, instruments, systems\n")


SYSTEMS_AND_DRIVERS_OF_A_PLUGIN = '''
from typing import Any

from hil.systems.resistive import ResistiveNetworkSystem
from simulators.analog import SimulatedAnalogOutput


class SizedByItsInput(ResistiveNetworkSystem):
    """Reads a role before the base class has checked that every role is given."""

    def __init__(self, instruments, **settings: Any):
        self.n_channels_in = instruments["input"].n_channels
        super().__init__(instruments, **settings)


class Nameless(ResistiveNetworkSystem):
    def __init__(self, instruments, *, sample_rate_hz: float = 1e5):
        super().__init__(instruments, sample_rate_hz=sample_rate_hz)


class Untyped(ResistiveNetworkSystem):
    """Leaves the type of its own settings open."""

    def __init__(self, instruments, *, name="", gains: Any = (1.0,), offset=0.0):
        self.gains, self.offset = gains, offset
        super().__init__(instruments, name=name)


class WithoutCommon(SimulatedAnalogOutput):
    def __init__(self, world, *, spare: int = 0):
        super().__init__(world)
'''

RESISTIVE_LAB = """
    worlds:
      net: {kind: resistive_network}
    instruments:
      out: {driver: %s, world: net, limits: {voltage_v: {min: -2.5, max: 2.5}}}
      in: {driver: simulated_analog_input, world: net}
    systems:
      network: {kind: %s, instruments: %s}
"""


@pytest.mark.parametrize(("driver", "kind", "roles", "expected"), [
    ("simulated_analog_output", "plugin_role_systems:SizedByItsInput", "{output: out}",
     r"lab\.yaml:7: systems\.network\.instruments: system 'network' needs instrument\(s\) for input; system kind "
     r"'plugin_role_systems:SizedByItsInput' has the roles output, input$"),
    ("simulated_analog_output", "plugin_role_systems:Nameless", "{output: out, input: in}",
     r"lab\.yaml:7: systems\.network\.kind: system kind 'plugin_role_systems:Nameless' cannot be built: its __init__ "
     r"does not take the name the lab gives it; write def __init__\(self, instruments, \*, name='', <settings>\) and "
     r"pass name on to PhysicalSystem\.__init__$"),
    ("plugin_role_systems:WithoutCommon", "resistive_network", "{output: out, input: in}",
     r"lab\.yaml:4: instruments\.out\.driver: plugin_role_systems:WithoutCommon \(plugin_role_systems\.WithoutCommon\) "
     r"cannot be built: its __init__ does not take name and limits, which the lab gives every instrument; write "
     r"def __init__\(self, world, \*, <options>, \*\*common\) and pass \*\*common on to super\(\)\.__init__\(\)$"),
])
def test_a_plugin_class_the_lab_cannot_call_is_located_and_says_what_to_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str, kind: str, roles: str, expected: str) -> None:
    """A system's own __init__ that read a role the lab left out was a KeyError traceback; a system's or driver's
    __init__ without the framework's keywords was "got an unexpected keyword argument 'name'" at the settings."""
    (tmp_path / "plugin_role_systems.py").write_text(SYSTEMS_AND_DRIVERS_OF_A_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = Lab.load(write(tmp_path, RESISTIVE_LAB % (driver, kind, roles)))
    with pytest.raises(ConfigError, match=expected):
        lab.build()


@pytest.mark.parametrize(("settings", "expected"), [
    ("{gains: [1.0, {a: [2, .nan]}]}", r"systems\.network\.settings\.gains\.1\.a\.1: Input should be a finite number "
                                      r"\(got nan\)$"),
    ("{offset: -.inf}", r"systems\.network\.settings\.offset: Input should be a finite number \(got -inf\)$"),
])
def test_a_setting_of_open_type_is_refused_at_its_line_if_it_holds_nan_or_infinity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str, expected: str) -> None:
    """A setting annotated ``Any``, or not at all, is left to its class to check, but no setting takes a NaN or an
    infinity, at any depth: it reached the class (a driver too) as a number."""
    (tmp_path / "plugin_role_systems.py").write_text(SYSTEMS_AND_DRIVERS_OF_A_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = RESISTIVE_LAB % ("simulated_analog_output", "plugin_role_systems:Untyped", "{output: out, input: in}")
    lab = Lab.load(write(tmp_path, text.replace("in}}", f"in}}, settings: {settings}}}")))
    with pytest.raises(ConfigError, match=r"^\S*lab\.yaml:7: " + expected):
        lab.build()
    with Lab.load(write(tmp_path, text.replace("in}}", "in}, settings: {gains: [1.0, {a: [2, 3.5]}]}}"))) as built:
        assert built.systems["network"].gains == [1.0, {"a": [2, 3.5]}]


SUBCLASSES_PASSING_SETTINGS_ON = '''
from typing import Any

from drivers.keithley2450 import Keithley2450
from hil.systems.resistive import ResistiveNetworkSystem


class Logged(ResistiveNetworkSystem):
    """A variant of a system: a setting of its own, and the rest passed on to the system it extends."""

    def __init__(self, instruments, *, log_calls: bool = False, **settings: Any):
        super().__init__(instruments, **settings)
        self.log_calls = log_calls


class Labelled(Keithley2450):
    def __init__(self, transport, *, label: str = "", **common: Any):
        super().__init__(transport, **common)
        self.label = label
'''


@pytest.mark.parametrize(("settings", "expected"), [
    ("{log_calls: true, sample_rate_hz: 50000.0}", None),
    ("{sample_rate_hz: '5e4'}", r"systems\.network\.settings\.sample_rate_hz: Input should be a valid number"),
    ("{sample_rate: 5e4}", r"systems\.network\.settings\.sample_rate: unknown setting 'sample_rate' for "
                           r"plugin_subclasses:Logged; allowed: gate_max_v, gate_min_v, input_max_v, input_min_v, "
                           r"log_calls, max_batch, n_hidden, n_inputs, n_outputs, output_scale_v, sample_rate_hz$"),
])
def test_a_system_that_extends_another_takes_the_settings_it_passes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str, expected: str | None) -> None:
    """A system subclassing a built-in one, its __init__ passing ``**settings`` on, had every setting of the one it
    extends refused: "unknown setting 'sample_rate_hz' for plugin_subclasses:Logged; allowed: log_calls"."""
    (tmp_path / "plugin_subclasses.py").write_text(SUBCLASSES_PASSING_SETTINGS_ON)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = RESISTIVE_LAB % ("simulated_analog_output", "plugin_subclasses:Logged", "{output: out, input: in}")
    lab = Lab.load(write(tmp_path, text.replace("in}}", f"in}}, settings: {settings}}}")))
    if expected is not None:
        with pytest.raises(ConfigError, match=r"^\S*lab\.yaml:7: " + expected):
            lab.build()
        return
    lab.build()
    network = lab.systems["network"]
    assert (network.log_calls, network.sample_rate_hz) == (True, 50000.0)


def test_a_driver_that_extends_another_takes_the_settings_it_passes_on(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a system's: a driver subclassing the 2450 had its ``terminals`` refused as an unknown setting."""
    (tmp_path / "plugin_subclasses.py").write_text(SUBCLASSES_PASSING_SETTINGS_ON)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """
        instruments:
          smu: {driver: "plugin_subclasses:Labelled", emulate: true, settings: {label: bench 3, terminals: %s}}
    """
    with pytest.raises(ConfigError, match=r"^\S*lab\.yaml:2: instruments\.smu\.settings\.terminals: Input should be "
                                          r"a valid string"):
        Lab.load(write(tmp_path, text % "1")).build()
    with Lab.load(write(tmp_path, text % "rear")) as lab:
        assert (lab["smu"].label, lab["smu"].terminals) == ("bench 3", "rear")


PLUGIN_SLIPS = '''
from hil.systems.resistive import ResistiveNetworkSystem
from simulators.resistive import ResistiveNetwork


class ReadsAMissingRole(ResistiveNetworkSystem):
    def __init__(self, instruments, *, name=""):
        self.drive = instruments["outputs"]
        super().__init__(instruments, name=name)


class ReadsAMissingField(ResistiveNetwork):
    kind = "reads_a_missing_field"

    def _construct(self):
        super()._construct()
        self.inputs = self.config.geometry.n_input
'''


@pytest.mark.parametrize(("world", "system", "expected"), [
    ("resistive_network", "plugin_slips:ReadsAMissingRole",
     r"lab\.yaml:7: systems\.network\.kind: plugin_slips\.ReadsAMissingRole raised KeyError: 'outputs' "
     r"\({file}:{line}\); fix it there$"),
    ("plugin_slips:ReadsAMissingField", "resistive_network",
     r"lab\.yaml:2: worlds\.net\.kind: plugin_slips\.ReadsAMissingField raised AttributeError: 'Geometry' object "
     r"has no attribute 'n_input' \({file}:{line}\); fix it there$"),
])
def test_a_plugin_system_or_worlds_own_slip_while_built_is_located_and_names_its_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: str, system: str, expected: str) -> None:
    """A slip in a plugin system's __init__ or a plugin world's _construct (a key or an attribute that is not there)
    ended hil check and hil devices in a traceback, with exit status 1."""
    (tmp_path / "plugin_slips.py").write_text(PLUGIN_SLIPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plugin_slips", raising=False)  # another test's file of that name
    text = RESISTIVE_LAB % ("simulated_analog_output", system, "{output: out, input: in}")
    lab = Lab.load(write(tmp_path, text.replace("kind: resistive_network}", f"kind: {world}}}")))
    slip = "instruments[" if "Role" in system else "n_input"
    line = next(n for n, text in enumerate(PLUGIN_SLIPS.splitlines(), 1) if slip in text)
    with pytest.raises(ConfigError, match=r"^\S*" + expected.format(file=re.escape(str(tmp_path / "plugin_slips.py")),
                                                                     line=line)):
        lab.build()


SYSTEMS_WITHOUT_KIND_OR_ROLES = '''
from hil.systems.base import PhysicalSystem


class Written(PhysicalSystem):
    def _run(self, x, theta):
        return x

    def physics_model(self):
        return None


class Unkinded(Written):
    roles = {}


class Roleless(Written):
    kind = "roleless"
'''


@pytest.mark.parametrize(("kind", "expected"), [
    ("Unkinded", r"systems\.network\.kind: system kind 'plugin_unset:Unkinded' \(plugin_unset\.Unkinded\) does not "
                 r"set kind, the name its twins are saved under \(a twin\.from_run of another kind is refused\); set "
                 r"kind = \"\.\.\.\" on the class$"),
    ("Roleless", r"systems\.network\.instruments\.output: system kind 'plugin_unset:Roleless' "
                 r"\(plugin_unset\.Roleless\) declares no roles; set roles = \{\"<role>\": <capability>, \.\.\.\} on "
                 r"the class \(e\.g\. \{\"output\": AnalogOutput\}\): the capability each role's instrument must "
                 r"have$"),
])
def test_a_plugin_system_without_kind_or_roles_is_told_to_set_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, expected: str) -> None:
    """A system class that left roles unset was told "has no role 'output'; its roles: " (none listed), and one that
    left kind unset was taken under the base's placeholder, "system", which its twins were saved under: a twin of
    another such system loaded for it. A world without kind has long been refused so."""
    (tmp_path / "plugin_unset.py").write_text(SYSTEMS_WITHOUT_KIND_OR_ROLES)
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = Lab.load(write(tmp_path, RESISTIVE_LAB % ("simulated_analog_output", f"plugin_unset:{kind}",
                                                    "{output: out, input: in}")))
    with pytest.raises(ConfigError, match=r"^\S*lab\.yaml:7: " + expected):
        lab.build()


class SerialSmu(Keithley2450):
    """A bench driver for an instrument on a serial line at its own speed."""

    transport_options: ClassVar[dict[str, Any]] = {"baudrate": 115200}


def test_a_serial_drivers_baud_rate_is_left_out_of_a_tcp_emulator_and_refused_for_a_visa_resource(
        tmp_path: Path) -> None:
    """``transport_options = {"baudrate": ...}`` reached the VISA transport of ``emulate: true`` and of a TCPIP
    resource: "Transport.__init__() got an unexpected keyword argument 'baudrate'", at the settings. (An ASRL
    resource, a serial line, takes it: see test_an_asrl_resource_takes_the_lines_speed_from_the_lab_or_the_driver.)"""
    path = write(tmp_path, """
        instruments:
          emulated: {driver: "tests.test_lab:SerialSmu", emulate: true}
          over_a_pty: {driver: "tests.test_lab:SerialSmu", emulate: {via: pty}}
    """)
    with Lab.load(path) as lab:
        assert "MODEL 2450" in lab["emulated"].identify() and lab["over_a_pty"].transport.baudrate == 115200
    path = write(tmp_path, """
        instruments:
          smu: {driver: "tests.test_lab:SerialSmu", resource: "TCPIP::10.0.0.5::INSTR"}
    """)
    with pytest.raises(ConfigError, match=r"lab.yaml:2: instruments\.smu\.resource: tests\.test_lab:SerialSmu's "
                                          r"transport_options give baudrate, which VisaTransport "
                                          r"\(TCPIP::10\.0\.0\.5::INSTR\) does not take; a serial line's options need "
                                          r"a serial resource: its device path \(/dev/ttyUSB0, COM3\) or ASRL resource "
                                          r"\(ASRL/dev/ttyUSB0::INSTR\)$"):
        Lab.load(path).build()


def test_a_lab_gives_a_serial_lines_speed_where_the_resource_is_a_device_path(tmp_path: Path) -> None:
    """``baudrate`` sets the line's speed over the driver's own (pyserial's 9600 where neither gives one); a VISA
    resource or a simulated instrument has no line for it to set, and is refused at the key."""
    path = write(tmp_path, """
        instruments:
          plain: {driver: keithley_2450, emulate: {via: pty}, baudrate: 19200}
          own_speed: {driver: "tests.test_lab:SerialSmu", emulate: {via: pty}, baudrate: 57600}
          default: {driver: keithley_2450, emulate: {via: pty}}
    """)
    with Lab.load(path) as lab:
        assert [lab[name].transport.baudrate for name in ("plain", "own_speed", "default")] == [19200, 57600, 9600]
        assert "MODEL 2450" in lab["own_speed"].identify()
    for line, expected in [
        ('smu: {driver: keithley_2450, resource: "TCPIP::10.0.0.5::5025::SOCKET", baudrate: 19200}',
         r"lab.yaml:4: instruments\.smu\.baudrate: baudrate is a serial line's speed, and "
         r"TCPIP::10\.0\.0\.5::5025::SOCKET is a VISA TCPIP resource, which has no serial line; leave baudrate out \(a "
         r"serial instrument is named by its ASRL resource, ASRL/dev/ttyUSB0::INSTR, or its device path, /dev/ttyUSB0 "
         r"or COM3\)$"),
        ('smu: {driver: keithley_2450, resource: "GPIB0::24::INSTR", baudrate: 19200}',
         r"lab.yaml:4: instruments\.smu\.baudrate: baudrate is a serial line's speed, and GPIB0::24::INSTR is a VISA "
         r"GPIB resource, which has no serial line; leave baudrate out"),
        ("slm: {driver: simulated_slm, world: table, baudrate: 19200}",
         r"lab.yaml:\d+: instruments\.slm: baudrate set for a simulated instrument \(world\), which has no transport; "
         r"leave them out$"),
    ]:
        path = write(tmp_path, f"""
            worlds:
              table: {{kind: optical_table}}
            instruments:
              {line}
        """)
        with pytest.raises(ConfigError, match=expected):
            Lab.load(path).build()


def test_an_asrl_resource_takes_the_lines_speed_from_the_lab_or_the_driver(tmp_path: Path, pty_server) -> None:
    """A VISA serial (ASRL) resource is a serial line like a device path: the lab's ``baudrate`` sets its speed, over
    the driver's ``transport_options`` (pyvisa-py's 9600 where neither gives one). It was refused as "a VISA resource,
    whose speed is the instrument's or the VISA library's", leaving a bench at another speed no way to reach it."""
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    servers = {name: pty_server(Keithley2450Emulator()) for name in ("plain", "own_speed", "default")}
    path = write(tmp_path, f"""
        instruments:
          plain: {{driver: keithley_2450, resource: "ASRL{servers['plain'].resource}::INSTR", baudrate: 19200}}
          own_speed: {{driver: "tests.test_lab:SerialSmu", resource: "ASRL{servers['own_speed'].resource}::INSTR"}}
          default: {{driver: keithley_2450, resource: "ASRL{servers['default'].resource}::INSTR"}}
    """)
    with Lab.load(path) as lab:
        speeds = {name: line_speed(server.resource) for name, server in servers.items()}
        assert speeds == {"plain": 19200, "own_speed": 115200, "default": 9600}
        assert [lab[name].transport.baudrate for name in servers] == [19200, 115200, 9600]
        assert all("MODEL 2450" in lab[name].identify() for name in servers)


def test_instruments_given_one_traffic_log_share_it_in_the_order_of_their_exchanges(tmp_path: Path) -> None:
    """Each instrument opened its own handle on the file and appended through it, its lines named by the resource
    alone: now one log per file, each line naming its instrument, one handle while any instrument is connected, and
    none once the lab is closed."""
    import os

    log = tmp_path / "logs" / "bench.log"

    def handles() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(log) for fd in os.listdir("/proc/self/fd"))

    path = write(tmp_path, f"""
        instruments:
          awg: {{driver: keysight_33500b, emulate: true, traffic_log: {log}}}
          smu: {{driver: keithley_2450, emulate: {{via: pty}}, traffic_log: {tmp_path}/logs/../logs/bench.log}}
    """)
    with Lab.load(path) as lab:
        assert handles() == 1
        resources = {name: lab[name].transport.resource for name in ("awg", "smu")}
        lab["awg"].transport.query("*IDN?")
        lab["smu"].transport.query("*IDN?")
        lab["awg"].close()
        assert handles() == 1  # the smu still logs
        lab["smu"].transport.query("*OPC?")
    assert handles() == 0
    lines = log.read_text().splitlines()
    parsed = [re.fullmatch(r"(\d+\.\d{6})  (awg|smu) \((\S+)\)  ([<>])  b'(.*)'", line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    assert all(match[3] == resources[match[2]] for match in parsed)
    exchanges = [(match[2], match[4], match[5]) for match in parsed]
    asked = max(k for k, exchange in enumerate(exchanges) if exchange == ("awg", ">", r"*IDN?\n"))
    assert [exchange[:2] for exchange in exchanges[asked:asked + 4]] == [("awg", ">"), ("awg", "<"), ("smu", ">"),
                                                                          ("smu", "<")]
    assert exchanges[asked + 2][2] == r"*IDN?\n" and "MODEL 2450" in exchanges[asked + 3][2]
    assert {"awg", "smu"} == {name for name, *_ in exchanges[:asked]}  # both connected first
    closed = exchanges.index(("smu", ">", r"*OPC?\n"))
    assert exchanges[closed + 1] == ("smu", "<", r"1\n") and ("awg", ">", r"OUTP1 OFF\n") in exchanges[asked:closed]
    assert all(name == "smu" for name, *_ in exchanges[closed:])  # the awg, closed, logs no more


class FineStepOutput(SimulatedAnalogOutput):
    """A driver whose own voltage limit takes 400 000 steps of its max_step from end to end."""

    def hardware_limits(self) -> dict[str, Limit]:
        return {**super().hardware_limits(), "voltage_v": Limit("V", -200, 200, max_step=0.001)}


def test_a_drivers_own_limit_that_no_ramp_could_cross_is_named_as_the_drivers(tmp_path: Path) -> None:
    """It was reported at ``instruments.out.max_step``, a field the lab file does not have, with advice (narrow min
    and max) that the lab cannot follow: the driver's limit is refused before the lab's narrows it."""
    lab = Lab.load(write(tmp_path, """
worlds:
  chip: {kind: resistive_network}
instruments:
  out:
    driver: tests.test_lab:FineStepOutput
    world: chip
    limits: {voltage_v: {min: -1, max: 1}}
"""))
    with pytest.raises(ConfigError, match=r"lab\.yaml:5: instruments\.out\.driver: FineStepOutput\.hardware_limits\(\) "
                                          r"gives a limit hil refuses \(max_step: a ramp across the limit, -200\.\.200 "
                                          r"V, in steps of 0\.001 takes 400000 steps \(at most 10000\); raise max_step "
                                          r"to at least 0\.04 V, or narrow min and max\); fix the driver's limit, as a "
                                          r"lab file can only narrow it$"):
        lab.build()


class MisnamedLimitOutput(SimulatedAnalogOutput):
    """A driver whose voltage limit is named otherwise than the analog output checks values against."""

    def hardware_limits(self) -> dict[str, Limit]:
        return {"voltage": Limit("V", -5, 5, max_step=0.5), "sample_rate_hz": Limit("Hz", 1.0, 1e6)}


def test_a_drivers_limits_that_leave_out_one_its_capability_checks_against_are_refused_where_it_is_named(
        tmp_path: Path) -> None:
    """It was built, and the first value checked against voltage_v (the safe state's, at close) raised a bare
    KeyError: 'voltage_v'."""
    lab = Lab.load(write(tmp_path, """
worlds:
  chip: {kind: resistive_network}
instruments:
  out:
    driver: tests.test_lab:MisnamedLimitOutput
    world: chip
"""))
    with pytest.raises(ConfigError, match=r"lab\.yaml:5: instruments\.out\.driver: MisnamedLimitOutput\.hardware_limits"
                                          r"\(\) leaves out voltage_v, which every analog output has; return it too, "
                                          r"as hil\.limits\.Limit$"):
        lab.build()


def test_a_serial_port_in_the_home_folder_is_opened_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          pty_server) -> None:
    """``resource: ~/tty-smu`` (a link a tool such as socat makes to a pty) was opened as ``./~/tty-smu``, and
    ``visa_library: ~/visa/libvisa.so`` was handed to pyvisa as written, while every other path of a lab file is
    the home's."""
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    (home / "tty-smu").symlink_to(pty_server(Keithley2450Emulator()).resource)
    with Lab.load(write(tmp_path, "instruments:\n  smu: {driver: keithley_2450, resource: ~/tty-smu}\n")) as lab:
        assert "MODEL 2450" in lab["smu"].identify()
    lab = write(tmp_path, "instruments:\n  smu: {driver: keithley_2450, resource: 'TCPIP::127.0.0.1::1::SOCKET', "
                          "visa_library: ~/visa/libvisa.so}\n")
    with pytest.raises(ConfigError, match=re.escape(f"VISA library '{home}/visa/libvisa.so' cannot be loaded")):
        Lab.load(lab).build()


def test_a_traffic_log_in_the_home_folder_is_written_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``traffic_log: ~/logs/bench.log`` made a folder named ``~`` in the working directory; it is the home's, as
    ``output.root: ~/runs`` is."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    path = write(tmp_path, "instruments:\n  smu: {driver: keithley_2450, emulate: true, "
                           "traffic_log: ~/logs/bench.log}\n")
    with Lab.load(path) as lab:
        lab["smu"].transport.query("*IDN?")
    assert "MODEL 2450" in (home / "logs" / "bench.log").read_text() and not (elsewhere / "~").exists()


@pytest.mark.parametrize("name", ["optical", "fiber", "crossbar", "oscillator", "resistive_network"])
def test_a_default_dtype_changed_after_the_lab_was_built_changes_nothing_it_measures(name: str) -> None:
    """``torch.set_default_dtype(torch.float64)`` in a notebook, after the lab was built (before, the lab refuses to
    build): the simulators and systems made their tensors in it and met their float32 ones in torch's dtype errors,
    the oscillator's even as the lab closed, in its safe state. They compute in float32 whatever the default."""
    def measured(default: torch.dtype) -> list[torch.Tensor]:
        with Lab.load(REPO / "lab.yaml") as lab:
            system = lab.systems[name]
            generator = torch.Generator().manual_seed(0)
            low, high = system.x_bounds
            x = low + (high - low) * torch.rand(3, system.n_in, generator=generator, dtype=torch.float32)
            low, high = system.theta_bounds
            theta = low + (high - low) * torch.rand(system.n_params, generator=generator, dtype=torch.float32)
            torch.set_default_dtype(default)
            try:
                system.calibrate()
                outputs = [system.forward(x, theta), system.forward(x[:1], theta), system.oracle_model()(x, theta)]
                lab.close()  # the instruments' safe states, under that default too
            finally:
                torch.set_default_dtype(torch.float32)
        return outputs

    for before, after in zip(measured(torch.float32), measured(torch.float64), strict=True):
        assert after.dtype == before.dtype == torch.float32 and torch.equal(after, before)
