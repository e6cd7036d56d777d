"""Progress of runs spread over Ray workers: one line per finished point with an ETA from the throughput so far."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fl_privacy.experiments.spec.model import Unit


@dataclass
class Outcome:
    """What a worker sends back for one cell (a run, or victims attacked together): its rows, or its error."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    trace: str = ""


class Progress:
    """One line per finished point: its id, its runs' seconds, points left and an ETA from the throughput so far."""

    def __init__(self, todo: list[Unit], stream: Any) -> None:
        self.stream = stream
        self.started = time.time()
        self.left: dict[str, int] = {}
        for unit in todo:
            self.left[unit.point.point_id] = self.left.get(unit.point.point_id, 0) + 1
        self.points_total = len(self.left)
        self.runs_total, self.runs_done = len(todo), 0
        self.seconds: dict[str, float] = {}
        self.failed: dict[str, int] = {}

    def finished(self, cell: list[Unit], outcome: Outcome) -> bool:
        """Count a cell's runs (one point's: one run, or victims attacked together); print and return True when
        they were their point's last ones."""
        unit = cell[0]
        pid = unit.point.point_id
        self.runs_done += len(cell)
        self.seconds[pid] = self.seconds.get(pid, 0.0) + outcome.seconds
        self.failed[pid] = self.failed.get(pid, 0) + (len(cell) if outcome.error is not None else 0)
        self.left[pid] -= len(cell)
        if self.left[pid]:
            return False
        elapsed = time.time() - self.started
        points_left = sum(1 for n in self.left.values() if n)
        eta = elapsed / self.runs_done * (self.runs_total - self.runs_done)
        failed = f", {self.failed[pid]} FAILED" if self.failed[pid] else ""
        print(f"  [{self.points_total - points_left}/{self.points_total}] point {pid} ({unit.point.label()}): "
              f"{self.seconds[pid]:.1f} s{failed}; {points_left} point(s) left, ETA {_clock(eta)}, "
              f"elapsed {_clock(elapsed)}", file=self.stream, flush=True)
        return True


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
