"""Experiment protocols: the YAML schema of a run, and building the model it describes.

A protocol names the lab and the system, the data set, the model (a stack of digital and physical layers), the
twin (how to collect data and fit it), the training method and its settings, the training and evaluation
settings, and where the run folder goes. Unknown keys are refused; errors name the file, the line and the field.
`check_protocol` validates a protocol against its lab without touching hardware.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from hil.config import LearningRate, Seed, Strict, UserPath, YamlDocument, dotted
from hil.datasets import DATASETS, IDX_FILES, Dataset
from hil.errors import ConfigError, DeviceError, HilError, RunFileError, counted
from hil.lab import Lab, reads_as
from hil.methods.base import TrainingMethod, method_class
from hil.nn import PhysicalLayer
from hil.store import RunStore, file_digests, held_by_a_run, open_hdf5
from hil.systems.base import PhysicalSystem
from hil.twin.collect import TwinData, held_out_count, mixed_seed, repeated_groups
from hil.twin.models import DEFAULT_HIDDEN, TWIN_KINDS, build_twin, load_twin, saved_twin_spec

#: The largest size accepted (a batch, a layer's width): torch counts sizes in 64 bits, and fails beyond mid-run.
SIZE_MAX = 2**63 - 1


#: An IDX file's name in its folder, and a SHA-256 as hexadecimal digits.
IdxFile = Literal[IDX_FILES]  # type: ignore[valid-type]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class DatasetConfig(Strict):
    name: Literal[DATASETS]  # type: ignore[valid-type]
    path: UserPath | None = Field(None, description="folder of MNIST-format IDX files (idx only), relative to the "
                                  "working directory")
    pool: int = Field(1, ge=1, description="average-pool IDX images by this factor (idx only)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing (digits: of the "
                                 "samples; vowels: of the speakers); an IDX set brings its own test files")
    limit: int | None = Field(None, ge=2, description="at most this many training samples")
    sha256: dict[IdxFile, Sha256] | None = Field(
        None, description="the SHA-256 of each IDX file read, by name (idx only): of the file as stored, a .gz "
        "file's compressed bytes (what sha256sum gives). A run records it in its protocol.yaml, and its resume, as any "
        "run of a protocol that gives it, refuses a file missing or changed; without it, nothing is checked")

    @model_validator(mode="after")
    def _fields_of_the_set(self) -> DatasetConfig:
        # by value, not by presence: a run's resolved protocol.yaml writes every field, defaults included
        idx_only = [name for name, unset in (("path", None), ("pool", 1), ("sha256", None))
                    if getattr(self, name) != unset]
        if self.name != "idx" and idx_only:
            one = len(idx_only) == 1
            raise ValueError(f"{' and '.join(idx_only)} {'is' if one else 'are'} for IDX files only (name: idx), not "
                             f"the bundled {self.name} set; leave {'it' if one else 'them'} out")
        if self.name == "idx" and self.test_fraction != type(self).model_fields["test_fraction"].default:
            raise ValueError(f"test_fraction {self.test_fraction:g} is for the bundled sets only: IDX files bring "
                             "their own test set (t10k-*), which a run tests on whole; leave it out")
        return self


class PhysicalSpec(Strict):
    system: str | None = Field(None, description="a system of the lab; default: the protocol's system (the only "
                               "one a run fits a twin to)")
    theta_init: Literal["uniform", "center"] = Field(
        "uniform", description="θ's start: uniform (seeded, within θ's bounds) or the centre of the bounds")
    input_map: Literal["none", "sigmoid"] = Field(
        "none", description="none: inputs must be within the system's bounds; sigmoid: any real input")


class LinearSpec(Strict):
    out_features: int = Field(ge=1, le=SIZE_MAX)
    bias: bool = True


class LayerSpec(Strict):
    """One layer: exactly one of ``physical``, ``linear``, ``activation``, ``batchnorm``."""

    physical: PhysicalSpec | None = None
    linear: LinearSpec | None = None
    activation: Literal["relu", "tanh", "sigmoid", "silu"] | None = None
    batchnorm: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LayerSpec:
        given = [name for name in ("physical", "linear", "activation", "batchnorm") if getattr(self, name) is not None]
        if len(given) != 1:
            got = f"{' and '.join(given)}; make each a layer of its own" if given else "none"
            raise ValueError(f"a layer is exactly one of physical, linear, activation, batchnorm; got {got}")
        if self.batchnorm is False:
            raise ValueError("batchnorm: false is no layer; write batchnorm: true, or remove the layer")
        return self


class ModelConfig(Strict):
    layers: list[LayerSpec] = Field(min_length=1)


class CollectConfig(Strict):
    thetas: int = Field(24, ge=2, description="parameter vectors θ (Sobol design)")
    inputs_per_theta: int = Field(64, ge=1, description="inputs measured per θ (one device call)")
    repeats: int = Field(3, ge=1, description="measurements of the first groups, for the noise floor")
    repeat_thetas: int = Field(4, ge=1, description="the first groups measured repeats times")
    design: Literal["sobol", "data", "mixed"] = Field(
        "mixed", description="inputs: Sobol points, training rows, or half each; rows only when the data feed the "
        "physical layer directly (else Sobol)")


#: Adam's learning rate of a twin's fit where the protocol gives none, for the order-one calibration factors of a
#: physics twin (and a residual's physics): at 0.02 each step's jitter ended the fit by early stopping within 8 epochs,
#: at held-out NMSEs of the default lab's crossbar, resistive network and oscillators of 0.0134, 0.00017 and 0.00071,
#: against 0.0120, 0.00001 and 0.00016 at this rate, within 46 epochs (the collection and fit of the defaults).
FIT_LR = 5e-3
#: A neural twin's: torch's and Adam's own default for a network's weights. At 0.02 a neural twin of the default lab's
#: resistive network was fitted to a held-out NMSE of 2.1, worse than each output's mean (0.145 at this rate).
NEURAL_FIT_LR = 1e-3


class FitConfig(Strict):
    epochs: int = Field(60, ge=0)
    lr: LearningRate = Field(FIT_LR, description="Adam's learning rate, in the units of the twin's parameters (a "
                             "neural twin's default: 0.001)")
    patience: int = Field(10, ge=1, description="epochs without a better stopping error before the fit stops (the "
                          "best state is kept)")
    validation_fraction: float = Field(0.25, gt=0, lt=1, description="fraction of the θ groups held out to judge "
                                       "the twin, and of the rest, that the fit stops early on")


class FidelityConfig(Strict):
    directions: int = Field(3, ge=1, description="random directions for the Jacobian check")
    step: float = Field(0.05, gt=0, le=0.25, description="finite-difference step, fraction of the bounds; at most a "
                        "quarter, as the point is moved that far inside them (half put it at their centre, where a "
                        "crossbar's θ derivatives are 0 and the cosine says nothing)")
    repeats: int = Field(2, ge=1, description="device measurements averaged per finite difference")


class TwinConfig(Strict):
    kind: Literal[TWIN_KINDS] = "physics"  # type: ignore[valid-type]
    hidden: list[Annotated[int, Field(ge=1, le=SIZE_MAX)]] | None = Field(
        None, description="hidden layer widths of the neural and residual twins; default: [256, 256] (neural), "
        "[128, 128] (residual)")
    collect: CollectConfig = Field(default_factory=CollectConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    from_run: UserPath | None = Field(None, description="reuse the twin (and data) of this run folder")

    @model_validator(mode="after")
    def _hidden_for_networks(self) -> TwinConfig:
        if self.hidden is not None and self.kind not in ("neural", "residual"):
            raise ValueError(f"hidden sets the layers of a neural or residual twin; a {self.kind} twin has none")
        return self

    @model_validator(mode="after")
    def _neural_learning_rate(self) -> TwinConfig:
        """A neural twin's fit left without ``lr`` takes `NEURAL_FIT_LR`, not the others' `FIT_LR` (a run records
        the rate it fitted with, so its resume fits with that)."""
        if self.kind == "neural" and "lr" not in self.fit.model_fields_set:
            self.fit.lr = NEURAL_FIT_LR
        return self

    @model_validator(mode="after")
    def _neural_fitted(self) -> TwinConfig:
        """A neural twin starts as a random network, which ``fit.epochs: 0`` would leave it: training through it, a
        run would learn nothing of the device (a physics twin starts as the physics, a residual one as well)."""
        if self.kind == "neural" and self.fit.epochs == 0 and self.from_run is None:
            raise ValueError("fit.epochs 0 leaves a neural twin the random network it starts as; give fit.epochs of 1 "
                             "or more, or a physics or residual twin, which start from the physics")
        return self

    @model_validator(mode="after")
    def _split_for_validation(self) -> TwinConfig:
        """The fit holds out whole θ groups. Refused here rather than after the collection: a split that leaves no
        group to fit, and a part of a single measurement (the output variance that normalises the errors needs two)."""
        if self.from_run is not None:
            return self  # the reused run's split
        groups, rows = self.collect.thetas, self.collect.inputs_per_theta
        held_out = held_out_count(groups, self.fit.validation_fraction)
        if held_out >= groups:
            fraction = self.fit.validation_fraction
            raise ValueError(f"fit.validation_fraction {fraction:g} holds out {held_out} of the {groups} θ groups "
                             "(collect.thetas), leaving none to fit; lower it or collect more thetas")
        if min(held_out, groups - held_out) * rows < 2:
            raise ValueError(f"the fit's {'held-out' if held_out * rows < 2 else 'training'} part would be one "
                             "measurement, whose output variance is undefined; raise collect.inputs_per_theta or "
                             "collect.thetas")
        return self


class MethodConfig(Strict):
    name: str = Field(max_length=200, description="a training method's registered name (pat, insilico)")
    settings: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(64, ge=1, le=SIZE_MAX)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: LearningRate = Field(0.01, description="learning rate of the digital layers")
    physical_lr: LearningRate | None = Field(None, description="learning rate of θ, in θ's unit (with Adam, each θ "
                                             "moves by about this much a step; default: lr)")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="learning rates decay to zero along a half cosine over the run, or stay constant")


class EvaluationConfig(Strict):
    every_epoch: bool = Field(True, description="evaluate on the device (and twin) after every epoch")
    twin: bool = Field(True, description="also evaluate the twin's predictions")
    batch_size: int = Field(512, ge=1, le=SIZE_MAX)


class OutputConfig(Strict):
    root: UserPath = "runs"
    name: str | None = Field(None, max_length=200, description="the run folder's name after its date and time "
                             "(default: the protocol's name)")


class Protocol(Strict):
    """An experiment protocol."""

    name: str = Field(max_length=200)
    description: str = ""
    lab: UserPath = Field("lab.yaml", description="lab file, relative to the working directory")
    system: str
    seed: Seed = 0
    dataset: DatasetConfig
    model: ModelConfig
    twin: TwinConfig = Field(default_factory=TwinConfig)
    method: MethodConfig
    training: TrainingConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


def load_protocol(path: str | Path | YamlDocument) -> tuple[Protocol, YamlDocument]:
    """Read (unless given its document) and validate a protocol file; a lab file given for one is named as such, not
    as a dozen unknown keys (as `Lab.load` names a protocol given for a lab file)."""
    document = YamlDocument.read(path)
    try:
        return document.validate(Protocol), document
    except ConfigError:
        if reads_as(document.data) == "lab":
            raise ConfigError(f"{document.source} is a lab file; hil run takes a protocol (e.g. experiments/*.yaml), "
                              "and a lab with --lab") from None
        raise


def build_method(protocol: Protocol, document: YamlDocument | None = None) -> TrainingMethod:
    """The protocol's method with its validated settings."""
    where = ("method",)
    try:
        cls = method_class(protocol.method.name)
    except ConfigError as error:
        raise locate(document, error.detail, (*where, "name")) from None
    if document is not None:
        settings = document.validate(cls.Settings, (*where, "settings")) if protocol.method.settings else None
    else:
        settings = cls.Settings.model_validate(protocol.method.settings)
    return cls(settings)


def load_lab(protocol: Protocol, document: YamlDocument, lab_path: str | Path | None = None) -> Lab:
    """The lab a protocol runs on: ``lab_path``, else its ``lab:`` (a missing file is located there)."""
    with _reached(document, f"lab file {protocol.lab!r}", "name a lab file you can read", ("lab",)):
        found_file = lab_path is not None or Path(protocol.lab).is_file()
    if not found_file:
        lab = Path(protocol.lab)
        found = "is a folder" if lab.is_dir() and protocol.lab.strip() else \
            "is not a regular file" if lab.exists() and protocol.lab.strip() else "not found"  # /dev/zero, a pipe
        if "lab" not in protocol.model_fields_set:  # its default: "name a lab file, e.g. lab.yaml" named it again
            raise document.error(f"the protocol gives no lab:, and its default, lab.yaml, is {found} in the working "
                                 f"directory, {Path.cwd()}; run hil in the lab file's folder, or give lab: the lab "
                                 "file's path", ("lab",))
        relative = "" if lab.is_absolute() else " (relative to the working directory)"  # ~/lab.yaml is absolute now
        raise document.error(f"lab file {protocol.lab!r} {found}{relative}; name a lab file, e.g. lab.yaml", ("lab",))
    return Lab.load(lab_path or protocol.lab)


def system_and_method(protocol: Protocol, lab: Lab,
                      document: YamlDocument | None = None) -> tuple[PhysicalSystem, TrainingMethod]:
    """The protocol's system in ``lab`` and its method, checked against each other; mistakes located."""
    try:
        system = lab.system(protocol.system)
    except ConfigError as error:
        raise locate(document, error.detail, ("system",)) from None
    method = build_method(protocol, document)
    try:
        method.check(system)
    except ConfigError as error:
        raise locate(document, error.detail, ("method", "name")) from None
    if "twin" in method.needs:
        for index, layer in enumerate(protocol.model.layers):
            name = layer.physical.system if layer.physical is not None else None
            if name not in (None, protocol.system):
                where = ("model", "layers", index, "physical", "system")
                try:
                    lab.system(name)  # a misspelt system is said to be one, before why another would not do
                except ConfigError as error:
                    raise locate(document, error.detail, where) from None
                raise locate(document, f"method {method.name!r} trains a physical layer through a twin, and a run "
                                       f"fits one, to the protocol's system {protocol.system!r}; {name!r} would have "
                                       "none", where)
    layers = sum(1 for layer in protocol.model.layers
                 if layer.physical is not None and (layer.physical.system or protocol.system) == protocol.system)
    if not any(layer.physical is not None for layer in protocol.model.layers):
        raise locate(document, f"the model has no physical layer: nothing it computes runs on {protocol.system!r}, yet "
                               "the run would measure it for a twin and report the model's accuracy as the device's; "
                               "add a layer `physical: {}`", ("model", "layers"))
    try:
        method.check_training(protocol.training.batch_size, layers)
    except ConfigError as error:
        raise locate(document, error.detail, tuple((error.field or "method.settings").split("."))) from None
    return system, method


@contextlib.contextmanager
def _reached(document: YamlDocument | None, what: str, fix: str, location: tuple[str | int, ...]) -> Iterator[None]:
    """Looks at a path the protocol names (``what``), as the block does: a folder above it that cannot be looked into
    (another's home) fails the look with an `OSError`, which is made a `ConfigError` at ``location`` saying ``fix``."""
    try:
        yield
    except OSError as error:
        raise locate(document, f"{what} cannot be reached ({error.strerror or error}); {fix}", location) from None


def locate(document: YamlDocument | None, message: str, location: tuple[str | int, ...]) -> ConfigError:
    """A `ConfigError` at ``location`` of the protocol's ``document``, or naming the field where there is none (a
    protocol built in Python)."""
    if document is not None:
        return document.error(message, location)
    return ConfigError(message, field=dotted(location))


#: Mixed into the seeds of θ's start (`layer_seed`) and of a network twin's initial weights (`twin_seed`), so that
#: neither is another's, nor one of the twin data's group seeds (`hil.twin.collect.group_seed`, of two keys).
THETA_INIT_STREAM, TWIN_INIT_STREAM = 1, 2


def layer_seed(seed: int, index: int) -> int:
    """The seed of θ's start in the physical layer at ``index`` of a model of a protocol of seed ``seed``: mixed from
    both (`mixed_seed`) past the first layer, so that runs of other seeds start none of their layers at another run's
    θ (``seed + index`` started seed 2's first layer where seed 0's third began). A first layer's is the seed itself:
    seeds differ there already, and a model whose physical layer comes first (every protocol of experiments/) keeps
    the θ its figures were measured with."""
    return seed if index == 0 else mixed_seed(seed, index, THETA_INIT_STREAM)


def twin_seed(seed: int) -> int:
    """The seed of the initial weights of the network twin (neural, or a residual's network) that a run of a protocol
    of seed ``seed`` fits: its own, so that a twin fitted to the same data is the same whatever digital layers the
    model has (drawn from torch's global generator after the model's weights, it started where their sizes left it)."""
    return mixed_seed(seed, 0, TWIN_INIT_STREAM)


def build_model(protocol: Protocol, lab: Lab, n_features: int, n_classes: int,
                document: YamlDocument | None = None) -> nn.Sequential:
    """The protocol's layer stack, its physical layers in ``device`` mode without a twin (a method sets both);
    widths are checked against the data, the systems and the classes. Seeds torch's global generator with the
    protocol's seed (the linear layers' initial weights come from it)."""
    torch.manual_seed(protocol.seed)
    layers: list[nn.Module] = []
    width = n_features
    for index, spec in enumerate(protocol.model.layers):
        where = ("model", "layers", index)
        if spec.physical is not None:
            name = spec.physical.system or protocol.system
            try:
                system = lab.system(name)
            except ConfigError as error:
                raise locate(document, error.detail, (*where, "physical", "system")) from None
            if width != system.n_in:
                before = "the layer before gives" if index else f"the {protocol.dataset.name} data have"  # not layer -1
                width_said = f"{width}{'' if index else ' features'}"
                last = next((layer for layer in reversed(protocol.model.layers[:index])
                             if layer.linear is not None or layer.physical is not None), None)  # what set the width
                fix = f"give the linear layer before it out_features: {system.n_in}" if last and last.linear else \
                    f"put a linear layer of out_features: {system.n_in} before it"
                raise locate(document, f"the physical layer on {name!r} takes {system.n_in} inputs, but {before} "
                                       f"{width_said}; {fix}", where)
            if index and spec.physical.input_map == "none":
                _check_bounded_input(protocol.model.layers[index - 1], name, system, document,
                                     (*where, "physical", "input_map"))
            layers.append(PhysicalLayer(system, mode="device", theta_init=spec.physical.theta_init,
                                        input_map=spec.physical.input_map, seed=layer_seed(protocol.seed, index)))
            width = system.n_out
        elif spec.linear is not None:
            try:
                layers.append(nn.Linear(width, spec.linear.out_features, bias=spec.linear.bias))
            except (RuntimeError, MemoryError):  # the weights cannot be allocated
                raise locate(document, f"a {width} × {spec.linear.out_features} linear layer does not fit in memory",
                             (*where, "linear", "out_features")) from None
            width = spec.linear.out_features
        elif spec.activation is not None:
            layers.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}[spec.activation]())
        elif spec.batchnorm:
            if protocol.training.batch_size < 2:
                raise locate(document, "a batchnorm layer needs batches of at least 2 samples",
                             ("training", "batch_size"))
            layers.append(nn.BatchNorm1d(width))
    if width != n_classes:
        raise locate(document, f"the model ends with {width} outputs; the data set has {n_classes} classes",
                     ("model", "layers"))
    return nn.Sequential(*layers)


#: The range of each activation's output (the others give any value).
ACTIVATION_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def _check_bounded_input(before: LayerSpec, name: str, system: PhysicalSystem, document: YamlDocument | None,
                         where: tuple[str | int, ...]) -> None:
    """A physical layer that takes its inputs as they are (``input_map: none``) after another layer: that layer's
    outputs must lie within the system's input bounds, or the device refuses the first batch beyond them, mid-run."""
    low, high = system.x_bounds
    given = ACTIVATION_RANGES.get(before.activation or "")
    if given is not None and low <= given[0] and given[1] <= high:
        return
    what = (f"a {before.activation} activation" if before.activation else "a linear layer" if before.linear else
            "a batch norm" if before.batchnorm else "a physical layer")
    reach = f"values in {given[0]:g}..{given[1]:g}" if given is not None else "any value"
    fits = [a for a, (lowest, highest) in ACTIVATION_RANGES.items() if low <= lowest and highest <= high]
    instead = f", or put a {' or '.join(fits)} activation before it" if fits else ""
    raise locate(document, f"the physical layer on {name!r} takes inputs within {low:g}..{high:g} as they are "
                           f"(input_map: none), but {what} before it gives {reach}; write input_map: sigmoid"
                           f"{instead}", where)


def instruments_used(protocol: Protocol, lab: Lab) -> list[str]:
    """The names of the lab's instruments that the protocol's systems play on: all a run connects."""
    systems = {protocol.system, *(layer.physical.system or protocol.system for layer in protocol.model.layers
                                  if layer.physical is not None)}
    return [instrument for name in systems if name in lab.config.systems
            for instrument in lab.config.systems[name].instruments.values()]


def first_physical_system(protocol: Protocol, lab: Lab) -> PhysicalSystem | None:
    """The system of the first layer, if the model starts with a physical layer taking raw bounded inputs."""
    first = protocol.model.layers[0].physical
    if first is None or first.input_map != "none":
        return None
    return lab.system(first.system or protocol.system)


def check_from_run(protocol: Protocol, document: YamlDocument | None = None, resumed: bool = False) -> None:
    """The run that ``twin.from_run`` names holds what reusing it needs, its fitted twin (``twin/``) and the data
    the twin was fitted to (``data/twin_data.h5``); a `ConfigError` at that field if not. Their contents are read,
    and checked, where they are used. ``resumed``: the run is a resume, which cannot name another run."""
    source = protocol.twin.from_run
    if not source:
        return
    with _reached(document, source, "name a run folder you can read", ("twin", "from_run")):
        missing = [f"{name} ({what})" for name, what in (("twin/", "a fitted twin"), ("data/twin_data.h5", "its data"))
                   if not (Path(source) / name).exists()]
    if missing:
        fix = "a resumed run reuses the run it started from: put it back, or start a new run" if resumed else \
            "name a run that finished its collect and fit_twin steps"
        raise locate(document, f"{source} has no {' and no '.join(missing)}; {fix}", ("twin", "from_run"))
    if held_by_a_run(Path(source)):  # a run going on may be writing its twin (twin.json, then twin.pt) as it is read:
        # said before calibrating; a report of it writes its report alone, and is no reason to wait
        raise locate(document, f"{source} is open in another hil process (a run or a resume of it); wait for it to "
                               f"end{'' if resumed else ', or name another run'}", ("twin", "from_run"))


def check_physics(protocol: Protocol, system: PhysicalSystem, document: YamlDocument | None = None) -> None:
    """The system's physics model, as the protocol's physics, residual or oracle twin starts from it, computes
    outputs of the device's shape for two inputs (x at its bounds, θ at their middle) without an error of its own, and
    an oracle's takes the world's hidden values: said at ``twin.kind`` before a run folder exists, not after the
    device's data are collected. A model measured by calibrating (the fiber's) is checked once calibrated."""
    try:
        physics = build_twin("oracle" if protocol.twin.kind == "oracle" else "physics", system)
        low, high = system.x_bounds
        with torch.no_grad():
            physics(torch.tensor([[low] * system.n_in, [high] * system.n_in]),
                    torch.full((system.n_params,), sum(system.theta_bounds) / 2))
    except ConfigError as error:  # a hidden value the model lacks
        raise locate(document, f"system {protocol.system!r}: {error.detail}", ("twin", "kind")) from None
    except DeviceError as error:
        if isinstance(error.__cause__, Exception) and not isinstance(error.__cause__, HilError):  # a plugin's slip
            raise locate(document, str(error), ("twin", "kind")) from None
    except HilError as error:  # outputs of another shape, or the model's own error
        raise locate(document, str(error), ("twin", "kind")) from None


def check_twin(protocol: Protocol, system: PhysicalSystem, document: YamlDocument | None = None) -> None:
    """The twin can be had for ``system``: the one ``twin.from_run`` names loads (its kind, size and settings), and
    a new network twin's layers, and the data a new twin collects, fit in memory (they were found not to after
    calibrating, or collecting); else a `ConfigError` at the field. An oracle twin, the protocol's or the one
    ``twin.from_run`` reuses, needs a simulated system (the world's hidden calibration)."""
    twin = protocol.twin
    bench = not all(hasattr(i, "world") for i in system.instruments.values())
    *some, last = [kind for kind in TWIN_KINDS if kind != "oracle"]
    others = f"{', '.join(some)} or {last}"
    needs = f"a simulated system (it is the world's hidden calibration), and {protocol.system!r} plays on the bench"
    if twin.kind == "oracle" and bench:
        raise locate(document, f"an oracle twin needs {needs}; give kind {others}", ("twin", "kind"))
    if twin.kind != "neural" and not twin.from_run:
        check_physics(protocol, system, document)
    if twin.from_run:
        folder = Path(twin.from_run) / "twin"
        try:  # the reused twin's kind, not the protocol's, is the one the run builds (after calibrating)
            spec = saved_twin_spec(folder, system)
            if spec["kind"] == "oracle" and bench:
                raise ConfigError(f"{folder} holds an oracle twin, which needs {needs}; point twin.from_run at a "
                                  f"run whose twin is of kind {others}")
            load_twin(folder, system)
        except ConfigError as error:
            raise locate(document, error.detail, ("twin", "from_run")) from None
        except DeviceError:  # a physics model measured by calibrating (the fiber's transmission matrix): its kind and
            pass  # system are checked above; the twin is loaded, and its parameters checked, once calibrated
        _check_reused_data(Path(twin.from_run) / "data" / "twin_data.h5", system, document)
        data = reused_twin_data(protocol, document)  # read whole, as the collect step reads them after calibrating
        try:  # the groups its fidelity step judges the twin on
            held_out_groups(spec, data, Path(twin.from_run))
        except ConfigError as error:
            raise locate(document, error.detail, ("twin", "from_run")) from None
    elif twin.hidden is not None:
        try:  # the network alone: a residual twin's physics may need calibrating first (the fiber's), and is small
            build_twin("neural", system, tuple(twin.hidden))
        except (RuntimeError, MemoryError):  # the weights cannot be allocated
            raise locate(document, f"a {twin.kind} twin of hidden widths {twin.hidden} does not fit in memory",
                         ("twin", "hidden")) from None
    if not twin.from_run:  # the collected inputs and outputs, allocated and freed: not after calibrating, mid-run
        collect = twin.collect
        try:
            torch.empty(collect.thetas, collect.inputs_per_theta, system.n_in + system.n_out)
        except (RuntimeError, MemoryError, OverflowError, TypeError):  # TypeError: a size beyond 64 bits
            raise locate(document, f"{collect.thetas} θ groups of {collect.inputs_per_theta} inputs ({system.n_in} "
                                   f"values in, {system.n_out} out, each) do not fit in memory; collect fewer thetas "
                                   "or inputs_per_theta", ("twin", "collect")) from None
        repeated = repeated_groups(collect.thetas, collect.repeats, collect.repeat_thetas)
        try:  # and the repeated measurements (y_repeats)
            torch.empty(collect.repeats if repeated else 0, repeated, collect.inputs_per_theta, system.n_out)
        except (RuntimeError, MemoryError, OverflowError, TypeError):
            raise locate(document, f"{collect.repeats} measurements of each of {repeated} θ groups of "
                                   f"{collect.inputs_per_theta} inputs ({system.n_out} values out, each) do not fit "
                                   "in memory; lower repeats or repeat_thetas", ("twin", "collect")) from None


def _check_reused_data(path: Path, system: PhysicalSystem, document: YamlDocument | None) -> None:
    """The data ``twin.from_run`` reuses have the system's sizes (its inputs, θ and outputs); else a `ConfigError` at
    that field. A file that does not open is left to the collect step, which reads it and says what is wrong. (A fiber
    twin's parameters do not depend on its θ count: a twin of 16 θ loaded for 8, and the run failed after calibrating,
    at its fidelity step, on the data's θ.)"""
    import h5py

    try:
        with open_hdf5(path) as file:
            found = {name: file.get(name) for name in ("x", "theta", "y")}  # None: not there (or a broken link)
            shapes = {name: item.shape for name, item in found.items() if isinstance(item, h5py.Dataset)}
            other = next((f"{name} is a {type(item).__name__}" for name, item in found.items()
                          if item is not None and name not in shapes), None)
    except (OSError, ValueError):
        return
    if other is not None:  # a group where an array goes: not a run's file (hand-made, or edited)
        raise locate(document, f"{path} holds no data a run wrote: {other}, not an array; point twin.from_run at a "
                               "run on this system as configured", ("twin", "from_run"))
    sizes = {"x": ("inputs", system.n_in), "theta": ("θ", system.n_params), "y": ("outputs", system.n_out)}
    for name, shape in shapes.items():
        what, size = sizes[name]
        if shape and shape[-1] != size:
            raise locate(document, f"{path} holds data of {shape[-1]} {what}, system {system.name!r} has {size}; "
                                   "point twin.from_run at a run on this system as configured", ("twin", "from_run"))


def reused_twin_data(protocol: Protocol, document: YamlDocument | None = None) -> TwinData:
    """The twin data of the run that ``twin.from_run`` names, read as the collect step reads them: from a run folder
    (its log read, its lock not taken: runs started together on one twin, seeds in parallel, refused each other),
    whose ``data/twin_data.h5`` holds twin data; else a `ConfigError` at that field."""
    try:
        source = RunStore.open(str(protocol.twin.from_run), watch=True)
    except ConfigError as error:  # a twin/ and data/ copied without their run's folder
        raise locate(document, f"{error.detail}; point twin.from_run at a whole run folder, as hil run made it",
                     ("twin", "from_run")) from None
    source.close()
    try:
        arrays, _ = source.load_arrays("data/twin_data.h5", fix="point twin.from_run at a run with intact data")
        return TwinData.from_arrays(arrays)
    except (RunFileError, ConfigError) as error:  # the source run's file, not this run's: located at the field
        message = str(error) if isinstance(error, RunFileError) else (
            f"{source.path / 'data/twin_data.h5'}: {error.detail}; point it at a run that finished its collect step")
        raise locate(document, message, ("twin", "from_run")) from None


def held_out_groups(spec: Mapping[str, Any], data: TwinData, fitted_in: Path) -> list[int]:
    """The θ groups of ``data`` that the twin described by ``spec`` was not fitted on: recorded with the twin when it
    was fitted; for a twin from a run of an earlier hil, the split of the run in ``fitted_in`` (its protocol.yaml's
    seed and validation fraction). Groups that are not groups of ``data`` are a `ConfigError`."""
    groups = spec.get("held_out_groups")
    if groups is None:
        try:
            fitted_by, _ = load_protocol(fitted_in / "protocol.yaml")
        except ConfigError as error:
            raise ConfigError(f"{error} (it tells which θ groups the reused twin was fitted on); point "
                              "twin.from_run at an intact run") from None
        groups = data.split_groups(fitted_by.twin.fit.validation_fraction, fitted_by.seed)[1].tolist()
    if not groups or not all(isinstance(g, int) and 0 <= g < data.n_groups for g in groups):
        raise ConfigError(f"the twin's held-out θ groups {groups!r} are not groups of its {data.n_groups}; point "
                          "twin.from_run at an intact run")
    return groups


def recorded(protocol: Protocol, data: Dataset | None = None) -> dict[str, Any]:
    """The protocol as a run folder records it: every field, defaults included, and the paths a resumed run reads
    again (the IDX folder, ``twin.from_run``) made absolute as this run reads them, from the working directory, so
    that a resume from any folder finds the same files, and the SHA-256 of each IDX file ``data`` were read from, so
    that it finds them unchanged. (The lab is not read again: the run keeps a copy.) The method's settings and a
    neural or residual twin's hidden widths are written with their defaults too, which a later hil may change."""
    fields = protocol.model_dump(mode="json")
    fields["method"]["settings"] = build_method(protocol).settings.model_dump(mode="json")
    if protocol.twin.hidden is None and protocol.twin.kind in DEFAULT_HIDDEN and not protocol.twin.from_run:
        fields["twin"]["hidden"] = list(DEFAULT_HIDDEN[protocol.twin.kind])
    if protocol.dataset.path is not None:
        fields["dataset"]["path"] = str(Path(protocol.dataset.path).resolve())
    if data is not None and data.files:
        fields["dataset"]["sha256"] = dict(data.files)
    if protocol.twin.from_run:
        fields["twin"]["from_run"] = str(Path(protocol.twin.from_run).resolve())
    return fields


def check_resumed_data(protocol: Protocol, document: YamlDocument) -> Dataset:
    """A resumed run's data, as `load_data` reads and checks them: its IDX folder still where the run found it, and
    each IDX file in it the one the run read (``dataset.sha256``; a run of an earlier hil recorded none, and its files
    are not checked); else a `ConfigError` at the field naming the folder or the file, what changed and what to do
    (not to name another: a resume refuses its protocol.yaml edited)."""
    path = protocol.dataset.path
    folder = Path(path) if path is not None else None
    _dataset_folder_reached(protocol, document)
    if folder is None or folder.is_dir():
        return load_data(protocol, document, resumed=True)
    if folder.is_absolute():
        fix = "the run started with its data there: put them back, or start a new run"
    else:  # recorded as the protocol wrote it, by an earlier hil
        fix = "the path is relative to the folder the run was started in: resume from there"
    raise document.error(f"dataset folder {path!r} {'is a file' if folder.exists() else 'not found'}; {fix}",
                         ("dataset", "path"))


def load_data(protocol: Protocol, document: YamlDocument | None = None, *, resumed: bool = False) -> Dataset:
    """The protocol's data set, split and limited. An unknown set, a bad path, IDX files other than those
    ``dataset.sha256`` gives (`check_data_files`; ``resumed``: those the run started with), or data that leave too
    few rows to train on (`check_training_rows`) or a single class are located in the protocol."""
    from hil.datasets import load_dataset

    d = protocol.dataset
    _dataset_folder_reached(protocol, document)
    check_data_files(protocol, None, document, resumed)  # a file gone is said to be, before the set is read
    try:
        data = load_dataset(d.name, seed=protocol.seed, test_fraction=d.test_fraction, path=d.path, pool=d.pool,
                            limit=d.limit)
    except ConfigError as error:
        if d.sha256 is not None:  # a file changed (cut short, of another set) may fail to read: that is said first
            try:  # "" for a file gone, nothing for files unreadable: taken as given, the loader's error is said
                now = file_digests(Path(str(d.path)), tuple(d.sha256))
            except OSError:
                now = {}
            check_data_files(protocol, {name: now.get(name) or digest for name, digest in d.sha256.items()},
                             document, resumed)
        where = tuple(error.field.split(".")) if error.field else ("dataset", "path")
        raise locate(document, error.detail, where) from None
    check_data_files(protocol, data.files, document, resumed)
    check_training_rows(protocol, len(data.y_train), document)
    classes = data.y_train.unique()
    if len(classes) < 2:  # one sample, or all of one class: nothing to tell apart (one output: a loss of 0)
        # the seed, where it chose the rows: hil run --seed chooses others than the file's seed, which hil check took
        seeded = f" (seed {protocol.seed}'s split)" if d.name != "idx" or d.limit is not None else ""
        raise locate(document, f"the data leave {len(data.y_train)} training sample(s), all of class "
                               f"{data.class_names[int(classes[0])]!r}{seeded}; a classifier needs samples of at "
                               "least two classes", _rows_field(protocol))
    return data


def _dataset_folder_reached(protocol: Protocol, document: YamlDocument | None) -> None:
    """A `ConfigError` at ``dataset.path`` where the folder lies below one that cannot be looked into (another's
    home): the look raises PermissionError, which named the path alone."""
    path = protocol.dataset.path
    if path is not None:
        with _reached(document, f"dataset folder {path!r}", "name a folder you can read", ("dataset", "path")):
            Path(path).exists()


def check_data_files(protocol: Protocol, read: Mapping[str, str] | None, document: YamlDocument | None = None,
                     resumed: bool = False) -> None:
    """The IDX files ``dataset.sha256`` gives are those the set is read from, unchanged: before reading (``read``
    None) each is in the folder; after, each file read (``read``: its name and SHA-256) is one it gives, with that
    digest. Else a `ConfigError` at ``dataset.sha256`` naming the first file that is not, what changed and what to do
    (``resumed``: the field is a run's record of the files it started with). Nothing to check without the field: a
    protocol that pins no files, and a run of an earlier hil, which recorded none."""
    given = protocol.dataset.sha256
    if given is None or protocol.dataset.path is None:
        return
    folder = Path(protocol.dataset.path)
    if read is None:
        changed = [(name, "missing") for name in given if not (folder / name).exists()]
    else:
        changed = [(name, _change(read, name, digest, resumed)) for name, digest in given.items()
                   if read.get(name) != digest]
        changed += [(name, "read, but not among the files of dataset.sha256") for name in read if name not in given]
    if changed:
        name, what = changed[0]
        fix = ("a run resumes with the data it started with: put the original back, or start a new run" if resumed
               else "give its SHA-256 there too, or leave dataset.sha256 out" if name not in given
               else "put the original back, or leave dataset.sha256 out")
        raise locate(document, f"{folder / name}: {what}; {fix}", ("dataset", "sha256"))


def _change(read: Mapping[str, str], name: str, digest: str, resumed: bool) -> str:
    """What changed of the file ``name``, given with ``digest``, which was found in its folder before reading."""
    if name not in read:  # a .gz file, and the plain one now beside it (which the loader takes first) read instead
        return f"not read: {name.removesuffix('.gz')} beside it is read in its place"
    now, was = read[name][:12], digest[:12]
    if resumed:
        return f"changed since the run started (SHA-256 now {now}…, was {was}…)"
    return f"differs from dataset.sha256 (SHA-256 {now}…, not {was}…)"


def _rows_field(protocol: Protocol) -> tuple[str, str]:
    """The field that decides how many training rows there are: the limit, else the split (an IDX set's files)."""
    d = protocol.dataset
    return ("dataset", "limit" if d.limit is not None else "path" if d.name == "idx" else "test_fraction")


def check_training_rows(protocol: Protocol, rows: int, document: YamlDocument | None = None) -> None:
    """The data leave rows to train on: at least one, and two for a batch norm."""
    needed = 2 if any(layer.batchnorm for layer in protocol.model.layers) else 1
    if rows < needed:
        raise locate(document, f"the data leave {rows} training sample(s); the model needs at least {needed}"
                               f"{' (a batch norm)' if needed == 2 else ''}", _rows_field(protocol))


def check_output_root(protocol: Protocol, document: YamlDocument | None = None) -> None:
    """A run folder can be made in ``output.root`` (as `hil.store.RunStore.create` makes it, ``~`` the home's):
    it is a folder, or can be made in the nearest folder above it, which can be written to."""
    root = Path(protocol.output.root)
    existing = next(folder for folder in (root, *root.parents) if _found(folder) or folder == folder.parent)
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    shown = "it" if existing == root else repr(str(existing))
    reason = f"{shown} is a file" if not existing.is_dir() else f"{shown} cannot be written to"
    raise locate(document, f"cannot create a run folder in {root} ({reason}); set output.root to a folder you "
                           "can write to", ("output", "root"))


def _found(folder: Path) -> bool:
    """Whether ``folder`` exists; False where a folder above it cannot be looked into (Path.exists raises
    PermissionError there), so that the search goes on up to that folder."""
    try:
        return folder.exists()
    except OSError:
        return False


def check_protocol(path: str | Path | YamlDocument, lab_path: str | Path | None = None) -> str:
    """Validate a protocol (a file, or its document) and its lab without connecting anything; returns a one-line
    summary."""
    protocol, document = load_protocol(path)
    check_from_run(protocol, document)
    check_output_root(protocol, document)
    lab = load_lab(protocol, document, lab_path)
    try:
        lab.build()
        system, _ = system_and_method(protocol, lab, document)
        data = load_data(protocol, document)
        build_model(protocol, lab, data.n_features, data.n_classes, document)
        check_twin(protocol, system, document)
    finally:
        lab.close()
    return (f"{document.source}: OK — {protocol.method.name} on {protocol.system!r} ({system.kind}), {data.name} "
            f"({len(data.y_train)} train / {len(data.y_test)} test), {counted(protocol.training.epochs, 'epoch')}; "
            "no hardware was touched")
