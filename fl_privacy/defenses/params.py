"""Typed defense parameters: one pydantic model per defense, strict, unknown names refused.

``validate_params`` turns pydantic's errors into one ``ValueError`` that names the
defense, the parameter, the bad value and what is accepted (with a suggestion for
misspelt names), the same quality as every other config error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fl_privacy.errors import did_you_mean


class DefenseParams(BaseModel):
    """Base of every defense's ``Params``: strict types (no "1" for 1, no 1 for true), no unknown names."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _integral(value: Any) -> Any:
    """Integral floats count as integers (``rank: 4.0`` in YAML), as before the typed parameters."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_integral)]
"""An integer (integral floats accepted); bounds go in ``Field(ge=...)``."""
Number = Annotated[float, Field(allow_inf_nan=False)]
"""A finite real number (ints accepted, bools not)."""


def validate_params(owner: str, model: type[BaseModel], params: Mapping[str, Any]) -> Any:
    """``params`` as an instance of ``model``, else a ``ValueError`` naming ``owner`` and each bad parameter."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as err:
        raise ValueError(_describe(owner, model, err)) from None


def _describe(owner: str, model: type[BaseModel], err: ValidationError) -> str:
    allowed = list(model.model_fields)
    lines = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"]) or "parameters"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown parameter '{name}'{did_you_mean(name, allowed)} (parameters: {', '.join(allowed) or 'none'})")
        elif e["type"] == "missing":
            lines.append(f"parameter '{name}' is required")
        else:
            lines.append(f"parameter '{name}': {e['msg'].lower()}, got {e.get('input')!r}")
    return f"{owner}: " + "; ".join(lines)
