"""The ServerApp: a recording strategy around the configured aggregation, over the Flower-free run logic.

``flwr run .`` reads the config from the run config (``[tool.flwr.app.config]``
plus ``--run-config`` overrides, optionally a YAML file named by ``config``);
``fl-privacy run`` calls ``run_federation`` with a config it loaded itself.
"""

from __future__ import annotations

from logging import ERROR, WARNING

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fl_privacy.audit.federated_run import FederatedRun
from fl_privacy.config import ConfigError, ExperimentConfig, from_run_config, shadowed_defaults
from fl_privacy.federation.server_round import RoundLedger
from fl_privacy.federation.server_update import ServerUpdate
from fl_privacy.launch.deployment import announce_failure
from fl_privacy.progress import RoundProgress
from fl_privacy.reporting import RunDirectory
from strategies.inner_strategies import inner_strategy
from strategies.nodes import discover_nodes
from strategies.recording import RecordingStrategy
from strategies.streaming_grid import StreamingGrid

app = ServerApp()


@app.main()
@announce_failure
def main(grid: Grid, context: Context) -> None:
    try:
        config = from_run_config(context.run_config)
        shadowed = shadowed_defaults(context.run_config)
    except ConfigError as err:  # the exact bad key and the closest valid one, where `flwr run` shows it
        message = (f"fl-privacy: error: bad run config: {err}\nfl-privacy: check run configs before `flwr run` with "
                   "`fl-privacy validate [CONFIG.yaml] --set key=value ...` (the same keys)")
        log(ERROR, "%s", message)
        print(message, flush=True)
        raise
    for warning in shadowed:
        log(WARNING, "fl-privacy: %s", warning)
        print(f"fl-privacy: warning: {warning}", flush=True)
    run_federation(grid, config)


def run_federation(grid: Grid, config: ExperimentConfig, out: str | None = None,
                   progress: RoundProgress | None = None, resume: bool = False) -> RunDirectory:
    """Run all rounds on ``grid`` and leave a run directory with records and a summary.

    ``progress``: prints a line per round (and while clients answer), for ``fl-privacy run``.
    ``resume``: continue the run in ``out`` from its last checkpointed round."""
    federated = FederatedRun(config, out, resume, grid, progress)  # fails fast, before any run directory
    node_partitions = discover_nodes(grid, config)
    federated.open()
    server = ServerUpdate(config, federated.param_names)
    ledger = RoundLedger(config, federated.recorder, federated.param_names)
    if progress is not None:
        ledger.on_reply = progress.client_done
    strategy = RecordingStrategy(inner_strategy(config, server), config, ledger, server, node_partitions)
    initial = federated.resume() if resume else federated.initial_state()
    strategy.round_offset = federated.round_offset

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round += federated.round_offset  # resumed runs keep their round numbers
        metrics = federated.after_round(server_round, arrays.to_torch_state_dict(),
                                        ledger.round_info.get(server_round, {}))
        return MetricRecord(metrics) if metrics else None

    strategy.start(
        grid=StreamingGrid(grid), initial_arrays=ArrayRecord(initial),
        num_rounds=config.federation.rounds - federated.round_offset, timeout=config.federation.round_timeout,
        evaluate_fn=evaluate,
    )
    return federated.finish()
