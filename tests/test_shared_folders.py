"""A run folder on a lab's shared disk, used by several people of one group under their own accounts: what hil makes
and replaces there stays as open to the group as the lab made it."""

import errno
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from hil.errors import RunFileError, RunHeld
from hil.store import EVENTS, RunStore, atomic_write
from hil.transport import VisaTransport
from tests.test_store import held_in_another_process
from tests.test_transport import echo_tcp  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask most accounts have (022): what a process makes is its user's alone to write."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_replaced_file_keeps_its_permission_bits(tmp_path: Path, umask_022: None) -> None:
    """A file made anew under the umask (0644) took the place of one the lab had opened to its group (0664)."""
    path = tmp_path / "twin.json"
    path.write_bytes(b"old")
    path.chmod(0o664)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o664
    private = tmp_path / "private.json"
    private.write_bytes(b"old")
    private.chmod(0o600)
    atomic_write(private, b"new")
    assert mode(private) == 0o600


def test_a_colleagues_resume_leaves_the_event_log_writable_by_the_group(tmp_path: Path, umask_022: None) -> None:
    """The lab opened a run to its group (chmod -R g+w); a colleague's resume rewound its log, which then was the
    colleague's alone to write: the run's own user's next resume failed, its log "cannot write (Permission denied)"."""
    store = RunStore.create(tmp_path, "shared")
    for epoch in range(3):
        store.event("epoch", epoch=epoch)
    store.close()
    (store.path / EVENTS).chmod(0o664)
    store = RunStore.open(store.path)
    store.rewind_events(2)
    store.close()
    assert mode(store.path / EVENTS) == 0o664
    assert [event["epoch"] for event in RunStore.open(store.path, watch=True).events()] == [0]


def another_group() -> int:
    """A group other than this process's own that its files may be given: any for root, else one it is in."""
    if os.geteuid() == 0:
        return os.getegid() + 1
    groups = [group for group in os.getgroups() if group != os.getegid()]
    if not groups:
        pytest.skip("this user is in no group but its own")
    return groups[0]


def test_a_replaced_file_keeps_its_group(tmp_path: Path) -> None:
    """A run folder of a lab's group, not made setgid: a file replaced by a colleague went to the colleague's own group
    (a private one), and the lab's group lost its access."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")
    os.chown(path, -1, another_group())
    group = path.stat().st_gid
    atomic_write(path, b"new")
    assert path.stat().st_gid == group


def modes(folder: Path) -> dict[str, int]:
    """The permission bits of everything under ``folder`` (hidden files too), by relative path."""
    return {str(path.relative_to(folder)): mode(path) for path in sorted(folder.rglob("*"))}


def a_run_with_every_file(root: Path) -> Path:
    """A run folder made in ``root`` with a file of each kind a run writes: its lock, its log and the discarded log,
    a file in a folder of its own, a checkpoint."""
    store = RunStore.create(root / "runs", "shared")
    for epoch in range(2):
        store.event("epoch", epoch=epoch)
    store.rewind_events(2)
    store.save_arrays("data/fidelity.h5", {"nmse": [0.1]})
    store.save_checkpoint({"epoch": 1})
    store.close()
    return store.path


def test_a_run_made_in_a_group_writable_folder_is_writable_by_the_group(tmp_path: Path, umask_022: None) -> None:
    """A lab's runs folder, its group's to write (chmod 2775): a run made there under the umask 022 was its user's
    alone to write, and a colleague's resume of it failed at its lock file, hil report wrote nothing."""
    tmp_path.chmod(0o2775)
    run = a_run_with_every_file(tmp_path)
    made = modes(tmp_path)
    assert set(made) == {"runs", *(f"runs/{run.name}{name}" for name in (
        "", "/.lock", "/events.jsonl", "/events.discarded.jsonl", "/data", "/data/fidelity.h5", "/checkpoint.pt"))}
    assert {path: bits & 0o070 for path, bits in made.items()} == {
        path: 0o070 if (tmp_path / path).is_dir() else 0o060 for path in made}


def test_a_run_made_in_a_folder_another_group_may_write_keeps_the_umasks_access(tmp_path: Path,
                                                                                umask_022: None) -> None:
    """A folder writable by a group the run's files are not of (not setgid, as /tmp, world-writable, is root's): the
    files are of the user's own group, which the folder's access is not meant for."""
    os.chown(tmp_path, -1, another_group())
    tmp_path.chmod(0o775)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o775)  # the user's own group, writable: its files are that group's too
    run = a_run_with_every_file(tmp_path)
    assert {path: bits for path, bits in modes(run).items()} == {
        path: 0o775 if (run / path).is_dir() else 0o664 for path in modes(run)}
    os.chown(tmp_path / "runs", -1, another_group())
    run = a_run_with_every_file(tmp_path)
    assert {path: bits for path, bits in modes(run).items()} == {
        path: 0o755 if (run / path).is_dir() else 0o644 for path in modes(run)}


def test_a_run_made_in_a_folder_of_its_user_alone_keeps_the_umasks_access(tmp_path: Path, umask_022: None) -> None:
    tmp_path.chmod(0o755)
    run = a_run_with_every_file(tmp_path)
    assert {path: bits for path, bits in modes(run).items()} == {
        path: 0o755 if (run / path).is_dir() else 0o644 for path in modes(run)}


def test_a_traffic_log_made_in_a_group_writable_folder_is_writable_by_the_group(echo_tcp, tmp_path: Path,  # noqa: F811
                                                                                 umask_022: None) -> None:
    """A lab file on the shared disk names a traffic log (logs/awg.log): the first run made it its user's alone to
    write, and every colleague's run after was refused ("'logs/awg.log' cannot be written")."""
    tmp_path.chmod(0o2775)
    log = tmp_path / "logs" / "bench" / "awg.log"
    with VisaTransport(echo_tcp[1].resource, timeout_s=2, traffic_log=log) as transport:
        transport.query("ECHO? hello")
    assert modes(tmp_path) == {"logs": 0o2775, "logs/bench": 0o2775, "logs/bench/awg.log": 0o664}


def test_a_run_another_container_holds_under_this_processs_pid_is_said_to_be_held_by_it(tmp_path: Path) -> None:
    """Containers on a bench computer sharing its runs folder, hil the first process of each (pid 1), or computers
    sharing it over the network: the pid in the lock file of a run another of them held was this process's number,
    and a resume was refused as "already open in this process; close its store first"."""
    store = RunStore.create(tmp_path, "r")
    store.close()
    with held_in_another_process(store.path):
        (store.path / ".lock").write_bytes(f"{os.getpid()}\n".encode())  # its pid, where it runs
        with pytest.raises(RunHeld, match=rf"is open in another hil process \(pid {os.getpid()}\); "):
            RunStore.open(store.path)
    reopened = RunStore.open(store.path)
    with pytest.raises(RunFileError, match="is already open in this process; close its store first"):
        RunStore.open(store.path)
    reopened.close()


def test_a_run_taken_by_another_process_after_a_store_here_was_dropped_unclosed_is_said_to_be_held_there(
        tmp_path: Path) -> None:
    """A store dropped without being closed (a notebook's) lets its run go as the collector closes its lock file; the
    run then taken by another process is that process's, not "already open in this process"."""
    import gc

    store = RunStore.create(tmp_path, "r")
    path = store.path
    del store
    gc.collect()
    with held_in_another_process(path) as holder, \
            pytest.raises(RunHeld, match=rf"is open in another hil process \(pid {holder.pid}\); "):
        RunStore.open(path)


def test_report_of_a_run_on_a_file_system_without_locks_reads_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A runs folder on an NFS mount without its lock service: hil report gives the summary of a run there, read
    without its lock, but HDF5's own lock on each data file failed, and the report stopped: "HDF5 data unreadable
    (unable to lock file ... No locks available); the file is missing or damaged: restore it from a backup"."""
    import fcntl

    from hil.cli import main
    from tests.test_report import _run

    store = _run(tmp_path)
    store.close()
    file = h5py.File

    def without_locks(*args, **kwargs):  # flock answered as there: the run folder's, and HDF5's (in C) on each file
        raise OSError(errno.ENOLCK, "No locks available")

    def hdf5_without_locks(path, mode="r", **options):
        if options.get("locking") is not False:
            raise OSError(errno.ENOLCK, "Unable to synchronously open file (unable to lock file, errno = 37, error "
                                        "message = 'No locks available')")
        return file(path, mode, **options)

    monkeypatch.setattr(fcntl, "flock", without_locks)
    monkeypatch.setattr(h5py, "File", hdf5_without_locks)
    assert main(["report", str(store.path)]) == 0
    out, err = capsys.readouterr()
    assert "| test accuracy on the device | 0.75 (0.301–0.954) |" in out  # with the range data/evaluation.h5 gives
    assert err == (f"hil: {store.path}: cannot lock the run folder (No locks available): its file system takes no "
                   "locks, by which hil keeps a run to one process: above is its summary, written nowhere\n")
