"""Per-round checkpoints of a federation, so a killed run continues where it stopped (``--resume``).

After each finished round the server writes ``checkpoint.pt`` (atomically) with
the global model, the clients' persistent defense state (error feedback, PowerSGD
warm starts, GradDefense's sensitivity cache; in-process runs, where the server
can read the clients' Flower contexts) and the random states the next rounds
draw from. Everything else is a deterministic function of (seed, round, client):
batch schedules, defense noise, client sampling of hosted clients, the privacy
accountant (recomputed from the rounds that ran). Resuming truncates the records
to the checkpoint's round and runs the remaining rounds with their own numbers.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.reporting import RunDirectory

CHECKPOINT = "checkpoint.pt"
RECORD_FILES = ("rounds.jsonl", "victims.jsonl", "mia.jsonl")

Tensors = dict[str, torch.Tensor]


@dataclass
class RoundCheckpoint:
    server_round: int
    """The last round whose record, victims and model are complete."""
    arrays: Tensors
    """The global model after that round."""
    client_states: dict[str, dict[str, Tensors]]
    """Node id (as text) -> key -> tensors: each node's persistent client state."""
    python_random: list[Any]
    torch_random: torch.Tensor

    def save(self, run: RunDirectory) -> Path:
        path = run.root / CHECKPOINT
        tmp = path.with_name(f".{CHECKPOINT}.{os.getpid()}.tmp")
        torch.save(asdict(self), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def capture(cls, server_round: int, arrays: Tensors, grid: Any) -> RoundCheckpoint:
        states = grid.client_states() if hasattr(grid, "client_states") else {}
        version, internal, gauss = random.getstate()
        return cls(server_round, {k: v.detach().cpu().clone() for k, v in arrays.items()},
                   {str(k): v for k, v in states.items()}, [version, list(internal), gauss], torch.get_rng_state())

    @classmethod
    def load(cls, run: RunDirectory) -> RoundCheckpoint:
        path = run.root / CHECKPOINT
        if not path.is_file():
            raise ConfigError(f"--resume: '{run.root}' has no {CHECKPOINT} (no round finished, or the run predates "
                              "checkpoints): start it again with --force")
        return cls(**torch.load(path, map_location="cpu", weights_only=True))

    def restore(self, grid: Any) -> None:
        """Put the clients' state back into the grid's nodes and the random states back into this process."""
        if self.client_states:
            saved = {int(k): v for k, v in self.client_states.items()}
            if not set(saved) <= set(grid.get_node_ids()):  # client state lives on the node that hosted it
                raise ConfigError("--resume: the run's client state was saved on other in-process nodes: resume "
                                  "with the same --supernodes as the killed run")
            grid.restore_client_states(saved)
        version, internal, gauss = self.python_random
        random.setstate((version, tuple(internal), gauss))
        torch.set_rng_state(self.torch_random)


def check_resumable(run_root: Path, config: ExperimentConfig, grid: Any) -> None:
    """The run in ``run_root`` was made by this config, has not finished, and this grid can restore its clients."""
    import yaml

    if (run_root / "final.json").exists():
        raise ConfigError(f"--resume: the run in '{run_root}' already finished")
    saved = yaml.safe_load((run_root / "config.yaml").read_text()) if (run_root / "config.yaml").is_file() else None
    mine = config.model_dump()
    if saved is None:
        raise ConfigError(f"--resume: '{run_root}' holds no config.yaml: not a run directory")
    differ = sorted(k for k in mine if k != "resources" and saved.get(k) != mine[k])
    if differ:
        raise ConfigError(f"--resume: the config differs from the run's config.yaml in {differ}: resume with the same "
                          "config and --set values (only resources.* may change)")
    if config.federation.strategy in ("fedadam", "fedavgm"):
        raise ConfigError(f"--resume: federation.strategy={config.federation.strategy} keeps server optimizer state "
                          "(moments) that checkpoints do not hold; start the run again")
    if config.defenses and not hasattr(grid, "client_states"):
        raise ConfigError("--resume with defenses needs --backend inprocess (the clients' defense state lives in "
                          "Ray's actors and is not checkpointed)")


def truncate_records(run: RunDirectory, last_round: int) -> None:
    """Drop records of rounds after ``last_round`` (a round the killed run had only partly written)."""
    for name in RECORD_FILES:
        path = run.root / name
        if path.exists():
            kept = [r for r in run.read_jsonl(name) if int(r.get("round", 0)) <= last_round]
            path.write_text("".join(_line(r) for r in kept))


def _line(record: dict[str, Any]) -> str:
    import json

    from fl_privacy.reporting.run_dir import _jsonable

    return json.dumps(record, default=_jsonable) + "\n"
