"""Output paths checked before work starts: a run never appends to an old run, never fails at the end to write.

``--out`` naming a folder that already holds a run is refused unless ``--force``
(the old run is replaced) or ``--resume`` (the run continues); a path that cannot
be created (a file in the way, no write permission) is refused up front, and
nothing is created by the check itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fl_privacy.config import ConfigError


def check_creatable(path: str | os.PathLike, what: str) -> Path:
    """``path`` exists as a folder or can be created (its nearest existing parent is a writable folder)."""
    target = Path(path).expanduser().absolute()
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} '{target}' cannot be created: '{ancestor}' is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} '{target}' cannot be written: '{ancestor}' is not writable by this user")
    return target


def check_run_dir(out: str | os.PathLike | None, force: bool = False, resume: bool = False,
                  resumable: bool = True) -> None:
    """Refuse an ``--out`` that holds files (unless ``force``/``resume``) or that cannot be created."""
    if out is None:
        return
    target = check_creatable(out, "--out")
    if not target.exists():
        return
    if resume or not any(target.iterdir()):
        return
    if not force:
        raise ConfigError(f"--out '{target}' already holds a run: choose a new folder, add --force to replace it"
                          + (", or --resume to continue it" if resumable else ""))
    if not (target / "config.yaml").is_file():
        raise ConfigError(f"--out '{target}' holds files that are not a run (no config.yaml): --force only replaces "
                          "a previous run; choose another folder")


def replace_run_dir(out: str | os.PathLike) -> None:
    """``--force``: remove the previous run in ``out`` (checked by ``check_run_dir`` to be one)."""
    target = Path(out).expanduser()
    if target.is_dir() and (target / "config.yaml").is_file():
        shutil.rmtree(target)
