"""A Flower ``Grid`` that runs the ClientApp in this process, one node after another.

Same ServerApp, same ClientApp, same messages as ``flwr run``; no SuperLink,
no Ray, nothing left running afterwards. Used by the test suite and by
``fl-privacy run --backend inprocess`` for small studies on a laptop.
A client that raises becomes an error reply, as on Flower's engines, when
``accept_failures`` (``federation.accept_failures``); otherwise its exception
propagates (fail fast, with the client's own traceback).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from uuid import uuid4

from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """N nodes with node config ``partition-id = i``, ``num-partitions = N``.

    Node ids run backwards (node ``1000 + N - i`` holds partition ``i``), like
    Flower's random ids they say nothing about the partition a node holds.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1, accept_failures: bool = False) -> None:
        self._client_app = client_app
        self.accept_failures = accept_failures
        self._run = Run.create_empty(run_id)
        self._contexts = {
            1000 + num_nodes - i: Context(
                run_id=run_id, node_id=1000 + num_nodes - i, node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(), run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        # Messages built by the ServerApp take their run and sender from the process' task identity.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID

    def client_states(self) -> dict[int, dict[str, dict]]:
        """Each node's persistent client state (ArrayRecords in its context), as plain tensors: for checkpoints."""
        return {node: {key: record.to_torch_state_dict() for key, record in ctx.state.items()
                       if isinstance(record, ArrayRecord)} for node, ctx in self._contexts.items()}

    def restore_client_states(self, states: dict[int, dict[str, dict]]) -> None:
        for node, records in states.items():
            for key, tensors in records.items():
                self._contexts[node].state[key] = ArrayRecord(tensors)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's own in-memory grid does
            reply = self._call(message)
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def _call(self, message: Message) -> Message:
        try:
            return self._client_app(message, self._contexts[message.metadata.dst_node_id])
        except Exception as err:  # as Flower's engines do: any ClientApp exception becomes an error reply
            if not self.accept_failures:
                raise
            reason = f"{type(err).__name__}: {err}"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    streams = True
    """``send_and_receive`` yields each reply as soon as its client has run."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        for message in messages:
            (message_id,) = self.push_messages([message])
            yield from self.pull_messages([message_id])
