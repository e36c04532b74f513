"""The training-step benchmarks (scripts/bench_train_precision.py, scripts/bench_train_memory_format.py) report what
they compare: a row per model (and precision), both columns, the ratio, and the command that reproduces the table.

Nothing here asserts a speed: a timed test on a shared machine would measure the machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench.benchmark.train_step import full_batches, timed_step
from bench.data import load_split


def test_full_batches_cover_one_epoch_in_a_seeded_order_without_a_short_batch(real_root):
    train = load_split("breastmnist", "train", 28, real_root)  # 546 images
    batches = full_batches(train, 128)
    assert [len(b) for b in batches] == [128] * 4
    assert len(torch.cat(batches).unique()) == 512
    assert all(torch.equal(a, b) for a, b in zip(batches, full_batches(train, 128)))


def test_a_timed_step_trains_the_model_under_the_context_it_is_given():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    before = model[1].weight.detach().clone()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    seconds = timed_step(model, optimiser, torch.nn.functional.cross_entropy, torch.rand(4, 1, 4, 4),
                         torch.tensor([0, 1, 0, 1]), torch.autocast("cpu", dtype=torch.bfloat16))
    assert seconds > 0 and not torch.equal(before, model[1].weight)


@pytest.mark.parametrize("script, argv, columns", [
    ("bench_train_precision", ["--models", "regnetx_002", "--warmup", "0"], ("fp32", "bf16")),
    ("bench_train_memory_format", ["--models", "regnetx_002", "--precisions", "fp32", "--batches", "1", "--warmup", "0"],
     ("contiguous", "channels_last")),
])
def test_a_training_benchmark_writes_its_table_its_numbers_and_how_to_reproduce_them(real_root, tmp_path, script, argv,
                                                                                       columns):
    main = __import__(f"scripts.{script}", fromlist=["main"]).main
    out = tmp_path / "table.md"
    assert main([*argv, "--root", str(real_root), "--threads", "1", "--out", str(out)]) == 0
    page, numbers = out.read_text(), json.loads(out.with_suffix(".json").read_text())
    assert "| regnetx_002 |" in page
    assert all(f"{column} ms / batch" in page for column in columns)
    assert f"python scripts/{script}.py --models regnetx_002" in page and numbers["command"] in page
    timings = numbers["models"]["regnetx_002"] if "models" in numbers else numbers["runs"][0]
    assert set(timings["median_s"]) == set(columns) and timings["speedup"] > 0
