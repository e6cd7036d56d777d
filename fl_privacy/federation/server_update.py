"""The honest server's update of the global model: defense server steps, central DP noise, the FedSGD step.

Flower-free. ``strategies.streaming_fedavg`` calls it on the running mean of a
round's replies; the DP canary audit (``fl_privacy.dp.audit``) calls
``server_step`` on its own aggregate.
"""

from __future__ import annotations

import torch

from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.dp.guarantee import client_sampling, release_policy
from fl_privacy.dp.release import central_stage, client_pipeline
from fl_privacy.sgd import apply_gradient

Tensors = dict[str, torch.Tensor]


class ServerUpdate:
    """Turns the weighted mean of what clients sent into the next global model."""

    def __init__(self, config: ExperimentConfig, param_names: list[str]) -> None:
        self.config = config
        self.param_names = param_names
        self.fedsgd = config.training.algorithm == "fedsgd"
        self.pipeline = client_pipeline(config)
        """The clients' pipeline (with the DP mechanism's stage): its server steps run here."""
        self.central = central_stage(self.pipeline)
        """Central DP: clients clip, the server noises the uniformly weighted aggregate."""

    def weight(self, reported: int | None) -> float:
        """A reply's aggregation weight: its example count, or 1 when withheld or under central DP (uniform)."""
        return 1.0 if (reported is None or self.central is not None) else float(reported)

    def apply(self, sent: Tensors, mean: Tensors, num_clients: int, server_round: int) -> Tensors:
        """The next global model from the round's mean reply (weights, or gradients under FedSGD)."""
        aggregated = self.server_step(sent, mean, num_clients, server_round)
        if self.fedsgd:  # clients sent gradients: the server takes the SGD step
            aggregated = {**apply_gradient(sent, aggregated, self.config.training.lr),
                          **{k: v for k, v in aggregated.items() if k not in self.param_names}}
        return {k: aggregated[k] for k in sent}

    def noise_only(self, sent: Tensors, server_round: int) -> Tensors | None:
        """Central DP with nobody sampled (Poisson): the mechanism still releases its noise on an empty sum."""
        if self.central is None:
            return None
        empty = {k: torch.zeros_like(v) if (self.fedsgd and k in self.param_names) else v.clone()
                 for k, v in sent.items()}
        return self.apply(sent, empty, 0, server_round)

    def server_step(self, sent: Tensors, aggregated: Tensors, num_clients: int, server_round: int = 0) -> Tensors:
        """Server-side help of defenses that need it (GradDefense's compensation, central DP noise), on the
        aggregated update."""
        if not self.pipeline.needs_server:
            return aggregated
        fedsgd = self.fedsgd
        update = {k: aggregated[k] if fedsgd else aggregated[k] - sent[k] for k in self.param_names}
        changes: list[str] = []  # buffer changes the clients clipped and noised with their update
        if self.central is not None:  # the clipped sum over a fixed denominator (McMahan et al. 2018)
            if release_policy(self.config)[0] == "noise":
                changes = [k for k, v in aggregated.items() if k not in update and v.is_floating_point()]
                update.update({k: aggregated[k] - sent[k] for k in changes})
            denominator = client_sampling(self.config)[2] or 1
            update = {k: v * (num_clients / denominator) for k, v in update.items()}
            self.central.start_round(self.config.seed, server_round, denominator)
        update = self.pipeline.server_step(update, num_clients)
        update = {k: v if (fedsgd and k not in changes) else sent[k] + v for k, v in update.items()}
        return {**aggregated, **update}


def check_strategy(config: ExperimentConfig) -> None:
    """What ``federation.strategy`` can run with: server-side defense help runs on FedAvg's mean of the
    replies (other strategies aggregate otherwise), FedProx's term is not part of DP-SGD's steps."""
    strategy = config.federation.strategy
    if strategy == "fedprox" and config.privacy.mechanism == "sample":
        raise ConfigError("federation.strategy=fedprox: DP-SGD's local steps (privacy.mechanism=sample) do not "
                          "add FedProx's proximal term; use another strategy or DP mechanism")
    if strategy != "fedavg" and client_pipeline(config).needs_server:
        raise ConfigError(f"federation.strategy={strategy}: central DP and defenses that need the server's help "
                          "(GradDefense's compensation) run on FedAvg's mean of the replies; use "
                          "federation.strategy=fedavg with them")
