"""MIA reference models kept in the run directory, so a resumed run audits with the models the run trained.

Training them is the costly part of a global-model audit and is deterministic in the
settings below; a resumed run loads them when those settings are unchanged (same
digest) and retrains, saying why, when they are not.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from logging import INFO, WARNING, getLogger
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.mia import MIAConfig
from fl_privacy.attacks.mia.reference import load_reference_models, save_reference_models
from fl_privacy.config import ExperimentConfig

REFERENCE_FILE = "reference_models.pt"
"""In the run's ``mia/`` folder: the reference models' state dicts, training indices and settings."""
TRAINING_FIELDS = ("n_reference_models", "epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "normalize")

References = list[tuple[torch.nn.Module, np.ndarray]]
log = getLogger("flwr")  # the ServerApp's log


def reference_settings(config: ExperimentConfig, mia: MIAConfig, train_pool: np.ndarray) -> dict[str, Any]:
    """What the reference models depend on: the model and data sections, their training, the pool they train on."""
    pool = hashlib.sha256(np.ascontiguousarray(train_pool, dtype=np.int64).tobytes()).hexdigest()
    return {"model": config.model.model_dump(mode="json"), "data": config.data.model_dump(mode="json"),
            "training": {name: getattr(mia, name) for name in TRAINING_FIELDS}, "pool_sha256": pool}


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def reused_or_trained(path: Path, settings: dict[str, Any], model_factory: Callable[[], torch.nn.Module],
                      device: torch.device | str, train: Callable[[], References]) -> References:
    """The models saved at ``path`` when they were made with ``settings``; else ``train()`` them and save them."""
    digest = settings_digest(settings)
    if path.is_file():
        try:
            models, meta = load_reference_models(path, model_factory, device)
        except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as err:
            log.log(WARNING, "fl-privacy: %s is unreadable (%s): retraining the MIA reference models", path, err)
        else:
            if meta.get("digest") == digest:
                log.log(INFO, "fl-privacy: %d MIA reference models loaded from %s", len(models), path)
                return models
            saved = json.loads(meta.get("settings", "{}"))
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            log.log(WARNING, "fl-privacy: %s was trained with other settings (%s): retraining the MIA reference "
                    "models", path, ", ".join(changed) or "unknown")
    models = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_reference_models(models, path, {"digest": digest, "settings": json.dumps(settings, sort_keys=True)})
    log.log(INFO, "fl-privacy: %d MIA reference models trained, saved to %s", len(models), path)
    return models
