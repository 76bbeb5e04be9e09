"""How good is a twin: normalised error per output against the noise floor, and Jacobian agreement.

- ``nmse``: per output, the twin's mean squared error on held-out data divided by the output's variance (or, for an
  output that barely varies, by the mean variance: `hil.twin.fit.error_scale`); the
  ``noise_floor`` is the same ratio for the variance of repeated measurements, which no twin can go below.
- ``jacobian_cosine``: along random sign directions v of θ (and of x), the cosine similarity between the
  twin's directional derivative (autograd) and the device's central finite difference (f(θ + hv) − f(θ − hv))/2h,
  each side averaged over ``repeats`` measurements, over all inputs and outputs of a batch. Physics-aware
  training relies on exactly this: the backward pass uses the twin's Jacobian at the device's operating point.
  The repeats average per-shot noise only: what is drawn when θ is written (a crossbar's programming noise) is
  drawn once per side, since a system writes θ only when it changes; it caps the cosine of even a perfect twin
  below 1 (0.94 to 0.97 for the oracle of the lab's crossbar, with 1 to 16 repeats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hil.systems.base import PhysicalSystem
from hil.twin.collect import TwinData
from hil.twin.fit import error_scale, nmse
from hil.twin.models import Twin


@dataclass(frozen=True)
class Fidelity:
    """Held-out NMSE per output, the noise floor per output, and Jacobian cosines (θ and x directions)."""

    nmse: torch.Tensor
    noise_floor: torch.Tensor
    jacobian_cosine_theta: float
    jacobian_cosine_x: float

    def summary(self) -> dict[str, float]:
        """The figures a run logs (its ``fidelity`` event): the mean and largest NMSE, the mean noise floor and both
        Jacobian cosines."""
        return {"nmse_mean": self.nmse.mean().item(), "nmse_max": self.nmse.max().item(),
                "noise_floor_mean": self.noise_floor.mean().item(),
                "jacobian_cosine_theta": self.jacobian_cosine_theta, "jacobian_cosine_x": self.jacobian_cosine_x}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine between ``a`` and ``b`` in any unit: each is first brought to a largest magnitude in 0.5..1 by a
    power of two (exact, so the cosine is as before for values of order 1), since `cosine_similarity` divides by
    norms floored at 1e-8, which took a perfect twin's cosine to 0.001 for derivatives of outputs in pA."""
    return torch.nn.functional.cosine_similarity(_to_order_one(a.flatten()), _to_order_one(b.flatten()), dim=0).item()


def _to_order_one(values: torch.Tensor) -> torch.Tensor:
    """``values`` times the power of two that brings their largest magnitude into 0.5..1 (all zeros as they are)."""
    _, exponent = torch.frexp(values.abs().max())
    return torch.ldexp(values, -exponent)


def _directional_cosine(system: PhysicalSystem, twin: Twin, x: torch.Tensor, theta: torch.Tensor, along_theta: bool,
                        direction: torch.Tensor, h: float, repeats: int) -> float:
    """Cosine between the device's central difference and the twin's derivative along ``direction``."""

    def device(value: torch.Tensor) -> torch.Tensor:
        runs = [system.forward(x, value) if along_theta else system.forward(value, theta) for _ in range(repeats)]
        return torch.stack(runs).mean(dim=0)

    def model(value: torch.Tensor) -> torch.Tensor:
        return twin(x, value) if along_theta else twin(value, theta)

    base = theta if along_theta else x
    measured = (device(base + h * direction) - device(base - h * direction)) / (2 * h)
    _, predicted = torch.autograd.functional.jvp(model, (base,), (direction,))
    return _cosine(predicted.detach(), measured)


def jacobian_cosine(system: PhysicalSystem, twin: Twin, x: torch.Tensor, theta: torch.Tensor, *,
                    directions: int = 4, step: float = 0.05, repeats: int = 2, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
    """Mean cosine between twin and device directional derivatives along random θ and x directions.

    Each direction moves every element by ±``step`` × the bounds' width (random signs), so that every element's
    change stands above the device's resolution; the point is first moved that far inside the bounds.
    ``progress(done, total)`` is called after each of the ``2 × directions`` directions (2 × ``repeats`` device calls
    each). Returns (cosine along θ, cosine along x).
    """
    generator = torch.Generator().manual_seed(seed)
    h_theta = step * (system.theta_bounds[1] - system.theta_bounds[0])
    h_x = step * (system.x_bounds[1] - system.x_bounds[0])
    theta = theta.clamp(system.theta_bounds[0] + h_theta, system.theta_bounds[1] - h_theta)
    x = x.clamp(system.x_bounds[0] + h_x, system.x_bounds[1] - h_x)
    results = []
    for along_theta, h, shape in ((True, h_theta, theta.shape), (False, h_x, x.shape)):
        cosines = []
        for _ in range(directions):
            direction = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
            cosines.append(_directional_cosine(system, twin, x, theta, along_theta, direction, h, repeats))
            if progress is not None:
                progress(len(results) * directions + len(cosines), 2 * directions)
        results.append(sum(cosines) / len(cosines))
    return results[0], results[1]


def fidelity(system: PhysicalSystem, twin: Twin, held_out: TwinData, noise_variance: torch.Tensor, *,
             directions: int = 4, step: float = 0.05, repeats: int = 2, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> Fidelity:
    """The fidelity of ``twin`` on ``held_out`` data and at its first θ group on the device (``progress``: as
    `jacobian_cosine`'s, whose device calls are the check's)."""
    variance = error_scale(held_out.output_variance())
    error = nmse(twin, held_out, variance)
    cos_theta, cos_x = jacobian_cosine(system, twin, held_out.x[0], held_out.theta[0], directions=directions,
                                       step=step, repeats=repeats, seed=seed, progress=progress)
    return Fidelity(error, noise_variance / variance, cos_theta, cos_x)
