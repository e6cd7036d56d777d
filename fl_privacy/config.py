"""One typed, validated experiment config.

The same keys work in a YAML file (nested sections) and as Flower run-config
keys (flattened with dots, e.g. ``data.dataset``). Validation happens before any
work starts and every error names the bad key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A bad experiment config: the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _int_list(value: Any) -> Any:
    """Accept ``[1, 2]``, ``"1,2"`` and ``1`` (run-config values cannot be lists)."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    if isinstance(value, int):
        return [value]
    return value


def _none_if_empty(value: Any) -> Any:
    """Run-config values cannot be null: an empty string means 'not set'."""
    return None if value == "" else value


DatasetName = Literal["cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "npz",
                      "skimage_photos_32", "skimage_photos_64", "skimage_photos_128", "skimage_photos_256", "lfw_faces"]


class DataConfig(_Section):
    """Which data, where it lives, and how it is split over clients."""

    dataset: DatasetName = "cifar10"
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

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.dataset in ("imagefolder", "npz") and not self.path:
            raise ValueError(f"data.path is required for dataset '{self.dataset}' (the archive/folder/.npz to read)")
        return self


ModelName = Literal["lenet", "convnet", "resnet18", "resnet34", "small_cnn", "googlenet", "densenet43", "densenet53",
                    "mlp"]


class ModelConfig(_Section):
    """Architecture and its switches; unset (None) switches take the model's default."""

    name: ModelName = "small_cnn"
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

    @field_validator("cut_skips", mode="before")
    @classmethod
    def _skips(cls, value: Any) -> Any:
        return None if value == "" else _int_list(value)

    def options(self) -> dict[str, Any]:
        """The switches the user set, for ``build_model``."""
        return {k: v for k, v in self.model_dump(exclude={"name"}).items() if v is not None}


class FederationConfig(_Section):
    num_clients: int = Field(default=10, ge=1, description="Must equal the number of SuperNodes (num-supernodes).")
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
    """One stage of the client's defense pipeline: a registered name and its parameters."""

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


class ThreatConfig(_Section):
    """What the curious server knows beyond the update (SoK threat-model levels)."""

    num_examples: bool = Field(default=True, description="Basic information: the number of samples.")
    labels: bool = Field(default=False, description="The victim's labels are known (else inferred).")
    schedule: bool = Field(default=False, description="Client training details: lr, mini-batch partition and "
                           "order (the known batch schedule of FedAvg).")
    bn_statistics: bool = Field(default=False, description="The victim batch's BatchNorm statistics.")
    observes: Literal["update", "aggregate"] = Field(
        default="update", description="update: each victim's own update; aggregate (secure aggregation): only "
        "the round's aggregate of all clients' updates, and how many clients and examples it holds.")

    @model_validator(mode="after")
    def _aggregate_knows_less(self) -> ThreatConfig:
        if self.observes == "aggregate" and (self.schedule or self.bn_statistics):
            raise ValueError("attack.threat.observes 'aggregate' (secure aggregation) hides every single client's "
                             "batch schedule and BatchNorm statistics: set attack.threat.schedule and "
                             "attack.threat.bn_statistics to false")
        return self


class GIAOptions(_Section):
    """Overrides of the attack preset; unset (None) keeps the preset's value."""

    objective: Literal["l2", "cosine", "scaled_l2"] | None = None
    layer_weights: Literal["uniform", "linear"] | None = None
    optimizer: Literal["adam", "lbfgs"] | None = None
    signed: bool | None = None
    lr: float | None = Field(default=None, gt=0)
    iterations: int | None = Field(default=None, ge=1)
    lr_schedule: Literal["none", "steps", "cosine"] | None = None
    boxed: bool | None = None
    tv: float | None = Field(default=None, ge=0)
    l2: float | None = Field(default=None, ge=0)
    bn: float | None = Field(default=None, ge=0)
    init: Literal["randn", "uniform", "zeros"] | None = None
    restarts: int | None = Field(default=None, ge=1)
    labels: Literal["known", "infer", "joint"] | None = None
    label_method: Literal["idlg", "yin", "llg", "llg+"] | None = None
    model_mode: Literal["train", "eval"] | None = None
    latent_prior: Literal["none", "kl", "norm"] | None = None
    latent_weight: float | None = Field(default=None, ge=0)
    bound: Literal["none", "tanh"] | None = None
    generator_steps: int | None = Field(default=None, ge=0)
    generator_lr: float | None = Field(default=None, gt=0)
    return_iterate: Literal["best", "last"] | None = Field(default=None, description="GIA-O: score and return "
                                                           "each restart's best iterate (default) or its last one.")
    early_stop_window: int | None = Field(default=None, ge=0, description="GIA-O: stop a restart whose loss has not "
                                          "improved by early_stop_tol (relative) in this many iterations; 0 = off.")
    early_stop_tol: float | None = Field(default=None, ge=0, description="GIA-O early stopping: relative improvement "
                                         "that counts (default 1e-3).")
    cuda_graph: bool | None = Field(default=None, description="GIA-O with Adam on a GPU: replay the attack "
                                    "iteration as a CUDA graph (same numbers, less launch overhead).")
    batching: Literal["auto", "vmap", "loop"] | None = Field(default=None, description="GIA-O: rows (restarts x "
                                                             "victims) in one vmap pass or one by one; auto: vmap on "
                                                             "a GPU, loop on a CPU.")
    lean_convolutions: bool | None = Field(default=None, description="GIA-O: convolutions whose double backward "
                                           "skips the unneeded weight gradient (fewer FLOPs, same numbers).")
    parameters: list[str] | None = Field(default=None, description="Match only the gradients of parameters whose "
                                         "names start with one of these prefixes (SoK Table III: one inception "
                                         "block, e.g. features.inception_3a); unset = all.")

    _empty = field_validator("*", mode="before")(_none_if_empty)

    @field_validator("parameters", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        """Run-config values are strings: ``"features.inception_3a,features.inception_3b"``."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] or None
        return value

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class AttackConfig(_Section):
    """What the curious server attacks (which rounds, which clients), with what, knowing what."""

    name: str = "none"
    rounds: list[int] = Field(default_factory=lambda: [1])
    victims: int = Field(default=1, ge=0, description="Victims per attacked round (lowest partition ids first).")
    victim_ids: list[int] | None = Field(default=None, description="Attack these partition ids instead.")
    record_updates: bool = True
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    gia: GIAOptions = Field(default_factory=GIAOptions)
    generator: str | None = Field(default=None, description="GIA-L (ggl, gias): the generator checkpoint "
                                  "(train one with `fl-privacy train-generator`).")
    max_images: int = Field(default=64, ge=1, description="Refuse to attack updates computed on more samples.")
    probe_images: int = Field(default=0, ge=0, description="SoK sec. 5.1 (training stage): on each evaluated round "
                              "also attack a one-step FedSGD gradient of this many test images (a seeded draw, the "
                              "same every round) on the current global model; 0 = off.")
    progress: bool = True

    _rounds = field_validator("rounds", mode="before")(_int_list)
    _generator = field_validator("generator", mode="before")(_none_if_empty)

    @field_validator("victim_ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return None if value == "" else _int_list(value)


MIA_ATTACKS = ("confidence", "loss", "entropy", "modified_entropy", "lira_offline", "rmia_offline")


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

    _rounds = field_validator("rounds", mode="before")(_int_list)

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in value if v not in MIA_ATTACKS]
        if bad:
            raise ValueError(f"unknown MIA attack(s) {bad} (choices: {', '.join(MIA_ATTACKS)})")
        return value


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
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.model_validate(json.loads(text))


# --------------------------------------------------------------------------- loading


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and sub is not DefenseSpec:
            keys += _all_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


CONFIG_KEYS: tuple[str, ...] = tuple(_all_keys(ExperimentConfig))


def _allowed_at(prefix: str) -> list[str]:
    """Names valid right after ``prefix`` (keys and section names)."""
    return sorted({k[len(prefix):].split(".")[0] for k in CONFIG_KEYS if k.startswith(prefix)})


def _check_known(data: Mapping[str, Any], prefix: str = "") -> None:
    """Unknown keys, with a suggestion, before pydantic's generic messages."""
    allowed = _allowed_at(prefix)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint} (allowed here: {', '.join(allowed)})")
        if isinstance(value, Mapping) and full != "defenses" and full not in CONFIG_KEYS:
            _check_known(value, full + ".")


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{loc or 'config'}: {e['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data.dataset": x}`` -> ``{"data": {"dataset": x}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}' conflicts with a value set for '{p}'")
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["training.lr=0.1", "attack.rounds=[1,2]"]`` -> flat dict with YAML-typed values."""
    flat: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. training.lr=0.1)")
        key, raw = item.split("=", 1)
        try:
            flat[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not a YAML value"
            raise ConfigError(f"override '{item}': the value {raw!r} is not a YAML value ({problem}); quote "
                              f"strings and close brackets, e.g. {key.strip()}=[1,2]") from None
    return flat


def build_config(data: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validate nested ``data`` with flat dotted ``overrides`` applied on top."""
    merged = _merge(dict(data or {}), unflatten(overrides or {}))
    _check_known(merged)
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    _check_registries(config)
    return config


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment (optional) and apply overrides (``key=value`` strings or a flat dict)."""
    data = read_yaml_mapping(path) if path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return build_config(data, overrides)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The sections of a YAML config file; every way the file can be wrong is a ``ConfigError`` naming it."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config '{p}' is a directory: give a YAML file (e.g. {p / 'experiment.yaml'})")
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{p}' is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"config file '{p}' cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{p}' is not valid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"config file '{p}' is empty: write the sections to change (see experiments/ for "
                          "examples), or omit the file to run the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of sections, not {type(data).__name__}")
    return data


def default_flat() -> dict[str, Any]:
    """Every key with its default, as Flower run-config values (no None, no lists)."""
    return default_flat_of(ExperimentConfig())


def from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Flower's ``context.run_config`` -> config.

    ``config`` may name a YAML file (absolute path, or relative to the working
    directory). Run-config values equal to the pyproject defaults do not
    override the YAML file; the others do.
    """
    run_config = dict(run_config)
    path = run_config.pop("config", "") or None
    defaults = default_flat()
    overrides = {k: v for k, v in run_config.items() if k not in defaults or defaults[k] != v}
    return load_config(path, overrides)


def shadowed_defaults(run_config: Mapping[str, Any]) -> list[str]:
    """Run-config keys left at their default while the YAML file named by ``config`` sets another value.

    Flower hands the ServerApp the merged run config, so a ``--run-config`` value equal to the pyproject
    default cannot be told from no value: the YAML's value wins. One sentence per such key, to warn.
    """
    path = run_config.get("config") or None
    if not path:
        return []
    defaults = default_flat()
    yaml_flat = default_flat_of(load_config(path))
    return [f"run config {key}={defaults[key]!r} equals its default, so the YAML file's {key}={yaml_flat[key]!r} "
            f"is used (to use {defaults[key]!r}, set it in {path})"
            for key in defaults if key in run_config and run_config[key] == defaults[key]
            and key in yaml_flat and yaml_flat[key] != defaults[key]]


def default_flat_of(config: ExperimentConfig) -> dict[str, Any]:
    """``config`` flattened as Flower run-config values: no None (""), lists comma-separated, defenses as JSON."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for key, value in obj.items():
            full = f"{prefix}{key}"
            if full == "defenses":
                flat[full] = json.dumps(value) if value else "[]"
            elif isinstance(value, dict):
                walk(value, full + ".")
            elif value is None:
                flat[full] = ""
            elif isinstance(value, list):
                flat[full] = ",".join(str(v) for v in value)
            else:
                flat[full] = value

    walk(config.model_dump(), "")
    return flat


def _check_registries(config: ExperimentConfig) -> None:
    """Names that live in registries (defenses, attacks), checked before any work starts."""
    from fl_privacy.attacks import ATTACK_NAMES
    from fl_privacy.defenses import build_pipeline

    if config.attack.name not in ATTACK_NAMES:
        raise ConfigError(
            f"attack.name: unknown attack '{config.attack.name}'{_close(config.attack.name, ATTACK_NAMES)} "
            f"(available: {', '.join(ATTACK_NAMES)})"
        )
    try:
        build_pipeline(config.defenses)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"defenses: {err}") from None
    from fl_privacy.dp.guarantee import check_privacy

    check_privacy(config)  # bad DP settings fail here, before round 1


def _close(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def run_config_toml() -> str:
    """The ``[tool.flwr.app.config]`` table for pyproject.toml (``python -m fl_privacy.config``)."""
    lines = ["[tool.flwr.app.config]", 'config = ""']
    for key, value in default_flat().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(run_config_toml(), end="")
