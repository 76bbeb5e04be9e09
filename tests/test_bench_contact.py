"""What hil's commands send to a bench that may be in use: an SMU sourcing for someone's measurement, an AWG
playing. Each test serves the instruments' emulators, sets them as that other user left them, and reads back the
exact messages each emulator received and the state it is left in."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.cli import main
from hil.errors import InstrumentBusy, Terminated
from hil.lab import Lab
from hil.transport import _Claim, instrument_key
from simulators.emulators.keithley2450 import Keithley2450Emulator
from simulators.emulators.keysight_33500b import Keysight33500BEmulator
from simulators.emulators.server import TcpServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[tuple[Path, Keithley2450Emulator, Keysight33500BEmulator, TcpServer]]:
    """A lab file of a 2450 sourcing 1.5 V with its output on and data in binary (REAL), and a 33522B whose channel 1
    gives 1 V DC into high impedance, byte order NORMal, channel 2 in Vrms: someone's measurement, set up by another
    program. Yields the lab file, both emulators (their message history cleared) and the 2450's server."""
    smu, awg = Keithley2450Emulator(load_ohm=1000), Keysight33500BEmulator()
    for message in (b":SOUR:FUNC VOLT", b":SOUR:VOLT 1.5", b":SOUR:VOLT:ILIM 0.01", b":OUTP ON", b":FORM:DATA REAL"):
        smu.handle(message)
    for message in (b"OUTP1:LOAD INF", b"SOUR1:FUNC DC", b"SOUR1:VOLT:OFFS 1.0", b"OUTP1 ON", b"FORM:BORD NORM",
                    b"SOUR2:VOLT:UNIT VRMS"):
        awg.handle(message)
    smu.received.clear()
    awg.received.clear()
    with TcpServer(smu) as smu_server, TcpServer(awg) as awg_server:
        lab = tmp_path / "lab.yaml"
        lab.write_text(f"instruments:\n"
                       f"  awg: {{driver: keysight_33500b, resource: '{awg_server.resource}', timeout_s: 1}}\n"
                       f"  smu: {{driver: keithley_2450, resource: '{smu_server.resource}', timeout_s: 1}}\n")
        yield lab, smu, awg, smu_server


def left_as_found(smu: Keithley2450Emulator, awg: Keysight33500BEmulator) -> None:
    """The other user's measurement goes on as set (`bench`)."""
    assert (smu.output, smu.level["VOLT"], smu.data_format) == (True, 1.5, "REAL")
    channel = awg.channels[1]
    assert (channel.output_on, channel.offset_emf_v, channel.load_ohm, awg.byte_order) == (True, 1.0, None, "NORM")
    assert awg.channels[2].volt_unit == "VRMS"


def test_devices_reads_each_identity_and_changes_nothing_on_an_instrument_in_use(bench, capsys) -> None:
    """hil devices, which lists the bench, connected as a run does and left as a run does: the 2450's 1.5 V were
    ramped to 0 and its output switched off, the AWG's channel 1 switched off, its load, byte order and units set, the
    2450's data format and both error queues (*CLS) changed under the measurement going on. It sends *IDN? alone."""
    lab, smu, awg, _ = bench
    assert main(["devices", "--lab", str(lab)]) == 0
    out = capsys.readouterr().out
    assert "KEITHLEY" in out and "33522B" in out
    assert list(smu.received) == [b"*IDN?"]
    assert list(awg.received) == [b"*IDN?"]
    left_as_found(smu, awg)


def test_check_of_the_lab_and_of_a_protocol_sends_nothing(bench, capsys) -> None:
    """hil check says 'no hardware was touched': nothing reaches either instrument."""
    lab, smu, awg, _ = bench
    protocol = lab.parent / "p.yaml"
    protocol.write_text((REPO / "experiments" / "crossbar_pat_digits.yaml").read_text())
    full = lab.parent / "full.yaml"  # the default lab's simulated benches, with these two at their resources
    full.write_text((REPO / "lab.yaml").read_text().split("instruments:\n")[0] + lab.read_text() +
                    "  crossbar: {driver: simulated_crossbar, world: crossbar_chip}\n" +
                    "systems:\n  crossbar:\n    kind: crossbar\n    instruments: {crossbar: crossbar}\n")
    assert main(["check", str(lab)]) == 0
    assert main(["check", str(protocol), "--lab", str(full)]) == 0
    assert capsys.readouterr().out.count("no hardware was touched") == 2
    assert list(smu.received) == [] and list(awg.received) == []
    left_as_found(smu, awg)


@contextlib.contextmanager
def held_by_another_process(resource: str) -> Iterator[None]:
    """The instrument's claim held as another process's hil holds it (a flock on its claim file, which this process's
    own claim, on another open file, cannot share)."""
    path = _Claim.path_of(instrument_key(resource))
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"pid 1: hil run other.yaml", 0)
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["open", "devices"])
def test_an_instrument_held_by_another_process_is_refused_before_anything_is_sent_to_any(bench, how) -> None:
    """A run (or hil devices) whose second instrument another process holds was refused there, after the first had
    been connected (its load, byte order and units set) and made safe on the way out: the AWG's channel 1, which
    someone's measurement used, was switched off by a command that did nothing. Every instrument is claimed before
    anything is sent to any."""
    lab_file, smu, awg, smu_server = bench
    lab = Lab.load(lab_file)
    busy = r"^smu \(.*\): in use by another process \(pid 1: hil run"
    with held_by_another_process(smu_server.resource), pytest.raises(InstrumentBusy, match=busy):
        lab.open(["awg", "smu"]) if how == "open" else lab.read_identities()
    assert list(smu.received) == [] and list(awg.received) == []
    left_as_found(smu, awg)
    assert instrument_key(lab.config.instruments["awg"].resource) not in _Claim._held  # released: free to others


@pytest.mark.parametrize(("stop", "status", "said"), [
    (KeyboardInterrupt(), 130, "hil: interrupted"), (Terminated(signal.SIGTERM), 143, "hil: stopped by SIGTERM")])
def test_devices_stopped_says_it_changed_nothing(bench, monkeypatch, capsys, stop, status, said) -> None:
    """A Ctrl-C or SIGTERM while hil devices read the identities said 'instruments were put in their safe state', as
    a stopped run's does: a scientist whose measurement ran on the bench read that its output had been switched off.
    hil devices puts nothing in a safe state; it says so."""
    def stopped(self: Lab) -> None:
        raise stop

    monkeypatch.setattr(Lab, "read_identities", stopped)
    assert main(["devices", "--lab", str(bench[0])]) == status
    assert capsys.readouterr().err == f"{said}; nothing was changed on the instruments\n"
