"""IGSA (fl_privacy.metrics.igsa): the Jacobian-vector products, the estimator's parts, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fl_privacy.metrics.igsa import gradient_jvp, igsa
from fl_privacy.models import build_model


def _model(name: str = "lenet", **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=3, image_size=16, **options).double()


def test_jacobian_vector_products_match_finite_differences():
    model = _model("lenet")  # sigmoid activations: smooth, so central differences are accurate
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.tensor(4)
    v = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    g, jv = gradient_jvp(model, params, buffers, x, y, v)
    eps = 1e-5
    for p in range(2):
        plus, _ = gradient_jvp(model, params, buffers, x + eps * v[p], y, v[:1])
        minus, _ = gradient_jvp(model, params, buffers, x - eps * v[p], y, v[:1])
        for name in params:
            fd = (plus[name][0] - minus[name][0]) / (2 * eps)
            assert torch.allclose(jv[name][p], fd, rtol=1e-5, atol=1e-9), name
            assert torch.equal(g[name][p], g[name][0])


def test_igsa_is_seeded_weighted_towards_shallow_layers_and_scale_free():
    model = _model("convnet", width=4).float()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([1, 2])
    first, again = igsa(model, x, y, seed=3), igsa(model, x, y, seed=3)
    assert first == again
    assert igsa(model, x, y, seed=4).igsa != first.igsa
    weights = list(first.weights.values())
    assert math.isclose(sum(weights), 1.0) and weights == sorted(weights, reverse=True) and weights[0] > weights[-1]
    assert math.isclose(first.igsa, 1 / first.roughness)
    assert math.isclose(first.roughness, sum(first.weights[n] * first.layers[n] for n in first.layers))
    assert first.points == 2 * 2 and all(v >= 0 for v in first.layers.values())
    # the loss scale does not change a relative Jacobian norm: scaling the output layer's inputs by 1 (no-op) vs the
    # model in train mode before the call (IGSA evaluates in eval mode and restores the mode)
    model.train()
    assert igsa(model, x, y, seed=3) == first and model.training


def test_igsa_rejects_bad_shapes_and_settings():
    model = _model("lenet").float()
    with pytest.raises(ValueError, match="images must be"):
        igsa(model, torch.zeros(3, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="probes >= 1"):
        igsa(model, torch.zeros(1, 3, 16, 16), torch.tensor([0]), probes=0)
