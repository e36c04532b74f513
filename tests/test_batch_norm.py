"""train.bn_stats: the batch-norm statistics a trained model is validated and saved with (bench/batch_norm.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bench.batch_norm import BN_STATISTICS, bn_statistics, recompute_statistics
from bench.errors import ConfigError
from bench.train import TrainConfig
from bench.zoo import describe_training, difference, train_id


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 1, 8, 8))
    return model


def test_precise_statistics_are_the_population_mean_and_unbiased_variance_of_the_norms_input_whatever_the_batches():
    model = _conv_bn()
    norm = model[1]
    norm.running_mean.fill_(5.0)  # stale moving averages
    norm.running_var.fill_(1e-4)
    norm.num_batches_tracked.fill_(17)
    model.train()
    images = torch.rand(50, 1, 8, 8)

    recompute_statistics(model, images, batch_size=7)  # 8 batches, the last of 1 image

    features = model[0](images).transpose(0, 1).reshape(4, -1).double()
    torch.testing.assert_close(norm.running_mean.double(), features.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var.double(), features.var(1, unbiased=True), rtol=1e-5, atol=1e-6)
    assert int(norm.num_batches_tracked) == 17  # the counters are left as they were
    assert all(m.training for m in model.modules())  # and so is every module's mode


def test_precise_statistics_make_eval_mode_predict_what_the_weights_predict_on_the_whole_split():
    """The failure it fixes: stale moving averages collapse eval-mode outputs; recomputed, eval mode gives what a
    batch of the whole split gives in training mode (the same statistics; dropout off in both)."""
    model = _conv_bn()
    model[1].running_var.fill_(1e4)
    images = torch.rand(64, 1, 8, 8)
    model.eval()
    stale = model(images)
    model[1].train()
    with torch.no_grad():
        whole_split = model(images)
    model.eval()

    recompute_statistics(model, images, batch_size=16)

    with torch.no_grad():
        recomputed = model(images)
    assert stale.std(0).max() < 0.1 * whole_split.std(0).min()
    torch.testing.assert_close(recomputed, whole_split, rtol=1e-3, atol=1e-3)


def test_a_model_without_batch_norm_is_left_alone():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recompute_statistics(model, torch.rand(5, 1, 8, 8), batch_size=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unknown_choice_names_the_setting_and_the_choices():
    with pytest.raises(ConfigError, match=r"train.bn_stats 'exact'; valid choices: ema, precise"):
        bn_statistics("exact")
    assert set(BN_STATISTICS) == {"ema", "precise"}


def test_moving_averages_keep_every_existing_zoo_id_and_precise_is_a_new_entry():
    base = TrainConfig(epochs=30, seed=0)
    assert train_id(dataclasses.replace(base, bn_stats="ema")) == train_id(base) == "ee0d2b9b"  # the zoo's ids
    precise = dataclasses.replace(base, bn_stats="precise")
    assert train_id(precise) != train_id(base)
    assert describe_training(precise).endswith("bn_stats=precise")
    assert "bn_stats" not in describe_training(base)
    assert difference(precise, base) == "bn_stats: ema there, precise asked for"


def test_a_model_trained_with_precise_statistics_is_saved_with_its_own_weights_statistics(real_root, tmp_path):
    from bench.data import load_split
    from bench.models import ModelSpec, load_checkpoint, read_card
    from bench.train import train_classifier

    spec = ModelSpec("resnet18_native", "resnet18", "native")
    saved = {}
    for choice in ("ema", "precise"):
        cfg = TrainConfig(epochs=2, n_train=48, seed=0, milestones=(1.0,), bn_stats=choice)
        train_classifier(spec, "breastmnist", 28, real_root, cfg, tmp_path / f"{choice}.safetensors")
        saved[choice] = load_checkpoint(tmp_path / f"{choice}.safetensors", 1, 2)[0]
        assert read_card(tmp_path / f"{choice}.safetensors").train["bn_stats"] == choice
    train_images = load_split("breastmnist", "train", 28, real_root, n_examples=48, seed=0).images

    def statistics(model: nn.Module) -> list[torch.Tensor]:
        return [t.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for t in (m.running_mean, m.running_var)]

    for choice, model in saved.items():
        before = statistics(model)
        recompute_statistics(model, train_images, batch_size=128)
        unchanged = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(before, statistics(model)))
        assert unchanged == (choice == "precise"), choice
