"""Epsilon of a composed (sub-sampled) Gaussian mechanism, with the relation and sampling explicit.

Vocabulary: Flower 1.42's client-level accounting (``flwr.serverapp.NeighboringRelation``:
add-or-remove-one / replace-one; ``SamplingMethod``: poisson / without-replacement /
no-amplification). Numbers: Opacus' RDP accountant (``opacus.accountants.analysis.rdp``,
default orders), which gives the same epsilon as Flower's ``RdpAccountant`` (Google's
``dp-accounting``) for the models both support; ``tests/test_dp_accounting.py`` checks
both against hand-checked values (q = 256/60000, sigma = 1.1, 14062 steps, delta = 1e-5 ->
epsilon ~= 2.60) and, when ``flwr[dp]`` is installed, against Flower's accountant.

Noise multiplier: ``sigma = noise std / clip``. Under add-or-remove one unit changes the
released sum by at most ``clip``; under replace-one by ``2 * clip``, so the accountant
gets ``sigma / 2`` (dp-accounting's convention: sigma relative to the relation's
sensitivity).

Sampling models supported (the rest is refused, never approximated):
* ``no-amplification``: every composed release is counted at full cost (any relation);
  this is the honest model when the adversary sees who took part (the server) or when
  clients are drawn as a fixed-size sample (no fixed-size amplification bound here).
* ``poisson`` with add-or-remove: sub-sampled Gaussian RDP (Mironov et al. 2019).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

Relation = Literal["add_or_remove", "replace_one"]
Sampling = Literal["poisson", "fixed_size", "none"]

RELATION_NAMES = {"add_or_remove": "add-or-remove-one", "replace_one": "replace-one"}
"""Flower's ``NeighboringRelation`` values."""


def sensitivity_factor(relation: Relation) -> float:
    """Sensitivity of a clipped sum in units of the clip: 1 (add/remove) or 2 (replace-one)."""
    if relation not in RELATION_NAMES:
        raise ValueError(f"neighbouring relation must be one of {sorted(RELATION_NAMES)}, got {relation!r}")
    return 1.0 if relation == "add_or_remove" else 2.0


def gaussian_epsilon(
    noise_multiplier: float, compositions: int, delta: float, relation: Relation = "add_or_remove",
    sample_rate: float | None = None,
) -> float:
    """Epsilon at ``delta`` of ``compositions`` Gaussian releases of a clipped sum.

    ``sample_rate`` None: no amplification; else Poisson sampling at that rate (add-or-remove only).
    ``compositions == 0`` (a unit never released) costs nothing; ``noise_multiplier == 0`` is ``inf``.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if compositions < 0 or noise_multiplier < 0:
        raise ValueError("compositions and noise_multiplier must be >= 0")
    if compositions == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    if sample_rate is not None and relation != "add_or_remove":
        raise ValueError("Poisson amplification is accounted under add-or-remove only "
                         "(Flower's accountant refuses poisson + replace-one as well)")
    q = 1.0 if sample_rate is None else float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    sigma = noise_multiplier / sensitivity_factor(relation)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=int(compositions), orders=orders)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


def noise_multiplier_for_target(
    epsilon: float, delta: float, compositions: int, relation: Relation = "add_or_remove",
    sample_rate: float | None = None, tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier whose epsilon is within ``tolerance`` below ``epsilon`` (bisection).

    Raises ``ValueError`` when even sigma = 1e4 cannot meet the target (unmeetable epsilon/delta).
    """
    if not epsilon > 0:
        raise ValueError(f"target epsilon must be > 0, got {epsilon!r}")
    def eps_of(sigma: float) -> float:
        return gaussian_epsilon(sigma, compositions, delta, relation, sample_rate)

    low, high = 0.0, 1.0
    while eps_of(high) > epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"epsilon {epsilon} at delta {delta} over {compositions} releases needs a noise "
                             "multiplier above 1e4: raise epsilon or delta, or compose fewer releases")
    while high - low > 1e-6 and eps_of(high) < epsilon - tolerance:
        mid = (low + high) / 2
        if eps_of(mid) > epsilon:
            low = mid
        else:
            high = mid
    return high
