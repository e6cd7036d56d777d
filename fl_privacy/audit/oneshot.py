"""One client update, built and attacked without a whole simulation (``fl-privacy attack``).

The update is produced by the same client code as in a federation (local
training + defense pipeline) from the initial global model, recorded as the
server would see it, and attacked; outputs go to a run directory laid out like
a federation's. Benchmarks and research-question sweeps call this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fl_privacy.audit.advice import degenerate_attack_warnings
from fl_privacy.audit.observe import VictimTruth
from fl_privacy.audit.run_attacks import attack_update
from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.federation.client import client_update
from fl_privacy.federation.recording import RecordedUpdate, public_num_examples
from fl_privacy.federation.run_setup import build_model_for, load_split, prepare, resolve_device, victim_steps
from fl_privacy.federation.training import batch_schedule
from fl_privacy.reporting import RunDirectory


def victim_data(config: ExperimentConfig, client: int | None, split: str, indices: list[int] | None):  # noqa: ANN201
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
    setup = prepare(config)
    pid = client if client is not None else (config.attack.victim_ids or [0])[0]
    if not 0 <= pid < len(setup.partitions):
        raise ConfigError(f"client {pid} outside 0..{len(setup.partitions) - 1}")
    return setup.train, victim_steps(setup, 1, pid), pid


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
    if config.attack.name == "none":
        raise ConfigError("attack.name is 'none': choose an attack (e.g. inverting_gradients) to run one")
    if config.attack.threat.observes == "aggregate":
        raise ConfigError("attack.threat.observes 'aggregate' attacks a round's secure aggregate of several clients: "
                          "run a federation (fl-privacy run, or an experiment with mode: federation)")
    data, steps, pid = victim_data(config, client, split, indices)
    count = len(np.unique(np.concatenate(steps)))
    if count > config.attack.max_images:
        raise ConfigError(f"the victim's update uses {count} samples, more than attack.max_images="
                          f"{config.attack.max_images}: pass fewer indices or lower data.samples_per_client")
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.federation.run_setup import check_generator_fits

    gia_config(config)  # attack settings, the knowledge they need, the generator file: before any output
    check_generator_fits(config, data.shape)
    device = resolve_device(config.resources.device)
    run = RunDirectory.create(config, out)
    model = build_model_for(config, data)
    advice = degenerate_attack_warnings(config, model)
    for warning in advice if on_warning else ():
        on_warning(warning)
    trained = global_state is not None
    if trained:
        model.load_state_dict(global_state)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    r = round_number
    reply = client_update(config, model, data, steps, global_state, pid, r, {}, "cpu")
    param_names = [n for n, _ in model.named_parameters()]
    recorded = RecordedUpdate.from_reply(config, r, pid, global_state, reply.arrays, param_names,
                                         public_num_examples(config, reply.num_examples))
    recorded.save(run.update_path(r, pid))
    truth = VictimTruth.from_steps(data, steps, config.data.normalize)
    run.write_json(str(run.ground_truth_path(r, pid).relative_to(run.root)),
                   {"split": split, "steps": [s.tolist() for s in steps], "labels": truth.labels.tolist()})
    torch.manual_seed(config.seed)
    outcome = attack_update(recorded, truth, build_model_for(config, data), data, config, run.root / "attacks",
                            device, lpips_metric)
    entry = {"round": r, "partition_id": pid, "split": split, "indices": truth.indices.tolist(), **outcome}
    if advice:
        entry["warnings"] = advice
    run.append_jsonl("victims.jsonl", entry)
    run.append_jsonl("rounds.jsonl", {"round": r, "victims": [entry], **_means(entry)})
    from fl_privacy.reporting import write_summary

    stage = f"the global model after round {r - 1}" if trained else "untrained global model"
    write_summary(run, f"Attack {config.attack.name} ({config.name})", [
        f"- one client update: {config.training.algorithm}, {count} image(s) of {config.data.dataset} "
        f"({split} split), model {config.model.name}, round {r} ({stage})",
        f"- threat: {config.attack.threat.model_dump()}",
        f"- defenses: {', '.join(d.name for d in config.defenses) or 'none'}",
    ] + [f"- **warning**: {w}" for w in advice])
    run.write_json("final.json", {"finished": True})
    from fl_privacy.reporting.run_report import write_run_report

    write_run_report(run)
    return run, entry


def _means(entry: dict[str, Any]) -> dict[str, float]:
    return {f"attack_{k}": entry[k] for k in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc")
            if isinstance(entry.get(k), (int, float))}
