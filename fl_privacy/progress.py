"""Progress that reads well in a terminal and in a log file.

``progress_bar`` is tqdm on a terminal; when stderr is not a terminal (a log file,
CI, ``nohup``) it prints one plain line every ``LOG_INTERVAL`` seconds instead of
carriage-return redraws that pile up into one huge line. ``RoundProgress`` prints
one line per federated round (clients done/failed, accuracy, attack result, ETA)
and, inside long rounds, how many clients have answered.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOG_INTERVAL = 30.0
"""Seconds between progress lines when the output is not a terminal."""


class _Lines:
    """A file for tqdm that turns each redraw into its own line (no ``\\r``, no blank clears)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.out.write(text + "\n")

    def flush(self) -> None:
        self.out.flush()


def progress_bar(total: float | None = None, desc: str = "", **kwargs: Any):
    """A tqdm bar, or periodic plain lines when stderr is not a terminal."""
    from tqdm.auto import tqdm

    if not _is_terminal(sys.stderr):
        kwargs = {"file": _Lines(sys.stderr), "mininterval": LOG_INTERVAL, "maxinterval": LOG_INTERVAL,
                  "ascii": True, "ncols": 100, **kwargs}
    return tqdm(total=total, desc=desc, **kwargs)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class RoundProgress:
    """One line per round of a federation, and throttled lines while a round's clients answer."""

    def __init__(self, rounds: int, write: Callable[[str], None] | None = None, interval: float | None = None) -> None:
        self.rounds = rounds
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.interval = interval if interval is not None else (10.0 if _is_terminal(sys.stderr) else LOG_INTERVAL)
        self.started = time.time()
        self.first = 0
        self._last = 0.0

    def resumed_at(self, finished: int) -> None:
        """A resumed run: ETA counts only the rounds run in this process."""
        self.first = finished
        self.write(f"resuming after round {finished}/{self.rounds}")

    def client_done(self, server_round: int, done: int, failed: int, planned: int) -> None:
        """Called for each reply; prints at most every ``interval`` seconds."""
        now = time.time()
        if now - self._last >= self.interval and done + failed < planned:
            self._last = now
            self.write(f"round {server_round}/{self.rounds}: {done}/{planned} clients done"
                       + (f", {failed} failed" if failed else ""))

    def round_done(self, record: dict[str, Any]) -> None:
        r = record["round"]
        elapsed = time.time() - self.started
        parts = [f"round {r}/{self.rounds}"]
        if r:
            failed = record.get("failures") or 0
            parts.append(f"clients {record.get('clients') or 0} done" + (f", {failed} failed "
                                                                            f"{record.get('failed_partitions')}"
                                                                            if failed else ""))
        if record.get("test_accuracy") is not None:
            parts.append(f"test acc {record['test_accuracy']:.4f}")
        if record.get("attack_psnr_mean") is not None:
            parts.append(f"attack PSNR {record['attack_psnr_mean']:.2f} dB, SSIM {record['attack_ssim_mean']:.3f}")
        failed_victims = [v["partition_id"] for v in record.get("victims", []) if v.get("failed")]
        if failed_victims:
            parts.append(f"victims {failed_victims} failed")
        if r:
            eta = elapsed / max(r - self.first, 1) * (self.rounds - r)
            parts.append(f"{elapsed:.0f} s elapsed" + (f", ETA {eta:.0f} s" if r < self.rounds else ""))
        self.write(" | ".join(parts))
        self._last = time.time()
