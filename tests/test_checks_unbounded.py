"""unbounded_eps_not_zero: an unbounded attack must break every sample unless the gradient is masked (Carlini et
al. 2019), and the check must not mistake the attack's own bad start for masking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.checks import run_model_checks
from bench.errors import ConfigError
from bench.tasks import get_task


class SaturatesOnNoise(nn.Module):
    """Near its data a linear classifier on the image's mean; on noise (pixel sd above 0.15) a constant 'class 1'
    with a flat gradient, as MobileNetV3-Small trained on BreastMNIST behaves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        gate = ((0.15 - flat.std(1, keepdim=True)) / 0.05).clamp(0, 1)
        margin = 100 * (flat.mean(1, keepdim=True) - 0.5)
        linear = torch.cat([-margin, margin], 1)
        return gate * linear + (1 - gate) * torch.tensor([[-5.0, 5.0]])


def _images_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 2
    shift = (labels.float() * 2 - 1) * 0.01  # mean 0.49 or 0.51: class 0 or 1, margin 1
    images = 0.5 + shift.view(-1, 1, 1, 1) + 0.01 * torch.randn(32, 1, 28, 28, generator=generator)
    return images.clamp(0, 1), labels


def test_a_model_that_saturates_on_noise_but_breaks_from_its_images_is_not_flagged():
    images, labels = _images_and_labels()
    model = SaturatesOnNoise()
    task = get_task("binary-class")
    assert bool(task.correct(model(images), labels).all())
    assert bool((model(torch.rand(8, 1, 28, 28)).argmax(1) == 1).all())  # noise: class 1, whatever the start
    assert "unbounded_eps_not_zero" not in run_model_checks(model, images, labels, task)


def test_a_masked_gradient_survives_both_starts_and_is_flagged():
    class Masked(SaturatesOnNoise):
        """The same predictions, with the input gradient cut (as a non-differentiable front end would)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.detach()) + 0 * x.flatten(1).sum(1, keepdim=True)

    images, labels = _images_and_labels()
    fired = run_model_checks(Masked(), images, labels, get_task("binary-class"))
    assert "unbounded_eps_not_zero" in fired, fired


def test_pgd_on_the_cw_margin_breaks_a_model_too_confident_for_the_cross_entropy_gradient():
    """A logit gap above ~104 underflows exp() in float32: the cross-entropy's input gradient is exactly 0 and
    PGD-CE cannot move, while the margin's gradient is the logits' own."""
    from bench.attacks import build_attack

    class Overconfident(SaturatesOnNoise):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 200 * super().forward(x)

    images, labels = _images_and_labels()
    model, task = Overconfident(), get_task("binary-class")
    robust = {}
    for loss in ("ce", "margin"):
        attack = build_attack("pgd", "linf", 0, {"steps": 10, "rel_stepsize": 0.25, "random_start": False, "loss": loss})
        (out,) = attack(model, images, labels, [8 / 255], task)
        robust[loss] = float(task.correct(model(out.x_adv), labels).float().mean())
    assert robust == {"ce": 1.0, "margin": 0.0}
    with pytest.raises(ConfigError, match="unknown pgd loss 'dlr'; valid choices: ce, margin"):
        build_attack("pgd", "linf", 0, {"loss": "dlr"})
