"""What the leaderboard ranks: the admission rules, written down once and applied to every evaluation.

An *evaluation* is the set of rows one run wrote for one model (its name, defense,
config hash and weights). It is **ranked** only when every rule below passes;
otherwise it is kept in the CSV and shown on request, with the reasons, but never
given a rank. The rules follow RobustBench's (a fixed standard evaluation on a fixed
set of samples, a deterministic forward pass, non-zero gradients) and add what
medical test splits need: the *whole* test split (they are small: 156 images for
BreastMNIST) and a model that is not a constant or far-below-baseline predictor.

The rules are re-applied whenever the tables are rendered or rows promoted, from
facts stored in the rows (battery hash, split, n, flags), so a stricter rule
re-ranks old rows without rerunning them; a fact an older file did not record
counts as not met.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from bench.checks import CHECKS, blocking_flags
from bench.registry import Registry

Row = Mapping[str, str]


# --------------------------------------------------------------------------------------------------
# the standard protocol of each threat model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """The standard evaluation of a track's threat model: which battery, on which split."""

    norm: str
    battery: str  # a config under conf/battery/
    split: str = "test"


PROTOCOLS: Registry[Protocol] = Registry("threat model with a standard protocol")
PROTOCOLS.add("linf", Protocol("linf", "standard"))


def battery_hash(battery: Mapping | None) -> str:
    """A short hash of what a battery runs (mode, attacks, their budgets and epsilons), not of its name."""
    if not battery or not battery.get("attacks"):
        return ""
    content = {"mode": battery.get("mode", "independent"), "attacks": battery["attacks"]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def standard_battery(norm: str) -> tuple[str, str, tuple[str, ...]]:
    """(name, hash, epsilon labels) of the standard battery of ``norm`` as conf/ defines it now."""
    from bench.config import compose, to_dict

    protocol = PROTOCOLS[norm]
    battery = to_dict(compose([f"battery={protocol.battery}"]).battery)
    labels = sorted({str(e) for a in battery["attacks"].values() for e in a.get("epsilons", [])})
    return protocol.battery, battery_hash(battery), tuple(labels)


def full_split_size(dataset: str, split: str) -> int | None:
    """How many samples the whole ``split`` of ``dataset`` has (medmnist.INFO); None for an unknown flag."""
    from medmnist import INFO

    info = INFO.get(dataset)
    return None if info is None else int(info["n_samples"].get(split, -1))


# --------------------------------------------------------------------------------------------------
# evaluations: the rows one run wrote for one model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """The rows of one evaluation in one track."""

    model: str
    defense: str
    config_hash: str
    weights_sha256: str
    rows: tuple[Row, ...]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.defense, self.config_hash, self.weights_sha256)

    def first(self, column: str) -> str:
        return next((r[column] for r in self.rows if r.get(column)), "")

    @property
    def battery_rows(self) -> list[Row]:
        return [r for r in self.rows if r.get("kind") == "battery"]

    @property
    def primary_rows(self) -> list[Row]:
        """The rows that stand for the evaluation: its battery's worst case, or every row of a single attack."""
        return self.battery_rows or list(self.rows)

    @property
    def flags(self) -> list[str]:
        return list(dict.fromkeys(f for r in self.rows for f in (r.get("flags") or "").split(";") if f))


def group_evaluations(rows: Sequence[Row]) -> list[Evaluation]:
    """Rows grouped by (model, defense, config hash, weights), in first-seen order."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["defense"], r["config_hash"], r.get("weights_sha256", "")), []).append(r)
    return [Evaluation(*key, tuple(group)) for key, group in groups.items()]


# --------------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One admission rule: what it demands (printed on the page and in results/README.md) and its test."""

    name: str
    text: str
    test: Callable[[Evaluation], str | None]  # why the evaluation fails the rule, or None


RULES: Registry[Rule] = Registry("admission rule")


def rule(name: str, text: str):
    def deco(fn: Callable[[Evaluation], str | None]) -> Callable[[Evaluation], str | None]:
        RULES.add(name, Rule(name, text, fn))
        return fn

    return deco


@rule("standard_battery",
      "It comes from the track's standard battery, unchanged: for L-inf tracks `battery=standard` (APGD-CE, "
      "APGD-margin, FMN, Square 5,000 queries; sequential) at 1, 2, 4 and 8/255. A battery whose attacks, "
      "budgets or epsilons differ (the quick battery, a single attack, fewer steps) is not ranked.")
def _standard_battery(ev: Evaluation) -> str | None:
    norm = ev.first("norm")
    if norm not in PROTOCOLS:
        return f"no standard battery is defined for {norm or 'an unknown'} tracks yet"
    name, expected, _ = standard_battery(norm)
    got, battery = ev.first("battery_hash"), ev.first("battery")
    if not got:
        if ev.battery_rows:
            return "its battery hash was not recorded (written before the admission rules); rerun it to rank it"
        return f"a single attack ({ev.first('attack')}), not the standard battery"
    if got != expected:
        return f"battery {battery!r} (hash {got}) is not the standard battery {name!r} (hash {expected}): " \
               "its attacks, budgets or epsilons differ"
    return None


@rule("full_test_split", "It was run on the whole test split (every sample; `dataset.n_examples=null`).")
def _full_test_split(ev: Evaluation) -> str | None:
    dataset, split, n = ev.first("dataset"), ev.first("split"), ev.first("n")
    if not split:
        return "its split was not recorded"
    expected = full_split_size(dataset, "test")
    if split != "test":
        return f"it attacked the {split} split, not the test split"
    if expected is None:
        return f"the size of {dataset}'s test split is unknown"
    if any(str(r["n"]) != str(expected) for r in ev.rows):
        return f"n={n} is a subset of the {expected}-image test split"
    return None


@rule("complete", "It has a worst-case row at every epsilon of the standard battery.")
def _complete(ev: Evaluation) -> str | None:
    norm = ev.first("norm")
    if _standard_battery(ev) is not None:
        return None  # not the standard battery: that rule already says why
    from bench.config import parse_eps

    _, _, labels = standard_battery(norm)
    have = [float(r["eps"]) for r in ev.battery_rows]
    missing = [label for label in labels if not any(math.isclose(parse_eps(label), e, rel_tol=1e-5) for e in have)]
    return f"no battery row at eps {', '.join(missing)}" if missing else None


def _model_checks_text() -> str:
    names = ", ".join(f"`{c.name}`" for c in CHECKS.values() if c.blocks_ranking and not c.unreliable)
    return f"Its model passes every model check that blocks ranking ({names}; thresholds in the checks table)."


@rule("model_checks", _model_checks_text())
def _model_checks(ev: Evaluation) -> str | None:
    blocking = [f for f in ev.flags if f in blocking_flags() and not (f in CHECKS and CHECKS[f].unreliable)]
    return f"flagged {', '.join(blocking)}" if blocking else None


def _reliable_text() -> str:
    names = ", ".join(f"`{c.name}`" for c in CHECKS.values() if c.unreliable)
    return (f"Its evaluation is not `unreliable`: the checks for evaluation flaws ({names}; Carlini et al. 2019, "
            "AutoAttack) ran and none fired.")


def unreliable_flags(ev: Evaluation) -> list[str]:
    """The evaluation-flaw checks that fired on ``ev`` (each sets ``unreliable``)."""
    return [f for f in ev.flags if f in CHECKS and CHECKS[f].unreliable]


@rule("reliable", _reliable_text())
def _reliable(ev: Evaluation) -> str | None:
    flawed = unreliable_flags(ev)
    if flawed:
        return f"unreliable: {', '.join(flawed)}"
    if any(r.get("unreliable", "") == "" for r in ev.rows):
        return "its evaluation checks were not recorded (written before they existed); rerun its command (the " \
               "records resume) to add them"
    return None


@dataclass(frozen=True)
class Admission:
    """Whether an evaluation is ranked, why not, and the warnings shown beside it."""

    ranked: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    failed: tuple[str, ...] = ()  # the names of the rules behind ``reasons``

    @property
    def status(self) -> str:
        return "ranked" if self.ranked else "unranked: " + "; ".join(self.reasons)

    @property
    def complete_but_flagged(self) -> bool:
        """A whole standard evaluation kept out only by what its checks found: a measured finding worth keeping."""
        return bool(self.failed) and set(self.failed) <= FLAG_RULES


# Rules that fail on what an evaluation's checks found, not on how it was run.
FLAG_RULES = frozenset({"model_checks", "reliable"})


def admit(ev: Evaluation) -> Admission:
    """Apply every rule to ``ev``."""
    failed = [(name, why) for name, r in RULES.items() if (why := r.test(ev))]
    warnings = tuple(f for f in ev.flags if f not in blocking_flags())
    return Admission(not failed, tuple(why for _, why in failed), warnings, tuple(name for name, _ in failed))


def rules_markdown() -> list[str]:
    """The rules and the checks, as Markdown lines (results/README.md and the page render the same words)."""
    lines = ["An evaluation is **ranked** only when all of these hold; every other evaluation is kept in its CSV "
             "and listed as unranked, with the reason, but never given a rank:", ""]
    lines += [f"{i}. **{r.name}**: {r.text}" for i, r in enumerate(RULES.values(), start=1)]
    lines += ["", "Checks (`bench/checks.py`) and their thresholds; a check that blocks ranking keeps its model's "
              "rows out of the ranking, a warning is shown beside the number:", "",
              "| flag | scope | blocks ranking | fires when | meaning |", "|---|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.scope} | {'yes' if c.blocks_ranking else 'no (warning)'} | {c.threshold} | {c.meaning} |"
              for c in CHECKS.values()]
    return lines
