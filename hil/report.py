"""The run report: PNG plots and a short markdown summary, from the run folder alone.

- ``learning_curves.png``: training loss (the mean over each epoch's batches, forward where the method ran it; the
  epoch a stopped run was in, its batches so far, as a hollow point of its own), and test loss and accuracy on the
  device and through the twin, per epoch, each curve one colour in both panels, and the final evaluation on the device;
- ``twin_fit.png``: the twin's predictions against device measurements on the θ groups it was not fitted on, a
  colour per output, with the summary's NMSE; beside it, each output's NMSE and its noise floor;
- ``confusion.png``: the confusion matrix of the final evaluation of the test set on the device, with its accuracy;
- ``summary.md``: the final figures, the twin's fidelity, the device time (modelled on a simulator, measured on a
  bench) and the wall time up to the report; for a run that failed, was stopped or was resumed, how (with its error,
  the step it failed in, how to resume it where a resume goes on, when its last event was logged, and the test figures
  of its last epoch and the device time its log holds when it has no final evaluation).

A log damaged before its end (a line edited by hand, a disk error) is reported from its other events: the report says
which lines it left out, in a warning and in the summary. A run that another process has open (still running), or one
in a folder this user cannot write or hil cannot lock, gets its summary so far (`live_summary`), written nowhere: a run
going on writes its report when it ends.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from hil.config import YamlDocument
from hil.errors import ConfigError, RunFileError, counted
from hil.store import (
    DISCARDED,
    EVENTS,
    SUMMARY,
    RunStore,
    ending_events,
    failed_step,
    held_by_a_run,
    local_time,
    open_hdf5,
    parse_event,
    recorded_start,
    resume_command,
)


def _last(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((e for e in reversed(events) if e["kind"] == kind), {})


def _save(store: RunStore, figure: Figure, relative: str) -> None:
    """Render ``figure`` as PNG into the run folder, atomically (a reader never sees half a plot)."""
    buffer = io.BytesIO()
    if figure.get_layout_engine() is None:  # one laid out as it is made (constrained) keeps its own
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    store.write_bytes(relative, buffer.getvalue())


def _number(value: Any) -> bool:
    """Whether an event's value is a number (a log edited by hand may hold anything)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plotted(value: Any) -> bool:
    """Whether an event's value is a number a plot can place: not a finite one beyond 1e300 (an integer beyond any
    float, 1e308), far beyond any figure a run logs, whose axis overflows; NaN and infinity a plot leaves out."""
    return _number(value) and not math.inf > abs(value) > 1e300


def _arrays(store: RunStore, relative: str, dims: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays of an HDF5 file of the run, each named one present with at least ``dims[name]`` dimensions; a
    `RunFileError` naming the file if not (a file damaged, or not this run's)."""
    arrays, attrs = store.load_arrays(relative, fix=_WITHOUT_IT)
    for name, least in dims.items():
        if name not in arrays or arrays[name].dim() < least:
            _damaged(store, relative, f"array {name!r} " + ("missing" if name not in arrays else
                                                              f"of shape {tuple(arrays[name].shape)}"))
    return arrays, attrs


#: What to do with a data file that a plot cannot be drawn from.
_WITHOUT_IT = "restore it from a backup, or move it aside to report without its plot"


def _damaged(store: RunStore, relative: str, what: str) -> None:
    raise RunFileError(f"{store.path / relative}: {what}; the file is damaged or not this run's: {_WITHOUT_IT}")


#: Each curve's colour, the same in both panels.
COLOURS = {"train": "tab:green", "device": "tab:blue", "twin": "tab:orange"}


def _train_forward(events: list[dict[str, Any]]) -> str:
    """Where the training batches' forward pass ran, from the method the run started with ("" if unknown)."""
    from hil.methods.base import method_class

    try:
        mode = method_class(str(_last(events, "run_started").get("method"))).mode
    except Exception:  # a log of a method this hil does not know, or edited by hand
        return ""
    return {"pat": "on the device", "twin": "through the twin", "device": "on the device"}.get(mode, "")


#: The most epochs whose points are all marked: a longer run's markers merge into a band, the twin's on top hiding the
#: device's; its curves mark every k-th epoch, the twin's halfway between the device's.
MARKED_EPOCHS = 25


def _every(count: int, shifted: bool = False) -> tuple[int, int] | None:
    """The ``markevery`` of a curve of ``count`` epochs: None (each) for up to `MARKED_EPOCHS`."""
    step = math.ceil(count / MARKED_EPOCHS)
    return (step // 2 if shifted else 0, step) if step > 1 else None


def _log_scale(axis: Any, values: np.ndarray) -> None:
    """A log y axis for positive ``values`` spanning decades, ticked 1, 2 and 5 in each decade, in plain numbers, where
    they span up to 3 (10⁻² and 10⁻¹ alone leave 0.03 unreadable); beyond, at each decade."""
    axis.set_yscale("log")
    if values.max() <= 1e3 * values.min():
        axis.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())


def _learning_curves(events: list[dict[str, Any]]) -> Figure:
    epochs = [e for e in events if e["kind"] == "epoch" and isinstance(e.get("epoch"), int) and _plotted(e["epoch"])]
    batches = [e for e in events if e["kind"] == "batch" and isinstance(e.get("epoch"), int) and _plotted(e["epoch"])
               and _plotted(e.get("loss"))]
    figure = Figure(figsize=(10, 4.4), layout="constrained")
    loss_axis, accuracy_axis = figure.subplots(1, 2, sharex=True)  # the same epochs: an empty panel is not at 0
    if batches:
        per_epoch: dict[int, list[float]] = {}
        for event in batches:
            per_epoch.setdefault(event["epoch"], []).append(event["loss"])
        finished = {e["epoch"] for e in epochs}  # an epoch's event is logged once all its batches ran
        # one whose event is a damaged line finished too where a later epoch's batches or the train step's end follow
        finished |= {k for k in per_epoch if k < max(per_epoch)}
        if any(e["kind"] == "step_finished" and e.get("step") == "train" for e in events):
            finished |= set(per_epoch)
        whole = sorted((k + 1, sum(v) / len(v)) for k, v in per_epoch.items() if k in finished)
        if whole:
            loss_axis.plot(*zip(*whole, strict=True), "o-", color=COLOURS["train"], label="train",
                           markevery=_every(len(whole)))
        for k in sorted(set(per_epoch) - finished):  # where a run stopped: the batches it reached, not an epoch's
            count = len(per_epoch[k])
            loss_axis.plot([k + 1], [sum(per_epoch[k]) / count], "o", markerfacecolor="none", color=COLOURS["train"],
                           label=f"train, epoch {k + 1} unfinished ({counted(count, 'batch', 'batches')})")
    tested = False
    for prefix, style in (("device", "s-"), ("twin", "^--")):
        for axis, figure_name in ((loss_axis, f"{prefix}_loss"), (accuracy_axis, f"{prefix}_accuracy")):
            points = [(e["epoch"] + 1, e[figure_name]) for e in epochs if _plotted(e.get(figure_name))]
            if points:
                axis.plot(*zip(*points, strict=True), style, color=COLOURS[prefix], label=f"test, {prefix}",
                          markevery=_every(len(points), shifted=prefix == "twin"))
                tested = True
    final = _final_point(events, epochs, batches)
    for axis, figure_name in ((loss_axis, "device_loss"), (accuracy_axis, "device_accuracy")):
        if final is not None and _plotted(final[1].get(figure_name)):
            # under the curves (zorder 2): the star frames the last epoch's points rather than hiding them
            axis.plot([final[0]], [final[1][figure_name]], "*", markersize=12, color=COLOURS["device"],
                      markeredgecolor="black", label="final evaluation, device", zorder=1.9)
    if batches:
        forward = _train_forward(events)
        figure.suptitle("train: the mean over each epoch's training batches" + (f", forward {forward}" if forward
                        else "") + ("; test: the test set after each epoch" if tested else "")
                        + ("\nfinal evaluation: the test set measured again after training" if final else ""),
                        fontsize=9)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy per sample (nats)", title="loss")  # torch's: natural log
    losses = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in loss_axis.get_lines()] or [[]])
    losses = losses[np.isfinite(losses)]
    if losses.size and losses.min() > 0 and losses.max() > 10 * losses.min():  # a train loss that falls by decades
        _log_scale(loss_axis, losses)  # on a linear axis, flat at 0 for most of the run
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (fraction correct)", title="accuracy", ylim=(0, 1))
    legend: dict[str, Any] = {}  # one entry per curve: its colour is the same in both panels
    for axis, missing in ((loss_axis, "no training loss logged"), (accuracy_axis, "no test accuracy logged")):
        if not axis.get_lines():  # a run stopped before its first batch, or its first epoch's test pass
            axis.text(0.5, 0.5, missing, transform=axis.transAxes, ha="center", va="center", color="0.4")
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10]))  # epochs are whole
        legend.update({label: handle for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
                       if label not in legend})
    if legend:  # below the panels, where it hides no point (a long run's curves leave no free corner inside them)
        figure.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=len(legend),
                      fontsize=9, frameon=False)
    return figure


def _final_point(events: list[dict[str, Any]], epochs: list[dict[str, Any]],
                 batches: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """Where the final evaluation goes on the learning curves, at the last epoch trained, and its event; None for a
    run without one (or without an epoch to place it at)."""
    evaluated = _last(events, "evaluated")
    trained = [e["epoch"] + 1 for e in (*epochs, *batches)]
    if not evaluated or not trained:
        return None
    return max(trained), evaluated


def _final_note(events: list[dict[str, Any]], evaluated: dict[str, Any]) -> str:
    """A sentence telling the final evaluation from the test pass after the last epoch, which the learning curves end
    with: the same model measured twice on a device that is noisy and drifts gives two figures."""
    epoch = _last(events, "epoch")
    if not _number(evaluated.get("device_accuracy")) or not _number(epoch.get("device_accuracy")) \
            or not isinstance(epoch.get("epoch"), int):
        return ""
    same = epoch["device_accuracy"] == evaluated["device_accuracy"]
    return (" The final evaluation measured the test set on the device again after training; the pass after the last "
            f"epoch ({epoch['epoch'] + 1}), the learning curves' last point, gave {'the same: ' if same else ''}"
            f"{_figure(epoch['device_accuracy'])}" + ("." if same else ": the two differ by the device's noise and "
                                                       "drift."))


def _twin_fit(store: RunStore, fitted: dict[str, Any] | None = None) -> Figure:
    """The twin-fit plot; ``fitted``: the ``twin_fitted`` event, whose ``best_epoch`` of -1 says the twin plotted is
    the one the fit started from (it diverged, or no epoch beat it)."""
    arrays, _ = _arrays(store, "data/fidelity.h5", {"nmse": 0, "measured": 2, "predicted": 2})
    if arrays["measured"].shape != arrays["predicted"].shape or arrays["measured"].numel() == 0:
        _damaged(store, "data/fidelity.h5", f"measured {tuple(arrays['measured'].shape)} and predicted "
                                            f"{tuple(arrays['predicted'].shape)} are not two sets of the same outputs")
    measured = arrays["measured"].reshape(-1, arrays["measured"].shape[-1]).numpy()
    predicted = arrays["predicted"].reshape(-1, arrays["predicted"].shape[-1]).numpy()
    # values an axis cannot span; compared in float64, where 1e300 is a number (in float32, an overflow warning)
    beyond = [name for name, values in (("measured", measured), ("predicted", predicted))
              if (np.abs(values[np.isfinite(values)].astype(np.float64)) > 1e300).any()]
    if beyond:
        _damaged(store, "data/fidelity.h5", f"{' and '.join(beyond)} hold values beyond 1e300, which no device gives")
    figure = Figure(figsize=(11, 5))
    axis, per_output = figure.subplots(1, 2, width_ratios=(1.2, 1))
    # every output (the NMSE in the title is over all of them), each its own colour of a colour map (a colour cycle
    # repeats after 10), drawn in a shuffled order so that no output's points lie under all of another's
    outputs = np.broadcast_to(np.arange(measured.shape[1]), measured.shape).ravel()
    order = np.random.default_rng(0).permutation(outputs.size)
    points = axis.scatter(measured.ravel()[order], predicted.ravel()[order], c=outputs[order], s=4, alpha=0.5,
                          cmap="viridis", vmin=-0.5, vmax=measured.shape[1] - 0.5)
    colours = figure.colorbar(points, ax=axis, fraction=0.046, label="output")
    colours.solids.set_alpha(1)
    colours.locator = MaxNLocator(integer=True)
    colours.update_ticks()
    low, high = float(measured.min()), float(measured.max())
    axis.plot([low, high], [low, high], "k--", linewidth=1)
    nmse = _figure(arrays["nmse"].double().mean().item())  # as the summary gives it
    axis.set(xlabel=f"measured on the device (a colour per output, {counted(measured.shape[1], 'output')})",
             ylabel="predicted by the twin", title=f"twin on held-out θ groups (NMSE {nmse})"
             + ("\nas it started: its fit was not kept" if (fitted or {}).get("best_epoch") == -1 else ""))
    floor = arrays.get("noise_floor") if _repeats(store) != 1 else None  # without repeats, 0: no figure
    _against_noise(per_output, arrays["nmse"], floor)
    return figure


def _against_noise(axis: Any, nmse: Any, floor: Any) -> None:
    """Each output's held-out NMSE beside its noise floor, the NMSE of repeated measurements, which no twin goes
    below: the scatter's pooled outputs cannot show how far above it the twin is, nor which outputs it misses."""
    shown = []
    for values, style, label in ((nmse, "o", "twin, held out"),
                                 (floor, "_", "noise floor:\nrepeated\nmeasurements")):
        if values is None:
            continue
        values = values.double().reshape(-1).numpy()
        placed = np.isfinite(values) & (np.abs(values) <= 1e300)  # what an axis can place
        axis.plot(np.arange(values.size)[placed], values[placed], style, markersize=12 if style == "_" else 5,
                  markeredgewidth=2 if style == "_" else 1, color="black" if style == "_" else "tab:blue", label=label)
        shown.append(values[placed])
    drawn = np.concatenate(shown)
    if drawn.size and drawn.max() >= 0.5:  # near or past where the summary calls the twin no better than the mean
        axis.axhline(1, color="tab:red", linestyle=":", label="1: no better\nthan the\noutput's mean")
    if drawn.size and drawn.min() > 0 and drawn.max() > 10 * drawn.min():
        _log_scale(axis, drawn)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set(xlabel="output", ylabel="NMSE (squared error over the output's variance)",
             title="per output: the twin's error and the noise floor" if floor is not None
             else "per output: the twin's error (no repeats: noise floor unknown)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the panel: inside, it hid points


def _confusion_matrix(store: RunStore) -> tuple[np.ndarray, list[str]]:
    """The final evaluation's confusion matrix (true × predicted counts) and the class names (numbers where the file
    has no name for each row)."""
    arrays, attrs = _arrays(store, "data/evaluation.h5", {"confusion": 2})
    confusion = arrays["confusion"].numpy()
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.size == 0:
        _damaged(store, "data/evaluation.h5", f"the confusion matrix is {confusion.shape}, not square with a class")
    if not (confusion.dtype.kind in "biuf" and np.isfinite(confusion).all() and (confusion >= 0).all()
            and (confusion % 1 == 0).all()):
        _damaged(store, "data/evaluation.h5", "the confusion matrix holds what is not a count (negative, a fraction, "
                                              "not a number)")
    confusion = confusion.astype(np.float64)  # exact to 2**53, and a sum of int64 counts cannot wrap to negative
    names = attrs.get("class_names")
    if not isinstance(names, list) or len(names) != len(confusion):
        names = [str(k) for k in range(len(confusion))]
    return confusion, names


#: The most classes whose confusion cells are written with their counts: the cells of more are too small to read (256
#: classes, an IDX set's labels up to 255, blackened the plot with 65 536 counts drawn in a minute); their colour gives
#: the counts. At most `NAMED_CLASSES` classes are named on each axis (evenly spaced), which more would overlap.
ANNOTATED_CLASSES = 20
NAMED_CLASSES = 12


def _confusion(confusion: np.ndarray, names: list[str]) -> Figure:
    figure = Figure(figsize=(5.5, 5))
    axis = figure.subplots()
    image = axis.imshow(confusion, cmap="Blues")
    n = len(confusion)
    if n <= ANNOTATED_CLASSES:
        # each count within its cell (the axes about 3.5 in wide; a digit about 0.6 of the font size, and a margin):
        # 20 classes' three-digit counts at 7 pt ran into their neighbours
        fontsize = min(7.0, 3.5 * 72 / n / (0.8 * len(str(int(confusion.max())))))
        for row in range(n):
            for column in range(n):
                count = int(confusion[row, column])  # white on the dark cells, where black is unreadable
                axis.text(column, row, f"{count}", ha="center", va="center", fontsize=fontsize,
                          color="white" if count > confusion.max() / 2 else "black")
    ticks = range(0, n, math.ceil(n / NAMED_CLASSES))
    axis.set(xticks=ticks, yticks=ticks, xticklabels=[names[k] for k in ticks], yticklabels=[names[k] for k in ticks],
             xlabel="predicted class", ylabel="true class", title="test set on the device, final evaluation"
             + (f" (accuracy {_figure(float(confusion.trace() / total))})" if (total := confusion.sum()) else ""))
    figure.colorbar(image, ax=axis, fraction=0.046, label="test samples")  # what its colours count
    return figure


def _figure(value: Any, digits: int = 4) -> str:
    """A float to ``digits`` significant digits; n/a for a missing value."""
    return "n/a" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def wilson_interval(accuracy: float, samples: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval (``z`` = 1.96) of an accuracy measured on ``samples`` test samples: the spread
    the test set's size alone allows (unlike the plain ±√(p(1−p)/n), it is not empty at an accuracy of 0 or 1)."""
    shrink = 1 / (1 + z * z / samples)
    centre = shrink * (accuracy + z * z / (2 * samples))
    half = shrink * z * math.sqrt(accuracy * (1 - accuracy) / samples + z * z / (4 * samples * samples))
    return max(0.0, min(accuracy, centre - half)), min(1.0, max(accuracy, centre + half))  # as exact as the accuracy


def _accuracy(accuracy: Any, samples: int | None) -> str:
    """A test accuracy with its 95 % interval where the number of test samples is known."""
    if not (_number(accuracy) and samples and 0 <= accuracy <= 1):
        return _figure(accuracy)
    low, high = wilson_interval(accuracy, samples)
    return f"{_figure(accuracy)} ({low:.3f}–{high:.3f})"


def _tested_note(samples: int | None) -> str:
    if not samples:
        return ""
    return (f" An accuracy's range is its 95 % Wilson interval over the {counted(samples, 'test sample')}, the spread "
            "the test set's size alone allows (two runs whose accuracies lie within each other's range may not "
            "differ).")


def _settings(settings: Any) -> str:
    if not isinstance(settings, dict):
        return _figure(settings)
    return ", ".join(f"{key} = {_figure(value)}" for key, value in settings.items()) or "none needed"


def _fit_note(fitted: dict[str, Any]) -> str:
    """A sentence for a twin fit that ran out of epochs while its held-out error still improved, that never had a
    held-out error to keep (NaN at every epoch: it diverged), or whose epochs did not beat the physics twin it
    started from (kept); none otherwise."""
    losses, best = fitted.get("validation_loss"), fitted.get("best_epoch")
    if best == -1 and isinstance(losses, list) and losses:
        if not any(_number(loss) and math.isfinite(loss) for loss in losses):
            return (f" **The twin fit diverged**: its held-out error was not a number at any of its {len(losses)} "
                    "epochs, so the run went on with the twin it started from, unfitted; a lower `twin.fit.lr` would "
                    "likely fit it.")
        return (f" None of the twin fit's {counted(len(losses), 'epoch')} beat the physics twin it started from on "
                "the held-out θ groups, so the run went on with that twin.")
    if fitted.get("converged", True):
        return ""
    where = f" (best held-out error at epoch {best + 1} of {len(losses)})" \
        if isinstance(losses, list) and isinstance(best, int) else ""
    return (f" The twin fit ran out of epochs while still improving{where}: more `twin.fit.epochs` would likely give a "
            "better twin.")


def _unfaithful_note(fid: dict[str, Any]) -> str:
    """A sentence for a twin whose held-out NMSE is 1 or more: each output's mean would predict the device as well,
    so what is trained through it (PAT's gradients, an in-silico model) follows another device; none otherwise."""
    nmse = fid.get("nmse_mean")
    if not _number(nmse) or not nmse >= 1:  # a NaN is no figure to judge by
        return ""
    return (f" **The twin is no better than each output's mean** (held-out NMSE {_figure(nmse)}, 1 or more): the "
            "gradients and predictions taken from it are not the device's. Collect more data (`twin.collect`), fit it "
            "otherwise (`twin.fit`), or choose another `twin.kind`, before the next run trains through it.")


def _ended(events: list[dict[str, Any]]) -> bool:
    """Whether the log ends with how the run ended (finished, failed or stopped)."""
    return bool(events) and events[-1]["kind"] in ("run_finished", "run_failed", "run_interrupted")


def _stopped_by(interrupted: dict[str, Any]) -> str:
    """What stopped a run, as its ``run_interrupted`` event says and hil run said: a signal or a second Ctrl-C at once
    (SIGHUP: its terminal closed; SIGTERM: a scheduler, a shutdown), or a Ctrl-C after saving; "" where it says
    neither (a log edited by hand)."""
    at_once = interrupted.get("at_once")
    if isinstance(at_once, str) and at_once:
        return f" at once by {at_once}"
    return " at a Ctrl-C, after saving" if "completed" in interrupted else ""


def _status_note(store: RunStore, events: list[dict[str, Any]], evaluated: dict[str, Any], damaged: bool,
                 running: bool = False, reporting: bool = False) -> str:
    """Sentences for a run that failed, was stopped, or stopped before it finished (killed: its log ends without
    saying how), with the test figures of its last epoch where it has no evaluation, and for a run resumed from a
    checkpoint (none for a run that went straight through). ``damaged``: the log has damaged lines, which a resume
    refuses until they are repaired; ``running``: another process runs it (`held_by_a_run`), not one writing its report;
    ``reporting``: the run writes its own report, its last step, whose log ends with its evaluation."""
    last = events[-1] if events else {"kind": "none"}
    before = "" if evaluated else " before its evaluation"
    resume = f"; {'once the log is repaired, ' if damaged else ''}`{resume_command(store.path)}` finishes it"
    note = ""
    if last["kind"] == "run_failed":  # its error says what to do; resuming may fail alike
        ending = ending_events(events)  # what ended the run, then (if it failed too) the safe state on the way out
        errors = _errors(ending)
        step = failed_step(events)
        where = f" in its {step} step{',' if before else ''}" if step else ""
        note = f" **The run was stopped{before}**{_stopped_by(ending[0])}; then {errors}." \
            if ending[0]["kind"] == "run_interrupted" else f" **The run failed{where}{before}**: {errors}."
        if not evaluated:
            note += " The figures below are what it reached."
        if any(isinstance(e.get("traceback"), str) for e in ending if e["kind"] == "run_failed"):  # hil run showed it
            note += (" The error is not one hil raises on purpose (a bug, of hil's or of a library's): its traceback "
                     "is in `events.jsonl`, in the `run_failed` event's `traceback`.")
        once = [e for e in ending if e["kind"] == "run_failed"][-1].get("resume_once")
        if isinstance(once, str) and once:  # a failure of the bench, the disk or a plugin's code, as hil run said
            note += f" Once {once}{' and the log is repaired' if damaged else ''}, `{resume_command(store.path)}` " \
                    "continues it from its last checkpoint."
    elif last["kind"] == "run_interrupted":
        note = f" **The run was stopped{before}**{_stopped_by(last)}" + (
            f", so the figures below are what it reached{resume}." if not evaluated else f"{resume}.")
    elif running:
        note = (f" **The run has not ended**: another hil process has it open ({_under_way(store, events)}; its last "
                f"event so far: {last['kind']}), so the figures below are what it has reached; a run writes its report "
                "when it ends.")
    elif not evaluated:
        note = (f" **The run stopped before its evaluation** (its last event: {last['kind']}), so the figures below "
                f"are what it reached{resume}.")
    elif not _ended(events) and not reporting:  # killed in its report step: its figures are final, the run unfinished
        note = (f" **The run stopped after its evaluation, before it finished** (its last event: {last['kind']})"
                f"{resume}.")
    note += _earlier_ending(events)
    epoch = _last(events, "epoch")
    if not evaluated and _number(epoch.get("device_accuracy")) and isinstance(epoch.get("epoch"), int):
        twin = f" and {_figure(epoch['twin_accuracy'])} through the twin" if _number(epoch.get("twin_accuracy")) else ""
        note += (f" After its last finished epoch ({epoch['epoch'] + 1}) its test accuracy was "
                 f"{_figure(epoch['device_accuracy'])} on the device{twin}.")
    resumed = [e for e in events if e["kind"] == "run_resumed"]
    if resumed:
        discarded, stopped = _discarded(store) or (
            sum(e["discarded_events"] for e in resumed if _number(e.get("discarded_events"))), 0)
        resumes = len(resumed) + stopped
        times = {1: "once", 2: "twice"}.get(resumes, f"{resumes} times")
        logged = _events_counted(discarded)
        note += (f" It was resumed {times} from its last checkpoint" + (
            f"; {logged} that the stopped attempt{'s' if resumes > 1 else ''} logged after it "
            f"{'are' if discarded > 1 else 'is'} in `{DISCARDED}`, not here" if discarded else "") + ".")
    elif (moved := _discarded(store)) and moved[0]:  # a resume that ended before it restored the run (its
        # instruments off), or one that started the run over (it had no checkpoint)
        note += (f" A resume moved {_events_counted(moved[0])} of the attempt before it out of this log, to "
                 f"`{DISCARDED}`.")
    if events and last["kind"] != "run_finished" and not running and not reporting:  # failed, stopped or killed:
        note += f" Its last event was logged at {local_time(last.get('time'))}."  # when it failed, or was killed
    return note


def _under_way(store: RunStore, events: list[dict[str, Any]]) -> str:
    """How far a run going on has got: the steps its log says are done, and in training the epoch under way, of the
    ``training.epochs`` of its ``protocol.yaml``."""
    done = [e["step"] for e in events if e["kind"] == "step_finished" and isinstance(e.get("step"), str)]
    said = f"steps done: {', '.join(done)}" if done else "no step done yet"
    trained = [e for e in events if e["kind"] in ("batch", "epoch") and isinstance(e.get("epoch"), int)]
    if trained and "train" not in done:
        total = _epochs(store.path)
        epoch = trained[-1]["epoch"] + (2 if trained[-1]["kind"] == "epoch" else 1)  # the event's epoch counts from 0
        said += f"; training epoch {min(epoch, total) if total else epoch}{f' of {total}' if total else ''} under way"
    return said


def _epochs(folder: Path) -> int | None:
    """The ``training.epochs`` of the ``protocol.yaml`` in a run's ``folder``; None where it cannot be read."""
    try:
        data = YamlDocument.read(folder / "protocol.yaml").data
    except ConfigError:
        return None
    training = data.get("training") if isinstance(data, dict) else None
    epochs = training.get("epochs") if isinstance(training, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None


def _events_counted(count: int) -> str:
    """"the event", or "the N events" (of a log)."""
    return f"the {count} events" if count > 1 else "the event"


def _errors(ending: list[dict[str, Any]]) -> str:
    """The errors of an ending's ``run_failed`` events (`ending_events`), the cause first, joined by "; then"."""
    return "; then ".join(str(e.get("error", "no error recorded")).rstrip(".") for e in ending
                          if e["kind"] == "run_failed")


def _earlier_ending(events: list[dict[str, Any]]) -> str:
    """A sentence for the ending of the attempt before the last one where the log holds it just before the last's
    (`ending_events`: a resume that failed before it rewound the log), said apart so that it does not read as the
    last attempt's failed safe state; "" where there is none."""
    last = ending_events(events)
    before = events[:len(events) - len(last)]
    earlier = ending_events(before) if last else []
    if not earlier:
        return ""
    errors = _errors(earlier)
    if earlier[0]["kind"] == "run_interrupted":
        return f" The attempt before it was stopped{_stopped_by(earlier[0])}{f'; then {errors}' if errors else ''}."
    step = failed_step(before)
    return f" The attempt before it failed{f' in its {step} step' if step else ''}: {errors}."


def _discarded(store: RunStore) -> tuple[int, int] | None:
    """How many lines the discarded log holds, and how many of them are the ``run_resumed`` of a resumed attempt
    stopped before its next checkpoint (moved aside with what it logged, by the next resume, which counts only what
    it moved); None where the run has no discarded log."""
    try:
        lines = (store.path / DISCARDED).read_bytes().splitlines(keepends=True)
    except OSError:
        return None
    events = [parse_event(line) for line in lines]
    return len(lines), sum(event is not None and event["kind"] == "run_resumed" for event in events)


def _repeats(store: RunStore) -> int | None:
    """How many times the twin data measured their repeated groups (1: never repeated); None if unknown (no file,
    or not readable: the plots say what is wrong with it)."""
    try:
        with open_hdf5(store.path / "data/twin_data.h5") as handle:
            shape = handle["y_repeats"].shape
    except Exception:  # missing, damaged, or another file's arrays
        return None
    return shape[0] if len(shape) == 4 and shape[1] > 0 else 1


def _noise_floor(store: RunStore, fidelity: dict[str, Any]) -> str:
    """The noise floor's figure; n/a where the twin data hold no repeated measurements to estimate it from (the
    fidelity step then records 0, which would read as a noiseless device)."""
    if fidelity and _repeats(store) == 1:
        return "n/a (the twin data hold no repeated measurements)"
    return _figure(fidelity.get("noise_floor_mean"))


def _reused_note(loaded: dict[str, Any]) -> str:
    """A sentence for a twin reused from another run (``twin.from_run``), whose data were measured there."""
    if not loaded:
        return ""
    return (f" The twin and its data come from run `{_figure(loaded.get('source'))}`, not measured in this run: the "
            "held-out NMSE and the noise floor above are against that run's measurements (a device that drifted "
            "since would not show in them); the Jacobian cosines were measured on this run's device.")


def _refined_note(events: list[dict[str, Any]]) -> str:
    """A sentence for a twin refined online during training (PAT's ``refine_every``), none otherwise."""
    if not any(e["kind"] == "batch" and "twin_refine_loss" in e for e in events):
        return ""
    return (" The twin was refined online during training: its fidelity above is the fitted twin's, before training; "
            "the test accuracy through the twin is the refined twin's.")


def _warnings_note(events: list[dict[str, Any]]) -> str:
    """A sentence for the warnings a run logged (a capture repeated after dropped frames, say), none otherwise."""
    logged = [e for e in events if e["kind"] == "warning"]
    if not logged:
        return ""
    return (f" {counted(len(logged), 'warning')} during the run (each in `events.jsonl`), the "
            f"first: {_figure(logged[0].get('message')).rstrip('.')}.")


def _left_out(damaged: list[int]) -> tuple[str, bool]:
    """The numbers of the damaged lines a report left out, as words ("3", "3 and 6", "3, 6 and 9"), and whether they
    are several."""
    numbers = [str(number) for number in damaged]
    return (" and ".join([", ".join(numbers[:-1]), numbers[-1]]) if len(numbers) > 1 else numbers[0]), len(numbers) > 1


def _damaged_note(store: RunStore, damaged: list[int]) -> str:
    """Warn that the log's ``damaged`` lines are left out of the report, and return the summary's sentence saying so
    (none for an intact log)."""
    if not damaged:
        return ""
    numbers, several = _left_out(damaged)
    lines, are, them, event = (f"lines {numbers}", "are", "them", "JSON events") if several else \
        (f"line {numbers}", "is", "it", "a JSON event")
    warnings.warn(f"{store.path / EVENTS}: {lines} {are} damaged (not {event}) and left out of the report; repair "
                  f"{them} by hand, then hil report again to include {them}", stacklevel=3)
    return (f" **{lines.capitalize()} of `{EVENTS}` {are} damaged** (not {event}): this report leaves {them} out, and "
            f"a resume refuses the log until {'they are' if several else 'it is'} repaired.")


def _device_time(events: list[dict[str, Any]], evaluated: dict[str, Any]) -> str:
    """The device time up to the final evaluation; for a run without one (stopped, failed), the latest its log holds
    (each step's end, each epoch's end), said as such; n/a where it holds none."""
    if evaluated:
        return _figure(evaluated.get("device_time_s"), 4)
    for event in reversed(events):
        if event["kind"] == "step_finished" and _number(event.get("device_time_total_s")):
            return f"{_figure(event['device_time_total_s'], 4)} (by the end of its {_figure(event.get('step'))} " \
                   "step, the last it logged)"
        if event["kind"] == "epoch" and _number(event.get("device_time_s")) and isinstance(event.get("epoch"), int):
            return f"{_figure(event['device_time_s'], 4)} (by the end of epoch {event['epoch'] + 1}, the last it " \
                   "logged)"
    return "n/a"


def _device_time_label(store: RunStore, system: Any) -> str:
    """The device time's row label: modelled where every instrument of the run's system was simulated (a world's,
    in ``snapshot.json``), measured (the wall time of its device calls) where none was; said plainly where the
    snapshot cannot tell (a run stopped before writing it, or a system of both)."""
    try:
        snapshot = store.read_json("snapshot.json")
        simulated = {"world" in snapshot["instruments"][name] for name in snapshot["systems"][system]["instruments"]
                     .values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        simulated = set()
    if simulated == {True}:
        return "device time (modelled on a simulator), s"
    if simulated == {False}:
        return "device time (measured: the wall time of its device calls), s"
    return "device time, s"


def _versions(versions: Any, threads: Any) -> str:
    """The versions and torch thread count a run started under, as its run_started records them (what it lacks, a
    run of an earlier hil, unsaid), with hil's commit (``+modified`` where its code was changed)."""
    if not isinstance(versions, dict):
        return ""
    given = {"torch": "torch", "hil": "hil", "python": "Python"}
    said = {key: f"{label} {versions[key]}" for key, label in given.items() if key in versions}
    if "torch" in said and isinstance(threads, int) and not isinstance(threads, bool):
        said["torch"] += f" ({threads} thread{'s' * (threads != 1)})"
    commit = versions.get("hil_commit")
    if "hil" in said and isinstance(commit, str) and commit:
        revision, changed, _ = commit.partition("+modified")
        said["hil"] += f" ({revision[:12]}{', modified' if changed else ''})" if len(revision) == 40 else f" ({commit})"
    return "; " + ", ".join(said.values()) if said else ""


def _unlogged(relative: str, what: str, measured: str, damaged: bool) -> str:
    """A sentence for a data file whose event the log lacks: a run stopped between saving and logging it (a resume
    measures ``measured`` again), or, in a damaged log, an event that may be a damaged line."""
    if damaged:
        return (f" `{relative}` holds a {what} that the readable lines of `events.jsonl` do not log (its event may be "
                "a damaged line): this report leaves it out.")
    return (f" `{relative}` holds a {what} that `events.jsonl` does not log (the run stopped between the two): this "
            f"report leaves it out, as a resume does, which measures {measured} again.")


def write_report(store: RunStore, wall_s: float | None = None) -> Path:
    """Write the plots and ``report/summary.md`` of a run; returns the summary's path. ``wall_s``: the run's wall
    time up to its report (s), given by the run writing its own report; by default (a report written again), the
    figure the run's own report gave."""
    summary = _summary(store, wall_s)
    # a character UTF-8 cannot hold (a run folder's name in another encoding, read as a lone surrogate) as its escape
    return store.write_bytes(SUMMARY, summary.encode("utf-8", "backslashreplace"))


def live_summary(store: RunStore) -> str:
    """The summary (markdown, without plots) of a run that another process is still writing, or in a folder this user
    cannot write or hil cannot lock, from what its folder holds so far; ``store`` watches it (`RunStore.open` with
    ``watch``), and nothing is written: a run going on writes its own report when it ends, which a report written
    meanwhile would race with."""
    return _summary(store, None, draw=False)


def _summary(store: RunStore, wall_s: float | None, draw: bool = True) -> str:
    """The summary's markdown; ``draw``: write the plots into ``report/`` as well (else none are linked)."""
    reporting = wall_s is not None  # the run writes its own report (`write_report`)
    events, damaged = store.readable_events()
    # another process has it open: not a folder read only because this user cannot write it (a run killed, copied)
    running = store.watching and not _ended(events) and held_by_a_run(store.path)
    damaged_note = _damaged_note(store, damaged)
    plots = []
    if draw:
        _save(store, _learning_curves(events), "report/learning_curves.png")
        plots.append("learning_curves.png")
    unlogged = ""  # a twin fidelity or final evaluation saved whose event the log lacks: a run stopped between the two
    if store.has("data/fidelity.h5") and not _last(events, "fidelity"):
        if not running:  # a running run logs it next
            unlogged = _unlogged("data/fidelity.h5", "twin fidelity", "the twin on its held-out θ groups",
                                 bool(damaged))
    elif store.has("data/fidelity.h5") and draw:
        _save(store, _twin_fit(store, _last(events, "twin_fitted")), "report/twin_fit.png")
        plots.append("twin_fit.png")
    tested = None  # the test samples of the final evaluation
    if store.has("data/evaluation.h5") and not _last(events, "evaluated"):
        if not running:
            unlogged += _unlogged("data/evaluation.h5", "final evaluation", "the test set", bool(damaged))
    elif store.has("data/evaluation.h5"):
        confusion, names = _confusion_matrix(store)
        if draw:
            _save(store, _confusion(confusion, names), "report/confusion.png")
            plots.append("confusion.png")
        tested = int(confusion.sum())
    events, _ = store.readable_events()  # with the warnings a run logged while the plots were drawn
    running = running and not _ended(events)
    started, evaluated, fid = _last(events, "run_started"), _last(events, "evaluated"), _last(events, "fidelity")
    started = started or recorded_start(store.path)
    calibrated, collected = _last(events, "calibrated"), _last(events, "collected")
    fitted = _last(events, "twin_fitted")
    # a run that never calibrated (stopped before it) is not one that needed no calibration, {} logged
    calibration = _settings(calibrated.get("settings", {})) if calibrated else "n/a" if damaged else "n/a (not reached)"
    wall_label = "wall time to the report, s"
    if wall_s is None:  # as the run's own report said
        wall_s = _last(events, "reported").get("wall_s")
        if wall_s is None:  # a run from before its report recorded it: the whole run's
            wall_s, wall_label = _last(events, "run_finished").get("wall_s"), "wall time, s"
    lines = [
        f"# {started.get('protocol', store.path.name)}",
        "",
        f"Run `{store.path.name}`: method **{started.get('method', '?')}** on system **{started.get('system', '?')}**, "
        f"seed {started.get('seed', '?')}{_versions(started.get('versions'), started.get('torch_threads'))}."
        f"{_status_note(store, events, evaluated, bool(damaged), running, reporting)}{damaged_note}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| test accuracy on the device | {_accuracy(evaluated.get('device_accuracy'), tested)} |",
        f"| test accuracy through the twin | {_accuracy(evaluated.get('twin_accuracy'), tested)} |",
        f"| test loss on the device | {_figure(evaluated.get('device_loss'))} |",
        f"| twin held-out NMSE (mean over outputs) | {_figure(fid.get('nmse_mean'))} |",
        f"| noise floor (NMSE of repeats) | {_noise_floor(store, fid)} |",
        f"| twin Jacobian cosine, θ / x | {_figure(fid.get('jacobian_cosine_theta'), 3)} / "
        f"{_figure(fid.get('jacobian_cosine_x'), 3)} |",
        f"| device calls | {_figure(evaluated.get('device_calls'))} |",
        f"| {_device_time_label(store, started.get('system'))} | {_device_time(events, evaluated)} |",
        f"| {wall_label} | {_figure(wall_s, 3)} |",
        "",
        f"Calibration: {calibration}. "
        f"Twin data: {collected.get('groups', 'n/a')} θ groups, "
        f"{collected.get('samples', 'n/a')} samples.{_reused_note(_last(events, 'twin_loaded'))}{_fit_note(fitted)}"
        f"{_unfaithful_note(fid)}{_refined_note(events)}{_final_note(events, evaluated)}{_tested_note(tested)}"
        f"{_warnings_note(events)}{unlogged}",
        "",
        *[f"![{name}]({name})" for name in plots],
        "",
    ]
    return "\n".join(lines)
