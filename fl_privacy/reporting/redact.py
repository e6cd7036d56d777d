"""Keep credentials out of everything a run writes (environment.json, logs, reports).

Flower's Deployment Engine starts the ServerApp as ``flwr-serverapp ... --token <secret>``;
a run's recorded command line must not carry that token, nor any API key or password.
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "<redacted>"
_SECRET_WORDS = ("token", "key", "password", "passwd", "secret", "credential")
_FLAG_VALUE = re.compile(r"(--?[\w-]*(?:token|key|password|passwd|secret|credential)[\w-]*)(=|\s+)(\S+)", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"\b([\w.-]*(?:token|key|password|passwd|secret|credential)[\w.-]*)=(\S+)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """A flag or field whose name says it holds a credential (``--token``, ``api_key``, ``PASSWORD``...)."""
    lowered = name.lower().lstrip("-")
    return any(word in lowered for word in _SECRET_WORDS)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the value after (or in) every secret flag replaced by ``<redacted>``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
        elif arg.startswith("-") and "=" in arg and is_secret_name(arg.split("=", 1)[0]):
            out.append(arg.split("=", 1)[0] + "=" + HIDDEN)
        elif arg.startswith("-") and is_secret_name(arg):
            out.append(arg)
            hide_next = True
        else:
            out.append(redact_text(arg))
    return out


def redact_text(text: str) -> str:
    """Free text (a log line, a shell command): ``--token X``, ``--token=X`` and ``api_key=X`` lose their values."""
    text = _FLAG_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{HIDDEN}", text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={HIDDEN}", text)


def redact(value: Any) -> Any:
    """A JSON-like record with secret fields hidden and command lines cleaned, recursively."""
    if isinstance(value, dict):
        return {k: (HIDDEN if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return redact_argv(value) if all(isinstance(v, str) for v in value) else [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
