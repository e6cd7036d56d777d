"""Datasets (torchvision or offline copies) and their split over clients."""

from fl_privacy.data.datasets import (
    DatasetNotFound,
    ImageData,
    cache_root,
    data_root,
    load_dataset,
)
from fl_privacy.data.partition import client_partitions, partition_indices

__all__ = [
    "DatasetNotFound", "ImageData", "cache_root", "client_partitions", "data_root", "load_dataset", "partition_indices",
]
