"""What every simulated world shares: configuration with presets, seeding, the virtual clock, slow state.

A world is one simulated bench (an optical table, a crossbar chip) whose instruments share its physics and its
clock. Its non-idealities are split by time scale, as in IBM's aihwkit:

- *construction*: hidden, drawn once per instance from the seed (device-to-device spread, LUT error, ...);
- *programming*: drawn when parameters are written (conductance programming noise, phase quantisation);
- *per shot*: drawn at every measurement (read noise, shot noise, ADC rounding);
- *slow state*: evolves with the virtual clock (drift, laser power wander), unknown to a twin fitted earlier.

A world's ``Config`` is a nested pydantic model whose defaults are the ``realistic`` preset; ``presets`` holds
partial configs for ``ideal`` (no non-ideality at all) and ``harsh``. A lab file picks a preset and may override
any field. Randomness comes from generators derived from the seed and the world's kind (`derive_seed`):
``construction_rng`` for construction and ``rng`` for everything drawn later, plus any a world derives for itself
(`ResistiveNetwork` draws its temperature drift from a third); so the same seed and the same calls give the same
numbers. Reading hidden values (``hidden_parameters``) leaves every generator and every slow state as it was.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from hil.clock import VirtualClock
from hil.config import SEED_MAX, Strict, explain, shown
from hil.errors import ConfigError, DeviceError
from hil.hooks import report_hooks
from hil.instruments import require_before_capability

PRESETS = ("ideal", "realistic", "harsh")


#: The largest float32 (about 3.4e38): a world's numbers beyond it become infinite in the simulation's tensors.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The smallest normal float32 (about 1.2e-38): a world's numbers nearer 0 become 0 (or lose their precision).
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def outside_float32(value: Any, where: tuple[str, ...] = ()) -> tuple[tuple[str, ...], float] | None:
    """The first float in a config (a model, or a list of numbers in one) that float32 cannot hold: larger in
    magnitude than `FLOAT32_MAX`, or not 0 but smaller than `FLOAT32_TINY`; with its path of field names and
    indices. None if there is none."""
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, list | tuple):
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        held = not isinstance(value, float) or value == 0 or FLOAT32_TINY <= abs(value) <= FLOAT32_MAX
        return None if held else (where, value)
    for name, item in items:
        found = outside_float32(item, (*where, name))
        if found is not None:
            return found
    return None


def check_float32(config: BaseModel) -> None:
    """Refuse, naming the field (`ConfigError`), a config holding a float that float32 cannot (`outside_float32`)."""
    outside = outside_float32(config)
    if outside is None:
        return
    where, value = outside
    if abs(value) > 1:
        message = (f"{value:g} is beyond the float32 range (±{FLOAT32_MAX:.3g}) that the simulation computes in; give "
                   "a value a bench could have")
    else:
        zero = "give 0, or a value a bench could have" if _takes_zero(config, where) else \
            "give a value a bench could have"
        message = (f"{value:g} is nearer 0 than the float32 the simulation computes in holds ({FLOAT32_TINY:.3g}); "
                   f"{zero}")
    raise ConfigError(message, field=".".join(["config", *where]))


def _takes_zero(config: BaseModel, where: tuple[str, ...]) -> bool:
    """Whether ``config`` validates with the value at ``where`` (field names and list indices) set to 0: a length the
    physics divides by refuses it."""
    def zeroed(data: Any, path: tuple[str, ...]) -> Any:
        key, *rest = path
        if isinstance(data, list | tuple):
            items = list(data)
            items[int(key)] = zeroed(items[int(key)], tuple(rest)) if rest else 0.0
            return items
        return {**data, key: zeroed(data[key], tuple(rest)) if rest else 0.0}

    try:
        type(config).model_validate(zeroed(config.model_dump(), where))
    except ValidationError:
        return False
    return True


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts; ``override`` wins."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def derive_seed(seed: int, purpose: int, kind: str) -> int:
    """A well-mixed 63-bit seed for one purpose (0: construction, 1: everything drawn later, 2 and up: a world's
    own streams) of a world of ``kind``: worlds of different kinds with the same seed draw independent numbers."""
    state = np.random.SeedSequence([seed, purpose, zlib.crc32(kind.encode())]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class Scratch:
    """Buffers a world reuses for the temporaries of a batch, kept from call to call: fresh tens of MB a call cost as
    much as the arithmetic in them (the memory is faulted in anew). Only for values that never leave the call, so a
    checkpoint leaves them out (`transient`, see `hil.state`)."""

    transient: ClassVar[bool] = True

    def __init__(self) -> None:
        self._buffers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name: the buffer, the view handed out last

    def __call__(self, name: str, shape: tuple[int, ...] | torch.Size,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A ``shape`` tensor of ``dtype`` on the buffer ``name`` (grown as needed), its values left as they were."""
        whole, view = self._buffers.get(name, (None, None))
        if view is not None and view.dtype == dtype and view.shape == shape:
            return view  # 2-3 µs less than a new view: as much as a fresh tensor for a one-row crossbar read
        size = math.prod(shape)
        if whole is None or whole.dtype != dtype or whole.numel() < size:
            whole = torch.empty(size, dtype=dtype)
        view = whole[:size].view(shape)
        self._buffers[name] = (whole, view)
        return view


class World:
    """Base of the simulated worlds.

    Subclasses set ``kind``, ``Config`` (a `hil.config.Strict` model, so that a misspelt key in a lab's
    ``config:`` is an error) and ``presets`` and draw their construction non-idealities in ``_construct()``.
    ``config`` is a partial dict over the chosen preset (a lab file's ``config:``).
    """

    kind: ClassVar[str] = "world"
    Config: ClassVar[type[Strict]]
    presets: ClassVar[dict[str, dict[str, Any]]] = {"realistic": {}}
    #: The methods a world's system or twin calls that a plugin world writes, whose own exceptions (a KeyError of a
    #: slip) are reported as a `DeviceError` in one line naming the world, the method and where it failed, the
    #: original chained, as a plugin system's hooks are; hil's own worlds' are left as they are.
    reported_hooks: ClassVar[tuple[str, ...]] = ("hidden_parameters",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        report_hooks(cls, cls.reported_hooks, lambda world: f"simulated {world.kind}", "fix it there")

    def __init__(self, *, preset: str = "realistic", config: Mapping[str, Any] | None = None, seed: int = 0,
                 realtime: bool = False):
        if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer) or not 0 <= seed <= SEED_MAX:
            raise ConfigError(f"{shown(seed)} is not a seed; give a whole number in 0..{SEED_MAX}",
                              field="seed")  # int() took 1.5 as 1, and -1 failed in torch, naming no seed
        if torch.get_default_dtype() is not torch.float32:  # its tensors, made in it, would meet float32 ones
            raise ConfigError(f"torch's default dtype is {str(torch.get_default_dtype()).removeprefix('torch.')} "
                              "(torch.set_default_dtype), and hil's simulators compute in float32: call "
                              "torch.set_default_dtype(torch.float32) before building the lab, and give tensors of "
                              "your own dtype=torch.float64", field="kind")
        self.preset = preset
        self.config = self.resolve(preset, config or {})
        self.seed = int(seed)
        self.clock = VirtualClock(realtime=realtime)
        self.construction_rng = torch.Generator().manual_seed(derive_seed(self.seed, 0, self.kind))
        self.rng = torch.Generator().manual_seed(derive_seed(self.seed, 1, self.kind))
        self._construct()

    @classmethod
    def resolve(cls, preset: str, overrides: Mapping[str, Any]) -> Any:
        """The preset's config with ``overrides`` merged in; unknown presets and fields are `ConfigError`."""
        model = getattr(cls, "Config", None)
        if not (isinstance(model, type) and issubclass(model, Strict)):
            raise ConfigError(f"{cls.__name__}.Config must be a hil.config.Strict model of the world's settings, whose "
                              "defaults are its realistic preset (Strict refuses a misspelt key)", field="kind")
        if preset not in cls.presets:
            raise ConfigError(f"unknown preset {preset!r}; {cls.kind} has {', '.join(cls.presets)}", field="preset")
        try:
            config = model.model_validate(merge(cls.presets[preset], overrides))
        except ValidationError as errors:
            first = errors.errors()[0]
            field = ".".join(["config", *(str(part) for part in first["loc"])])
            raise ConfigError(explain(first, cls.Config), field=field) from None
        check_float32(config)
        return config

    def _construct(self) -> None:
        """Draw the construction non-idealities (hidden, fixed for this instance)."""

    def hidden_parameters(self) -> dict[str, Any]:
        """The world's hidden physical parameters (for an oracle twin); nothing a bench could report. Named as the
        physics model's calibration parameters (or mapped by the system's ``hidden_calibration``); the default,
        none, leaves an oracle twin at the nominal physics."""
        return {}

    def _scratch(self, name: str, shape: tuple[int, ...] | torch.Size,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The world's buffer ``name`` for a temporary of a batch (`Scratch`)."""
        scratch = self.__dict__.get("scratch")
        if scratch is None:  # made on first use: a plugin's world need not call World.__init__ first
            scratch = self.__dict__["scratch"] = Scratch()
        return scratch(name, shape, dtype)

    def normal(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal float32 samples from the world's generator."""
        return torch.randn(shape, generator=generator or self.rng, dtype=torch.float32)

    def uniform(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform [0, 1) float32 samples from the world's generator."""
        return torch.rand(shape, generator=generator or self.rng, dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        """Preset, seed, whether it sleeps its device time (``realtime``: then a run's wall time holds it) and the
        full resolved config, for snapshots."""
        return {"kind": self.kind, "preset": self.preset, "seed": self.seed, "realtime": self.clock.realtime,
                "config": self.config.model_dump()}


class OrnsteinUhlenbeck:
    """A slow random state: mean-reverting noise of stationary std ``sigma`` and correlation time ``tau_s``.

    ``at(t)`` advances it exactly to virtual time ``t`` (s): x ← x·e^(−Δt/τ) + σ·√(1 − e^(−2Δt/τ))·N(0, 1).
    It starts at a stationary draw. With ``sigma == 0`` it stays at zero. ``peek(t)`` (or advancing a `fork`)
    reads it without moving it or its generator.
    """

    def __init__(self, sigma: float, tau_s: float, shape: tuple[int, ...], generator: torch.Generator):
        self.sigma, self.tau_s, self.generator = float(sigma), float(tau_s), generator
        self.time_s = 0.0
        self.value = self.sigma * torch.randn(shape, generator=generator)

    def at(self, time_s: float) -> torch.Tensor:
        delta = time_s - self.time_s
        if delta > 0 and self.sigma > 0:
            decay = math.exp(-delta / self.tau_s)
            noise = torch.randn(self.value.shape, generator=self.generator, dtype=torch.float32)
            self.value = self.value * decay + self.sigma * math.sqrt(1 - decay * decay) * noise
        self.time_s = max(self.time_s, time_s)
        return self.value

    def fork(self) -> OrnsteinUhlenbeck:
        """A copy in this state on a copy of its generator: it draws what this process would draw next, and
        advancing it leaves this process and its generator untouched."""
        forked = copy.copy(self)
        forked.generator = torch.Generator(self.generator.device).set_state(self.generator.get_state())
        return forked

    def peek(self, time_s: float) -> torch.Tensor:
        """The value ``at(time_s)`` would return next, without advancing the process or drawing from its generator."""
        return self.fork().at(time_s)


def world_kinds(base: type) -> list[str]:
    """The registered world kinds (built-in and plugins) whose class is a ``base``: those an instrument that needs
    one can be given (a plugin that cannot be loaded is left out)."""
    from hil.registry import available, load_target

    kinds = []
    for name, target in available("worlds").items():
        try:
            cls = load_target(target)
        except ConfigError:
            continue
        if isinstance(cls, type) and issubclass(cls, base):
            kinds.append(name)
    return sorted(kinds)


def require_world(world: Any, base: type, instrument: str, needed: str) -> None:
    """Refuse (`DeviceError`) a ``world`` that is not a ``base``, for the simulated ``instrument`` that needs
    ``needed`` (``"an analog world"``): naming the world's kind, and the kinds that would do."""
    if isinstance(world, base):
        return
    kind = getattr(world, "kind", None)
    given = f"{type(world).__name__} (kind {kind})" if isinstance(kind, str) else type(world).__name__
    fits = world_kinds(base)
    fix = f"; give it a world of kind {' or '.join(fits)}" if fits else ""
    raise DeviceError(f"simulated {instrument} needs {needed}, not {given}{fix}")


class SimulatedInstrument:
    """Mixin for an instrument that lives in a `World`: shares its clock, identifies as a simulator.

    Compose it before the capability class: ``class SimulatedSLM(SimulatedInstrument, SpatialLightModulator)``.
    """

    def __init_subclass__(cls, **options: Any):
        super().__init_subclass__(**options)
        require_before_capability(cls, SimulatedInstrument)

    def __init__(self, world: World, **common: Any):
        if "clock" in common:
            raise TypeError(f"{type(self).__name__} keeps its world's clock; build it without clock=")
        self.world = world
        super().__init__(clock=world.clock, **common)

    def _identify_hw(self) -> str:
        return (f"hil simulator,{type(self).__name__},{self.world.kind},"  # type: ignore[attr-defined]
                f"preset {self.world.preset} seed {self.world.seed}")

    def _snapshot_hw(self) -> dict[str, Any]:
        return {**super()._snapshot_hw(), "world": self.world.describe()}  # type: ignore[misc]
