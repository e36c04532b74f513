"""Defense submissions: a folder with ``submission.yaml`` and safetensors weights, checked, then evaluated.

    python scripts/submit.py submission=examples/submission

A submission is *declarative*: a registered recipe (``bench.models.RECIPES``)
around a timm architecture, a registered defense (``bench.defenses.DEFENSES``)
with its parameters, and weights. No code from the submission is ever
imported or run, and the weights are read only through safetensors after the
file's first bytes show it is one (a pickle is never unpickled).

Everything is checked before any evaluation compute and before anything is
written; a rejection names the field, the bad value, the choices and the fix:

1. the YAML (``yaml.safe_load``: no Python tags), field by field against the
   schema below (``SubmissionSpec`` and its sections, declared once here);
   no ``_target_`` anywhere (a submission never imports its own code), no key
   that would change the threat model (epsilons, bounds, labels at inference);
2. the declaration against the registered defense's (a JPEG defense cannot be
   declared differentiable to dodge BPDA), and the training method against it;
3. the weights: present in the folder, safetensors (not a pickle), fitting the
   declared architecture tensor by tensor;
4. behaviour on a few real test images: logits of shape (N, classes), finite,
   and equal across two calls unless the defense is declared randomised.

Then ``bench.experiment.run_experiment`` evaluates it on its track's standard
battery plus the adaptive attacks its declaration selects, with a fixed seed,
so the same folder always gives the same rows.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.errors import BenchError

SUBMISSION_FILE = "submission.yaml"
SEED = 0  # every submission is attacked with the same seed: the same folder gives the same rows
PROBE_IMAGES = 8  # real test images the behaviour checks run the model on
PROBE_RTOL, PROBE_ATOL = 1e-4, 1e-5  # "two calls agree" (as the nondeterministic check)
STANDARD_TRAINING = "standard"
OTHER_TRAINING = "other"
FORBIDDEN_KEY = "_target_"
# keys that would set part of the threat model, which the track fixes
THREAT_MODEL_KEYS = frozenset({"eps", "epsilon", "epsilons", "bounds", "clip", "clip_min", "clip_max", "input_range",
                               "needs_labels", "labels", "attack", "attacks", "battery", "threat_model"})
# command-line overrides that would change what the submission declares or the protocol: these keys and
# everything under them, and these groups when swapped whole (battery.attacks.<a>.params.* stays a budget knob)
FIXED_TREES = ("defense", "model", "checkpoint", "seed", "dataset.flag", "dataset.size", "submission")
FIXED_GROUPS = ("dataset", "battery", "attack", "logger")  # logger: none (W&B needs a Hydra run folder)


class SubmissionError(BenchError):
    """A submission is rejected: the message names the field, the problem and the fix."""


# --------------------------------------------------------------------------------------------------
# the schema: one dataclass per YAML section; ``help`` and ``example`` feed the error messages
# --------------------------------------------------------------------------------------------------
def _field(help: str, example: str, default: Any = MISSING) -> Any:
    meta = {"help": help, "example": example}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrackSpec:
    dataset: str = _field("a 2D MedMNIST flag (medmnist.INFO)", "breastmnist")
    size: int = _field("the image size of the track: 28, 64, 128 or 224, where the flag has it", "28")
    norm: str = _field("the threat model; only linf has a standard battery", "linf")


@dataclass(frozen=True)
class ModelSpecYaml:
    arch: str = _field("a timm architecture name (timm.list_models())", "test_resnet")
    recipe: str = _field("a registered recipe adapting it to small images (bench.models.RECIPES)", "native")
    mean: float = _field("normalisation mean inside the model (the same for every channel)", "0.5", 0.5)
    std: float = _field("normalisation std inside the model", "0.5", 0.5)
    input_size: int | None = _field("recipe resize only: the side inputs are resized to", "224", None)


@dataclass(frozen=True)
class DeclarationYaml:
    randomised: bool = _field("inference draws randomness, two calls may differ (EoT is run)", "false")
    differentiable: bool = _field("the defense's gradient is useful (false: attacked with BPDA)", "false")
    gradient: str | None = _field("exact | straight_through | surrogate (optional; must match the registered defense)",
                                  "straight_through", None)
    transforms_input: bool | None = _field("the defense transforms inputs before the classifier (optional)",
                                           "true", None)
    trained: str | None = _field("the training method the defense needs (optional)", "null", None)
    needs_labels: bool | None = _field("must be false: a defense never sees labels at inference", "false", None)
    input_range: list | None = _field("must be [0, 1]: the threat model's input box", "[0, 1]", None)


@dataclass(frozen=True)
class DefenseYaml:
    name: str = _field("a registered defense (bench.defenses.DEFENSES, conf/defense/)", "jpeg")
    declaration: DeclarationYaml = _field("what the defense is; must agree with the registered defense",
                                          "{randomised: false, differentiable: false}")
    params: dict = _field("the defense's inference parameters (its PARAMS; defaults where omitted)",
                          "{quality: 75}", None)


@dataclass(frozen=True)
class TrainingYaml:
    method: str = _field(f"{STANDARD_TRAINING}, a registered training method, or {OTHER_TRAINING}", "standard")
    summary: str = _field("free text: how the weights were trained", "'Adam, 30 epochs, best val AUC kept'")
    budget: str = _field("free text: data, epochs, hardware and time", "'546 images x 30 epochs, 4 min, 2 CPU cores'")
    seed: int = _field("the training seed (names the row's model, picks the transfer source)", "0", 0)


@dataclass(frozen=True)
class SubmissionSpec:
    name: str = _field("the defense's name (its slug names the leaderboard row)", "'JPEG test-ResNet'")
    authors: list = _field("a list of author names", "[Ada Lovelace]")
    paper: str = _field("an http(s) link to the paper, or none", "https://arxiv.org/abs/1711.00117")
    track: TrackSpec = _field("the leaderboard track", "{dataset: breastmnist, size: 28, norm: linf}")
    model: ModelSpecYaml = _field("the architecture: a timm name and a registered recipe",
                                  "{arch: test_resnet, recipe: native}")
    weights: str = _field("the safetensors file's name in the folder", "model.safetensors")
    defense: DefenseYaml = _field("the registered defense and its declaration", "{name: jpeg, ...}")
    training: TrainingYaml = _field("how the weights were made", "{method: standard, summary: ..., budget: ...}")
    reported: dict = _field("the robust accuracy the authors report, a fraction per epsilon of the track",
                            "{'2/255': 0.61}")

    @property
    def slug(self) -> str:
        return slugify(self.name)


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def schema_fields(cls: type = SubmissionSpec, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, help) for every field of the schema: what SUBMITTING.md documents."""
    out = []
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        out.append((path, f.metadata["help"]))
        if isinstance(f.type, str) and f.type in _SECTIONS:
            out += schema_fields(_SECTIONS[f.type], path + ".")
    return out


_SECTIONS = {"TrackSpec": TrackSpec, "ModelSpecYaml": ModelSpecYaml, "DeclarationYaml": DeclarationYaml,
             "DefenseYaml": DefenseYaml, "TrainingYaml": TrainingYaml}


# --------------------------------------------------------------------------------------------------
# field-by-field validation
# --------------------------------------------------------------------------------------------------
def _reject(where: str, problem: str, fix: str) -> SubmissionError:
    return SubmissionError(f"`{where}` {problem} {fix}".strip())


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _threat_model(where: str, value: object) -> SubmissionError:
    return _reject(where, f"= {_show(value)} would change the threat model: the track fixes the epsilons, "
                          "the input box [0, 1] and that no labels are seen at inference.",
                   f"Remove `{where.rpartition('.')[2]}`; a submission is attacked under its track's threat model.")


def _find_key(tree: object, key: str, path: str = "") -> str | None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            here = f"{path}.{k}" if path else str(k)
            if k == key:
                return here
            found = _find_key(v, key, here)
            if found:
                return found
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            found = _find_key(v, key, f"{path}[{i}]")
            if found:
                return found
    return None


def _section(where: str, value: object, cls: type) -> dict:
    """``value`` as a mapping with exactly ``cls``'s fields (unknown and missing ones named)."""
    names = [f.name for f in fields(cls)]
    if not isinstance(value, Mapping):
        raise _reject(where or "submission.yaml", f"must be a mapping with keys {', '.join(names)}; got {_show(value)}.",
                      "See results/SUBMITTING.md for the layout.")
    for key in value:
        here = f"{where}.{key}" if where else str(key)
        if key not in names:
            if key in THREAT_MODEL_KEYS:
                raise _threat_model(here, value[key])
            raise _reject(here, f"is not a field of {where or 'the submission'}; its fields are: {', '.join(names)}.",
                          "Remove it or fix its spelling.")
    for f in fields(cls):
        if f.name not in value and f.default is MISSING:
            here = f"{where}.{f.name}" if where else f.name
            raise _reject(here, f"is missing ({f.metadata['help']}).", f"Add it, e.g. `{f.name}: {f.metadata['example']}`.")
    return dict(value)


def _text(where: str, value: object, example: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _reject(where, f"= {_show(value)} must be non-empty text.", f"Write it as `{where.rpartition('.')[2]}: {example}`.")
    return value.strip()


def _integer(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _reject(where, f"= {_show(value)} must be an integer.", "Write it without quotes, e.g. 28.")
    return value


def _boolean(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _reject(where, f"= {_show(value)} must be true or false.", "Write true or false, without quotes.")
    return value


def _number(where: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and value <= 0):
        raise _reject(where, f"= {_show(value)} must be a finite {'positive ' if positive else ''}number.", "e.g. 0.5.")
    return float(value)


def _choice(where: str, value: object, choices: Sequence[str], fix: str) -> str:
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(sorted(choices)) if len(choices) <= 30 else ", ".join(sorted(choices)[:30]) + ", ..."
        raise _reject(where, f"= {_show(value)} is not one of: {listed}.", fix)
    return value


def _track(value: object) -> TrackSpec:
    from bench.data import available_flags, dataset_info
    from bench.errors import ConfigError
    from bench.leaderboard.admission import PROTOCOLS

    d = _section("track", value, TrackSpec)
    flag = _choice("track.dataset", d["dataset"], available_flags(), "Use a 2D MedMNIST flag.")
    size = _integer("track.size", d["size"])
    try:
        dataset_info(flag, size)
    except ConfigError as exc:
        raise _reject("track.size", f"= {size}: {exc}", "") from None
    norm = _choice("track.norm", d["norm"], PROTOCOLS.names(),
                   "Only tracks with a standard battery take submissions (bench/leaderboard/admission.py PROTOCOLS).")
    return TrackSpec(flag, size, norm)


def _model(value: object) -> ModelSpecYaml:
    import difflib

    import timm

    from bench.models import RECIPES

    d = _section("model", value, ModelSpecYaml)
    arch = _text("model.arch", d["arch"], "test_resnet")
    if arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.6)
        raise _reject("model.arch", f"= {arch!r} is not a timm architecture; similar names: {', '.join(close) or 'none'}.",
                      "Use a name from timm.list_models(); a submission cannot bring its own architecture code.")
    recipe = _choice("model.recipe", d["recipe"], list(RECIPES),
                     "Use a registered recipe (bench/models.py); a new recipe is a pull request, not a submission.")
    input_size = d.get("input_size")
    if input_size is not None:
        input_size = _integer("model.input_size", input_size)
    return ModelSpecYaml(arch, recipe, _number("model.mean", d.get("mean", 0.5)),
                         _number("model.std", d.get("std", 0.5), positive=True), input_size)


def _declaration(value: object, name: str) -> DeclarationYaml:
    from bench.defenses import DEFENSES

    registered = DEFENSES[name].declaration
    where = "defense.declaration"
    if isinstance(value, Mapping):  # the threat-model fields first, with their own message
        if value.get("needs_labels") not in (None, False) or registered.needs_labels:
            raise _reject(f"{where}.needs_labels", "= true: a defense that needs labels at inference changes the "
                          "threat model (the attacker's input is the image alone).",
                          "Remove it; only defenses that classify the image alone can be submitted.")
        box = value.get("input_range")
        if box is not None and (not isinstance(box, (list, tuple)) or [float(v) if isinstance(v, (int, float)) else v
                                                                         for v in box] != [0.0, 1.0]):
            raise _reject(f"{where}.input_range", f"= {_show(box)}: the threat model's input box is [0, 1] "
                          "(images are floats in [0, 1]; normalisation happens inside the model).",
                          "Remove it or set input_range: [0, 1].")
        if tuple(registered.input_range) != (0.0, 1.0):
            raise _reject("defense.name", f"= {name!r} declares inputs in {list(registered.input_range)}, not [0, 1].",
                          "Only defenses under the track's threat model can be submitted.")
    d = _section(where, value, DeclarationYaml)
    declared = {"randomised": _boolean(f"{where}.randomised", d["randomised"]),
                "differentiable": _boolean(f"{where}.differentiable", d["differentiable"])}
    for key in ("gradient", "transforms_input", "trained"):
        if key in d:
            declared[key] = d[key]
    for key, given in declared.items():
        expected = getattr(registered, key)
        if given != expected:
            def yaml(v: object) -> str:
                return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

            raise _reject(f"{where}.{key}", f"= {yaml(given)} contradicts the registered defense {name!r} "
                          f"({registered.summary()}; {key}: {yaml(expected)}). The declaration decides the adaptive "
                          "attacks, so it is the registered one.", f"Declare {key}: {yaml(expected)}.")
    return DeclarationYaml(declared["randomised"], declared["differentiable"], registered.gradient,
                           registered.transforms_input, registered.trained, False, [0.0, 1.0])


def _defense(value: object) -> DefenseYaml:
    from bench.defenses import DEFENSES, DefenseSpec, build_defense
    from bench.errors import ConfigError

    d = _section("defense", value, DefenseYaml)
    name = _choice("defense.name", d["name"], DEFENSES.names(),
                   "Use a registered defense (conf/defense/); a new defense is a pull request, not a submission.")
    params = d.get("params") or {}
    if not isinstance(params, Mapping):
        raise _reject("defense.params", f"= {_show(params)} must be a mapping of parameter: value.",
                      f"e.g. params: {DefenseYaml.__dataclass_fields__['params'].metadata['example']}")
    known = DEFENSES[name].PARAMS
    for key, v in params.items():
        if key in THREAT_MODEL_KEYS:
            raise _threat_model(f"defense.params.{key}", v)
        if key not in known:
            raise _reject(f"defense.params.{key}", f"is not a parameter of {name!r}; its parameters are: "
                          f"{', '.join(sorted(known)) or 'none'}.", "Remove it or fix its spelling.")
        if not isinstance(v, (bool, int, float, str)):
            raise _reject(f"defense.params.{key}", f"= {_show(v)} must be a number, text or true/false.", "")
    declaration = _declaration(d["declaration"], name)
    try:  # the parameter values' own checks (ranges), on a stand-in classifier: nothing runs
        build_defense(DefenseSpec(name, dict(params)), nn.Identity())
    except ConfigError as exc:
        raise _reject("defense.params", f"are invalid: {exc}", "") from None
    return DefenseYaml(name, declaration, dict(params))


def _training(value: object, defense: DefenseYaml) -> TrainingYaml:
    from bench.defenses.training import TRAINING_METHODS

    d = _section("training", value, TrainingYaml)
    trained_methods = [m for m in TRAINING_METHODS.names() if m != "none"]
    method = _choice("training.method", d["method"], [STANDARD_TRAINING, *trained_methods, OTHER_TRAINING],
                     f"Use {STANDARD_TRAINING} for plain training, {OTHER_TRAINING} for a method medbench does not "
                     "know (the weights are then evaluated as an undefended model with the declared defense).")
    needed = defense.declaration.trained
    if needed is not None and method != needed:
        raise _reject("training.method", f"= {method!r}, but defense {defense.name!r} is weights trained with "
                      f"{needed!r}.", f"Train them with {needed} and declare method: {needed}, or pick the defense "
                      "that matches how they were trained.")
    if needed is None and method in trained_methods:
        owners = [n for n, cls in _defenses() if cls.declaration.trained == method]
        raise _reject("training.method", f"= {method!r} is the training of defense {' / '.join(owners)}, but the "
                      f"declared defense is {defense.name!r}, so the attacks for {method}-trained weights would not run.",
                      f"Declare defense.name: {owners[0] if owners else method}.")
    return TrainingYaml(method, _text("training.summary", d["summary"], "..."), _text("training.budget", d["budget"], "..."),
                        _integer("training.seed", d.get("seed", 0)))


def _defenses():
    from bench.defenses import DEFENSES

    return DEFENSES.items()


def _reported(value: object, track: TrackSpec) -> dict[str, float]:
    from bench.config import parse_eps
    from bench.errors import ConfigError
    from bench.leaderboard.admission import standard_battery

    _, _, labels = standard_battery(track.norm)
    if not isinstance(value, Mapping) or not value:
        raise _reject("reported", f"= {_show(value)} must map each epsilon you report to a robust accuracy.",
                      f"e.g. reported: {{'{labels[0]}': 0.61}} (epsilons of the track: {', '.join(labels)}).")
    out: dict[str, float] = {}
    for key, acc in value.items():
        where = f"reported[{key!r}]"
        try:
            eps = parse_eps(key)
        except ConfigError:
            eps = None
        label = next((lab for lab in labels if eps is not None and math.isclose(parse_eps(lab), eps, rel_tol=1e-4)), None)
        if label is None:
            raise _reject(where, f"is not an epsilon of the {track.dataset}_{track.size} {track.norm} track "
                          f"({', '.join(labels)}).", "Key the reported accuracies by those epsilons, e.g. '2/255'.")
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0 <= acc <= 1:
            hint = f" ({acc} looks like a percentage: write {acc / 100:g})" if isinstance(acc, (int, float)) and \
                not isinstance(acc, bool) and 1 < acc <= 100 else ""
            raise _reject(where, f"= {_show(acc)} must be a robust accuracy as a fraction in [0, 1]{hint}.",
                          "Write e.g. 0.61.")
        if label in out:
            raise _reject(where, f"repeats epsilon {label}.", "Report each epsilon once.")
        out[label] = float(acc)
    return out


def _weights_name(value: object) -> str:
    name = _text("weights", value, "model.safetensors")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise _reject("weights", f"= {name!r} must be a file name in the submission folder, not a path.",
                      "Put the weights beside submission.yaml and give their file name.")
    if not name.endswith(".safetensors"):
        raise _reject("weights", f"= {name!r} is not a .safetensors file; medbench never unpickles weights.",
                      "Convert it with safetensors.torch.save_file(model.state_dict(), 'model.safetensors').")
    return name


def parse_submission(data: object) -> SubmissionSpec:
    """The YAML's content -> a ``SubmissionSpec``, or a SubmissionError naming the first bad field."""
    found = _find_key(data, FORBIDDEN_KEY)
    if found:
        raise _reject(found, "is not allowed: a submission never imports its own code (the `_target_` of a "
                      "notebook's own model).", "Describe the model as a timm `model.arch` with a registered "
                      "`model.recipe`; new architectures or recipes are pull requests to bench/models.py.")
    d = _section("", data, SubmissionSpec)
    authors = d["authors"]
    if not isinstance(authors, list) or not authors or not all(isinstance(a, str) and a.strip() for a in authors):
        raise _reject("authors", f"= {_show(authors)} must be a non-empty list of names.", "e.g. `authors: [Ada Lovelace]`.")
    paper = _text("paper", d["paper"], "https://arxiv.org/abs/...")
    if paper != "none" and not re.match(r"^https?://\S+$", paper):
        raise _reject("paper", f"= {paper!r} is neither an http(s) link nor none.", "Link the paper, or write none.")
    name = _text("name", d["name"], "'JPEG test-ResNet'")
    if not slugify(name):
        raise _reject("name", f"= {name!r} has no letters or digits to name the row by.", "Give it a readable name.")
    track = _track(d["track"])
    model = _model(d["model"])
    weights = _weights_name(d["weights"])
    defense = _defense(d["defense"])
    training = _training(d["training"], defense)
    reported = _reported(d["reported"], track)
    return SubmissionSpec(name, [a.strip() for a in authors], paper, track, model, weights, defense, training, reported)


def read_submission(folder: str | Path) -> SubmissionSpec:
    """Read and validate ``folder/submission.yaml`` (pure parsing: no model is built, nothing runs)."""
    import yaml

    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"submission folder {str(folder)!r} does not exist. Pass submission=<folder holding "
                              f"{SUBMISSION_FILE} and the weights>.")
    path = folder / SUBMISSION_FILE
    if not path.is_file():
        raise SubmissionError(f"{str(path)!r} is missing. Every submission folder holds {SUBMISSION_FILE}; copy "
                              "examples/submission/submission.yaml and edit it.")
    try:
        data = yaml.safe_load(path.read_text())  # safe_load: no tag can construct a Python object
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{str(path)!r} is not valid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              f"{_yaml_where(exc)}). Fix the syntax (plain YAML, no Python tags); "
                              "examples/submission/submission.yaml is a valid one.") from None
    try:
        return parse_submission(data)
    except SubmissionError as exc:
        raise SubmissionError(f"{path}: {exc}") from None


def _yaml_where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


# --------------------------------------------------------------------------------------------------
# the weights and the model's behaviour
# --------------------------------------------------------------------------------------------------
@dataclass
class Accepted:
    """A submission that passed every check: its spec, the classifier it builds and the file hashes."""

    spec: SubmissionSpec
    folder: Path
    weights_path: Path
    weights_sha256: str
    digest: str  # sha256 over submission.yaml and the weights: the folder's identity
    classifier: nn.Module  # the undefended classifier (the run wraps it in the declared defense)

    def loaded(self):
        """The ``bench.sources.Loaded`` the experiment attacks: card named after the submission."""
        from bench.data import dataset_info
        from bench.sources import Loaded, card_for

        spec = self.spec
        info = dataset_info(spec.track.dataset, spec.track.size)
        card = card_for(self.classifier, info, spec.slug, arch=spec.model.arch, recipe=spec.model.recipe,
                        seed=spec.training.seed, sha256=self.weights_sha256)
        card.mean, card.std = spec.model.mean, spec.model.std
        card.input_size = spec.model.input_size if spec.model.recipe == "resize" else None
        card.train = {"method": spec.training.method, "summary": spec.training.summary, "budget": spec.training.budget,
                      "submission": spec.name, "authors": list(spec.authors), "paper": spec.paper}
        if spec.defense.declaration.trained is not None:
            card.train["defense"] = spec.training.method  # what check_trained_as_declared reads
        return Loaded(self.classifier, card, self.weights_path, dict(spec.reported))


def build_classifier(spec: SubmissionSpec, folder: Path) -> tuple[nn.Module, Path]:
    """The registered recipe with the folder's weights, checked tensor by tensor (never unpickled)."""
    from bench.data import dataset_info
    from bench.errors import CheckpointError, ConfigError
    from bench.models import ModelSpec
    from bench.sources import recipe_classifier, safetensors_header

    path = folder / spec.weights
    if not path.is_file():
        raise _reject("weights", f"= {spec.weights!r}: the checkpoint {str(path)!r} is missing.",
                      "Put the safetensors file in the submission folder or fix `weights`.")
    if folder.resolve() not in path.resolve().parents:
        raise _reject("weights", f"= {spec.weights!r} points outside the submission folder.", "Copy the file in.")
    info = dataset_info(spec.track.dataset, spec.track.size)
    m = spec.model
    model_spec = ModelSpec(spec.slug, m.arch, m.recipe, False, m.input_size, m.mean, m.std)
    try:
        safetensors_header(path)  # the magic bytes first: a pickle is refused before anything else reads it
        return recipe_classifier(info, model_spec, path), path
    except CheckpointError as exc:
        raise _reject("weights", f"rejected: {exc}", "") from None
    except ConfigError as exc:
        raise _reject("model", f"cannot be built: {exc}", "") from None


def check_behaviour(spec: SubmissionSpec, classifier: nn.Module, images: torch.Tensor) -> None:
    """The declared defense around ``classifier`` on real images: (N, classes) finite logits, deterministic if
    declared so. A declaration that contradicts behaviour is refused."""
    from bench.data import dataset_info
    from bench.defenses import DefenseSpec, build_defense

    info = dataset_info(spec.track.dataset, spec.track.size)
    model = build_defense(DefenseSpec(spec.defense.name, dict(spec.defense.params)), classifier).eval()
    expected = (len(images), info.num_classes)
    with torch.no_grad():
        first = model(images)
        if not isinstance(first, torch.Tensor) or tuple(first.shape) != expected:
            got = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
            raise _reject("model", f"returns outputs of shape {got} for {len(images)} images; a {info.flag} classifier "
                          f"returns logits of shape {expected} ({info.num_classes} classes).",
                          "Check the architecture, recipe and number of classes the weights were trained with.")
        if not torch.isfinite(first).all():
            bad = int((~torch.isfinite(first)).any(1).sum())
            raise _reject("weights", f"give NaN or infinite outputs for {bad} of {len(images)} test images.",
                          "Check the weights (a diverged training, or NaN tensors in the file).")
        if not spec.defense.declaration.randomised:
            second = model(images)
            if not torch.allclose(first, second, rtol=PROBE_RTOL, atol=PROBE_ATOL):
                diff = float((first - second).abs().max())
                raise _reject("defense.declaration.randomised", f"= false, but two calls on the same {len(images)} "
                              f"images differ (max |difference| {diff:.3g}, beyond rtol {PROBE_RTOL}, atol "
                              f"{PROBE_ATOL}).", "A randomised defense must be declared randomised: true (it is then "
                              "attacked with EoT).")


def check_submission(folder: str | Path, data_root: str | Path | None = None, download: bool = True) -> Accepted:
    """Every check of a submission, in order, before any evaluation: YAML, weights, behaviour."""
    from bench.data import load_split
    from bench.models import sha256_file

    folder = Path(folder)
    spec = read_submission(folder)
    try:
        classifier, path = build_classifier(spec, folder)
        probe = load_split(spec.track.dataset, "test", spec.track.size, data_root, download,
                           min(PROBE_IMAGES, _test_size(spec)), seed=SEED)
        check_behaviour(spec, classifier, probe.images)
    except SubmissionError as exc:
        raise SubmissionError(f"{folder}: {exc}") from None
    weights_sha = sha256_file(path)
    digest = hashlib.sha256((folder / SUBMISSION_FILE).read_bytes() + weights_sha.encode()).hexdigest()
    return Accepted(spec, folder, path, weights_sha, digest, classifier)


def _test_size(spec: SubmissionSpec) -> int:
    from bench.data import dataset_info

    return int(dataset_info(spec.track.dataset, spec.track.size).n_samples["test"])


# --------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------
def check_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides may change the budget or the device, never what the submission declares."""
    out = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.lstrip("+~")
        if not sep:
            raise SubmissionError(f"override {item!r} is not key=value. Write e.g. device=cuda or dataset.n_examples=16.")
        if key in FIXED_GROUPS or any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_TREES):
            raise SubmissionError(f"override {item!r} is not allowed: {key} comes from the submission's "
                                  f"{SUBMISSION_FILE} (track, model, defense) or is fixed (seed {SEED}, the standard "
                                  "battery). Change the YAML instead; budgets such as dataset.n_examples or "
                                  "battery.attacks.<attack>.params.* may be overridden (the run is then never ranked).")
        out.append(item)
    return out


def submission_config(spec: SubmissionSpec, overrides: Sequence[str] = ()):
    """The run's config: the track, the declared defense with its parameters, the standard battery, a fixed seed."""
    from omegaconf import open_dict

    cfg = _compose([f"dataset={spec.track.dataset}", f"dataset.size={spec.track.size}", f"defense={spec.defense.name}",
                    "battery=standard", "logger=none", f"seed={SEED}", "checkpoint=null", *check_overrides(overrides)])
    with open_dict(cfg):
        for key, value in spec.defense.params.items():
            cfg.defense.params[key] = value
        cfg.tag = f"submission:{spec.slug}"
        cfg.paths.output_dir = ""  # no Hydra run folder here: run_folder() names the run's folder
    return cfg


def _compose(args: list[str]):
    from bench.config import compose

    try:
        return compose(args)
    except BenchError:
        raise
    except Exception as exc:  # hydra / omegaconf: a bad override key or value
        raise SubmissionError(f"the config does not compose with {args}: {str(exc).splitlines()[0]}. Fix or drop "
                              "the override (python scripts/submit.py --help).") from None


def run_folder(cfg, accepted: Accepted) -> Path:
    """``<output_root>/submissions/<slug>-<folder digest>-<config hash>``: the same folder and budget, the same place."""
    from bench.config import config_hash

    return (Path(str(cfg.paths.output_root)) / "submissions"
            / f"{accepted.spec.slug}-{accepted.digest[:8]}-{config_hash(cfg)}")


def evaluate_submission(folder: str | Path, overrides: Sequence[str] = (), check_only: bool = False
                        ) -> tuple[list[dict], Path | None]:
    """Check the submission in ``folder`` (nothing written if it is rejected), then evaluate it.

    Returns the summary rows and the run folder (``([], None)`` with ``check_only``).
    """
    from omegaconf import open_dict

    from bench.experiment import run_experiment

    folder = Path(folder)
    overrides = check_overrides(overrides)
    try:
        spec = read_submission(folder)
    except SubmissionError as exc:
        raise SubmissionError(f"rejected, nothing run or written: {exc}") from None
    data = _compose(["battery=standard", *overrides]).data  # where the probe images come from, as the run reads them
    try:
        accepted = check_submission(folder, data.root, bool(data.download))
    except SubmissionError as exc:
        raise SubmissionError(f"rejected, nothing run or written: {exc}") from None
    cfg = submission_config(spec, overrides)
    d = spec.defense
    print(f"submission {spec.name!r} accepted: {spec.model.arch} ({spec.model.recipe}) on {spec.track.dataset}_"
          f"{spec.track.size} {spec.track.norm}, defense {d.name} "
          f"({', '.join(f'{k}={v}' for k, v in d.params.items()) or 'default parameters'}), "
          f"weights sha256 {accepted.weights_sha256[:12]}", flush=True)
    if check_only:
        print("checks only (--check): nothing run or written.", flush=True)
        return [], None
    out = run_folder(cfg, accepted)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    rows = run_experiment(cfg, out, accepted.loaded())
    print(f"submission rows: {out / 'summary.json'}", flush=True)
    return rows, out
