"""An experiment's output directory: ``results.csv`` (appended row by row), ``experiment.yaml``, and its lock.

A directory takes only rows of the experiment that made it (same fingerprint), so a resumed
sweep never mixes results of different settings.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from fl_privacy.config import ConfigError
from fl_privacy.experiments.spec.model import Experiment
from fl_privacy.experiments.spec.names import show

RESULTS = "results.csv"
RESOLVED = "experiment.yaml"


def columns(experiment: Experiment) -> list[str]:
    """The header of results.csv: ids, the swept keys, seed, victim or round, the metrics, the run directory."""
    cols = ["row_id", "point_id", *experiment.axis_keys, "seed"]
    if experiment.mode == "attack":
        cols += ["victim", "victim_images"]
    if experiment.per_round:
        cols.append("round")
    return cols + list(experiment.metrics) + ["run_dir"]


def command(experiment: Experiment, root: Path) -> str:
    """The command that regenerates (or resumes) this experiment into ``root``."""
    parts = ["fl-privacy", "run", str(experiment.path), "--profile", experiment.profile]
    for key, value in experiment.cli_overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts += ["--set", f"{key}={text}"]
    parts += ["--out", str(root)]
    return " ".join(shlex.quote(p) for p in parts)


class ResultsFile:
    """``results.csv`` and ``experiment.yaml`` of one output directory; rows are appended, flushed, fsynced."""

    def __init__(self, root: Path, experiment: Experiment) -> None:
        self.root = root
        self.path = root / RESULTS
        self.experiment = experiment
        self.columns = columns(experiment)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def open(self) -> set[str]:
        """Check the directory may take this experiment's rows; write experiment.yaml; return finished row ids."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._repair()
        rows = self.read()
        resolved = self.experiment.resolved()
        previous_path = self.root / RESOLVED
        if rows:
            if not previous_path.exists():
                raise ConfigError(f"{self.path} exists without {RESOLVED}: cannot tell which experiment made these "
                                  f"rows; use another --out or move the directory away")
            previous = yaml.safe_load(previous_path.read_text()) or {}
            if previous.get("fingerprint") != resolved["fingerprint"]:
                keys = ("mode", "profile", "victims", "sweep", "seeds", "overrides", "base", "rows_per_round")
                changed = [k for k in keys if previous.get(k) != resolved[k]] or ["the resolved configs of the points"]
                raise ConfigError(
                    f"{self.root} holds results of a different experiment (changed: {', '.join(changed)}; "
                    f"see {previous_path}); results are not mixed: pass another --out, or delete "
                    f"{self.path} to start over")
            with self.path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != self.columns:
                raise ConfigError(f"{self.path} has other columns than this experiment writes "
                                  f"({header} vs {self.columns}): pass another --out")
        previous_path.write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120))
        return {row["row_id"] for row in rows}

    def _repair(self) -> None:
        """Drop a last line cut off by a crash mid-write (rows end with a newline once complete)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def append(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _field(row.get(k)) for k in self.columns})
        with self.path.open("a", newline="") as handle:
            handle.write(buffer.getvalue())  # one write per run: its rows land together
            handle.flush()
            os.fsync(handle.fileno())


def _field(value: Any) -> str:
    if value is None or value == "unavailable":
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, (list, dict, bool)):
        return show(value)
    return str(value)


class Lock:
    """``DIR/.lock`` while a runner writes there: a second invocation on the same directory is refused
    (it would compute the same rows twice). A lock left by a dead process on this host is taken over."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self.held = False

    def __enter__(self) -> None:
        import socket

        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                host, _, pid = self.path.read_text().strip().rpartition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(f"another fl-privacy run ({host or 'unknown host'}, pid {pid or '?'}) is writing to "
                                  f"{self.path.parent}: wait for it, or delete {self.path} if it is gone") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self.held = True
            return
        raise ConfigError(f"could not lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def put_in_order(path: Path, experiment: Experiment) -> None:
    """Rewrite ``results.csv`` in the experiment's run order (rows of one run keep theirs), atomically: the same
    file a serial run writes, whatever order the workers finished in."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames or []), list(reader)
    position = {u.row_id: i for i, u in enumerate(experiment.units)}
    ordered = sorted(enumerate(rows), key=lambda item: (position.get(item[1]["row_id"], len(position)), item[0]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row for _, row in ordered)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
