"""train.precision: the arithmetic of each training step (bench/precision.py); evaluation is always float32."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.precision import PRECISIONS, training_precision
from bench.train import TrainConfig
from bench.zoo import describe_training, difference, train_id, training_command


def test_an_unknown_precision_names_the_setting_the_choices_and_the_fix():
    with pytest.raises(ConfigError, match=r"train.precision 'fp16'; valid choices: bf16, fp32\. Set train.precision=fp32"):
        training_precision("fp16")
    assert set(PRECISIONS) == {"fp32", "bf16"}


def test_bf16_runs_convolutions_in_bfloat16_and_keeps_the_loss_and_the_gradients_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    for name, activation_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with training_precision(name)("cpu"):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        assert logits.dtype == activation_dtype, name
        assert loss.dtype == torch.float32, name
        model.zero_grad()
        loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters()), name


def test_fp32_keeps_every_existing_zoo_id_and_bf16_is_a_new_entry_that_says_how_to_train_it_again():
    base = TrainConfig(epochs=30, seed=0)
    assert train_id(dataclasses.replace(base, precision="fp32")) == train_id(base) == "ee0d2b9b"  # the zoo's ids
    mixed = dataclasses.replace(base, precision="bf16")
    assert train_id(mixed) != train_id(base)
    assert describe_training(mixed).endswith("precision=bf16")
    assert "precision" not in describe_training(base)
    assert difference(mixed, base) == "precision: fp32 there, bf16 asked for"
    card = {"name": "resnet18_28", "dataset": "pneumoniamnist", "size": 28, "seed": 1, "train": dataclasses.asdict(mixed)}
    assert training_command(card).endswith("train.epochs=30 train.precision=bf16")


def test_a_bf16_trained_model_is_saved_in_float32_with_its_precision_on_the_card_and_learns(real_root, tmp_path):
    from bench.models import ModelSpec, load_checkpoint, read_card
    from bench.train import train_classifier

    spec = ModelSpec("resnet18_28", "resnet18", "cifar_stem")
    weights = {}
    for name in ("fp32", "bf16"):
        cfg = TrainConfig(epochs=2, n_train=64, seed=0, milestones=(1.0,), precision=name)
        path = tmp_path / f"{name}.safetensors"
        train_classifier(spec, "breastmnist", 28, real_root, cfg, path)
        card = read_card(path)
        assert card.train["precision"] == name
        model, _ = load_checkpoint(path, 1, 2)
        assert all(t.dtype in (torch.float32, torch.int64) for t in model.state_dict().values())
        weights[name] = model.state_dict()
        first, last = card.train["history"][0]["loss"], card.train["history"][-1]["loss"]
        assert last < first, (name, first, last)  # both arithmetics train the model
    differing = [k for k, v in weights["fp32"].items() if v.is_floating_point() and not torch.equal(v, weights["bf16"][k])]
    assert differing  # the bf16 steps really ran in another arithmetic
