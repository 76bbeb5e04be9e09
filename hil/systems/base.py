"""`PhysicalSystem`: the trainable physical transformation ``y = f_p(x, θ)`` of a bench.

A system is assembled from instruments only (so the same class runs on a real bench and on a simulator). Inputs
``x`` are batch × ``n_in``, trainable physical parameters ``θ`` are a vector of ``n_params``, outputs ``y`` are
batch × ``n_out``; ``x`` and ``θ`` have bounds. A batch larger than ``max_batch`` (what one device call can take)
is split. The device time of every call is measured on the instruments' clock (real seconds on a bench,
modelled seconds on a simulator). A system knows nothing of training.

Every system also gives its noiseless physics as a `PhysicsModel`: a differentiable torch module computing the
same ``y`` from the same ``x`` and ``θ``, with the bench's unknown calibration as learnable parameters at their
nominal values. Digital twins start from it; on a simulator, `oracle_model()` fills in the world's hidden values.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from hil.clock import Clock, WallClock
from hil.errors import ConfigError, DeviceError, LimitError, SystemSlip
from hil.hooks import is_hils, report_hooks
from hil.instruments import AnalogOutput, Instrument, shape_differs
from hil.limits import first_outside, torch_shareable

T = TypeVar("T")
#: A system's hooks that use its instruments, whose own exceptions a plugin system reports in one line.
REPORTED_HOOKS = ("_run", "_calibrate", "device_state_lost", "rewrite_parameters", "physics_model",
                  "hidden_calibration")


def is_count(value: Any, largest: int | None = None) -> bool:
    """Whether a setting is a whole number of at least 1 (and at most ``largest``): YAML's true, which Python takes
    for the integer 1, is not one."""
    return (not isinstance(value, bool) and isinstance(value, int) and value >= 1
            and (largest is None or value <= largest))


def check_counts(**settings: Any) -> None:
    """Refuse, naming it (`ConfigError`), the first of ``settings`` that is not a whole number of at least 1
    (`is_count`)."""
    for label, value in settings.items():
        if not is_count(value):
            raise ConfigError(f"{label} must be a positive integer, got {value!r}", field=label)


def is_number(value: Any) -> bool:
    """Whether a setting is a finite real number: not YAML's true (an integer to Python), not text, not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: A system's readout scale (V, what its output voltages are divided by): past any DAQ's range above, a microvolt
#: below, so that a unit slip (mV for V) does not make outputs of 10¹¹.
OUTPUT_SCALE_RANGE_V = (1e-6, 1e3)


def check_in_range(label: str, value: Any, bounds: tuple[float, float], unit: str) -> None:
    """Refuse a setting (``label``) that is not a number within ``bounds`` (inclusive, in ``unit``): a unit slip,
    named with its range."""
    low, high = bounds
    if not (is_number(value) and low <= value <= high):
        raise ConfigError(f"{label} must be a number in {low:g}..{high:g} {unit}, got {value!r}; check its unit",
                          field=label)


def check_output_scale(value: Any) -> None:
    """Refuse an ``output_scale_v`` setting outside `OUTPUT_SCALE_RANGE_V`, naming it."""
    check_in_range("output_scale_v", value, OUTPUT_SCALE_RANGE_V, "V")


def check_setting_within(label: str, value: float, instrument: Instrument, limit: str) -> None:
    """Refuse a system setting (``label``) that lies outside one of an instrument's limits, before any call would
    be refused for it: a `ConfigError` naming the setting, the instrument and its limit, and saying to set it (a
    setting left out is the system's default, which a limit narrowed in the lab may exclude)."""
    allowed = instrument.limits[limit]
    if not allowed.min <= value <= allowed.max:
        raise ConfigError(f"{label} {value:g} {allowed.unit} is outside {instrument.name}'s limits "
                          f"({allowed.describe()}); set {label} within them in the system's settings", field=label)


def check_bounds(system: str, label: str, bounds: Any) -> None:
    """Refuse (`ConfigError`, naming the system) ``bounds`` that are not two finite numbers, the lower first: x or θ
    could not be drawn, scaled or kept within them (a system's bounds taken from its settings, a minimum above its
    maximum)."""
    try:
        low, high = bounds
    except (TypeError, ValueError):
        low = high = None
    if not (is_number(low) and is_number(high) and low < high):
        raise ConfigError(f"system {system!r}: {label} {bounds!r} must be two finite numbers, the lower first; check "
                          "the settings they come from")


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """A shape with None sizes as ``batch``: ``batch×4``."""
    return "×".join("batch" if s is None else str(s) for s in shape)


class PhysicsModel(nn.Module, ABC):
    """The noiseless physics of a system: ``forward(x, theta) -> y``, differentiable in x, θ and calibration.

    Calibration parameters (a bench's unknowns: gains, offsets, misalignment, ...) are ``nn.Parameter`` s at
    nominal values; `load_hidden` sets them to a simulated world's true values (the oracle).
    """

    @abstractmethod
    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Outputs (batch × n_out) for inputs (batch × n_in) and parameters (n_params)."""

    def load_hidden(self, hidden: Mapping[str, Any]) -> PhysicsModel:
        """Set the calibration to a world's hidden values (names as in ``hidden_parameters()``); returns self."""
        with torch.no_grad():
            for name, value in hidden.items():
                target = getattr(self, name, None)
                if not isinstance(target, torch.Tensor):
                    tensors = ", ".join(n for n, _ in [*self.named_parameters(), *self.named_buffers()]) or "none"
                    raise ConfigError(f"the simulated world's hidden value {name!r} is no tensor of "
                                      f"{type(self).__name__} (its tensors: {tensors}); name it as "
                                      "the model's parameter in the world's hidden_parameters(), or map it in the "
                                      "system's hidden_calibration(world)")
                tensor = torch.as_tensor(value, dtype=target.dtype)
                if tensor.numel() != target.numel():
                    raise ConfigError(f"{type(self).__name__}.{name} holds {target.numel()} values "
                                      f"{tuple(target.shape)}; the hidden value has {tensor.numel()}")
                target.copy_(tensor.reshape(target.shape))
        return self


class PhysicalSystem(ABC):
    """Base of the physical systems; subclasses implement `_run` (one device call) and `physics_model`.

    ``instruments`` maps the system's roles (e.g. ``slm``, ``camera``) to connected instruments. A subclass's own
    keyword arguments are its ``settings:`` in a lab file, passed as YAML reads them (``"1e7"`` is text): it checks
    their values itself, raising `ConfigError` with the setting as ``field`` (`check_setting_within` for one an
    instrument's limit bounds).
    """

    kind: ClassVar[str] = "system"
    #: The instrument roles the system needs and the capability class each must have.
    roles: ClassVar[dict[str, type[Instrument]]] = {}
    #: The roles whose analog output the system drives with waveforms: an output of DC levels only
    #: (`AnalogOutput.plays_waveforms` False) is refused there when the system is built.
    waveform_roles: ClassVar[tuple[str, ...]] = ()
    #: Whether the system exposes physical equilibria (free and nudged) for energy-based training.
    energy_based: ClassVar[bool] = False
    #: Whether θ is periodic over its bounds (a phase): training then wraps θ instead of clamping it.
    theta_periodic: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A plugin system's hooks (`REPORTED_HOOKS`, its own and its mixins') raise a `SystemSlip` naming the
        system, the hook and where it failed in place of an exception of their own (a KeyError of a slip in
        ``_run``): one line, the original chained, the instruments made safe and the data kept, as a driver's
        hooks do. hil's own systems are left as they are."""
        super().__init_subclass__(**kwargs)
        if not is_hils(cls.__module__):
            report_hooks(cls, REPORTED_HOOKS, lambda self: f"system {self.name!r}", "fix it there", SystemSlip)

    def __init__(self, instruments: Mapping[str, Instrument], *, name: str = "", n_in: int, n_out: int,
                 n_params: int, x_bounds: tuple[float, float], theta_bounds: tuple[float, float], max_batch: int):
        self.name = name or self.kind
        missing = set(self.roles) - set(instruments)
        if missing:
            raise ConfigError(f"system {self.name!r} needs instrument(s) for {', '.join(sorted(missing))}",
                              field="instruments")
        for role, capability in self.roles.items():
            if not isinstance(instruments[role], capability):
                article = "an" if capability.capability[0] in "aeiou" else "a"
                raise ConfigError(f"system {self.name!r}: {role} must be {article} {capability.capability}, got "
                                  f"{type(instruments[role]).__name__}", field=f"instruments.{role}")
        for role in self.waveform_roles:
            output = instruments[role]
            if isinstance(output, AnalogOutput) and not output.plays_waveforms:
                raise ConfigError(f"system {self.name!r}: {role} {output.name} plays DC levels only "
                                  f"({type(output).__name__} writes no waveform hooks), and this {self.kind} system "
                                  f"drives its {role} with waveforms; give it an analog output that plays them",
                                  field=f"instruments.{role}")
        check_counts(n_in=n_in, n_out=n_out, n_params=n_params, max_batch=max_batch)
        for label, bounds in (("x_bounds", x_bounds), ("theta_bounds", theta_bounds)):
            check_bounds(self.name, label, bounds)
        self.instruments = dict(instruments)
        self.n_in, self.n_out, self.n_params, self.max_batch = n_in, n_out, n_params, max_batch
        self.x_bounds = (float(x_bounds[0]), float(x_bounds[1]))
        self.theta_bounds = (float(theta_bounds[0]), float(theta_bounds[1]))
        self.device_time_s = 0.0
        self.calls = 0
        self._timing = False

    def __repr__(self) -> str:
        """``<CrossbarSystem 'crossbar': x batch×64 in -1..1, θ 2048 in -1..1, y batch×32>``."""
        if not hasattr(self, "theta_bounds"):  # not built through (an error in a subclass's __init__)
            return f"<{type(self).__qualname__} {getattr(self, 'name', '?')!r}>"
        (x_low, x_high), (low, high) = self.x_bounds, self.theta_bounds
        return (f"<{type(self).__qualname__} {self.name!r}: x batch×{self.n_in} in {x_low:g}..{x_high:g}, "
                f"θ {self.n_params} in {low:g}..{high:g}, y batch×{self.n_out}>")

    @property
    def clock(self) -> Clock:
        """The clock of the instruments (all instruments of one system share it on a simulator)."""
        first = next(iter(self.instruments.values()), None)
        return first.clock if first is not None else WallClock()

    # -- the physical forward pass ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Run ``x`` (batch × n_in) with parameters ``θ`` (n_params) on the device; returns batch × n_out.

        ``x`` and ``θ`` may be tensors, numpy arrays or lists of real numbers of any dtype: they are read as float32
        and detached (no gradient flows through a device; `hil.nn`'s physical layer gives one). The result is a
        float32 tensor. Values outside the bounds are refused (`LimitError`); batches beyond ``max_batch`` are split.
        """
        x = self._checked(x, (None, self.n_in), self.x_bounds, "x")
        theta = self._checked(theta, (self.n_params,), self.theta_bounds, "theta")
        if x.shape[0] <= self.max_batch:
            return self._call(x, theta)
        return torch.cat([self._call(chunk, theta) for chunk in x.split(self.max_batch)])

    __call__ = forward

    def _call(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """One device call (at most ``max_batch`` rows), its device time counted and its output checked; an output
        given as an array (copied) or in another dtype becomes the float32 tensor the twins and digital layers compute
        in, and one carrying a graph is detached (a measurement, which a twin is fitted to)."""
        y = self._counted(self._run, x, theta)
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.float32):
            if isinstance(y, np.ndarray):
                y = torch_shareable(y)  # a flipped view torch refuses, a read-only one it warns of
            try:  # an array copied: a driver's buffer, filled anew by the next call, would change this call's outputs
                y = torch.as_tensor(y).to(torch.float32, copy=not isinstance(y, torch.Tensor))
            except (TypeError, ValueError, RuntimeError):
                raise DeviceError(f"system {self.name!r}: _run returned {type(y).__name__}, not numbers; return a "
                                  f"tensor of shape ({len(x)}, {self.n_out})") from None
        if y.requires_grad:  # computed with a tensor of the system's own that requires grad (an nn.Parameter)
            y = y.detach()
        if y.shape != (x.shape[0], self.n_out):
            raise DeviceError(f"system {self.name!r}: device returned shape {tuple(y.shape)}; expected "
                              f"({len(x)}, {self.n_out})")
        # aminmax, not sum: NaN propagates through both, and it neither overflows on large finite readings nor takes
        # a sum's cascade (3 µs against 8.7 µs for a crossbar's 1024 × 32 outputs)
        smallest, largest = torch.aminmax(y)
        if not (math.isfinite(smallest) and math.isfinite(largest)):
            raise DeviceError(f"system {self.name!r}: device returned non-finite values (NaN or infinite) for "
                              "finite inputs; check the instruments' readings")
        return y

    def _counted(self, device_call: Callable[..., T], *args: Any) -> T:
        """``device_call(*args)``, one device call: its device time is added to ``device_time_s`` (`_timed`), and
        it is counted in ``calls``."""
        result = self._timed(device_call, *args)
        self.calls += 1
        return result

    def _timed(self, device_use: Callable[..., T], *args: Any) -> T:
        """``device_use(*args)``, its device time (s, by the instruments' clock) added to ``device_time_s`` even if
        it fails; once, however such uses nest (a calibration that runs the forward pass)."""
        if self._timing:
            return device_use(*args)
        clock = self.clock
        started, self._timing = clock.now(), True
        try:
            return device_use(*args)
        finally:
            self._timing = False
            self.device_time_s += clock.now() - started

    def _checked(self, value: Any, shape: tuple[int | None, ...], bounds: tuple[float, float],
                 label: str) -> torch.Tensor:
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.float32):  # as_tensor: 0.8 µs for nothing
            if isinstance(value, np.ndarray):
                value = torch_shareable(value)  # a flipped view (x[:, ::-1]) torch refuses, a read-only one it warns of
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):  # text, None, a ragged list
                raise LimitError(f"system {self.name!r}: {label} is not an array of numbers "
                                 f"({type(value).__name__}); give a tensor of shape {_shape_text(shape)}") from None
            if value.is_complex():  # its cast to float32 would drop the imaginary part
                raise LimitError(f"system {self.name!r}: {label} is complex ({value.dtype}); give real numbers")
            value = value.to(torch.float32)
        tensor = value.detach() if value.requires_grad else value  # detach(): 1 µs a call
        if len(shape) == 2 and tensor.dim() == 1 and tensor.shape[0] == shape[1]:  # one input, not a batch of one
            raise LimitError(f"system {self.name!r}: {label} has shape {tuple(tensor.shape)}, expected "
                             f"{_shape_text(shape)}; give one input as a batch of one: {label}[None], of shape "
                             f"1×{shape[1]}")
        self.check_shape(tensor, shape, label)
        found = first_outside(tensor, *bounds)
        if found is not None:
            index, value = found
            raise LimitError(f"system {self.name!r}: {label}{list(index)} = {value:g} is outside "
                             f"{bounds[0]:g}..{bounds[1]:g}")
        return tensor

    def check_shape(self, tensor: torch.Tensor, shape: tuple[int | None, ...], label: str) -> None:
        """Refuse ``tensor`` (`LimitError`) unless it has ``shape`` (None: any size) and is not empty."""
        if shape_differs(tensor.shape, shape):
            raise LimitError(f"system {self.name!r}: {label} has shape {tuple(tensor.shape)}, expected "
                             f"{_shape_text(shape)}")
        if tensor.shape[0] == 0:
            raise LimitError(f"system {self.name!r}: {label} is empty")

    @abstractmethod
    def _run(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """One device call: at most ``max_batch`` rows, already checked. Returns batch × n_out, best as a float32
        tensor (a numpy array or another dtype is converted to one)."""

    def device_state_lost(self) -> None:  # noqa: B027 - an optional hook
        """Called when a resumed run has connected the system's instruments anew, where one is a bench instrument
        (not simulated): what `_calibrate` set on them (a compliance, an output switched on, a range) need not be
        there any more, as the session that calibrated has ended. Set it again from the system's own state
        (restored from the checkpoint, as it was after the calibration, or before it where the run stopped first),
        without measuring a new working point, which would change what the twin was fitted at. Not called where
        every instrument is simulated: the bench is then restored exactly. Default: nothing (for a system that sets
        what a call needs at each call, as the built-in ones do)."""

    def rewrite_parameters(self) -> None:  # noqa: B027 - an optional hook
        """Make the next call write θ to the device again even if it is unchanged, so that repeated measurements
        vary as much as writing θ does (e.g. a crossbar's programming noise). A system that writes θ with every call
        has nothing to forget."""

    # -- models of the physics ----------------------------------------------------------------------------------
    @abstractmethod
    def physics_model(self) -> PhysicsModel:
        """The noiseless physics of this system with nominal calibration (the start of a physics twin)."""

    def oracle_model(self) -> PhysicsModel:
        """The noiseless physics with the simulated world's hidden calibration: the best any twin can be. A world
        whose ``hidden_parameters()`` names none of the calibration leaves it nominal."""
        worlds = {id(w): w for w in (getattr(i, "world", None) for i in self.instruments.values()) if w is not None}
        if len(worlds) != 1:
            raise DeviceError(f"system {self.name!r}: an oracle needs the instruments of one simulated world")
        world = next(iter(worlds.values()))
        hidden = self.hidden_calibration(world)  # first: a mismatch it finds is known before calibrating (the fiber's)
        # unbound: a physics model written as a plain nn.Module (as a physics twin takes it) has no load_hidden
        return PhysicsModel.load_hidden(self.physics_model(), hidden)  # type: ignore[arg-type]

    def hidden_calibration(self, world: Any) -> dict[str, Any]:
        """The world's hidden values of this system's calibration parameters (subclasses map names)."""
        return world.hidden_parameters()

    def calibrate(self) -> dict[str, Any]:
        """Bring the bench to a working point (e.g. camera exposure) before use; returns what it set. Its device
        time counts in ``device_time_s``."""
        return self._timed(self._calibrate)

    def _calibrate(self) -> dict[str, Any]:
        """What `calibrate` does on this system (nothing by default); returns what it set."""
        return {}

    def snapshot(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "n_in": self.n_in, "n_out": self.n_out,
                "n_params": self.n_params, "x_bounds": list(self.x_bounds), "theta_bounds": list(self.theta_bounds),
                "max_batch": self.max_batch, "instruments": {r: i.name for r, i in self.instruments.items()}}
