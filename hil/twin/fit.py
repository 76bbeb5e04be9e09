"""Fit a twin to collected data: Adam on the output-normalised squared error, with early stopping.

A minibatch is one θ group (one device call's worth of inputs with one parameter vector), so physics twins run
their batched forward once per step. The loss divides each output's squared error by that output's variance
over the training data, so outputs of different scales count alike. Training stops when the held-out error has
not improved for ``patience`` epochs, and the best state is kept. The held-out error is normalised as the loss is,
by the training outputs' variance: it is not the fidelity's NMSE (`hil.twin.fidelity`), which divides by the
held-out outputs' own variance, and the two differ where the held-out groups vary less (threefold on the optical
protocol).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hil.errors import ConfigError
from hil.twin.collect import TwinData
from hil.twin.models import NeuralTwin, ResidualTwin, Twin


@dataclass
class FitResult:
    """Loss history (MSE over the training outputs' variance, mean over outputs) per epoch, on the training and on
    the held-out groups, the epoch whose state was kept, and whether the held-out error had stopped improving
    (``patience`` epochs without a new best) before the epochs ran out, or there was nothing to fit: when not, more
    epochs would likely give a better twin."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    converged: bool = False


def nmse(twin: Twin, data: TwinData, variance: torch.Tensor | None = None) -> torch.Tensor:
    """Per-output mean squared error of the twin on ``data``, divided by ``variance`` (default: the data's)."""
    if data.n_groups == 0:
        raise ConfigError("no θ groups to measure the twin's error on; pass data with at least one")
    variance = data.output_variance() if variance is None else variance
    with torch.no_grad():
        errors = torch.stack([(twin(x, theta) - y).pow(2).mean(dim=0)
                              for x, theta, y in zip(data.x, data.theta, data.y, strict=True)])
    return errors.mean(dim=0) / variance.clamp_min(1e-12)


def fit_twin(twin: Twin, train: TwinData, validation: TwinData, *, epochs: int = 100, lr: float = 1e-2,
             patience: int = 10, seed: int = 0,
             progress: Callable[[int, float, float], None] | None = None) -> FitResult:
    """Train ``twin`` in place on ``train``; keep the state with the lowest held-out error."""
    if train.n_groups == 0 or validation.n_groups == 0:
        raise ConfigError(f"the twin fit needs at least one training and one held-out θ group, got {train.n_groups} "
                          f"and {validation.n_groups}; collect more thetas")
    if train.y.shape[:2].numel() < 2:
        raise ConfigError("the twin fit's training part is one measurement, whose output variance is undefined; "
                          "collect more inputs per theta or thetas")
    result = FitResult()
    parameters = [p for p in twin.parameters() if p.requires_grad]
    variance = train.output_variance().clamp_min(1e-12)
    for module in twin.modules():
        if isinstance(module, NeuralTwin):
            flat = train.y.reshape(-1, train.y.shape[-1])
            target = flat
            if isinstance(twin, ResidualTwin):
                with torch.no_grad():
                    target = flat - torch.cat([twin.physics_twin(x, t) for x, t in zip(train.x, train.theta,
                                                                                    strict=True)])
            module.y_mean.copy_(target.mean(dim=0))
            module.y_std.copy_(target.std(dim=0).clamp_min(1e-6))
    if not parameters or epochs == 0:
        result.converged = True  # nothing to fit
        return result
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, waited = float("inf"), copy.deepcopy(twin.state_dict()), 0
    for epoch in range(epochs):
        twin.train()
        losses = []
        for group in torch.randperm(train.n_groups, generator=generator).tolist():
            optimizer.zero_grad()
            loss = ((twin(train.x[group], train.theta[group]) - train.y[group]).pow(2).mean(dim=0) / variance).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        twin.eval()
        held_out = nmse(twin, validation, variance).mean().item()
        result.train_loss.append(sum(losses) / len(losses))
        result.validation_loss.append(held_out)
        if progress is not None:
            progress(epoch, result.train_loss[-1], held_out)
        if held_out < best:
            best, best_state, waited, result.best_epoch = held_out, copy.deepcopy(twin.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= patience:
                result.converged = True
                break
    twin.load_state_dict(best_state)
    return result
