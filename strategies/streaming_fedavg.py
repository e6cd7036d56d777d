"""FedAvg / FedSGD as this app aggregates by default: a running weighted mean, one reply at a time.

Flower's ``FedAvg`` lists a round's replies before averaging them; this one
folds each reply into a float64 running mean as it is pulled (``replies`` may
be a stream), then lets the Flower-free ``ServerUpdate`` run the defenses'
server steps, central DP's noise and (FedSGD) the server's SGD step.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_privacy.federation.aggregation import WeightedMean
from fl_privacy.federation.server_update import ServerUpdate


class StreamingFedAvg(FedAvg):
    """Honest weighted mean of the replies' arrays, weighted by their ``num-examples`` metric."""

    def __init__(self, server: ServerUpdate) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=0,
                         min_available_nodes=1)
        self.server = server
        self._sent: dict = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays.to_torch_state_dict()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        mean, count = WeightedMean(), 0
        for reply in replies:
            if reply.has_error():
                continue
            content = reply.content
            mean.add(content[self.arrayrecord_key].to_torch_state_dict(), float(content["metrics"][self.weighted_by_key]))
            count += 1
            del reply, content
        if not count:
            released = self.server.noise_only(self._sent, server_round)
            return (ArrayRecord(released) if released is not None else None), None
        return ArrayRecord(self.server.apply(self._sent, mean.result(), count, server_round)), None
