"""Run a protocol: calibrate, collect, fit the twin, measure its fidelity, train, evaluate, report.

The steps run as a plan with a checkpoint after each step and each epoch, and every `COLLECTION_CHECKPOINT_S` of a
collection of twin data: the model, the optimiser, the twin, the measurements of a collection under way, the random
generators, the step counters and, on a simulator, the full state of the simulated bench. A run killed at any point
(even with SIGKILL) resumes with ``hil run --resume RUN`` from its last checkpoint and ends with the same result as an
uninterrupted run with the same seed (it computes with the torch thread count the run started with: another count
rounds differently); the events of the unfinished part are moved out of the log, so it holds every event exactly
once. The first checkpoint is on disk before any step starts, so a run without one has measured nothing and resuming
it starts over; a run that got further needs its checkpoint. The first Ctrl-C finishes the current step (or training
batch, or θ group of a collection; one while the run prepares or restores its checkpoint: that), saves a checkpoint
and exits; the second exits at once. Every instrument goes to its safe state on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column
from torch import nn

from hil import state as state_io
from hil.config import dump_yaml, expand_home
from hil.datasets import Dataset, MinMaxEncoder, StandardEncoder
from hil.errors import (
    ConfigError,
    DeviceError,
    DeviceWarning,
    Diverged,
    HilError,
    InstrumentBusy,
    InterlockError,
    Interrupted,
    PluginSlip,
    RunFileError,
    TransportError,
    WriteRefused,
    error_reason,
    handling,
    out_of_memory,
    run_warning,
)
from hil.lab import Lab
from hil.nn import physical_layers, set_mode
from hil.protocol import (
    Protocol,
    build_model,
    check_from_run,
    check_resumed_data,
    check_twin,
    first_physical_system,
    held_out_groups,
    instruments_used,
    load_data,
    load_lab,
    load_protocol,
    recorded,
    reused_twin_data,
    system_and_method,
    twin_seed,
)
from hil.store import (
    CHECKPOINT,
    EVENTS,
    SAFE_STATE_FAILED,
    SUMMARY,
    RunStore,
    file_digests,
    resume_command,
    shell_word,
)
from hil.systems.base import PhysicalSystem
from hil.twin.collect import Collection, TwinData
from hil.twin.fidelity import fidelity
from hil.twin.fit import fit_epochs, fit_twin
from hil.twin.models import Twin, build_twin, load_twin, twin_files, twin_from_spec

STEPS = ("calibrate", "collect", "fit_twin", "fidelity", "train", "evaluate", "report")
#: Wall seconds between the checkpoints of a collection under way (at the end of a θ group): a kill loses at most
#: the groups measured since, on a bench perhaps hours of them otherwise. Not more often: each checkpoint writes the
#: measurements so far anew.
COLLECTION_CHECKPOINT_S = 60.0
#: Lines a step's progress takes in a display that is not a terminal (a log file, a pipe): one per tenth of it.
PROGRESS_LINES = 10
#: The packages whose versions a run records (`software_versions`).
VERSIONED_PACKAGES = ("hil", "torch", "numpy", "h5py")
#: hil's own packages, whose code hil's version and `source_commit` pin; a class of any other is a plugin's.
OWN_PACKAGES = ("hil", "simulators", "drivers")
#: The events a run logs before its first checkpoint, when it has measured nothing: a warning while it prepares (the
#: traffic log stopping as the bench is made safe) among them.
UNMEASURED_EVENTS = ("run_started", "warning", "run_interrupted", "run_failed")
#: The files a run starts from. Their digests, and those of the data files written since, are in every
#: checkpoint: a resumed run refuses them changed or damaged.
RUN_FILES = ("protocol.yaml", "lab.yaml")


class _StopFlag:
    """First SIGINT: ask to stop at the next safe point. Second SIGINT: stop at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        #: What the line saying that the run stops starts with: while a progress bar is drawn in a terminal, the
        #: control codes that clear the bar's line (rich draws the bar again below), else the line went on from its end
        self.clear_line = b""

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # said at once, as a step may last minutes (a collection, a twin fit); os.write, which a signal handler may
        # call while the interrupted code is itself writing to stderr. Not where hil started with its stderr closed
        # (2>&-, sys.stderr None): descriptor 2 is then the first file the run opened, its event log or a data file
        if sys.stderr is not None:
            os.write(2, self.clear_line + b"hil: stopping after the current step, training batch or group of "
                                          b"twin data, with a checkpoint (Ctrl-C again stops at once)\n")

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, Ctrl-C reaches this flag (only in the main thread)."""
        return handling((signal.SIGINT,), self._handler)


class _Display:
    """The progress bars' output: standard error, which leaves standard output to the run's folder and report for a
    script to read, until writing to it fails, then nothing. Output that closes (piped into a reader that quit:
    ``hil run p.yaml 2>&1 | head``) or fills (``2> log`` on a full disk) ends the display, not the run, which rich
    would end mid-step (``SystemExit`` on a broken pipe, ``OSError`` otherwise)."""

    def __init__(self) -> None:
        self.stream, self.failed = sys.stderr, False

    def write(self, text: str) -> int:
        self._do(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._do(self.stream.flush)

    def _do(self, action: Callable[..., Any], *args: Any) -> None:
        if not self.failed:
            try:
                action(*args)
            except OSError:
                self.failed = True

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's
        return getattr(self.stream, name)


def _progress(console: Console | None = None) -> Progress:
    """The run's progress bars (on ``console``: by default one on standard error): step, bar, count, time left, the
    step's figures. The bar is what narrows first, so that an 80-column terminal shows the rest whole (rich narrowed
    every column alike: the time left read `0:00:…`)."""
    console = console or Console(file=_Display())  # type: ignore[arg-type]  # a file in all that rich uses of one
    step, count, time_left = (TextColumn("{task.description:<20}", table_column=Column(no_wrap=True)),
                              MofNCompleteColumn(table_column=Column(no_wrap=True)),
                              TimeRemainingColumn(table_column=Column(no_wrap=True)))
    figures = TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis"))
    return Progress(step, BarColumn(), count, time_left, figures, console=console, transient=False)


def _duration(seconds: float) -> str:
    """``seconds`` as h:mm:ss, as the progress bars show a time."""
    return str(datetime.timedelta(seconds=round(seconds)))


def _progress_lines(display: _Display, description: str, total: int, completed: int,
                    device_time_s: Callable[[], float]) -> Callable[[int, str], None]:
    """A step's progress as whole lines on ``display``, which is not a terminal (a log file, a pipe, a scheduler's
    output), where rich's bars draw nothing but their last state, as the step ends: a line each time the step
    passes a tenth of ``total``, with the count, the time left (h:mm:ss, at the pace since the step started or
    resumed at ``completed``), the device time the run has used (``device_time_s()``, in s) and the step's figures.
    A count done may be a fraction (the training's epochs, advanced batch by batch): said to a tenth."""
    started, said = time.monotonic(), completed * PROGRESS_LINES // total

    def advance(done: float, info: str) -> None:
        nonlocal said
        if done * PROGRESS_LINES // total <= said:
            return
        said = done * PROGRESS_LINES // total
        left = "" if done >= total else \
            f"{_duration((time.monotonic() - started) / (done - completed) * (total - done))} left, "
        count = f"{done:.0f}" if done == int(done) else f"{math.floor(done * 10) / 10:.1f}"  # 2.96 is not yet 3.0
        line = f"hil: {description} {count}/{total} ({left}device time {_duration(device_time_s())})"
        display.write(f"{line}{f'; {info}' if info else ''}\n")
        display.flush()

    return advance


class Run:
    """One run of a protocol on a lab (opened), into ``store``; see the module docstring. `run_protocol` makes and
    drives it: `prepare`, the first checkpoint (or `resume_from` a saved one), then `execute`, which needs both."""

    def __init__(self, protocol: Protocol, lab: Lab, store: RunStore, document: Any = None, show_progress: bool = True):
        self.protocol, self.lab, self.store, self.document = protocol, lab, store, document
        self.show_progress = show_progress
        self.stop = _StopFlag()
        self.completed: list[str] = []
        self.step: str | None = None  # the step under way: a failure's run_failed names it
        self.epoch = 0
        self.batch = 0
        self.history: list[dict[str, Any]] = []
        self.twin: Twin | None = None
        self.twin_data: TwinData | None = None
        self.collection: Collection | None = None  # a collection under way, which a checkpoint holds
        self.started = time.monotonic()
        self.wall_s_before = 0.0
        self.resumed = False
        self.run_files = file_digests(store.path, RUN_FILES)

    # -- set-up -------------------------------------------------------------------------------------------------
    def prepare(self, data: Dataset | None = None) -> None:
        """Build the method, the data (``data``: already loaded) and the model."""
        protocol = self.protocol
        self.system, self.method = system_and_method(protocol, self.lab, self.document)
        self.data = data if data is not None else load_data(protocol, self.document)
        self.model = build_model(protocol, self.lab, self.data.n_features, self.data.n_classes, self.document)
        first = first_physical_system(protocol, self.lab)
        encoder = MinMaxEncoder(self.data.x_train, first.x_bounds) if first is not None \
            else StandardEncoder(self.data.x_train)
        self.x_train, self.x_test = encoder(self.data.x_train), encoder(self.data.x_test)
        self.split = split_digest(self.data)
        self.y_train, self.y_test = self.data.y_train, self.data.y_test
        training = protocol.training
        physical = [layer.theta for layer in physical_layers(self.model)]
        digital = [p for p in self.model.parameters() if all(p is not q for q in physical)]
        groups = [{"params": digital, "lr": training.lr},  # a model has a physical layer (`system_and_method`)
                  {"params": physical, "lr": training.physical_lr or training.lr}]
        optimizer = torch.optim.Adam if training.optimizer == "adam" else torch.optim.SGD
        self.optimizer = optimizer(groups)
        self.base_lrs = [group["lr"] for group in groups]

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _driven(self) -> list[PhysicalSystem]:
        """The systems the run drives, each once: the protocol's and those of its model's physical layers."""
        systems = {id(self.system): self.system}
        systems.update((id(layer.system), layer.system) for layer in physical_layers(self.model))
        return list(systems.values())

    def device_time_s(self) -> float:
        """The device time (s) of every system the run drives, so far (earlier attempts' included)."""
        return sum(system.device_time_s for system in self._driven())

    def device_calls(self) -> int:
        """The device calls of every system the run drives, so far."""
        return sum(system.calls for system in self._driven())

    def _bench_state(self) -> dict[str, Any]:
        """The state of what the run drives: its systems (the protocol's and those of its physical layers), their
        simulated instruments and the worlds of those. Nothing else in the lab is called during a run, so it stays
        as opening the lab and its safe state left it, which a resumed run's lab repeats."""
        systems = self._driven()
        used = [i for system in systems for i in system.instruments.values() if hasattr(i, "world")]
        return {
            "worlds": {name: state_io.capture(w) for name, w in self.lab.worlds.items()
                       if any(i.world is w for i in used)},
            "instruments": {name: state_io.capture(i) for name, i in self.lab.instruments.items()
                            if any(i is u for u in used)},
            "systems": {name: state_io.capture(s) for name, s in self.lab.systems.items()
                        if any(s is u for u in systems)},
        }

    def _restore_bench(self, saved: dict[str, Any]) -> None:
        source = str(self.store.path / CHECKPOINT)
        for name, world in self.lab.worlds.items():
            if name in saved["worlds"]:
                state_io.restore(world, saved["worlds"][name], source)
        for name, instrument in self.lab.instruments.items():
            if name in saved["instruments"]:
                state_io.restore(instrument, saved["instruments"][name], source)
        for name, system in self.lab.systems.items():
            if name in saved["systems"]:
                state_io.restore(system, saved["systems"][name], source)
                if not all(hasattr(i, "world") for i in system.instruments.values()):  # a bench: connected anew
                    system.device_state_lost()

    def checkpoint(self) -> None:
        """Save everything that decides what happens next (the store serialises it at once)."""
        learned = {
            "completed": self.completed, "epoch": self.epoch, "batch": self.batch, "history": self.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(), "twin": self.twin.state_dict() if self.twin is not None else None,
            "twin_spec": self.twin.spec if self.twin is not None else None,
            "collection": self.collection.state_dict() if self.collection is not None else None,
        }
        self.store.save_checkpoint({**learned, "torch_rng": torch.get_rng_state(),
                                    "torch_threads": torch.get_num_threads(), "versions": self.versions(),
                                    "bench": self._bench_state(), "data_split": self.split,
                                    "wall_s": self.wall_s(), "file_digests": {**self.run_files, **self.store.digests}})

    def resume_from(self, saved: dict[str, Any], discarded: int) -> None:
        """Continue from the checkpoint ``saved``, the events after it already moved out of the log (``discarded``:
        how many lines moved)."""
        self.resumed = True
        self.completed = list(saved["completed"])
        self.epoch, self.batch = int(saved["epoch"]), int(saved["batch"])
        self.history = list(saved["history"])
        try:  # a checkpoint of another network (handed on, or crafted and sealed anew)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise _foreign_checkpoint(self.store, f"its network or optimiser ({error_reason(error)})") from None
        # the thread count the run started with (another rounds differently); run_protocol restores the caller's
        torch.set_num_threads(int(saved.get("torch_threads", torch.get_num_threads())))
        _warn_of_other_versions(saved.get("versions"), self.versions())
        self._restore_bench(saved["bench"])
        self.wall_s_before = float(saved.get("wall_s", 0.0))
        self.store.digests.update({name: digest for name, digest in saved["file_digests"].items()
                                   if name not in RUN_FILES})  # verified by _checkpoint_to_resume
        if "collect" in self.completed:
            arrays, _ = self.store.load_arrays("data/twin_data.h5")
            self.twin_data = TwinData.from_arrays(arrays)
        elif saved.get("collection") is not None:  # stopped while collecting (an earlier hil's checkpoint holds none)
            self.collection = self._new_collection()
            try:
                self.collection.load_state_dict(saved["collection"])
            except (KeyError, TypeError, ValueError) as error:
                raise _foreign_checkpoint(self.store, f"its collection ({error_reason(error)})") from None
        if saved["twin"] is not None:
            self.twin = self._saved_twin(saved.get("twin_spec"))
            try:  # a twin of other sizes (crafted, or handed on)
                self.twin.load_state_dict(saved["twin"])
            except (KeyError, RuntimeError, TypeError, ValueError) as error:
                raise _foreign_checkpoint(self.store, f"its twin ({error_reason(error)})") from None
            self._attach_twin()
        self.method.begin(self.model)
        self.method.load_state_dict(saved["method"])
        torch.set_rng_state(saved["torch_rng"])  # last: building the twin above draws its initial weights from it
        self.store.event("run_resumed", completed=self.completed, epoch=self.epoch, batch=self.batch,
                         discarded_events=discarded, torch_threads=torch.get_num_threads(),
                         versions=self.versions())

    def versions(self) -> dict[str, str]:
        """`software_versions`, with the code of the lab's plugin drivers, worlds and systems."""
        lab = self.lab
        return software_versions(type(part) for part in (*lab.instruments.values(), *lab.worlds.values(),
                                                          *lab.systems.values()))

    def _save_data(self, relative: str, arrays: dict[str, Any], descriptions: dict[str, str] | None = None,
                   **attrs: Any) -> None:
        """Write a data file of the run (``descriptions``: of arrays `hil.store.DESCRIPTIONS` does not name), its
        root attributes ``attrs`` and what made it: the run's folder name, the
        protocol's name and seed, the software's `versions`, the ``instruments`` connected (each one's identity:
        maker, model, serial, firmware) and when it was ``written`` (ISO 8601, local time with its UTC offset), so
        that the file alone, shared without its folder, says where it comes from."""
        written = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        instruments = {name: i.identity for name, i in self.lab.instruments.items() if i.connected}
        made = {"run": self.store.path.name, "protocol": self.protocol.name, "seed": self.protocol.seed,
                "versions": self.versions(), "instruments": instruments, "written": written}
        self.store.save_arrays(relative, arrays, made | attrs, descriptions)

    def wall_s(self) -> float:
        """The run's wall time so far (s), its earlier attempts' included."""
        return self.wall_s_before + time.monotonic() - self.started

    # -- steps --------------------------------------------------------------------------------------------------
    def execute(self) -> None:
        steps: dict[str, Callable[[], None]] = {
            "calibrate": self.calibrate, "collect": self.collect, "fit_twin": self.fit_twin,
            "fidelity": self.measure_fidelity, "train": self.train, "evaluate": self.evaluate, "report": self.report}
        self._say_folder()
        with self.stop.installed():
            for name in STEPS:
                if name in self.completed:
                    continue
                if self.stop.requested:
                    self._interrupted()
                self.store.checkpoint_refused()
                self._say_step(name)
                self.step = name
                steps[name]()
                self.completed.append(name)
                self.store.event("step_finished", step=name, device_time_total_s=self.device_time_s())
                self.step = None
                self.checkpoint()
        self.store.wait_for_checkpoint()  # a run is finished only once its last checkpoint is on disk
        self.store.event("run_finished", device_time_s=self.device_time_s(), wall_s=round(self.wall_s(), 3))

    def _interrupted(self) -> None:
        self.checkpoint()
        self.store.wait_for_checkpoint()  # "after saving": on disk before the log says so (a disk error is raised)
        refused = _record(self.store, "run_interrupted", completed=self.completed, epoch=self.epoch, batch=self.batch)
        raise Interrupted(f"stopped at your request after saving; resume with: {resume_command(self.store.path)}"
                          f"{_unlogged(refused)}")

    def calibrate(self) -> None:
        settings = self.system.calibrate()
        self.store.event("calibrated", system=self.system.name, settings=settings)

    def _new_twin(self, theta_as_phase: bool | None = None) -> Twin:
        twin_config = self.protocol.twin
        hidden = None if twin_config.hidden is None else tuple(twin_config.hidden)  # []: no hidden layer, not None
        return build_twin(twin_config.kind, self.system, hidden, theta_as_phase, seed=twin_seed(self.protocol.seed))

    def _saved_twin(self, spec: dict[str, Any] | None) -> Twin:
        """An empty twin as the checkpoint's ``spec`` describes it (its kind and sizes, which for a twin reused from
        another run need not be the protocol's, and its held-out groups), to load the checkpoint's state into. A
        checkpoint from before twin_spec holds a twin of the protocol's kind with θ scaled as it is."""
        return twin_from_spec(spec, self.system) if spec else self._new_twin(False)

    def _attach_twin(self) -> None:
        for layer in physical_layers(self.model):
            if layer.system is self.system:
                layer.set_twin(self.twin)

    def collect(self) -> None:
        config = self.protocol.twin
        if config.from_run:
            check_from_run(self.protocol, self.document, self.resumed)  # a resumed run: here, where it needs it
            self.twin_data = reused_twin_data(self.protocol, self.document)
            design = "from run"
            times, made = {}, {"measured_in": str(Path(config.from_run).resolve())}
        else:
            design = self._collection_design()
            collection = self.collection = self.collection or self._new_collection()
            with self._bar("collecting twin data", collection.total, completed=collection.done) as advance:
                saved_at = time.monotonic()
                while not collection.finished:
                    if self.stop.requested:
                        self._interrupted()
                    self.store.checkpoint_refused()
                    collection.measure_group()
                    advance(collection.done, "")
                    if time.monotonic() - saved_at >= COLLECTION_CHECKPOINT_S and not collection.finished:
                        self.checkpoint()
                        saved_at = time.monotonic()
            self.twin_data = collection.result()
            times, made = {"measured_at": collection.times()}, {}
            self.collection = None
        self._save_data("data/twin_data.h5", self.twin_data.arrays() | times, system=self.system.name,
                        system_snapshot=self.system.snapshot(), **made)
        self.store.event("collected", design=design, groups=self.twin_data.n_groups,
                         samples=self.twin_data.y.numel() // self.system.n_out,
                         noise_variance=self.twin_data.noise_variance())

    def _collection_design(self) -> str:
        """The collection's input design: the protocol's where the data feed the physical layer directly (data rows
        are then the system's inputs), else Sobol points."""
        direct = first_physical_system(self.protocol, self.lab) is self.system
        return self.protocol.twin.collect.design if direct else "sobol"

    def _new_collection(self) -> Collection:
        c, design = self.protocol.twin.collect, self._collection_design()
        return Collection(self.system, n_thetas=c.thetas, inputs_per_theta=c.inputs_per_theta, repeats=c.repeats,
                          repeat_thetas=c.repeat_thetas, design=design,
                          data=self.x_train if design != "sobol" else None, seed=self.protocol.seed)

    def fit_twin(self) -> None:
        config = self.protocol.twin
        assert self.twin_data is not None
        if config.from_run:
            self.twin = load_twin(Path(config.from_run) / "twin", self.system)
            self.store.event("twin_loaded", source=str(Path(config.from_run).resolve()))  # as protocol.yaml records it
        else:
            self.twin = self._new_twin()
            fitted, stopping, held_out = self.twin_data.fit_groups(config.fit.validation_fraction, self.protocol.seed)
            train, validation = self.twin_data.subset(fitted), self.twin_data.subset(stopping)
            self.twin.spec["held_out_groups"] = held_out.tolist()  # fidelity's, here and in a run reusing the twin
            epochs = 0 if config.kind == "oracle" else config.fit.epochs
            total = fit_epochs(self.twin, epochs)  # a residual twin's two stages: its physics, then the residual
            with self._bar("fitting the twin", total) as advance:
                result = fit_twin(self.twin, train, validation, epochs=epochs, lr=config.fit.lr,
                                  patience=config.fit.patience, seed=self.protocol.seed,
                                  progress=lambda e, tr, va: advance(e + 1, f"held-out loss {va:.3g}"))
                ran = len(result.validation_loss)
                if 0 < ran < total:  # the bar ends full, saying why it ended early
                    advance(total, f"stopped at {ran}, best {min(result.validation_loss):.3g} at "
                                    f"{result.best_epoch + 1}" if result.best_epoch >= 0 else
                                    f"stopped at {ran}, its start kept")
            self.store.event("twin_fitted", twin_kind=config.kind, train_loss=result.train_loss,
                             validation_loss=result.validation_loss, best_epoch=result.best_epoch,
                             converged=result.converged)
        for name, data in twin_files(self.twin).items():  # through the store: its checks of the folder
            self.store.write_bytes(f"twin/{name}", data)
        self._attach_twin()

    def measure_fidelity(self) -> None:
        assert self.twin is not None and self.twin_data is not None
        config = self.protocol.twin
        held_out = self.twin_data.subset(torch.as_tensor(self._held_out_groups(), dtype=torch.long))
        with self._bar("checking the twin", 2 * config.fidelity.directions) as advance:
            result = fidelity(self.system, self.twin, held_out, self.twin_data.noise_variance(),
                              directions=config.fidelity.directions, step=config.fidelity.step,
                              repeats=config.fidelity.repeats, seed=self.protocol.seed,
                              progress=lambda done, total: advance(done, ""))
        with torch.no_grad():
            predicted = torch.stack([self.twin(x, t) for x, t in zip(held_out.x, held_out.theta, strict=True)])
        twin = {f"twin.{key}": value for key, value in self.twin.state_dict().items()}
        described = dict.fromkeys(twin, "the twin's parameter or buffer of this name after 'twin.' (its state dict, "
                                  "as twin/twin.pt holds it; a physics twin's physics.* named with units as in the "
                                  "system's physics model), the twin that made predicted")
        self._save_data("data/fidelity.h5", {"nmse": result.nmse, "noise_floor": result.noise_floor,
                                             "measured": held_out.y, "predicted": predicted} | twin, described,
                        system=self.system.name, held_out_groups=self._held_out_groups())
        self.store.event("fidelity", **result.summary())

    def _held_out_groups(self) -> list[int]:
        """The θ groups the twin was not fitted on (`held_out_groups`)."""
        assert self.twin is not None and self.twin_data is not None
        return held_out_groups(self.twin.spec, self.twin_data, Path(self.protocol.twin.from_run or self.store.path))

    def _batches(self, epoch: int) -> list[torch.Tensor]:
        """The epoch's shuffled batches of training rows; a last batch of one row joins the one before (a batch
        norm cannot train on one sample)."""
        generator = torch.Generator().manual_seed(self.protocol.seed * 100_003 + epoch)
        order = torch.randperm(len(self.y_train), generator=generator)
        batches = list(order.split(self.protocol.training.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        return batches

    def train(self) -> None:
        training = self.protocol.training
        self.method.begin(self.model)
        parameters = [p.detach() for p in self.model.parameters()]  # checked after every step
        with self._bar("training", training.epochs, completed=self.epoch) as advance:
            shown = ""  # the last epoch's figures, shown until the next epoch's
            while self.epoch < training.epochs:
                batches = self._batches(self.epoch)
                self.model.train()
                while self.batch < len(batches):
                    if self.stop.requested:
                        self._interrupted()
                    self.store.checkpoint_refused()
                    indices = batches[self.batch]
                    step = self.epoch * len(batches) + self.batch
                    self._set_learning_rates(step / (training.epochs * len(batches)))
                    where = f"at epoch {self.epoch + 1}, batch {self.batch + 1}"
                    try:
                        figures = self.method.train_step(self.model, self.x_train[indices], self.y_train[indices],
                                                         self.optimizer)
                    except Diverged as diverged:  # a method counts its own steps; the run says epoch and batch
                        raise diverged.at(where) from None
                    self.batch += 1
                    self.store.event("batch", epoch=self.epoch, batch=self.batch, **figures)
                    if not bool(torch.isfinite(torch.cat([p.reshape(-1) for p in parameters])).all()):
                        raise Diverged("training", where, "the model's parameters are no longer finite (NaN or "
                                       "infinite); start a new run with lower learning rates (training.lr, "
                                       "training.physical_lr, or one in method.settings)")
                    if self.batch < len(batches):  # an epoch of a bench may take minutes: the bar moves batch by batch
                        advance(self.epoch + self.batch / len(batches), shown)  # (its end, after its evaluation)
                record: dict[str, Any] = {"epoch": self.epoch}
                if self.protocol.evaluation.every_epoch:
                    record.update(self._evaluate_all())
                record["device_time_s"] = self.device_time_s()  # its test pass on the device included
                self.history.append(record)
                self.store.event("epoch", **record)
                self.epoch += 1
                self.batch = 0
                self.checkpoint()
                shown = f"this epoch's test acc {record['device_accuracy']:.3f} (device)" \
                    if "device_accuracy" in record else ""  # evaluation.every_epoch: false
                advance(self.epoch, shown)

    def _set_learning_rates(self, progress: float) -> None:
        """The schedule's learning rates at ``progress`` (0 at the first step, → 1 at the last)."""
        factor = 0.5 * (1 + math.cos(math.pi * progress)) if self.protocol.training.schedule == "cosine" else 1.0
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _evaluate(self, mode: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        set_mode(self.model, mode)  # type: ignore[arg-type]
        self.model.eval()
        logits = []
        with torch.no_grad():
            for chunk in x.split(self.protocol.evaluation.batch_size):
                logits.append(self.model(chunk))
        all_logits = torch.cat(logits)
        loss = nn.functional.cross_entropy(all_logits, y).item()
        predictions = all_logits.argmax(dim=1)
        return loss, (predictions == y).float().mean().item(), predictions

    def _evaluate_all(self) -> dict[str, float]:
        figures = {}
        loss, accuracy, _ = self._evaluate("device", self.x_test, self.y_test)
        figures.update(device_loss=loss, device_accuracy=accuracy)
        if self.protocol.evaluation.twin and self.twin is not None:
            loss, accuracy, _ = self._evaluate("twin", self.x_test, self.y_test)
            figures.update(twin_loss=loss, twin_accuracy=accuracy)
        self.method.begin(self.model)
        return figures

    def evaluate(self) -> None:
        loss, accuracy, predictions = self._evaluate("device", self.x_test, self.y_test)
        n = self.data.n_classes
        confusion = torch.zeros(n, n, dtype=torch.int64)
        confusion.index_put_((self.y_test, predictions), torch.ones_like(predictions), accumulate=True)
        arrays = {"labels": self.y_test, "device_predictions": predictions, "confusion": confusion}
        figures: dict[str, Any] = {"device_loss": loss, "device_accuracy": accuracy}
        if self.protocol.evaluation.twin and self.twin is not None:
            twin_loss, twin_accuracy, twin_predictions = self._evaluate("twin", self.x_test, self.y_test)
            arrays["twin_predictions"] = twin_predictions
            figures.update(twin_loss=twin_loss, twin_accuracy=twin_accuracy)
        network = {f"model.{key}": value for key, value in self.model.state_dict().items()}
        described = dict.fromkeys(network, "the network's parameter or buffer of this name after 'model.' (its state "
                                  "dict: <index> the layer's place in the protocol's model.layers from 0) as this "
                                  "evaluation used it; a physical layer's <index>.theta: float32, n_params, within "
                                  "its system's theta_bounds")
        self._save_data("data/evaluation.h5", arrays | network, described, class_names=list(self.data.class_names))
        self.store.event("evaluated", **figures, device_time_s=self.device_time_s(), device_calls=self.device_calls())

    def report(self) -> None:
        from hil.report import write_report

        wall_s = round(self.wall_s(), 3)
        path = write_report(self.store, wall_s=wall_s)
        self.store.event("reported", path=str(path.relative_to(self.store.path)), wall_s=wall_s)

    # -- progress -----------------------------------------------------------------------------------------------
    def _showing(self) -> bool:
        """Whether the run shows its progress: asked to, and with a standard error (hil started with it closed, 2>&-,
        has None)."""
        return self.show_progress and sys.stderr is not None

    def _say(self, line: str) -> None:
        """``line`` on standard error, where the run shows its progress."""
        if self._showing():
            display = _Display()
            display.write(f"{line}\n")
            display.flush()

    def _say_folder(self) -> None:
        """A line naming the run's folder as the run starts (standard output names it only at the end), with the
        command that shows how far the run has got from another shell."""
        path = self.store.path
        self._say(f"hil: run folder {path}; how far it has got: hil report {shell_word(str(path))}")

    def _say_step(self, name: str) -> None:
        """A line saying that step ``name`` starts (named as the log's ``step_finished`` names it), which of the steps
        it is, and the device time used so far: a step without a bar (calibrate, fidelity, evaluate, report) may take
        minutes of a bench's time."""
        self._say(f"hil: step {STEPS.index(name) + 1} of {len(STEPS)}: {name} (device time so far "
                  f"{_duration(self.device_time_s())})")

    @contextlib.contextmanager
    def _bar(self, description: str, total: int, completed: int = 0) -> Iterator[Callable[[float, str], None]]:
        """A progress bar of ``total`` items, ``completed`` of them done; yields what to call with the count done (a
        fraction of an item moves the bar and the time left, the count shows whole items) and the step's figures.
        On a display that is not a terminal, lines instead (`_progress_lines`)."""
        if not self._showing() or total == 0:
            yield lambda done, info: None
            return
        display = _Display()
        console = Console(file=display)  # type: ignore[arg-type]  # a file in all that rich uses of one
        if not console.is_interactive and not console.is_jupyter:  # a notebook shows rich's bars as a widget
            yield _progress_lines(display, description, total, completed, self.device_time_s)
            return
        with _progress(console) as progress:
            task = progress.add_task(description, total=total, completed=completed, info="")
            self.stop.clear_line = b"\r\x1b[2K"  # carriage return, erase the line: rich's own way to redraw a bar
            try:
                yield lambda done, info: progress.update(task, completed=done, info=info)
            finally:
                self.stop.clear_line = b""


def _checkpoint_to_resume(store: RunStore) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The checkpoint a resumed run continues from, and the log's events it was checked against; None for a run
    stopped before its first checkpoint (it has measured nothing and starts over). Refused (`RunFileError`, nothing
    changed): a run that got further without a checkpoint, or that lacks a file it starts from, a log that lacks
    events before the checkpoint, and a file whose digest it records that has changed since."""
    saved = store.load_checkpoint()
    events = store.events()
    if saved is None:  # such a run may have ended (stopped at once, failed) before its first checkpoint
        if any(event["kind"] not in UNMEASURED_EVENTS for event in events):
            raise RunFileError(f"{store.path / CHECKPOINT}: checkpoint missing; resuming would redo the run and "
                               "overwrite its data; start a new run")
        missing = [name for name in RUN_FILES if not (store.path / name).is_file()]
        if missing:  # a kill between making the folder and writing the files it starts from
            why = "the run was stopped as its folder was made" if not events else "removed since the run started"
            raise RunFileError(f"{store.path / missing[0]}: missing ({why}); nothing ran that a resume could "
                               "continue: start a new run from the protocol")
        return None, events
    _check_checkpoint_fields(store, saved)
    taken_at = int(saved["next_seq"])
    if sum(event["seq"] < taken_at for event in events) != taken_at - 1:
        raise RunFileError(f"{store.path / EVENTS}: events before the checkpoint (1 to {taken_at - 1}) are missing; "
                           "nothing was changed: restore the log from a backup, or start a new run")
    recorded: dict[str, str] = saved["file_digests"]
    changed = [name for name, digest in file_digests(store.path, tuple(recorded)).items() if digest != recorded[name]]
    started_with = [name for name in changed if name in RUN_FILES]
    if started_with:
        raise RunFileError(f"{store.path}: {' and '.join(started_with)} changed since the run started; a run resumes "
                           "with the files it started with: put them back, or start a new run")
    if changed:
        damaged = (store.path / changed[0]).is_file()
        what = "damaged or changed since the run wrote it (its checksum differs)" if damaged else \
            "missing: the run wrote it"
        raise RunFileError(f"{store.path / changed[0]}: {what}; nothing was changed: restore it from a backup, or "
                           "start a new run")
    return saved, events


#: The fields a checkpoint holds (`Run.checkpoint`) that a resume reads before anything, and what each must be.
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "next_seq": int, "file_digests": dict, "completed": list, "epoch": int, "batch": int, "history": list,
    "model": dict, "optimizer": dict, "method": dict, "bench": dict, "torch_rng": torch.Tensor,
    "twin": (dict, type(None))}


def _check_checkpoint_fields(store: RunStore, saved: dict[str, Any]) -> None:
    """Refuse, before the log is rewound, a checkpoint whose fields are not what `Run.checkpoint` saves (one sealed
    anew by hand): a `RunFileError` naming it, where a field missing or of another type was a traceback."""
    for field, kind in CHECKPOINT_FIELDS.items():
        value = saved.get(field)
        if field not in saved or not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if field not in saved else f"a {type(value).__name__}"
            raise _foreign_checkpoint(store, f"{field} is {got}")
    digests, bench = saved["file_digests"], saved["bench"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
        raise _foreign_checkpoint(store, "file_digests holds other than file names and digests")
    if not all(isinstance(bench.get(part), dict) for part in ("worlds", "instruments", "systems")):
        raise _foreign_checkpoint(store, "bench lacks its worlds, instruments or systems")
    if not isinstance(saved.get("data_split", ""), str):  # optional: an earlier hil's checkpoint has none
        raise _foreign_checkpoint(store, f"data_split is a {type(saved['data_split']).__name__}")


def split_digest(data: Dataset) -> str:
    """The SHA-256 (hex) of how ``data`` is split: its training and test features and labels as loaded, with their
    shapes. A checkpoint records it (`_check_same_split`)."""
    digest = hashlib.sha256()
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(repr(tuple(array.shape)).encode())
        digest.update(array.contiguous().numpy().tobytes())
    return digest.hexdigest()


#: The data sets that hil split otherwise before its checkpoints recorded the split (`split_digest`): digits at
#: random, vowels by a plain draw of speakers; their splits are stratified since.
SPLIT_BEFORE_DIGEST = ("digits", "vowels")


def _check_same_split(store: RunStore, saved: dict[str, Any] | None, data: Dataset) -> None:
    """Refuse to resume a run whose data set now splits into other training and test samples than its checkpoint
    recorded (`split_digest`), or than an earlier hil's checkpoint, which recorded none, split one of
    `SPLIT_BEFORE_DIGEST`: training would go on with samples the run was tested on, its final accuracy no longer on
    held-out data."""
    if saved is None:
        return
    recorded = saved.get("data_split")
    if recorded is None and data.name in SPLIT_BEFORE_DIGEST:
        why = "the hil that started it split it otherwise"
    elif recorded is not None and recorded != split_digest(data):
        why = "this hil splits it otherwise"
    else:
        return
    raise ConfigError(f"{store.path}: the {data.name} data set now splits into other training and test samples than "
                      f"when the run started ({why}); resumed, it would train on samples it was tested on: start a "
                      "new run")


def _foreign_checkpoint(store: RunStore, what: str) -> RunFileError:
    return RunFileError(f"{store.path / CHECKPOINT}: not a checkpoint of this run ({what}); nothing was lost: "
                        "restore the run's own from a backup, or start a new run")


def software_versions(classes: Iterable[type] = ()) -> dict[str, str]:
    """The versions of Python and of the packages a run's figures depend on (another torch may round, draw random
    numbers or initialise differently), the commit of hil's source (`source_commit`: its version stays the same
    from commit to commit), the `processor` (another rounds differently) and the code of each plugin module among
    ``classes``' (`plugin_code`: a bench's own driver decides what was measured), as run_started, run_resumed and
    the checkpoint record them."""
    versions = {"python": platform.python_version()}
    versions.update((package, package_version(package)) for package in VERSIONED_PACKAGES)
    versions["hil_commit"] = source_commit()
    versions["cpu"] = processor()
    plugins = {cls.__module__ for cls in classes if cls.__module__.partition(".")[0] not in OWN_PACKAGES}
    versions.update((module, plugin_code(module)) for module in sorted(plugins))
    return versions


@functools.cache
def package_version(package: str) -> str:
    """The installed version of ``package`` ("not installed" where hil runs from a source tree it was not installed
    from). Read once per process, as `software_versions` is asked at every checkpoint: the code a process runs is
    what it imported."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def plugin_code(module: str) -> str:
    """What pins the code of a plugin's ``module``: the distribution it was installed from and its version, where
    it was (``mylab-drivers 0.3.1``), and the start of the SHA-256 of its source file, which an editable install or a
    module on PYTHONPATH changes under one version (``sha256 3f2a9c1d0b7e``); ``no source file`` for one without (a
    class defined in a notebook). Read once per process: the code a process runs is what it imported."""
    top = module.partition(".")[0]
    parts = [f"{name} {importlib.metadata.version(name)}"
             for name in sorted(set(importlib.metadata.packages_distributions().get(top, ())))]
    try:
        parts.append(f"sha256 {hashlib.sha256(Path(sys.modules[module].__file__).read_bytes()).hexdigest()[:12]}")
    except (KeyError, AttributeError, TypeError, OSError):  # not imported, or no file (__main__ in a notebook)
        parts.append("no source file")
    return ", ".join(parts)


@functools.cache
def processor() -> str:
    """The processor a run computes on, as far as it decides torch's rounding: the vector instructions torch's
    kernels use (its CPU capability, such as ``AVX512``; with ``ATEN_CPU_CAPABILITY=avx2`` the twin's test loss of a
    crossbar run moved in its seventh digit) and the processor's model, from ``/proc/cpuinfo`` on Linux."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    return f"{torch.backends.cpu.get_cpu_capability()}, {name}"


#: The folder holding the packages hil runs from (hil, simulators, drivers), the root of its git checkout where it
#: is run from one (the editable install `make` makes).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def source_commit(root: Path = SOURCE_ROOT) -> str:
    """The git commit that ``root``, the root of a checkout, is at, with ``+modified.`` and the start of the SHA-256
    of the difference where the files of the packages that compute a run (hil, simulators, drivers) differ from it,
    a new module of one's own not yet added to git included (so that code changed again is told from the first
    change); ``not a git checkout`` where ``root``
    holds none (hil installed from a wheel, whose version then says which it is), ``unknown`` where git cannot tell
    (not installed, or refusing the folder). Asked of git once per process: the code a process runs is what it
    imported. A checkout another user owns (a lab's hil, installed once by one of its people) is read as this user's
    own (``safe.directory``): git refused it, and each run of every other user recorded ``unknown``; this process runs
    that checkout's code already, and trusts its git configuration no less."""
    if not (root / ".git").exists():
        return "not a git checkout"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", f"safe.directory={root}", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=30, errors="surrogateescape", check=True,
                              stdin=subprocess.DEVNULL).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("diff", "HEAD", "--binary", "--", *OWN_PACKAGES)
        added = git("ls-files", "--others", "--exclude-standard", "-z", "--", *OWN_PACKAGES)  # a module of one's own
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    digest = hashlib.sha256(changed.encode(errors="surrogateescape"))  # of the difference git printed
    for name in sorted(filter(None, added.split("\0"))):
        with contextlib.suppress(OSError):
            digest.update(name.encode(errors="surrogateescape") + b"\0" + (root / name).read_bytes())
    return f"{commit}+modified.{digest.hexdigest()[:12]}" if changed or added else commit


def _warn_of_other_versions(saved: Any, now: dict[str, str]) -> None:
    """Warn where a run resumes under other versions (``now``) than it ran under so far (a checkpoint of an earlier
    hil holds none): its figures may then differ from those of a run that was never stopped."""
    if not isinstance(saved, dict):
        return
    changed = [f"{name} {saved[name]} → {now.get(name, 'not installed')}" for name in sorted(saved)
               if saved[name] != now.get(name, "not installed")]
    if changed:
        warnings.warn(f"this run resumes under other versions than it ran with so far ({', '.join(changed)}): its "
                      "figures may differ from those of a run that was never stopped; to reproduce them, resume under "
                      "the versions its run_started event names", UserWarning, stacklevel=2)


def _started_in(events: list[dict[str, Any]]) -> str | None:
    """The working directory a run started in (its log's ``events``), where its lab's relative paths lie (None for a
    run of an earlier hil, or one stopped before it started)."""
    started = next((event for event in events if event["kind"] == "run_started"), {})
    folder = started.get("working_directory")
    return folder if isinstance(folder, str) else None


def _finished(store: RunStore) -> bool:
    """Whether the run's log ends with ``run_finished`` (a stop that came as it was logged finds the run whole)."""
    with contextlib.suppress(RunFileError):
        events = store.events()
        return bool(events) and events[-1]["kind"] == "run_finished"
    return False


def _describe(error: BaseException) -> str:
    """An error as a run_failed event records it: a HilError's message, otherwise its type and message."""
    if isinstance(error, HilError) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _bench_failure(error: BaseException | None) -> bool:
    """Whether an instrument or its link ended the run (the error, or one it was raised from): a resume goes on from
    the last checkpoint once the bench is back, where a failure of the protocol's own (a diverged fit) would recur."""
    return _caused_by(error, (DeviceError, TransportError, InterlockError))


def _resumable_once(error: Exception) -> str | None:
    """What must hold again before a resume goes on with a run ``error`` ended: the bench (`_bench_failure`), or a disk
    that takes the run's files; None where a resume would fail alike, or the error is a stop."""
    if _caused_by(error, (PluginSlip,)):  # a driver's, a world's or a system's own exception
        return "its code is fixed there"
    if _bench_failure(error):
        return f"the instrument {'is free' if _caused_by(error, (InstrumentBusy,)) else 'is back'}"
    if not isinstance(error, Interrupted) and _caused_by(error, (WriteRefused,)):
        return "its disk has space (or the folder can be written)"
    return None


def _caused_by(error: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error``, or one it was raised from, is one of ``kinds``."""
    while error is not None:
        if isinstance(error, kinds):
            return True
        error = error.__cause__
    return False


def _start(run: Run, data: Dataset | None, saved: dict[str, Any] | None, discarded: int = 0,
           started_in: str | None = None) -> None:
    """Prepare ``run``, put its lab in the safe state (a resumed run's too: a kill leaves a bench sourcing, and a
    working point set up on a live output is refused, or rides on it), and resume it from ``saved``, or start it: the
    bench's snapshot, run_started and the first checkpoint (on disk before any step measures anything; see the module
    docstring). A resumed run's log was rewound before its instruments connected (`_rewind`): ``discarded``, the lines
    that moved. ``started_in``: the folder its lab was read from (`_started_in`), which run_started records again where
    the rewind discarded it; otherwise the working directory."""
    store, lab, protocol = run.store, run.lab, run.protocol
    run.prepare(data)
    lab.safe_state()  # a resume too: a bench that a kill left sourcing is set up again from its safe state
    if saved is not None:
        run.resume_from(saved, discarded)
        return
    store.write_json("snapshot.json", {
        "instruments": {name: i.snapshot() for name, i in lab.instruments.items() if i.connected},
        "worlds": {name: w.describe() for name, w in lab.worlds.items()},
        "systems": {name: s.snapshot() for name, s in lab.systems.items()}})
    store.event("run_started", protocol=protocol.name, method=protocol.method.name,
                system=protocol.system, seed=protocol.seed, torch_threads=torch.get_num_threads(),
                versions=run.versions(), working_directory=started_in or str(Path.cwd()))
    run.checkpoint()
    store.wait_for_checkpoint()


def _rewind(store: RunStore, saved: dict[str, Any] | None) -> int:
    """Rewind a resumed run's log to the checkpoint ``saved`` (to its start where there is none), before its
    instruments connect (a minute, on a bench) and before anything this attempt logs (a warning while it prepares):
    the attempt's log then holds what it logs alone, and no ending of the attempt before, so hil runs lists the run as
    running while it connects, and a failure to connect ends the log on its own. Returns how many lines moved."""
    return store.rewind_events(int(saved["next_seq"]) if saved is not None else 1)


def _stopped_at_once(store: RunStore, stop: KeyboardInterrupt, unnamed: str) -> Interrupted:
    """The stop at once that ``stop`` (SIGTERM, SIGHUP: a `Terminated` naming it; a Ctrl-C, ``unnamed``) made of the
    run, logged as ``run_interrupted`` where the disk takes it, saying how to resume it; its exit status is 128 + the
    signal's number."""
    why = str(stop) or unnamed
    refused = _record(store, "run_interrupted", at_once=why)
    return Interrupted(f"stopped at once by {why}; instruments were put in their safe state; resume from the last "
                       f"checkpoint with: {resume_command(store.path)}{_unlogged(refused)}",
                       128 + getattr(stop, "signum", signal.SIGINT))


def _record(store: RunStore, kind: str, **fields: Any) -> RunFileError | None:
    """Log an event where the disk takes it: the one that ends a run, which a refusal (a full disk) must not replace
    the error or stop that ended the run with (raised all the same, saying the refusal after it; the log then ends
    without it: an incomplete run), or a warning, which must not stop the run. Returns the disk's refusal, None if it
    took the event."""
    try:
        store.event(kind, **fields)
    except RunFileError as refused:
        return refused
    return None


def _unlogged(refused: RunFileError | None, what: str = "stop", said: str = "") -> str:
    """What the message of a stop (or a failure: ``what``, whose message is ``said``) adds when the disk refused its
    event, run_interrupted (or run_failed): the log then ends without it, an incomplete run ("" when the disk took
    it)."""
    return "" if refused is None else f"; then logging the {what} failed{_then(said, refused)}"


def _then(said: str, failure: BaseException) -> str:
    """``failure`` as said after ``said`` (": " and it): a run file's error without the advice ``said`` already gives
    (a full disk refuses the failure's event and the checkpoint as it refused the file), or " alike" for the same
    error, so that the line says what to do once."""
    if isinstance(failure, RunFileError) and failure.advice and failure.advice in said:
        return " alike" if failure.brief in said else f": {failure.brief}"
    return f": {failure}"


def _log_failure(store: RunStore, error: str, failure: BaseException | None = None, step: str | None = None) -> str:
    """Log a ``run_failed`` event saying ``error``, with the ``step`` it failed in (None: before its first step, or
    between two), what must hold again before a resume goes on where the exception ``failure`` leaves one to go on
    (`_resumable_once`: the line hil run adds, which the report repeats), and the traceback of a ``failure`` that is
    no hil error (a bug, which hil run shows with its traceback: the terminal's is gone by the morning); what the error
    raised adds where the disk refused it."""
    once = _resumable_once(failure) if isinstance(failure, Exception) and not _finished(store) else None
    fields = {"step": step} if step else {}
    fields |= {"resume_once": once} if once else {}
    if isinstance(failure, Exception) and not isinstance(failure, HilError) and not out_of_memory(failure):
        fields["traceback"] = "".join(traceback.format_exception(failure))
    return _unlogged(_record(store, "run_failed", error=error, **fields), "failure", error)


@contextlib.contextmanager
def _warnings_logged(store: RunStore) -> Iterator[None]:
    """The warnings the hil command shows as its own (`run_warning`: hil's, such as a capture repeated after dropped
    frames or the traffic log stopping, and a library's alike, but for its deprecations) are shown as before during a
    run and also logged as ``warning`` events, where the disk takes them; a device's (`DeviceWarning`) are shown every
    time, the others once per place and text, as Python shows them."""
    show = warnings.showwarning

    def show_and_log(message: Warning | str, category: type[Warning], *where: Any) -> None:
        if run_warning(category):
            _record(store, "warning", category=category.__name__, message=str(message))
        show(message, category, *where)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeviceWarning)
        warnings.showwarning = show_and_log
        yield


@contextlib.contextmanager
def _closing(lab: Lab, store: RunStore) -> Iterator[Lab]:
    """``lab``, closed however the block ends (its instruments made safe). Where that fails after the run ended on
    an error or a stop (an instrument gone: the cable pulled, the power cut), what ended the run is still said
    first, with the failed safe state after it, and the log ends with that failure (a last ``run_failed``), rather
    than the safe state's error replacing the cause. Where it fails after the run finished, the error says that the
    run finished, with its report, and then the failure; its log ends with ``run_finished``, as the run is whole."""
    try:
        yield lab
    except BaseException as cause:
        try:
            lab.close()
        except Exception as failure:
            unsafe = f"{SAFE_STATE_FAILED}{failure}"
            raise _and_then(cause, unsafe + _log_failure(store, unsafe, failure),
                            unsaid="; instruments were put in their safe state") from failure
        raise
    try:
        lab.close()
    except Exception as failure:
        raise HilError(f"the run finished (its report: {store.path / SUMMARY}); then going to the safe state failed: "
                       f"{failure}") from failure


def _and_then(cause: BaseException, failure: str, unsaid: str = "") -> HilError:
    """The error that says what ended the run first, and then ``failure``, which came after it and would otherwise
    have replaced it; a stop keeps its exit status. ``unsaid``: what the failure makes untrue in a stop's message."""
    if isinstance(cause, Interrupted):
        return Interrupted(f"{str(cause).replace(unsaid, '')}; then {failure}", cause.exit_status)
    return HilError(f"{_describe(cause)}; then {failure}")


def _close_store(store: RunStore, ending: BaseException | None) -> None:
    """Close the run's store (waiting for the checkpoint being written). Where that fails (the disk refused the
    checkpoint) after the run ended on an error or a stop, what ended the run is still said first."""
    try:
        store.close()
    except Exception as failure:
        if ending is None:
            raise
        error = _and_then(ending, f"closing the run folder failed{_then(_describe(ending), failure)}")
        for note in getattr(ending, "__notes__", ()):  # how to resume, which the error replacing it still says
            error.add_note(note)
        raise error from failure


def _in_float32(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` run with torch's default dtype float32, in which hil's simulators and twins compute, and the
    caller's default put back after: a notebook's ``torch.set_default_dtype(torch.float64)`` made the tensors a
    simulator creates float64, and its first matmul with one of float32 raised torch's dtype error."""

    @functools.wraps(function)
    def in_float32(*args: Any, **kwargs: Any) -> Any:
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_default_dtype(before)

    return in_float32


def _import_before_claiming() -> None:
    """Import what a run would otherwise import with its bench claimed and idle: torch's compiler, which torch imports
    as a process builds its first optimiser (`Run.prepare`, before the first device call: 1 to 3 s), and the report's
    plotting (matplotlib, imported by the report step before the bench is let go: 1 to 2 s). Once per process."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch imports torch._dynamo on the first one it builds
    import hil.report  # noqa: F401


@_in_float32
def run_protocol(protocol_path: str | Path | None = None, *, lab_path: str | Path | None = None,
                 seed: int | None = None, resume: str | Path | None = None, show_progress: bool = True,
                 output_root: str | Path | None = None) -> RunStore:
    """Run a protocol file (or resume a run folder); returns the run's store. Instruments always end safe. A run
    that had finished is checked and left as it is, untouched (its store's ``finished_before`` says so). A resume
    keeps the run's own protocol, lab, seed and folder: ``resume`` given with any of the others is a `ConfigError`."""
    saved, data, threads, started_in = None, None, torch.get_num_threads(), None
    if resume is not None:
        given = [name for name, value in (("protocol_path", protocol_path), ("lab_path", lab_path), ("seed", seed),
                                          ("output_root", output_root)) if value is not None]
        if given:  # ignored, the run went on with its own: a resume with another seed asked for was not one
            raise ConfigError(f"resume continues a run with its own protocol, lab, seed and folder; give resume "
                              f"alone, without {' and '.join(given)}")
        store = RunStore.open(resume)
        try:
            saved, events = _checkpoint_to_resume(store)
            if store.finished_before is not None:  # checked; nothing left to do or change
                store.close()
                return store
            protocol, document = load_protocol(store.path / "protocol.yaml")
            data = check_resumed_data(protocol, document)  # read, and its IDX files checked, once
            _check_same_split(store, saved, data)
            started_in = _started_in(events)
            lab = Lab.load(store.path / "lab.yaml", started_in)
            _import_before_claiming()
        except BaseException:
            store.close()
            raise
    else:
        if protocol_path is None:
            raise ConfigError("give a protocol file or --resume RUN")
        protocol, document = load_protocol(protocol_path)
        if seed is not None:
            try:
                protocol.seed = seed  # validated as the file's seed is
            except ValidationError as error:
                raise ConfigError(f"{seed!r}: {error.errors()[0]['msg']}", field="seed") from None
        lab = load_lab(protocol, document, lab_path)
        if lab_path is not None:  # protocol.yaml names the lab the run is made on, as it gives --seed applied
            protocol.lab = str(lab_path)
        created: RunStore | None = None
        try:  # what needs no hardware is checked before a run folder exists
            check_from_run(protocol, document)
            lab.build()
            system, _ = system_and_method(protocol, lab, document)
            check_twin(protocol, system, document)
            data = load_data(protocol, document)
            build_model(protocol, lab, data.n_features, data.n_classes, document)  # the widths, as hil check does
            _import_before_claiming()  # a stop meanwhile leaves no run folder behind
            try:  # ~/runs: the home's, not ./~/runs (output.root, a path of the protocol, is expanded already)
                root = Path(expand_home(str(output_root or protocol.output.root)))
            except ValueError as error:  # a traceback once the instruments were checked
                raise document.error(f"{output_root or protocol.output.root}: {error}", ("output", "root")) from None
            try:
                created = RunStore.create(root, protocol.output.name or protocol.name)
            except ConfigError as error:
                raise document.error(error.detail, ("output", "root")) from None
            created.write_text("protocol.yaml", dump_yaml(recorded(protocol, data)))
            created.write_text("lab.yaml", lab.document.text)  # type: ignore[union-attr] - the text that was loaded
        except BaseException:
            lab.close()  # stops the emulators the build started
            if created is not None:  # a folder without the files a run starts from could never be resumed
                created.close()
                shutil.rmtree(created.path, ignore_errors=True)
            raise
        store = created
    ending: BaseException | None = None  # what ended the run, said before a failure to close its folder
    try:
        discarded = 0
        try:
            if resume is not None:
                discarded = _rewind(store, saved)
            opened = lab.open(instruments_used(protocol, lab))  # closes what it opened if it fails
        except KeyboardInterrupt as stop:  # as a bench's instruments connect (a minute, maybe): no stop flag yet, so
            raise _stopped_at_once(store, stop, "a Ctrl-C") from None  # a first Ctrl-C stops at once, recorded
        except Exception as error:  # an instrument off or unreachable: recorded, as a failure while preparing is
            unlogged = _log_failure(store, _describe(error), error)
            if unlogged:
                raise HilError(f"{_describe(error)}{unlogged}") from error
            raise
        with _closing(opened, store):
            run = Run(protocol, lab, store, document, show_progress)
            try:  # from here a first Ctrl-C stops the run at execute's first safe point, after saving
                with run.stop.installed(), _warnings_logged(store):
                    _start(run, data, saved, discarded, started_in)
                    run.execute()
            except Interrupted:
                raise
            except KeyboardInterrupt as stop:  # instruments are made safe as this leaves the lab's block
                if _finished(store):  # it came as run_finished was logged: the run is whole, not to be resumed
                    raise Interrupted(f"stopped by {str(stop) or 'a second Ctrl-C'} as the run finished; nothing to "
                                      f"resume; its report: {store.path / SUMMARY}",
                                      128 + getattr(stop, "signum", signal.SIGINT)) from None
                raise _stopped_at_once(store, stop, "a second Ctrl-C") from None
            except BaseException as error:  # whatever ends the run is recorded as it is said, then reported
                said = _describe(error)
                if out_of_memory(error):  # the log says what the terminal does, not torch's allocation failure
                    step = next((name for name in STEPS if name not in run.completed), STEPS[-1])
                    said = (f"the {step} step ran out of memory: the protocol asks for more than this machine holds; "
                            "start a new run with smaller sizes (twin.collect's thetas and inputs_per_theta, the "
                            "batch sizes, the layers' widths)")
                unlogged = _log_failure(store, said, error, run.step)
                if unlogged or said != _describe(error):
                    raise HilError(f"{said}{unlogged}") from error
                raise
    except BaseException as error:  # not sys.exc_info() in the finally: in a caller's except block, that is its own
        ending = error
        # not a stop, which says it itself, nor a run that finished (its safe state failed), which has nothing to resume
        once = _resumable_once(error) if isinstance(error, Exception) and not _finished(store) else None
        if once:
            error.add_note(f"what the run measured is kept in {store.path}; once {once}, resume with: "
                           f"{resume_command(store.path)}")
        raise
    finally:
        torch.set_num_threads(threads)
        _close_store(store, ending)
    return store
