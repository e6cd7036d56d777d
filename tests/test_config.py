"""Config validation: every bad input fails fast with a message that names the fix."""

from __future__ import annotations

import pytest
import tomllib

from fl_privacy.config import (
    ConfigError,
    ExperimentConfig,
    build_config,
    default_flat,
    from_run_config,
    load_config,
    parse_overrides,
)
from tests.conftest import REPO


def test_defaults_are_the_documented_default_run():
    c = ExperimentConfig()
    assert (c.data.dataset, c.data.partition, c.model.name, c.training.algorithm) == (
        "cifar10", "dirichlet", "small_cnn", "fedavg")
    assert (c.federation.num_clients, c.federation.rounds) == (10, 3)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.datset'; did you mean 'data.dataset'"):
        build_config({"data": {"datset": "mnist"}})


def test_unknown_top_level_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainig'.*allowed here: .*training"):
        build_config({"trainig": {}})


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        build_config({"data": {"partition": "pathological"}})
    message = str(err.value)
    assert "data.partition" in message and "'iid'" in message and "'dirichlet'" in message
    assert "pathological" in message


def test_bad_number_is_rejected_with_its_key():
    with pytest.raises(ConfigError, match=r"training.lr"):
        build_config({"training": {"lr": -1}})


def test_unknown_defense_and_attack_are_rejected_before_work():
    with pytest.raises(ConfigError, match=r"unknown defense 'dp_magic'"):
        build_config({"defenses": [{"name": "dp_magic", "std": 1}]})
    with pytest.raises(ConfigError, match=r"unknown attack 'dlgg'.*available: none"):
        build_config({"attack": {"name": "dlgg"}})


def test_attack_rounds_must_exist():
    with pytest.raises(ConfigError, match=r"attack.rounds \[5\] outside 1..federation.rounds=3"):
        build_config({"attack": {"rounds": [1, 5]}})


def test_victim_ids_must_be_clients():
    with pytest.raises(ConfigError, match=r"victim_ids \[10\]"):
        build_config({"attack": {"victim_ids": [10]}})


def test_dataset_path_required_for_local_formats():
    with pytest.raises(ConfigError, match=r"data.path is required"):
        build_config({"data": {"dataset": "npz"}})


def test_overrides_are_yaml_typed_and_applied_last(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("training:\n  lr: 0.2\n  batch_size: 8\nattack:\n  rounds: [1]\n")
    config = load_config(path, ["training.lr=0.01", "attack.rounds=[1,2]", "model.cut_skips=0,3"])
    assert config.training.lr == 0.01 and config.training.batch_size == 8
    assert config.attack.rounds == [1, 2] and config.model.cut_skips == [0, 3]


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["training.lr"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_pyproject_run_config_has_every_key_with_its_default():
    """`flwr run --run-config` can only override keys that exist in pyproject."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    from flwr.common.config import flatten_dict

    flat = flatten_dict(data["tool"]["flwr"]["app"]["config"])
    assert flat.pop("config") == ""
    assert flat == default_flat()


def test_run_config_values_override_a_yaml_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("federation:\n  rounds: 7\ntraining:\n  lr: 0.3\n")
    run_config = {**default_flat(), "config": str(path), "training.lr": 0.2, "defenses": "[]"}
    config = from_run_config(run_config)
    assert config.federation.rounds == 7  # default in run config: the YAML value stays
    assert config.training.lr == 0.2  # changed in run config: it wins


def test_run_config_strings_for_lists_and_unset_values():
    run_config = {**default_flat(), "attack.rounds": "1,3", "attack.victim_ids": "0,2", "model.width": ""}
    config = from_run_config(run_config)
    assert config.attack.rounds == [1, 3] and config.attack.victim_ids == [0, 2] and config.model.width is None


def test_json_round_trip():
    config = build_config({"model": {"name": "convnet", "width": 16}}, {"attack.rounds": [1, 2]})
    assert ExperimentConfig.from_json(config.to_json()) == config


def test_gia_parameter_prefixes_from_run_config_strings():
    config = from_run_config({"attack.gia.parameters": "features.inception_3a, features.inception_3b"})
    assert config.attack.gia.parameters == ["features.inception_3a", "features.inception_3b"]
    assert from_run_config({"attack.gia.parameters": ""}).attack.gia.parameters is None


def test_registered_names_are_checked_with_a_suggestion():
    """Model, dataset and attack names come from their registries (a name registered later is valid too)."""
    with pytest.raises(ConfigError, match=r"unknown model 'lenett'; did you mean 'lenet'"):
        build_config({}, {"model.name": "lenett"})
    with pytest.raises(ConfigError, match=r"unknown dataset 'fashion-mnist'; did you mean 'fashion_mnist'"):
        build_config({}, {"data.dataset": "fashion-mnist"})
    with pytest.raises(ConfigError, match=r"attack.name: unknown attack 'idgl'; did you mean 'idlg'"):
        build_config({}, {"attack.name": "idgl"})


def test_attack_families_come_from_the_registry():
    from fl_privacy.attacks import attack_names, family_of, get_attack, needs_generator

    assert set(attack_names("GIA-L")) == {"ggl", "gias"} and all(needs_generator(n) for n in ("ggl", "gias"))
    assert family_of("cocktail_party") == "aggregate" and family_of("none") is None
    assert get_attack("dimitrov_fedavg").updates == {"fedavg"}
    assert get_attack("inverting_gradients").reconstruct_batch is not None
    with pytest.raises(ValueError, match="already registered"):
        from fl_privacy.attacks import register_attack

        register_attack(get_attack("dlg"))


def test_every_attack_option_reaches_a_registered_attack():
    """``attack.gia.*`` keys are options of at least one registered attack (none is silently dead)."""
    from fl_privacy.attacks import attack_names, get_attack
    from fl_privacy.config import GIAOptions

    accepted = set().union(*(get_attack(name).options_fields for name in attack_names()))
    assert set(GIAOptions.model_fields) <= accepted
