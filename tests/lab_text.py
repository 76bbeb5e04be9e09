"""A lab described in a test, as text: written to a file, then loaded as a user's lab file is."""

from pathlib import Path

from hil.lab import Lab


def lab_from_text(text: str, folder: Path) -> Lab:
    """The lab ``text`` describes, written to ``folder``/lab.yaml and loaded (open it with ``with``)."""
    path = folder / "lab.yaml"
    path.write_text(text)
    return Lab.load(path)
