"""GIA-O: one optimisation engine for gradient inversion in pixel space.

The attacker optimises dummy images (and, for DLG, dummy soft labels) so that
the update they would produce matches the observed one (SoK "Gradient Leakage
in FL", Du et al. 2024, §2.3, Definition 1). Pluggable parts: the distance
(``objectives``), the image priors (``priors``), how a candidate update is
produced (one gradient for FedSGD; the unrolled local SGD for FedAvg with a
known schedule, ``unroll``; one sign-corrected gradient for FedAvg with an
unknown schedule), the optimiser, its lr schedule, and the labels (known,
inferred, or optimised jointly). ``presets`` holds the reference attacks.

Design:

* The ONLY input is an ``Observation``; ground truth never enters.
* Restarts are batched: all ``R`` restarts go through the model in one pass,
  ``torch.func.vmap`` over restarts of ``torch.func.grad`` of the loss w.r.t.
  the parameters (or of the unrolled local SGD), then one batched distance.
  The attack loss is the sum over restarts of independent terms, so one
  backward gives every restart its own gradient.
* BatchNorm: the engine works on a private deep copy of ``obs.model``. In
  train mode its BN layers are made stateless
  (``torch.func.replace_all_batch_norm_modules_``): each restart normalises
  with its own batch statistics, as the client did, and nothing is updated in
  place. In eval mode BN uses the received running statistics (functional
  buffers), which are only read.
* No host syncs in the hot loop (Adam): the per-restart objective is written
  into a device tensor every ``log_every`` iterations and copied to the host
  once at the end; the progress bar reads it every 100 iterations only.
  L-BFGS (``torch.optim.LBFGS``) reads the loss on the host by its design.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal, get_args, get_origin, get_type_hints

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fl_privacy.attacks.gia.objectives import OBJECTIVES, layer_weights, target_norms
from fl_privacy.attacks.gia.priors import bn_statistics, l2_norm, total_variation
from fl_privacy.attacks.gia.stopping import BestIterate
from fl_privacy.attacks.gia.unroll import unrolled_delta
from fl_privacy.attacks.threat import Observation
from fl_privacy.sgd import loss_fn

__all__ = ["GIAConfig", "GIAProblem", "GIAResult", "reconstruct", "reconstruct_victims"]


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


def from_presets(presets: dict, name: str, overrides: dict[str, object], kind: str):  # noqa: ANN201
    """A copy of ``presets[name]`` with ``overrides`` (unknown preset or field: ValueError listing the choices)."""
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; available presets: {sorted(presets)}")
    config = presets[name]
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} field(s) {unknown}; fields: {sorted(known)}")
    return replace(config, **overrides)


def pick_best_restart(distance: torch.Tensor, notes: list[str]) -> tuple[torch.Tensor, int]:
    """Final distances on the CPU and the index of the best restart (a diverged one never wins; noted)."""
    finals = distance.detach().cpu()
    best = int(torch.argmin(torch.nan_to_num(finals.double(), nan=math.inf)))
    if not torch.isfinite(finals).all():
        notes.append(f"{int((~torch.isfinite(finals)).sum())} restart(s) diverged (non-finite objective)")
    return finals, best


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

    def __post_init__(self) -> None:
        check_choices(self)
        if isinstance(self.parameters, str) or not all(isinstance(p, str) and p for p in self.parameters):
            raise ValueError(f"GIAConfig.parameters must be a list of parameter-name prefixes, got {self.parameters!r}")
        self.parameters = tuple(self.parameters)
        for name in ("lr", "objective_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GIAConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("tv", "l2", "bn", "early_stop_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"GIAConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name, minimum in (("iterations", 1), ("restarts", 1), ("log_every", 0), ("early_stop_window", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"GIAConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class GIAResult:
    """Outcome of one attack on one update."""

    images: torch.Tensor
    """(B, C, H, W) of the best restart, in the attack's (normalised) space, on the CPU."""
    labels: torch.Tensor
    """(B,) labels used / inferred (argmax of the soft labels for "joint"), on the CPU."""
    objective: float
    """The best restart's final gradient distance (without priors or ``objective_scale``)."""
    restart_objectives: list[float]
    """Final gradient distance of every restart (NaN for a diverged one); best = argmin."""
    trace: np.ndarray
    """(n_logged, 1 + R): iteration, then the optimised loss (distance x scale + priors) of every restart."""
    iterations: int
    seconds: float
    seconds_per_iteration: float
    objective_used: str = ""
    """The distance actually used (an "l2" on an update of unknown scale becomes "scaled_l2")."""
    update_model: str = ""
    """How candidates were produced: "gradient" (FedSGD), "known_schedule" or "unknown_schedule" (FedAvg)."""
    best_restart: int = 0
    soft_labels: torch.Tensor | None = None
    """(B, K) label probabilities of the best restart ("joint" only)."""
    notes: list[str] = field(default_factory=list)
    """Automatic decisions and caveats worth recording in a report."""
    iterations_used: int = 0
    """Iterations the returned restart ran (less than ``iterations`` when early stopping ended it)."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def _bn_dims(t: torch.Tensor) -> list[int]:
    return [0, *range(2, t.dim())]


class GIAProblem:
    """What the optimisation needs, built once from an ``Observation``: model, target, distance, priors.

    ``evaluate(x, y)`` maps candidate images ``x`` (R, B, C, H, W) and labels ``y``
    (class ids (B,) shared by all restarts, or soft labels (R, B, K)) to the
    optimised loss and the gradient distance, both (R,), in one vectorised pass.
    """

    def __init__(self, obs: Observation | Sequence[Observation], cfg: GIAConfig,
                 device: torch.device | str | None = None) -> None:
        victims = [obs] if isinstance(obs, Observation) else list(obs)
        if not victims:
            raise ValueError("GIAProblem needs at least one Observation")
        obs = victims[0]
        check_batchable(victims)
        self.victims = len(victims)
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else default_device()
        self.notes: list[str] = []
        self.schedule = None
        if obs.kind == "gradient":
            self.update_model = "gradient"
        elif obs.kind == "delta":
            if cfg.schedule == "known" and obs.schedule is None:
                raise ValueError(
                    "GIAConfig.schedule='known' needs the client's batch schedule, which the threat model "
                    "does not grant (attack.threat.schedule); use schedule='unknown' or 'auto'"
                )
            known = obs.schedule is not None and cfg.schedule in ("auto", "known")
            self.update_model = "known_schedule" if known else "unknown_schedule"
            self.schedule = obs.schedule if known else None
        else:
            raise ValueError(f"unknown update kind {obs.kind!r}; expected 'gradient' or 'delta'")
        self.batch_size = attack_batch_size(obs, self.update_model)
        if self.schedule is not None:
            top = max(p for step in self.schedule.steps for p in step)
            if top >= self.batch_size:
                raise ValueError(f"the schedule uses position {top} but the update covers {self.batch_size} samples")

        model = copy.deepcopy(obs.model).to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        if cfg.model_mode == "train":
            model.train()
            torch.func.replace_all_batch_norm_modules_(model)
        else:
            model.eval()
        self.model = model
        self.batching = cfg.batching if cfg.batching != "auto" else ("vmap" if self.device.type == "cuda" else "loop")
        if cfg.lean_convolutions:
            from fl_privacy.attacks.gia.conv import use_lean_convolutions

            use_lean_convolutions(model)

        all_names = [n for n, _ in model.named_parameters()]
        missing = [n for n in all_names if n not in obs.global_params]
        if missing:
            raise ValueError(f"obs.global_params lacks parameters of the model: {missing[:5]}")
        self.params = {n: obs.global_params[n].detach().to(self.device) for n in all_names}
        own_buffers = dict(model.named_buffers())
        self.buffers = {k: v.detach().to(self.device) for k, v in obs.global_buffers.items() if k in own_buffers}
        self.names = [n for n in all_names if n in obs.update]
        if not self.names:
            raise ValueError("obs.update holds none of the model's parameters")
        prefixes = tuple(getattr(cfg, "parameters", ()) or ())
        if prefixes:
            chosen = [n for n in self.names if n.startswith(prefixes)]
            if not chosen:
                raise ValueError(f"no parameter name starts with {list(prefixes)} (names look like "
                                 f"{self.names[:3]} ...)")
            share = sum(obs.update[n].numel() for n in chosen) / sum(obs.update[n].numel() for n in self.names)
            self.notes.append(f"matching {len(chosen)} of {len(self.names)} parameter tensors "
                              f"({100 * share:.2f}% of the update's values): {list(prefixes)}")
            self.names = chosen
        self.dtype = self.params[self.names[0]].dtype
        self.objective = cfg.objective
        targets = [self._target(v, notes=(i == 0)) for i, v in enumerate(victims)]
        # one victim: param-shaped targets; several: (V, *param_shape), compared victim by victim
        self.target = targets[0] if len(victims) == 1 else [torch.stack(t) for t in zip(*targets)]
        weights = layer_weights(len(self.names), cfg.layer_weights).tolist()
        self.weights = None if all(w == 1.0 for w in weights) else weights
        self.distance_fn = OBJECTIVES[self.objective]
        self.target_norms = target_norms(self.target, victims=len(victims) > 1)

        self.bn_modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn_target: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._captured: list[torch.Tensor] | None = None
        if cfg.bn > 0:
            if any(v.bn_statistics is None for v in victims):
                raise ValueError(
                    "the BatchNorm-statistics prior (GIAConfig.bn > 0) needs the victim batch's BN statistics, "
                    "which the threat model does not grant (attack.threat.bn_statistics); set bn=0"
                )
            if len(obs.bn_statistics) != len(self.bn_modules) or not self.bn_modules:
                raise ValueError(
                    f"obs.bn_statistics has {len(obs.bn_statistics)} layers but the model has "
                    f"{len(self.bn_modules)} BatchNorm layers"
                )
            per_victim = [[(m.detach().to(self.device, self.dtype), v.detach().to(self.device, self.dtype))
                           for m, v in victim.bn_statistics] for victim in victims]
            # several victims: (V, C) per layer, each victim's row repeated for its restarts in ``evaluate``
            self.bn_target = per_victim[0] if len(victims) == 1 else [
                (torch.stack([pv[i][0] for pv in per_victim]), torch.stack([pv[i][1] for pv in per_victim]))
                for i in range(len(per_victim[0]))]
            for module in self.bn_modules:
                module.register_forward_hook(self._capture_hook)

    def _target(self, obs: Observation, notes: bool) -> list[torch.Tensor]:
        """The update to match for one victim, in ``self.names`` order (sign/scale corrected for FedAvg)."""
        update = [obs.update[n].detach().to(self.device, self.dtype) for n in self.names]
        if self.update_model != "unknown_schedule":
            return update
        # The gradient direction is -delta (plain SGD: delta = -lr * sum of the steps' gradients).
        # breaching matches +delta here, which makes its objective anti-aligned at the truth.
        target = [-u for u in update]
        if self.cfg.objective == "l2":
            if obs.schedule is not None:
                scale = obs.schedule.lr * len(obs.schedule.steps)
                target = [t / scale for t in target]
                if notes:
                    self.notes.append(f"unknown-schedule l2: target = -delta / (lr * steps) = -delta / {scale:g}")
            else:
                self.objective = "scaled_l2"
                if notes:
                    self.notes.append(
                        "objective 'l2' switched to 'scaled_l2': the update's scale (lr * steps) is not granted")
        return target

    # ------------------------------------------------------------------ candidates
    def _capture_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._captured is not None:
            self._captured.append(inputs[0])

    def _forward(self, params: tuple[dict, ...], x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Logits and, when the BN prior is on, each BN layer's input (mean, biased var) for one restart."""
        want = bool(self.bn_target)
        self._captured = [] if want else None
        try:
            out = functional_call(self.model, (*params, self.buffers), (x,))
            captured = self._captured or []
        finally:
            self._captured = None
        stats = []
        for t in captured:
            var, mean = torch.var_mean(t, dim=_bn_dims(t), unbiased=False)
            stats.append((mean, var))
        return out, tuple(stats)

    def _one_restart(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], tuple]:
        """Candidate update (list over matched parameters) and BN statistics of one restart."""
        if self.update_model == "known_schedule":
            delta = unrolled_delta(self.model, self.params, self.buffers, x, y, self.schedule)
            stats = ()
            if self.bn_target:
                _, stats = self._forward((self.params,), x)
            return [delta[n] for n in self.names], stats
        matched = {n: self.params[n] for n in self.names}
        other = {n: v for n, v in self.params.items() if n not in matched}

        def loss(p: dict) -> tuple[torch.Tensor, tuple]:
            out, stats = self._forward((p, other), x)
            return loss_fn(out, y), stats

        grads, stats = torch.func.grad(loss, has_aux=True)(matched)
        return [grads[n] for n in self.names], stats

    def candidates(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], tuple]:
        """Candidate updates of all rows (restarts x victims): list of (R, *param_shape), BN stats (R, C).

        "vmap": one vectorised pass (rows folded into the batch: fast on a GPU); "loop": row by row
        (on a CPU thread vmap's per-row parameter gradients cost more than R separate passes)."""
        if x.dim() != 5 or x.shape[1] != self.batch_size or x.shape[0] % self.victims:
            raise ValueError(f"x must be (R, {self.batch_size}, C, H, W) with R a multiple of {self.victims} victims, "
                             f"got {tuple(x.shape)}")
        # labels shared by all rows (B,), or one row per candidate: class ids (R, B) or soft labels (R, B, K)
        y_dim = 0 if y.dim() == 3 or (y.dim() == 2 and not y.is_floating_point()) else None
        if self.batching == "vmap":
            return torch.func.vmap(self._one_restart, in_dims=(0, y_dim), randomness="different")(x, y)
        rows = [self._one_restart(x[r], y[r] if y_dim == 0 else y) for r in range(x.shape[0])]
        cand = [torch.stack(layer) for layer in zip(*(row[0] for row in rows))]
        stats = tuple((torch.stack(means), torch.stack(variances))
                      for means, variances in (zip(*layer) for layer in zip(*(row[1] for row in rows))))
        return cand, stats

    def _row_distances(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """"loop": each row's distance right after its candidate (no stacked copy of R parameter-sized gradients)."""
        y_dim = 0 if y.dim() == 3 or (y.dim() == 2 and not y.is_floating_point()) else None
        per_victim = x.shape[0] // self.victims
        distances, stats = [], []
        for r in range(x.shape[0]):
            cand, row_stats = self._one_restart(x[r], y[r] if y_dim == 0 else y)
            v = r // per_victim
            target = self.target if self.victims == 1 else [t[v] for t in self.target]
            norms = self.target_norms if self.victims == 1 else [n[v] for n in self.target_norms]
            distances.append(self.distance_fn([c.unsqueeze(0) for c in cand], target, self.weights, norms))
            stats.append(row_stats)
        stacked = tuple((torch.stack([s[i][0] for s in stats]), torch.stack([s[i][1] for s in stats]))
                        for i in range(len(stats[0])))
        return torch.cat(distances), stacked

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(optimised loss, gradient distance), each (R,)."""
        if self.batching == "loop":
            if x.dim() != 5 or x.shape[1] != self.batch_size or x.shape[0] % self.victims:
                raise ValueError(f"x must be (R, {self.batch_size}, C, H, W) with R a multiple of {self.victims} "
                                 f"victims, got {tuple(x.shape)}")
            distance, stats = self._row_distances(x, y)
        else:
            cand, stats = self.candidates(x, y)
            distance = self.distance_fn(cand, self.target, self.weights, self.target_norms)
        total = distance * self.cfg.objective_scale if self.cfg.objective_scale != 1.0 else distance
        if self.cfg.tv:
            total = total + self.cfg.tv * total_variation(x)
        if self.cfg.l2:
            total = total + self.cfg.l2 * l2_norm(x)
        if self.cfg.bn:
            target = self.bn_target
            if self.victims > 1:
                rows = x.shape[0] // self.victims
                target = [(m.repeat_interleave(rows, 0), v.repeat_interleave(rows, 0)) for m, v in target]
            total = total + self.cfg.bn * bn_statistics(stats, target)
        return total, distance


# ---------------------------------------------------------------------- labels
def _resolve_labels(obs: Observation, cfg: GIAConfig, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """Hard labels (B,) for "known"/"infer"; None for "joint"."""
    if cfg.labels == "known":
        if obs.labels is None:
            raise ValueError(
                "GIAConfig.labels='known' but the threat model does not grant the victim's labels "
                "(attack.threat.labels); use labels='infer' or 'joint'"
            )
        labels = obs.labels.detach().reshape(-1).to(device, torch.long)
    elif cfg.labels == "infer":
        try:
            from fl_privacy.attacks.gia.labels import infer_labels
        except ImportError as exc:  # pragma: no cover - the module ships with the package
            raise ImportError("labels='infer' needs fl_privacy.attacks.gia.labels") from exc
        labels = torch.as_tensor(infer_labels(obs, batch_size, cfg.label_method)).reshape(-1).to(device, torch.long)
    else:
        return None
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} labels for a batch of {batch_size}")
    return labels


def _initial_images(cfg: GIAConfig, shape: tuple[int, ...], box: tuple[torch.Tensor, torch.Tensor],
                    gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Drawn on the CPU from the seeded generator (same start on every device)."""
    if cfg.init == "randn":
        return torch.randn(shape, generator=gen, dtype=dtype)
    if cfg.init == "uniform":
        lo, hi = (b.cpu().to(dtype).unsqueeze(0) for b in box)
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _scheduler(opt: torch.optim.Optimizer, cfg: GIAConfig):
    if cfg.lr_schedule == "steps":
        n = cfg.iterations
        milestones = [int(n * 3 / 8), int(n * 5 / 8), int(n * 7 / 8)]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations)
    return None


def _logged_iterations(cfg: GIAConfig) -> list[int]:
    every = cfg.log_every or max(1, math.ceil(cfg.iterations / 100))
    its = list(range(0, cfg.iterations, every))
    if its[-1] != cfg.iterations - 1:
        its.append(cfg.iterations - 1)
    return its


def _log_step(it: int, total: torch.Tensor, trace: torch.Tensor, slot: dict[int, int], bar, iterations: int) -> None:  # noqa: ANN001
    """One optimiser step's trace entry (on logged iterations) and progress-bar tick; ``total`` detached."""
    if it in slot:
        trace[slot[it]] = total.to(trace.dtype)
    if bar is not None:
        bar.update(1)
        if it % 100 == 0 or it == iterations - 1:
            bar.set_postfix(objective=f"{float(total.min()):.4g}")


# ---------------------------------------------------------------------- the attack
def reconstruct(obs: Observation, cfg: GIAConfig, device: torch.device | str | None = None,
                progress: bool = False) -> GIAResult:
    """Reconstruct the client's batch from ``obs`` with ``cfg``; return the best restart."""
    return reconstruct_victims([obs], cfg, device, progress)[0]


def reconstruct_victims(observations: Sequence[Observation], cfg: GIAConfig,
                        device: torch.device | str | None = None, progress: bool = False) -> list[GIAResult]:
    """Attack several victims of one global model at once; one result per victim, in order.

    Adam: all restarts of all victims run as one batch through the model (Adam is element-wise and
    the loss a sum of independent terms, one per restart and victim, so every one of them gets the
    result it would get alone). L-BFGS: its line search and curvature history would couple problems
    stacked into one (one diverging restart drags the others), so each restart of each victim is its
    own L-BFGS run (seed ``cfg.seed + r``), one after another.
    """
    if not observations:
        return []
    if cfg.optimizer == "lbfgs" and (cfg.restarts > 1 or len(observations) > 1):
        return [_independent_restarts(obs, cfg, device, progress) for obs in observations]
    device = torch.device(device) if device is not None else default_device()
    problem = GIAProblem(observations, cfg, device)
    V, R, B = len(observations), cfg.restarts, problem.batch_size
    obs = observations[0]
    lo, hi = obs.pixel_box(device)
    lo, hi = lo.to(problem.dtype).unsqueeze(0), hi.to(problem.dtype).unsqueeze(0)  # (1, 1, C, 1, 1)
    x_parts, logit_parts, hard_parts = [], [], []
    for victim in observations:  # each victim starts exactly where it would start alone
        gen = torch.Generator().manual_seed(cfg.seed)
        x_parts.append(_initial_images(cfg, (R, B, *obs.image_shape), (lo[0], hi[0]), gen, problem.dtype))
        hard_parts.append(_resolve_labels(victim, cfg, B, device))
        if hard_parts[-1] is None:
            logit_parts.append(torch.randn((R, B, obs.num_classes), generator=gen, dtype=problem.dtype))
    x = torch.cat(x_parts).to(device).requires_grad_(True)  # (V * R, B, C, H, W), victim-major
    hard = None if hard_parts[0] is None else torch.stack(hard_parts).repeat_interleave(R, 0)  # (V * R, B)
    logits = None
    variables = [x]
    if hard is None:
        logits = torch.cat(logit_parts).to(device).requires_grad_(True)
        variables.append(logits)

    def labels_of(logit_values: torch.Tensor | None) -> torch.Tensor:
        return hard if logit_values is None else torch.softmax(logit_values, dim=-1)

    graphed = cfg.cuda_graph and device.type == "cuda" and cfg.optimizer == "adam"
    lr_now = torch.tensor(cfg.lr, device=device) if graphed else None  # the graph reads the lr from here
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(variables, lr=lr_now if graphed else cfg.lr, capturable=graphed)
    else:
        opt = torch.optim.LBFGS(variables, lr=cfg.lr)
    # with a graph, the schedule runs on a stand-in optimiser and its lr is copied into ``lr_now``
    scheduler = _scheduler(torch.optim.SGD([torch.zeros(1)], lr=cfg.lr) if graphed else opt, cfg)
    logged = _logged_iterations(cfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), V * R), float("nan"), device=device)
    tracker = BestIterate(variables, cfg.early_stop_window, cfg.early_stop_tol)
    notes = list(problem.notes)
    if problem.update_model == "known_schedule" and cfg.labels == "infer":
        notes.append("inferred labels are a multiset; their assignment to schedule positions is arbitrary")
    if V > 1:
        notes.append(f"optimised together with {V - 1} other victim(s) of the same global model")
    if cfg.cuda_graph and not graphed:
        notes.append("cuda_graph needs Adam on a CUDA device: ran without a CUDA graph")
    bar = None
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=cfg.iterations, desc="GIA", leave=False)

    evaluations: list[torch.Tensor] = []  # the optimised loss at each evaluation of this iteration

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=not graphed)
        total, _ = problem.evaluate(x, labels_of(logits))
        loss = total.sum()
        loss.backward()
        evaluations.append(total.detach())
        return loss

    counter = torch.zeros((), dtype=torch.long, device=device)  # the iteration, on the device (graph-safe)

    def iteration() -> torch.Tensor:
        """One optimiser step with its bookkeeping; only in-place updates of state (CUDA-graph capturable)."""
        before = [v.detach().clone() for v in variables]
        evaluations.clear()
        if cfg.optimizer == "adam":
            closure()
            if cfg.signed:
                x.grad.sign_()
            opt.step()
        else:
            opt.step(closure)  # L-BFGS: its first evaluation is at ``before``, then its line search moves on
        tracker.update(counter, before, evaluations[0])
        if cfg.boxed:
            with torch.no_grad():
                x.clamp_(min=lo, max=hi)
        tracker.freeze(variables, before)
        counter.add_(1)
        return evaluations[-1]

    start = time.perf_counter()
    steps, replay = 0, None
    for it in range(cfg.iterations):
        if graphed:
            lr_now.fill_(scheduler.optimizer.param_groups[0]["lr"] if scheduler is not None else cfg.lr)
            if replay is None and it == _GRAPH_WARMUP:
                replay = _capture(iteration)
        total = replay() if replay is not None else _warm(iteration, graphed)
        if scheduler is not None:
            if graphed:
                scheduler.optimizer.step()  # the stand-in (no gradients: a no-op), so the scheduler keeps count
            scheduler.step()
        _log_step(it, total, trace, slot, bar, cfg.iterations)
        steps = it + 1
        if tracker.all_done(it):
            break
    if bar is not None:
        bar.close()

    final = tracker.best if cfg.return_iterate == "best" else [v.detach() for v in variables]
    with torch.no_grad():
        _, distance = problem.evaluate(final[0], labels_of(final[1] if logits is not None else None))
    seconds = time.perf_counter() - start
    used = tracker.used.cpu().tolist()
    if cfg.early_stop_window and steps < cfg.iterations:
        notes.append(f"early stopping: all restarts stopped by iteration {steps} of {cfg.iterations}")
    trace_np = np.column_stack([np.asarray(logged, dtype=np.float64), trace.cpu().double().numpy()])
    results = []
    for v in range(V):
        rows = slice(v * R, (v + 1) * R)
        victim_notes = list(notes)
        finals, best = pick_best_restart(distance[rows], victim_notes)
        row = v * R + best
        soft = None
        if logits is None:
            labels = hard[row].detach().cpu()
        else:
            soft = torch.softmax(final[1][row].detach(), dim=-1).cpu()
            labels = soft.argmax(dim=-1)
        results.append(GIAResult(
            images=final[0][row].detach().cpu(), labels=labels, objective=float(finals[best]),
            restart_objectives=[float(f) for f in finals],
            trace=np.column_stack([trace_np[:, 0], trace_np[:, 1 + v * R:1 + (v + 1) * R]]),
            iterations=cfg.iterations, seconds=seconds, seconds_per_iteration=seconds / max(steps, 1),
            objective_used=problem.objective, update_model=problem.update_model, best_restart=best,
            soft_labels=soft, notes=victim_notes, iterations_used=int(used[row]),
        ))
    return results


_GRAPH_WARMUP = 3
"""Eager iterations (on a side stream) before a CUDA graph of the iteration is captured."""


def _warm(iteration, graphed: bool) -> torch.Tensor:  # noqa: ANN001
    """One eager iteration; before a capture, on a side stream as CUDA graphs require."""
    if not graphed:
        return iteration()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        total = iteration()
    torch.cuda.current_stream().wait_stream(side)
    return total


def _capture(iteration):  # noqa: ANN001, ANN202
    """Capture one iteration as a CUDA graph; returns a function that replays it and gives its loss."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_total = iteration()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_total

    return replay


def _independent_restarts(obs: Observation, cfg: GIAConfig, device: torch.device | str | None,
                          progress: bool) -> GIAResult:
    """R single-restart runs (different seeds); the best by final gradient distance wins."""
    runs = [reconstruct(obs, replace(cfg, restarts=1, seed=cfg.seed + r), device, progress)
            for r in range(cfg.restarts)]
    finals = [run.objective for run in runs]
    best = int(np.argmin(np.nan_to_num(np.asarray(finals, dtype=np.float64), nan=np.inf)))
    seconds = sum(run.seconds for run in runs)
    trace = np.column_stack([runs[0].trace[:, 0]] + [run.trace[:, 1] for run in runs])
    notes = [n for run in runs for n in run.notes]
    return replace(runs[best], restart_objectives=finals, trace=trace, seconds=seconds,
                   seconds_per_iteration=seconds / cfg.iterations, best_restart=best,
                   notes=sorted(set(notes)) + ["L-BFGS restarts ran one after another (independent line searches)"])
