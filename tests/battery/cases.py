"""Bad inputs a new user makes, each run through ``fl_privacy.launch.cli.main`` in this process.

Every case builds its inputs in a temporary folder and gets classified:

- ``clear``: exit status 2 and an ``error: ...`` message (argparse's usage errors count), no run directory left;
- ``unclear``: a non-zero exit without a traceback, but no ``error:`` message;
- ``traceback``: an exception escaped ``main`` before any run directory was written;
- ``late crash``: an exception or a failure after work started (a run directory was written);
- ``accepted``: exit status 0: the bad input was silently accepted.

Run ``python -m tests.battery`` for the table; ``tests/test_bad_inputs.py`` asserts every case is ``clear``.
"""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

TINY = {
    "name": "battery",
    "data": {"dataset": "mnist", "partition": "iid", "samples_per_client": 20},
    "model": {"width": 4},
    "federation": {"num_clients": 2, "rounds": 1},
    "training": {"batch_size": 8},
    "evaluation": {"test_samples": 50},
    "attack": {"progress": False},
    "resources": {"device": "cpu"},
}
"""A federation of two MNIST clients that finishes in about a second."""


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], list[str]]
    """Writes what the case needs under the folder and returns the CLI arguments."""
    call: Callable[[Path], tuple[int, str]] | None = None
    """Cases that are not a CLI call (Flower's ServerApp): returns (status, output)."""


def _yaml(folder: Path, data: dict, name: str = "c.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _tiny(folder: Path, **sections: dict) -> str:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    data["out_dir"] = str(folder / "runs")
    return _yaml(folder, data)


def _attack_yaml(folder: Path, **attack: object) -> str:
    return _tiny(folder, training={"algorithm": "fedsgd", "batch_size": 1, "model_mode": "eval"},
                 attack={"name": "inverting_gradients", "gia": {"iterations": 2}, "threat": {"labels": True},
                         "progress": False, **attack})


_GENERATOR: dict = {}


def _generator_dict() -> dict:
    """A real (one-step) MNIST generator checkpoint as a dict, trained once per process."""
    if not _GENERATOR:
        from fl_privacy.audit.auxiliary import train_generator

        ck = train_generator("mnist", classes=None, epochs=1, batch_size=8, nz=4, ngf=2, ndf=2, max_samples=16,
                             device="cpu", progress=False, max_steps=1)
        _GENERATOR.update(ck.to_dict())
    return {**_GENERATOR, "state_dict": dict(_GENERATOR["state_dict"])}


def _gia_l(folder: Path, checkpoint: object, raw: bytes | None = None) -> list[str]:
    import torch

    path = folder / "gen.pt"
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(checkpoint, path)
    config = _attack_yaml(folder, name="ggl", generator=str(path))
    return ["attack", config, "--out", str(folder / "out")]


class CodeCarrier:
    """Unpickling this object would call a function: ``weights_only=True`` must refuse it."""

    def __reduce__(self):
        return (print, ("code from a checkpoint ran",))


def _missing_keys(d: dict) -> dict:
    d.pop("state_dict")
    return d


def _wrong_shape(d: dict) -> dict:
    key = next(iter(d["state_dict"]))
    d["state_dict"][key] = d["state_dict"][key][..., :1].clone()
    return d


def _wrong_domain(d: dict) -> dict:
    """A checkpoint for 3x32x32 images (CIFAR) used on MNIST."""
    from fl_privacy.attacks.generators import Generator

    g = Generator(nz=4, ngf=2, nc=3, num_classes=10, image_size=32)
    d["config"] = {**d["config"], "generator": {"nz": 4, "ngf": 2, "nc": 3, "num_classes": 10, "image_size": 32,
                                                 "embed_dim": 10}}
    d["state_dict"] = {k: v.clone() for k, v in g.state_dict().items()}
    d["image_shape"] = [3, 32, 32]
    return d


def _reused_out(folder: Path) -> list[str]:
    from fl_privacy.launch.cli import main

    config = _tiny(folder)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["run", config, "--out", str(folder / "run")])
    return ["run", config, "--out", str(folder / "run")]


def _unwritable(folder: Path) -> list[str]:
    return ["attack", _attack_yaml(folder), "--out", str(_locked(folder) / "out")]


def _run_config_typo(folder: Path) -> tuple[int, str]:
    """``flwr run . --run-config "training.lrr=0.1"``: the ServerApp's main with Flower's context."""
    from flwr.app import Context, RecordDict

    from fl_privacy.config import default_flat
    from strategies.server_app import main as server_main

    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={**default_flat(), "config": "", "training.lrr": 0.1})
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            server_main(None, context)  # the grid is never reached
        except Exception:  # noqa: BLE001 - any crash is what the battery classifies
            trace = traceback.format_exc()
            ok = "training.lrr" in out.getvalue() and "training.lr" in out.getvalue().replace("training.lrr", "")
            return (2 if ok else 1), out.getvalue() + ("" if ok else trace)
    return 0, out.getvalue()


def _default_value_over_yaml(folder: Path) -> tuple[int, str]:
    """``flwr run`` with ``config=<yaml setting lr 0.1>`` and ``training.lr=0.05`` (the default) on top."""
    from fl_privacy.config import default_flat, from_run_config

    path = _tiny(folder, training={"lr": 0.1})
    out = io.StringIO()
    run_config = {**default_flat(), "config": path, "training.lr": 0.05}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            from fl_privacy.config import shadowed_defaults

            warned = [w for w in shadowed_defaults(run_config) if "training.lr" in w]
        except ImportError:
            warned = []
        config = from_run_config(run_config)
    if warned:
        return 2, "error: (warning) " + warned[0]  # the ServerApp logs and prints this sentence
    return 0, f"silently used lr={config.training.lr}"


CASES: tuple[Case, ...] = (
    Case("missing config file", lambda f: ["validate", str(f / "nope.yaml")]),
    Case("directory as config", lambda f: ["validate", str(f)]),
    Case("empty YAML", lambda f: ["run", str(_empty(f)), "--out",
                                  str(f / "out"), "--set", "federation.rounds=1"]),
    Case("YAML that is a list", lambda f: ["validate", _yaml(f, [1, 2])]),  # type: ignore[arg-type]
    Case("non-UTF-8 config", lambda f: ["validate", str(_latin1(f))]),
    Case("invalid YAML", lambda f: ["validate", str(_write(f / "bad.yaml", "data: [unclosed\n"))]),
    Case("unknown key in YAML", lambda f: ["validate", _tiny(f, training={"lrr": 0.1})]),
    Case("--set without =", lambda f: ["validate", _tiny(f), "--set", "training.lr"]),
    Case("--set unparsable value", lambda f: ["validate", _tiny(f), "--set", "training.lr=["]),
    Case("--set wrong type", lambda f: ["validate", _tiny(f), "--set", "training.lr=fast"]),
    Case("classes_per_client > classes", lambda f: ["validate", _tiny(f, data={"partition": "classes",
                                                                                "classes_per_client": 11})]),
    Case("batch larger than client data", lambda f: ["validate", _tiny(f, training={"batch_size": 500})]),
    Case("run name escapes the runs folder", lambda f: ["run", _tiny(f, name="../../escape")]),
    Case("--out reused", _reused_out),
    Case("unwritable --out", _unwritable),
    Case("--indices not numbers", lambda f: ["attack", _attack_yaml(f), "--indices", "a,b", "--out", str(f / "o")]),
    Case("--indices more than the FedSGD batch", lambda f: ["attack", _attack_yaml(f), "--indices", "1,2,3",
                                                             "--out", str(f / "o")]),
    Case("--indices outside the split", lambda f: ["attack", _attack_yaml(f), "--indices", "999999",
                                                   "--out", str(f / "o")]),
    Case("unknown attack", lambda f: ["validate", _tiny(f, attack={"name": "invertin_gradients"})]),
    Case("generator missing", lambda f: ["attack", _attack_yaml(f, name="ggl", generator=str(f / "g.pt")),
                                         "--out", str(f / "o")]),
    Case("generator corrupt file", lambda f: _gia_l(f, None, raw=b"\x00not a checkpoint" * 10)),
    Case("generator missing keys", lambda f: _gia_l(f, _missing_keys(_generator_dict()))),
    Case("generator carrying code", lambda f: _gia_l(f, {**_generator_dict(), "extra": CodeCarrier()})),
    Case("generator wrong tensor shapes", lambda f: _gia_l(f, _wrong_shape(_generator_dict()))),
    Case("generator for other images", lambda f: _gia_l(f, _wrong_domain(_generator_dict()))),
    Case("train-generator unknown dataset", lambda f: ["train-generator", "--dataset", "imagenet",
                                                       "--out", str(f / "g.pt")]),
    Case("train-generator class out of range", lambda f: ["train-generator", "--dataset", "mnist", "--classes",
                                                          "10", "--max-steps", "1", "--out", str(f / "g.pt")]),
    Case("train-generator bad --classes", lambda f: ["train-generator", "--classes", "x,y", "--out",
                                                     str(f / "g.pt")]),
    Case("train-generator bad device", lambda f: ["train-generator", "--dataset", "mnist", "--device", "gpu7",
                                                  "--max-steps", "1", "--out", str(f / "g.pt")]),
    Case("train-generator unwritable --out", lambda f: ["train-generator", "--dataset", "mnist", "--max-steps", "1",
                                                        "--max-samples", "16", "--batch-size", "8", "--ngf", "2",
                                                        "--ndf", "2", "--no-progress", "--out",
                                                        str(_locked(f) / "g.pt")]),
    Case("cuda requested without CUDA", lambda f: ["run", _tiny(f, resources={"device": "cuda"}), "--out",
                                                   str(f / "o")]),
    Case("--force on a folder that is not a run", lambda f: ["run", _tiny(f), "--force", "--out",
                                                             str(_write(f / "notes.txt", "mine").parent)]),
    Case("--resume without --out", lambda f: ["run", _tiny(f), "--resume"]),
    Case("--resume of a folder without a run", lambda f: ["run", _tiny(f), "--resume", "--out", str(f / "none")]),
    Case("flwr run-config typo", lambda f: [], call=_run_config_typo),
    Case("run-config default over a YAML value", lambda f: [], call=_default_value_over_yaml),
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _empty(folder: Path) -> Path:
    return _write(folder / "empty.yaml", "")


def _latin1(folder: Path) -> Path:
    path = folder / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    return path


def _locked(folder: Path) -> Path:
    """A path no one can create folders under (chmod does not stop root): a regular file."""
    return _write(folder / "locked", "a file, not a folder\n")


def _run_dirs(folder: Path, before: set[Path]) -> list[Path]:
    """Run directories (with a config.yaml) written under ``folder`` or escaping above it."""
    found = {p.parent for p in folder.parent.rglob("config.yaml")}
    return sorted(found - before)


def run_case(case: Case, folder: Path) -> tuple[str, str]:
    """(category, what the user saw) for one case, inputs under ``folder`` (created)."""
    from fl_privacy.launch.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FL_PRIVACY_RUNS_DIR", str(folder / "runs-default"))
    if case.call is not None:
        try:
            status, text = case.call(folder)
        except Exception:  # noqa: BLE001 - any crash is what the battery classifies
            return "traceback", traceback.format_exc(limit=-3)
        return _category(status, text, started=False), text
    argv = case.build(folder)
    before = set(_run_dirs(folder, set()))
    out, err = io.StringIO(), io.StringIO()
    crashed = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - any crash is what the battery classifies
            status, crashed = 1, traceback.format_exc(limit=-3)
    started = bool(_run_dirs(folder, before))
    text = (err.getvalue() + out.getvalue()).strip()
    if crashed:
        return ("late crash" if started else "traceback"), crashed
    return _category(status, text, started), text


def _category(status: int, text: str, started: bool) -> str:
    if status == 0:
        return "accepted"
    if started:
        return "late crash"
    if "Traceback" in text:
        return "traceback"
    if status == 2 and "error:" in text:
        return "clear"
    return "unclear"


def run_all(root: Path, names: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(case, category, message) for every case (or the named ones)."""
    rows = []
    for i, case in enumerate(CASES):
        if names and case.name not in names:
            continue
        category, text = run_case(case, root / f"case{i:02d}")
        rows.append((case.name, category, text))
    return rows


__all__ = ["CASES", "Case", "run_all", "run_case"]
