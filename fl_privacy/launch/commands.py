"""What each ``fl-privacy`` sub-command does; ``fl_privacy.launch.cli`` parses the arguments and calls one."""

from __future__ import annotations

import argparse
import sys

from fl_privacy.config import ConfigError, ExperimentConfig, load_config


def _load(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, list(args.set or []))


def cmd_report(args: argparse.Namespace) -> int:
    """Redraw an experiment folder's summary, statistics, figures and report page; nothing runs."""
    from fl_privacy.experiments.rerender import rerender

    rerender(args.dir, args.config, sys.stdout)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the config and the setup it implies (data present, batch sizes fit) without training."""
    import yaml

    from fl_privacy.audit.ready import prepare_checked
    from fl_privacy.experiments import is_experiment_file, load_experiment

    if args.config and is_experiment_file(args.config):
        for profile in args.profiles or [None]:
            experiment = load_experiment(args.config, list(args.set or []), profile)
            print(f"# ok: {experiment.plan()}")
        return 0
    config = _load(args)
    setup = prepare_checked(config)
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
    from fl_privacy.audit.ready import prepare_checked

    _check_outputs(args, config)
    prepare_checked(config)  # fail fast, before any worker starts
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
