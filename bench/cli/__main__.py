"""``python -m bench.cli <command> ...`` is ``medbench <command> ...`` (used where the console script may not be
on PATH, e.g. child processes of ``medbench paper``)."""

import sys

from bench.cli import main

sys.exit(main())
