"""Spread an experiment's runs over Ray workers: ``fl-privacy run EXP.yaml --workers N`` or ``--ray-address ADDR``.

Each run (point x seed x victim; the victims of one point x seed together when they are attacked as one
batched problem, ``units.cells``) is one Ray task asking for the experiment's ``resources``
(``num_cpus``, ``num_gpus``); at most ``--workers`` are in flight and ``ray.wait`` hands each one
back as it finishes. Ray places the tasks; nothing here schedules. Only this process (the driver)
writes ``results.csv``: a finished run's rows are appended in one write, so a killed sweep resumes
exactly as a serial one does. A run that raises is written to ``failed.jsonl`` with its error, the
other runs go on, and the same command retries it. At the end ``results.csv`` is put back in the
experiment's order, so a parallel run leaves the same file as a serial one (timings aside).

A run's numbers do not depend on where or when it ran: its seed is in its config, and its torch
threads are ``resources.threads`` or else its CPUs. Federation points run their clients in-process
inside the worker (``InProcessGrid``), so no Ray runs inside Ray.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_privacy.config import ConfigError
from fl_privacy.experiments.output_dir import put_in_order
from fl_privacy.experiments.progress import Outcome, Progress
from fl_privacy.experiments.spec.model import Experiment, Unit

FAILED = "failed.jsonl"
"""Runs of the last invocation that raised: row id, point, seed, victim, error, traceback (one JSON per line)."""



@dataclass(frozen=True)
class RayOptions:
    """How to spread the runs: ``workers`` runs at once (a local Ray instance of that size unless ``address``
    names a running cluster); ``cpus`` / ``gpus`` per run replace the experiment's ``resources``."""

    workers: int | None = None
    address: str | None = None
    cpus: int | None = None
    gpus: float | None = None

    def per_run(self, experiment: Experiment) -> tuple[int, float]:
        chosen = {"cpus": 1, "gpus": 0.0, **experiment.run_resources}
        return (self.cpus or int(chosen["cpus"]), float(chosen["gpus"] if self.gpus is None else self.gpus))


class RunsFailed(RuntimeError):
    """Some runs raised; the others finished and are in results.csv. The same command retries the failed ones."""


def check_options(experiment: Experiment, options: RayOptions) -> None:
    """Bad worker settings are a clear error before anything starts."""
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers {options.workers}: give the number of runs to execute at once (>= 1)")
    if options.cpus is not None and options.cpus < 1:
        raise ConfigError(f"--cpus-per-run {options.cpus}: give a whole number of CPUs >= 1")
    _, gpus = options.per_run(experiment)
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-run {gpus}: give a fraction of one GPU (0..1) or a whole number of GPUs")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--workers/--ray-address need Ray: pip install 'flwr[simulation]'") from None
    if gpus and not options.address:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{gpus} GPU per run asked (experiment.resources.gpus or --gpus-per-run) but this "
                              f"machine has no CUDA GPU: set it to 0, or pass --ray-address of a cluster with GPUs")


def worker_env() -> dict[str, str]:
    """Environment the Ray workers get: this checkout first on ``PYTHONPATH`` (an installed copy elsewhere must not
    shadow it), the data/cache settings (``FL_PRIVACY_*``) and Flower's (``FLWR_*``). Thread counts are set per
    run (``torch.set_num_threads``), not here."""
    root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k.startswith(("FL_PRIVACY_", "FLWR_")) or k == "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


def _connect(options: RayOptions, cpus: int, gpus: float) -> bool:
    """Join the cluster (``address``), or start a local Ray of ``workers x cpus`` CPUs; True when started here.
    A Ray already initialized in this process is used as it is."""
    import warnings

    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"runtime_env": {"env_vars": worker_env()}, "logging_level": "ERROR",
                              "include_dashboard": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if options.address:
            ray.init(address=options.address, **common)
        else:
            import torch

            os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves runs on a busy machine
            workers = options.workers or 1
            # address="local": a new instance of our size, even where `ray start` left a cluster to join
            ray.init(address="local", num_cpus=workers * cpus, num_gpus=torch.cuda.device_count() if gpus else 0,
                     **common)
    return True


def _capacity(cpus: int, gpus: float) -> int:
    """How many runs of this size the Ray cluster holds at once; a clear error when not even one fits."""
    import ray

    have = ray.cluster_resources()
    if have.get("CPU", 0) < cpus or have.get("GPU", 0) < gpus:
        raise ConfigError(f"each run asks for {cpus} CPU(s) and {gpus:g} GPU(s) but the Ray cluster has "
                          f"{have.get('CPU', 0):g} CPU(s) and {have.get('GPU', 0):g} GPU(s): lower "
                          f"--cpus-per-run/--gpus-per-run (experiment.resources) or add nodes")
    fits = int(have["CPU"] // cpus)
    return min(fits, int(have["GPU"] // gpus)) if gpus else fits


# ----------------------------------------------------------------------------- the worker side

_LPIPS: Any = None


def run_remote(experiment: Experiment, indices: list[int], root: str, threads: int,
               run_federation: Callable[..., Any] | None = None) -> Outcome:
    """One cell (``units.cells``: a run, or victims attacked together) on a Ray worker: its own torch thread
    count, the same code as a serial run, errors sent back."""
    global _LPIPS
    import torch

    from fl_privacy.experiments import units

    torch.set_num_threads(threads)
    started = time.time()
    try:
        if _LPIPS is None:
            _LPIPS = units.LpipsCache()  # one per worker process, as one per serial sweep
        cell = [experiment.units[i] for i in indices]
        rows = units.run_cell(experiment, cell, Path(root), _LPIPS, run_federation)
        return Outcome(rows, time.time() - started)
    except Exception as err:  # noqa: BLE001 - a failing run is data; the sweep goes on
        return Outcome([], time.time() - started, f"{type(err).__name__}: {err}", traceback.format_exc(limit=20))


# ----------------------------------------------------------------------------- the driver side


def run_on_ray(experiment: Experiment, root: Path, todo: list[Unit], results: Any, options: RayOptions,
               stream: Any, refresh: Callable[[], Any], run_federation: Callable[..., Any] | None = None,
               ) -> list[dict[str, Any]]:
    """Run ``todo`` on Ray, appending each finished run's rows to ``results``; returns the failures (also in
    ``DIR/failed.jsonl``). ``refresh`` rewrites the summary after each finished point."""
    import ray

    if not todo:
        return []
    with _terminate_gracefully():
        started_here = _connect(options, *options.per_run(experiment))
        try:
            failures = _dispatch(experiment, root, todo, results, options, stream, refresh, run_federation)
        finally:
            if started_here:
                ray.shutdown()
    put_in_order(results.path, experiment)
    return failures


def _dispatch(experiment: Experiment, root: Path, todo: list[Unit], results: Any, options: RayOptions, stream: Any,
              refresh: Callable[[], Any], run_federation: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """Keep at most ``workers`` cells in flight, take each back as it finishes (``ray.wait``), write its rows."""
    import ray

    from fl_privacy.experiments.units import cells

    cpus, gpus = options.per_run(experiment)
    todo_cells = cells(experiment, todo)
    limit = min(options.workers or len(todo_cells), _capacity(cpus, gpus), len(todo_cells))
    _note_devices(todo, gpus, stream)
    print(f"  on Ray: {limit} run(s) at once, {cpus} CPU(s) and {gpus:g} GPU(s) per run", file=stream, flush=True)
    remote = ray.remote(run_remote).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    shared = ray.put(experiment)
    position = {u.row_id: i for i, u in enumerate(experiment.units)}
    queue, pending = deque(todo_cells), {}
    progress, failures = Progress(todo, stream), []
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                cell = queue.popleft()
                threads = cell[0].point.configs[cell[0].seed].resources.threads or cpus
                indices = [position[u.row_id] for u in cell]
                pending[remote.remote(shared, indices, str(root), threads, run_federation)] = cell
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            outcome = _collect(ray, ref)
            if outcome.error is None:
                results.append(outcome.rows)
            else:
                failures.extend(_record_failure(root, unit, outcome, stream) for unit in cell)
            if progress.finished(cell, outcome):
                refresh()
        return failures
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


@contextmanager
def _terminate_gracefully() -> Iterator[None]:
    """SIGTERM leaves through the ``finally`` blocks, like Ctrl-C: pending runs are cancelled, the local Ray
    instance is stopped and the summary says the sweep stopped early (``kill -9`` cannot be caught)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _collect(ray: Any, ref: Any) -> Outcome:
    """The worker's outcome, or the error Ray raised for it (worker killed, out of memory, node lost)."""
    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001
        return Outcome(error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                       trace=str(err))


def _record_failure(root: Path, unit: Unit, outcome: Outcome, stream: Any) -> dict[str, Any]:
    entry = {"row_id": unit.row_id, "point_id": unit.point.point_id, "point": unit.point.label(), "seed": unit.seed,
             "victim": unit.victim.index if unit.victim else None, "error": outcome.error,
             "seconds": round(outcome.seconds, 3), "traceback": outcome.trace}
    with (root / FAILED).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
    victim = f", victim {unit.victim.index}" if unit.victim else ""
    print(f"  FAILED point {unit.point.point_id} ({unit.point.label()}), seed {unit.seed}{victim}: {outcome.error}",
          file=stream, flush=True)
    return entry


def _note_devices(todo: list[Unit], gpus: float, stream: Any) -> None:
    """Runs without a GPU share see none: 'auto' resolves to the CPU there; say so instead of surprising."""
    import torch

    wants = {u.point.configs[u.seed].resources.device for u in todo}
    if not gpus and torch.cuda.is_available() and wants - {"cpu"}:
        print("  note: runs get no GPU on the workers (device 'auto' becomes the CPU); set experiment.resources.gpus "
              "or --gpus-per-run (e.g. 0.25) to share the GPU", file=stream, flush=True)
