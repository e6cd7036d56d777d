"""SSIM windows: the Gaussian 11x11 default equals skimage's Wang et al. setting; the 7x7 variant the old value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fl_privacy.metrics import score_reconstruction, ssim, ssim_uniform7


def _pair(shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image batch and a noisy copy (SSIM well inside (0, 1), so the windows differ)."""
    g = torch.Generator().manual_seed(3)
    b, c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([torch.sin(3 * xx * (i + 1)) * torch.cos(2 * yy) for i in range(b * c)]).view(b, c, h, w)
    truth = (base * 0.4 + 0.5).clamp(0, 1)
    recon = (truth + 0.15 * torch.randn(shape, generator=g)).clamp(0, 1)
    return recon, truth


def _hwc(x: torch.Tensor, i: int) -> np.ndarray:
    return x[i].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (3, 1, 28, 28)])
def test_gaussian_default_equals_skimage_wang_setting(shape):
    recon, truth = _pair(shape)
    expected = [structural_similarity(_hwc(recon, i), _hwc(truth, i), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1, channel_axis=-1)
                for i in range(shape[0])]
    np.testing.assert_allclose(ssim(recon, truth), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (3, 1, 28, 28)])
def test_uniform7_equals_the_previous_value(shape):
    recon, truth = _pair(shape)
    expected = [structural_similarity(_hwc(recon, i), _hwc(truth, i), win_size=7, data_range=1.0, channel_axis=-1)
                for i in range(shape[0])]
    np.testing.assert_allclose(ssim_uniform7(recon, truth), expected, rtol=0, atol=1e-12)
    assert not np.allclose(ssim(recon, truth), expected, atol=1e-3), "the two windows should differ here"


def test_score_names_its_window_and_carries_both():
    recon, truth = _pair((2, 3, 32, 32))
    scores = score_reconstruction(recon, truth)
    assert scores["ssim_window"] == "gaussian11"
    np.testing.assert_allclose(scores["ssim"], ssim(recon, truth))
    np.testing.assert_allclose(scores["ssim_uniform7"], ssim_uniform7(recon, truth))
    assert scores["ssim_uniform7_mean"] == pytest.approx(float(np.mean(scores["ssim_uniform7"])))


def test_unknown_window_is_refused():
    recon, truth = _pair((1, 1, 28, 28))
    with pytest.raises(ValueError, match="gaussian11"):
        ssim(recon, truth, window="box5")
