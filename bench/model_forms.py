"""How the attacked model is run: eager, channels_last, compiled, BN-folded, bf16; chosen once, checked once.

Attacks spend nearly all their time in the model's forward and input-gradient
backward passes, so the fastest *form* of the model is the engine's biggest
lever. A form must compute the same function: ``attack_model`` builds the form,
compares its logits with the eager model's on real inputs and refuses it (``auto``
leaves it out) when they differ by more than float rounding. ``auto`` times every
checked candidate on the run's own model and inputs and keeps the fastest. The benchmark (``bench/benchmark/limits.py``) measures every form's
raw rate and our PGD's robust accuracy against it.

Forms are a registry (name -> builder); every builder returns an ``nn.Module``
taking [0, 1] inputs and returning float32 logits, on a frozen copy of the
model (eval mode, no parameter gradients), so the original is never changed.
"""

from __future__ import annotations

import copy
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from bench.errors import ConfigError, unknown_choice

FormBuilder = Callable[[nn.Module, torch.device], nn.Module]
FORMS: dict[str, FormBuilder] = {}
AUTO = "auto"
# The forms ``auto`` times on the run's own model and inputs, per device type (it keeps the fastest). Which wins
# depends on the model and the machine, so it is measured, not assumed: on the 2-core CPU of results/perf the
# compiled resnet18_28 runs 1.85x eager's forward+backward rate, while the compiled resnet18_native (28x28)
# runs 0.6-0.9x eager's (its convolutions are too small for inductor's kernels to pay their overhead).
AUTO_CANDIDATES = {"cpu": ("torch_eager", "torch_channels_last", "torch_bn_folded", "torch_inference_graph",
                           "torch_compile"),
                   "cuda": ("torch_eager", "torch_channels_last", "torch_compile_channels_last")}
# ``auto`` times a form on the run's own mix of calls: this share of its planned model passes needs an input
# gradient, the rest are forwards without autograd (score-based attacks' queries). Without a plan: half each.
DEFAULT_GRAD_SHARE = 0.5
# Another form replaces eager only if it is this much faster: eager is the exact reference, and timing noise
# on a shared machine is ~5%, so a tie never trades exactness for nothing.
AUTO_MIN_GAIN = 1.1
# Tolerance of the numerics check: |logit difference| <= ATOL + RTOL * |eager logit|. float32 reassociation
# (another conv algorithm, fused BatchNorm) moves logits by ~1e-5; TF32 convolutions on GPUs by ~1e-3.
ATOL, RTOL = 2e-3, 2e-3
TF32_ATOL, TF32_RTOL = 2e-2, 2e-2  # CUDA convolutions in TF32 (PyTorch's default) round to 10-bit mantissas
BF16_ATOL, BF16_RTOL = 0.1, 0.05


def register_form(name: str) -> Callable[[FormBuilder], FormBuilder]:
    """Add a model form: ``builder(model, device) -> module``. One entry adds a choice of ``eval.model_form``
    and a row to every limit measure of the speed benchmark."""

    def deco(fn: FormBuilder) -> FormBuilder:
        FORMS[name] = fn
        return fn

    return deco


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy in eval mode without parameter gradients, so a form never changes the model attacked elsewhere."""
    clone = copy.deepcopy(model).to(device).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class _ChannelsLast(nn.Module):
    """Feeds the model NHWC-strided inputs (weights converted too), the layout oneDNN and cuDNN prefer."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last)).float()


class _Autocast(nn.Module):
    """Runs the model under bf16 autocast and hands back float32 logits (losses stay in float32)."""

    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model = model
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


class _InferenceGraph(nn.Module):
    """Forwards without autograd run a frozen TorchScript graph optimised for inference; calls under autograd run
    the eager model, so input gradients are exactly eager's.

    Score-based attacks (Square: most of a robust model's battery) only ever run forwards without autograd. For
    the small convolutions of 28x28 models, eager oneDNN calls spend much of their time re-laying out the weights
    at every call; the optimised graph folds BatchNorm, fuses convolution and ReLU and prepacks the weights once
    (1.35x eager's forward rate for resnet18_native at 28x28, batch 64, on the 2-core CPU of results/perf). The graph is traced at the
    first forward without autograd and checked at another batch size, so a model whose trace bakes in its batch
    size is refused rather than run. TorchScript is deprecated in recent torch: should a torch drop it, the form
    fails to build and ``auto`` leaves it out.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._graph: list[torch.jit.ScriptModule] = []  # kept out of the module tree: frozen graphs have no modes

    @property
    def graph(self) -> torch.jit.ScriptModule | None:
        """The inference graph, once the first forward without autograd has traced it."""
        return self._graph[0] if self._graph else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.model(x)
        if not self._graph:
            self._graph.append(_inference_graph(self.model, x))
        return self._graph[0](x)


def _inference_graph(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` traced on ``x``, frozen and optimised for inference; refused if it differs from the eager model
    at another batch size (a trace that baked in ``x``'s batch size)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
        graph = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x, check_trace=False)))
    probe = x[:1]
    gap = logit_gap(model(probe).float(), graph(probe).float())
    if not gap <= 1:
        raise RuntimeError(f"the graph traced at batch {len(x)} gives other logits at batch 1 (up to {gap:.1f}x "
                           f"the tolerance): the trace depends on the batch size")
    return graph


MIN_COMPILED_BATCH = 16  # inductor's CPU convolutions guard on batch >= 16: smaller batches are padded up to it


class _Compiled(nn.Module):
    """torch.compile with dynamic batch sizes, fed inputs that never trigger a recompile.

    Early stopping shrinks batches to any size and attacks call the model with
    and without autograd, from tensors of any stride. Left alone, dynamo
    recompiles for each new combination (grad mode, a batch under 16, a view,
    a channels-last single-channel stride) until it reaches its recompile
    limit (8) and then silently runs the model eagerly for the rest of the
    run. Here every input is normalised first: batches under 16 are padded with
    copies of their first image (eval-mode models treat samples independently;
    the padding's logits are dropped and carry no gradient) and larger ones are
    copied into one standard layout, so one graph per grad mode serves a whole
    battery. Should the limit still be reached, the fallback is not silent:
    ``fallback`` says why and ``form`` reports the eager form from then on.
    """

    def __init__(self, model: nn.Module, name: str = "torch_compile"):
        super().__init__()
        self.model = model
        self.compiled = torch.compile(model, dynamic=True)
        self.name = name
        self.fallback = ""  # why the compiled graph is no longer used ('' while it is)

    @property
    def form(self) -> str:
        """The form the model runs in now: the compiled form, or the eager one after a fallback."""
        return f"torch_eager (after {self.name}: {self.fallback})" if self.fallback else self.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.fallback or n == 0:
            return self.model(x)
        # a fresh tensor in the standard layout (strides of size-1 dims included: a single-channel batch can
        # arrive with stride 1 or H*W over its channel, and dynamo guards on it); copy_ keeps the autograd path
        padded = torch.empty((max(n, MIN_COMPILED_BATCH), *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[:n].copy_(x)
        if n < MIN_COMPILED_BATCH:
            padded[n:].copy_(x[:1].expand(MIN_COMPILED_BATCH - n, *x.shape[1:]))
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                out = self.compiled(padded)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            limit = torch._dynamo.config.recompile_limit
            self.fallback = f"dynamo's recompile limit ({limit}) was reached, so the rest of the run is eager"
            print(f"  model form: {self.form}", flush=True)
            return self.model(x)
        return out[:n]


def running_form(module: nn.Module, default: str) -> str:
    """The form ``module`` (an attack model) runs in right now: ``default`` unless a compiled form fell back
    (looked for inside an input-transform defense too, whose classifier is the part that has a form)."""
    inner = module.model if _is_transform_defense(module) else module
    return inner.form if isinstance(inner, _Compiled) else default


@register_form("torch_eager")
def eager(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as every peer library gets it: float32, eager, NCHW."""
    return frozen_copy(model, device)


@register_form("torch_channels_last")
def channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    return _ChannelsLast(frozen_copy(model, device))


@register_form("torch_bn_folded")
def bn_folded(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm folded into the preceding convolutions (eval mode only); rounding changes slightly."""
    from torch.fx.experimental.optimization import fuse

    clone = frozen_copy(model, device)
    target = getattr(clone, "backbone", clone)  # bench.models.Classifier: fold the backbone, keep the wrapper
    fused = fuse(target, inplace=False)
    for p in fused.parameters():
        p.requires_grad_(False)
    if target is clone:
        return fused
    clone.backbone = fused
    return clone


@register_form("torch_inference_graph")
def inference_graph(model: nn.Module, device: torch.device) -> nn.Module:
    """Forwards without autograd through a frozen, inference-optimised graph; gradients through eager."""
    return _InferenceGraph(frozen_copy(model, device))


@register_form("torch_compile")
def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile (inductor), dynamic batch size: one graph serves every batch early stopping leaves."""
    return _Compiled(frozen_copy(model, device), "torch_compile")


@register_form("torch_compile_channels_last")
def compiled_channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """channels_last, then torch.compile with dynamic batch size: the usual fastest form on GPUs."""
    return _Compiled(_ChannelsLast(frozen_copy(model, device)), "torch_compile_channels_last")


@register_form("torch_bf16")
def bf16(model: nn.Module, device: torch.device) -> nn.Module:
    """bf16 autocast: the GPU's fast path; on CPUs without bf16 units it is usually slower. Never chosen by auto."""
    return _Autocast(frozen_copy(model, device), device.type)


class NumericsError(ConfigError):
    """A model form computes different logits from the eager model (beyond float rounding)."""


def logit_gap(reference: torch.Tensor, candidate: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> float:
    """The largest |difference| in units of the tolerance: <= 1 means the form passes."""
    allowed = atol + rtol * reference.abs()
    return float(((candidate.float() - reference.float()).abs() / allowed).max()) if reference.numel() else 0.0


@dataclass
class AttackModel:
    """The module attacks run, the form it is, and what preparing it cost (compilation, checks)."""

    module: nn.Module
    form: str
    prepare_s: float
    gap: float  # logit_gap against the eager model on the check inputs
    note: str = ""


def resolve_form(form: str, device: torch.device) -> str:
    """A named form, checked against the registry (``auto`` is resolved by measurement in ``attack_model``)."""
    if form not in FORMS:
        raise unknown_choice("eval.model_form", form, [AUTO, *FORMS],
                             "Set eval.model_form to one of them "
                             "(auto: the fastest form that passes the numerics check).")
    return form


COMPILED_FORMS = ("torch_compile", "torch_compile_channels_last")  # prepared through bench.compile_cache
# ``auto`` tries compiling only when the run is long enough to repay it: compiling with a cold cache costs about
# 30 s on a 2-core CPU and saves at most ~1 ms per sample and model pass where it helps (resnet18_28: 4.8 against
# 8.8 ms forward+backward); on the H200 of results/perf (ResNet-50 at 224) it saves ~0.12 ms per sample-pass
# against about a minute of compilation. Reused artefacts (bench.compile_cache) cost a few seconds, so a cached
# form is always tried.
COMPILE_REPAID_AFTER = {"cpu": 30_000, "cuda": 500_000}  # sample-passes (samples x passes per sample)


def worth_compiling(device: torch.device, planned_passes: float | None, cached: bool) -> bool:
    """Whether ``auto`` should compile for a run of ``planned_passes`` sample-passes (None: unknown, compile)."""
    if cached or planned_passes is None:
        return True
    return planned_passes >= COMPILE_REPAID_AFTER.get(device.type, COMPILE_REPAID_AFTER["cuda"])


WARM_UP_SMALL_BATCH = 2  # a batch early stopping leaves: compiled forms pad it, eager ones run it as it is


def _no_grad_pass(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The call score-based attacks make (and every attack's success check): a forward without autograd."""
    with torch.no_grad():
        return module(batch)


def _gradient_pass(module: nn.Module, batch: torch.Tensor) -> None:
    """The call gradient attacks make: a forward and the gradient of a loss with respect to the input."""
    xg = batch.detach().clone().requires_grad_(True)
    torch.autograd.grad(module(xg).float().logsumexp(1).sum(), xg)


def _attack_passes(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The two kinds of call attacks make, once each. Returns the no-grad logits."""
    logits = _no_grad_pass(module, batch)
    _gradient_pass(module, batch)
    return logits


def _warm_up(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Both kinds of attack call on the full and on a small batch: the graphs attacks use, compiled here once
    rather than in the middle of a timed attack. Returns the full batch's logits."""
    logits = _attack_passes(module, x)
    _attack_passes(module, x[:WARM_UP_SMALL_BATCH])
    return logits


def tolerance(form: str, device: torch.device) -> tuple[float, float]:
    """(atol, rtol) of the numerics check: float32 rounding, wider for TF32 GPU convolutions and for bf16."""
    if form == "torch_bf16":
        return BF16_ATOL, BF16_RTOL
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return TF32_ATOL, TF32_RTOL
    return ATOL, RTOL


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[str, AttackModel]]" = weakref.WeakKeyDictionary()


def _uncheckable(model: nn.Module) -> str:
    """Why ``model``'s forms cannot be checked against its eager forward ('' when they can)."""
    declaration = getattr(model, "declaration", None)
    if declaration is None:
        return ""
    if declaration.randomised:
        return "the defense is randomised (two forwards differ)"
    if declaration.transforms_input and not declaration.differentiable:
        return "the defense's input transform runs outside autograd"
    return ""


def _is_transform_defense(model: nn.Module) -> bool:
    """A deterministic defense (``bench.defenses.Defense``) whose non-differentiable input transform runs in front
    of a classifier: the transform has no form, but the classifier does."""
    declaration = getattr(model, "declaration", None)
    return (declaration is not None and declaration.transforms_input and not declaration.differentiable
            and not declaration.randomised and isinstance(getattr(model, "model", None), nn.Module)
            and hasattr(model, "view") and hasattr(model, "transform"))


def _around_classifier(defense: nn.Module, form: str, dev: torch.device, check_inputs: torch.Tensor,
                       planned_passes: float | None, grad_share: float) -> AttackModel:
    """A deterministic input transform outside autograd (JPEG, bit depth): the defense as it is, around its
    classifier in ``form``, built and checked against the eager classifier on the transformed check inputs.

    The whole defense cannot be checked against its eager forward through autograd, but nothing of it needs to
    be: the transform is the same code in every form, and the classifier behind it is an ordinary model. The
    returned module is a view of the defense (``Defense.view``), so its straight-through (BPDA) view and its
    plain one keep the checked classifier."""
    with torch.no_grad():
        seen = defense.transform(check_inputs.to(dev))
    inner = attack_model(defense.model, form, dev, seen, planned_passes, grad_share)
    note = "the defense's input transform runs outside autograd, so the form is its classifier's, checked on " \
           "transformed inputs" + (f"; {inner.note}" if inner.note else "")
    return AttackModel(defense.view(model=inner.module), inner.form, inner.prepare_s, inner.gap, note)


def samples_per_second(module: nn.Module, x: torch.Tensor, rounds: int = 3,
                       grad_share: float = DEFAULT_GRAD_SHARE) -> float:
    """The rate attacks see from ``module`` on ``x``: sample-passes per second over a mix of forwards without
    autograd and forward + input-gradient passes, ``grad_share`` of them the latter; each kind timed on the full
    batch and on a quarter of it (early stopping shrinks batches), best of ``rounds`` (the minimum is the least
    noisy estimate on a shared machine)."""
    batches = [x, x[: max(2, len(x) // 4)]]

    def best_seconds(one_pass: Callable[[nn.Module, torch.Tensor], object]) -> float:
        seconds = []
        for round_ in range(rounds + 1):  # the first round warms up
            started = time.perf_counter()
            for batch in batches:
                one_pass(module, batch)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            if round_:
                seconds.append(time.perf_counter() - started)
        return min(seconds)

    no_grad_s = best_seconds(_no_grad_pass) if grad_share < 1 else 0.0
    gradient_s = best_seconds(_gradient_pass) if grad_share > 0 else 0.0
    per_round = (1 - grad_share) * no_grad_s + grad_share * gradient_s
    return sum(len(b) for b in batches) / max(per_round, 1e-9)


def attack_model(model: nn.Module, form: str, device: str | torch.device, check_inputs: torch.Tensor,
                 planned_passes: float | None = None, grad_share: float = DEFAULT_GRAD_SHARE) -> AttackModel:
    """The model in ``form`` (``auto``: the fastest checked form, timed here), numerics checked on ``check_inputs``.

    Built once per (model, form) and cached, so every attack and batch of an
    experiment shares one compilation; compiled forms also reuse the artefacts
    of earlier runs on this machine (``bench.compile_cache``). An explicitly
    named form that fails the check raises ``NumericsError``; ``auto`` leaves
    it out instead, and does not compile when ``planned_passes`` (the run's
    samples x model passes per sample) would not repay it. ``auto`` times the
    candidates on the run's mix of calls: ``grad_share`` of the planned passes
    need an input gradient (``PlannedPasses`` in ``bench.evaluate``).
    """
    dev = torch.device(device)
    if _is_transform_defense(model):  # the classifier inside resolves ``form`` (auto included) for itself
        return _around_classifier(model, form, dev, check_inputs, planned_passes, grad_share)
    if form == AUTO:
        return _fastest_form(model, dev, check_inputs, planned_passes, grad_share)
    name = resolve_form(form, dev)
    uncheckable = _uncheckable(model)
    if uncheckable and name != "torch_eager":
        eager_form = attack_model(model, "torch_eager", dev, check_inputs)
        return AttackModel(eager_form.module, "torch_eager", eager_form.prepare_s, eager_form.gap,
                           f"{name} not used: {uncheckable}, so no form can be checked against eager")
    cached = _CACHE.setdefault(model, {})
    if name in cached:
        return cached[name]
    x = _check_batch(check_inputs.to(dev))
    reference = frozen_copy(model, dev)
    with torch.no_grad():
        ref_logits = reference(x).float()
    started = time.perf_counter()
    atol, rtol = tolerance(name, dev)
    cache_note = ""
    try:
        if name in COMPILED_FORMS:
            module, gap, cache_note = _build_compiled(model, name, dev, x, ref_logits, atol, rtol)
        else:
            module = FORMS[name](model, dev).eval()  # wrappers are new modules: eval mode like the model inside
            gap = logit_gap(ref_logits, _warm_up(module, x), atol, rtol)
        problem = "" if gap <= 1 else (f"its logits differ from the eager model's by up to {gap:.1f}x the tolerance "
                                       f"(atol {atol:g}, rtol {rtol:g})")
    except Exception as exc:  # compilation needs a C++ compiler (CPU) or Triton (GPU); some models do not trace
        problem = f"it failed to build: {type(exc).__name__}: {str(exc)[:300]}"
    if name == "torch_eager":
        gap, problem = 0.0, ""  # eager is the reference itself (a randomised model's two forwards differ)
    if problem:
        raise NumericsError(f"eval.model_form={name!r} cannot be used: {problem}. "
                            f"Use eval.model_form=torch_eager (always exact) or auto.")
    result = AttackModel(module, name, time.perf_counter() - started, gap, cache_note)
    cached[name] = result
    return result


def _build_compiled(model: nn.Module, name: str, dev: torch.device, x: torch.Tensor, ref_logits: torch.Tensor,
                    atol: float, rtol: float) -> tuple[nn.Module, float, str]:
    """Build and warm up a compiled form with the artefacts cache; if building under the cache fails, build it
    once more without (the cache only saves time). Dynamo's ``caching_precompile`` can fail where plain
    compilation works, e.g. "Name '__builtins_dict___2' already exists in scope" when a process compiles a second
    model from the same Python module. Returns the module, its logit gap and what happened to the cache."""
    from bench.compile_cache import cache_key, reusing_compiled

    try:
        with reusing_compiled(cache_key(model, name, dev, x)) as use:
            module = FORMS[name](model, dev).eval()
            gap = logit_gap(ref_logits, _warm_up(module, x), atol, rtol)
        return module, gap, use.describe()
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc)[:200]}".strip()
    module = FORMS[name](model, dev).eval()
    gap = logit_gap(ref_logits, _warm_up(module, x), atol, rtol)
    return module, gap, f"compile cache not used (building under it failed: {why}); compiled without it"


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    """At least two inputs: dynamic shapes are specialised at batch size 1."""
    return torch.cat([x, x.flip(-1)]) if 0 < len(x) < 2 else x


def _fastest_form(model: nn.Module, dev: torch.device, check_inputs: torch.Tensor,
                  planned_passes: float | None, grad_share: float = DEFAULT_GRAD_SHARE) -> AttackModel:
    """``auto``: every candidate form of the device that passes the numerics check (compiled ones only when the
    run repays compiling), timed on the run's inputs and mix of calls (``grad_share`` of them with an input
    gradient); the fastest wins if it beats eager by ``AUTO_MIN_GAIN``.
    The note says what each candidate measured, so a row's form choice can be read back from its log."""
    cached = _CACHE.setdefault(model, {})
    if AUTO in cached:
        return cached[AUTO]
    started = time.perf_counter()
    uncheckable = _uncheckable(model)
    if uncheckable:
        eager_form = attack_model(model, "torch_eager", dev, check_inputs)
        result = AttackModel(eager_form.module, "torch_eager", eager_form.prepare_s, eager_form.gap,
                             f"auto: torch_eager, since {uncheckable}, so no form can be checked against eager")
        cached[AUTO] = result
        return result
    x = _check_batch(check_inputs.to(dev))
    notes: list[str] = []
    timed: dict[str, tuple[AttackModel, float]] = {}
    for name in AUTO_CANDIDATES.get(dev.type, AUTO_CANDIDATES["cpu"]):
        if name in COMPILED_FORMS:
            from bench.compile_cache import artefact_path, cache_key

            if not worth_compiling(dev, planned_passes, artefact_path(cache_key(model, name, dev, x)).is_file()):
                notes.append(f"{name} not tried: about {planned_passes:,.0f} sample-passes would not repay "
                             f"compiling (threshold {COMPILE_REPAID_AFTER.get(dev.type, 0):,}; nothing cached)")
                continue
        try:
            built = attack_model(model, name, dev, x)
        except NumericsError as exc:
            notes.append(f"{name} not used ({str(exc).split(' cannot be used: ')[-1].split('. Use ')[0]})")
            continue
        timed[name] = (built, samples_per_second(built.module, x, grad_share=grad_share))
    eager_rate = timed["torch_eager"][1]
    best = max(timed, key=lambda n: timed[n][1])
    if best != "torch_eager" and timed[best][1] < AUTO_MIN_GAIN * eager_rate:
        best = "torch_eager"
    rates = ", ".join(f"{n} {rate:,.0f}" + (f" [{built.note}]" if built.note else "") for n, (built, rate) in timed.items())
    chosen = timed[best][0]
    note = f"auto: {best}, the fastest checked form (sample-passes/s with {grad_share:.0%} of the run's passes " \
           f"needing an input gradient: {rates}; another form must beat eager by {AUTO_MIN_GAIN:g}x)" + \
           "".join(f"; {n}" for n in notes)
    result = AttackModel(chosen.module, best, time.perf_counter() - started, chosen.gap, note)
    cached[AUTO] = result
    return result
