"""Epsilon reported before the DP fixes vs the epsilon that holds for the mechanism that runs.

``python benchmarks/dp_corrections.py`` prints a markdown table (seconds, CPU). "Before" is what
the old report computed: Opacus RDP with sample rate ``federation.fraction_train`` over all rounds,
for the first stage with a guarantee. "Now" is ``fl_privacy.dp.report.privacy_block`` with the
server's own seeded client schedule (``fl_privacy.federation.sampling.sample_clients``).
"""

from __future__ import annotations

from fl_privacy.config import build_config
from fl_privacy.dp.accounting import gaussian_epsilon
from fl_privacy.dp.report import privacy_block
from fl_privacy.experiments import load_experiment
from fl_privacy.federation.sampling import sample_clients

DELTA = 1e-5
LOCAL = {"name": "gaussian", "std": 1.0, "clip": 1.0, "delta": DELTA}


def before(sigma: float, config) -> float:
    """The old report: amplified by fraction_train, over every round."""
    f = config.federation
    return gaussian_epsilon(sigma, f.rounds, DELTA, sample_rate=f.fraction_train)


def schedule(config) -> list[dict]:
    return [{"round": r, "partitions": sample_clients(config, r)} for r in range(1, config.federation.rounds + 1)]


def row(name: str, config, sigma: float) -> str:
    now = privacy_block(config, schedule(config))
    value = "no guarantee" if now["epsilon"] is None else f"{now['epsilon']:.4g}"
    return (f"| {name} | {before(sigma, config):.4g} | {value} | {now['mechanism']}, "
            f"{now['neighbouring_relation']}; {now['composed'] if now['epsilon'] is not None else now['guarantee']} |")


def cases() -> list[str]:
    fed = {"federation.num_clients": 10, "federation.fraction_train": 0.1, "federation.rounds": 100}
    proceed = {"privacy.proceed_without_guarantee": True}
    rows = [
        row("gaussian σ 1, 10 clients, f 0.1, 100 rounds", build_config({"defenses": [LOCAL]}, fed), 1.0),
        row("same, replace-one", build_config({"defenses": [{**LOCAL, "neighbouring": "replace_one"}]}, fed), 1.0),
        row("same, min_train_clients 3 (3 of 10 drawn)",
            build_config({"defenses": [LOCAL]}, {**fed, "federation.min_train_clients": 3}), 1.0),
        row("[gaussian σ 1, soteria]", build_config({"defenses": [LOCAL, {"name": "soteria"}]}, {**fed, **proceed}), 1.0),
    ]
    small = {"federation.num_clients": 10, "federation.rounds": 10}
    readme = build_config({"defenses": [{"name": "gaussian", "clip": 1.0, "epsilon": 8, "delta": DELTA,
                                         "rounds": 10}]}, small)
    sigma = privacy_block(readme)["noise_multiplier"]
    rows.append(row("README ε = 8 example (q 1, 10 rounds)", readme, sigma))
    replace = build_config({"defenses": [{**LOCAL, "std": sigma, "neighbouring": "replace_one"}]}, small)
    rows.append(row(f"its noise (σ {sigma:.4g}) under replace-one", replace, sigma))
    for path, label, extra in [("experiments/rq6_post_processing.yaml", "dp_local_s1", {}),
                               ("experiments/rq6_post_processing.yaml", "dp_central_s1", {}),
                               ("experiments/graddefense.yaml", "dp_g_clip1", {"dataset": "mnist", "gla": "DGA"})]:
        for point in load_experiment(path, [], "full").points:
            if point.values.get("defense") == label and all(point.values.get(k) == v for k, v in extra.items()):
                config = point.configs[min(point.configs)]
                rows.append(row(f"{path.split('/')[-1]} {label} (full)", config, privacy_block(config)["noise_multiplier"]))
    return rows


if __name__ == "__main__":
    print("| setting | ε before | ε now | mechanism, relation; composed |\n|---|---|---|---|")
    print("\n".join(cases()))
