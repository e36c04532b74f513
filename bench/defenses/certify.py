"""The certified track of randomised smoothing: Cohen et al.'s PREDICT and CERTIFY (ICML 2019, Algorithm 1/2).

The smoothed classifier g(x) = argmax_c P[f(x + e) = c], e ~ N(0, sigma^2 I), is
robust in L2 around x with radius sigma * Phi^-1(pA) when its top class has
probability pA > 1/2 (Cohen et al., Theorem 1; the two-class form of the bound).
Neither g nor pA can be computed exactly, so both are estimated from noise draws
and may *abstain*:

- :func:`predict` draws ``n`` noisy copies and returns the top class only when a
  two-sided binomial test of its count against the runner-up's rejects "equal"
  at ``alpha``; then it returns a class other than g(x) with probability at
  most ``alpha`` (Cohen et al., Proposition 1);
- :func:`certify` picks the top class from ``n0`` draws, counts it in ``n``
  *fresh* draws, takes the one-sided (1 - alpha) Clopper-Pearson lower bound
  pA_lower of its probability, and certifies radius sigma * Phi^-1(pA_lower),
  abstaining when pA_lower < 1/2. With probability at least 1 - alpha (over the
  draws) a returned certificate is true.

Reproducible by construction: the noise of sample ``i`` (its index in the
split, not in a subset) in phase ``selection``/``estimation``/``predict`` comes
from its own ``torch.Generator`` seeded from ``(seed, i, phase)``, and is drawn
in blocks whose size depends only on the phase's number of draws and the image
shape, never on ``batch_size``. So the same command gives the same certificate,
a subset certifies its samples exactly as the whole split does, and
``batch_size`` (how many noisy copies one forward pass takes, copies of several
images mixed) only changes the speed. The generator lives on the model's
device, so CPU and GPU runs draw different noise (the device is part of the
configuration hash).

Tasks: binary and multi-class (ordinal regression is scored as multi-class);
multi-label tasks have no single top class and are refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from bench.errors import ConfigError

ABSTAIN = -1
PHASES = {"selection": 0, "estimation": 1, "predict": 2}
NOISE_BLOCK_ELEMENTS = 1 << 22  # noise is drawn per sample in blocks of about this many values (16 MiB of float32)


# --------------------------------------------------------------------------------------------------
# settings, checked before any compute
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertifySettings:
    """Cohen et al.'s parameters: ``n0`` selection draws, ``n`` estimation draws, failure probability ``alpha``."""

    sigma: float
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    seed: int = 0
    radii: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            problems.append(f"sigma={self.sigma!r} must be a number > 0 (defense.params.sigma)")
        for name in ("n0", "n", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}={value!r} must be a whole number >= 1 (certify.{name})")
        if isinstance(self.n0, int) and isinstance(self.n, int) and self.n0 > self.n:
            problems.append(f"n0={self.n0} > n={self.n}: the selection draws cannot outnumber the estimation draws "
                            "(Cohen et al. use n0=100, n=100000)")
        if not (isinstance(self.alpha, (int, float)) and 0.0 < self.alpha < 1.0):
            problems.append(f"alpha={self.alpha!r} must lie strictly between 0 and 1 (certify.alpha; Cohen et al.: 0.001)")
        if not self.radii:
            problems.append("radii is empty; give at least one L2 radius (certify.radii, e.g. [0, 0.1, 0.25, 0.5])")
        bad = [r for r in self.radii if not (isinstance(r, (int, float)) and math.isfinite(r) and r >= 0)]
        if bad:
            problems.append(f"radii {bad} are not finite numbers >= 0 (certify.radii)")
        if problems:
            raise ConfigError("cannot certify: " + "; ".join(problems) + ". Nothing was computed.")


def refuse_multi_label(task_type: str, flag: str = "") -> None:
    """Smoothing's certificate is about one top class: multi-label tasks (several labels per image) are refused."""
    if "multi-label" in task_type:
        what = f"{flag!r} is" if flag else "this dataset is"
        raise ConfigError(
            f"{what} a {task_type!r} task: randomised smoothing certifies one top class, and a multi-label "
            "prediction has none. Certify a binary-class or multi-class dataset (e.g. dataset=breastmnist)."
        )


# --------------------------------------------------------------------------------------------------
# the statistics (Cohen et al., Section 3.2 and their released code)
# --------------------------------------------------------------------------------------------------
def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion: Beta(alpha; k, n - k + 1)."""
    from scipy.stats import beta

    if count <= 0:
        return 0.0
    return float(beta.ppf(alpha, count, n - count + 1))


def radius_from_bound(pa_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(pA_lower); only meaningful (>= 0) when pA_lower >= 1/2."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(pa_lower))


def binomial_p_value(top: int, runner_up: int) -> float:
    """Two-sided exact binomial test of ``top`` successes in ``top + runner_up`` trials against p = 1/2."""
    from scipy.stats import binomtest

    total = top + runner_up
    return 1.0 if total == 0 else float(binomtest(top, total, 0.5).pvalue)


# --------------------------------------------------------------------------------------------------
# seeded, batched noise draws
# --------------------------------------------------------------------------------------------------
def sample_seed(seed: int, index: int, phase: str) -> int:
    """The noise seed of one sample in one phase (independent streams for independent (seed, index, phase))."""
    state = np.random.SeedSequence([int(seed), int(index), PHASES[phase]]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


class _NoiseStream:
    """The noise of one sample in one phase, drawn in blocks that do not depend on how it is consumed."""

    def __init__(self, shape: torch.Size, total: int, seed: int, device: torch.device, dtype: torch.dtype):
        self.shape, self.device, self.dtype = tuple(shape), device, dtype
        per_draw = max(1, math.prod(self.shape))
        self.block = max(1, min(total, NOISE_BLOCK_ELEMENTS // per_draw))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.buffer: torch.Tensor | None = None
        self.used = 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            if self.buffer is None or self.used == self.buffer.shape[0]:
                self.buffer = torch.randn((self.block, *self.shape), generator=self.generator, device=self.device,
                                          dtype=self.dtype)
                self.used = 0
            step = min(k, self.buffer.shape[0] - self.used)
            parts.append(self.buffer[self.used:self.used + step])
            self.used += step
            k -= step
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _classes_of(logits: torch.Tensor) -> torch.Tensor:
    """Hard decisions of the base classifier: argmax, or the sign of a single logit."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


@torch.no_grad()
def sample_counts(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, indices: Sequence[int],
                  sigma: float, draws: int, batch_size: int, seed: int, phase: str,
                  num_classes: int) -> torch.Tensor:
    """Class counts (N, K) of the base classifier on ``draws`` Gaussian-noised copies of each image.

    One forward pass takes ``batch_size`` noisy copies (of one image or several); counts are accumulated.
    """
    device = images.device
    n_images = images.shape[0]
    counts = torch.zeros(n_images, num_classes, dtype=torch.long)
    streams = [_NoiseStream(images.shape[1:], draws, sample_seed(seed, int(indices[i]), phase), device, images.dtype)
               for i in range(n_images)]
    pending: list[tuple[int, int]] = []

    def flush() -> None:
        if not pending:
            return
        size = sum(k for _, k in pending)
        batch = torch.empty((size, *images.shape[1:]), device=device, dtype=images.dtype)
        start = 0
        for i, k in pending:  # x + sigma * noise, written in place
            torch.add(images[i:i + 1], streams[i].take(k), alpha=sigma, out=batch[start:start + k])
            start += k
        owner = torch.repeat_interleave(torch.tensor([i for i, _ in pending]), torch.tensor([k for _, k in pending]))
        classes = _classes_of(model(batch)).cpu()
        if classes.numel() and int(classes.max()) >= num_classes:
            raise ConfigError(f"the base classifier predicted class {int(classes.max())} but the dataset has "
                              f"{num_classes} classes; the checkpoint does not fit the dataset.")
        counts.index_put_((owner, classes), torch.ones_like(owner), accumulate=True)
        pending.clear()

    room = batch_size
    for i in range(n_images):
        left = draws
        while left > 0:
            take = min(left, room)
            pending.append((i, take))
            left -= take
            room -= take
            if room == 0:
                flush()
                room = batch_size
    flush()
    return counts


def _as_classifier(model: nn.Module, sigma: float | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The base classifier and sigma: from a RandomisedSmoothing defense, or a bare classifier plus ``sigma``."""
    from bench.defenses.smoothing import RandomisedSmoothing

    if isinstance(model, RandomisedSmoothing):
        if sigma is not None and float(sigma) != model.sigma:
            raise ConfigError(f"sigma={sigma} given, but the smoothing defense has sigma={model.sigma}; pass one.")
        base, sigma = model.model, model.sigma
    elif sigma is None:
        raise ConfigError("certify needs sigma: pass a RandomisedSmoothing defense or sigma=<noise level>.")
    else:
        base = model
    if isinstance(base, nn.Module) and base.training:
        raise ConfigError("the base classifier is in training mode (batch statistics would mix the noisy copies); "
                          "call model.eval() before certifying.")
    return base, float(sigma)


def _top_two(row: torch.Tensor) -> tuple[int, int, int]:
    """Top class (ties: lowest index), its count, and the runner-up's count."""
    order = sorted(range(row.numel()), key=lambda c: (-int(row[c]), c))
    top = order[0]
    second = int(row[order[1]]) if len(order) > 1 else 0
    return top, int(row[top]), second


# --------------------------------------------------------------------------------------------------
# PREDICT and CERTIFY
# --------------------------------------------------------------------------------------------------
def predict(model: nn.Module, images: torch.Tensor, n: int, alpha: float, batch_size: int = 1000,
            seed: int = 0, indices: Sequence[int] | None = None, sigma: float | None = None,
            num_classes: int | None = None) -> torch.Tensor:
    """Cohen et al.'s PREDICT: the majority class of ``n`` noisy copies, or ABSTAIN (-1) when the vote is not clear.

    ``model`` is a RandomisedSmoothing defense (its base classifier and sigma are used) or a classifier plus
    ``sigma``. Returns (N,) long: the class, or -1.
    """
    base, sigma = _as_classifier(model, sigma)
    CertifySettings(sigma=sigma, n0=1, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    indices = list(range(images.shape[0])) if indices is None else list(indices)
    k = num_classes or _num_outputs(base, images)
    counts = sample_counts(base, images, indices, sigma, n, batch_size, seed, "predict", k)
    out = torch.full((images.shape[0],), ABSTAIN, dtype=torch.long)
    for i in range(images.shape[0]):
        top, c_top, c_second = _top_two(counts[i])
        if binomial_p_value(c_top, c_second) <= alpha:
            out[i] = top
    return out


@dataclass
class Certificates:
    """Per-sample results of CERTIFY: prediction (-1 = abstain), pA's lower bound, certified L2 radius."""

    indices: list[int]
    prediction: list[int]
    count: list[int]  # estimation draws that gave the selected class
    pa_lower: list[float]
    radius: list[float]  # 0.0 where abstained (never used: abstentions are never certified)
    sigma: float
    n0: int
    n: int
    alpha: float
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def abstained(self) -> np.ndarray:
        return np.asarray(self.prediction) == ABSTAIN

    def rows(self, labels: Sequence[int] | None = None) -> list[dict]:
        """One dict per sample (for a per-sample CSV)."""
        out = []
        for j, i in enumerate(self.indices):
            row = {"index": i, "prediction": self.prediction[j], "count": self.count[j],
                   "pa_lower": self.pa_lower[j], "radius": self.radius[j]}
            if labels is not None:
                row["label"] = int(labels[j])
                row["correct"] = int(self.prediction[j] == int(labels[j]))
            out.append(row)
        return out


def _num_outputs(base: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> int:
    with torch.no_grad():
        width = int(base(images[:1]).shape[-1])
    return max(2, width)


def certify(model: nn.Module, images: torch.Tensor, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, seed: int = 0, indices: Sequence[int] | None = None,
            sigma: float | None = None, num_classes: int | None = None,
            progress: Callable[[int, int], None] | None = None, images_per_step: int | None = None) -> Certificates:
    """Cohen et al.'s CERTIFY for every image: the selected class and its certified L2 radius, or abstain.

    ``images`` are in [0, 1] on the model's device; ``indices`` identify the samples (their seeds), by default
    0..N-1. Images are certified ``images_per_step`` at a time (default: as many as one forward pass holds,
    at least one), calling ``progress(done, total)`` after each step.
    """
    base, sigma = _as_classifier(model, sigma)
    CertifySettings(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    total = images.shape[0]
    indices = list(range(total)) if indices is None else [int(i) for i in indices]
    if len(indices) != total:
        raise ConfigError(f"{len(indices)} indices for {total} images.")
    k = num_classes or _num_outputs(base, images)
    step = images_per_step or max(1, batch_size // n)
    started = time.perf_counter()
    pred: list[int] = []
    count: list[int] = []
    lower: list[float] = []
    radius: list[float] = []
    for s in range(0, total, step):
        chunk, idx = images[s:s + step], indices[s:s + step]
        selection = sample_counts(base, chunk, idx, sigma, n0, batch_size, seed, "selection", k)
        estimation = sample_counts(base, chunk, idx, sigma, n, batch_size, seed, "estimation", k)
        for j in range(chunk.shape[0]):
            top, _, _ = _top_two(selection[j])
            c = int(estimation[j, top])
            pa = lower_confidence_bound(c, n, alpha)
            count.append(c)
            lower.append(pa)
            if pa < 0.5:
                pred.append(ABSTAIN)
                radius.append(0.0)
            else:
                pred.append(top)
                radius.append(max(0.0, radius_from_bound(pa, sigma)))
        if progress is not None:
            progress(min(s + step, total), total)
    return Certificates(indices, pred, count, lower, radius, sigma, n0, n, alpha, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------
# certified accuracy
# --------------------------------------------------------------------------------------------------
def certified_mask(certs: Certificates, labels: Sequence[int], r: float) -> np.ndarray:
    """Samples certified correct at L2 radius ``r``: not abstained, correct, and radius >= r (r = 0: correct)."""
    labels = np.asarray([int(v) for v in labels])
    pred = np.asarray(certs.prediction)
    correct = (pred != ABSTAIN) & (pred == labels)
    if r <= 0:
        return correct
    return correct & (np.asarray(certs.radius) >= r)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval of a proportion k/n (over the evaluated samples)."""
    from scipy.stats import beta

    if n == 0:
        return float("nan"), float("nan")
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class CertifiedPoint:
    """Certified accuracy at one radius, with its 95% Clopper-Pearson interval over the samples."""

    radius: float
    certified: int
    samples: int
    certified_acc: float
    certified_acc_lo: float
    certified_acc_hi: float


def certified_accuracy(certs: Certificates, labels: Sequence[int], radii: Sequence[float]) -> list[CertifiedPoint]:
    """Certified accuracy at each radius (monotone non-increasing in the radius)."""
    points = []
    total = len(certs)
    for r in radii:
        if not (math.isfinite(r) and r >= 0):
            raise ConfigError(f"radius {r!r} must be a finite number >= 0.")
        k = int(certified_mask(certs, labels, float(r)).sum())
        lo, hi = clopper_pearson(k, total)
        points.append(CertifiedPoint(float(r), k, total, k / total if total else float("nan"), lo, hi))
    return points


def summarise(certs: Certificates, labels: Sequence[int], radii: Sequence[float]) -> dict:
    """Everything the certified track reports about one evaluation (rows add provenance)."""
    labels_arr = np.asarray([int(v) for v in labels])
    pred = np.asarray(certs.prediction)
    correct = (pred != ABSTAIN) & (pred == labels_arr)
    radius = np.asarray(certs.radius)
    total = len(certs)
    return {
        "samples": total,
        "points": certified_accuracy(certs, labels, radii),
        "abstain_rate": float(certs.abstained.mean()) if total else float("nan"),
        "mean_radius": float(radius[correct].mean()) if correct.any() else 0.0,
        "seconds": certs.seconds,
        "n0": certs.n0, "n_noise": certs.n, "alpha": certs.alpha, "sigma": certs.sigma,
    }


__all__ = [
    "ABSTAIN", "CertifiedPoint", "Certificates", "CertifySettings", "binomial_p_value", "certified_accuracy",
    "certified_mask", "certify", "clopper_pearson", "lower_confidence_bound", "predict", "radius_from_bound",
    "refuse_multi_label", "sample_counts", "sample_seed", "summarise",
]


# --------------------------------------------------------------------------------------------------
# one certification run from a composed config (scripts/certify.py)
# --------------------------------------------------------------------------------------------------
def settings_from_cfg(cfg) -> CertifySettings:
    """The run's CertifySettings; refuses a config that is not the smoothing defense or has bad values."""
    defense = cfg.get("defense")
    name = str(defense.get("name", "none")) if defense is not None else "none"
    if name != "smoothing":
        raise ConfigError(f"certify needs defense=smoothing (the smoothed classifier is what is certified), got "
                          f"defense={name}. Add defense=smoothing defense.params.sigma=0.25 (or 0.12).")
    c = cfg.certify

    def number(key: str, value: object) -> float:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number.") from None

    def whole(key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is not a whole number.")
        return value

    radii = c.get("radii")
    if radii is None or isinstance(radii, (str, int, float)):
        raise ConfigError(f"certify.radii={radii!r} must be a list of L2 radii, e.g. [0,0.1,0.25,0.5].")
    return CertifySettings(
        sigma=number("defense.params.sigma", defense.params.get("sigma")),
        n0=whole("certify.n0", c.n0), n=whole("certify.n", c.n), alpha=number("certify.alpha", c.alpha),
        batch_size=whole("certify.batch_size", c.batch_size), seed=whole("seed", cfg.seed),
        radii=tuple(number("certify.radii", r) for r in radii),
    )


def n_examples_from_cfg(cfg) -> int | None:
    """``certify.n_examples``, else ``dataset.n_examples`` (null: the whole split); both set must agree."""
    own, dataset = cfg.certify.get("n_examples"), cfg.dataset.get("n_examples")
    if own is not None and dataset is not None and int(own) != int(dataset):
        raise ConfigError(f"certify.n_examples={own} but dataset.n_examples={dataset}; set one of them.")
    value = own if own is not None else dataset
    return None if value is None else int(value)


def result_config(cfg) -> dict:
    """What decides a certificate: data, model, seed, sigma, n0, n, alpha, device type (not radii, batch size, form).

    The radii only choose which rows summarise the certificates, and ``batch_size`` and ``model_form`` (checked
    against the eager model's logits, as for attacks) only the speed, so a re-run with more radii or another
    batch size upserts the same evaluation's rows.
    """
    from omegaconf import OmegaConf

    from bench.config import NOT_RESULT_KEYS

    drop = {*NOT_RESULT_KEYS, "attack", "battery", "eval", "experiment", "device"}  # resolved only what is kept
    data = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k not in drop}
    speed_only = ("batch_size", "radii", "model_form")
    data["certify"] = {k: v for k, v in (data.get("certify") or {}).items() if k not in speed_only}
    data["certify"]["n_examples"] = n_examples_from_cfg(cfg)
    data["dataset"] = {k: v for k, v in (data.get("dataset") or {}).items() if k != "n_examples"}
    defense = data.get("defense") or {}
    data["defense"] = {"name": defense.get("name"), "params": {"sigma": float(defense.get("params", {}).get("sigma"))}}
    data["device"] = torch.device(str(cfg.device)).type
    return data


def config_hash(cfg) -> str:
    import hashlib
    import json

    blob = json.dumps(result_config(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _training_note(card, sigma: float) -> str:
    """A warning when the base classifier was not trained with Gaussian noise of this sigma (empty if it was)."""
    train = card.train or {}
    method = train.get("defense") or "none"
    params = train.get("defense_params") or {}
    if method == "gaussian_noise" and params.get("sigma") is not None and float(params["sigma"]) == sigma:
        return ""
    trained = f"{method}" + (f" (sigma={params.get('sigma')})" if params.get("sigma") is not None else "")
    return (f"note: the base classifier was trained with {trained}, not gaussian_noise at sigma={sigma:g}; "
            f"its certificates are valid but small (train with train.defense=gaussian_noise).")


RECORDS_FORMAT = 1
CERTIFICATE_FIELDS = ("index", "label", "prediction", "count", "pa_lower", "radius", "seconds")
_PARSE = {"index": int, "label": int, "prediction": int, "count": int, "pa_lower": float, "radius": float,
          "seconds": float}


def records_folder(cfg, track: str, model_id: str, digest: str, sha256: str, kind: str = "certify"):
    """Where a run keeps its per-sample results: ``records.dir``, else one folder per kind, configuration and
    weights (``<records_root>/<track>/<model>/<kind>-<config hash>-<weights[:8]>``)."""
    from pathlib import Path

    records = cfg.get("records")
    folder = records.get("dir") if records is not None else None
    if folder:
        return Path(str(folder))
    return Path(str(cfg.paths.records_root)) / track / model_id / f"{kind}-{digest}-{sha256[:8]}"


def _certificates_csv(rows: list[dict]) -> str:
    lines = [",".join(CERTIFICATE_FIELDS)]
    lines += [",".join(repr(r[f]) if isinstance(r[f], float) else str(r[f]) for f in CERTIFICATE_FIELDS) for r in rows]
    return "\n".join(lines) + "\n"


def read_certificates(folder, fingerprint: dict) -> dict[int, dict]:
    """Certificates a killed run already wrote to ``folder`` (index -> row); refuses another evaluation's folder.

    Each sample's noise depends only on (seed, index, phase), so a resumed run certifies exactly as one that
    never stopped.
    """
    import csv
    import json
    from pathlib import Path

    folder = Path(folder)
    stamp, path = folder / "fingerprint.json", folder / "certificates.csv"
    if not stamp.exists() or not path.exists():
        return {}
    if json.loads(stamp.read_text()) != json.loads(json.dumps(fingerprint, default=str)):
        raise ConfigError(f"the records folder {folder} holds the certificates of another evaluation (its "
                          "fingerprint.json differs). Set records.dir to a new folder, or delete that one.")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CERTIFICATE_FIELDS:
            raise ConfigError(f"{path} does not have the columns {', '.join(CERTIFICATE_FIELDS)}; delete it to start over.")
        try:
            rows = [{k: _PARSE[k](v) for k, v in row.items()} for row in reader]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path} has a bad value ({exc}); delete it to start over.") from None
    return {r["index"]: r for r in rows}


def write_certificates(folder, fingerprint: dict, rows: list[dict]) -> None:
    import json
    from pathlib import Path

    from bench.atomic import atomic_write

    folder = Path(folder)
    atomic_write(folder / "fingerprint.json", json.dumps(fingerprint, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write(folder / "certificates.csv", _certificates_csv(rows))


def format_certified_table(rows: list[dict]) -> str:
    cols = ("radius", "certified_acc", "certified_acc_lo", "certified_acc_hi", "abstain_rate", "n", "n_noise", "sigma")
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    body = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(b) for b in body])


def run_certification(cfg, output_dir) -> list[dict]:
    """Check the config, load data and model, certify, write summary.json, certificates.csv and the track rows.

    Every refusal (bad n0/n/alpha/radii, not smoothing, multi-label, bad subset) happens before any compute.
    Certificates are saved after every step to the run's records folder (``records.dir``, else
    ``<records_root>/<track>/<model>/certify-<config hash>-<weights>``), so rerunning a killed command resumes
    where it stopped, with the certificates an uninterrupted run gives.
    """
    import datetime as dt
    import json
    from pathlib import Path

    from bench.atomic import atomic_write
    from bench.data import load_split
    from bench.defenses import DefenseSpec, build_defense
    from bench.experiment import _git_commit, _versions, dataset_info_from_cfg, load_classifier
    from bench.leaderboard.certified import certified_path, upsert_certified
    from bench.model_forms import attack_model
    from bench.zoo import describe_training

    settings = settings_from_cfg(cfg)
    info = dataset_info_from_cfg(cfg)
    refuse_multi_label(info.task_type, info.flag)
    n_examples = n_examples_from_cfg(cfg)
    digest = config_hash(cfg)
    torch.manual_seed(settings.seed)
    split = load_split(info.flag, str(cfg.dataset.split), info.size, cfg.data.root, bool(cfg.data.download),
                       n_examples, int(cfg.dataset.get("subset_seed", cfg.seed)))
    loaded = load_classifier(cfg, info)  # as an attack run loads it: checkpoint= or the zoo (trained if missing)
    model, card = loaded.model, loaded.card
    device = str(cfg.device)
    params = dict(cfg.defense.get("params") or {})
    total = len(split)
    probe = split.images[: min(8, total)].to(device)
    form = attack_model(model.to(device).eval(), str(cfg.certify.get("model_form", "torch_eager")), device, probe)
    print(f"base classifier form: {form.form}" + (f" ({form.note})" if form.note else ""), flush=True)
    smoothed = build_defense(DefenseSpec("smoothing", params), form.module)
    note = _training_note(card, settings.sigma)
    if note:
        print(note, flush=True)
    model_id = f"{card.name}_seed{card.seed}"
    print(f"{info.track} {split.split} n={total}  model {card.name} (seed {card.seed})  sigma={settings.sigma:g} "
          f"n0={settings.n0} n={settings.n} alpha={settings.alpha:g}  config {digest}", flush=True)
    labels = split.labels.view(-1).tolist()
    indices = split.indices.tolist()
    fingerprint = {"format": RECORDS_FORMAT, "config": result_config(cfg), "weights_sha256": card.sha256}
    folder = records_folder(cfg, info.track, model_id, digest, card.sha256)
    done = read_certificates(folder, fingerprint)
    todo = [j for j, i in enumerate(indices) if i not in done]
    if len(todo) < total:
        print(f"  resuming: {total - len(todo)}/{total} samples already certified in {folder}", flush=True)
    step = max(1, settings.batch_size // settings.n)  # samples per step: one forward pass, at least one sample
    every = max(1, total // 10)
    for s in range(0, len(todo), step):
        js = todo[s:s + step]
        part = certify(smoothed, split.images[js].to(device), settings.n0, settings.n, settings.alpha,
                       settings.batch_size, settings.seed, [indices[j] for j in js],
                       num_classes=max(2, info.num_classes))
        for k, j in enumerate(js):
            done[indices[j]] = {"index": indices[j], "label": labels[j], "prediction": part.prediction[k],
                                "count": part.count[k], "pa_lower": part.pa_lower[k], "radius": part.radius[k],
                                "seconds": part.seconds / len(js)}
        write_certificates(folder, fingerprint, [done[i] for i in indices if i in done])
        finished = total - len(todo) + s + len(js)
        if finished == total or settings.n >= 10_000 or (s // step) % max(1, every // step) == 0:
            print(f"  certified {finished}/{total} ({part.seconds / len(js):.2f}s per sample)", flush=True)
    ordered = [done[i] for i in indices]
    certs = Certificates(indices, [r["prediction"] for r in ordered], [r["count"] for r in ordered],
                         [r["pa_lower"] for r in ordered], [r["radius"] for r in ordered], settings.sigma,
                         settings.n0, settings.n, settings.alpha, sum(r["seconds"] for r in ordered))
    summary = summarise(certs, labels, settings.radii)
    common = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": info.flag, "size": info.size, "split": split.split, "n": total, "model": model_id,
        "train": describe_training(card.train) if card.train else "", "defense": smoothed.describe(),
        "arch": card.arch, "recipe": card.recipe, "sigma": settings.sigma, "n0": settings.n0,
        "n_noise": settings.n, "alpha": settings.alpha, "seed": settings.seed,
        "abstain_rate": summary["abstain_rate"], "mean_radius": summary["mean_radius"],
        "seconds": round(summary["seconds"], 3), "device": torch.device(device).type,
        "tag": str(cfg.get("tag", "")), "config_hash": digest, "weights_sha256": card.sha256,
        "git_commit": _git_commit(), "versions": _versions(),
    }
    rows = [{**common, "radius": p.radius, "certified_acc": p.certified_acc, "certified_acc_lo": p.certified_acc_lo,
             "certified_acc_hi": p.certified_acc_hi} for p in summary["points"]]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(output_dir / "summary.json", json.dumps(rows, indent=2) + "\n")
    atomic_write(output_dir / "certificates.csv", _certificates_csv(ordered))
    path = upsert_certified(certified_path(cfg.paths.leaderboard_dir, info.flag, info.size), rows)
    print(format_certified_table(rows), flush=True)
    print(f"abstained {summary['abstain_rate']:.3f}, mean radius of correct {summary['mean_radius']:.4f}, "
          f"{summary['seconds']:.1f}s ({summary['seconds'] / max(1, total):.2f}s per sample)", flush=True)
    print(f"summary: {output_dir / 'summary.json'}\ncertified rows: {path} (local)", flush=True)
    return rows
