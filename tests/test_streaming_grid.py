"""``StreamingGrid``'s polling loop, driven by a grid that does not stream (as Flower's own grids)."""

from __future__ import annotations

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fl_privacy.launch.inprocess import InProcessGrid
from strategies.streaming_grid import StreamingGrid


class BatchGrid(InProcessGrid):
    """Answers only after a few polls, a couple of replies per poll; never replies to node ``silent``."""

    streams = False

    def __init__(self, *args, silent: int | None = None, per_poll: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.silent, self.per_poll, self.polls = silent, per_poll, 0
        self.asked: list[list[str]] = []

    def push_messages(self, messages):
        ids = []
        for message in messages:
            (message_id,) = super().push_messages([message])
            if message.metadata.dst_node_id == self.silent:
                self._replies.pop(message_id)  # lost: never answered
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        self.polls += 1
        self.asked.append(sorted(message_ids))
        if self.polls < 3:
            return []  # nothing yet
        ready = [i for i in message_ids if i in self._replies][: self.per_poll]
        return [self._replies.pop(i) for i in ready]


def _echo(message: Message, context) -> Message:
    node = ConfigRecord({"partition-id": context.node_config["partition-id"]})
    return Message(RecordDict({"node": node}), reply_to=message)


def _queries(grid: InProcessGrid) -> list[Message]:
    return [Message(RecordDict(), node, MessageType.QUERY) for node in grid.get_node_ids()]


def test_polling_yields_every_reply_and_stops_asking_for_answered_ones():
    inner = BatchGrid(_echo, 5)
    grid = StreamingGrid(inner, poll_interval=0.001)
    replies = list(grid.send_and_receive(_queries(inner), timeout=10))
    assert sorted(int(r.content["node"]["partition-id"]) for r in replies) == [0, 1, 2, 3, 4]
    assert inner.polls == 5  # two empty polls, then 2 + 2 + 1 replies
    assert [len(ids) for ids in inner.asked] == [5, 5, 5, 3, 1]  # answered messages are not asked for again


def test_polling_gives_up_at_the_timeout_with_the_replies_it_has():
    inner = BatchGrid(_echo, 3, silent=next(iter(InProcessGrid(_echo, 3).get_node_ids())))
    grid = StreamingGrid(inner, poll_interval=0.01)
    replies = list(grid.send_and_receive(_queries(inner), timeout=0.3))
    assert len(replies) == 2
    assert inner.asked[-1] and len(inner.asked[-1]) == 1  # still waiting for the silent node when time ran out


def test_replies_are_handed_over_as_they_arrive():
    inner = BatchGrid(_echo, 4, per_poll=1)
    stream = StreamingGrid(inner, poll_interval=0.001).send_and_receive(_queries(inner), timeout=10)
    first = next(stream)
    assert first.content["node"]["partition-id"] is not None and inner.polls == 3  # before the others arrived
    assert len(list(stream)) == 3 and inner.polls == 6


def test_a_streaming_grid_is_passed_through():
    inner = InProcessGrid(_echo, 2)
    replies = list(StreamingGrid(inner).send_and_receive(_queries(inner)))
    assert len(replies) == 2
