"""Deployment Engine pieces that run without a SuperLink: node config errors, failure banner, partition cache.

The whole deployment (SuperLink + two SuperNodes on localhost) is ``tests/deploy/localhost.sh``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fl_privacy.data import partition
from fl_privacy.federation.sampling import client_partition, node_partition
from fl_privacy.launch.deployment import FAILED_BANNER, announce_failure


def test_supernode_without_node_config_gets_an_error_naming_the_flag():
    with pytest.raises(ValueError, match='--node-config "partition-id=<i> num-partitions=<N>"'):
        node_partition({})
    with pytest.raises(ValueError, match="no num-partitions"):
        client_partition({"partition-id": 0}, None, 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        node_partition({"partition-id": 2, "num-partitions": 2})
    assert node_partition({"partition-id": "1", "num-partitions": "2"}) == (1, 2)


def test_a_failing_serverapp_says_so_in_one_line(caplog):
    @announce_failure
    def main() -> None:
        raise KeyError("partition-id")

    with caplog.at_level(logging.ERROR, logger="flwr"), pytest.raises(KeyError):
        main()
    assert any(FAILED_BANNER in r.getMessage() and "KeyError" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("scheme", ["dirichlet", "iid"])
def test_partitions_are_stored_once_and_read_back_identical(tmp_path, monkeypatch, scheme):
    """A fresh ClientApp process (one per message under the Deployment Engine) reads the split from disk."""
    monkeypatch.setenv("FL_PRIVACY_CACHE", str(tmp_path))
    labels = np.random.default_rng(0).integers(0, 10, size=3000)
    args = (8, scheme, 3, 0.5, 2, 0, 10)
    partition._cached.cache_clear()
    first = partition._cached(labels.astype(np.int64).tobytes(), *args)
    stored = list((tmp_path / "partitions").glob("*.npz"))
    assert len(stored) == 1
    partition._cached.cache_clear()
    monkeypatch.setattr(partition, "partition_indices", lambda *a, **k: pytest.fail("recomputed"))
    again = partition._cached(labels.astype(np.int64).tobytes(), *args)
    assert len(again) == 8 and all(np.array_equal(a, b) for a, b in zip(first, again))
    partition._cached.cache_clear()
    other = (8, scheme, 4, 0.5, 2, 0, 10)  # another seed is another file, not a stale hit
    monkeypatch.undo()
    monkeypatch.setenv("FL_PRIVACY_CACHE", str(tmp_path))
    partition._cached(labels.astype(np.int64).tobytes(), *other)
    assert len(list((tmp_path / "partitions").glob("*.npz"))) == 2
    partition._cached.cache_clear()
