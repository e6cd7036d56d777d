"""Datasets from local copies, and partitioning: sizes, class counts, determinism."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from fl_privacy.data import DatasetNotFound, load_dataset, partition_indices
from tests.conftest import needs_cifar, needs_mnist


@pytest.fixture
def labels() -> np.ndarray:
    return np.repeat(np.arange(10), 100)  # 1000 samples, 100 per class


def test_iid_partition_is_a_disjoint_cover_with_equal_sizes(labels):
    parts = partition_indices(labels, 7, "iid", seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert {len(p) for p in parts} <= {142, 143}


def test_partitions_are_deterministic_by_seed(labels):
    for scheme in ("iid", "dirichlet", "classes"):
        a = partition_indices(labels, 5, scheme, seed=1)
        b = partition_indices(labels, 5, scheme, seed=1)
        c = partition_indices(labels, 5, scheme, seed=2)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c)), scheme


def test_classes_per_client(labels):
    parts = partition_indices(labels, 10, "classes", seed=0, classes_per_client=2)
    for p in parts:
        assert len(np.unique(labels[p])) == 2
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))


def test_dirichlet_is_skewed_and_respects_min_size(labels):
    parts = partition_indices(labels, 5, "dirichlet", seed=0, alpha=0.1, min_partition_size=20)
    assert min(len(p) for p in parts) >= 20
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    # small alpha: each client is dominated by few classes
    dominant = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    assert np.mean(dominant) > 0.4
    iid = partition_indices(labels, 5, "dirichlet", seed=0, alpha=1000.0)
    assert np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in iid]) < 0.2


def test_samples_per_client_caps_each_client(labels):
    parts = partition_indices(labels, 4, "classes", seed=0, classes_per_client=2, samples_per_client=16)
    assert [len(p) for p in parts] == [16] * 4
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_too_many_clients_and_bad_scheme(labels):
    with pytest.raises(ValueError, match="fewer clients"):
        partition_indices(labels[:3], 5)
    with pytest.raises(ValueError, match="choices"):
        partition_indices(labels, 2, "weird")  # type: ignore[arg-type]


@needs_mnist
def test_mnist_subset_from_the_offline_npz():
    train = load_dataset("mnist", "train")
    assert train.images.shape == (3678, 1, 28, 28) and train.images.dtype == np.uint8
    assert train.num_classes == 10 and train.source.endswith("mnist-subset.npz")
    x, y = train.batch([0, 1, 2])
    assert x.shape == (3, 1, 28, 28) and y.tolist() == train.labels[:3].tolist()
    raw, _ = train.batch([0], normalize=False)
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0


@needs_cifar
def test_cifar10_from_the_offline_archive():
    test = load_dataset("cifar10", "test")
    assert test.images.shape == (10000, 3, 32, 32)
    assert test.classes[0] == "airplane" and test.classes[-1] == "truck"
    assert np.bincount(test.labels).tolist() == [1000] * 10


def _write_archive(path, images_per_class=3):
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for cls in ("cat", "ant"):
                for i in range(images_per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
                    info = tarfile.TarInfo(f"data/{split}/{cls}/{i:04d}.png")
                    info.size = len(buf.getvalue())
                    archive.addfile(info, io.BytesIO(buf.getvalue()))


def test_image_folder_archive_is_decoded_with_sorted_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_PRIVACY_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "tiny.tar.gz"
    _write_archive(archive)
    data = load_dataset("imagefolder", "train", path=archive)
    assert data.classes == ("ant", "cat") and data.images.shape == (6, 3, 8, 8)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(data.mean) == 3


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(DatasetNotFound, match="FL_PRIVACY_DATA_DIR"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path / "empty", download=False)
    with pytest.raises(DatasetNotFound, match="does not exist"):
        load_dataset("npz", "train", path=tmp_path / "missing.npz")
