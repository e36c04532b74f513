"""The battery profile (issue 16, item 5) puts each second where it was spent: the model's forward, its backward,
or the attack's own host work, in the stage (attack) that was running."""

from __future__ import annotations

import time

import torch
import torch.nn as nn

from bench.benchmark.profile import CLEAN_STAGE, PassTimer, profile_table


class SlowNet(nn.Module):
    """A tiny classifier whose forward takes at least ``delay`` seconds."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        time.sleep(self.delay)
        return self.head(self.conv(x).mean((2, 3)))


def test_passes_are_counted_and_timed_in_the_stage_that_ran_them():
    timer = PassTimer(SlowNet(0.02))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        timer(x)  # the clean pass
    timer.stage("pgd")
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(timer(xg).sum(), xg)
    with torch.no_grad():
        timer(x[:3])
    timer.stage("host_only")
    time.sleep(0.05)  # an attack's own work: no model call
    stages = timer.finish()
    clean, pgd, host_only = stages[CLEAN_STAGE], stages["pgd"], stages["host_only"]
    assert (clean.forward_samples, clean.backward_samples, clean.calls) == (6, 0, 1)
    assert (pgd.forward_samples, pgd.backward_samples, pgd.calls) == (9, 6, 2)
    assert pgd.forward_s >= 0.04 and pgd.backward_s > 0  # both forwards' sleeps are forward time
    assert host_only.forward_s == 0 and host_only.host_s >= 0.05
    assert all(s.sync_s == 0 for s in stages.values())  # nothing is queued on a CPU


def test_the_table_has_a_row_per_stage_and_a_total():
    timer = PassTimer(SlowNet(0.0))
    timer.stage("square")
    with torch.no_grad():
        timer(torch.rand(4, 1, 8, 8))
    lines = profile_table(timer.finish(), "cpu")
    assert [line.split("|")[1].strip() for line in lines[2:]] == [CLEAN_STAGE, "square", "**total**"]
    assert "0 (CPU)" in lines[-1]
