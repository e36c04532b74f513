"""MedMNIST loading: any flag in medmnist.INFO, any size it has, a deterministic subset.

Images come back as float tensors in [0, 1], NCHW, and the 3D flags' volumes as
NCDHW; normalisation is the model's job (bench.models). The data root is ``data.root`` in the config, else the
``MEDMNIST_ROOT`` environment variable, else medmnist's default folder. A file
that is present is md5-checked once per process; a missing file is downloaded
through medmnist's own code path, and when that fails (no network) the error
names the file, the folder and how to put the file there.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import medmnist
import numpy as np
import torch
from medmnist import INFO

from bench.errors import ConfigError, DataError, unknown_choice
from bench.registry import Registry
from bench.tasks import Task, get_task

SPLITS = ("train", "val", "test")
DOWNLOAD_TIMEOUT_S = 20.0


def is_3d(flag: str) -> bool:
    return base_flag(flag).endswith("3d")


def available_flags() -> list[str]:
    """Every MedMNIST flag medbench can load: the 2D images and the 3D volumes."""
    return list(INFO)


def default_root() -> Path:
    """The data root when the config gives none: $MEDMNIST_ROOT, else medmnist's default."""
    env = os.environ.get("MEDMNIST_ROOT")
    return Path(env).expanduser() if env else Path(medmnist.dataset.DEFAULT_ROOT)


@dataclass(frozen=True)
class DatasetInfo:
    """The facts medmnist.INFO gives about one flag, plus the size asked for."""

    flag: str
    size: int
    task_type: str
    n_channels: int
    label_names: dict[int, str]
    n_samples: dict[str, int]
    url: str
    md5: str
    file_flag: str = ""  # the MedMNIST file read, when it is not ``flag`` (a binary view)

    @property
    def task(self) -> Task:
        return get_task(self.task_type)

    @property
    def num_classes(self) -> int:
        """Output width of the classifier: classes, or labels for multi-label tasks."""
        return len(self.label_names)

    @property
    def filename(self) -> str:
        stem = self.file_flag or self.flag
        return f"{stem}.npz" if self.size == 28 else f"{stem}_{self.size}.npz"

    @property
    def track(self) -> str:
        return f"{self.flag}_{self.size}"

    @property
    def spatial_dims(self) -> int:
        """2 for images (NCHW), 3 for the 3D flags' volumes (NCDHW)."""
        return 3 if is_3d(self.flag) else 2


@dataclass(frozen=True)
class BinaryView:
    """A binary task read from a multi-class MedMNIST file: ``positive`` classes -> 1, ``negative`` -> 0.

    ``negative=None`` means every other class; otherwise samples of classes in
    neither list are dropped (their positions in the full split are kept as
    sample ids). Papers that use binary versions of these tasks are reproduced
    on the same file, with no second download.
    """

    base: str
    positive: tuple[int, ...]
    negative: tuple[int, ...] | None
    names: tuple[str, str]  # label 0, label 1
    why: str

    def keep(self, labels: np.ndarray) -> np.ndarray:
        if self.negative is None:
            return np.ones(len(labels), dtype=bool)
        return np.isin(labels, self.positive + self.negative)

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        return np.isin(labels, self.positive).astype(np.int64)


BINARY_VIEWS: Registry[BinaryView] = Registry("binary dataset view", "Set dataset=<flag> to a MedMNIST flag or one of these views.")
BINARY_VIEWS.add("dermamnist_melanoma", BinaryView(
    "dermamnist", positive=(4,), negative=(5,), names=("melanocytic nevus", "melanoma"),
    why="Finlayson et al.'s dermoscopy task, melanoma vs nevus; DermaMNIST's other five classes are dropped"))
BINARY_VIEWS.add("retinamnist_referable", BinaryView(
    "retinamnist", positive=(2, 3, 4), negative=None, names=("non-referable (grade 0-1)", "referable (grade 2-4)"),
    why="referable diabetic retinopathy (grade >= 2), the fundus task of Finlayson et al. after Gulshan et al. 2016"))


def base_flag(flag: str) -> str:
    """The MedMNIST file a flag reads: itself, or a binary view's base."""
    return BINARY_VIEWS[flag].base if flag in BINARY_VIEWS else flag


def dataset_info(flag: str, size: int = 28) -> DatasetInfo:
    """Validate ``flag`` and ``size`` against medmnist.INFO and describe the dataset (or binary view)."""
    if flag in BINARY_VIEWS:
        view = BINARY_VIEWS[flag]
        base = dataset_info(view.base, size)
        return replace(base, flag=flag, file_flag=view.base, task_type="binary-class",
                       label_names={0: view.names[0], 1: view.names[1]})
    if flag not in INFO:
        choices = [*INFO, *BINARY_VIEWS.names()]
        raise unknown_choice("MedMNIST flag", flag, choices, "Set dataset=<flag> to one of these.")
    cls = getattr(medmnist, INFO[flag]["python_class"])
    sizes = list(cls.available_sizes)
    if size not in sizes:
        raise ConfigError(
            f"size {size} is not available for {flag!r}; available sizes: {sizes}. "
            f"Set dataset.size to one of them."
        )
    info = INFO[flag]
    suffix = "" if size == 28 else f"_{size}"
    return DatasetInfo(
        flag=flag,
        size=size,
        task_type=info["task"],
        n_channels=int(info["n_channels"]),
        label_names={int(k): v for k, v in info["label"].items()},
        n_samples=dict(info["n_samples"]),
        url=info[f"url{suffix}"],
        md5=info[f"MD5{suffix}"],
    )


@lru_cache(maxsize=64)
def _md5_of(path: str, mtime_ns: int, nbytes: int) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_file_message(info: DatasetInfo, root: Path, reason: str) -> str:
    return (
        f"MedMNIST file {info.filename!r} is not in the data root {str(root)!r} ({reason}). "
        f"Download it from {info.url} (md5 {info.md5}) and put it at {root / info.filename}, "
        f"or point the data root at a folder that has it: data.root=/path or MEDMNIST_ROOT=/path."
    )


def ensure_file(info: DatasetInfo, root: Path, download: bool = True) -> Path:
    """Return the verified path of the dataset file, downloading it if allowed and missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root {str(root)!r} does not exist. Create it, or set data.root=/path "
            f"(or MEDMNIST_ROOT) to the folder holding the MedMNIST .npz files."
        )
    path = root / info.filename
    if not path.exists():
        if not download:
            raise DataError(_missing_file_message(info, root, "download=False"))
        _download(info, root)
    stat = path.stat()
    actual = _md5_of(str(path), stat.st_mtime_ns, stat.st_size)
    if actual != info.md5:
        raise DataError(
            f"md5 of {str(path)!r} is {actual}, expected {info.md5} (medmnist.INFO). The file is "
            f"corrupt or from another MedMNIST release; delete it and download it again from {info.url}."
        )
    return path


def _download(info: DatasetInfo, root: Path) -> None:
    """medmnist's real download path, with a short socket timeout so offline machines fail fast."""
    cls = getattr(medmnist, INFO[info.file_flag or info.flag]["python_class"])
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cls.download(_DownloadTarget(cls, info, root))
    except Exception as exc:  # medmnist wraps every failure in a bare RuntimeError
        partial = root / info.filename
        if partial.exists():
            partial.unlink()
        raise DataError(_missing_file_message(info, root, f"download failed: {type(exc).__name__}")) from None
    finally:
        socket.setdefaulttimeout(previous)


class _DownloadTarget:
    """The attributes MedMNIST.download() reads, without loading a file that isn't there yet."""

    def __init__(self, cls: type, info: DatasetInfo, root: Path):
        self.flag = info.file_flag or info.flag
        self.size_flag = "" if info.size == 28 else f"_{info.size}"
        self.info = INFO[info.file_flag or info.flag]
        self.root = str(root)


@dataclass
class Split:
    """One split (or a deterministic subset of it) as tensors, with its dataset facts."""

    info: DatasetInfo
    split: str
    images: torch.Tensor  # float32 (N, C, H, W) in [0, 1]; (N, C, D, H, W) for 3D flags
    labels: torch.Tensor  # long (N,) for softmax tasks, (N, L) for multi-label
    indices: torch.Tensor  # positions in the full split, for per-sample records
    seed: int | None = field(default=None)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int):
        """Yield (images, labels, indices) mini-batches in order."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self.images[start:stop], self.labels[start:stop], self.indices[start:stop]


def to_tensor_images(imgs: np.ndarray, volumes: bool = False) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [0, 1]; with ``volumes``, the 3D flags'
    uint8 (N, D, H, W) -> float (N, 1, D, H, W) (every 3D MedMNIST flag is single-channel)."""
    arr = torch.from_numpy(np.ascontiguousarray(imgs))
    if volumes:
        if arr.ndim != 4:
            raise DataError(f"3D MedMNIST volumes must be (N, D, H, W); the file holds shape {tuple(arr.shape)}.")
        return arr.unsqueeze(1).float().div_(255.0)
    if arr.ndim == 3:
        arr = arr.unsqueeze(-1)
    return arr.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def load_split(
    flag: str,
    split: str = "test",
    size: int = 28,
    root: str | Path | None = None,
    download: bool = True,
    n_examples: int | None = None,
    seed: int = 0,
) -> Split:
    """Load a MedMNIST split as tensors.

    Args:
        flag: a key of ``medmnist.INFO`` or a binary view, e.g. ``"pneumoniamnist"`` or ``"adrenalmnist3d"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: 28, 64, 128 or 224 for 2D flags, 28 or 64 for 3D flags, where the flag has it.
        root: folder holding the .npz files; ``None`` means $MEDMNIST_ROOT or medmnist's default.
        download: download a missing file through medmnist (md5-checked either way).
        n_examples: a deterministic random subset of this many samples (``None``: the whole split).
        seed: the subset's seed.

    Example:
        >>> test = load_split("breastmnist", "test", n_examples=64, seed=0)
        >>> test.images.shape
        torch.Size([64, 1, 28, 28])
    """
    info = dataset_info(flag, size)
    if split not in SPLITS:
        raise unknown_choice("split", split, SPLITS, "Set dataset.split to one of them.")
    root_path = Path(root).expanduser() if root else default_root()
    ensure_file(info, root_path, download)
    cls = getattr(medmnist, INFO[base_flag(flag)]["python_class"])
    ds = cls(split=split, root=str(root_path), size=size, download=False)
    raw_images, raw_labels = ds.imgs, np.asarray(ds.labels)
    indices = torch.arange(len(raw_images))
    if flag in BINARY_VIEWS:
        view = BINARY_VIEWS[flag]
        keep = view.keep(raw_labels.reshape(-1))
        raw_images, raw_labels, indices = raw_images[keep], view.relabel(raw_labels.reshape(-1)[keep]), indices[torch.from_numpy(keep)]
    images = to_tensor_images(raw_images, volumes=info.spatial_dims == 3)
    labels = torch.from_numpy(raw_labels).long()
    if not info.task.multi_label:
        labels = labels.view(-1)
    total = images.shape[0]
    if n_examples is not None:
        if n_examples <= 0 or n_examples > total:
            raise ConfigError(
                f"n_examples={n_examples} but the {flag} {split} split has {total} samples. "
                f"Set dataset.n_examples to a number in 1..{total}, or null for the whole split."
            )
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(total, generator=generator)[:n_examples].sort().values
        images, labels, indices = images[chosen], labels[chosen], indices[chosen]
    return Split(info=info, split=split, images=images, labels=labels, indices=indices, seed=seed)
