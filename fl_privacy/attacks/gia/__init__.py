"""Gradient inversion attacks in pixel space (GIA-O): one engine, pluggable parts, reference presets."""

from fl_privacy.attacks.gia.engine import GIAConfig, GIAResult, reconstruct
from fl_privacy.attacks.gia.presets import PRESETS, preset

__all__ = ["PRESETS", "GIAConfig", "GIAResult", "preset", "reconstruct"]
