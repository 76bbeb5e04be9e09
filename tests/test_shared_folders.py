"""A run folder on a lab's shared disk, used by several people of one group under their own accounts: what hil makes
and replaces there stays as open to the group as the lab made it."""

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.store import EVENTS, RunStore, atomic_write

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
