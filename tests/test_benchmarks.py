"""The benchmarks: their arithmetic (with scripted timings), their command lines, what they print and what they
connect to. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str, monkeypatch: pytest.MonkeyPatch):
    """A benchmark script as a module of its own name (``simulators`` would shadow the simulators package); the
    repository the script puts first on ``sys.path`` is taken off it after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeCrossbar:
    kind = "crossbar"
    n_in, n_out, n_params = 4, 2, 8
    x_bounds = theta_bounds = (-1.0, 1.0)
    crossbar = SimpleNamespace(shape=(4, 4))

    def __init__(self):
        self.device_time_s = 0.0
        self.programmed = None

    def calibrate(self):
        return {}

    def forward(self, x, theta):
        """A read: 0.25 s of device time; 1 s more for the programming of a θ other than the last one's."""
        if self.programmed is None or not torch.equal(theta, self.programmed):
            self.device_time_s += 1.0
            self.programmed = theta.clone()
        self.device_time_s += 0.25
        return torch.zeros(len(x), 2)


def test_simulator_ratios_are_throughput_over_the_kernels_throughput(monkeypatch):
    simulators = load("simulators", monkeypatch)
    # per repeat, in the benchmark's order: the batch, each raw kernel, then `singles` one-row calls in one timing
    script = {"batched": [2e-3, 9e-3, 2e-3], "matmul": [1e-3, 1e-3, 5e-3], "pair matmul": [5e-4, 1e-3, 5e-4],
              "matmul+noise": [4e-3, 4e-3, 4e-3], "single": [1e-3, 1e-3, 1e-3]}
    order = iter([name for repeat in range(3) for name in ("batched", "matmul", "pair matmul", "matmul+noise",
                                                           "single")])

    def seconds(call):
        call()
        name = next(order)
        return script[name].pop(0) * (10 if name == "single" else 1)

    monkeypatch.setattr(simulators, "seconds", seconds)
    figures = simulators.measure(FakeCrossbar(), batch=100, repeats=3, singles=10)
    assert figures["batched_per_s"] == pytest.approx(100 / 2e-3)  # the median batch time, not the mean
    assert figures["single_per_s"] == pytest.approx(1 / 1e-3)  # per one-row call
    assert figures["batching_gain"] == pytest.approx(100 / 2e-3 / 1e3)
    assert figures["of matmul"] == pytest.approx(0.5)  # twice the matmul's time: half its throughput
    assert figures["of pair matmul"] == pytest.approx(0.25)
    assert figures["of matmul+noise"] == pytest.approx(2.0)
    assert figures["device_s_per_call"] == pytest.approx(0.25)  # the modelled clock's, of one batched call
    assert figures["device_s_per_new_theta_call"] == pytest.approx(1.25)  # a training step's: θ programmed anew


def test_the_transport_benchmark_reads_every_reply_through_each_reader(monkeypatch, capsys):
    """A run of two reply sizes on a real pty: each reader got all the bytes (else it would block, or the transport
    would time out), and a row per size is printed."""
    if not hasattr(os, "openpty"):
        pytest.skip("needs a pseudo-terminal (not on Windows)")
    transports = load("transports", monkeypatch)
    monkeypatch.setattr("sys.argv", ["transports.py", "--sizes", "100", "5000", "--replies", "3", "--repeats", "1"])
    transports.main()
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["100", "5000"]
    assert all(float(figure) > 0 for row in rows for figure in row.split()[1:4])


def test_the_transport_benchmarks_plain_read_waits_for_bytes_rather_than_spinning(monkeypatch, capsys):
    """Once pyserial has opened the pty it is set to return at once (VMIN 0), so the plain ``os.read`` loop, the
    benchmark's measure of what the pty delivers, spun through empty reads (64 000 in 0.1 s) on a core the device's
    process needed. It now waits for bytes as a blocking read does: no read comes back empty."""
    if not hasattr(os, "openpty"):
        pytest.skip("needs a pseudo-terminal (not on Windows)")
    transports = load("transports", monkeypatch)
    empty = []

    class CountingOs:
        """``os``, with each empty ``read`` counted."""

        def __getattr__(self, name):
            return getattr(os, name)

        def read(self, fd, size):
            data = os.read(fd, size)
            if not data:
                empty.append(fd)
            return data

    monkeypatch.setattr(transports, "os", CountingOs())
    monkeypatch.setattr("sys.argv", ["transports.py", "--sizes", "100", "5000", "--replies", "3", "--repeats", "2"])
    transports.main()
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert empty == []


def test_the_transport_benchmark_says_in_one_line_that_it_needs_a_pseudo_terminal(monkeypatch) -> None:
    """On Windows, which has no pseudo-terminal, the benchmark failed as it was loaded (No module named 'termios')."""
    transports = load("transports", monkeypatch)
    monkeypatch.delattr(os, "openpty")  # as on Windows
    monkeypatch.setattr("sys.argv", ["transports.py"])
    with pytest.raises(SystemExit, match=r"^benchmarks/transports\.py: needs a pseudo-terminal \(os\.openpty\) and "
                                         r"os\.fork, which this system lacks \(Windows\); run it on Linux or macOS$"):
        transports.main()


def test_the_simulator_benchmark_says_which_preset_refuses_a_tile_and_goes_on(monkeypatch, capsys):
    """A tile the `realistic` crossbar refuses (its first-order IR drop would pass 100 %) is the crossbar's row of
    the table, and the other systems are measured with that preset: the whole preset's lab was refused, a row
    ``(all) realistic refused`` and no system measured."""
    simulators = load("simulators", monkeypatch)
    monkeypatch.setattr("sys.argv", ["simulators.py", "--systems", "crossbar", "resistive_network", "--presets",
                                     "realistic", "--crossbar", "512", "512", "--repeats", "1", "--batch", "4",
                                     "--singles", "1"])
    simulators.main()
    refused, measured = capsys.readouterr().out.splitlines()[2:]
    assert refused.split()[:3] == ["crossbar", "realistic", "refused:"] and "wire_resistance_ohm 0.35 Ω" in refused
    assert measured.split()[:3] == ["resistive_network", "realistic", "4"]

@pytest.mark.parametrize(("script", "arguments", "message"), [
    ("simulators", ["--systems", "crossbar", "bogus"],
     "--systems: 'bogus' is none of the simulated systems of lab.yaml: optical, fiber, crossbar, oscillator, "
     "resistive_network"),
    ("simulators", ["--presets", "ideal", "bogus"], "--presets: 'bogus' is none of the presets of world 'table' "
                                                    "(optical_table): ideal, realistic, harsh"),
    ("simulators", ["--repeats", "0"], "argument --repeats: '0' is not a count (an integer of 1 or more)"),
    ("simulators", ["--batch", "-8"], "argument --batch: '-8' is not a count (an integer of 1 or more)"),
    ("simulators", ["--threads", "-1"], "argument --threads: '-1' is not a count (an integer of 1 or more)"),
    ("mismatch", ["--systems", "fiber"], "--systems: 'fiber' is none of the systems this benchmark has a protocol "
                                         "for: optical, crossbar, oscillator"),
    ("mismatch", ["--systems", "crossbar", "--presets", "harsh", "bogus"],
     "--presets: 'bogus' is none of the presets of world 'crossbar_chip' (memristor_crossbar): ideal, realistic, "
     "harsh"),
    ("mismatch", ["--seeds", "0"], "argument --seeds: '0' is not a count (an integer of 1 or more)"),
    ("mismatch", ["--overhead-only", "--systems", "crossbar", "--json", "missing/figures.json"],
     "argument --json: 'missing/figures.json': there is no folder 'missing'; create it first"),
    ("mismatch", ["--overhead-only", "--systems", "crossbar", "--json", "."],
     "argument --json: '.' is a folder; name a file in it"),
    ("transports", ["--sizes", "100", "0"], "argument --sizes: '0' is not a count (an integer of 1 or more)"),
    ("transports", ["--repeats", "0"], "argument --repeats: '0' is not a count (an integer of 1 or more)"),
])
def test_a_bad_argument_is_refused_on_one_line_before_anything_is_measured(monkeypatch, capsys, tmp_path, script,
                                                                            arguments, message):
    """An unknown system printed the table's header and no row, exit status 0; an unknown preset was a row saying
    the lab refused it (the simulators) or a traceback after the runs before it (the mismatch); a count of 0 or
    below was a traceback (no median of no timings, a division by zero) after measuring; a ``--json`` file in a
    missing folder, a traceback once the whole run was measured."""
    monkeypatch.chdir(tmp_path)
    module = load(script, monkeypatch)
    monkeypatch.setattr("sys.argv", [f"{script}.py", *arguments])
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"benchmarks/{script}.py: error: {message}; see benchmarks/{script}.py --help\n"


def test_the_one_row_calls_are_warmed_up_before_they_are_timed(monkeypatch):
    """A system's first one-row call (on the realistic crossbar 0.25–0.45 ms against 0.1 ms for those after it, up
    to 8 ms on a loaded machine: its shapes' first kernels) was inside the first timing of the one-row calls, which
    sets the single-call figure, and so the batching gain, with ``--repeats`` 1 or 2. Each timing holds
    ``singles`` one-row calls, and no slicing of the inputs; more of them than the batch has rows (``--singles 20
    --batch 8``) take its rows again, where they were empty calls, which a system refuses."""
    simulators = load("simulators", monkeypatch)
    system = FakeCrossbar()
    rows: list[int] = []
    system.forward = lambda x, theta: rows.append(len(x)) or torch.zeros(len(x), 2)
    timings: list[list[int]] = []

    def seconds(call):
        before = len(rows)
        call()
        timings.append(rows[before:])
        return 1e-3

    monkeypatch.setattr(simulators, "seconds", seconds)
    simulators.measure(system, batch=4, repeats=2, singles=5)
    warm_up = rows[:rows.index(4, 1)]  # before the first timing (of a batch), after the batch's warm-up
    assert 1 in warm_up
    assert [calls for calls in timings if calls] == [[4], [1] * 5, [4], [1] * 5]  # the raw kernels call none


def test_the_simulator_benchmark_prints_a_row_of_the_readmes_columns_for_a_real_system(monkeypatch, capsys):
    """A real run of one system: its row has the README's columns (batched/s, single/s, the batching gain in ×, the
    modelled device time of one batched call with θ held and with a new θ, which the crossbar programs first, and the
    throughput as a fraction of each raw kernel's), figures not
    checked (nothing here is timed). The first line says the run's conditions: torch's threads, the cores, and the
    load average, which moves every figure (it said only torch's version and threads)."""
    simulators = load("simulators", monkeypatch)
    monkeypatch.setattr("sys.argv", ["simulators.py", "--systems", "crossbar", "--presets", "ideal", "--repeats", "1",
                                     "--batch", "16", "--singles", "2"])
    simulators.main()
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"torch {re.escape(torch.__version__)}, {torch.get_num_threads()} thread\(s\), "
                        rf"{os.cpu_count()} cores, load average [\d.]+ over the last minute", out[0])
    assert out[1].split()[:9] == ["system", "preset", "batch", "batched/s", "single/s", "gain", "device", "s/call",
                                  "new"]
    [row] = out[2:]
    name, preset, batch, batched, single, gain, device, new_theta, raw = row.split(maxsplit=8)
    assert (name, preset, batch) == ("crossbar", "ideal", "16") and gain.endswith("×")
    assert float(batched) > 0 and float(single) > 0 and 0 < float(device) < float(new_theta)  # θ programmed anew
    assert re.fullmatch(r"[\d.]+ matmul, [\d.]+ pair matmul, [\d.]+ matmul\+noise", raw)


def test_the_mismatch_benchmark_prints_pats_overhead_as_the_ratio_of_the_two_step_times(monkeypatch, capsys):
    """``--overhead-only`` on the crossbar, one timed round: a line of the orchestrator's and the hand-written loop's
    median times per step, in ms, and their ratio, as the README quotes them (figures not checked beyond their
    arithmetic: nothing here is timed)."""
    mismatch = load("mismatch", monkeypatch)
    monkeypatch.setattr("sys.argv", ["mismatch.py", "--overhead-only", "--overhead-repeats", "1", "--systems",
                                     "crossbar"])
    mismatch.main()
    line = capsys.readouterr().out.splitlines()[-1]
    found = re.fullmatch(r"  crossbar +([\d.]+) ms / +([\d.]+) ms = ([\d.]+) \(in thread ([\d.]+)\)", line)
    assert found, line
    framework, hand, ratio, in_thread = map(float, found.groups())
    assert ratio == pytest.approx(framework / hand, abs=0.001 + ratio * 0.01 / min(framework, hand))
    assert 0 < in_thread <= ratio + 0.001  # the checkpoint's write left to its thread: no longer than waiting for it


def test_the_mismatch_benchmark_keeps_each_runs_figures_in_its_json_as_it_goes(monkeypatch, tmp_path):
    """``--json`` was written once, at the end: a benchmark stopped after hours of runs (Ctrl-C, a run that failed)
    left no file. Here the second run is stopped: the file holds the first run's figures."""
    mismatch = load("mismatch", monkeypatch)
    real_run_once, runs = mismatch.run_once, []

    def run_once(protocol, lab, root):
        runs.append(protocol.method.name)
        if len(runs) > 1:
            raise KeyboardInterrupt
        return real_run_once(protocol, lab, root)

    monkeypatch.setattr(mismatch, "run_once", run_once)
    saved = tmp_path / "figures.json"
    monkeypatch.setattr("sys.argv", ["mismatch.py", "--systems", "crossbar", "--presets", "realistic", "--seeds", "1",
                                     "--epochs", "1", "--json", str(saved)])
    with pytest.raises(KeyboardInterrupt):
        mismatch.main()
    figures = json.loads(saved.read_text())
    assert list(figures) == ["crossbar/realistic"]
    assert {variant: len(runs) for variant, runs in figures["crossbar/realistic"].items()} == {
        "insilico": 1, "pat": 0, "pat_oracle": 0, "ideal": 0}
    assert 0 < figures["crossbar/realistic"]["insilico"][0]["device_accuracy"] <= 1


def test_the_transport_benchmark_starts_its_clock_once_the_device_process_runs(monkeypatch, tmp_path):
    """The clock started as the writer process was forked, so each timing held the child's start (a fork of the
    benchmark's process: 1.2–1.5 ms, the median of 30, on this project's machine), about a fifth of a timing of 50
    replies of 100 B. Here the child is slow to start: the clock must not start before it runs."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork (not on Windows)")
    import tty  # POSIX's

    transports = load("transports", monkeypatch)
    running, armed = tmp_path / "running", [True]

    def slow_start() -> None:  # in the forked child, before the benchmark's code runs in it
        if armed[0]:
            time.sleep(0.2)
            running.touch()

    os.register_at_fork(after_in_child=slow_start)
    clock: list[bool] = []  # at each reading of the clock: was the child running?
    monkeypatch.setattr(transports, "time", SimpleNamespace(perf_counter=lambda: clock.append(running.exists()) or 0.0))
    master, slave = os.openpty()
    try:
        tty.setraw(master)
        tty.setraw(slave)

        def read() -> None:
            got = b""
            while not got.endswith(b"\n"):
                got += os.read(slave, 64)

        transports.timed(read, master, b"0123456789\n", 1)
    finally:
        armed[0] = False
        os.close(master)
        os.close(slave)
    assert clock == [True, True]


@pytest.fixture
def bench_lab(tmp_path):
    """A copy of lab.yaml whose function generator is a real instrument on the network (a socket listening on
    127.0.0.1 that answers nothing), as on a bench: (the folder holding it, the listening socket)."""
    server = socket.create_server(("127.0.0.1", 0))
    lab = (BENCHMARKS.parent / "lab.yaml").read_text(encoding="utf-8")
    emulated = "  awg:\n    driver: keysight_33500b\n    emulate: true\n"
    assert emulated in lab
    real = f'  awg:\n    driver: keysight_33500b\n    resource: "TCPIP::127.0.0.1::{server.getsockname()[1]}::SOCKET"\n'
    (tmp_path / "lab.yaml").write_text(lab.replace(emulated, real), encoding="utf-8")
    server.setblocking(False)
    yield tmp_path, server
    server.close()


def assert_never_connected(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()[0].close()


def test_the_simulator_benchmark_leaves_a_labs_real_instruments_alone(monkeypatch, capsys, bench_lab):
    """It measures the simulated systems only, but opened the whole lab file: on a bench, it connected to the real
    instruments too (and stopped with a traceback where one was off or in use)."""
    folder, server = bench_lab
    simulators = load("simulators", monkeypatch)
    monkeypatch.setattr(simulators, "ROOT", folder)
    monkeypatch.setattr("sys.argv", ["simulators.py", "--systems", "crossbar", "--presets", "ideal", "--repeats", "1",
                                     "--batch", "4", "--singles", "1"])
    simulators.main()
    [row] = capsys.readouterr().out.splitlines()[2:]
    assert row.split()[:3] == ["crossbar", "ideal", "4"]
    assert_never_connected(server)


def test_the_mismatch_benchmarks_lab_leaves_the_other_instruments_alone(monkeypatch, bench_lab):
    """A run's lab was the whole lab file, its real instruments connected at every run of the benchmark."""
    folder, server = bench_lab
    mismatch = load("mismatch", monkeypatch)
    protocol = mismatch.YamlDocument.read(BENCHMARKS.parent / mismatch.PROTOCOLS["crossbar"]).validate(
        mismatch.Protocol)
    monkeypatch.setattr(mismatch, "ROOT", folder)
    with mismatch.lab_for(protocol, "harsh", 2) as lab:
        assert lab.config.worlds["crossbar_chip"].preset == "harsh" and lab.config.worlds["crossbar_chip"].seed == 1002
        assert lab.system("crossbar").n_out == 32
    assert_never_connected(server)



@pytest.mark.parametrize("script, arguments", [
    ("simulators", ["--systems", "crossbar", "--presets", "ideal", "--repeats", "1", "--batch", "4", "--singles", "1"]),
    ("mismatch", ["--overhead-only", "--overhead-repeats", "1", "--systems", "crossbar"]),
    ("transports", ["--sizes", "100", "--replies", "1", "--repeats", "1"]),
])
def test_a_reader_that_quits_early_ends_a_benchmark_quietly(script, arguments):
    """``benchmarks/simulators.py | head -3`` ended in a `BrokenPipeError` traceback once the reader had quit. Now it
    stops without a word, with exit status 1, as hil's commands do. Here the reader has quit before the first line."""
    import subprocess

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *arguments], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (1, "")
