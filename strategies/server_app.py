"""The ServerApp: honest aggregation, recording of victims, evaluation, reports.

``flwr run .`` reads the config from the run config (``[tool.flwr.app.config]``
plus ``--run-config`` overrides, optionally a YAML file named by ``config``);
``fl-privacy run`` calls ``run_federation`` with a config it loaded itself.
"""

from __future__ import annotations

import time
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fl_privacy.config import ConfigError, ExperimentConfig, from_run_config
from fl_privacy.data import ImageData
from fl_privacy.defenses import build_pipeline
from fl_privacy.evaluation import evaluate_model
from fl_privacy.recording import AttackHook, RecordedUpdate, UpdateRecorder
from fl_privacy.reporting import RunDirectory, write_summary
from fl_privacy.run_setup import RunSetup, build_model_for, load_split, prepare, resolve_device, victim_steps
from strategies.curious_fedavg import CuriousFedAvg
from strategies.streaming_grid import StreamingGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = from_run_config(context.run_config)
    run_federation(grid, config)


def run_federation(grid: Grid, config: ExperimentConfig, out: str | None = None) -> RunDirectory:
    """Run all rounds on ``grid`` and leave a run directory with records and a summary."""
    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    setup = prepare(config)  # fails fast on bad data/partition/model settings
    node_partitions = discover_nodes(grid, config)
    run = RunDirectory.create(config, out)
    log(INFO, "fl-privacy: run directory %s", run.root)
    device = resolve_device(config.resources.device)
    model = setup.new_model()
    param_names = [name for name, _ in model.named_parameters()]
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
        from fl_privacy.attacks.mia_round import MembershipAuditor

        auditor = MembershipAuditor(config, setup.train, test, setup.partitions,
                                    lambda: build_model_for(config, setup.train, seed=-1), run.root / "mia", device)
    strategy = CuriousFedAvg(config, recorder, param_names, node_partitions)
    started = time.time()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
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
            record.update({k: info.get(k) for k in ("train_loss", "clients", "failures", "partitions", "recorded",
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
        write_summary(run, f"Run {config.name}", _notes(config, run))
        log(INFO, "fl-privacy: %s", _round_line(record))
        metrics = {k: float(v) for k, v in record.items() if k.startswith("test_")}
        return MetricRecord(metrics) if metrics else None

    strategy.start(
        grid=StreamingGrid(grid), initial_arrays=ArrayRecord(model.state_dict()), num_rounds=config.federation.rounds,
        timeout=config.federation.round_timeout,
        evaluate_fn=evaluate,
    )
    guarantee = build_pipeline(config.defenses).privacy(config.federation.rounds, config.federation.fraction_train)
    run.write_json("final.json", {"finished": True, "seconds": time.time() - started, "privacy": guarantee})
    if guarantee:
        log(INFO, "fl-privacy: client-level DP after %d rounds: epsilon %.3f at delta %g",
            config.federation.rounds, guarantee["epsilon"], guarantee["delta"])
    log(INFO, "fl-privacy: finished in %.1f s; summary at %s", time.time() - started, run.root / "summary.md")
    return run


def _victim_hook(setup: RunSetup, test: ImageData, run: RunDirectory, device: torch.device) -> AttackHook | None:
    """Analyses of each recorded victim update: gradient inversion and/or gradient-similarity MIA.

    The evaluator side rebuilds the victim's ground truth from the config; the
    attacks themselves only get an Observation (inversion) or the recorded update
    and candidate samples (MIA).
    """
    config = setup.config
    if config.attack.name == "none" and not config.mia.gradient:
        return None
    from fl_privacy.attacks.observe import VictimTruth
    from fl_privacy.attacks.runner import attack_updates
    from fl_privacy.metrics import try_lpips

    lpips = None
    if config.attack.name != "none":
        lpips = try_lpips(device=str(device))
        if lpips is None:
            log(INFO, "fl-privacy: LPIPS unavailable (no pretrained backbone weights here): reported as unavailable")

    def hook_round(recorded: list[RecordedUpdate]) -> list[dict[str, Any]]:
        """The round's victims: one batched inversion (they share the global model), then MIA per victim."""
        truths = [VictimTruth.from_steps(setup.train, victim_steps(setup, rec.server_round, rec.partition_id),
                                         config.data.normalize) for rec in recorded]
        outcomes: list[dict[str, Any]] = [{} for _ in recorded]
        if config.attack.name != "none":
            outcomes = attack_updates(recorded, truths, setup.new_model(), setup.train, config, run.root / "attacks",
                                      device, lpips)
            for rec, outcome in zip(recorded, outcomes):
                log(INFO, "fl-privacy: attack on client %d (round %d): PSNR %.2f dB, SSIM %.3f, label acc %s, %.1f s",
                    rec.partition_id, rec.server_round, outcome["psnr_mean"], outcome["ssim_mean"],
                    outcome["label_acc"], outcome["seconds"])
        if config.mia.gradient:
            from fl_privacy.attacks.mia_round import gradient_mia

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
    for key in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc"):
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
        raise ConfigError("no SuperNode connected: start the simulation with num-supernodes >= 1")
    if count > want:
        raise ConfigError(f"{count} SuperNodes for federation.num_clients={want}: use at most {want} SuperNodes")
    queries = [Message(RecordDict(), node, MessageType.QUERY) for node in grid.get_node_ids()]
    mapping = {}
    for reply in grid.send_and_receive(queries, timeout=config.federation.round_timeout):
        if reply.has_error():
            raise RuntimeError(f"SuperNode {reply.metadata.src_node_id} failed to describe itself: {reply.error.reason}")
        mapping[reply.metadata.src_node_id] = int(reply.content["node"]["partition-id"])
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
    from fl_privacy.attacks.oneshot import attack_once

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
    if record.get("recorded"):
        parts.append(f"recorded victims {record['recorded']}")
    if "round_seconds" in record:
        parts.append(f"{record['round_seconds']:.1f} s")
    return ", ".join(parts)


def _notes(config: ExperimentConfig, run: RunDirectory) -> list[str]:
    d, t, f = config.data, config.training, config.federation
    part = {"iid": "IID", "dirichlet": f"Dirichlet(alpha={d.alpha})", "classes": f"{d.classes_per_client} classes per client"}
    pipeline = build_pipeline(config.defenses)
    defenses = "; ".join(str(d) for d in pipeline.describe()) or "none"
    guarantee = pipeline.privacy(f.rounds, f.fraction_train)
    return [
        f"- data: {d.dataset}, {f.num_clients} clients, {part[d.partition]}",
        f"- model: {config.model.name} {config.model.options() or ''}".rstrip(),
        f"- training: {t.algorithm}, lr {t.lr}, batch {t.batch_size}, "
        + (f"{t.local_epochs} epoch(s)" if t.algorithm == "fedavg" else "one gradient")
        + f", {f.rounds} rounds, seed {config.seed}",
        f"- defenses: {defenses}; attack: {config.attack.name} on rounds {config.attack.rounds}",
        f"- run directory: `{run.root}`",
    ] + ([f"- privacy: (ε = {guarantee['epsilon']:.3f}, δ = {guarantee['delta']:g}) after {f.rounds} rounds "
          f"(Opacus RDP accountant, client sampling rate {f.fraction_train})"] if guarantee else [])


