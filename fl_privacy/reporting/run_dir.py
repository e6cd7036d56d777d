"""The run directory: everything needed to read, trust and regenerate a run.

Records are appended as each round ends (JSON lines, flushed), so a crash
mid-run loses no finished round.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from fl_privacy.config import ExperimentConfig
from fl_privacy.reporting.records import RoundRecord


def environment_info() -> dict[str, Any]:
    """Versions and devices, stored with every run (contract: every number can be regenerated)."""
    import numpy
    import torchvision

    import fl_privacy
    from fl_privacy.reporting.redact import redact_argv

    return {
        "fl_privacy": fl_privacy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "flwr": _dist_version("flwr"),  # installed version, without importing Flower
        "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "argv": redact_argv(sys.argv),  # the ServerApp's command line carries Flower's --token
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def runs_base(out_dir: str) -> Path:
    """Where runs land: ``out_dir``; with $FL_PRIVACY_RUNS_DIR set, that folder replaces the default ``runs``
    (no ``runs/runs/``) and holds any other relative ``out_dir``."""
    base = Path(out_dir).expanduser()
    root = os.environ.get("FL_PRIVACY_RUNS_DIR")
    if base.is_absolute() or not root:
        return base
    default = ExperimentConfig.model_fields["out_dir"].default
    return Path(root).expanduser() if base == Path(default) else Path(root).expanduser() / base


class RunDirectory:
    """Paths and writers of one run; created at the start of the run."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, config: ExperimentConfig, out: str | os.PathLike | None = None) -> RunDirectory:
        """``out`` as given, else ``<out_dir>/<name>-<timestamp>`` (see ``runs_base``)."""
        if out is None:
            base = runs_base(config.out_dir)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = base / f"{config.name}-{stamp}"
            suffix = 1
            while Path(out).exists():
                out = base / f"{config.name}-{stamp}-{suffix}"
                suffix += 1
        run = cls(out)
        (run.root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
        run.write_json("environment.json", {**environment_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return run

    @property
    def rounds_file(self) -> Path:
        return self.root / "rounds.jsonl"

    def write_json(self, name: str, payload: Any) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=_jsonable))
        return path

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record, default=_jsonable) + "\n")
            handle.flush()

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def round_records(self) -> list[RoundRecord]:
        """``rounds.jsonl`` as typed records (victims as ``VictimEntry``)."""
        return [RoundRecord.from_json(record) for record in self.read_jsonl("rounds.jsonl")]

    def update_path(self, server_round: int, partition_id: int) -> Path:
        """Where the server's view of one victim's update is stored (what an attack may read)."""
        return self.root / "updates" / f"round_{server_round:03d}" / f"{_client_stem(partition_id)}.pt"

    def ground_truth_path(self, server_round: int, partition_id: int) -> Path:
        """Where the evaluator's ground truth lives (never given to an attack)."""
        return self.root / "ground_truth" / f"round_{server_round:03d}" / f"{_client_stem(partition_id)}.json"

    def recorded_clients(self) -> dict[int, list[int]]:
        """Round -> ids of the clients whose updates were recorded (sorted; secure aggregates left out)."""
        out: dict[int, list[int]] = {}
        for path in sorted((self.root / "updates").glob("round_*/client_*.pt")):
            out.setdefault(int(path.parent.name[6:]), []).append(int(path.stem[7:]))
        return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _client_stem(partition_id: int) -> str:
    """``client_0003``, or ``aggregate`` for a round's secure aggregate (partition id -1)."""
    return "aggregate" if partition_id < 0 else f"client_{partition_id:04d}"
