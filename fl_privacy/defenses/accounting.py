"""Privacy accounting glue (Opacus' RDP accountant) and parameter checks shared by the defenses.

Accounting
----------
Client-level DP-FedAvg (McMahan et al. 2018, "Learning differentially private recurrent
language models", cited as [81] in the SoK §6) is a sub-sampled Gaussian
mechanism: each round a fraction ``q`` of the clients is sampled, each clips its whole
update to L2 norm ``C`` and Gaussian noise of standard deviation ``sigma * C`` is added,
for ``T`` rounds. Its (epsilon, delta) is what the moments/RDP accountant of DP-SGD gives
for noise multiplier ``sigma``, sample rate ``q`` and ``T`` steps. We never account by
hand: both directions go through Opacus (``opacus.accountants.analysis.rdp`` for epsilon,
``opacus.accountants.utils.get_noise_multiplier`` for the inverse), with Opacus' default
RDP orders.

Check value (``shared/docs/REFERENCES.md``, "Defenses"): q = 256/60000, sigma = 1.1,
14062 steps, delta = 1e-5 gives epsilon ~= 2.60.

Parameter checks
----------------
The ``check_*`` helpers validate constructor parameters of every defense in this package
and raise ``ValueError`` naming the defense, the parameter and its allowed range. (They
live here because this module has no dependency on the other defense modules.)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

__all__ = ["check_bool", "check_int", "check_number", "epsilon_for", "noise_multiplier_for"]


# ----------------------------------------------------------------------------- checks


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if (low is None or low_open) else "["
    right = ")" if (high is None or high_open) else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the given interval, else ``ValueError`` naming ``owner.name``."""
    allowed = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        # ValueError, not TypeError: config errors are reported uniformly as ValueError
        raise ValueError(f"{owner}: parameter '{name}' must be a number in {allowed}, got {value!r}")  # noqa: TRY004
    number = float(value)
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise ValueError(f"{owner}: parameter '{name}' must be a number in {allowed}, got {value!r}")
    return number


def check_int(owner: str, name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (integral floats accepted), else ``ValueError``."""
    allowed = f"an integer in {_interval(low, high, False, False)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not (math.isfinite(value) and value.is_integer())
    ):
        raise ValueError(f"{owner}: parameter '{name}' must be {allowed}, got {value!r}")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{owner}: parameter '{name}' must be {allowed}, got {value!r}")
    return number


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is a real bool (``true``/``false`` in YAML), else ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: parameter '{name}' must be true or false, got {value!r}")  # noqa: TRY004
    return value


def _check_accounting(sample_rate: Any, steps: Any, delta: Any) -> tuple[float, int, float]:
    q = check_number("accounting", "sample_rate", sample_rate, low=0.0, high=1.0, low_open=True)
    t = check_int("accounting", "steps", steps, low=1)
    d = check_number("accounting", "delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    return q, t, d


# ------------------------------------------------------------------------- accounting


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` sub-sampled Gaussian steps (Opacus RDP accountant, default orders).

    ``noise_multiplier`` = noise std / clipping norm; ``sample_rate`` = the Poisson sampling
    probability (clients per round / total clients for client-level DP-FedAvg);
    ``steps`` = rounds. ``noise_multiplier == 0`` means no privacy: ``inf``.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    sigma = check_number("accounting", "noise_multiplier", noise_multiplier, low=0.0)
    q, t, d = _check_accounting(sample_rate, steps, delta)
    if sigma == 0.0:
        return math.inf
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=t, orders=orders)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=d)
    return float(epsilon)


def noise_multiplier_for(
    epsilon: float, delta: float, sample_rate: float, steps: int, *, epsilon_tolerance: float = 0.01
) -> float:
    """Smallest noise multiplier (Opacus' binary search) whose epsilon is within ``epsilon_tolerance`` below ``epsilon``."""
    from opacus.accountants.utils import get_noise_multiplier

    eps = check_number("accounting", "epsilon", epsilon, low=0.0, low_open=True)
    q, t, d = _check_accounting(sample_rate, steps, delta)
    tol = check_number("accounting", "epsilon_tolerance", epsilon_tolerance, low=0.0, low_open=True)
    with warnings.catch_warnings():
        # The search visits very large sigmas whose optimal RDP order is the largest one; the
        # warning Opacus emits for those intermediate points says nothing about the answer.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        sigma = get_noise_multiplier(
            target_epsilon=eps, target_delta=d, sample_rate=q, steps=t, accountant="rdp", epsilon_tolerance=tol
        )
    return float(sigma)
