"""A run folder used by several processes at once: a run being written while another terminal watches it, two
writers, a process killed with its folder open. Each test synchronises with the other process on its output, never
on a delay."""

import errno
import fcntl
import hashlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.cli import main
from hil.errors import ConfigError
from hil.store import RunFileError, RunStore


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the SHA-256 of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def lock_of_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every run folder's lock file one this user cannot open for writing, as another user's is."""
    open_path = Path.open

    def another_users(path: Path, mode: str = "r", *args, **kwargs):
        if path.name == ".lock" and mode != "rb":
            raise PermissionError(13, "Permission denied", str(path))
        return open_path(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", another_users)


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A run folder that another process holds open, as a run does while it trains: its epochs so far logged, the
    process waiting on its standard input for the next event to log (a line of it, then "end" closes the run)."""
    store = RunStore.create(tmp_path, "live")
    store.event("run_started", protocol="live", method="pat", system="crossbar", seed=0)
    for step in ("calibrate", "collect", "fit_twin", "fidelity"):
        store.event("step_finished", step=step, device_time_total_s=1.0)
    for epoch in range(2):
        store.event("batch", epoch=epoch, batch=0, loss=1.0 - epoch / 4)
        store.event("epoch", epoch=epoch, device_accuracy=0.5 + epoch / 10, twin_accuracy=0.6, device_loss=0.9)
    store.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hil.store import RunStore; "
         f"s = RunStore.open({str(store.path)!r}); print('open', flush=True)\n"
         "for line in sys.stdin:\n"
         "    if line.strip() == 'end': break\n"
         "    s.event(line.strip(), epoch=2); print('logged', flush=True)\n"
         "s.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "open\n"  # type: ignore[union-attr]
        yield store.path, writer
    finally:
        writer.kill()
        writer.wait()


def test_report_of_a_run_another_process_writes_gives_its_summary_so_far_and_writes_nothing_there(
        live_run: tuple[Path, subprocess.Popen], capsys: pytest.CaptureFixture[str]) -> None:
    """It was refused, telling the scientist watching a run to wait for it to end or stop it."""
    run, writer = live_run
    before = files(run)
    assert main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert ("**The run has not ended**: another hil process has it open (steps done: calibrate, collect, fit_twin, "
            "fidelity; training epoch 3 under way; its last event so far: epoch)") in out
    assert "After its last finished epoch (2) its test accuracy was 0.6 on the device" in out
    assert "hil run --resume" not in out  # not to be resumed: it is running
    assert err == (f"hil: {run} is open in another hil process (pid {writer.pid}): above is its summary so far, "
                   "written nowhere; the process that has it open writes its report\n")
    assert files(run) == before  # nothing written into the folder the run writes (no report/, no lock taken)
    writer.stdin.write("batch\n")  # type: ignore[union-attr]
    writer.stdin.flush()  # type: ignore[union-attr]
    assert writer.stdout.readline() == "logged\n"  # type: ignore[union-attr]  # the run goes on logging
    writer.stdin.write("end\n")  # type: ignore[union-attr]
    writer.stdin.flush()  # type: ignore[union-attr]
    assert writer.wait() == 0
    assert main(["report", str(run)]) == 0  # once it has ended, the report is written as always
    assert capsys.readouterr().out == f"{run / 'report' / 'summary.md'}\n"


def test_report_of_a_run_going_on_says_the_steps_done_and_the_epoch_under_way_of_how_many(
        live_run: tuple[Path, subprocess.Popen], capsys: pytest.CaptureFixture[str]) -> None:
    """From a second shell, `hil report` of a run going on said only the kind of its last event (`batch`,
    `step_finished`): neither which steps were done nor how many epochs of the protocol's were left."""
    run, writer = live_run
    (run / "protocol.yaml").write_text("name: live\ntraining: {epochs: 5, batch_size: 8}\n")
    writer.stdin.write("batch\n")  # type: ignore[union-attr]  # of epoch 2 (counted from 0)
    writer.stdin.flush()  # type: ignore[union-attr]
    assert writer.stdout.readline() == "logged\n"  # type: ignore[union-attr]
    assert main(["report", str(run)]) == 0
    assert ("another hil process has it open (steps done: calibrate, collect, fit_twin, fidelity; training epoch 3 of "
            "5 under way; its last event so far: batch)") in capsys.readouterr().out


def test_a_store_watching_a_run_refuses_to_write(live_run: tuple[Path, subprocess.Popen]) -> None:
    run, _ = live_run
    watching = RunStore.open(run, watch=True)
    try:
        with pytest.raises(Exception, match="opened to watch a run another process writes; it writes nothing there"):
            watching.event("batch")
        with pytest.raises(Exception, match="opened to watch a run another process writes"):
            watching.write_text("report/summary.md", "x")
    finally:
        watching.close()
    assert not (run / "report").exists()


def test_a_data_file_another_program_has_open_for_writing_is_said_to_be_so_not_damaged(tmp_path: Path) -> None:
    """HDF5 refuses to read a file another process has open for writing (its file lock): that was reported as a
    missing or damaged file, to be restored from a backup."""
    store = RunStore.create(tmp_path, "r")
    store.save_arrays("data/twin_data.h5", {"x": [[1.0, 2.0]]})
    path = store.path / "data/twin_data.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); "
                               "print('open', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"  # type: ignore[union-attr]
        with pytest.raises(RunFileError) as refused:
            store.load_arrays("data/twin_data.h5")
    finally:
        holder.communicate("")
    assert str(refused.value) == (f"{path}: open for writing in another program (HDF5's file lock refused reading "
                                  "it); close it there, then try again")
    assert store.load_arrays("data/twin_data.h5")[0]["x"].tolist() == [[1.0, 2.0]]  # read once it is closed
    store.close()


def test_a_run_is_opened_while_hil_runs_looks_at_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hil runs takes each lock shared for an instant to see whether a run is going on; a resume (or a report) that
    tried to take it in that instant was refused as if another process had the run open, naming the pid of the last
    one that had (long ended)."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p")
    store.close()
    (store.path / ".lock").write_bytes(b"999999999\n")  # as a run killed long ago left it
    looking = (store.path / ".lock").open("rb")
    fcntl.flock(looking, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as held() does, while list_runs looks
    refused_once = threading.Event()
    flock = fcntl.flock

    def observed(handle, operation: int) -> None:
        try:
            flock(handle, operation)
        except BlockingIOError:
            if operation & fcntl.LOCK_EX:
                refused_once.set()
            raise

    monkeypatch.setattr(fcntl, "flock", observed)
    opened: list[object] = []

    def open_it() -> None:
        try:
            opened.append(RunStore.open(store.path))
        except Exception as error:
            opened.append(error)

    opener = threading.Thread(target=open_it)
    opener.start()
    assert refused_once.wait(10)  # it tried while the lock was looked at
    looking.close()  # the look ends
    opener.join()
    assert isinstance(opened[0], RunStore), opened[0]
    opened[0].close()


def test_report_of_a_run_another_user_writes_gives_its_summary_so_far(
        live_run: tuple[Path, subprocess.Popen], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a shared machine, another user's lock file cannot be opened for writing: a report of that user's running
    experiment failed as a disk or permission problem ('cannot write (Permission denied); free disk space …')."""
    run, writer = live_run
    lock_of_another_user(monkeypatch)
    assert main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "**The run has not ended**: another hil process has it open" in out
    assert err.startswith(f"hil: {run} is open in another hil process (pid {writer.pid}): above is its summary")


def test_a_run_folder_on_a_file_system_without_locks_is_said_to_be_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """flock fails with ENOLCK on an NFS mount without its lock service: hil report and a resume said 'cannot write
    standard output (No locks available)', exit 1, and sent what they printed after to /dev/null. A resume is refused,
    saying why; a report, which writes nothing it needs, prints the summary read without the lock."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p")
    store.close()
    flock = fcntl.flock

    def no_locks(handle, operation: int) -> None:
        if operation & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")
        flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(["run", "--resume", str(store.path)]) == 2
    assert capsys.readouterr().err == (f"hil: error: {store.path}: cannot lock the run folder (No locks available): "
                                       "its file system takes no locks, by which hil keeps a run to one process; copy "
                                       "the folder to a local disk and give that copy\n")
    assert main(["report", str(store.path)]) == 0  # nothing to write: its summary, read without the lock
    out, err = capsys.readouterr()
    assert out.startswith("# p") and err == (f"hil: {store.path}: cannot lock the run folder (No locks available): its "
                                             "file system takes no locks, by which hil keeps a run to one process: "
                                             "above is its summary, written nowhere\n")
    with pytest.raises(ConfigError, match=rf"^output.root: cannot create a run folder in {re.escape(str(tmp_path))} "
                                          r"\(No locks "
                                          r"available\): its file system takes no locks, .*; set output.root to a "
                                          "folder on a local disk$"):
        RunStore.create(tmp_path, "r")
    assert [path.name for path in tmp_path.iterdir()] == [store.path.name]  # none left behind


def test_report_of_a_finished_run_this_user_cannot_write_gives_its_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's finished run (or a read-only copy): its lock file cannot be written, and hil report failed with
    'cannot write …/.lock (Permission denied); free disk space or fix the folder's permissions', though nothing needs
    writing to read the run."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p", method="pat", system="crossbar", seed=0)
    store.event("run_finished")
    store.close()
    before = {path: path.read_bytes() for path in store.path.rglob("*") if path.is_file() and path.name != ".lock"}
    lock_of_another_user(monkeypatch)
    assert main(["report", str(store.path)]) == 0
    out, err = capsys.readouterr()
    assert "method **pat** on system **crossbar**" in out and "has not ended" not in out
    assert err == (f"hil: {store.path / '.lock'}: cannot write (Permission denied): above is its summary, written "
                   "nowhere\n")
    assert {path: path.read_bytes() for path in store.path.rglob("*") if path.is_file() and path.name != ".lock"} \
        == before


@pytest.mark.skipif(sys.platform == "win32", reason="files' owners are POSIX users")
def test_a_run_another_user_owns_is_refused_naming_them_and_what_to_ask(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A colleague's run on the lab's shared disk, its files theirs alone to write: a resume was refused with 'cannot
    write …/.lock (Permission denied); free disk space or fix the folder's permissions', which neither the disk nor
    this user could help."""
    import pwd

    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p", method="pat", system="crossbar", seed=0)
    store.close()
    owner = pwd.getpwuid(os.geteuid()).pw_name
    lock_of_another_user(monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: (store.path / ".lock").stat().st_uid + 1)  # this user: another one
    assert main(["run", "--resume", str(store.path)]) == 2
    assert capsys.readouterr().err == (
        f"hil: error: {store.path}: a run folder owned by {owner}, which you cannot write (Permission denied); ask "
        f"{owner} to let your group write it (chmod -R g+w {store.path}), or copy it to a folder of yours and resume "
        "the copy\n")
    assert main(["report", str(store.path)]) == 0
    assert capsys.readouterr().err == (f"hil: {store.path}: a run folder owned by {owner}, which you cannot write "
                                       "(Permission denied): above is its summary, written nowhere\n")


def test_report_of_a_stopped_run_this_user_cannot_write_does_not_say_another_process_has_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only copy of a run killed mid-training (no ending in its log), open in no process: its summary said
    'another hil process has it open', as of a run going on."""
    store = RunStore.create(tmp_path, "r")
    store.event("run_started", protocol="p", method="pat", system="crossbar", seed=0)
    store.event("epoch", epoch=0, device_accuracy=0.5, device_loss=0.9)
    store.close()
    lock_of_another_user(monkeypatch)
    assert main(["report", str(store.path)]) == 0
    out, _ = capsys.readouterr()
    assert "another hil process" not in out
    assert "**The run stopped before its evaluation** (its last event: epoch)" in out
