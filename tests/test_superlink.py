"""``fl-privacy superlink``: starts Flower's local SuperLink with its PID recorded, stops exactly that process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from fl_privacy.launch import superlink


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    monkeypatch.setenv("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", str(_free_port()))
    monkeypatch.setenv("FLWR_LOCAL_CONTROL_API_PORT", str(_free_port()))
    return tmp_path / "flwr-home"


def _sleeper(log_file) -> subprocess.Popen:
    """A stand-in process whose command line looks like a SuperLink logging to ``log_file``."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "flower-superlink",
                             "--log-file", str(log_file)], start_new_session=True)


def test_start_records_the_pid_and_stop_stops_that_superlink(home):
    try:
        assert "SuperLink started" in superlink.start()
        pid = superlink._recorded_pid()
        assert pid and superlink.answers()
        assert f"already running (PID {pid}" in superlink.start()
    finally:
        message = superlink.stop()
    assert message == f"stopped the SuperLink (PID {pid})"
    assert superlink._cmdline(pid) is None and not superlink.answers()
    assert "no SuperLink" in superlink.stop()


def test_stop_finds_the_one_flwr_started_for_this_home_and_nothing_else(home, tmp_path):
    ours = _sleeper(home / "local-superlink" / "superlink.log")
    other = _sleeper(tmp_path / "another-home" / "local-superlink" / "superlink.log")
    try:
        assert superlink.stop() == f"stopped the SuperLink (PID {ours.pid})"
        assert ours.wait(timeout=10) is not None
        assert other.poll() is None  # another FLWR_HOME's SuperLink keeps running
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()


def test_cli_status(home, capsys):
    from fl_privacy.launch.cli import main

    assert main(["superlink", "status"]) == 0
    assert "not running" in capsys.readouterr().out
