"""Physics-aware training (Wright et al., Nature 601, 2022): forward on the device, backward through the twin.

With ``refine_every`` > 0 the twin is refined online: the device measurements that training already makes are
kept, and every ``refine_every`` steps the twin takes ``refine_steps`` Adam steps on the latest of them (those of
at most ``refine_window`` training batches, of every layer holding that twin), so it follows the device as training
moves θ and as the device drifts. Off by default.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from hil.config import LearningRate, Strict
from hil.errors import ConfigError, Diverged
from hil.methods.base import TrainingMethod
from hil.nn import physical_layers
from hil.twin.fit import error_scale
from hil.twin.models import trainable


class PatSettings(Strict):
    refine_every: int = Field(0, ge=0, description="refine the twin every this many steps (0: never)")
    refine_steps: int = Field(5, ge=1, description="Adam steps per refinement")
    refine_lr: LearningRate = Field(1e-3, description="Adam's learning rate of the refinement, in the units of the "
                                  "twin's parameters")
    refine_window: int = Field(8, ge=1, description="training batches whose device measurements are kept for "
                               "refinement (a batch beyond max_batch is several device calls)")

    @model_validator(mode="after")
    def _refinement_on(self) -> PatSettings:
        """Refuse a refinement setting given while ``refine_every`` leaves refinement off: it was ignored, and the
        run trained without the refinement it seemed to ask for. By value, as a run's protocol.yaml writes every
        setting, defaults included."""
        given = [name for name in ("refine_steps", "refine_lr", "refine_window")
                 if getattr(self, name) != type(self).model_fields[name].default]
        if not self.refine_every and given:
            one = len(given) == 1
            raise ValueError(f"{' and '.join(given)} set{'s' if one else ''} the twin's online refinement, which "
                             f"refine_every 0 leaves off; give refine_every (the training steps between refinements), "
                             f"or leave {'it' if one else 'them'} out")
        return self


class PhysicsAwareTraining(TrainingMethod):
    """The physical layers run in ``pat`` mode; optionally the twin follows the device online."""

    name = "pat"
    needs = frozenset({"twin"})
    mode = "pat"
    Settings = PatSettings

    def __init__(self, settings: PatSettings | None = None):
        super().__init__(settings)
        self.steps = 0
        self._layers: list = []
        self._optimizers: dict[int, tuple[nn.Module, torch.optim.Optimizer]] = {}  # index -> (twin, its Adam)
        self._saved_optimizers: dict[int, Any] = {}
        self._saved_records: list | None = None  # loaded before `begin` gave the layers to put them on

    def check_training(self, batch_size: int, layers: int) -> None:
        """Refinement needs two recorded rows to scale its errors by (`refine`): a window of one batch of one row,
        through one layer, never holds them, and the twin would be refined only where an epoch's last batch of one row
        joins the one before."""
        if self.settings.refine_every and layers and self.settings.refine_window * batch_size * layers < 2:
            raise ConfigError("refine_window 1 keeps the device calls of one training batch of 1 row "
                              "(training.batch_size), one measurement, which has no spread to scale the refinement's "
                              "errors by; set refine_window to 2 or more", field="method.settings.refine_window")

    def begin(self, model: nn.Module) -> None:
        super().begin(model)
        self._layers = physical_layers(model)
        if self.settings.refine_every:
            for layer in self._layers:
                layer.record = layer.record or []
        if self._saved_records is not None:
            self._restore_records()

    def train_step(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   optimizer: torch.optim.Optimizer) -> dict[str, float]:
        figures = super().train_step(model, x, labels, optimizer)
        self.steps += 1
        for layer in self._layers if self.settings.refine_every else ():  # a refinement reads the latest window
            # only: no more is kept, in memory or in a checkpoint, however many steps lie between refinements
            layer.record = (layer.record or [])[-self.settings.refine_window:]
        if self.settings.refine_every and self.steps % self.settings.refine_every == 0:
            loss = self.refine()
            if loss is not None:
                figures["twin_refine_loss"] = loss
        return figures

    def _optimizer(self, index: int, twin: nn.Module) -> torch.optim.Optimizer:
        """The refinement's Adam of the twin that the layers from ``index`` hold; a new one for a twin attached
        since (`PhysicalLayer.set_twin`): the one before holds the parameters and moments of the twin it replaced."""
        if index not in self._optimizers or self._optimizers[index][0] is not twin:
            optimizer = torch.optim.Adam(trainable(twin), lr=self.settings.refine_lr)
            if index in self._saved_optimizers:
                optimizer.load_state_dict(self._saved_optimizers.pop(index))
            self._optimizers[index] = (twin, optimizer)
        return self._optimizers[index][1]

    def refine(self) -> float | None:
        """A few Adam steps of every twin on the recorded device calls of the layers holding it (layers on one
        system share its twin: it is refined once, on all of theirs); returns the last loss (None when no twin had
        two recorded rows to refine on). A refinement whose loss or twin is no longer finite stops training
        (`Diverged`, naming the step), before the twin it broke gives any forward pass or checkpoint NaN."""
        loss_value = None
        held: dict[int, tuple[int, nn.Module, list]] = {}  # id(twin) -> (first layer's index, twin, records)
        for index, layer in enumerate(self._layers):  # each record: the latest refine_window batches (train_step)
            if layer.twin is not None:
                held.setdefault(id(layer.twin), (index, layer.twin, []))[2].extend(layer.record or [])
        for index, twin, records in held.values():
            if sum(len(y) for _, _, y in records) < 2:
                continue  # one recorded row has no spread to scale the errors by
            optimizer = self._optimizer(index, twin)
            scale = error_scale(torch.cat([y for _, _, y in records]).var(dim=0))
            for _ in range(self.settings.refine_steps):
                optimizer.zero_grad()
                loss = sum(((twin(x, theta) - y).pow(2).mean(dim=0) / scale).mean() for x, theta, y in records)
                loss = loss / len(records)
                loss.backward()
                optimizer.step()
                loss_value = loss.item()
            if not math.isfinite(loss_value) or not all(bool(p.isfinite().all()) for p in trainable(twin)):
                what = f"its loss is {loss_value:g}" if not math.isfinite(loss_value) else \
                    "its parameters are no longer finite"
                raise Diverged("the twin's online refinement", f"at training step {self.steps}",
                               f"{what}; start a new run with a lower method.settings.refine_lr")
        return loss_value

    def state_dict(self) -> dict[str, Any]:
        optimizers = {str(k): v for k, v in self._saved_optimizers.items()}  # loaded, not yet needed again
        optimizers.update({str(k): optimizer.state_dict() for k, (_, optimizer) in self._optimizers.items()})
        records = self._saved_records if self._saved_records is not None else \
            [list(layer.record or []) for layer in self._layers]
        return {"steps": self.steps, "optimizers": optimizers, "records": records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self._optimizers = {}  # those refined with since hold later moments than the state's
        self._saved_optimizers = {int(k): v for k, v in state.get("optimizers", {}).items()}
        self._saved_records = [list(records) for records in state.get("records", [])]
        if self._layers:  # else `begin` puts them on its network's layers
            self._restore_records()

    def _restore_records(self) -> None:
        assert self._saved_records is not None
        for layer, records in zip(self._layers, self._saved_records, strict=False):
            layer.record = [tuple(r) for r in records] if self.settings.refine_every else None
        self._saved_records = None
