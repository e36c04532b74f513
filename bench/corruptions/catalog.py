"""MedMNIST-C's corruptions (Di Salvo et al. 2024, the ``medmnistc`` package) as medbench uses them.

The corruption code, the per-dataset lists and their five severities are the package's own
(``medmnistc.corruptions.registry.CORRUPTIONS_DS``); this module only says how each one is applied
and works around what 0.1.0 breaks:

- ``impulse_noise`` reads ``self.rng``, which only the package's DatasetManager sets: we give it a
  generator seeded per sample (without it, 0.1.0 raises ``AttributeError``);
- ``motion_blur`` decodes ImageMagick's output with ``np.fromstring``, whose binary mode NumPy 2
  removed: :class:`MotionBlurCompat` runs the package's own ImageMagick call (``MotionImage``) and
  decodes with ``np.frombuffer`` (byte for byte what 0.1.0 did on NumPy 1);
- every corruption takes an RGB PIL image, as the package's DatasetManager gives it; greyscale
  datasets are converted back with PIL's ``convert("L")``, as the DatasetManager does.

**Sizes.** MedMNIST-C was built and calibrated on 224x224 images. A corruption whose parameters are
lengths in pixels (:data:`SPATIAL`: blur kernels and radii, stains, bubbles, characters) is applied at
224 and the result resampled to the evaluated size (nearest-neighbour up, box filter down: for 28, 56
and 112, which divide 224, an unchanged image comes back exactly), so it covers the same fraction of
the image as in the paper. Every other corruption acts on the stored pixels at the evaluated size:
intensity changes (brightness, contrast, gamma, saturation) and relative geometry (pixelate's factor,
zoom, black corner) mean the same at any size, and per-pixel noise and JPEG act on the image as it
is stored. At 224 every corruption runs exactly as the package runs it.

ImageMagick's MagickWand library is needed by the package (``wand``); without it the import fails and
:func:`medmnistc_registry` says how to install it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from bench.errors import ConfigError, unknown_choice

MEDMNISTC_SIZE = 224
SEVERITIES = (1, 2, 3, 4, 5)
# Corruptions whose parameters are lengths in pixels of a 224x224 image.
SPATIAL = frozenset({"gaussian_blur", "defocus_blur", "motion_blur", "stain_deposit", "bubble", "characters"})
INSTALL_HINT = (
    "The corruption track needs the medmnistc package and ImageMagick's MagickWand library: "
    "`sudo apt-get install -y libmagickwand-6.q16-6` (Debian/Ubuntu; `brew install imagemagick` on macOS), then "
    "`pip install -e \".[corruptions]\" && pip install --no-deps medmnistc==0.1.0` (--no-deps: medmnistc 0.1.0 pins "
    "medmnist==3.0.1 and scikit-image==0.23.2, which would downgrade medbench's own; its real needs are in the "
    "corruptions extra)."
)


class CorruptionUnavailable(ConfigError):
    """medmnistc or ImageMagick is missing, or the dataset has no MedMNIST-C corruption list."""


@lru_cache(maxsize=1)
def medmnistc_registry() -> dict[str, dict[str, Any]]:
    """``CORRUPTIONS_DS`` of the installed medmnistc: dataset flag -> corruption name -> corruption object."""
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    except ImportError as err:  # medmnistc absent, or wand cannot find libMagickWand
        raise CorruptionUnavailable(f"cannot import medmnistc ({type(err).__name__}: {err}). {INSTALL_HINT}") from err
    return CORRUPTIONS_DS


def medmnistc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medmnistc")
    except PackageNotFoundError:
        return "absent"


class MotionBlurCompat:
    """medmnistc's MotionBlur with the NumPy 2 fix: the package's ImageMagick call, decoded with frombuffer."""

    def __init__(self, original: Any):
        self.original = original
        self.severity_params = original.severity_params

    def apply(self, img, severity: int = -1):
        import cv2
        from medmnistc.corruptions.filter import MotionImage

        radius, sigma = self.severity_params[severity]
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        blurred = MotionImage(blob=buffer.getvalue())
        blurred.motion_blur(radius=radius, sigma=sigma, angle=np.random.uniform(-45, 45))
        out = cv2.imdecode(np.frombuffer(blurred.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
        if out.ndim == 2:  # ImageMagick wrote a greyscale PNG
            out = np.stack([out] * 3, axis=-1)
        return np.clip(out[..., [2, 1, 0]], 0, 255).astype(np.uint8)  # BGR -> RGB


@dataclass(frozen=True)
class Corruption:
    """One MedMNIST-C corruption of one dataset: its name, family, five severities' parameters, how it is applied."""

    name: str
    dataset: str
    family: str
    params: tuple[str, ...]  # the five severities' parameters as the package defines them (repr)
    spatial: bool
    implementation: Any

    def apply(self, rgb_image, severity: int, rng: np.random.Generator) -> np.ndarray:
        """Corrupt one RGB PIL image at ``severity`` (1..5); the global RNGs are seeded by the caller."""
        self.implementation.rng = rng  # impulse_noise's generator (0.1.0 never sets it outside DatasetManager)
        return np.asarray(self.implementation.apply(rgb_image, severity - 1))


def _family(name: str) -> str:
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS_FOLDS
    except ImportError:
        return ""
    return next((family for family, names in CORRUPTIONS_DS_FOLDS.items() if name in names), "")


def _fixed(name: str, original: Any) -> Any:
    return MotionBlurCompat(original) if name == "motion_blur" else original


def corruptions_for(flag: str) -> dict[str, Corruption]:
    """The MedMNIST-C corruptions of a dataset flag (a binary view uses its base dataset's list), in package order."""
    from bench.data import base_flag

    registry = medmnistc_registry()
    base = base_flag(flag)
    if base not in registry:
        raise CorruptionUnavailable(
            f"MedMNIST-C defines no corruptions for {flag!r}; the corruption track covers {', '.join(sorted(registry))}.")
    return {name: Corruption(name, base, _family(name), tuple(repr(p) for p in c.severity_params[:5]),
                             name in SPATIAL, _fixed(name, c))
            for name, c in registry[base].items()}


def select(flag: str, names: list[str] | None) -> list[Corruption]:
    """The corruptions to run: all of the dataset's (``names`` None or empty), or the named ones, validated."""
    available = corruptions_for(flag)
    if not names:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise unknown_choice(f"{flag} corruption", unknown[0], available,
                             "Set corruption.names to a subset of them, or to null for all.")
    return [available[n] for n in names]
