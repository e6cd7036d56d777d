"""Property tests for the sensitivity-based defenses: Soteria (PLD) and GradDefense."""

from __future__ import annotations

import copy
import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from fl_privacy.defenses import DEFENSES, DefenseContext, build_pipeline
from fl_privacy.defenses import graddefense as gd
from fl_privacy.defenses import graddefense_sensitivity as gds
from fl_privacy.defenses import graddefense_slicing as gdsl
from fl_privacy.defenses import soteria as st
from fl_privacy.models import build_model

# ----------------------------------------------------------------------------- helpers


def tiny_convnet(train: bool = True) -> torch.nn.Module:
    """ConvNet (with BatchNorm) on 3x12x12: F = 16 representation features, the output layer."""
    torch.manual_seed(0)
    return build_model("convnet", num_classes=5, in_channels=3, image_size=12, width=4).train(train)


def tiny_cnn() -> torch.nn.Module:
    """SmallCNN (no BatchNorm) on 1x16x16: representation layer is the hidden Linear (F = 20)."""
    torch.manual_seed(1)
    return build_model("small_cnn", num_classes=4, in_channels=1, image_size=16, width=10).train()


def batch(model: torch.nn.Module, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    size = 12 if conv.in_channels == 3 else 16
    x = torch.randn(n, conv.in_channels, size, size, generator=gen)
    classes = model.classifier[-1].out_features
    return x, torch.randint(0, classes, (n,), generator=gen)


def gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    clone = copy.deepcopy(model)  # keep the model's running statistics untouched
    params = dict(clone.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(clone(x), y), list(params.values()))
    return {k: g.detach() for k, g in zip(params, grads)}


def context(model, x, y, seed: int = 0, kind: str = "gradient") -> DefenseContext:
    return DefenseContext(kind=kind, model=model, inputs=x, labels=y, generator=torch.Generator().manual_seed(seed))


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor], training: bool) -> None:
    assert model.training is training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"


def sample_model(model: torch.nn.Module) -> torch.nn.Module:
    """Brute-force per-sample semantics: a throw-away copy evaluated on batches of one."""
    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- Soteria


def slow_soteria_scores(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: Python loops over samples and features (test only)."""
    _, prefix = st.representation_layer(model)
    total = None
    for i in range(x.shape[0]):
        clone = sample_model(model)
        xi = x[i : i + 1].clone().requires_grad_(True)
        r = torch.nn.Sequential(*prefix)(clone.features(xi)).reshape(-1)
        per = torch.stack([
            torch.autograd.grad(r[f], xi, retain_graph=True)[0].norm() / (r[f].detach().abs() + 0.1)
            for f in range(r.numel())
        ])
        total = per if total is None else total + per
    return total


@pytest.mark.parametrize("kind", ["gradient", "delta"])
@pytest.mark.parametrize("make", [tiny_convnet, tiny_cnn], ids=["convnet_bn", "small_cnn"])
def test_soteria_zeroes_lowest_score_columns(make, kind: str) -> None:
    model = make()
    x, y = batch(model, 4)
    if kind == "gradient":
        update = gradient(model, x, y)
    else:
        gen = torch.Generator().manual_seed(3)
        update = {k: torch.randn(v.shape, generator=gen) for k, v in model.named_parameters()}
    before = state_of(model)
    key, _ = st.representation_layer(model)
    num_features = update[key].shape[1]

    out = build_pipeline([{"name": "soteria", "pruning_rate": 0.6}])(update, context(model, x, y, kind=kind))

    reference = slow_soteria_scores(model, x)
    fast = st.feature_scores(model, x)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-6)
    k = math.floor(0.6 * num_features + 0.5)
    expected = set(torch.argsort(reference, stable=True)[:k].tolist())
    assert len(expected) == k
    pruned = set(st.pruned_features(fast, 0.6).tolist())
    assert pruned == expected
    for f in range(num_features):
        if f in expected:
            assert torch.all(out[key][:, f] == 0)
        else:
            assert torch.equal(out[key][:, f], update[key][:, f])
    for name, value in update.items():
        if name != key:
            assert torch.equal(out[name], value), name
    assert_same_state(model, before, training=True)


def test_soteria_pruned_count_rounding_and_validation() -> None:
    scores = torch.arange(10, dtype=torch.float32).flip(0)
    for rate, count in [(0.0, 0), (0.25, 3), (0.6, 6), (0.7, 7), (0.65, 7), (0.99, 10)]:
        idx = st.pruned_features(scores, rate)
        assert idx.numel() == count == math.floor(rate * 10 + 0.5)
        assert set(idx.tolist()) == set(range(10 - count, 10))  # the lowest scores
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError):
            build_pipeline([{"name": "soteria", "pruning_rate": bad}])
    assert build_pipeline([{"name": "soteria"}]).describe() == [
        {"name": "soteria", "pruning_rate": 0.6, "probes": None, "max_samples": 32}]


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's own jvp decompositions
def test_soteria_probe_estimate_close_to_exact() -> None:
    model = tiny_convnet()
    x, _ = batch(model, 2)
    exact = st.feature_scores(model, x)
    est = st.feature_scores(model, x, probes=3000, generator=torch.Generator().manual_seed(0))
    again = st.feature_scores(model, x, probes=3000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(est, again)
    torch.testing.assert_close(est, exact, rtol=0.1, atol=1e-6)


# ----------------------------------------------------------------------------- GradDefense: sensitivity


def brute_force_sensitivity(model, x, y, name: str) -> float:
    norms = []
    for i in range(x.shape[0]):
        clone = sample_model(model)
        param = dict(clone.named_parameters())[name]
        xi = x[i : i + 1].clone().requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(clone(xi), y[i : i + 1]), param, create_graph=True)[0]
        norms.append(torch.autograd.grad(g.sum(), xi)[0].norm())
    return float(torch.stack(norms).mean())


@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
def test_layer_sensitivity_matches_brute_force(train: bool) -> None:
    model = tiny_convnet(train)
    x, y = batch(model, 3)
    before = state_of(model)
    names = ["features.conv1.weight", "features.bn6.bias", "classifier.linear.weight"]
    sens = gds.layer_sensitivity(model, x, y, names)
    for name, value in zip(names[:2], sens[:2]):
        assert value > 0
        assert float(value) == pytest.approx(brute_force_sensitivity(model, x, y, name), rel=1e-4)
    # the ones-VJP proxy gives the softmax output layer ~0 (its gradient sums to 0 for any input)
    assert float(sens[2]) < 1e-4 * float(sens[:2].max())
    assert_same_state(model, before, training=train)


def test_layer_sensitivity_without_batchnorm() -> None:
    model = tiny_cnn()
    x, y = batch(model, 3)
    sens = gds.layer_sensitivity(model, x, y, ["features.conv0.weight", "classifier.hidden.bias"])
    assert float(sens[0]) == pytest.approx(brute_force_sensitivity(model, x, y, "features.conv0.weight"), rel=1e-4)
    assert float(sens[1]) == pytest.approx(brute_force_sensitivity(model, x, y, "classifier.hidden.bias"), rel=1e-4)


# ----------------------------------------------------------------------------- GradDefense: slicing


def element_risk(sizes, sens) -> torch.Tensor:
    sizes_t = torch.tensor(sizes)
    return torch.repeat_interleave(torch.as_tensor(sens, dtype=torch.float64) / sizes_t, sizes_t)


@pytest.mark.parametrize(
    "sizes",
    [[7, 13, 101, 997, 3], [10, 7], [97], [64, 1, 128, 1, 640, 10], [1000, 3, 5000, 2, 11]],
    ids=["primes", "prime_total", "one_prime_tensor", "layers", "mixed"],
)
@pytest.mark.parametrize("num_slices", [1, 3, 10])
def test_slices_partition_contiguous_balanced(sizes, num_slices: int) -> None:
    gen = torch.Generator().manual_seed(len(sizes) * 31 + num_slices)
    sens = torch.rand(len(sizes), generator=gen, dtype=torch.float64) + 0.05
    bounds = gdsl.sensitivity_slices(sizes, sens, num_slices)
    total_n = sum(sizes)
    # partition into contiguous non-empty slices: 0 = b_0 < b_1 < ... < b_S = N
    assert bounds.numel() == num_slices + 1 and bounds[0] == 0 and bounds[-1] == total_n
    assert torch.all(bounds[1:] > bounds[:-1])
    member = torch.bucketize(torch.arange(total_n), bounds[1:], right=True)  # slice of each element
    assert torch.equal(torch.bincount(member, minlength=num_slices), bounds[1:] - bounds[:-1])
    # each slice carries ~T/S, within one element's risk (half an element at each end)
    risk = element_risk(sizes, sens)
    per_slice = torch.zeros(num_slices, dtype=torch.float64).index_add_(0, member, risk)
    target = float(sens.sum()) / num_slices
    assert torch.all((per_slice - target).abs() <= risk.max() + 1e-9)
    # the closed form equals the per-element midpoint rule
    mid = torch.cumsum(risk, 0) - risk / 2
    by_midpoint = torch.clamp((mid / target).floor().long(), max=num_slices - 1)
    if torch.all(torch.bincount(by_midpoint, minlength=num_slices) > 0):
        assert torch.equal(member, by_midpoint)


def test_slices_degenerate_risks() -> None:
    sizes = [50, 3, 40, 7]
    # one tiny tensor carrying almost all the risk: slices stay non-empty and a partition
    bounds = gdsl.sensitivity_slices(sizes, [1e-6, 100.0, 1e-6, 0.0], 5)
    assert bounds[0] == 0 and bounds[-1] == 100 and torch.all(bounds[1:] > bounds[:-1])
    # zero / non-finite total risk -> equal-size slices
    for sens in ([0.0, 0.0, 0.0, 0.0], [float("nan"), 1.0, 1.0, 1.0]):
        bounds = gdsl.sensitivity_slices(sizes, sens, 4)
        assert set((bounds[1:] - bounds[:-1]).tolist()) == {25}
    with pytest.raises(ValueError):
        gdsl.sensitivity_slices([2, 1], [1.0, 1.0], 4)


# ----------------------------------------------------------------------------- GradDefense: perturbation


def test_reservoir_sampling_uniform_and_reproducible() -> None:
    population, k, trials = 5, 2, 3000
    subsets = {c: 0 for c in combinations(range(population), k)}
    for seed in range(trials):
        chosen = gdsl.reservoir_sample(population, k, torch.Generator().manual_seed(seed))
        assert chosen == sorted(set(chosen)) and len(chosen) == k and all(0 <= c < population for c in chosen)
        subsets[tuple(chosen)] += 1
    assert chisquare(list(subsets.values())).pvalue > 1e-3
    again = [gdsl.reservoir_sample(10, 5, torch.Generator().manual_seed(s)) for s in range(20)]
    assert again == [gdsl.reservoir_sample(10, 5, torch.Generator().manual_seed(s)) for s in range(20)]
    assert len({tuple(a) for a in again}) > 10
    assert gdsl.reservoir_sample(4, 0, torch.Generator()) == []
    assert gdsl.reservoir_sample(4, 4, torch.Generator()) == [0, 1, 2, 3]


def test_slice_noise_hits_each_element_of_chosen_slices_exactly_once() -> None:
    flat = torch.arange(30, dtype=torch.float32)
    bounds = torch.tensor([0, 4, 9, 10, 22, 30])
    out = gdsl.add_slice_noise(flat, bounds, [3, 1], 0.5, torch.Generator().manual_seed(7))
    draws = 0.5 * torch.randn(17, generator=torch.Generator().manual_seed(7))
    # chosen slices in increasing order: slice 1 = [4, 9), slice 3 = [10, 22): one draw each, nothing else
    torch.testing.assert_close(out[4:9] - flat[4:9], draws[:5])
    torch.testing.assert_close(out[10:22] - flat[10:22], draws[5:17])
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[4:9] = untouched[10:22] = False
    assert torch.equal(out[untouched], flat[untouched])


@pytest.mark.parametrize("balance", ["sensitivity", "size"])
def test_graddefense_perturbs_exactly_the_chosen_slices(balance: str) -> None:
    model = tiny_convnet()
    x, y = batch(model, 6)
    sigma = 0.1
    zero = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    defense = DEFENSES["graddefense"](noise_scale=sigma, balance=balance, root_set_size=4)
    out = defense.apply(zero, context(model, x, y, seed=5))
    # replay the generator: root set (sensitivity), then reservoir sampling
    replay = context(model, x, y, seed=5)
    bounds = defense.slice_bounds(zero, replay, list(zero))
    chosen = gdsl.reservoir_sample(10, 5, replay.generator)
    flat = torch.cat([out[k].reshape(-1) for k in zero])
    expected = torch.zeros_like(flat, dtype=torch.bool)
    for c in chosen:
        expected[bounds[c] : bounds[c + 1]] = True
    assert len(chosen) == 5
    assert torch.equal(flat != 0, expected)
    assert float(flat[expected].std()) == pytest.approx(sigma, rel=0.05)
    assert abs(float(flat[expected].mean())) < 0.05 * sigma
    # reproducible per seed, different across seeds
    same = defense.apply(zero, context(model, x, y, seed=5))
    assert all(torch.equal(same[k], out[k]) for k in out)
    other = defense.apply(zero, context(model, x, y, seed=6))
    assert not all(torch.equal(other[k], out[k]) for k in out)


def test_graddefense_sensitivity_cache(monkeypatch) -> None:
    model = tiny_convnet()
    x, y = batch(model, 4)
    calls = []
    real = gd.layer_sensitivity
    monkeypatch.setattr(gd, "layer_sensitivity", lambda *a, **k: calls.append(1) or real(*a, **k))
    update = gradient(model, x, y)
    for every, expected_calls in [(1, 3), (2, 2), (0, 1)]:
        calls.clear()
        pipeline, state = build_pipeline([{"name": "graddefense", "sensitivity_every": every}]), {}
        for round_ in range(3):
            ctx = context(model, x, y, seed=round_)
            ctx.state = state
            pipeline(update, ctx)
        assert len(calls) == expected_calls
        assert "0:graddefense/sensitivity" in state


# ----------------------------------------------------------------------------- GradDefense: clipping


def brute_force_clipped(model, x, y, clip: float) -> tuple[dict[str, torch.Tensor], list[float]]:
    total, norms = None, []
    for i in range(x.shape[0]):
        g = gradient(model, x[i : i + 1], y[i : i + 1])
        norm = float(torch.cat([v.reshape(-1) for v in g.values()]).norm())
        factor = 1.0 / max(1.0, norm / clip)
        clipped = {k: v * factor for k, v in g.items()}
        norms.append(float(torch.cat([v.reshape(-1) for v in clipped.values()]).norm()))
        total = clipped if total is None else {k: total[k] + clipped[k] for k in total}
    return {k: v / x.shape[0] for k, v in total.items()}, norms


@pytest.mark.parametrize("make", [tiny_cnn, tiny_convnet], ids=["small_cnn", "convnet_bn"])
def test_per_sample_clipping(make) -> None:
    model = make()
    x, y = batch(model, 5)
    raw = [float(torch.cat([v.reshape(-1) for v in gradient(model, x[i : i + 1], y[i : i + 1]).values()]).norm())
           for i in range(5)]
    clip = sorted(raw)[2]  # some samples clipped, some not
    expected, norms = brute_force_clipped(model, x, y, clip)
    assert max(norms) <= clip * (1 + 1e-5) and sum(n < clip * 0.999 for n in norms) >= 1
    got = gds.clipped_mean_gradient(model, x, y, clip)
    for k in expected:  # float32 per-sample BatchNorm statistics over 4x4 maps: ~1e-6 rounding
        torch.testing.assert_close(got[k], expected[k], rtol=1e-3, atol=1e-5)
    # integrated: no noise -> the update is the clipped mean
    defense = DEFENSES["graddefense"](clip_norm=clip, noise_scale=0.0)
    out = defense.apply(gradient(model, x, y), context(model, x, y))
    for k in expected:
        torch.testing.assert_close(out[k], got[k])
    with pytest.raises(ValueError, match="FedSGD"):
        defense.apply(gradient(model, x, y), context(model, x, y, kind="delta"))


def test_clipping_huge_bound_is_the_batch_gradient_without_batchnorm() -> None:
    model = tiny_cnn()
    x, y = batch(model, 6)
    got = gds.clipped_mean_gradient(model, x, y, 1e9)
    for k, v in gradient(model, x, y).items():
        torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- GradDefense: compensation


def low_rank(v: int, w: int, rank: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(v, rank, generator=gen, dtype=torch.float64) @ torch.randn(rank, w, generator=gen, dtype=torch.float64)


def test_matrix_shape_never_degenerate() -> None:
    for n in [2, 7, 24, 25, 97, 600, 7919, 60000, 104729, 999983, 2_000_003]:
        v, w = gdsl.matrix_shape(n, 6.0)
        assert v * w <= n and n - v * w < w
        assert v >= 6.0 * w or n < 6  # v / w >= Q whenever n allows it
        if n >= 1000:
            assert w >= 2 and v / w < 6.0 * 1.25


@pytest.mark.parametrize("n_extra", [0, 35], ids=["exact_600x100", "prime_7919"])
def test_compensation_denoises_low_rank_signal(n_extra: int) -> None:
    v, w = (600, 100) if n_extra == 0 else (219, 36)
    assert gdsl.matrix_shape(v * w + n_extra, 6.0) == (v, w)
    noise_std = 0.5
    clean = torch.cat([low_rank(v, w, 3, seed=0).reshape(-1), torch.randn(n_extra, dtype=torch.float64)])
    noise = noise_std * torch.randn(clean.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise[v * w :] = 0
    noisy = clean + noise
    out = gdsl.compensate(noisy, noise_std**2, 6.0)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    assert torch.equal(out[v * w :], noisy[v * w :])  # the remainder is left untouched
    assert float((out - clean).norm()) < 0.5 * float((noisy - clean).norm())


def test_compensation_without_noise_is_identity() -> None:
    gen = torch.Generator().manual_seed(2)
    for n in (7919, 6000):
        vec = torch.randn(n, generator=gen)
        torch.testing.assert_close(gdsl.compensate(vec, 1e-14, 6.0), vec, rtol=1e-5, atol=1e-5)
        assert torch.equal(gdsl.compensate(vec, 0.0, 6.0), vec)
    low = low_rank(300, 50, 2, seed=3).reshape(-1)
    torch.testing.assert_close(gdsl.compensate(low, 1e-14, 6.0), low)
    tiny = torch.randn(11, generator=gen)
    assert torch.equal(gdsl.compensate(tiny, 1.0, 6.0), tiny)  # fewer than two columns: unchanged


def test_aggregate_noise_variance_matches_simulation() -> None:
    sigma, slices, perturbed, clients, n = 0.3, 10, 4, 25, 20000
    bounds = gdsl.sensitivity_slices([n], [1.0], slices)
    mean = torch.zeros(n)
    for c in range(clients):
        gen = torch.Generator().manual_seed(100 + c)
        chosen = gdsl.reservoir_sample(slices, perturbed, gen)
        mean += gdsl.add_slice_noise(torch.zeros(n), bounds, chosen, sigma, gen) / clients
    predicted = gdsl.aggregate_noise_variance(sigma, perturbed, slices, clients)
    assert predicted == pytest.approx((perturbed / slices) * sigma**2 / clients)
    assert float(mean.var()) == pytest.approx(predicted, rel=0.1)
    # weighted mean: (P/S) sigma^2 sum w_i^2 (normalised weights)
    assert gdsl.aggregate_noise_variance(sigma, perturbed, slices, weights=[1, 1, 2]) == pytest.approx(
        0.4 * sigma**2 * (1 + 1 + 4) / 16
    )


def test_server_step_compensates_parameters_only() -> None:
    model = tiny_convnet()
    defense = build_pipeline([{"name": "graddefense", "noise_scale": 1.0}])  # aggregate noise variance 0.5 / N
    gen = torch.Generator().manual_seed(0)
    aggregated = {  # pure noise at the predicted level: mostly inside the Marchenko-Pastur bulk
        k: torch.randn(v.shape, generator=gen) * math.sqrt(0.5 / 2) for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    aggregated["features.bn0.num_batches_tracked"] = torch.tensor(3)
    out = defense.server_step(aggregated, num_clients=2)
    assert set(out) == set(aggregated)
    for k, v in aggregated.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(out[k], v)
    params = [k for k in aggregated if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    before = torch.cat([aggregated[k].reshape(-1) for k in params]).norm()
    after = torch.cat([out[k].reshape(-1) for k in params]).norm()
    assert after < 0.5 * before  # the noise is mostly projected out
    off = build_pipeline([{"name": "graddefense", "compensate": False}]).server_step(aggregated, 4)
    assert all(torch.equal(off[k], aggregated[k]) for k in aggregated)


def test_registration_and_validation() -> None:
    assert {"graddefense", "soteria"} <= set(DEFENSES)
    assert DEFENSES["graddefense"].needs_server and not DEFENSES["soteria"].needs_server
    described = build_pipeline([{"name": "graddefense"}]).describe()[0]
    assert described == {
        "name": "graddefense", "num_slices": 10, "perturb_slices": 5, "noise_scale": 5e-4, "root_set_size": 10,
        "q": 6.0, "clip_norm": None, "balance": "sensitivity", "sensitivity_every": 1, "compensate": True,
    }
    for bad in ({"perturb_slices": 11}, {"num_slices": 0}, {"noise_scale": -1.0}, {"q": 0.5},
                {"clip_norm": 0.0}, {"balance": "gcd"}, {"root_set_size": 0}, {"unknown": 1}):
        with pytest.raises(ValueError):
            build_pipeline([{"name": "graddefense", **bad}])
    assert build_pipeline([{"name": "graddefense"}]).payload_bytes({"a": torch.zeros(3)}) == 12


def test_soteria_scores_a_bounded_subset_of_a_large_client():
    """FedAvg clients hold many samples: the ranking comes from at most max_samples of them."""
    import fl_privacy.defenses.soteria as soteria_module

    seen = []
    original = soteria_module.feature_scores

    def spy(model, inputs, **kwargs):
        seen.append(len(inputs))
        return original(model, inputs, **kwargs)

    soteria_module.feature_scores = spy
    try:
        model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, width=2)
        update = {k: torch.randn_like(v) for k, v in model.named_parameters()}
        context = DefenseContext(kind="delta", model=model, inputs=torch.randn(50, 1, 28, 28),
                                 labels=torch.zeros(50, dtype=torch.long),
                                 generator=torch.Generator().manual_seed(0))
        build_pipeline([{"name": "soteria", "max_samples": 4, "probes": 4}])(update, context)
    finally:
        soteria_module.feature_scores = original
    assert seen == [4]
