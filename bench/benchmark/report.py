"""A one-off benchmark's results: its JSON sidecar and the Markdown page that ends by saying how to reproduce it.

Used by the scripts that time one thing against another in a single run (``scripts/bench_adv_training.py``,
``scripts/bench_train_precision.py``, ``scripts/bench_train_memory_format.py``); the speed suite's tables have their
own format (``bench.benchmark.table``).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.atomic import atomic_write


def write_report(out: Path, result: dict, body: str) -> None:
    """``out`` (Markdown: ``body``, then the command that reproduces it) and ``out.json`` (``result``), atomically."""
    atomic_write(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    atomic_write(out, f"""{body.rstrip()}

## Reproduce

```bash
export MEDMNIST_ROOT=../shared/data/medmnist
{result['command'].strip()}
```

Numbers: `{out.with_suffix('.json').name}` beside this file.
""")
