"""Options of a GIA-L attack (``GIALConfig``): latent search (GGL, GIAS stage 1) and GIAS's generator fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fl_privacy.attacks.gia.labels import LABEL_METHODS
from fl_privacy.attacks.gia.options import (
    GIAConfig,
    check_choices,
    check_integers,
    check_non_negative,
    check_positive,
)

__all__ = ["GIALConfig"]


@dataclass
class GIALConfig:
    """Settings of one GIA-L attack. ``LATENT_PRESETS`` holds the reference attacks' values."""

    objective: Literal["l2", "cosine", "scaled_l2"] = "cosine"
    """Gradient distance, as GIA-O's ``GIAConfig.objective``: GIAS uses 1 - cosine ("sim" in its code), GGL
    the squared L2 distance per layer (``layer_mean``)."""
    layer_mean: bool = False
    """Divide the distance by the number of matched parameter tensors (GGL: the per-layer squared L2 distances
    are averaged). Changes the balance against the latent prior, not the best restart."""
    iterations: int = 2000
    """Adam steps on the latents (stage 1). GGL's Adam reconstructor: 2500; GIAS: 4800 by default in its
    ``rec_mult.py``, 500 in its ImageNet-32 script."""
    lr: float = 0.1
    """Adam step size on the latents: 0.1 (GGL's Adam reconstructor, GIAS's default; its scripts 3e-2)."""
    lr_schedule: Literal["none", "steps", "cosine"] = "steps"
    """As GIA-O, for both stages: "steps" = x0.1 at 3/8, 5/8, 7/8 (GIAS's ``lr_decay``), "none" (GGL: its
    MultiStepLR is commented out), "cosine"."""
    restarts: int = 4
    """Independent latent initialisations optimised together (batched); best by final distance (GIAS: 3-4;
    GGL: one start per run)."""
    latent_prior: Literal["none", "kl", "norm"] = "kl"
    """Regulariser on the latent ``z`` fed to the generator (after ``bound``), per restart:
    "kl" - GGL: KL divergence between N(mean(z_b), var(z_b)) fitted to the entries of each latent vector and
    N(0, 1), ``0.5 (var + mean^2 - 1 - log var)``, averaged over the batch (GGL has batch size 1);
    "norm" - GIAS's ``z_norm``: the L2 norm of the restart's latents (B, nz); "none"."""
    latent_weight: float = 0.1
    """Weight of ``latent_prior`` (GGL: 0.1 on the KL term; GIAS: ``z_norm`` 0 = off by default)."""
    bound: Literal["none", "tanh"] = "none"
    """"tanh": optimise ``w`` and feed ``z = tanh(w)`` in (-1, 1) (GGL's ``use_tanh``, used there instead of the
    KL term); "none": ``z = w``."""
    generator_steps: int = 0
    """GIAS stage 2: Adam steps on the generator's parameters (one copy per image) with ``z`` fixed; 0 = off
    (GGL, GIAS's "GIAS-z only" ablation). GIAS's ImageNet-32 script: 5000."""
    generator_lr: float = 1e-3
    """Adam step size of stage 2 (GIAS scripts: 1e-3)."""
    labels: Literal["known", "infer"] = "infer"
    """Labels of the victim's batch (and the generator's condition): given (needs ``attack.threat.labels``)
    or inferred from the update with ``label_method``; GGL and GIAS infer (iDLG rule for one image)."""
    label_method: str = "llg+"
    """As GIA-O's ``GIAConfig.label_method``: "idlg" (one image), "yin", "llg", "llg+"."""
    schedule: Literal["auto", "known", "unknown"] = "auto"
    """FedAvg updates, as GIA-O: unroll the known batch schedule or match one sign-corrected gradient."""
    model_mode: Literal["train", "eval"] = "train"
    """Mode of the attacker's copy of the victim model, as GIA-O (the generator is always in eval mode)."""
    tv: float = 0.0
    """Total-variation weight on the generated images (GIAS scripts: 1e-6; GGL: none)."""
    boxed: bool = True
    """Clamp the generated images to the pixel box. A Tanh-output generator is inside the box by construction
    (also in stage 2, whatever the parameters), so this only matters for unbounded generators."""
    seed: int = 0
    """Seed of the initial latents (drawn on the CPU: the same start on every device)."""
    log_every: int = 0
    """Trace interval in iterations (both stages); 0 = automatic (about 100 points per stage)."""

    def __post_init__(self) -> None:
        check_choices(self)
        if self.label_method not in LABEL_METHODS:
            raise ValueError(f"GIALConfig.label_method must be one of {list(LABEL_METHODS)}, got {self.label_method!r}")
        check_positive(self, ("lr", "generator_lr"))
        check_non_negative(self, ("tv", "latent_weight"))
        check_integers(self, (("iterations", 1), ("restarts", 1), ("generator_steps", 0), ("log_every", 0)))
        if not isinstance(self.layer_mean, bool) or not isinstance(self.boxed, bool):
            raise TypeError("GIALConfig.layer_mean and GIALConfig.boxed must be booleans")

    def gia_config(self, n_layers: int = 1, iterations: int | None = None, lr: float | None = None) -> GIAConfig:
        """The GIA-O settings of the shared gradient-matching part (``GIAProblem``, labels, lr schedule)."""
        return GIAConfig(
            objective=self.objective, optimizer="adam", signed=False, lr=lr if lr is not None else self.lr,
            iterations=iterations if iterations is not None else self.iterations, lr_schedule=self.lr_schedule,
            boxed=self.boxed, tv=self.tv, l2=0.0, bn=0.0, restarts=self.restarts, labels=self.labels,
            label_method=self.label_method, schedule=self.schedule, model_mode=self.model_mode, seed=self.seed,
            objective_scale=1.0 / n_layers if self.layer_mean else 1.0, log_every=self.log_every,
        )
