"""`PhysicalLayer`: a physical system inside an ordinary torch model, with the gradient flow of its mode.

- ``pat`` — physics-aware training (Wright et al., Nature 601, 2022): the forward pass runs on the device; the
  backward pass is the twin's vector-Jacobian product at the inputs and parameters the device saw
  (`physics_aware`);
- ``twin`` — forward and backward through the twin (in-silico training, or evaluating the twin);
- ``device`` — forward on the device, no gradient (evaluation on the hardware).

The layer's trainable physical parameters θ are an ``nn.Parameter`` kept inside the system's bounds by
`project_` (called after every optimiser step). The twin is held by the layer but is not one of its
parameters, so a training optimiser never changes it, and its parameters enter as constants (`held_twin`), so a
backward pass computes no gradient for them. Batches larger than one device call are split by the
system.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

import torch
from torch import nn

from hil.errors import ConfigError
from hil.systems.base import PhysicalSystem
from hil.twin.models import Twin, frozen

Mode = Literal["pat", "twin", "device"]
MODES = ("pat", "twin", "device")


def physics_aware(x: torch.Tensor, theta: torch.Tensor, system: PhysicalSystem, twin: Twin,
                  record: list | None = None) -> torch.Tensor:
    """The device's output in the forward pass; the twin's vector-Jacobian product at (x, θ) in the backward.

    Written as ``device(x, θ) + (twin(x, θ) − twin(x, θ).detach())``: its value is the measurement, bit for bit (the
    bracket is exactly zero), and its gradient is the twin's at exactly the inputs and parameters the device saw,
    which is physics-aware training.
    The twin's forward runs alongside the device's, so no nested autograd pass is needed in the backward.
    ``record``, if given, receives (x, θ, y_device) for online twin refinement.
    """
    with torch.no_grad():
        measured = system.forward(x.detach(), theta.detach())
    if record is not None:
        record.append((x.detach().clone(), theta.detach().clone(), measured.clone()))
    modelled = held_twin(twin, x, theta)
    return measured + (modelled - modelled.detach())


def held_twin(twin: Twin, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``twin(x, θ)``, differentiable in x and θ only: the twin's own parameters enter as constants, so a backward
    pass through a layer spends nothing on gradients that training never uses (refining a twin calls it directly)."""
    with frozen(twin):  # the graph is recorded without them; refinement finds them trainable again
        return twin(x, theta)


class PhysicalLayer(nn.Module):
    """A physical system as a layer: ``y = f(x, θ)`` with θ trainable; see the module docstring for modes.

    ``theta_init``: ``uniform`` (seeded, within bounds) or ``center``. ``input_map``: ``none`` (x must already
    be within the system's input bounds) or ``sigmoid`` (maps any real input into the bounds).
    """

    def __init__(self, system: PhysicalSystem, twin: Twin | None = None, *, mode: Mode = "pat",
                 theta_init: str = "uniform", input_map: str = "none", seed: int = 0):
        super().__init__()
        self.system = system
        self.__dict__["twin"] = twin  # held, not registered: training never updates the twin
        self.mode = mode
        if input_map not in ("none", "sigmoid"):
            raise ConfigError(f"input_map must be 'none' or 'sigmoid', got {input_map!r}")
        self.input_map = input_map
        low, high = system.theta_bounds
        if theta_init == "uniform":
            generator = torch.Generator().manual_seed(seed)
            initial = low + (high - low) * torch.rand(system.n_params, generator=generator)
        elif theta_init == "center":
            initial = torch.full((system.n_params,), (low + high) / 2)
        else:
            raise ConfigError(f"theta_init must be 'uniform' or 'center', got {theta_init!r}")
        self.theta = nn.Parameter(initial)
        self.project_()  # float32 rounding of the draw may leave the bounds
        self.record: list | None = None

    @property
    def mode(self) -> Mode:
        """How the layer runs and passes gradients (`MODES`); an unknown mode is refused when set."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self._mode = checked_mode(mode)

    def set_twin(self, twin: Twin | None) -> None:
        """Hold ``twin`` (None: none, for the ``device`` mode alone). It is held, not registered: it is not among the
        layer's parameters, submodules or state dict, so a training optimiser never changes it and a checkpoint of
        the model does not hold it."""
        self.__dict__["twin"] = twin

    def _apply(self, fn: Any, recurse: bool = True) -> PhysicalLayer:
        """As for any module (``.double()``, ``.to(dtype)``), and for the held twin, which computes with θ and x in
        the twin and PAT modes: left in float32 under a float64 θ, every such pass failed in its matrix products."""
        twin = self.__dict__["twin"]
        if twin is not None:
            twin._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict[int, Any]) -> PhysicalLayer:
        """A copy with its own θ, mode, record and twin (layers that shared a twin share its copy) that drives the
        same system: the bench is not copied (its instruments hold connections, and there is one device)."""
        memo[id(self.system)] = self.system
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for name, value in self.__dict__.items():
            copied.__dict__[name] = copy.deepcopy(value, memo)
        return copied

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Refused (`TypeError`): a layer holds its bench, which pickle cannot save; its state dict holds θ."""
        raise TypeError(f"a physical layer drives system {self.system.name!r}, which cannot be saved (its instruments "
                        "hold connections); save the model's state_dict() instead")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor):  # refused as the device refuses them, in every mode: a twin failed on one
            # sample without its batch axis with torch's IndexError or RuntimeError
            self.system.check_shape(x, (None, self.system.n_in), "x")
        if self.input_map == "sigmoid":  # clamped: -0.2 + 0.6 × 1 rounds above float32(0.4), which the device refuses
            low, high = self.system.x_bounds
            x = (low + (high - low) * torch.sigmoid(x)).clamp(*float32_bounds(low, high))
        if self.mode == "device":
            with torch.no_grad():
                return self.system.forward(x, self.theta)
        twin: Twin | None = self.__dict__["twin"]
        if twin is None:
            raise ConfigError(f"physical layer on {self.system.name!r} in {self.mode!r} mode needs a twin")
        if self.mode == "twin":
            return held_twin(twin, x, self.theta)
        return physics_aware(x, self.theta, self.system, twin, self.record)

    @torch.no_grad()
    def project_(self) -> None:
        """Bring θ back into the system's bounds after an optimiser step: wrapped for a periodic θ (a phase),
        clamped otherwise, onto float32 values within the bounds as the system checks them (float32(2π) is above
        2π: a phase wrapped up to it is one at the bottom)."""
        low, high = self.system.theta_bounds
        inside_low, inside_high = float32_bounds(low, high)
        if self.system.theta_periodic:
            self.theta.sub_(low).remainder_(high - low).add_(low)
            self.theta.masked_fill_(self.theta > inside_high, inside_low)
        self.theta.clamp_(inside_low, inside_high)


@functools.lru_cache(maxsize=64)
def float32_bounds(low: float, high: float) -> tuple[float, float]:
    """The lowest and highest float32 values within ``low..high`` (a bound float32 cannot hold, such as 2π or 1.1,
    rounds to a value outside it). Cached: `project_` asks at every optimiser step."""
    inside = []
    for value, inward in ((low, high), (high, low)):
        nearest = torch.tensor(value, dtype=torch.float32)
        for _ in range(2):  # the float32 nearest a bound is at most one step outside it
            if low <= float(nearest) <= high:
                break
            nearest = torch.nextafter(nearest, torch.tensor(inward, dtype=torch.float32))
        if not low <= float(nearest) <= high:
            raise ConfigError(f"bounds {low!r}..{high!r} hold no float32 value; widen them")
        inside.append(float(nearest))
    return inside[0], inside[1]


def physical_layers(model: nn.Module) -> list[PhysicalLayer]:
    """The `PhysicalLayer` s of ``model`` (itself included), in the order of ``model.modules()``."""
    return [module for module in model.modules() if isinstance(module, PhysicalLayer)]


def set_mode(model: nn.Module, mode: Mode) -> None:
    """Set every physical layer of ``model`` to ``mode``."""
    checked_mode(mode)
    for layer in physical_layers(model):
        layer.mode = mode


def checked_mode(mode: str) -> Mode:
    """``mode`` if it is one of `MODES`, else a `ConfigError` listing them."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


def project_(model: nn.Module) -> None:
    """Keep every physical layer's θ within bounds."""
    for layer in physical_layers(model):
        layer.project_()
