"""Image datasets as in-memory uint8 arrays.

Every source (torchvision download, the offline JPEG archive, an .npz file, an
image folder) ends as the same ``ImageData``: uint8 images (N, C, H, W) and
int64 labels. Decoded arrays are cached as .npy files and memory-mapped, so
hundreds of simulated clients share one copy and batches are cheap slices.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fl_privacy.data.registry import get_dataset

Split = Literal["train", "test"]

# Per-channel statistics of the training splits (the usual published values).
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LOCAL_FILES = {"cifar10": "cifar10-jpeg.tar.gz", "mnist": "mnist-subset.npz"}
"""Offline copies recognised in the data directory (see the README's Data section)."""


class DatasetNotFound(FileNotFoundError):
    """The dataset is neither on disk nor downloadable; the message says how to fix it."""


@dataclass(frozen=True)
class ImageData:
    """Images and labels of one split, plus what is needed to (de)normalize them."""

    name: str
    images: np.ndarray  # uint8 (N, C, H, W), possibly memory-mapped
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batch(
        self, indices: np.ndarray | list[int], normalize: bool = True, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images (normalized or in [0, 1]) and labels for the given indices."""
        idx = np.asarray(indices, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images[idx])).to(device=device, dtype=torch.float32) / 255.0
        if normalize:
            x = (x - self.mean_tensor(device)) / self.std_tensor(device)
        y = torch.from_numpy(self.labels[idx].astype(np.int64)).to(device)
        return x, y

    def mean_tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        return torch.tensor(self.mean, device=device).view(1, -1, 1, 1)

    def std_tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        return torch.tensor(self.std, device=device).view(1, -1, 1, 1)


# --------------------------------------------------------------------------- locations


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Config value, else $FL_PRIVACY_DATA_DIR, else ~/.cache/fl-privacy/data."""
    chosen = data_dir or os.environ.get("FL_PRIVACY_DATA_DIR") or Path.home() / ".cache" / "fl-privacy" / "data"
    return Path(chosen).expanduser().resolve()


def cache_root() -> Path:
    """Where decoded arrays are kept: $FL_PRIVACY_CACHE, else ~/.cache/fl-privacy/arrays."""
    chosen = os.environ.get("FL_PRIVACY_CACHE") or Path.home() / ".cache" / "fl-privacy" / "arrays"
    return Path(chosen).expanduser().resolve()


# --------------------------------------------------------------------------- public entry


def load_dataset(
    name: str,
    split: Split = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    path: str | os.PathLike | None = None,
) -> ImageData:
    """Load one split; cached per process (clients in one worker share it)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = data_root(data_dir)
    return _load_cached(name, split, str(root), bool(download), str(path) if path else None)


@lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: str, download: bool, path: str | None) -> ImageData:
    root_path = Path(root)
    spec = get_dataset(name)
    if spec.loader is not None:
        return spec.loader(split, root_path, download, path)
    if spec.needs_path:
        if not path:
            raise DatasetNotFound(f"dataset '{name}' needs data.path (the archive, folder or .npz file)")
        source = Path(path).expanduser()
        if not source.is_absolute() and not source.exists():
            source = root_path / source
        if not source.exists():
            raise DatasetNotFound(f"data.path '{path}' does not exist (looked at {source.resolve()})")
        return _load_local(name, split, source.resolve())
    if name.startswith("skimage_photos_") or name == "lfw_faces":
        return _load_skimage(name, split)
    local = root_path / LOCAL_FILES.get(name, "\0")
    if name in LOCAL_FILES and local.exists():
        return _load_local(name, split, local)
    if name in _TORCHVISION:
        return _load_torchvision(name, split, root_path, download)
    raise ValueError(f"dataset '{name}' is registered without a loader: register it with one")


def _load_skimage(name: str, split: str) -> ImageData:
    """Photographs / face crops bundled with scikit-image (see ``fl_privacy.data.skimage_data``)."""
    from fl_privacy.data import skimage_data

    images, labels, classes = skimage_data.load(name, split)
    mean, std = _channel_stats(skimage_data.load(name, "train")[0])  # both splits normalized alike
    return ImageData(name=name, images=images, labels=labels, classes=classes, mean=mean, std=std,
                     source="scikit-image bundled data")


# --------------------------------------------------------------------------- torchvision

_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageData:
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    hint = (
        f"dataset '{name}' ({split}) is not in {root}. Either point data.data_dir or $FL_PRIVACY_DATA_DIR at a "
        f"folder that has it"
        + (f" (or the offline copy {LOCAL_FILES[name]})" if name in LOCAL_FILES else "")
        + ", or allow torchvision to download it (data.download=true, needs internet)."
    )
    try:
        ds = cls(root=str(root), train=split == "train", download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFound(hint) from err
    except OSError as err:  # no network
        raise DatasetNotFound(f"{hint} Download failed: {err}") from err
    images = np.asarray(ds.data)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    mean, std = _STATS[name]
    return ImageData(
        name=name, images=np.ascontiguousarray(images, dtype=np.uint8), labels=np.asarray(ds.targets, dtype=np.int64),
        classes=tuple(ds.classes), mean=mean, std=std, source=f"torchvision:{root}",
    )


# --------------------------------------------------------------------------- local files


def _load_local(name: str, split: str, source: Path) -> ImageData:
    """Decode once into .npy files under the cache, then memory-map them."""
    stat = source.stat()
    key = hashlib.sha1(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_root() / f"{source.name}-{key}"
    images_file, labels_file, classes_file = (folder / f"{split}-{n}" for n in ("images.npy", "labels.npy", "classes.txt"))
    if not images_file.exists():
        if source.suffix == ".npz":
            images, labels, classes = _read_npz(source, split)
        else:
            images, labels, classes = _read_image_folder(source, split)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_save(labels_file, labels)
        classes_file.write_text("\n".join(classes))
        _atomic_save(images_file, images)  # written last: its presence means the cache is complete
    images = np.load(images_file, mmap_mode="r")
    labels = np.load(labels_file)
    classes = tuple(classes_file.read_text().split("\n"))
    if name in _STATS:
        mean, std = _STATS[name]
    else:
        mean, std = _channel_stats(images)
    return ImageData(name=name, images=images, labels=labels, classes=classes, mean=mean, std=std, source=str(source))


def _atomic_save(target: Path, array: np.ndarray) -> None:
    """Concurrent workers may decode at once: write aside, then rename."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, target)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = np.asarray(images[: min(len(images), 10000)], dtype=np.float64) / 255.0
    return tuple(sample.mean(axis=(0, 2, 3)).tolist()), tuple(sample.std(axis=(0, 2, 3)).tolist())


def _read_npz(source: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with np.load(source) as archive:
        keys = (f"x_{split}", f"y_{split}")
        missing = [k for k in keys if k not in archive]
        if missing:
            raise DatasetNotFound(f"{source} lacks arrays {missing} (expected x_train, y_train, x_test, y_test)")
        images, labels = archive[keys[0]], archive[keys[1]].astype(np.int64)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return np.ascontiguousarray(images, dtype=np.uint8), labels, classes


def _iter_images(source: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """(class name, file name, bytes) for every image of ``split`` in an archive or folder."""
    prefix_parts = 2  # <split>/<class>/<file>
    if source.is_dir():
        base = source / split
        for file in sorted(base.glob("*/*")):
            yield file.parent.name, file.name, file.read_bytes()
        return
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for member in sorted(archive.namelist()):
                parts = _split_parts(member, split, prefix_parts)
                if parts:
                    yield parts[0], parts[1], archive.read(member)
        return
    with tarfile.open(source) as archive:
        for member in archive:
            if not member.isfile():
                continue
            parts = _split_parts(member.name, split, prefix_parts)
            if parts:
                handle = archive.extractfile(member)
                assert handle is not None
                yield parts[0], parts[1], handle.read()


def _split_parts(name: str, split: str, depth: int) -> tuple[str, str] | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) > depth and parts[-depth - 1] == split:
        return parts[-2], parts[-1]
    return None


def _read_image_folder(source: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    records = sorted(_iter_images(source, split), key=lambda r: (r[0], r[1]))
    if not records:
        raise DatasetNotFound(f"{source} has no images under '{split}/<class>/' (expected train/ and test/ folders)")
    classes = sorted({cls for cls, _, _ in records})
    index = {cls: i for i, cls in enumerate(classes)}
    first = np.asarray(Image.open(io.BytesIO(records[0][2])))
    channels = 1 if first.ndim == 2 else first.shape[2]
    images = np.empty((len(records), channels, *first.shape[:2]), dtype=np.uint8)
    labels = np.empty(len(records), dtype=np.int64)
    mode = "L" if channels == 1 else "RGB"
    for i, (cls, _, blob) in enumerate(records):
        array = np.asarray(Image.open(io.BytesIO(blob)).convert(mode))
        images[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
        labels[i] = index[cls]
    return images, labels, classes
