"""The words around a federation's records: the log line per round and the notes of ``summary.md``."""

from __future__ import annotations

from typing import Any

from fl_privacy.config import ExperimentConfig
from fl_privacy.defenses import build_pipeline
from fl_privacy.dp.report import privacy_block, summary_lines
from fl_privacy.reporting import RunDirectory


def round_line(record: dict[str, Any]) -> str:
    """One log line for a round's record."""
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


def attack_note(config: ExperimentConfig) -> str | None:
    """What the run's DP mechanism does not protect against, shown next to the attacks on recorded updates."""
    from fl_privacy.dp.guarantee import NOT_PROTECTED, resolve

    mechanism = resolve(config)
    if mechanism is None or mechanism.name not in NOT_PROTECTED:
        return None
    return f"{mechanism.name} DP does not protect against {NOT_PROTECTED[mechanism.name]}."


def run_status(config: ExperimentConfig, run: RunDirectory, done: int | None) -> list[str]:
    """Where the run stands, so the summary of a killed run says where it stopped and how to continue."""
    total = config.federation.rounds
    if done is None:
        return [f"- status: finished, all {total} rounds"]
    status = (f"- status: {done} of {total} rounds finished; not finished yet (a run that was stopped continues "
              f"with `fl-privacy run CONFIG --out {run.root} --resume`)")
    return [status]


def run_notes(config: ExperimentConfig, run: RunDirectory, problems: list[str] | None = None) -> list[str]:
    """The settings block of ``summary.md``: data, model, training, defenses, attack, privacy guarantee."""
    d, t, f = config.data, config.training, config.federation
    part = {"iid": "IID", "dirichlet": f"Dirichlet(alpha={d.alpha})", "classes": f"{d.classes_per_client} classes per client"}
    pipeline = build_pipeline(config.defenses)
    defenses = "; ".join(str(d) for d in pipeline.describe()) or "none"
    records = run.read_jsonl("rounds.jsonl")
    guarantee = privacy_block(config, records, max([r["round"] for r in records] or [0]), problems)
    strategy = "" if f.strategy == "fedavg" else f", server strategy {f.strategy}"
    return [
        f"- data: {d.dataset}, {f.num_clients} clients, {part[d.partition]}",
        f"- model: {config.model.name} {config.model.options() or ''}".rstrip(),
        f"- training: {t.algorithm}, lr {t.lr}, batch {t.batch_size}, "
        + (f"{t.local_epochs} epoch(s)" if t.algorithm == "fedavg" else "one gradient")
        + f", {f.rounds} rounds, seed {config.seed}{strategy}",
        f"- defenses: {defenses}; attack: {config.attack.name} on rounds {config.attack.rounds}",
        f"- run directory: `{run.root}`",
    ] + summary_lines(guarantee)
