"""Attacks of the honest-but-curious server on the updates it records.

Every attack is registered by name (``fl_privacy.attacks.registry``) behind one contract
(``fl_privacy.attacks.contract.AttackSpec``): gradient inversion presets
(``fl_privacy.attacks.gia``), latent-space and FedAvg attacks, and the Cocktail Party
Attack (``fl_privacy.attacks.cocktail_party``). ``attack.name: none`` records victims'
updates without attacking them.
"""

# the built-in attacks register themselves on import, gradient inversion first
from fl_privacy.attacks import gia  # noqa: F401, I001
from fl_privacy.attacks import cocktail_party  # noqa: F401
from fl_privacy.attacks.contract import AttackResult, AttackSpec
from fl_privacy.attacks.registry import (
    NO_ATTACK,
    attack_names,
    create_attack_options,
    family_of,
    get_attack,
    is_attack,
    needs_generator,
    register_attack,
    unregister_attack,
)

__all__ = [
    "NO_ATTACK", "AttackResult", "AttackSpec", "attack_names", "create_attack_options", "family_of", "get_attack", "is_attack",
    "needs_generator", "register_attack", "unregister_attack",
]
