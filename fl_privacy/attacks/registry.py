"""The attack registry: ``attack.name`` in a config is a name registered here.

``register_attack(spec)`` adds an attack (a taken name is refused), ``get_attack(name)``
returns its ``AttackSpec``, ``create_attack_options(name, **overrides)`` its validated options.
The built-in attacks register themselves when ``fl_privacy.attacks`` is imported.
"""

from __future__ import annotations

from typing import Any

from fl_privacy.attacks.contract import AttackSpec, Family
from fl_privacy.errors import did_you_mean

NO_ATTACK = "none"
"""``attack.name: none`` records victims' updates without attacking them."""

_ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Make ``spec`` available as ``attack.name: <spec.name>``; a name already taken is a ``ValueError``."""
    if not spec.name or spec.name == NO_ATTACK:
        raise ValueError(f"attack name {spec.name!r} is reserved or empty: choose another name")
    if spec.name in _ATTACKS:
        raise ValueError(f"attack '{spec.name}' is already registered ({_ATTACKS[spec.name].family}): "
                         "choose another name")
    _ATTACKS[spec.name] = spec
    return spec


def unregister_attack(name: str) -> None:
    """Remove a registered attack (tests that register toy attacks clean up with this)."""
    _ATTACKS.pop(name, None)


def get_attack(name: str) -> AttackSpec:
    """The registered attack ``name``; an unknown name is a ``ValueError`` with a suggestion and the choices."""
    if name not in _ATTACKS:
        names = attack_names()
        raise ValueError(f"unknown attack '{name}'{did_you_mean(name, names)} (available: {', '.join((NO_ATTACK, *names))})")
    return _ATTACKS[name]


def create_attack_options(name: str, **overrides: Any) -> Any:
    """The options of attack ``name`` with ``overrides`` applied (validated by the attack)."""
    return get_attack(name).options(**overrides)


def attack_names(family: Family | None = None) -> tuple[str, ...]:
    """Registered attack names (of one ``family`` if given), in registration order; ``none`` is not one."""
    return tuple(n for n, s in _ATTACKS.items() if family is None or s.family == family)


def is_attack(name: str) -> bool:
    """True for a registered attack or ``none``."""
    return name == NO_ATTACK or name in _ATTACKS


def family_of(name: str) -> Family | None:
    """The family of attack ``name``; None for ``none`` and unknown names."""
    spec = _ATTACKS.get(name)
    return None if spec is None else spec.family


def needs_generator(name: str) -> bool:
    """True when attack ``name`` searches a generator's latent space (``none`` and unknown names: False)."""
    spec = _ATTACKS.get(name)
    return spec is not None and spec.needs_generator
