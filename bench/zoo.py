"""The model zoo: trained checkpoints keyed by what was trained, and reuse-or-train for experiments.

An entry is ``<zoo>/<flag>_<size>/<model>_seed<seed>_<train id>.safetensors`` with
its card beside it, where the train id hashes the settings that change the weights
(epochs, batch size, learning rate and schedule, weight decay, training subset,
augmentation). A run asking for 100 epochs therefore never reuses a 3-epoch smoke
model: it finds no entry with its settings, says which entries it passed over and
how they differ, and trains its own. A reused model prints what it was trained with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from filelock import Timeout

from bench.locks import shared_lock
from bench.models import Classifier, ModelCard, ModelSpec, card_path, load_checkpoint, read_card
from bench.train import TrainConfig, train_classifier

# TrainConfig fields that do not change what is learned (the seed is in the entry name, the device is not kept).
NOT_TRAINING_SETTINGS = ("seed", "device")
DEFAULTS = TrainConfig()
# Settings added after the first zoo entries: (default, how the default reads). At their default they are left out
# of the training id, so every entry made before them keeps its id (the seed's own data order, PyTorch's
# batch-norm moving averages, training from scratch).
# In the order ``describe_training`` appends them when they are not at their default.
ADDED_LATER: dict[str, tuple[object, str]] = {"data_order_seed": (None, "the seed's"), "init": ("scratch", "scratch"),
                                              "bn_stats": ("ema", "ema"), "precision": ("fp32", "fp32")}


def training_settings(train: TrainConfig | dict) -> dict[str, object]:
    """The settings that determine a model's weights (besides its seed), normalised; from a config or a card."""
    given = asdict(train) if isinstance(train, TrainConfig) else dict(train)
    settings: dict[str, object] = {}
    for f in fields(TrainConfig):
        if f.name in NOT_TRAINING_SETTINGS:
            continue
        value = given.get(f.name, getattr(DEFAULTS, f.name))
        if f.name == "milestones":
            value = [float(m) for m in value]
        elif f.name in ("lr", "weight_decay", "gamma"):
            value = float(value)
        elif f.name in ("epochs", "batch_size"):
            value = int(value)
        elif f.name == "n_train":
            value = None if value is None else int(value)
        elif f.name == "defense_params":
            value = {k: value[k] for k in sorted(value or {})}
        elif f.name == "data_order_seed":
            value = None if value is None or int(value) == int(given.get("seed", DEFAULTS.seed)) else int(value)
        settings[f.name] = value
    for key, (default, _) in ADDED_LATER.items():  # at its default, a later setting keeps the ids made before it
        if settings.get(key, default) == default:
            settings.pop(key, None)
    if settings["defense"] in (None, "none"):  # undefended training keeps the ids it had before defenses existed
        settings.pop("defense")
        settings.pop("defense_params")
    return settings


def train_id(train: TrainConfig | dict) -> str:
    """8 hex digits naming the training settings (same settings, same id)."""
    blob = json.dumps(training_settings(train), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def describe_training(train: TrainConfig | dict) -> str:
    """``epochs=30 augment=none n_train=all lr=0.001 ...``: what a model was trained with, for people."""
    s = training_settings(train)
    milestones = ",".join(f"{m:g}" for m in s["milestones"])  # type: ignore[union-attr]
    defense = ""
    if "defense" in s:
        shown = " ".join(f"{k}={v}" for k, v in s["defense_params"].items())  # type: ignore[union-attr]
        defense = f"defense={s['defense']}" + (f" ({shown})" if shown else "") + " "
    return (f"{defense}epochs={s['epochs']} augment={s['augment']} n_train={s['n_train'] or 'all'} lr={s['lr']:g} "
            f"batch_size={s['batch_size']} weight_decay={s['weight_decay']:g} milestones={milestones} gamma={s['gamma']:g}"
            + "".join(f" {key}={s[key]}" for key in ADDED_LATER if key in s))


def difference(wanted: TrainConfig | dict, found: TrainConfig | dict) -> str:
    """``epochs: 3 there, 100 asked for; ...``: how two trainings differ."""
    a, b = training_settings(found), training_settings(wanted)
    keys = list(dict.fromkeys([*a, *b]))
    shown = lambda s, k: s.get(k, ADDED_LATER.get(k, (None, "none"))[1])  # noqa: E731
    return "; ".join(f"{k}: {shown(a, k)} there, {shown(b, k)} asked for" for k in keys if a.get(k) != b.get(k))


def training_command(card: dict) -> str:
    """``python scripts/train.py dataset=... model=... seed=... train.<k>=<v>``: a command that trains the entry a
    card describes again (its settings where they differ from the defaults), for cards whose training was started
    by another job (an attack run trains what it needs) and so recorded none. Empty for what a command line cannot
    name: a defense's training (its ``defense=`` run trains it) or weights started from a local file."""
    settings = training_settings(card.get("train", {}))
    if "defense" in settings or str(settings.get("init", "scratch")).startswith("file:"):
        return ""
    model, volume, conversion = str(card["name"]), card.get("volume") or "acs", []
    if int(card.get("spatial_dims", 2)) == 3 and model.endswith(f"_{volume}"):  # a volume model names its conversion
        model = model[: -len(volume) - 1]
        conversion = [] if volume == "acs" else [f"model.volume={volume}"]
    parts = [f"dataset={card['dataset']}"] + ([f"dataset.size={card['size']}"] if int(card["size"]) != 28 else [])
    parts += [f"model={model}", *conversion, f"seed={card['seed']}"]
    if settings.get("init") == "timm-hub":
        parts.append("model.pretrained=true")
    defaults = training_settings(DEFAULTS)
    for key, value in settings.items():
        if key == "init" or value == defaults.get(key):
            continue
        shown = "[" + ",".join(f"{m:g}" for m in value) + "]" if key == "milestones" else value  # type: ignore[union-attr]
        parts.append(f"train.{key}={'null' if shown is None else shown}")
    return "python scripts/train.py " + " ".join(parts)


def zoo_path(zoo_dir: str | Path, flag: str, size: int, model_name: str, train: TrainConfig) -> Path:
    """``<zoo>/<flag>_<size>/<model>_seed<seed>_<train id>.safetensors`` (the card sits beside it)."""
    return Path(zoo_dir) / f"{flag}_{size}" / f"{model_name}_seed{train.seed}_{train_id(train)}.safetensors"


def entries(zoo_dir: str | Path, flag: str, size: int, model_name: str, seed: int) -> list[Path]:
    """Every checkpoint of ``model_name`` with ``seed`` in the zoo, however trained (older unkeyed names too)."""
    folder = Path(zoo_dir) / f"{flag}_{size}"
    names = [f"{model_name}_seed{seed}.safetensors", *(p.name for p in folder.glob(f"{model_name}_seed{seed}_*.safetensors"))]
    return sorted({folder / n for n in names if (folder / n).exists() and card_path(folder / n).exists()})


def find_trained(zoo_dir: str | Path, flag: str, size: int, model_name: str, train: TrainConfig) -> tuple[Path | None, list[str]]:
    """The entry trained with exactly ``train``'s settings (or None), and why each other entry was passed over."""
    wanted = train_id(train)
    skipped = []
    for path in entries(zoo_dir, flag, size, model_name, train.seed):
        card_train = read_card(path).train
        if train_id(card_train) == wanted:
            return path, skipped
        skipped.append(f"{path.name} ({difference(train, card_train)})")
    return None, skipped


def reuse_message(path: Path, card: ModelCard) -> str:
    acc, auc = card.metrics.get("test_acc"), card.metrics.get("test_auc")
    quality = f"; test acc {acc:.3f}, AUC {auc:.3f}" if acc is not None and auc is not None else ""
    return f"reusing trained model {path}: trained with {describe_training(card.train)}{quality}"


@contextmanager
def training_lock(path: Path) -> Iterator[None]:
    """Held while a zoo entry is (re)trained, so concurrent jobs train it once and wait for it otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = shared_lock(str(path) + ".train.lock", timeout=-1)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"another job is training {path.name}; waiting for it (lock {path}.train.lock)", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def get_or_train(
    spec: ModelSpec,
    flag: str,
    size: int,
    root: str | Path | None,
    train_cfg: TrainConfig,
    zoo_dir: str | Path,
    in_chans: int,
    num_classes: int,
    command: str = "",
) -> tuple[Classifier, ModelCard, Path]:
    """Load the zoo's model trained with exactly ``train_cfg``'s settings, training it first if there is none.

    Many sweep jobs may ask for the same missing model at once: one takes the entry's training lock and
    trains, the others wait on the lock and then load what it wrote (weights first, card last, each renamed
    into place: an entry is visible, to ``entries``, only once both are there).
    """
    found, skipped = find_trained(zoo_dir, flag, size, spec.name, train_cfg)
    if found is None:
        path = zoo_path(zoo_dir, flag, size, spec.name, train_cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        with training_lock(path):
            found, skipped = find_trained(zoo_dir, flag, size, spec.name, train_cfg)
            if found is None:
                for entry in skipped:
                    print(f"not reusing {entry}", flush=True)
                print(f"no trained model with these settings at {path}; training {spec.name} on {flag}_{size} "
                      f"({describe_training(train_cfg)})", flush=True)
                train_classifier(spec, flag, size, root, train_cfg, path, command=command)
                model, card = load_checkpoint(path, in_chans, num_classes)
                return model, card, path
    model, card = load_checkpoint(found, in_chans, num_classes)
    print(reuse_message(found, card), flush=True)
    return model, card, found
