"""The published MedMNIST v2 numbers every clean-accuracy comparison reads (bench/published.py)."""

import medmnist
import pytest

from bench.errors import ConfigError
from bench.published import (
    VOLUME_CONVERSIONS,
    published_baseline,
    published_for_model,
    published_resnet,
    published_volume,
)

FLAGS_2D = sorted(f for f in medmnist.INFO if not f.endswith("3d"))
FLAGS_3D = sorted(f for f in medmnist.INFO if f.endswith("3d"))


@pytest.mark.parametrize("flag", FLAGS_2D)
def test_every_2d_flag_has_resnet18_at_28_and_224_and_resnet50_at_28(flag):
    at28, at224, r50 = published_baseline(flag, 28), published_baseline(flag, 224), published_resnet(flag, 50)
    assert at28.source == "MedMNIST v2, ResNet-18 (28)" and at224.source == "MedMNIST v2, ResNet-18 (224)"
    assert r50.source == "MedMNIST v2, ResNet-50 (28)"
    assert all(0 < p.acc <= 1 and 0.5 < p.auc <= 1 for p in (at28, at224, r50))
    assert published_baseline(flag, 64) == at28  # sizes the paper did not train at compare with the 28 row


@pytest.mark.parametrize("flag", FLAGS_3D)
def test_every_3d_flag_has_both_depths_and_all_three_conversions(flag):
    rows = {(depth, c): published_volume(flag, depth, c) for depth in (18, 50) for c in VOLUME_CONVERSIONS}
    assert all(r is not None and 0 < r.acc <= 1 and 0.5 < r.auc <= 1 for r in rows.values())
    assert len({(r.acc, r.auc) for r in rows.values()}) == len(rows)  # no row copied into another
    # a volume model is compared with ResNet-18 + ACS, the conversion medbench builds by default
    assert published_baseline(flag, 28) == published_resnet(flag, 18) == rows[(18, "acs")]
    assert published_resnet(flag, 50) == rows[(50, "acs")]


def test_adrenal_rows_name_their_model_and_conversion():
    row = published_volume("adrenalmnist3d", 50, "3d")
    assert (row.source, row.acc, row.auc) == ("MedMNIST v2, ResNet-50 + 3D (28)", 0.745, 0.828)
    assert published_volume("breastmnist", 18, "acs") is None  # a 2D flag has no volume row


def test_an_unknown_conversion_names_the_choices():
    with pytest.raises(ConfigError, match=r"conversion 'acs3d'.*2\.5d, 3d, acs"):
        published_volume("adrenalmnist3d", 18, "acs3d")


def test_a_zoo_model_is_shown_beside_its_own_conversion_and_depth():
    assert published_for_model("adrenalmnist3d", 28, "resnet18", "2.5d") == published_volume("adrenalmnist3d", 18, "2.5d")
    assert published_for_model("adrenalmnist3d", 28, "resnet50", "3d") == published_volume("adrenalmnist3d", 50, "3d")
    assert published_for_model("breastmnist", 224, "densenet121") == published_baseline("breastmnist", 224)


def test_the_baselines_table_shows_a_volume_card_beside_its_conversion(tmp_path):
    import json

    from bench.cli.baselines import zoo_rows

    card = {"name": "resnet18_native", "arch": "resnet18", "dataset": "adrenalmnist3d", "size": 28, "seed": 0,
            "volume": "2.5d", "metrics": {"test_acc": 0.75, "test_auc": 0.8},
            "train": {"epochs": 10, "command": "python scripts/train.py dataset=adrenalmnist3d model.volume=2.5d"}}
    (tmp_path / "adrenalmnist3d_28").mkdir()
    (tmp_path / "adrenalmnist3d_28" / "resnet18_native_seed0_x.json").write_text(json.dumps(card))
    rows, skipped = zoo_rows(tmp_path, None)
    assert skipped == [] and len(rows) == 1
    assert (rows[0]["published_model"], rows[0]["published_acc"]) == ("MedMNIST v2, ResNet-18 + 2.5D (28)", "0.772")
