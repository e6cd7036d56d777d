"""Every command the README shows still parses, names files and profiles that exist, and sets real keys.

A README that drifts from the CLI is a newcomer's first hour lost: this test reads the README's
``bash`` blocks and checks each ``fl-privacy``, ``flwr run``, ``python`` and script line against the
code (argument parser, config keys, experiment files and their profiles), without running any work.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fl_privacy.config import CONFIG_KEYS
from fl_privacy.launch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER_FILES = {"experiment.yaml", "exp.yaml", "secagg.yaml"}
"""Names the README uses for the reader's own file; ``<name>`` placeholders are skipped too."""


def readme_commands() -> list[str]:
    """Shell lines of the README's bash blocks: continuations joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


COMMANDS = readme_commands()


def _words(line: str) -> list[str]:
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # leading VAR=value assignments
        words = words[1:]
    return words


def _is_placeholder(path: str) -> bool:
    return path in PLACEHOLDER_FILES or "<" in path


def _profiles(path: Path) -> set[str]:
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return set((spec.get("experiment") or {}).get("profiles") or {})


def _check_keys(assignments: list[str]) -> None:
    for item in assignments:
        key = item.split("=", 1)[0].strip()
        assert key in CONFIG_KEYS, f"README sets unknown config key {key!r} ({item!r})"


def test_readme_has_commands() -> None:
    assert sum(c.startswith("fl-privacy ") for c in COMMANDS) >= 15
    assert any(c.startswith("flwr run ") for c in COMMANDS)


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("fl-privacy ")])
def test_fl_privacy_command(line: str) -> None:
    argv = _words(line)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse reports unknown options this way
        pytest.fail(f"the CLI rejects the README's command {line!r} (exit {exit_.code})")
    _check_keys(getattr(args, "set", None) or [])
    config = getattr(args, "config", None)
    if config and not _is_placeholder(config):
        path = ROOT / config
        assert path.is_file(), f"README names {config}, which does not exist"
        wanted = [args.profile] if getattr(args, "profile", None) else []
        wanted += list(getattr(args, "profiles", None) or [])
        missing = set(wanted) - _profiles(path)
        assert not missing, f"{config} has no profile(s) {sorted(missing)} that the README runs"


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("flwr run ")])
def test_flwr_run_command(line: str) -> None:
    words = _words(line)
    assert words[2] == ".", "the README runs the app from the project root"
    if "--run-config" in words:
        _check_keys(shlex.split(words[words.index("--run-config") + 1]))


@pytest.mark.parametrize("line", [c for c in COMMANDS if re.match(r"(python |tests/|[A-Z_]+=\S* tests/)", c)])
def test_scripts_exist(line: str) -> None:
    words = _words(line)
    if words[0] == "python" and words[1] == "-m":
        module = words[2]
        if module in {"venv", "pip", "pytest"}:
            return
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file() or (
            ROOT / module.replace(".", "/") / "__main__.py").is_file(), f"README runs missing module {module}"
        return
    script = words[1] if words[0] == "python" else words[0]
    assert (ROOT / script).is_file(), f"README runs {script}, which does not exist"


def test_every_experiment_file_the_readme_names_exists() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"experiments/[\w/]+\.yaml", text))
    assert named, "the README names no experiment file"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"README names experiment files that do not exist: {missing}"


CHEAP = ("fl-privacy doctor", "fl-privacy validate experiments/", "python -m tests.battery \"")
"""README commands cheap enough to run here (no training): they must exit 0 as written."""


@pytest.mark.integration
@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith(CHEAP) and "<" not in c])
def test_cheap_readme_commands_run_as_written(line: str) -> None:
    import subprocess
    import sys

    words = _words(line)
    if words[0] == "fl-privacy":
        words = [sys.executable, "-m", "fl_privacy.launch.cli", *words[1:]]
    else:
        words = [sys.executable, *words[1:]]
    done = subprocess.run(words, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"README command {line!r} failed ({done.returncode}):\n{done.stderr[-2000:]}"
