"""Property tests for the basic client-side defenses (noise, clipping, quantization, sparsification, PowerSGD)."""

from __future__ import annotations

import math

import pytest
import torch

from fl_privacy.defenses import DEFENSES, DefenseContext, DefensePipeline, build_pipeline
from fl_privacy.defenses.clipping import global_norm
from fl_privacy.defenses.quantization import quantize_tensor
from fl_privacy.dp.accounting import gaussian_epsilon, noise_multiplier_for_target

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CHECK_Q, CHECK_SIGMA, CHECK_STEPS, CHECK_DELTA = 256 / 60000, 1.1, 14062, 1e-5  # REFERENCES.md "Defenses"


def ctx(seed: int = 0, state: dict | None = None, kind: str = "gradient") -> DefenseContext:
    return DefenseContext(kind=kind, generator=torch.Generator().manual_seed(seed),
                          state={} if state is None else state)


def make(name: str, **params):
    return DEFENSES[name](**params)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------ registry


def test_all_basic_defenses_are_registered():
    assert {"gaussian", "laplace", "clip", "quantize", "sign", "topk", "prune", "powersgd"} <= set(DEFENSES)


# --------------------------------------------------------------------- quantization


@pytest.mark.parametrize("levels", [16, 40, 120, 240])
def test_quantize_has_exactly_levels_values_when_data_spans_them(levels):
    x = torch.linspace(-3.0, 5.0, 10_000)
    out = make("quantize", levels=levels).apply({"w": x}, ctx())["w"]
    assert out.unique().numel() == levels
    assert out.min() == x.min() and torch.isclose(out.max(), x.max())
    stochastic = make("quantize", levels=levels, stochastic=True).apply({"w": x}, ctx(1))["w"]
    assert stochastic.unique().numel() == levels
    few = make("quantize", levels=levels).apply({"w": randn(30)}, ctx())["w"]  # cannot span 240 levels
    assert few.unique().numel() <= min(levels, 30)


@pytest.mark.parametrize("levels", [16, 240])
def test_deterministic_quantization_error_is_at_most_half_a_step(levels):
    x = randn(64, 80)
    out = make("quantize", levels=levels).apply({"w": x}, ctx())["w"]
    step = (x.max() - x.min()) / (levels - 1)
    assert (out - x).abs().max() <= step / 2 * (1 + 1e-4)
    assert out.unique().numel() <= levels


def test_stochastic_rounding_is_unbiased():
    levels, draws = 16, 4000
    x = randn(64, seed=3)
    # Every row is the same vector, so the tensor's [min, max] is x's and rows are independent draws.
    batch = x.expand(draws, -1).contiguous()
    out = make("quantize", levels=levels, stochastic=True).apply({"w": batch}, ctx(7))["w"]
    step = float((x.max() - x.min()) / (levels - 1))
    assert (out - batch).abs().max() < step * (1 + 1e-5)  # rounds to one of the two neighbours
    index = (out - x.min()) / step
    assert torch.allclose(index, index.round(), atol=1e-3)  # on the grid
    # Rounding noise of one element is a two-point variable with std <= step / 2.
    z = (out.mean(0) - x).abs() / (step / 2 / math.sqrt(draws))
    assert z.max() < 5.0
    assert abs(float((out.mean(0) - x).mean())) < 5 * step / 2 / math.sqrt(draws * x.numel())
    # and deterministic rounding is biased on the same data (sanity of the test itself)
    det = make("quantize", levels=levels).apply({"w": x}, ctx())["w"]
    assert ((det - x).abs() / (step / 2 / math.sqrt(draws))).max() > 5.0


def test_bits_equals_levels_power_of_two_and_payload():
    update = {"w": randn(33, 17), "b": randn(5)}
    a = make("quantize", bits=4)
    b = make("quantize", levels=16)
    assert a.levels == 16
    assert torch.equal(a.apply(update, ctx())["w"], b.apply(update, ctx())["w"])
    assert a.payload_bytes(update) == b.payload_bytes(update) == math.ceil(33 * 17 * 4 / 8) + 8 + math.ceil(5 * 4 / 8) + 8
    # 40 levels need ceil(log2 40) = 6 bits per element
    assert make("quantize", levels=40).payload_bytes({"w": randn(100)}) == math.ceil(100 * 6 / 8) + 8
    assert a.describe() == {"name": "quantize", "bits": 4, "stochastic": False}


def test_quantize_constant_tensor_is_unchanged():
    x = torch.full((10,), 0.25)
    assert torch.equal(quantize_tensor(x, 16), x)


# ------------------------------------------------------------------------------ sign


def test_sign_outputs_plus_minus_mean_abs_only():
    x = randn(20, 30)
    x[0, 0] = 0.0
    update = {"w": x, "b": randn(7, seed=1)}
    out = make("sign").apply(update, ctx())
    for key, v in update.items():
        scale = v.abs().mean()
        values = out[key].unique()
        assert set(values.tolist()) <= {float(scale), float(-scale)}
        assert torch.equal(out[key] > 0, v >= 0)  # zero is sent as +scale (1-bit code)
    assert make("sign").payload_bytes(update) == math.ceil(600 / 8) + 4 + 1 + 4


def test_sign_error_feedback_tracks_the_sum():
    sign = make("sign", error_feedback=True)
    state: dict = {}
    total_true = torch.zeros(50, dtype=torch.float64)
    total_sent = torch.zeros(50, dtype=torch.float64)
    for t in range(8):
        g = randn(50, seed=t, dtype=torch.float64)
        sent = sign.apply({"g": g}, ctx(t, state))["g"]
        total_true += g
        total_sent += sent
    assert torch.allclose(total_true - total_sent, state["error/g"], atol=1e-12)


# -------------------------------------------------------------------------- top-k


def test_topk_keeps_exactly_k_largest_entries():
    x = randn(50, 37)
    for ratio in (0.01, 0.1, 0.5, 1.0):
        out = make("topk", ratio=ratio).apply({"w": x}, ctx())["w"]
        k = math.ceil(ratio * x.numel())
        kept = out != 0
        assert int(kept.sum()) == k
        assert torch.equal(out[kept], x[kept])
        if k < x.numel():
            assert x[kept].abs().min() >= x[~kept].abs().max()


def test_topk_k_rounding_and_payload():
    topk = make("topk", ratio=0.1)
    assert topk.k_for((30,)) == 3  # 0.1 * 30 = 3.0000000000000004 in floats
    assert topk.k_for((7,)) == 1
    update = {"w": randn(100, 10), "b": randn(10)}
    assert topk.floats_sent(update) == 100 + 1
    # 100 values + 100 int32 indices; the bias: one entry sparse (8 bytes) is cheaper than dense (40)
    assert topk.payload_bytes(update) == 8 * 100 + 8
    assert make("topk", ratio=0.9).payload_bytes(update) == 4 * 1010  # sparse would cost more: dense


def test_topk_error_feedback_residual_is_exact_and_bounded():
    ratio, rounds = 0.1, 30
    topk = make("topk", ratio=ratio, error_feedback=True)
    state: dict = {}
    total_true = torch.zeros(200, dtype=torch.float64)
    total_sent = torch.zeros(200, dtype=torch.float64)
    biggest = 0.0
    for t in range(rounds):
        g = randn(200, seed=100 + t, dtype=torch.float64)
        previous = state.get("residual/g", torch.zeros_like(g))
        sent = topk.apply({"g": g}, ctx(t, state))["g"]
        assert torch.equal(sent + state["residual/g"], g + previous)  # exact split of the accumulator
        total_true += g
        total_sent += sent
        biggest = max(biggest, float(g.norm()))
    assert torch.allclose(total_true - total_sent, state["residual/g"], atol=1e-11)
    # Top-k is a delta-contraction (delta = k/d): ||e||^2 <= 4 (1 - delta) / delta^2 * max ||g||^2.
    delta = 20 / 200
    assert float(state["residual/g"].norm()) <= math.sqrt(4 * (1 - delta) / delta**2) * biggest


# ------------------------------------------------------------------------- prune


@pytest.mark.parametrize("percent", [20, 40, 80, 90])
def test_prune_zeroes_exactly_the_configured_fraction(percent):
    update = {"a": randn(10), "b": randn(37, seed=1), "c": randn(16, 3, 5, 5, seed=2)}
    prune = make("prune", percent=percent)
    out = prune.apply(update, ctx())
    for key, v in update.items():
        zeros = out[key] == 0
        assert int(zeros.sum()) == math.floor(percent * v.numel() / 100 + 1e-9)
        assert torch.equal(out[key][~zeros], v[~zeros])
        if zeros.any():
            assert v[zeros].abs().max() <= v[~zeros].abs().min()


# ---------------------------------------------------------------------- powersgd


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_powersgd_reconstructs_an_exactly_rank_r_matrix(rank):
    # One power step already suffices: with a random Q (full rank r almost surely),
    # span(M Q) = range(M) when rank(M) = r, so M_hat = P P^T M = M.
    m = randn(60, rank, seed=1) @ randn(rank, 45, seed=2)
    out = make("powersgd", rank=rank).apply({"w": m}, ctx(3))["w"]
    assert torch.linalg.matrix_norm(out - m) <= 1e-5 * torch.linalg.matrix_norm(m)
    # a 4-D conv weight viewed as (shape[0], -1)
    conv = (randn(32, rank, seed=4) @ randn(rank, 8 * 9, seed=5)).reshape(32, 8, 3, 3)
    out = make("powersgd", rank=rank).apply({"c": conv}, ctx(6))["c"]
    assert out.shape == conv.shape
    assert torch.linalg.vector_norm(out - conv) <= 1e-5 * torch.linalg.vector_norm(conv)


def test_powersgd_warm_start_converges_to_best_rank_r_approximation():
    # With warm start the calls run subspace iteration on a fixed M: the error reaches the
    # Eckart-Young optimum sqrt(sum_{i > r} sigma_i^2) (Li et al., Eq. (5)).
    u, _ = torch.linalg.qr(randn(40, 40, seed=1, dtype=torch.float64))
    v, _ = torch.linalg.qr(randn(30, 30, seed=2, dtype=torch.float64))
    sigma = torch.tensor([10.0, 5.0] + [1.0 / (i + 1) for i in range(28)], dtype=torch.float64)
    m = u[:, :30] @ torch.diag(sigma) @ v.T
    optimum = float(sigma[2:].norm())
    psgd = make("powersgd", rank=2, error_feedback=False)
    state: dict = {}
    errors = [float((psgd.apply({"m": m}, ctx(t, state))["m"] - m).norm()) for t in range(25)]
    assert errors[-1] == pytest.approx(optimum, rel=1e-9)
    assert errors[0] > optimum * (1 + 1e-6)  # a single step from a random Q is not yet optimal
    cold_state: dict = {}
    make("powersgd", rank=2, error_feedback=False, warm_start=False).apply({"m": m}, ctx(0, cold_state))
    assert cold_state == {}  # nothing carried without warm start and error feedback


def test_powersgd_error_feedback_tracks_the_sum():
    psgd = make("powersgd", rank=2)
    pipeline = DefensePipeline([psgd])
    state: dict = {}
    shapes = {"w": (24, 4, 3, 3), "fc": (10, 64), "b": (24,)}
    total_true = {k: torch.zeros(s, dtype=torch.float64) for k, s in shapes.items()}
    total_sent = {k: torch.zeros(s, dtype=torch.float64) for k, s in shapes.items()}
    for t in range(6):
        update = {k: randn(*s, seed=10 * t + i, dtype=torch.float64) for i, (k, s) in enumerate(shapes.items())}
        sent = pipeline(update, ctx(t, state))
        assert torch.equal(sent["b"], update["b"])  # 1-D: never compressed
        for k in shapes:
            total_true[k] += update[k]
            total_sent[k] += sent[k]
    for k in ("w", "fc"):
        error = state[f"0:powersgd/error/{k}"].reshape(shapes[k])
        assert torch.allclose(total_true[k] - total_sent[k], error, atol=1e-10)
        assert float(error.norm()) > 0  # the compression did lose something each round
    assert "0:powersgd/error/b" not in state


def test_powersgd_sends_small_tensors_unchanged_and_payload_formula():
    update = {"conv": randn(64, 32, 3, 3), "bias": randn(64), "small": randn(4, 3), "wide": randn(3, 1000)}
    psgd = make("powersgd", rank=4)
    out = psgd.apply(update, ctx())
    # small: (4 + 3) * min(4, 3, 4) * 2 = 42 >= 12; wide: (3 + 1000) * 3 * 2 >= 3000 -> not compressed
    for key in ("bias", "small", "wide"):
        assert torch.equal(out[key], update[key])
    assert not torch.equal(out["conv"], update["conv"])
    assert torch.linalg.matrix_rank(out["conv"].reshape(64, -1)) <= 4
    n, m = 64, 32 * 9
    assert psgd.floats_sent(update) == (n + m) * 4 + 64 + 12 + 3000
    assert psgd.payload_bytes(update) == 4 * (n + m) * 4 + 4 * (64 + 12 + 3000)
    # min_compression_rate as in the hook: an 8 x 20 tensor at rank 4 (112 floats vs 160) pays only at rate 1
    mid = {"mid": randn(8, 20)}
    assert make("powersgd", rank=4).floats_sent(mid) == 160
    assert make("powersgd", rank=4, min_compression_rate=1).floats_sent(mid) == (8 + 20) * 4


@pytest.mark.parametrize("model_name", ["resnet18", "convnet"])
def test_topk_level_r_sends_as_many_floats_as_powersgd_rank_r(model_name):
    from fl_privacy.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=3, image_size=32)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    dense = sum(math.prod(s) for s in shapes.values())
    update = {name: torch.empty(s) for name, s in shapes.items()}  # floats_sent depends on shapes only
    for rank in (1, 2, 4):
        topk, psgd = make("topk", match_powersgd_rank=rank), make("powersgd", rank=rank)
        assert topk.floats_sent(update) == psgd.floats_sent(update) < dense
        assert psgd.payload_bytes(update) == 4 * psgd.floats_sent(update)
        assert psgd.payload_bytes(update) < topk.payload_bytes(update) < 2 * psgd.payload_bytes(update)
    if model_name == "convnet":  # and what apply actually keeps is that count
        real = {name: randn(*s, seed=i) for i, (name, s) in enumerate(shapes.items())}
        topk = make("topk", match_powersgd_rank=2)
        out = topk.apply(real, ctx())
        assert sum(int((v != 0).sum()) for v in out.values()) == topk.floats_sent(real)


# ------------------------------------------------------------------------ clipping


def test_global_clipping_bounds_the_norm_and_keeps_direction():
    update = {"w": randn(30, 20) * 3, "b": randn(20, seed=1)}
    norm = float(global_norm(update))
    out = make("clip", max_norm=1.0).apply(update, ctx())
    assert float(global_norm(out)) <= 1.0 * (1 + 1e-6)
    assert float(global_norm(out)) == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(out["w"] * norm, update["w"], rtol=1e-5, atol=1e-6)
    below = make("clip", max_norm=2 * norm).apply(update, ctx())
    assert all(torch.equal(below[k], update[k]) for k in update)


def test_per_layer_clipping_bounds_each_tensor():
    update = {"w": randn(30, 20) * 3, "b": randn(20, seed=1) * 0.01}
    out = make("clip", max_norm=1.0, per_layer=True).apply(update, ctx())
    assert float(out["w"].norm()) <= 1.0 * (1 + 1e-6)
    assert torch.equal(out["b"], update["b"])  # already below: unchanged


# --------------------------------------------------------------------------- noise


def test_gaussian_noise_std_and_reproducibility():
    zeros = {"w": torch.zeros(400, 500)}
    gauss = make("gaussian", std=0.5)
    noise = gauss.apply(zeros, ctx(11))["w"]
    assert float(noise.std()) == pytest.approx(0.5, rel=0.02)
    assert abs(float(noise.mean())) < 0.01
    assert torch.equal(noise, gauss.apply(zeros, ctx(11))["w"])
    assert not torch.equal(noise, gauss.apply(zeros, ctx(12))["w"])
    assert gauss.noise_multiplier is None  # no clipping: no sensitivity bound, no guarantee


def test_laplace_noise_std_and_reproducibility():
    zeros = {"w": torch.zeros(400, 500)}
    lap = make("laplace", scale=0.3)
    noise = lap.apply(zeros, ctx(5))["w"]
    assert float(noise.std()) == pytest.approx(math.sqrt(2) * 0.3, rel=0.02)
    assert float(noise.abs().mean()) == pytest.approx(0.3, rel=0.02)  # E|X| = b
    assert torch.equal(noise, lap.apply(zeros, ctx(5))["w"])
    assert not torch.equal(noise, lap.apply(zeros, ctx(6))["w"])


def test_accountant_matches_opacus_and_the_reference_value():
    from opacus.accountants import RDPAccountant

    eps = gaussian_epsilon(CHECK_SIGMA, CHECK_STEPS, CHECK_DELTA, sample_rate=CHECK_Q)
    accountant = RDPAccountant()
    for _ in range(CHECK_STEPS):
        accountant.step(noise_multiplier=CHECK_SIGMA, sample_rate=CHECK_Q)
    assert eps == pytest.approx(accountant.get_epsilon(delta=CHECK_DELTA), rel=1e-12)
    assert eps == pytest.approx(2.60, abs=0.01)
    assert gaussian_epsilon(0.0, CHECK_STEPS, CHECK_DELTA, sample_rate=CHECK_Q) == math.inf

    gauss = make("gaussian", std=CHECK_SIGMA * 0.5, clip=0.5, delta=CHECK_DELTA)
    assert gauss.noise_multiplier == pytest.approx(CHECK_SIGMA)

    sigma = noise_multiplier_for_target(2.0, CHECK_DELTA, CHECK_STEPS, sample_rate=CHECK_Q)
    assert 2.0 - 0.01 <= gaussian_epsilon(sigma, CHECK_STEPS, CHECK_DELTA, sample_rate=CHECK_Q) <= 2.0


def test_gaussian_epsilon_mode_clips_and_calibrates_without_amplification():
    from fl_privacy.dp.accounting import gaussian_epsilon

    gauss = make("gaussian", clip=0.5, epsilon=8.0, delta=CHECK_DELTA, rounds=10)
    assert gauss.std == pytest.approx(0.5 * gauss.noise_multiplier)
    assert 8.0 - 0.01 <= gaussian_epsilon(gauss.noise_multiplier, 10, CHECK_DELTA) <= 8.0
    with pytest.raises(ValueError, match="amplification"):  # local noise gets none against the server
        make("gaussian", clip=0.5, epsilon=2.6, delta=CHECK_DELTA, rounds=CHECK_STEPS, sample_rate=CHECK_Q)
    # the clip really happens before the noise: same draw as clip-then-gaussian(std)
    update = {"w": randn(100, 10) * 5}
    two_stage = build_pipeline([{"name": "clip", "max_norm": 0.5}, {"name": "gaussian", "std": gauss.std}])
    assert torch.allclose(gauss.apply(update, ctx(3))["w"], two_stage(update, ctx(3))["w"], atol=1e-6)
    # std = 0 with a clip is plain clipping
    assert float(global_norm(make("gaussian", std=0.0, clip=0.5).apply(update, ctx()))) <= 0.5 * (1 + 1e-6)


# ------------------------------------------------------------------------ pipeline


def test_pipeline_composes_in_order_and_reports_payload():
    update = {"w": randn(40, 30) * 2, "b": randn(30, seed=1)}
    pipeline = build_pipeline([{"name": "clip", "max_norm": 1.0}, {"name": "gaussian", "std": 0.01}])
    out = pipeline(update, ctx(2))
    clipped = make("clip", max_norm=1.0).apply(update, ctx())
    noise = {k: out[k] - clipped[k] for k in update}
    assert float(torch.cat([n.flatten() for n in noise.values()]).std()) == pytest.approx(0.01, rel=0.15)
    assert torch.equal(out["w"], pipeline(update, ctx(2))["w"])
    assert pipeline.describe() == [{"name": "clip", "max_norm": 1.0, "per_layer": False},
                                   {"name": "gaussian", "std": 0.01}]
    sparse_q = build_pipeline([{"name": "topk", "ratio": 0.1}, {"name": "quantize", "bits": 8}])
    assert sparse_q.payload_bytes(update) == 1200 + 8 + 30 + 8  # the last encoding stage decides
    assert build_pipeline([{"name": "clip", "max_norm": 1.0}]).payload_bytes(update) == 4 * 1230


@pytest.mark.parametrize(
    "spec, word",
    [
        ({"name": "topk", "ratio": 0.1, "fraction": 0.2}, "fraction"),
        ({"name": "powersgd", "rank": 2, "warmstart": True}, "warmstart"),
        ({"name": "topk", "ratio": 0.0}, "ratio"),
        ({"name": "topk", "ratio": 1.5}, "ratio"),
        ({"name": "topk"}, "ratio"),
        ({"name": "topk", "ratio": 0.1, "match_powersgd_rank": 2}, "match_powersgd_rank"),
        ({"name": "topk", "ratio": 0.1, "min_compression_rate": 2}, "min_compression_rate"),
        ({"name": "quantize", "levels": 1}, "levels"),
        ({"name": "quantize", "levels": 16, "bits": 4}, "bits"),
        ({"name": "quantize", "bits": 4, "stochastic": "yes"}, "stochastic"),
        ({"name": "powersgd", "rank": 0}, "rank"),
        ({"name": "powersgd", "rank": 1.5}, "rank"),
        ({"name": "prune", "percent": 120}, "percent"),
        ({"name": "clip", "max_norm": -1}, "max_norm"),
        ({"name": "gaussian", "std": -0.1}, "std"),
        ({"name": "gaussian"}, "std"),
        ({"name": "gaussian", "epsilon": 1.0, "clip": 1.0}, "delta"),
        ({"name": "gaussian", "std": 0.1, "rounds": 10}, "rounds"),
        ({"name": "laplace", "scale": float("nan")}, "scale"),
    ],
)
def test_bad_parameters_raise_value_errors_naming_them(spec, word):
    with pytest.raises(ValueError, match=word):
        build_pipeline([spec])


# -------------------------------------------------------------------------- devices


ALL_SPECS = [
    {"name": "gaussian", "std": 0.1, "clip": 1.0, "delta": 1e-5},
    {"name": "laplace", "scale": 0.1},
    {"name": "clip", "max_norm": 1.0},
    {"name": "clip", "max_norm": 0.1, "per_layer": True},
    {"name": "quantize", "levels": 40, "stochastic": True},
    {"name": "sign", "error_feedback": True},
    {"name": "topk", "ratio": 0.05, "error_feedback": True},
    {"name": "topk", "match_powersgd_rank": 1},
    {"name": "prune", "percent": 80},
    {"name": "powersgd", "rank": 2},
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_defense_keeps_device_dtype_shape_and_is_reproducible(spec, device):
    update = {"conv": randn(16, 3, 3, 3).to(device), "fc": randn(10, 64, seed=1, dtype=torch.float64).to(device),
              "bias": randn(10, seed=2).to(device)}
    pipeline = build_pipeline([spec])
    state_a, state_b = {}, {}
    for round_ in range(2):  # second round exercises the carried state (error feedback, warm start)
        a = pipeline(update, ctx(round_, state_a, kind="delta"))
        b = pipeline(update, ctx(round_, state_b, kind="delta"))
        for k, v in update.items():
            assert a[k].device == v.device and a[k].dtype == v.dtype and a[k].shape == v.shape
            assert torch.equal(a[k], b[k])
            assert torch.isfinite(a[k]).all()
    if device != "cpu":  # randomness is drawn on the CPU: the same result as on the CPU
        cpu = build_pipeline([spec])({k: v.cpu() for k, v in update.items()}, ctx(0, {}))
        again = build_pipeline([spec])(update, ctx(0, {}))
        for k in update:
            assert torch.allclose(again[k].cpu(), cpu[k], rtol=1e-4, atol=1e-5)
