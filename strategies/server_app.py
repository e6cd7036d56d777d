"""The ServerApp: honest aggregation, recording of victims, evaluation, reports.

``flwr run .`` reads the config from the run config (``[tool.flwr.app.config]``
plus ``--run-config`` overrides, optionally a YAML file named by ``config``);
``fl-privacy run`` calls ``run_federation`` with a config it loaded itself.
"""

from __future__ import annotations

import time
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fl_privacy.audit.advice import degenerate_attack_warnings
from fl_privacy.config import ConfigError, ExperimentConfig, from_run_config, shadowed_defaults
from fl_privacy.data import ImageData
from fl_privacy.defenses import build_pipeline
from fl_privacy.dp.guarantee import check_model
from fl_privacy.dp.report import privacy_block, summary_lines
from fl_privacy.federation.checkpoint import RoundCheckpoint, check_resumable, truncate_records
from fl_privacy.federation.evaluation import evaluate_model
from fl_privacy.federation.failures import RunStopped
from fl_privacy.federation.recording import AttackHook, RecordedUpdate, UpdateRecorder
from fl_privacy.federation.run_setup import RunSetup, build_model_for, load_split, prepare, resolve_device, victim_steps
from fl_privacy.launch.deployment import announce_failure
from fl_privacy.progress import RoundProgress
from fl_privacy.reporting import RunDirectory, write_summary
from fl_privacy.reporting.run_report import write_run_report
from strategies.curious_fedavg import CuriousFedAvg
from strategies.streaming_grid import StreamingGrid

app = ServerApp()


@app.main()
@announce_failure
def main(grid: Grid, context: Context) -> None:
    try:
        config = from_run_config(context.run_config)
        shadowed = shadowed_defaults(context.run_config)
    except ConfigError as err:  # the exact bad key and the closest valid one, where `flwr run` shows it
        message = (f"fl-privacy: error: bad run config: {err}\nfl-privacy: check run configs before `flwr run` with "
                   "`fl-privacy validate [CONFIG.yaml] --set key=value ...` (the same keys)")
        log(ERROR, "%s", message)
        print(message, flush=True)
        raise
    for warning in shadowed:
        log(WARNING, "fl-privacy: %s", warning)
        print(f"fl-privacy: warning: {warning}", flush=True)
    run_federation(grid, config)


def run_federation(grid: Grid, config: ExperimentConfig, out: str | None = None,
                   progress: RoundProgress | None = None, resume: bool = False) -> RunDirectory:
    """Run all rounds on ``grid`` and leave a run directory with records and a summary.

    ``progress``: prints a line per round (and while clients answer), for ``fl-privacy run``.
    ``resume``: continue the run in ``out`` from its last checkpointed round."""
    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    setup = prepare(config)  # fails fast on bad data/partition/model settings
    device = resolve_device(config.resources.device)  # before the run directory: a failed check leaves none
    if resume:
        check_resumable(Path(out or "").expanduser(), config, grid)
    node_partitions = discover_nodes(grid, config)
    run = RunDirectory(out) if resume else RunDirectory.create(config, out)
    log(INFO, "fl-privacy: run directory %s", run.root)
    model = setup.new_model()
    model_problems = check_model(config, model)  # DP settings the model breaks fail here, before round 1
    param_names = [name for name, _ in model.named_parameters()]
    advice = degenerate_attack_warnings(config, model)
    for warning in advice:
        log(WARNING, "fl-privacy: warning: %s", warning)
    test = load_split(config, "test")
    test_idx = np.arange(len(test))
    if config.evaluation.test_samples:
        test_idx = np.random.default_rng([config.seed, 7]).permutation(len(test))[: config.evaluation.test_samples]

    def ground_truth(server_round: int, pid: int) -> dict[str, Any]:
        steps = victim_steps(setup, server_round, pid)
        return {"round": server_round, "partition_id": pid, "steps": [s.tolist() for s in steps],
                "labels": [setup.train.labels[s].tolist() for s in steps]}

    recorder = UpdateRecorder(config, run, ground_truth, attack=_victim_hook(setup, test, run, device))
    auditor = None
    if config.mia.rounds:
        from fl_privacy.audit.mia_round import MembershipAuditor

        auditor = MembershipAuditor(config, setup.train, test, setup.partitions,
                                    lambda: build_model_for(config, setup.train, seed=-1), run.root / "mia", device)
    strategy = CuriousFedAvg(config, recorder, param_names, node_partitions)
    if progress is not None:
        strategy.on_reply = progress.client_done
    initial = ArrayRecord(model.state_dict())
    if resume:
        initial = _resume_from_checkpoint(run, grid, strategy)
        if progress is not None:
            progress.resumed_at(strategy.round_offset)
    started = time.time()

    def notes(done: int | None) -> list[str]:
        return _notes(config, run, model_problems) + [f"- **warning**: {w}" for w in advice] + _status(config, run, done)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round += strategy.round_offset  # resumed runs keep their round numbers
        if resume and server_round == strategy.round_offset:
            return None  # the checkpointed round is already recorded
        info = strategy.round_info.get(server_round, {})
        record: dict[str, Any] = {"round": server_round}
        every = config.evaluation.every
        if every and server_round % every == 0 or server_round == config.federation.rounds:
            model.load_state_dict(arrays.to_torch_state_dict())
            record.update(evaluate_model(model, test, test_idx, config.evaluation.batch_size,
                                         config.data.normalize, device))
            if config.evaluation.igsa:
                record.update(_igsa(model, test, config, device))
            if config.attack.probe_images and config.attack.name != "none":
                record.update(_probe(model, config, run, server_round))
        if server_round:
            record.update({k: info.get(k) for k in ("train_loss", "clients", "failures", "failed_partitions",
                                                    "timeouts", "failure_reasons", "partitions", "recorded",
                                                    "payload_kib", "compression")})
            record["round_seconds"] = time.time() - info.get("started", started)
            record["victims"] = info.get("victims", [])
            record.update(_attack_means(record["victims"]))
        if auditor is not None and server_round in config.mia.rounds:
            model.load_state_dict(arrays.to_torch_state_dict())
            outcome = auditor.audit(server_round, model)
            run.append_jsonl("mia.jsonl", outcome)
            record["mia"] = {k: outcome[k] for k in ("attacks", "roc", "members", "nonmembers", "warnings")}
            record.update({f"mia_auc_{name}": m["auc"] for name, m in outcome["attacks"].items()})
        record["elapsed_seconds"] = time.time() - started
        run.append_jsonl("rounds.jsonl", record)
        write_summary(run, f"Run {config.name}", notes(server_round), _attack_note(config))
        write_run_report(run)
        log(INFO, "fl-privacy: %s", _round_line(record))
        if progress is not None:
            progress.round_done(record)
        if record.get("failures") and not config.federation.accept_failures:
            stop = (f"round {server_round}: clients {record['failed_partitions']} failed "
                    f"({'; '.join(f'{k}: {v}' for k, v in (record.get('failure_reasons') or {}).items()) or 'timeout'})"
                    f" and federation.accept_failures is false: the run stops here")
            write_summary(run, f"Run {config.name}", notes(server_round - 1) + [f"- **stopped**: {stop}"],
                          _attack_note(config))
            raise RunStopped(stop)
        if server_round:  # after the record, so a resumed run never repeats or skips a round
            RoundCheckpoint.capture(server_round, arrays.to_torch_state_dict(), grid).save(run)
        metrics = {k: float(v) for k, v in record.items() if k.startswith("test_")}
        return MetricRecord(metrics) if metrics else None

    strategy.start(
        grid=StreamingGrid(grid), initial_arrays=initial, num_rounds=config.federation.rounds - strategy.round_offset,
        timeout=config.federation.round_timeout,
        evaluate_fn=evaluate,
    )
    guarantee = privacy_block(config, run.read_jsonl("rounds.jsonl"), config.federation.rounds, model_problems)
    run.write_json("final.json", {"finished": True, "seconds": time.time() - started, "privacy": guarantee,
                                  **({"resumed_after_round": strategy.round_offset} if resume else {})})
    write_summary(run, f"Run {config.name}", notes(None), _attack_note(config))
    write_run_report(run)
    if guarantee:
        log(INFO, "fl-privacy: %s mechanism: %s", guarantee["mechanism"], guarantee["guarantee"])
    log(INFO, "fl-privacy: finished in %.1f s; summary at %s", time.time() - started, run.root / "summary.md")
    return run


def _resume_from_checkpoint(run: RunDirectory, grid: Grid, strategy: CuriousFedAvg) -> ArrayRecord:
    """Restore the last checkpoint (model, client state, random states), drop later records; return the model."""
    checkpoint = RoundCheckpoint.load(run)
    checkpoint.restore(grid)
    truncate_records(run, checkpoint.server_round)
    strategy.round_offset = checkpoint.server_round
    log(INFO, "fl-privacy: resuming %s after round %d", run.root, checkpoint.server_round)
    return ArrayRecord(checkpoint.arrays)


def _status(config: ExperimentConfig, run: RunDirectory, done: int | None) -> list[str]:
    """Where the run stands, so the summary of a killed run says where it stopped and how to continue."""
    total = config.federation.rounds
    if done is None:
        return [f"- status: finished, all {total} rounds"]
    return [f"- status: {done} of {total} rounds finished; not finished yet (a run that was stopped continues "
            f"with `fl-privacy run CONFIG --out {run.root} --resume`)"]


def _victim_hook(setup: RunSetup, test: ImageData, run: RunDirectory, device: torch.device) -> AttackHook | None:
    """Analyses of each recorded victim update: gradient inversion and/or gradient-similarity MIA.

    The evaluator side rebuilds the victim's ground truth from the config; the
    attacks themselves only get an Observation (inversion) or the recorded update
    and candidate samples (MIA).
    """
    config = setup.config
    if config.attack.name == "none" and not config.mia.gradient:
        return None
    from fl_privacy.audit.observe import VictimTruth
    from fl_privacy.audit.run_attacks import attack_updates
    from fl_privacy.metrics import try_lpips

    lpips = None
    if config.attack.name != "none":
        lpips = try_lpips(device=str(device))
        if lpips is None:
            log(INFO, "fl-privacy: LPIPS unavailable (no pretrained backbone weights here): reported as unavailable")

    def truth_of(rec: RecordedUpdate) -> VictimTruth:
        parts = rec.metadata.get("aggregated_partitions") or [rec.partition_id]  # an aggregate: all its clients
        steps = [s for p in parts for s in victim_steps(setup, rec.server_round, p)]
        return VictimTruth.from_steps(setup.train, steps, config.data.normalize)

    def hook_round(recorded: list[RecordedUpdate]) -> list[dict[str, Any]]:
        """The round's victims: one batched inversion (they share the global model), then MIA per victim."""
        truths = [truth_of(rec) for rec in recorded]
        outcomes: list[dict[str, Any]] = [{} for _ in recorded]
        if config.attack.name != "none":
            outcomes = attack_updates(recorded, truths, setup.new_model(), setup.train, config, run.root / "attacks",
                                      device, lpips)
            for rec, outcome in zip(recorded, outcomes):
                log(INFO, "fl-privacy: attack on client %d (round %d): PSNR %.2f dB, SSIM %.3f, label acc %s, %.1f s",
                    rec.partition_id, rec.server_round, outcome["psnr_mean"], outcome["ssim_mean"],
                    outcome["label_acc"], outcome["seconds"])
        if config.mia.gradient:
            from fl_privacy.audit.mia_round import gradient_mia

            for rec, truth, outcome in zip(recorded, truths, outcomes):
                outcome.update(gradient_mia(rec, setup.new_model(), setup.train, test, truth.indices, config, device))
        return outcomes

    def hook(recorded: RecordedUpdate) -> dict[str, Any]:
        return hook_round([recorded])[0]

    hook.round = hook_round  # type: ignore[attr-defined]  # UpdateRecorder.record_round uses it
    return hook


def _attack_means(victims: list[dict[str, Any]]) -> dict[str, float]:
    """Per-round means of the attack metrics over the round's victims (``attack_psnr_mean``, ...)."""
    out = {}
    for key in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc", "corr_mean"):
        values = [v[key] for v in victims if isinstance(v.get(key), (int, float)) and np.isfinite(v[key])]
        if values:
            out[f"attack_{key}"] = float(np.mean(values))
    return out


def discover_nodes(grid: Grid, config: ExperimentConfig, wait: float = 30.0, settle: float = 3.0) -> dict[int, int]:
    """SuperNode id -> partition-id, asked from each node's config once (a Flower query message).

    Waits until every client has a SuperNode or the node count has not changed
    for ``settle`` s. With fewer nodes than clients, the node with partition-id
    ``i`` hosts clients ``p`` with ``p mod N == i``.
    """
    want = config.federation.num_clients
    deadline, last_change, count = time.time() + wait, time.time(), 0
    while time.time() < deadline:
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, last_change = now, time.time()
        if count >= want or (count and time.time() - last_change >= settle):
            break
        time.sleep(0.2)
    if not count:
        raise ConfigError("no SuperNode connected: start the simulation with num-supernodes >= 1, or (Deployment "
                          "Engine) start SuperNodes with flower-supernode --superlink <host:port> --node-config ...")
    if count > want:
        raise ConfigError(f"{count} SuperNodes for federation.num_clients={want}: use at most {want} SuperNodes")
    queries = [Message(RecordDict(), node, MessageType.QUERY) for node in grid.get_node_ids()]
    mapping = {}
    timeout = config.federation.round_timeout
    for reply in grid.send_and_receive(queries, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"SuperNode {reply.metadata.src_node_id} failed to describe itself: {reply.error.reason}")
        mapping[reply.metadata.src_node_id] = int(reply.content["node"]["partition-id"])
    if len(mapping) < count:
        raise ConfigError(f"only {len(mapping)} of {count} SuperNodes answered within federation.round_timeout="
                          f"{timeout:g} s (client processes may still be starting): raise federation.round_timeout")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise RuntimeError(f"SuperNodes report partition ids {sorted(mapping.values())}, expected 0..{len(mapping) - 1}")
    if count != want:
        log(INFO, "fl-privacy: %d clients on %d SuperNodes (client p trains on the node with partition-id p mod %d)",
            want, count, count)
    return mapping


def _igsa(model: torch.nn.Module, test: Any, config: ExperimentConfig, device: Any) -> dict[str, float]:
    """IGSA of the global model around a seeded draw of test images (the same images every round)."""
    from fl_privacy.metrics.igsa import igsa

    e = config.evaluation
    rng = np.random.default_rng(config.seed)
    idx = np.sort(rng.choice(len(test), min(e.igsa_images, len(test)), replace=False))
    x, y = test.batch(idx, normalize=config.data.normalize, device=device)
    result = igsa(model.to(device), x, y, radius=e.igsa_radius, samples=e.igsa_samples, probes=e.igsa_probes,
                  seed=config.seed)
    return {"igsa": result.igsa, "igsa_roughness": result.roughness}


def _probe(model: torch.nn.Module, config: ExperimentConfig, run: RunDirectory, server_round: int) -> dict[str, Any]:
    """SoK sec. 5.1: attack a one-step FedSGD gradient of ``attack.probe_images`` test images on the current global
    model (the model clients receive in round ``server_round + 1``); the same images every round."""
    from fl_privacy.audit.oneshot import attack_once

    count = config.attack.probe_images
    test_size = len(load_split(config, "test"))
    rng = np.random.default_rng(config.seed + 1)
    indices = sorted(rng.choice(test_size, min(count, test_size), replace=False).tolist())
    probe = config.model_copy(update={
        # eval mode: BatchNorm uses the global model's running statistics (Inverting Gradients' setting)
        "training": config.training.model_copy(update={"algorithm": "fedsgd", "batch_size": len(indices),
                                                        "local_steps": 0, "model_mode": "eval"}),
        "attack": config.attack.model_copy(update={"progress": False}),
        "name": f"{config.name}-probe-round{server_round}",
    })
    state = {name: v.detach().clone() for name, v in model.state_dict().items()}
    _, entry = attack_once(probe, str(run.root / "probes" / f"round{server_round:03d}"), None, "test", indices,
                           None, global_state=state, round_number=server_round + 1)
    return {f"probe_{key}": entry[key] for key in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc")
            if isinstance(entry.get(key), (int, float))}


def _round_line(record: dict[str, Any]) -> str:
    parts = [f"round {record['round']}"]
    if "test_accuracy" in record:
        parts.append(f"test accuracy {record['test_accuracy']:.4f} (loss {record['test_loss']:.4f})")
    if "igsa" in record:
        parts.append(f"IGSA {record['igsa']:.4g}")
    if "probe_psnr_mean" in record:
        parts.append(f"probe attack PSNR {record['probe_psnr_mean']:.2f} dB, SSIM {record['probe_ssim_mean']:.3f}")
    if record.get("train_loss") is not None:
        parts.append(f"train loss {record['train_loss']:.4f}")
    if record.get("failed_partitions"):
        parts.append(f"failed clients {record['failed_partitions']}")
    if record.get("recorded"):
        parts.append(f"recorded victims {record['recorded']}")
    if "round_seconds" in record:
        parts.append(f"{record['round_seconds']:.1f} s")
    return ", ".join(parts)


def _attack_note(config: ExperimentConfig) -> str | None:
    """What the run's DP mechanism does not protect against, shown next to the attacks on recorded updates."""
    from fl_privacy.dp.guarantee import NOT_PROTECTED, resolve

    mechanism = resolve(config)
    if mechanism is None or mechanism.name not in NOT_PROTECTED:
        return None
    return f"{mechanism.name} DP does not protect against {NOT_PROTECTED[mechanism.name]}."


def _notes(config: ExperimentConfig, run: RunDirectory, problems: list[str] | None = None) -> list[str]:
    d, t, f = config.data, config.training, config.federation
    part = {"iid": "IID", "dirichlet": f"Dirichlet(alpha={d.alpha})", "classes": f"{d.classes_per_client} classes per client"}
    pipeline = build_pipeline(config.defenses)
    defenses = "; ".join(str(d) for d in pipeline.describe()) or "none"
    records = run.read_jsonl("rounds.jsonl")
    guarantee = privacy_block(config, records, max([r["round"] for r in records] or [0]), problems)
    return [
        f"- data: {d.dataset}, {f.num_clients} clients, {part[d.partition]}",
        f"- model: {config.model.name} {config.model.options() or ''}".rstrip(),
        f"- training: {t.algorithm}, lr {t.lr}, batch {t.batch_size}, "
        + (f"{t.local_epochs} epoch(s)" if t.algorithm == "fedavg" else "one gradient")
        + f", {f.rounds} rounds, seed {config.seed}",
        f"- defenses: {defenses}; attack: {config.attack.name} on rounds {config.attack.rounds}",
        f"- run directory: `{run.root}`",
    ] + summary_lines(guarantee)


