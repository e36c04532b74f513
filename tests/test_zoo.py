"""The model zoo is keyed by what was trained: a model is reused only for the training settings it was made with."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from bench.models import card_path, read_card, save_checkpoint
from bench.train import TrainConfig
from bench.zoo import describe_training, entries, find_trained, get_or_train, train_id, training_settings, zoo_path


def test_the_train_id_names_what_changes_the_weights_and_nothing_else():
    base = TrainConfig(epochs=100)
    assert train_id(base) == train_id(dataclasses.replace(base, device="cuda", seed=7))
    for change in ({"epochs": 3}, {"n_train": 64}, {"augment": "flip_shift"}, {"lr": 0.01}, {"milestones": (0.3,)}):
        assert train_id(dataclasses.replace(base, **change)) != train_id(base), change
    card_train = {**dataclasses.asdict(base), "milestones": [0.5, 0.75], "seconds": 12.0, "command": "python ..."}
    assert train_id(card_train) == train_id(base)  # a card's record of the training names the same entry
    assert training_settings({})["epochs"] == 100  # a card from before a setting existed reads it as the default
    assert describe_training(base).startswith("epochs=100 augment=none n_train=all lr=0.001")


def _entry(zoo, trained_breast, **train) -> TrainConfig:
    """Put the fixture's model into ``zoo`` as if it had been trained with ``train``."""
    model, card = trained_breast[0], trained_breast[1]
    cfg = TrainConfig(seed=0, **train)
    save_checkpoint(model, dataclasses.replace(card, train={**dataclasses.asdict(cfg), "milestones": list(cfg.milestones)}),
                    zoo_path(zoo, "breastmnist", 28, card.name, cfg))
    return cfg


def test_a_3_epoch_entry_is_not_reused_for_100_epochs_and_the_refusal_names_both(tmp_path, trained_breast):
    zoo = tmp_path / "zoo"
    smoke = _entry(zoo, trained_breast, epochs=3)
    name = trained_breast[1].name
    found, skipped = find_trained(zoo, "breastmnist", 28, name, TrainConfig(epochs=100, seed=0))
    assert found is None
    assert skipped == [f"{name}_seed0_{train_id(smoke)}.safetensors (epochs: 3 there, 100 asked for)"]
    found, _ = find_trained(zoo, "breastmnist", 28, name, TrainConfig(epochs=3, seed=0))
    assert found == zoo_path(zoo, "breastmnist", 28, name, smoke)
    assert find_trained(zoo, "breastmnist", 28, name, TrainConfig(epochs=3, seed=1))[0] is None  # other seed


def test_a_reused_model_prints_what_it_was_trained_with(tmp_path, trained_breast, capsys, real_root):
    from bench.models import ModelSpec

    zoo = tmp_path / "zoo"
    cfg = _entry(zoo, trained_breast, epochs=8, augment="flip_shift")
    card = trained_breast[1]
    spec = ModelSpec(card.name, card.arch, card.recipe)
    _, reused, path = get_or_train(spec, "breastmnist", 28, real_root, cfg, zoo, 1, 2)
    out = capsys.readouterr().out
    assert f"reusing trained model {path}: trained with epochs=8 augment=flip_shift n_train=all" in out
    assert reused.sha256 == read_card(zoo_path(zoo, "breastmnist", 28, card.name, cfg)).sha256  # the zoo's entry, not a retrain


def test_an_entry_with_the_older_unkeyed_name_is_found_by_its_card(tmp_path, trained_breast):
    zoo = tmp_path / "zoo"
    cfg = _entry(zoo, trained_breast, epochs=8)
    keyed = zoo_path(zoo, "breastmnist", 28, trained_breast[1].name, cfg)
    legacy = keyed.with_name(f"{trained_breast[1].name}_seed0.safetensors")
    keyed.rename(legacy)
    shutil.move(card_path(keyed), card_path(legacy))
    assert entries(zoo, "breastmnist", 28, trained_breast[1].name, 0) == [legacy]
    assert find_trained(zoo, "breastmnist", 28, trained_breast[1].name, cfg)[0] == legacy


def test_an_epoch_with_undefined_validation_auc_still_counts_and_ranks_below_any_defined_one():
    """A validation split lacking a class leaves AUC NaN; training must still keep a best epoch."""
    from bench.train import selection_key

    nan = float("nan")
    assert selection_key(0.3, nan) == (0.3, float("-inf"))
    assert selection_key(0.3, 0.5) > selection_key(0.3, nan)
    assert selection_key(nan, 0.9) < selection_key(0.0, 0.1)


def test_data_order_alone_is_a_new_entry_and_the_seeds_own_order_keeps_the_old_id():
    base = TrainConfig(epochs=100, seed=3)
    assert train_id(dataclasses.replace(base, data_order_seed=3)) == train_id(base)  # the seed's own order
    other_order = dataclasses.replace(base, data_order_seed=4)
    assert train_id(other_order) != train_id(base)
    assert describe_training(other_order).endswith("data_order_seed=4")
    assert "data_order_seed" not in describe_training(base)


def test_a_model_trained_in_another_data_order_differs_and_the_seeds_own_order_is_the_same_model(real_root, tmp_path):
    import torch

    from bench.models import ModelSpec, load_checkpoint
    from bench.train import train_classifier

    spec = ModelSpec("resnet18_native", "resnet18", "native")
    weights = {}
    for order in (None, 0, 1):
        cfg = TrainConfig(epochs=1, n_train=48, seed=0, data_order_seed=order, milestones=(1.0,))
        train_classifier(spec, "breastmnist", 28, real_root, cfg, tmp_path / f"m{order}.safetensors")
        weights[order] = load_checkpoint(tmp_path / f"m{order}.safetensors", 1, 2)[0].state_dict()
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(weights[None], weights[0])  # seed 0's own order: the very same model
    assert not same(weights[0], weights[1])  # another order: another model


def test_the_same_training_twice_gives_the_same_bytes_and_the_card_names_what_the_bits_depend_on(real_root, tmp_path):
    """Same settings, seed, torch and thread count: the same sha256, so a retrained zoo entry keeps its rows. CPU
    kernels split their sums by thread and pick code by the CPU's vector instructions, so the card records the thread
    count, the CPU capability and the torch version too."""
    import torch

    from bench.models import ModelSpec, read_card, sha256_file
    from bench.train import train_classifier

    spec = ModelSpec("resnet18_native", "resnet18", "native")
    cfg = TrainConfig(epochs=1, n_train=48, seed=0, milestones=(1.0,))
    paths = [tmp_path / f"run{i}.safetensors" for i in (1, 2)]
    for path in paths:
        train_classifier(spec, "breastmnist", 28, real_root, cfg, path)
    assert sha256_file(paths[0]) == sha256_file(paths[1])
    card = read_card(paths[0])
    assert card.train["torch_threads"] == torch.get_num_threads()
    assert card.train["torch_version"] == torch.__version__
    assert card.train["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("defense, params", [("none", {}), ("pgd_at", {"eps": "2/255", "steps": 2, "rel_stepsize": 0.5})])
def test_a_training_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(real_root, tmp_path, monkeypatch,
                                                                               defense, params):
    """The state after each epoch (model, Adam moments, scheduler, best weights, both generators, the global RNG)
    is enough to continue bit for bit: the same losses every epoch, the same checkpoint, and no state left."""
    import bench.train as train_module
    from bench.models import ModelSpec, read_card, sha256_file
    from bench.train import TrainConfig, train_classifier
    from bench.train_state import state_paths

    spec = ModelSpec("resnet18_native", "resnet18", "native")
    cfg = TrainConfig(epochs=4, n_train=48, seed=3, defense=defense, defense_params=params, augment="flip_shift")
    plain = tmp_path / "plain.safetensors"
    train_classifier(spec, "breastmnist", 28, real_root, cfg, plain)

    class Killed(Exception):
        pass

    real_save = train_module.save_state

    def save_then_die(out_path, fingerprint, model, optimiser, scheduler, generators, progress):
        real_save(out_path, fingerprint, model, optimiser, scheduler, generators, progress)
        if progress.epoch == 2:
            raise Killed

    resumed = tmp_path / "resumed.safetensors"
    monkeypatch.setattr(train_module, "save_state", save_then_die)
    with pytest.raises(Killed):
        train_classifier(spec, "breastmnist", 28, real_root, cfg, resumed)
    assert all(p.exists() for p in state_paths(resumed)) and not resumed.exists()
    assert list(tmp_path.glob("*.safetensors")) == [plain]  # a state is never taken for a checkpoint
    monkeypatch.setattr(train_module, "save_state", real_save)
    torch.manual_seed(12345)  # whatever the process did in between, the saved generators decide what follows
    train_classifier(spec, "breastmnist", 28, real_root, cfg, resumed)
    history = lambda path: [(h["epoch"], h["loss"], h["val_auc"]) for h in read_card(path).train["history"]]  # noqa: E731
    assert history(resumed) == history(plain) and len(history(plain)) == 4
    assert sha256_file(resumed) == sha256_file(plain)
    assert not any(p.exists() for p in state_paths(resumed)) and not state_paths(resumed)[0].parent.exists()


@pytest.mark.parametrize("flag, size, model, spatial_dims, train", [
    ("breastmnist", 28, "regnetx_002", 2, TrainConfig(epochs=30, seed=1)),
    ("pneumoniamnist", 64, "resnet18_native", 2, TrainConfig(epochs=10, seed=0, data_order_seed=4, lr=0.0003)),
    ("adrenalmnist3d", 28, "resnet18_native_acs", 3, TrainConfig(epochs=30, seed=0, bn_stats="precise")),
    ("adrenalmnist3d", 28, "resnet18_native_2.5d", 3, TrainConfig(epochs=5, seed=2, milestones=(0.3,))),
])
def test_a_card_without_a_command_gets_one_that_trains_the_same_entry(flag, size, model, spatial_dims, train):
    """An attack run trains the models it needs and records no command; the baselines table shows one that, run
    as written, composes to the very same zoo entry (same model name, size, seed and training id)."""
    import shlex

    from bench.config import compose
    from bench.experiment import dataset_info_from_cfg, model_spec_from_cfg, train_config_from_cfg
    from bench.zoo import training_command

    volume = model.rsplit("_", 1)[1] if spatial_dims == 3 else "acs"
    card = {"name": model, "dataset": flag, "size": size, "seed": train.seed, "spatial_dims": spatial_dims,
            "volume": volume, "train": {**dataclasses.asdict(train), "command": ""}}
    command = training_command(card)
    assert command.startswith("python scripts/train.py ")
    cfg = compose(shlex.split(command)[2:], config_name="train")
    assert model_spec_from_cfg(cfg).name == model
    assert (dataset_info_from_cfg(cfg).flag, dataset_info_from_cfg(cfg).size) == (flag, size)
    assert (int(cfg.seed), train_id(train_config_from_cfg(cfg))) == (train.seed, train_id(train))
