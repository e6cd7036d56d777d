"""Options of a GIA-O attack (``GIAConfig``) and the checks every attack's options share.

The option dataclasses of all gradient inversion attacks (GIA-O here, GIA-L in
``latent_options``, Dimitrov et al.'s FedAvg attack in ``fedavg_options``) validate
themselves on construction with the helpers below, so a bad value fails where it is
set, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal, get_args, get_origin, get_type_hints

__all__ = ["GIAConfig", "check_choices", "check_integers", "check_non_negative", "check_positive", "from_presets"]


def check_choices(config: object) -> None:
    """Every ``Literal[...]`` field of a config dataclass holds one of its choices (else a ValueError naming it)."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if get_origin(hints[f.name]) is not Literal:
            continue
        choices = get_args(hints[f.name])
        if value not in choices:
            raise ValueError(f"{type(config).__name__}.{f.name} must be one of {list(choices)}, got {value!r}")


def from_presets(presets: dict, name: str, overrides: dict[str, object], kind: str):
    """A copy of ``presets[name]`` with ``overrides`` (unknown preset or field: ValueError listing the choices)."""
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; available presets: {sorted(presets)}")
    config = presets[name]
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} field(s) {unknown}; fields: {sorted(known)}")
    return replace(config, **overrides)


def check_positive(config: object, names: tuple[str, ...]) -> None:
    """Each named field is > 0 (else a ValueError naming it)."""
    for name in names:
        if not getattr(config, name) > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be > 0, got {getattr(config, name)!r}")


def check_non_negative(config: object, names: tuple[str, ...]) -> None:
    """Each named field is >= 0 (else a ValueError naming it)."""
    for name in names:
        if not getattr(config, name) >= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be >= 0, got {getattr(config, name)!r}")


def check_integers(config: object, minimums: tuple[tuple[str, int], ...]) -> None:
    """Each named field is an integer (not a bool) at least its minimum (else a ValueError naming it)."""
    for name, minimum in minimums:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{type(config).__name__}.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class GIAConfig:
    """Settings of one GIA-O attack. ``presets`` holds the reference attacks' values."""

    objective: Literal["l2", "cosine", "scaled_l2"] = "cosine"
    """Gradient distance: squared L2 (DLG, Zhu et al. 2019; See Through Gradients), 1 - cosine over all
    parameters as one vector (Inverting Gradients, Geiping et al. 2020), or the scale-free L2
    ``min_{s>=0} ||g - s t||^2`` for updates of unknown scale."""
    layer_weights: Literal["uniform", "linear"] = "uniform"
    """Per-parameter-tensor weights of the distance: equal (all references' default) or breaching's
    "linear" (1 at the first tensor down to 1/n at the last)."""
    optimizer: Literal["adam", "lbfgs"] = "adam"
    """Adam (Inverting Gradients, See Through Gradients) or L-BFGS (DLG, iDLG)."""
    signed: bool = True
    """Adam only: step on the sign of the image gradient (Inverting Gradients' signed Adam)."""
    lr: float = 0.1
    """Step size: 0.1 for Adam (Inverting Gradients, See Through Gradients), 1 for L-BFGS (DLG)."""
    iterations: int = 4000
    """Optimiser steps. Inverting Gradients: 4k for one CIFAR image (24k in the paper's CLI); DLG: 300
    L-BFGS steps, each of up to 20 function evaluations (torch's default ``max_iter``)."""
    lr_schedule: Literal["none", "steps", "cosine"] = "steps"
    """"steps": lr x0.1 at 3/8, 5/8 and 7/8 of the run (Inverting Gradients); "cosine": cosine decay to 0
    (See Through Gradients, without its warm-up); "none": constant (DLG)."""
    boxed: bool = True
    """Clamp the images to the valid (normalised) pixel box after each step (Inverting Gradients)."""
    tv: float = 1e-4
    """Weight of the total-variation prior (Inverting Gradients ~1e-6..1e-4 on CIFAR; See Through Gradients 1e-4)."""
    l2: float = 0.0
    """Weight of the image L2-norm prior (See Through Gradients: 1e-6)."""
    bn: float = 0.0
    """Weight of the BatchNorm-statistics prior (See Through Gradients: 0.1); needs ``obs.bn_statistics``."""
    init: Literal["randn", "uniform", "zeros"] = "randn"
    """Initial images: standard normal (DLG, Inverting Gradients), uniform over the pixel box, or zeros."""
    restarts: int = 1
    """Independent trials optimised together; the best by final distance is returned (Inverting Gradients)."""
    labels: Literal["known", "infer", "joint"] = "infer"
    """Labels: given (needs ``attack.threat.labels``), inferred from the update (``label_method``), or
    optimised jointly with the images as soft labels, softmax of free logits (DLG)."""
    label_method: str = "llg+"
    """Label inference when ``labels == "infer"``: "idlg" (Zhao et al. 2020), "yin" (Yin et al. 2021),
    "llg"/"llg+" (Wainakh et al. 2022); see ``fl_privacy.attacks.gia.labels``."""
    schedule: Literal["auto", "known", "unknown"] = "auto"
    """FedAvg updates: unroll the client's local SGD ("known", needs ``obs.schedule``) or match one
    sign-corrected gradient ("unknown"); "auto": known iff the schedule is granted."""
    model_mode: Literal["train", "eval"] = "train"
    """Mode of the attacker's copy of the model: train (BN uses each candidate batch's statistics, as the
    client did) or eval (BN uses the received running statistics)."""
    seed: int = 0
    """Seed of the initial images / label logits (drawn on the CPU, so identical on every device)."""
    objective_scale: float = 1.0
    """Factor on the distance in the optimised loss, relative to the priors (See Through Gradients: 1e-4,
    as breaching's config). Does not affect restart scoring."""
    log_every: int = 0
    """Trace interval in iterations; 0 = automatic (about 100 points). The last iteration is always logged."""
    parameters: tuple[str, ...] = ()
    """Match only the parameters whose names start with one of these prefixes (SoK Table III: the gradient of
    one net-in-net block); empty = every parameter in the update."""
    return_iterate: Literal["best", "last"] = "best"
    """Which iterate of each restart is scored and returned: the one with the lowest optimised loss seen
    (breaching's ``_run_trial``) or the last one (Inverting Gradients' ``inversefed``)."""
    early_stop_window: int = 0
    """Early stopping: a restart stops when its optimised loss has not improved by the relative tolerance
    ``early_stop_tol`` within this many iterations; 0 = off (the reference attacks run their full budget)."""
    early_stop_tol: float = 1e-3
    """Relative improvement that counts for early stopping: ``loss < best_recent * (1 - tol)``."""
    batching: Literal["auto", "vmap", "loop"] = "auto"
    """How the rows (restarts x victims) go through the model: one ``torch.func.vmap`` pass ("vmap") or
    one pass per row ("loop"); "auto": vmap on a GPU, loop on a CPU. On one CPU thread vmap's per-row
    parameter gradients cost more than separate passes (benchmarks/attack_speed.py), and with oneDNN's CPU
    kernels (torch 2.14) vmap gives the first row of a ConvNet problem a wrong image gradient (0.5% of its
    max against float64 autograd; without oneDNN, and in "loop", it agrees to 1e-11)."""
    lean_convolutions: bool = False
    """Use convolutions whose double backward skips the weight gradient the attack never needs
    (``fl_privacy.attacks.gia.conv``): 1/8 fewer FLOPs on ConvNet-64; same numbers."""
    cuda_graph: bool = False
    """Adam on a CUDA device: capture one iteration as a CUDA graph after 3 eager ones and replay it
    (removes the per-kernel launch cost that dominates small models on a GPU); same numbers as eager."""
    compile: bool = False
    """Optimise the iteration's loss with ``torch.compile`` (the inner parameter gradient included; compile
    time counted in ``seconds``). Same numbers within float tolerance; pays where kernels are small (GPU,
    small models); falls back to eager with a note when compiling fails."""
    precision: Literal["float32", "tf32", "bf16"] = "float32"
    """Arithmetic of the attack (``fl_privacy.attacks.gia.precision``): strict float32 (TF32 off even where
    PyTorch would allow it), TF32 tensor cores on an NVIDIA GPU, or bf16 autocast. Reduced precision is
    opt-in; its effect on PSNR/SSIM is measured in benchmarks/gpu_check.py."""

    def __post_init__(self) -> None:
        check_choices(self)
        if self.label_method == "fedavg":
            raise ValueError("label_method 'fedavg' (Dimitrov et al.'s label counts by simulated local training) "
                             "belongs to the dimitrov_fedavg attack; this attack infers labels from one gradient: "
                             "use idlg, yin, llg or llg+")
        if isinstance(self.parameters, str) or not all(isinstance(p, str) and p for p in self.parameters):
            raise ValueError(f"GIAConfig.parameters must be a list of parameter-name prefixes, got {self.parameters!r}")
        self.parameters = tuple(self.parameters)
        check_positive(self, ("lr", "objective_scale"))
        check_non_negative(self, ("tv", "l2", "bn", "early_stop_tol"))
        check_integers(self, (("iterations", 1), ("restarts", 1), ("log_every", 0), ("early_stop_window", 0)))
