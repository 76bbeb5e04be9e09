"""Fit a twin to collected data: Adam on the output-normalised squared error, with early stopping.

A minibatch is one θ group (one device call's worth of inputs with one parameter vector), so physics twins run
their batched forward once per step. The loss divides each output's squared error by that output's variance over
the training data (`error_scale`), so outputs of different scales count alike. Training stops when the held-out
error has not improved for ``patience`` epochs, and the best state is kept; a run holds out for this other θ groups
than those it judges the twin's fidelity on (`hil.twin.collect.TwinData.fit_groups`). The held-out error is
normalised as the loss is, by the training outputs' variance: it is not the fidelity's NMSE (`hil.twin.fidelity`),
which divides by the held-out outputs' own variance, and the two differ where the held-out groups vary less (on the
optical protocol, seed 0: a stopping error of 0.0020 beside a fidelity NMSE of 0.0033).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hil.errors import ConfigError
from hil.twin.collect import TwinData
from hil.twin.models import NeuralTwin, OutputAffine, PhysicsTwin, ResidualTwin, Twin, frozen, trainable

#: An output whose variance is under this fraction of the outputs' mean variance barely varies (a dead or saturated
#: detector region, a clipped column): its squared error is divided by the mean variance instead of its own, which
#: would let its error outweigh every other output's in the fit and in the NMSE (one constant output of eight took the
#: crossbar's physics twin from a held-out NMSE of 0.0146 on the others to 0.0248 over 20 epochs; 0.0146 so scaled).
FLAT_OUTPUT_FRACTION = 1e-3


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


def error_scale(variance: torch.Tensor) -> torch.Tensor:
    """What each output's squared error is divided by, given the outputs' variance: that variance, or the outputs'
    mean variance for an output that barely varies (under `FLAT_OUTPUT_FRACTION` of it). Relative alone, so that the
    errors of outputs in any unit scale alike (a floor of 1e-12 took outputs in nA, variance 1e-18 A², for a perfect
    fit); at least the smallest normal number of its dtype. Where no output varies at all, 1: the errors are then
    mean squares in the outputs' unit (divided by the floor, an error of 0.01 read 1e34)."""
    mean = variance.mean()
    if not mean > 0:
        return torch.ones_like(variance)
    smallest = torch.finfo(variance.dtype).tiny
    return torch.where(variance < FLAT_OUTPUT_FRACTION * mean, mean, variance).clamp_min(smallest)


def nmse(twin: Twin, data: TwinData, variance: torch.Tensor | None = None) -> torch.Tensor:
    """Per-output mean squared error of the twin on ``data``, divided by ``variance`` (default: the `error_scale` of
    the data's output variance)."""
    if data.n_groups == 0:
        raise ConfigError("no θ groups to measure the twin's error on; pass data with at least one")
    variance = error_scale(data.output_variance()) if variance is None else variance
    with torch.no_grad():
        errors = torch.stack([(twin(x, theta) - y).pow(2).mean(dim=0)
                              for x, theta, y in zip(data.x, data.theta, data.y, strict=True)])
    return errors.mean(dim=0) / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def fit_epochs(twin: Twin, epochs: int) -> int:
    """The most epochs `fit_twin` runs on ``twin`` given ``epochs``: twice that for a residual twin (two stages)."""
    return 2 * epochs if isinstance(twin, ResidualTwin) else epochs


def fit_twin(twin: Twin, train: TwinData, validation: TwinData, *, epochs: int = 100, lr: float = 1e-2,
             patience: int = 10, seed: int = 0,
             progress: Callable[[int, float, float], None] | None = None) -> FitResult:
    """Train ``twin`` in place on ``train``; keep the state with the lowest held-out error.

    A residual twin is fitted in two stages of up to ``epochs`` each: its physics alone, then the neural residual
    on what the fitted physics leaves, the physics held; the residual is kept only where it lowers the held-out
    error, so the twin is never worse there than its physics. (Fitted together, the network took up the error before
    the physics' few parameters were calibrated and learnt the training θ groups: held-out NMSE 0.39 against the
    physics twin's 0.0057 on the optical protocol.) A physics twin starts from the system's calibration, which
    its fit must beat on the held-out groups to replace (``best_epoch`` stays -1 where none did): Adam moves every
    parameter by about ``lr`` a step, whatever its gradient, and at 0.02 the fiber's 16 384 measured
    transmission-matrix entries left an ideal bench's twin at a held-out NMSE of 0.14 where its calibration predicted
    it to 1e-12, a realistic bench's at 0.36 against 0.12.
    ``progress`` gets the epoch counted over both stages."""
    if train.n_groups == 0 or validation.n_groups == 0:
        raise ConfigError(f"the twin fit needs at least one training and one held-out θ group, got {train.n_groups} "
                          f"and {validation.n_groups}; collect more thetas")
    if train.y.shape[:2].numel() < 2:
        raise ConfigError("the twin fit's training part is one measurement, whose output variance is undefined; "
                          "collect more inputs per theta or thetas")
    variance = train.output_variance()
    if not bool((variance > 0).any()):
        raise ConfigError(f"the twin fit's training outputs are all constant ({train.y.shape[:2].numel()} measurements "
                          "give the same values): there is nothing to fit; check that the device responds to x and θ "
                          "(a source on, a detector uncovered), and collect more inputs per theta")
    result = FitResult()
    variance = error_scale(variance)
    generator = torch.Generator().manual_seed(seed)
    stage = _Stage(train, validation, variance, epochs, lr, patience, generator, progress)
    for module in twin.modules():
        if isinstance(module, OutputAffine):  # its offset learnt in the outputs' order of magnitude
            module.set_scale(train.y)
    if not isinstance(twin, ResidualTwin):
        if isinstance(twin, NeuralTwin):
            _normalise(twin, train.y.reshape(-1, train.y.shape[-1]), centre=True)
        stage.run(twin, trainable(twin), result, keep_start=isinstance(twin, PhysicsTwin))
        return result
    stage.run(twin.physics_twin, trainable(twin.physics_twin), result, keep_start=True)
    with torch.no_grad():
        left = torch.cat([y - twin.physics_twin(x, t) for x, t, y in zip(train.x, train.theta, train.y, strict=True)])
    _normalise(twin.residual, left, centre=False)  # its output stays 0 until it learns: the twin is its physics
    with frozen(twin.physics_twin):
        stage.run(twin, trainable(twin.residual), result, keep_start=True)
    return result


def _normalise(net: NeuralTwin, targets: torch.Tensor, centre: bool) -> None:
    """Set a neural twin's output scale from the targets it is to learn (rows × outputs): their std (`error_scale`'s,
    in the targets' unit: a floor of 1e-6 scaled outputs in nA a thousandfold too large), and their mean where
    ``centre`` (a residual is left uncentred, starting at 0)."""
    with torch.no_grad():
        net.y_mean.copy_(targets.mean(dim=0) if centre else torch.zeros_like(net.y_mean))
        net.y_std.copy_(error_scale(targets.var(dim=0)).sqrt())


@dataclass
class _Stage:
    """One fit: Adam over given parameters of a twin, one θ group a step, early stopping on the held-out error."""

    train: TwinData
    validation: TwinData
    variance: torch.Tensor
    epochs: int
    lr: float
    patience: int
    generator: torch.Generator
    progress: Callable[[int, float, float], None] | None

    def run(self, twin: Twin, parameters: list[torch.Tensor], result: FitResult, keep_start: bool = False) -> None:
        """Fit ``parameters`` of ``twin``, appending to ``result``; ``twin`` ends in the state of lowest held-out
        error among its epochs' and, where ``keep_start`` (a physics twin's calibration, or a later stage's start, an
        earlier one's best), the state it started in, which it must beat to replace."""
        if not parameters or self.epochs == 0:
            result.converged = True  # nothing to fit
            return
        twin.eval()
        best = nmse(twin, self.validation, self.variance).mean().item() if keep_start else float("inf")
        best_state, waited = copy.deepcopy(twin.state_dict()), 0
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        result.converged = False
        for _ in range(self.epochs):
            twin.train()
            losses = []
            for group in torch.randperm(self.train.n_groups, generator=self.generator).tolist():
                optimizer.zero_grad()
                x, theta, y = self.train.x[group], self.train.theta[group], self.train.y[group]
                loss = ((twin(x, theta) - y).pow(2).mean(dim=0) / self.variance).mean()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            twin.eval()
            held_out = nmse(twin, self.validation, self.variance).mean().item()
            result.train_loss.append(sum(losses) / len(losses))
            result.validation_loss.append(held_out)
            epoch = len(result.validation_loss) - 1
            if self.progress is not None:
                self.progress(epoch, result.train_loss[-1], held_out)
            if held_out < best:
                best, best_state, waited, result.best_epoch = held_out, copy.deepcopy(twin.state_dict()), 0, epoch
            else:
                waited += 1
                if waited >= self.patience:
                    result.converged = True
                    break
        twin.load_state_dict(best_state)
