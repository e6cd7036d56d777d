"""One federation's life on the server, Flower-free: checks, run directory, recorder, per-round records.

The ServerApp glue (``strategies.server_app``) builds the strategies and calls,
in order: ``FederatedRun(...)`` (fails fast, before any run directory),
``open()``, ``resume()`` when continuing a run, ``after_round()`` from the
strategy's evaluation callback, and ``finish()``.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING, getLogger
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.audit.advice import degenerate_attack_warnings
from fl_privacy.audit.ready import prepare_checked
from fl_privacy.audit.round_notes import attack_note, round_line, run_notes, run_status
from fl_privacy.audit.server_hooks import attack_means, igsa_metrics, probe_metrics, victim_hook
from fl_privacy.config import ExperimentConfig
from fl_privacy.dp.guarantee import check_model
from fl_privacy.dp.report import privacy_block
from fl_privacy.federation.checkpoint import RoundCheckpoint, check_resumable, truncate_records
from fl_privacy.federation.evaluation import evaluate_model
from fl_privacy.federation.failures import RunStopped
from fl_privacy.federation.recording import UpdateRecorder
from fl_privacy.federation.run_setup import build_model_for, load_split, resolve_device, victim_steps
from fl_privacy.federation.server_update import check_strategy
from fl_privacy.progress import RoundProgress
from fl_privacy.reporting import RunDirectory, write_summary
from fl_privacy.reporting.run_report import write_run_report

log = getLogger("flwr")  # the ServerApp's log

Tensors = dict[str, torch.Tensor]
ROUND_KEYS = ("train_loss", "clients", "failures", "failed_partitions", "timeouts", "failure_reasons", "partitions",
              "recorded", "payload_kib", "compression")
"""What the recording server noted about a round (``RoundLedger.round_info``) that goes into its record."""


class FederatedRun:
    """The evaluator's side of a federation; ``clients`` is the grid, for the clients' checkpointed state."""

    def __init__(self, config: ExperimentConfig, out: str | None, resume: bool, clients: Any,
                 progress: RoundProgress | None = None) -> None:
        if config.resources.threads:
            torch.set_num_threads(config.resources.threads)
        self.config, self.out, self.resuming, self.clients, self.progress = config, out, resume, clients, progress
        self.setup = prepare_checked(config)  # fails fast on bad data/partition/model settings
        check_strategy(config)
        self.device = resolve_device(config.resources.device)  # before the run directory: a failed check leaves none
        if resume:
            check_resumable(Path(out or "").expanduser(), config, clients)
        self.round_offset = 0
        """Rounds finished before a resume; the records keep the run's round numbers."""

    def open(self) -> None:
        """Create (or reopen) the run directory; build the model, the recorder and the evaluators."""
        config, setup = self.config, self.setup
        self.run = RunDirectory(self.out) if self.resuming else RunDirectory.create(config, self.out)
        log.log(INFO, "fl-privacy: run directory %s", self.run.root)
        self.model = setup.new_model()
        self.model_problems = check_model(config, self.model)  # DP settings the model breaks fail here
        self.param_names = [name for name, _ in self.model.named_parameters()]
        self.advice = degenerate_attack_warnings(config, self.model)
        for warning in self.advice:
            log.log(WARNING, "fl-privacy: warning: %s", warning)
        self.test = load_split(config, "test")
        self.test_idx = np.arange(len(self.test))
        if config.evaluation.test_samples:
            self.test_idx = np.random.default_rng([config.seed, 7]).permutation(len(self.test))[
                : config.evaluation.test_samples]
        self.recorder = UpdateRecorder(config, self.run, self._ground_truth,
                                       attack=victim_hook(setup, self.test, self.run, self.device))
        self.auditor = None
        if config.mia.rounds:
            from fl_privacy.audit.mia_round import MembershipAuditor

            self.auditor = MembershipAuditor(config, setup.train, self.test, setup.partitions,
                                             lambda: build_model_for(config, setup.train, seed=-1),
                                             self.run.root / "mia", self.device)
        self.multiround: dict[str, Any] | None = None
        """The multi-round update MIA's block, once its last round is done (``mia.multiround``)."""
        if config.mia.multiround.rounds:
            from fl_privacy.audit.mia_round import check_multiround_nonmembers

            check_multiround_nonmembers(config, self.test)
        self.started = time.time()

    def _ground_truth(self, server_round: int, pid: int) -> dict[str, Any]:
        steps = victim_steps(self.setup, server_round, pid)
        return {"round": server_round, "partition_id": pid, "steps": [s.tolist() for s in steps],
                "labels": [self.setup.train.labels[s].tolist() for s in steps]}

    def initial_state(self) -> Tensors:
        return self.model.state_dict()

    def resume(self) -> Tensors:
        """Restore the last checkpoint (model, client state, random states), drop later records; return the model."""
        checkpoint = RoundCheckpoint.load(self.run)
        checkpoint.restore(self.clients)
        truncate_records(self.run, checkpoint.server_round)
        self.round_offset = checkpoint.server_round
        log.log(INFO, "fl-privacy: resuming %s after round %d", self.run.root, checkpoint.server_round)
        if self.progress is not None:
            self.progress.resumed_at(self.round_offset)
        return checkpoint.arrays

    def notes(self, done: int | None) -> list[str]:
        return (run_notes(self.config, self.run, self.model_problems)
                + [f"- **warning**: {w}" for w in self.advice] + run_status(self.config, self.run, done)
                + self._multiround_lines())

    def _multiround_lines(self) -> list[str]:
        if not getattr(self, "multiround", None):
            return []
        from fl_privacy.audit.multiround_mia import summary_lines

        return summary_lines(self.multiround)

    def after_round(self, server_round: int, state: Tensors, info: dict[str, Any]) -> dict[str, float]:
        """The record of a finished round (0: the initial model): evaluation, what the server noted (``info``,
        from the recording strategy), MIA; written, checkpointed; returns the test metrics."""
        if self.resuming and server_round == self.round_offset:
            return {}  # the checkpointed round is already recorded
        record: dict[str, Any] = {"round": server_round}
        record.update(self._evaluate(server_round, state))
        if server_round:
            record.update({k: info.get(k) for k in ROUND_KEYS})
            record["round_seconds"] = time.time() - info.get("started", self.started)
            record["victims"] = info.get("victims", [])
            record.update(attack_means(record["victims"]))
        if self.auditor is not None and server_round in self.config.mia.rounds:
            self.model.load_state_dict(state)
            outcome = self.auditor.audit(server_round, self.model)
            self.run.append_jsonl("mia.jsonl", outcome)
            record["mia"] = {k: outcome[k] for k in ("attacks", "roc", "members", "nonmembers", "warnings")}
            record.update({f"mia_auc_{name}": m["auc"] for name, m in outcome["attacks"].items()})
        if server_round and server_round == max(self.config.mia.multiround.rounds, default=0):
            from fl_privacy.audit.mia_round import multiround_round

            self.multiround = multiround_round(self.config, self.run.root, self.setup.new_model(), self.setup.train,
                                               self.test, self.device)
            record["multiround_mia"] = self.multiround
            record.update(self.multiround["metrics"])
        record["elapsed_seconds"] = time.time() - self.started
        self.run.append_jsonl("rounds.jsonl", record)
        write_summary(self.run, f"Run {self.config.name}", self.notes(server_round), attack_note(self.config))
        write_run_report(self.run)
        log.log(INFO, "fl-privacy: %s", round_line(record))
        if self.progress is not None:
            self.progress.round_done(record)
        self._stop_on_failures(server_round, record)
        if server_round:  # after the record, so a resumed run never repeats or skips a round
            RoundCheckpoint.capture(server_round, state, self.clients).save(self.run)
        return {k: float(v) for k, v in record.items() if k.startswith("test_")}

    def _evaluate(self, server_round: int, state: Tensors) -> dict[str, Any]:
        """Test accuracy and loss (every ``evaluation.every`` rounds and the last), IGSA, probe attacks."""
        config, every = self.config, self.config.evaluation.every
        if not (every and server_round % every == 0 or server_round == config.federation.rounds):
            return {}
        self.model.load_state_dict(state)
        out = evaluate_model(self.model, self.test, self.test_idx, config.evaluation.batch_size,
                             config.data.normalize, self.device)
        if config.evaluation.igsa:
            out.update(igsa_metrics(self.model, self.test, config, self.device))
        if config.attack.probe_images and config.attack.name != "none":
            out.update(probe_metrics(self.model, config, self.run, server_round))
        return out

    def _stop_on_failures(self, server_round: int, record: dict[str, Any]) -> None:
        """A client failed and ``federation.accept_failures`` is false: say so in the summary and stop."""
        if not record.get("failures") or self.config.federation.accept_failures:
            return
        reasons = "; ".join(f"{k}: {v}" for k, v in (record.get("failure_reasons") or {}).items()) or "timeout"
        stop = (f"round {server_round}: clients {record['failed_partitions']} failed ({reasons}) and "
                f"federation.accept_failures is false: the run stops here")
        write_summary(self.run, f"Run {self.config.name}", self.notes(server_round - 1) + [f"- **stopped**: {stop}"],
                      attack_note(self.config))
        raise RunStopped(stop)

    def finish(self) -> RunDirectory:
        """``final.json`` (with the privacy guarantee), the final summary and report."""
        config, run = self.config, self.run
        records = run.read_jsonl("rounds.jsonl")
        guarantee = privacy_block(config, records, config.federation.rounds, self.model_problems)
        self.multiround = next((r["multiround_mia"] for r in reversed(records) if "multiround_mia" in r), None)
        run.write_json("final.json", {"finished": True, "seconds": time.time() - self.started, "privacy": guarantee,
                                      **({"resumed_after_round": self.round_offset} if self.resuming else {}),
                                      **({"multiround_mia": self.multiround} if self.multiround else {})})
        write_summary(run, f"Run {config.name}", self.notes(None), attack_note(config))
        write_run_report(run)
        if guarantee:
            log.log(INFO, "fl-privacy: %s mechanism: %s", guarantee["mechanism"], guarantee["guarantee"])
        log.log(INFO, "fl-privacy: finished in %.1f s; summary at %s", time.time() - self.started,
                run.root / "summary.md")
        return run
