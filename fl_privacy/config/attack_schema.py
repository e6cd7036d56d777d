"""The attack sections: what the curious server attacks, with what, knowing what."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fl_privacy.config.fields import Section as _Section
from fl_privacy.config.fields import choice_list
from fl_privacy.config.fields import int_list as _int_list
from fl_privacy.config.fields import none_if_empty as _none_if_empty
from fl_privacy.metrics.catalog import MULTIROUND_MIA_METHODS


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
    label_method: Literal["idlg", "yin", "llg", "llg+", "fedavg"] | None = Field(
        default=None, description="Label inference: idlg, yin, llg, llg+ (one gradient); fedavg: Dimitrov et al.'s "
        "counts by simulated local training (dimitrov_fedavg on FedAvg updates only).")
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
    compile: bool | None = Field(default=None, description="GIA-O: torch.compile the iteration's loss (inner "
                                 "gradient included; compile time counted); eager again, with a note, if it fails.")
    precision: Literal["float32", "tf32", "bf16"] | None = Field(default=None, description="GIA-O arithmetic: "
                                                                 "float32 (strict, default), tf32 (NVIDIA tensor "
                                                                 "cores) or bf16 autocast; reduced precision is "
                                                                 "opt-in and changes the reconstruction.")
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

    name: str = Field(default="none", description="A registered attack (fl_privacy.attacks.registry), or none: "
                      "record updates without attacking them.")
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



class MultiRoundMIAConfig(_Section):
    """Membership inference from a client's updates over several rounds, scored after the last of ``rounds``.

    It reads the updates the recorder keeps (bounded: only ``attack.rounds`` x recorded victims), so
    ``attack.rounds`` must hold ``rounds`` and the recorded victims the ``clients`` plus, for FedMIA, at
    least two others (their measurements are the non-member references).
    """

    rounds: list[int] = Field(default_factory=list, description="Score the recorded updates of these rounds "
                              "(FedAvg); empty = off.")
    clients: list[int] = Field(default_factory=lambda: [0], description="Target clients (partition ids): their "
                               "training samples are the members; the metrics are the mean over targets.")
    methods: list[str] = Field(default_factory=lambda: list(MULTIROUND_MIA_METHODS), description="fedmia (Zhu et "
                               "al. 2024, on the gradient cosine), fedmia_loss, gradient_trajectory, "
                               "loss_trajectory, gradient_update (one update: the last round's cosine).")
    nonmembers: int = Field(default=1000, ge=1, description="Test-split non-members; TPR at 0.1% FPR needs >= "
                            "1000 (else it is reported as not measurable).")

    _rounds = field_validator("rounds", "clients", mode="before")(_int_list)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return choice_list(value, MULTIROUND_MIA_METHODS, "multi-round MIA method(s)")


def check_recorded_for_multiround(config: Any) -> None:
    """``mia.multiround`` reads only what the recorder keeps: its rounds and clients must be recorded FedAvg updates."""
    multi, attack = config.mia.multiround, config.attack
    if not multi.rounds:
        return
    missing = sorted(set(multi.rounds) - set(attack.rounds))
    if missing:
        raise ValueError(f"mia.multiround.rounds {missing} are not recorded: add them to attack.rounds (only "
                         "attack.rounds x recorded victims are stored)")
    if not attack.record_updates or attack.threat.observes == "aggregate":
        raise ValueError("mia.multiround needs each client's recorded update: set attack.record_updates=true and "
                         "attack.threat.observes=update")
    if config.training.algorithm != "fedavg":
        raise ValueError("mia.multiround scores FedAvg updates (the client's local model): set "
                         "training.algorithm=fedavg")
    fed = config.federation
    if attack.victim_ids is None and (fed.sampling == "poisson" or fed.fraction_train < 1):
        raise ValueError("mia.multiround scores the same clients in every chosen round, but without "
                         "attack.victim_ids the recorder keeps whichever clients were sampled: set "
                         "attack.victim_ids (e.g. [0, 1, 2, 3]) or federation.fraction_train=1")
    recorded = attack.victim_ids if attack.victim_ids is not None else list(range(attack.victims))
    absent = sorted(set(multi.clients) - set(recorded))
    if absent:
        raise ValueError(f"mia.multiround.clients {absent} are not recorded: add them to attack.victim_ids")
    if any(m.startswith("fedmia") for m in multi.methods) and len(set(recorded)) < 3:
        raise ValueError("mia.multiround: FedMIA compares the target with at least two other recorded clients per "
                         "round: record them too (attack.victim_ids)")


def check_label_method(config: Any) -> None:
    """``attack.gia.label_method: fedavg`` simulates local training: it needs FedAvg updates."""
    if config.attack.gia.label_method == "fedavg" and config.training.algorithm != "fedavg":
        raise ValueError(f"attack.gia.label_method 'fedavg' (Dimitrov et al.'s label counts by simulated local "
                         f"training) reads a FedAvg update, but training.algorithm is "
                         f"'{config.training.algorithm}' (one gradient): use llg+ (or idlg, yin, llg)")
