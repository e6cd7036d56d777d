"""Tests for fl_privacy.metrics against hand-computed values; no network, no weight downloads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fl_privacy.metrics import (
    LpipsMetric,
    LpipsUnavailable,
    label_accuracy,
    lpips_status,
    match_batch,
    mse,
    psnr,
    score_reconstruction,
    ssim,
    try_lpips,
)
from fl_privacy.metrics import lpips_metric as lpm


def _smooth_batch(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Distinct, structured images in [0, 1] (random low-res noise upsampled), like real photos."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, c, max(2, h // 4), max(2, w // 4), generator=g)
    return torch.nn.functional.interpolate(
        low, size=(h, w), mode="bilinear", align_corners=False
    ).clamp(0, 1)


# --------------------------------------------------------------------------- mse / psnr / ssim


def test_mse_psnr_hand_computed() -> None:
    zeros = torch.zeros(2, 3, 8, 8)
    half = torch.full((2, 3, 8, 8), 0.5)
    m = mse(zeros, half)
    assert isinstance(m, np.ndarray) and m.dtype == np.float64 and m.shape == (2,)
    np.testing.assert_allclose(m, [0.25, 0.25])
    # 10 * log10(1 / 0.25) = 6.0206 dB
    np.testing.assert_allclose(psnr(zeros, half), [6.020599913, 6.020599913], atol=1e-6)
    # data_range scales the peak: 10*log10(4 / 0.25) = 12.0412 dB
    np.testing.assert_allclose(
        psnr(zeros, half, data_range=2.0), [12.041199827] * 2, atol=1e-6
    )


def test_mse_is_per_image() -> None:
    truth = torch.zeros(3, 1, 4, 4)
    recon = truth.clone()
    recon[1] = 1.0  # every pixel off by 1
    recon[2, 0, 0, :] = 1.0  # 4 of 16 pixels off by 1
    np.testing.assert_allclose(mse(recon, truth), [0.0, 1.0, 0.25])


def test_identical_images_perfect_scores() -> None:
    x = _smooth_batch(3, 3, 32, 32)
    np.testing.assert_array_equal(mse(x, x), np.zeros(3))
    p = psnr(x, x)
    assert np.all(np.isposinf(p))
    np.testing.assert_allclose(ssim(x, x), np.ones(3), atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (4, 3, 32, 32)])
def test_ssim_self_one_random_low(shape: tuple[int, int, int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(*shape, generator=g)
    b = torch.rand(*shape, generator=g)
    s_self = ssim(a, a)
    s_rand = ssim(a, b)
    assert s_self.shape == (shape[0],) and s_self.dtype == np.float64
    np.testing.assert_allclose(s_self, 1.0, atol=1e-12)
    assert np.all(s_rand < 0.2), s_rand


def test_ssim_tiny_images_shrink_window() -> None:
    x = torch.rand(2, 1, 5, 5)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        mse(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError):
        ssim(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize("cost", ["mse", "ssim"])
@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (6, 3, 32, 32)])
def test_match_recovers_inverse_permutation(
    cost: str, shape: tuple[int, int, int, int]
) -> None:
    truth = _smooth_batch(*shape, seed=3)
    shuffle = torch.tensor([3, 0, 5, 1, 4, 2])
    recon = truth[shuffle]  # recon[k] = truth[shuffle[k]]
    perm = match_batch(recon, truth, cost=cost)
    assert perm.dtype == np.int64
    inverse = torch.argsort(shuffle).numpy()
    np.testing.assert_array_equal(perm, inverse)
    assert torch.equal(recon[torch.as_tensor(perm)], truth)


@pytest.mark.parametrize("cost", ["mse", "ssim"])
def test_match_noisy_still_recovers(cost: str) -> None:
    truth = _smooth_batch(8, 3, 32, 32, seed=4)
    g = torch.Generator().manual_seed(5)
    shuffle = torch.randperm(8, generator=g)
    recon = (truth[shuffle] + 0.05 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    perm = match_batch(recon, truth, cost=cost)
    np.testing.assert_array_equal(perm, torch.argsort(shuffle).numpy())


def test_match_batch_size_mismatch_and_bad_cost() -> None:
    with pytest.raises(ValueError):
        match_batch(torch.rand(3, 1, 8, 8), torch.rand(4, 1, 8, 8))
    with pytest.raises(ValueError):
        match_batch(torch.rand(3, 1, 8, 8), torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError):
        match_batch(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8), cost="l1")


def test_match_tolerates_diverged_nan_reconstruction() -> None:
    truth = _smooth_batch(3, 1, 28, 28, seed=6)
    recon = truth[torch.tensor([2, 0, 1])].clone()
    recon[0] = float(
        "nan"
    )  # the attack diverged on the image that should match truth[2]
    perm = match_batch(recon, truth)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    out = score_reconstruction(recon, truth)
    assert out["mse"][:2] == [0.0, 0.0] and math.isnan(out["mse"][2])


def test_pairwise_mse_matches_direct() -> None:
    from fl_privacy.metrics.image import _pairwise_mse

    a = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    b = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    direct = np.array(
        [[mse(a[i : i + 1], b[j : j + 1])[0] for j in range(5)] for i in range(4)]
    )
    np.testing.assert_allclose(_pairwise_mse(a, b), direct, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- score_reconstruction


def test_score_permuted_identical_batch() -> None:
    truth = _smooth_batch(5, 1, 28, 28, seed=7)
    labels = torch.tensor([3, 1, 4, 1, 5])
    shuffle = torch.tensor([2, 4, 0, 3, 1])
    out = score_reconstruction(
        truth[shuffle], truth, recon_labels=labels[shuffle], true_labels=labels
    )
    assert out["perm"] == torch.argsort(shuffle).tolist()
    assert out["mse"] == [0.0] * 5 and out["mse_mean"] == 0.0
    assert all(math.isinf(v) for v in out["psnr"])
    assert out["psnr_mean"] == math.inf and out["psnr_num_inf"] == 5
    np.testing.assert_allclose(out["ssim"], 1.0, atol=1e-12)
    assert out["ssim_mean"] == pytest.approx(1.0)
    assert out["label_acc"] == 1.0
    assert out["lpips"] is None and out["lpips_mean"] is None
    json.dumps(out)  # must be serializable as-is


def test_score_values_and_types() -> None:
    truth = torch.zeros(2, 1, 8, 8)
    truth[1] = 1.0
    recon = torch.zeros(2, 1, 8, 8)
    recon[0] = 0.5  # mse 0.25 to either truth -> 6.02 dB
    recon[1] = 1.0  # exactly truth[1], mse 1.0 to truth[0]
    # costs: identity 0.25 + 0 beats swap 0.25 + 1.0, so the match is unique
    out = score_reconstruction(
        recon,
        truth,
        recon_labels=torch.tensor([1, 2]),
        true_labels=torch.tensor([1, 0]),
    )
    assert out["perm"] == [0, 1]
    assert out["mse"] == [0.25, 0.0]
    assert out["mse_mean"] == pytest.approx(0.125)
    assert out["psnr"][0] == pytest.approx(6.020599913) and math.isinf(out["psnr"][1])
    assert out["psnr_num_inf"] == 1
    assert out["psnr_mean"] == pytest.approx(6.020599913)  # only the finite value
    assert out["label_acc"] == 0.5
    for key in ("mse", "psnr", "ssim", "perm"):
        assert isinstance(out[key], list)
    assert all(type(v) is float for v in out["mse"] + out["psnr"] + out["ssim"])
    assert all(type(v) is int for v in out["perm"])
    json.dumps(out)


def test_score_label_acc_uses_matching() -> None:
    truth = _smooth_batch(4, 3, 32, 32, seed=9)
    true_labels = torch.tensor([0, 1, 2, 3])
    shuffle = torch.tensor([1, 2, 3, 0])
    # labels travel with their images, except the recon holding truth[3] got label 9
    recon_labels = true_labels[shuffle].clone()
    recon_labels[shuffle.tolist().index(3)] = 9
    out = score_reconstruction(
        truth[shuffle], truth, recon_labels, true_labels, match="ssim"
    )
    assert out["label_acc"] == pytest.approx(0.75)
    assert score_reconstruction(truth, truth)["label_acc"] is None


# --------------------------------------------------------------------------- label accuracy


def test_label_accuracy_unordered_multiset() -> None:
    assert label_accuracy(
        torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2])
    ) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([2, 1, 0]), torch.tensor([0, 1, 2])) == 1.0
    assert label_accuracy(torch.tensor([5, 5]), torch.tensor([1, 2])) == 0.0
    # fewer predictions than truth: still divided by the true batch size
    assert label_accuracy(torch.tensor([7]), torch.tensor([7, 7, 7, 7])) == 0.25


def test_label_accuracy_ordered() -> None:
    assert label_accuracy(
        torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2]), ordered=True
    ) == pytest.approx(2 / 3)
    assert label_accuracy(
        torch.tensor([2, 1, 0]), torch.tensor([0, 1, 2]), ordered=True
    ) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        label_accuracy(torch.tensor([1]), torch.tensor([1, 2]), ordered=True)
    with pytest.raises(ValueError):
        label_accuracy(torch.tensor([]), torch.tensor([], dtype=torch.long))


# --------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_unavailable_without_cached_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path, net: str
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*args, **kwargs):  # any download attempt is a bug
        raise AssertionError("LPIPS tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)

    ok, reason = lpips_status(net)
    assert ok is False
    expected = tmp_path / "checkpoints"
    assert str(expected) in reason and "missing" in reason
    assert try_lpips(net) is None
    with pytest.raises(LpipsUnavailable, match=str(expected)):
        LpipsMetric(net=net)
    assert not expected.exists() or not any(expected.iterdir())  # nothing was written


def test_lpips_expected_filenames_come_from_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from torchvision.models import AlexNet_Weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = lpm._backbone_cache_path("alex")
    assert path.parent == tmp_path / "checkpoints"
    assert path.name == AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def test_lpips_unknown_net() -> None:
    ok, reason = lpips_status("resnet")
    assert not ok and "unknown" in reason
    with pytest.raises(ValueError):
        LpipsMetric(net="resnet")


def test_lpips_input_preparation() -> None:
    gray = torch.rand(2, 1, 28, 28)
    x = lpm.prepare_lpips_input(gray, min_side=32)
    assert x.shape == (2, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    rgb = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    y = lpm.prepare_lpips_input(rgb, min_side=32)
    assert y.shape == (1, 3, 32, 32)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))


def test_lpips_real_weights_if_cached() -> None:
    ok, reason = lpips_status("alex")
    if not ok:
        pytest.skip(
            f"real AlexNet ImageNet weights not cached (no download in tests): {reason}"
        )
    metric = LpipsMetric("alex")
    truth = _smooth_batch(4, 3, 32, 32, seed=11)
    d_self = metric(truth, truth)
    assert d_self.shape == (4,) and d_self.dtype == np.float64
    np.testing.assert_allclose(d_self, 0.0, atol=1e-6)
    noisy = (truth + 0.3 * torch.randn_like(truth)).clamp(0, 1)
    assert np.all(metric(noisy, truth) > d_self + 1e-3)
    shuffle = torch.tensor([2, 0, 3, 1])
    pw = metric.pairwise(truth[shuffle], truth)
    assert pw.shape == (4, 4)
    np.testing.assert_array_equal(
        match_batch(truth[shuffle], truth, cost="lpips", lpips_metric=metric),
        torch.argsort(shuffle).numpy(),
    )
    gray = _smooth_batch(2, 1, 28, 28, seed=12)
    assert metric(gray, gray).shape == (2,)
    out = score_reconstruction(truth[shuffle], truth, lpips=metric)
    assert out["lpips_mean"] == pytest.approx(0.0, abs=1e-6)
    json.dumps(out)
