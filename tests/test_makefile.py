"""The README's two commands (`make run`, `make test`) on a machine whose ``python3`` is older than hil takes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: An interpreter that says it is Python 3.9 (as macOS's python3 from Xcode's tools is), for ``python -c CODE``.
OLD_PYTHON = f"""#!{sys.executable}
import sys
sys.version_info = (3, 9, 18, "final", 0)
sys.version = "3.9.18 (stand-in)"
exec(sys.argv[2])
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_refuses_a_python_older_than_3_11_in_one_line_saying_which_to_give(tmp_path: Path) -> None:
    """pip then failed to find torch==2.13.0 for it, which said nothing of the Python."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    old = tmp_path / "python3.9"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    done = subprocess.run(["make", "--no-print-directory", "test", f"PYTHON={old}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (f"hil needs Python 3.11 or later; {old} is 3.9.18: give one: "
                                           "make PYTHON=python3.11")
    assert not (tmp_path / ".venv").exists()
