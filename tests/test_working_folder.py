"""The suite run from another working folder than the repository's (``pytest /path/to/hil/tests/...``)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_collecting_the_property_tests_from_another_folder_writes_nothing_there(tmp_path: Path) -> None:
    """Hypothesis kept its caches in a ``.hypothesis`` folder of the working folder: run from ``/`` or from a user's
    home, the suite left one there."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_limits.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []
