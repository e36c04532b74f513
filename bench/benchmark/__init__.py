"""Speed benchmark: our attacks against the hardware limit and against peer libraries.

``scripts/bench_speed.py`` is the entry point. Modules: ``measure`` (timing,
peak memory, median of repeats), ``limits`` (raw model throughput per model
form), ``peers`` (one adapter per library, a registry), ``ours`` (our attacks
and several-epsilon batteries, a registry), ``suite`` (the measures),
``table`` (CSV, JSON sidecar, Markdown).
"""

from bench.benchmark.suite import LIBRARIES, MEASURE_FNS, SpeedConfig, run_suite
from bench.benchmark.table import COLUMNS, MEASURES, Row, write_results

__all__ = ["COLUMNS", "LIBRARIES", "MEASURES", "MEASURE_FNS", "Row", "SpeedConfig", "run_suite", "write_results"]
