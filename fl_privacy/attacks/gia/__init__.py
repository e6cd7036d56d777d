"""Gradient inversion attacks: pixel space (GIA-O: one engine, pluggable parts, reference presets),
latent space (GIA-L) and FedAvg updates (Dimitrov et al.); each registered by name."""

from dataclasses import fields
from functools import partial
from typing import Any

import torch

from fl_privacy.attacks.contract import AttackSpec
from fl_privacy.attacks.gia.engine import GIAConfig, GIAResult, reconstruct
from fl_privacy.attacks.gia.fedavg import FEDAVG_PRESETS, FedAvgAttackConfig, fedavg_preset, reconstruct_fedavg
from fl_privacy.attacks.gia.latent import LATENT_PRESETS, GIALConfig, latent_preset, reconstruct_latent
from fl_privacy.attacks.gia.presets import PRESETS, preset, register_preset
from fl_privacy.attacks.registry import register_attack
from fl_privacy.attacks.threat import Observation

__all__ = ["PRESETS", "GIAConfig", "GIAResult", "preset", "reconstruct", "register_preset"]


def _reconstruct_latent(obs: Observation, cfg: GIALConfig, device: torch.device | str | None, progress: bool,
                        /, *, generator: tuple[torch.nn.Module, dict[str, Any]]) -> GIAResult:
    """GIA-L behind the common signature: ``generator`` is the loaded (module, checkpoint info)."""
    module, info = generator
    return reconstruct_latent(obs, cfg, module, info, device=device, progress=progress)


for _name in LATENT_PRESETS:
    register_attack(AttackSpec(
        name=_name, family="GIA-L", options=partial(latent_preset, _name), reconstruct=_reconstruct_latent,
        needs_generator=True, summary="latent-space search of a trained generator",
        options_fields=tuple(f.name for f in fields(GIALConfig)),
    ))
for _name in FEDAVG_PRESETS:
    register_attack(AttackSpec(
        name=_name, family="GIA-O", options=partial(fedavg_preset, _name), reconstruct=reconstruct_fedavg,
        updates=frozenset({"fedavg"}), summary="GIA-O on FedAvg updates, batch order unknown (Dimitrov et al. 2022)",
        options_fields=tuple(f.name for f in fields(FedAvgAttackConfig)),
    ))
