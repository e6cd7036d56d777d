"""Running one federation: in this process (one client after another) or on Flower's Simulation Engine (Ray).

``run_inprocess`` is also the "run a federation" function handed to the experiment
runner (``fl_privacy.experiments.runner``), which never imports the Flower glue itself.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from fl_privacy.config import ExperimentConfig
from fl_privacy.progress import RoundProgress
from fl_privacy.reporting import RunDirectory


def run_inprocess(config: ExperimentConfig, out: str | None = None, progress: RoundProgress | None = None,
                  resume: bool = False, supernodes: int = 0) -> RunDirectory:
    """All rounds with the ClientApp called in this process (``supernodes``: nodes hosting the clients,
    default one per client); client failures come back as error replies and are recorded, and the run
    stops after the round's record when ``federation.accept_failures`` is false."""
    from clients.client_app import app as client_app
    from fl_privacy.launch.inprocess import InProcessGrid
    from strategies.server_app import run_federation

    grid = InProcessGrid(client_app, supernodes or config.federation.num_clients, accept_failures=True)
    return run_federation(grid, config, out, progress, resume=resume)


def run_ray(config: ExperimentConfig, out: str | None = None, progress: RoundProgress | None = None,
            resume: bool = False, supernodes: int = 0) -> RunDirectory | None:
    """All rounds on Flower's Simulation Engine in this process: clients run in parallel Ray actors.
    Returns None when the ServerApp did not get to write its run directory."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from clients.client_app import app as client_app
    from strategies.server_app import run_federation

    runs: list[RunDirectory] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        runs.append(run_federation(grid, config, out, progress, resume=resume))

    # Ray starts its worker processes at nice 15 unless told otherwise; clients are the simulation's work, so
    # they run at normal priority (export RAY_worker_niceness=15 to get Ray's default back).
    os.environ.setdefault("RAY_worker_niceness", "0")
    res = config.resources
    backend_config = {
        "client_resources": {"num_cpus": res.client_cpus, "num_gpus": res.client_gpus},
        "init_args": {"logging_level": "ERROR", "log_to_driver": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app, client_app=client_app,
                       num_supernodes=supernodes or config.federation.num_clients, backend_config=backend_config)
    return runs[0] if runs else None


def run_experiment(*args: Any, **kwargs: Any) -> Any:
    """``fl_privacy.experiments.run_experiment`` with its federations run in-process (``run_inprocess``)."""
    from fl_privacy.experiments import run_experiment as run_sweep

    kwargs.setdefault("run_federation", run_inprocess)
    return run_sweep(*args, **kwargs)
