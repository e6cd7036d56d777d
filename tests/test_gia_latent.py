"""GIA-L: latent-space gradient inversion recovers an image planted in the generator's range,
shares GIA-O's Observation contract, result type, label rules and update models."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from fl_privacy.attacks.generators import Generator, to_attack_space
from fl_privacy.attacks.gia import GIAResult
from fl_privacy.attacks.gia.latent import LATENT_PRESETS, latent_preset, reconstruct_latent
from fl_privacy.attacks.gia.latent_options import GIALConfig
from fl_privacy.attacks.gia.latent_stages import latent_prior
from fl_privacy.attacks.threat import Observation, Schedule
from fl_privacy.metrics import psnr
from fl_privacy.models import build_model
from fl_privacy.sgd import loss_fn, split_state

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
NZ = 16


def _random_generator(num_classes: int = 10, seed: int = 0) -> Generator:
    """An untrained generator whose images vary a lot with z and the label.

    DCGAN's N(0, 0.02) init makes an untrained generator output almost constant gray, so the
    test uses He-initialised layers and BatchNorm running statistics calibrated on random
    latents (eval mode then normalises like train mode would).
    """
    torch.manual_seed(seed)
    g = Generator(nz=NZ, ngf=8, nc=3, num_classes=num_classes)
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    g.train()
    with torch.no_grad():
        for _ in range(4):
            g(torch.randn(256, NZ), torch.randint(0, max(num_classes, 1), (256,)) if num_classes else None)
    return g.eval()


def _plant(generator: Generator, labels: list[int], seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    """Victim images x* = G(z*) in the attack space and their labels."""
    y = torch.tensor(labels)
    z = torch.randn(len(labels), NZ, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = to_attack_space(generator(z, y if generator.num_classes else None), MEAN, STD)
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", num_classes=10, in_channels=3, image_size=32)


def _observe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, labels: bool = True, kind: str = "gradient",
             schedule: bool = True, lr: float = 0.1) -> Observation:
    """The server's view of one FedSGD gradient (or one local SGD step as a FedAvg delta)."""
    params, buffers = split_state(model)
    m = copy.deepcopy(model).train()
    grads = torch.autograd.grad(loss_fn(m(x), y), list(m.parameters()))
    grad = {n: g.detach() for (n, _), g in zip(m.named_parameters(), grads)}
    update = grad if kind == "gradient" else {n: -lr * g for n, g in grad.items()}
    sched = Schedule(lr=lr, steps=(tuple(range(len(y))),)) if kind == "delta" and schedule else None
    return Observation(
        model=copy.deepcopy(model), global_params=params, global_buffers=buffers, update=update, kind=kind,
        image_shape=tuple(x.shape[1:]), num_classes=10, mean=MEAN, std=STD, num_examples=len(y), batch_size=len(y),
        labels=y.clone() if labels else None, schedule=sched,
    )


def _psnr(obs: Observation, a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.mean(psnr(obs.to_pixels(a), obs.to_pixels(b))))


def _random_psnr(obs: Observation, generator: Generator, truth: torch.Tensor, y: torch.Tensor, n: int = 8) -> float:
    """Mean PSNR of random generator samples (same labels) against the truth: the chance level."""
    gen = torch.Generator().manual_seed(7)
    values = []
    with torch.no_grad():
        for _ in range(n):
            z = torch.randn(len(y), NZ, generator=gen)
            values.append(_psnr(obs, to_attack_space(generator(z, y), MEAN, STD), truth))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def planted():
    generator = _random_generator()
    x, y = _plant(generator, [3])
    return generator, x, y, _observe(_model(), x, y, labels=False)


# ----------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("name", ["gias", "ggl"])
def test_recovers_image_in_generator_range(planted, name):
    """Labels inferred from the gradient, conditional generator: far better than a random sample."""
    generator, x, y, obs = planted
    cfg = latent_preset(name, iterations=250, restarts=4, generator_steps=20 if name == "gias" else 0)
    before = [p.detach().clone() for p in generator.parameters()]
    result = reconstruct_latent(obs, cfg, generator, {"classes": list(range(10)), "image_shape": (3, 32, 32)},
                                device="cpu")
    assert torch.equal(result.labels, y)  # LLG+ on one image
    got, chance = _psnr(obs, result.images, x), _random_psnr(obs, generator, x, y)
    assert got > chance + 5, (got, chance)
    assert got > 30, got
    assert all(torch.equal(a, b) for a, b in zip(before, generator.parameters()))  # generator untouched
    assert result.objective == pytest.approx(min(result.restart_objectives), abs=1e-3) or name == "gias"


def test_batch_of_two_with_known_labels():
    generator = _random_generator(seed=1)
    x, y = _plant(generator, [1, 6], seed=5)
    obs = _observe(_model(), x, y, labels=True)
    result = reconstruct_latent(obs, latent_preset("ggl", iterations=300, restarts=2, labels="known"), generator,
                                device="cpu")
    assert torch.equal(result.labels, y)
    # GIA-L returns the images in label order of obs.labels: compare image by image
    got = psnr(obs.to_pixels(result.images), obs.to_pixels(x))
    assert got.min() > _random_psnr(obs, generator, x, y) + 5, got


def test_gias_stage_two_fits_an_image_outside_the_generator_range():
    """Victim image from another generator (out of range): stage 2 (per-image generator parameters, z fixed)
    lowers the gradient distance that stage 1 (z only) is stuck at."""
    generator = _random_generator(seed=0)
    x, y = _plant(_random_generator(seed=2), [3])
    obs = _observe(_model(), x, y)
    cfg = latent_preset("gias", iterations=100, generator_steps=100, labels="known")
    result = reconstruct_latent(obs, cfg, generator, device="cpu")
    stage1 = result.restart_objectives[result.best_restart]
    assert result.objective < 0.6 * stage1, (result.objective, stage1)
    assert any("returned: stage 2" in n for n in result.notes)
    assert result.iterations == 200


def test_fedavg_known_and_unknown_schedule():
    generator = _random_generator()
    x, y = _plant(generator, [4])
    cfg = GIALConfig(iterations=150, restarts=2, latent_prior="none", labels="known")
    known = reconstruct_latent(_observe(_model(), x, y, kind="delta"), cfg, generator, device="cpu")
    assert known.update_model == "known_schedule"
    assert _psnr(_observe(_model(), x, y), known.images, x) > _random_psnr(_observe(_model(), x, y), generator, x, y) + 5
    unknown = reconstruct_latent(_observe(_model(), x, y, kind="delta", schedule=False),
                                 dataclasses.replace(cfg, objective="l2", iterations=5), generator, device="cpu")
    assert unknown.update_model == "unknown_schedule"
    assert unknown.objective_used == "scaled_l2"  # l2 on an update of unknown scale
    assert any("scaled_l2" in n for n in unknown.notes)


# ----------------------------------------------------------------------------- contract
def test_result_has_gia_o_fields_and_shapes(planted):
    generator, _, _, obs = planted
    cfg = GIALConfig(iterations=12, restarts=3, generator_steps=5, log_every=4)
    result = reconstruct_latent(obs, cfg, generator, {"classes": [0, 1]}, device="cpu")
    assert isinstance(result, GIAResult)
    assert {f.name for f in dataclasses.fields(result)} == {f.name for f in dataclasses.fields(GIAResult)}
    assert result.images.shape == (1, 3, 32, 32) and result.images.device.type == "cpu"
    assert result.labels.shape == (1,) and result.labels.dtype == torch.int64
    assert len(result.restart_objectives) == 3 and 0 <= result.best_restart < 3
    assert result.iterations == 17 and result.seconds_per_iteration > 0
    assert result.seconds_per_iteration == pytest.approx(result.seconds / 17)
    assert result.update_model == "gradient" and result.objective_used == "cosine"
    assert result.soft_labels is None
    assert math.isfinite(result.objective)
    # trace: stage 1 at 0, 4, 8, 11 for every restart; stage 2 at 12, 16 for the best restart only
    assert result.trace.shape == (6, 4)
    assert result.trace[:, 0].tolist() == [0, 4, 8, 11, 12, 16]
    assert np.isfinite(result.trace[:4, 1:]).all()
    assert np.isfinite(result.trace[4:, 1 + result.best_restart]).all()
    assert np.isnan(np.delete(result.trace[4:, 1:], result.best_restart, axis=1)).all()
    assert any("stage 2" in n for n in result.notes)
    assert any("not among the generator's training classes" in n for n in result.notes)  # label 3, trained on 0, 1
    # the box: generated images lie in the normalised pixel range
    lo, hi = obs.pixel_box()
    assert (result.images >= lo - 1e-5).all() and (result.images <= hi + 1e-5).all()


def test_seeded(planted):
    generator, _, _, obs = planted
    cfg = GIALConfig(iterations=5, restarts=2, seed=3)
    a = reconstruct_latent(obs, cfg, generator, device="cpu")
    b = reconstruct_latent(obs, cfg, generator, device="cpu")
    assert torch.equal(a.images, b.images) and a.restart_objectives == b.restart_objectives


def test_known_labels_need_the_threat_level_to_grant_them(planted):
    generator, _, _, obs = planted
    assert obs.labels is None
    with pytest.raises(ValueError, match="labels"):
        reconstruct_latent(obs, GIALConfig(iterations=2, labels="known"), generator, device="cpu")


def test_unconditional_generator_and_tanh_bound():
    generator = _random_generator(num_classes=0)
    x, y = _plant(generator, [2])
    obs = _observe(_model(), x, y)
    result = reconstruct_latent(obs, GIALConfig(iterations=3, restarts=2, bound="tanh", latent_prior="norm"),
                                generator, device="cpu")
    assert result.images.shape == (1, 3, 32, 32) and math.isfinite(result.objective)


def test_generator_must_match_the_victims_images(planted):
    generator, _, _, obs = planted
    with pytest.raises(ValueError, match="shape"):
        reconstruct_latent(obs, GIALConfig(iterations=2), generator, {"image_shape": (1, 28, 28)}, device="cpu")
    small = Generator(nz=NZ, ngf=4, nc=1, num_classes=10, image_size=28).eval()
    with pytest.raises(ValueError, match="shape"):
        reconstruct_latent(obs, GIALConfig(iterations=2), small, device="cpu")


# ----------------------------------------------------------------------------- config
def test_presets_build_and_validate():
    assert set(LATENT_PRESETS) == {"ggl", "gias"}
    ggl, gias = latent_preset("ggl"), latent_preset("gias")
    assert (ggl.objective, ggl.layer_mean, ggl.latent_prior, ggl.latent_weight, ggl.generator_steps) == \
        ("l2", True, "kl", 0.1, 0)
    assert (gias.objective, gias.lr, gias.generator_lr) == ("cosine", 0.1, 1e-3) and gias.generator_steps > 0
    assert latent_preset("gias", iterations=10).iterations == 10
    assert LATENT_PRESETS["gias"].iterations != 10  # presets are copied, not modified
    with pytest.raises(ValueError, match="unknown GIA-L preset"):
        latent_preset("dlg")
    with pytest.raises(ValueError, match="unknown GIALConfig field"):
        latent_preset("ggl", optimizer="lbfgs")
    for bad in ({"objective": "l1"}, {"labels": "joint"}, {"iterations": 0}, {"latent_prior": "l2"},
                {"generator_lr": 0.0}, {"label_method": "dlg"}, {"bound": "sigmoid"}):
        with pytest.raises(ValueError):
            GIALConfig(**bad)
    g = GIALConfig(layer_mean=True).gia_config(n_layers=10)
    assert g.objective_scale == pytest.approx(0.1) and g.labels == "infer" and g.bn == 0


def test_latent_priors():
    z = torch.randn(3, 2, 4096, generator=torch.Generator().manual_seed(0))
    kl = latent_prior(z, "kl")
    assert kl.shape == (3,) and (kl.abs() < 1e-2).all()  # standard normal latents: KL ~ 0
    shifted = latent_prior(z * 2 + 1, "kl")  # mean 1, var 4: 0.5 (4 + 1 - 1 - log 4) = 1.307
    torch.testing.assert_close(shifted, torch.full((3,), 2 - math.log(2)), atol=0.05, rtol=0)
    torch.testing.assert_close(latent_prior(torch.ones(2, 3, 4), "norm"), torch.full((2,), math.sqrt(12)))
    assert torch.equal(latent_prior(z, "none"), torch.zeros(3))
