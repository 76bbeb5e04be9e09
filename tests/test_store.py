"""The run store: flushed event log that survives a torn line, atomic HDF5 and checkpoints, rewinding."""

import json

import pytest
import torch

from hil.errors import ConfigError
from hil.store import RunStore, list_runs


def test_events_are_numbered_flushed_and_survive_a_torn_line(tmp_path) -> None:
    store = RunStore.create(tmp_path, "demo run")
    store.event("run_started", protocol="demo")
    store.event("batch", loss=torch.tensor(0.5))
    assert [json.loads(line)["seq"] for line in (store.path / "events.jsonl").read_text().splitlines()] == [1, 2]
    with (store.path / "events.jsonl").open("a") as handle:
        handle.write('{"seq": 3, "kind": "ba')  # a crash in the middle of a line
    reopened = RunStore.open(store.path)
    assert [e["kind"] for e in reopened.events()] == ["run_started", "batch"]
    assert reopened.next_seq == 3
    assert store.path.name.endswith("-demo-run")


def test_rewind_moves_later_events_aside_without_losing_them(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    for k in range(5):
        store.event("batch", k=k)
    assert store.rewind_events(3) == 3
    store.event("resumed")
    assert [e["seq"] for e in store.events()] == [1, 2, 3]
    discarded = [json.loads(line) for line in (store.path / "events.discarded.jsonl").read_text().splitlines()]
    assert [e["k"] for e in discarded] == [2, 3, 4]


def test_arrays_and_checkpoints_round_trip(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.save_arrays("data/a.h5", {"x": torch.arange(6.0).reshape(2, 3)}, {"note": {"units": "V"}})
    arrays, attrs = store.load_arrays("data/a.h5")
    assert torch.equal(arrays["x"], torch.arange(6.0).reshape(2, 3)) and attrs["note"] == {"units": "V"}
    store.event("x")
    store.save_checkpoint({"epoch": 2, "weights": torch.ones(3)})
    saved = store.load_checkpoint()
    assert saved["epoch"] == 2 and saved["next_seq"] == 2 and torch.equal(saved["weights"], torch.ones(3))
    assert not list(store.path.rglob(".*.tmp"))


def test_list_runs_and_open_errors(tmp_path) -> None:
    store = RunStore.create(tmp_path, "listed")
    store.event("run_started", protocol="p")
    store.event("evaluated", device_accuracy=0.75)
    store.event("run_finished")
    [run] = list_runs(tmp_path)
    assert run["status"] == "finished" and run["device_accuracy"] == 0.75 and run["protocol"] == "p"
    with pytest.raises(ConfigError, match="not a run folder"):
        RunStore.open(tmp_path / "nothing")
