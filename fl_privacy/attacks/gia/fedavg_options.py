"""Options of Dimitrov et al.'s FedAvg attack ("Data Leakage in Federated Averaging", TMLR 2022).

Every default is the authors' (eth-sri/fedavg_leakage, ``scripts/reconstruct_cifar_table1.sh``
and ``table3.sh``, CIFAR "FedAvg + prior" rows); the field docs name the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fl_privacy.attacks.gia.options import check_choices, check_integers, check_non_negative, check_positive

__all__ = ["FedAvgAttackConfig"]


@dataclass
class FedAvgAttackConfig:
    """Settings of Dimitrov et al.'s FedAvg attack; defaults are the authors' CIFAR settings."""

    iterations: int = 400
    """Adam steps (``2 * --att_epochs``, att_epochs = 200)."""
    lr: float = 0.1
    """Adam step size (``--att_lr``), decayed by ``lr_decay`` every ``lr_decay_steps`` steps (continuously)."""
    lr_decay: float = 0.997
    """``--exp_decay_factor``."""
    lr_decay_steps: int = 20
    """``--exp_decay_steps``."""
    objective: Literal["l2", "cosine"] = "l2"
    """``--att_metric l2``: squared L2 between ``-delta / lr`` and the simulated one."""
    layer_weights: Literal["exponential", "uniform"] = "exponential"
    """``--att_exp_layers``: layer ``l`` (0 = input side; weight and bias alike) weighs ``exp(-l)``."""
    match_weight_start: float = 4.0
    """``--att_fac_start``: factor on the distance at the start ..."""
    match_weight: float = 2.0
    """... decaying geometrically to this one (``--att_total_var``) over the first half of the run."""
    tv: float = 2e-4
    """``--reg_tv``: per image the sum of squared (circular) neighbour differences, mean over images."""
    clip: float = 10.0
    """``--reg_clip``: squared distance of the pixels outside [0, 1]."""
    order_prior: float = 6.075
    """``--reg_reorder`` (CIFAR; FEMNIST 1000): weight of the epoch-order-invariant prior (``l2_max_conv``)."""
    projection_channels: int = 96
    """Channels of the prior's random 3x3 convolution (the reference's ``nn.Conv(features=96)``)."""
    restarts: int = 1
    """``--att_restarts``: independent trials, optimised together; the lowest final distance wins."""
    labels: Literal["known", "infer"] = "infer"
    """Given (``attack.threat.labels``) or inferred from the update."""
    label_method: str = "fedavg"
    """"fedavg": the paper's counts by simulated training (``--res_label aaai_avg_full``); "llg", "llg+", "yin",
    "idlg": the single-gradient methods of ``labels`` on ``-delta``."""
    model_mode: Literal["train", "eval"] = "train"
    """Mode of the attacker's model copy (the client's, from ``training.model_mode``)."""
    seed: int = 0
    """Seed of the dummy images (N(0, 1), ``--att_init normal``) and of the prior's random convolution."""
    log_every: int = 0
    """Trace interval in iterations; 0 = automatic (about 100 points)."""

    def __post_init__(self) -> None:
        from fl_privacy.attacks.gia.labels import FEDAVG_LABEL_METHODS

        check_choices(self)
        if self.label_method not in FEDAVG_LABEL_METHODS:
            raise ValueError(f"FedAvgAttackConfig.label_method must be one of {list(FEDAVG_LABEL_METHODS)}, "
                             f"got {self.label_method!r}")
        check_positive(self, ("lr", "lr_decay", "match_weight_start", "match_weight"))
        check_non_negative(self, ("tv", "clip", "order_prior"))
        check_integers(self, (("iterations", 1), ("restarts", 1), ("lr_decay_steps", 1), ("projection_channels", 1),
                              ("log_every", 0)))
