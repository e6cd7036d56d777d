"""Shared pieces of the config sections: strict sections and the run-config value coercions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def int_list(value: Any) -> Any:
    """Accept ``[1, 2]``, ``"1,2"`` and ``1`` (run-config values cannot be lists)."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    if isinstance(value, int):
        return [value]
    return value


def none_if_empty(value: Any) -> Any:
    """Run-config values cannot be null: an empty string means 'not set'."""
    return None if value == "" else value


def choice_list(value: Any, choices: tuple[str, ...], what: str) -> Any:
    """A list of names (or one comma-separated string) that must all be in ``choices``."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in value if v not in choices]
    if bad:
        raise ValueError(f"unknown {what} {bad} (choices: {', '.join(choices)})")
    return value
