"""``fl-privacy``: everything that is not a single ``flwr run``.

    fl-privacy run CONFIG.yaml [--set key=value ...] [--out DIR] [--backend inprocess|ray]
    fl-privacy run EXPERIMENT.yaml [--profile P] [--workers N | --ray-address ADDR]
    fl-privacy attack CONFIG.yaml [--set key=value ...] [--out DIR] [--split test --indices 0,1]
    fl-privacy validate CONFIG.yaml [--set key=value ...]
    fl-privacy doctor
    fl-privacy audit-dp CONFIG.yaml [--set key=value ...] [--canaries N] [--rounds T] [--out FILE]
    fl-privacy superlink start|stop|status
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from fl_privacy.config import ConfigError, ExperimentConfig, load_config


def _load(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, list(args.set or []))


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the config and the setup it implies (data present, batch sizes fit) without training."""
    import yaml

    from fl_privacy.experiments import is_experiment_file, load_experiment
    from fl_privacy.federation.run_setup import prepare

    if args.config and is_experiment_file(args.config):
        for profile in args.profiles or [None]:
            experiment = load_experiment(args.config, list(args.set or []), profile)
            print(f"# ok: {experiment.plan()}")
        return 0
    config = _load(args)
    setup = prepare(config)
    sizes = [len(p) for p in setup.partitions]
    print(yaml.safe_dump(config.model_dump(), sort_keys=False), end="")
    print(f"# ok: {config.data.dataset} train split with {len(setup.train)} samples, "
          f"{len(sizes)} clients holding {min(sizes)}..{max(sizes)} samples")
    from fl_privacy.dp.guarantee import check_model
    from fl_privacy.dp.report import privacy_block, summary_lines

    problems = check_model(config, setup.new_model())
    for line in summary_lines(privacy_block(config, None, None, problems)):  # worst case: every round
        print(f"# {line}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a whole simulation from a YAML config, or an experiment sweep; prints where the results are."""
    from fl_privacy.experiments import is_experiment_file

    if args.config and is_experiment_file(args.config):
        if args.backend != "inprocess" or args.supernodes:
            raise ConfigError("experiments run their points in-process: drop --backend/--supernodes "
                              "(--workers N spreads the runs over Ray workers)")
        if args.force or args.resume:
            raise ConfigError("--force/--resume apply to single runs: an experiment resumes into its folder by "
                              "itself (finished points are kept); use a new --out to start over")
        return _run_experiment(args)
    if args.workers is not None or args.ray_address or args.cpus_per_run is not None or args.gpus_per_run is not None:
        raise ConfigError("--workers/--ray-address/--cpus-per-run/--gpus-per-run spread the runs of an experiment "
                          "file (with an `experiment:` section); one federation uses --backend ray")
    if args.profile:
        raise ConfigError("--profile applies to experiment files (with an `experiment:` section)")
    config = _load(args)
    from fl_privacy.federation.run_setup import prepare

    _check_outputs(args, config)
    prepare(config)  # fail fast, before any worker starts
    _replace_if_forced(args)
    if args.backend == "inprocess":
        from fl_privacy.launch.runs import run_inprocess
        from fl_privacy.progress import RoundProgress

        run = run_inprocess(config, args.out, RoundProgress(config.federation.rounds), args.resume, args.supernodes)
        print(f"run directory: {run.root}")
        return 0
    return _run_ray(config, args)


def _check_outputs(args: argparse.Namespace, config: ExperimentConfig) -> None:
    """``--out`` free (or ``--force``) and creatable, devices present: before data loads or a folder is made."""
    from fl_privacy.federation.run_setup import resolve_device
    from fl_privacy.out_paths import check_run_dir

    resume = getattr(args, "resume", False)
    if resume and (not args.out or getattr(args, "force", False)):
        raise ConfigError("--resume continues the run in --out: give --out DIR (and not --force)")
    check_run_dir(args.out, force=getattr(args, "force", False), resume=resume, resumable=hasattr(args, "resume"))
    resolve_device(config.resources.device)
    resolve_device(config.resources.client_device)


def _replace_if_forced(args: argparse.Namespace) -> None:
    if getattr(args, "force", False) and args.out:
        from fl_privacy.out_paths import replace_run_dir

        replace_run_dir(args.out)


def parse_indices(text: str | None) -> list[int] | None:
    """``"3,10,21"`` -> ``[3, 10, 21]``; anything else is a ``ConfigError`` naming the bad part."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if not p.lstrip("-").isdigit()]
    if bad or not parts:
        raise ConfigError(f"--indices must be comma-separated sample numbers like 0,5,9; got {text!r}")
    return [int(p) for p in parts]


def _run_experiment(args: argparse.Namespace) -> int:
    """An experiment sweep: serially in this process, or over Ray workers with --workers / --ray-address."""
    from fl_privacy.experiments import run_experiment
    from fl_privacy.experiments.parallel import RayOptions, RunsFailed
    from fl_privacy.launch.runs import run_inprocess

    parallel = None
    if args.workers is not None or args.ray_address:
        parallel = RayOptions(workers=args.workers, address=args.ray_address, cpus=args.cpus_per_run,
                              gpus=args.gpus_per_run)
    elif args.cpus_per_run is not None or args.gpus_per_run is not None:
        raise ConfigError("--cpus-per-run/--gpus-per-run apply to runs on Ray workers: add --workers N "
                          "(or --ray-address ADDR)")
    try:
        out = run_experiment(args.config, list(args.set or []), args.out, args.profile, parallel=parallel,
                             run_federation=run_inprocess)
    except RunsFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}")
    return 0


def _run_ray(config: ExperimentConfig, args: argparse.Namespace) -> int:
    """Flower's Simulation Engine (Ray) in this process: clients run in parallel actors."""
    from fl_privacy.launch.runs import run_ray
    from fl_privacy.progress import RoundProgress

    run = run_ray(config, args.out, RoundProgress(config.federation.rounds), args.resume, args.supernodes)
    if run is None or not (run.root / "final.json").exists():
        print("the simulation did not finish; see the log above", file=sys.stderr)
        return 1
    print(f"run directory: {run.root}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """Build one client update from the config and attack it (no federation)."""
    from fl_privacy.audit.oneshot import attack_once
    from fl_privacy.federation.run_setup import resolve_device
    from fl_privacy.metrics import try_lpips

    config = _load(args)
    indices = parse_indices(args.indices)
    _check_outputs(args, config)
    if config.attack.name != "none":
        from fl_privacy.audit.run_attacks import gia_config

        gia_config(config)  # the attack's settings and generator file, before --force removes an old run
    _replace_if_forced(args)
    lpips = try_lpips(device=str(resolve_device(config.resources.device)))
    run, entry = attack_once(config, args.out, args.client, args.split, indices, lpips,
                             on_warning=lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    label = "unavailable" if lpips is None else f"{entry['lpips_mean']:.3f}"
    print(f"{config.attack.name}: PSNR {entry['psnr_mean']:.2f} dB, SSIM {entry['ssim_mean']:.3f}, "
          f"MSE {entry['mse_mean']:.4g}, LPIPS {label}, label acc {entry['label_acc']}, "
          f"{entry['iterations']} iterations in {entry['seconds']:.1f} s")
    print(f"run directory: {run.root}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Say which datasets, devices and optional weights this machine has."""
    from fl_privacy.doctor import report

    print(report())
    return 0


def cmd_audit_dp(args: argparse.Namespace) -> int:
    """Canary audit of the configured DP mechanism: empirical epsilon next to the claimed one (fl_privacy.audit.dp_canaries)."""
    import json
    from pathlib import Path

    from fl_privacy.audit.dp_canaries import audit_dp
    from fl_privacy.dp.guarantee import check_model
    from fl_privacy.federation.run_setup import prepare

    config = _load(args)
    model = prepare(config).new_model()
    check_model(config, model)
    result = audit_dp(config, model, canaries=args.canaries, rounds=args.rounds, seed=args.seed)
    out = Path(args.out or Path(config.out_dir) / f"{config.name}-audit-dp.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shown = f"{result['empirical_epsilon']:.3f}" + (
        f" (interval {result['interval'][0]:.3f}..{result['interval'][1]:.3f})" if "interval" in result else "")
    print(f"{result['mechanism']} mechanism, {result['method']}\n"
          f"claimed epsilon {result['claimed_epsilon']:.3f} at delta {result['delta']:g} over "
          f"{result['compositions']} releases; empirical epsilon {shown}: {result['empirical_kind']}\n"
          + ("VIOLATION: the mechanism leaks more than it claims\n" if result["violation"] else "")
          + f"written to {out}")
    return 1 if result["violation"] else 0


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

    from fl_privacy.attacks.generators.cli import add_train_generator_parser

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


