"""Client failures and timeouts are data: recorded per round by partition id, victims that failed reported."""

from __future__ import annotations

import pytest

import clients.client_app as client_module
from clients.client_app import app as client_app
from fl_privacy.config import ConfigError, build_config
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.nodes import discover_nodes
from strategies.server_app import run_federation
from tests.conftest import needs_mnist

pytestmark = needs_mnist


@pytest.fixture
def failing(monkeypatch):
    """Make the clients with these partition ids raise in their local training."""
    ids: set[int] = set()
    real = client_module.client_update

    def update(config, model, data, steps, state, pid, *args, **kwargs):
        if pid in ids:
            raise RuntimeError(f"disk full on client {pid}")
        return real(config, model, data, steps, state, pid, *args, **kwargs)

    monkeypatch.setattr(client_module, "client_update", update)
    return ids


def _run(tmp_path, overrides, grid_type=InProcessGrid, nodes=None):
    config = build_config({}, overrides)
    grid = grid_type(client_app, nodes or config.federation.num_clients, accept_failures=True)
    return run_federation(grid, config, out=str(tmp_path / "run"))


def test_run_continues_past_a_failing_client_and_records_it(tmp_path, tiny_overrides, failing):
    failing.add(0)
    run = _run(tmp_path, {**tiny_overrides, "federation.rounds": 1})
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["clients"] == 2 and first["failures"] == 1 and first["failed_partitions"] == [0]
    assert first["timeouts"] == 0 and "disk full on client 0" in first["failure_reasons"]["0"]
    failed, recorded = sorted(first["victims"], key=lambda v: not v.get("failed"))
    assert failed == {"round": 1, "partition_id": 0, "failed": True, "reason": "RuntimeError: disk full on client 0"}
    assert recorded["partition_id"] == 1  # the lowest partition that answered is recorded instead
    summary = (run.root / "summary.md").read_text()
    assert "failed clients" in summary and "## Failed victims" in summary and "disk full on client 0" in summary


def test_a_round_where_every_client_fails_says_so(tmp_path, tiny_overrides, failing):
    failing.update({0, 1, 2})
    run = _run(tmp_path, {**tiny_overrides, "federation.rounds": 1})
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["clients"] == 0 and first["failures"] == 3 and first["failed_partitions"] == [0, 1, 2]


def test_without_accept_failures_the_run_stops_and_says_where(tmp_path, tiny_overrides, failing):
    failing.add(2)
    with pytest.raises(RuntimeError, match=r"round 1: clients \[2\] failed .*accept_failures is false"):
        _run(tmp_path, {**tiny_overrides, "federation.accept_failures": False})
    assert "**stopped**: round 1" in (tmp_path / "run" / "summary.md").read_text()
    assert not (tmp_path / "run" / "final.json").exists()


class DroppingGrid(InProcessGrid):
    """Loses the reply of the node holding partition 2 (as a reply after the round's timeout is lost)."""

    def send_and_receive(self, messages, *, timeout=None):
        for reply in super().send_and_receive(messages, timeout=timeout):
            if reply.metadata.message_type != "train" or self._contexts[reply.metadata.src_node_id].node_config[
                    "partition-id"] != 2:
                yield reply


def test_replies_lost_to_the_timeout_are_counted(tmp_path, tiny_overrides):
    run = _run(tmp_path, {**tiny_overrides, "federation.rounds": 1, "attack.victim_ids": "2"}, DroppingGrid)
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["failures"] == 1 and first["timeouts"] == 1 and first["failed_partitions"] == [2]
    (victim,) = first["victims"]
    assert victim["failed"] and "round_timeout" in victim["reason"]


HOSTED = {"federation.rounds": 1, "federation.num_clients": 4, "attack.victim_ids": "1"}
"""Four clients on two SuperNodes: clients 0 and 2 on the node with partition-id 0, 1 and 3 on the other."""


def test_two_failing_clients_on_one_node_count_as_two(tmp_path, tiny_overrides, failing):
    failing.update({0, 2})
    run = _run(tmp_path, {**tiny_overrides, **HOSTED}, nodes=2)
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["clients"] == 2 and first["partitions"] == [1, 3]
    assert first["failures"] == 2 and first["failed_partitions"] == [0, 2] and first["timeouts"] == 0
    assert {k: v for k, v in first["failure_reasons"].items()} == {
        "0": "RuntimeError: disk full on client 0", "2": "RuntimeError: disk full on client 2"}


class LosingGrid(InProcessGrid):
    """Loses the reply of client 2 (as after the round's timeout); client 0 on the same node raises."""

    def send_and_receive(self, messages, *, timeout=None):
        for reply in super().send_and_receive(messages, timeout=timeout):
            if reply.metadata.message_type != "train" or reply.has_error() or reply.content["metrics"][
                    "partition-id"] != 2:
                yield reply


def test_an_error_and_a_timeout_on_one_node_are_told_apart(tmp_path, tiny_overrides, failing):
    failing.add(0)
    run = _run(tmp_path, {**tiny_overrides, **HOSTED}, LosingGrid, nodes=2)
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["failures"] == 2 and first["failed_partitions"] == [0, 2]
    assert first["timeouts"] == 1 and list(first["failure_reasons"]) == ["0"]


class UnavailableGrid(InProcessGrid):
    """The SuperLink answers client 3's message itself (its node went away): an error from the SuperLink's id."""

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message
        from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

        for message in messages:
            (reply,) = super().send_and_receive([message], timeout=timeout)
            if message.metadata.message_type == "train" and message.content["config"]["partition-id"] == 3:
                reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"), reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            yield reply


def test_an_error_the_superlink_sends_names_the_client_whose_message_it_answers(tmp_path, tiny_overrides):
    run = _run(tmp_path, {**tiny_overrides, **HOSTED}, UnavailableGrid, nodes=2)
    (_, first) = run.read_jsonl("rounds.jsonl")
    assert first["failed_partitions"] == [3] and first["timeouts"] == 0
    assert first["failure_reasons"] == {"3": "node unavailable"}


class SilentGrid(InProcessGrid):
    """SuperNodes that are registered but do not answer yet (client processes still starting)."""

    def send_and_receive(self, messages, *, timeout=None):
        list(messages)
        return iter(())


def test_nodes_that_do_not_answer_in_time_are_a_clear_error(tiny_overrides):
    config = build_config({}, {**tiny_overrides, "federation.round_timeout": 0.5})
    with pytest.raises(ConfigError, match=r"only 0 of 3 SuperNodes answered .* raise federation.round_timeout"):
        discover_nodes(SilentGrid(client_app, 3), config)


def test_cli_run_prints_a_progress_line_per_round(tmp_path, tiny_overrides, failing, capsys):
    from fl_privacy.launch.cli import main

    failing.add(1)
    sets = [a for k, v in tiny_overrides.items() for a in ("--set", f"{k}={v}")]
    assert main(["run", *sets, "--out", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("round ")]
    assert lines[0].startswith("round 0/2 | test acc ")
    assert lines[1].startswith("round 1/2 | clients 2 done, 1 failed [1] | test acc ") and "ETA" in lines[1]
    assert lines[2].startswith("round 2/2 | clients 2 done, 1 failed [1]") and "ETA" not in lines[2]


def test_progress_bar_prints_plain_lines_when_not_a_terminal(capsys):
    from fl_privacy.progress import progress_bar

    bar = progress_bar(total=3, desc="GIA", leave=False, mininterval=0, maxinterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") >= 2 and "GIA" in err


def test_an_error_reply_is_attributed_by_the_message_it_answers():
    from fl_privacy.federation.sampling import partition_of_reply

    routing = [("m0", 7, 0), ("m1", 8, 1), ("m2", 7, 2)]
    assert partition_of_reply("m2", 7, routing) == 2 and partition_of_reply("m0", 7, routing) == 0
    assert partition_of_reply("", 8, routing) == 1  # no id, but node 8 was sent one client only
    assert partition_of_reply("", 7, routing) is None  # node 7 hosts two: unknown, never a guess
