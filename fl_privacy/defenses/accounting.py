"""Parameter checks shared by the defenses.

Accounting lives in ``fl_privacy.dp.accounting`` (the epsilon of the mechanism that runs:
local, central or sample-level, with its relation and sampling explicit).

Parameter checks
----------------
The ``check_*`` helpers validate constructor parameters of every defense in this package
and raise ``ValueError`` naming the defense, the parameter and its allowed range. (They
live here because this module has no dependency on the other defense modules.)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_bool", "check_int", "check_number"]


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
