"""Empirical privacy audit: canary-based epsilon next to the claimed one (``fl-privacy audit-dp CONFIG``).

Client level (``local``, ``central``): the one-shot estimate of Andrew et al. (ICLR 2024, "One-shot
empirical privacy estimation for federated learning"). Canary clients each send a fixed random
unit direction (scaled to the clip) every round they are sampled, through the very code a run
uses (``release_update``: the client pipeline and the buffers policy; for ``central`` the
strategy's server step with its noise). The observer's view is accumulated over the rounds
(local: each canary's own replies, which the server sees; central: the released aggregate).
The cosine of that view with each canary's direction, against the cosine with directions
never inserted, is fitted by two Gaussians; the estimate is the epsilon at delta of the
Gaussian mechanism with that separation (mu = mean difference / pooled std, mu-GDP). Each part
of the reply (parameters, buffers) is scored separately and the larger estimate reported, so a
part that bypasses the noise shows on its own. The interval is a bootstrap over canaries.
The canaries replace the other clients' training (their updates would only add a term
orthogonal in expectation to the random directions).

Sample level (``sample``): one-run auditing of Steinke, Nasr and Jagielski (NeurIPS 2023,
"Privacy auditing with one (1) training run"), white-box gradient canaries: m canary
examples, each included with probability 1/2, contribute a random direction (clip norm) to
every DP-SGD step (``noisy_clipped_sum``, the step the client runs); the auditor guesses the
included/excluded canaries with the largest/smallest inner products with the summed noisy
steps, and the number of correct guesses gives an epsilon lower bound at the stated confidence
(their binomial tail bound; delta enters as an additive m * delta slack, a conservative choice).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import stats

from fl_privacy.dp.accounting import gaussian_epsilon
from fl_privacy.dp.guarantee import client_sampling, resolve


def gdp_epsilon(mu: float, delta: float) -> float:
    """Epsilon at ``delta`` of mu-GDP (Dong, Roth, Su 2022, Cor. 2.13), by bisection; inf for mu = inf."""
    if not mu > 0:
        return 0.0
    if math.isinf(mu):
        return math.inf

    def delta_of(eps: float) -> float:
        return float(stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps + stats.norm.logcdf(-eps / mu - mu / 2)))

    low, high = 0.0, 1.0
    while delta_of(high) > delta:
        high *= 2
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if delta_of(mid) > delta else (low, mid)
    return high


def gaussian_fit_epsilon(canary: np.ndarray, null: np.ndarray, delta: float) -> float:
    """Andrew et al.'s estimate: both cosine samples as Gaussians, epsilon of their separation at ``delta``."""
    pooled = math.sqrt((canary.var() + null.var()) / 2)
    gap = float(canary.mean() - null.mean())
    if pooled == 0.0:
        return math.inf if gap > 0 else 0.0
    return gdp_epsilon(gap / pooled, delta)


def _bootstrap(canary: np.ndarray, null: np.ndarray, delta: float, confidence: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    draws = [gaussian_fit_epsilon(rng.choice(canary, len(canary)), rng.choice(null, len(null)), delta)
             for _ in range(200)]
    tail = (1 - confidence) / 2
    return [float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))]


def steinke_lower_bound(correct: int, guesses: int, canaries: int, delta: float, confidence: float) -> float:
    """Largest epsilon rejected at ``confidence``: P[Binomial(guesses, e^eps/(1+e^eps)) >= correct] + m delta < 1 - conf."""
    beta = 1 - confidence

    def tail(eps: float) -> float:
        p = 1 / (1 + math.exp(-eps))
        return float(stats.binom.sf(correct - 1, guesses, p)) + canaries * delta

    if tail(0.0) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while tail(high) < beta and high < 100:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) < beta else (low, mid)
    return low


# ---------------------------------------------------------------------------- client level


def _unit_directions(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    d = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True)


def _cosines(views: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    norms = views.norm(dim=1).clamp_min(1e-300)
    return ((views * directions).sum(1) / norms).numpy()


def _client_level(config: Any, model: torch.nn.Module, canaries: int, rounds: int, seed: int) -> dict[str, Any]:
    from fl_privacy.defenses import DefenseContext
    from fl_privacy.dp.release import client_pipeline, release_update
    from fl_privacy.federation.aggregation import WeightedMean
    from fl_privacy.federation.sampling import sample_clients
    from fl_privacy.federation.server_update import ServerUpdate

    mechanism = resolve(config)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [k for k, _ in model.named_parameters()]
    floats = [k for k, v in global_state.items() if v.is_floating_point()]
    sizes = [global_state[k].numel() for k in floats]
    fedsgd = config.training.algorithm == "fedsgd"
    kind = "gradient" if fedsgd else "weights"
    generator = torch.Generator().manual_seed(seed)
    used, unused = (_unit_directions(canaries, sum(sizes), generator) for _ in range(2))

    def split(vector: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(mechanism.clip * vector, sizes)
        return {k: p.reshape(global_state[k].shape).to(global_state[k].dtype) for k, p in zip(floats, parts)}

    def flat(sent: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(sent[k] - (0 if (fedsgd and k in params) else global_state[k])).double().flatten()
                          for k in floats])

    pipeline = client_pipeline(config)
    population = config.model_copy(update={"federation": config.federation.model_copy(update={"num_clients": canaries})})
    central = mechanism.name == "central"
    views = torch.zeros(canaries if not central else 1, sum(sizes), dtype=torch.float64)
    server = ServerUpdate(population, params) if central else None
    for server_round in range(1, rounds + 1):
        chosen = sample_clients(population, server_round) if central else range(canaries)
        mean = WeightedMean()
        for i in chosen:
            canary = split(used[i])
            update = {k: canary[k] for k in params}
            buffers = {k: global_state[k] + canary[k] if k in canary else global_state[k]
                       for k, _ in model.named_buffers()}
            context = DefenseContext(kind="gradient" if fedsgd else "delta",
                                     generator=torch.Generator().manual_seed(seed + 7919 * server_round + i))
            sent, _ = release_update(population, pipeline, update, buffers, global_state, kind, lambda c=context: c)
            if central:
                mean.add(sent, 1.0)
            else:
                views[i] += flat(sent)
        if central:
            released = server.server_step(global_state, mean.result() if chosen else dict(global_state),
                                          len(chosen), server_round)
            views[0] += flat(released)
    if central:
        views = views.expand(canaries, -1)
    return _score_parts(views, used, unused, floats, params, sizes, mechanism.delta)


def _score_parts(views: torch.Tensor, used: torch.Tensor, unused: torch.Tensor, floats: list[str],
                 params: list[str], sizes: list[int], delta: float) -> dict[str, Any]:
    """Andrew et al.'s estimate on each part of the reply (parameters, buffers); the larger one is reported."""
    parts = {"parameters": [i for i, k in enumerate(floats) if k in params],
             "buffers": [i for i, k in enumerate(floats) if k not in params]}
    bounds = np.cumsum([0, *sizes])
    best: dict[str, Any] = {}
    for part, members in parts.items():
        if not members:
            continue
        cols = torch.cat([torch.arange(bounds[i], bounds[i + 1]) for i in members])
        canary_cos = _cosines(views[:, cols], used[:, cols])
        null_cos = _cosines(views[:, cols], unused[:, cols])
        estimate = gaussian_fit_epsilon(canary_cos, null_cos, delta)
        if not best or estimate > best["empirical_epsilon"]:
            best = {"empirical_epsilon": estimate, "part": part, "canary_cosine_mean": float(canary_cos.mean()),
                    "null_cosine_mean": float(null_cos.mean()), "null_cosine_std": float(null_cos.std()),
                    "cosines": (canary_cos, null_cos)}
    return best


# ---------------------------------------------------------------------------- sample level


def _sample_level(config: Any, dim: int, canaries: int, steps: int, seed: int) -> dict[str, Any]:
    from fl_privacy.dp.release import noisy_clipped_sum

    mechanism = resolve(config)
    generator = torch.Generator().manual_seed(seed)
    directions = _unit_directions(canaries, dim, generator).float()
    included = torch.rand(canaries, generator=generator) < 0.5
    per_example = {"g": mechanism.clip * directions[included]}
    total = torch.zeros(dim)
    for _ in range(steps):
        total += noisy_clipped_sum(per_example, mechanism.clip, mechanism.noise_multiplier, generator)["g"]
    scores = (directions @ total).numpy()
    order = np.argsort(scores)
    guesses = max(2, canaries // 10)  # top 5% guessed in, bottom 5% guessed out (fixed before the run)
    guessed_in, guessed_out = order[-(guesses // 2):], order[: guesses // 2]
    truth = included.numpy()
    correct = int(truth[guessed_in].sum() + (~truth[guessed_out]).sum())
    return {"correct": correct, "guesses": 2 * (guesses // 2), "included": int(truth.sum())}


def audit_dp(config: Any, model: torch.nn.Module, canaries: int = 200, rounds: int | None = None, seed: int = 0,
             confidence: float = 0.95) -> dict[str, Any]:
    """Empirical epsilon of the configured mechanism next to the epsilon claimed for the audited releases."""
    from fl_privacy.config import ConfigError
    from fl_privacy.dp.guarantee import _steps_per_round

    mechanism = resolve(config)
    if mechanism is None:
        raise ConfigError("audit-dp needs a DP mechanism: set privacy.mechanism (local, central or sample) "
                          "or a gaussian defense with clip and delta")
    rounds = rounds or config.federation.rounds
    out: dict[str, Any] = {"mechanism": mechanism.name, "noise_multiplier": mechanism.noise_multiplier,
                           "clip": mechanism.clip, "delta": mechanism.delta, "canaries": canaries,
                           "confidence": confidence, "seed": seed}
    if mechanism.name == "sample":
        steps = rounds * _steps_per_round(config)
        dim = sum(p.numel() for p in model.parameters())
        found = _sample_level(config, dim, canaries, steps, seed)
        lower = steinke_lower_bound(found["correct"], found["guesses"], canaries, mechanism.delta, confidence)
        claimed = gaussian_epsilon(mechanism.noise_multiplier, steps, mechanism.delta, mechanism.relation)
        out.update(method="Steinke, Nasr & Jagielski 2023 one-run audit (white-box gradient canaries)",
                   compositions=steps, claimed_epsilon=claimed, empirical_epsilon=lower,
                   empirical_kind=f"lower bound at {confidence:.0%} confidence", **found,
                   violation=bool(lower > claimed))
        return out
    found = _client_level(config, model, canaries, rounds, seed)
    canary_cos, null_cos = found.pop("cosines")
    interval = _bootstrap(canary_cos, null_cos, mechanism.delta, confidence, seed)
    if mechanism.name == "central":
        population = config.model_copy(update={"federation": config.federation.model_copy(
            update={"num_clients": canaries})})
        sampling, rate, _ = client_sampling(population)
        claimed = gaussian_epsilon(mechanism.noise_multiplier, rounds, mechanism.delta, mechanism.relation,
                                   rate if sampling == "poisson" else None)
    else:
        claimed = gaussian_epsilon(mechanism.noise_multiplier, rounds, mechanism.delta, mechanism.relation)
    out.update(method="Andrew et al. 2024 one-shot estimate (random-direction canary clients)", compositions=rounds,
               claimed_epsilon=claimed, empirical_kind=f"estimate, {confidence:.0%} bootstrap interval",
               interval=interval, **found, violation=bool(interval[0] > claimed))
    return out
