"""``summary.md`` and the metric-vs-round plot, rewritten as each round ends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fl_privacy.metrics.catalog import ATTACK_PREFIX
from fl_privacy.reporting.images import _plt
from fl_privacy.reporting.records import RoundRecord, VictimEntry
from fl_privacy.reporting.run_dir import RunDirectory

_COLUMNS = [
    ("round", "round", "{}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("igsa", "IGSA", "{:.4g}"),
    ("probe_psnr_mean", "probe PSNR dB", "{:.2f}"),
    ("probe_ssim_mean", "probe SSIM", "{:.3f}"),
    ("clients", "clients", "{}"),
    ("failed_partitions", "failed clients", "{}"),
    ("recorded", "recorded victims", "{}"),
    ("round_seconds", "round s", "{:.1f}"),
    ("payload_kib", "KiB sent/client", "{:.1f}"),
    ("compression", "compression x", "{:.1f}"),
]
_ATTACK_COLUMNS = [
    (f"{ATTACK_PREFIX}psnr_mean", "attack PSNR dB", "{:.2f}"),
    (f"{ATTACK_PREFIX}ssim_mean", "attack SSIM", "{:.3f}"),
    (f"{ATTACK_PREFIX}lpips_mean", "attack LPIPS", "{:.3f}"),
    (f"{ATTACK_PREFIX}label_acc", "label acc", "{:.2f}"),
]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "–"
    return fmt.format(value)


def write_summary(run: RunDirectory, title: str, notes: list[str] | None = None, attack_note: str | None = None) -> Path:
    """Table of per-round records plus an accuracy plot (when there is something to plot).

    ``attack_note``: printed with the attack results (e.g. what the run's DP does not protect against)."""
    records = run.read_jsonl("rounds.jsonl")
    lines = [f"# {title}", ""]
    lines += notes or []
    columns = [c for c in _COLUMNS + _ATTACK_COLUMNS
               if c[0] == "round" or any(r.get(c[0]) not in (None, []) for r in records)]
    lines += ["", "## Rounds", ""]
    lines.append("| " + " | ".join(h for _, h, _ in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for record in records:
        lines.append("| " + " | ".join(_cell(record.get(k), f) for k, _, f in columns) + " |")
    plot = _plot_accuracy(run, records)
    if plot:
        lines += ["", f"![test accuracy per round]({plot.name})"]
    victims = _victim_section(run, records)
    if victims and attack_note:
        victims[3:3] = [f"Note: {attack_note}", ""]
    lines += victims
    lines += _failed_victims(records)
    lines += _mia_section(records)
    lines += ["", ("Files: `config.yaml` (resolved config), `environment.json` (versions), `rounds.jsonl` "
              "(one record per round), `updates/` (the server's view of recorded victim updates), "
              "`ground_truth/` (the victims' sample indices, for the evaluator only).")]
    path = run.root / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _victim_section(run: RunDirectory, records: list[dict[str, Any]]) -> list[str]:
    """Per-victim attack results with their pictures, and the attack metrics over rounds."""
    victims = [v.to_json() for v in _victims(records) if v.attacked]
    if not victims:
        return []
    lines = ["", "## Attacked victims", "",
             "| round | client | images | PSNR dB | SSIM | LPIPS | label acc | iterations | s/iter | picture |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in victims:
        lpips = _cell(v.get("lpips_mean"), "{:.3f}") if v.get("lpips") != "unavailable" else "unavailable"
        lines.append(
            f"| {v['round']} | {v['partition_id']} | {v['images']} | {_cell(v['psnr_mean'], '{:.2f}')} | "
            f"{_cell(v['ssim_mean'], '{:.3f}')} | {lpips} | {_cell(v.get('label_acc'), '{:.2f}')} | "
            f"{v['iterations']} | {v['seconds_per_iteration']:.3f} | [grid]({v['grid']}) |"
        )
    plot = _plot_attack(run, records)
    if plot:
        lines += ["", f"![attack quality per round]({plot.name})"]
    return lines


def _failed_victims(records: list[dict[str, Any]]) -> list[str]:
    """Victims whose client failed or timed out: nothing was attacked, and the report says so."""
    failed = [v for v in _victims(records) if v.failed]
    if not failed:
        return []
    return ["", "## Failed victims", "", "| round | client | reason |", "|---|---|---|"] + \
        [f"| {v.round} | {v.partition_id} | {v.reason} |" for v in failed]


def _victims(records: list[dict[str, Any]]) -> list[VictimEntry]:
    """Every round's victims, typed (attacked, failed, or recorded only)."""
    return [v for r in records for v in RoundRecord.from_json(r).victims]


def _mia_section(records: list[dict[str, Any]]) -> list[str]:
    """Membership inference on the global model: ROC numbers per attack and round, with the ROC plot."""
    audits = [r for r in records if r.get("mia")]
    gradient = [v.to_json() for v in _victims(records) if "gradient_mia_auc" in v.analyses]
    if not audits and not gradient:
        return []
    lines = ["", "## Membership inference", ""]
    if audits:
        lines += [("Global model; members are clients' training samples, non-members held-out test samples "
                  "(balanced); thresholds and LiRA/RMIA statistics come from reference models trained on "
                  "other held-out samples."), "",
                  "| round | attack | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | ROC |", "|---|---|---|---|---|---|"]
        for r in audits:
            for name, m in r["mia"]["attacks"].items():
                lines.append(f"| {r['round']} | {name} | {m['auc']:.3f} | {m['tpr_at_1pct_fpr']:.3f} | "
                             f"{m['tpr_at_0.1pct_fpr']:.3f} | [roc]({r['mia']['roc']}) |")
        warnings = sorted({w for r in audits for w in r["mia"].get("warnings", [])})
        lines += [f"\nNote: {w}" for w in warnings]
    if gradient:
        lines += ["", "Server's view of single updates (gradient similarity of candidates to the update):", "",
                  "| round | client | members | non-members | AUC | TPR @ 1% FPR |", "|---|---|---|---|---|---|"]
        for v in gradient:
            lines.append(f"| {v['round']} | {v['partition_id']} | {v['gradient_mia_members']} | "
                         f"{v['gradient_mia_nonmembers']} | {v['gradient_mia_auc']:.3f} | "
                         f"{v['gradient_mia_tpr_at_1pct_fpr']:.3f} |")
    return lines


def _plot_attack(run: RunDirectory, records: list[dict[str, Any]]) -> Path | None:
    rows = [(r["round"], r.get("attack_psnr_mean"), r.get("attack_ssim_mean")) for r in records
            if r.get("attack_psnr_mean") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    rounds = [r[0] for r in rows]
    left.plot(rounds, [r[1] for r in rows], marker="o")
    left.set_ylabel("PSNR (dB)")
    right.plot(rounds, [r[2] for r in rows], marker="o", color="tab:orange")
    right.set_ylabel("SSIM")
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    return _save(plt, fig, run.root / "attack.png")


def _plot_accuracy(run: RunDirectory, records: list[dict[str, Any]]) -> Path | None:
    points = [(r["round"], r["test_accuracy"]) for r in records if r.get("test_accuracy") is not None]
    if len(points) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    return _save(plt, fig, run.root / "accuracy.png")


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
