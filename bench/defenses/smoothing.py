"""Randomised smoothing (Cohen et al. 2019): classify many Gaussian-noised copies, predict the majority.

The base classifier is trained with Gaussian noise of the same sigma
(``train.defense=gaussian_noise``). ``forward`` is the smoothed classifier of
the empirical track: the vote shares of ``n_predict`` noisy copies, returned as
log-shares (argmax = the majority class; ties go to the lower class index). It
is randomised and, through the votes, non-differentiable; its adaptive attack
is EoT on the *soft* smoothed classifier (mean softmax of the noisy copies,
Salman et al. 2019), which has a gradient. The certified track, with
abstention, is ``bench/defenses/certify.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.defenses import register_defense
from bench.defenses.base import Declaration, Defense
from bench.errors import ConfigError

VOTE_FLOOR = 1e-4  # added to vote shares before the log, so a class with no vote has a finite logit


@register_defense("smoothing")
class RandomisedSmoothing(Defense):
    declaration = Declaration(randomised=True, differentiable=False, trained="gaussian_noise")
    PARAMS = {"sigma": 0.25, "n_predict": 32}

    def __init__(self, model, **params):
        super().__init__(model, **params)
        self.sigma = float(self.params["sigma"])
        self.n_predict = int(self.params["n_predict"])
        if self.sigma <= 0 or self.n_predict < 1:
            raise ConfigError(f"smoothing needs sigma > 0 and n_predict >= 1, got sigma={self.sigma}, "
                              f"n_predict={self.n_predict}. Set defense.params.")
        self.soft = False  # the adaptive view: mean softmax of the noisy copies (differentiable)

    def noisy_logits(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """Base-classifier logits of ``draws`` noisy copies of each image: (draws, N, K)."""
        batch = x.repeat(draws, *[1] * (x.dim() - 1))
        noise = torch.randn(batch.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)
        out = self.model(batch + self.sigma * noise)
        return out.view(draws, x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.noisy_logits(x, self.n_predict)
        if self.soft:
            return F.softmax(logits.float(), -1).mean(0).clamp_min(1e-12).log()
        with torch.no_grad():
            votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).float().mean(0)
        return (votes + VOTE_FLOOR).log() + 0 * x.flatten(1)[:, :1]  # connected to x, zero gradient

    def gradient_view(self) -> "RandomisedSmoothing":
        """One noisy copy per call through the soft classifier: EoT's draws then give the expectation."""
        return self.view(soft=True, n_predict=1)

    def describe(self) -> str:
        return f"smoothing(sigma={self.sigma:g})"
