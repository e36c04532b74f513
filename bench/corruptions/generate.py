"""Corrupted test sets: generated deterministically per sample, cached on disk, identified by checksum.

Sample ``i`` (its index in the split, not in a subset) at severity ``s`` of corruption ``c`` is
corrupted with Python's ``random``, NumPy's global RNG and the impulse-noise generator all seeded from
``(seed, c, s, i)`` (medmnistc draws from all three). So the same command gives the same images
byte for byte, a subset gets exactly the images the whole split gets, and the order of work never
matters. A set is cached as ``<cache>/<flag>_<size>_<split>/<corruption>-<key>.npz`` (uint8, the
five severities of the requested samples) where ``key`` digests everything that decides the images
(clean images, indices, seed, parameters, medmnistc's version, the size policy); each severity's
``sha256`` (of the uint8 array, C order) is stored with it, checked when the cache is read, and
written in that severity's leaderboard row.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_write
from bench.corruptions.catalog import MEDMNISTC_SIZE, SEVERITIES, Corruption, medmnistc_version

POLICY_VERSION = 1  # bump when how a corruption is applied changes (invalidates every cache)


def sample_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """A 32-bit seed for one sample's corruption, stable across processes and platforms (no Python hash())."""
    return zlib.crc32(f"{seed}|{corruption}|{severity}|{index}".encode()) ^ (seed & 0xFFFFFFFF)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] (N, C, H, W) back to the stored uint8 layout (N, H, W) or (N, H, W, C)."""
    array = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W[, C]) to float (N, C, H, W) in [0, 1], as bench.data loads images."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def corrupt_one(image: np.ndarray, corruption: Corruption, severity: int, seed: int, index: int) -> np.ndarray:
    """One stored image (H, W) or (H, W, 3) uint8, corrupted as MedMNIST-C does, in the same layout."""
    from PIL import Image

    s = sample_seed(seed, corruption.name, severity, index)
    random.seed(s)
    np.random.seed(s)
    rng = np.random.default_rng(s)
    size = image.shape[0]
    rgb = Image.fromarray(image).convert("RGB")
    resample = corruption.spatial and size != MEDMNISTC_SIZE
    if resample:
        rgb = rgb.resize((MEDMNISTC_SIZE, MEDMNISTC_SIZE), Image.NEAREST)
    out = Image.fromarray(np.ascontiguousarray(corruption.apply(rgb, severity, rng), dtype=np.uint8))
    if resample:
        out = out.resize((size, size), Image.BOX)
    if image.ndim == 2:
        out = out.convert("L")  # as medmnistc's DatasetManager does for greyscale datasets
    result = np.asarray(out, dtype=np.uint8)
    if result.shape != image.shape:
        raise RuntimeError(f"{corruption.name} severity {severity} returned shape {result.shape} for an image "
                           f"of shape {image.shape}")
    return result


def checksum(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


@dataclass(frozen=True)
class CorruptedSet:
    """The five severities of one corruption for some samples: uint8 images (5, N, ...) and each severity's sha256."""

    corruption: str
    images: np.ndarray
    sha256: tuple[str, ...]
    path: Path | None = None

    def severity(self, s: int) -> np.ndarray:
        return self.images[SEVERITIES.index(s)]


def cache_key(clean: np.ndarray, indices: np.ndarray, corruption: Corruption, seed: int) -> str:
    blob = json.dumps({"clean": checksum(clean), "indices": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
                       "seed": seed, "corruption": corruption.name, "dataset": corruption.dataset,
                       "params": corruption.params, "spatial": corruption.spatial, "medmnistc": medmnistc_version(),
                       "policy": POLICY_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_cache(path: Path) -> CorruptedSet | None:
    """The cached set, or None when it is absent or fails its checksums (then it is regenerated)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            images, sums = data["images"], tuple(str(s) for s in data["sha256"])
    except (OSError, KeyError, ValueError):
        return None
    if len(sums) != len(SEVERITIES) or any(checksum(images[k]) != sums[k] for k in range(len(SEVERITIES))):
        print(f"  cached corruptions {path} fail their checksums; regenerating", flush=True)
        return None
    return CorruptedSet(path.stem.split("-")[0], images, sums, path)


def corrupted_set(clean: np.ndarray, indices: np.ndarray, corruption: Corruption, seed: int,
                  cache_dir: str | Path | None) -> CorruptedSet:
    """The corrupted images of ``clean`` (uint8, split indices ``indices``) at every severity; cached when asked."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{corruption.name}-{cache_key(clean, indices, corruption, seed)}.npz"
        cached = _read_cache(path)
        if cached is not None:
            return cached
    images = np.stack([np.stack([corrupt_one(img, corruption, s, seed, int(i)) for img, i in zip(clean, indices)])
                       for s in SEVERITIES])
    sums = tuple(checksum(images[k]) for k in range(len(SEVERITIES)))
    if path is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=images, sha256=np.array(sums))
        atomic_write(path, buffer.getvalue())
    return CorruptedSet(corruption.name, images, sums, path)
