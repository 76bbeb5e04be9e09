"""Twin models: ``twin(x, θ) -> y`` as a differentiable torch module, and their save and load.

- ``physics``: the system's noiseless physics (`PhysicalSystem.physics_model`) with its calibration learnable,
  followed by a learnable per-output gain and offset;
- ``neural``: a multilayer perceptron on (x, θ) scaled to [−1, 1] by their bounds (a phase θ as its cosine and sine);
- ``residual``: the physics twin plus a neural residual that starts at zero, fitted in two stages (the physics, then
  the residual on what it leaves, kept only where it lowers the held-out error: `hil.twin.fit.fit_twin`);
- ``oracle``: on a simulator, the physics with the world's hidden calibration (not fitted: the ceiling).

Saved as ``twin.json`` (kind, the system's kind, sizes, the θ groups it was not fitted on) and ``twin.pt`` (the
state dict), loaded with ``weights_only=True``; a loaded twin keeps those groups in its ``spec``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from hil.errors import ConfigError, HilError, error_reason, out_of_memory, raised_at
from hil.hooks import is_hils
from hil.systems.base import PhysicalSystem

TWIN_KINDS = ("physics", "neural", "residual", "oracle")
#: The hidden layer widths of the twins that have them, where a protocol gives none (``twin.hidden``).
DEFAULT_HIDDEN = {"neural": (256, 256), "residual": (128, 128)}


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` that take a gradient (those frozen, by `frozen` or by hand, are left out)."""
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module``'s trainable parameters are constants to autograd (no graph is recorded for
    them); they are trainable again after it, even where it raised."""
    parameters = trainable(module)
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


class Twin(nn.Module):
    """Base of the twins; ``spec`` is what is needed to rebuild the module before loading its state."""

    kind: ClassVar[str]

    def __init__(self, system: PhysicalSystem):
        super().__init__()
        self.n_in, self.n_out, self.n_params = system.n_in, system.n_out, system.n_params
        self.spec: dict[str, Any] = {"kind": self.kind, "system": system.kind}

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OutputAffine(nn.Module):
    """A learnable per-output gain and offset (a detector's gain and background).

    The offset is ``offset × scale``: ``scale`` is the outputs' order of magnitude (`set_scale`, from the data a twin
    is fitted on; 1 until then), so that an optimiser's steps, of about its learning rate in the parameter, move the
    offset by as much of the outputs in any unit: in the outputs' own unit, a step of 0.01 threw outputs in nA
    (1e-9) ten million times off, and a background of 1e6 counts took a hundred million steps to reach."""

    def __init__(self, n_out: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n_out))
        self.offset = nn.Parameter(torch.zeros(n_out))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.gain + self.offset * self.scale

    @torch.no_grad()
    def set_scale(self, outputs: torch.Tensor) -> None:
        """Set ``scale`` to the power of ten nearest the mean magnitude of ``outputs`` (1 for outputs of order 1,
        and exactly the factor of a change of SI prefix), keeping the offset the twin adds as it is."""
        size = float(outputs.double().abs().mean()) if outputs.numel() else 0.0
        if not 0 < size < math.inf:
            return  # outputs all zero: no order of magnitude to learn in
        scale = torch.tensor(10.0 ** round(math.log10(size)), dtype=self.scale.dtype)
        self.offset.mul_(self.scale / scale)
        self.scale.copy_(scale)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A state saved before ``scale`` held the offset in the outputs' own unit: it loads with a scale of 1."""
        if prefix + "gain" in state_dict and prefix + "scale" not in state_dict:
            state_dict[prefix + "scale"] = torch.ones(())
        super()._load_from_state_dict(state_dict, prefix, *args)


class PhysicsTwin(Twin):
    """The system's physics with learnable calibration and output gain/offset."""

    kind = "physics"

    def __init__(self, system: PhysicalSystem, oracle: bool = False):
        super().__init__(system)
        self.physics = system.oracle_model() if oracle else system.physics_model()
        self.affine = OutputAffine(self.n_out)
        self.system_name = system.name

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The physics's outputs, refused unless batch × n_out as the device's are: the per-output gain would
        broadcast a model of one output (or of a batch of one) to every output, and train on it unnoticed."""
        model = type(self.physics)
        # in the model's own precision (float64 parameters: numpy's constants), its outputs in the inputs' (float32 in
        # a run, as the device's): float64 reached the digital layers after it, which refused it mid-training
        tensors = itertools.chain(self.physics.parameters(), self.physics.buffers())
        dtype = next((tensor.dtype for tensor in tensors if tensor.is_floating_point()), x.dtype)
        try:
            y = self.physics(x.to(dtype), theta.to(dtype))
        except (HilError, MemoryError, AssertionError):
            raise
        except Exception as error:  # a slip in a plugin's model: one line, as a plugin system's hooks say theirs
            if is_hils(model.__module__) or out_of_memory(error):  # hil's own: its bug, in its traceback
                raise
            where = raised_at(error, model.forward.__code__.co_filename)
            raise HilError(f"system {self.system_name!r}: its physics model ({model.__module__}.{model.__qualname__}) "
                           f"raised {type(error).__name__}: {error_reason(error)} ({where}); fix it there") from error
        if y.shape != (x.shape[0], self.n_out):
            raise HilError(f"system {self.system_name!r}: its physics model ({model.__module__}.{model.__qualname__}) "
                           f"returned shape {tuple(y.shape)} for {x.shape[0]} inputs; expected ({x.shape[0]}, "
                           f"{self.n_out}), as the device's outputs: fix its forward")
        return self.affine(y.to(x.dtype) if y.dtype != x.dtype and y.is_floating_point() else y)


class OracleTwin(PhysicsTwin):
    """The physics with the simulated world's hidden calibration: what no fitted twin can beat."""

    kind = "oracle"

    def __init__(self, system: PhysicalSystem):
        super().__init__(system, oracle=True)


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """A perceptron of ``n_in`` inputs and ``n_out`` outputs: a linear layer and a SiLU per width of ``hidden``, then a
    linear layer (one linear layer alone for no hidden width)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.SiLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class NeuralTwin(Twin):
    """An MLP on (x, θ), each scaled to [−1, 1] by the system's bounds; outputs de-normalised by the data's
    per-output mean and std (set by `fit_twin` before training).

    A periodic θ (a phase, ``system.theta_periodic``) enters as the cosine and sine of its angle over the bounds,
    so the twin, like the device, is the same at both ends of the period: training wraps θ there (`PhysicalLayer`).
    ``theta_as_phase`` overrides that choice (False: θ scaled as it is, as every twin saved before this encoding).
    """

    kind = "neural"

    def __init__(self, system: PhysicalSystem, hidden: tuple[int, ...] = DEFAULT_HIDDEN["neural"],
                 theta_as_phase: bool | None = None):
        super().__init__(system)
        self.spec["hidden"] = list(hidden)
        self.theta_as_phase = system.theta_periodic if theta_as_phase is None else theta_as_phase
        self.spec["theta_as_phase"] = self.theta_as_phase
        self.x_bounds, self.theta_bounds = system.x_bounds, system.theta_bounds
        theta_features = 2 * self.n_params if self.theta_as_phase else self.n_params
        self.net = mlp(self.n_in + theta_features, tuple(hidden), self.n_out)
        self.register_buffer("y_mean", torch.zeros(self.n_out))
        self.register_buffer("y_std", torch.ones(self.n_out))

    @staticmethod
    def _scale(value: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
        return 2 * (value - bounds[0]) / (bounds[1] - bounds[0]) - 1

    def features(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The network's inputs (batch × (n_in + n_params), or + 2·n_params for a phase θ) for x (batch × n_in) and
        θ (n_params), each scaled to [−1, 1] by its bounds (a phase θ as the cosine and sine of its angle)."""
        if self.theta_as_phase:
            angle = math.pi * self._scale(theta, self.theta_bounds)
            theta = torch.cat([angle.cos(), angle.sin()], dim=-1)
        else:
            theta = self._scale(theta, self.theta_bounds)
        return torch.cat([self._scale(x, self.x_bounds), theta.expand(len(x), -1)], dim=1)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x, theta)) * self.y_std + self.y_mean


class ResidualTwin(Twin):
    """Physics twin plus a neural residual (its last layer starts at zero, so it starts as the physics)."""

    kind = "residual"

    def __init__(self, system: PhysicalSystem, hidden: tuple[int, ...] = DEFAULT_HIDDEN["residual"],
                 theta_as_phase: bool | None = None):
        super().__init__(system)
        self.spec["hidden"] = list(hidden)
        self.physics_twin = PhysicsTwin(system)
        self.residual = NeuralTwin(system, hidden, theta_as_phase)
        self.spec["theta_as_phase"] = self.residual.theta_as_phase
        with torch.no_grad():
            self.residual.net[-1].weight.zero_()
            self.residual.net[-1].bias.zero_()

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.physics_twin(x, theta) + self.residual(x, theta)


_KINDS: dict[str, type[Twin]] = {cls.kind: cls for cls in (PhysicsTwin, NeuralTwin, ResidualTwin, OracleTwin)}


def build_twin(kind: str, system: PhysicalSystem, hidden: tuple[int, ...] | None = None,
               theta_as_phase: bool | None = None, seed: int | None = None) -> Twin:
    """A new twin of ``kind`` (one of `TWIN_KINDS`) for ``system``; ``hidden`` and ``theta_as_phase`` (see
    `NeuralTwin`) apply to the neural and residual kinds, whose initial weights are drawn from torch's global
    generator, or, given a ``seed``, from one seeded with it (the global one left as it was)."""
    if kind not in _KINDS:
        raise ConfigError(f"unknown twin kind {kind!r}; known: {', '.join(TWIN_KINDS)}", field="twin.kind")
    cls = _KINDS[kind]
    if cls not in (NeuralTwin, ResidualTwin):
        return cls(system)
    sizes = {} if hidden is None else {"hidden": tuple(hidden)}
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return cls(system, theta_as_phase=theta_as_phase, **sizes)  # type: ignore[call-arg]


#: The files of a saved twin.
TWIN_FILES = ("twin.json", "twin.pt")


def twin_files(twin: Twin) -> dict[str, bytes]:
    """The files of a saved twin by name: ``twin.json`` (its spec) and ``twin.pt`` (its state dict)."""
    weights = io.BytesIO()
    torch.save(twin.state_dict(), weights)
    return dict(zip(TWIN_FILES, (json.dumps(twin.spec, indent=2).encode(), weights.getvalue()), strict=True))


def saved_twin_spec(folder: Path, system: PhysicalSystem) -> dict[str, Any]:
    """The description (``twin.json``: kind, system kind, sizes, held-out groups) of the twin saved in ``folder``,
    read without building it; one unreadable, or of another system kind than ``system``'s, is a `ConfigError`."""
    for name in TWIN_FILES:  # a named pipe (a folder handed on): its read would wait for ever
        with contextlib.suppress(OSError):  # missing: the read below says so
            if not stat.S_ISREG((folder / name).stat().st_mode):
                raise ConfigError(f"cannot read a twin from {folder}: its {name} is not a regular file; point "
                                  "twin.from_run at a run with an intact twin/ folder")
    try:
        spec = json.loads((folder / "twin.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # missing, not UTF-8, not JSON, or nested too deep
        raise ConfigError(f"cannot read a twin from {folder}: {error}; point twin.from_run at a run with an intact "
                          "twin/ folder") from None
    hidden = spec.get("hidden", []) if isinstance(spec, dict) else None
    held_out = spec.get("held_out_groups", []) if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or spec.get("kind") not in _KINDS or not isinstance(hidden, list) \
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden) \
            or not isinstance(spec.get("theta_as_phase", False), bool) or not isinstance(held_out, list) \
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in held_out):
        raise ConfigError(f"{folder / 'twin.json'}: not a twin description (its kind, system and hidden sizes); "
                          "point twin.from_run at a run with an intact twin/ folder")
    if spec.get("system") != system.kind:
        raise ConfigError(f"the twin in {folder} is for a {spec.get('system')!r} system, not {system.kind!r}; "
                          f"point twin.from_run at a run on a {system.kind} system")
    return spec


def load_twin(folder: Path, system: PhysicalSystem) -> Twin:
    """Rebuild a saved twin for ``system``; an unreadable twin, or one of another system kind, is a `ConfigError`."""
    spec = saved_twin_spec(folder, system)
    try:
        twin = twin_from_spec(spec, system)
    except (RuntimeError, MemoryError):  # its layers cannot be allocated
        raise ConfigError(f"{folder / 'twin.json'}: a {spec['kind']} twin with hidden sizes {spec.get('hidden')} "
                          "does not fit in memory") from None
    try:
        saved = torch.load(folder / "twin.pt", weights_only=True)
    except Exception as error:  # a missing or damaged file fails in many ways (EOF, zip, pickle)
        raise ConfigError(f"{folder / 'twin.pt'}: twin unreadable ({error_reason(error)}); point twin.from_run "
                          "at a run with an intact twin/ folder") from None
    try:
        twin.load_state_dict(saved)
    except Exception:  # other names or shapes: the twin of another system's size or settings
        raise ConfigError(f"{folder / 'twin.pt'}: this twin's parameters do not fit system {system.name!r} (another "
                          "size or settings); point twin.from_run at a run on this system as configured") from None
    return twin


def twin_from_spec(spec: dict[str, Any], system: PhysicalSystem) -> Twin:
    """An untrained twin as a saved twin's ``spec`` describes it, to load its state into: its kind, hidden sizes and
    θ encoding (absent: θ scaled as it is, as every twin saved before the encoding), with the θ groups of its data it
    was not fitted on, where its fidelity is measured."""
    twin = build_twin(spec["kind"], system, tuple(spec["hidden"]) if "hidden" in spec else None,
                      theta_as_phase=spec.get("theta_as_phase", False))
    if "held_out_groups" in spec:
        twin.spec["held_out_groups"] = list(spec["held_out_groups"])
    return twin
