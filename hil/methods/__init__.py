"""Training methods, one module each, behind the small interface of `hil.methods.base.TrainingMethod`."""

from hil.methods.base import METHODS, TrainingMethod, method_class

__all__ = ["METHODS", "TrainingMethod", "method_class"]
