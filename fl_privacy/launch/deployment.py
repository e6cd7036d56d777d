"""Helpers for Flower's Deployment Engine (a real SuperLink and SuperNodes).

``flwr run . <connection> --stream`` exits 0 even when the ServerApp raised (Flower
prints "Exit Code: 201" among the streamed logs), so the ServerApp says it
plainly itself, in the log the user is reading.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from logging import ERROR
from typing import Any

from flwr.common import log

FAILED_BANNER = "fl-privacy: RUN FAILED"


def announce_failure(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ServerApp main: on any exception, log one unmistakable line naming it, then re-raise."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except BaseException as err:  # re-raised below
            log(ERROR, "%s: %s: %s. No final.json was written; `flwr run` may still exit 0, so check "
                "`flwr ls` (status finished:failed) or this message.", FAILED_BANNER, type(err).__name__, err)
            raise

    return wrapped
