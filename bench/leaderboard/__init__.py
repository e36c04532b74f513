"""The leaderboard: track CSVs (schema, validated reads, locked atomic upserts), the admission rules, promotion.

- :mod:`~bench.leaderboard.schema`: every column declared once (kind, range, version that added it);
- :mod:`~bench.leaderboard.store`: read (validate, upgrade) and upsert track CSVs;
- :mod:`~bench.leaderboard.admission`: which evaluations are ranked, and why the others are not;
- :mod:`~bench.leaderboard.promote`: the one step that copies admitted evaluations from a run's local
  leaderboard (``outputs/leaderboard/``) into the tracked one (``results/leaderboard/``).
"""

from bench.leaderboard.schema import COLUMNS, KEY, SCHEMA, SCHEMA_VERSION, Column, LeaderboardSchemaError
from bench.leaderboard.store import format_value, read_rows, row_key, track_name, track_path, upsert_rows

__all__ = [
    "COLUMNS", "KEY", "SCHEMA", "SCHEMA_VERSION", "Column", "LeaderboardSchemaError", "format_value", "read_rows",
    "row_key", "track_name", "track_path", "upsert_rows",
]
