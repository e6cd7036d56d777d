"""Shared fixtures: real data from the offline copies, tiny configs, temporary run dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "datasets"
if "FL_PRIVACY_DATA_DIR" not in os.environ and _SHARED.exists():
    os.environ["FL_PRIVACY_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")


def _has(name: str) -> bool:
    root = Path(os.environ.get("FL_PRIVACY_DATA_DIR", "/nonexistent"))
    return (root / name).exists()


needs_mnist = pytest.mark.skipif(not _has("mnist-subset.npz"), reason="MNIST subset not found in FL_PRIVACY_DATA_DIR")
needs_cifar = pytest.mark.skipif(
    not _has("cifar10-jpeg.tar.gz"), reason="CIFAR-10 archive not found in FL_PRIVACY_DATA_DIR"
)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests run tiny graphs on shared cores: one torch thread is faster and steadier; restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_overrides() -> dict:
    """A federation small enough to run in a second: MNIST subset, small CNN, 3 clients."""
    return {
        "data.dataset": "mnist",
        "data.partition": "iid",
        "data.samples_per_client": 40,
        "federation.num_clients": 3,
        "federation.rounds": 2,
        "training.batch_size": 16,
        "evaluation.test_samples": 200,
        "model.width": 8,
        "resources.device": "cpu",
    }
