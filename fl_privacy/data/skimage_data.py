"""Real photographs and face crops bundled with scikit-image, as datasets that need no download.

``skimage_photos_<S>`` (S = 32, 64, 128, 256): the eight colour photographs that ship inside the
scikit-image wheel (astronaut, chelsea, coffee, rocket, motorcycle, hubble_deep_field, retina,
immunohistochemistry; 300-1411 px), centre-cropped to a square and resized to S x S with
anti-aliasing. They give the SoK's resolution axis (Fig. 4a) real high-resolution content at
several sizes; the label of each image is its index (8 classes), and the train and test splits
hold the same 8 images (they are attacked, never trained on).

``lfw_faces``: ``skimage.data.lfw_subset()``, 100 face crops and 100 non-face crops from Labeled
Faces in the Wild, 25 x 25 grayscale; classes face / non_face; the test split is every other
image (50 faces then 50 non-faces), the train split the rest.

Only files bundled with scikit-image are used (``skimage.data`` images that need a pooch download
are not), so these load offline wherever scikit-image is installed.
"""

from __future__ import annotations

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "retina",
          "immunohistochemistry")
PHOTO_SIZES = (32, 64, 128, 256)
PHOTO_DATASETS = tuple(f"skimage_photos_{s}" for s in PHOTO_SIZES)
FACE_DATASET = "lfw_faces"
DATASETS = (*PHOTO_DATASETS, FACE_DATASET)


def same_content(a: str, b: str) -> bool:
    """True when two dataset names hold the same source images (the photographs at two sizes)."""
    return a == b or (a in PHOTO_DATASETS and b in PHOTO_DATASETS)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]  # the left view of the stereo pair
    return getattr(data, name)()


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then resize to size x size (anti-aliased); uint8 (3, size, size)."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top:top + side, left:left + side, :3]
    small = resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def load_photos(size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (8, 3, size, size), labels 0..7, class names)."""
    if size not in PHOTO_SIZES:
        raise ValueError(f"skimage photos come in sizes {PHOTO_SIZES}, not {size}")
    images = np.stack([_square(_photo(name), size) for name in PHOTOS])
    return images, np.arange(len(PHOTOS), dtype=np.int64), PHOTOS


def load_faces(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (100, 1, 25, 25), labels 0 = face / 1 = non_face, class names) of one split."""
    from skimage import data

    crops = data.lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
    labels = np.repeat(np.array([0, 1], dtype=np.int64), 100)
    keep = np.arange(200) % 2 == (1 if split == "test" else 0)
    order = np.flatnonzero(keep)
    images = np.clip(np.rint(crops[order] * 255.0), 0, 255).astype(np.uint8)[:, None]
    return images, labels[order], ("face", "non_face")


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images, labels and class names of a bundled scikit-image dataset."""
    if name == FACE_DATASET:
        return load_faces(split)
    if name in PHOTO_DATASETS:
        return load_photos(int(name.rsplit("_", 1)[1]))
    raise ValueError(f"unknown scikit-image dataset {name!r} (choices: {', '.join(DATASETS)})")
