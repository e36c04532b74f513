"""Compilation paid once (issue 16, item 3): compiled forms reuse the artefacts of an earlier run on the machine.

Behaviour, never timing: a second process preparing the same architecture in the same form traces no graph
(dynamo's cache answers), the key separates what the compiled code depends on, a broken artefact is reported
and replaced, a compile that fails under the cache is built without it, and ``auto`` does not compile for a run
too short to repay it unless artefacts are cached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import compile_cache
from bench.model_forms import COMPILED_FORMS

SNIPPET = """
import json, torch
from torch._dynamo.utils import counters
from bench.model_forms import attack_model
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 26 * 26, 2)).eval()
form = attack_model(net, "torch_compile", "cpu", torch.rand(8, 1, 28, 28))
print(json.dumps({"note": form.note, "form": form.form, "gap": form.gap,
                  "counters": {k: dict(v) for k, v in counters.items()}}))
"""


def small_net(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(width * 26 * 26, 2)).eval()


def run_in_new_process(snippet: str, cache: Path, inductor: Path):
    """What ``snippet`` prints last (JSON), run as a later medbench run would be: a fresh process on these caches."""
    env = {**os.environ, compile_cache.ENV: str(cache), "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare_in_new_process(cache: Path, inductor: Path) -> dict:
    return run_in_new_process(SNIPPET, cache, inductor)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same preparation in two fresh processes sharing one cache: (first, second, cache folder)."""
    root = tmp_path_factory.mktemp("compile_cache")
    cache, inductor = root / "artefacts", root / "inductor"
    first = prepare_in_new_process(cache, inductor)
    second = prepare_in_new_process(cache, inductor)
    return first, second, cache, inductor


def test_the_second_run_reuses_the_first_runs_compiled_graphs_without_tracing(two_runs):
    first, second, cache, _ = two_runs
    assert first["form"] == second["form"] == "torch_compile" and first["gap"] <= 1 and second["gap"] <= 1
    assert "saved to" in first["note"] and first["counters"]["stats"]["unique_graphs"] >= 2  # one per grad mode
    assert "reused from" in second["note"] and str(cache) in second["note"]
    assert second["counters"]["dynamo_cache"].get("dynamo_cache_hit", 0) >= 1
    assert "stats" not in second["counters"] or not second["counters"]["stats"].get("unique_graphs")  # no tracing


def test_a_broken_artefact_is_reported_compiled_afresh_and_replaced(two_runs, tmp_path):
    _, _, cache, inductor = two_runs
    broken = tmp_path / "artefacts"
    broken.mkdir()
    for f in cache.iterdir():
        (broken / f.name).write_bytes(b"not a torch cache")
    run = prepare_in_new_process(broken, inductor)
    assert run["form"] == "torch_compile" and run["gap"] <= 1
    assert "could not load" in run["note"] and "compiled afresh" in run["note"]
    # removed, or rewritten where this process compiled something torch's own caches did not already hold
    assert all(f.read_bytes() != b"not a torch cache" for f in broken.iterdir())


def test_the_key_follows_what_compiled_code_depends_on_but_not_the_weight_values():
    cpu = torch.device("cpu")
    x = torch.rand(4, 1, 28, 28)
    key = compile_cache.cache_key(small_net(0), "torch_compile", cpu, x)
    assert compile_cache.cache_key(small_net(1), "torch_compile", cpu, x) == key  # retrained: graphs still apply
    assert compile_cache.cache_key(small_net(0, width=8), "torch_compile", cpu, x) != key  # another architecture
    assert compile_cache.cache_key(small_net(0), "torch_compile_channels_last", cpu, x) != key
    assert compile_cache.cache_key(small_net(0), "torch_compile", cpu, torch.rand(4, 1, 28, 28).double()) != key


AUTO_SHORT_RUN = """
import json, torch
from bench.model_forms import AUTO, attack_model
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 26 * 26, 2)).eval()  # SNIPPET's architecture
form = attack_model(net, AUTO, "cpu", torch.rand(8, 1, 28, 28), planned_passes=500)
print(json.dumps({"note": form.note, "form": form.form}))
"""


def test_auto_does_not_compile_for_a_short_run_but_tries_cached_artefacts(two_runs, tmp_path):
    """Each run is a fresh process, as a later run of medbench is (in one process, models compiled by earlier code
    make dynamo's cache loading fail, which is the next test's case)."""
    _, _, cache, inductor = two_runs
    short = run_in_new_process(AUTO_SHORT_RUN, tmp_path / "empty", inductor)
    assert short["form"] not in COMPILED_FORMS and "torch_compile not tried" in short["note"]
    assert "would not repay compiling" in short["note"]
    cached = run_in_new_process(AUTO_SHORT_RUN, cache, inductor)
    # the cached compiled form is tried (and timed against eager) without compiling again; the faster one runs
    assert "torch_compile" in cached["note"] and "reused from" in cached["note"] and "not tried" not in cached["note"]


SECOND_MODEL = """
import json, torch
from bench.model_forms import attack_model
def net(width, size):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, width, 3), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(width * (size - 2) ** 2, 2)).eval()
first = attack_model(net(4, 28), "torch_compile", "cpu", torch.rand(8, 1, 28, 28))  # SNIPPET's: cached
second = attack_model(net(2, 8), "torch_compile", "cpu", torch.rand(4, 1, 8, 8))
print(json.dumps([{"form": f.form, "gap": f.gap, "note": f.note} for f in (first, second)]))
"""


def test_a_compile_that_fails_under_the_cache_is_built_without_it_and_says_why(two_runs, tmp_path):
    """The cache only saves time. A process that has loaded one model's artefacts and then compiles a second
    model sharing the same forward code (two nn.Sequential here) makes dynamo's caching_precompile fail with
    "Name '__builtins_dict___0' already exists in scope"; plain compilation of that model works, so it is used."""
    _, _, cache, inductor = two_runs
    artefacts = tmp_path / "artefacts"
    shutil.copytree(cache, artefacts)
    loaded, second = run_in_new_process(SECOND_MODEL, artefacts, inductor)
    assert "reused from" in loaded["note"]
    assert second["form"] == "torch_compile" and second["gap"] <= 1
    assert "compile cache not used (building under it failed: AssertionError" in second["note"]
    assert "compiled without it" in second["note"]
