"""Training methods: in-silico never calls the device; PAT calls it once a step, keeps the twin fixed unless asked
to refine it online, refines it on the latest device calls and carries that through a checkpoint."""

import copy
import math
import pickle
import textwrap

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from hil.errors import ConfigError, HilError
from hil.methods import method_class
from hil.methods.pat import PatSettings, PhysicsAwareTraining
from hil.nn import PhysicalLayer
from hil.twin.models import build_twin
from tests.lab_text import lab_from_text

LAB = textwrap.dedent("""
    worlds:
      exact: {kind: memristor_crossbar, preset: ideal, seed: 0, config: {geometry: {max_batch: 64}}}
    instruments:
      crossbar: {driver: simulated_crossbar, world: exact}
    systems:
      crossbar: {kind: crossbar, instruments: {crossbar: crossbar}, settings: {n_in: 8, n_out: 4}}
""")


@pytest.fixture
def lab(tmp_path):
    with lab_from_text(LAB, tmp_path) as lab:
        yield lab


def model_on(system) -> tuple[nn.Sequential, nn.Module]:
    """One physical layer on the ideal crossbar (deterministic, exactly its physics), with a twin unlike it."""
    twin = build_twin("physics", system)
    with torch.no_grad():
        twin.affine.gain.fill_(1.5)
    return nn.Sequential(PhysicalLayer(system, twin, mode="device", seed=0)), twin


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(16, 8, generator=generator) * 2 - 1, torch.randint(0, 4, (16,), generator=generator)


def test_insilico_trains_through_the_twin_and_never_calls_the_device(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = method_class("insilico")()
    assert method.needs == {"twin"}
    method.begin(model)
    layer = model[0]
    assert layer.mode == "twin"
    x, labels = batch(0)
    theta, twin_state, calls = layer.theta.detach().clone(), copy.deepcopy(twin.state_dict()), system.calls
    figures = method.train_step(model, x, labels, torch.optim.SGD(model.parameters(), lr=1e4))
    assert system.calls == calls
    with torch.no_grad():
        assert figures["loss"] == pytest.approx(nn.functional.cross_entropy(twin(x, theta), labels).item(), rel=1e-5)
    # a huge step, brought back within the bounds
    assert (layer.theta.abs() <= 1).all() and (layer.theta.abs() == 1).any()
    torch.testing.assert_close(twin.state_dict(), twin_state)
    with pytest.raises(ConfigError, match="unknown method 'quantum'"):
        method_class("quantum")


def test_pat_step_calls_the_device_once_and_keeps_the_twin_fixed(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = method_class("pat")()  # online refinement is off by default
    method.begin(model)
    layer = model[0]
    assert layer.mode == "pat"
    x, labels = batch(1)
    theta, twin_state, calls = layer.theta.detach().clone(), copy.deepcopy(twin.state_dict()), system.calls
    figures = method.train_step(model, x, labels, torch.optim.SGD(model.parameters(), lr=1e4))
    assert system.calls - calls == 1 and "twin_refine_loss" not in figures
    with torch.no_grad():
        measured = system.forward(x, theta)
    assert figures["loss"] == pytest.approx(nn.functional.cross_entropy(measured, labels).item(), rel=1e-5)
    assert (layer.theta.abs() <= 1).all() and (layer.theta.abs() == 1).any()
    torch.testing.assert_close(twin.state_dict(), twin_state)
    assert layer.record is None  # nothing kept without refinement


def error(twin: nn.Module, records: list) -> float:
    with torch.no_grad():
        return sum((twin(x, theta) - y).pow(2).mean().item() for x, theta, y in records) / len(records)


def test_pat_refinement_fits_the_twin_to_the_latest_device_calls(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=2, refine_steps=10, refine_lr=0.05, refine_window=2))
    method.begin(model)
    layer = model[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=100.0)  # θ moves far between steps
    thetas = []
    for step in range(4):
        thetas.append(layer.theta.detach().clone())
        before = copy.deepcopy(twin)
        figures = method.train_step(model, *batch(step), optimizer)
        if step == 0:
            assert "twin_refine_loss" not in figures and len(layer.record) == 1
            torch.testing.assert_close(twin.state_dict(), before.state_dict())
        if step == 1:  # every second step: the twin moves towards the device at what the device saw
            assert figures["twin_refine_loss"] == figures["twin_refine_loss"]  # not NaN
            assert error(twin, layer.record) < 0.3 * error(before, layer.record)
    assert len(layer.record) == 2  # the window: the latest device calls
    for (_, theta, _), seen in zip(layer.record, thetas[2:], strict=True):
        torch.testing.assert_close(theta, seen)


def test_pat_keeps_no_more_device_calls_than_its_refinement_window_between_refinements(lab) -> None:
    """The record was trimmed to the window only when a refinement ran: with refine_every 400 and refine_window 2, a
    run's memory and every checkpoint held up to 399 batches' device calls, of which a refinement reads 2."""
    model, _ = model_on(lab.systems["crossbar"])
    method = PhysicsAwareTraining(PatSettings(refine_every=400, refine_window=2))
    method.begin(model)
    for step in range(5):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    assert [len(records) for records in method.state_dict()["records"]] == [2]


def test_pat_refinement_resumes_from_its_state_as_if_never_stopped_even_twice(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    layer = model[0]
    settings = PatSettings(refine_every=2, refine_steps=3, refine_lr=0.05, refine_window=4)
    method = PhysicsAwareTraining(settings)
    method.begin(model)
    for step in range(3):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    saved = copy.deepcopy({"method": method.state_dict(), "model": model.state_dict(), "twin": twin.state_dict()})
    method.train_step(model, *batch(3), torch.optim.SGD(model.parameters(), lr=0.5))  # refines (4th step)
    uninterrupted = copy.deepcopy(twin.state_dict())

    model.load_state_dict(saved["model"])
    twin.load_state_dict(saved["twin"])
    layer.record = None
    resumed = PhysicsAwareTraining(settings)
    resumed.begin(model)  # as the orchestrator resumes: begin, then the method's state
    resumed.load_state_dict(saved["method"])
    assert resumed.steps == 3 and len(layer.record) == 3
    again = PhysicsAwareTraining(settings)  # stopped again before the next refinement: its state carries on
    again.begin(model)
    again.load_state_dict(copy.deepcopy(resumed.state_dict()))
    figures = again.train_step(model, *batch(3), torch.optim.SGD(model.parameters(), lr=0.5))
    assert "twin_refine_loss" in figures
    torch.testing.assert_close(twin.state_dict(), uninterrupted, rtol=0, atol=0)


def test_pat_state_loaded_into_a_method_that_refined_since_continues_as_the_saved_one_did(lab) -> None:
    """Rolling a method back to a state it saved (with the model and the twin): the refinement's Adam went on with the
    moments of the steps since, not the saved ones, and the twin ended elsewhere."""
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_steps=3, refine_lr=0.05))
    method.begin(model)
    for step in range(2):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    saved = copy.deepcopy({"method": method.state_dict(), "model": model.state_dict(), "twin": twin.state_dict()})
    for step in range(2, 4):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    continued = copy.deepcopy(twin.state_dict())
    model.load_state_dict(saved["model"])
    twin.load_state_dict(saved["twin"])
    method.load_state_dict(copy.deepcopy(saved["method"]))
    for step in range(2, 4):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    torch.testing.assert_close(twin.state_dict(), continued, rtol=0, atol=0)


def test_pat_refines_the_twin_its_layers_hold_now_not_one_they_held_before(lab) -> None:
    """A twin attached with `PhysicalLayer.set_twin` during training (fitted anew, say) is the one a refinement
    fits: the refinement's Adam, built on the first twin's parameters, went on stepping that twin, which no layer
    used any more, and left the new one as it came."""
    system = lab.systems["crossbar"]
    model, first = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_steps=2, refine_lr=0.05))
    method.begin(model)
    method.train_step(model, *batch(0), torch.optim.SGD(model.parameters(), lr=0.5))
    second = build_twin("physics", system)
    with torch.no_grad():
        second.affine.gain.fill_(0.7)  # unlike the device, as the first twin is
    model[0].set_twin(second)
    first_state, second_state = copy.deepcopy(first.state_dict()), copy.deepcopy(second.state_dict())
    figures = method.train_step(model, *batch(1), torch.optim.SGD(model.parameters(), lr=0.5))
    assert math.isfinite(figures["twin_refine_loss"])
    torch.testing.assert_close(first.state_dict(), first_state, rtol=0, atol=0)
    assert not torch.equal(second.affine.gain, second_state["affine.gain"])
    assert set(method.state_dict()["optimizers"]) == {"0"}


def test_pat_state_loaded_before_begin_keeps_its_device_calls_for_the_next_refinement(lab) -> None:
    """The state of a method restored, then begun on its network: the recorded device calls were set on the layers
    it did not know yet, that is dropped, and the next refinement fitted the twin on one batch, not the window."""
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    settings = PatSettings(refine_every=3, refine_steps=2, refine_lr=0.05)
    method = PhysicsAwareTraining(settings)
    method.begin(model)
    for step in range(2):
        method.train_step(model, *batch(step), torch.optim.SGD(model.parameters(), lr=0.5))
    saved = copy.deepcopy({"method": method.state_dict(), "model": model.state_dict(), "twin": twin.state_dict()})
    method.train_step(model, *batch(2), torch.optim.SGD(model.parameters(), lr=0.5))  # refines on three batches
    continued = copy.deepcopy(twin.state_dict())
    model.load_state_dict(saved["model"])
    twin.load_state_dict(saved["twin"])
    model[0].record = None
    restored = PhysicsAwareTraining(settings)
    restored.load_state_dict(copy.deepcopy(saved["method"]))
    assert [len(records) for records in restored.state_dict()["records"]] == [2]  # held until begin
    restored.begin(model)
    assert len(model[0].record) == 2
    restored.train_step(model, *batch(2), torch.optim.SGD(model.parameters(), lr=0.5))
    torch.testing.assert_close(twin.state_dict(), continued, rtol=0, atol=0)


def test_pat_programs_each_theta_once_through_steps_refinements_and_test_passes(lab) -> None:
    """Device time: a crossbar programming (write-verify of every device) costs far more than a read, so θ is written
    once per training batch (not again by a refinement, which uses the recorded calls), once for a test pass at the θ
    the last step left (however many device calls the pass makes), and not again by the next batch, which runs at
    that same θ."""
    system = lab.systems["crossbar"]
    model, _ = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_steps=2))
    method.begin(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    programmings, calls = system.programmings, system.calls
    for step in range(3):
        method.train_step(model, *batch(step), optimizer)
    assert (system.programmings - programmings, system.calls - calls) == (3, 3)
    model[0].mode = "device"  # a test pass after the epoch, in two device calls
    with torch.no_grad():
        model(torch.cat([batch(7)[0]] * 5))  # 80 rows: over the crossbar's max_batch of 64
    assert (system.programmings - programmings, system.calls - calls) == (4, 5)
    method.begin(model)
    method.train_step(model, *batch(3), optimizer)  # at the θ the test pass wrote
    assert (system.programmings - programmings, system.calls - calls) == (4, 6)
    method.train_step(model, *batch(4), optimizer)
    assert (system.programmings - programmings, system.calls - calls) == (5, 7)


def test_pat_refinement_on_a_single_recorded_row_keeps_the_twin_finite(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1))
    method.begin(model)
    x, labels = batch(0)
    figures = method.train_step(model, x[:1], labels[:1], torch.optim.SGD(model.parameters(), lr=0.1))
    assert all(value.isfinite().all() for value in twin.parameters())
    assert "twin_refine_loss" not in figures  # one row has no spread to scale errors by: nothing is refined yet
    figures = method.train_step(model, x[1:2], labels[1:2], torch.optim.SGD(model.parameters(), lr=0.1))
    assert all(value.isfinite().all() for value in twin.parameters()) and math.isfinite(figures["twin_refine_loss"])


def test_each_step_moves_theta_by_its_own_batchs_gradient_and_reports_that_batchs_figures(lab) -> None:
    """No gradient is carried over from the step before, and the figures are the batch's loss and accuracy."""
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = method_class("insilico")()
    method.begin(model)
    layer = model[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)  # small: θ stays inside its bounds, no clamp
    for step in range(2):
        x, labels = batch(step)
        before = layer.theta.detach().clone()
        theta = before.clone().requires_grad_()
        logits = twin(x, theta)
        nn.functional.cross_entropy(logits, labels).backward()
        figures = method.train_step(model, x, labels, optimizer)
        torch.testing.assert_close(layer.theta.detach(), before - 0.01 * theta.grad)
        assert (layer.theta.abs() < 1).all()
        assert figures["accuracy"] == pytest.approx((logits.argmax(dim=1) == labels).float().mean().item())
        assert figures["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def refinement_loss(twin: nn.Module, records: list) -> float:
    """The refinement's loss: per output, the squared error over that output's variance in the records; the mean
    over outputs, then over the records."""
    scale = torch.cat([y for _, _, y in records]).var(dim=0)
    with torch.no_grad():
        return sum(((twin(x, theta) - y).pow(2).mean(dim=0) / scale).mean().item()
                   for x, theta, y in records) / len(records)


def test_pat_refinement_loss_scales_each_output_by_its_own_spread_and_averages_the_records(lab) -> None:
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    with torch.no_grad():
        twin.affine.offset.copy_(torch.tensor([0.0, 0.05, 0.1, 0.2]))  # unlike the device by output
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_steps=1, refine_lr=1e-3))
    method.begin(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(2):  # one batch of 16 rows is refined on already; the second averages over two batches
        before = copy.deepcopy(twin)
        figures = method.train_step(model, *batch(step), optimizer)
        records = model[0].record
        assert len(records) == step + 1
        assert figures["twin_refine_loss"] == pytest.approx(refinement_loss(before, records), rel=1e-5)


def test_pat_refinement_scales_an_output_that_does_not_vary_as_an_average_one(lab) -> None:
    """A saturated or dead output, constant over the recorded calls, had its error divided by 1e-12: the refinement's
    loss was of order 1e10 and its steps followed that one output alone."""
    system = lab.systems["crossbar"]
    model, twin = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_steps=1, refine_lr=1e-3))
    method.begin(model)
    method.train_step(model, *batch(0), torch.optim.SGD(model.parameters(), lr=0.01))
    (x, theta, y), = model[0].record
    y = y.clone()
    y[:, 2] = 0.25
    model[0].record = [(x, theta, y)]
    before = copy.deepcopy(twin)
    variance = y.var(dim=0)
    scale = torch.cat([variance[:2], variance.mean().reshape(1), variance[3:]])
    with torch.no_grad():
        expected = ((before(x, theta) - y).pow(2).mean(dim=0) / scale).mean().item()
    assert method.refine() == pytest.approx(expected, rel=1e-5) and expected < 10


def test_a_twin_shared_by_two_layers_is_refined_once_on_the_device_calls_of_both(lab) -> None:
    """Layers on one system share its twin (the orchestrator attaches one twin to all): a refinement is
    ``refine_steps`` Adam steps of that twin on the records of every layer holding it, not one run of steps per layer,
    each with its own Adam state, the last layer's records fitted last."""
    system = lab.systems["crossbar"]
    twin = build_twin("physics", system)
    with torch.no_grad():
        twin.affine.gain.fill_(1.5)
    model = nn.Sequential(PhysicalLayer(system, twin, mode="device", seed=0), nn.Linear(4, 8), nn.Tanh(),
                          PhysicalLayer(system, twin, mode="device", seed=1))
    settings = PatSettings(refine_every=1, refine_steps=3, refine_lr=0.05)
    method = PhysicsAwareTraining(settings)
    method.begin(model)
    before = copy.deepcopy(twin)
    figures = method.train_step(model, *batch(0), torch.optim.SGD(model.parameters(), lr=0.01))
    records = model[0].record + model[3].record
    assert len(records) == 2
    expected = copy.deepcopy(before)
    optimizer = torch.optim.Adam(expected.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        scale = torch.cat([y for _, _, y in records]).var(dim=0)
        loss = sum(((expected(x, theta) - y).pow(2).mean(dim=0) / scale).mean() for x, theta, y in records) / 2
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(twin.state_dict(), expected.state_dict())
    assert figures["twin_refine_loss"] == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("refine_lr", [1e-320, 1e7])
def test_a_refinement_learning_rate_is_held_to_the_training_rates_bounds(refine_lr: float) -> None:
    """It had only to be above 0: 1e-320 rounds to nothing in float32; and 1e7 passes the ceiling of the others."""
    with pytest.raises(ValidationError, match="refine_lr"):
        PatSettings(refine_lr=refine_lr)


def test_a_refinement_that_diverges_stops_training_at_its_step_before_the_twin_gives_a_nan_forward_pass(lab) -> None:
    """A refinement learning rate far too high made the twin NaN silently: the next step's PAT output was NaN (the
    twin's bracket is NaN − NaN, not 0), and the run stopped a batch later blaming the model's learning rates; on
    an epoch's last batch the NaN twin was checkpointed first."""
    system = lab.systems["crossbar"]
    model, _ = model_on(system)
    method = PhysicsAwareTraining(PatSettings(refine_every=1, refine_lr=1e6))
    method.begin(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(HilError, match=r"^the twin's online refinement diverged at training step 1: its loss is nan; "
                                       r"start a new run with a lower method.settings.refine_lr$") as diverged:
        method.train_step(model, *batch(0), optimizer)
    copied = pickle.loads(pickle.dumps(diverged.value))  # as a worker process would pass it on (a TypeError before)
    assert type(copied) is type(diverged.value) and str(copied) == str(diverged.value)
    sane = PhysicsAwareTraining(PatSettings(refine_every=1, refine_lr=1e-3))
    model, _ = model_on(system)
    sane.begin(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):  # a refinement that converges goes on as before
        figures = sane.train_step(model, *batch(step), optimizer)
        assert math.isfinite(figures["twin_refine_loss"])


def test_pat_refuses_a_refinement_window_that_never_holds_two_rows() -> None:
    """One batch of one row through one layer is one measurement: refinement would be skipped at every step."""
    with pytest.raises(ConfigError, match="set refine_window to 2 or more") as caught:
        PhysicsAwareTraining(PatSettings(refine_every=1, refine_window=1)).check_training(1, 1)
    assert caught.value.field == "method.settings.refine_window"
    PhysicsAwareTraining(PatSettings(refine_every=1, refine_window=1)).check_training(2, 1)  # two rows a batch
    PhysicsAwareTraining(PatSettings(refine_every=1, refine_window=1)).check_training(1, 2)  # two layers
    PhysicsAwareTraining(PatSettings(refine_every=1, refine_window=2)).check_training(1, 1)  # two batches
    PhysicsAwareTraining(PatSettings.model_construct(refine_every=0, refine_window=1)).check_training(1, 1)  # none
    PhysicsAwareTraining(PatSettings(refine_every=1, refine_window=1)).check_training(1, 0)  # no twin to refine
