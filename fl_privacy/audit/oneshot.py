"""One client update, built and attacked without a whole simulation (``fl-privacy attack``).

The update is produced by the same client code as in a federation (local
training + defense pipeline) from the initial global model, recorded as the
server would see it, and attacked; outputs go to a run directory laid out like
a federation's. Benchmarks and research-question sweeps call this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fl_privacy.audit import preflight
from fl_privacy.audit.advice import degenerate_attack_warnings
from fl_privacy.audit.observe import VictimTruth
from fl_privacy.audit.ready import prepare_checked
from fl_privacy.audit.run_attacks import attack_update, attack_updates
from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.client import client_update
from fl_privacy.federation.recording import RecordedUpdate, UpdateRecorder, public_num_examples
from fl_privacy.federation.run_setup import build_model_for, load_split, resolve_device, victim_steps
from fl_privacy.federation.training import batch_schedule
from fl_privacy.reporting import RunDirectory
from fl_privacy.reporting.records import RoundRecord, VictimEntry


def victim_data(config: ExperimentConfig, client: int | None, split: str, indices: list[int] | None):
    """The victim's data and local steps: a client's partition of the train split, or given indices of a split."""
    if indices:
        data = load_split(config, split)
        bad = [i for i in indices if not 0 <= i < len(data)]
        if bad:
            raise ConfigError(f"indices {bad} outside the {split} split (0..{len(data) - 1})")
        pid = client or 0
        distinct = len(set(indices))
        if config.training.algorithm == "fedsgd" and distinct != config.training.batch_size:
            raise ConfigError(f"{distinct} indices given, but FedSGD computes one gradient on training.batch_size="
                              f"{config.training.batch_size} samples: add --set training.batch_size={distinct} "
                              f"(one update of all of them) or attack each index in its own call")
        steps = batch_schedule(np.asarray(sorted(set(indices))), config.training, config.seed, 1, pid)
        return data, steps, pid
    setup = prepare_checked(config)
    pid = client if client is not None else (config.attack.victim_ids or [0])[0]
    if not 0 <= pid < len(setup.partitions):
        raise ConfigError(f"client {pid} outside 0..{len(setup.partitions) - 1}")
    return setup.train, victim_steps(setup, 1, pid), pid


@dataclass(frozen=True)
class VictimRequest:
    """One victim of ``attack_together``: where its run directory goes and whose update it is (client ``client``'s
    partition of the train split, or ``indices`` of ``split``)."""

    out: str | None = None
    client: int | None = None
    split: str = "train"
    indices: list[int] | None = None


@dataclass
class _Victim:
    """A victim's update built as the server records it, with its ground truth and its run directory."""

    request: VictimRequest
    run: RunDirectory
    data: ImageData
    steps: list[np.ndarray]
    count: int
    recorded: RecordedUpdate
    truth: VictimTruth
    advice: list[str]


def attack_once(
    config: ExperimentConfig,
    out: str | None = None,
    client: int | None = None,
    split: str = "train",
    indices: list[int] | None = None,
    lpips_metric: Any = None,
    global_state: dict[str, torch.Tensor] | None = None,
    round_number: int = 1,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[RunDirectory, dict[str, Any]]:
    """Build the victim's update, attack it, score it, write the outputs.

    The global model is the initial one (round 1), or ``global_state`` (a trained
    model's state dict, e.g. the federation's model after round ``round_number - 1``)."""
    _check_one_shot(config)
    victim = _build(config, VictimRequest(out, client, split, indices), global_state, round_number, on_warning)
    device = resolve_device(config.resources.device)

    def attack(rec: RecordedUpdate) -> dict[str, Any]:
        torch.manual_seed(config.seed)
        return attack_update(rec, victim.truth, build_model_for(config, victim.data), victim.data, config,
                             victim.run.root / "attacks", device, lpips_metric)

    return victim.run, _record(config, victim, attack, round_number, global_state is not None)


def attack_together(config: ExperimentConfig, requests: Sequence[VictimRequest],
                    lpips_metric: Any = None) -> list[tuple[RunDirectory, dict[str, Any]]]:
    """``attack_once`` for several victims of the same global model (the initial one of ``config``).

    Each victim's update is built, recorded and reported in its own run directory exactly as
    ``attack_once`` does; the attacks run through ``attack_updates``, which optimises the victims
    as one batched problem when the attack can (``batches_victims``; each gets the result it would
    get alone) and one by one otherwise. An entry's ``seconds`` is the batched attack's."""
    _check_one_shot(config)
    if len({request.split for request in requests}) > 1:
        raise ConfigError("attack_together attacks victims of one split; attack the others in another call")
    victims = [_build(config, request, None, 1, None) for request in requests]
    if not victims:
        return []
    data, device = victims[0].data, resolve_device(config.resources.device)
    torch.manual_seed(config.seed)
    outcomes = attack_updates([v.recorded for v in victims], [v.truth for v in victims],
                              build_model_for(config, data), data, config,
                              [v.run.root / "attacks" for v in victims], device, lpips_metric)
    return [(v.run, _record(config, v, lambda _rec, o=outcome: o, 1, False)) for v, outcome in zip(victims, outcomes)]


def _build(config: ExperimentConfig, request: VictimRequest, global_state: dict[str, torch.Tensor] | None,
           round_number: int, on_warning: Callable[[str], None] | None) -> _Victim:
    """Checks, the run directory, and the victim's update by the client code on the global model."""
    data, steps, pid = victim_data(config, request.client, request.split, request.indices)
    count = len(np.unique(np.concatenate(steps)))
    preflight.check_image_budget(config, count, f"the victim's update uses {count} samples",
                                 "pass fewer indices or lower data.samples_per_client")
    from fl_privacy.audit.run_attacks import gia_config

    gia_config(config)  # attack settings, the knowledge they need, the generator file: before any output
    preflight.check_generator_fits(config, data.shape)
    run = RunDirectory.create(config, request.out)
    model = build_model_for(config, data)
    advice = degenerate_attack_warnings(config, model)
    for warning in advice if on_warning else ():
        on_warning(warning)
    if global_state is not None:
        model.load_state_dict(global_state)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    recorded = _client_update(config, model, data, steps, sent, pid, round_number)
    truth = VictimTruth.from_steps(data, steps, config.data.normalize)
    return _Victim(request, run, data, steps, count, recorded, truth, advice)


def _record(config: ExperimentConfig, victim: _Victim, attack: Callable[[RecordedUpdate], dict[str, Any]],
            round_number: int, trained: bool) -> dict[str, Any]:
    """Store the update and its truth, attack it (``attack``), write the round record and the report."""
    split, truth = victim.request.split, victim.truth

    def ground_truth(_round: int, _pid: int) -> dict[str, Any]:
        return {"split": split, "steps": [s.tolist() for s in victim.steps], "labels": truth.labels.tolist()}

    def entry_of(rec: RecordedUpdate, _run: RunDirectory) -> VictimEntry:
        return VictimEntry(rec.server_round, rec.partition_id, split=split, indices=truth.indices.tolist(),
                           warnings=victim.advice)

    recorder = UpdateRecorder(config, victim.run, ground_truth, attack, entry=entry_of)
    entry = recorder.record(victim.recorded)
    victim.run.append_jsonl("rounds.jsonl", RoundRecord.of_one_victim(VictimEntry.from_json(entry)).to_json())
    _report(victim.run, config, split, victim.count, round_number, trained, victim.advice)
    return entry


def _check_one_shot(config: ExperimentConfig) -> None:
    """One client update can be attacked on its own only by an attack that sees single updates."""
    if config.attack.name == "none":
        raise ConfigError("attack.name is 'none': choose an attack (e.g. inverting_gradients) to run one")
    if config.attack.threat.observes == "aggregate":
        raise ConfigError("attack.threat.observes 'aggregate' attacks a round's secure aggregate of several clients: "
                          "run a federation (fl-privacy run, or an experiment with mode: federation)")


def _client_update(config: ExperimentConfig, model: torch.nn.Module, data: ImageData, steps: list[np.ndarray],
                   sent: dict[str, torch.Tensor], pid: int, server_round: int) -> RecordedUpdate:
    """The victim's update by the federation's client code, as the server would record it."""
    reply = client_update(config, model, data, steps, sent, pid, server_round, {}, "cpu")
    param_names = [n for n, _ in model.named_parameters()]
    return RecordedUpdate.from_reply(config, server_round, pid, sent, reply.arrays, param_names,
                                     public_num_examples(config, reply.num_examples))


def _report(run: RunDirectory, config: ExperimentConfig, split: str, count: int, server_round: int, trained: bool,
            advice: list[str]) -> None:
    """The run's summary and report page, as a federation's (same reporter)."""
    from fl_privacy.reporting import write_summary
    from fl_privacy.reporting.run_report import write_run_report

    stage = f"the global model after round {server_round - 1}" if trained else "untrained global model"
    update = (f"- one client update: {config.training.algorithm}, {count} image(s) of {config.data.dataset} "
              f"({split} split), model {config.model.name}, round {server_round} ({stage})")
    write_summary(run, f"Attack {config.attack.name} ({config.name})", [
        update,
        f"- threat: {config.attack.threat.model_dump()}",
        f"- defenses: {', '.join(d.name for d in config.defenses) or 'none'}",
    ] + [f"- **warning**: {w}" for w in advice])
    run.write_json("final.json", {"finished": True})
    write_run_report(run)
