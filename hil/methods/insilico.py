"""In-silico training: train through the twin alone, then deploy the parameters on the device.

The baseline of the field: it needs no device time while training, and its result on the device is only as
good as the twin is faithful to the device.
"""

from __future__ import annotations

from hil.methods.base import TrainingMethod


class InSilico(TrainingMethod):
    """Forward and backward through the twin."""

    name = "insilico"
    needs = frozenset({"twin"})
    mode = "twin"
