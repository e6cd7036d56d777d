"""Shared fixtures: real data from the offline copies, tiny configs, temporary run dirs; unit/integration marks.

Data: a test names the files it reads (``needs_mnist``, ``needs_cifar``, ``needs_data(...)`` or
``require_data(...)``). A missing file skips the test, except when ``FL_PRIVACY_DATA_DIR`` was set by the
caller (as CI does): then the test fails and names the file, so a missing install step shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / "shared" / "datasets"
DATA_DIR_GIVEN = bool(os.environ.get("FL_PRIVACY_DATA_DIR"))
"""True when the caller set FL_PRIVACY_DATA_DIR: missing data files are then failures, not skips."""
if not DATA_DIR_GIVEN and _SHARED.exists():
    os.environ["FL_PRIVACY_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")

MNIST_FILE, CIFAR_FILE = "mnist-subset.npz", "cifar10-jpeg.tar.gz"
"""The offline copies the tests read (fl_privacy.data.datasets.LOCAL_FILES)."""

# Test files that run a federation, Flower, Ray, a subprocess or a browser, or take seconds per test: marked
# `integration`; every other test is `unit` (`pytest -m unit` stays fast). A test can also carry the mark itself.
INTEGRATION_FILES = frozenset({
    "test_attack_integration.py",
    "test_bad_inputs.py",
    "test_dimitrov_fedavg.py",
    "test_dp.py",
    "test_dp_audit.py",
    "test_experiment_files.py",
    "test_experiments.py",
    "test_failures.py",
    "test_generators.py",
    "test_gia_latent.py",
    "test_gpu_check.py",
    "test_mia.py",
    "test_multiround_mia.py",
    "test_report.py",
    "test_resume.py",
    "test_secure_aggregation.py",
    "test_simulation.py",
    "test_skimage_data.py",
    "test_standard_profiles.py",
    "test_superlink.py",
    "test_sweep_ray.py",
})
SLOW_TESTS = frozenset({
    "test_gia_batching.py::test_vmap_loop_and_lean_convolutions_give_the_same_iteration",
    "test_gia_engine.py::test_inverting_gradients_adam_improves_psnr_and_picks_the_best_restart",
    "test_gia_precision.py::test_compiled_loss_gives_the_eager_iterations",
})
"""Single slow tests in otherwise fast files (file::function), also `integration`."""


def data_dir() -> Path:
    """The folder of the offline dataset copies (FL_PRIVACY_DATA_DIR)."""
    return Path(os.environ.get("FL_PRIVACY_DATA_DIR", "/nonexistent"))


def has_data(*names: str) -> bool:
    """Whether every named file is in the data folder (for tests that fall back to synthetic data)."""
    return all((data_dir() / name).exists() for name in names)


def require_data(*names: str, why: str = "") -> Path:
    """The data folder, once every named file is in it; else skip, or fail when FL_PRIVACY_DATA_DIR was given."""
    missing = [name for name in names if not (data_dir() / name).exists()]
    if missing:
        where = data_dir() if os.environ.get("FL_PRIVACY_DATA_DIR") else "unset"
        message = f"{', '.join(missing)} not found in FL_PRIVACY_DATA_DIR ({where}){': ' + why if why else ''}"
        if DATA_DIR_GIVEN:
            pytest.fail(f"{message}; FL_PRIVACY_DATA_DIR is set, so the file should be there", pytrace=False)
        pytest.skip(message)
    return data_dir()


def needs_data(*names: str) -> pytest.MarkDecorator:
    """Mark a test (or a module, as ``pytestmark``) as reading these files from the data folder."""
    return pytest.mark.needs_data(*names)


needs_mnist = needs_data(MNIST_FILE)
needs_cifar = needs_data(CIFAR_FILE)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_data"):
        require_data(*mark.args)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") is None and item.get_closest_marker("unit") is None:
            slow = (item.path.name in INTEGRATION_FILES or item.get_closest_marker("ray") is not None
                    or f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW_TESTS)
            item.add_marker(pytest.mark.integration if slow else pytest.mark.unit)


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
