"""The GIA problem: candidate updates of candidate images, compared with the observed update.

All ``R`` rows (restarts x victims) go through the model in one pass,
``torch.func.vmap`` over rows of ``torch.func.grad`` of the loss w.r.t. the
parameters (or of the unrolled local SGD, ``unroll``), then one batched distance
(``objectives``) plus the image priors (``priors``); or row by row ("loop"), which
is faster on one CPU thread. The loss is a sum of independent terms, one per row,
so one backward gives every row its own gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from fl_privacy.attacks.gia.objectives import OBJECTIVES, layer_weights, target_norms
from fl_privacy.attacks.gia.options import GIAConfig
from fl_privacy.attacks.gia.priors import bn_statistics, l2_norm, total_variation
from fl_privacy.attacks.gia.problem_setup import (
    attack_batch_size,
    attacker_model,
    bn_prior_target,
    check_batchable,
    default_device,
    matched_parameters,
    update_model_of,
)
from fl_privacy.attacks.gia.unroll import unrolled_delta
from fl_privacy.attacks.threat import Observation
from fl_privacy.sgd import loss_fn

__all__ = ["GIAProblem"]


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
        self.update_model, self.schedule = update_model_of(obs, cfg)
        self.batch_size = attack_batch_size(obs, self.update_model)
        if self.schedule is not None:
            top = max(p for step in self.schedule.steps for p in step)
            if top >= self.batch_size:
                raise ValueError(f"the schedule uses position {top} but the update covers {self.batch_size} samples")
        self.model = model = attacker_model(obs, cfg, self.device)
        self.batching = cfg.batching if cfg.batching != "auto" else ("vmap" if self.device.type == "cuda" else "loop")
        self._load_state(obs, [n for n, _ in model.named_parameters()])
        self.names = matched_parameters(obs, list(self.params), tuple(getattr(cfg, "parameters", ()) or ()), self.notes)
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
        self._compiled = None  # ``cfg.compile``: the compiled ``evaluate``, made at the first loop iteration
        if cfg.bn > 0:
            self.bn_target = bn_prior_target(victims, len(self.bn_modules), self.device, self.dtype)
            for module in self.bn_modules:
                module.register_forward_hook(self._capture_hook)

    def _load_state(self, obs: Observation, all_names: list[str]) -> None:
        """The global parameters (every one of the model's) and the model's buffers, on the device."""
        missing = [n for n in all_names if n not in obs.global_params]
        if missing:
            raise ValueError(f"obs.global_params lacks parameters of the model: {missing[:5]}")
        self.params = {n: obs.global_params[n].detach().to(self.device) for n in all_names}
        own_buffers = dict(self.model.named_buffers())
        self.buffers = {k: v.detach().to(self.device) for k, v in obs.global_buffers.items() if k in own_buffers}

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

    def loop_evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``evaluate`` for the optimisation loop: compiled with ``cfg.compile`` (eager again, with a note,
        if compiling fails: the first call is an eager warm-up iteration, before any CUDA graph capture)."""
        if not self.cfg.compile:
            return self.evaluate(x, y)
        if self._compiled is None:
            self._compiled = torch.compile(self.evaluate, dynamic=False)
            try:
                return self._compiled(x, y)
            except Exception as err:  # noqa: BLE001 - a compiler limitation: the attack runs eagerly
                self._compiled = self.evaluate
                self.notes.append(f"compile failed, ran eagerly: {type(err).__name__}: {str(err)[:200]}")
        return self._compiled(x, y)

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
