"""Failed and missing client replies of a round, as data: which partitions, why, how many timed out.

Flower hands the strategy error replies (a ClientApp raised) and drops replies that
arrive after ``federation.round_timeout``; both end up here, by partition id, so
the round's record, the log and ``summary.md`` can say who failed. An error reply
is attributed to the partition its train message asked for (not to its node: a
SuperNode may host several clients), so each failing client counts once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


def short_reason(reason: str) -> str:
    """The exception's own message from Flower's error text (no wrapper, no traceback)."""
    text = re.sub(r"^<class '[^']*'>:<'", "", reason.strip()).removesuffix("'>")
    text = text.split("Message: ", 1)[-1] if "ClientAppException occurred" in text else text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error")[:300]


class RunStopped(RuntimeError):
    """A client failed and ``federation.accept_failures`` is false: the run stopped after recording the round."""


@dataclass
class RoundFailures:
    """What went wrong in one round: error replies and partitions that never answered."""

    planned: list[int]
    """Partition ids that were sent a train message."""
    errors: dict[int | str, str] = field(default_factory=dict)
    """Partition id -> short reason (``node N`` only when the reply names no train message of the round)."""

    def add_error(self, partition: int | None, node: int, reason: str) -> str:
        key: int | str = partition if partition is not None else f"node {node}"
        self.errors[key] = short_reason(reason)
        return self.errors[key]

    def failed(self, succeeded: list[int]) -> list[int]:
        """Planned partitions without a usable reply (errors and timeouts)."""
        return sorted(set(self.planned) - set(succeeded))

    def record(self, succeeded: list[int]) -> dict[str, Any]:
        failed = self.failed(succeeded)
        return {"failures": len(failed), "failed_partitions": failed, "errors": len(self.errors),
                "timeouts": max(len(failed) - len(self.errors), 0),
                "failure_reasons": {str(k): v for k, v in self.errors.items()}}

    def reason(self, partition: int) -> str:
        return self.errors.get(partition) or "no reply within federation.round_timeout"
