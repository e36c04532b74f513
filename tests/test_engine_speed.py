"""The engine's fast paths compute what the plain paths compute (issue 5); no timing is asserted here.

- model forms (channels_last, BN folding, compilation) give the eager model's logits and the same attack results;
- PGD's early stop returns the full-step attack's examples, and never calls robust a sample it breaks;
- the engine's nested epsilons reuse a smaller epsilon's example and never weaken the attack;
- the compiled form runs the whole standard battery without a recompile, and says so if it ever falls back;
- ``auto`` keeps the fastest checked form (a form 20 ms slower per call is never chosen), timed on the run's mix of
  forwards and input-gradient passes, and says what each measured;
- the inference graph serves only forwards without autograd (gradients stay eager's, bit for bit), and a model
  whose trace depends on the batch size is refused.
All on a ResNet-18 trained on real BreastMNIST.
"""

from __future__ import annotations

import time
from functools import partial

import pytest
import torch

from bench import model_forms
from bench.attacks import build_attack
from bench.data import load_split
from bench.evaluate import PlannedAttack, attack_batch
from bench.model_forms import AUTO, NumericsError, attack_model, logit_gap, running_form


@pytest.fixture(scope="module")
def batch(real_root):
    test = load_split("breastmnist", "test", root=real_root, n_examples=64, seed=0)
    return test.images, test.labels.view(-1), test.info.task


def fooled_by(model, x_adv, y, task) -> torch.Tensor:
    with torch.no_grad():
        return ~task.correct(model(x_adv), y)


@pytest.mark.parametrize("form", ["torch_channels_last", "torch_bn_folded", "torch_inference_graph", "torch_compile"])
def test_each_form_gives_the_eager_logits_and_the_same_pgd_result(form, trained_breast, batch):
    model = trained_breast[0]
    x, y, task = batch
    fast = attack_model(model, form, "cpu", x)
    # a compiled form may have had to build without the artefacts cache (a dynamo bug when one process compiles
    # a second model: bench.model_forms._build_compiled); it is still compiled and checked
    assert fast.form == form and fast.gap <= 1 and (not fast.note or fast.note.startswith(
        ("compiled artefacts", "compile cache not used (building under it failed")))
    # every module of a form is in eval mode, wrappers included (certification refuses a training-mode base)
    assert not any(m.training for m in fast.module.modules())
    with torch.no_grad():
        assert logit_gap(model(x), fast.module(x)) <= 1
        assert logit_gap(model(x[:1]), fast.module(x[:1])) <= 1  # a batch of one (compiled: run as a pair)
    attack = build_attack("pgd", "linf", 0, {"steps": 10, "early_stop": False})
    plain = attack(model, x, y, [2 / 255], task)[0].x_adv
    quick = attack(fast.module, x, y, [2 / 255], task)[0].x_adv
    # Rounding can flip a sample sitting on the decision boundary; more than one in 64 would be a real difference.
    assert (fooled_by(model, plain, y, task) != fooled_by(model, quick, y, task)).sum() <= 1
    assert attack_model(model, form, "cpu", x) is fast  # built (and compiled) once per model


def test_a_form_that_changes_the_logits_is_refused_by_name_or_replaced_under_auto(trained_breast, batch, monkeypatch):
    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + 0.5

    monkeypatch.setitem(model_forms.FORMS, "shifted", lambda m, d: Shifted(model_forms.frozen_copy(m, d)))
    model, (x, _, _) = trained_breast[0], batch
    with pytest.raises(NumericsError, match="eval.model_form='shifted'.*torch_eager"):
        attack_model(model, "shifted", "cpu", x[:8])
    monkeypatch.setitem(model_forms.AUTO_CANDIDATES, "cpu", ("torch_eager", "shifted"))
    chosen = attack_model(fresh(model), AUTO, "cpu", x[:8])
    assert chosen.form == "torch_eager" and "shifted not used (its logits differ" in chosen.note


def fresh(model: torch.nn.Module) -> torch.nn.Module:
    """A copy: forms are cached per model object, so a test that changes the candidates needs its own."""
    return model_forms.frozen_copy(model, torch.device("cpu"))


class Sleepy(torch.nn.Module):
    """The same function as the model it wraps, 20 ms slower per call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        time.sleep(0.02)
        return self.inner(x)


def test_auto_keeps_the_fastest_checked_form_and_says_what_each_measured(trained_breast, batch, monkeypatch):
    model, (x, _, _) = trained_breast[0], batch
    frozen = model_forms.frozen_copy
    monkeypatch.setitem(model_forms.FORMS, "torch_eager", lambda m, d: Sleepy(frozen(m, d)))
    monkeypatch.setitem(model_forms.FORMS, "unhurried", lambda m, d: frozen(m, d))
    monkeypatch.setitem(model_forms.AUTO_CANDIDATES, "cpu", ("torch_eager", "unhurried"))
    model = fresh(model)
    chosen = attack_model(model, AUTO, "cpu", x[:8])
    assert chosen.form == "unhurried" and "torch_eager " in chosen.note and "unhurried " in chosen.note
    assert attack_model(model, AUTO, "cpu", x[:8]) is chosen  # timed once per model


def test_auto_keeps_eager_when_no_form_beats_it_by_the_margin(trained_breast, batch, monkeypatch):
    model, (x, _, _) = trained_breast[0], batch
    frozen = model_forms.frozen_copy
    monkeypatch.setitem(model_forms.FORMS, "sleepy", lambda m, d: Sleepy(frozen(m, d)))
    monkeypatch.setitem(model_forms.AUTO_CANDIDATES, "cpu", ("torch_eager", "sleepy"))
    assert attack_model(fresh(model), AUTO, "cpu", x[:8]).form == "torch_eager"


class SlowQueries(torch.nn.Module):
    """The same function as the model it wraps, 20 ms slower per call without autograd (a score attack's query)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if not torch.is_grad_enabled():
            time.sleep(0.02)
        return self.inner(x)


class SlowGradients(SlowQueries):
    """The same function as the model it wraps, 20 ms slower per call with autograd (a gradient attack's pass)."""

    def forward(self, x):
        if torch.is_grad_enabled():
            time.sleep(0.02)
        return self.inner(x)


@pytest.mark.parametrize("grad_share, fastest", [(0.0, "unhurried"), (1.0, "torch_eager")])
def test_auto_times_the_forms_on_the_runs_mix_of_queries_and_gradients(trained_breast, batch, monkeypatch,
                                                                      grad_share, fastest):
    """Eager slowed down only in forwards without autograd, the other form only in gradient passes: a run of
    queries alone (Square) takes the other form, a run of gradient passes alone keeps eager. (Each loses by 20 ms
    a call, far beyond timing noise on a shared machine; eager kept among equals is the margin's own test.)"""
    model, (x, _, _) = trained_breast[0], batch
    frozen = model_forms.frozen_copy
    monkeypatch.setitem(model_forms.FORMS, "torch_eager", lambda m, d: SlowQueries(frozen(m, d)))
    monkeypatch.setitem(model_forms.FORMS, "unhurried", lambda m, d: SlowGradients(frozen(m, d)))
    monkeypatch.setitem(model_forms.AUTO_CANDIDATES, "cpu", ("torch_eager", "unhurried"))
    chosen = attack_model(fresh(model), AUTO, "cpu", x[:8], grad_share=grad_share)
    assert chosen.form == fastest and f"with {grad_share:.0%} of the run's passes needing an input gradient" in chosen.note


def test_the_inference_graph_answers_queries_and_leaves_gradients_to_the_eager_model(trained_breast, batch):
    model, (x, y, task) = trained_breast[0], batch
    form = attack_model(model, "torch_inference_graph", "cpu", x)
    assert isinstance(form.module.graph, torch.jit.ScriptModule)  # traced by the numerics check's query
    with torch.no_grad():
        for n in (64, 17, 1):  # any batch size early stopping leaves
            assert logit_gap(model(x[:n]), form.module(x[:n])) <= 1
    grads = []
    for module in (model, form.module):
        xg = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(task.loss(module(xg), y), xg)[0])
    assert torch.equal(grads[0], grads[1])  # gradient attacks see exactly the eager model


def test_a_model_whose_trace_bakes_in_its_batch_size_is_refused_as_an_inference_graph(trained_breast, batch):
    class BatchBaked(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            logits = self.inner(x)
            return logits + 0 * torch.arange(int(x.shape[0]), dtype=logits.dtype).unsqueeze(1)  # a python int

    model, (x, _, _) = BatchBaked(trained_breast[0]), batch
    with pytest.raises(NumericsError, match="torch_inference_graph.*cannot be used: it failed to build"):
        attack_model(model, "torch_inference_graph", "cpu", x[:8])


def test_a_battery_of_mostly_queries_plans_few_gradient_passes():
    """Square's 5,000 queries per sample dwarf APGD's and FMN's 100 steps: auto times forms on that mix."""
    from bench.config import compose
    from bench.evaluate import PlannedPasses
    from bench.experiment import build_plan

    standard = PlannedPasses.of(build_plan(compose(["battery=standard"])), n_samples=10)
    assert 0 < standard.grad_share < 0.1
    assert standard.total == 10 * 4 * (5000 + 100 + 100 + 100)  # four epsilons; APGD-CE, APGD-margin, FMN, Square
    pgd_only = PlannedPasses.of(build_plan(compose(["attack=pgd_linf"])), n_samples=10)
    assert pgd_only.grad_share == 1


def test_unknown_form_names_the_choices():
    with pytest.raises(Exception, match="torch_compile.*eval.model_form"):
        model_forms.resolve_form("fastest", torch.device("cpu"))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_early_stop_returns_the_full_step_examples_and_never_calls_robust_what_full_steps_break(
        momentum, trained_breast, batch):
    model = trained_breast[0]
    x, y, task = batch
    params = {"steps": 20, "momentum": momentum, "rel_stepsize": 0.1}
    full = build_attack("pgd", "linf", 3, {**params, "early_stop": False})(model, x, y, [2 / 255], task)[0]
    early = build_attack("pgd", "linf", 3, {**params, "early_stop": True})(model, x, y, [2 / 255], task)[0]
    broken_full, broken_early = fooled_by(model, full.x_adv, y, task), fooled_by(model, early.x_adv, y, task)
    assert 0 < int(broken_full.sum()) < len(x)  # the check means something: some samples broken, some not
    assert not (broken_full & ~broken_early).any()
    assert torch.allclose(full.x_adv, early.x_adv, atol=1e-6)
    assert early.backwards < full.backwards  # broken samples left the batch


def test_nested_epsilons_reuse_smaller_eps_examples_and_are_never_weaker(trained_breast, batch):
    model = trained_breast[0]
    x, y, task = batch
    epsilons = [4 / 255, 1 / 255, 2 / 255]  # any order: the engine runs them increasing
    # No random start: each sample's trajectory is then the same in any batch, so per-sample sets compare exactly.
    params = {"steps": 5, "random_start": False}
    attack = build_attack("pgd", "linf", 0, params)
    rows = torch.arange(len(x))
    records = attack_batch(model, [PlannedAttack("pgd", attack, epsilons)], x, y, rows, rows, task, "sequential", 0)
    broken = {eps: {r["index"] for r in records if r["eps"] == eps and r["attacked"] and not r["adv_correct"]}
              for eps in epsilons}
    assert broken[1 / 255] <= broken[2 / 255] <= broken[4 / 255]
    for eps in epsilons:  # the plain per-epsilon attack on every clean-correct sample breaks nothing more
        clean_ok = torch.tensor([r["clean_correct"] for r in records if r["eps"] == eps])
        plain = build_attack("pgd", "linf", 0, params)(model, x, y, [eps], task)[0].x_adv
        plain_broken = set((fooled_by(model, plain, y, task) & clean_ok).nonzero().view(-1).tolist())
        assert plain_broken <= broken[eps]
    reused = [r for r in records if r["eps"] == 4 / 255 and r["index"] in broken[1 / 255]]
    assert reused and all(r["linf"] <= 1 / 255 + 1e-6 for r in reused)  # the 1/255 example, not a new one


STANDARD_BATTERY_TINY = (  # the standard battery's attacks (conf/battery/standard.yaml) on tiny budgets
    ("apgd_ce", "apgd", {"steps": 5, "loss": "ce"}),
    ("apgd_margin", "apgd", {"steps": 5, "loss": "margin"}),
    ("fmn_linf", "fmn", {"steps": 5}),
    ("square_linf", "square", {"max_queries": 40}),
)


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_the_standard_battery_runs_compiled_start_to_end_without_a_recompile(trained_breast, batch):
    """Issue 16: no silent fallback. Every attack calls the model with and without autograd, on batches that
    early stopping shrinks to any size, from inputs of any stride; the compiled form serves them all with the
    graphs its warm-up built (one per grad mode), and every record names the form its attack ran in."""
    model = trained_breast[0]
    x, y, task = batch
    fast = attack_model(model, "torch_compile", "cpu", x)
    before = compiled_graphs()
    plan = [PlannedAttack(aid, build_attack(name, "linf", 0, params), [1 / 255, 8 / 255])
            for aid, name, params in STANDARD_BATTERY_TINY]
    rows = torch.arange(12)
    form_of = partial(running_form, fast.module, fast.form)
    records = attack_batch(fast.module, plan, x[:12], y[:12], rows, rows, task, "sequential", 0, form_of=form_of)
    # inputs the suite can produce beyond that: a batch of one, odd sizes, channels_last strides, a view
    for xb in (x[:1], x[:7], x[:17], x[:20].contiguous(memory_format=torch.channels_last), x[3:40:2]):
        with torch.no_grad():
            fast.module(xb)
        xg = xb.detach().clone().requires_grad_(True)
        torch.autograd.grad(fast.module(xg).logsumexp(1).sum(), xg)
    assert compiled_graphs() - before == 0, "an attack made dynamo compile a new graph (a recompile)"
    assert fast.module.fallback == ""
    assert {r["model_form"] for r in records} == {"torch_compile"}
    assert {r["attack"] for r in records} == {aid for aid, _, _ in STANDARD_BATTERY_TINY}


def test_a_compiled_form_that_reaches_the_recompile_limit_says_it_now_runs_eagerly(monkeypatch):
    """If dynamo's limit is reached anyway, the model goes on eagerly (same logits) and the form says so,
    instead of dynamo's silent eager fallback."""
    import torch._dynamo

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 26 * 26, 2)).eval()
    compiled = model_forms.FORMS["torch_compile"](net, torch.device("cpu"))
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    x = torch.rand(20, 1, 28, 28)
    with torch.no_grad():
        compiled(x)  # the one graph the limit allows
    assert running_form(compiled, "torch_compile") == "torch_compile"
    xg = x.clone().requires_grad_(True)
    out = compiled(xg)  # grad mode: a second graph, over the limit
    assert compiled.fallback and "recompile limit (1)" in compiled.fallback
    assert running_form(compiled, "torch_compile").startswith("torch_eager (after torch_compile: dynamo's recompile")
    torch.testing.assert_close(out, net(xg))
    assert torch.autograd.grad(out.sum(), xg)[0].shape == x.shape
