"""The typed run config: one pydantic model per section, every section strict (``extra="forbid"``).

The same keys work in a YAML file (nested sections) and as Flower run-config
keys (flattened with dots, e.g. ``data.dataset``). Names that live in registries
(models, datasets) are derived from them, so a registered model is a valid ``model.name``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from fl_privacy.config.attack_schema import (
    MIA_ATTACKS,
    AttackConfig,
    MultiRoundMIAConfig,
    check_label_method,
    check_recorded_for_multiround,
)
from fl_privacy.config.fields import Section as _Section
from fl_privacy.config.fields import choice_list
from fl_privacy.config.fields import int_list as _int_list
from fl_privacy.config.fields import none_if_empty as _none_if_empty
from fl_privacy.data.registry import dataset_names, get_dataset
from fl_privacy.errors import did_you_mean
from fl_privacy.models import model_names


def _registered(kind: str, name: str, names: tuple[str, ...]) -> str:
    """``name`` if registered, else a message with a suggestion and the choices (read at validation time,
    so that names registered after import are valid too)."""
    if name not in names:
        raise ValueError(f"unknown {kind} '{name}'{did_you_mean(name, names)} (available: {', '.join(names)})")
    return name


class DataConfig(_Section):
    """Which data, where it lives, and how it is split over clients."""

    dataset: str = Field(default="cifar10", description="A registered dataset (fl_privacy.data.registry).")
    data_dir: str | None = Field(
        default=None,
        description="Folder with local copies (cifar10-jpeg.tar.gz, mnist-subset.npz) or torchvision "
        "downloads; default: $FL_PRIVACY_DATA_DIR, else ~/.cache/fl-privacy/data.",
    )
    path: str | None = Field(default=None, description="imagefolder/npz only: the archive, folder or .npz file.")
    download: bool = True
    normalize: bool = True
    partition: Literal["iid", "dirichlet", "classes"] = "dirichlet"
    alpha: float = Field(default=0.5, gt=0)
    classes_per_client: int = Field(default=2, ge=1)
    samples_per_client: int = Field(default=0, ge=0, description="Cap per client after partitioning; 0 = no cap.")
    min_partition_size: int = Field(default=10, ge=0, description="Dirichlet: redraw until every client has this many.")

    _empty = field_validator("data_dir", "path", mode="before")(_none_if_empty)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        return _registered("dataset", value, dataset_names())

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if get_dataset(self.dataset).needs_path and not self.path:
            raise ValueError(f"data.path is required for dataset '{self.dataset}' (the archive/folder/.npz to read)")
        return self


class ModelConfig(_Section):
    """Architecture and its switches; unset (None) switches take the model's default."""

    name: str = Field(default="small_cnn", description="A registered model (fl_privacy.models).")
    width: int | None = Field(default=None, ge=1)
    bias: bool | None = None
    activation: str | None = None
    dropout: float | None = Field(default=None, ge=0, lt=1)
    maxpool: bool | None = None
    kernel_size: int | None = Field(default=None, ge=1)
    padding: int | None = Field(default=None, ge=0)
    batchnorm: bool | None = None
    cut_skips: list[int] | None = None
    dlg_init: bool | None = None
    growth_rate: int | None = Field(default=None, ge=1, description="DenseNet: channels each layer adds.")
    connections: Literal["dense", "shortnet1", "shortnet2"] | None = Field(
        default=None, description="DenseNet skip connections: dense, or the SoK Fig. 14 reductions (Ju et al. 2022).")

    _empty = field_validator(
        "width", "bias", "activation", "dropout", "maxpool", "kernel_size", "padding", "batchnorm", "dlg_init",
        "growth_rate", "connections",
        mode="before",
    )(_none_if_empty)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return _registered("model", value, model_names())

    @field_validator("cut_skips", mode="before")
    @classmethod
    def _skips(cls, value: Any) -> Any:
        return None if value == "" else _int_list(value)

    def options(self) -> dict[str, Any]:
        """The switches the user set, for ``build_model``."""
        return {k: v for k, v in self.model_dump(exclude={"name"}).items() if v is not None}


class FederationConfig(_Section):
    num_clients: int = Field(default=10, ge=1, description="Clients (data partitions); with flwr run the SuperNodes host them, one each or several per "
                             "SuperNode when there are fewer SuperNodes.")
    rounds: int = Field(default=3, ge=1)
    fraction_train: float = Field(default=1.0, gt=0, le=1)
    min_train_clients: int = Field(default=1, ge=1)
    round_timeout: float = Field(default=3600.0, gt=0, description="Seconds the server waits for replies.")
    sampling: Literal["fixed", "poisson"] = Field(
        default="fixed", description="Client sampling: fixed (max(int(num_clients * fraction_train), "
        "min_train_clients) clients, drawn without replacement) or poisson (each client independently with "
        "probability fraction_train; what central DP needs for amplification).")
    accept_failures: bool = Field(default=True, description="Continue past clients that fail or time out (Flower's "
                                  "term and default); they are recorded per round by partition id. false: the "
                                  "first failure stops the run.")
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedavgm"] = Field(
        default="fedavg", description="The server's aggregation, wrapped by the recording server: fedavg (a "
        "streaming weighted mean), fedprox (clients add (mu/2)||w - w_global||^2), fedadam, fedavgm (Flower's).")
    proximal_mu: float = Field(default=0.01, ge=0, description="fedprox: mu of the clients' proximal term.")
    server_lr: float | None = Field(default=None, gt=0, description="fedadam (eta, default 0.1) and fedavgm "
                                    "(server learning rate, default 1.0); empty: Flower's default.")
    server_momentum: float = Field(default=0.9, ge=0, lt=1, description="fedavgm: the server's momentum.")

    def clients_per_round(self) -> int:
        """Fixed sampling's draw size: ``max(int(num_clients * fraction_train), min_train_clients)``."""
        return max(int(self.num_clients * self.fraction_train), self.min_train_clients)


class TrainingConfig(_Section):
    """Client-side local training (what a client does before it shares)."""

    algorithm: Literal["fedavg", "fedsgd"] = "fedavg"
    local_epochs: int = Field(default=1, ge=1)
    local_steps: int = Field(default=0, ge=0, description="FedAvg: stop after this many SGD steps; 0 = whole epochs.")
    batch_size: int = Field(default=32, ge=1, description="FedAvg mini-batch size; FedSGD: the one batch's size.")
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    drop_last: bool = False
    model_mode: Literal["train", "eval"] = Field(
        default="train", description="Mode of the client's model while it computes its update: train (BatchNorm "
        "batch statistics, dropout on; real FL) or eval (running statistics, as Inverting Gradients' experiments).")


class DefenseSpec(_Section):
    """One stage of the client's defense pipeline: a registered name and its parameters.

    The parameters are open here because they depend on the name; the defense's own typed
    ``Params`` model (``fl_privacy.defenses``) checks them when the config is built."""

    model_config = ConfigDict(extra="allow")
    name: str


class PrivacySection(_Section):
    """The differential-privacy mechanism that runs (see fl_privacy.dp and the README's "Privacy guarantees")."""

    mechanism: Literal["none", "local", "central", "sample"] = Field(
        default="none", description="local: each client clips and noises its update (protects against the "
        "server); central: clients clip, the server noises the aggregate once (protects against whoever sees the "
        "global model, not the server); sample: DP-SGD on the client (per-example clipping + noise each step).")
    clip: float | None = Field(default=None, gt=0, description="L2 clip: whole update (local, central) or "
                               "per-example gradient (sample).")
    noise_multiplier: float | None = Field(default=None, ge=0, description="Noise std / clip.")
    epsilon: float | None = Field(default=None, gt=0, description="Target epsilon: calibrates noise_multiplier "
                                  "for federation.rounds (give this or noise_multiplier).")
    delta: float = Field(default=1e-5, gt=0, lt=1)
    neighbouring: Literal["add_or_remove", "replace_one"] = Field(
        default="add_or_remove", description="Neighbouring relation of the client-level guarantee (sensitivity "
        "clip or 2 * clip); sample-level DP-SGD with shuffled batches is always replace-one.")
    buffers: Literal["auto", "share", "withhold", "noise"] = Field(
        default="auto", description="BatchNorm running statistics: share raw, withhold (FedBN-style: the client "
        "sends the global buffers back) or noise (their change joins the update that is clipped and noised); "
        "auto = withhold under DP, share otherwise.")
    metrics: Literal["auto", "share", "withhold"] = Field(
        default="auto", description="Per-client train loss and number of examples: auto = withhold under DP.")
    proceed_without_guarantee: bool = Field(
        default=False, description="Run a DP config whose guarantee does not hold (e.g. a stage reads private "
        "data after the noise); the reports then say 'no guarantee' instead of an epsilon.")



class MIASection(_Section):
    """Membership inference by the curious server: on the global model and on recorded updates."""

    rounds: list[int] = Field(default_factory=list, description="Audit the global model after these rounds.")
    attacks: list[str] = Field(default_factory=lambda: list(MIA_ATTACKS))
    audit_size: int = Field(default=200, ge=2, description="Members + non-members, balanced 50/50.")
    reference_models: int = Field(default=4, ge=1)
    reference_epochs: int = Field(default=5, ge=1)
    reference_pool: int = Field(default=2000, ge=8, description="Test-split samples for reference models.")
    gradient: bool = Field(default=False, description="Gradient-similarity MIA on each recorded victim update.")
    gradient_nonmembers: int = Field(default=32, ge=1)
    multiround: MultiRoundMIAConfig = Field(default_factory=MultiRoundMIAConfig)

    _rounds = field_validator("rounds", mode="before")(_int_list)

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, value: Any) -> Any:
        return choice_list(value, MIA_ATTACKS, "MIA attack(s)")


class EvaluationConfig(_Section):
    every: int = Field(default=1, ge=0, description="Evaluate the global model every N rounds; 0 = never.")
    test_samples: int = Field(default=0, ge=0, description="0 = the whole test split.")
    batch_size: int = Field(default=1000, ge=1)
    igsa: bool = Field(default=False, description="Also measure IGSA (input-gradient smoothness, SoK sec. 5.1) of "
                       "the global model on evaluated rounds; see fl_privacy.metrics.igsa.")
    igsa_images: int = Field(default=8, ge=1, description="IGSA: test images (a seeded draw) around which it is "
                             "estimated.")
    igsa_samples: int = Field(default=2, ge=1, description="IGSA: sampled points per image.")
    igsa_probes: int = Field(default=4, ge=1, description="IGSA: random directions per point (Hutchinson).")
    igsa_radius: float = Field(default=0.05, ge=0, description="IGSA: per-pixel RMS radius of the sampled "
                               "points (normalized units).")


class ResourcesConfig(_Section):
    client_cpus: int = Field(default=1, ge=1)
    client_gpus: float = Field(default=0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Server: attacks and evaluation.")
    client_device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = Field(default=0, ge=0, description="torch threads per process; 0 = torch's default.")


class ExperimentConfig(_Section):
    """A whole run: data, model, federation, training, defenses, attack, evaluation."""

    name: str = "default"
    seed: int = 0
    out_dir: str = Field(default="runs", description="Parent of the run directory.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    defenses: list[DefenseSpec] = Field(default_factory=list)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    mia: MIASection = Field(default_factory=MIASection)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        """The name becomes a folder under ``out_dir``: no separators, no leading dot (``../x`` would escape)."""
        if not value or "/" in value or "\\" in value or value.startswith(".") or "\0" in value:
            raise ValueError(f"name {value!r} must be a plain folder name (no '/', '\\', leading '.'): "
                             "use out_dir (or --out) to choose where runs are written")
        return value

    @field_validator("defenses", mode="before")
    @classmethod
    def _defenses(cls, value: Any) -> Any:
        if isinstance(value, str):  # run-config: a YAML/JSON list in a string
            value = yaml.safe_load(value) or []
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        fed = self.federation
        if fed.min_train_clients > fed.num_clients:
            raise ValueError(
                f"federation.min_train_clients={fed.min_train_clients} exceeds federation.num_clients={fed.num_clients}"
            )
        bad = [r for r in self.attack.rounds if not 1 <= r <= fed.rounds]
        if bad:
            raise ValueError(f"attack.rounds {bad} outside 1..federation.rounds={fed.rounds}")
        bad = [r for r in self.mia.rounds if not 0 <= r <= fed.rounds]
        if bad:
            raise ValueError(f"mia.rounds {bad} outside 0..federation.rounds={fed.rounds}")
        ids = self.attack.victim_ids or []
        bad = [i for i in ids if not 0 <= i < fed.num_clients]
        if bad:
            raise ValueError(f"attack.victim_ids {bad} outside 0..{fed.num_clients - 1}")
        check_recorded_for_multiround(self)
        check_label_method(self)
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.model_validate(json.loads(text))

