"""Physical systems: the trainable physical transformations y = f(x, θ) of a bench.

`PhysicalSystem` and `PhysicsModel` are in `hil.systems.base`; one module per kind of bench.
"""

from hil.systems.base import PhysicalSystem, PhysicsModel

__all__ = ["PhysicalSystem", "PhysicsModel"]
