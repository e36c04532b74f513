"""The leaderboard row schema: every column declared once, with its type, range and the version that added it.

Why declared: the CSV reader validates every cell against its column (a cell reading
``notanumber`` or an accuracy of 1.7 is refused with file, line and column), the
writer formats from the same list, and the report takes headers from it. Why versioned:
a file written by an older medbench lacks the columns added since; it is read and
upgraded (the new columns empty, which admission treats as "not recorded"), never
refused, while a column that is unknown, renamed or missing from the first version
is refused, naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.errors import BenchError

SCHEMA_VERSION = 4


class LeaderboardSchemaError(BenchError):
    """A leaderboard CSV (its header or one of its cells) does not fit the schema; the file is left as it was."""


# --------------------------------------------------------------------------------------------------
# value kinds: each parses a stored string and says what is wrong with it, or returns None
# --------------------------------------------------------------------------------------------------
def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _problem_text(text: str) -> str | None:
    return None


def _problem_count(text: str) -> str | None:
    if not text.isdigit():
        return "not a whole number >= 0"
    return None


def _problem_signed(text: str) -> str | None:
    x = _as_float(text)
    return None if x is not None and math.isfinite(x) else "not a finite number"


def _problem_number(text: str) -> str | None:
    x = _as_float(text)
    if x is None or not math.isfinite(x):
        return "not a finite number"
    if x < 0:
        return "negative, but this column counts or measures something >= 0"
    return None


def _problem_fraction(text: str) -> str | None:
    x = _as_float(text)
    if x is None or not math.isfinite(x):
        return "not a number"
    if not 0.0 <= x <= 1.0:
        return "outside [0, 1], but this column is a fraction"
    return None


def _problem_eps(text: str) -> str | None:
    x = _as_float(text)
    if x is None or math.isnan(x):
        return "not a number (an epsilon: 0.0313725, or inf for an unbounded budget)"
    if x < 0:
        return "a negative epsilon"
    return None


def _problem_flags(text: str) -> str | None:
    bad = [f for f in text.split(";") if f and not f.replace("_", "").isalnum()]
    return f"has flag names that are not identifiers: {bad}" if bad else None


def _problem_bool(text: str) -> str | None:
    return None if text in ("true", "false") else "not true or false"


KINDS = {
    "bool": _problem_bool, "text": _problem_text, "count": _problem_count, "number": _problem_number, "signed": _problem_signed, "fraction": _problem_fraction,
    "eps": _problem_eps, "flags": _problem_flags,
}


@dataclass(frozen=True)
class Column:
    """One leaderboard column: its kind, whether every row must fill it, and the schema version that added it."""

    name: str
    kind: str = "text"
    required: bool = False
    since: int = 1
    help: str = ""

    def problem(self, text: str) -> str | None:
        """What is wrong with ``text`` as this column's value (None when it is fine)."""
        if text == "":
            return "empty, but every row must record it" if self.required and self.since == 1 else None
        return KINDS[self.kind](text)


def _c(name: str, kind: str = "text", required: bool = False, since: int = 1, help: str = "") -> Column:
    return Column(name, kind, required, since, help)


SCHEMA: tuple[Column, ...] = (
    # what was attacked
    _c("date", required=True, help="when the row was written (UTC, ISO 8601)"),
    _c("dataset", required=True), _c("size", "count", required=True),
    _c("split", required=True, since=2, help="the attacked split; ranked rows use the whole test split"),
    _c("model", required=True, help="model name and training seed"),
    _c("train", since=2, help="how the model was trained (epochs, subset, augmentation) from its card"),
    _c("defense", required=True), _c("arch", required=True), _c("recipe", required=True),
    # how
    _c("attack", required=True), _c("kind", required=True), _c("norm", required=True),
    _c("eps", "eps", required=True), _c("eps_label"),
    _c("battery", since=2, help="the battery this row belongs to (empty for a single attack)"),
    _c("battery_hash", since=2, help="hash of the battery's resolved attacks, budgets and epsilons"),
    _c("n", "count", required=True), _c("seed", "count", required=True),
    # metrics (../shared/DESIGN.md); *_lo/*_hi are 95% bootstrap intervals
    _c("clean_acc", "fraction", required=True), _c("robust_acc", "fraction", required=True),
    _c("robust_acc_lo", "fraction"), _c("robust_acc_hi", "fraction"),
    _c("asr", "fraction"), _c("asr_lo", "fraction"), _c("asr_hi", "fraction"),
    _c("clean_auc", "fraction"), _c("adv_auc", "fraction"),
    _c("missed_disease_rate", "fraction"), _c("false_alarm_rate", "fraction"), _c("per_class_robust_acc"),
    _c("linf_mean", "number"), _c("linf_median", "number"), _c("l2_mean", "number"), _c("l2_median", "number"),
    _c("l0_mean", "number"), _c("l0_median", "number"),
    _c("queries_mean", "number"), _c("queries_median", "number"),
    _c("forwards_per_sample", "number"), _c("backwards_per_sample", "number"), _c("seconds", "number"),
    _c("model_form", since=4, help="the model form(s) the row's attacks ran in (bench/model_forms.py; a compiled "
       "form that fell back to eager says so)"),
    # trust
    _c("flags", "flags", help="checks (bench/checks.py) that fired on this row or its model"),
    _c("unreliable", "bool", since=3, help="true when an evaluation check fired (named in flags): the number "
       "may overstate robustness"),
    _c("adaptive", since=3, help="adaptive attacks the defense's declaration added to the battery (';'-joined)"),
    _c("reported_robust_acc", "fraction", since=3, help="what the defense's authors report at this epsilon "
       "(submissions), beside the measured robust_acc"),
    # provenance
    _c("tag"), _c("config_hash", required=True), _c("weights_sha256", required=True),
    _c("git_commit", required=True), _c("versions", required=True),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA)
BY_NAME: dict[str, Column] = {c.name: c for c in SCHEMA}
# A row is one (evaluation, attack, threat model, epsilon); the weights are part of the key, so a model
# retrained with other settings never replaces the rows of the one it shares a name with.
KEY = ("config_hash", "weights_sha256", "model", "attack", "norm", "eps")


def check_header(header: Sequence[str], where: str) -> None:
    """Refuse a header with an unknown, duplicated or missing first-version column; newer columns may be absent."""
    seen: set[str] = set()
    for i, name in enumerate(header):
        if name not in BY_NAME:
            expected = COLUMNS[i] if i < len(COLUMNS) else None
            hint = f"; the leaderboard expects {expected!r} there" if expected and expected not in header else ""
            raise LeaderboardSchemaError(
                f"{where}: line 1, column {i + 1} is {name!r}, which is not a leaderboard column{hint} "
                f"(columns: {', '.join(COLUMNS)}). Restore the header; the file was left unchanged."
            )
        if name in seen:
            raise LeaderboardSchemaError(f"{where}: line 1 names column {name!r} twice. Remove one; the file was left unchanged.")
        seen.add(name)
    missing = [c.name for c in SCHEMA if c.since == 1 and c.name not in seen]
    if missing:
        raise LeaderboardSchemaError(
            f"{where}: line 1 lacks the column(s) {', '.join(map(repr, missing))}, which every leaderboard file has "
            f"had since version 1. Restore them; the file was left unchanged."
        )


def upgrade_row(header: Sequence[str], values: Sequence[str], where: str, line: int) -> dict[str, str]:
    """One data line as a full-schema row: cells validated by column, columns added since the file was written empty."""
    if len(values) != len(header):
        raise LeaderboardSchemaError(
            f"{where}: line {line} has {len(values)} fields, expected {len(header)} ({', '.join(header)}). "
            f"Fix or delete that line; the file was left unchanged."
        )
    row = dict.fromkeys(COLUMNS, "")
    row.update(zip(header, values))
    for i, name in enumerate(COLUMNS):
        problem = BY_NAME[name].problem(row[name])
        if problem:
            column = header.index(name) + 1 if name in header else i + 1
            raise LeaderboardSchemaError(
                f"{where}: line {line}, column {column} ({name}) is {row[name]!r}: {problem}. Correct the cell from the "
                f"run's summary.json, or delete the line and rerun the evaluation; the file was left unchanged."
            )
    return row


def validate_row(row: Mapping[str, str], where: str = "new row", new: bool = True) -> None:
    """Refuse a row about to be written with a value its column does not accept (a bug upstream, never written).

    A ``new`` row (one a run just produced) must fill every required column; a row copied from an existing
    file (promotion) may leave empty the columns its older version did not have.
    """
    for column in SCHEMA:
        value = row.get(column.name, "")
        if value == "":
            must = column.required and (new or column.since == 1)
            problem = "empty, but every new row must record it" if must else None
        else:
            problem = column.problem(value)
        if problem:
            raise LeaderboardSchemaError(f"{where}: column {column.name} is {value!r}: {problem}; nothing was written.")
