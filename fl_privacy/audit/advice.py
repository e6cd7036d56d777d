"""Warnings for settings where an attack is known to fail for reasons unrelated to the defense being studied.

Each warning names the setting and the fix. They do not stop a run (a study may want
the degenerate case); they go to the log and into the run's ``summary.md``.
"""

from __future__ import annotations

import torch

from fl_privacy.config import ExperimentConfig

DLG_MAX_BATCH = 8
"""Zhu et al. 2019 (DLG) reconstruct batches of up to 8 images; larger ones rarely converge with L-BFGS, no priors."""


def degenerate_attack_warnings(config: ExperimentConfig, model: torch.nn.Module) -> list[str]:
    """Sentences, one per known-degenerate setting of the attack on updates of ``model``."""
    if config.attack.name == "none":
        return []
    t, gia = config.training, config.attack.gia
    warnings = []
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and t.model_mode == "train" and t.batch_size == 1:
        warnings.append(
            "training.model_mode=train with one image per batch: BatchNorm normalizes the image by its own "
            "statistics, which removes each channel's mean and scale from what the gradient shows, and "
            "reconstructions come out as noise; use training.model_mode=eval (running statistics, Inverting "
            "Gradients' setting) or a larger training.batch_size")
    dropout = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    if dropout and t.model_mode == "train":
        warnings.append(
            "the model has dropout and clients train in train mode: the attacker cannot know the client's dropout "
            "masks; use training.model_mode=eval or model.dropout=0 to measure leakage without that noise")
    if gia.model_mode is not None and gia.model_mode != t.model_mode:
        warnings.append(
            f"attack.gia.model_mode={gia.model_mode} differs from the clients' training.model_mode={t.model_mode}: "
            f"the attacker simulates another forward pass than the one that made the update; unset "
            f"attack.gia.model_mode")
    images = t.batch_size if t.algorithm == "fedsgd" else None
    if config.attack.name in ("dlg", "idlg") and images and images > DLG_MAX_BATCH:
        warnings.append(
            f"attack '{config.attack.name}' on a batch of {images} images: DLG/iDLG (L-BFGS, no image prior) are "
            f"shown on batches of at most {DLG_MAX_BATCH} (Zhu et al. 2019); use inverting_gradients or a smaller "
            "training.batch_size")
    return warnings
