"""``report.html`` of one run: what was attacked, knowing what, behind which defenses, and what leaked.

Built only from what the run folder holds (``config.yaml``, ``environment.json``,
``rounds.jsonl``, ``final.json`` and the pictures), so it can be rewritten after
every round and regenerated later: ``python -m fl_privacy.reporting.run_report RUN_DIR``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fl_privacy.reporting.html import image, number, render, write_page
from fl_privacy.reporting.redact import redact
from fl_privacy.reporting.run_dir import RunDirectory
from fl_privacy.reporting.summary import _ATTACK_COLUMNS, _COLUMNS

REPORT = "report.html"
_EXTRA_COLUMNS = [("failures", "failures", "{}")]


def write_run_report(run: RunDirectory) -> Path | None:
    """Render ``report.html`` into the run folder from its current records (cheap: no plotting).

    A page that cannot be rendered is logged and skipped: the run and its records go on."""
    try:
        return write_page(run.root / REPORT, render("run.html", **run_context(run.root)))
    except Exception as err:  # noqa: BLE001 - a report must never end a long run
        logging.getLogger("fl_privacy").warning("report.html of %s not written: %s: %s", run.root,
                                                type(err).__name__, err)
        return None


def run_context(root: Path) -> dict[str, Any]:
    config = _read_yaml(root / "config.yaml")
    records = _read_jsonl(root / "rounds.jsonl")
    final = _read_json(root / "final.json")
    victims = [v for r in records for v in r.get("victims") or []]
    return {
        "title": f"Run {config.get('name', root.name)}",
        "root": str(root),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "status": _status(config, records, final),
        "setting": _setting(config),
        "threat": threat_model(config),
        "defenses": _defenses(config),
        "privacy": _privacy(final),
        "rounds": _rounds_table(records),
        "plots": [p for p in (image(root, "accuracy.png", "Test accuracy per round"),
                              image(root, "attack.png", "Attack quality per round")) if p],
        "victims": [_victim(root, v, config) for v in victims if "psnr_mean" in v or "error" in v],
        "mia": _mia(root, records),
        "gradient_mia": [v for v in victims if "gradient_mia_auc" in v],
        "costs": costs(records, final, victims),
        "environment": redact(_read_json(root / "environment.json") or {}),
        "config_text": yaml.safe_dump(redact(config), sort_keys=False),
    }


def _status(config: dict[str, Any], records: list[dict[str, Any]], final: dict[str, Any] | None) -> str:
    planned = (config.get("federation") or {}).get("rounds")
    done = max((r.get("round", 0) for r in records), default=0)
    if final and final.get("finished"):
        seconds = final.get("seconds")
        return "finished" + (f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
    if final:
        return "stopped: " + ", ".join(f"{k} {v}" for k, v in final.items())
    return f"running: {done} of {planned} rounds recorded (this page is rewritten after each round)"


def _setting(config: dict[str, Any]) -> list[tuple[str, str]]:
    d, f, t, m = (config.get(k) or {} for k in ("data", "federation", "training", "model"))
    partition = {"iid": "IID", "dirichlet": f"Dirichlet(α = {d.get('alpha')})",
                 "classes": f"{d.get('classes_per_client')} classes per client"}.get(d.get("partition"), d.get("partition"))
    local = ("one gradient of one batch (FedSGD)" if t.get("algorithm") == "fedsgd" else
             f"{t.get('local_steps')} local steps" if t.get("local_steps") else f"{t.get('local_epochs')} local epoch(s)")
    options = {k: v for k, v in m.items() if k != "name" and v is not None}
    return [
        ("data", f"{d.get('dataset')}, {f.get('num_clients')} clients, {partition}"),
        ("model", f"{m.get('name')}" + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")),
        ("training", (f"{t.get('algorithm')}: {local}, batch {t.get('batch_size')}, lr {t.get('lr')}, "
                      f"model mode {t.get('model_mode')}")),
        ("federation", (f"{f.get('rounds')} rounds, fraction trained per round {f.get('fraction_train')}, "
                        f"seed {config.get('seed')}")),
    ]


def threat_model(config: dict[str, Any]) -> dict[str, Any]:
    """The attacker in words: what it observes and which extra knowledge the threat level grants."""
    from fl_privacy.config import ThreatConfig

    attack, mia, training = config.get("attack") or {}, config.get("mia") or {}, config.get("training") or {}
    granted = attack.get("threat") or {}
    knowledge = []
    for name, field in ThreatConfig.model_fields.items():
        knowledge.append({"name": name, "granted": bool(granted.get(name, field.default)),
                          "what": field.description or name})
    for name in sorted(set(granted) - set(ThreatConfig.model_fields)):  # levels this code does not describe yet
        knowledge.append({"name": name, "granted": granted[name], "what": name})
    kind = "gradient of one batch" if training.get("algorithm") == "fedsgd" else "weight difference w_client − w_global"
    observes = (f"The server is honest-but-curious: it aggregates honestly, and for the victims of rounds "
                f"{attack.get('rounds')} ({_victims_text(attack)}) keeps each update exactly as received, after the "
                f"client's defenses: the {kind}, the global model it sent, the client's buffers and the number of "
                f"examples. It never sees the victim's images, labels or dataset indices (the evaluator keeps those "
                f"apart to score the attack).")
    attacks = []
    if attack.get("name", "none") != "none":
        options = {k: v for k, v in (attack.get("gia") or {}).items() if v is not None}
        attacks.append(f"gradient inversion {attack['name']}"
                       + (f" with {', '.join(f'{k}={v}' for k, v in options.items())}" if options else ""))
    if mia.get("rounds"):
        names = mia.get("attacks")
        attacks.append(f"membership inference on the global model in rounds {mia['rounds']} "
                       f"({', '.join(names) if isinstance(names, list) else names})")
    if mia.get("gradient"):
        attacks.append("membership inference on single victim updates (gradient similarity)")
    return {"observes": observes, "knowledge": knowledge, "attacks": attacks or ["none (updates only recorded)"]}


def _victims_text(attack: dict[str, Any]) -> str:
    if attack.get("victim_ids"):
        return f"partition ids {attack['victim_ids']}"
    return f"the {attack.get('victims')} lowest partition id(s) that trained"


def _defenses(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": d.get("name"), "params": {k: v for k, v in d.items() if k != "name"}}
            for d in config.get("defenses") or []]


def _privacy(final: dict[str, Any] | None) -> dict[str, Any]:
    """Whatever ``final.json`` says about privacy, shown field by field (no guarantee is made up here)."""
    if final is None:
        return {"state": "pending", "fields": []}
    value = final.get("privacy")
    if not value:
        return {"state": "none", "fields": []}
    items = value.items() if isinstance(value, dict) else [("guarantee", value)]
    return {"state": "given", "fields": [(k, v if isinstance(v, (int, float, str)) else json.dumps(v))
                                         for k, v in items]}


def _rounds_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    columns = [c for c in _COLUMNS + _EXTRA_COLUMNS + _ATTACK_COLUMNS
               if c[0] == "round" or any(r.get(c[0]) not in (None, []) for r in records)]
    rows = [[_cell(r.get(key)) for key, _, _ in columns] for r in records]
    return {"headers": [h for _, h, _ in columns], "rows": rows}


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "–"
    return number(value)


def _victim(root: Path, v: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    truth, used = v.get("labels_true"), v.get("labels_used")
    granted = ((config.get("attack") or {}).get("threat") or {}).get("labels")
    return {
        "round": v.get("round"), "client": v.get("partition_id"), "images": v.get("images"),
        "psnr": v.get("psnr_mean"), "ssim": v.get("ssim_mean"), "lpips": v.get("lpips_mean"), "mse": v.get("mse_mean"),
        "error": v.get("error"),
        "labels": {"how": "granted by the threat level" if granted else "inferred by the attack",
                   "true": truth, "used": used, "accuracy": v.get("label_acc")} if truth is not None else None,
        "iterations": v.get("iterations"), "seconds": v.get("seconds"), "per_iteration": v.get("seconds_per_iteration"),
        "notes": v.get("notes") or [],
        "grid": image(root, v.get("grid"), f"round {v.get('round')}, client {v.get('partition_id')}: "
                                           "originals (top) and reconstructions (bottom)"),
        "trace": image(root, v.get("trace"), "attack objective per iteration"),
    }


def _mia(root: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        audit = r.get("mia")
        if not audit:
            continue
        out.append({"round": r["round"], "members": audit.get("members"), "nonmembers": audit.get("nonmembers"),
                    "attacks": [{"name": name, **m} for name, m in (audit.get("attacks") or {}).items()],
                    "warnings": audit.get("warnings") or [],
                    "roc": image(root, audit.get("roc"), f"ROC of round {r['round']} (log axes)")})
    return out


def costs(records: list[dict[str, Any]], final: dict[str, Any] | None, victims: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Seconds, seconds per attack iteration and bytes on the wire, as measured by the run."""
    rows: list[tuple[str, str]] = []
    total = (final or {}).get("seconds") or max((r.get("elapsed_seconds") or 0 for r in records), default=0)
    rows.append(("wall time of the run", f"{number(float(total))} s"))
    rounds = [r["round_seconds"] for r in records if isinstance(r.get("round_seconds"), (int, float))]
    if rounds:
        rows.append(("seconds per round (mean, incl. evaluation and attacks)", number(sum(rounds) / len(rounds))))
    attacked = [v for v in victims if isinstance(v.get("seconds"), (int, float))]
    if attacked:
        rows.append(("attack seconds (sum over victims)", number(sum(v["seconds"] for v in attacked))))
        per = [v["seconds_per_iteration"] for v in attacked if isinstance(v.get("seconds_per_iteration"), (int, float))]
        if per:
            rows.append(("seconds per attack iteration (mean)", number(sum(per) / len(per))))
    payload = [(r["payload_kib"], r.get("clients") or 0) for r in records if isinstance(r.get("payload_kib"), (int, float))]
    if payload:
        per_client = sum(p for p, _ in payload) / len(payload) * 1024
        rows.append(("bytes sent per client per round (mean)", f"{per_client:,.0f}"))
        rows.append(("bytes sent by all clients, all rounds", f"{sum(p * 1024 * c for p, c in payload):,.0f}"))
    return rows


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(write_run_report(RunDirectory(folder)))
