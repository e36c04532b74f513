"""bench.models: every recipe builds, normalisation is inside, checkpoints are safe and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.errors import CheckpointError, ConfigError
from bench.models import RECIPES, ModelCard, ModelSpec, build_model, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


ARCH_FOR_RECIPE = {"small_patch": "vit_tiny_patch16_224"}  # the recipes that do not take a ResNet


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("in_chans, num_classes", [(1, 2), (3, 7)])
def test_every_recipe_maps_unit_images_to_logits(recipe, in_chans, num_classes):
    spec = ModelSpec("m", ARCH_FOR_RECIPE.get(recipe, "resnet18"), recipe, input_size=32 if recipe == "resize" else None)
    model = build_model(spec, in_chans, num_classes).eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_chans, 28, 28))
    assert out.shape == (2, num_classes)


MODEL_CONFIGS = sorted((REPO / "conf" / "model").glob("*.yaml"))


def spec_of(path) -> ModelSpec:
    from omegaconf import OmegaConf

    fields = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items() if k in ModelSpec.__dataclass_fields__}
    return ModelSpec(**fields)


@pytest.mark.parametrize("size", [28, 64, 224])
@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_gives_logits_and_finite_input_gradients_at_every_size(config, size):
    """Each conf/model/ recipe (a new YAML is tested by being there) at MedMNIST's sizes: logits of the right shape
    and a finite input gradient, which every white-box attack needs. One image keeps the 224 cases cheap."""
    in_chans = 3 if size == 64 else 1  # RGB and grey both covered
    model = build_model(spec_of(config), in_chans, 2, size).train()  # train mode: what training runs
    x = torch.rand(1 if size == 224 else 2, in_chans, size, size, requires_grad=True)
    logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (x.shape[0], 2)
    logits.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and torch.isfinite(x.grad).all()


def test_small_input_recipes_keep_small_images_at_a_useful_resolution():
    from bench.models import patch_size_for

    densenet = build_model(ModelSpec("d", "densenet121", "small_stem"), 1, 2, 28).backbone
    assert densenet.features.conv0.stride == (1, 1) and isinstance(densenet.features.pool0, torch.nn.Identity)
    assert build_model(ModelSpec("d", "densenet121", "small_stem"), 1, 2, 224).backbone.features.conv0.stride == (2, 2)
    assert [patch_size_for(s) for s in (28, 64, 224)] == [4, 8, 16]
    vit = build_model(ModelSpec("v", "vit_tiny_patch16_224", "small_patch"), 1, 2, 28).backbone
    assert vit.patch_embed.num_patches == 49
    with pytest.raises(ConfigError, match="small_patch"):
        build_model(ModelSpec("v", "vit_tiny_patch16_224", "small_stem"), 1, 2, 28)
    with pytest.raises(ConfigError, match="small_stem"):
        build_model(ModelSpec("r", "resnet18", "small_patch"), 1, 2, 28)


def test_normalisation_lives_inside_the_model():
    model = build_model(ModelSpec("m", "resnet18", "cifar_stem", mean=0.5, std=0.5), 1, 2).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), model.backbone((x - 0.5) / 0.5))


def test_cifar_stem_keeps_full_resolution():
    model = build_model(ModelSpec("m", "resnet18", "cifar_stem"), 1, 2)
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)


def test_unknown_recipe_and_arch_are_named():
    with pytest.raises(ConfigError, match="cifar_stem"):
        build_model(ModelSpec("m", "resnet18", "tiny"), 1, 2)
    with pytest.raises(ConfigError, match="resnet18"):
        build_model(ModelSpec("m", "resnet_18", "native"), 1, 2)


def _card(**kw) -> ModelCard:
    base = dict(name="m", arch="resnet18", recipe="native", dataset="breastmnist", size=28, seed=0,
                in_chans=1, num_classes=2, task="binary-class")
    return ModelCard(**{**base, **kw})


def test_checkpoint_round_trip_and_card(tmp_path):
    model = build_model(ModelSpec("m", "resnet18", "native"), 1, 2).eval()
    path = save_checkpoint(model, _card(metrics={"test_auc": 0.9}), tmp_path / "m.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    assert {"arch", "recipe", "dataset", "size", "seed", "metrics", "sha256"} <= set(card)
    loaded, loaded_card = load_checkpoint(path, 1, 2)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded_card.sha256 == card["sha256"]


def test_tampered_weights_are_refused(tmp_path):
    path = save_checkpoint(build_model(ModelSpec("m", "resnet18", "native"), 1, 2), _card(), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_checkpoint_that_does_not_fit_the_dataset(tmp_path):
    path = save_checkpoint(build_model(ModelSpec("m", "resnet18", "native"), 1, 2), _card(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="1 input channel.* dataset has 3"):
        load_checkpoint(path, in_chans=3, num_classes=2)
    with pytest.raises(CheckpointError, match="2 outputs.* dataset has 7 classes"):
        load_checkpoint(path, in_chans=1, num_classes=7)


def test_pickled_checkpoints_are_never_loaded(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(bad)


# ------------------------------------------------------------------------------------------------
# pretrained weights: timm's hub (fast, clear failure offline) or a local file
# ------------------------------------------------------------------------------------------------
def test_pretrained_from_the_hub_loads_or_fails_fast_and_says_how_to_work_offline():
    import time

    from bench.models import hub_reachable

    started = time.perf_counter()
    if hub_reachable():  # a machine with network: the real hub path
        model = build_model(ModelSpec("m", "resnet18", "native", pretrained=True), 3, 2)
        assert model(torch.rand(1, 3, 28, 28)).shape == (1, 2)
        return
    with pytest.raises(CheckpointError, match=r"did not answer within 5 s.*model\.pretrained=/path/to/model\.safetensors"):
        build_model(ModelSpec("m", "resnet18", "native", pretrained=True), 3, 2)
    assert time.perf_counter() - started < 20, "offline, the hub must fail in seconds, not after a minute of retries"


def test_pretrained_from_a_local_safetensors_file_loads_its_weights(tmp_path):
    import timm
    from safetensors.torch import save_file

    from bench.models import pretrained_source, sha256_file

    donor = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(weights))
    model = build_model(ModelSpec("m", "resnet18", "native", pretrained=str(weights)), 3, 1000).backbone
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in model.state_dict().items())
    # another head size: the backbone's weights load, the classifier is new
    two = build_model(ModelSpec("m", "resnet18", "native", pretrained=str(weights)), 3, 2).backbone
    assert torch.equal(two.layer4[1].conv2.weight, donor.layer4[1].conv2.weight) and two.fc.out_features == 2
    assert pretrained_source(str(weights)) == f"file:{sha256_file(weights)[:16]}"
    pickle = tmp_path / "model.pth"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="never unpickles"):
        build_model(ModelSpec("m", "resnet18", "native", pretrained=str(pickle)), 3, 2)


def test_what_a_model_started_from_is_part_of_its_zoo_key_and_card_and_scratch_keeps_old_ids(tmp_path):
    from bench.config import compose
    from bench.experiment import train_config_from_cfg
    from bench.train import TrainConfig
    from bench.zoo import describe_training, train_id

    assert train_id(TrainConfig(epochs=3)) == train_id({"epochs": 3, "init": "scratch"}) == train_id({"epochs": 3})
    assert train_id(TrainConfig(epochs=3, init="timm-hub")) != train_id(TrainConfig(epochs=3))
    assert describe_training(TrainConfig(epochs=3, init="timm-hub")).endswith("init=timm-hub")
    assert train_config_from_cfg(compose(["model=densenet121", "model.pretrained=true"])).init == "timm-hub"
    with pytest.raises(CheckpointError, match="neither true/false nor an existing .safetensors"):
        train_config_from_cfg(compose(["model=densenet121", f"model.pretrained={tmp_path / 'missing.safetensors'}"]))


def test_the_same_weights_always_get_the_same_sha256(tmp_path):
    """A checkpoint's sha256 is its identity in every row: saving identical weights must give identical bytes
    (safetensors orders metadata keys at random, so medbench writes a single key)."""
    model = build_model(ModelSpec("m", "resnet18", "native"), 1, 2)
    sums = {save_checkpoint(model, _card(), tmp_path / f"m{i}.safetensors") and
            json.loads((tmp_path / f"m{i}.json").read_text())["sha256"] for i in range(6)}
    assert len(sums) == 1
