"""Pre-flight: every point x seed can run as configured (data, model, victims, attack knowledge), checked first.

Loads each point's data split and builds its model once per data/model setting, so a missing
dataset or an impossible setting fails in seconds instead of after hours of sweep.
"""

from __future__ import annotations

import json

from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.experiments.spec.model import Experiment


def preflight(experiment: Experiment) -> None:
    """Data, models, victims and attack knowledge of every point x seed, before the first run."""
    from fl_privacy.attacks import needs_generator
    from fl_privacy.audit.preflight import check_image_budget, check_label_inference
    from fl_privacy.audit.ready import prepare_checked
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.federation.run_setup import build_model_for, images_per_update, load_split

    models_checked: set[str] = set()
    for point in experiment.points:
        for seed, config in point.configs.items():
            where = f"sweep point {point.index + 1} of {len(experiment.points)} ({point.label()}), seed {seed}"
            try:
                if experiment.mode == "federation":
                    prepare_checked(config)
                    continue
                if config.attack.name == "none":
                    raise ConfigError("attack.name is 'none': mode 'attack' needs an attack (e.g. attack.name: "
                                      "inverting_gradients)")
                # the preset exists and the threat level grants what it needs (generators trained later may be absent)
                gia = gia_config(config, pending_generators={str(experiment.generator_path(g))
                                                             for g in experiment.generators})
                if needs_generator(config.attack.name):
                    _check_generator_data(experiment, config)
                if point.victims and point.victims[0].client is not None:
                    setup = prepare_checked(config)
                    bad = [v.client for v in point.victims if not 0 <= v.client < len(setup.partitions)]
                    if bad:
                        raise ConfigError(f"victims.clients {bad} outside 0..{len(setup.partitions) - 1}")
                    images = max(images_per_update(config, len(setup.partitions[v.client])) for v in point.victims)
                    check_label_inference(gia, images, f"each victim update here ({images} images)")
                    continue
                data = load_split(config, experiment.victims_spec["split"])
                bad = sorted({i for v in point.victims for i in v.indices or () if i >= len(data)})
                if bad:
                    raise ConfigError(f"victims.indices {bad} outside the {experiment.victims_spec['split']} split "
                                      f"(0..{len(data) - 1})")
                images = len(point.victims[0].indices or ())
                check_label_inference(gia, images, f"each victim update here ({images} images)")
                check_image_budget(config, images, f"{images} images per victim")
                model_key = json.dumps([config.data.model_dump(), config.model.model_dump()], default=str)
                if model_key not in models_checked:
                    build_model_for(config, data)
                    models_checked.add(model_key)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            except (FileNotFoundError, ValueError) as err:
                raise ConfigError(f"{where}: {err}") from None


def _check_generator_data(experiment: Experiment, config: ExperimentConfig) -> None:
    """An experiment's generator must exist as data and make images of the victims' shape."""
    import numpy as np

    from fl_privacy.data import load_dataset

    for name, spec in experiment.generators.items():
        if config.attack.generator != str(experiment.generator_path(name)):
            continue
        public = load_dataset(spec["dataset"], spec.get("split", "train"), config.data.data_dir)
        victims = load_dataset(config.data.dataset, "train", config.data.data_dir, path=config.data.path)
        if public.images.shape[1:] != victims.images.shape[1:]:
            raise ConfigError(f"experiment.generators.{name}: {spec['dataset']} images are "
                              f"{tuple(public.images.shape[1:])}, the victims' {config.data.dataset} images "
                              f"{tuple(victims.images.shape[1:])}: the generator must make images of the victims' shape")
        classes = spec.get("classes")
        present = {int(c) for c in np.unique(public.labels)} if classes else set()
        missing = sorted(set(classes or ()) - present)
        if missing:
            raise ConfigError(f"experiment.generators.{name}.classes {missing} do not occur in {spec['dataset']} "
                              f"(classes 0..{max(present)})")

