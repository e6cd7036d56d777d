"""``fl-privacy``: everything that is not a single ``flwr run``.

    fl-privacy run CONFIG.yaml [--set key=value ...] [--out DIR] [--backend inprocess|ray]
    fl-privacy run EXPERIMENT.yaml [--profile P] [--workers N | --ray-address ADDR]
    fl-privacy attack CONFIG.yaml [--set key=value ...] [--out DIR] [--split test --indices 0,1]
    fl-privacy validate CONFIG.yaml [--set key=value ...]
    fl-privacy doctor
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fl_privacy.config import ConfigError, ExperimentConfig, load_config


def _load(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, list(args.set or []))


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the config and the setup it implies (data present, batch sizes fit) without training."""
    import yaml

    from fl_privacy.experiments import is_experiment_file, load_experiment
    from fl_privacy.run_setup import prepare

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
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a whole simulation from a YAML config, or an experiment sweep; prints where the results are."""
    from fl_privacy.experiments import is_experiment_file

    if args.config and is_experiment_file(args.config):
        if args.backend != "inprocess" or args.supernodes:
            raise ConfigError("experiments run their points in-process: drop --backend/--supernodes "
                              "(--workers N spreads the runs over Ray workers)")
        return _run_experiment(args)
    if args.workers is not None or args.ray_address or args.cpus_per_run is not None or args.gpus_per_run is not None:
        raise ConfigError("--workers/--ray-address/--cpus-per-run/--gpus-per-run spread the runs of an experiment "
                          "file (with an `experiment:` section); one federation uses --backend ray")
    if args.profile:
        raise ConfigError("--profile applies to experiment files (with an `experiment:` section)")
    config = _load(args)
    from fl_privacy.run_setup import prepare

    prepare(config)  # fail fast, before any worker starts
    if args.backend == "inprocess":
        from clients.client_app import app as client_app
        from fl_privacy.inprocess import InProcessGrid
        from strategies.server_app import run_federation

        nodes = args.supernodes or config.federation.num_clients
        run = run_federation(InProcessGrid(client_app, nodes), config, args.out)
        print(f"run directory: {run.root}")
        return 0
    return _run_ray(config, args)


def _run_experiment(args: argparse.Namespace) -> int:
    """An experiment sweep: serially in this process, or over Ray workers with --workers / --ray-address."""
    from fl_privacy.experiments import run_experiment
    from fl_privacy.experiments.parallel import RayOptions, RunsFailed

    parallel = None
    if args.workers is not None or args.ray_address:
        parallel = RayOptions(workers=args.workers, address=args.ray_address, cpus=args.cpus_per_run,
                              gpus=args.gpus_per_run)
    elif args.cpus_per_run is not None or args.gpus_per_run is not None:
        raise ConfigError("--cpus-per-run/--gpus-per-run apply to runs on Ray workers: add --workers N "
                          "(or --ray-address ADDR)")
    try:
        out = run_experiment(args.config, list(args.set or []), args.out, args.profile, parallel=parallel)
    except RunsFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"results: {out / 'results.csv'}\nsummary: {out / 'summary.md'}")
    return 0


def _run_ray(config: ExperimentConfig, args: argparse.Namespace) -> int:
    """Flower's Simulation Engine (Ray) in this process: clients run in parallel actors."""
    import warnings

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from clients.client_app import app as client_app
    from strategies.server_app import run_federation

    runs: list = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:  # noqa: ANN001, ARG001
        runs.append(run_federation(grid, config, args.out))

    res = config.resources
    backend_config = {
        "client_resources": {"num_cpus": res.client_cpus, "num_gpus": res.client_gpus},
        "init_args": {"logging_level": "ERROR", "log_to_driver": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app, client_app=client_app,
                       num_supernodes=args.supernodes or config.federation.num_clients,
                       backend_config=backend_config)
    if not runs or not (runs[0].root / "final.json").exists():
        print("the simulation did not finish; see the log above", file=sys.stderr)
        return 1
    print(f"run directory: {runs[0].root}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """Build one client update from the config and attack it (no federation)."""
    from fl_privacy.attacks.oneshot import attack_once
    from fl_privacy.metrics import try_lpips
    from fl_privacy.run_setup import resolve_device

    config = _load(args)
    indices = [int(i) for i in args.indices.split(",")] if args.indices else None
    lpips = try_lpips(device=str(resolve_device(config.resources.device)))
    run, entry = attack_once(config, args.out, args.client, args.split, indices, lpips)
    label = "unavailable" if lpips is None else f"{entry['lpips_mean']:.3f}"
    print(f"{config.attack.name}: PSNR {entry['psnr_mean']:.2f} dB, SSIM {entry['ssim_mean']:.3f}, "
          f"MSE {entry['mse_mean']:.4g}, LPIPS {label}, label acc {entry['label_acc']}, "
          f"{entry['iterations']} iterations in {entry['seconds']:.1f} s")
    print(f"run directory: {run.root}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:  # noqa: ARG001
    """Say which datasets, devices and optional weights this machine has."""
    from fl_privacy.doctor import report

    print(report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl-privacy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", help="YAML experiment file (defaults apply when omitted)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set training.lr=0.1 (repeatable)")

    run = sub.add_parser("run", help="run a simulation defined by a YAML config")
    with_config(run)
    run.add_argument("--out", help="run directory (default: <out_dir>/<name>-<timestamp>)")
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

    attack = sub.add_parser("attack", help="build one client update and attack it (no federation)")
    with_config(attack)
    attack.add_argument("--out", help="run directory (default: <out_dir>/<name>-<timestamp>)")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


