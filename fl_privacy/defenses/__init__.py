"""Client-side defenses: post-processing of the shared update, composable in a pipeline."""

from fl_privacy.defenses.base import (
    DEFENSES,
    Defense,
    DefenseContext,
    DefensePipeline,
    build_pipeline,
    dense_bytes,
    register_defense,
)

__all__ = ["DEFENSES", "Defense", "DefenseContext", "DefensePipeline", "build_pipeline", "dense_bytes", "register_defense"]

from fl_privacy.defenses import clipping, noise, powersgd, quantization, sparsification  # noqa: F401, I001
from fl_privacy.defenses import graddefense, soteria  # noqa: F401
