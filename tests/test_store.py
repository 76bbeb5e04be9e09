"""The run store: flushed event log that survives a torn line, atomic HDF5 and checkpoints, rewinding."""

import json

import pytest
import torch

from hil.errors import ConfigError
from hil.store import RunFileError, RunStore, list_runs


def five_events(tmp_path) -> RunStore:
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p")
    for k in range(4):
        store.event("batch", k=k)
    store.close()
    return store


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


def test_a_damaged_line_before_the_end_is_an_error_that_changes_nothing(tmp_path) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    for damage in (lambda line: line[:20], lambda line: line + b"\xff\xfe"):
        lines = log.read_bytes().split(b"\n")
        lines[2] = damage(lines[2])
        original = b"\n".join(lines)
        log.write_bytes(original)
        with pytest.raises(RunFileError, match=r"events.jsonl:3: damaged line"):
            RunStore.open(log.parent)
        assert log.read_bytes() == original and not (log.parent / "events.discarded.jsonl").exists()
        [run] = list_runs(tmp_path)  # listed from what can be read, never a crash
        assert run["status"] == "damaged log" and run["events"] == 4 and run["protocol"] == "p"
        lines[2] = json.dumps({"seq": 3, "kind": "batch"}).encode()
        log.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("tear", [
    lambda log: log.write_bytes(log.read_bytes()[:-30]),  # a crash in the middle of the last line
    lambda log: log.write_bytes(log.read_bytes() + b"\xff\xfe\n"),  # a last line that is not UTF-8
])
def test_rewind_moves_a_torn_last_line_aside_byte_for_byte(tmp_path, tear) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    tear(log)
    original = log.read_bytes()
    assert list_runs(tmp_path)[0]["status"] == "incomplete"
    store = RunStore.open(log.parent)
    moved = store.rewind_events(3)
    store.close()
    kept, discarded = log.read_bytes(), (log.parent / "events.discarded.jsonl").read_bytes()
    assert moved == len(discarded.splitlines()) == len(original.splitlines()) - 2
    assert [json.loads(line)["seq"] for line in kept.splitlines()] == [1, 2]
    assert kept + discarded == original + (b"" if original.endswith(b"\n") else b"\n")  # every byte kept


@pytest.mark.parametrize("damage", [b"", b"garbage\n", None])
def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path, damage) -> None:
    store = RunStore.create(tmp_path, "r")
    store.save_checkpoint({"epoch": 2, "weights": torch.ones(1000)})
    store.wait_for_checkpoint()
    path = store.path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:2000] if damage is None else damage)
    with pytest.raises(RunFileError, match=rf"^{path}: checkpoint unreadable \(.+\); .*start a new run"):
        store.load_checkpoint()
    store.close()


def test_a_truncated_or_missing_hdf5_file_is_a_clear_error(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    path = store.save_arrays("data/evaluation.h5", {"x": torch.arange(10_000.0)})
    path.write_bytes(path.read_bytes()[:3000])
    for name in ("evaluation.h5", "fidelity.h5"):
        with pytest.raises(RunFileError, match=rf"^{store.path / 'data' / name}: HDF5 data unreadable"):
            store.load_arrays(f"data/{name}")
    store.close()


def test_an_output_root_that_cannot_hold_runs_is_a_clear_error(tmp_path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for root in (a_file, a_file / "below"):
        with pytest.raises(RunFileError, match=rf"^output.root: cannot create a run folder in {root} \("):
            RunStore.create(root, "r")
