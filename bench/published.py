"""Published clean baselines: MedMNIST v2 (Yang et al., Scientific Data 2023), test ACC and AUC.

Used by the ``below_published_baseline`` model check, by scripts/baselines.py and by the MedMNIST-baselines paper
reproduction, so a model's clean accuracy is always read against the same numbers.

- 2D flags (the paper's Table 3): ResNet-18 at 28x28 (trained at 28) and at 224x224 (28x28 images resized), and
  ResNet-50 at 28. Other sizes are compared with the 28 row, the closest published setting.
- 3D flags (the paper's Table 4): ResNet-18 and ResNet-50 made 3D three ways, the same three that
  ``bench.volumes`` builds: ``2.5d`` (axial kernels), ``3d`` (inflated kernels) and ``acs`` (ACS convolutions).
  A 3D model's default comparison is ResNet-18 + ACS, the conversion medbench uses unless told otherwise.

Provenance, as far as it was checked here: the ResNet-18 (28, 224) rows and ResNet-50 (28) for PathMNIST,
PneumoniaMNIST, RetinaMNIST and BreastMNIST were read against the paper's Table 3; the other ResNet-50 (28) rows,
all six ResNet-50 + 3D rows and OrganMNIST3D's ResNet-18 + 3D and + ACS rows agree with public transcriptions of the
tables found by the project's code search. The remaining 3D rows are from Table 4 and have no second copy here:
check them against the paper before citing a comparison that depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import unknown_choice


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

# ResNet-50 (28): (ACC, AUC)
_RESNET50_28 = {
    "pathmnist": (0.911, 0.990),
    "chestmnist": (0.947, 0.769),
    "dermamnist": (0.735, 0.913),
    "octmnist": (0.762, 0.952),
    "pneumoniamnist": (0.854, 0.948),
    "retinamnist": (0.528, 0.726),
    "breastmnist": (0.812, 0.857),
    "bloodmnist": (0.956, 0.997),
    "tissuemnist": (0.680, 0.931),
    "organamnist": (0.935, 0.997),
    "organcmnist": (0.905, 0.992),
    "organsmnist": (0.770, 0.972),
}

VOLUME_CONVERSIONS = ("2.5d", "3d", "acs")
# (depth, conversion): {flag: (ACC, AUC)}, 28x28x28 volumes
_VOLUMES = {
    (18, "2.5d"): {"organmnist3d": (0.788, 0.977), "nodulemnist3d": (0.835, 0.838), "fracturemnist3d": (0.451, 0.587),
                   "adrenalmnist3d": (0.772, 0.718), "vesselmnist3d": (0.846, 0.748), "synapsemnist3d": (0.696, 0.634)},
    (18, "3d"): {"organmnist3d": (0.907, 0.996), "nodulemnist3d": (0.844, 0.863), "fracturemnist3d": (0.508, 0.712),
                 "adrenalmnist3d": (0.721, 0.827), "vesselmnist3d": (0.877, 0.874), "synapsemnist3d": (0.745, 0.820)},
    (18, "acs"): {"organmnist3d": (0.900, 0.994), "nodulemnist3d": (0.847, 0.873), "fracturemnist3d": (0.497, 0.714),
                  "adrenalmnist3d": (0.754, 0.839), "vesselmnist3d": (0.928, 0.930), "synapsemnist3d": (0.722, 0.705)},
    (50, "2.5d"): {"organmnist3d": (0.769, 0.974), "nodulemnist3d": (0.848, 0.835), "fracturemnist3d": (0.397, 0.552),
                   "adrenalmnist3d": (0.763, 0.732), "vesselmnist3d": (0.877, 0.751), "synapsemnist3d": (0.735, 0.669)},
    (50, "3d"): {"organmnist3d": (0.883, 0.994), "nodulemnist3d": (0.847, 0.875), "fracturemnist3d": (0.494, 0.725),
                 "adrenalmnist3d": (0.745, 0.828), "vesselmnist3d": (0.918, 0.907), "synapsemnist3d": (0.795, 0.851)},
    (50, "acs"): {"organmnist3d": (0.889, 0.994), "nodulemnist3d": (0.841, 0.886), "fracturemnist3d": (0.517, 0.750),
                  "adrenalmnist3d": (0.758, 0.828), "vesselmnist3d": (0.858, 0.912), "synapsemnist3d": (0.709, 0.719)},
}
_VOLUME_NAMES = {"2.5d": "2.5D", "3d": "3D", "acs": "ACS"}


def published_volume(flag: str, depth: int = 18, conversion: str = "acs") -> Published | None:
    """MedMNIST v2's ResNet-``depth`` + ``conversion`` result for a 3D ``flag`` (None for a 2D flag or depth)."""
    if conversion not in VOLUME_CONVERSIONS:
        raise unknown_choice("conversion", conversion, VOLUME_CONVERSIONS,
                             "use the name bench.volumes gives the conversion")
    found = _VOLUMES.get((int(depth), conversion), {}).get(flag)
    if found is None:
        return None
    return Published(f"MedMNIST v2, ResNet-{int(depth)} + {_VOLUME_NAMES[conversion]} (28)", *found)


def published_resnet(flag: str, depth: int) -> Published | None:
    """MedMNIST v2's ResNet-18 (28) or ResNet-50 (28) result for ``flag``; a 3D flag gets the ACS row."""
    if flag in _VOLUMES[(18, "acs")]:
        return published_volume(flag, depth, "acs")
    if depth == 18:
        return published_baseline(flag, 28)
    found = _RESNET50_28.get(flag) if depth == 50 else None
    return None if found is None else Published("MedMNIST v2, ResNet-50 (28)", *found)


def published_baseline(flag: str, size: int = 28) -> Published | None:
    """The published ResNet-18 result for ``flag`` at ``size`` (224 uses the 224 row, others the 28 row; a 3D
    flag, ResNet-18 + ACS at 28, the only size Table 4 reports)."""
    if flag in _VOLUMES[(18, "acs")]:
        return published_volume(flag, 18, "acs")
    rows = _RESNET18.get(flag)
    if rows is None:
        return None
    (acc, auc), at = (rows[1], 224) if int(size) == 224 else (rows[0], 28)
    return Published(_SOURCE.format(size=at), acc, auc)


def published_for_model(flag: str, size: int, arch: str, volume: str = "acs") -> Published | None:
    """The published row a zoo model is shown beside: for a 3D flag the same conversion (and ResNet-50's row for a
    ResNet-50), for a 2D flag the dataset's ResNet-18 at the nearest published size."""
    if flag in _VOLUMES[(18, "acs")]:
        return published_volume(flag, 50 if arch == "resnet50" else 18, volume)
    return published_baseline(flag, size)
