"""How good is a twin: normalised error per output against the noise floor, and Jacobian agreement.

- ``nmse``: per output, the twin's mean squared error on held-out data divided by the output's variance; the
  ``noise_floor`` is the same ratio for the variance of repeated measurements, which no twin can go below.
- ``jacobian_cosine``: along random directions v of θ (and of x), the cosine similarity between the twin's
  directional derivative (autograd) and the device's central finite difference (f(θ + h·v) − f(θ − h·v)) / 2h,
  averaged over ``repeats`` measurements, over all inputs and outputs of a batch. Physics-aware training relies
  on exactly this: the backward pass uses the twin's Jacobian at the device's operating point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hil.systems.base import PhysicalSystem
from hil.twin.collect import TwinData
from hil.twin.fit import nmse
from hil.twin.models import Twin


@dataclass(frozen=True)
class Fidelity:
    """Held-out NMSE per output, the noise floor per output, and Jacobian cosines (θ and x directions)."""

    nmse: torch.Tensor
    noise_floor: torch.Tensor
    jacobian_cosine_theta: float
    jacobian_cosine_x: float

    def summary(self) -> dict[str, float]:
        return {"nmse_mean": self.nmse.mean().item(), "nmse_max": self.nmse.max().item(),
                "noise_floor_mean": self.noise_floor.mean().item(),
                "jacobian_cosine_theta": self.jacobian_cosine_theta, "jacobian_cosine_x": self.jacobian_cosine_x}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def _inside(value: torch.Tensor, direction: torch.Tensor, step: float, bounds: tuple[float, float]) -> float:
    """The largest step ≤ ``step`` that keeps value ± step·direction inside the bounds."""
    room = torch.minimum(value - bounds[0], bounds[1] - value).clamp_min(0)
    reach = direction.abs().clamp_min(1e-12)
    return min(step, float((room / reach).min()))


def jacobian_cosine(system: PhysicalSystem, twin: Twin, x: torch.Tensor, theta: torch.Tensor, *,
                    directions: int = 4, step: float = 0.05, repeats: int = 2, seed: int = 0) -> tuple[float, float]:
    """Mean cosine between twin and device directional derivatives along random θ and x directions.

    ``step`` is a fraction of the bounds' width. Returns (cosine along θ, cosine along x).
    """
    generator = torch.Generator().manual_seed(seed)
    results = []
    for bounds, is_theta in ((system.theta_bounds, True), (system.x_bounds, False)):
        cosines = []
        width = bounds[1] - bounds[0]
        for _ in range(directions):
            shape = theta.shape if is_theta else x.shape
            direction = torch.randn(shape, generator=generator)
            direction /= direction.norm()
            base = theta if is_theta else x
            h = _inside(base, direction, step * width, bounds)
            if h <= 0:
                continue

            def device(value: torch.Tensor, is_theta: bool = is_theta) -> torch.Tensor:
                runs = [system.forward(x, value) if is_theta else system.forward(value, theta) for _ in range(repeats)]
                return torch.stack(runs).mean(dim=0)

            measured = (device(base + h * direction) - device(base - h * direction)) / (2 * h)
            function = (lambda t: twin(x, t)) if is_theta else (lambda v: twin(v, theta))
            _, predicted = torch.autograd.functional.jvp(function, (base,), (direction,))
            cosines.append(_cosine(predicted.detach(), measured))
        results.append(sum(cosines) / len(cosines) if cosines else float("nan"))
    return results[0], results[1]


def fidelity(system: PhysicalSystem, twin: Twin, held_out: TwinData, noise_variance: torch.Tensor, *,
             directions: int = 4, step: float = 0.05, repeats: int = 2, seed: int = 0) -> Fidelity:
    """The fidelity of ``twin`` on ``held_out`` data and at its first θ group on the device."""
    variance = held_out.output_variance().clamp_min(1e-12)
    error = nmse(twin, held_out, variance)
    cos_theta, cos_x = jacobian_cosine(system, twin, held_out.x[0], held_out.theta[0], directions=directions,
                                       step=step, repeats=repeats, seed=seed)
    return Fidelity(error, noise_variance / variance, cos_theta, cos_x)
