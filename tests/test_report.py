"""The report says what the run folder holds: where training ran."""

from pathlib import Path

import pytest
import torch

from hil.report import _learning_curves
from hil.store import RunStore


def _run(parent: Path, method: str = "pat", epochs: int = 2, finish: bool = True, **extra: dict) -> RunStore:
    """A run folder whose log holds ``epochs`` epochs of two batches, then an evaluation if ``finish``; ``extra``
    maps an event kind to its fields, logged after the epochs (before the evaluation)."""
    store = RunStore.create(parent, "r")
    store.event("run_started", protocol="r", method=method, system="crossbar", seed=0)
    for epoch in range(epochs):
        for batch in range(2):
            store.event("batch", epoch=epoch, batch=batch + 1, loss=1.0 / (epoch + 1), accuracy=0.5)
        store.event("epoch", epoch=epoch, device_loss=0.5, device_accuracy=0.5 + epoch / 10, twin_loss=0.6,
                    twin_accuracy=0.4 + epoch / 10)
    for kind, fields in extra.items():
        store.event(kind, **fields)
    if finish:
        store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])})
        store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
        store.event("run_finished", wall_s=1.0)
    return store


def test_each_curve_has_one_colour_in_both_panels(tmp_path: Path) -> None:
    """The device's test curve is not blue on the right and orange on the left, where the train curve took blue."""
    store = _run(tmp_path)
    figure = _learning_curves(store.events())
    store.close()
    colours: dict[str, set] = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"train", "test, device", "test, twin"}
    assert all(len(found) == 1 for found in colours.values()), colours
    assert len({next(iter(found)) for found in colours.values()}) == 3


@pytest.mark.parametrize(("method", "where"), [("pat", "forward on the device"),
                                               ("insilico", "forward through the twin")])
def test_the_learning_curves_say_where_the_training_batches_ran(tmp_path: Path, method: str, where: str) -> None:
    """In silico, the train loss is the twin's and the test loss the device's: a gap between them is the twin's
    mismatch, not overfitting, and the plot says so."""
    store = _run(tmp_path, method=method)
    figure = _learning_curves(store.events())
    store.close()
    assert where in figure.get_suptitle() and "mean over each epoch's training batches" in figure.get_suptitle()
