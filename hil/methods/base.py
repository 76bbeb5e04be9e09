"""The interface every training method implements, as the orchestrator uses it.

A method says what it needs from a system (``needs``: a twin, energy-based access, or only forward calls), in
which mode physical layers run while it trains, and how one step of training goes. The orchestrator builds the
model and the optimiser, feeds batches, checkpoints, and evaluates on the device; the method only trains.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from hil.config import Strict
from hil.errors import ConfigError
from hil.nn import Mode, project_, set_mode
from hil.systems.base import PhysicalSystem

#: Built-in methods: name -> module:Class.
METHODS = {
    "insilico": "hil.methods.insilico:InSilico",
    "pat": "hil.methods.pat:PhysicsAwareTraining",
}


class NoSettings(Strict):
    """A method without settings."""


class TrainingMethod:
    """Base of the training methods.

    ``needs`` ⊆ {"twin", "energy"}; ``mode`` is the physical layers' mode during training; ``Settings`` is the
    pydantic model of the method's own settings in a protocol (unknown keys refused).
    """

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    mode: ClassVar[Mode]
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, settings: BaseModel | None = None):
        self.settings = settings if settings is not None else self.Settings()

    def check(self, system: PhysicalSystem) -> None:
        """Refuse a system this method cannot serve (`ConfigError`)."""
        if "energy" in self.needs and not system.energy_based:
            raise ConfigError(f"method {self.name!r} needs an energy-based system; {system.name!r} "
                              f"({system.kind}) is not", field="method.name")

    def check_training(self, batch_size: int, layers: int) -> None:
        """Refuse settings that cannot work with training batches of ``batch_size`` rows through ``layers`` physical
        layers on the protocol's system, which has its twin (`ConfigError`, its ``field`` under ``method.settings``).
        Default: any."""

    def begin(self, model: nn.Module) -> None:
        """Prepare the model for training (set the physical layers' mode)."""
        set_mode(model, self.mode)

    def train_step(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One optimisation step on a batch; returns figures to log (at least ``loss``)."""
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        project_(model)
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        return {"loss": loss.item(), "accuracy": accuracy}

    def state_dict(self) -> dict[str, Any]:
        """What the method must keep across a checkpoint (beyond model and optimiser)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def method_class(name: str) -> type[TrainingMethod]:
    """The method registered as ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}", field="method.name")
    module, _, attribute = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
