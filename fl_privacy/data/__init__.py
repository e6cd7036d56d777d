"""Datasets (torchvision, offline copies, registered loaders) and their split over clients."""

from fl_privacy.data.datasets import (
    DatasetNotFound,
    ImageData,
    cache_root,
    data_root,
    load_dataset,
)
from fl_privacy.data.partition import client_partitions, partition_indices
from fl_privacy.data.registry import DatasetSpec, dataset_names, get_dataset, register_dataset

__all__ = [
    "DatasetNotFound", "DatasetSpec", "ImageData", "cache_root", "client_partitions", "data_root", "dataset_names",
    "get_dataset", "load_dataset", "partition_indices", "register_dataset",
]
