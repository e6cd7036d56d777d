"""The privacy block of ``final.json`` / ``summary.md``: only what the mechanism that ran guarantees."""

from __future__ import annotations

from typing import Any

from fl_privacy.dp.accounting import RELATION_NAMES, gaussian_epsilon
from fl_privacy.dp.guarantee import (
    NOT_PROTECTED,
    PROTECTS,
    _problems,
    _steps_per_round,
    client_sampling,
    participations,
    release_policy,
    resolve,
)

_BUFFERS = {"withhold": "withheld (FedBN-style: the client sends the global buffers back)",
            "noise": "their change is clipped and noised with the update", "share": "sent raw"}


def _sampling(config: Any, name: str) -> tuple[str, float | None]:
    """(description, amplified rate or None) of the sampling the accountant gets."""
    if name == "local":
        return "none: the server sees who took part (no amplification against it)", None
    if name == "sample":
        return "none: shuffled mini-batches, each example once per epoch (no amplification)", None
    sampling, rate, count = client_sampling(config)
    n = config.federation.num_clients
    if sampling == "poisson":
        return f"poisson: each client with probability {rate:g} (amplified)", rate
    if sampling == "fixed_size":
        return f"fixed-size: {count} of {n} clients per round (accounted without amplification)", None
    return f"none: all {n} clients every round", None


def _composed(config: Any, name: str, records: list[dict[str, Any]] | None, rounds: int) -> tuple[int, str]:
    if name == "central":
        return rounds, f"{rounds} rounds (one noisy aggregate per round)"
    counts = participations(records or [])
    if counts:
        pid, most = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
        who = f"client {pid} took part in {most} of {rounds} rounds, the most of any client"
    else:
        most, who = rounds, f"every one of {rounds} rounds (worst case)"
    if name == "sample":
        steps = _steps_per_round(config)
        return most * steps, f"{most * steps} local steps per example ({who}; {steps} per round)"
    return most, f"{most} rounds ({who})"


def privacy_block(config: Any, records: list[dict[str, Any]] | None = None, rounds: int | None = None,
                  extra_problems: list[str] | None = None) -> dict[str, Any] | None:
    """Mechanism, unit, relation, sampling, sigma, clip, compositions, (epsilon, delta), whom it protects against."""
    mechanism = resolve(config)
    if mechanism is None:
        return None
    name = mechanism.name
    done = rounds if rounds is not None else max([r.get("round", 0) for r in records or []] or [config.federation.rounds])
    sampling, rate = _sampling(config, name)
    compositions, composed = _composed(config, name, records, done)
    buffers, metrics = release_policy(config)
    block: dict[str, Any] = {
        "mechanism": name, "unit": "sample" if name == "sample" else "client",
        "neighbouring_relation": RELATION_NAMES[mechanism.relation], "sampling": sampling,
        "noise_multiplier": mechanism.noise_multiplier, "clip": mechanism.clip,
        "compositions": compositions, "composed": composed, "delta": mechanism.delta,
        "protects_against": PROTECTS[name], "buffers": _BUFFERS[buffers], "metrics": metrics,
        "configured_in": mechanism.source, "accountant": "Opacus RDP (same numbers as Flower's RdpAccountant)",
    }
    if name in NOT_PROTECTED:
        block["does_not_protect_against"] = NOT_PROTECTED[name]
    problems = _problems(config, mechanism) + list(extra_problems or [])
    if problems:
        block.update(epsilon=None, guarantee="; ".join(problems))
        return block
    block["epsilon"] = gaussian_epsilon(mechanism.noise_multiplier, compositions, mechanism.delta,
                                        mechanism.relation, rate)
    block["guarantee"] = f"({block['epsilon']:.3f}, {mechanism.delta:g})-DP per {block['unit']}"
    return block


def summary_lines(block: dict[str, Any] | None) -> list[str]:
    """The block as summary.md lines."""
    if not block:
        return []
    lines = [f"- privacy: {block['guarantee']} ({block['mechanism']} mechanism)",
             f"  - unit: {block['unit']}; neighbouring relation: {block['neighbouring_relation']}; "
             f"sampling: {block['sampling']}",
             f"  - noise multiplier {block['noise_multiplier']:.4g}, clip {block['clip']:g}, composed over "
             f"{block['composed']}; accountant: {block['accountant']}",
             f"  - protects against: {block['protects_against']}"]
    if block.get("does_not_protect_against"):
        lines.append(f"  - does NOT protect against: {block['does_not_protect_against']}")
    lines.append(f"  - buffers: {block['buffers']}; per-client metrics: {block['metrics']}")
    return lines
