"""Building a GIA problem from the Observation: what the threat model grants, checked once.

How candidate updates are produced (FedSGD gradient, known FedAvg schedule,
unknown schedule), how many images to reconstruct, whether several victims can
be optimised as one problem, the attacker's private copy of the model, which
parameters are matched, and the BatchNorm-statistics targets of the BN prior.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from fl_privacy.attacks.gia.options import GIAConfig
from fl_privacy.attacks.threat import Observation, Schedule

__all__ = ["attack_batch_size", "attacker_model", "bn_prior_target", "check_batchable", "default_device",
           "matched_parameters", "update_model_of"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def update_model_of(obs: Observation, cfg: GIAConfig) -> tuple[str, Schedule | None]:
    """How candidate updates are produced ("gradient", "known_schedule", "unknown_schedule") and the schedule used."""
    if obs.kind == "gradient":
        return "gradient", None
    if obs.kind != "delta":
        raise ValueError(f"unknown update kind {obs.kind!r}; expected 'gradient' or 'delta'")
    if cfg.schedule == "known" and obs.schedule is None:
        raise ValueError(
            "GIAConfig.schedule='known' needs the client's batch schedule, which the threat model "
            "does not grant (attack.threat.schedule); use schedule='unknown' or 'auto'"
        )
    known = obs.schedule is not None and cfg.schedule in ("auto", "known")
    return ("known_schedule", obs.schedule) if known else ("unknown_schedule", None)


def attack_batch_size(obs: Observation, update_model: str) -> int:
    """How many images to reconstruct, from the basic information the threat model grants."""
    if obs.kind == "gradient":
        size = obs.batch_size or obs.num_examples
        if not size:
            raise ValueError(
                "the attack needs the number of samples behind the gradient: grant it "
                "(attack.threat.num_examples) or give obs.batch_size"
            )
        return int(size)
    if obs.num_examples:
        return int(obs.num_examples)
    if update_model == "known_schedule" and obs.schedule is not None:
        return len({p for step in obs.schedule.steps for p in step})
    raise ValueError(
        "the attack needs the number of samples behind the FedAvg update: grant it "
        "(attack.threat.num_examples) or the batch schedule (attack.threat.schedule)"
    )


def check_batchable(victims: Sequence[Observation]) -> None:
    """Victims optimised as one problem must share the model, its state, and the shape of the problem."""
    first = victims[0]
    for i, other in enumerate(victims[1:], start=1):
        same = (other.kind == first.kind and tuple(other.image_shape) == tuple(first.image_shape)
                and other.num_classes == first.num_classes and other.schedule == first.schedule
                and (other.batch_size or other.num_examples) == (first.batch_size or first.num_examples)
                and type(other.model) is type(first.model) and other.update.keys() == first.update.keys()
                and (other.bn_statistics is None) == (first.bn_statistics is None))
        same = same and all(other.global_params[k] is v or torch.equal(other.global_params[k], v)
                            for k, v in first.global_params.items())
        if not same:
            raise ValueError(f"victim {i} cannot be attacked together with victim 0: batched victims need the same "
                             "global model, update kind, batch size, schedule and image shape (attack them apart)")


def attacker_model(obs: Observation, cfg: GIAConfig, device: torch.device) -> nn.Module:
    """A private, frozen copy of the victim model; train mode with stateless BatchNorm, or eval mode."""
    model = copy.deepcopy(obs.model).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.model_mode == "train":
        model.train()
        torch.func.replace_all_batch_norm_modules_(model)
    else:
        model.eval()
    if cfg.lean_convolutions:
        from fl_privacy.attacks.gia.conv import use_lean_convolutions

        use_lean_convolutions(model)
    return model


def matched_parameters(obs: Observation, all_names: list[str], prefixes: tuple[str, ...],
                       notes: list[str]) -> list[str]:
    """Names of the parameters the attack matches: those in the update, narrowed to ``prefixes`` (noted)."""
    names = [n for n in all_names if n in obs.update]
    if not names:
        raise ValueError("obs.update holds none of the model's parameters")
    if not prefixes:
        return names
    chosen = [n for n in names if n.startswith(prefixes)]
    if not chosen:
        raise ValueError(f"no parameter name starts with {list(prefixes)} (names look like "
                         f"{names[:3]} ...)")
    share = sum(obs.update[n].numel() for n in chosen) / sum(obs.update[n].numel() for n in names)
    notes.append(f"matching {len(chosen)} of {len(names)} parameter tensors "
                 f"({100 * share:.2f}% of the update's values): {list(prefixes)}")
    return chosen


def bn_prior_target(victims: Sequence[Observation], bn_layers: int, device: torch.device,
                    dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer the victims' batch (mean, var): (C,) for one victim, (V, C) for several."""
    if any(v.bn_statistics is None for v in victims):
        raise ValueError(
            "the BatchNorm-statistics prior (GIAConfig.bn > 0) needs the victim batch's BN statistics, "
            "which the threat model does not grant (attack.threat.bn_statistics); set bn=0"
        )
    first = victims[0]
    if len(first.bn_statistics) != bn_layers or not bn_layers:
        raise ValueError(
            f"obs.bn_statistics has {len(first.bn_statistics)} layers but the model has "
            f"{bn_layers} BatchNorm layers"
        )
    per_victim = [[(m.detach().to(device, dtype), v.detach().to(device, dtype))
                   for m, v in victim.bn_statistics] for victim in victims]
    # several victims: (V, C) per layer, each victim's row repeated for its restarts in ``evaluate``
    if len(victims) == 1:
        return per_victim[0]
    return [(torch.stack([pv[i][0] for pv in per_victim]), torch.stack([pv[i][1] for pv in per_victim]))
            for i in range(len(per_victim[0]))]
