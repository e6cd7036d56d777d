"""Attacks of the honest-but-curious server on the updates it records."""

ATTACK_NAMES: tuple[str, ...] = ("none",)
"""Attack presets selectable by ``attack.name``; ``none`` records updates without attacking."""
