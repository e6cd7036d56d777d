"""``fl-privacy superlink start|stop|status``: the local SuperLink of ``flwr run``, started and stopped by PID.

``flwr run .`` uses a local SuperLink on 127.0.0.1 (ports ``$FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``,
default 39091, and ``$FLWR_LOCAL_CONTROL_API_PORT``, default 39093) and starts one itself when none
answers. ``start`` launches that same SuperLink (Flower's own command line) and records its PID in
``$FLWR_HOME/local-superlink/fl-privacy-superlink.json``; ``stop`` stops exactly that process (and
the processes it started), after checking the PID still belongs to that SuperLink. A SuperLink
that ``flwr run`` started for this ``$FLWR_HOME`` is found by its log file under ``$FLWR_HOME``
(Linux). Nothing else is ever signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from fl_privacy.config import ConfigError

PID_NAME = "fl-privacy-superlink.json"


def flwr_home() -> Path:
    from flwr.supercore.utils import get_flwr_home

    return Path(get_flwr_home())


def _ports() -> tuple[str, str]:
    """Read at call time (Flower reads them once at import)."""
    return (os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091"),
            os.environ.get("FLWR_LOCAL_CONTROL_API_PORT", "39093"))


def _paths() -> tuple[Path, Path, Path]:
    """(database, log file, PID file) of this FLWR_HOME's local SuperLink (Flower's layout)."""
    runtime = flwr_home() / "local-superlink"
    return runtime / "state.db", runtime / "superlink.log", runtime / PID_NAME


def answers(timeout: float = 1.0) -> bool:
    """Whether a SuperLink answers on the local HTTP port."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{_ports()[0]}/health", timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def _command(database: Path, log_file: Path) -> list[str]:
    """Flower's command line for the local simulation SuperLink (flwr/cli/local_superlink.py, Flower 1.42)."""
    http_port, control_port = _ports()
    exe = shutil.which("flower-superlink") or str(Path(sys.executable).with_name("flower-superlink"))
    return [exe, "--insecure", "--simulation", "--isolation", "subprocess",
            "--control-api-address", f"127.0.0.1:{control_port}", "--host", "127.0.0.1", "--port", http_port,
            "--log-file", str(log_file), "--log-rotation-interval-hours", "24", "--log-rotation-backup-count", "7",
            "--database", str(database)]


def start(wait: float = 30.0) -> str:
    """Start the local SuperLink, record its PID, wait until it answers; say what happened."""
    database, log_file, pid_file = _paths()
    running = _recorded_pid()
    if running:
        return f"SuperLink already running (PID {running}, recorded in {pid_file})"
    if answers():
        raise ConfigError(f"a SuperLink already answers on 127.0.0.1:{_ports()[0]} but this app did not start it: "
                          "stop it with `fl-privacy superlink stop` (or the tool that started it) first")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = _command(database, log_file)
    bin_dir = str(Path(command[0]).parent)  # the SuperLink starts flower-superexec by name: same environment
    env = {**os.environ, "FLWR_DISABLE_UPDATE_CHECK": "1",
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(json.dumps({"pid": process.pid, "log_file": str(log_file), "started": time.time()}))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise ConfigError(f"flower-superlink exited with code {process.returncode}; see {log_file}")
        if answers():
            return f"SuperLink started on 127.0.0.1:{_ports()[0]} (PID {process.pid}, recorded in {pid_file})"
        time.sleep(0.3)
    _terminate(process.pid)
    pid_file.unlink(missing_ok=True)
    raise ConfigError(f"the SuperLink did not answer within {wait:g} s; see {log_file}")


def stop(wait: float = 10.0) -> str:
    """Stop the SuperLink recorded under FLWR_HOME (or the one ``flwr run`` started for it)."""
    _, log_file, pid_file = _paths()
    pid = _recorded_pid() or _started_by_flwr(log_file)
    pid_file.unlink(missing_ok=True)
    if not pid:
        return f"no SuperLink of this FLWR_HOME ({flwr_home()}) is running"
    _terminate(pid, wait)
    return f"stopped the SuperLink (PID {pid})"


def _cmdline(pid: int) -> list[str] | None:
    """The process' arguments (Linux ``/proc``); None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, IndexError):
        return None


def _is_superlink(pid: int, log_file: str) -> bool:
    args = _cmdline(pid)
    if args is None:
        return False
    return any(Path(a).name == "flower-superlink" for a in args) and log_file in args


def _recorded_pid() -> int | None:
    """The recorded PID, when that process is still this FLWR_HOME's SuperLink (guards against PID reuse)."""
    _, log_file, pid_file = _paths()
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _is_superlink(pid, str(log_file)) else None


def _started_by_flwr(log_file: Path) -> int | None:
    """A SuperLink whose log file is this FLWR_HOME's (the one ``flwr run`` starts)."""
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit() and _is_superlink(int(entry.name), str(log_file)):
            return int(entry.name)
    return None


def _terminate(pid: int, wait: float = 10.0) -> None:
    """SIGTERM to the SuperLink's own process group (it runs in its own session), SIGKILL after ``wait`` s."""
    group = os.getpgid(pid) == pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if _cmdline(pid) is None:
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def cmd_superlink(args: argparse.Namespace) -> int:
    if args.action == "start":
        print(start())
    elif args.action == "stop":
        print(stop())
    else:
        pid = _recorded_pid() or _started_by_flwr(_paths()[1])
        print(f"SuperLink of {flwr_home()}: " + (f"running (PID {pid})" if pid else "not running")
              + ("" if pid or not answers() else f"; another SuperLink answers on 127.0.0.1:{_ports()[0]}"))
    return 0


def add_superlink_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("superlink", help="start/stop the local SuperLink that flwr run uses (by PID)")
    p.add_argument("action", choices=("start", "stop", "status"),
                   help="start: launch it and record its PID under $FLWR_HOME; stop: stop exactly that process; "
                        "status: say whether it runs")
    p.set_defaults(func=cmd_superlink)
