"""Attacks of the honest-but-curious server on the updates it records.

``attack.name`` selects a gradient-inversion preset (``fl_privacy.attacks.gia.presets``);
``none`` records victims' updates without attacking them.
"""

ATTACK_NAMES: tuple[str, ...] = ("none", "dlg", "idlg", "inverting_gradients", "see_through_gradients")
"""Kept import-light for config validation; a test checks it matches the presets."""
