"""Published clean baselines: MedMNIST v2 (Yang et al., Scientific Data 2023, Table 3), test ACC and AUC.

Used by the ``below_published_baseline`` model check and by scripts/baselines.py,
so a model's clean accuracy is always read against the same numbers. ResNet-18 at
28x28 (trained at 28) and at 224x224 (28x28 images resized); other sizes are
compared with the 28 row, the closest published setting. 3D flags have no row yet
(medbench refuses them until volumes are supported).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published result: the model and input size it was measured with, its test ACC and AUC."""

    source: str
    acc: float
    auc: float


_SOURCE = "MedMNIST v2, ResNet-18 ({size})"
# flag: ((ACC, AUC) at 28, (ACC, AUC) at 224)
_RESNET18 = {
    "pathmnist": ((0.907, 0.983), (0.909, 0.989)),
    "chestmnist": ((0.947, 0.768), (0.947, 0.773)),
    "dermamnist": ((0.735, 0.917), (0.754, 0.920)),
    "octmnist": ((0.743, 0.943), (0.763, 0.958)),
    "pneumoniamnist": ((0.854, 0.944), (0.864, 0.956)),
    "retinamnist": ((0.524, 0.717), (0.493, 0.710)),
    "breastmnist": ((0.863, 0.901), (0.833, 0.891)),
    "bloodmnist": ((0.958, 0.998), (0.963, 0.998)),
    "tissuemnist": ((0.676, 0.930), (0.681, 0.933)),
    "organamnist": ((0.935, 0.997), (0.951, 0.998)),
    "organcmnist": ((0.900, 0.992), (0.920, 0.994)),
    "organsmnist": ((0.782, 0.972), (0.778, 0.974)),
}


# ResNet-50 (28): (ACC, AUC), the datasets whose row was checked against the paper's Table 3 here.
_RESNET50_28 = {
    "pathmnist": (0.911, 0.990),
    "pneumoniamnist": (0.854, 0.948),
    "retinamnist": (0.528, 0.726),
    "breastmnist": (0.812, 0.857),
}


def published_resnet(flag: str, depth: int) -> Published | None:
    """MedMNIST v2's ResNet-18 (28) or ResNet-50 (28) result for ``flag`` (None where we hold no row)."""
    if depth == 18:
        return published_baseline(flag, 28)
    found = _RESNET50_28.get(flag) if depth == 50 else None
    return None if found is None else Published("MedMNIST v2, ResNet-50 (28)", *found)


def published_baseline(flag: str, size: int = 28) -> Published | None:
    """The published ResNet-18 result for ``flag`` at ``size`` (224 uses the 224 row, others the 28 row)."""
    rows = _RESNET18.get(flag)
    if rows is None:
        return None
    (acc, auc), at = (rows[1], 224) if int(size) == 224 else (rows[0], 28)
    return Published(_SOURCE.format(size=at), acc, auc)
