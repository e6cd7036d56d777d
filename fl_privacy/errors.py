"""Errors every layer may raise, and the one "did you mean" hint they share: a leaf, so that attacks and
defenses need not import the config."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "did_you_mean"]


class ConfigError(ValueError):
    """A bad experiment config: the message names the key and the fix."""


def did_you_mean(word: object, allowed: Iterable[object], prefix: str = "") -> str:
    """``"; did you mean '<prefix>x'?"`` when ``word`` is a likely typo of one of ``allowed``, else ``""``."""
    match = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""
