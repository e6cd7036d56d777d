"""Errors every layer may raise: a leaf, so that attacks and defenses need not import the config."""


class ConfigError(ValueError):
    """A bad experiment config: the message names the key and the fix."""
