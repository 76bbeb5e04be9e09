"""The run store: flushed event log that survives a torn line, atomic HDF5 and checkpoints, rewinding."""

import contextlib
import datetime
import errno
import io
import json
import math
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hil.errors import ConfigError, HilError, Terminated
from hil.store import (
    CHECKPOINT_MAGIC,
    SAFE_STATE_FAILED,
    RunFileError,
    RunStore,
    WriteRefused,
    held,
    list_runs,
    parse_event,
    resume_command,
    seal_checkpoint,
    shell_word,
)
from tests.windows import windows_locks  # noqa: F401 - a fixture


def five_events(tmp_path) -> RunStore:
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p")
    for k in range(4):
        store.event("batch", k=k)
    store.close()
    return store


def damaged_lines(run: Path) -> list[int]:
    """The numbers of the lines of ``run``'s log that are not events, a torn last line aside."""
    store = RunStore.open(run)
    try:
        return store.readable_events()[1]
    finally:
        store.close()


def test_events_are_numbered_flushed_and_survive_a_torn_line(tmp_path) -> None:
    store = RunStore.create(tmp_path, "demo run")
    store.event("run_started", protocol="demo")
    store.event("batch", loss=torch.tensor(0.5))
    assert [json.loads(line)["seq"] for line in (store.path / "events.jsonl").read_text().splitlines()] == [1, 2]
    with (store.path / "events.jsonl").open("a") as handle:
        handle.write('{"seq": 3, "kind": "ba')  # a crash in the middle of a line
    store.close()
    reopened = RunStore.open(store.path)
    assert [e["kind"] for e in reopened.events()] == ["run_started", "batch"]
    assert reopened.next_seq == 3
    reopened.close()
    assert store.path.name.endswith("-demo-run")


def test_a_stop_raised_once_an_event_is_written_leaves_the_next_event_its_own_number(tmp_path, monkeypatch) -> None:
    """SIGTERM, SIGHUP and a second Ctrl-C raise wherever the run is; Python raises at its next call, and one that came
    while an event's line was written was raised as the write's error context closed: the line was logged but its
    number not taken, so the run_interrupted logged next had the same (about 1 in 20 stops in a loop of events)."""
    import hil.store

    store = RunStore.create(tmp_path, "r")
    store.event("run_started")
    writing = hil.store._writing

    @contextlib.contextmanager
    def stopped_as_it_closes(path: Path) -> Iterator[None]:
        with writing(path):
            yield
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(hil.store, "_writing", stopped_as_it_closes)
    with pytest.raises(Terminated):
        store.event("batch", batch=1)
    monkeypatch.setattr(hil.store, "_writing", writing)
    store.event("run_interrupted", at_once="SIGTERM")
    store.close()
    assert [(e["seq"], e["kind"]) for e in store.events()] == [(1, "run_started"), (2, "batch"), (3, "run_interrupted")]


@pytest.fixture
def windows_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.replace`` as on Windows: a file a handle holds open is neither renamed nor replaced (`tests.windows`)."""
    from tests.windows import replace_refusing_open_files

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the files this process holds open")
    monkeypatch.setattr(os, "replace", replace_refusing_open_files(os.replace))


def test_a_rewind_replaces_the_log_where_a_file_held_open_cannot_be_replaced(tmp_path, windows_replace) -> None:
    """The store held its own log open for appending as it replaced it with the events kept: Windows refused that
    (Access is denied), and every resume that had events to set aside failed."""
    store = RunStore.create(tmp_path, "r")
    for k in range(5):
        store.event("batch", k=k)
    assert store.rewind_events(3) == 3
    store.event("resumed")
    store.close()
    assert [(e["seq"], e["kind"]) for e in store.events()] == [(1, "batch"), (2, "batch"), (3, "resumed")]
    assert [json.loads(line)["k"] for line in (store.path / "events.discarded.jsonl").read_bytes().splitlines()] == \
        [2, 3, 4]


def test_rewind_moves_later_events_aside_without_losing_them(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    for k in range(5):
        store.event("batch", k=k)
    assert store.rewind_events(3) == 3
    store.event("resumed")
    assert [e["seq"] for e in store.events()] == [1, 2, 3]
    discarded = [json.loads(line) for line in (store.path / "events.discarded.jsonl").read_text().splitlines()]
    assert [e["k"] for e in discarded] == [2, 3, 4]


def test_a_store_watching_a_run_refuses_to_rewind_its_log(tmp_path) -> None:
    """A watching store writes nothing (a report of a run going on): its rewind moved the running run's later events
    out of its log, then failed with an AttributeError."""
    path = five_events(tmp_path).path
    log = (path / "events.jsonl").read_bytes()
    watching = RunStore.open(path, watch=True)
    with pytest.raises(RunFileError, match="opened to watch a run another process writes; it writes nothing there"):
        watching.rewind_events(2)
    watching.close()
    assert (path / "events.jsonl").read_bytes() == log and not (path / "events.discarded.jsonl").exists()


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
    with pytest.raises(ConfigError, match=r"nothing: no such folder; hil runs lists the runs \(--root FOLDER\)$"):
        RunStore.open(tmp_path / "nothing")  # a mistyped run name was 'not a run folder (no events.jsonl)'
    (tmp_path / "not-a-run").mkdir()  # e.g. --resume given the runs root instead of a run
    with pytest.raises(ConfigError, match="not a run folder"):
        RunStore.open(tmp_path / "not-a-run")
    assert list((tmp_path / "not-a-run").iterdir()) == []


def test_a_log_that_is_not_a_file_is_a_clear_error_and_does_not_hide_the_other_runs(tmp_path) -> None:
    five_events(tmp_path)
    broken = tmp_path / "20000101-000000-broken"
    (broken / "events.jsonl").mkdir(parents=True)
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(broken / 'events.jsonl'))}: "
                                           r"event log unreadable \(Is a directory\)"):
        RunStore.open(broken)
    listed = [(run["protocol"], run["status"]) for run in list_runs(tmp_path)]
    assert listed == [("p", "incomplete"), ("?", "unreadable log")]


def test_runs_that_lost_their_log_or_cannot_be_read_are_listed_and_other_folders_are_not(tmp_path,
                                                                                          monkeypatch) -> None:
    """A run folder that lost its log, or that could not be read, was left out of the list without a word. (As root
    nothing is refused, so the folder's read is refused at the os level.)"""
    five_events(tmp_path)
    lost = RunStore.create(tmp_path, "lost")
    lost.event("run_started", protocol="lost")
    (lost.path / "protocol.yaml").write_text("name: lost-protocol\n")
    lost.close()
    (lost.path / "events.jsonl").unlink()
    hidden = RunStore.create(tmp_path, "hidden")
    hidden.close()
    (tmp_path / "notes").mkdir()  # no log, no protocol: no run
    (tmp_path / "notes" / "plan.txt").write_text("bench time on Tuesday\n")
    (tmp_path / "lost+found").mkdir()  # a file system's, unreadable but to root: no run either
    listdir = os.listdir

    def refusing(path="."):
        if Path(path) in (hidden.path, tmp_path / "lost+found"):
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refusing)
    listed = {run["run"].split("-", 2)[-1]: (run["protocol"], run["status"], run["events"])
              for run in list_runs(tmp_path)}
    assert listed == {"r": ("p", "incomplete", 5), "lost": ("lost-protocol", "log lost", 0),
                      "hidden": ("?", "unreadable folder", 0)}


def test_a_damaged_line_before_the_end_is_an_error_that_changes_nothing(tmp_path) -> None:
    """Reading the run's events, logging one or rewinding is refused; a report reads the events around the line,
    told its number (it says so), and `list_runs` lists the run from them."""
    log = five_events(tmp_path).path / "events.jsonl"
    for damage in (lambda line: line[:20], lambda line: line + b"\xff\xfe"):
        lines = log.read_bytes().split(b"\n")
        lines[2] = damage(lines[2])
        original = b"\n".join(lines)
        log.write_bytes(original)
        store = RunStore.open(log.parent)
        for use, argument in ((store.events, ()), (store.event, ("batch",)), (store.rewind_events, (2,))):
            with pytest.raises(RunFileError, match=r"events.jsonl:3: damaged line"):
                use(*argument)
        events, damaged = store.readable_events()
        store.close()
        assert [e["seq"] for e in events] == [1, 2, 4, 5] and damaged == [3]
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
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(path))}: "
                                           r"checkpoint unreadable \(.+\); .*start a new run"):
        store.load_checkpoint()
    store.close()


def test_a_truncated_or_missing_hdf5_file_is_a_clear_error(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    path = store.save_arrays("data/evaluation.h5", {"x": torch.arange(10_000.0)})
    path.write_bytes(path.read_bytes()[:3000])
    for name in ("evaluation.h5", "fidelity.h5"):
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'data' / name))}: HDF5 data unreadable"):
            store.load_arrays(f"data/{name}")
    store.close()


@pytest.mark.parametrize("size", [100, 10_000])  # stored as it is, and compressed
def test_a_flipped_bit_in_an_array_or_in_the_files_structure_is_an_error_not_a_wrong_number(tmp_path,
                                                                                            size: int) -> None:
    """A damaged byte of a measurement read back silently changed in 157 of 200 trials on a small file: each array
    now carries a Fletcher-32 checksum and the file's structures theirs (HDF5 1.10's format)."""
    store = RunStore.create(tmp_path, "r")
    path = store.save_arrays("data/a.h5", {"x": torch.arange(float(size)), "n": torch.tensor(3)}, {"unit": "V"})
    with h5py.File(path) as handle:
        data_at = handle["x"].id.get_chunk_info(0).byte_offset
    whole = path.read_bytes()
    for at in (data_at + 5, 48):  # inside the array's data; inside the file's metadata
        damaged = bytearray(whole)
        damaged[at] ^= 0x10
        path.write_bytes(damaged)
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(path))}: "
                                               r"HDF5 data unreadable \(.+\); the file is missing or "):
            store.load_arrays("data/a.h5")
    path.write_bytes(whole)
    arrays, attrs = store.load_arrays("data/a.h5")
    assert torch.equal(arrays["x"], torch.arange(float(size))) and int(arrays["n"]) == 3 and attrs == {"unit": "V"}
    store.close()


def test_an_output_root_that_cannot_hold_runs_is_a_clear_error(tmp_path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for root in (a_file, a_file / "below"):
        with pytest.raises(ConfigError, match=r"^output.root: cannot create a run folder in "
                                              rf"{re.escape(str(root))} \("):
            RunStore.create(root, "r")


def test_a_new_run_never_reuses_an_existing_folder(tmp_path) -> None:
    """Runs started in the same second with the same name get folders of their own (a suffix), never one that
    already holds a run."""
    now = datetime.datetime.now()
    taken = [tmp_path / f"{now + datetime.timedelta(seconds=s):%Y%m%d-%H%M%S}-r" for s in range(-1, 10)]
    for folder in taken:
        folder.mkdir()
        (folder / "events.jsonl").write_bytes(b'{"seq": 1, "kind": "run_started"}\n')
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="new")
    store.close()
    assert store.path not in taken and store.path.name.endswith("-r-2")
    assert [e["seq"] for e in store.events()] == [1]
    assert all((folder / "events.jsonl").read_bytes() == b'{"seq": 1, "kind": "run_started"}\n' for folder in taken)


def test_a_reader_holding_the_old_file_sees_it_whole(tmp_path) -> None:
    """Files are replaced by renaming a new one into place, never rewritten where they are: a reader that opened
    the old version (a report, a resumed run) reads all of it, and a crash leaves it in place."""
    store = RunStore.create(tmp_path, "r")
    written = [store.save_arrays("data/a.h5", {"x": torch.zeros(2000)}), store.write_text("summary.md", "old\n")]
    store.save_checkpoint({"epoch": 1})
    store.wait_for_checkpoint()
    paths = [*written, store.path / "checkpoint.pt"]
    old = [path.read_bytes() for path in paths]
    handles = [path.open("rb") for path in paths]
    try:
        store.save_arrays("data/a.h5", {"x": torch.ones(2000)})
        store.write_text("summary.md", "new\n")
        store.save_checkpoint({"epoch": 2})
        store.wait_for_checkpoint()
        assert [handle.read() for handle in handles] == old
    finally:
        for handle in handles:
            handle.close()
    assert store.load_checkpoint()["epoch"] == 2 and (store.path / "summary.md").read_text() == "new\n"
    store.close()


def test_a_checkpoint_that_cannot_be_written_is_an_error_and_keeps_the_previous_one(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.save_checkpoint({"epoch": 1})
    store.wait_for_checkpoint()
    with pytest.raises(HilError, match=r"checkpoint.pt: writing the checkpoint failed: "):
        store.save_checkpoint({"epoch": 2, "step": lambda: None})  # a value torch cannot save
    (store.path / ".checkpoint.pt.tmp").mkdir()  # the disk refuses the new file
    store.save_checkpoint({"epoch": 3})
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'checkpoint.pt'))}: cannot write \("):
        store.close()  # closing waits for the writer and reports its failure
    (store.path / ".checkpoint.pt.tmp").rmdir()
    reopened = RunStore.open(store.path)
    assert reopened.load_checkpoint()["epoch"] == 1
    reopened.close()


@contextlib.contextmanager
def disk_full_beyond(size: int) -> Iterator[None]:
    """Within the block, the kernel refuses to write any file of this process beyond ``size`` bytes (EFBIG), as a
    full disk refuses a write part-way."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal that would end the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)


def test_a_checkpoint_being_written_as_the_run_folder_is_removed_makes_no_new_folder(tmp_path, monkeypatch) -> None:
    """The checkpoint written in the background made the removed run folder anew, holding only the checkpoint (and,
    for a folder moved, put where the folder is to go back); the run stopped at its next event all the same."""
    import hil.store

    seal, removed = hil.store.seal_checkpoint, threading.Event()
    monkeypatch.setattr(hil.store, "seal_checkpoint", lambda payload: (removed.wait(30), seal(payload))[1])
    store = RunStore.create(tmp_path, "r")
    store.save_checkpoint({"epoch": 1})
    shutil.rmtree(store.path)  # while the checkpoint is being written
    removed.set()
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path))}: the run folder was removed or moved "
                                           r"during the run"):
        store.wait_for_checkpoint()
    assert not store.path.exists()
    store.close()


def test_arrays_being_made_into_a_file_as_the_run_folder_is_removed_make_no_new_folder(tmp_path, monkeypatch) -> None:
    """The folder was checked before the HDF5 file was made in memory (gzip on a large collect takes a while), not
    before it was written: a folder removed meanwhile was made anew, holding only that file."""
    import hil.store

    store = RunStore.create(tmp_path, "r")
    jsonable = hil.store._jsonable

    def removed_meanwhile(value):  # as the file's attributes are made
        shutil.rmtree(store.path, ignore_errors=True)
        return jsonable(value)

    monkeypatch.setattr(hil.store, "_jsonable", removed_meanwhile)
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path))}: the run folder was removed or moved "
                                           r"during the run"):
        store.save_arrays("data/a.h5", {"x": [1.0]}, {"unit": "V"})
    assert not store.path.exists()
    store.close()


def test_a_checkpoint_the_disk_refuses_part_way_leaves_no_temporary_file_taking_its_space(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.save_checkpoint({"epoch": 1})
    store.wait_for_checkpoint()
    with disk_full_beyond(64 * 1024):
        store.save_checkpoint({"epoch": 2, "weights": torch.zeros(64 * 1024)})  # 256 kB
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'checkpoint.pt'))}: cannot write \("):
            store.wait_for_checkpoint()
    assert not (store.path / ".checkpoint.pt.tmp").exists()
    assert store.load_checkpoint()["epoch"] == 1
    store.close()


def test_an_event_the_disk_refuses_part_way_is_not_in_the_log_and_its_number_is_reused(tmp_path) -> None:
    """No torn line before later events (resume would refuse the log), and no number twice."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_started")
    size = (store.path / "events.jsonl").stat().st_size
    with disk_full_beyond(size + 20), pytest.raises(RunFileError, match=r"events\.jsonl: cannot write \("):
        store.event("batch", note="x" * 200)
    store.event("run_failed")
    store.close()
    lines = (store.path / "events.jsonl").read_bytes().splitlines(keepends=True)
    assert [(json.loads(line)["seq"], json.loads(line)["kind"]) for line in lines] == [(1, "run_started"),
                                                                                     (2, "run_failed")]
    reopened = RunStore.open(store.path)
    assert reopened.next_seq == 3
    reopened.close()


def test_rewinding_twice_keeps_everything_discarded_both_times(tmp_path) -> None:
    store = five_events(tmp_path)
    store = RunStore.open(store.path)
    assert store.rewind_events(4) == 2
    store.event("resumed")
    assert store.rewind_events(3) == 2
    store.close()
    discarded = [json.loads(line) for line in (store.path / "events.discarded.jsonl").read_bytes().splitlines()]
    assert [(e["seq"], e["kind"]) for e in discarded] == [(4, "batch"), (5, "batch"), (3, "batch"), (4, "resumed")]


@pytest.mark.parametrize("torn", [False, True], ids=["whole lines", "a torn last line"])
def test_a_rewind_killed_before_the_log_is_rewritten_keeps_the_discarded_events_once(tmp_path, torn) -> None:
    """A resume killed (kill -9) after its rewind had kept the later events aside but before the log was rewritten
    left them in the log; the next resume kept them aside a second time."""
    log = five_events(tmp_path).path / "events.jsonl"
    if torn:
        with log.open("ab") as handle:
            handle.write(b'{"seq": 6, "ki')
    killed = subprocess.run([sys.executable, "-c", "import os, signal, hil.store as s; "
                             "s.atomic_write = lambda path, data: os.kill(os.getpid(), signal.SIGKILL); "
                             f"s.RunStore.open({str(log.parent)!r}).rewind_events(4)"], check=False)
    assert killed.returncode == -signal.SIGKILL
    store = RunStore.open(log.parent)
    assert store.rewind_events(4) == 2 + torn
    assert [e["seq"] for e in store.events()] == [1, 2, 3]
    store.close()
    discarded = (log.parent / "events.discarded.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in discarded[:2]] == [4, 5] and discarded[2:] == torn * [b'{"seq": 6, "ki']


def test_a_rewind_that_cannot_keep_the_discarded_events_changes_nothing(tmp_path) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    original = log.read_bytes()
    (log.parent / "events.discarded.jsonl").mkdir()  # the discarded log cannot be written
    store = RunStore.open(log.parent)
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(log.parent / 'events.discarded.jsonl'))}: "
                                           r"cannot write \("):
        store.rewind_events(2)
    store.close()
    assert log.read_bytes() == original


def test_a_file_that_cannot_be_written_is_a_clear_error_and_keeps_what_was_there(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.event("run_started")
    (store.path / "summary.md").mkdir()  # the disk refuses the file (as it would when full)
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'summary.md'))}: cannot write \(.+\); free "
                                           r"disk space "
                                           "or fix the folder's permissions: what the run wrote before is kept$"):
        store.write_text("summary.md", "text")
    with pytest.raises(ValueError, match="seq and time are the store's own"):
        store.event("batch", seq=7)
    store.close()
    assert [(e["seq"], e["kind"]) for e in store.events()] == [(1, "run_started")]


def test_a_last_line_without_its_newline_is_torn_and_moved_aside(tmp_path) -> None:
    """A crash between an event's text and its newline leaves a line that parses; it is still torn (the next
    event would be glued to it), so it is not counted and a rewind moves it aside."""
    log = five_events(tmp_path).path / "events.jsonl"
    original = log.read_bytes()
    log.write_bytes(original[:-1])
    store = RunStore.open(log.parent)
    assert [e["seq"] for e in store.events()] == [1, 2, 3, 4] and store.next_seq == 5
    assert store.rewind_events(5) == 1
    store.event("resumed")
    store.close()
    assert [(e["seq"], e["kind"]) for e in store.events()][-2:] == [(4, "batch"), (5, "resumed")]
    assert (log.parent / "events.discarded.jsonl").read_bytes() == original[original.rindex(b"\n", 0, -1) + 1:]


def test_hdf5_attributes_that_are_not_json_are_a_clear_error(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    with h5py.File(store.path / "other.h5", "w") as handle:  # a real HDF5 file, not written by the store
        handle.create_dataset("x", data=[1.0, 2.0])
        handle.attrs["note"] = "not JSON"
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'other.h5'))}: HDF5 data unreadable"):
        store.load_arrays("other.h5")
    (store.path / "folder.h5").mkdir()
    with pytest.raises(RunFileError, match=r"folder.h5: HDF5 data unreadable \(it is a folder\); [^\n]*$"):
        store.load_arrays("folder.h5")
    store.close()


def test_an_hdf5_attribute_nested_past_the_recursion_limit_is_a_clear_error(tmp_path) -> None:
    """json.loads of an attribute nested a thousand brackets deep raised a RecursionError through load_arrays, so
    hil report gave a traceback instead of naming the file, as a log line so nested no longer does."""
    store = RunStore.create(tmp_path, "r")
    with h5py.File(store.path / "other.h5", "w") as handle:
        handle.create_dataset("x", data=[1.0, 2.0])
        handle.attrs["note"] = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'other.h5'))}: HDF5 data unreadable "
                                           r"\(.*\); the file is "
                                           r"missing or damaged: restore it from a backup, or start a new run$"):
        store.load_arrays("other.h5")
    store.close()


class NotPlainData:
    """Anything a checkpoint must not hold: loading it would run code from the file."""


def sealed(content: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return seal_checkpoint(buffer.getvalue())


@pytest.mark.parametrize(("data", "reason"), [
    (lambda: sealed({"epoch": 2}), r"not a checkpoint of hil"),
    (lambda: sealed({"next_seq": 3, "payload": NotPlainData()}), r".*Weights only load failed.*"),
    (lambda: sealed({"next_seq": 3})[:-200] + bytes(200), r"damaged: its checksum does not match"),
    (lambda: sealed({"next_seq": 3})[len(CHECKPOINT_MAGIC) + 32:], r"not a checkpoint of hil"),  # a bare torch file
    (lambda: b"", r"not a checkpoint of hil"),
    (None, r"Is a directory"),
])
def test_a_checkpoint_damaged_or_not_plain_data_is_refused(tmp_path, data, reason) -> None:
    store = RunStore.create(tmp_path, "r")
    if data is None:
        (store.path / "checkpoint.pt").mkdir()
    else:
        (store.path / "checkpoint.pt").write_bytes(data())
    with pytest.raises(RunFileError, match=rf"checkpoint.pt: checkpoint unreadable \({reason}\); "):
        store.load_checkpoint()
    store.close()


@contextlib.contextmanager
def held_in_another_process(path: Path, reporting: bool = False) -> Iterator[subprocess.Popen]:
    """Another hil process holding the run folder ``path`` open (as `hil report` does where ``reporting``) until the
    block ends."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from hil.store import RunStore; "
                               f"s = RunStore.open({str(path)!r}, reporting={reporting}); print('open', flush=True); "
                               "sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline() == "open\n"  # type: ignore[union-attr]
        yield holder
    finally:
        holder.communicate("")


def test_a_run_open_in_another_process_is_refused_naming_it(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.close()
    with held_in_another_process(store.path) as holder, pytest.raises(
            RunFileError, match=rf"^{re.escape(str(store.path))} is open in another hil process \(pid {holder.pid}\)"):
        RunStore.open(store.path)
    RunStore.open(store.path).close()  # free again once that process has ended
    reopened = RunStore.open(store.path)
    with pytest.raises(RunFileError, match="is already open in this process"):
        RunStore.open(store.path)
    reopened.close()


def test_a_run_without_an_ending_is_running_while_a_process_holds_it_and_incomplete_after(tmp_path) -> None:
    store = RunStore.create(tmp_path, "live")
    store.event("run_started", protocol="p")
    lock = store.path / ".lock"
    before = lock.read_bytes()
    assert [run["status"] for run in list_runs(tmp_path)] == ["running"]
    assert lock.read_bytes() == before  # looked at, not taken
    store.close()  # as a kill -9 leaves it: no ending, nobody holding it
    assert [run["status"] for run in list_runs(tmp_path)] == ["incomplete"]


def test_list_runs_newest_first_with_the_status_of_their_last_end(tmp_path) -> None:
    ends = {"20260101-000000-a": ["run_interrupted", "run_resumed", "run_finished"],
            "20260102-000000-b": ["run_failed", "run_resumed", "run_interrupted"],
            "20260103-000000-c": ["run_interrupted"]}
    for name, kinds in ends.items():
        (tmp_path / name).mkdir()
        store = RunStore(tmp_path / name)
        store.event("run_started", protocol=name[-1])
        for kind in kinds:
            store.event(kind)
        store.close()
    runs = list_runs(tmp_path)
    assert [(r["protocol"], r["status"]) for r in runs] == [("c", "interrupted"), ("b", "interrupted"),
                                                             ("a", "finished")]


def test_a_run_that_ended_before_run_started_is_listed_with_the_name_in_its_protocol_file(tmp_path) -> None:
    """A run whose instrument could not be connected logs a run_failed and no run_started, which alone named the
    protocol: it was listed as protocol '?'. Its folder keeps the protocol's text, which names it."""
    for name, protocol in (("20260101-000000-named", "name: sweep\nseed: 0\n"),
                           ("20260102-000000-nameless", None),
                           ("20260103-000000-broken", "name: [sweep\n"),
                           ("20260104-000000-date", "name: 2026-01-04\n")):  # text, as hil reads its files
        (tmp_path / name).mkdir()
        store = RunStore(tmp_path / name)
        if protocol is not None:
            store.write_text("protocol.yaml", protocol)
        store.event("run_failed", error="smu (TCPIP::127.0.0.1::1::SOCKET): connection failed during 'open'")
        store.close()
    assert [(r["protocol"], r["status"]) for r in list_runs(tmp_path)] == [
        ("2026-01-04", "failed"), ("?", "failed"), ("?", "failed"), ("sweep", "failed")]


def test_a_run_that_ended_before_run_started_with_a_protocol_file_that_names_nothing_is_listed_as_unnamed(
        tmp_path) -> None:
    """A protocol.yaml without a name, or holding a list or a bare value (a file saved half-edited), names no
    protocol: such a run is listed with "?", as one without the file is; the listing does not fail, nor show None."""
    for name, protocol in (("20260101-000000-no-name", "seed: 0\n"), ("20260102-000000-list", "- sweep\n"),
                           ("20260103-000000-value", "sweep\n")):
        (tmp_path / name).mkdir()
        store = RunStore(tmp_path / name)
        store.write_text("protocol.yaml", protocol)
        store.event("run_failed", error="smu (TCPIP::127.0.0.1::1::SOCKET): connection failed during 'open'")
        store.close()
    assert [(r["protocol"], r["status"]) for r in list_runs(tmp_path)] == [("?", "failed")] * 3


def test_a_run_is_finished_when_opened_only_if_its_log_ends_with_run_finished(tmp_path) -> None:
    """A run whose log goes on after its run_finished (a Ctrl-C or a failure as it ended, logged after it) ended
    otherwise: `list_runs` says so, and its store does not call it finished (a resume would leave it as it is)."""
    endings = {"a": ["run_finished"], "b": ["run_finished", "run_failed"], "c": ["run_finished", "run_interrupted"],
               "d": []}
    for name, kinds in endings.items():
        store = RunStore.create(tmp_path, name)
        store.event("run_started", protocol="p")
        for kind in kinds:
            store.event(kind)
        store.close()
    for name, kinds in endings.items():
        store = RunStore.open(next(tmp_path.glob(f"*{name}")))
        try:
            finished = store.finished_before
            assert (finished == store.events()[-1]) if kinds == ["run_finished"] else finished is None, name
        finally:
            store.close()
    assert sorted(r["status"] for r in list_runs(tmp_path)) == ["failed", "finished", "incomplete", "interrupted"]


def test_a_failed_run_is_listed_with_the_step_it_failed_in(tmp_path) -> None:
    """`hil runs` said "failed" of a run that failed at hour 3 of its training as of one refused an instrument as it
    started: the step is said where the run_failed names one, the cause's where a failed safe state followed it."""
    endings = {"a": [{"step": "train"}], "b": [{"step": "collect"}, {"error": f"{SAFE_STATE_FAILED}smu: no reply"}],
               "c": [{}]}
    for name, failures in endings.items():
        store = RunStore.create(tmp_path, name)
        store.event("run_started", protocol=name)
        for fields in failures:
            store.event("run_failed", **{"error": "smu: connection lost"} | fields)
        store.close()
    assert sorted((r["protocol"], r["status"]) for r in list_runs(tmp_path)) == [
        ("a", "failed in train"), ("b", "failed in collect"), ("c", "failed")]


def test_data_an_attempt_wrote_after_its_last_checkpoint_is_kept_aside_not_overwritten(tmp_path) -> None:
    """A run killed after writing its twin data but before the checkpoint that records it redoes the collection when
    resumed: on a bench that is a second measurement, so the first is kept (``.discarded``), not overwritten. A file
    the run itself wrote is replaced as before."""
    store = RunStore.create(tmp_path, "r")
    store.save_arrays("data/twin_data.h5", {"x": torch.ones(3)})
    store.close()
    for attempt in (2.0, 3.0):  # two resumed attempts, neither of which checkpointed the file
        resumed = RunStore.open(store.path)
        resumed.save_arrays("data/twin_data.h5", {"x": torch.full((3,), attempt)})
        resumed.close()
    resumed = RunStore.open(store.path)
    resumed.digests["data/twin_data.h5"] = "recorded by the checkpoint resumed from"
    resumed.save_arrays("data/twin_data.h5", {"x": torch.full((3,), 4.0)})
    kept = {name: float(resumed.load_arrays(f"data/{name}")[0]["x"][0])
            for name in ("twin_data.h5", "twin_data.discarded.h5", "twin_data.discarded-2.h5")}
    assert kept == {"twin_data.h5": 4.0, "twin_data.discarded.h5": 1.0, "twin_data.discarded-2.h5": 2.0}
    resumed.close()


def test_every_file_is_synced_whole_under_its_temporary_name_before_it_replaces_the_old(tmp_path, fsynced) -> None:
    """A power cut just after the rename must find the new bytes on disk, not an empty file: each file is flushed and
    synced in full before it is renamed into place (the discarded log before the log it came out of is rewritten);
    then its folder is synced, renamed (no temporary left in it), so that the power cut cannot undo the rename; a
    folder made for it (report/) is synced into its parent first."""
    store = five_events(tmp_path)
    store = RunStore.open(store.path)
    fsynced.clear()
    store.write_text("summary.md", "text\n")
    store.write_text("report/plot.png", "png\n")
    store.save_checkpoint({"epoch": 1})
    store.wait_for_checkpoint()
    log = (store.path / "events.jsonl").read_bytes()
    store.rewind_events(4)
    store.close()
    checkpoint = (store.path / "checkpoint.pt").stat().st_size
    discarded = (store.path / "events.discarded.jsonl").read_bytes()
    synced = [(s.path.name, s.size) if s.size is not None else (f"{s.path.relative_to(store.path)}/", s.temporaries)
              for s in fsynced]  # a folder: with the temporaries it holds
    assert synced == [(".summary.md.tmp", 5), ("./", ()), ("./", ()), (".plot.png.tmp", 4), ("report/", ()),
                      (".checkpoint.pt.tmp", checkpoint), ("./", ()), ("events.discarded.jsonl", len(discarded)),
                      (".events.jsonl.tmp", len(log) - len(discarded)), ("./", ())]


def test_a_new_run_folder_and_the_folders_made_for_it_are_synced_into_their_parents(tmp_path, monkeypatch,
                                                                                    fsynced) -> None:
    """A power cut after the run's first files were synced could still lose the folders that hold them: made, never
    synced into their parents."""
    store = RunStore.create(tmp_path / "runs" / "lab", "r")
    monkeypatch.undo()
    store.close()
    assert [s.path for s in fsynced] == [tmp_path, tmp_path / "runs", tmp_path / "runs" / "lab"]
    assert store.path.parent == tmp_path / "runs" / "lab"


def test_a_file_is_written_where_its_folder_cannot_be_opened_to_sync(tmp_path, monkeypatch) -> None:
    """Where a folder cannot be opened (Windows, some network file systems), the rename is not synced: the file is
    written all the same."""
    store = RunStore.create(tmp_path, "r")
    opening = os.open

    def refusing_folders(path: str | Path, flags: int, *args: int) -> int:
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return opening(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_folders)
    store.write_text("summary.md", "text\n")
    monkeypatch.undo()
    store.close()
    assert (store.path / "summary.md").read_text() == "text\n"


def test_a_file_and_a_run_folder_are_written_where_the_file_system_cannot_sync_a_folder(tmp_path,
                                                                                         monkeypatch) -> None:
    """Some file systems open a folder but refuse to sync it (EINVAL: a VirtualBox or WSL share of a Windows drive):
    every file of the run failed there, 'cannot write (Invalid argument)' though it was in place, and a new run folder
    was refused, left behind empty. Such a folder is left unsynced, as one that cannot be opened is."""
    fsync = os.fsync

    def refusing_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", refusing_folders)
    store = RunStore.create(tmp_path / "runs", "r")
    store.write_text("report/summary.md", "text\n")
    monkeypatch.undo()
    store.close()
    assert (store.path / "report" / "summary.md").read_text() == "text\n"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [store.path.name]


def test_a_ctrl_c_while_a_file_is_written_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    store = RunStore.create(tmp_path, "r")
    store.write_text("summary.md", "old\n")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_text("summary.md", "new\n")
    monkeypatch.undo()
    store.close()
    assert (store.path / "summary.md").read_text() == "old\n" and not (store.path / ".summary.md.tmp").exists()


def test_a_reader_holding_the_log_sees_it_whole_after_a_rewind(tmp_path) -> None:
    """A rewind writes the kept events to a new log renamed into place: the old one is never cut where it is, so a
    crash mid-rewind (or a reader such as ``hil runs``) still finds every event."""
    log = five_events(tmp_path).path / "events.jsonl"
    original = log.read_bytes()
    store = RunStore.open(log.parent)
    with log.open("rb") as reader:
        store.rewind_events(2)
        assert reader.read() == original
    store.close()


def test_a_refused_checkpoint_is_reported_by_the_next_save_before_it_writes_another(tmp_path) -> None:
    """The orchestrator saves a checkpoint after each epoch without waiting: a disk that refused one stops the run
    at the next, rather than being found only when the run ends."""
    store = RunStore.create(tmp_path, "r")
    (store.path / ".checkpoint.pt.tmp").mkdir()
    store.save_checkpoint({"epoch": 1})
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'checkpoint.pt'))}: cannot write \("):
        store.save_checkpoint({"epoch": 2})
    (store.path / ".checkpoint.pt.tmp").rmdir()
    store.close()
    assert not (store.path / "checkpoint.pt").exists()


def test_a_run_folder_whose_lock_the_full_disk_refuses_as_it_is_made_is_not_made(tmp_path) -> None:
    """The error named the lock of a folder then removed, and said that what the run wrote before was kept (nothing
    was): it is the folder that cannot be made, as when the disk refuses the folder itself."""
    with disk_full_beyond(0), pytest.raises(ConfigError, match=rf"^output.root: cannot create a run folder in "
                                                               rf"{re.escape(str(tmp_path))} \(File too large\); set "
                                                               r"output.root "):
        RunStore.create(tmp_path, "r")
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_refused_at_opening_is_not_left_locked(tmp_path) -> None:
    """While the error is still held (a caller that reports it, then retries after the repair), the folder is free."""
    log = five_events(tmp_path).path / "events.jsonl"
    log.rename(log.with_name("events.jsonl.saved"))
    log.mkdir()
    with pytest.raises(RunFileError, match="event log unreadable") as refused:
        RunStore.open(log.parent)
    log.rmdir()
    log.with_name("events.jsonl.saved").rename(log)
    RunStore.open(log.parent).close()
    assert refused.value is not None and list_runs(tmp_path)[0]["status"] == "incomplete"


def test_a_run_folder_whose_lock_the_full_disk_refuses_is_an_error_naming_the_lock(tmp_path) -> None:
    """The pid written into the lock was not under the store's write errors: hil report or a resume on a full disk
    said "cannot write standard output" (exit 1), the OSError naming no file, and the folder stayed locked."""
    run = five_events(tmp_path).path
    (run / ".lock").unlink()  # a lock that held a pid gives the page it frees back to the pid
    log = (run / "events.jsonl").read_bytes()
    with disk_full_beyond(0), pytest.raises(RunFileError, match=rf"^{re.escape(str(run / '.lock'))}: cannot write "
                                                                r"\(File too large\); "
                                                                 "free disk space"):
        RunStore.open(run)
    assert (run / "events.jsonl").read_bytes() == log and not held(run)
    RunStore.open(run).close()


def test_a_run_folder_a_full_disk_refuses_is_an_error_saying_to_free_space(tmp_path, monkeypatch) -> None:
    """It said to set output.root to a folder one can write to, as for a permission, where the folder is writable."""
    def full(path, *args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(os, "mkdir", full)
    with pytest.raises(ConfigError, match=rf"^output\.root: cannot create a run folder in {re.escape(str(tmp_path))} "
                                          r"\(No space left "
                                          r"on device\); free disk space there, or set output\.root to a folder on "
                                          r"another disk$"):
        RunStore.create(tmp_path, "r")


def test_a_rewind_the_full_disk_takes_part_of_leaves_the_discarded_log_whole_for_the_next(tmp_path) -> None:
    """The events set aside were appended to the discarded log as far as the disk took them, and left there: the
    next rewind (a resume once space was freed) appended them whole after that part, a damaged line and events kept
    aside twice."""
    store = RunStore.create(tmp_path, "r")
    for k in range(50):
        store.event("batch", k=k, note="x" * 100)
    log = (store.path / "events.jsonl").read_bytes()
    with disk_full_beyond(1000), pytest.raises(RunFileError, match=r"events\.discarded\.jsonl: cannot write \("):
        store.rewind_events(10)
    assert (store.path / "events.discarded.jsonl").read_bytes() == b"" and (store.path / "events.jsonl").read_bytes() \
        == log
    assert store.rewind_events(10) == 41
    store.close()
    lines = (store.path / "events.discarded.jsonl").read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["seq"] for line in lines] == list(range(10, 51))


def test_an_hdf5_file_whose_own_structures_are_damaged_is_an_error_naming_it(tmp_path) -> None:
    """h5py raises RuntimeError for a damaged B-tree or heap (a disk error inside the file): hil report, and a run
    reusing the file through twin.from_run, ended in a traceback. The file is in the format hil wrote before 1.10's
    (as runs on disk hold it), whose root group has a B-tree: a file save_arrays writes now has none."""
    store = RunStore.create(tmp_path, "r")
    path = store.path / "data" / "a.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as handle:  # HDF5's earliest format, as save_arrays wrote it before
        handle.create_dataset("labels", data=np.arange(10))
        handle.attrs["class_names"] = json.dumps(["a", "b"])
    assert path.read_bytes().count(b"TREE") == 1
    path.write_bytes(path.read_bytes().replace(b"TREE", b"\0\0\0\0", 1))  # the root group's B-tree node
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(path))}: HDF5 data unreadable \(.*B-tree.*\); the file "
                                           r"is missing or "
                                           "damaged: restore it from a backup, or start a new run$"):
        store.load_arrays("data/a.h5")
    store.close()


def test_hdf5_attributes_are_stored_as_json_of_plain_values(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.save_arrays("a.h5", {"x": [1.0]}, {"gains": torch.tensor([0.5, 2.0]), "source": tmp_path / "run"})
    _, attrs = store.load_arrays("a.h5")
    store.close()
    assert attrs == {"gains": [0.5, 2.0], "source": str(tmp_path / "run")}


def test_a_line_of_json_without_a_whole_number_seq_is_a_damaged_line(tmp_path) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq": "2", "kind": "batch"}\n'
    log.write_bytes(b"".join(lines))
    assert damaged_lines(log.parent) == [2]


def strict_json(line: str) -> dict:
    """``line`` as a strict JSON reader (jq, JavaScript) reads it: bare NaN and Infinity are refused."""
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_numbers_are_logged_as_strict_json_and_read_back_as_floats(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="NaN")  # a string that spells one stays a string
    store.event("batch", loss=float("nan"), fit={"losses": [1.0, float("inf"), -float("inf")]},
                nmse=torch.tensor([0.5, float("nan")]))
    store.close()
    lines = (store.path / "events.jsonl").read_text().splitlines()
    assert strict_json(lines[1])["loss"] == "NaN" and strict_json(lines[1])["fit"]["losses"][1:] == ["Infinity",
                                                                                                       "-Infinity"]
    reopened = RunStore.open(store.path)
    started, batch = reopened.events()
    reopened.close()
    assert started["protocol"] == "NaN" and "non_finite" not in batch
    assert math.isnan(batch["loss"]) and math.isnan(batch["nmse"][1]) and batch["nmse"][0] == 0.5
    assert batch["fit"] == {"losses": [1.0, math.inf, -math.inf]}
    assert list_runs(tmp_path)[0]["protocol"] == "NaN"


def test_a_log_of_an_earlier_hil_with_bare_nan_tokens_is_read(tmp_path) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    log.write_bytes(log.read_bytes() + b'{"seq": 6, "kind": "batch", "loss": NaN, "best": -Infinity}\n')
    store = RunStore.open(log.parent)
    last = store.events()[-1]
    store.close()
    assert math.isnan(last["loss"]) and last["best"] == -math.inf


@pytest.mark.parametrize("non_finite", ['"loss"', '[["loss"]]', '[["k"]]', '[["missing"]]', '[[]]', '[["time", 0]]'])
def test_a_line_whose_non_finite_paths_do_not_fit_it_is_a_damaged_line(tmp_path, non_finite: str) -> None:
    log = five_events(tmp_path).path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq": 2, "kind": "batch", "k": 0, "loss": 1.5, "non_finite": %s}\n' % non_finite.encode()
    log.write_bytes(b"".join(lines))
    assert damaged_lines(log.parent) == [2]


def test_an_event_field_named_non_finite_is_refused_as_the_stores_own(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    with pytest.raises(ValueError, match=r"the store's own \(and non_finite\)"):
        store.event("batch", non_finite=[])
    store.close()
    assert (store.path / "events.jsonl").read_bytes() == b""


def test_the_snapshot_is_strict_json_and_reads_back_its_non_finite_numbers(tmp_path) -> None:
    """An instrument's snapshot may hold NaN (a level it cannot report): snapshot.json spells it as the log does."""
    store = RunStore.create(tmp_path, "r")
    store.write_json("snapshot.json", {"smu": {"level_v": math.nan, "limits": [-math.inf, 5.0]}, "name": "NaN"})
    written = strict_json((store.path / "snapshot.json").read_text())
    assert written["smu"] == {"level_v": "NaN", "limits": ["-Infinity", 5.0]}
    read = store.read_json("snapshot.json")
    store.close()
    assert math.isnan(read["smu"]["level_v"]) and read["smu"]["limits"] == [-math.inf, 5.0] and read["name"] == "NaN"
    assert set(read) == {"smu", "name"}


@pytest.mark.parametrize("sessions", [[["unreachable"], ["unreachable again"]], [["unreachable", "unreachable again"]]],
                         ids=["a session each", "one session"])
def test_events_logged_after_a_torn_last_line_are_read_and_the_torn_line_kept_aside_once(tmp_path,
                                                                                          sessions) -> None:
    """A resumed run that fails before its rewind (an instrument unreachable) logs run_failed after a torn last line:
    glued to it, the event was unreadable, and a second such failure made the log damaged before its end. In one
    session the torn line is moved aside once, before the first event: moved again before the second, it would be
    kept aside twice and as many bytes cut off the end of the log, which are the first event's."""
    log = five_events(tmp_path).path / "events.jsonl"
    with log.open("ab") as handle:
        handle.write(b'{"seq": 6, "ki')
    for errors in sessions:
        store = RunStore.open(log.parent)
        for error in errors:
            store.event("run_failed", error=error)
        store.close()
    store = RunStore.open(log.parent)
    assert [(e["seq"], e["kind"]) for e in store.events()][-3:] == [(5, "batch"), (6, "run_failed"),
                                                                     (7, "run_failed")]
    store.close()
    assert (log.parent / "events.discarded.jsonl").read_bytes() == b'{"seq": 6, "ki\n'


@pytest.mark.parametrize("build", ["group", "array attribute", "strings"])
def test_an_hdf5_file_of_other_contents_is_a_clear_error(tmp_path, build) -> None:
    store = RunStore.create(tmp_path, "r")
    with h5py.File(store.path / "other.h5", "w") as handle:  # a real HDF5 file, not written by the store
        if build == "group":
            handle.create_group("g")
        elif build == "array attribute":
            handle.create_dataset("x", data=[1.0])
            handle.attrs["note"] = [1, 2, 3]
        else:
            handle.create_dataset("x", data=["a", "b"])
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'other.h5'))}: HDF5 data unreadable"):
        store.load_arrays("other.h5")
    store.close()


@pytest.mark.parametrize("killed_before", [False, True], ids=["first rewind", "after a rewind killed"])
def test_a_rewind_whose_log_the_disk_refuses_keeps_the_log_open_and_its_discarded_events_once(
        tmp_path, monkeypatch, killed_before: bool) -> None:
    """The log's rewrite refused (a full disk) left its file closed: the run_failed that records the refusal failed
    with "I/O operation on closed file", a traceback, and the next rewind kept the same events aside a second time.
    After a rewind killed (kill -9) before the log was rewritten, which left the later events in both logs, the
    refused rewind found them aside already and kept them there, though the log still held them: the rewind after
    it kept them aside a second time."""
    import hil.store

    log = five_events(tmp_path).path / "events.jsonl"
    original = log.read_bytes()
    if killed_before:  # what the killed rewind left, synced
        (log.parent / "events.discarded.jsonl").write_bytes(b"".join(original.splitlines(keepends=True)[3:]))
    store = RunStore.open(log.parent)
    write = hil.store.atomic_write

    def full_disk(path, data) -> None:
        raise RunFileError(f"{path}: cannot write (No space left on device)")

    monkeypatch.setattr(hil.store, "atomic_write", full_disk)
    with pytest.raises(RunFileError, match="No space left"):
        store.rewind_events(4)
    monkeypatch.setattr(hil.store, "atomic_write", write)
    assert log.read_bytes() == original
    store.event("run_failed", error="no space")
    assert store.rewind_events(4) == 3
    store.close()
    discarded = [json.loads(line) for line in (log.parent / "events.discarded.jsonl").read_bytes().splitlines()]
    assert [(e["seq"], e["kind"]) for e in discarded] == [(4, "batch"), (5, "batch"), (6, "run_failed")]


def test_a_sigterm_as_the_rewound_log_replaces_the_old_one_is_logged_in_the_new(tmp_path, monkeypatch) -> None:
    """A SIGTERM that came after the rewound log replaced the old one and before the store reopened it raised
    there: the run's last event (run_interrupted) went into the old file, unlinked, and was lost. The signal is now
    held until the store writes to the log on disk."""
    import hil.store
    from hil.errors import terminate_on_signals

    path = five_events(tmp_path).path
    store = RunStore.open(path)
    write = hil.store.atomic_write

    def write_then_sigterm(path, data) -> None:
        write(path, data)
        if path.name == "events.jsonl":
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(hil.store, "atomic_write", write_then_sigterm)
    with terminate_on_signals(), pytest.raises(Terminated):
        store.rewind_events(4)
    store.event("run_interrupted")
    store.close()
    kinds = [event["kind"] for event in RunStore.open(path).events()]
    assert kinds == ["run_started", "batch", "batch", "run_interrupted"]


def test_a_sigterm_as_a_rewind_sets_events_aside_keeps_each_aside_once(tmp_path, monkeypatch) -> None:
    """A SIGTERM after the later events were set aside and before the log was rewritten left them in both: the run
    logged run_interrupted after them, so the next rewind set them all aside again, each twice in the discarded log."""
    from hil.errors import terminate_on_signals

    path = five_events(tmp_path).path
    store = RunStore.open(path)
    set_aside = RunStore._set_aside

    def set_aside_then_sigterm(self, lines) -> int:
        size = set_aside(self, lines)
        signal.raise_signal(signal.SIGTERM)
        return size

    monkeypatch.setattr(RunStore, "_set_aside", set_aside_then_sigterm)
    with terminate_on_signals(), pytest.raises(Terminated):
        store.rewind_events(4)
    monkeypatch.undo()
    store.event("run_interrupted")
    store.rewind_events(4)
    store.close()
    discarded = [json.loads(line)["seq"] for line in (path / "events.discarded.jsonl").read_bytes().splitlines()]
    assert discarded == [4, 5, 4] and [event["seq"] for event in RunStore.open(path).events()] == [1, 2, 3]


#: Text with what JSON and a line-based log must escape: control characters, line and paragraph separators (U+2028),
#: NEL, lone surrogates (a file name in another encoding).
_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\n\r\x00\x1f\u2028\u2029\x85\ud800\udce9"), max_size=4)
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
    | st.sampled_from([-0.0, 5e-324, 2**64, -(10**300), math.nan, math.inf, -math.inf, "NaN", "Infinity"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8)


def _same(read: object, written: object) -> bool:
    """Equal as JSON values, a NaN equal to a NaN and -0.0 told from 0.0."""
    if isinstance(written, float):
        if math.isnan(written):
            return isinstance(read, float) and math.isnan(read)
        return isinstance(read, float) and read == written and math.copysign(1, read) == math.copysign(1, written)
    if isinstance(written, list):
        return isinstance(read, list) and len(read) == len(written) and all(map(_same, read, written))
    if isinstance(written, dict):
        return isinstance(read, dict) and read.keys() == written.keys() and all(_same(read[k], written[k])
                                                                              for k in written)
    return type(read) is type(written) and read == written


@settings(max_examples=150, deadline=None, derandomize=True)
@given(kind=_TEXT | st.integers() | st.none() | st.lists(st.integers(), max_size=1),
       fields=st.dictionaries(_TEXT.filter(lambda key: key not in ("seq", "time", "kind", "non_finite")), _VALUE,
                              max_size=4))
def test_any_event_is_read_back_as_logged_or_refused_leaving_the_log_intact(tmp_path_factory, kind, fields) -> None:
    """A kind that is not text (a number, None) was logged on a line that every later read took for damage: a
    resume refused the run ("damaged line ... before the end of the log") once any event followed it."""
    store = RunStore.create(tmp_path_factory.mktemp("runs"), "r")
    store.event("run_started", protocol="p")
    try:
        logged = store.event(kind, **fields)
    except (TypeError, ValueError):  # refused whole: nothing written, and its number is the next event's
        logged = None
    store.event("run_finished")
    store.close()
    lines = (store.path / "events.jsonl").read_bytes().splitlines(keepends=True)
    reopened = RunStore.open(store.path)
    try:
        events, damaged = reopened.readable_events()
        assert damaged == [] and [event["seq"] for event in events] == list(range(1, len(lines) + 1))
        assert _same([parse_event(line) for line in lines], reopened.events())
        if logged is not None:
            assert _same(events[1], logged)
        assert reopened.rewind_events(2) == len(lines) - 1
        assert (store.path / "events.jsonl").read_bytes() + (store.path / "events.discarded.jsonl").read_bytes() \
            == b"".join(lines)
    finally:
        reopened.close()


@settings(max_examples=80, deadline=None, derandomize=True)
@given(hnp.arrays(hnp.boolean_dtypes() | hnp.integer_dtypes(endianness="?") | hnp.unsigned_integer_dtypes(
    endianness="?") | hnp.floating_dtypes(endianness="?") | hnp.complex_number_dtypes(endianness="?", sizes=(64, 128)),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
       st.booleans())
def test_any_numeric_array_is_loaded_as_it_was_saved(tmp_path_factory, array: np.ndarray, transposed: bool) -> None:
    """One of 0 dimensions (a scalar) was read by h5py as a numpy scalar, which torch.from_numpy refuses, and one
    stored big-endian in an order torch refuses: load_arrays called the file damaged (missing or damaged: restore it
    from a backup) that save_arrays had just written."""
    array = array.T if transposed else array  # not contiguous
    store = RunStore.create(tmp_path_factory.mktemp("runs"), "r")
    store.save_arrays("a.h5", {"a": array}, {"shape": array.shape})
    arrays, attrs = store.load_arrays("a.h5")
    store.close()
    loaded = arrays["a"].numpy()
    assert loaded.shape == array.shape and loaded.dtype == array.dtype.newbyteorder("=") and attrs == {
        "shape": list(array.shape)}
    assert np.array_equal(loaded, array, equal_nan=array.dtype.kind in "fc")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=40) | st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth + b"\n")
       | st.integers(1, 200_000).map(lambda depth: b'{"seq": 2, "kind": "x", "a": ' + b"[" * depth + b"]" * depth
                                     + b"}\n"))
def test_any_line_of_a_log_is_an_event_or_damage_and_never_stops_its_reader(tmp_path_factory, line: bytes) -> None:
    """A line nested deeper than the interpreter's recursion limit (a thousand brackets) raised a RecursionError from
    json.loads: opening the run, hil report and hil runs (every run's listing, not just this one's) gave a traceback."""
    event = parse_event(line)
    assert event is None or (isinstance(event["seq"], int) and isinstance(event["kind"], str))
    log = five_events(tmp_path_factory.mktemp("runs")).path / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[0], line if line.endswith(b"\n") else line + b"\n", *lines[2:]]))
    damaged = [number for number, whole in enumerate(io.BytesIO(log.read_bytes()), 1) if parse_event(whole) is None]
    assert damaged_lines(log.parent) == damaged
    assert list_runs(log.parent.parent)[0]["status"] == ("damaged log" if damaged else "incomplete")


def _readme_snippet(starting: str) -> str:
    """The README's python block in "What a run stores" that begins with ``starting``, as written there."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What a run stores"):readme.index("## The lab file")]
    for block in section.split("```python\n")[1:]:
        code = "\n".join(line.removeprefix("  ") for line in block.split("```")[0].splitlines())
        if code.startswith(starting):
            return code
    raise AssertionError(f"no snippet beginning {starting!r} in the README")


def test_a_checkpoint_reads_without_hil_as_the_readme_says_and_not_with_torch_load_alone(tmp_path) -> None:
    store = RunStore.create(tmp_path, "r")
    store.event("run_started")
    store.save_checkpoint({"model": {"0.theta": torch.linspace(-1, 1, 5)}, "epoch": 3})
    store.close()
    with pytest.raises(Exception):  # noqa: B017 - the README says so: the file's header is not torch's
        torch.load(store.path / "checkpoint.pt", weights_only=True)
    namespace: dict = {}
    exec(_readme_snippet("import hashlib").replace("runs/<run>", str(store.path)), namespace)
    assert torch.equal(namespace["theta"], torch.linspace(-1, 1, 5)) and namespace["checkpoint"]["epoch"] == 3
    (store.path / "checkpoint.pt").write_bytes(namespace["data"][:-1] + bytes([namespace["data"][-1] ^ 1]))
    with pytest.raises(AssertionError, match="damaged"):
        exec(_readme_snippet("import hashlib").replace("runs/<run>", str(store.path)), {})


def test_a_run_folder_holds_what_the_readme_says_and_its_recipes_rebuild_the_twin_and_the_network(tmp_path) -> None:
    from hil.orchestrator import run_protocol  # a run of the crossbar's protocol, shrunk, refining its twin online

    protocol = {
        "name": "stored", "lab": str(Path(__file__).parents[1] / "lab.yaml"), "system": "crossbar", "seed": 2,
        "dataset": {"name": "digits", "limit": 400},
        "model": {"layers": [{"physical": {}}, {"linear": {"out_features": 10}}]},
        "twin": {"collect": {"thetas": 6, "inputs_per_theta": 32, "repeats": 3, "repeat_thetas": 2},
                 "fit": {"epochs": 3}, "fidelity": {"directions": 1, "repeats": 1}},
        "method": {"name": "pat", "settings": {"refine_every": 2}},
        "training": {"epochs": 2, "batch_size": 64}, "output": {"root": str(tmp_path / "runs")}}
    (tmp_path / "protocol.yaml").write_text(json.dumps(protocol))
    run = run_protocol(tmp_path / "protocol.yaml", show_progress=False).path
    with h5py.File(run / "data/twin_data.h5") as f:
        x, theta, y, repeats = (f[name][()] for name in ("x", "theta", "y", "y_repeats"))
        assert json.loads(f.attrs["system"]) == "crossbar"
        assert json.loads(f.attrs["system_snapshot"])["theta_bounds"] == [-1.0, 1.0]
        measured_at = f["measured_at"][()]
    assert x.shape == (6, 32, 64) and theta.shape == (6, 2048) and y.shape == (6, 32, 32)
    assert repeats.shape == (3, 2, 32, 32) and np.array_equal(repeats[0], y[:2]) and x.dtype == np.float32
    held_out = json.loads((run / "twin/twin.json").read_text())["held_out_groups"]
    with h5py.File(run / "data/fidelity.h5") as f:
        assert np.array_equal(f["measured"][()], y[held_out]) and f["nmse"].shape == f["noise_floor"].shape == (32,)
        assert json.loads(f.attrs["held_out_groups"]) == held_out
        fitted_predictions = torch.from_numpy(f["predicted"][()])
        fitted_twin = {name.removeprefix("twin."): f[name][()] for name in f if name.startswith("twin.")}
    with h5py.File(run / "data/evaluation.h5") as f:
        labels, twin_predictions, confusion = (f[name][()] for name in ("labels", "twin_predictions", "confusion"))
        device_predictions = f["device_predictions"][()]
        network = {name.removeprefix("model."): f[name][()] for name in f if name.startswith("model.")}
        assert json.loads(f.attrs["class_names"]) == [str(k) for k in range(10)] and labels.dtype == np.int64
    assert confusion.sum() == len(labels) and np.trace(confusion) == (labels == device_predictions).sum()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    started, collected = (next(e["time"] for e in events if e["kind"] == kind) for kind in ("run_started", "collected"))
    assert measured_at.dtype == np.float64 and measured_at.shape == (6,)  # each θ group's, in Unix time
    assert started - 0.001 <= measured_at.min() and measured_at.max() <= collected + 0.001  # events: to the ms
    for name in ("twin_data", "fidelity", "evaluation"):  # each file, shared alone, says what made it and what it holds
        with h5py.File(run / f"data/{name}.h5") as f:
            made = {key: json.loads(f.attrs[key]) for key in ("run", "protocol", "seed", "versions", "instruments",
                                                              "written")}
            descriptions = {key: f[key].attrs["description"] for key in f}
        assert made["run"] == run.name and (made["protocol"], made["seed"]) == ("stored", 2)
        assert made["versions"] == events[0]["versions"]
        snapshot = json.loads((run / "snapshot.json").read_text())["instruments"]
        assert made["instruments"] == {name: i["identity"] for name, i in snapshot.items()} != {}
        assert datetime.datetime.fromisoformat(made["written"]).utcoffset() is not None  # local time, with its zone
        assert all(isinstance(text, str) and text.isascii() and text for text in descriptions.values())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    batches = [e for e in events if e["kind"] == "batch"]
    assert (batches[0]["epoch"], batches[0]["batch"]) == (0, 1) and [e["epoch"] for e in events
                                                                     if e["kind"] == "epoch"] == [0, 1]
    namespace: dict = {}
    for starting in ("import hashlib", "from pathlib import Path"):
        exec(_readme_snippet(starting).replace("runs/<run>", str(run)), namespace)
    assert namespace["checkpoint"]["next_seq"] == events[-1]["seq"]  # the last checkpoint: the run's end
    trained = namespace["checkpoint"]["model"]  # the network evaluated, in evaluation.h5 too: read without torch
    assert network.keys() == trained.keys() and all(np.array_equal(network[k], trained[k].numpy()) for k in trained)
    twin, fitted = namespace["twin"], torch.load(run / "twin/twin.pt", weights_only=True)
    assert fitted_twin.keys() == fitted.keys()  # the twin of the predictions, in fidelity.h5 too: read without torch
    assert all(np.array_equal(fitted_twin[k], fitted[k].numpy()) for k in fitted)
    assert any(not torch.equal(fitted[name], value) for name, value in twin.state_dict().items())  # refined online
    twin.load_state_dict(fitted)
    with torch.no_grad():
        again = torch.stack([twin(torch.from_numpy(x[g]), torch.from_numpy(theta[g])) for g in held_out])
    assert torch.equal(again, fitted_predictions)  # twin.pt is the twin as fitted, whose fidelity was measured
    assert np.array_equal(namespace["predictions"].numpy(), twin_predictions)


def _within(seconds: float, call) -> None:
    """``call()`` in a thread, failing the test if it has not returned after ``seconds`` (a read waiting on a named
    pipe for ever): a guard against a hang, not a timing."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung"
    if failure:
        raise failure[0]


def test_a_lock_linked_to_a_file_of_yours_is_refused_and_the_file_kept(tmp_path) -> None:
    """A shared run folder whose .lock was a link to one of the reader's files: opening the run (a report, a resume)
    truncated that file and wrote a pid into it."""
    run = five_events(tmp_path).path
    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes\n")
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(precious)
    with pytest.raises(RunFileError, match=rf"^{re.escape(str(run / '.lock'))}: a symbolic link, not a file a run "
                                           r"writes; nothing "
                                           "was changed: remove it, or put the run's own file back$"):
        RunStore.open(run)
    assert precious.read_text() == "a week of notes\n"
    assert not held(run)


def test_a_report_folder_linked_elsewhere_is_not_written_through(tmp_path) -> None:
    """``report`` a link to another folder: the report's summary and plots landed there, over its files."""
    store = five_events(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "summary.md").write_text("mine\n")
    (store.path / "report").symlink_to(elsewhere)
    store = RunStore.open(store.path)
    try:
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / 'report'))}: a symbolic link, not a "
                                               r"folder a run "
                                               "makes; nothing was written through it"):
            store.write_text("report/summary.md", "report\n")
        with pytest.raises(RunFileError, match="a symbolic link, not a folder a run makes"):
            store.save_arrays("report/x.h5", {"x": torch.zeros(2)})
    finally:
        store.close()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["summary.md"]
    assert (elsewhere / "summary.md").read_text() == "mine\n"


def test_a_temporary_file_left_as_a_link_is_replaced_not_written_through(tmp_path) -> None:
    store = five_events(tmp_path)
    precious = tmp_path / "precious.txt"
    precious.write_text("kept\n")
    (store.path / ".notes.md.tmp").symlink_to(precious)
    store = RunStore.open(store.path)
    try:
        store.write_text("notes.md", "the run's\n")
    finally:
        store.close()
    assert precious.read_text() == "kept\n"
    assert (store.path / "notes.md").read_text() == "the run's\n"
    assert not (store.path / "notes.md").is_symlink()


@pytest.mark.parametrize("make", ["fifo", "dangling link", "link"])
def test_a_log_that_is_a_named_pipe_or_a_link_is_refused_without_waiting_or_writing_elsewhere(tmp_path, make) -> None:
    """A named pipe as events.jsonl made hil runs and hil report wait for ever; a link made a resume append to (and
    rewind) the file it names."""
    five_events(tmp_path)
    run = tmp_path / "20000101-000000-odd"
    run.mkdir()
    target = tmp_path / "target.jsonl"
    if make == "fifo":
        os.mkfifo(run / "events.jsonl")
    else:
        if make == "link":
            target.write_bytes(b'{"seq": 1, "kind": "run_started"}\n')
        (run / "events.jsonl").symlink_to(target)
    before = target.read_bytes() if target.exists() else None
    what = "a named pipe" if make == "fifo" else "a symbolic link"
    refusal = (ConfigError, rf"^{re.escape(str(run))} is not a run folder") if make == "dangling link" else \
        (RunFileError, rf"^{re.escape(str(run / 'events.jsonl'))}: {what}, not a file a run writes")
    with pytest.raises(refusal[0], match=refusal[1]):
        _within(20, lambda: RunStore.open(run))
    listed: list = []
    _within(20, lambda: listed.extend((r["run"], r["status"]) for r in list_runs(tmp_path)))
    assert ("20000101-000000-odd", "unreadable log") in listed
    assert (target.read_bytes() if target.exists() else None) == before


def test_a_lock_that_is_a_named_pipe_is_no_run_held_and_is_refused(tmp_path) -> None:
    run = five_events(tmp_path).path
    (run / ".lock").unlink(missing_ok=True)
    os.mkfifo(run / ".lock")
    answers: list[bool] = []
    _within(20, lambda: answers.append(held(run)))  # without waiting on the pipe
    assert answers == [False]
    with pytest.raises(RunFileError, match="a named pipe, not a file a run writes"):
        _within(20, lambda: RunStore.open(run))


@pytest.mark.parametrize("relative", ["checkpoint.pt", "data/twin_data.h5"])
def test_a_checkpoint_or_data_file_that_is_a_named_pipe_is_refused_without_waiting(tmp_path, relative) -> None:
    """A named pipe as a run's checkpoint or data file made a resume and hil report wait for ever on the read, as one
    as its log did (2a4c8e2)."""
    store = RunStore.open(five_events(tmp_path).path)
    try:
        (store.path / relative).parent.mkdir(exist_ok=True)
        os.mkfifo(store.path / relative)
        load = store.load_checkpoint if relative == "checkpoint.pt" else lambda: store.load_arrays(relative)
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(store.path / relative))}: a named pipe, not a file "
                                               r"a run writes"):
            _within(20, load)
    finally:
        store.close()


@pytest.mark.usefixtures("windows_locks")
def test_hil_stores_runs_where_the_system_has_no_fcntl(tmp_path) -> None:
    """Windows has no fcntl: importing the store failed there (ModuleNotFoundError), and with it hil run, check, runs
    and report. A run held by a process there is refused to another, naming it, and is free once it has ended."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from tests.windows import as_on_windows; "
                               "as_on_windows(); from hil.store import RunStore; "
                               f"s = RunStore.create({str(tmp_path)!r}, 'r'); s.event('run_started', protocol='p'); "
                               "print(s.path, flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])  # where tests.windows is found
    try:
        run = Path(holder.stdout.readline().strip())  # type: ignore[union-attr]
        assert list_runs(tmp_path)[0]["status"] == "running"
        with pytest.raises(RunFileError, match=rf"^{re.escape(str(run))} is open in another hil process \(pid "
                                               rf"{holder.pid}\); "):
            RunStore.open(run)
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and list_runs(tmp_path)[0]["status"] == "incomplete"
    RunStore.open(run).close()


@pytest.mark.usefixtures("windows_locks")
def test_a_run_is_held_by_one_store_with_windows_locks(tmp_path) -> None:
    """msvcrt's locks have no shared kind: a look at a run (hil runs) takes its lock for an instant, and leaves the
    pid in the lock file as it was."""
    store = RunStore.create(tmp_path, "live")
    store.event("run_started", protocol="p")
    pid = (store.path / ".lock").read_bytes()
    assert held(store.path) and [run["status"] for run in list_runs(tmp_path)] == ["running"]
    with pytest.raises(RunFileError, match="is already open in this process"):
        RunStore.open(store.path)
    assert (store.path / ".lock").read_bytes() == pid == f"{os.getpid()}\n".encode()
    store.close()
    assert not held(store.path) and [run["status"] for run in list_runs(tmp_path)] == ["incomplete"]
    store.close()  # closed again: nothing to let go
    RunStore.open(store.path).close()


def test_the_resume_command_pastes_into_the_systems_shell(monkeypatch) -> None:
    """On Windows a run's path (runs\\<run>) was quoted as a POSIX shell reads it, in single quotes, which cmd.exe
    passes on as part of the path: the command hil said to paste failed. There, a path is quoted in double quotes where
    it holds a space, as cmd.exe and PowerShell both read it; elsewhere as before."""
    with monkeypatch.context() as linux:  # as Linux names itself, where this test runs on another system too
        linux.setattr(sys, "platform", "linux")
        assert resume_command(PurePosixPath("/data/my runs/r")) == "hil run --resume '/data/my runs/r'"
        assert resume_command(PurePosixPath("runs/20261207-101500-r")) == "hil run --resume runs/20261207-101500-r"
    with monkeypatch.context() as windows:  # as Windows names itself, for these two calls alone
        windows.setattr(sys, "platform", "win32")
        said = [resume_command(PureWindowsPath(path)) for path in (r"runs\20261207-101500-r", r"C:\lab\my runs\r")]
    assert said == [r"hil run --resume runs\20261207-101500-r", r'hil run --resume "C:\lab\my runs\r"']


def test_the_resume_command_quotes_a_windows_path_holding_what_its_shells_read_apart(monkeypatch) -> None:
    """A lab's folder named R&D, or a run folder's name with a ; or brackets, was left bare on Windows: cmd.exe ran
    the command up to the & and then D:\\runs\\r as another, and PowerShell ended the command at the ;."""
    with monkeypatch.context() as windows:  # as Windows names itself, for these calls alone
        windows.setattr(sys, "platform", "win32")
        said = [resume_command(PureWindowsPath(path)) for path in (r"C:\R&D\runs\r", r"runs\a;b", r"runs\(old)")]
        word = shell_word("C:\\R&D\\")
    assert said == [r'hil run --resume "C:\R&D\runs\r"', r'hil run --resume "runs\a;b"',
                    r'hil run --resume "runs\(old)"']
    assert word == r'"C:\R&D\\"'  # a backslash before the closing quote would escape it: doubled


def test_a_file_windows_holds_for_an_instant_after_it_is_written_is_replaced_all_the_same(tmp_path,
                                                                                          monkeypatch) -> None:
    """On Windows an antivirus scanner or the search indexer opens a file just written for an instant, and a rename
    over it is refused meanwhile (Access is denied): a checkpoint refused so stopped the run, saying to free disk
    space. There the rename is tried again for a while; a file held for longer is refused as before, the old file
    kept. Elsewhere a refused rename is not tried again."""
    import time

    store = RunStore.create(tmp_path, "r")
    store.write_bytes("notes.txt", b"old")
    replace, refusals, slept = os.replace, [], []

    def held_for_an_instant(source, destination) -> None:
        if refusals:
            raise refusals.pop()
        replace(source, destination)

    monkeypatch.setattr(os, "replace", held_for_an_instant)
    monkeypatch.setattr(time, "sleep", slept.append)
    outcomes = []
    for refused in (2, 8):
        refusals[:] = [PermissionError(13, "Access is denied")] * refused
        with monkeypatch.context() as windows:  # as Windows names itself, for the write alone
            windows.setattr(sys, "platform", "win32")
            try:
                store.write_bytes("notes.txt", f"held {refused}".encode())
            except WriteRefused as error:
                outcomes.append(str(error))
        outcomes.append((store.path / "notes.txt").read_bytes())
    assert outcomes == [b"held 2", f"{store.path / 'notes.txt'}: cannot write (Access is denied); free disk space or "
                        "fix the folder's permissions: what the run wrote before is kept", b"held 2"]
    assert slept == [0.01, 0.02, *(0.01 * 2**k for k in range(7))]
    assert sorted(path.name for path in store.path.iterdir()) == [".lock", "events.jsonl", "notes.txt"]
    refusals[:] = [PermissionError(13, "Permission denied")]
    with monkeypatch.context() as linux, pytest.raises(WriteRefused):  # as Linux names itself, on Windows too
        linux.setattr(sys, "platform", "linux")
        store.write_bytes("notes.txt", b"refused")
    assert len(slept) == 9
    store.close()


def test_files_and_folders_are_synced_through_the_drives_cache_on_macos(tmp_path, monkeypatch, fsynced) -> None:
    """On macOS fsync leaves what it syncs in the drive's cache, which a power cut loses: a checkpoint synced so before
    it replaced the last could be lost with it. There each file and folder is synced with F_FULLFSYNC, and with fsync
    where the file system refuses that."""
    from hil import store as module

    through: list[Path] = []

    def file_control(fd: int, command: int) -> int:  # macOS's fcntl(fd, F_FULLFSYNC), which syncs through the cache
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.name in ("sub", ".refused.txt.tmp"):  # a file system that refuses it
            raise OSError(errno.ENOTSUP, "Operation not supported")
        through.append(path)
        return 0

    monkeypatch.setattr(module, "F_FULLFSYNC", 51, raising=False)  # as on macOS
    monkeypatch.setattr(module, "file_control", file_control, raising=False)
    store = RunStore.create(tmp_path, "r")
    fsynced.clear()
    through.clear()
    store.write_bytes("notes.txt", b"x")
    store.write_bytes("sub/refused.txt", b"y")
    assert through == [store.path / ".notes.txt.tmp", store.path, store.path]  # the folder made for sub too
    assert [synced.path for synced in fsynced] == [store.path / "sub/.refused.txt.tmp", store.path / "sub"]
    store.close()
