"""The report says what the run folder holds: where training ran, how a run ended, and that it was resumed."""

import datetime
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hil.cli import main
from hil.orchestrator import _warnings_logged
from hil.report import _confusion, _confusion_matrix, _learning_curves, _twin_fit, wilson_interval, write_report
from hil.store import RunFileError, RunStore, list_runs, resume_command

#: snapshot.json of a run on a simulated crossbar (the parts the report reads).
SIMULATED_CROSSBAR = {"instruments": {"xbar": {"name": "xbar", "world": {"kind": "memristor_crossbar"}}},
                      "systems": {"crossbar": {"instruments": {"crossbar": "xbar"}}}}


def _run(parent: Path, method: str = "pat", epochs: int = 2, finish: bool = True, **extra: dict) -> RunStore:
    """A run folder whose log holds ``epochs`` epochs of two batches, then an evaluation if ``finish``; ``extra``
    maps an event kind to its fields, logged after the epochs (before the evaluation)."""
    store = RunStore.create(parent, "r")
    store.write_json("snapshot.json", SIMULATED_CROSSBAR)
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


def _summary(store: RunStore) -> str:
    try:
        return write_report(store).read_text()
    finally:
        store.close()


def test_each_curve_has_one_colour_in_both_panels(tmp_path: Path) -> None:
    """The device's test curve is not blue on the right and orange on the left, where the train curve took blue."""
    store = _run(tmp_path)
    figure = _learning_curves(store.events())
    store.close()
    colours: dict[str, set] = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"train", "test, device", "test, twin", "final evaluation, device"}
    assert all(len(found) == 1 for found in colours.values()), colours
    assert colours["final evaluation, device"] == colours["test, device"]  # the same device, measured again
    assert len({next(iter(found)) for found in colours.values()}) == 3


def test_the_learning_curves_of_one_epoch_mark_it_as_a_whole_epoch(tmp_path: Path) -> None:
    """A run of one epoch had its axis ticked at epochs 0.945, 0.96, …, 1.05: whole epochs needed two in view."""
    store = _run(tmp_path, epochs=1)
    figure = _learning_curves(store.events())
    store.close()
    figure.canvas.draw()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        assert [tick for tick in axis.get_xticks() if low <= tick <= high] == [1.0]
    plt.close(figure)


@pytest.mark.parametrize(("method", "where"), [("pat", "forward on the device"),
                                               ("insilico", "forward through the twin")])
def test_the_learning_curves_say_where_the_training_batches_ran(tmp_path: Path, method: str, where: str) -> None:
    """In silico, the train loss is the twin's and the test loss the device's: a gap between them is the twin's
    mismatch, not overfitting, and the plot says so."""
    store = _run(tmp_path, method=method)
    events = store.events()
    store.close()
    figure = _learning_curves(events)
    assert where in figure.get_suptitle() and "mean over each epoch's training batches" in figure.get_suptitle()
    assert "test: the test set after each epoch" in figure.get_suptitle()
    untested = [e for e in events if e["kind"] != "epoch"]  # evaluation.every_epoch: false
    assert "after each epoch" not in _learning_curves(untested).get_suptitle()


def test_a_failed_run_says_it_failed_with_its_error_and_its_last_epoch(tmp_path: Path) -> None:
    error = "training diverged at epoch 3, batch 2: the model's parameters are no longer finite (NaN or infinite)"
    summary = _summary(_run(tmp_path, epochs=3, finish=False, run_failed={"error": error}))
    assert f"**The run failed before its evaluation**: {error}. The figures below are what it reached." in summary
    assert "After its last finished epoch (3) its test accuracy was 0.7 on the device and 0.6 through the twin." \
        in summary
    assert "| test accuracy on the device | n/a |" in summary  # no evaluation: not the last epoch's, unlabelled


def test_a_stopped_run_says_so_and_how_to_finish_it(tmp_path: Path) -> None:
    store = _run(tmp_path, finish=False, run_interrupted={"at_once": "SIGTERM"})
    path = store.path
    summary = _summary(store)
    assert (f"**The run was stopped before its evaluation** at once by SIGTERM, so the figures below are what it "
            f"reached; `hil run --resume {path}` finishes it. After its last finished epoch (2)") in summary


@pytest.mark.parametrize(("stop", "said"), [
    ({"at_once": "SIGHUP"}, "at once by SIGHUP"),
    ({"at_once": "a second Ctrl-C"}, "at once by a second Ctrl-C"),
    ({"completed": ["calibrate", "collect", "fit_twin", "fidelity"], "epoch": 2, "batch": 0},
     "at a Ctrl-C, after saving"),
])
def test_a_stopped_run_says_what_stopped_it_as_hil_run_did(tmp_path: Path, stop: dict, said: str) -> None:
    """hil run said "stopped at once by SIGHUP" (the terminal of an unattended run closed) or that a Ctrl-C stopped it
    after saving; the log recorded which, but the report read the next morning said only that the run was stopped."""
    summary = _summary(_run(tmp_path, finish=False, run_interrupted=stop))
    assert f"**The run was stopped before its evaluation** {said}, so the figures below" in summary


def test_a_run_stopped_after_its_evaluation_says_how_to_finish_it(tmp_path: Path) -> None:
    """A SIGTERM in the report step: hil run said how to resume the run, which hil runs lists as interrupted, but its
    report said only "The run was stopped.", as though nothing were left to do."""
    store = _run(tmp_path, finish=False, evaluated={"device_accuracy": 0.75},
                 step_finished={"step": "evaluate", "device_time_total_s": 2.0}, run_interrupted={"at_once": "SIGTERM"})
    path = store.path
    assert f" **The run was stopped** at once by SIGTERM; `hil run --resume {path}` finishes it. Its last event" in \
        _summary(store)


def test_a_run_that_did_not_finish_says_when_its_last_event_was_logged(tmp_path: Path) -> None:
    """A run that failed, was stopped or was killed in the night: its report said how it ended, but not when (an
    instrument that failed at 03:12, a machine rebooted at 05:40), which only the log's Unix times held."""
    endings = {"failed": {"run_failed": {"error": "smu: timeout"}},
               "stopped": {"run_interrupted": {"at_once": "SIGHUP"}}, "killed": {}}
    for name, ending in endings.items():
        store = _run(tmp_path / name, finish=False, **ending)
        logged = store.events()[-1]["time"]
        when = datetime.datetime.fromtimestamp(logged).strftime("%Y-%m-%d %H:%M:%S")
        assert f" Its last event was logged at {when}.\n" in _summary(store), name
    assert "last event was logged" not in _summary(_run(tmp_path / "finished"))


def test_a_resumed_run_says_it_was_resumed_and_where_the_discarded_events_are(tmp_path: Path) -> None:
    summary = _summary(_run(tmp_path, run_resumed={"epoch": 1, "discarded_events": 3}))
    assert ("It was resumed once from its last checkpoint; the 3 events that the stopped attempt logged after it are "
            "in `events.discarded.jsonl`, not here.") in summary
    assert "**The run" not in summary  # it finished


def test_a_run_that_went_straight_through_has_no_note(tmp_path: Path) -> None:
    summary = _summary(_run(tmp_path))
    assert "seed 0.\n" in summary and "resumed" not in summary and "refined" not in summary


def test_a_twin_refined_online_is_told_apart_from_the_fitted_twin_whose_fidelity_is_shown(tmp_path: Path) -> None:
    store = _run(tmp_path, finish=False)
    store.event("batch", epoch=2, batch=1, loss=0.3, accuracy=0.5, twin_refine_loss=0.01)
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4, twin_accuracy=0.7)
    summary = _summary(store)
    assert ("The twin was refined online during training: its fidelity above is the fitted twin's, before training; "
            "the test accuracy through the twin is the refined twin's.") in summary


def test_a_reused_twin_says_its_nmse_is_against_the_measurements_of_the_run_it_came_from(tmp_path: Path) -> None:
    """twin.from_run: the held-out NMSE is computed on the source run's stored data, whatever the device does
    today, so the report must not present it as measured in this run."""
    summary = _summary(_run(tmp_path, twin_loaded={"source": "runs/first"}))
    assert ("The twin and its data come from run `runs/first`, not measured in this run: the held-out NMSE and the "
            "noise floor above are against that run's measurements") in summary
    assert "come from run" not in _summary(_run(tmp_path / "other"))


@pytest.mark.parametrize(("repeats", "fidelity", "shown"), [
    (0, {"nmse_mean": 0.02, "noise_floor_mean": 0.0}, "n/a (the twin data hold no repeated measurements)"),
    (3, {"nmse_mean": 0.02, "noise_floor_mean": 0.0}, "0 |"),  # an ideal device: repeats agree exactly
    (0, None, "n/a |"),  # stopped before its fidelity step: no floor to explain
])
def test_a_noise_floor_without_repeats_is_not_shown_as_zero(tmp_path: Path, repeats: int, fidelity: dict | None,
                                                            shown: str) -> None:
    """With twin.collect.repeats 1 the fidelity step records a noise floor of 0, which reads as a noiseless device
    (collect then stores R × 0 groups of repeats)."""
    store = _run(tmp_path, **{"fidelity": fidelity} if fidelity else {})
    store.save_arrays("data/twin_data.h5", {"x": torch.zeros(2, 4, 3), "theta": torch.zeros(2, 5),
                                            "y": torch.zeros(2, 4, 6),
                                            "y_repeats": torch.zeros(repeats, 2 if repeats else 0, 4, 6)})
    assert f"| noise floor (NMSE of repeats) | {shown}" in _summary(store)


def test_the_summary_gives_the_final_evaluation_on_the_device(tmp_path: Path) -> None:
    summary = _summary(_run(tmp_path))
    assert "| test accuracy on the device | 0.75 (0.301–0.954) |" in summary
    assert "| test loss on the device | 0.4 |" in summary and "| test accuracy through the twin | n/a |" in summary
    assert "its 95 % Wilson interval over the 4 test samples" in summary


def test_a_test_set_of_one_sample_and_a_system_of_one_output_are_said_in_the_singular(tmp_path: Path) -> None:
    """A one-sample test set's summary read "over the 1 test samples", a one-output twin plot "1 outputs"."""
    store = _run(tmp_path, finish=False)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[1, 0], [0, 0]])})
    store.event("evaluated", device_accuracy=1.0, device_loss=0.1)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(2, 3, 1),
                                           "predicted": torch.rand(2, 3, 1)})
    figure = _twin_fit(store)
    assert figure.axes[0].get_xlabel() == "measured on the device (a colour per output, 1 output)"
    plt.close(figure)
    assert "its 95 % Wilson interval over the 1 test sample, the spread" in _summary(store)


@pytest.mark.parametrize(("accuracy", "samples", "expected"), [
    (0.75, 4, (0.3006, 0.9544)), (0.5, 100, (0.4038, 0.5962)),
    (0.0, 10, (0.0, 0.2775)), (1.0, 10, (0.7225, 1.0)),  # not empty at 0 or 1, as ±√(p(1−p)/n) would be
])
def test_an_accuracys_interval_is_the_wilson_score_interval(accuracy: float, samples: int, expected) -> None:
    """0.86 on the vowels' 57 test recordings is 0.75–0.93 by the test set's size alone, 0.94 on the digits' 359
    images 0.91–0.96: the summary gives the range, so that two runs are not told apart by less."""
    assert wilson_interval(accuracy, samples) == pytest.approx(expected, abs=1e-4)


def test_an_interval_at_an_accuracy_of_0_or_1_ends_at_0_or_1_exactly() -> None:
    """Unclamped, float rounding put the interval's end at -2.8e-17 for 0 of 10 (shown -0.000) and at 1.0000000000000002
    for 5 of 5."""
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(0.0, 1)[0] == 0.0
    assert wilson_interval(1.0, 5)[1] == 1.0 and wilson_interval(1.0, 18)[1] == 1.0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 10**6), st.integers(0, 10**6))
def test_an_interval_holds_its_accuracy_and_ends_at_0_or_1_exactly_there(samples: int, correct: int) -> None:
    """Clamped on its outer side only, it began at 2.8e-17 for 0 of 7 and ended at 0.9999999999999999 for 172 of 172:
    rounding left the accuracy outside its own interval."""
    accuracy = min(correct, samples) / samples
    low, high = wilson_interval(accuracy, samples)
    assert 0.0 <= low <= accuracy <= high <= 1.0
    assert (low == 0.0) == (accuracy == 0.0) and (high == 1.0) == (accuracy == 1.0)


def test_the_twins_test_accuracy_has_its_interval_too_and_an_accuracy_beyond_0_to_1_has_none(tmp_path: Path) -> None:
    """An accuracy outside 0..1 (a percentage, in an event not written by hil) has no Wilson interval: the square root
    of a negative number stopped the summary."""
    store = _run(tmp_path, finish=False)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])})
    store.event("evaluated", device_accuracy=75.0, device_loss=0.4, twin_accuracy=0.75)
    summary = _summary(store)
    assert "| test accuracy on the device | 75 |" in summary
    assert "| test accuracy through the twin | 0.75 (0.301–0.954) |" in summary


def test_a_summary_without_the_evaluation_file_gives_the_accuracy_without_a_range(tmp_path: Path) -> None:
    store = _run(tmp_path)
    (store.path / "data" / "evaluation.h5").unlink()
    summary = _summary(store)
    assert "| test accuracy on the device | 0.75 |" in summary and "Wilson" not in summary


def test_the_final_evaluation_is_told_apart_from_the_last_epochs_test_pass(tmp_path: Path) -> None:
    """The main job's summary gave 0.8969 on the device while the learning curve ended at 0.8886, with nothing to say
    that the final evaluation measures the test set again: a reader took one of them for a mistake."""
    store = _run(tmp_path)
    events = store.events()
    figure = _learning_curves(events)
    curves = {(axis.get_title(), line.get_label()): (list(line.get_xdata()), list(line.get_ydata()))
              for axis in figure.axes for line in axis.get_lines()}
    assert curves[("accuracy", "final evaluation, device")] == ([2], [0.75])
    assert curves[("loss", "final evaluation, device")] == ([2], [0.4])
    assert "final evaluation: the test set measured again after training" in figure.get_suptitle()
    summary = _summary(store)
    assert ("The final evaluation measured the test set on the device again after training; the pass after the last "
            "epoch (2), the learning curves' last point, gave 0.6: the two differ by the device's noise and drift."
            in summary)
    untested = [e for e in events if e["kind"] != "epoch"]  # evaluation.every_epoch: false: nothing to tell apart
    assert "final evaluation" in _learning_curves(untested).get_suptitle()


def test_a_final_evaluation_that_gave_the_last_epochs_figure_is_not_said_to_differ(tmp_path: Path) -> None:
    """The oscillator protocol measured 0.8596 both times; "the two differ" was then wrong."""
    store = _run(tmp_path, epochs=1, finish=False)
    store.event("evaluated", device_accuracy=0.5, device_loss=0.4)
    summary = _summary(store)
    assert "the learning curves' last point, gave the same: 0.5." in summary and "differ" not in summary


@pytest.mark.parametrize(("nmse", "said"), [(1.899, True), (1.0, True), (0.3894, False), (float("nan"), False)])
def test_a_twin_no_better_than_the_outputs_mean_is_said_to_be(tmp_path: Path, nmse: float, said: bool) -> None:
    """A neural twin of the optical bench fitted to an NMSE of 1.9 (worse than predicting each output's mean) gave
    PAT gradients of cosine 0.11, and the summary showed its figures without a word."""
    summary = _summary(_run(tmp_path, fidelity={"nmse_mean": nmse, "jacobian_cosine_theta": 0.111}))
    assert ("**The twin is no better than each output's mean**" in summary) == said
    if said:
        assert f"(held-out NMSE {nmse:.4g}, 1 or more)" in summary and "`twin.kind`" in summary


@pytest.mark.parametrize(("discarded", "said"), [
    ([1, 0], "It was resumed twice from its last checkpoint; the event that the stopped attempts logged after it is "
             "in"),
    ([2, 3, 0], "It was resumed 3 times from its last checkpoint; the 5 events that the stopped attempts logged after "
                "it are in"),
])
def test_a_run_resumed_more_than_once_counts_the_events_each_attempt_discarded(tmp_path: Path, discarded: list,
                                                                                said: str) -> None:
    store = _run(tmp_path, finish=False)
    for count in discarded:
        store.event("run_resumed", discarded_events=count)
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    assert said in _summary(store)


@pytest.mark.parametrize(("killed_after_its_rewind", "said"), [
    (False, "It was resumed twice from its last checkpoint; the 4 events that the stopped attempts logged after it are "
            "in"),
    (True, "It was resumed once from its last checkpoint; the 3 events that the stopped attempt logged after it are "
           "in"),
])
def test_a_resume_killed_before_its_next_checkpoint_is_counted_with_the_events_it_discarded(
        tmp_path: Path, killed_after_its_rewind: bool, said: str) -> None:
    """A resumed attempt killed before its next checkpoint has its run_resumed, which counted the events it moved
    aside, moved aside by the next resume: the summary said "resumed once" and named only the events of the last
    rewind (none at all where the attempt was killed before its run_resumed), not those in the discarded log."""
    store = _run(tmp_path, finish=False)
    assert store.rewind_events(5) == 3  # the first attempt, killed in its second epoch
    if not killed_after_its_rewind:
        store.event("run_resumed", discarded_events=3)  # a resume, killed before its next checkpoint
    store.rewind_events(5)
    store.event("run_resumed", discarded_events=0 if killed_after_its_rewind else 1)
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    assert said in _summary(store)


@pytest.mark.parametrize(("damage", "said"), [
    ("lines that are not events", "It was resumed once from its last checkpoint; the 5 events that the stopped "
                                  "attempt logged after it are in"),
    ("a folder", "It was resumed once from its last checkpoint; the 3 events that the stopped attempt logged after it "
                 "are in"),  # unreadable: the count its run_resumed gave
])
def test_a_discarded_log_with_lines_that_are_not_events_or_that_cannot_be_read_still_gives_the_summary(
        tmp_path: Path, damage: str, said: str) -> None:
    """Lines moved aside byte for byte may be anything (a torn line cut inside a character, a damaged one), and the
    discarded log may not be readable: the resumes are counted from what can be read."""
    store = _run(tmp_path, finish=False)
    discarded = store.path / "events.discarded.jsonl"
    if damage == "a folder":
        discarded.mkdir()
    else:
        assert store.rewind_events(5) == 3
        with discarded.open("ab") as handle:
            handle.write(b'[1, 2]\n{"seq": 9, "kind": "caf\xc3\n')
    store.event("run_resumed", discarded_events=3)
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    assert said in _summary(store)


def test_fidelity_data_of_one_dimension_are_refused_naming_their_shape(tmp_path: Path) -> None:
    """Measured and predicted are sets of output vectors: flat arrays are not what a run wrote."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(4),
                                           "predicted": torch.rand(4)})
    store.event("fidelity", nmse_mean=0.1)  # the file is drawn where the log has its event
    with pytest.raises(RunFileError, match=r"fidelity.h5: array 'measured' of shape \(4,\); the file is damaged"):
        _summary(store)


def test_a_run_that_failed_after_its_evaluation_says_so_without_calling_its_figures_partial(tmp_path: Path) -> None:
    summary = _summary(_run(tmp_path, finish=False, evaluated={"device_accuracy": 0.75},
                            run_failed={"error": "report/summary.md: cannot write"}))
    assert " **The run failed**: report/summary.md: cannot write. Its last event was logged at " in summary


def test_a_run_killed_in_its_report_step_is_said_to_be_unfinished_not_reported_as_a_finished_one(
        tmp_path: Path) -> None:
    """A run killed after its evaluation (kill -9, a reboot as it drew its plots): `hil runs` listed it as incomplete,
    but its report, written again with hil report, read as a finished run's, with no word that it had not finished
    nor how to finish it. The run's own report, written in that step, has no such note."""
    store = _run(tmp_path, finish=False, evaluated={"device_accuracy": 0.75},
                 step_finished={"step": "evaluate", "device_time_total_s": 2.0})
    try:
        assert "**The run" not in write_report(store, wall_s=3.0).read_text()  # as the run writes it, then finishes
        summary = write_report(store).read_text()
    finally:
        store.close()
    assert (f" **The run stopped after its evaluation, before it finished** (its last event: step_finished); `hil run "
            f"--resume {store.path}` finishes it.") in summary
    assert [run["status"] for run in list_runs(tmp_path)] == ["incomplete"]


@pytest.mark.parametrize("fitted", [
    {"validation_loss": [], "best_epoch": -1, "converged": True},  # an oracle twin: never fitted
    {"validation_loss": [0.5, 0.4], "best_epoch": 1},  # a log of an earlier hil, without converged
])
def test_a_twin_fit_that_neither_diverged_nor_ran_out_of_epochs_has_no_note(tmp_path: Path, fitted: dict) -> None:
    summary = _summary(_run(tmp_path, twin_fitted=fitted))
    assert "samples. The final evaluation" in summary and "twin fit" not in summary


def test_a_fit_that_kept_the_calibrated_start_is_not_said_to_have_diverged(tmp_path: Path) -> None:
    """A physics twin keeps its calibration unless an epoch beats it (best_epoch −1, finite losses): the report said
    its held-out error was not a number at any epoch."""
    fitted = {"validation_loss": [0.02, float("nan"), 0.03], "best_epoch": -1, "converged": True}
    summary = _summary(_run(tmp_path, twin_fitted=fitted))
    assert ("samples. None of the twin fit's 3 epochs beat the physics twin it started from on the held-out θ "
            "groups, so the run went on with that twin.") in summary and "diverged" not in summary


def test_the_learning_curves_leave_out_a_test_figure_that_is_not_a_number(tmp_path: Path) -> None:
    """A log edited by hand: an epoch's figure in text, or null."""
    store = _run(tmp_path, finish=False, epoch={"epoch": 2, "device_loss": None, "device_accuracy": "high"})
    events = store.events()
    store.close()
    figure = _learning_curves(events)
    curves = {(axis.get_title(), line.get_label()): list(line.get_ydata()) for axis in figure.axes
              for line in axis.get_lines()}
    assert curves[("accuracy", "test, device")] == [0.5, 0.6] and curves[("loss", "test, device")] == [0.5, 0.5]


_FIGURE = st.sampled_from([10**400, -(10**400), 1.7e308, -8e307, 10**308, math.nan, math.inf, None, "1", True]) \
    | st.floats(-1e3, 1e3) | st.integers(-3, 3)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["batch", "epoch", "evaluated"]), _FIGURE, _FIGURE), min_size=1, max_size=6))
def test_the_learning_curves_are_drawn_from_any_numbers_a_log_edited_by_hand_holds(events: list) -> None:
    """An integer beyond any float (10**400) stopped the plot with an OverflowError, and figures of ±8e307 or more
    with matplotlib's "arange: cannot compute length": `hil report` gave a traceback; they are left out as text is."""
    log = [{"seq": seq, "kind": kind, "epoch": epoch if kind != "evaluated" else None,
            **({"loss": figure} if kind == "batch" else {"device_loss": figure, "device_accuracy": figure})}
           for seq, (kind, epoch, figure) in enumerate(events, 1)]
    figure = _learning_curves(log)  # laid out as it is drawn (constrained), as the report saves it
    figure.savefig(io.BytesIO(), format="png", dpi=20)
    plt.close(figure)


def test_the_learning_curves_leave_out_a_train_loss_that_is_true_or_false(tmp_path: Path) -> None:
    store = _run(tmp_path, epochs=1, finish=False, batch={"epoch": 1, "batch": 1, "loss": True})
    events = store.events()
    store.close()
    [train] = [line for line in _learning_curves(events).axes[0].get_lines() if line.get_label() == "train"]
    assert list(train.get_xdata()) == [1]


def test_class_names_not_one_per_row_of_the_confusion_are_replaced_by_numbers(tmp_path: Path) -> None:
    store = _run(tmp_path, finish=False)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])}, {"class_names": ["a"]})
    axis = _confusion(*_confusion_matrix(store)).axes[0]
    store.close()
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0", "1"]


@settings(max_examples=8, deadline=None, derandomize=True)
@given(hnp.arrays(hnp.integer_dtypes() | hnp.floating_dtypes() | hnp.boolean_dtypes(),
                  st.integers(0, 3).map(lambda n: (n, n))))
def test_any_confusion_matrix_gives_the_report_or_an_error_naming_its_file(tmp_path_factory, confusion) -> None:
    """A matrix of what are not counts (negative, NaN, infinite: a damaged file or not this run's) stopped the report
    with a ValueError (the Wilson interval's square root of a negative count, int() of a NaN cell); one of no class
    is refused too."""
    store = _run(tmp_path_factory.mktemp("runs"), finish=False)
    store.save_arrays("data/evaluation.h5", {"confusion": confusion})
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    try:
        write_report(store)
    except RunFileError as error:
        if confusion.size == 0:  # no class: matplotlib warned of a singular axis, and drew an empty plot
            assert str(error).startswith(f"{store.path / 'data/evaluation.h5'}: the confusion matrix is (0, 0), not "
                                         "square with a class")
        else:
            assert str(error).startswith(f"{store.path / 'data/evaluation.h5'}: the confusion matrix holds what is "
                                         "not")
            assert confusion.dtype.kind == "f" or (confusion < 0).any()
    finally:
        store.close()


def test_the_confusion_plot_says_it_is_the_final_evaluation_of_the_test_set(tmp_path: Path) -> None:
    """Titled "confusion on the device", it did not say which split, nor which of the device's passes over it."""
    store = _run(tmp_path)
    title = _confusion(*_confusion_matrix(store)).axes[0].get_title()
    store.close()
    assert title == "test set on the device, final evaluation (accuracy 0.75)"


def test_a_confusion_of_many_classes_is_drawn_by_colour_with_some_classes_named() -> None:
    """An IDX set of labels up to 255 has 256 classes: the plot wrote 65 536 counts, unreadable (the cells were
    black with text) and a minute to draw."""
    confusion = np.zeros((256, 256))
    confusion[3, 3], confusion[255, 0] = 5, 1
    figures = [_confusion(matrix, [str(k) for k in range(len(matrix))])
               for matrix in (confusion, np.eye(20), np.eye(21))]
    axis = figures[0].axes[0]
    assert not axis.texts
    named = [label.get_text() for label in axis.get_xticklabels()]
    assert named[:2] == ["0", "22"] and len(named) == 12
    assert len(figures[1].axes[0].texts) == 400  # 20 classes: every count
    assert not figures[2].axes[0].texts
    for figure in figures:
        plt.close(figure)


def test_the_confusion_counts_on_dark_cells_are_white(tmp_path: Path) -> None:
    store = _run(tmp_path)
    colours = {text.get_text(): text.get_color() for text in _confusion(*_confusion_matrix(store)).axes[0].texts}
    store.close()
    assert colours == {"2": "white", "1": "black", "0": "black"}


@settings(max_examples=10, deadline=None, derandomize=True)
@given(*[hnp.arrays(np.float64, (3, 2), elements=st.floats() | st.sampled_from([1.7e308, -8e307]))] * 2)
def test_the_twin_fit_plot_is_drawn_from_any_fidelity_data_or_names_the_file(tmp_path_factory, measured: np.ndarray,
                                                                            predicted: np.ndarray) -> None:
    """Values of ±8e307 or more (a damaged file, or not this run's) stopped the plot with matplotlib's "arange: cannot
    compute length", a traceback from hil report rather than the file to move aside."""
    store = RunStore.create(tmp_path_factory.mktemp("runs"), "r")
    store.save_arrays("data/fidelity.h5", {"nmse": np.ones(2), "measured": measured, "predicted": predicted})
    try:
        figure = _twin_fit(store)
        figure.tight_layout()
        figure.savefig(io.BytesIO(), format="png", dpi=20)
        plt.close(figure)
    except RunFileError as error:
        assert str(error).startswith(f"{store.path / 'data/fidelity.h5'}: ") and "beyond 1e300" in str(error)
    finally:
        store.close()


def test_the_summary_shows_the_twin_fit_plot_of_a_run_that_measured_its_fidelity(tmp_path: Path) -> None:
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(2, 3, 2),
                                           "predicted": torch.rand(2, 3, 2)})
    store.event("fidelity", nmse_mean=0.1)
    assert "![twin_fit.png](twin_fit.png)" in _summary(store)


@pytest.mark.parametrize("nmse", [0.00043, 0.005741, 1.899])
def test_the_twin_fit_plot_gives_the_nmse_as_the_summary_does(tmp_path: Path, nmse: float) -> None:
    """The oscillator twin's 0.00043 was 0.0004 in the plot's title and 0.00043 in the summary: one figure, two
    values; a smaller one read as 0.0000."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([nmse], dtype=torch.float64),
                                           "measured": torch.rand(2, 3, 2), "predicted": torch.rand(2, 3, 2)})
    store.event("fidelity", nmse_mean=nmse)
    title = _twin_fit(store).axes[0].get_title()
    summary = _summary(store)
    shown = f"{nmse:.4g}"
    assert f"| twin held-out NMSE (mean over outputs) | {shown} |" in summary and f"NMSE {shown}" in title, title


def test_the_twin_fit_plot_says_what_its_colours_are(tmp_path: Path) -> None:
    """The optical twin's plot drew its 16 outputs in 10 colours, repeated, with no legend or word of what they were."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(2, 3, 16),
                                           "predicted": torch.rand(2, 3, 16)})
    axis = _twin_fit(store).axes[0]
    store.close()
    assert "a colour per output, 16 outputs" in axis.get_xlabel() and "held-out θ groups" in axis.get_title()


def test_a_failed_run_whose_epochs_were_not_evaluated_gives_no_last_epoch_accuracy(tmp_path: Path) -> None:
    """evaluation.every_epoch: false logs epochs without test figures."""
    summary = _summary(_run(tmp_path, epochs=0, finish=False, epoch={"epoch": 0, "device_time_s": 1.0},
                            run_failed={"error": "out of memory"}))
    assert "**The run failed before its evaluation**: out of memory." in summary and "After its last" not in summary


def test_writing_a_report_leaves_no_figure_open(tmp_path: Path) -> None:
    """pyplot keeps every figure it made until closed: reports written in one process would pile them up."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()  # other tests' figures, made outside a report
    _summary(_run(tmp_path))
    assert plt.get_fignums() == before


def test_importing_hil_report_and_writing_a_report_leave_matplotlib_s_backend_as_chosen(tmp_path: Path) -> None:
    """hil.report switched matplotlib to Agg as it was imported (by a run's report step, or by hil report): after a run
    from a notebook or a script, its own figures no longer showed (plt.show() warned that Agg cannot show them)."""
    store = _run(tmp_path)
    store.close()
    code = ("import matplotlib; matplotlib.use('svg'); from hil.report import write_report; "
            "from hil.store import RunStore; store = RunStore.open(__import__('sys').argv[1]); write_report(store); "
            "store.close(); print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"
    assert (store.path / "report/learning_curves.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("ending", "said"), [
    ({"kind": "run_failed", "error": "smu (TCPIP::127.0.0.1::5025::SOCKET): the instrument closed the connection"},
     "**The run failed before its evaluation**: smu (TCPIP::127.0.0.1::5025::SOCKET): the instrument closed the "
     "connection; then going to the safe state failed: smu: no reply to ':OUTP OFF'."),
    ({"kind": "run_interrupted", "at_once": "SIGTERM"},
     "**The run was stopped before its evaluation** at once by SIGTERM; then going to the safe state failed: smu: no "
     "reply to ':OUTP OFF'."),
])
def test_a_run_whose_safe_state_failed_too_says_what_ended_it_first(tmp_path: Path, ending: dict, said: str) -> None:
    """The log ends with the failed safe state after what ended the run; the report showed only the safe state."""
    store = _run(tmp_path, finish=False)
    store.event(ending["kind"], **{key: value for key, value in ending.items() if key != "kind"})
    store.event("run_failed", error="going to the safe state failed: smu: no reply to ':OUTP OFF'")
    assert said in _summary(store)


LOST = "smu (TCPIP::127.0.0.1::5025::SOCKET): the instrument closed the connection"
REFUSED = "smu (TCPIP::127.0.0.1::5025::SOCKET): connection failed during 'open' ([Errno 111] Connection refused)"


@pytest.mark.parametrize(("before", "said"), [
    ([{"kind": "run_failed", "step": "train", "error": LOST}],
     f"The attempt before it failed in its train step: {LOST}."),
    ([{"kind": "run_failed", "step": "train", "error": LOST},
      {"kind": "run_failed", "error": "going to the safe state failed: smu: no reply to ':OUTP OFF'"}],
     f"The attempt before it failed in its train step: {LOST}; then going to the safe state failed: smu: no reply to "
     "':OUTP OFF'."),
    ([{"kind": "run_interrupted", "at_once": "SIGTERM"}], "The attempt before it was stopped at once by SIGTERM."),
])
def test_a_resume_that_failed_before_it_rewound_the_log_is_said_as_an_attempt_of_its_own(
        tmp_path: Path, before: list[dict], said: str) -> None:
    """A resume that failed as its instruments connected (hil rewound the log only after they were) appended its
    run_failed to the ending of the attempt before: the report joined the two errors with "; then", as one attempt's
    failure followed by a failed safe state, and hil runs listed the run as failed in the step of the attempt before."""
    store = _run(tmp_path, finish=False)
    for ending in before:
        store.event(ending["kind"], **{key: value for key, value in ending.items() if key != "kind"})
    store.event("run_failed", error=REFUSED, resume_once="the instrument is back")
    assert [run["status"] for run in list_runs(tmp_path)] == ["failed"]
    summary = _summary(store)
    assert f"**The run failed before its evaluation**: {REFUSED}. The figures below are what it reached. Once the " \
           "instrument is back, `hil run --resume" in summary
    assert f"continues it from its last checkpoint. {said} After its last finished epoch" in summary


@pytest.mark.parametrize("moved", [1, 3])
def test_a_run_whose_resume_failed_before_it_restored_the_run_says_where_the_attempt_before_is(
        tmp_path: Path, moved: int) -> None:
    """A resume rewinds the log before its instruments connect: one that failed to connect (the instrument still off)
    leaves its failure alone in the log, and the report said nothing of the attempt before it (its failure in its
    train step), whose events the resume moved to events.discarded.jsonl: only a run_resumed event made it say so."""
    store = _run(tmp_path, finish=False, run_failed={"error": REFUSED, "resume_once": "the instrument is back"})
    before = [{"seq": 12 + index, "time": 0.0, "kind": "batch", "epoch": 2, "batch": index + 1, "loss": 0.3,
               "accuracy": 0.5} for index in range(moved - 1)]
    before.append({"seq": 11 + moved, "time": 0.0, "kind": "run_failed", "step": "train", "error": LOST})
    (store.path / "events.discarded.jsonl").write_text("".join(json.dumps(event) + "\n" for event in before))
    logged = f"the {moved} events" if moved > 1 else "the event"
    assert (f"A resume moved {logged} of the attempt before it out of this log, to `events.discarded.jsonl`. Its last "
            "event was logged at") in _summary(store)


@pytest.mark.parametrize("count", [1, 2])
def test_the_summary_counts_the_warnings_a_run_logged_and_quotes_the_first(tmp_path: Path, count: int) -> None:
    """One warning is "1 warning", not "1 warnings"; of several, the one quoted is the first (the capture repeated
    first), as the sentence says, not the last."""
    messages = [f"camera: frame(s) dropped after frame index {index} (next index {index + 2}); showing the 64 "
                "patterns again (try 2 of 3)" for index in (7, 91)][:count]
    store = _run(tmp_path, finish=False)
    for message in messages:
        store.event("warning", category="DeviceWarning", message=message)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])})
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    store.event("run_finished", wall_s=1.0)
    summary = _summary(store)
    noun = "warning" if count == 1 else "warnings"
    assert f" {count} {noun} during the run (each in `events.jsonl`), the first: {messages[0]}." in summary
    assert "index 91" not in summary


def test_a_run_without_warnings_says_nothing_of_them(tmp_path: Path) -> None:
    assert "warning" not in _summary(_run(tmp_path))


def test_the_command_that_finishes_a_run_in_a_folder_with_a_space_is_quoted_for_the_shell(tmp_path: Path) -> None:
    store = _run(tmp_path / "my runs", finish=False, run_interrupted={"at_once": "SIGTERM"})
    path = store.path
    assert f"`hil run --resume '{path}'` finishes it" in _summary(store)


_TEXT = st.text(st.characters(codec="utf-8") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(folder=st.binary(min_size=1, max_size=3).filter(lambda name: b"/" not in name and b"\0" not in name
                                                        and name not in (b".", b"..")),
       protocol=_TEXT, message=_TEXT)
def test_the_summary_of_a_run_with_any_text_in_its_folders_name_or_events_is_written_in_utf8(
        tmp_path_factory, folder: bytes, protocol: str, message: str) -> None:
    """A folder named in another encoding (Latin-1's b"caf\\xe9") is read by Python with a lone surrogate, and so is
    text from such a name in an event: the summary's encoding refused it (UnicodeEncodeError), after the plots, so a
    stopped run in that folder had no summary and `hil report` a traceback; the character is written as its escape."""
    store = RunStore.create(tmp_path_factory.mktemp("runs") / os.fsdecode(folder), "r")
    store.event("run_started", protocol=protocol, method="pat", system="crossbar", seed=0)
    store.event("warning", category="DeviceWarning", message=message)
    store.event("run_interrupted", at_once="SIGTERM")
    summary = write_report(store).read_bytes().decode("utf-8")
    store.close()
    for said in (f"# {protocol}\n", f"`{resume_command(store.path)}` finishes it"):
        assert said.encode("utf-8", "backslashreplace").decode("utf-8") in summary


def test_a_data_file_that_is_not_hdf5_says_the_report_is_written_without_it_once_moved_aside(tmp_path: Path) -> None:
    """It said "or start a new run", which a report never needs: the run is reported once the file is moved aside."""
    store = _run(tmp_path)
    (store.path / "data/evaluation.h5").write_bytes(b"not HDF5")
    with pytest.raises(RunFileError, match=r"evaluation.h5: HDF5 data unreadable \(.*\); the file is missing or "
                                           r"damaged: restore it from a backup, or move it aside to report without "
                                           r"its plot$"):
        write_report(store)
    (store.path / "data/evaluation.h5").rename(store.path / "evaluation.h5.damaged")
    assert "confusion.png" not in _summary(store)


def test_a_log_damaged_before_its_end_is_reported_from_its_other_events_naming_the_lines_left_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hil runs lists such a run from the events it can read; its report is written from the same events, and says,
    with the report and in it, which lines of the log it left out; the log stays as it was, to be repaired."""
    store = _run(tmp_path)
    store.close()
    log = store.path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2], lines[5] = lines[2][:20] + b"\n", b"\xff\xfe\n"  # the second batch of each epoch
    log.write_bytes(b"".join(lines))
    original = log.read_bytes()
    assert main(["report", str(store.path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"hil: warning: {log}: lines 3 and 6 are damaged (not JSON events) and left out of the "
                            "report; repair them by hand, then hil report again to include them\n")
    assert captured.out == f"{store.path / 'report' / 'summary.md'}\n"
    summary = (store.path / "report" / "summary.md").read_text()
    assert "| test accuracy on the device | 0.75 (0.301–0.954) |" in summary
    assert ("**Lines 3 and 6 of `events.jsonl` are damaged** (not JSON events): this report leaves them out, and a "
            "resume refuses the log until they are repaired.") in summary
    assert log.read_bytes() == original
    [run] = list_runs(tmp_path)
    assert run["status"] == "damaged log" and run["events"] == len(lines) - 2


def test_a_damaged_log_of_a_stopped_run_says_a_resume_finishes_it_once_the_log_is_repaired(tmp_path: Path) -> None:
    """The summary said a resume finishes the run, and in the next sentence that a resume refuses the log."""
    store = _run(tmp_path, finish=False, run_interrupted={"at_once": "SIGTERM"})
    log = store.path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = b"\xff\xfe\n"
    log.write_bytes(b"".join(lines))
    with pytest.warns(UserWarning, match="line 3 is damaged"):
        summary = _summary(store)
    assert f"; once the log is repaired, `{resume_command(store.path)}` finishes it." in summary
    assert "a resume refuses the log until it is repaired." in summary


def test_a_warning_logged_while_the_report_draws_its_plots_is_counted_in_its_summary(tmp_path: Path) -> None:
    """In a run's report step, a warning (class names too long for the confusion plot's margins) is logged as the
    plots are drawn: the summary, written after them, counts it with the run's other warnings."""
    store = _run(tmp_path, finish=False, warning={"category": "UserWarning", "message": "3 frames dropped."})
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])},
                      {"class_names": ["a" * 400, "b" * 400]})
    store.event("evaluated", device_accuracy=0.75, device_loss=0.4)
    with pytest.warns(UserWarning, match="^Tight layout not applied"), _warnings_logged(store):
        summary = _summary(store)
    assert " 2 warnings during the run (each in `events.jsonl`), the first: 3 frames dropped.\n" in summary  # one stop


def test_the_train_curve_leaves_an_epoch_the_run_stopped_in_to_a_point_of_its_own(tmp_path: Path) -> None:
    """A run stopped 1 batch into its third epoch had that batch's loss drawn as epoch 3 of the train curve, "the mean
    over each epoch's training batches", where its summary said the last finished epoch was 2."""
    store = _run(tmp_path, finish=False, batch={"epoch": 2, "batch": 1, "loss": 0.125},
                 run_interrupted={"epoch": 2, "batch": 1})
    events = store.events()
    store.close()
    lines = {line.get_label(): line for line in _learning_curves(events).axes[0].get_lines()}
    assert list(lines["train"].get_xdata()) == [1, 2] and list(lines["train"].get_ydata()) == [1.0, 0.5]
    unfinished = lines["train, epoch 3 unfinished (1 batch)"]
    assert list(unfinished.get_xdata()) == [3] and list(unfinished.get_ydata()) == [0.125]
    assert unfinished.get_markerfacecolor() == "none" and unfinished.get_linestyle() == "None"
    plt.close("all")


def test_a_finished_epoch_whose_event_is_a_damaged_line_is_not_drawn_as_unfinished(tmp_path: Path) -> None:
    """A finished run whose epoch event was a damaged line had that epoch's train loss drawn as "epoch 2 unfinished
    (2 batches)": the next epoch's batches, or the train step's end, follow it only once it finished."""
    store = _run(tmp_path, epochs=3, step_finished={"step": "train", "device_time_total_s": 1.0})
    log = store.path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    for epoch in (1, 2):  # one in the middle, and the last, followed by the train step's end
        index = next(i for i, line in enumerate(lines)
                     if b'"kind": "epoch"' in line and b'"epoch": %d,' % epoch in line)
        lines[index] = b'{"seq": %d, "kind": "epo\n' % (index + 1)
    log.write_bytes(b"".join(lines))
    events, damaged = store.readable_events()
    store.close()
    assert len(damaged) == 2
    lines = {line.get_label(): line for line in _learning_curves(events).axes[0].get_lines()}
    assert not [label for label in lines if "unfinished" in label]
    assert list(lines["train"].get_xdata()) == [1, 2, 3]
    plt.close("all")


def test_a_run_that_stopped_before_calibrating_is_not_said_to_need_no_calibration(tmp_path: Path) -> None:
    """A run whose instrument could not be connected, its log one run_failed, said "Calibration: none needed.", as a
    system with nothing to calibrate does; it never reached its calibrate step."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_failed", error="crossbar: no answer; check its cable and power")
    summary = _summary(store)
    assert "Calibration: n/a (not reached)." in summary and "none needed" not in summary
    store = RunStore.create(tmp_path, "calibrated")
    store.event("calibrated", system="crossbar", settings={})
    assert "Calibration: none needed." in _summary(store)


def test_a_run_that_failed_before_its_start_was_logged_is_named_from_its_protocol_file(tmp_path: Path) -> None:
    """Its summary was titled with the folder's name and said "method **?** on system **?**, seed ?", while its
    protocol.yaml holds them, and hil runs lists it by the name there."""
    store = RunStore.create(tmp_path, "r")
    store.write_text("protocol.yaml", "name: cb-unplugged\nsystem: crossbar\nseed: 7\nmethod: {name: pat}\n")
    store.event("run_failed", error="crossbar: no answer; check its cable and power")
    summary = _summary(store)
    assert summary.startswith("# cb-unplugged\n") and "method **pat** on system **crossbar**, seed 7." in summary
    assert [run["protocol"] for run in list_runs(tmp_path)] == ["cb-unplugged"]
    store = RunStore.create(tmp_path, "lost")  # and where that file is lost too, unknown as before
    store.event("run_failed", error="crossbar: no answer; check its cable and power")
    assert "method **?** on system **?**, seed ?." in _summary(store)


def test_a_final_evaluation_saved_but_not_logged_is_left_out_not_drawn_beside_n_a(tmp_path: Path) -> None:
    """A run stopped between saving data/evaluation.h5 and logging its evaluated event: the summary said it stopped
    before its evaluation, with n/a for the test accuracy, and linked a confusion plot titled "final evaluation
    (accuracy 0.75)" and a sentence on the range of an accuracy it did not give."""
    store = _run(tmp_path, finish=False)
    store.save_arrays("data/evaluation.h5", {"confusion": torch.tensor([[2, 1], [0, 1]])})
    summary = _summary(store)
    assert "**The run stopped before its evaluation**" in summary and "| test accuracy on the device | n/a |" in summary
    assert "confusion.png" not in summary and "Wilson" not in summary
    assert ("`data/evaluation.h5` holds a final evaluation that `events.jsonl` does not log (the run stopped between "
            "the two): this report leaves it out") in summary


def test_a_twin_fidelity_saved_but_not_logged_is_left_out_not_drawn_beside_n_a(tmp_path: Path) -> None:
    """A run stopped between saving data/fidelity.h5 and logging its fidelity event (its resume measures the twin
    again) had twin_fit.png drawn, titled with an NMSE, beside a summary whose twin held-out NMSE was n/a."""
    store = _run(tmp_path, epochs=0, finish=False)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(2, 3, 1),
                                           "predicted": torch.rand(2, 3, 1), "noise_floor": torch.tensor([0.01])})
    summary = _summary(store)
    assert "| twin held-out NMSE (mean over outputs) | n/a |" in summary and "twin_fit.png" not in summary
    assert ("`data/fidelity.h5` holds a twin fidelity that `events.jsonl` does not log (the run stopped between the "
            "two): this report leaves it out, as a resume does, which measures the twin on its held-out θ groups "
            "again.") in summary


def test_the_summary_names_the_thread_count_and_the_commit_of_hil_the_run_started_under(tmp_path: Path) -> None:
    """The thread count changes a run's figures (the README says by how much) and hil's version stays the same from
    commit to commit: the summary said neither, though the run's log records both."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for recorded, said in [(commit, "hil 0.1.0 (0123456789ab)"),
                           (f"{commit}+modified.5f2e", "hil 0.1.0 (0123456789ab, modified)"),
                           ("not a git checkout", "hil 0.1.0 (not a git checkout)")]:
        store = RunStore.create(tmp_path, "r")
        versions = {"python": "3.11.9", "hil": "0.1.0", "torch": "2.13.0+cpu", "hil_commit": recorded}
        store.event("run_started", protocol="r", method="pat", system="crossbar", seed=0, torch_threads=2,
                    versions=versions)
        assert f"seed 0; torch 2.13.0+cpu (2 threads), {said}, Python 3.11.9." in _summary(store)


def test_the_summary_names_the_versions_the_run_started_under(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r")
    versions = {"python": "3.11.9", "hil": "0.1.0", "torch": "2.13.0+cpu", "numpy": "2.1.0", "h5py": "3.12.1"}
    store.event("run_started", protocol="r", method="pat", system="crossbar", seed=0, versions=versions)
    assert "method **pat** on system **crossbar**, seed 0; torch 2.13.0+cpu, hil 0.1.0, Python 3.11.9." in \
        _summary(store)
    assert "on system **crossbar**, seed 0.\n" in _summary(_run(tmp_path))  # a run of an earlier hil: none said
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="r", method="pat", system="crossbar", seed=0, versions={"numpy": "2.1.0"})
    assert "on system **crossbar**, seed 0. **The run stopped" in _summary(store)  # none of the three it names


def test_a_run_stopped_before_its_evaluation_gives_the_device_time_its_log_holds(tmp_path: Path) -> None:
    """Its device time read n/a, where the log holds it at each step's end and each epoch's: the hardware time a
    stopped or failed run used, which its resume adds to."""
    store = _run(tmp_path, epochs=0, finish=False, step_finished={"step": "fidelity", "device_time_total_s": 2.5})
    assert "| device time (modelled on a simulator), s | 2.5 (by the end of its fidelity step, the last it logged) |" \
        in _summary(store)
    store = _run(tmp_path, epochs=0, finish=False, step_finished={"step": "fidelity", "device_time_total_s": 2.5},
                 epoch={"epoch": 0, "device_time_s": 4.4375, "device_accuracy": 0.5},
                 run_interrupted={"epoch": 1, "batch": 3})
    assert "| device time (modelled on a simulator), s | 4.438 (by the end of epoch 1, the last it logged) |" \
        in _summary(store)
    assert "| device time (modelled on a simulator), s | n/a |" in _summary(_run(tmp_path, epochs=0, finish=False))


def test_the_device_time_is_said_to_be_measured_on_a_bench_and_modelled_on_a_simulator(tmp_path: Path) -> None:
    """A bench run's device time is the wall time of its device calls, not a simulator's model of it."""
    assert "| device time (modelled on a simulator), s | n/a |" in _summary(_run(tmp_path))
    bench = {"instruments": {"xbar": {"name": "xbar", "class": "acme_hil.Crossbar"}},
             "systems": {"crossbar": {"instruments": {"crossbar": "xbar"}}}}
    store = _run(tmp_path)
    store.write_json("snapshot.json", bench)
    assert "| device time (measured: the wall time of its device calls), s | n/a |" in _summary(store)
    store = _run(tmp_path)
    (store.path / "snapshot.json").unlink()  # a run stopped before writing it: neither said
    assert "| device time, s | n/a |" in _summary(store)


def test_a_final_evaluation_whose_event_is_a_damaged_line_is_not_said_to_be_unlogged_by_a_stop(tmp_path: Path) -> None:
    store = _run(tmp_path)
    log = store.path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b'"evaluated"' in line)
    log.write_bytes(b"".join([*lines[:index], b'{"seq": 99, "kind": "evaluat\n', *lines[index + 1:]]))
    with pytest.warns(UserWarning, match="damaged"):
        summary = _summary(store)
    assert ("`data/evaluation.h5` holds a final evaluation that the readable lines of `events.jsonl` do not log (its "
            "event may be a damaged line): this report leaves it out.") in summary and "stopped between" not in summary


def test_a_calibration_whose_event_is_a_damaged_line_is_not_said_to_be_unreached(tmp_path: Path) -> None:
    store = _run(tmp_path, calibrated={"system": "optical", "settings": {"exposure_s": 0.002}})
    log = store.path / "events.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"kind": "calibrated"', b'"kind": "calibrat'))
    with pytest.warns(UserWarning, match="damaged"):
        summary = _summary(store)
    assert "Calibration: n/a." in summary


def test_the_final_evaluation_does_not_hide_the_last_epochs_test_points(tmp_path: Path) -> None:
    """After one epoch the star of the final evaluation, drawn last and largest, covered the device's and the twin's
    test points at the same place: the plot showed the star alone."""
    store = _run(tmp_path, epochs=1)
    figure = _learning_curves(store.events())
    store.close()
    for axis in figure.axes:
        lines = {line.get_label(): line for line in axis.get_lines()}
        star = lines.pop("final evaluation, device")
        assert all(star.get_zorder() < line.get_zorder() for line in lines.values()), axis.get_title()
    plt.close(figure)


@pytest.mark.parametrize(("last", "scale"), [(0.05, "log"), (0.2, "linear")])
def test_a_loss_that_falls_by_decades_is_drawn_on_a_log_scale(tmp_path: Path, last: float, scale: str) -> None:
    """A long run's train loss, 1.2 to 0.002, lay flat on the axis at 0 for all but its first epochs."""
    store = RunStore.create(tmp_path, "r")
    for epoch, loss in enumerate((1.0, 0.5, last)):
        store.event("batch", epoch=epoch, batch=1, loss=loss, accuracy=0.5)
        store.event("epoch", epoch=epoch, device_loss=0.5, device_accuracy=0.5)
    figure = _learning_curves(store.events())
    store.close()
    assert figure.axes[0].get_yscale() == scale
    figure.canvas.draw()
    low, high = figure.axes[0].get_ylim()
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels() if low <= label.get_position()[1] <= high]
    assert len(labels) >= 3 and all(label and "10^" not in label for label in labels), labels  # plain numbers
    assert figure.axes[1].get_yscale() == "linear"  # accuracy: 0 to 1
    plt.close(figure)


def test_the_learning_curves_legend_hides_no_point(tmp_path: Path) -> None:
    """A run stopped after 109 epochs had its loss legend drawn over the train curve: no corner of the panel was
    free. The legend is the figure's, below the panels, each curve named once."""
    store = _run(tmp_path, epochs=40)
    figure = _learning_curves(store.events())
    store.close()
    figure.canvas.draw()
    [legend] = figure.legends
    box = legend.get_window_extent()
    assert not any(box.overlaps(axis.get_window_extent()) for axis in figure.axes)
    assert all(axis.get_legend() is None for axis in figure.axes)
    labels = [text.get_text() for text in legend.get_texts()]
    assert sorted(labels) == sorted({"train", "test, device", "test, twin", "final evaluation, device"}), labels
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= figure.bbox.x1  # within the figure, not clipped
    plt.close(figure)


def test_a_long_runs_curves_mark_some_epochs_the_device_and_twin_apart(tmp_path: Path) -> None:
    """A run stopped after 109 epochs drew a marker at each: the device's squares and the twin's triangles, at nearly
    the same accuracies, merged into one band, the twin's on top hiding the device's."""
    store = _run(tmp_path, epochs=100, finish=False)
    figure = _learning_curves(store.events())
    store.close()
    for axis in figure.axes:
        marked = {}
        for line in axis.get_lines():
            start, step = line.get_markevery() or (0, 1)
            marked[line.get_label()] = set(range(start, len(line.get_xdata()), step))
        assert all(0 < len(points) <= 25 for points in marked.values()), {k: len(v) for k, v in marked.items()}
        assert not marked["test, device"] & marked["test, twin"]
    (tmp_path / "short").mkdir()
    short = _learning_curves(_run(tmp_path / "short", epochs=3).events())
    assert all(line.get_markevery() is None for axis in short.axes for line in axis.get_lines())
    plt.close(figure)
    plt.close(short)


def test_the_twin_fit_plot_gives_each_output_its_own_colour(tmp_path: Path) -> None:
    """Its 32 outputs (the crossbar's) were drawn in matplotlib's 10 colours, repeated, under "a colour per output",
    and in order, the last outputs' points over all of the first's: each output has a colour of a colour map, named
    on its colour bar."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.full((32,), 0.1), "measured": torch.rand(2, 3, 32),
                                           "predicted": torch.rand(2, 3, 32)})
    figure = _twin_fit(store)
    store.close()
    [points] = figure.axes[0].collections
    colours = {tuple(colour) for colour in points.to_rgba(points.get_array())}
    assert len(colours) == 32 and "a colour per output, 32 outputs" in figure.axes[0].get_xlabel()
    assert points.colorbar.ax.get_ylabel() == "output"
    drawn = np.asarray(points.get_array())
    assert sorted(drawn) == sorted(np.tile(np.arange(32), 6)) and list(drawn) != sorted(drawn)  # shuffled
    plt.close(figure)


def test_the_twin_fit_plot_shows_each_outputs_error_against_its_noise_floor(tmp_path: Path) -> None:
    """The oscillator twin's NMSE, 0.0004, is 14 times its noise floor, 0.00003, and the plot showed neither the
    floor nor the gap: its points lay on the diagonal. A panel gives each output's NMSE beside its floor, on a log
    scale where they span decades, its legend beside it, where it hides no point."""
    store = _run(tmp_path)
    nmse, floor = [3e-4, 2.6e-5, 8e-4], [4e-5, 2.6e-6, 1.4e-4]
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor(nmse), "noise_floor": torch.tensor(floor),
                                           "measured": torch.rand(2, 3, 3), "predicted": torch.rand(2, 3, 3)})
    figure = _twin_fit(store)
    store.close()
    axis = figure.axes[1]
    lines = {line.get_label(): list(line.get_ydata()) for line in axis.get_lines()}
    assert np.allclose(lines["twin, held out"], nmse) and np.allclose(lines["noise floor:\nrepeated\nmeasurements"],
                                                                        floor)
    assert axis.get_yscale() == "log" and axis.get_xlabel() == "output" and "NMSE" in axis.get_ylabel()
    figure.canvas.draw()
    low, high = axis.get_ylim()
    labels = [label.get_text() for label in axis.get_yticklabels() if low <= label.get_position()[1] <= high]
    assert len(labels) >= 3 and all(label and "10^" not in label for label in labels), labels  # plain numbers
    figure.tight_layout()
    figure.canvas.draw()
    assert not axis.get_legend().get_window_extent().overlaps(axis.get_window_extent())
    assert axis.get_legend().get_window_extent().x1 <= figure.bbox.x1  # not clipped
    plt.close(figure)


def test_the_twin_fit_plot_gives_no_noise_floor_without_repeats(tmp_path: Path) -> None:
    """Without repeated measurements the fidelity step records a floor of 0, which is no figure (the summary's n/a)."""
    store = _run(tmp_path)
    store.save_arrays("data/twin_data.h5", {"y_repeats": torch.zeros(0, 0, 3, 2)})
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1, 0.2]), "noise_floor": torch.zeros(2),
                                           "measured": torch.rand(2, 3, 2), "predicted": torch.rand(2, 3, 2)})
    figure = _twin_fit(store)
    store.close()
    assert [line.get_label() for line in figure.axes[1].get_lines()] == ["twin, held out"]
    assert "noise floor unknown" in figure.axes[1].get_title()
    plt.close(figure)


def test_the_confusion_matrix_says_what_its_axes_and_colours_are(tmp_path: Path) -> None:
    """Its colour bar had no label: 0 to 47 of what? Its axes read "true" and "predicted": of what?"""
    store = _run(tmp_path)
    figure = _confusion(*_confusion_matrix(store))
    store.close()
    [image] = figure.axes[0].images
    assert image.colorbar.ax.get_ylabel() == "test samples"
    assert (figure.axes[0].get_xlabel(), figure.axes[0].get_ylabel()) == ("predicted class", "true class")
    plt.close(figure)


@pytest.mark.parametrize(("best", "kept"), [(-1, False), (3, True)])
def test_the_twin_fit_plot_says_when_its_twin_is_the_unfitted_one(tmp_path: Path, best: int, kept: bool) -> None:
    """A twin fit that diverged left the run with the twin it started from; the plot's title called it "twin on
    held-out θ groups" as for a fitted one (only the summary said it was not)."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor([0.1]), "measured": torch.rand(2, 3, 1),
                                           "predicted": torch.rand(2, 3, 1)})
    figure = _twin_fit(store, {"kind": "twin_fitted", "best_epoch": best, "validation_loss": [math.nan] * 4})
    store.close()
    assert ("its fit was not kept" in figure.axes[0].get_title()) is not kept
    plt.close(figure)


def test_an_empty_learning_curves_panel_says_why_and_is_not_at_epoch_zero(tmp_path: Path) -> None:
    """A run stopped in its first epoch had an accuracy panel empty but for its axes, ticked at epochs 0 and 1."""
    store = _run(tmp_path, epochs=0, finish=False, batch={"epoch": 0, "batch": 1, "loss": 2.0})
    figure = _learning_curves(store.events())
    store.close()
    figure.canvas.draw()
    loss_axis, accuracy_axis = figure.axes
    assert [text.get_text() for text in accuracy_axis.texts] == ["no test accuracy logged"]
    assert not loss_axis.texts and accuracy_axis.get_xlim() == loss_axis.get_xlim()
    low, high = accuracy_axis.get_xlim()
    assert [tick for tick in accuracy_axis.get_xticks() if low <= tick <= high] == [1.0]
    plt.close(figure)


@pytest.mark.parametrize("epochs", [7, 20, 109])
def test_the_epoch_axis_is_ticked_in_steps_of_1_2_or_5(tmp_path: Path, epochs: int) -> None:
    """A 20-epoch run was ticked 3, 6, …, 18, its first and last epochs between ticks; 109 epochs at 15, 30, …"""
    store = _run(tmp_path, epochs=epochs, finish=False)
    figure = _learning_curves(store.events())
    store.close()
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert (ticks[1] - ticks[0]) / 10 ** math.floor(math.log10(ticks[1] - ticks[0])) in (1, 2, 5), ticks
    plt.close(figure)


@pytest.mark.parametrize(("classes", "most"), [(10, 47), (20, 979), (20, 9999)])
def test_each_confusion_count_fits_its_cell(classes: int, most: int) -> None:
    """20 classes' three-digit counts, at 7 pt, ran into their neighbours' cells."""
    confusion = np.full((classes, classes), 5.0)
    np.fill_diagonal(confusion, most)
    figure = _confusion(confusion, [str(k) for k in range(classes)])
    figure.tight_layout()
    figure.canvas.draw()
    axis = figure.axes[0]
    cell = axis.get_window_extent().width / classes
    widest = max(text.get_window_extent().width for text in axis.texts)
    assert widest < 0.85 * cell, (widest, cell)
    assert min(text.get_fontsize() for text in axis.texts) >= (5 if most < 1000 else 3.5)  # small, not unreadable
    plt.close(figure)


def test_the_learning_curves_axes_give_their_units(tmp_path: Path) -> None:
    """"cross-entropy" and "accuracy": in bits or nats, in per cent or a fraction?"""
    store = _run(tmp_path)
    figure = _learning_curves(store.events())
    store.close()
    assert [axis.get_ylabel() for axis in figure.axes] == ["cross-entropy per sample (nats)",
                                                           "accuracy (fraction correct)"]
    plt.close(figure)


@pytest.mark.parametrize(("nmse", "marked"), [([0.3, 1.9], True), ([0.01, 0.02], False)])
def test_the_twin_fit_plot_marks_an_nmse_of_1_where_outputs_near_it(tmp_path: Path, nmse: list, marked: bool) -> None:
    """The summary calls a twin of NMSE 1 or more no better than each output's mean; its plot showed no such line."""
    store = _run(tmp_path)
    store.save_arrays("data/fidelity.h5", {"nmse": torch.tensor(nmse), "measured": torch.rand(2, 3, 2),
                                           "predicted": torch.rand(2, 3, 2)})
    figure = _twin_fit(store)
    store.close()
    levels = [list(line.get_ydata()) for line in figure.axes[1].get_lines() if "output's mean" in line.get_label()]
    assert levels == ([[1, 1]] if marked else [])
    plt.close(figure)
