"""Which DP mechanism a config runs, the checks before round 1, and the block every report prints.

Three mechanisms (``privacy.mechanism``; a ``gaussian`` defense stage with ``clip`` and ``delta``
is the ``local`` one as well):

* ``local``: each client clips its update to ``clip`` and adds N(0, (sigma clip)^2) itself. The
  curious server sees every noisy update and knows who took part, so there is no sampling
  amplification against it: a client's epsilon composes over the rounds it took part in.
* ``central``: clients clip, the server adds the noise once to the (uniformly weighted) sum
  (McMahan et al. 2018, DP-FedAvg; Flower's central-DP pattern). It protects the clients from
  whoever sees the global model; the server itself sees every clipped, un-noised update, so
  against the curious server it protects nothing. Amplification only with Poisson client
  sampling (``federation.sampling: poisson``), which the server then really uses; a
  fixed-size draw is accounted without amplification.
* ``sample``: DP-SGD on the client (per-example clipping, Gaussian noise every local step;
  Abadi et al. 2016, as Opacus). Unit: one training example of a client. Batches are the
  client's shuffled mini-batches (each example in one batch per epoch): accounted without
  amplification, replace-one, composed over every epoch of every round the client took part in.

Post-processing rule: a guarantee holds only when every stage after the DP stage reads
nothing but its input and public data; a stage that reads the private batch again
(``Defense.reads_private_data``, e.g. Soteria) voids it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from fl_privacy.dp.accounting import Relation, noise_multiplier_for_target
from fl_privacy.errors import ConfigError

PROTECTS = {
    "local": "the server and everyone after it (other clients, users of the global model)",
    "central": "whoever sees the global model (other clients, users of the released model)",
    "sample": "the server and everyone after it, for one training example of a client",
}
NOT_PROTECTED = {
    "central": "the curious server: it sees every client's clipped, un-noised update, so central DP protects "
               "nothing against it (the attacks on recorded updates show this)",
}


@dataclass(frozen=True)
class Mechanism:
    """The DP mechanism of a run, resolved from the config."""

    name: str
    """local | central | sample."""
    clip: float
    noise_multiplier: float
    delta: float
    relation: Relation
    source: str
    """Where it was configured ("privacy" or "defenses[i] gaussian")."""
    stage_index: int | None = None
    """Position of the DP stage in ``defenses`` (local via a gaussian stage), else None."""


def _gaussian_stages(config: Any) -> list[tuple[int, dict[str, Any]]]:
    specs = [s.model_dump() if hasattr(s, "model_dump") else dict(s) for s in config.defenses]
    return [(i, s) for i, s in enumerate(specs) if s.get("name") == "gaussian"]


_RESOLVED: dict[str, Mechanism | None] = {}


def resolve(config: Any) -> Mechanism | None:
    """The mechanism ``config`` runs (None: no formal DP). Raises ConfigError on contradictions.

    Cached per config (clients call it every round; a target epsilon is calibrated by bisection)."""
    key = config.model_dump_json()
    if key not in _RESOLVED:
        if len(_RESOLVED) > 64:
            _RESOLVED.clear()
        _RESOLVED[key] = _resolve(config)
    return _RESOLVED[key]


def _resolve(config: Any) -> Mechanism | None:
    p = config.privacy
    dp_stages = [(i, s) for i, s in _gaussian_stages(config) if s.get("clip") is not None and s.get("delta")]
    if p.mechanism != "none" and dp_stages:
        raise ConfigError("privacy.mechanism and a gaussian defense stage with clip and delta are two DP "
                            "mechanisms: keep one (privacy.mechanism: local replaces the gaussian stage)")
    if len(dp_stages) > 1:
        raise ConfigError("defenses: more than one gaussian stage with clip and delta; the report accounts one")
    if dp_stages:
        from fl_privacy.defenses import build_pipeline

        index, _ = dp_stages[0]
        stage = build_pipeline([config.defenses[index]]).stages[0]
        return Mechanism("local", stage.clip, stage.noise_multiplier, stage.delta, stage.neighbouring,
                         f"defenses[{index}] gaussian", index)
    if p.mechanism == "none":
        return None
    if p.clip is None:
        raise ConfigError(f"privacy.mechanism {p.mechanism} needs privacy.clip (the L2 bound of "
                            + ("each per-example gradient)" if p.mechanism == "sample" else "each client update)"))
    if (p.noise_multiplier is None) == (p.epsilon is None):
        raise ConfigError("privacy: give exactly one of noise_multiplier and epsilon (a target that calibrates it)")
    relation: Relation = "replace_one" if p.mechanism == "sample" else p.neighbouring
    sigma = p.noise_multiplier
    if sigma is None:
        compositions, rate = planned_compositions(config, p.mechanism)
        try:
            sigma = noise_multiplier_for_target(p.epsilon, p.delta, compositions, relation, rate)
        except ValueError as err:
            raise ConfigError(f"privacy.epsilon: {err}") from None
    return Mechanism(p.mechanism, p.clip, float(sigma), p.delta, relation, "privacy")


def client_sampling(config: Any) -> tuple[str, float, float]:
    """(sampling, rate, clients per round) the server really uses: poisson | fixed_size | none. Under Poisson
    sampling the count is the expected q*N (central DP's fixed denominator, McMahan et al. 2018)."""
    fed = config.federation
    if fed.sampling == "poisson":
        return "poisson", fed.fraction_train, fed.num_clients * fed.fraction_train
    count = fed.clients_per_round()
    return ("none" if count >= fed.num_clients else "fixed_size"), count / fed.num_clients, count


def _amplified_rate(config: Any, name: str) -> float | None:
    sampling, rate, _ = client_sampling(config)
    return rate if (name == "central" and sampling == "poisson") else None


def _steps_per_round(config: Any) -> int:
    """Sample-level: how many local steps one example takes part in per round (one per epoch)."""
    t = config.training
    return 1 if t.algorithm == "fedsgd" else t.local_epochs


def planned_compositions(config: Any, name: str) -> tuple[int, float | None]:
    """Releases composed over ``federation.rounds`` in the worst case (calibration), and the amplified rate."""
    rounds = config.federation.rounds
    return (rounds * _steps_per_round(config) if name == "sample" else rounds), _amplified_rate(config, name)


def participations(records: list[dict[str, Any]]) -> Counter:
    """Rounds each client took part in, from ``rounds.jsonl`` records (their ``partitions``)."""
    return Counter(pid for r in records for pid in (r.get("partitions") or []))


def post_processing_violation(config: Any, mechanism: Mechanism) -> str | None:
    """The first stage that reads private data after the noise, as the report's sentence, else None."""
    from fl_privacy.defenses import build_pipeline

    if mechanism.name == "central":
        return None  # the noise is added at the server, after every client stage
    stages = build_pipeline(config.defenses).stages
    start = 0 if mechanism.stage_index is None else mechanism.stage_index + 1
    for index in range(start, len(stages)):
        if stages[index].reads_private_data:
            return f"no guarantee: stage {stages[index].name} (defenses[{index}]) reads private data after the noise"
    return None


def release_policy(config: Any) -> tuple[str, str]:
    """(buffers, metrics) policy: ``auto`` is withhold under DP, share otherwise."""
    p = config.privacy
    dp = p.mechanism != "none" or any(s.get("clip") is not None and s.get("delta") for _, s in _gaussian_stages(config))
    buffers = p.buffers if p.buffers != "auto" else ("withhold" if dp else "share")
    metrics = p.metrics if p.metrics != "auto" else ("withhold" if dp else "share")
    return buffers, metrics


def _problems(config: Any, mechanism: Mechanism) -> list[str]:
    """Reasons the mechanism's guarantee would not hold for what runs."""
    problems = []
    violation = post_processing_violation(config, mechanism)
    if violation:
        problems.append(violation)
    if release_policy(config)[1] == "share":
        problems.append("no guarantee: per-client metrics (train loss, number of examples) leave the client "
                        "un-noised (privacy.metrics: share)")
    if mechanism.noise_multiplier == 0.0:
        problems.append("no guarantee: noise multiplier 0")
    return problems


def check_privacy(config: Any) -> None:
    """Bad DP settings as a ConfigError naming the fix, before any work starts."""
    mechanism = resolve(config)
    p, fed = config.privacy, config.federation
    if mechanism is None:
        if p.buffers == "noise":
            raise ConfigError("privacy.buffers: noise needs a DP mechanism (privacy.mechanism local or central)")
        return
    if mechanism.name != "sample" and mechanism.delta >= 1.0 / fed.num_clients:
        raise ConfigError(f"privacy delta {mechanism.delta:g} is not below 1/num_clients = {1 / fed.num_clients:g}: "
                            "a client-level guarantee that lets one client's data out with that probability is void")
    if mechanism.name == "central" and fed.sampling == "poisson":
        if mechanism.relation != "add_or_remove":
            raise ConfigError("central DP with Poisson client sampling is accounted under add-or-remove only: "
                                "set privacy.neighbouring: add_or_remove (or federation.sampling: fixed)")
        if fed.min_train_clients > 1:
            raise ConfigError("federation.sampling: poisson draws each client independently; a minimum of "
                                f"{fed.min_train_clients} clients per round would break it: set min_train_clients 1")
    if mechanism.name == "sample" and p.buffers == "noise":
        raise ConfigError("privacy.buffers: noise is for client-level mechanisms (local, central)")
    problems = _problems(config, mechanism)
    if problems and not p.proceed_without_guarantee:
        raise ConfigError("; ".join(problems) + ". Fix it, or set privacy.proceed_without_guarantee: true to run "
                            "anyway (the reports then print 'no guarantee')")


def check_model(config: Any, model: Any) -> list[str]:
    """Model-dependent checks (the run has built its model): errors raised, extra 'no guarantee' lines returned."""
    import torch

    mechanism = resolve(config)
    if mechanism is None:
        return []
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if mechanism.name == "sample" and has_bn and config.training.model_mode == "train":
        raise ConfigError("privacy.mechanism sample (DP-SGD) clips per-example gradients; BatchNorm in train "
                            "mode mixes the examples of a batch: use training.model_mode eval or a model without "
                            "BatchNorm (e.g. model.batchnorm: false)")
    floats = [k for k, v in model.named_buffers() if v.is_floating_point()]
    if floats and release_policy(config)[0] == "share":
        line = (f"no guarantee: {len(floats)} buffer tensors (BatchNorm running statistics) are sent raw "
                "(privacy.buffers: share)")
        if not config.privacy.proceed_without_guarantee:
            raise ConfigError(line + ": use privacy.buffers withhold or noise, or privacy.proceed_without_guarantee")
        return [line]
    return []
