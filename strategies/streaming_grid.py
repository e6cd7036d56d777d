"""A Grid wrapper whose ``send_and_receive`` yields replies as they arrive.

Flower's grids collect all replies of a round into one list before the
strategy sees any. Wrapped, the strategy folds each reply into its running
mean as soon as it is pulled, so the server holds only the replies not yet
processed, not one round's worth of updates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class StreamingGrid(Grid):
    """Delegates to ``inner``; ``send_and_receive`` is a generator over replies."""

    def __init__(self, inner: Grid, poll_interval: float = 0.05) -> None:
        self.inner = inner
        self.poll_interval = poll_interval

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        if getattr(self.inner, "streams", False):
            yield from self.inner.send_and_receive(messages, timeout=timeout)
            return
        pending = set(self.push_messages(messages))
        del messages
        deadline = None if timeout is None else time.time() + timeout
        while pending and (deadline is None or time.time() < deadline):
            replies = list(self.pull_messages(pending))
            for reply in replies:
                pending.discard(reply.metadata.reply_to_message_id)
            while replies:
                yield replies.pop(0)  # hand over, keep no reference
            if pending:
                time.sleep(self.poll_interval)
