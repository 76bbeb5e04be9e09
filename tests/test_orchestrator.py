"""The main job end to end on a simulated crossbar: run, kill -9 and resume, Ctrl-C, protocol errors."""

import contextlib
import errno
import functools
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest
import torch
import yaml
from rich.console import Console

import hil.store as store_module
from drivers.keithley2450 import Keithley2450
from hil.errors import ConfigError, DeviceError, HilError, Terminated
from hil.instruments import SourceMeter
from hil.orchestrator import STEPS, _progress, run_protocol
from hil.protocol import check_protocol
from hil.store import RunFileError, RunStore, held, list_runs, resume_command
from hil.systems.base import PhysicalSystem, PhysicsModel
from hil.systems.crossbar import CrossbarSystem
from tests.test_store import held_in_another_process, strict_json

REPO = Path(__file__).resolve().parents[1]

PROTOCOL = {
    "name": "resume-test",
    "lab": str(REPO / "lab.yaml"),
    "system": "crossbar",
    "seed": 3,
    "dataset": {"name": "digits", "limit": 600},
    "model": {"layers": [{"physical": {}}, {"linear": {"out_features": 10}}]},
    "twin": {"collect": {"thetas": 6, "inputs_per_theta": 64, "repeats": 2, "repeat_thetas": 2},
             "fit": {"epochs": 5, "patience": 3}, "fidelity": {"directions": 1, "repeats": 1}},
    "method": {"name": "pat", "settings": {"refine_every": 4}},
    "training": {"epochs": 4, "batch_size": 32, "lr": 0.01, "physical_lr": 0.02},
}


def write_protocol(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "protocol.yaml"
    output = {"root": str(tmp_path / "runs"), **changes.pop("output", {})}
    path.write_text(yaml.safe_dump({**PROTOCOL, **changes, "output": output}))
    return path


def final(store: RunStore) -> dict:
    events = store.events()
    return next(e for e in events if e["kind"] == "evaluated")


def comparable(events: list[dict]) -> list[tuple]:
    """Event kinds and their figures, without wall times and resume bookkeeping."""
    skip = {"seq", "time", "wall_s"}
    return [(e["kind"], json.dumps({k: v for k, v in e.items() if k not in skip}, sort_keys=True))
            for e in events if e["kind"] not in ("run_resumed",)]


def as_from_a_terminal() -> None:
    """Give a child the signal dispositions a terminal gives, whatever the suite inherited (`nohup make test`
    ignores SIGHUP, which hil then keeps ignored, as it should)."""
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def start(args: list[str], **environment: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **environment},
                            preexec_fn=as_from_a_terminal)


def wait_for_batch(runs: Path, epoch: int, batch: int, process: subprocess.Popen) -> Path:
    """The run folder once the run in ``process`` has logged ``batch`` of ``epoch``; only whole lines are read (the
    last may be half written, as the run writes it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for log in runs.glob("*/events.jsonl"):
            for line in log.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n") and b'"kind": "batch"' in line:
                    event = json.loads(line)
                    if event["epoch"] == epoch and event["batch"] >= batch:
                        return log.parent
        if process.poll() is not None:
            raise AssertionError(f"the run ended before epoch {epoch}: {process.stderr.read()}")
        time.sleep(0.002)
    raise AssertionError("the run never reached the batch")


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # where `start` runs hil: the reference logs the same working directory
    protocol = write_protocol(tmp_path)
    reference = run_protocol(protocol, show_progress=False, output_root=tmp_path / "reference")
    process = start(["run", "--quiet", str(protocol)])
    run = wait_for_batch(tmp_path / "runs", epoch=1, batch=5, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resumed = run_protocol(resume=run, show_progress=False)
    assert final(resumed) | {"seq": 0, "time": 0} == final(reference) | {"seq": 0, "time": 0}
    events = resumed.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # nothing lost, nothing twice
    assert comparable(events) == comparable(reference.events())
    assert sum(e["kind"] == "run_resumed" for e in events) == 1
    assert (run / "events.discarded.jsonl").exists()  # the killed partial epoch is kept aside, not lost
    checkpoints = [RunStore.open(path) for path in (run, reference.path)]
    histories = [store.load_checkpoint()["history"] for store in checkpoints]
    for store in checkpoints:
        store.close()
    assert histories[0] == histories[1] and len(histories[0]) == PROTOCOL["training"]["epochs"]
    for name in ("learning_curves.png", "twin_fit.png", "confusion.png", "summary.md"):
        assert (run / "report" / name).stat().st_size > 0


def test_first_ctrl_c_saves_and_exits_then_resume_finishes(tmp_path: Path) -> None:
    protocol = write_protocol(tmp_path, training={**PROTOCOL["training"], "epochs": 3})
    reference = run_protocol(protocol, show_progress=False, output_root=tmp_path / "reference")
    process = start(["run", "--quiet", str(protocol)])
    run = wait_for_batch(tmp_path / "runs", epoch=0, batch=3, process=process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "resume with: hil run --resume" in stderr and "Traceback" not in stderr
    store = RunStore.open(run)
    assert store.events()[-1]["kind"] == "run_interrupted"
    saved = store.load_checkpoint()
    assert saved["epoch"] == 0 and saved["batch"] >= 3  # stopped mid-epoch, at a batch boundary
    store.close()
    resumed = start(["run", "--quiet", "--resume", str(run)])
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert final(RunStore.open(run))["device_accuracy"] == final(reference)["device_accuracy"]


def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    protocol = write_protocol(tmp_path, training={**PROTOCOL["training"], "epochs": 50})
    process = start(["run", "--quiet", str(protocol)])
    wait_for_batch(tmp_path / "runs", epoch=0, batch=1, process=process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)  # may arrive merged with the first: then it stops after saving
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr


@pytest.mark.parametrize(("signum", "status", "by"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_or_sighup_stops_a_run_at_once_safely_and_says_how_to_resume(
        tmp_path: Path, signum: int, status: int, by: str) -> None:
    protocol = write_protocol(tmp_path, training={**PROTOCOL["training"], "epochs": 50})
    process = start(["run", "--quiet", str(protocol)])
    run = wait_for_batch(tmp_path / "runs", epoch=0, batch=1, process=process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status and "Traceback" not in stderr, stderr  # once, exit 0 here: its stderr says
    assert f"stopped at once by {by}; instruments were put in their safe state; resume from the last checkpoint " \
           f"with: hil run --resume {run}" in stderr
    store = RunStore.open(run)
    assert store.events()[-1]["kind"] == "run_interrupted" and store.events()[-1]["at_once"] == by
    store.close()


@pytest.mark.parametrize(("change", "expected"), [
    ({"colour": "red"}, r"protocol.yaml:\d+: colour: unknown key 'colour'"),
    ({"system": "nowhere"}, r"protocol.yaml:\d+: system: no system named 'nowhere'"),
    ({"method": {"name": "magic"}}, r"protocol.yaml:\d+: method.name: unknown method 'magic'"),
    ({"method": {"name": "pat", "settings": {"refine_evry": 2}}},
     r"protocol.yaml:\d+: method.settings.refine_evry: unknown key"),
    # refinement settings without refine_every were ignored: the run trained without the refinement they asked for
    ({"method": {"name": "pat", "settings": {"refine_window": 16}}},
     r"protocol.yaml:\d+: method.settings: refine_window sets the twin's online refinement, which refine_every 0 "
     r"leaves off; give refine_every \(the training steps between refinements\), or leave it out$"),
    ({"method": {"name": "pat", "settings": {"refine_lr": 0.01, "refine_steps": 3}}},
     r"protocol.yaml:\d+: method.settings: refine_steps and refine_lr set the twin's online refinement, .* or leave "
     r"them out$"),
    ({"model": {"layers": [{"linear": {"out_features": 10}}, {"physical": {}}]}},
     r"protocol.yaml:\d+: model.layers.1: the physical layer on 'crossbar' takes 64 inputs"),
    ({"training": {"epochs": 0}}, r"protocol.yaml:\d+: training.epochs: Input should be greater than or equal to 1"),
    ({"training": {"epochs": True}}, r"protocol.yaml:\d+: training.epochs: expected a number \(got True\)$"),
    ({"twin": {**PROTOCOL["twin"], "kind": "neural", "hidden": [True, 8]}},
     r"protocol.yaml:\d+: twin.hidden.0: expected a number \(got True\)$"),
    ({"twin": {"kind": "neural", "hidden": [-4]}}, r"protocol.yaml:\d+: twin.hidden.0: Input should be greater than "
                                                   r"or equal to 1"),
    ({"twin": {"kind": "physics", "hidden": [16]}}, r"protocol.yaml:\d+: twin: hidden sets the layers of a neural or "
                                                    r"residual twin; a physics twin has none"),
    # a neural twin fitted for no epoch was the random network it starts as, trained through, flagged only in the report
    ({"twin": {**PROTOCOL["twin"], "kind": "neural", "fit": {"epochs": 0}}},
     r"protocol.yaml:\d+: twin: fit.epochs 0 leaves a neural twin the random network it starts as; give fit.epochs of "
     r"1 or more, or a physics or residual twin, which start from the physics$"),
    ({"twin": {**PROTOCOL["twin"], "collect": {"thetas": 2, "inputs_per_theta": 1, "repeat_thetas": 1}}},
     r"protocol.yaml:\d+: twin: the fit's held-out part would be one measurement, whose output variance is undefined; "
     r"raise collect.inputs_per_theta or collect.thetas$"),
    ({"twin": {**PROTOCOL["twin"], "collect": {"thetas": 4}, "fit": {"validation_fraction": 0.9}}},
     r"protocol.yaml:\d+: twin: fit.validation_fraction 0.9 holds out 4 of the 4 θ groups \(collect.thetas\), leaving "
     r"none to fit; lower it or collect more thetas$"),
    ({"training": {"epochs": 1, "lr": 1e300}}, r"protocol.yaml:\d+: training.lr: Input should be less than or equal "
                                               r"to 1000000"),
    ({"twin": {"fit": {"lr": 1e300}}}, r"protocol.yaml:\d+: twin.fit.lr: Input should be less than or equal to"),
    ({"twin": {**PROTOCOL["twin"], "fidelity": {"step": 0.5}}},  # the point at the bounds' centre: a cosine of 0
     r"protocol.yaml:\d+: twin.fidelity.step: Input should be less than or equal to 0.25"),
    ({"training": {"epochs": 1, "batch_size": 2**63}}, r"protocol.yaml:\d+: training.batch_size: Input should be "
                                                       r"less than or equal to 9223372036854775807"),
    ({"model": {"layers": [{"physical": {}}, {"linear": {"out_features": 2**64}}]}},
     r"protocol.yaml:\d+: model.layers.1.linear.out_features: Input should be less than or equal to "
     r"9223372036854775807"),
    ({"twin": {"kind": "neural", "hidden": [2**64]}}, r"protocol.yaml:\d+: twin.hidden.0: Input should be less than or "
                                                      r"equal to 9223372036854775807"),
    ({"evaluation": {"batch_size": 2**64}}, r"protocol.yaml:\d+: evaluation.batch_size: Input should be less than or "
                                            r"equal to 9223372036854775807"),
    ({"training": {"epochs": 1, "batch_size": 1},
      "model": {"layers": [{"physical": {}}, {"batchnorm": True}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: training.batch_size: a batchnorm layer needs batches of at least 2 samples"),
    ({"model": {"layers": [{"physical": {"system": "optical"}}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers.0.physical.system: method 'pat' trains a physical layer through a twin, and a "
     r"run fits one, to the protocol's system 'crossbar'; 'optical' would have none"),
    # a key misspelt in a layer, a model that is one member of a union (or None): the keys it has are listed
    ({"model": {"layers": [{"physical": {"sytem": "crossbar"}}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers.0.physical.sytem: unknown key 'sytem'; allowed: system, theta_init, input_map$"),
    ({"model": {"layers": [{"physical": {}}, {"linear": {"out_feature": 10}}]}},
     r"protocol.yaml:\d+: model.layers.1.linear.out_feature: unknown key 'out_feature'; allowed: out_features, bias "
     r"\(and 1 more problem\)$"),  # out_features, missing
    ({"model": {"layers": [{"physical": {"system": "crosbar"}}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers.0.physical.system: no system named 'crosbar'; the lab has: optical, "),
    ({"model": {"layers": [{"physical": {}}, {"batchnorm": False}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers.1: batchnorm: false is no layer; write batchnorm: true, or remove the layer"),
    ({"model": {"layers": [{"physical": {}}, {"linear": {"out_features": 10**12}}]}},
     r"protocol.yaml:\d+: model.layers.1.linear.out_features: a 32 × 1000000000000 linear layer does not fit in "
     r"memory"),
    ({"twin": {**PROTOCOL["twin"], "kind": "residual", "hidden": [10**12]}},  # was found after calibrate and collect
     r"protocol.yaml:\d+: twin.hidden: a residual twin of hidden widths \[1000000000000\] does not fit in memory$"),
    ({"dataset": {"name": "digits", "test_fraction": 0.9999}},
     r"protocol.yaml:\d+: dataset.test_fraction: test_fraction 0.9999 holds out every sample of digits; give a "
     r"smaller one$"),
    ({"dataset": {"name": "digits", "test_fraction": 0.9995},
      "model": {"layers": [{"physical": {}}, {"batchnorm": True}, {"linear": {"out_features": 10}}]}},
     r"dataset.test_fraction: the data leave 1 training sample\(s\); the model needs at least 2 \(a batch norm\)"),
    ({"output": {"name": "x" * 300}}, r"protocol.yaml:\d+: output.name: String should have at most 200 characters"),
    ({"dataset": {"name": "digits", "limit": 1}}, r"protocol.yaml:\d+: dataset.limit: Input should be greater than "
                                                  r"or equal to 2"),
    ({"model": {"layers": [{"linear": {"out_features": 64}}, {"physical": {}}, {"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers.1.physical.input_map: the physical layer on 'crossbar' takes inputs within "
     r"-1..1 as they are \(input_map: none\), but a linear layer before it gives any value; write input_map: "
     r"sigmoid, or put a tanh or sigmoid activation before it$"),
    ({"model": {"layers": [{"linear": {"out_features": 64}}, {"activation": "relu"}, {"physical": {}},
                           {"linear": {"out_features": 10}}]}},
     r"model.layers.2.physical.input_map: .* but a relu activation before it gives any value"),
    ({"system": "optical", "model": {"layers": [{"linear": {"out_features": 64}}, {"activation": "tanh"},
                                                {"physical": {}}, {"linear": {"out_features": 10}}]}},
     r"model.layers.2.physical.input_map: the physical layer on 'optical' takes inputs within 0..1 as they are "
     r"\(input_map: none\), but a tanh activation before it gives values in -1..1; write input_map: sigmoid, or put a "
     r"sigmoid activation before it$"),
    ({"model": {"layers": [{"physical": {}}, {"linear": {"out_features": 5}}]}},
     r"protocol.yaml:\d+: model.layers: the model ends with 5 outputs; the data set has 10 classes$"),
    # a model without a physical layer was measured for a twin it never used, its digital accuracy reported as the
    # device's
    ({"model": {"layers": [{"linear": {"out_features": 10}}]}},
     r"protocol.yaml:\d+: model.layers: the model has no physical layer: nothing it computes runs on 'crossbar', yet "
     r"the run would measure it for a twin and report the model's accuracy as the device's; add a layer "
     r"`physical: \{\}`$"),
    # a window of one batch of one row never held the two rows a refinement scales its errors by: it ran only where an
    # epoch's last row joined the batch before
    ({"method": {"name": "pat", "settings": {"refine_every": 1, "refine_window": 1}},
      "training": {**PROTOCOL["training"], "batch_size": 1}},
     r"protocol.yaml:\d+: method.settings.refine_window: refine_window 1 keeps the device calls of one training batch "
     r"of 1 row \(training.batch_size\), one measurement, .*; set refine_window to 2 or more$"),
])
def test_bad_protocols_fail_with_file_line_and_field(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        check_protocol(write_protocol(tmp_path, **change))


class CrossbarOfAMisnamedHiddenValue(CrossbarSystem):
    """A system of one's own whose mapping of the world's hidden values names one its physics model lacks."""

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        return {**super().hidden_calibration(world), "column_gains": torch.ones(self.n_out)}


def test_an_oracle_twin_whose_hidden_values_the_model_lacks_is_refused_before_the_run(tmp_path: Path) -> None:
    """A hidden value the physics model has no tensor for passed hil check, and stopped hil run after its calibration,
    in a run folder, with "CrossbarModel.column_gains is not a tensor of the model", which said neither which
    system nor what to do."""
    refused_before_the_run(tmp_path, CrossbarOfAMisnamedHiddenValue, "oracle", (
        r"protocol\.yaml:\d+: twin\.kind: system 'crossbar': the simulated world's hidden value 'column_gains' is no "
        r"tensor of CrossbarModel \(its tensors: .*\); name it as the model's parameter in the world's "
        r"hidden_parameters\(\), or map it in the system's hidden_calibration\(world\)$"))


def refused_before_the_run(tmp_path: Path, system: type, twin_kind: str, expected: str) -> None:
    """The default lab with its crossbar system of class ``system``, and a protocol with a twin of ``twin_kind``:
    `hil check` and `hil run` both refuse it (``expected``), and no run folder is made."""
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "lab.yaml").read_text().replace("kind: crossbar\n", f"kind: {__name__}:{system.__name__}\n"))
    protocol = write_protocol(tmp_path, lab=str(lab), twin={**PROTOCOL["twin"], "kind": twin_kind})
    for attempt in (lambda: check_protocol(protocol), lambda: run_protocol(protocol, show_progress=False)):
        with pytest.raises(ConfigError, match=expected):
            attempt()
    assert not (tmp_path / "runs").exists()


class CrossbarOfAModelOfOneOutput(CrossbarSystem):
    """A system of one's own whose physics model computes its first output alone."""

    def physics_model(self) -> PhysicsModel:
        from tests.test_twin import FirstOutputOnly

        return FirstOutputOnly(super().physics_model())


@pytest.mark.parametrize("kind", ["physics", "residual"])
def test_a_physics_model_of_another_shape_than_the_device_is_refused_before_the_run(tmp_path: Path,
                                                                                    kind: str) -> None:
    """Such a model was found only once the twin was first called, after the device's data were collected (minutes
    of a bench's time); hil check said OK."""
    refused_before_the_run(tmp_path, CrossbarOfAModelOfOneOutput, kind, (
        r"protocol\.yaml:\d+: twin\.kind: system 'crossbar': its physics model \(tests\.test_twin\.FirstOutputOnly\) "
        r"returned shape \(2, 1\) for 2 inputs; expected \(2, 32\), as the device's outputs: fix its forward$"))


def test_hil_check_on_a_protocol(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(write_protocol(tmp_path))],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "OK — pat on 'crossbar'" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        name: x
        system: crossbar
        method: {name: pat}
        dataset: {name: digits}
        model: {layers: [{physical: {}}, {linear: {out_features: 10}}]}
        training: {epochs: two}
    """))
    result = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(bad)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{bad}:7: training.epochs" in result.stderr


def test_digital_layers_before_a_physical_layer_and_an_insilico_run(tmp_path: Path) -> None:
    protocol = write_protocol(
        tmp_path, name="hybrid", method={"name": "insilico"}, dataset={"name": "digits", "limit": 300},
        model={"layers": [{"linear": {"out_features": 64}}, {"physical": {"input_map": "sigmoid"}},
                          {"batchnorm": True}, {"linear": {"out_features": 10}}]},
        training={"epochs": 2, "batch_size": 32, "lr": 0.02})
    store = run_protocol(protocol, show_progress=False, output_root=tmp_path / "out")
    evaluated = final(store)
    assert evaluated["device_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert abs(evaluated["device_accuracy"] - evaluated["twin_accuracy"]) < 0.2


def test_a_checkpoint_and_the_device_time_hold_every_system_the_model_drives(tmp_path: Path) -> None:
    """A layer on a second system (for a method that needs no twin): its bench state is checkpointed too, so a
    restore replays its noise, and its device time and calls count in the run's."""
    import torch

    from hil.lab import Lab
    from hil.nn import physical_layers
    from hil.orchestrator import Run
    from hil.protocol import build_model, load_protocol

    with Lab.load(REPO / "lab.yaml") as lab:
        oscillator = lab.system("oscillator")
        path = write_protocol(tmp_path, model={"layers": [
            {"physical": {}}, {"linear": {"out_features": oscillator.n_in}}, {"activation": "tanh"},
            {"physical": {"system": "oscillator"}}, {"linear": {"out_features": 10}}]})
        protocol, document = load_protocol(path)
        run = Run(protocol, lab, RunStore.create(tmp_path, "two-systems"), document, show_progress=False)
        run.system, run.model = lab.system("crossbar"), build_model(protocol, lab, 64, 10)  # as prepare() would
        saved = run._bench_state()
        assert set(saved["systems"]) == {"crossbar", "oscillator"}
        assert {"crossbar_chip", "oscillators"} <= set(saved["worlds"])
        second = physical_layers(run.model)[1]
        x = torch.rand(4, oscillator.n_in, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            first = second(x)
            run._restore_bench(saved)
            assert torch.equal(second(x), first)
            run.model(torch.rand(3, 64, generator=torch.Generator().manual_seed(1)))
        # the run's device time and calls are both systems' (its events said the protocol's system's alone)
        crossbar = lab.system("crossbar")
        assert oscillator.device_time_s > 0 and crossbar.device_time_s > 0
        assert run.device_time_s() == crossbar.device_time_s + oscillator.device_time_s
        assert run.device_calls() == crossbar.calls + oscillator.calls
        run.store.close()


SMALL = {"dataset": {"name": "digits", "limit": 200},
         "twin": {"collect": {"thetas": 4, "inputs_per_theta": 32, "repeats": 2, "repeat_thetas": 2},
                  "fit": {"epochs": 2}, "fidelity": {"directions": 1, "repeats": 1}},
         "training": {"epochs": 1, "batch_size": 64, "lr": 0.01}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("finished")
    return run_protocol(write_protocol(folder, **SMALL), show_progress=False).path


def test_an_epochs_device_time_counts_its_own_test_pass(finished_run: Path) -> None:
    """The epoch event's device time is the device's work so far, the epoch's test pass on the device included: it
    left that pass out, so that it was counted in the next epoch's figure, and the last one in no epoch's."""
    store = RunStore.open(finished_run)
    events = store.events()
    store.close()
    epochs = [e for e in events if e["kind"] == "epoch"]
    train = next(e for e in events if e["kind"] == "step_finished" and e["step"] == "train")
    assert "device_accuracy" in epochs[-1]  # the epoch's test pass ran on the device
    assert epochs[-1]["device_time_s"] == train["device_time_total_s"]


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def files(run: Path) -> dict[str, bytes]:
    """Every file of a run and its bytes, but the lock (which names the process that opened the run last)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def keep_lines(log: Path, count: int) -> None:
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:count]))


def drop_line(log: Path, number: int) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:number - 1] + lines[number:]))


def damage_line(log: Path, number: int) -> None:
    lines = log.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1][:20]
    log.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda run: damage_line(run / "events.jsonl", 6), r"events.jsonl:6: damaged line"),
    (lambda run: (run / "checkpoint.pt").unlink(), r"checkpoint.pt: checkpoint missing; resuming would redo"),
    (lambda run: (run / "checkpoint.pt").write_bytes(b""), r"checkpoint.pt: checkpoint unreadable"),
    (lambda run: (run / "data/twin_data.h5").write_bytes((run / "data/twin_data.h5").read_bytes()[:3000]),
     r"data/twin_data.h5: damaged or changed since the run wrote it \(its checksum differs\); nothing was changed"),
    (lambda run: flip_a_byte(run / "data/fidelity.h5"), r"data/fidelity.h5: damaged or changed since the run wrote"),
    (lambda run: (run / "data/evaluation.h5").unlink(), r"data/evaluation.h5: missing: the run wrote it; nothing was "
                                                        r"changed: restore it from a backup"),
    (lambda run: flip_a_byte(run / "checkpoint.pt"), r"checkpoint unreadable \(damaged: its checksum does not match\)"),
    (lambda run: keep_lines(run / "events.jsonl", 3), r"events.jsonl: events before the checkpoint \(1 to \d+\) are "
                                                      r"missing; nothing was changed"),
    (lambda run: (run / "events.jsonl").write_bytes(b""), r"events before the checkpoint \(1 to \d+\) are missing"),
    (lambda run: drop_line(run / "events.jsonl", 4), r"events before the checkpoint \(1 to \d+\) are missing"),
    (lambda run: edit(run / "protocol.yaml", "limit: 200", "limit: 300"),
     r": protocol.yaml changed since the run started; a run resumes with the files it started with"),
    (lambda run: (run / "lab.yaml").write_text((run / "lab.yaml").read_text() + "\n# edited\n"),
     r": lab.yaml changed since the run started"),
])
def test_resuming_a_damaged_run_is_a_clear_error_that_changes_nothing(finished_run: Path, tmp_path: Path, damage,
                                                                      expected: str) -> None:
    run = copy_of(finished_run, tmp_path)
    damage(run)
    before = files(run)
    with pytest.raises(RunFileError, match=expected) as refused:
        run_protocol(resume=run, show_progress=False)
    assert files(run) == before
    assert not held(run) and refused.value  # not left locked, even while the error is held (a caller that retries)


def test_a_run_whose_event_log_was_lost_is_told_so_not_that_it_is_no_run_folder(finished_run: Path,
                                                                                tmp_path: Path) -> None:
    """A run folder whose events.jsonl a disk error or a cleanup lost was 'not a run folder (no events.jsonl)' to a
    resume and to hil report, which said nothing of the log nor what to do."""
    run = copy_of(finished_run, tmp_path)
    (run / "events.jsonl").unlink()
    before = files(run)
    said = rf"^{re.escape(str(run / 'events.jsonl'))}: missing \(the run folder holds its protocol\.yaml, written " \
        r"after it\); nothing was changed: restore it from a backup, or start a new run$"
    with pytest.raises(RunFileError, match=said):
        run_protocol(resume=run, show_progress=False)
    with pytest.raises(RunFileError, match=said):
        RunStore.open(run)  # as hil report opens it
    assert files(run) == before


def test_resuming_keeps_the_bytes_of_a_torn_last_line(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    log = run / "events.jsonl"
    log.write_bytes(log.read_bytes()[:-30])  # a crash in the middle of writing the last event
    original = log.read_bytes()
    run_protocol(resume=run, show_progress=False)
    discarded = (run / "events.discarded.jsonl").read_bytes()
    assert discarded.endswith(original[original.rindex(b"\n") + 1:] + b"\n")  # the torn line, as it was
    kept = original[:len(original) + 1 - len(discarded)]
    assert kept + discarded == original + b"\n" and log.read_bytes().startswith(kept)  # every byte kept


def test_resuming_a_finished_run_changes_nothing(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    before = files(run)
    for _ in range(2):
        store = run_protocol(resume=run, show_progress=False)
        assert store.path == run and files(run) == before


def test_hil_run_resume_of_a_finished_run_says_in_one_line_that_nothing_ran(finished_run: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """It printed the run folder and report as a run that had just finished does, as if it had resumed the run."""
    from hil.cli import main

    run = copy_of(finished_run, tmp_path)
    before = files(run)
    finished = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished["time"]))
    assert main(["run", "--quiet", "--resume", str(run)]) == 0
    assert capsys.readouterr().out == (f"{run}: the run finished at {ended}; nothing to resume; its report: "
                                       f"{run / 'report' / 'summary.md'}\n")
    assert files(run) == before


def test_hil_run_resume_of_a_finished_run_says_when_it_finished_in_local_time(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The line that says nothing was resumed gives the time the run finished as the user's clock shows it: in
    India (UTC+5:30), not UTC."""
    from hil.cli import main

    run = copy_of(finished_run, tmp_path)
    finished = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        ended = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished["time"]))
        assert ended != time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(finished["time"]))
        assert main(["run", "--quiet", "--resume", str(run)]) == 0
    finally:
        monkeypatch.undo()
        time.tzset()
    assert capsys.readouterr().out.startswith(f"{run}: the run finished at {ended}; nothing to resume; ")


@pytest.mark.parametrize("edited", ["yesterday", 1e300, 1e18, 253402300800],
                         ids=["text", "beyond time_t", "beyond the OS", "year 10000"])
def test_hil_run_resume_of_a_finished_run_whose_end_time_was_edited_says_an_unknown_time(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edited: object) -> None:
    """A log edited by hand holds what it holds: a time that is no date is "an unknown time" in the one line that
    says nothing was resumed, not a traceback instead of it."""
    from hil.cli import main

    run = copy_of(finished_run, tmp_path)
    lines = (run / "events.jsonl").read_text().splitlines()
    finished = json.loads(lines[-1])
    (run / "events.jsonl").write_text("\n".join([*lines[:-1], json.dumps(finished | {"time": edited})]) + "\n")
    assert main(["run", "--quiet", "--resume", str(run)]) == 0
    assert capsys.readouterr().out == (f"{run}: the run finished at an unknown time; nothing to resume; its report: "
                                       f"{run / 'report' / 'summary.md'}\n")


def test_hil_report_writes_the_summary_the_run_wrote(finished_run: Path, tmp_path: Path) -> None:
    """The same figures, the wall time included: the run's report gives the wall time up to it, and so does a
    report written again later."""
    from hil.report import write_report

    run = copy_of(finished_run, tmp_path)
    written = (run / "report" / "summary.md").read_text()
    store = RunStore.open(run)
    try:
        assert write_report(store).read_text() == written
    finally:
        store.close()
    assert re.search(r"\| wall time to the report, s \| \d", written)


def test_hil_report_of_a_run_whose_report_recorded_no_wall_time_gives_the_whole_runs(finished_run: Path,
                                                                                      tmp_path: Path) -> None:
    from hil.report import write_report

    run = copy_of(finished_run, tmp_path)
    lines = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    for event in lines:
        if event["kind"] == "reported":
            del event["wall_s"]  # as a run written before the report recorded it
    (run / "events.jsonl").write_text("".join(json.dumps(event) + "\n" for event in lines))
    store = RunStore.open(run)
    try:
        summary = write_report(store).read_text()
    finally:
        store.close()
    assert f"| wall time, s | {lines[-1]['wall_s']:.3g} |" in summary and "to the report" not in summary


def test_a_run_killed_before_its_first_checkpoint_starts_over(finished_run: Path, tmp_path: Path) -> None:
    """The first checkpoint is written before any step, so such a run has only its run_started event."""
    run = copy_of(finished_run, tmp_path)
    for name in ("checkpoint.pt", "data", "twin", "report"):
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    log = run / "events.jsonl"
    started = log.read_bytes().split(b"\n")[0] + b"\n"
    log.write_bytes(started)
    store = run_protocol(resume=run, show_progress=False)
    assert (run / "events.discarded.jsonl").read_bytes() == started
    assert [e["kind"] for e in store.events()][-1] == "run_finished" and (run / "checkpoint.pt").exists()




def test_the_report_says_when_the_twin_fit_ran_out_of_epochs_while_still_improving(tmp_path: Path) -> None:
    """At SMALL's fit rate (0.02) neither of its 2 epochs beats the calibrated twin it starts from, which is kept
    (best_epoch -1); at 0.002, fitted on 4 of 8 θ groups, the second does."""
    twin = SMALL["twin"] | {"collect": SMALL["twin"]["collect"] | {"thetas": 8}, "fit": {"epochs": 2, "lr": 0.002}}
    run = run_protocol(write_protocol(tmp_path, **SMALL | {"twin": twin}), show_progress=False).path
    fitted = next(e for e in RunStore(run).events() if e["kind"] == "twin_fitted")
    assert fitted["converged"] is False and len(fitted["validation_loss"]) == 2 and fitted["best_epoch"] >= 0
    summary = (run / "report/summary.md").read_text()
    assert f"best held-out error at epoch {fitted['best_epoch'] + 1} of 2" in summary


def test_the_report_says_when_the_twin_fit_diverged_and_the_run_went_on_with_the_unfitted_twin(tmp_path: Path) -> None:
    """A fit whose held-out error is NaN at every epoch keeps the twin it started from; the report says so, rather
    than that more epochs would help."""
    run = run_protocol(write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"fit": {"epochs": 2, "lr": 1e6}}}),
                       show_progress=False).path
    fitted = next(e for e in RunStore(run).events() if e["kind"] == "twin_fitted")
    assert fitted["best_epoch"] == -1 and all(loss != loss for loss in fitted["validation_loss"])  # NaN
    summary = (run / "report/summary.md").read_text()
    assert ("**The twin fit diverged**: its held-out error was not a number at any of its 2 epochs, so the run went "
            "on with the twin it started from, unfitted; a lower `twin.fit.lr` would likely fit it.") in summary
    assert "more `twin.fit.epochs`" not in summary

@pytest.mark.parametrize("recorded", [True, False], ids=["held-out groups recorded", "twin of an earlier hil"])
def test_a_reused_twin_is_measured_on_the_groups_it_was_not_fitted_on(finished_run: Path, tmp_path: Path,
                                                                       recorded: bool) -> None:
    """A run of another seed splits the reused data differently: its held-out groups would include ones the twin
    was fitted on. Fidelity is measured on the source's held-out groups (recorded with the twin, or, for a twin
    saved without them, from the source run's seed and validation fraction)."""
    source = copy_of(finished_run, tmp_path / "source")
    spec = json.loads((source / "twin/twin.json").read_text())
    assert spec["held_out_groups"] == [2]  # 1 of 4 groups, by the source run's seed 3
    if not recorded:
        (source / "twin/twin.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "held_out_groups"}))
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
    store = run_protocol(protocol, seed=1, show_progress=False)  # seed 1 alone would hold out group 1
    source_data, _ = RunStore(source).load_arrays("data/twin_data.h5")
    measured, _ = RunStore(store.path).load_arrays("data/fidelity.h5")
    torch.testing.assert_close(measured["measured"], source_data["y"][[2]], rtol=0, atol=0)


def test_a_reused_twin_is_logged_by_the_path_protocol_yaml_records(finished_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """twin_loaded logged twin.from_run as written, relative to a working directory the log does not say at that
    line, where protocol.yaml records the absolute path."""
    copy_of(finished_run, tmp_path / "source")
    monkeypatch.chdir(tmp_path)
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": f"source/{finished_run.name}"}})
    store = run_protocol(protocol, show_progress=False)
    [loaded] = [e for e in store.events() if e["kind"] == "twin_loaded"]
    recorded = yaml.safe_load((store.path / "protocol.yaml").read_text())["twin"]["from_run"]
    assert loaded["source"] == recorded == str(tmp_path / "source" / finished_run.name)


def test_a_from_run_without_its_twin_or_data_is_refused_before_a_run_starts(finished_run: Path,
                                                                             tmp_path: Path) -> None:
    empty = RunStore.create(tmp_path, "empty")
    empty.close()
    no_data = copy_of(finished_run, tmp_path / "no-data")
    (no_data / "data/twin_data.h5").unlink()
    for k, (source, missing) in enumerate([(empty.path, "twin/ (a fitted twin) and no data/twin_data.h5 (its data)"),
                                           (no_data, "data/twin_data.h5 (its data)")]):
        protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
        where = rf"^{re.escape(str(protocol))}:\d+: twin\.from_run: "
        with pytest.raises(ConfigError, match=where + re.escape(f"{source} has no {missing};")):
            run_protocol(protocol, show_progress=False, output_root=tmp_path / f"runs-{k}")
        assert not (tmp_path / f"runs-{k}").exists()


def test_a_reused_run_is_read_without_taking_its_lock(finished_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The collect step opened twin.from_run's folder with its lock, for the instant of reading its log: of runs started
    together on one twin (a seed each, in parallel), one reaching its collect step in that instant found the folder
    open in another process and failed, after calibrating."""
    source = copy_of(finished_run, tmp_path / "source")
    locked: list[Path] = []
    hold = store_module._hold
    monkeypatch.setattr(store_module, "_hold", lambda path, *rest: locked.append(Path(path)) or hold(path, *rest))
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
    store = run_protocol(protocol, show_progress=False, output_root=tmp_path / "runs")
    assert locked == [store.path]


def test_a_from_run_open_in_another_process_is_refused_before_a_run_starts(finished_run: Path,
                                                                          tmp_path: Path) -> None:
    """The run found it at its collect step, after calibrating; hil check passed it. A run going on may be writing
    its twin as it is read."""
    source = copy_of(finished_run, tmp_path / "busy")
    with held_in_another_process(source):
        protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
        message = rf"^{re.escape(str(protocol))}:\d+: twin\.from_run: {re.escape(str(source))} is open in another hil "
        for attempt in (lambda: check_protocol(protocol),
                        lambda: run_protocol(protocol, show_progress=False, output_root=tmp_path / "runs")):
            with pytest.raises(ConfigError, match=message + r"process \(a run or a resume of it\); wait for it to end, "
                                                             "or name another run$"):
                attempt()
        assert not (tmp_path / "runs").exists()


def test_a_from_run_whose_report_another_process_writes_is_reused(finished_run: Path, tmp_path: Path) -> None:
    """A run's report (``hil report`` of it) writes its report alone, not its twin or data: a run reusing them was
    refused as if the run were going on."""
    source = copy_of(finished_run, tmp_path / "reported")
    with held_in_another_process(source, reporting=True):
        protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
        check_protocol(protocol)


def test_a_resumed_run_whose_from_run_moved_is_told_to_put_it_back_not_to_name_another(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped before its collect step reads twin.from_run when resumed; with that run moved away, it was told
    to name another run, which a resume refuses (its protocol.yaml is pinned)."""
    from hil.orchestrator import Interrupted, Run

    source = copy_of(finished_run, tmp_path / "source")

    def stop(self: Run) -> None:
        raise KeyboardInterrupt("stopped before collect")

    with monkeypatch.context() as patch:
        patch.setattr(Run, "collect", stop)
        with pytest.raises(Interrupted):
            run_protocol(write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}}),
                         show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    source.rename(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(run / 'protocol.yaml'))}:\d+: twin\.from_run: "
                                          rf"{re.escape(str(source))} has no twin/ \(a fitted twin\) and no "
                                          r"data/twin_data\.h5 \(its data\); a resumed run reuses the run it started "
                                          r"from: put it back, or start a new run$"):
        run_protocol(resume=run, show_progress=False)
    (tmp_path / "elsewhere").rename(source)
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def test_from_run_errors_are_clear_and_refused_before_the_run(finished_run: Path, tmp_path: Path) -> None:
    torn_twin = copy_of(finished_run, tmp_path / "torn")
    (torn_twin / "twin/twin.pt").write_bytes((torn_twin / "twin/twin.pt").read_bytes()[:100])
    other_data = copy_of(finished_run, tmp_path / "other")
    RunStore(other_data).save_arrays("data/twin_data.h5", {"z": [1.0]})  # readable, but not twin data
    torn_data = copy_of(finished_run, tmp_path / "torn-data")
    (torn_data / "data/twin_data.h5").write_bytes((torn_data / "data/twin_data.h5").read_bytes()[:3000])
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(torn_twin)}})
    with pytest.raises(ConfigError, match=rf"twin.from_run: {re.escape(str(torn_twin / 'twin/twin.pt'))}: twin "
                                          r"unreadable \("):
        run_protocol(protocol, show_progress=False, output_root=tmp_path / "runs-torn")
    assert not (tmp_path / "runs-torn").exists()  # refused before a run folder is made
    cases = [(other_data, r"twin\.from_run: ", "data/twin_data.h5: not twin data: no x, theta, y, y_repeats array"),
             (torn_data, rf"^{re.escape(str(tmp_path / 'protocol.yaml'))}:\d+: twin\.from_run: ",  # not this run's
              "data/twin_data.h5: HDF5 data unreadable (")]
    for k, (source, where, recorded) in enumerate(cases):  # read as hil check reads them: before a run folder
        protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
        with pytest.raises(ConfigError, match=where + re.escape(str(source / recorded))):
            check_protocol(protocol)
        with pytest.raises(ConfigError, match=where + re.escape(str(source / recorded))) as caught:
            run_protocol(protocol, show_progress=False, output_root=tmp_path / f"runs-{k}")
        assert "start a new run" not in str(caught.value)
        assert not (tmp_path / f"runs-{k}").exists()


@pytest.mark.parametrize(("written", "started", "why"), [
    ((), False, "the run was stopped as its folder was made"),
    (("protocol.yaml",), False, "the run was stopped as its folder was made"),
    (("protocol.yaml",), True, "removed since the run started"),
])
def test_a_run_killed_as_its_folder_was_made_is_told_to_start_anew_on_resume(
        tmp_path: Path, written: tuple[str, ...], started: bool, why: str) -> None:
    """A kill between making the folder and writing the files a run starts from left a folder whose resume said only
    'protocol.yaml: file not found' (or lab.yaml's), with nothing on what to do."""
    store = RunStore.create(tmp_path / "runs", "p")
    for name in written:
        store.write_text(name, "name: p\n")
    if started:
        store.event("run_started")
    store.close()
    missing = "lab.yaml" if written else "protocol.yaml"
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / missing))}: missing \({why}\); nothing "
                                           r"ran that a resume could continue: start a new run from the protocol$"):
        run_protocol(resume=store.path, show_progress=False)


@pytest.mark.parametrize("lock", [False, True])
def test_a_run_killed_before_its_folder_held_a_log_is_told_to_start_anew_on_resume(tmp_path: Path, lock: bool) -> None:
    """A kill between making the folder and opening its log (RunStore.create) left an empty folder (or one with its
    lock alone), whose resume said only 'not a run folder (no events.jsonl)', with nothing on what to do."""
    folder = tmp_path / "runs" / "20260101-000000-p"
    folder.mkdir(parents=True)
    if lock:
        (folder / ".lock").write_text("12345\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(folder))} is not a run folder \(no events.jsonl\): it "
                                          r"holds no file of a run, as a run stopped as its folder was made leaves it; "
                                          r"nothing ran that a resume could continue: start a new run from the "
                                          r"protocol$"):
        run_protocol(resume=folder, show_progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ([".lock"] if lock else [])


def test_a_run_stopped_at_once_as_its_folder_is_made_leaves_no_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM between making the run folder and opening its log (RunStore.create) left an empty folder that no
    resume could continue, where one a moment later, as the starting files are written, is removed."""
    import hil.store

    def stopped(path: Path) -> NoReturn:
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(hil.store, "_scan_events", stopped)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_protocol(write_protocol(tmp_path), show_progress=False)
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_model_that_hil_check_refuses_is_refused_by_run_before_a_run_folder_is_made(tmp_path: Path) -> None:
    """A model of 9 outputs for the 10 digit classes was refused only once the run had made its folder and connected
    the instruments (a folder with a run_failed event), though nothing about it needs the device."""
    protocol = write_protocol(tmp_path, **SMALL | {"model": {"layers": [{"physical": {}},
                                                                         {"linear": {"out_features": 9}}]}})
    with pytest.raises(ConfigError, match=r"model\.layers: the model ends with 9 outputs; the data set has 10 "
                                          r"classes$"):
        run_protocol(protocol, show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_seed_given_to_run_protocol_is_validated_as_a_file_seed_is(tmp_path: Path) -> None:
    protocol = write_protocol(tmp_path, **SMALL)
    with pytest.raises(ConfigError, match="seed: -1: Input should be greater than or equal to 0"):
        run_protocol(protocol, seed=-1, show_progress=False, output_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def emulators_serving() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("TcpServer", "PtyServer") and t.is_alive()]


def test_a_run_folder_that_cannot_be_made_stops_the_emulators_the_lab_started(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "runs"
    not_a_folder.write_text("a file where the runs should go")
    with pytest.raises(ConfigError, match=r"protocol.yaml:\d+: output.root: cannot create a run folder in "):
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False, output_root=not_a_folder)
    assert emulators_serving() == []  # the default lab's 33500B and 2450 emulators are stopped


def test_a_last_batch_of_one_sample_joins_the_one_before_so_batch_norm_trains(tmp_path: Path) -> None:
    """65 training rows in batches of 64 would leave one row alone, which a batch norm cannot train on."""
    protocol = write_protocol(tmp_path, **SMALL | {
        "dataset": {"name": "digits", "limit": 65},
        "model": {"layers": [{"physical": {}}, {"batchnorm": True}, {"linear": {"out_features": 10}}]}})
    store = run_protocol(protocol, show_progress=False)
    batches = [e for e in store.events() if e["kind"] == "batch"]
    assert [e["batch"] for e in batches] == [1] and store.events()[-1]["kind"] == "run_finished"  # one batch


def test_a_run_connects_only_the_instruments_its_systems_use(tmp_path: Path) -> None:
    """A lab file lists the whole bench; an instrument the protocol does not use may be off (here: nothing
    listens at its address), and the run neither needs nor touches it."""
    lab = tmp_path / "lab.yaml"
    text = (REPO / "lab.yaml").read_text()
    awg = "  awg:\n    driver: keysight_33500b\n    emulate: true\n"
    assert awg in text
    off = '  awg:\n    driver: keysight_33500b\n    resource: "TCPIP::127.0.0.1::1::SOCKET"\n    timeout_s: 0.3\n'
    lab.write_text(text.replace(awg, off))
    store = run_protocol(write_protocol(tmp_path, **SMALL | {"lab": str(lab)}), show_progress=False)
    assert store.events()[-1]["kind"] == "run_finished"
    assert set(json.loads((store.path / "snapshot.json").read_text())["instruments"]) == {"crossbar"}


def test_the_run_folder_keeps_the_lab_text_that_was_loaded_not_an_edit_made_after(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """The lab file was read a second time to copy it into the run folder: an edit saved in between (here, as the
    lab is loaded) would be recorded as what ran."""
    import hil.protocol

    lab = tmp_path / "lab.yaml"
    text = (REPO / "lab.yaml").read_text()
    lab.write_text(text)
    load = hil.protocol.Lab.load

    def load_then_edit(path):
        loaded = load(path)
        lab.write_text(text.replace("seed: 0", "seed: 7"))  # another window saves an edit
        return loaded

    monkeypatch.setattr(hil.protocol.Lab, "load", load_then_edit)
    store = run_protocol(write_protocol(tmp_path, **SMALL | {"lab": str(lab)}), show_progress=False)
    assert (store.path / "lab.yaml").read_text() == text


def test_a_run_connects_the_instruments_of_every_system_its_layers_play_on(tmp_path: Path) -> None:
    from hil.lab import Lab
    from hil.protocol import instruments_used, load_protocol

    protocol, _ = load_protocol(write_protocol(tmp_path, model={"layers": [
        {"physical": {}}, {"physical": {"system": "optical", "input_map": "sigmoid"}}]}))
    assert sorted(instruments_used(protocol, Lab.load(REPO / "lab.yaml"))) == ["camera", "crossbar", "slm"]


def test_a_model_whose_first_layer_maps_its_inputs_takes_no_raw_bounded_inputs(tmp_path: Path) -> None:
    """Data fed through input_map: sigmoid are standardised, not scaled to the system's bounds."""
    from hil.lab import Lab
    from hil.protocol import first_physical_system, load_protocol

    layers = [{"physical": {"input_map": "sigmoid"}}, {"linear": {"out_features": 10}}]
    with contextlib.closing(Lab.load(REPO / "lab.yaml")) as lab:
        lab.build()
        assert first_physical_system(load_protocol(write_protocol(tmp_path, model={"layers": layers}))[0], lab) is None
        layers[0] = {"physical": {}}
        assert first_physical_system(load_protocol(write_protocol(tmp_path, model={"layers": layers}))[0], lab) is \
            lab.system("crossbar")


def test_a_model_is_built_with_the_same_weights_for_the_same_seed_whatever_was_drawn_before(tmp_path: Path) -> None:
    from hil.lab import Lab
    from hil.protocol import build_model, load_protocol

    protocol, _ = load_protocol(write_protocol(tmp_path, model={"layers": [{"linear": {"out_features": 10}}]}))
    weights = []
    for draws in (1, 2):
        torch.rand(draws)
        weights.append(build_model(protocol, Lab.load(REPO / "lab.yaml"), 64, 10)[0].weight)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_hil_check_refuses_a_from_run_twin_of_another_kind_size_or_too_large(finished_run: Path,
                                                                            tmp_path: Path) -> None:
    source = copy_of(finished_run, tmp_path)
    spec_path = source / "twin" / "twin.json"
    spec = json.loads(spec_path.read_text())
    narrow_lab = tmp_path / "narrow.yaml"
    narrow_lab.write_text((REPO / "lab.yaml").read_text().replace("settings: {n_in: 64, n_out: 32}",
                                                                  "settings: {n_in: 64, n_out: 16}"))
    cases = [({**spec, "system": "oscillator"}, {}, "is for a 'oscillator' system, not 'crossbar'; point "
                                                    "twin.from_run at a run on a crossbar system"),
             ({"kind": "neural", "system": "crossbar", "hidden": [10**9]}, {"kind": "neural"},
              "a neural twin with hidden sizes [1000000000] does not fit in memory"),
             (spec, {"lab": str(narrow_lab)}, "this twin's parameters do not fit system 'crossbar' (another size or "
                                              "settings)")]
    for twin_json, changes, message in cases:
        spec_path.write_text(json.dumps(twin_json))
        twin = SMALL["twin"] | {"from_run": str(source)} | ({"kind": changes["kind"]} if "kind" in changes else {})
        protocol = write_protocol(tmp_path, **SMALL | {"twin": twin} | ({"lab": changes["lab"]} if "lab" in changes
                                                                       else {}))
        with pytest.raises(ConfigError, match=rf"protocol.yaml:\d+: twin.from_run: .*{re.escape(message)}"):
            check_protocol(protocol)


def test_data_that_leave_no_training_rows_are_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    protocol = write_protocol(tmp_path, dataset={"name": "digits", "test_fraction": 0.9999})
    with pytest.raises(ConfigError, match=r"dataset.test_fraction: test_fraction 0.9999 holds out every sample"):
        run_protocol(protocol, show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_resumed_run_computes_with_the_torch_threads_it_started_with(tmp_path: Path) -> None:
    """Another thread count rounds differently and training drifts: a run resumed elsewhere would not end as it
    would have."""
    protocol = write_protocol(tmp_path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = run_protocol(protocol, show_progress=False, output_root=tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    process = start(["run", "--quiet", str(protocol)], OMP_NUM_THREADS="1")
    run = wait_for_batch(tmp_path / "runs", epoch=1, batch=5, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    torch.set_num_threads(2)
    try:
        resumed = run_protocol(resume=run, show_progress=False)
        assert torch.get_num_threads() == 2  # the caller's count is given back
    finally:
        torch.set_num_threads(threads)
    events = resumed.events()
    assert [e["torch_threads"] for e in events if e["kind"] in ("run_started", "run_resumed")] == [1, 1]
    assert final(resumed) | {"seq": 0, "time": 0} == final(reference) | {"seq": 0, "time": 0}


def test_a_twin_reused_through_a_run_of_another_seed_is_measured_on_the_groups_its_fit_held_out(
        finished_run: Path, tmp_path: Path) -> None:
    """A run reusing a twin saves it again with the groups it was not fitted on; a run reusing that one measures
    its fidelity on them, not on the split of the middle run's seed (which would hold out a group it was fitted on)."""
    source = copy_of(finished_run, tmp_path / "source")
    assert json.loads((source / "twin/twin.json").read_text())["held_out_groups"] == [2]  # the source's seed 3
    (tmp_path / "middle").mkdir()
    middle = run_protocol(write_protocol(tmp_path / "middle", **SMALL | {"twin": SMALL["twin"] | {
        "from_run": str(source)}}), seed=1, show_progress=False)
    assert json.loads((middle.path / "twin/twin.json").read_text())["held_out_groups"] == [2]
    (tmp_path / "last").mkdir()
    last = run_protocol(write_protocol(tmp_path / "last", **SMALL | {"twin": SMALL["twin"] | {
        "from_run": str(middle.path)}}), seed=1, show_progress=False)  # seed 1's own split holds out group 1
    source_data, _ = RunStore(source).load_arrays("data/twin_data.h5")
    measured, _ = RunStore(last.path).load_arrays("data/fidelity.h5")
    torch.testing.assert_close(measured["measured"], source_data["y"][[2]], rtol=0, atol=0)


def interrupted_after_fit_twin(protocol: Path, monkeypatch: pytest.MonkeyPatch, **options) -> Path:
    """Run ``protocol`` (written by `write_protocol`) until its fit_twin step is checkpointed, then stop it at once,
    as a kill would; returns its run folder."""
    from hil.orchestrator import Interrupted, Run

    def stop(self: Run) -> None:
        raise KeyboardInterrupt("stopped after fit_twin")

    with monkeypatch.context() as patch:
        patch.setattr(Run, "measure_fidelity", stop)
        with pytest.raises(Interrupted):
            run_protocol(protocol, show_progress=False, **options)
    [run] = (protocol.parent / "runs").iterdir()
    return run


def test_a_run_records_the_versions_it_ran_under_and_a_resume_under_others_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's figures depend on torch's version as on its thread count: run_started, run_resumed and the checkpoint
    record them, and a resume under other versions says so in the log (it recorded none)."""
    import importlib.metadata
    import platform

    import hil.orchestrator

    run = interrupted_after_fit_twin(write_protocol(tmp_path, **SMALL), monkeypatch)
    store = RunStore.open(run)
    [started] = [e for e in store.events() if e["kind"] == "run_started"]
    assert store.load_checkpoint()["versions"] == started["versions"]
    store.close()
    packages = ("hil", "torch", "numpy", "h5py")
    assert started["versions"] == {"python": platform.python_version(),
                                   **{name: importlib.metadata.version(name) for name in packages},
                                   "hil_commit": hil.orchestrator.source_commit(),
                                   "cpu": hil.orchestrator.processor()}
    later = {**started["versions"], "torch": "9.9.9"}
    monkeypatch.setattr(hil.orchestrator, "software_versions", lambda classes=(): later)
    with pytest.warns(UserWarning, match="resumes under other versions"):
        events = run_protocol(resume=run, show_progress=False).events()
    [resumed] = [e for e in events if e["kind"] == "run_resumed"]
    assert resumed["versions"] == later
    [warning] = [e for e in events if e["kind"] == "warning"]
    assert warning["message"] == (f"this run resumes under other versions than it ran with so far (torch "
                                  f"{started['versions']['torch']} → 9.9.9): its figures may differ from those of a "
                                  "run that was never stopped; to reproduce them, resume under the versions its "
                                  "run_started event names")


def test_a_run_records_the_code_of_its_plugin_driver_and_a_resume_with_it_changed_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench's own driver decides what was measured, yet a run recorded hil's code alone: a driver edited between a
    run and its resume left no trace. Each plugin module's code is recorded (its file's SHA-256, and its
    distribution's version where it was installed from one), and a resume under other code is warned of."""
    import hashlib

    import hil.orchestrator

    plugin = tmp_path / "recorded_plugin_driver.py"
    plugin.write_text("from simulators.crossbar import SimulatedCrossbar\n\n\n"
                      "class BenchCrossbar(SimulatedCrossbar):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lab = tmp_path / "lab.yaml"
    lab.write_text("worlds:\n  chip: {kind: memristor_crossbar, seed: 0}\n"
                   "instruments:\n  crossbar: {driver: 'recorded_plugin_driver:BenchCrossbar', world: chip}\n"
                   "systems:\n  crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, "
                   "settings: {n_in: 64, n_out: 32}}\n")
    run = interrupted_after_fit_twin(write_protocol(tmp_path, **SMALL, lab=str(lab)), monkeypatch)
    store = RunStore.open(run)
    [started] = [e for e in store.events() if e["kind"] == "run_started"]
    store.close()
    recorded = f"sha256 {hashlib.sha256(plugin.read_bytes()).hexdigest()[:12]}"
    assert {name: code for name, code in started["versions"].items() if "sha256" in code} == \
        {"recorded_plugin_driver": recorded}  # hil's own world and system are pinned by hil_commit
    plugin.write_text(f"{plugin.read_text()}\n# calibrated otherwise\n")  # the driver edited before the resume
    monkeypatch.setattr(hil.orchestrator, "plugin_code", hil.orchestrator.plugin_code.__wrapped__)  # read anew
    with pytest.warns(UserWarning, match="resumes under other versions"):
        events = run_protocol(resume=run, show_progress=False).events()
    [warning] = [e for e in events if e["kind"] == "warning"]
    edited = f"sha256 {hashlib.sha256(plugin.read_bytes()).hexdigest()[:12]}"
    assert f"(recorded_plugin_driver {recorded} → {edited})" in warning["message"]
    assert events[-1]["kind"] == "run_finished"


def test_a_run_reusing_a_twin_of_another_kind_resumes_with_that_twin_and_its_held_out_groups(
        finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reused twin keeps its own kind and sizes (whatever the protocol's twin.kind) and the θ groups it was not
    fitted on; a resumed run rebuilds it as the checkpoint recorded it, and measures its fidelity on those groups
    (not on the split of its own seed)."""
    from hil.lab import Lab
    from hil.store import save_twin
    from hil.twin.models import build_twin

    source = copy_of(finished_run, tmp_path / "source")
    with Lab.load(REPO / "lab.yaml") as lab:
        neural = build_twin("neural", lab.system("crossbar"), hidden=(8,))
    neural.spec["held_out_groups"] = [2]
    save_twin(neural, source / "twin")
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})  # physics
    run = interrupted_after_fit_twin(protocol, monkeypatch, seed=1)  # seed 1's own split holds out group 1
    resumed = run_protocol(resume=run, show_progress=False)
    assert resumed.events()[-1]["kind"] == "run_finished"
    source_data, _ = RunStore(source).load_arrays("data/twin_data.h5")
    measured, _ = RunStore(run).load_arrays("data/fidelity.h5")
    torch.testing.assert_close(measured["measured"], source_data["y"][[2]], rtol=0, atol=0)


def test_a_resumed_run_continues_with_the_random_state_of_its_checkpoint(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilding a neural twin to load the checkpoint into draws its initial weights from torch's generator: the
    generator must be restored after that, not before, or the resumed run goes on from another random state."""
    from hil.orchestrator import Run

    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"kind": "neural", "hidden": [8]}})
    run = interrupted_after_fit_twin(protocol, monkeypatch)
    store = RunStore.open(run)
    saved = store.load_checkpoint()["torch_rng"]
    store.close()
    seen = []
    execute = Run.execute
    monkeypatch.setattr(Run, "execute", lambda self: (seen.append(torch.get_rng_state()), execute(self))[1])
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"
    assert torch.equal(seen[0], saved)


def test_a_neural_twin_of_no_hidden_layers_is_fitted_as_written(tmp_path: Path) -> None:
    """``hidden: []`` (a linear twin) was taken for no hidden sizes given: the run fitted the default 256 × 256."""
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"kind": "neural", "hidden": []}})
    store = run_protocol(protocol, show_progress=False)
    assert json.loads((store.path / "twin" / "twin.json").read_text())["hidden"] == []
    weights = torch.load(store.path / "twin" / "twin.pt", weights_only=True)
    assert {name for name in weights if name.startswith("net.")} == {"net.0.weight", "net.0.bias"}


@pytest.mark.parametrize("before", [[{"activation": "tanh"}], [{"activation": "sigmoid"}], []])
def test_a_physical_layer_takes_inputs_as_they_are_where_they_are_within_its_bounds(tmp_path: Path,
                                                                                   before: list) -> None:
    """The crossbar takes inputs in -1..1: a tanh or sigmoid before it, or the data encoded into them, will do."""
    layers = [{"linear": {"out_features": 64}}, *before] if before else []
    protocol = write_protocol(tmp_path, model={"layers": [*layers, {"physical": {}}, {"linear": {"out_features": 10}}]})
    assert "OK" in check_protocol(protocol)


def test_a_run_whose_last_checkpoint_the_disk_refuses_is_not_finished_and_resumes_to_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last checkpoint is written in the background after the report: if the disk refuses it, the run ends as
    failed (not finished, with an error and a non-zero exit), and once the disk takes files again it resumes."""
    import hil.report

    write_report = hil.report.write_report

    def then_the_disk_refuses_the_checkpoint(store: RunStore, **options) -> Path:
        path = write_report(store, **options)
        (store.path / ".checkpoint.pt.tmp").mkdir()  # the checkpoint's temporary file cannot be made
        return path

    protocol = write_protocol(tmp_path, **SMALL)
    with monkeypatch.context() as patch:
        patch.setattr(hil.report, "write_report", then_the_disk_refuses_the_checkpoint)
        with pytest.raises(RunFileError, match=r"checkpoint.pt: cannot write \("):
            run_protocol(protocol, show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()][-3:] == ["reported", "step_finished", "run_failed"]
    store.close()
    (run / ".checkpoint.pt.tmp").rmdir()
    resumed = run_protocol(resume=run, show_progress=False)
    events = resumed.events()
    assert events[-1]["kind"] == "run_finished" and [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_checkpoint_the_disk_refuses_stops_the_run_at_its_next_batch_not_an_epoch_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint is written in the background while the run goes on; its refusal was said only at the checkpoint
    after it: the run measured on for a whole epoch (or step: a collect, hours on a bench) that nothing could resume
    from, to be redone."""
    from hil import store as store_module
    from hil.orchestrator import Run

    set_learning_rates, seal = Run._set_learning_rates, store_module.seal_checkpoint
    refusing, refused = threading.Event(), threading.Event()

    def then_a_refusing_disk(self: Run, progress: float) -> None:
        if self.epoch == 1 and self.batch == 1:  # epoch 0's checkpoint on disk, epoch 1's to be refused
            self.store.wait_for_checkpoint()
            (self.store.path / ".checkpoint.pt.tmp").mkdir()
            refusing.set()
        elif self.epoch == 2 and self.batch == 0:  # still being written at the first batch after it: not waited for
            assert self.store._writer is not None and self.store._writer.is_alive()
            refused.set()  # refused now, whichever thread the machine runs first
            self.store._writer.join()
        set_learning_rates(self, progress)

    def sealed_when_refused(payload: bytes) -> bytes:  # in the writer's thread, before it writes
        if refusing.is_set() and not refused.wait(30):
            raise TimeoutError("the test never let the refused checkpoint be written")
        return seal(payload)

    monkeypatch.setattr(Run, "_set_learning_rates", then_a_refusing_disk)
    monkeypatch.setattr(store_module, "seal_checkpoint", sealed_when_refused)
    with pytest.raises(RunFileError, match=r"checkpoint.pt: cannot write \("):
        run_protocol(write_protocol(tmp_path, **SMALL | {"training": {"epochs": 3, "batch_size": 16, "lr": 0.01}}),
                     show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    events = store.events()
    store.close()
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [0, 1]
    assert events[-1]["kind"] == "run_failed" and events[-2]["kind"] == "batch"
    assert (events[-2]["epoch"], events[-2]["batch"]) == (2, 1)  # stopped before the second batch after it
    monkeypatch.undo()
    (run / ".checkpoint.pt.tmp").rmdir()
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def test_training_that_diverges_to_nan_stops_saying_so_and_what_to_do(tmp_path: Path) -> None:
    """A learning rate far too large turns the twin's refinement into NaN: the run ends failed at that step, with a
    message that says so, rather than at the device refusing a NaN θ, or a batch later through the NaN twin."""
    protocol = write_protocol(tmp_path, **SMALL | {"method": {"name": "pat", "settings": {
        "refine_every": 1, "refine_lr": 1e6}}})
    with pytest.raises(HilError, match=r"^the twin's online refinement diverged at epoch 1, batch 1: its loss is nan; "
                                       r"start a new run with a lower method.settings.refine_lr$"):
        run_protocol(protocol, show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    kinds = [e["kind"] for e in store.events()]
    assert kinds[-1] == "run_failed" and "batch" not in kinds  # no batch trained through the NaN twin
    assert store.events()[-1]["error"].startswith("the twin's online refinement diverged")  # no type before it
    assert all(strict_json(line) for line in (run / "events.jsonl").read_text().splitlines())
    store.close()
    assert emulators_serving() == []  # the lab was closed on the way out: its instruments safe, its emulators stopped


def test_parameters_that_a_step_leaves_non_finite_stop_the_run_at_that_batch(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator's own guard, behind every method's: a step that leaves a parameter NaN (a method's update
    overflowing; no protocol setting of the built-in methods reaches it) ends the run failed at that batch, saying
    what to do, before the device is given a NaN θ; the NaN loss of the batch is logged as strict JSON."""
    from hil.methods.base import TrainingMethod

    train_step = TrainingMethod.train_step

    def overflowing(self: TrainingMethod, model: torch.nn.Module, *args: Any) -> dict[str, float]:
        figures = train_step(self, model, *args)
        if getattr(self, "_test_steps", 0) == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
            figures["loss"] = math.nan
        self._test_steps = getattr(self, "_test_steps", 0) + 1
        return figures

    monkeypatch.setattr(TrainingMethod, "train_step", overflowing)
    with pytest.raises(HilError, match=r"^training diverged at epoch 1, batch 2: the model's parameters are no longer "
                                       r"finite \(NaN or infinite\); start a new run with lower learning rates"):
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()][-2:] == ["batch", "run_failed"]
    assert store.events()[-1]["error"].startswith("training diverged at epoch 1")  # its message, no type before it
    assert math.isnan(store.events()[-2]["loss"])  # logged as strict JSON, read back as what it was
    assert all(strict_json(line) for line in (run / "events.jsonl").read_text().splitlines())
    store.close()
    assert emulators_serving() == []


def collect_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collect step fails as torch fails an allocation the machine refuses."""
    from hil.orchestrator import Run

    def out_of_memory(self: Run) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8191999991808 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Run, "collect", out_of_memory)


def test_a_collection_beyond_memory_is_refused_before_a_run_folder_is_made(tmp_path: Path) -> None:
    """Sizes each valid but together beyond any machine (here, beyond what a size can count) ran out of memory in the
    collect step, after calibrating, leaving a failed run: they are refused at twin.collect, as hil check does."""
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {
        "collect": {"thetas": 4, "inputs_per_theta": 2**62}}})
    with pytest.raises(ConfigError, match=r"twin\.collect: 4 θ groups of 4611686018427387904 inputs \(64 values in, "
                                          r"32 out, each\) do not fit in memory; collect fewer thetas or "
                                          r"inputs_per_theta$"):
        run_protocol(protocol, show_progress=False)
    assert not list((tmp_path / "runs").glob("*"))


@pytest.mark.parametrize("refusal", [MemoryError, OverflowError, RuntimeError])
def test_the_memory_checked_for_a_collection_is_its_inputs_and_outputs_and_any_refusal_is_located(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: type[Exception]) -> None:
    """The check allocates what the collect step will hold, θ groups × inputs × (n_in + n_out) values, and an
    allocation refused in any of the ways torch or Python refuse one is the protocol's error at twin.collect, not a
    traceback."""
    empty, asked = torch.empty, []

    def refused(*size: Any, **kwargs: Any) -> torch.Tensor:
        if size[:2] == (4, 32):  # the collection's groups and inputs (SMALL's)
            asked.append(size)
            raise refusal("cannot allocate")
        return empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", refused)
    with pytest.raises(ConfigError, match=r"twin\.collect: 4 θ groups of 32 inputs \(64 values in, 32 out, each\) do "
                                          r"not fit in memory"):
        check_protocol(write_protocol(tmp_path, **SMALL))
    assert asked == [(4, 32, 64 + 32)]


def test_repeats_beyond_memory_are_refused_by_the_check(tmp_path: Path) -> None:
    """The repeated measurements, repeats × repeated groups × inputs × outputs, are held too: a repeats too large to
    hold passed hil check, and a run calibrated and measured until memory ran out in the collect step."""
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {
        "collect": {"thetas": 4, "inputs_per_theta": 32, "repeats": 2**60, "repeat_thetas": 2}}})
    with pytest.raises(ConfigError, match=r"twin\.collect: 1152921504606846976 measurements of each of 2 θ groups of "
                                          r"32 inputs \(32 values out, each\) do not fit in memory; lower repeats or "
                                          r"repeat_thetas$"):
        check_protocol(protocol)


def test_a_twin_from_another_run_is_not_held_to_the_memory_of_a_collection_it_does_not_make(
        tmp_path: Path, finished_run: Path) -> None:
    """twin.collect is unused where twin.from_run names a run with a fitted twin: its sizes are not checked."""
    twin = SMALL["twin"] | {"from_run": str(finished_run), "collect": {"thetas": 10**9, "inputs_per_theta": 128}}
    check_protocol(write_protocol(tmp_path, **SMALL | {"twin": twin}))


def test_a_step_asking_for_more_memory_than_there_is_is_a_clear_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that torch cannot allocate for ends the run as failed with one line naming the step, not a torch
    traceback."""
    collect_out_of_memory(monkeypatch)
    protocol = write_protocol(tmp_path, **SMALL)
    with pytest.raises(HilError, match=r"^the collect step ran out of memory: the protocol asks for more than this "
                                       r"machine holds; start a new run with smaller sizes \(twin.collect's"):
        run_protocol(protocol, show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert store.events()[-1]["kind"] == "run_failed"
    store.close()


def test_a_step_that_raises_memory_error_is_said_to_have_run_out_of_memory(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Run

    def out_of_memory(self: Run) -> None:
        raise MemoryError

    monkeypatch.setattr(Run, "calibrate", out_of_memory)
    with pytest.raises(HilError, match=r"^the calibrate step ran out of memory: "):
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)


def test_a_run_ended_by_a_bug_keeps_the_traceback_the_terminal_showed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception that is no hil error (a bug) ends hil run in its traceback; the log kept its last line alone
    ("KeyError: 'offset_v'"), so that once the terminal was closed nothing said where it was raised. The run_failed
    event holds the traceback, and the report says where to find it; a hil error's has none."""
    from hil.cli import main
    from hil.orchestrator import Run
    from hil.report import write_report

    def slip(self: Run) -> None:
        return {}["offset_v"]

    monkeypatch.setattr(Run, "collect", slip)
    with pytest.raises(KeyError):
        main(["run", "--quiet", str(write_protocol(tmp_path, **SMALL))])
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    try:
        failed = store.events()[-1]
        assert (failed["kind"], failed["error"], failed["step"]) == ("run_failed", "KeyError: 'offset_v'", "collect")
        assert failed["traceback"].startswith("Traceback (most recent call last):\n")
        assert 'return {}["offset_v"]' in failed["traceback"] and failed["traceback"].endswith("KeyError: 'offset_v'\n")
        assert "its traceback is in `events.jsonl`, in the `run_failed` event's `traceback`." in \
            write_report(store).read_text()
    finally:
        store.close()
    collect_out_of_memory(monkeypatch)  # said as a hil error: its own line, no traceback
    (tmp_path / "again").mkdir()
    assert main(["run", "--quiet", str(write_protocol(tmp_path / "again", **SMALL))]) == 2
    store = RunStore.open(next((tmp_path / "again" / "runs").iterdir()))
    try:
        assert "traceback" not in store.events()[-1] and "traceback" not in write_report(store).read_text()
    finally:
        store.close()


def test_a_run_out_of_memory_logs_and_reports_the_error_the_terminal_showed(tmp_path: Path, capsys,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """hil run said that the collect step ran out of memory and what to do; the log's run_failed, and so the report
    read the next morning, said torch's allocation failure ("RuntimeError: [enforce fail at alloc_cpu.cpp:127] ...",
    or a bare "MemoryError"), with neither the step nor what to do. The log holds the line the terminal showed."""
    from hil.cli import main
    from hil.report import write_report

    collect_out_of_memory(monkeypatch)
    assert main(["run", "--quiet", str(write_protocol(tmp_path, **SMALL))]) == 2
    shown = capsys.readouterr().err.splitlines()[0].removeprefix("hil: error: ")
    assert shown.startswith("the collect step ran out of memory: "), shown
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    try:
        failed = store.events()[-1]
        assert (failed["kind"], failed["error"]) == ("run_failed", shown)
        assert f"**The run failed in its collect step, before its evaluation**: {shown}" in \
            write_report(store).read_text()
    finally:
        store.close()


def test_a_run_whose_starting_files_the_disk_refuses_leaves_no_folder_that_cannot_resume(tmp_path: Path) -> None:
    """The disk takes protocol.yaml and refuses lab.yaml: the run has not started, and a folder without its lab
    file could only fail to resume ("lab.yaml: file not found"), so none is left; the next run starts afresh."""
    from tests.test_store import disk_full_beyond

    protocol = write_protocol(tmp_path, **SMALL)
    lab_size = (REPO / "lab.yaml").stat().st_size
    with disk_full_beyond(lab_size - 1), pytest.raises(RunFileError, match=r"lab.yaml: cannot write \("):
        run_protocol(protocol, show_progress=False)
    assert list((tmp_path / "runs").iterdir()) == []
    assert run_protocol(protocol, show_progress=False).events()[-1]["kind"] == "run_finished"


def test_a_run_started_with_sighup_ignored_outlives_its_terminal(tmp_path: Path) -> None:
    """`nohup hil run p.yaml &`: nohup ignores SIGHUP so that closing the terminal leaves the run going; hil keeps it
    ignored rather than stopping at once as it does for a terminal's SIGHUP otherwise."""
    protocol = write_protocol(tmp_path, **SMALL | {"training": {**SMALL["training"], "epochs": 3}})
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "run", "--quiet", str(protocol)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    run = wait_for_batch(tmp_path / "runs", epoch=0, batch=1, process=process)
    process.send_signal(signal.SIGHUP)  # the terminal closes
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert RunStore.open(run).events()[-1]["kind"] == "run_finished"


def _closed_pipe():
    """A writer whose reader has quit (`hil run p.yaml | head -1`): every write fails with a broken pipe."""
    reader, writer = os.pipe()
    os.close(reader)
    return open(writer, "w")  # closed by the test, where its last flush fails


@pytest.mark.parametrize(("output", "last_flush_fails_with"), [
    (_closed_pipe, BrokenPipeError),  # rich exited the process: the run ended mid-step with no message
    (lambda: open("/dev/full", "w"), OSError),  # noqa: SIM115 -- `2> log` on a full disk: an OSError traceback
])
def test_progress_bars_whose_output_fails_do_not_stop_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             output, last_flush_fails_with) -> None:
    """Writing the bars fails (a reader that quit, a full disk); the run goes on without them."""
    stream = output()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        store = run_protocol(write_protocol(tmp_path, **SMALL), show_progress=True)
    finally:
        monkeypatch.undo()
        with contextlib.suppress(last_flush_fails_with):
            stream.close()
    assert store.events()[-1]["kind"] == "run_finished"


@pytest.mark.parametrize(("description", "total", "info"), [
    ("collecting twin data", 2048, ""), ("fitting the twin", 40, "stopped at 24, best 0.0134 at 16"),
    ("training", 10, "this epoch's test acc 0.939 (device)"),
    ("training", 1000, "this epoch's test acc 0.939 (device)")])
def test_a_progress_bar_shows_its_count_time_left_and_figures_whole_at_80_columns(description: str, total: int,
                                                                                   info: str) -> None:
    """Rich narrowed every column alike: the training bar's time left read `0:00:…` in an 80-column terminal."""
    progress = _progress()
    progress.add_task(description, total=total, completed=4, info=info)
    console = Console(file=io.StringIO(), width=80)
    console.print(progress.make_tasks_table(progress.tasks))
    line = console.file.getvalue().rstrip()
    assert line.startswith(description) and line.endswith(f"4/{total} -:--:-- {info}".rstrip())


def test_an_output_root_in_the_home_folder_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`output: {root: ~/runs}` puts runs in the home folder, not in a folder named ~ in the working directory (whose
    path, printed as ~/runs/..., the shell would then read as the home's)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = run_protocol(write_protocol(tmp_path, **SMALL, output={"root": "~/runs"}), show_progress=False)
    assert store.path.parent == tmp_path / "home" / "runs"
    assert not (tmp_path / "~").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows finds the home in USERPROFILE, not in the users' table")
def test_an_output_root_in_a_home_that_is_not_known_is_a_clear_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME unset and a user the system's table does not hold (a container's --user): a traceback, "Could not
    determine home directory", once the lab had been built, where hil check had passed the protocol; an IDX folder
    ``~/mnist`` so too. Both checks now refuse it at its line, and the run before it builds anything."""
    import pwd

    def unknown_user(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    monkeypatch.chdir(tmp_path)
    unknown = r": ~ stands for your home folder, which is not known here \(HOME is not set\); set HOME, or give a path "
    for changes, field in (({"output": {"root": "~/runs"}}, "output.root"),
                           ({"dataset": {"name": "idx", "path": "~/mnist"}}, "dataset.path")):
        protocol = write_protocol(tmp_path, **SMALL | changes)
        for attempt in (check_protocol, functools.partial(run_protocol, show_progress=False)):
            with pytest.raises(ConfigError, match=rf"protocol.yaml:\d+: {field}{unknown}without ~ \(got '~/"):
                attempt(protocol)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["protocol.yaml"]  # no ./~/runs
    assert emulators_serving() == []


IDEAL_LAB = textwrap.dedent("""
    worlds:
      chip: {kind: memristor_crossbar, preset: ideal, seed: 0}
    instruments:
      crossbar: {driver: simulated_crossbar, world: chip}
    systems:
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 64, n_out: 16}}
""")


@contextlib.contextmanager
def prepared_run(tmp_path: Path, lab_text: str = IDEAL_LAB, **changes) -> Iterator:
    """A `Run` prepared (model, optimiser, data) on an ideal crossbar (``lab_text``), which measures its physics
    exactly, so what a step computed on the device can be computed again; its twin is the physics with twice the
    device's gain and an offset: its predictions are not the device's."""
    from hil.lab import Lab
    from hil.orchestrator import Run
    from hil.protocol import instruments_used, load_protocol
    from hil.twin.models import build_twin

    (tmp_path / "lab.yaml").write_text(lab_text)
    path = write_protocol(tmp_path, lab=str(tmp_path / "lab.yaml"), **{
        "dataset": {"name": "digits", "limit": 200},
        "model": {"layers": [{"physical": {}}, {"batchnorm": True}, {"linear": {"out_features": 10}}]},
        "training": {"epochs": 2, "batch_size": 64, "lr": 0.01, "physical_lr": 0.03}, **changes})
    protocol, document = load_protocol(path)
    lab = Lab.load(tmp_path / "lab.yaml")
    with contextlib.closing(lab.open(instruments_used(protocol, lab))):
        run = Run(protocol, lab, RunStore.create(tmp_path, "unit"), document, show_progress=False)
        try:
            run.prepare()
            run.twin = build_twin("physics", run.system)
            with torch.no_grad():
                run.twin.affine.gain.fill_(2.0)
                run.twin.affine.offset.fill_(torch.rand(1, generator=torch.Generator().manual_seed(0)).item())
            run._attach_twin()
            yield run
        finally:
            run.store.close()


def evaluated_in(run, mode: str, x: torch.Tensor) -> torch.Tensor:
    """The model's predictions with its physical layers in ``mode``."""
    from hil.nn import set_mode

    set_mode(run.model, mode)
    run.model.eval()
    with torch.no_grad():
        return run.model(x).argmax(dim=1)


def test_training_follows_the_cosine_schedule_with_thetas_own_rate_and_evaluates_each_epoch_on_the_test_set(
        tmp_path: Path) -> None:
    from hil.nn import physical_layers

    with prepared_run(tmp_path, method={"name": "pat"}) as run:
        layer = physical_layers(run.model)[0]
        batchnorm = run.model[1]
        theta, weight = layer.theta.detach().clone(), run.model[2].weight.detach().clone()
        batches = [run._batches(epoch) for epoch in range(2)]
        rows = torch.arange(len(run.y_train))
        assert all(torch.equal(torch.cat(b).sort().values, rows) for b in batches)  # each epoch: every row once
        assert not torch.equal(torch.cat(batches[0]), torch.cat(batches[1]))  # shuffled anew
        run.train()
        steps = sum(len(b) for b in batches)
        factor = 0.5 * (1 + math.cos(math.pi * (steps - 1) / steps))  # at the last step, decayed nearly to zero
        assert [group["lr"] for group in run.optimizer.param_groups] == pytest.approx([0.01 * factor, 0.03 * factor])
        assert not torch.equal(layer.theta.detach(), theta) and not torch.equal(run.model[2].weight, weight)
        assert layer.mode == "pat"  # the evaluation after each epoch handed the layers back to the method
        assert int(batchnorm.num_batches_tracked) == steps  # trained in training mode; evaluated in eval mode
        last = run.history[-1]
        device = evaluated_in(run, "device", run.x_test)
        twin = evaluated_in(run, "twin", run.x_test)
        assert not torch.equal(device, twin)
        assert last["device_accuracy"] == pytest.approx((device == run.y_test).float().mean().item())
        assert last["twin_accuracy"] == pytest.approx((twin == run.y_test).float().mean().item())


def test_an_insilico_run_is_evaluated_on_the_device_over_the_test_set(tmp_path: Path) -> None:
    from hil.nn import physical_layers

    with prepared_run(tmp_path, method={"name": "insilico"}, training={"epochs": 1, "batch_size": 64},
                      evaluation={"every_epoch": False}) as run:
        theta, calls = physical_layers(run.model)[0].theta.detach().clone(), run.system.calls
        run.train()
        assert run.system.calls == calls  # trained through the twin alone
        assert not torch.equal(physical_layers(run.model)[0].theta.detach(), theta)
        run.evaluate()
        assert run.system.calls > calls  # on the hardware, not only through the twin
        arrays, _ = run.store.load_arrays("data/evaluation.h5")
        device = evaluated_in(run, "device", run.x_test)
        twin = evaluated_in(run, "twin", run.x_test)
        assert not torch.equal(device, twin)
        assert torch.equal(arrays["labels"], run.y_test) and torch.equal(arrays["device_predictions"], device)
        assert torch.equal(arrays["twin_predictions"], twin)
        confusion = torch.zeros(10, 10, dtype=torch.int64)
        for true, predicted in zip(run.y_test.tolist(), device.tolist(), strict=True):
            confusion[true, predicted] += 1  # a row per true class
        assert torch.equal(arrays["confusion"], confusion)
        evaluated = final(run.store)
        assert evaluated["device_accuracy"] == pytest.approx((device == run.y_test).float().mean().item())
        assert evaluated["twin_accuracy"] == pytest.approx((twin == run.y_test).float().mean().item())


@pytest.mark.parametrize("design", ["data", "mixed"])
def test_the_twin_data_are_collected_at_the_training_inputs_the_design_asks_for(tmp_path: Path, design: str) -> None:
    with prepared_run(tmp_path, method={"name": "pat"}, twin={"collect": {
            "thetas": 2, "inputs_per_theta": 8, "repeats": 1, "design": design}}) as run:
        run.collect()
        rows = run.twin_data.x.reshape(-1, 64)
        from_data = (rows[:, None, :] == run.x_train[None]).all(dim=2).any(dim=1)
        assert int(from_data.sum()) == {"data": 16, "mixed": 8}[design]
        collected = next(e for e in run.store.events() if e["kind"] == "collected")
        assert collected["design"] == design and collected["samples"] == 16 and collected["groups"] == 2


def test_the_twin_a_run_fits_never_reads_the_held_out_groups_its_fidelity_is_measured_on(tmp_path: Path) -> None:
    """The held-out θ groups' measurements replaced by what the calibrated physics twin predicts there, which its fit
    starts from, leave the fitted twin as it was: had they stopped the fit, that start, exact on them, was kept. So
    neither the early stopping nor the state kept was chosen on them, and their NMSE is that of new θ."""
    from hil.twin.collect import TwinData

    realistic = IDEAL_LAB.replace("preset: ideal", "preset: realistic, config: {slow: {drift_scale: 0.0}}")
    with prepared_run(tmp_path, realistic, method={"name": "pat"}, twin={"collect": {
            "thetas": 8, "inputs_per_theta": 16, "repeats": 1, "design": "sobol"},
            "fit": {"epochs": 4, "lr": 0.002}}) as run:
        run.collect()
        measured = run.twin_data
        start = run._new_twin()
        run.fit_twin()
        held_out = run.twin.spec["held_out_groups"]
        fitted = {name: value.clone() for name, value in run.twin.state_dict().items()}
        assert next(e for e in run.store.events() if e["kind"] == "twin_fitted")["best_epoch"] >= 0  # it moved
        y = measured.y.clone()
        with torch.no_grad():
            for group in held_out:
                y[group] = start(measured.x[group], measured.theta[group])
        run.twin_data = TwinData(measured.x, measured.theta, y, measured.y_repeats)
        run.fit_twin()
        assert run.twin.spec["held_out_groups"] == held_out == [2, 4]
        torch.testing.assert_close(run.twin.state_dict(), fitted, rtol=0, atol=0)


def test_an_oracle_twin_is_the_worlds_calibration_as_it_is_never_fitted(tmp_path: Path) -> None:
    from hil.twin.models import build_twin

    with prepared_run(tmp_path, method={"name": "pat"}, twin={"kind": "oracle", "collect": {
            "thetas": 4, "inputs_per_theta": 8, "repeats": 1, "design": "sobol"}, "fit": {"epochs": 5}}) as run:
        run.collect()
        run.fit_twin()
        torch.testing.assert_close(run.twin.state_dict(), build_twin("oracle", run.system).state_dict(), rtol=0, atol=0)
        fitted = next(e for e in run.store.events() if e["kind"] == "twin_fitted")
        assert fitted["train_loss"] == [] and fitted["converged"]


def test_the_first_ctrl_c_asks_to_stop_and_the_second_stops_at_once() -> None:
    from hil.orchestrator import _StopFlag

    flag = _StopFlag()
    with flag.installed():
        signal.raise_signal(signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_a_ctrl_c_during_a_step_stops_after_it_with_a_checkpoint_and_the_resumed_run_does_not_redo_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Interrupted, Run

    calibrate = Run.calibrate

    def calibrate_then_ctrl_c(self: Run) -> None:
        calibrate(self)
        signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(Run, "calibrate", calibrate_then_ctrl_c)
        with pytest.raises(Interrupted, match=r"^stopped at your request after saving; resume with") as stopped:
            run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    assert stopped.value.exit_status == 130
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()][-3:] == ["calibrated", "step_finished", "run_interrupted"]
    assert store.load_checkpoint()["completed"] == ["calibrate"]
    store.close()
    events = run_protocol(resume=run, show_progress=False).events()
    assert [e["kind"] for e in events].count("calibrated") == 1 and events[-1]["kind"] == "run_finished"


COLLECTING = {**SMALL, "twin": {**SMALL["twin"], "collect": {"thetas": 6, "inputs_per_theta": 32, "repeats": 2,
                                                              "repeat_thetas": 2}}}


def _measured_groups(monkeypatch: pytest.MonkeyPatch, then: Callable[[int], None] = lambda group: None) -> list[int]:
    """The θ groups the collections measure from here on, in order; ``then(group)`` after each."""
    from hil.twin.collect import Collection

    measure, measured = Collection.measure_group, []

    def measure_group(self: Collection) -> None:
        group = len(self.ys)
        measure(self)
        measured.append(group)
        then(group)

    monkeypatch.setattr(Collection, "measure_group", measure_group)
    return measured


@pytest.mark.parametrize("failing_group", [1, 4])  # a repeated group, one measured once
def test_a_run_that_fails_while_collecting_resumes_after_the_groups_its_last_checkpoint_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_group: int) -> None:
    """A collection checkpoints its measurements every COLLECTION_CHECKPOINT_S: a bench lost part-way loses only the
    groups since, and the resumed run ends as an uninterrupted one (whose collection took no checkpoint)."""
    import hil.orchestrator as orchestrator

    (tmp_path / "reference").mkdir()
    reference = run_protocol(write_protocol(tmp_path / "reference", **COLLECTING), show_progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(orchestrator, "COLLECTION_CHECKPOINT_S", 0.0)

        def lost(group: int) -> None:
            if group == failing_group:
                raise DeviceError("crossbar: no reply to READ? within 2 s")

        measured = _measured_groups(patch, then=lost)
        with pytest.raises(DeviceError, match="no reply"):
            run_protocol(write_protocol(tmp_path, **COLLECTING), show_progress=False)
    assert measured == list(range(failing_group + 1))
    [run] = (tmp_path / "runs").iterdir()
    measured = _measured_groups(monkeypatch)
    resumed = run_protocol(resume=run, show_progress=False)
    assert measured == list(range(failing_group, 6))  # the groups before it are not measured again
    assert comparable(resumed.events())[-5:] == comparable(reference.events())[-5:]
    assert final(resumed) | {"seq": 0, "time": 0} == final(reference) | {"seq": 0, "time": 0}
    twin_data = [RunStore.open(path).load_arrays("data/twin_data.h5")[0] for path in (run, reference.path)]
    times = twin_data[0].pop("measured_at"), twin_data[1].pop("measured_at")  # when: other for another run
    assert times[0].shape == times[1].shape == (6,) and times[0].isfinite().all()  # the checkpoint's groups' too
    for name, array in twin_data[1].items():
        torch.testing.assert_close(twin_data[0][name], array, rtol=0, atol=0)


def test_a_ctrl_c_while_collecting_stops_after_the_group_with_its_measurements_in_the_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Interrupted

    (tmp_path / "reference").mkdir()
    reference = run_protocol(write_protocol(tmp_path / "reference", **COLLECTING), show_progress=False)
    with monkeypatch.context() as patch:
        _measured_groups(patch, then=lambda group: signal.raise_signal(signal.SIGINT) if group == 2 else None)
        with pytest.raises(Interrupted, match=r"^stopped at your request after saving"):
            run_protocol(write_protocol(tmp_path, **COLLECTING), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    saved = store.load_checkpoint()
    store.close()
    assert saved["completed"] == ["calibrate"]
    assert len(saved["collection"]["y"]) == 3  # groups 0–2
    assert saved["collection"]["y_repeats"].shape[:2] == (2, 2)  # groups 0–1, twice each
    crafted = tmp_path / "crafted"
    shutil.copytree(run, crafted)
    _resealed(crafted, lambda saved: saved["collection"].update(y=saved["collection"]["y"][:, :5]))
    with pytest.raises(RunFileError, match=r"checkpoint.pt: not a checkpoint of this run \(its collection \("):
        run_protocol(resume=crafted, show_progress=False)
    measured = _measured_groups(monkeypatch)
    resumed = run_protocol(resume=run, show_progress=False)
    assert measured == [3, 4, 5]
    assert [e["kind"] for e in resumed.events()].count("collected") == 1
    assert final(resumed) | {"seq": 0, "time": 0} == final(reference) | {"seq": 0, "time": 0}


def test_a_run_stopped_at_once_mid_training_resumes_from_the_start_of_its_unfinished_epoch(stopped_run: Path) -> None:
    """Every finished epoch is checkpointed: a kill in the second epoch loses only that epoch's batches."""
    store = RunStore.open(stopped_run)
    saved = store.load_checkpoint()
    assert (saved["epoch"], saved["batch"], [record["epoch"] for record in saved["history"]]) == (1, 0, [0])
    store.close()


def test_a_ctrl_c_while_a_run_prepares_stops_it_at_its_first_safe_point_and_it_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None) -> None:
    """Before execute took Ctrl-C, one while the run prepared left as a bare KeyboardInterrupt: no run_interrupted
    event, no word on resuming."""
    from hil.orchestrator import Interrupted, Run

    prepare = Run.prepare

    def prepare_then_ctrl_c(self: Run, data=None) -> None:
        prepare(self, data)
        signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(Run, "prepare", prepare_then_ctrl_c)
        with pytest.raises(BaseException, match=r"^stopped at your request after saving; resume with") as stopped:
            run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)  # (not a KeyboardInterrupt)
    assert isinstance(stopped.value, Interrupted)
    assert emulators_serving() == []  # the lab was closed: its instruments safe, its emulators stopped
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()] == ["run_started", "run_interrupted"]
    store.close()
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def sigterm_after(method_name: str, monkeypatch: pytest.MonkeyPatch, **run_options) -> pytest.ExceptionInfo:
    """Run `run_protocol` with SIGTERM arriving (as under ``hil run``) just after `Run`'s ``method_name``; returns
    the `Interrupted` it raised."""
    from hil.errors import terminate_on_signals
    from hil.orchestrator import Interrupted, Run

    method = getattr(Run, method_name)

    def then_sigterm(self: Run, *args) -> None:
        method(self, *args)
        signal.raise_signal(signal.SIGTERM)

    with monkeypatch.context() as patch, terminate_on_signals():
        patch.setattr(Run, method_name, then_sigterm)
        with pytest.raises(BaseException, match=r"^stopped at once by SIGTERM; .*with: hil run --resume") as info:
            run_protocol(**run_options, show_progress=False)  # (not a bare Terminated)
    assert isinstance(info.value, Interrupted) and info.value.exit_status == 128 + signal.SIGTERM
    assert emulators_serving() == []  # the lab was closed: its instruments safe, its emulators stopped
    return info


def test_a_run_stopped_at_once_as_it_logs_run_finished_stays_finished(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM that came as the run logged run_finished logged run_interrupted after it: a finished run listed as
    interrupted, told to resume from its last checkpoint (which moved run_finished out of the log to log it again)."""
    from hil.errors import terminate_on_signals
    from hil.orchestrator import Interrupted

    event = RunStore.event

    def then_sigterm(self: RunStore, kind: str, **fields) -> dict:
        record = event(self, kind, **fields)
        if kind == "run_finished":
            signal.raise_signal(signal.SIGTERM)
        return record

    with monkeypatch.context() as patch, terminate_on_signals(), pytest.raises(Interrupted) as stopped:
        patch.setattr(RunStore, "event", then_sigterm)
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    assert str(stopped.value) == f"stopped by SIGTERM as the run finished; nothing to resume; its report: " \
                                 f"{run / 'report' / 'summary.md'}"
    assert stopped.value.exit_status == 128 + signal.SIGTERM and emulators_serving() == []
    assert RunStore.open(run).events()[-1]["kind"] == "run_finished"
    assert list_runs(tmp_path / "runs")[0]["status"] == "finished"
    assert run_protocol(resume=run, show_progress=False).finished_before is not None


def test_a_new_run_stopped_at_once_while_it_prepares_says_so_and_resuming_starts_it_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sigterm_after("prepare", monkeypatch, protocol_path=write_protocol(tmp_path, **SMALL))
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()] == ["run_interrupted"] and store.load_checkpoint() is None
    store.close()
    events = run_protocol(resume=run, show_progress=False).events()
    assert [e["kind"] for e in events][:1] + [e["kind"] for e in events][-1:] == ["run_started", "run_finished"]


@pytest.mark.parametrize(("stop", "said", "status"), [
    (KeyboardInterrupt(), "a Ctrl-C", 130), (Terminated(signal.SIGHUP), "SIGHUP", 128 + signal.SIGHUP)])
def test_a_run_stopped_as_its_instruments_connect_records_the_stop_and_says_how_to_resume(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, stop: KeyboardInterrupt, said: str,
        status: int) -> None:
    """A Ctrl-C or SIGHUP while a run connects its instruments (on a bench, up to a minute) left no event: the log of
    the new run stayed empty, so hil runs listed it as incomplete, as a killed one, and its report said "its last
    event: none"; hil run said "interrupted" and not how to resume. The stop is logged and said as one at once."""
    from hil.cli import main
    from hil.lab import Lab

    def stopped(self: Lab, names: Any) -> NoReturn:  # within Lab.open, as it claims the instruments to connect
        raise stop

    with monkeypatch.context() as patch:
        patch.setattr(Lab, "_claim", stopped)
        assert main(["run", "--quiet", str(write_protocol(tmp_path, **SMALL))]) == status
    assert emulators_serving() == []  # the lab was closed: its instruments safe, its emulators stopped
    [run] = (tmp_path / "runs").iterdir()
    assert capsys.readouterr().err == (f"hil: stopped at once by {said}; instruments were put in their safe state; "
                                       f"resume from the last checkpoint with: {resume_command(run)}\n")
    assert [(r["status"], r["events"]) for r in list_runs(tmp_path / "runs")] == [("interrupted", 1)]
    events = run_protocol(resume=run, show_progress=False).events()  # nothing measured: it starts over
    assert [events[0]["kind"], events[-1]["kind"]] == ["run_started", "run_finished"]


class RefusingLog:
    """An event log's file on a full disk: every write is refused (ENOSPC); the rest is the file's."""

    def __init__(self, log) -> None:
        self.log = log

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self.log, name)


@pytest.mark.parametrize("at_once", [False, True])
def test_a_stop_whose_event_the_disk_refuses_says_both_the_stop_and_the_refusal_and_keeps_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_once: bool) -> None:
    """The disk refused the run_interrupted event of a run stopped at once: its error replaced the stop, so the user
    was told of a log that could not be written (exit 2), not that the run was stopped nor how to resume it."""
    from hil.orchestrator import Interrupted, Run

    event, logs = RunStore.event, []

    def refused_when_stopped(self: RunStore, kind: str, **fields):
        if kind != "run_interrupted":
            return event(self, kind, **fields)
        logs.append((self.path / "events.jsonl").read_bytes())
        self._events = RefusingLog(self._events)
        try:
            return event(self, kind, **fields)
        finally:
            self._events = self._events.log

    def calibrate_then_ctrl_c(self: Run) -> None:
        calibrate(self)
        self.stop.requested = True  # a first Ctrl-C during the step: the run saves after it and stops

    monkeypatch.setattr(RunStore, "event", refused_when_stopped)
    protocol = write_protocol(tmp_path, **SMALL)
    if at_once:
        stopped = sigterm_after("calibrate", monkeypatch, protocol_path=protocol).value
    else:
        calibrate = Run.calibrate
        with monkeypatch.context() as patch, pytest.raises(Interrupted) as raised:
            patch.setattr(Run, "calibrate", calibrate_then_ctrl_c)
            run_protocol(protocol, show_progress=False)
        stopped = raised.value
    [run] = (tmp_path / "runs").iterdir()
    said = "stopped at once by SIGTERM; instruments were put in their safe state; resume from the last checkpoint " \
        "with" if at_once else "stopped at your request after saving; resume with"
    assert re.match(rf"{said}: hil run --resume {re.escape(str(run))}; then logging the stop failed: "
                    rf"{re.escape(str(run / 'events.jsonl'))}: cannot write \(No space left on device\); free disk "
                    r"space or fix the folder's permissions: what the run wrote before is kept$", str(stopped))
    assert stopped.exit_status == (128 + signal.SIGTERM if at_once else 130)
    assert len(logs) == 1 and (run / "events.jsonl").read_bytes() == logs[0]  # nothing lost, nothing torn
    monkeypatch.setattr(RunStore, "event", event)
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


@pytest.mark.parametrize("gone", ["removed", "moved"])
def test_a_run_whose_folder_goes_during_the_run_stops_saying_so_and_makes_no_new_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str) -> None:
    """The run went on writing into a log no longer in its folder, and each file it wrote made the folder anew: it
    finished with exit 0 and "report: ...", leaving a folder of a checkpoint and a report, without a log, that resume
    and hil runs do not know as a run (and, moved, the log and data split across two folders)."""
    from hil.orchestrator import Run

    collect, runs, aside = Run.collect, [], tmp_path / "aside"

    def collect_then_folder_gone(self: Run) -> None:
        collect(self)
        self.store.wait_for_checkpoint()
        runs.append(self.store.path)
        shutil.rmtree(self.store.path) if gone == "removed" else self.store.path.rename(aside)

    monkeypatch.setattr(Run, "collect", collect_then_folder_gone)
    with pytest.raises(HilError) as raised:
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = runs
    assert str(raised.value).startswith(f"{run}: the run folder was removed or moved during the run (its events.jsonl "
                                        "is not the log the run writes); nothing more is written there: put the "
                                        f"folder back and resume with: hil run --resume {run}, or start a new run")
    assert "\n" not in str(raised.value) and not run.exists()
    if gone == "moved":
        monkeypatch.undo()
        aside.rename(run)  # put back: the run resumes to the end
        events = run_protocol(resume=run, show_progress=False).events()
        assert events[-1]["kind"] == "run_finished" and "run_resumed" in [e["kind"] for e in events]


@pytest.mark.parametrize("checkpoint_too", [False, True])
def test_a_run_whose_data_file_the_disk_refuses_says_how_to_resume_and_resumes_once_it_takes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_too: bool) -> None:
    """The error said to free disk space, but not that the run then resumes, nor how, as an instrument's does; with a
    checkpoint refused too (written in the background, its refusal said as the folder closes), the line said what to
    do twice."""
    from hil.orchestrator import Run
    from hil.twin.collect import Collection

    collect, result = Run.collect, Collection.result

    def collect_on_a_refusing_disk(self: Run) -> None:
        (self.store.path / "data" / ".twin_data.h5.tmp").mkdir(parents=True)  # the file's temporary cannot be made

        def result_after_a_refused_checkpoint(collection: Collection) -> Any:  # the last group measured, before saving
            self.store.wait_for_checkpoint()
            (self.store.path / ".checkpoint.pt.tmp").mkdir()
            self.checkpoint()
            return result(collection)

        if checkpoint_too:
            monkeypatch.setattr(Collection, "result", result_after_a_refused_checkpoint)
        collect(self)

    monkeypatch.setattr(Run, "collect", collect_on_a_refusing_disk)
    with pytest.raises(HilError) as raised:
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    assert str(raised.value) == (f"{run / 'data' / 'twin_data.h5'}: cannot write (Is a directory); free disk space or "
                                 "fix the folder's permissions: what the run wrote before is kept" + (
                                     f"; then closing the run folder failed: {run / 'checkpoint.pt'}: cannot write (Is "
                                     "a directory)" if checkpoint_too else ""))
    assert raised.value.__notes__ == [f"what the run measured is kept in {run}; once its disk has space (or the folder "
                                      f"can be written), resume with: hil run --resume {run}"]
    monkeypatch.undo()
    for temporary in (run / "data" / ".twin_data.h5.tmp", run / ".checkpoint.pt.tmp"):
        if temporary.exists():
            temporary.rmdir()
    events = run_protocol(resume=run, show_progress=False).events()
    assert events[-1]["kind"] == "run_finished" and "run_resumed" in [e["kind"] for e in events]


def test_a_full_disk_refusing_the_failures_event_too_says_what_to_do_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk that refused an event refused the run_failed after it: the line said the path, the reason and what to
    do twice over ("...; then logging the failure failed: <the same again>"), three times with a checkpoint."""
    from hil.orchestrator import Run

    collect = Run.collect

    def collect_on_a_full_disk(self: Run) -> None:
        self.store._events = RefusingLog(self.store._events)
        collect(self)

    monkeypatch.setattr(Run, "collect", collect_on_a_full_disk)
    with pytest.raises(HilError) as raised:
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    assert str(raised.value) == (f"{run / 'events.jsonl'}: cannot write (No space left on device); free disk space or "
                                 "fix the folder's permissions: what the run wrote before is kept; then logging the "
                                 "failure failed alike")
    assert raised.value.__notes__[0].endswith(f"resume with: hil run --resume {run}")
    monkeypatch.undo()
    events = run_protocol(resume=run, show_progress=False).events()
    assert events[-1]["kind"] == "run_finished" and (run / "data" / "twin_data.discarded.h5").is_file()


def test_a_run_stopped_at_once_while_the_disk_refuses_its_checkpoint_says_the_stop_then_the_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint being written when a stop came is waited for as the run folder closes: the disk's refusal of it
    replaced the stop, so the user was told of a file that could not be written (exit 1), not that the run had
    stopped, nor how to resume it."""
    from hil.orchestrator import Run

    calibrate = Run.calibrate

    def calibrate_then_checkpoint_on_a_full_disk(self: Run) -> None:
        calibrate(self)
        (self.store.path / ".checkpoint.pt.tmp").mkdir()  # the checkpoint's temporary file cannot be made
        self.checkpoint()

    monkeypatch.setattr(Run, "calibrate", calibrate_then_checkpoint_on_a_full_disk)
    protocol = write_protocol(tmp_path, **SMALL)
    stopped = sigterm_after("calibrate", monkeypatch, protocol_path=protocol).value
    [run] = (tmp_path / "runs").iterdir()
    assert re.match(rf"stopped at once by SIGTERM; instruments were put in their safe state; resume from the last "
                    rf"checkpoint with: hil run --resume {re.escape(str(run))}; then closing the run folder failed: "
                    rf"{re.escape(str(run / 'checkpoint.pt'))}: cannot write \(", str(stopped))
    monkeypatch.undo()
    (run / ".checkpoint.pt.tmp").rmdir()
    events = run_protocol(resume=run, show_progress=False).events()
    assert events[-1]["kind"] == "run_finished" and "run_resumed" in [e["kind"] for e in events]


def test_a_run_whose_folder_fails_to_close_says_only_that_though_called_while_another_error_is_handled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ended the run was taken from sys.exc_info(), which in a caller's except block (a script that resumes a
    run that failed) is the caller's error: a run that went through said that error, then the closing's failure."""
    close = RunStore.close

    def close_on_a_full_disk(self: RunStore) -> None:
        close(self)
        raise RunFileError(f"{self.path / 'checkpoint.pt'}: cannot write (disk full)")

    monkeypatch.setattr(RunStore, "close", close_on_a_full_disk)
    protocol = write_protocol(tmp_path, **SMALL)
    try:
        raise KeyError("the caller's")
    except KeyError:
        with pytest.raises(RunFileError, match=r"checkpoint\.pt: cannot write \(disk full\)$"):
            run_protocol(protocol, show_progress=False)


def test_a_resumed_run_stopped_at_once_while_it_restores_says_so_and_resumes_from_its_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = interrupted_after_fit_twin(write_protocol(tmp_path, **SMALL), monkeypatch)
    sigterm_after("resume_from", monkeypatch, resume=run)
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()][-2:] == ["run_resumed", "run_interrupted"]
    store.close()
    events = run_protocol(resume=run, show_progress=False).events()
    assert [e["kind"] for e in events].count("twin_fitted") == 1 and events[-1]["kind"] == "run_finished"
    assert [e["step"] for e in events if e["kind"] == "step_finished"] == list(STEPS)  # each logged, once


def test_a_new_run_that_failed_while_it_prepared_records_it_and_resuming_starts_it_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Run

    def fails(self: Run, data=None) -> None:
        raise RuntimeError("out of file handles")

    with monkeypatch.context() as patch:
        patch.setattr(Run, "prepare", fails)
        with pytest.raises(RuntimeError, match="out of file handles"):
            run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [(e["kind"], e["error"]) for e in store.events()] == [("run_failed", "RuntimeError: out of file handles")]
    store.close()
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


@pytest.mark.parametrize(("name", "optimizer"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_training_uses_the_optimizer_the_protocol_names(tmp_path: Path, name: str, optimizer: type) -> None:
    with prepared_run(tmp_path, training={"epochs": 1, "batch_size": 64, "optimizer": name}) as run:
        assert type(run.optimizer) is optimizer


def test_a_ctrl_c_mid_epoch_saves_the_batch_it_reached_and_the_resumed_run_does_not_redo_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Interrupted

    event = RunStore.event

    def ctrl_c_after_the_first_batch(self: RunStore, kind: str, **fields) -> dict:
        record = event(self, kind, **fields)
        if kind == "batch" and fields["batch"] == 1:
            signal.raise_signal(signal.SIGINT)
        return record

    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "event", ctrl_c_after_the_first_batch)
        with pytest.raises(Interrupted, match=r"^stopped at your request after saving"):
            run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert (store.load_checkpoint()["epoch"], store.load_checkpoint()["batch"]) == (0, 1)
    store.close()
    events = run_protocol(resume=run, show_progress=False).events()
    batches = [e["batch"] for e in events if e["kind"] == "batch"]
    assert len(batches) > 1 and batches == list(range(1, len(batches) + 1))
    assert "run_interrupted" not in [e["kind"] for e in events]  # logged after the checkpoint: moved aside


def test_run_protocol_without_a_protocol_or_a_run_to_resume_says_to_give_one() -> None:
    with pytest.raises(ConfigError, match=r"^give a protocol file or --resume RUN$"):
        run_protocol()


def test_a_twin_fit_of_no_epochs_shows_no_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An oracle twin is never fitted: an empty bar would say a fit ran."""
    run_protocol(write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"kind": "oracle"}}))
    shown = capsys.readouterr().err
    assert "collecting twin data" in shown and "fitting the twin" not in shown


def test_a_reused_twin_whose_held_out_groups_are_not_groups_of_its_data_is_refused(finished_run: Path,
                                                                                    tmp_path: Path) -> None:
    source = copy_of(finished_run, tmp_path / "source")
    spec = json.loads((source / "twin/twin.json").read_text())
    (source / "twin/twin.json").write_text(json.dumps(spec | {"held_out_groups": [4]}))  # groups 0 to 3
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
    with pytest.raises(ConfigError, match=r"the twin's held-out θ groups \[4\] are not groups of its 4; point"):
        run_protocol(protocol, show_progress=False)


def test_the_twin_is_not_evaluated_each_epoch_nor_at_the_end_when_the_protocol_says_not_to(tmp_path: Path) -> None:
    """evaluation.twin: false held for the epochs only: the final evaluation still evaluated the twin."""
    with prepared_run(tmp_path, training={"epochs": 1, "batch_size": 64}, evaluation={"twin": False}) as run:
        assert set(run._evaluate_all()) == {"device_loss", "device_accuracy"}
        run.evaluate()
        assert "twin_accuracy" not in run.store.events()[-1]
        arrays, _ = run.store.load_arrays("data/evaluation.h5")
        assert "twin_predictions" not in arrays


def test_the_training_bar_says_no_test_accuracy_when_the_epochs_are_not_evaluated(tmp_path: Path, capsys) -> None:
    """With evaluation.every_epoch: false the bar said "this epoch's test acc nan (device)"."""
    run_protocol(write_protocol(tmp_path, **SMALL | {"evaluation": {"every_epoch": False}}),
                 output_root=tmp_path / "runs")
    shown = capsys.readouterr().err
    assert re.search(r"training .*1/1", shown) and "nan" not in shown and "test acc" not in shown


def test_the_first_ctrl_c_says_that_the_run_will_stop_after_its_step(capfd: pytest.CaptureFixture[str]) -> None:
    """A step can last minutes on a bench (a collection, a twin fit): with nothing said, a first Ctrl-C looked
    ignored, and the second one a user then pressed stopped at once, losing the step."""
    from hil.orchestrator import _StopFlag

    flag = _StopFlag()
    with flag.installed():
        signal.raise_signal(signal.SIGINT)
    assert capfd.readouterr().err == ("hil: stopping after the current step, training batch or group of twin data, "
                                      "with a checkpoint (Ctrl-C again stops at once)\n")


def test_the_first_ctrl_c_writes_nothing_where_hil_started_with_its_stderr_closed(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with ``2>&-``, Python has no sys.stderr and descriptor 2 goes to the first file opened: the stop line
    written to descriptor 2 went into that file (in a run, its event log or a data file). Here descriptor 2 is the
    fixture's file, standing for it."""
    from hil.orchestrator import _StopFlag

    monkeypatch.setattr(sys, "stderr", None)
    flag = _StopFlag()
    with flag.installed():
        signal.raise_signal(signal.SIGINT)
    assert flag.requested and capfd.readouterr().err == ""


@pytest.mark.parametrize("lr", [0.002, 0.02])
def test_the_twin_fit_bar_ends_full_saying_where_the_fit_stopped(tmp_path: Path, capsys, lr: float) -> None:
    """A fit that stopped early left its bar short of the epochs asked for, with no word why. At 0.002 an epoch
    beats the calibrated physics twin the fit starts from (on 8 θ groups, 4 of them fitted on), and the bar names it;
    at SMALL's 0.02 none does, and the bar says the start was kept (it named epoch 0 as the best)."""
    twin = SMALL["twin"] | {"collect": SMALL["twin"]["collect"] | {"thetas": 8},
                            "fit": {"epochs": 40, "patience": 1, "lr": lr}}
    store = run_protocol(write_protocol(tmp_path, **SMALL | {"twin": twin}), output_root=tmp_path / "runs")
    fitted = next(e for e in store.events() if e["kind"] == "twin_fitted")
    ran = len(fitted["validation_loss"])
    assert ran < 40  # one epoch without a better held-out loss ends it
    shown = capsys.readouterr().err
    ending = f"best \\S+ at {fitted['best_epoch'] + 1}" if lr == 0.002 else "its start kept"
    assert (fitted["best_epoch"] >= 0) == (lr == 0.002)
    assert re.search(rf"fitting the twin .*40/40 .*stopped at {ran}, {ending}", shown)


class ProbeModel(PhysicsModel):
    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (self.gain * (x[:, :1] + theta[:1]) / 2).reshape(-1, 1)


class SourceMeterProbe(PhysicalSystem):
    """A system on the default lab's emulated Keithley 2450 (served over TCP, as a bench's SMU is reached): y is the
    current at the level (x + θ)/2, in mA at 1 kΩ, one exchange after another over the wire."""

    kind = "smu_probe"
    roles: ClassVar[dict[str, type]] = {"smu": SourceMeter}

    def __init__(self, instruments, *, name: str = ""):
        super().__init__(instruments, name=name, n_in=1, n_out=1, n_params=1, x_bounds=(-1, 1),
                         theta_bounds=(-1, 1), max_batch=64)
        self.smu = instruments["smu"]

    def _calibrate(self) -> dict:
        self.smu.configure("voltage", compliance=0.005)
        self.smu.set_level(0.0)
        self.smu.set_output(True)
        return {"compliance_a": 0.005}

    def device_state_lost(self) -> None:  # a resumed run's new connection: the working point, set again
        self.lost = getattr(self, "lost", 0) + 1
        self._calibrate()

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        out = []
        for row in x:
            self.smu.set_level(float((row[0] + theta[0]) / 2))
            out.append(float(self.smu.measure().current_a[0]) * 1000.0)
        return torch.tensor(out).reshape(-1, 1)

    def physics_model(self) -> PhysicsModel:
        return ProbeModel()


def write_probe_protocol(tmp_path: Path) -> Path:
    """A small run on `SourceMeterProbe`, whose every device call goes over the wire to the 2450's emulator."""
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "lab.yaml").read_text().replace(
        "systems:\n", "systems:\n  probe:\n    kind: tests.test_orchestrator:SourceMeterProbe\n"
                      "    instruments: {smu: smu}\n"))
    return write_protocol(tmp_path, lab=str(lab), system="probe", seed=1,
                          dataset={"name": "digits", "limit": 100},
                          model={"layers": [{"linear": {"out_features": 1}}, {"physical": {"input_map": "sigmoid"}},
                                            {"linear": {"out_features": 10}}]},
                          twin={"collect": {"thetas": 2, "inputs_per_theta": 4, "repeats": 1, "repeat_thetas": 1},
                                "fit": {"epochs": 1}, "fidelity": {"directions": 1, "repeats": 1}},
                          method={"name": "pat"}, training={"epochs": 1, "batch_size": 64, "lr": 0.01})


def lose_the_smu_as_collect_starts(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """The 2450's emulator stops (a power cut, a pulled cable) as the collect step starts; returns that step as it
    was, to put back once the SMU is."""
    from hil.orchestrator import Run

    collect = Run.collect

    def instrument_lost(self: Run) -> None:
        self.lab._servers["smu"].stop()
        collect(self)

    monkeypatch.setattr(Run, "collect", instrument_lost)
    return collect


def test_an_instrument_lost_mid_run_is_the_error_said_first_and_its_failed_safe_state_follows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2450 goes away (its emulator stops: a power cut, a pulled cable) as the collection starts. The run failed
    on that, but the error raised was the lab's failure to reach the safe state on the way out, which replaced it:
    the user was told of ':OUTP OFF' failing, not of what stopped the run. Both are said, the cause first, and the
    log ends with the failed safe state. The data of the steps done stay, and the run resumes once the SMU is back."""
    from hil.orchestrator import Run

    collect = lose_the_smu_as_collect_starts(monkeypatch)
    with pytest.raises(HilError) as raised:
        run_protocol(write_probe_protocol(tmp_path), show_progress=False)
    message = str(raised.value)
    cause, _, then = message.partition("; then going to the safe state failed: ")
    assert re.match(r"smu \(TCPIP::127\.0\.0\.1::\d+::SOCKET\): (the instrument closed the connection|connection "
                    r"failed) during '", cause), message
    assert then.startswith("smu (TCPIP::") and "':OUTP OFF'" in then, message
    run = next((tmp_path / "runs").iterdir())
    events = RunStore.open(run).events()
    assert [e["kind"] for e in events[-3:]] == ["step_finished", "run_failed", "run_failed"]
    assert events[-2]["error"] == cause and events[-1]["error"] == "going to the safe state failed: " + then
    assert raised.value.__notes__ == [f"what the run measured is kept in {run}; once the instrument is back, resume "
                                      f"with: {resume_command(run)}"]
    assert emulators_serving() == []
    monkeypatch.setattr(Run, "collect", collect)  # the SMU is back: the lab serves it anew
    store = run_protocol(resume=run, show_progress=False)
    assert store.events()[-1]["kind"] == "run_finished"


def test_a_run_the_bench_failed_says_on_a_line_of_its_own_how_to_resume_it(tmp_path: Path, capsys,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """hil run said the instrument's error and stopped; where the run's data were, and that the run goes on from its
    last checkpoint once the instrument is back, it said nowhere (a stop at Ctrl-C did). A failure of the protocol's own
    (a diverged fit), which a resume would repeat, says no such thing."""
    from hil.cli import main
    from hil.orchestrator import Run

    lose_the_smu_as_collect_starts(monkeypatch)
    assert main(["run", "--quiet", str(write_probe_protocol(tmp_path))]) == 2
    run = next((tmp_path / "runs").iterdir())
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("hil: error: smu (TCPIP::") and said[1:] == [
        f"hil: what the run measured is kept in {run}; once the instrument is back, resume with: {resume_command(run)}"]

    def diverged(self: Run) -> None:
        raise HilError("the twin's fit diverged (loss nan); lower twin.fit.lr")

    monkeypatch.setattr(Run, "collect", diverged)
    (tmp_path / "again").mkdir()
    assert main(["run", "--quiet", str(write_probe_protocol(tmp_path / "again"))]) == 2
    assert capsys.readouterr().err == "hil: error: the twin's fit diverged (loss nan); lower twin.fit.lr\n"


def test_the_report_of_a_run_the_bench_failed_says_how_to_resume_it_as_hil_run_did(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """hil run said, after the instrument's error, to resume once the instrument is back; the log kept the error
    alone, so the report read the next morning (the terminal closed) said that the run failed and nothing of a
    resume. The log's run_failed records what must hold again, and the report says it with the command; a failure of
    the protocol's own, which a resume would repeat, gets neither."""
    from hil.cli import main
    from hil.orchestrator import Run
    from hil.report import write_report

    lose_the_smu_as_collect_starts(monkeypatch)
    assert main(["run", "--quiet", str(write_probe_protocol(tmp_path))]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("hil: what the run measured is kept in ")
    run = next((tmp_path / "runs").iterdir())
    assert [r["status"] for r in list_runs(tmp_path / "runs")] == ["failed in collect"]
    store = RunStore.open(run)
    try:
        assert [e.get("step") for e in store.events()[-2:]] == ["collect", None]  # then the safe state, after it
        assert [e.get("resume_once") for e in store.events()[-2:]] == ["the instrument is back"] * 2
        assert (f"Once the instrument is back, `{resume_command(run)}` continues it from its last checkpoint."
                in write_report(store).read_text())
    finally:
        store.close()

    def diverged(self: Run) -> None:
        raise HilError("the twin's fit diverged (loss nan); lower twin.fit.lr")

    monkeypatch.setattr(Run, "collect", diverged)
    (tmp_path / "again").mkdir()
    assert main(["run", "--quiet", str(write_probe_protocol(tmp_path / "again"))]) == 2
    store = RunStore.open(next((tmp_path / "again" / "runs").iterdir()))
    try:
        assert "resume_once" not in store.events()[-1] and "--resume" not in write_report(store).read_text()
    finally:
        store.close()


class SmuOfAPlugin(Keithley2450):
    """The 2450's driver as a plugin extends it: its reading also asks the instrument's last error, parsed by a
    float() of its own, which an error message in the reply (`misread`) ends in a ValueError."""

    misread: ClassVar[bool] = False

    def _measure_hw(self) -> Any:
        readings = super()._measure_hw()
        float(self.transport.query(":SYST:ERR?") if self.misread else "0")
        return readings


def failed_at_collect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: tuple[str, str], owner: type,
                      flag: str) -> tuple[Path, object]:
    """``hil run`` of the probe protocol on its lab with ``edit`` (old, new) made, ``owner.flag`` set as the run starts
    collecting the twin's data: the run's folder and the SMU's emulator, once the run has failed with exit status 2."""
    from hil.cli import main
    from hil.orchestrator import Run

    protocol = write_probe_protocol(tmp_path)
    lab = tmp_path / "lab.yaml"
    lab.write_text(lab.read_text().replace(*edit))
    collect, emulators = Run.collect, []

    def failing(self: Run) -> None:
        emulators.append(self.lab._servers["smu"].emulator)
        monkeypatch.setattr(owner, flag, True)
        collect(self)

    monkeypatch.setattr(Run, "collect", failing)
    assert main(["run", "--quiet", str(protocol)]) == 2
    return next((tmp_path / "runs").iterdir()), emulators[0]


def test_a_plugin_drivers_own_error_mid_run_is_one_line_naming_the_instrument_and_where(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin driver's own exception during a run (not at connect) ended hil run in its traceback. It is one line
    naming the instrument, the hook, the error and the driver's line, then how to resume once the driver is fixed (it
    said "once the instrument is back", of an instrument that never went); the SMU's output is off and what the run
    measured is kept."""
    plugin = ("driver: keithley_2450", f"driver: {__name__}:SmuOfAPlugin")
    run, emulator = failed_at_collect(tmp_path, monkeypatch, plugin, SmuOfAPlugin, "misread")
    line = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "float(self.trans" in text)
    assert capsys.readouterr().err.splitlines() == [
        f"hil: error: smu: {__name__}.SmuOfAPlugin._measure_hw raised ValueError: could not convert string to float: "
        f"'0,\"No error;0;0 0\"' ({__file__}:{line}); fix the driver there (a reply it cannot read is a DeviceError "
        "naming the command and the reply)",
        f"hil: what the run measured is kept in {run}; once its code is fixed there, resume with: "
        f"{resume_command(run)}"]  # not "once the instrument is back": the instrument never went, the driver slipped
    assert not emulator.output
    events = RunStore.open(run).events()
    assert [e["step"] for e in events if e["kind"] == "step_finished"] == ["calibrate"]
    assert events[-1]["kind"] == "run_failed" and "SmuOfAPlugin._measure_hw raised ValueError" in events[-1]["error"]


class ProbeWithASlip(SourceMeterProbe):
    """A plugin's system whose ``_run`` has a slip of its own once ``slip`` is set: it reads a key that is not
    there."""

    slip = False

    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if self.slip:
            return {}["gain"]
        return super()._run(x, theta)


def test_a_plugin_systems_own_error_mid_run_is_one_line_naming_the_system_and_where(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin system's own exception in ``_run`` ended hil run in its traceback, with exit status 1 (which hil --help
    gives to output that could not be written). As a driver's hook's, it is one line naming the system, the hook, the
    error and the plugin's line, then how to resume once the code is fixed (not "once the instrument is back", which
    never went); the SMU's output is off and what the run measured is kept."""
    run, emulator = failed_at_collect(tmp_path, monkeypatch, (":SourceMeterProbe", ":ProbeWithASlip"), ProbeWithASlip,
                                      "slip")
    line = next(n for n, text in enumerate(Path(__file__).read_text().splitlines(), 1) if '{}["gain"]' in text)
    assert capsys.readouterr().err.splitlines() == [
        f"hil: error: system 'probe': {__name__}.ProbeWithASlip._run raised KeyError: 'gain' ({__file__}:{line}); fix "
        "it there",
        f"hil: what the run measured is kept in {run}; once its code is fixed there, resume with: "
        f"{resume_command(run)}"]
    assert not emulator.output
    events = RunStore.open(run).events()
    assert [e["step"] for e in events if e["kind"] == "step_finished"] == ["calibrate"]
    assert events[-1]["kind"] == "run_failed" and "ProbeWithASlip._run raised KeyError" in events[-1]["error"]


def test_a_run_refused_an_instrument_another_process_holds_says_to_resume_once_it_is_free(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The note said "once the instrument is back", of an instrument that never went: another process holds it."""
    from hil.cli import main
    from hil.errors import InstrumentBusy
    from hil.orchestrator import Run

    def held(self: Run) -> None:
        raise InstrumentBusy("smu (TCPIP::127.0.0.1::5025::SOCKET): in use by another process (pid 1: hil run p.yaml)")

    monkeypatch.setattr(Run, "collect", held)
    assert main(["run", "--quiet", str(write_protocol(tmp_path, **SMALL))]) == 2
    run = next((tmp_path / "runs").iterdir())
    assert capsys.readouterr().err.splitlines()[1] == (
        f"hil: what the run measured is kept in {run}; once the instrument is free, resume with: {resume_command(run)}")


class CountedCrossbar(CrossbarSystem):
    """The crossbar, counting the calls of `device_state_lost` (shared, as the lab builds the system anew)."""

    lost: ClassVar[list[str]] = []

    def device_state_lost(self) -> None:
        self.lost.append(self.name)


def failed_at(step: str, protocol: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run ``protocol`` with its ``step`` (a `Run` method) failing with a `HilError`; returns the newest run folder
    beside it, which a resume continues with the step as it is."""
    from hil.orchestrator import Run

    def failed(self: Run) -> None:
        raise HilError(f"a failure at {step}")

    with monkeypatch.context() as patch:
        patch.setattr(Run, step, failed)
        with pytest.raises(HilError, match=f"a failure at {step}"):
            run_protocol(protocol, show_progress=False)
    return max((protocol.parent / "runs").iterdir())


def test_a_resumed_run_sets_the_working_point_again_on_bench_instruments_only(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run connects its bench instruments anew: what the calibration set on them (the 2450's compliance and
    output) is set again through `device_state_lost`, a hook of every system, while a simulated bench, restored
    exactly from the checkpoint, is left alone. The hook was called for any system of a lab with one instrument not
    simulated (the default lab's emulators), the crossbar's included, and was documented nowhere."""
    lab = (tmp_path / "lab.yaml")
    for protocol in (write_probe_protocol(tmp_path), write_protocol(tmp_path, **SMALL | {"lab": str(lab)})):
        lab.write_text(lab.read_text().replace("kind: crossbar\n", "kind: tests.test_orchestrator:CountedCrossbar\n"))
        run = failed_at("fit_twin", protocol, monkeypatch)
        store = run_protocol(resume=run, show_progress=False)  # the 2450 is unconfigured without the hook
        assert store.events()[-1]["kind"] == "run_finished"
    assert CountedCrossbar.lost == []
    assert PhysicalSystem.device_state_lost.__doc__


def _probe_protocol_with_its_smu_at_a_free_port(tmp_path: Path) -> tuple[Path, int]:
    """`write_probe_protocol`, its lab's 2450 at a TCP port on 127.0.0.1 where nothing listens, for now (an instrument
    switched off), with a 1 s timeout: the protocol, and the port an emulator started there switches it on at."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    protocol = write_probe_protocol(tmp_path)
    lab = tmp_path / "lab.yaml"
    lab.write_text(lab.read_text().replace("  smu:\n    driver: keithley_2450\n    emulate:\n      load_ohm: 1000\n",
                                           f'  smu:\n    driver: keithley_2450\n    resource: "TCPIP::127.0.0.1::{port}'
                                           '::SOCKET"\n    timeout_s: 1\n'))
    return protocol, port


def test_a_new_run_whose_instrument_is_off_records_why_and_resumes_once_it_is_on(tmp_path: Path) -> None:
    """The 2450 is off when the run starts: connecting fails after the run folder is made. The folder was left with an
    empty log, listed as 'incomplete' with nothing to say why; it records the failure as a run that failed while it
    prepared does, and starts over on resume once the instrument answers."""
    from simulators.emulators.keithley2450 import Keithley2450Emulator
    from simulators.emulators.server import TcpServer

    protocol, port = _probe_protocol_with_its_smu_at_a_free_port(tmp_path)
    with pytest.raises(HilError, match=r"^smu \(TCPIP::127\.0\.0\.1::\d+::SOCKET\): connection failed during 'open'"):
        run_protocol(protocol, show_progress=False)
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()] == ["run_failed"]
    assert "connection failed during 'open'" in store.events()[0]["error"]
    store.close()
    assert [(r["protocol"], r["status"]) for r in list_runs(tmp_path / "runs")] == [("resume-test", "failed")]
    with TcpServer(Keithley2450Emulator(load_ohm=1000), port=port):  # switched on
        assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def test_a_resume_whose_instrument_is_still_off_is_listed_as_running_as_it_connects_and_logs_its_failure_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run rewound its log only once its instruments were connected (a bench's may take a minute): hil runs
    listed it meanwhile as its attempt before had ended ('failed in collect'), and a resume that failed to connect (the
    instrument still off) appended its run_failed to that attempt's ending, which the report joined with '; then', as
    one attempt's failure followed by a failed safe state. The log is rewound before the instruments connect."""
    from hil.lab import Lab
    from hil.orchestrator import Run
    from hil.report import write_report
    from simulators.emulators.keithley2450 import Keithley2450Emulator
    from simulators.emulators.server import TcpServer

    protocol, port = _probe_protocol_with_its_smu_at_a_free_port(tmp_path)
    server = TcpServer(Keithley2450Emulator(load_ohm=1000), port=port).start()
    collect = Run.collect

    def switched_off(self: Run) -> None:
        server.stop()
        collect(self)

    monkeypatch.setattr(Run, "collect", switched_off)
    with pytest.raises(HilError, match=r"^smu \(TCPIP::"):
        run_protocol(protocol, show_progress=False)
    monkeypatch.setattr(Run, "collect", collect)
    [run] = (tmp_path / "runs").iterdir()
    assert [r["status"] for r in list_runs(tmp_path / "runs")] == ["failed in collect"]
    listed = []
    opened = Lab.open

    def watched(self: Lab, *args: Any, **kwargs: Any) -> Lab:
        listed.append(list_runs(tmp_path / "runs")[0]["status"])  # hil runs in another shell, as it connects
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Lab, "open", watched)
    with pytest.raises(HilError, match=r"^smu \(TCPIP::127\.0\.0\.1::\d+::SOCKET\): connection failed during 'open'"):
        run_protocol(resume=run, show_progress=False)
    assert listed == ["running"]
    store = RunStore.open(run)
    try:
        ending = [e for e in store.events() if e["kind"] == "run_failed"]
        assert len(ending) == 1 and "connection failed during 'open'" in ending[0]["error"]
        discarded = [json.loads(line) for line in (run / "events.discarded.jsonl").read_text().splitlines()]
        assert [e.get("step") for e in discarded if e["kind"] == "run_failed"] == ["collect", None]
        summary = write_report(store).read_text()  # the attempt before said apart, where its events now are
        assert "; then" not in summary and "of the attempt before it out of this log, to `events.discarded" in summary
    finally:
        store.close()
    with TcpServer(Keithley2450Emulator(load_ohm=1000), port=port):  # switched on: the run goes on to its end
        assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def refuse_run_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses the run_failed event (full), and takes the others."""
    event = RunStore.event

    def full_disk(self: RunStore, kind: str, **fields):
        if kind == "run_failed":
            raise RunFileError(f"{self.path / 'events.jsonl'}: cannot write (No space left on device)")
        return event(self, kind, **fields)

    monkeypatch.setattr(RunStore, "event", full_disk)


@pytest.mark.parametrize(("changes", "said"), [
    ({"method": {"name": "pat", "settings": {"refine_every": 1, "refine_lr": 1e6}}},
     "the twin's online refinement diverged at epoch 1, batch 1"),
    ({}, "the collect step ran out of memory"),
])
def test_a_failed_step_whose_event_the_disk_refuses_says_the_failure_then_the_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict, said: str) -> None:
    """The log then ends without the failure: hil runs lists the run as incomplete, and only the error says why."""
    refuse_run_failed(monkeypatch)
    if "memory" in said:
        collect_out_of_memory(monkeypatch)
    with pytest.raises(HilError, match=rf"^{said}: .*; then logging the failure failed: \S*events\.jsonl: cannot "
                                       r"write \(No space left on device\)$"):
        run_protocol(write_protocol(tmp_path, **SMALL | changes), show_progress=False)
    [run] = list_runs(tmp_path / "runs")
    assert run["status"] == "incomplete"


@pytest.mark.parametrize("lost", ["at_start", "mid_run"])
def test_an_instrument_failure_is_said_even_where_the_disk_refuses_to_log_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            lost: str) -> None:
    """An instrument fails, and the log cannot take the run_failed event (the disk is full): the error raised was the
    log's, 'cannot write events.jsonl', and the instrument's failure was said nowhere; then it was said, but not that
    the log lacks it (hil runs lists such a run as incomplete, its report as stopped)."""

    refuse_run_failed(monkeypatch)
    protocol = write_probe_protocol(tmp_path)
    if lost == "at_start":
        lab = tmp_path / "lab.yaml"
        lab.write_text(lab.read_text().replace("    emulate:\n      load_ohm: 1000\n",
                                               '    resource: "TCPIP::127.0.0.1::1::SOCKET"\n    timeout_s: 0.3\n'))
    else:
        lose_the_smu_as_collect_starts(monkeypatch)
    with pytest.raises(HilError, match=r"^smu \(TCPIP::127\.0\.0\.1::\d+::SOCKET\): .*; then logging the failure "
                                       r"failed: \S*events\.jsonl: cannot write \(No space left on device\)\n"
                                       r"what the run measured is kept in \S+; once the instrument is back, resume "
                                       r"with: hil run --resume \S+$"):  # the note, which pytest matches too
        run_protocol(protocol, show_progress=False)


def test_a_run_stopped_at_a_ctrl_c_whose_instrument_is_then_lost_says_both_and_keeps_its_exit_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.orchestrator import Interrupted, Run

    collect = Run.collect

    def ctrl_c_then_lost(self: Run) -> None:
        collect(self)
        self.stop.requested = True  # a first Ctrl-C during the step: the run saves after it and stops
        self.lab._servers["smu"].stop()

    monkeypatch.setattr(Run, "collect", ctrl_c_then_lost)
    with pytest.raises(Interrupted) as raised:
        run_protocol(write_probe_protocol(tmp_path), show_progress=False)
    run = next((tmp_path / "runs").iterdir())
    assert raised.value.exit_status == 130
    assert re.match(rf"stopped at your request after saving; resume with: hil run --resume {re.escape(str(run))}; "
                    r"then going to the safe state failed: smu \(TCPIP::", str(raised.value)), str(raised.value)
    assert [e["kind"] for e in RunStore.open(run).events()[-2:]] == ["run_interrupted", "run_failed"]
    monkeypatch.setattr(Run, "collect", collect)
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


@pytest.mark.parametrize("given", [{"seed": 5}, {"lab_path": REPO / "lab.yaml"}, {"output_root": "elsewhere"},
                                   {"protocol_path": "p.yaml", "seed": 0}])
def test_a_resume_from_python_refuses_a_protocol_lab_seed_or_folder_of_its_own(finished_run: Path, given: dict) -> None:
    """From Python, a resume given a seed, a lab, an output root or a protocol went on with the run's own, silently:
    the result was not the one asked for (hil run refuses --seed and --lab with --resume)."""
    events = (finished_run / "events.jsonl").read_bytes()
    names = " and ".join(given)
    with pytest.raises(ConfigError, match=rf"^resume continues a run with its own protocol, lab, seed and folder; give "
                                          rf"resume alone, without {names}$"):
        run_protocol(resume=finished_run, show_progress=False, **given)
    assert (finished_run / "events.jsonl").read_bytes() == events


def test_a_lab_file_given_for_a_protocol_is_named_as_one_from_python_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lab\.yaml is a lab file; hil run takes a protocol \(e\.g\. "
                                          r"experiments/\*\.yaml\), and a lab with --lab$"):
        run_protocol(REPO / "lab.yaml", show_progress=False, output_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_captures_repeated_after_dropped_frames_are_shown_logged_and_reported(tmp_path: Path) -> None:
    """A camera on a busy link drops a frame now and then: the run goes on, each repeated capture is a one-line
    warning on the terminal and a ``warning`` event in the log, and the report counts them."""
    lab = tmp_path / "lab.yaml"
    text = (REPO / "lab.yaml").read_text()
    table = "  table: {kind: optical_table, preset: realistic, seed: 0}\n"
    assert table in text
    lab.write_text(text.replace(table, "  table: {kind: optical_table, preset: realistic, seed: 0,\n"
                                       "          config: {shot: {frame_drop_probability: 0.0015}}}\n"))
    protocol = write_protocol(tmp_path, **SMALL | {"lab": str(lab), "system": "optical"})
    result = subprocess.run([sys.executable, "-m", "hil.cli", "run", str(protocol)], capture_output=True, text=True,
                            cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stderr.splitlines() if line.startswith("hil: warning: ")]
    store = RunStore.open(next((tmp_path / "runs").iterdir()))
    logged = [e for e in store.events() if e["kind"] == "warning"]
    store.close()
    assert shown and len(logged) == len(shown)
    assert all(e["category"] == "DeviceWarning" and f"hil: warning: {e['message']}" == line
               for e, line in zip(logged, shown, strict=True))
    assert re.search(r"camera: .*; showing the \d+ patterns again \(try 2 of 3\)", logged[0]["message"])
    summary = (store.path / "report" / "summary.md").read_text()
    assert f" {len(logged)} warning{'s' if len(logged) > 1 else ''} during the run (each in `events.jsonl`), the " \
           f"first: {logged[0]['message']}." in summary


def warning_while_preparing(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make `Run.prepare` end with a warning, as the traffic log stopping on a full disk gives (hil's own, which a
    run logs as a ``warning`` event); returns its message."""
    import warnings

    from hil.orchestrator import Run
    from hil.transport import TrafficLogStopped

    message = "traffic log logs/awg.log: cannot write (No space left on device); logging stops here"
    prepare = Run.prepare

    def prepare_then_warn(self: Run, data=None) -> None:
        prepare(self, data)
        warnings.warn(message, TrafficLogStopped, stacklevel=2)

    monkeypatch.setattr(Run, "prepare", prepare_then_warn)
    return message


def test_a_run_stopped_before_its_first_checkpoint_after_a_warning_starts_over_when_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning while a new run prepares is logged before its first checkpoint; such a run has measured nothing,
    yet resuming it was refused ("checkpoint missing; resuming would redo the run and overwrite its data"), as if the
    warning were a step's event: the run could never be resumed."""
    from hil.transport import TrafficLogStopped

    message = warning_while_preparing(monkeypatch)
    with pytest.warns(TrafficLogStopped, match=re.escape(message)):
        sigterm_after("prepare", monkeypatch, protocol_path=write_protocol(tmp_path, **SMALL))
    monkeypatch.undo()
    [run] = (tmp_path / "runs").iterdir()
    store = RunStore.open(run)
    assert [e["kind"] for e in store.events()] == ["warning", "run_interrupted"] and store.load_checkpoint() is None
    store.close()
    events = run_protocol(resume=run, show_progress=False).events()
    assert [e["kind"] for e in events][:1] + [e["kind"] for e in events][-1:] == ["run_started", "run_finished"]


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_warning_while_a_resumed_run_prepares_stays_in_its_log_not_in_the_discarded_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpointed: bool) -> None:
    """A resumed run moved the unfinished part of the attempt before to ``events.discarded.jsonl`` only once it had
    prepared and restored itself: a warning it logged meanwhile (the traffic log stopping as the bench is set up
    again) went with that part, out of the log and its report, as if the killed attempt had logged it."""
    protocol = write_protocol(tmp_path, **SMALL)
    if checkpointed:
        run = interrupted_after_fit_twin(protocol, monkeypatch)
    else:
        sigterm_after("prepare", monkeypatch, protocol_path=protocol)
        [run] = (tmp_path / "runs").iterdir()
    discarded = run / "events.discarded.jsonl"
    assert not discarded.exists()
    from hil.transport import TrafficLogStopped

    message = warning_while_preparing(monkeypatch)
    with pytest.warns(TrafficLogStopped, match=re.escape(message)):
        events = run_protocol(resume=run, show_progress=False).events()
    assert [e["message"] for e in events if e["kind"] == "warning"] == [message]
    assert [json.loads(line)["kind"] for line in discarded.read_text().splitlines()] == ["run_interrupted"]
    assert events[-1]["kind"] == "run_finished" and [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_library_deprecation_that_is_also_a_user_warning_is_shown_as_python_does_but_not_logged(
        tmp_path: Path) -> None:
    """pyparsing 3.3's PyparsingDeprecationWarning is a UserWarning and a DeprecationWarning: where deprecations are
    shown (python -W default, pytest), matplotlib before 3.10.7 raised 13 of them drawing a report's first figure, and
    the run logged each as one of its own warnings, as the report then counted them."""
    from hil.orchestrator import _warnings_logged

    class LibraryDeprecation(UserWarning, DeprecationWarning):
        pass

    (tmp_path / "run").mkdir()
    store = RunStore(tmp_path / "run")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with _warnings_logged(store):
            warnings.warn("'parseString' deprecated - use 'parse_string'", LibraryDeprecation, stacklevel=1)
    assert [(str(w.message), w.category) for w in shown] == [
        ("'parseString' deprecated - use 'parse_string'", LibraryDeprecation)]
    assert [e for e in store.events() if e["kind"] == "warning"] == []
    store.close()


def test_each_hil_warning_during_a_run_is_shown_and_logged_and_a_full_disk_stops_neither(tmp_path: Path) -> None:
    """Python shows a warning once per line of code by default: a camera that dropped frames on two sequences with
    the same message would have said so (and logged it) once. A traffic log that stops is hil's warning too, and is
    logged; a library's RuntimeWarning is shown but is not hil's, so it is not logged (the report counts hil's). A
    disk that refuses a warning's event must not turn the warning into an error that stops the run. After the run,
    warnings are no longer logged into its closed log."""
    from hil.errors import DeviceWarning
    from hil.orchestrator import _warnings_logged
    from hil.transport import TrafficLogStopped

    (tmp_path / "run").mkdir()
    store = RunStore(tmp_path / "run")
    dropped = "camera: asked for 8 frame(s), got 7; showing the 8 patterns again (try 2 of 3)"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # Python's own filter for a UserWarning, as `hil run` has it
        with _warnings_logged(store):
            for _ in range(2):
                warnings.warn(dropped, DeviceWarning, stacklevel=1)
            warnings.warn("traffic log x.log: cannot write", TrafficLogStopped, stacklevel=1)
            warnings.warn("overflow encountered in exp", RuntimeWarning, stacklevel=1)
            logged = store.events()
            store._events = RefusingLog(store._events)  # the disk is full from here
            try:
                warnings.warn("camera: frame(s) dropped after frame index 3 (next index 5)", DeviceWarning,
                              stacklevel=1)
            finally:
                store._events = store._events.log
        warnings.warn("after the run", UserWarning, stacklevel=1)
    assert [(str(w.message), w.category) for w in shown] == [
        (dropped, DeviceWarning), (dropped, DeviceWarning), ("traffic log x.log: cannot write", TrafficLogStopped),
        ("overflow encountered in exp", RuntimeWarning),
        ("camera: frame(s) dropped after frame index 3 (next index 5)", DeviceWarning), ("after the run", UserWarning)]
    assert [(e["kind"], e["category"], e["message"]) for e in logged] == [
        ("warning", "DeviceWarning", dropped), ("warning", "DeviceWarning", dropped),
        ("warning", "TrafficLogStopped", "traffic log x.log: cannot write")]
    assert store.events() == logged
    store.close()


def test_a_first_ctrl_c_logs_the_stop_once_the_checkpoint_it_speaks_of_is_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"stopped at your request after saving" was logged while the checkpoint was still being written in the
    background: a kill then left a log claiming a save that never reached the disk."""
    from hil.orchestrator import Interrupted, Run

    event, writing = RunStore.event, []

    def noting_the_writer(self: RunStore, kind: str, **fields):
        if kind == "run_interrupted":
            writing.append(self._writer is not None and self._writer.is_alive())
        return event(self, kind, **fields)

    def calibrate_then_ctrl_c(self: Run) -> None:
        calibrate(self)
        self.stop.requested = True

    import hil.store

    calibrate, write = Run.calibrate, hil.store.atomic_write

    def slow_write(*args, **kwargs):
        time.sleep(0.2)  # a large checkpoint on a slow disk
        return write(*args, **kwargs)

    monkeypatch.setattr(hil.store, "atomic_write", slow_write)
    monkeypatch.setattr(RunStore, "event", noting_the_writer)
    monkeypatch.setattr(Run, "calibrate", calibrate_then_ctrl_c)
    with pytest.raises(Interrupted, match="stopped at your request after saving"):
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    assert writing == [False]


def test_the_resume_command_a_stop_gives_for_a_folder_with_a_space_is_quoted_for_the_shell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pasted as given, an unquoted path with a space resumed nothing: hil refused its unrecognized arguments."""
    info = sigterm_after("prepare", monkeypatch, protocol_path=write_protocol(tmp_path, **SMALL),
                         output_root=tmp_path / "my runs")
    [run] = (tmp_path / "my runs").iterdir()
    assert str(info.value).endswith(f"with: hil run --resume '{run}'")


def test_a_run_stopped_at_once_whose_safe_state_fails_does_not_say_the_instruments_were_made_safe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop at once says 'instruments were put in their safe state'; where the safe state then fails (the SMU gone),
    that is untrue: the message keeps the stop, its exit status and the resume command, and says the failure after."""
    from hil.orchestrator import Interrupted, Run

    def lost_then_stopped(self: Run) -> None:
        self.lab._servers["smu"].stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "collect", lost_then_stopped)
    with pytest.raises(Interrupted) as raised:
        run_protocol(write_probe_protocol(tmp_path), show_progress=False)
    message = str(raised.value)
    assert raised.value.exit_status == 130
    assert message.startswith("stopped at once by a second Ctrl-C; resume from the last checkpoint with: hil run "
                              "--resume "), message
    assert "; then going to the safe state failed: smu (TCPIP::" in message, message
    assert "safe state;" not in message and "put in their safe state" not in message, message


def test_a_run_that_finished_and_then_failed_to_go_to_the_safe_state_says_both_and_not_to_resume_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The SMU lost as a finished run closed its lab: hil said the SMU's error alone, as if the run had failed, and
    'once the instrument is back, resume with: ...', a resume that finds the run finished and does nothing."""
    from hil.cli import main
    from hil.orchestrator import Run

    report = Run.report

    def report_then_lost(self: Run) -> None:
        report(self)
        self.lab._servers["smu"].stop()

    monkeypatch.setattr(Run, "report", report_then_lost)
    assert main(["run", "--quiet", str(write_probe_protocol(tmp_path))]) == 2
    [run] = (tmp_path / "runs").iterdir()
    err = capsys.readouterr().err
    assert re.fullmatch(rf"hil: error: the run finished \(its report: {re.escape(str(run / 'report/summary.md'))}\); "
                        r"then going to the safe state failed: smu \(TCPIP::[^\n]*\n", err), err
    store = RunStore.open(run)
    assert store.events()[-1]["kind"] == "run_finished"  # the run is whole: hil runs lists it as finished
    store.close()


def test_the_resume_command_a_first_ctrl_c_gives_for_a_folder_with_a_space_is_quoted_for_the_shell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop after saving says its resume command as the stop at once does: quoted, or pasted as given it resumed
    nothing (hil refused its unrecognized arguments)."""
    from hil.orchestrator import Interrupted, Run

    calibrate = Run.calibrate

    def calibrate_then_ctrl_c(self: Run) -> None:
        calibrate(self)
        self.stop.requested = True

    monkeypatch.setattr(Run, "calibrate", calibrate_then_ctrl_c)
    with pytest.raises(Interrupted, match="stopped at your request after saving") as raised:
        run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False, output_root=tmp_path / "my runs")
    [run] = (tmp_path / "my runs").iterdir()
    assert str(raised.value).endswith(f"resume with: hil run --resume '{run}'")


def traffic_logged_probe(tmp_path: Path) -> tuple[Path, Path, Path]:
    """`write_probe_protocol` with the SMU's traffic logged to the relative ``logs/bench.log``; and two empty
    folders to start and resume it from."""
    protocol = write_probe_protocol(tmp_path)
    lab = tmp_path / "lab.yaml"
    smu = "  smu:\n    driver: keithley_2450\n    emulate:\n      load_ohm: 1000\n"
    lab.write_text(lab.read_text().replace(smu, smu + "    traffic_log: logs/bench.log\n"))
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    return protocol, started, elsewhere


def test_a_run_resumed_from_another_folder_keeps_its_traffic_log_where_it_started(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab's relative traffic_log lies in the working directory; a run resumed from another folder logged the
    rest of its exchanges there, so the bench's record was split in two. The run records the folder it started in,
    and its resume resolves the lab's relative paths from there."""
    protocol, started, elsewhere = traffic_logged_probe(tmp_path)
    monkeypatch.chdir(started)
    run = failed_at("fit_twin", protocol, monkeypatch)
    log = started / "logs" / "bench.log"
    before = log.read_bytes().count(b"\n")
    monkeypatch.chdir(elsewhere)
    store = run_protocol(resume=run, show_progress=False)
    assert store.events()[-1]["kind"] == "run_finished"
    assert log.read_bytes().count(b"\n") > before and not (elsewhere / "logs").exists()
    assert store.events()[0]["working_directory"] == str(started)


def test_a_run_resumed_before_a_checkpoint_keeps_the_folder_it_started_in(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped between run_started and its first checkpoint starts again on resume, its log rewound to the
    start: the run_started it logs again recorded the resume's folder, while its lab was read from the first, so a
    later resume logged the bench's exchanges in a second traffic log."""
    protocol, started, elsewhere = traffic_logged_probe(tmp_path)
    monkeypatch.chdir(started)
    run = failed_at("checkpoint", protocol, monkeypatch)
    monkeypatch.chdir(elsewhere)
    store = run_protocol(resume=run, show_progress=False)
    assert store.events()[-1]["kind"] == "run_finished"
    assert store.events()[0]["working_directory"] == str(started) and not (elsewhere / "logs").exists()


def test_a_protocols_lab_and_from_run_in_the_home_folder_are_found_there(finished_run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``lab: ~/lab.yaml`` was "not found" and ``twin.from_run: ~/runs/…`` had "no twin/": both were looked for in a
    folder named ``~`` of the working directory, while ``output.root`` and ``dataset.path`` took ``~`` for the
    home. Every path of a protocol now does."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    shutil.copy(REPO / "lab.yaml", home / "lab.yaml")
    copy_of(finished_run, home / "runs")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    protocol = write_protocol(tmp_path, **SMALL | {"lab": "~/lab.yaml", "twin": SMALL["twin"] | {
        "from_run": f"~/runs/{finished_run.name}"}})
    store = run_protocol(protocol, show_progress=False)
    assert store.events()[-1]["kind"] == "run_finished" and not (tmp_path / "~").exists()
    assert yaml.safe_load((store.path / "protocol.yaml").read_text())["twin"]["from_run"] == \
        str(home / "runs" / finished_run.name)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run stopped at once in its second epoch (checkpointed after the first); tests change copies of it."""
    from hil.orchestrator import Interrupted, Run

    folder = tmp_path_factory.mktemp("stopped")
    batches = Run._batches

    def killed_in_the_second_epoch(self: Run, epoch: int) -> list[torch.Tensor]:
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        return batches(self, epoch)

    protocol = write_protocol(folder, **SMALL | {"training": SMALL["training"] | {"epochs": 2}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Run, "_batches", killed_in_the_second_epoch)
        with pytest.raises(Interrupted, match="stopped at once by killed"):
            run_protocol(protocol, show_progress=False)
    [run] = (folder / "runs").iterdir()
    return run


def _resealed(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change ``run``'s checkpoint and seal it anew, as someone handing on a crafted one could."""
    store = RunStore.open(run)
    saved = store.load_checkpoint()
    store.close()
    change(saved)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    store_module.atomic_write(run / store_module.CHECKPOINT, store_module.seal_checkpoint(buffer.getvalue()))


@pytest.mark.parametrize(("change", "said"), [
    (lambda saved: saved.pop("file_digests"), "file_digests is missing"),
    (lambda saved: saved.update(next_seq="7"), "next_seq is a str"),
    (lambda saved: saved.update(bench={"worlds": {}}), "bench lacks its worlds, instruments or systems"),
    (lambda saved: saved.update(data_split=7), "data_split is a int"),
    (lambda saved: saved["model"].update(extra=torch.zeros(1)), "its network or optimiser"),
    (lambda saved: saved.pop("twin"), "twin is missing"),
    (lambda saved: saved["twin"].update(extra=torch.zeros(1)), "its twin"),
    (lambda saved: saved["bench"]["systems"].update({"crossbar": {"programmings": [1]}}), "the state saved of"),
])
def test_a_checkpoint_sealed_anew_with_other_fields_is_refused_in_one_line_naming_it(
        stopped_run: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], said: str) -> None:
    """Such a checkpoint (its fields missing, of other types, of another network) made the resume end in a KeyError,
    ValueError or RuntimeError traceback."""
    run = tmp_path / stopped_run.name
    shutil.copytree(stopped_run, run)
    _resealed(run, change)
    before = (run / "events.jsonl").read_bytes()
    with pytest.raises(RunFileError) as refused:
        run_protocol(resume=run, show_progress=False)
    message = str(refused.value)
    assert message.startswith(f"{run / 'checkpoint.pt'}: ") and said in message and "\n" not in message
    assert "restore the run's own from a backup, or start a new run" in message
    kept = (run / "events.jsonl").read_bytes() + ((run / "events.discarded.jsonl").read_bytes()
                                                  if (run / "events.discarded.jsonl").exists() else b"")
    assert all(line in kept for line in before.splitlines(keepends=True))  # every event still on disk


def test_a_run_whose_data_set_now_splits_otherwise_is_not_resumed_onto_its_own_test_samples(
        stopped_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hil that splits the set otherwise (here: each class's samples drawn by another generator) resumed the run on
    a training set holding samples it had been tested on, and measured its final accuracy partly on samples it had
    trained on. The resume is refused before the bench is touched, the run left as it was; the split it started with
    resumes it."""
    import numpy as np

    import hil.datasets

    run = copy_of(stopped_run, tmp_path)
    split = hil.datasets._stratified_split
    with monkeypatch.context() as patch:
        patch.setattr(hil.datasets, "_stratified_split", lambda labels, fraction, rng: split(
            labels, fraction, np.random.default_rng(99)))
        refusal = refused_resume(run)
    assert refusal == (f"{run}: the digits data set now splits into other training and test samples than when the run "
                       "started (this hil splits it otherwise); resumed, it would train on samples it was tested on: "
                       "start a new run")
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"


def test_a_run_checkpointed_before_splits_were_recorded_is_not_resumed_onto_its_own_test_samples(
        stopped_run: Path, tmp_path: Path) -> None:
    """A checkpoint without data_split was written by a hil from before the digits and vowels splits were
    stratified, which split the set otherwise: it resumed unchecked, onto a training set holding samples the run had
    been tested on. It is refused as a split that changed is, the run left as it was."""
    run = copy_of(stopped_run, tmp_path)
    _resealed(run, lambda saved: saved.pop("data_split"))
    assert refused_resume(run) == (f"{run}: the digits data set now splits into other training and test samples than "
                                   "when the run started (the hil that started it split it otherwise); resumed, it "
                                   "would train on samples it was tested on: start a new run")


def refused_resume(run: Path) -> str:
    """The message of the `ConfigError` a resume of ``run`` is refused with, the run's files left as they were."""
    before = files(run)
    with pytest.raises(ConfigError) as refused:
        run_protocol(resume=run, show_progress=False)
    assert files(run) == before
    return str(refused.value)


def test_a_resumed_run_takes_its_bench_to_the_safe_state_before_setting_it_up_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed with its SMU sourcing leaves it so; the resume connected and sent the working point's settings
    (function, compliance, ranges) to the live output, where a new run first ramps it down and switches it off."""
    from hil.orchestrator import Interrupted, Run
    from simulators.emulators.keithley2450 import Keithley2450Emulator

    protocol = write_probe_protocol(tmp_path)
    fit = Run.fit_twin
    with monkeypatch.context() as patch:
        patch.setattr(Run, "fit_twin", lambda self: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(Interrupted):
            run_protocol(protocol, show_progress=False)
    assert Run.fit_twin is fit
    made: list[Keithley2450Emulator] = []
    made_as = Keithley2450Emulator.__init__

    def left_sourcing(self: Keithley2450Emulator, *args: Any, **kwargs: Any) -> None:  # as the killed run left it
        made_as(self, *args, **kwargs)
        for message in (b":SOUR:FUNC VOLT", b":SOUR:VOLT 0.4", b":OUTP ON"):
            self.handle(message)
        self.received.clear()
        made.append(self)

    monkeypatch.setattr(Keithley2450Emulator, "__init__", left_sourcing)
    [run] = (tmp_path / "runs").iterdir()
    assert run_protocol(resume=run, show_progress=False).events()[-1]["kind"] == "run_finished"
    received = [message.decode() for message in made[0].received]
    off = received.index(":OUTP OFF")
    setting = next(k for k, message in enumerate(received) if message.startswith((":SENS", ":SOUR:VOLT:ILIM")))
    assert off < setting, received[:setting + 1]


def test_a_reused_runs_data_that_are_not_twin_data_are_refused_at_the_protocols_line(finished_run: Path,
                                                                                      tmp_path: Path) -> None:
    """A NaN in the reused run's measurements (its file made or edited by hand) was refused naming the field alone,
    not the protocol file and line, where every other refusal of twin.from_run is located."""
    import h5py

    source = copy_of(finished_run, tmp_path / "source")
    with h5py.File(source / "data/twin_data.h5", "r+") as file:
        file["y"][0, 0, 0] = float("nan")
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
    with pytest.raises(ConfigError) as refused:
        run_protocol(protocol, show_progress=False)
    assert re.fullmatch(rf"{re.escape(str(protocol))}:\d+: twin\.from_run: {re.escape(str(source))}/data/"
                        r"twin_data\.h5: not twin data: y holds NaN or infinite values; point it at a run that "
                        r"finished its collect step", str(refused.value)), str(refused.value)


@pytest.mark.parametrize(("twin", "hidden"), [("neural", [256, 256]), ("residual", [128, 128]), ("physics", None)])
def test_protocol_yaml_records_the_method_settings_and_twin_widths_a_run_took_by_default(tmp_path: Path, twin: str,
                                                                                         hidden: list | None) -> None:
    """The method's settings and a network twin's hidden widths, left out of a protocol, were recorded as written
    (``settings: {}``, ``hidden: null``): what the run took by default was nowhere in its folder's protocol."""
    from hil.config import dump_yaml
    from hil.methods.pat import PatSettings
    from hil.protocol import build_method, load_protocol, recorded

    protocol, _ = load_protocol(write_protocol(tmp_path, method={"name": "pat", "settings": {"refine_every": 4}},
                                               twin={**PROTOCOL["twin"], "kind": twin}))
    fields = recorded(protocol)
    assert fields["method"]["settings"] == PatSettings(refine_every=4).model_dump(mode="json")
    assert set(fields["method"]["settings"]) == {"refine_every", "refine_steps", "refine_lr", "refine_window"}
    assert fields["twin"]["hidden"] == hidden
    (tmp_path / "recorded.yaml").write_text(dump_yaml(fields))
    again, _ = load_protocol(tmp_path / "recorded.yaml")  # a resume reads it back as the same protocol
    assert build_method(again).settings == build_method(protocol).settings and recorded(again) == fields


def test_protocol_yaml_names_the_lab_given_for_the_run_not_the_protocols(tmp_path: Path) -> None:
    """With another lab given (``hil run --lab``), protocol.yaml still named the protocol's own: run again from it,
    the protocol ran on that lab's device (another world seed here), with nothing to say it was not the same."""
    bench = tmp_path / "bench2.yaml"
    bench.write_text((REPO / "lab.yaml").read_text().replace("kind: memristor_crossbar, preset: realistic, seed: 0",
                                                             "kind: memristor_crossbar, preset: realistic, seed: 7"))
    store = run_protocol(write_protocol(tmp_path, **SMALL), lab_path=bench, show_progress=False)
    recorded_lab = yaml.safe_load((store.path / "protocol.yaml").read_text())["lab"]
    assert recorded_lab == str(bench) != PROTOCOL["lab"]
    assert (store.path / "lab.yaml").read_text() == Path(recorded_lab).read_text()


def test_a_run_records_the_commit_of_the_hil_source_it_ran(tmp_path: Path) -> None:
    """hil's version is 0.1.0 from commit to commit (an earlier hil split the data otherwise, with the same version):
    the commit of the checkout it runs from, and whether its code was changed since, is what tells one hil from
    another; none is claimed for a folder that is not a checkout's root (a wheel's site-packages in a project), nor
    where git cannot read the checkout."""
    from hil.orchestrator import SOURCE_ROOT, software_versions, source_commit

    def git(*args: str, cwd: Path = tmp_path / "src") -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "HEAD", cwd=SOURCE_ROOT)
    assert software_versions()["hil_commit"] == source_commit() and source_commit().startswith(head)
    (tmp_path / "src" / "hil").mkdir(parents=True)
    (tmp_path / "src" / "hil" / "nn.py").write_text("x = 1\n")
    (tmp_path / "src" / "README.md").write_text("notes\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=n", "-c", "user.email=n@n", "commit", "-q", "-m", "first")
    commit = git("rev-parse", "HEAD")
    assert source_commit(tmp_path / "src") == commit
    (tmp_path / "src" / "README.md").write_text("other notes\n")  # not code a run computes with
    assert source_commit.__wrapped__(tmp_path / "src") == commit
    (tmp_path / "src" / "hil" / "nn.py").write_text("x = 2\n")
    modified = source_commit.__wrapped__(tmp_path / "src")
    assert re.fullmatch(f"{commit}\\+modified\\.[0-9a-f]{{12}}", modified)
    (tmp_path / "src" / "hil" / "nn.py").write_text("x = 3\n")  # changed again: another run's code
    assert source_commit.__wrapped__(tmp_path / "src") not in (commit, modified)
    (tmp_path / "src" / "hil" / "nn.py").write_text("x = 2\n")
    assert source_commit.__wrapped__(tmp_path / "src") == modified
    (tmp_path / "src" / "hil" / "nn.py").write_text("x = 1\n")
    (tmp_path / "src" / "hil" / "mine.py").write_text("y = 1\n")  # a module of one's own, not added to git
    added = source_commit.__wrapped__(tmp_path / "src")
    assert re.fullmatch(f"{commit}\\+modified\\.[0-9a-f]{{12}}", added) and added != modified
    (tmp_path / "src" / "hil" / "mine.py").write_text("y = 2\n")
    assert source_commit.__wrapped__(tmp_path / "src") not in (commit, added)
    (tmp_path / "src" / "hil" / "mine.py").unlink()
    assert source_commit(tmp_path / "src" / "hil") == "not a git checkout"
    (tmp_path / ".git").mkdir()  # no repository git can read
    assert source_commit(tmp_path) == "unknown"


def test_a_run_records_the_commit_of_a_hil_checkout_another_user_owns(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab's bench computer with hil installed once, from a checkout one of its people owns: git refuses a
    repository of another user's ("detected dubious ownership"), and the runs of everyone else recorded the commit
    "unknown" (and a resume by another user than the run's warned of other versions)."""
    from hil.orchestrator import source_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "hil").mkdir()
    (tmp_path / "hil" / "nn.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=n", "-c", "user.email=n@n", "commit", "-q", "-m", "first")
    commit = git("rev-parse", "HEAD")
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")  # git's own switch: the folder another user's
    with pytest.raises(subprocess.CalledProcessError):
        git("rev-parse", "HEAD")
    assert source_commit.__wrapped__(tmp_path) == commit


def test_runs_of_other_seeds_start_no_physical_layer_at_the_same_theta(tmp_path: Path) -> None:
    """θ's start was drawn from the seed plus the layer's index: seed 2's first layer started where seed 0's third
    did, so runs of a seed sweep over a model of two physical layers shared their starts."""
    from hil.lab import Lab
    from hil.protocol import build_model, load_protocol

    layers = [{"physical": {}}, {"linear": {"out_features": 64}}, {"physical": {"input_map": "sigmoid"}},
              {"linear": {"out_features": 10}}]
    starts = {}
    with contextlib.closing(Lab.load(REPO / "lab.yaml")) as lab:
        lab.build()
        for seed in range(4):
            protocol, _ = load_protocol(write_protocol(tmp_path, seed=seed, model={"layers": layers}))
            model = build_model(protocol, lab, 64, 10)
            starts.update({(seed, index): model[index].theta.detach() for index in (0, 2)})
            low, high = lab.system("crossbar").theta_bounds  # a first layer's start is the seed's own draw
            drawn = low + (high - low) * torch.rand(len(model[0].theta), generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(model[0].theta.detach(), drawn, rtol=0, atol=0)
    pairs = [(a, b) for a in starts for b in starts if a < b]
    assert not [(a, b) for a, b in pairs if torch.equal(starts[a], starts[b])]


def test_a_run_records_the_processor_kernels_torch_computes_with(tmp_path: Path) -> None:
    """Another processor rounds differently (torch picks its kernels by the vector instructions it finds: with
    ATEN_CPU_CAPABILITY=avx2 a crossbar run's twin test loss moved), and a run recorded no processor: a resume on
    another machine was not warned of, and a figure that did not repeat could not be told to come from one."""
    from hil.orchestrator import processor, software_versions

    capability, _, name = processor().partition(", ")
    assert software_versions()["cpu"] == processor() and capability == torch.backends.cpu.get_cpu_capability()
    assert name
    code = "from hil.orchestrator import software_versions; print(software_versions()['cpu'])"
    plain = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
                           check=True, capture_output=True, text=True).stdout.strip()
    assert plain in (f"DEFAULT, {name}", f"NO AVX, {name}")  # torch before 2.9 names the default kernels NO AVX


def test_a_network_twin_fitted_to_the_same_data_is_the_same_whatever_the_digital_layers(tmp_path: Path) -> None:
    """A neural twin's initial weights came from torch's global generator after the model's layers had drawn theirs:
    two runs on the same bench and seed, collecting the very same twin data, fitted different twins (held-out NMSE 36
    against 71 in a short fit) because one readout had another layer."""
    twin = {**SMALL["twin"], "kind": "neural", "hidden": [16]}
    readouts = ([{"linear": {"out_features": 10}}],
                [{"linear": {"out_features": 32}}, {"activation": "relu"}, {"linear": {"out_features": 10}}])
    runs = []
    for index, readout in enumerate(readouts):
        (tmp_path / str(index)).mkdir()
        protocol = write_protocol(tmp_path / str(index), **SMALL | {"twin": twin, "method": {"name": "insilico"},
                                                                   "model": {"layers": [{"physical": {}}, *readout]}})
        runs.append(run_protocol(protocol, show_progress=False).path)
    # the arrays and attributes, not the file's bytes: HDF5 before 2.0 (h5py before 3.16) stamps the root group's times
    (data, attrs), (other_data, other_attrs) = (RunStore(run).load_arrays("data/twin_data.h5") for run in runs)
    made = ("run", "written")  # which run wrote the file, and when
    assert {k: v for k, v in attrs.items() if k not in made} == {k: v for k, v in other_attrs.items() if k not in made}
    assert data.keys() == other_data.keys()
    assert all(torch.equal(data[key], other_data[key]) for key in data if key != "measured_at")  # when: not the same
    first, second = (torch.load(run / "twin/twin.pt", weights_only=True) for run in runs)
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_a_run_from_a_session_whose_default_dtype_is_float64_computes_in_float32_and_leaves_it_so(
        tmp_path: Path) -> None:
    """The simulators' tensors were then made float64, and the first matmul with a float32 one raised torch's dtype
    error from deep in a simulator."""
    reference = run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
    torch.set_default_dtype(torch.float64)
    try:
        store = run_protocol(write_protocol(tmp_path, **SMALL), show_progress=False)
        assert torch.get_default_dtype() is torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert final(store)["device_accuracy"] == final(reference)["device_accuracy"]


def test_a_reused_oracle_twin_on_a_bench_system_is_refused_before_the_run(tmp_path: Path) -> None:
    """A run reuses twin.from_run's twin whatever the protocol's twin.kind: an oracle twin (fitted in simulation to a
    system of the same kind) reused on a bench was let through by hil check, and hil run found it out at fit_twin,
    after calibrating the bench (the SMU's output switched on)."""
    from hil.lab import Lab
    from hil.twin.models import build_twin, twin_files

    protocol = write_probe_protocol(tmp_path)
    lab = Lab.load(tmp_path / "lab.yaml")
    try:
        lab.build()
        files = twin_files(build_twin("physics", lab.systems["probe"]))
    finally:
        lab.close()
    source = RunStore.create(tmp_path / "simulated", "probe")  # what a simulated run of an oracle twin leaves
    source.save_arrays("data/twin_data.h5", {"x": torch.rand(2, 4, 1), "theta": torch.rand(2, 1),
                                             "y": torch.rand(2, 4, 1), "y_repeats": torch.zeros(0, 0, 4, 1)})
    source.write_bytes("twin/twin.json", json.dumps(json.loads(files["twin.json"]) | {"kind": "oracle"}).encode())
    source.write_bytes("twin/twin.pt", files["twin.pt"])
    source.close()
    fields = yaml.safe_load(protocol.read_text())
    fields["twin"]["from_run"] = str(source.path)
    protocol.write_text(yaml.safe_dump(fields))
    expected = (rf"^{re.escape(str(protocol))}:\d+: twin\.from_run: {re.escape(str(source.path / 'twin'))} holds an "
                r"oracle twin, which needs a simulated system \(it is the world's hidden calibration\), and 'probe' "
                r"plays on the bench; point twin\.from_run at a run whose twin is of kind physics, neural or residual$")
    for attempt in (lambda: check_protocol(protocol), lambda: run_protocol(protocol, show_progress=False)):
        with pytest.raises(ConfigError, match=expected):
            attempt()
    assert not (tmp_path / "runs").exists()


def test_a_twin_and_its_data_copied_without_their_run_folder_are_refused_before_the_run(finished_run: Path,
                                                                                        tmp_path: Path) -> None:
    """twin.from_run naming a folder of a run's twin/ and data/ alone (what hil check said reusing a run needs) passed
    hil check; hil run calibrated the device, then its collect step found the folder no run's, and said so without
    the protocol's file and line."""
    handed = tmp_path / "handed"
    for part in ("twin", "data"):
        shutil.copytree(finished_run / part, handed / part)
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(handed)}})
    expected = (rf"^{re.escape(str(protocol))}:\d+: twin\.from_run: {re.escape(str(handed))} is not a run folder \(no "
                r"events\.jsonl\); point twin\.from_run at a whole run folder, as hil run made it$")
    for attempt in (lambda: check_protocol(protocol), lambda: run_protocol(protocol, show_progress=False)):
        with pytest.raises(ConfigError, match=expected):
            attempt()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("held_out", "said"), [
    (None, r"{source}/protocol\.yaml:\d+: retired: unknown key 'retired'.* \(it tells which θ groups the reused twin "
           r"was fitted on\); point twin\.from_run at an intact run$"),
    ([99], r"the twin's held-out θ groups \[99\] are not groups of its 4; point twin\.from_run at an intact run$"),
])
def test_a_reused_twins_held_out_groups_are_found_before_the_run(finished_run: Path, tmp_path: Path,
                                                                   held_out: list | None, said: str) -> None:
    """The θ groups a reused twin is judged on come from its twin.json, or, for a run of an earlier hil (none
    recorded), from its protocol.yaml: a twin.json naming other groups, or a protocol.yaml that this hil reads no
    more, passed hil check, and hil run failed at its fidelity step, after calibrating and loading the twin."""
    source = copy_of(finished_run, tmp_path / "source")
    spec = json.loads((source / "twin/twin.json").read_text())
    if held_out is None:
        del spec["held_out_groups"]
        with (source / "protocol.yaml").open("a") as file:
            file.write("retired: 1\n")  # a field of the hil that made the run
    else:
        spec["held_out_groups"] = held_out
    (source / "twin/twin.json").write_text(json.dumps(spec))
    protocol = write_protocol(tmp_path, **SMALL | {"twin": SMALL["twin"] | {"from_run": str(source)}})
    expected = rf"^{re.escape(str(protocol))}:\d+: twin\.from_run: " + said.format(source=re.escape(str(source)))
    with pytest.raises(ConfigError, match=expected):
        check_protocol(protocol)
    with pytest.raises(ConfigError, match=expected):
        run_protocol(protocol, show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_bench_is_claimed_after_the_imports_a_run_would_make_with_it_idle(tmp_path: Path) -> None:
    """torch imports its compiler as a process builds its first optimiser, and the report step imports matplotlib:
    done with the bench claimed, they kept it idle for 1.5 to 5 s in all (a crossbar run, 2 shared cores) between
    opening the lab and the first device call, and before letting it go. A fresh process, as `hil run` is, looks at
    what is imported when the lab opens."""
    code = textwrap.dedent(f"""
        import os, sys
        from hil.lab import Lab
        from hil.orchestrator import run_protocol

        def opened(lab, *args, **kwargs):
            print([name for name in ("torch._dynamo", "matplotlib", "hil.report") if name not in sys.modules])
            sys.stdout.flush()
            os._exit(0)

        Lab.open = opened
        run_protocol({str(write_protocol(tmp_path, **SMALL))!r}, show_progress=False)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
