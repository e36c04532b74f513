"""The benchmark: every measure, for every library, on the same model, data, device and budget.

``run_suite`` returns one ``Row`` per (measure, library) asked for (and per
size or step count for the scale measures). A library that is not installed,
that has no such attack, or that fails gets a one-line note and an empty row
instead of stopping the run; ``strict=True`` re-raises failures instead (tests).
Measures are a registry (``MEASURE_FNS``): adding one is one function.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from bench.attacks.base import PropagationCounter
from bench.attacks.threat import check_threat_model
from bench.benchmark.limits import DEFAULT_FORMS, forward_backward_pass, forward_pass, full_batches, prepare_form
from bench.benchmark.measure import Measurement, measure
from bench.benchmark.ours import BATTERIES, OURS, evaluate_many
from bench.benchmark.peers import ALIASES, PEERS, Library, LibraryMissing, PgdSettings, Problem, SquareResult, SquareSettings
from bench.benchmark.table import DEFAULT_MEASURES, MEASURES, Row
from bench.errors import ConfigError, ThreatModelViolation, unknown_choice
from bench.model_forms import AUTO, FORMS, AttackModel, attack_model
from bench.tasks import Task

LIBRARIES: dict[str, Library] = {"ours": OURS, **PEERS}
WARMUP_IMAGES = 2


def canonical_library(name: str) -> str:
    """A library's registry name from its package name or a short alias (art, adv_lib)."""
    name = ALIASES.get(name, name)
    if name not in LIBRARIES:
        raise unknown_choice("library", name, list(LIBRARIES) + list(ALIASES), "Pass --libraries with names from this list.")
    return name


@dataclass
class SpeedConfig:
    """Everything a run depends on; the defaults are the CPU target configuration of the issue."""

    measures: tuple[str, ...] = DEFAULT_MEASURES
    libraries: tuple[str, ...] = tuple(LIBRARIES)
    forms: tuple[str, ...] | None = None  # None: DEFAULT_FORMS of the device type
    device: str = "cpu"
    n_images: int = 624
    batch_size: int | None = None  # None: one batch of n_images
    eps: float = 2 / 255
    steps: int = 10
    rel_stepsize: float = 0.25
    random_start: bool = True
    epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    max_queries: int = 1000
    p_init: float = 0.8
    repeats: int = 3
    seed: int = 0
    scale_sizes: tuple[int, ...] = (156, 624, 2496)
    scale_steps: tuple[int, ...] = (5, 10, 20)
    scale_libraries: tuple[str, ...] = ("ours", "torchattacks")
    ours_battery: str = "engine"
    ours_form: str = "auto"  # the model form our attacks run (bench.model_forms); peers always get the eager model
    battery_overrides: tuple[str, ...] = ()  # Hydra overrides of our standard battery (tests: tiny budgets)
    numerics: bool = True
    warmup: bool = True
    max_minutes: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        for m in self.measures:
            if m not in MEASURES:
                raise unknown_choice("measure", m, MEASURES, "Pass --measures with names from this list.")
        self.libraries = tuple(dict.fromkeys(canonical_library(x) for x in self.libraries))
        self.scale_libraries = tuple(dict.fromkeys(canonical_library(x) for x in self.scale_libraries))
        for f in self.forms or ():
            if f not in FORMS:
                raise unknown_choice("model form", f, FORMS, "Pass --forms with names from this list.")
        if self.ours_form != AUTO and self.ours_form not in FORMS:
            raise unknown_choice("model form", self.ours_form, [AUTO, *FORMS], "Pass --ours-form with one of them.")
        if self.ours_battery not in BATTERIES:
            raise unknown_choice("battery", self.ours_battery, BATTERIES, "Pass --ours-battery with one of them.")
        for name, value in (("n_images", self.n_images), ("steps", self.steps), ("repeats", self.repeats),
                            ("max_queries", self.max_queries), ("batch_size", self.batch_size or 1)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}.")

    @property
    def batch(self) -> int:
        return self.batch_size or self.n_images

    def pgd(self, steps: int | None = None) -> PgdSettings:
        return PgdSettings(self.eps, steps or self.steps, self.rel_stepsize, self.random_start, self.seed)

    def square(self) -> SquareSettings:
        return SquareSettings(self.eps, self.max_queries, self.p_init, self.seed)


def take(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images, repeating the split as often as needed (2,496 = the 624 test images four times)."""
    reps = -(-n // len(images))
    return images.repeat(reps, *[1] * (images.dim() - 1))[:n], labels.repeat(reps, *[1] * (labels.dim() - 1))[:n]


@dataclass
class Suite:
    """A run in progress: the model, the data, the settings, the rows so far."""

    cfg: SpeedConfig
    model: nn.Module
    images: torch.Tensor  # the whole split, CPU, float in [0, 1]
    labels: torch.Tensor
    task: Task
    num_classes: int
    log: Callable[[str], None] = print
    on_row: Callable[[Row], None] | None = None
    rows: list[Row] = field(default_factory=list)
    _loaded: dict[str, object] = field(default_factory=dict)
    _missing: dict[str, str] = field(default_factory=dict)
    _ours: AttackModel | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.cfg.device)
        self.model = self.model.to(self.device).eval()
        for p in self.model.parameters():  # attacks take input gradients only (DESIGN.md); peers get the same model
            p.requires_grad_(False)
        self.deadline = None if self.cfg.max_minutes is None else time.monotonic() + 60 * self.cfg.max_minutes

    # -- helpers ----------------------------------------------------------------------
    def problem(self, n: int, model: nn.Module | None = None) -> Problem:
        """n images on the device, the model wrapped in a propagation counter, clean correctness precomputed."""
        x, y = take(self.images, self.labels, n)
        counted = PropagationCounter(model if model is not None else self.model).eval()
        problem = Problem(counted, x.to(self.device), y.to(self.device), self.task, self.num_classes, min(self.cfg.batch, n))
        problem.correct_mask()
        counted.reset()
        return problem

    def ours_model(self) -> AttackModel:
        """Our attacks' model form, built, numerics-checked and (if compiled) compiled once, outside any timing."""
        if self._ours is None:
            check = take(self.images, self.labels, min(self.cfg.batch, self.cfg.n_images))[0]
            self._ours = attack_model(self.model, self.cfg.ours_form, self.device, check)
            self.log(f"ours: model form {self._ours.form}, prepared in {self._ours.prepare_s:.1f}s (not timed)"
                     + (f"; {self._ours.note}" if self._ours.note else ""))
        return self._ours

    def problem_for(self, lib_name: str, n: int) -> Problem:
        """The problem a library attacks: peers get the eager model, ours the engine's model form."""
        if lib_name != "ours":
            return self.problem(n)
        form = self.ours_model()
        return self.problem(n, form.module)

    def note_form(self, row: Row) -> None:
        if row.library == "ours" and self._ours is not None:
            row.extra["model_form"] = self._ours.form
            row.extra["form_prepare_s"] = round(self._ours.prepare_s, 1)

    def library(self, name: str) -> object:
        """The imported library, or LibraryMissing (its note printed once)."""
        if name in self._missing:
            raise LibraryMissing(self._missing[name])
        if name not in self._loaded:
            try:
                self._loaded[name] = LIBRARIES[name].load()
            except LibraryMissing as exc:
                self._missing[name] = str(exc)
                self.log(f"note: {exc}")
                raise
        return self._loaded[name]

    def library_or_empty_row(self, name: str, row: "Row") -> object | None:
        """The imported library; if it is missing, ``row`` is added empty with the note, and None returned."""
        try:
            return self.library(name)
        except LibraryMissing as exc:
            row.note = str(exc)
            self.add(row)
            return None

    def over_budget(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        text = ", ".join(f"{k}={v}" for k, v in row.csv_dict().items() if k not in ("measure", "library") and v)
        self.log(f"  {row.measure:24s} {row.library:32s} {text}" + (f"  [{row.note}]" if row.note else ""))
        if self.on_row is not None:
            self.on_row(row)
        return row

    def reseed(self) -> None:
        """Peers draw random starts from the global generators: every repeat starts from the same seed."""
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)

    def timed(self, row: Row, run: Callable[[Problem], object], problem: Problem,
              warm: Callable[[Problem], object] | None = None) -> Measurement | None:
        """Warm up on a few images, then time ``run(problem)``; on failure fill ``row.note`` and return None."""
        if self.over_budget():
            row.note = "skipped: the --max-minutes budget was spent"
            return None
        try:
            if self.cfg.warmup:
                self.reseed()
                (warm or run)(head(problem, WARMUP_IMAGES))
            counter = problem.model

            def before() -> None:
                self.reseed()
                counter.reset()

            result = measure(lambda: run(problem), self.cfg.repeats, self.device, self.deadline, before)
        except LibraryMissing as exc:
            row.note = str(exc)
            return None
        except Exception as exc:
            if self.cfg.strict:
                raise
            row.note = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            self.log(traceback.format_exc(limit=3))
            return None
        row.seconds = result.median_s
        row.peak_mem_mb = result.peak_mem_mb
        row.images_per_s = len(problem.x) / row.seconds if row.seconds > 0 else None
        row.extra["repeats_s"] = [round(s, 4) for s in result.seconds]
        if result.notes:
            row.note = "; ".join(result.notes)
        return result

    def robust_mask(self, problem: Problem, x_adv: torch.Tensor, eps: float, row: Row) -> torch.Tensor:
        """Per image: correct when clean and on ``x_adv``; a threat-model violation goes into the row's note."""
        x_adv = x_adv.to(problem.x.device)
        try:
            check_threat_model(problem.x, x_adv, eps, "linf", row.library)
        except ThreatModelViolation as exc:
            row.note = (row.note + "; " if row.note else "") + f"outside the threat model: {exc}"
        scoring = Problem(self.model, problem.x, problem.y, problem.task, problem.num_classes, problem.batch_size)
        return evaluate_many(scoring, [x_adv])[0]  # every library's examples are scored by the same eager model

    # -- measures ---------------------------------------------------------------------
    def pgd_row(self, measure_name: str, lib_name: str, n: int, steps: int) -> Row:
        row = Row(measure_name, lib_name, n_images=n, n_eps=1, steps=steps)
        library = LIBRARIES[lib_name]
        module = self.library_or_empty_row(lib_name, row)
        if module is None:
            return row
        settings = self.cfg.pgd(steps)
        problem = self.problem_for(lib_name, n)
        self.note_form(row)
        result = self.timed(row, lambda p: library.pgd(module, p, settings), problem)
        if result is not None:
            row.passes_per_s = problem.model.backwards / row.seconds
            row.robust_acc = float(self.robust_mask(problem, result.result, settings.eps, row).float().mean())
            self._mismatch(row, library, "pgd")
        return self.add(row)

    def _mismatch(self, row: Row, library: Library, attack: str) -> None:
        if attack in library.mismatch:
            row.extra["mismatch"] = f"{attack}: {library.mismatch[attack]}"


def head(problem: Problem, k: int) -> Problem:
    """The first ``k`` images of a problem (same model and batch size): for warm-ups."""
    k = min(k, len(problem.x))
    cc = None if problem.clean_correct is None else problem.clean_correct[:k]
    return Problem(problem.model, problem.x[:k], problem.y[:k], problem.task, problem.num_classes, problem.batch_size, cc)


# -- the measures ------------------------------------------------------------------------
def limits(suite: Suite) -> None:
    """limit_forward / limit_forward_backward rows of every model form, with the numerics check."""
    cfg = suite.cfg
    wanted = [m for m in ("limit_forward", "limit_forward_backward") if m in cfg.measures]
    forms = cfg.forms or DEFAULT_FORMS.get(suite.device.type, DEFAULT_FORMS["cpu"])
    n = full_batches(cfg.n_images, cfg.batch)
    x, y = (t.to(suite.device) for t in take(suite.images, suite.labels, n))
    for name in forms:
        rows = {m: Row(m, name, n_images=n, steps=None) for m in wanted}
        if suite.over_budget():
            for row in rows.values():
                row.note = "skipped: the --max-minutes budget was spent"
                suite.add(row)
            continue
        try:
            form = prepare_form(name, suite.model, x, y, cfg.batch, suite.device)
        except Exception as exc:
            if cfg.strict:
                raise
            for row in rows.values():
                row.note = f"form unavailable: {type(exc).__name__}: {str(exc)[:200]}"
                suite.add(row)
            continue
        passes = {"limit_forward": lambda: forward_pass(form.module, x, cfg.batch),
                  "limit_forward_backward": lambda: forward_backward_pass(form.module, x, y, cfg.batch)}
        robust, numerics_note = None, ""
        if cfg.numerics and not suite.over_budget():
            problem = Problem(form.module, x, y, suite.task, suite.num_classes, cfg.batch)
            suite.reseed()
            check = Row("numerics", name)
            x_adv = OURS.pgd(None, problem, cfg.pgd())
            robust = float(suite.robust_mask(problem, x_adv, cfg.eps, check).float().mean())
            numerics_note = check.note
        for m, row in rows.items():
            result = measure(passes[m], cfg.repeats, suite.device, suite.deadline)
            row.seconds, row.peak_mem_mb = result.median_s, result.peak_mem_mb
            row.images_per_s = row.passes_per_s = n / row.seconds
            row.robust_acc = robust
            row.extra["repeats_s"] = [round(s, 4) for s in result.seconds]
            notes = list(result.notes) + ([f"numerics check: {numerics_note}"] if numerics_note else [])
            if name == "torch_compile":
                notes.append(f"building + first calls (compilation) took {form.warmup_s:.1f}s, not counted")
            row.note = "; ".join(notes)
            suite.add(row)


def pgd_fixed(suite: Suite) -> None:
    for lib in suite.cfg.libraries:
        suite.pgd_row("pgd_fixed", lib, suite.cfg.n_images, suite.cfg.steps)


def pgd_4eps(suite: Suite) -> None:
    """A four-epsilon evaluation: the library's way (every epsilon, every sample) against our battery."""
    cfg = suite.cfg
    epsilons = list(cfg.epsilons)
    settings = cfg.pgd()
    for lib_name in cfg.libraries:
        row = Row("pgd_4eps", lib_name, n_images=cfg.n_images, n_eps=len(epsilons), steps=cfg.steps)
        library = LIBRARIES[lib_name]
        module = suite.library_or_empty_row(lib_name, row)
        if module is None:
            continue
        if lib_name == "ours":
            battery = BATTERIES[cfg.ours_battery]
            run = lambda p: battery(p, settings, epsilons)  # noqa: E731
            row.extra["battery"] = cfg.ours_battery
        else:
            run = lambda p, library=library, module=module: evaluate_many(  # noqa: E731
                p, library.run_pgd_many(module, p, settings, epsilons))
            suite._mismatch(row, library, "pgd")
        problem = suite.problem_for(lib_name, cfg.n_images)
        suite.note_form(row)
        result = suite.timed(row, run, problem)
        if result is not None:
            robust = result.result.float().mean(1)
            row.robust_acc = float(robust.mean())
            row.passes_per_s = problem.model.backwards / row.seconds
            row.extra["robust_by_eps"] = {f"{e:.6g}": round(float(r), 4) for e, r in zip(epsilons, robust)}
        suite.add(row)


def square(suite: Suite) -> None:
    cfg = suite.cfg
    settings = cfg.square()
    warm_settings = SquareSettings(settings.eps, min(10, settings.max_queries), settings.p_init, settings.seed)
    for lib_name in cfg.libraries:
        library = LIBRARIES[lib_name]
        if library.square is None:
            suite.log(f"note: {lib_name} has no Square attack: no square row")
            continue
        row = Row("square", lib_name, n_images=cfg.n_images, n_eps=1)
        module = suite.library_or_empty_row(lib_name, row)
        if module is None:
            continue
        problem = suite.problem_for(lib_name, cfg.n_images)
        suite.note_form(row)
        result = suite.timed(row, lambda p: library.square(module, p, settings), problem,
                             warm=lambda p: library.square(module, p, warm_settings))
        if result is not None:
            out: SquareResult = result.result
            row.passes_per_s = problem.model.forwards / row.seconds
            robust = suite.robust_mask(problem, out.x_adv, settings.eps, row)
            row.robust_acc = float(robust.float().mean())
            fooled = problem.correct_mask() & ~robust
            if out.queries is not None:
                counts = out.queries[fooled].tolist()
            elif out.success_queries is not None:
                counts = out.success_queries(fooled)
            else:
                counts = []
            if counts:
                row.median_queries = float(statistics.median(counts))
                row.mean_queries = float(statistics.fmean(counts))
            elif fooled.any():
                row.note = (row.note + "; " if row.note else "") + "queries to success not available from this library"
            row.extra["fooled"] = int(fooled.sum())
            suite._mismatch(row, library, "square")
        suite.add(row)


def battery(suite: Suite) -> None:
    """The whole evaluation users run: our standard battery end to end (form preparation and records included,
    as ``medbench attack battery=standard``) against AutoAttack once per epsilon. One timed run each: there is no
    warm-up, because what a user waits for includes the first call. Robust accuracy per epsilon is in the row;
    a battery faster but weaker than AutoAttack does not count (``bench.benchmark.targets``)."""
    import tempfile
    from pathlib import Path

    from bench.benchmark.ours import standard_battery
    from bench.benchmark.peers import BatterySettings

    cfg = suite.cfg
    epsilons = list(cfg.epsilons)
    settings = BatterySettings(tuple(epsilons), cfg.seed)
    for lib_name in cfg.libraries:
        library = LIBRARIES[lib_name]
        if lib_name != "ours" and library.battery is None:
            suite.log(f"note: {lib_name} has no AutoAttack-style battery: no battery row")
            continue
        row = Row("battery", lib_name, n_images=cfg.n_images, n_eps=len(epsilons))
        module = suite.library_or_empty_row(lib_name, row)
        if module is None:
            continue
        problem = suite.problem(cfg.n_images)
        if suite.over_budget():
            row.note = "skipped: the --max-minutes budget was spent"
            suite.add(row)
            continue
        with tempfile.TemporaryDirectory(prefix="medbench-battery-") as tmp:
            if lib_name == "ours":
                run = lambda p: standard_battery(suite.model, p, epsilons, cfg.seed, cfg.ours_form,  # noqa: E731
                                                 Path(tmp) / "records", cfg.battery_overrides)
                if cfg.battery_overrides:
                    row.note = "budgets overridden: " + " ".join(cfg.battery_overrides)
            else:
                run = lambda p, library=library, module=module: library.battery(module, p, settings)  # noqa: E731
            try:
                suite.reseed()
                result = measure(lambda: run(problem), 1, suite.device, suite.deadline)
            except Exception as exc:
                if cfg.strict:
                    raise
                row.note = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                suite.add(row)
                continue
        row.seconds, row.peak_mem_mb = result.median_s, result.peak_mem_mb
        row.images_per_s = cfg.n_images / row.seconds if row.seconds > 0 else None
        if lib_name == "ours":
            robust, info = result.result
            row.extra.update(info)
        else:
            advs, mismatch_note = result.result
            for eps, adv in zip(epsilons, advs):
                try:
                    check_threat_model(problem.x, adv.to(problem.x.device), eps, "linf", lib_name)
                except ThreatModelViolation as exc:
                    row.note = (row.note + "; " if row.note else "") + f"outside the threat model: {exc}"
            robust = suite_score(suite, problem, advs)
            suite._mismatch(row, library, "battery")
            if mismatch_note:
                row.extra["mismatch"] = f"{row.extra.get('mismatch', '')}; {mismatch_note}".strip("; ")
        by_eps = robust.float().mean(1)
        row.robust_acc = float(by_eps.mean())
        row.extra["robust_by_eps"] = {f"{e:.6g}": round(float(r), 4) for e, r in zip(epsilons, by_eps)}
        suite.add(row)


def suite_score(suite: Suite, problem: Problem, advs: list[torch.Tensor]) -> torch.Tensor:
    """(n_eps, N) robust, every library's examples scored by the same eager model."""
    scoring = Problem(suite.model, problem.x, problem.y, problem.task, problem.num_classes, problem.batch_size)
    return evaluate_many(scoring, [a.to(problem.x.device) for a in advs])


def scale_images(suite: Suite) -> None:
    for lib in suite.cfg.scale_libraries:
        for n in suite.cfg.scale_sizes:
            suite.pgd_row("scale_images", lib, n, suite.cfg.steps)


def scale_steps(suite: Suite) -> None:
    for lib in suite.cfg.scale_libraries:
        for steps in suite.cfg.scale_steps:
            suite.pgd_row("scale_steps", lib, suite.cfg.n_images, steps)


MEASURE_FNS: dict[str, Callable[[Suite], None]] = {
    "limit_forward": limits,  # both limit measures share one build (and compilation) of each form
    "limit_forward_backward": limits,
    "pgd_fixed": pgd_fixed,
    "pgd_4eps": pgd_4eps,
    "square": square,
    "battery": battery,
    "scale_images": scale_images,
    "scale_steps": scale_steps,
}


def run_suite(cfg: SpeedConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, task: Task,
              num_classes: int, log: Callable[[str], None] = print, on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Run the measures of ``cfg`` in the order of ``MEASURES``; returns the rows (also passed to ``on_row``)."""
    suite = Suite(cfg, model, images, labels, task, num_classes, log, on_row)
    done = set()
    for name in MEASURES:
        if name not in cfg.measures:
            continue
        fn = MEASURE_FNS[name]
        if fn in done:
            continue
        done.add(fn)
        log(f"{name}:" if fn is not limits else "limits (model forms):")
        fn(suite)
    return suite.rows
