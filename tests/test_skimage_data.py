"""Datasets bundled with scikit-image: the 8 photographs at 4 sizes and the LFW face crops, offline."""

from __future__ import annotations

import numpy as np
import pytest

from fl_privacy.data import load_dataset
from fl_privacy.data.skimage_data import PHOTOS, same_content


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_photos_at_each_size_are_the_same_images(size):
    data = load_dataset(f"skimage_photos_{size}", "test")
    assert data.images.shape == (8, 3, size, size) and data.images.dtype == np.uint8
    assert data.classes == PHOTOS and data.labels.tolist() == list(range(8))
    np.testing.assert_array_equal(load_dataset(f"skimage_photos_{size}", "train").images, data.images)
    small = load_dataset("skimage_photos_32", "test").images.astype(float).mean(axis=(2, 3))
    # resizing keeps each photo's mean colour (anti-aliased): the same content at every size
    np.testing.assert_allclose(data.images.astype(float).mean(axis=(2, 3)), small, atol=3.0)
    assert data.images.std() > 30  # real photographs, not blank


def test_faces_split_and_labels():
    train, test = load_dataset("lfw_faces", "train"), load_dataset("lfw_faces", "test")
    assert train.images.shape == test.images.shape == (100, 1, 25, 25)
    assert test.classes == ("face", "non_face")
    assert test.labels[:50].tolist() == [0] * 50 and test.labels[50:].tolist() == [1] * 50
    assert not np.array_equal(train.images, test.images)
    assert train.mean == test.mean  # both splits normalized with the same statistics


def test_same_content_pairs_photo_sizes_only():
    assert same_content("skimage_photos_32", "skimage_photos_256")
    assert not same_content("skimage_photos_32", "cifar10") and same_content("cifar10", "cifar10")
