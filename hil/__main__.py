"""``python -m hil``: the ``hil`` command, for a Python whose scripts folder is not on the PATH."""

import sys

from hil.cli import main

sys.exit(main())
