"""The hil command: tables on success; one line on stderr and exit 2 on a user mistake, never a traceback."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hil.cli import build_parser, main
from hil.protocol import FidelityConfig
from simulators.emulators.server import drivers_with_emulators
from tests.test_orchestrator import as_from_a_terminal

REPO = Path(__file__).resolve().parents[1]


def test_devices_prints_the_default_lab_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--lab", str(REPO / "lab.yaml")]) == 0
    out = capsys.readouterr().out
    for expected in ("awg", "Keysight33500B", "33522B", "smu", "Keithley2450", "KEITHLEY", "-2..2 V",
                     "TCPIP::127.0.0.1::"):
        assert expected in out


def test_devices_of_a_bench_without_worlds_or_systems_prints_its_instruments_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lab of bench instruments only (no simulated world, no system yet) gets its instruments' table, and no empty
    table of worlds or systems."""
    lab = tmp_path / "bench.yaml"
    lab.write_text("instruments:\n  smu: {driver: keithley_2450, emulate: true}\n")
    assert main(["devices", "--lab", str(lab)]) == 0
    out = capsys.readouterr().out
    assert f"Instruments of {lab}" in out and "KEITHLEY INSTRUMENTS,MODEL 2450" in out
    assert "Simulated worlds" not in out and "Physical systems" not in out


def test_check_accepts_the_default_lab(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(REPO / "lab.yaml")]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("checked", ["lab.yaml", "experiments/crossbar_pat_digits.yaml"])
def test_check_reads_its_file_once(checked: str, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """It read the file once to tell a lab file from a protocol, and again to check it: a file saved in between
    (an editor writing it) was told by one text and checked by another."""
    monkeypatch.chdir(REPO)  # the protocol names its lab file relative to the working folder
    reads: list[Path] = []
    open_path = Path.open

    def counted(path: Path, *args, **kwargs) -> Any:  # read_text opens it too
        reads.append(path.resolve())
        return open_path(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    assert main(["check", str(REPO / checked)]) == 0, capsys.readouterr().err
    assert "OK" in capsys.readouterr().out
    assert reads.count(REPO / checked) == 1


def test_the_readmes_lab_example_is_valid_and_checking_it_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = readme.split("## The lab file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # the example's traffic log is a relative path
    Path("lab.yaml").write_text(example, encoding="utf-8")
    assert main(["check", "lab.yaml"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml"]


@pytest.mark.parametrize(("body", "needle"), [
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, colour: blue}\n", ":2: instruments.awg.colour"),
    ("instruments:\n  awg:\n    driver: keysight_33500b\n    emulate: true\n    limits: {voltage_v: {max: 50}}\n",
     ":5: instruments.awg.limits.voltage_v.max"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, timeout_s: [1]}\n",
     ":2: instruments.awg.timeout_s"),
    ("instruments:\n  awg: {driver: keysight_33500b\n", ":2: instruments.awg: invalid YAML"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, timeout_s: .inf}\n",
     ":2: instruments.awg.timeout_s: Input should be a finite number"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, timeout_s: 1e-9}\n",
     ":2: instruments.awg.timeout_s: Input should be greater than or equal to 0.001"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, traffic_log: /dev/null/logs/x.log}\n",
     ":2: instruments.awg.traffic_log: '/dev/null' is a file, so '/dev/null/logs/x.log' cannot be made"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true, traffic_log: ''}\n",
     ":2: instruments.awg.traffic_log: a blank name; name a file (e.g. logs/awg.log)"),
    ("worlds:\n  table: {kind: optical_table, seed: -1}\n", ":2: worlds.table.seed"),
    ("worlds:\n  chip: {kind: memristor_crossbar, config: {devices: {g_mx_s: 1}}}\n",
     ":2: worlds.chip.config.devices.g_mx_s: unknown key 'g_mx_s'; allowed: g_min_s, g_max_s"),
    ("instruments:\n  ? [a, b]\n  : 1\n", ":2: instruments: a key must be a plain name"),
    ("", ": the file is empty"),
    ("instruments:\n  awg: {driver: keysight_33500b, emulate: true}\x1b[0m\n",
     ":2: instruments.awg: invalid YAML: character U+001B (a control character) is not allowed; delete it"),
    ("# a bell \x07\ninstruments: {}\n", ":1: invalid YAML: character U+0007"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", ": invalid YAML: nested too deeply"),
    ("description: x\non: 1\n", ":2: on: key 'on' reads as a bool in YAML, not a name; quote it"),
    ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]\n"
                                                      for k in range(1, 7)),
     ": more than 100000 values once its aliases (*name) are expanded"),
    ("instruments:\n  1: {driver: keysight_33500b}\n", ":2: instruments.1: key '1' reads as an int in YAML"),
    ('instruments:\n  smu: {driver: keithley_2450, resource: "garbage resource"}\n',
     ":2: instruments.smu.resource: 'garbage resource' is not a VISA resource"),
    ('instruments:\n  smu: {driver: keithley_2450, resource: "socket://127.0.0.1:99999"}\n',
     ":2: instruments.smu.resource: 'socket://127.0.0.1:99999': a socket:// URL names a host and a port 0..65535"),
    ('instruments:\n  smu: {driver: keithley_2450, resource: "socket://127.0.0.1"}\n',
     ":2: instruments.smu.resource: 'socket://127.0.0.1': a socket:// URL names a host and a port 0..65535"),
    ('instruments:\n  smu: {driver: keithley_2450, resource: "sokcet://127.0.0.1:5025"}\n',
     ":2: instruments.smu.resource: 'sokcet://127.0.0.1:5025': pyserial opens no sokcet:// URL"),
    ("instruments:\n  smu: {driver: keithley_2450, emulate: {load_ohm: .nan}}\n",
     ":2: instruments.smu.emulate.load_ohm: bad emulator option"),
    ("instruments:\n  awg:\n    driver: keysight_33500b\n    emulate:\n      via: pty\n      model: 33522X\n",
     ":6: instruments.awg.emulate.model: bad emulator option for keysight_33500b: unknown model '33522X'"),
    ("worlds:\n  table: {kind: optical_table}\ninstruments:\n  xbar: {driver: simulated_crossbar, world: table}\n",
     ":4: instruments.xbar.world: simulated crossbar needs a memristor crossbar world, not OpticalTable"),
])
def test_check_reports_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                            needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith(f"hil: error: {path}")


def test_the_installed_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        instruments:
          smu: {driver: keithley_2450, resource: "TCPIP::127.0.0.1::1::SOCKET", timeout_s: 0.2}
    """))
    result = subprocess.run([sys.executable, "-m", "hil.cli", "devices", "--lab", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "hil: error: smu (TCPIP::127.0.0.1::1::SOCKET): connection failed" in result.stderr


def test_check_of_several_files_says_a_line_for_each_and_exits_2_if_any_is_wrong(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`hil check experiments/*.yaml`, as a CI script checks every protocol, was refused: "unrecognized arguments"."""
    monkeypatch.chdir(REPO)  # the protocol names its lab file relative to the working folder
    missing = tmp_path / "missing.yaml"
    assert main(["check", PROTOCOL, str(missing), str(REPO / "lab.yaml")]) == 2
    out, err = capsys.readouterr()
    assert [line.split(": OK")[0] for line in out.splitlines()] == [PROTOCOL, str(REPO / "lab.yaml")]
    assert err == f"hil: error: {missing}: file not found\n"
    assert main(["check", PROTOCOL, str(REPO / "lab.yaml")]) == 0


@pytest.mark.parametrize(("epochs", "said"), [(1, "1 epoch"), (3, "3 epochs")])
def test_check_says_what_a_protocol_runs_with_its_epochs_in_the_singular_for_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], epochs: int, said: str) -> None:
    """A protocol of one epoch was said to run '1 epochs'."""
    text = Path(PROTOCOL).read_text(encoding="utf-8").replace("lab: lab.yaml", f"lab: {REPO / 'lab.yaml'}")
    assert "training: {epochs: 10," in text
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("training: {epochs: 10,", f"training: {{epochs: {epochs},"), encoding="utf-8")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == (f"{path}: OK — pat on 'crossbar' (crossbar), digits (1438 train / 359 test), "
                                       f"{said}; no hardware was touched\n")


def test_check_expands_a_wildcard_on_windows_whose_shells_do_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`hil check experiments\\*.yaml` on Windows, where cmd.exe and PowerShell pass the pattern on as written: it was
    refused as a file not found. There hil expands it, in order, as a POSIX shell does; a pattern that matches nothing
    is a file not found, as a POSIX shell leaves it."""
    for name in ("b.yaml", "a.yaml"):
        shutil.copy(REPO / "lab.yaml", tmp_path / name)
    with monkeypatch.context() as windows:  # as Windows names itself, for these commands alone
        windows.setattr(sys, "platform", "win32")
        statuses = [main(["check", str(tmp_path / "*.yaml")]), main(["check", str(tmp_path / "*.yml")])]
    out, err = capsys.readouterr()
    assert statuses == [0, 2]
    assert [line.split(": OK")[0] for line in out.splitlines()] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    assert err == f"hil: error: {tmp_path / '*.yml'}: file not found\n"


def test_check_takes_a_file_with_any_protocol_key_for_a_protocol(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("\nmethod:", "\nmethd:"))
    assert main(["check", str(path), "--lab", str(REPO / "lab.yaml")]) == 2
    assert "methd: unknown key 'methd'; allowed: name, description, lab, system" in capsys.readouterr().err
    # checked as the protocol it is (the misspelt key, not the missing 'method' it leaves, is reported)


PROTOCOL = str(REPO / "experiments" / "crossbar_pat_digits.yaml")
#: keithley_2450, keysight_33500b and those of any plugin installed beside hil (as a user adding a device has).
WITH_EMULATORS = ", ".join(drivers_with_emulators())


@pytest.mark.parametrize(("argv", "needle"), [
    (["run", "--seed", "-1", PROTOCOL], "'-1' is not a seed (an integer in 0..4294967295)"),
    (["run", "--seed", str(2**64), PROTOCOL], "is not a seed"),
    (["run", "--seed", str(2**32), PROTOCOL], f"'{2**32}' is not a seed"),
    (["run", "--resume", "runs/x", "--seed", "3"], "a resumed run keeps its own; see hil run --help\n"),
    (["run", "--resume", "runs/x", "--lab", "lab.yaml"], "a resumed run keeps its own"),
    (["run", PROTOCOL, "--resume", "runs/x"], "give a protocol file, or --resume RUN (not both); see hil run --help\n"),
    (["run"], "hil: error: give a protocol file, or --resume RUN (not both); see hil run --help\n"),
    (["runs", "--root", str(REPO / "lab.yaml")], "lab.yaml is not a folder of runs"),
    (["runs", "--root", "no-such-folder"], "no-such-folder: no such folder in the working directory, "),  # was "not
    # a folder of runs": hil runs from another folder than its runs', before any run, read as a folder gone wrong
    (["check", str(REPO / "lab.yaml"), "--lab", str(REPO / "lab.yaml")],  # --lab was ignored
     f"{REPO / 'lab.yaml'} is a lab file, checked on its own; --lab goes with a protocol"),
    (["emulate", "keysight_99999"], "unknown driver 'keysight_99999'; known: "),
    (["emulate", "simulated_crossbar"], "simulated_crossbar is a simulated instrument: it runs on a world of the lab "
                                        "file, not behind an emulator; give it world: in the lab file"),
    (["emulate", "tests.test_lab:UnemulatedSmu"],
     f"tests.test_lab:UnemulatedSmu has no emulator (drivers with one: {WITH_EMULATORS}); a bench instrument without "
     'one is reached at its resource, and a driver names its emulator on its class: emulator: ClassVar[str] = '
     '"module:Class"'),
    (["emulate", "keithley_2450", "load=3"], "load: the keithley_2450 emulator has no such option; "
                                             "options: load_ohm, noise_a, seed"),
    (["emulate", "keithley_2450", "load_ohm=abc"], "load_ohm: 'abc' is not a float (an option of the "
                                                   "keithley_2450 emulator)"),
    (["emulate", "keithley_2450", "load_ohm=-5"], "bad emulator option for keithley_2450: load_ohm must be a "
                                                  "positive number of ohms, got -5"),
    (["emulate", "keithley_2450", "--via", "pty", "load_ohm=-5"],  # after a flag: "unrecognized arguments"
     "bad emulator option for keithley_2450: load_ohm must be a positive number of ohms, got -5"),
    (["emulate", "keithley_2450", "load_ohm"], "emulator option 'load_ohm' is not KEY=VALUE"),
    (["emulate", "keithley_2450", "=5"], "emulator option '=5' is not KEY=VALUE"),
    (["emulate", "keithley_2450", "load_ohm=[unclosed"], "load_ohm: '[unclosed' is not a YAML value"),
    (["emulate", "keithley_2450", f"seed={'9' * 5000}"], "seed: an integer of 5000 characters is more than "
                                                         "Python reads; give a smaller number"),  # was a traceback
    (["emulate", "keithley_2450", "--port", "99999"], "'99999' is not a TCP port (0 to 65535; 0: a free one)"),
    (["emulate", "keithley_2450", "--port", "-5"], "'-5' is not a TCP port"),
    (["emulate", "keithley_2450", "--port", "65536"], "'65536' is not a TCP port"),
    (["emulate", "keithley_2450", "--port", "5025/tcp"], "'5025/tcp' is not a TCP port (0 to 65535; 0: a free one)"),
    (["emulate", "keysight_33500b", "memory_points=-1"], "memory_points must be at least 8, got -1"),
    (["emulate", "keithley_2450", "--via", "usb"], "invalid choice: 'usb'"),
])
def test_bad_arguments_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                              argv: list[str], needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse refuses the value itself
        status = exit_.code
    assert status == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_emulate_refuses_a_port_for_a_pty(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """hil emulate --via pty --port 5025 served a pty and said nothing of the port asked for."""
    import simulators.emulators.server

    def served(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an emulator was served")

    monkeypatch.setattr(simulators.emulators.server, "serve", served)
    assert main(["emulate", "keithley_2450", "--via", "pty", "--port", "5025"]) == 2
    assert capsys.readouterr().err == "hil: error: --port 5025 is for --via tcp: a pty has no port; leave --port out\n"


def test_check_takes_a_file_of_neither_kinds_keys_for_a_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lab file of a description alone is an empty lab, not a protocol missing its every field."""
    path = tmp_path / "spare.yaml"
    path.write_text("description: the spare bench\n")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == (f"{path}: OK, a lab of 0 instrument(s), 0 world(s) and 0 system(s); no hardware "
                                       "was touched\n")


def test_the_ends_of_a_port_and_of_a_seed_are_taken() -> None:
    parse = build_parser().parse_args
    assert [parse(["emulate", "keithley_2450", "--port", port]).port for port in ("0", "65535")] == [0, 65535]
    assert [parse(["run", "--seed", seed, "p.yaml"]).seed for seed in ("0", str(2**32 - 1))] == [0, 2**32 - 1]


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("lab: lab.yaml", "lab: no-such-lab.yaml", ":5: lab: lab file 'no-such-lab.yaml' not found"),
    ("lab: lab.yaml", "lab: experiments", ":5: lab: lab file 'experiments' is a folder (relative to the working "
                                          "directory); name a lab file, e.g. lab.yaml"),
    ("lab: lab.yaml", "lab: ''", ":5: lab: lab file '' not found"),
    ("lab: lab.yaml", "lab: /dev/zero", ":5: lab: lab file '/dev/zero' is not a regular file; name a lab file, "
                                        "e.g. lab.yaml"),  # was "not found"
    ("lab: lab.yaml", "lab: ~/no-such-lab.yaml", f":5: lab: lab file '{Path.home()}/no-such-lab.yaml' not found; "
                                                 "name a lab file, e.g. lab.yaml"),  # not "relative to" any folder
    ("dataset: {name: digits, test_fraction: 0.2}", "dataset: {name: idx, path: no-such-folder}",
     ":8: dataset.path: dataset folder 'no-such-folder' not found (relative to the working directory)"),
    ("dataset: {name: digits, test_fraction: 0.2}", "dataset: {name: digits, test_fraction: 0.2, pool: 2}",
     ":8: dataset: pool is for IDX files only (name: idx), not the bundled digits set; leave it out"),
    # an IDX set is split as its files are: a test_fraction given for one was ignored, silently
    ("dataset: {name: digits, test_fraction: 0.2}", "dataset: {name: idx, path: no-such-folder, test_fraction: 0.1}",
     ":8: dataset: test_fraction 0.1 is for the bundled sets only: IDX files bring their own test set (t10k-*), "
     "which a run tests on whole; leave it out"),
    ("thetas: 16,", "thetas: 1000000000,", ":15: twin.collect: 1000000000 θ groups of 128 inputs (64 values in, "
                                           "32 out, each) do not fit in memory; collect fewer thetas or "
                                           "inputs_per_theta"),  # was found mid-run, after calibrating
    ("inputs_per_theta: 128", "inputs_per_theta: 18446744073709551616", ":15: twin.collect: 16 θ groups of "
                                                                        "18446744073709551616 inputs"),
    # a name the lab or hil does not know, pasted many times, is shown short (it was echoed whole: 10 000 characters)
    ("system: crossbar", "system: " + "x" * 10_000, ":6: system: no system named 'xxxxxxxxxxxxxxxxxxx…, 10002 "
                                                   "characters; the lab has: "),
    ("method: {name: pat}", "method: {name: " + "x" * 10_000 + "}",
     ":17: method.name: String should have at most 200 characters (got 'xxxxxxxxxxxxxxxxxxx…, 10002 characters)"),
    ("  kind: physics", "  kind: physics\n  from_run: no-such-run",
     ":15: twin.from_run: no-such-run has no twin/ (a fitted twin) and no data/twin_data.h5 (its data); name a "
     "run that finished its collect and fit_twin steps"),
])
def test_check_locates_what_a_protocol_points_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], old: str, new: str,
                                                 needle: str) -> None:
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    assert old in text
    monkeypatch.chdir(REPO)  # the protocol's lab is relative to the working directory
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(old, new))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_an_unknown_driver_pasted_many_times_is_shown_short(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A driver's name hil does not know was echoed whole: a line of 10 000 characters for a pasted one."""
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "lab.yaml").read_text(encoding="utf-8").replace("driver: simulated_crossbar",
                                                                          "driver: " + "y" * 10_000))
    assert main(["check", str(lab)]) == 2
    err = capsys.readouterr().err
    assert "instruments.crossbar.driver: unknown driver 'yyyyyyyyyyyyyyyyyyy…, 10002 characters; known:" in err
    assert len(err) < 600, err


def _idx_folder(folder: Path, train_labels: list[int], test_labels: list[int]) -> None:
    """MNIST-format files of 8×8 images in ``folder``, with these labels."""
    import gzip
    import struct

    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        for kind, array in (("images-idx3", rng.integers(0, 255, (len(labels), 8, 8))), ("labels-idx1", labels)):
            array = np.asarray(array, dtype=np.uint8)
            header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))


@pytest.mark.parametrize(("dataset", "layers", "needle"), [
    # one training digit: its standardisation divided by a NaN spread, and the run failed at the device's bounds
    ("{name: digits, test_fraction: 0.9995}", "[{linear: {out_features: 64}}, {physical: {input_map: sigmoid}}, "
     "{linear: {out_features: 10}}]",
     ":8: dataset.test_fraction: the data leave 1 training sample(s), all of class '"),
    ("{name: idx, path: one-class}", "[{linear: {out_features: 64}}, {physical: {input_map: sigmoid}}, "
     "{linear: {out_features: 1}}]",
     ":8: dataset.path: the data leave 20 training sample(s), all of class '0'; a classifier needs samples of "
     "at least two classes"),
    ("{name: idx, path: one-class, limit: 2}", "[{physical: {}}, {batchnorm: true}, {linear: {out_features: 1}}]",
     ":8: dataset.limit: the data leave 2 training sample(s), all of class '0'"),
    # an IDX set's rows are its files', not a test_fraction's (which it does not use)
    ("{name: idx, path: one-image}", "[{physical: {}}, {batchnorm: true}, {linear: {out_features: 1}}]",
     ":8: dataset.path: the data leave 1 training sample(s); the model needs at least 2 (a batch norm)"),
])
def test_check_and_run_refuse_training_data_of_one_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], dataset: str,
                                                        layers: str, needle: str) -> None:
    """A model trained on one class learns nothing (one output: a loss of 0 and an accuracy of 1 whatever it does);
    both commands refuse it at the data set's field, and hil run makes no run folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(tmp_path / "one-class", [0] * 20, [0] * 5)
    _idx_folder(tmp_path / "one-image", [0], [0])
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    model = "model:\n  layers:\n    - physical: {}\n    - linear: {out_features: 10}\n"
    assert model in text
    text = text.replace("dataset: {name: digits, test_fraction: 0.2}", f"dataset: {dataset}")
    Path("p.yaml").write_text(text.replace(model, f"model: {{layers: {layers}}}\n"), encoding="utf-8")
    for command in (["check", "p.yaml"], ["run", "--quiet", "p.yaml"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert not Path("runs").exists()


def test_training_data_of_one_class_at_a_run_s_seed_is_refused_naming_that_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """hil check takes the file's seed, whose two digits are of two classes; hil run --seed 31 draws two nines and was
    refused at the file's dataset.limit with no word of the seed that chose them."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    Path("p.yaml").write_text(text.replace("test_fraction: 0.2}", "test_fraction: 0.2, limit: 2}"), encoding="utf-8")
    assert main(["check", "p.yaml"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["run", "--quiet", "--seed", "31", "p.yaml"]) == 2
    assert capsys.readouterr().err == ("hil: error: p.yaml:8: dataset.limit: the data leave 2 training sample(s), all "
                                       "of class '9' (seed 31's split); a classifier needs samples of at least two "
                                       "classes\n")
    assert not Path("runs").exists()


def _small_idx_protocol(path: Path, runs: Path) -> None:
    """A crossbar protocol of a few seconds at ``path``, on the IDX folder ``mnist`` of the working directory,
    its runs in ``runs``."""
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    small = {"dataset: {name: digits, test_fraction: 0.2}": "dataset: {name: idx, path: mnist}",
             "{thetas: 16, inputs_per_theta: 128, repeats: 3}": "{thetas: 4, inputs_per_theta: 8, repeats: 2}",
             "{epochs: 40, lr: 0.02, patience: 8}": "{epochs: 2}",
             "epochs: 10, batch_size: 64": "epochs: 1, batch_size: 8"}
    for old, new in small.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(f"{text}output: {{root: {runs}}}\n", encoding="utf-8")


def test_a_run_resumed_from_another_folder_reads_the_idx_folder_it_started_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's protocol.yaml kept dataset.path as written, relative to the folder hil ran in: resumed from another
    folder, the run did not find its data. It records the folder as the run found it; a resume after the data moved
    is one line naming the folder and what to do, and changes nothing in the run."""
    from hil.errors import ConfigError, HilError
    from hil.orchestrator import Run
    from hil.protocol import check_resumed_data, load_protocol
    from hil.store import RunStore

    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(started)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(started / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")

    def failed(self: Run) -> None:
        raise HilError("a failure after the collection")

    fit = Run.fit_twin
    runs: list[Path] = []
    for _ in range(2):
        monkeypatch.setattr(Run, "fit_twin", failed)
        assert main(["run", "--quiet", "p.yaml"]) == 2
        monkeypatch.setattr(Run, "fit_twin", fit)
        [made] = set((tmp_path / "runs").iterdir()) - set(runs)
        runs.append(made)
    capsys.readouterr()
    monkeypatch.chdir(elsewhere)
    assert main(["run", "--quiet", "--resume", str(runs[0])]) == 0, capsys.readouterr().err
    store = RunStore.open(runs[0])
    assert store.events()[-1]["kind"] == "run_finished"
    store.close()

    (started / "mnist").rename(started / "moved")
    log = (runs[1] / "events.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["run", "--quiet", "--resume", str(runs[1])]) == 2
    assert capsys.readouterr().err == (f"hil: error: {runs[1] / 'protocol.yaml'}:10: dataset.path: dataset folder "
                                       f"{str(started / 'mnist')!r} not found; the run started with its data there: "
                                       "put them back, or start a new run\n")
    assert (runs[1] / "events.jsonl").read_bytes() == log
    # a run of an earlier hil recorded the path as written: it is found from the folder the run started in
    earlier = Path("protocol.yaml")
    earlier.write_text((runs[1] / "protocol.yaml").read_text().replace(str(started / "mnist"), "mnist"))
    protocol, document = load_protocol(earlier)
    with pytest.raises(ConfigError, match=r"^protocol.yaml:10: dataset.path: dataset folder 'mnist' not found; the "
                                          r"path is relative to the folder the run was started in: resume from there$"):
        check_resumed_data(protocol, document)


def _idx_run_killed_as_it_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run on an IDX folder (its training files plain, its test files gzipped), killed as it logged its end (its
    last line torn: it resumes from its last checkpoint, and reads its data again); its folder and the IDX folder."""
    import gzip

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    mnist = tmp_path / "mnist"
    _idx_folder(mnist, list(range(10)) * 4, list(range(10)))
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        packed = mnist / f"{name}.gz"
        (mnist / name).write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")
    assert main(["run", "--quiet", "p.yaml"]) == 0
    [run] = (tmp_path / "runs").iterdir()
    log = run / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-30])
    return run, mnist


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_resume_refuses_idx_files_changed_since_the_run_started_and_proceeds_with_them_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """IDX files replaced in place (another download, a copy cut short and written again) went unnoticed: the resumed
    run trained and evaluated on other data than the part before its checkpoint. A run records the SHA-256 of each
    file it read, as stored (what sha256sum gives), and a resume refuses a file changed, cut short, removed or read
    no longer, in one line naming it, before any instrument is touched and changing nothing in the run; with the
    originals back, it resumes."""
    import gzip
    import hashlib

    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    run, mnist = _idx_run_killed_as_it_ended(tmp_path, monkeypatch)
    recorded = (run / "protocol.yaml").read_text(encoding="utf-8")
    for path in sorted(mnist.iterdir()):
        assert f"    {path.name}: {sha256(path.read_bytes())}\n" in recorded
    labels, test_labels = mnist / "train-labels-idx1-ubyte", mnist / "t10k-labels-idx1-ubyte.gz"
    original = labels.read_bytes()
    relabelled = original[:8] + bytes(9 - label for label in original[8:])  # the header, then 40 labels 0..9
    was = sha256(original)[:12]
    changes = [
        # other labels, the same size: the set reads as before, its samples relabelled
        (lambda: labels.write_bytes(relabelled),
         f"{labels}: changed since the run started (SHA-256 now {sha256(relabelled)[:12]}…, was {was}…)"),
        # cut short and written again: it no longer reads as an IDX file, and is said to have changed
        (lambda: labels.write_bytes(original[:-10]),
         f"{labels}: changed since the run started (SHA-256 now {sha256(original[:-10])[:12]}…, was {was}…)"),
        (labels.unlink, f"{labels}: missing"),
        # the file unpacked beside the one the run read, which the loader then takes
        (lambda: (mnist / test_labels.stem).write_bytes(gzip.decompress(test_labels.read_bytes())),
         f"{test_labels}: not read: {test_labels.stem} beside it is read in its place"),
    ]
    before = _contents(run)
    capsys.readouterr()
    for change, said in changes:
        change()
        assert main(["run", "--quiet", "--resume", str(run)]) == 2
        assert capsys.readouterr().err == (f"hil: error: {run / 'protocol.yaml'}:14: dataset.sha256: {said}; a run "
                                           "resumes with the data it started with: put the original back, or start "
                                           "a new run\n")
        assert _contents(run) == before
        labels.write_bytes(original)
        (mnist / test_labels.stem).unlink(missing_ok=True)
    assert main(["run", "--quiet", "--resume", str(run)]) == 0, capsys.readouterr().err
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [event["kind"] for event in events[-2:]] == ["run_resumed", "run_finished"]


def test_a_run_of_an_earlier_hil_that_recorded_no_digests_resumes_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol.yaml without dataset.sha256 (and a checkpoint holding that file's digest), as hil wrote before it
    recorded the IDX files' digests: the run resumes, its files read without a record to check them against."""
    import hashlib
    import io

    import torch

    from hil.store import CHECKPOINT, RunStore, atomic_write, seal_checkpoint

    run, _ = _idx_run_killed_as_it_ended(tmp_path, monkeypatch)
    protocol = run / "protocol.yaml"
    lines = protocol.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("  sha256:\n")
    earlier = "".join(lines[:start] + lines[start + 5:])  # the field and its four files
    assert "sha256" not in earlier
    protocol.write_text(earlier, encoding="utf-8")
    store = RunStore.open(run)
    saved = store.load_checkpoint()
    store.close()
    assert saved is not None
    saved["file_digests"]["protocol.yaml"] = hashlib.sha256(earlier.encode()).hexdigest()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    atomic_write(run / CHECKPOINT, seal_checkpoint(buffer.getvalue()))
    capsys.readouterr()
    assert main(["run", "--quiet", "--resume", str(run)]) == 0, capsys.readouterr().err
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [event["kind"] for event in events[-2:]] == ["run_resumed", "run_finished"]
    assert protocol.read_text(encoding="utf-8") == earlier


def test_a_protocol_that_gives_dataset_sha256_takes_only_those_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The field a run records may be written in a protocol too (a run's protocol.yaml run again): hil check and hil
    run hold the folder to it, rather than record other files over it; it is for an IDX set only."""
    import hashlib

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")
    text = Path("p.yaml").read_text(encoding="utf-8")
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(Path("mnist").iterdir())}
    labels = Path("mnist") / "train-labels-idx1-ubyte.gz"  # named as the protocol names its folder
    other = "0" * 64
    for given, said in [
        (digests, None),
        ({**digests, labels.name: other}, f"{labels}: differs from dataset.sha256 (SHA-256 "
                                          f"{digests[labels.name][:12]}…, not {other[:12]}…); put the original back, "
                                          "or leave dataset.sha256 out"),
        ({name: digest for name, digest in digests.items() if name != labels.name},
         f"{labels}: read, but not among the files of dataset.sha256; give its SHA-256 there too, or leave "
         "dataset.sha256 out"),
    ]:
        pinned = text.replace("path: mnist}", f"path: mnist, sha256: {json.dumps(given)}}}")
        Path("p.yaml").write_text(pinned, encoding="utf-8")
        assert main(["check", "p.yaml"]) == (0 if said is None else 2)
        assert said is None or capsys.readouterr().err == f"hil: error: p.yaml:8: dataset.sha256: {said}\n"
    Path("p.yaml").write_text(text.replace("dataset: {name: idx, path: mnist}",
                                           f"dataset: {{name: digits, sha256: {json.dumps(digests)}}}"))
    assert main(["check", "p.yaml"]) == 2
    assert capsys.readouterr().err == ("hil: error: p.yaml:8: dataset: sha256 is for IDX files only (name: idx), not "
                                       "the bundled digits set; leave it out\n")


def test_a_run_records_the_paths_it_reads_again_as_this_run_reads_them(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The IDX folder (``~`` the home's) and the reused run, from the working directory; the rest as written."""
    from hil.protocol import load_protocol, recorded

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    text = text.replace("dataset: {name: digits, test_fraction: 0.2}", "dataset: {name: idx, path: ~/mnist}")
    Path("p.yaml").write_text(text.replace("  kind: physics", "  kind: physics\n  from_run: runs/first"))
    protocol, _ = load_protocol(Path("p.yaml"))
    fields = recorded(protocol)
    folder = tmp_path.resolve()
    assert (fields["dataset"]["path"], fields["twin"]["from_run"]) == (str(folder / "home" / "mnist"),
                                                                     str(folder / "runs" / "first"))
    assert fields["lab"] == "lab.yaml" and fields == protocol.model_dump(mode="json") | {
        "dataset": fields["dataset"], "twin": fields["twin"], "method": fields["method"]}


@pytest.mark.parametrize(("root", "needle"), [
    ("lab.yaml", "output.root: cannot create a run folder in lab.yaml (it is a file)"),
    ("lab.yaml/runs", "output.root: cannot create a run folder in lab.yaml/runs ('lab.yaml' is a file)"),
])
def test_check_refuses_an_output_root_hil_run_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], root: str,
                                                      needle: str) -> None:
    """hil check passed a protocol whose run folder cannot be made, which hil run then refused; and hil run said why
    as "(File exists)", where hil check says which is a file."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    Path("p.yaml").write_text(f"{text}output: {{root: {root}}}\n", encoding="utf-8")
    for command in (["check", "p.yaml"], ["run", "--quiet", "p.yaml"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "p.yaml:19: output.root: cannot create a run folder in " in err, err
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml", "p.yaml"]


def test_check_refuses_an_output_root_below_a_folder_it_cannot_look_into_at_its_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Path.exists raises PermissionError below a folder without search permission (another user's): hil check
    ended at that OSError, 'hil: error: ... (Permission denied)' with exit 1, where hil run refuses output.root at its
    line. (As root nothing is refused, so the permissions are patched.)"""
    import os

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    Path("p.yaml").write_text(f"{text}output: {{root: locked/sub/runs}}\n", encoding="utf-8")
    Path("locked").mkdir()
    exists, access = Path.exists, os.access

    def exists_unless_inside_locked(path: Path, *args, **kwargs) -> bool:
        if "locked" in path.parent.parts:
            raise PermissionError(13, "Permission denied", str(path))
        return exists(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists_unless_inside_locked)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked" and access(path, mode))
    assert main(["check", "p.yaml"]) == 2
    assert capsys.readouterr().err == ("hil: error: p.yaml:19: output.root: cannot create a run folder in "
                                       "locked/sub/runs ('locked' cannot be written to); set output.root to a folder "
                                       "you can write to\n")


@pytest.mark.parametrize(("log", "said"), [
    ("shared/logs/smu.log", "'shared/logs/smu.log' cannot be written ('{folder}' cannot be written to)"),
    ("shared/smu.log", "'shared/smu.log' cannot be written (it cannot be written to)"),
])
def test_check_refuses_a_traffic_log_it_cannot_write_at_its_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], log: str,
        said: str) -> None:
    """A traffic log in a folder, or a log file, of another user's passed hil check; hil run made its run folder,
    then failed to open the instrument ('traffic log ...: cannot write (Permission denied)'), and offered to resume
    the run once the instrument was back. (As root nothing is refused, so the permissions are patched.)"""
    import os

    monkeypatch.chdir(tmp_path)
    Path("shared").mkdir()
    Path("shared/smu.log").write_text("", encoding="utf-8")
    Path("lab.yaml").write_text(f"instruments:\n  smu: {{driver: keithley_2450, emulate: true, traffic_log: {log}}}\n",
                                encoding="utf-8")
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name not in ("shared", "smu.log")
                        and access(path, mode))
    assert main(["check", "lab.yaml"]) == 2
    said = said.format(folder=tmp_path / "shared")
    assert capsys.readouterr().err == (f"hil: error: lab.yaml:2: instruments.smu.traffic_log: {said}; name a file in a "
                                       f"folder you can write to (got '{log}')\n")


def test_check_refuses_a_visa_library_that_cannot_be_loaded_at_its_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A system VISA that is not installed (or a mistyped path to one) passed hil check, which said that all was well;
    hil run then failed as it connected the instrument, with no line of the lab to correct."""
    monkeypatch.chdir(tmp_path)
    Path("lab.yaml").write_text("instruments:\n  smu: {driver: keithley_2450, resource: 'TCPIP::127.0.0.1::1::SOCKET',"
                                "\n        visa_library: visa/libvisa.so}\n", encoding="utf-8")
    assert main(["check", "lab.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: lab.yaml:3: instruments.smu.visa_library: VISA library 'visa/libvisa.so' "
                          "cannot be loaded (Error while accessing ")
    assert err.endswith("; install that VISA library, or correct visa_library (leave it out for pyvisa-py, which "
                        "needs nothing more for LAN and serial resources)\n") and err.count("\n") == 1


def test_an_oracle_twin_of_a_bench_system_is_refused_where_hil_run_checks_too(tmp_path: Path) -> None:
    """Only hil check refused it; hil run, which calls check_twin before making a run folder, found it out at
    fit_twin, after calibrating and collecting on the bench."""
    from types import SimpleNamespace

    from hil.config import YamlDocument
    from hil.errors import ConfigError
    from hil.protocol import check_twin, load_protocol

    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("  kind: physics", "  kind: oracle"), encoding="utf-8")
    protocol, document = load_protocol(YamlDocument.read(path))
    bench = SimpleNamespace(instruments={"crossbar": object()})  # an instrument of no simulated world
    with pytest.raises(ConfigError, match=r"p.yaml:14: twin.kind: an oracle twin needs a simulated system"):
        check_twin(protocol, bench, document)  # type: ignore[arg-type]


def test_run_refuses_a_protocol_its_lab_cannot_run_before_making_a_run_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("lab.yaml").write_text("instruments: {}\n")
    protocol = tmp_path / "p.yaml"
    protocol.write_text((REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8"))
    assert main(["run", "--quiet", str(protocol)]) == 2
    assert "p.yaml:6: system: no system named 'crossbar'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml", "p.yaml"]  # no runs/ folder


def test_run_locates_a_missing_lab_file_before_making_a_run_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    protocol = tmp_path / "p.yaml"
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    protocol.write_text(text.replace("lab: lab.yaml", "lab: no-such-lab.yaml"))
    assert main(["run", "--quiet", str(protocol)]) == 2
    assert "p.yaml:5: lab: lab file 'no-such-lab.yaml' not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_run_given_a_lab_file_says_it_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Not a protocol's missing name and eight more problems."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    assert main(["run", "--quiet", "lab.yaml"]) == 2
    assert capsys.readouterr().err == ("hil: error: lab.yaml is a lab file; hil run takes a protocol (e.g. "
                                       "experiments/*.yaml), and a lab with --lab\n")
    Path("empty.yaml").write_text("")  # nor is an empty protocol taken for a lab file
    assert main(["run", "--quiet", "empty.yaml"]) == 2
    assert capsys.readouterr().err == "hil: error: empty.yaml: the file is empty\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml", "lab.yaml"]


def test_run_given_a_run_folder_points_at_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``hil run runs/<run>`` (--resume forgotten) said 'cannot read: [Errno 21] Is a directory'."""
    monkeypatch.chdir(tmp_path)
    run = Path("runs") / "20240101-000000-p"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("")
    assert main(["run", "--quiet", str(run)]) == 2
    assert capsys.readouterr().err == (f"hil: error: {run} is a run folder; hil run takes a protocol file (e.g. "
                                       f"experiments/*.yaml), and continues a run with: hil run --resume {run}\n")
    assert main(["run", "--quiet", "runs"]) == 2
    assert capsys.readouterr().err == ("hil: error: runs is a folder; hil run takes a protocol file (e.g. "
                                       "experiments/*.yaml)\n")
    spaced = Path("my runs") / "20240101-000000-p"  # the command said is one to paste: its path quoted
    spaced.mkdir(parents=True)
    (spaced / "events.jsonl").write_text("")
    assert main(["run", "--quiet", str(spaced)]) == 2
    assert capsys.readouterr().err.endswith("continues a run with: hil run --resume 'my runs/20240101-000000-p'\n")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.name]  # nothing was made


def test_a_ctrl_c_while_hil_run_loads_its_modules_waits_for_them_and_stops_it(tmp_path: Path) -> None:
    """A Ctrl-C inside torch's import (about a second of a run's start) was lost, or interrupted numpy's own import
    and left it half-loaded (``module 'numpy' has no attribute 'multiply'`` later). It is now taken once the modules
    have loaded: the run stops there, with the usual line and status."""
    script = textwrap.dedent("""
        import importlib.abc, signal, sys
        class CtrlC(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "hil.orchestrator":
                    sys.meta_path.remove(self)
                    signal.raise_signal(signal.SIGINT)
        sys.meta_path.insert(0, CtrlC())
        from hil.cli import main
        status = main(["run", "--resume", sys.argv[1]])
        print(status, "hil.orchestrator" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120, cwd=REPO, preexec_fn=as_from_a_terminal)
    assert done.stdout.split() == ["130", "True"], done.stderr
    assert done.stderr == "hil: interrupted; instruments were put in their safe state\n"


def test_emulate_serves_a_driver_s_emulator_until_ctrl_c() -> None:
    """A bench program (here the 2450's own driver over pyvisa-py) talks to it; Ctrl-C stops it with status 0, even
    started with SIGINT ignored, as a shell script's background job is."""
    from drivers.keithley2450 import Keithley2450
    from hil.transport import VisaTransport

    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", "keithley_2450", "load_ohm=500"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("keithley_2450 emulator at TCPIP::127.0.0.1::") and "Ctrl-C stops it" in line
        with Keithley2450(VisaTransport(line.split()[3], timeout_s=5.0), name="smu") as smu:
            smu.configure("voltage", compliance=0.01)
            smu.set_output(True)
            smu.set_level(1.0)
            assert smu.measure().current_a[0] == pytest.approx(2e-3, rel=1e-6)  # the load_ohm option took effect
            smu.safe_state()
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 0 and errors == ""


@pytest.mark.parametrize(("ignored", "sent", "status", "said"), [
    ((), (signal.SIGTERM,), 143, "hil: keithley_2450 emulator stopped by SIGTERM\n"),  # it has nothing to make safe
    ((signal.SIGHUP,), (signal.SIGHUP, signal.SIGINT), 0, ""),  # nohup hil emulate: the SIGHUP stays ignored
])
def test_emulate_stops_at_sigterm_and_outlives_a_sighup_it_was_started_ignoring(
        ignored: tuple[signal.Signals, ...], sent: tuple[signal.Signals, ...], status: int, said: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", "keithley_2450"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: [signal.signal(signum, signal.SIG_IGN) for signum in ignored])
    try:
        assert process.stdout.readline().startswith("keithley_2450 emulator at ")  # type: ignore[union-attr]
    finally:
        for signum in sent:
            process.send_signal(signum)
        _, errors = process.communicate(timeout=10)
    assert (process.returncode, errors) == (status, said)


def test_emulate_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulate", "keithley_2450", "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"cannot serve the keithley_2450 emulator on port {port}: " in error
    assert error.rstrip().endswith("choose another port, or 0 for a free one")


def test_runs_lists_every_run_even_with_an_odd_value_or_an_unreadable_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.store import RunStore

    for name, accuracy in (("good", 0.875), ("edited", "zero")):
        store = RunStore.create(tmp_path, name)
        store.event("run_started", protocol=name)
        store.event("evaluated", device_accuracy=accuracy)
        store.event("run_finished")
        store.close()
    (tmp_path / "20000101-000000-broken" / "events.jsonl").mkdir(parents=True)
    assert main(["runs", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.875" in out and "zero" in out and "unreadable log" in out


def test_runs_given_a_run_folder_names_the_folder_of_runs_to_list_instead(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hil runs --root runs/<run>` printed an empty table, as if the run were not there."""
    from hil.store import RunStore

    store = RunStore.create(tmp_path / "runs", "one")
    store.event("run_started", protocol="one")
    store.close()
    assert main(["runs", "--root", str(store.path)]) == 2
    assert capsys.readouterr().err == (f"hil: error: {store.path} is a run folder; list it with the others: hil runs "
                                       f"--root {tmp_path / 'runs'}\n")


@pytest.mark.parametrize("denied", ["read", "search"])
def test_runs_in_a_folder_it_cannot_read_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], denied: str) -> None:
    """Without read permission the folder's runs were not found, "no runs in ..." (exit 0); without search permission
    the error named a file in it, "hil: error: .../events.jsonl (Permission denied)" (exit 1). (As root nothing is
    refused, so the permission is refused at the os level.)"""
    from hil.store import RunStore

    RunStore.create(tmp_path, "one").close()
    scandir, stat = os.scandir, os.stat

    def refused(call):
        def refusing(path, *args, **kwargs):
            if (Path(path) if denied == "read" else Path(path).parent) == tmp_path:
                raise PermissionError(13, "Permission denied", str(path))
            return call(path, *args, **kwargs)
        return refusing

    monkeypatch.setattr(os, "scandir" if denied == "read" else "stat", refused(scandir if denied == "read" else stat))
    assert main(["runs", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"hil: error: {tmp_path}: cannot read the folder (Permission denied); fix its "
                                       "permissions, or give another with --root\n")


def test_runs_in_a_folder_without_runs_says_there_are_none(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert f"no runs in {tmp_path}" in capsys.readouterr().out


def test_report_of_a_run_without_epochs_warns_nothing_and_a_blocked_report_folder_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.store import RunStore

    store = RunStore.create(tmp_path, "early")
    store.event("run_started", protocol="early")
    store.close()
    assert main(["report", str(store.path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and (store.path / "report" / "learning_curves.png").stat().st_size > 0
    summary = (store.path / "report" / "summary.md").read_text()
    assert "method **?** on system **?**" in summary  # not None
    assert (f"**The run stopped before its evaluation** (its last event: run_started), so the figures below are what "
            f"it reached; `hil run --resume {store.path}` finishes it.") in summary
    shutil.rmtree(store.path / "report")
    (store.path / "report").write_text("a file where the report folder goes")
    assert main(["report", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hil: error: {store.path / 'report' / 'learning_curves.png'}: cannot write (") \
        and err.count("\n") == 1


def _reportable_run(parent: Path, name: str = "r") -> Path:
    """A run folder as a finished run leaves it, with two epochs, the twin's fit and a final evaluation."""
    import torch

    from hil.store import RunStore

    store = RunStore.create(parent, name)
    store.event("run_started", protocol=name, method="pat", system="crossbar", seed=0)
    for epoch, (loss, accuracy) in enumerate(((0.9, 0.5), (0.4, 0.75))):
        for batch, train_loss in enumerate((2.0 - epoch, 1.0 - epoch / 2)):
            store.event("batch", epoch=epoch, batch=batch + 1, loss=train_loss, accuracy=0.5)
        store.event("epoch", epoch=epoch, device_loss=loss, device_accuracy=accuracy, twin_loss=loss + 0.1,
                    twin_accuracy=accuracy - 0.25)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1, 0.3]), "noise_floor": torch.tensor([0.01, 0.02]),
                                           "measured": torch.rand(3, 4, 2), "predicted": torch.rand(3, 4, 2)})
    store.event("fidelity", nmse_mean=0.2, nmse_max=0.3, noise_floor_mean=0.015)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])}, {"class_names": ["a", "b"]})
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    store.event("run_finished", wall_s=1.0)
    store.close()
    return store.path


def test_a_killed_run_being_reported_is_listed_and_summarised_as_killed_not_as_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hil report holds a run folder's lock while it writes the report (its plots: seconds): hil runs listed a killed
    run as 'running' meanwhile, and a report of it from another shell said 'The run has not ended: another hil process
    has it open'. A report's lock says it is a report's."""
    import hil.report
    from hil.store import RunStore, list_runs

    store = RunStore.create(tmp_path, "killed")
    store.event("run_started", protocol="killed", method="pat", system="crossbar", seed=0)
    store.close()  # as a kill -9 leaves it: no ending
    seen: list[Any] = []
    write_report = hil.report.write_report

    def watched(reporting: RunStore) -> Path:
        seen.append([run["status"] for run in list_runs(tmp_path)])  # hil runs in another shell, meanwhile
        watching = RunStore.open(reporting.path, watch=True)  # hil report in another shell, refused the lock
        try:
            seen.append(hil.report.live_summary(watching))
        finally:
            watching.close()
        return write_report(reporting)

    monkeypatch.setattr(hil.report, "write_report", watched)
    assert main(["report", str(store.path)]) == 0
    assert seen[0] == ["incomplete"]
    assert "has not ended" not in seen[1] and "**The run stopped before its evaluation**" in seen[1]
    assert [run["status"] for run in list_runs(tmp_path)] == ["incomplete"]


def test_the_learning_curves_plot_what_the_events_say(tmp_path: Path) -> None:
    from hil.report import _learning_curves
    from hil.store import RunStore

    store = RunStore.open(_reportable_run(tmp_path))
    figure = _learning_curves(store.events())
    store.close()
    curves = {(axis.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
              for axis in figure.axes for line in axis.get_lines()}
    assert curves == {("loss", "train"): ([1, 2], [1.5, 0.75]),  # the mean of each epoch's batches
                      ("loss", "test, device"): ([1, 2], [0.9, 0.4]), ("loss", "test, twin"): ([1, 2], [1.0, 0.5]),
                      ("accuracy", "test, device"): ([1, 2], [0.5, 0.75]),
                      ("accuracy", "test, twin"): ([1, 2], [0.25, 0.5]),
                      # the final evaluation, at the last epoch
                      ("loss", "final evaluation, device"): ([2], [0.4]),
                      ("accuracy", "final evaluation, device"): ([2], [0.75])}


@pytest.mark.parametrize(("file", "arrays", "needle"), [
    ("evaluation.h5", {"labels": [0, 1]}, "array 'confusion' missing"),
    ("evaluation.h5", {"confusion": [[1, 2, 3]]}, "the confusion matrix is (1, 3), not square with a class"),
    ("fidelity.h5", {"nmse": [0.1]}, "array 'measured' missing"),
    ("fidelity.h5", {"nmse": [0.1], "measured": [[1.0, 2.0]], "predicted": [[1.0]]},
     "measured (1, 2) and predicted (1, 1) are not two sets of the same outputs"),
])
def test_report_of_a_run_whose_data_file_holds_other_arrays_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str, arrays: dict, needle: str) -> None:
    """An HDF5 file that h5py reads but that is not what the run wrote (damaged, or copied from elsewhere)."""
    import numpy as np

    from hil.store import RunStore

    run = _reportable_run(tmp_path)
    store = RunStore.open(run)
    store.save_arrays(f"data/{file}", {name: np.asarray(value) for name, value in arrays.items()})
    store.close()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hil: error: {run / 'data' / file}: {needle}; ") and err.count("\n") == 1


def test_report_of_a_log_with_odd_values_plots_the_numbers_and_says_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A log edited by hand: a batch without its loss, an epoch numbered in text, settings that are not a mapping."""
    run = _reportable_run(tmp_path)
    log = run / "events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    next(e for e in events if e["kind"] == "batch").pop("loss")
    next(e for e in events if e["kind"] == "epoch")["epoch"] = "1"
    events.insert(1, {"seq": 0, "kind": "calibrated", "settings": ["odd"]})
    events.insert(1, {"seq": 0, "kind": "twin_fitted", "converged": False, "best_epoch": "3"})
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    summary = (run / "report" / "summary.md").read_text()
    assert "Calibration: ['odd']." in summary and "ran out of epochs while still improving: more" in summary


def test_the_twin_fit_plots_every_held_out_measurement(tmp_path: Path) -> None:
    """All outputs, as the NMSE in its title is over all of them (not the first ten of the crossbar's 32)."""
    import torch

    from hil.report import _twin_fit
    from hil.store import RunStore

    store = RunStore.open(_reportable_run(tmp_path))
    store.save_arrays("data/fidelity.h5", {"nmse": torch.rand(32), "measured": torch.rand(2, 5, 32),
                                           "predicted": torch.rand(2, 5, 32)})
    figure = _twin_fit(store)
    store.close()
    assert sum(len(points.get_offsets()) for points in figure.axes[0].collections) == 2 * 5 * 32


def test_a_file_not_in_utf8_is_located_and_the_fix_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lab or protocol saved in Latin-1 (as some editors do): its line, its field, and what to do."""
    path = tmp_path / "lab.yaml"
    path.write_bytes("description: default lab\nworlds:\n  table: {kind: optical_table}  # café\n".encode("latin-1"))
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err == (f"hil: error: {path}:3: worlds.table: not UTF-8 text: byte 0xE9 is not a "
                                       "character in UTF-8; save the file as UTF-8\n")


def test_output_whose_reader_quit_ends_quietly_without_a_traceback() -> None:
    """`hil check lab.yaml | head -c 0` (or a run's closing lines): printing fails on a broken pipe."""
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "check", str(REPO / "lab.yaml")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader quits before hil writes
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 1
    assert stderr == ""


def test_output_to_a_full_disk_is_one_line_not_a_traceback() -> None:
    """`hil check lab.yaml > out.txt` on a full disk: the OSError of the write was a traceback."""
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(REPO / "lab.yaml")], cwd=REPO,
                                 stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert process.returncode == 1
    assert process.stderr == "hil: error: cannot write standard output (No space left on device)\n"


def test_a_table_for_a_closed_output_is_no_traceback(tmp_path: Path) -> None:
    """`hil runs >&-` (a script closing what it does not read): the table's console asked None if it was a terminal,
    a traceback, where hil check printed nothing as Python does."""
    _runs_named(tmp_path, "one")
    result = subprocess.run([sys.executable, "-m", "hil.cli", "runs", "--root", str(tmp_path)], cwd=REPO,
                            stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
    assert (result.returncode, result.stderr) == (0, "")


def test_runs_shows_names_as_written_not_as_rich_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol named with brackets, `sweep [/lr]`: listed as is, not a rich MarkupError traceback."""
    run = tmp_path / "20261201-120000-sweep"
    run.mkdir()
    (run / "events.jsonl").write_text('{"seq": 1, "time": 1.0, "kind": "run_started", "protocol": "sweep [/lr] '
                                      '[bold]b"}\n')
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert "sweep [/lr] [bold]b" in capsys.readouterr().out


def test_check_refuses_a_max_step_too_small_for_any_ramp_at_its_line(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``max_step: 1e-300`` passed hil check, and was refused only when a ramp ran on the bench."""
    path = tmp_path / "lab.yaml"
    path.write_text("worlds:\n  chip: {kind: resistive_network}\ninstruments:\n  out:\n"
                    "    driver: simulated_analog_output\n    world: chip\n    limits:\n"
                    "      voltage_v: {min: -2.5, max: 2.5, max_step: 1e-300}\n")
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"hil: error: {path}:8: instruments.out.limits.voltage_v.max_step: a ramp across the limit, -2.5..2.5 V, in "
        "steps of 1e-300 takes 5e+300 steps (at most 10000); raise max_step to at least 0.0005 V, or narrow min and "
        "max\n")


@pytest.mark.parametrize(("argv", "line"), [
    (["run", "--seed", "x", "p.yaml"], "hil: error: argument --seed: 'x' is not a seed (an integer in 0..4294967295); "
                                       "see hil run --help"),
    ([], "hil: error: the following arguments are required: COMMAND; see hil --help"),
    (["frobnicate"], "hil: error: argument COMMAND: invalid choice: 'frobnicate' (choose from *); see hil --help"),
    (["check"], "hil: error: the following arguments are required: file; see hil check --help"),
    (["runs", "--rot", "x"], "hil: error: unrecognized arguments: --rot x; see hil runs --help"),  # was hil --help,
    # which does not list --root
    (["devices", "lab.yaml"], "hil: error: unrecognized arguments: lab.yaml; see hil devices --help"),
    (["devices", "lab\nfile.yaml"], "hil: error: unrecognized arguments: lab file.yaml; see hil devices --help"),  # a
    # newline in an argument (pasted) still makes one line
])
def test_arguments_argparse_refuses_are_one_line_with_the_help_to_read(argv: list[str], line: str,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """argparse printed its usage, then the error: two lines, where every other mistake is one. (``*``: the
    choices, which Python 3.12 writes without quotes.)"""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert re.fullmatch(re.escape(line).replace(r"\*", "[^()]+") + "\n", capsys.readouterr().err)


def test_help_still_prints_the_usage_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: hil {argv[0] if len(argv) > 1 else ''}".rstrip()) and "--help" in out


def test_help_says_what_each_exit_status_means(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither hil --help nor the README said that Ctrl-C exits 130, or what 1 and 2 mean, which a CI script tests."""
    with pytest.raises(SystemExit):
        main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    for status in ("exit status: 0 done", "2 a bad argument or file, an instrument that failed, or a run that failed",
                   "1 the output could not be written", "128+N stopped by signal N: 130 Ctrl-C, 143 SIGTERM"):
        assert status in said


@pytest.mark.parametrize(("command", "says"), [
    ("run", "Run an experiment protocol, or resume a run. Prints the run's folder and its report on stdout; the "
            "progress bars and the errors go to stderr."),
    ("report", "Write (again) the report of a run. Prints the path of its summary.md."),
    ("runs", "List the runs in a folder. Prints a table"), ("devices", "List the lab's instruments"),
    ("check", "Validate a lab file or a protocol without touching hardware. Prints a line"),
    ("emulate", "Serve a driver's instrument emulator until Ctrl-C. Prints the VISA resource")])
def test_each_command_s_help_says_what_it_does_and_prints(command: str, says: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`hil report --help` was its usage and arguments alone: neither what the command does nor what it prints."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert says in " ".join(capsys.readouterr().out.split())


def test_version_prints_the_version_a_run_records_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`hil --version` said `the following arguments are required: COMMAND` (exit 2): a lab notebook or a CI log
    had no way to note which hil ran."""
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr() == (f"hil {importlib.metadata.version('hil')}\n", "")


def test_python_m_hil_is_the_hil_command() -> None:
    """`python -m hil` failed ("No module named hil.__main__"), the way to run hil from a Python whose scripts
    folder is not on the PATH (a notebook's kernel, a conda environment not activated)."""
    import importlib.metadata

    result = subprocess.run([sys.executable, "-m", "hil", "--version"], capture_output=True, text=True, cwd=REPO)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"hil {importlib.metadata.version('hil')}\n", "")


def test_the_installed_command_refuses_a_bad_argument_on_one_line_with_status_2() -> None:
    result = subprocess.run([sys.executable, "-m", "hil.cli", "emulate", "keithley_2450", "--via", "usb"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert re.fullmatch(r"hil: error: argument --via: invalid choice: 'usb' \(choose from '?tcp'?, '?pty'?\); see hil "
                        r"emulate --help\n", result.stderr)


def test_an_emulator_option_with_a_tag_is_refused_as_in_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "keithley_2450", "seed=!!binary aGk="]) == 2
    assert capsys.readouterr().err == ("hil: error: seed: tag !!binary refused: hil reads plain values only (text, "
                                       "numbers, true/false, null, lists and mappings); remove the tag\n")


def test_a_relative_file_not_found_names_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``hil devices`` run from another folder than the lab's said only 'lab.yaml: file not found', and then not how
    to name another lab file."""
    monkeypatch.chdir(tmp_path)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err == (f"hil: error: lab.yaml: file not found in the working directory, {tmp_path}; "
                                       "run hil in the lab file's folder, or name the file with --lab FILE\n")
    assert main(["devices", "--lab", "mine.yaml"]) == 2  # a lab file named: no advice to name one
    assert capsys.readouterr().err == f"hil: error: mine.yaml: file not found in the working directory, {tmp_path}\n"
    assert main(["check", str(tmp_path / "p.yaml")]) == 2  # an absolute path says all there is to say
    assert capsys.readouterr().err == f"hil: error: {tmp_path / 'p.yaml'}: file not found\n"


def test_a_plugin_ignored_for_a_taken_name_is_one_warning_line(tmp_path: Path) -> None:
    """The warning was Python's, over two lines with the source line of registry.py."""
    info = tmp_path / "acme_hil-0.1.dist-info"  # an installed package's metadata, as pip leaves it
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-hil\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hil.instruments]\nkeithley_2450 = acme_hil.smu:AcmeSmu\n")
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(REPO / "lab.yaml")], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("hil: warning: the entry point 'keithley_2450' = 'acme_hil.smu:AcmeSmu' (group "
                             "hil.instruments) is ignored: the name is taken by drivers.keithley2450:Keithley2450; "
                             "register it under another name\n")


def test_a_warning_not_hils_is_shown_as_python_shows_it_and_main_leaves_the_display_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Only hil's own warnings (UserWarning) are put on one line: a plugin's RuntimeWarning keeps Python's form, with
    its source line, and is not swallowed; and `main` gives back the display it found when it returns."""
    import warnings

    (tmp_path / "acme_warns.py").write_text("import warnings\n\nwarnings.warn('acme: calibration file is old', "
                                            "RuntimeWarning)\nfrom drivers.keithley2450 import Keithley2450 as Smu\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = tmp_path / "lab.yaml"
    lab.write_text("instruments:\n  smu: {driver: 'acme_warns:Smu', resource: 'TCPIP::10.0.0.1::5025::SOCKET'}\n")
    with pytest.warns(RuntimeWarning, match=r"^acme: calibration file is old$") as caught:
        shows = warnings.showwarning  # pytest's, which records what Python would show
        assert main(["check", str(lab)]) == 0
        assert warnings.showwarning is shows
    assert [Path(w.filename).name for w in caught] == ["acme_warns.py"]
    assert "hil: warning" not in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "acme_warns")


def test_a_traffic_log_that_stops_is_one_warning_line_and_the_command_goes_on(tmp_path: Path) -> None:
    """hil's other warning, a traffic log the disk refuses part-way, was Python's two lines with transport.py's
    source line. (The file size limit stands for a full disk: the kernel refuses writes beyond it.)"""
    import resource

    log = tmp_path / "traffic.log"
    lab = tmp_path / "lab.yaml"
    lab.write_text(f"instruments:\n  smu: {{driver: keithley_2450, emulate: true, traffic_log: {log}}}\n")

    def full_disk_beyond_100_bytes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal that would end the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run([sys.executable, "-m", "hil.cli", "devices", "--lab", str(lab)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, preexec_fn=full_disk_beyond_100_bytes)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"hil: warning: traffic log {log}: cannot write (File too large); logging stops here and "
                             "the instruments go on (free space, or give traffic_log another path)\n")
    assert "KEITHLEY" in result.stdout


def test_check_refuses_an_output_root_in_a_folder_it_cannot_write_to_and_reads_a_home_root_as_the_home_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A root whose nearest existing folder cannot be written to is refused (os.access is denied here, as root is
    never denied by the permissions), and ``~/runs`` is checked under the home, as RunStore.create makes it: read as
    ./~/runs, the working directory was checked instead and a home that holds no folder passed."""
    import hil.protocol

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    text = (REPO / "experiments" / "crossbar_pat_digits.yaml").read_text(encoding="utf-8")
    (tmp_path / "locked").mkdir()
    access = hil.protocol.os.access
    monkeypatch.setattr(hil.protocol.os, "access", lambda path, mode: Path(path).name != "locked"
                        and access(path, mode))
    Path("p.yaml").write_text(f"{text}output: {{root: locked/runs}}\n", encoding="utf-8")
    assert main(["check", "p.yaml"]) == 2
    assert "output.root: cannot create a run folder in locked/runs ('locked' cannot be written to)" in \
        capsys.readouterr().err
    monkeypatch.setenv("HOME", str(tmp_path / "lab.yaml"))  # a home that is a file
    Path("p.yaml").write_text(f"{text}output: {{root: ~/runs}}\n", encoding="utf-8")
    assert main(["check", "p.yaml"]) == 2
    assert f"output.root: cannot create a run folder in {tmp_path / 'lab.yaml' / 'runs'} ('{tmp_path / 'lab.yaml'}' " \
           "is a file)" in \
        capsys.readouterr().err


def test_a_path_in_another_encoding_is_printed_escaped_where_the_output_is_strict_utf8(tmp_path: Path) -> None:
    """A file named in Latin-1 (b'caf\\xe9.yaml', a lone surrogate to Python) checked OK, then printing its name on an
    output of strict UTF-8 (a UTF-8 locale) stopped hil with a UnicodeEncodeError traceback."""
    lab = os.fsencode(tmp_path) + b"/caf\xe9.yaml"
    with open(lab, "wb") as handle:
        handle.write((REPO / "lab.yaml").read_bytes())
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", os.fsdecode(lab)], capture_output=True,
                            cwd=REPO, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(os.fsencode(tmp_path) + b"/caf\\udce9.yaml: OK, a lab of ")


def _runs_named(parent: Path, *protocols: str) -> list[str]:
    """Finished runs of these protocols in ``parent``; their folders' names, newest first as hil runs lists them."""
    from hil.store import RunStore

    names = []
    for protocol in protocols:
        store = RunStore.create(parent, protocol)
        store.event("run_started", protocol=protocol)
        store.event("run_finished")
        store.close()
        names.append(store.path.name)
    return sorted(names, reverse=True)


def test_runs_to_a_file_lists_each_run_whole_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hil runs > runs.txt` cut a long run's name short, `20261207-072944-crossbar-…-for-the-lab-note…`, at 160
    columns: a name that neither grep nor hil report could find."""
    protocol = "crossbar-insilico-digits-with-a-much-longer-protocol-name-for-the-lab-notebook-and-its-date"
    [name] = _runs_named(tmp_path, protocol)
    assert main(["runs", "--root", str(tmp_path)]) == 0
    rows = [line.split("│")[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [[name, protocol]]


def test_runs_on_an_80_column_terminal_folds_run_names_rather_than_cutting_them(tmp_path: Path) -> None:
    """On an 80-column terminal every run of a day read `20261207-073028…`: which run was which could not be told."""
    import fcntl
    import pty
    import struct
    import termios

    names = _runs_named(tmp_path, "crossbar-insilico-digits", "optical-pat-digits")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    sized = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}  # the window's
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "runs", "--root", str(tmp_path)], cwd=REPO,
                               stdout=terminal, stderr=subprocess.PIPE, env=sized)
    os.close(terminal)
    shown = b""
    try:
        while chunk := os.read(controller, 4096):
            shown += chunk
    except OSError:  # the terminal's other end closed: everything was read
        pass
    finally:
        os.close(controller)
    assert process.wait(timeout=60) == 0, process.stderr.read()  # type: ignore[union-attr]
    lines = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode()).splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]  # the run column, row by row
    assert "".join(cells) == "".join(names)


def test_a_run_s_progress_goes_to_stderr_and_its_folder_and_report_alone_to_stdout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`hil run p.yaml > out.txt` (or `| tail -1` in a script) got the progress bars' last states in its output,
    between the run's folder and report, which are what the command gives."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")
    assert main(["run", "p.yaml"]) == 0
    out, err = capsys.readouterr()
    [run] = (tmp_path / "runs").iterdir()
    assert out == f"run folder: {run}\nreport:     {run / 'report' / 'summary.md'}\n"
    assert "collecting twin data" in err and "training" in err


def test_a_run_into_a_log_says_each_step_and_its_progress_as_it_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`nohup hil run p.yaml &`, or a job scheduler's log: rich's bars, outside a terminal, draw only their last state
    as their step ends, and the steps without a bar (calibrate, fidelity, evaluate, report) said nothing, so a log read
    during a run said neither which step it was in nor how far along. Each step is a line as it starts, with the
    device time so far, and a step with a count a line per tenth of it with the time left; plain lines, in order.
    The training moved only at each epoch's end, which on a bench may be many minutes apart: it moves by batches."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")
    from hil.orchestrator import STEPS

    Path("p.yaml").write_text(Path("p.yaml").read_text().replace("epochs: 1, batch_size", "epochs: 3, batch_size"))
    assert main(["run", "p.yaml"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    steps = [line for line in lines if line.startswith("hil: step ")]
    assert [re.sub(r" \(device time so far \d+:\d\d:\d\d\)$", "", line) for line in steps] == \
        [f"hil: step {n} of 7: {name}" for n, name in enumerate(STEPS, 1)]
    training = lines[lines.index(steps[4]) + 1:lines.index(steps[5])]
    counts = [re.fullmatch(r"hil: training ([\d.]+)/3 \((\d+:\d\d:\d\d left, )?device time \d+:\d\d:\d\d\)"
                           r"(; this epoch's test acc [\d.]+ \(device\))?", line)[1] for line in training]
    assert counts[-1] == "3" and "1" in counts  # an epoch's end, said with its test accuracy after its evaluation
    assert "0.4" in counts and "2.8" in counts  # within an epoch (of 5 batches): the bar moves batch by batch
    assert [float(count) for count in counts] == sorted({float(count) for count in counts})
    assert " left, device time " in training[0] and " left" not in training[-1]
    assert all("this epoch's test acc" in line for line in training[counts.index("1"):])
    assert not steps[5].endswith("(device time so far 0:00:00)")  # the collection and training used the device
    checking = lines[lines.index(steps[3]) + 1:lines.index(steps[4])]  # the fidelity step's Jacobian check
    assert checking and checking[-1].startswith("hil: checking the twin ")
    done, total = map(int, re.match(r"hil: checking the twin (\d+)/(\d+) ", checking[-1]).groups())
    assert done == total == 2 * FidelityConfig().directions  # (θ, x) × the fidelity directions, by default


def test_a_run_names_its_folder_as_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The run's folder was printed only as the run ended, so a scientist who wanted to see how far a run had got
    from another shell (hil report RUN) had first to find which of the folders was this run's."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "lab.yaml", "lab.yaml")
    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(Path("p.yaml"), tmp_path / "runs")
    assert main(["run", "p.yaml"]) == 0
    [run] = (tmp_path / "runs").iterdir()
    assert capsys.readouterr().err.splitlines()[0] == f"hil: run folder {run}; how far it has got: hil report {run}"


def test_a_ctrl_c_during_a_progress_bar_in_a_terminal_is_said_on_a_line_of_its_own(tmp_path: Path) -> None:
    """The line saying that the run stops after the current batch was written where the terminal's cursor was, at
    the end of the training bar: `... this epoch's test acc 0.950 (device)hil: stopping after ...`, wrapped, and
    left on the screen as a stale copy of the bar. It clears the bar's line first; the bar is drawn again below."""
    import fcntl
    import pty
    import struct
    import termios

    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(tmp_path / "p.yaml", tmp_path / "runs")
    text = (tmp_path / "p.yaml").read_text().replace("epochs: 1, batch_size", "epochs: 1000, batch_size")
    (tmp_path / "p.yaml").write_text(text)
    shutil.copy(REPO / "lab.yaml", tmp_path / "lab.yaml")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    sized = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "TERM")}
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "run", "p.yaml"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=terminal, env=sized | {"TERM": "xterm"})
    os.close(terminal)
    shown = b""
    try:
        while b"this epoch's test acc" not in shown:  # the training bar is drawn, after its first epoch
            chunk = os.read(controller, 4096)
            assert chunk, shown  # the run ended before training
            shown += chunk
        process.send_signal(signal.SIGINT)
        while chunk := os.read(controller, 4096):
            shown += chunk
    except OSError:  # the terminal's other end closed: everything was read
        pass
    finally:
        os.close(controller)
    assert process.wait(timeout=120) == 130
    said = shown.index(b"hil: stopping after the current step, training batch or group of twin data")
    assert shown[:said].endswith(b"\r\x1b[2K")


def test_a_run_with_its_stderr_closed_runs_without_progress_bars(tmp_path: Path) -> None:
    """`hil run p.yaml 2>&-`: the progress bars had no stream to go to, and the run failed at its first bar."""
    _idx_folder(tmp_path / "mnist", list(range(10)) * 4, list(range(10)))
    _small_idx_protocol(tmp_path / "p.yaml", tmp_path / "runs")
    shutil.copy(REPO / "lab.yaml", tmp_path / "lab.yaml")
    result = subprocess.run([sys.executable, "-m", "hil.cli", "run", "p.yaml"], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True, timeout=300, preexec_fn=lambda: os.close(2))
    [run] = (tmp_path / "runs").iterdir()
    assert result.returncode == 0
    assert result.stdout == f"run folder: {run}\nreport:     {run / 'report' / 'summary.md'}\n"


def test_check_of_several_files_into_one_log_says_them_in_the_order_given(tmp_path: Path) -> None:
    """`hil check a.yaml b.yaml c.yaml > log 2>&1` in CI: the lines of the files that passed were held in stdout's
    buffer until hil ended, so every error came first, and the log read in another order than the files."""
    missing = tmp_path / "missing.yaml"
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as a CI job runs it
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(REPO / "lab.yaml"), str(missing), PROTOCOL],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                            env=buffered)
    assert result.returncode == 2
    said = [line.split(": OK")[0].removeprefix("hil: error: ").split(": file not found")[0]
            for line in result.stdout.splitlines()]
    assert said == [str(REPO / "lab.yaml"), str(missing), PROTOCOL]


def test_a_command_with_its_stderr_closed_says_its_errors_nowhere_rather_than_on_stdout(tmp_path: Path) -> None:
    """`hil check lab.yaml missing.yaml 2>&- > passed.txt`: print's stream of None is stdout, so the error line meant
    for stderr went among the lines of the files that passed, which a script reads there."""
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(REPO / "lab.yaml"),
                             str(tmp_path / "missing.yaml")], cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=120,
                            preexec_fn=lambda: os.close(2))
    assert result.returncode == 2
    assert [line.split(": OK")[0] for line in result.stdout.splitlines()] == [str(REPO / "lab.yaml")]


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGINT, "hil: interrupted"),
                                              (signal.SIGTERM, "hil: stopped by SIGTERM")])
def test_check_stopped_says_it_changed_nothing_on_the_instruments(tmp_path: Path, signum: int, said: str) -> None:
    """A Ctrl-C or SIGTERM during hil check (or hil runs, hil report) said 'instruments were put in their safe
    state', as a stopped run's does, of a command that touches no instrument. Here the stop comes as hil check waits
    for the rest of a lab file from a named pipe, after it read the first line."""
    import fcntl
    import termios

    fifo = tmp_path / "lab.yaml"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # the pipe's writer, open before hil check opens it: it waits for the rest
    try:
        os.write(writer, b"worlds: {}\n")
        process = subprocess.Popen([sys.executable, "-m", "hil.cli", "check", str(fifo)], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=as_from_a_terminal)
        unread = bytearray(4)  # the bytes in the pipe that hil check has not read yet
        while fcntl.ioctl(writer, termios.FIONREAD, unread) == 0 and int.from_bytes(unread, sys.byteorder):
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        process.send_signal(signum)  # hil check has read the line: it is in its read of the file
        out, err = process.communicate(timeout=60)
    finally:
        os.close(writer)
    assert (process.returncode, out, err) == (128 + signum, "", f"{said}; nothing was changed on the instruments\n")


def test_report_where_the_home_cannot_be_written_says_nothing_of_matplotlibs_cache(tmp_path: Path) -> None:
    """A shared account's or a service's home that cannot be written (HOME=/nonexistent): hil report and every hil
    run printed matplotlib's two lines on its configuration folder ("mkdir -p failed for path ...", "Matplotlib
    created a temporary cache directory ...") on stderr, which holds hil's own lines alone."""
    from hil.store import SUMMARY, RunStore

    store = RunStore.create(tmp_path / "runs", "r")
    store.event("run_started", protocol="p", method="pat", system="crossbar", seed=0)
    store.event("run_finished")
    store.close()
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be: nothing can be made in it")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")} | {"HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "hil.cli", "report", str(store.path)], capture_output=True,
                            text=True, timeout=120, env=environment)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{store.path / SUMMARY}\n", "")


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not remove a folder a process works in")
def test_a_working_directory_removed_under_hil_is_one_line_naming_it(tmp_path: Path) -> None:
    """A shell left in a shared folder a colleague removed: every hil command ended at torch's import, with "Intel
    oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so", as if hil were not installed."""
    gone = tmp_path / "gone"
    gone.mkdir()
    (tmp_path / "runs").mkdir()
    result = subprocess.run(
        ["sh", "-c", 'cd "$1" && rmdir "$1" && exec "$2" -c "import sys; from hil.cli import main; '
         'sys.exit(main(sys.argv[1:]))" runs --root "$3"', "sh", str(gone), sys.executable, str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", (
        "hil: error: the working directory is gone (No such file or directory): it was removed, or its share was "
        "lost; cd to a folder that exists and run hil again\n"))
