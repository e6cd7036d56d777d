"""Extending from outside the package: a toy attack and a toy defense, registered here, run in a federation."""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass, fields, replace

import pytest
import torch
from pydantic import Field

from clients.client_app import app as client_app
from fl_privacy.attacks import AttackSpec, get_attack, register_attack, unregister_attack
from fl_privacy.config import ConfigError, build_config
from fl_privacy.defenses import DEFENSES, Defense, DefenseContext, build_pipeline, register_defense
from fl_privacy.defenses.base import Update
from fl_privacy.defenses.params import DefenseParams, Number
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation
from tests.conftest import REPO, needs_mnist


@dataclass(frozen=True)
class MeanImageOptions:
    """The toy attack's options (``labels``/``label_method`` are read by the shared pre-run checks)."""

    iterations: int = 3
    seed: int = 0
    model_mode: str = "train"
    labels: str = "none"
    label_method: str = "none"


@dataclass
class MeanImageResult:
    images: torch.Tensor
    labels: torch.Tensor
    trace: list[float]
    objective: float
    iterations: int
    seconds_per_iteration: float
    restart_objectives: list[float]


def mean_image_options(**overrides: object) -> MeanImageOptions:
    known = {f.name for f in fields(MeanImageOptions)}
    return replace(MeanImageOptions(), **{k: v for k, v in overrides.items() if k in known})


def mean_image_attack(obs, options: MeanImageOptions, device, progress, /) -> MeanImageResult:
    """Guess every image as mid-grey: the weakest attack there is, in the shape the evaluator scores."""
    images = torch.full((obs.num_examples, *obs.image_shape), 0.5)
    return MeanImageResult(images, torch.empty(0, dtype=torch.long), [], 0.0, options.iterations, 0.0, [])


class Shift(Defense):
    """Adds ``offset`` to every floating tensor of the update."""

    name = "toy_shift"

    class Params(DefenseParams):
        offset: Number = Field(gt=0)

    def __init__(self, *, offset: float) -> None:
        self.offset = self.validate(offset=offset).offset
        super().__init__(offset=offset)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        return {k: v + self.offset if v.is_floating_point() else v for k, v in update.items()}


@pytest.fixture
def toy_plugins():
    register_attack(AttackSpec(name="toy_mean_image", family="GIA-O", options=mean_image_options,
                               reconstruct=mean_image_attack))
    register_defense(Shift)
    yield
    unregister_attack("toy_mean_image")
    DEFENSES.pop("toy_shift")


def test_registries_refuse_taken_names(toy_plugins):
    with pytest.raises(ValueError, match="already registered"):
        register_attack(get_attack("toy_mean_image"))
    with pytest.raises(ValueError, match="already registered"):
        register_defense(Shift)


def test_toy_defense_parameters_are_typed(toy_plugins):
    with pytest.raises(ValueError, match="did you mean 'offset'"):
        build_pipeline([{"name": "toy_shift", "ofset": 1.0}])
    with pytest.raises(ConfigError, match="offset"):
        build_config({}, {"defenses": [{"name": "toy_shift", "offset": "1"}]})


@needs_mnist
def test_toy_attack_and_defense_run_in_a_federation(tmp_path, tiny_overrides, toy_plugins):
    overrides = {**tiny_overrides, "federation.rounds": 1, "attack.name": "toy_mean_image",
                 "attack.gia.iterations": 7, "attack.progress": False,
                 "defenses": [{"name": "toy_shift", "offset": 1.0}]}
    config = build_config({}, overrides)
    run = run_federation(InProcessGrid(client_app, config.federation.num_clients), config, out=str(tmp_path / "r"))
    victim = run.read_jsonl("rounds.jsonl")[1]["victims"][0]
    assert victim["attack"] == "toy_mean_image" and victim["iterations"] == 7
    assert victim["images"] == 40 and victim["psnr_mean"] is not None

    plain = build_config({}, {**overrides, "defenses": [], "attack.name": "none"})
    plain_run = run_federation(InProcessGrid(client_app, plain.federation.num_clients), plain,
                               out=str(tmp_path / "p"))
    defended = RecordedUpdate.load(run.update_path(1, 0))
    undefended = RecordedUpdate.load(plain_run.update_path(1, 0))
    assert defended.metadata["defenses"] == [{"name": "toy_shift", "offset": 1.0}]
    for name, value in defended.update.items():
        torch.testing.assert_close(value, undefended.update[name] + 1.0)


def test_readme_extending_examples_run():
    """The three examples of the README's "Extending" section register what they say, and a config uses them."""
    from fl_privacy.attacks.gia import PRESETS
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.models import build_model, unregister_model

    text = (REPO / "README.md").read_text(encoding="utf-8").split("## Extending", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3
    try:
        for index, block in enumerate(blocks):  # each as a module of its own, as a user's file would be
            module = types.ModuleType(f"readme_example_{index}")
            sys.modules[module.__name__] = module
            exec(compile(block, "README.md", "exec"), module.__dict__)  # noqa: S102
        config = build_config({}, {"attack.name": "inverting_gradients_tv", "model.name": "two_conv",
                                   "defenses": [{"name": "mean_magnitude", "scale": 0.5}]})
        assert gia_config(config).tv == 1e-2
        assert build_model("two_conv", num_classes=10, in_channels=3, image_size=32, width=4)(
            torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        shared = build_pipeline(config.defenses)({"w": torch.tensor([1.0, -3.0])}, DefenseContext(kind="gradient"))
        torch.testing.assert_close(shared["w"], torch.tensor([1.0, -1.0]))
    finally:
        unregister_attack("inverting_gradients_tv")
        PRESETS.pop("inverting_gradients_tv", None)
        DEFENSES.pop("mean_magnitude", None)
        unregister_model("two_conv")
        for index in range(len(blocks)):
            sys.modules.pop(f"readme_example_{index}", None)


def test_what_an_attack_declares_it_can_attack_is_checked_before_work():
    """``AttackSpec.updates`` / ``observes`` are enforced by the pre-flight, not just documented."""
    from fl_privacy.audit.run_attacks import gia_config

    register_attack(AttackSpec(name="toy_fedsgd_only", family="GIA-O", options=mean_image_options,
                               reconstruct=mean_image_attack, updates=frozenset({"fedsgd"}),
                               observes=frozenset({"update"})))
    try:
        gia_config(build_config({}, {"attack.name": "toy_fedsgd_only", "training.algorithm": "fedsgd"}))
        with pytest.raises(ConfigError, match="attacks fedsgd updates but training.algorithm is 'fedavg'"):
            gia_config(build_config({}, {"attack.name": "toy_fedsgd_only", "training.algorithm": "fedavg"}))
        with pytest.raises(ConfigError, match="attack.threat.observes is 'aggregate'"):
            gia_config(build_config({}, {"attack.name": "toy_fedsgd_only", "training.algorithm": "fedsgd",
                                         "attack.threat.observes": "aggregate"}))
    finally:
        unregister_attack("toy_fedsgd_only")
