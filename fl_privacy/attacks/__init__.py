"""Attacks of the honest-but-curious server on the updates it records.

``attack.name`` selects a gradient-inversion preset (``fl_privacy.attacks.gia.presets``);
``cocktail_party`` unmixes the first fully connected layer's gradient (Kariyappa et al. 2023);
``none`` records victims' updates without attacking them.
"""

GIA_O_NAMES: tuple[str, ...] = ("dlg", "idlg", "inverting_gradients", "see_through_gradients")
GIA_L_NAMES: tuple[str, ...] = ("ggl", "gias")
"""Latent-space attacks: they need ``attack.generator`` (a checkpoint from ``fl-privacy train-generator``)."""
FEDAVG_NAMES: tuple[str, ...] = ("dimitrov_fedavg",)
"""GIA-O on FedAvg updates with the batch order unknown (Dimitrov et al. 2022; ``gia.fedavg``)."""
AGGREGATE_NAMES: tuple[str, ...] = ("cocktail_party",)
"""Attacks that unmix a (securely) aggregated update rather than fit one: ``fl_privacy.attacks.cocktail_party``."""
ATTACK_NAMES: tuple[str, ...] = ("none", *GIA_O_NAMES, *GIA_L_NAMES, *FEDAVG_NAMES, *AGGREGATE_NAMES)
"""Kept import-light for config validation; a test checks it matches the presets."""
