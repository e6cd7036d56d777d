"""``fl-privacy``: everything that is not a single ``flwr run``.

    fl-privacy run CONFIG.yaml [--set key=value ...] [--out DIR] [--backend inprocess|ray]
    fl-privacy run EXPERIMENT.yaml [--profile P] [--workers N | --ray-address ADDR]
    fl-privacy attack CONFIG.yaml [--set key=value ...] [--out DIR] [--split test --indices 0,1]
    fl-privacy validate CONFIG.yaml [--set key=value ...]
    fl-privacy report EXPERIMENT_DIR [EXPERIMENT.yaml]
    fl-privacy doctor
    fl-privacy audit-dp CONFIG.yaml [--set key=value ...] [--canaries N] [--rounds T] [--out FILE]
    fl-privacy superlink start|stop|status
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from fl_privacy.config import ConfigError
from fl_privacy.launch.commands import (
    cmd_attack,
    cmd_audit_dp,
    cmd_doctor,
    cmd_report,
    cmd_run,
    cmd_validate,
)


def _add_run_parser(sub: argparse._SubParsersAction, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """``fl-privacy run``: one federation (in-process or on Ray) or an experiment sweep."""
    run = sub.add_parser("run", help="run a simulation defined by a YAML config")
    with_config(run)
    run.add_argument("--out", help="run directory (default: <out_dir>/<name>-<timestamp>)")
    run.add_argument("--force", action="store_true", help="replace the run already in --out")
    run.add_argument("--resume", action="store_true",
                     help="continue the stopped run in --out after its last finished round (same config)")
    run.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess",
                     help="inprocess: clients one after another in this process (fast for small studies); "
                          "ray: Flower's Simulation Engine with parallel client actors (resources.* apply)")
    run.add_argument("--profile", default=None,
                     help="experiment files: which profile (quick = CPU minutes, the default; full = the paper's setting)")
    run.add_argument("--supernodes", type=int, default=0,
                     help="number of SuperNodes (default: one per client); fewer nodes host several clients")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="experiment files: run N runs at once on Ray workers (a local Ray instance, or at most N "
                          "on the cluster of --ray-address); default: one after another in this process")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="experiment files: spread the runs over an existing Ray cluster (auto, or HEAD_IP:6379 of "
                          "`ray start --head`); its nodes need the project, the data and --out at the same paths")
    run.add_argument("--cpus-per-run", type=int, default=None, metavar="C",
                     help="with --workers/--ray-address: CPUs (= torch threads) per run (default: "
                          "experiment.resources.cpus, else 1)")
    run.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                     help="with --workers/--ray-address: GPUs per run, a fraction such as 0.25 shares one GPU "
                          "(default: experiment.resources.gpus, else 0)")
    run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl-privacy", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", help="YAML experiment file (defaults apply when omitted)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set training.lr=0.1 (repeatable)")

    _add_run_parser(sub, with_config)

    attack = sub.add_parser("attack", help="build one client update and attack it (no federation)")
    with_config(attack)
    attack.add_argument("--out", help="run directory (default: <out_dir>/<name>-<timestamp>)")
    attack.add_argument("--force", action="store_true", help="replace the run already in --out")
    attack.add_argument("--client", type=int, default=None, help="victim partition id (default: attack.victim_ids[0] or 0)")
    attack.add_argument("--split", choices=("train", "test"), default="train", help="split of --indices")
    attack.add_argument("--indices", help="comma-separated sample indices the victim trains on (instead of a partition)")
    attack.set_defaults(func=cmd_attack)

    validate = sub.add_parser("validate", help="check a config and its data without training")
    with_config(validate)
    validate.add_argument("--profiles", nargs="*", help="experiment files: profiles to check (default: quick)")
    validate.set_defaults(func=cmd_validate)

    report = sub.add_parser("report", help="redraw an experiment folder's tables and figures from its results.csv")
    report.add_argument("dir", help="the experiment's output folder (--out of fl-privacy run)")
    report.add_argument("config", nargs="?", help="experiment file (default: the one the folder records)")
    report.set_defaults(func=cmd_report)

    from fl_privacy.launch.train_generator import add_train_generator_parser

    add_train_generator_parser(sub)

    audit = sub.add_parser("audit-dp", help="canary audit: empirical epsilon of the configured DP mechanism")
    with_config(audit)
    audit.add_argument("--canaries", type=int, default=200, help="canary clients / examples (default 200)")
    audit.add_argument("--rounds", type=int, default=None, help="rounds audited (default federation.rounds)")
    audit.add_argument("--seed", type=int, default=0, help="seed of the canaries and the noise")
    audit.add_argument("--out", help="JSON file (default <out_dir>/<name>-audit-dp.json)")
    audit.set_defaults(func=cmd_audit_dp)

    from fl_privacy.launch.superlink import add_superlink_parser

    add_superlink_parser(sub)

    doctor = sub.add_parser("doctor", help="show available datasets, devices and optional weights")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from fl_privacy.federation.failures import RunStopped

        if not isinstance(err, RunStopped):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


