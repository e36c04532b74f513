"""Compiled model forms paid for once per machine: torch.compile's artefacts saved and loaded by key.

Preparing a compiled form costs tens of seconds on a CPU, mostly dynamo
tracing the model's Python code (one graph per grad mode) and inductor
lowering it; every run paid it again. With dynamo's ``caching_precompile``
the traced frames themselves become cache artefacts, so a run that loads the
artefacts of an earlier one (``torch.compiler.load_cache_artifacts``) skips
tracing and lowering and only evaluates guards: a few seconds instead.

The key names what the compiled code depends on: the torch version, the
device and its CPU/GPU model, the form, the input shape and dtype, the model's
architecture (module classes, parameter and buffer names, shapes and dtypes)
and this package's form wrappers. Weight *values* are not in it: the compiled
graphs take parameters as inputs, so a retrained model of the same
architecture reuses them correctly. A stale or foreign artefact can at worst
miss torch's own cache keys and be compiled afresh; it can never change a
logit, because every prepared form is still checked against the eager model
on real inputs (``bench.model_forms.attack_model``). Any failure to load or
save is reported and the run compiles as before.

Artefacts live in ``$MEDBENCH_COMPILE_CACHE`` when set, else
``<workspace>/outputs/compile_cache/`` (machine-local, never committed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from bench.atomic import atomic_write

ENV = "MEDBENCH_COMPILE_CACHE"


def cache_dir() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().resolve()
    from bench.config import workspace_root

    return workspace_root() / "outputs" / "compile_cache"


def device_model(device: torch.device) -> str:
    """The hardware the compiled kernels were generated for (CPU ISA level, or the GPU's name)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()}:{torch.backends.cpu.get_cpu_capability()}"


def architecture(model: nn.Module) -> list:
    """What the traced graph depends on: module classes by name, parameter/buffer names, shapes and dtypes."""
    modules = [f"{name}:{type(m).__module__}.{type(m).__qualname__}" for name, m in model.named_modules()]
    tensors = [(name, list(t.shape), str(t.dtype)) for name, t in
               [*model.named_parameters(), *model.named_buffers()]]
    return [modules, tensors]


def _wrappers_source() -> str:
    import bench.model_forms as forms

    return hashlib.sha256(Path(forms.__file__).read_bytes()).hexdigest()


def cache_key(model: nn.Module, form: str, device: torch.device, example: torch.Tensor) -> str:
    parts = {
        "torch": torch.__version__, "device": device.type, "device_model": device_model(device), "form": form,
        "input": [list(example.shape[1:]), str(example.dtype)], "architecture": architecture(model),
        "wrappers": _wrappers_source(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def artefact_path(key: str) -> Path:
    return cache_dir() / f"{key}.bin"


@dataclass
class CacheUse:
    """What the cache did for one prepared form (a sentence for the run's log)."""

    path: Path
    loaded: bool = False
    saved: bool = False
    problem: str = ""

    def describe(self) -> str:
        if self.problem:
            return f"compile cache not used ({self.problem})"
        if self.loaded:
            return f"compiled artefacts reused from {self.path}"
        if self.saved:
            return f"compiled artefacts saved to {self.path} for the next run"
        return ""


@contextmanager
def reusing_compiled(key: str) -> Iterator[CacheUse]:
    """Run the body (build and warm up a compiled form) with the artefacts of ``key`` loaded if there are
    any, and saved afterwards if there were none. Failures never stop the run: they are reported."""
    import torch._dynamo

    use = CacheUse(artefact_path(key))
    with torch._dynamo.config.patch(caching_precompile=True), warnings.catch_warnings():  # all three need it on
        # dynamo's serialisable guards read .grad of non-leaf tensors and torch warns about it: not ours to fix
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        if use.path.is_file():
            try:  # torch answers None (or raises) for bytes that are not its artefacts: compile afresh, overwrite
                if torch.compiler.load_cache_artifacts(use.path.read_bytes()) is None:
                    raise ValueError("not torch cache artefacts")
                use.loaded = True
            except Exception as exc:
                use.problem = f"could not load {use.path}: {type(exc).__name__}: {str(exc)[:200]}; compiled afresh"
                use.path.unlink(missing_ok=True)  # never tried again; rewritten below if this run compiles anew
        yield use
        if not use.loaded:
            try:
                saved = torch.compiler.save_cache_artifacts()
                if saved is not None:
                    atomic_write(use.path, saved[0])
                    use.saved = True
            except Exception as exc:
                use.problem = use.problem or f"could not save to {use.path}: {type(exc).__name__}: {str(exc)[:200]}"
