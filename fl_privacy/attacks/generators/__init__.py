"""Generators for latent-space gradient inversion (GIA-L): a conditional DCGAN, its training
on the attacker's public auxiliary data, checkpoints, and the map into the attack space."""

from fl_privacy.attacks.generators.dcgan import Discriminator, Generator
from fl_privacy.attacks.generators.saved import (
    GeneratorCheckpoint,
    generator_from_checkpoint,
    load_generator,
    to_attack_space,
)
from fl_privacy.attacks.generators.train import DCGANSettings, train_dcgan

__all__ = [
    "DCGANSettings",
    "Discriminator",
    "Generator",
    "GeneratorCheckpoint",
    "generator_from_checkpoint",
    "load_generator",
    "to_attack_space",
    "train_dcgan",
]
