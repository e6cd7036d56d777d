"""Reference GIA-O attacks as ``GIAConfig`` presets.

Every default cites its source; the facts are collected in
``shared/docs/REFERENCES.md`` (read from the public reference code) and the
papers. Override single fields with ``preset(name, field=value)``. A new preset is one
``GIAConfig`` and one line: ``register_preset("name", GIAConfig(...))``.
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial

from fl_privacy.attacks.contract import AttackSpec
from fl_privacy.attacks.gia.engine import GIAConfig, from_presets, reconstruct, reconstruct_victims
from fl_privacy.attacks.registry import register_attack

__all__ = ["PRESETS", "preset", "register_preset"]

PRESETS: dict[str, GIAConfig] = {
    # Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019 (reference code):
    "dlg": GIAConfig(
        objective="l2",          # squared L2 distance between gradients
        optimizer="lbfgs",       # torch.optim.LBFGS ...
        lr=1.0,                  # ... with lr 1 (torch's default max_iter=20 evaluations per step)
        signed=False,            # (Adam-only option; not part of DLG)
        iterations=300,          # 300 L-BFGS steps (breaching's DLG config: 1200)
        lr_schedule="none",      # constant lr
        boxed=False,             # no box constraint
        tv=0.0,                  # no image prior
        init="randn",            # dummy data ~ N(0, 1)
        labels="joint",          # dummy soft labels (softmax of randn logits) optimised with the data
    ),
    # Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients", 2020: DLG with the label
    # taken analytically from the sign of the output layer's gradient (then a hard label).
    "idlg": GIAConfig(
        objective="l2", optimizer="lbfgs", lr=1.0, signed=False, iterations=300, lr_schedule="none",
        boxed=False, tv=0.0, init="randn",
        labels="infer", label_method="idlg",
    ),
    # Geiping, Bauermeister, Dröge, Moeller, "Inverting Gradients", NeurIPS 2020 (inversefed; breaching's
    # "invertinggradients" config):
    "inverting_gradients": GIAConfig(
        objective="cosine",      # 1 - cosine similarity over all parameters as one vector
        optimizer="adam",        # Adam ...
        lr=0.1,                  # ... lr 0.1 ...
        signed=True,             # ... on signed gradients
        iterations=4000,         # 4k for one CIFAR image (8k for FedAvg; 24k in the paper's CLI)
        lr_schedule="steps",     # lr x0.1 at 3/8, 5/8, 7/8 of the run
        boxed=True,              # clamp to the valid normalised pixel range after each step
        tv=1e-4,                 # TV weight ~1e-6..1e-4 on CIFAR (1e-1 on ImageNet)
        init="randn",            # init ~ N(0, 1)
        labels="infer",          # labels given or inferred: here inferred with LLG+ (use labels="known"
        label_method="llg+",     # when the threat model grants them)
    ),
    # Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See Through Gradients: Image Batch Recovery via
    # GradInversion", CVPR 2021 (as breaching's "seethroughgradients" config):
    "see_through_gradients": GIAConfig(
        objective="l2",          # L2 gradient distance ...
        objective_scale=1e-4,    # ... scaled 1e-4 relative to the priors
        optimizer="adam",        # Adam lr 0.1, unsigned
        lr=0.1,
        signed=False,
        iterations=4000,         # (not fixed by the references; the same budget as Inverting Gradients)
        lr_schedule="cosine",    # cosine decay (the reference's warm-up is not modelled)
        boxed=True,              # box constraint
        tv=1e-4,                 # TV 1e-4
        l2=1e-6,                 # image L2 norm 1e-6
        bn=0.1,                  # BN-statistics matching 0.1, first BN layer x10: needs the victim batch's
                                 # BN statistics (attack.threat.bn_statistics)
        init="randn",
        labels="infer",          # batch labels from the per-row minimum of the output layer's gradient
        label_method="yin",
    ),
}


def preset(name: str, **overrides: object) -> GIAConfig:
    """A copy of preset ``name`` with ``overrides`` applied (validated like any GIAConfig)."""
    return from_presets(PRESETS, name, overrides, "GIA")


def register_preset(name: str, config: GIAConfig, summary: str = "") -> AttackSpec:
    """Make ``config`` the GIA-O attack ``attack.name: <name>`` (a taken name is refused)."""
    spec = register_attack(AttackSpec(
        name=name, family="GIA-O", options=partial(preset, name), reconstruct=reconstruct,
        reconstruct_batch=reconstruct_victims, summary=summary,
        options_fields=tuple(f.name for f in fields(GIAConfig)),
    ))
    PRESETS[name] = config
    return spec


for _name, _config in list(PRESETS.items()):
    del PRESETS[_name]
    register_preset(_name, _config)
