"""GIA-L generators: the DCGAN's shapes, a few training steps on real CIFAR-10 / MNIST images,
checkpoints that load with ``weights_only=True``, the map into the attack space, the CLI parser."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from fl_privacy.attacks.generators import (
    Discriminator,
    Generator,
    load_generator,
    to_attack_space,
)
from fl_privacy.launch.train_generator import add_train_generator_parser, parse_classes
from fl_privacy.attacks.generators.saved import CHECKPOINT_FORMAT
from fl_privacy.attacks.threat import Observation
from fl_privacy.audit.auxiliary import train_generator
from tests.conftest import CIFAR_FILE, needs_cifar, needs_mnist, require_data

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)




@pytest.fixture(scope="module")
def tiny_checkpoint():
    """ngf=8, nz=16 trained 2 epochs x 4 steps on 256 CIFAR-10 images of classes 0 and 1."""
    require_data(CIFAR_FILE)
    return train_generator("cifar10", classes=[0, 1], epochs=2, batch_size=64, nz=16, ngf=8, ndf=8,
                           max_samples=256, device="cpu", seed=0, progress=False)


# ----------------------------------------------------------------------------- architecture
def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    g = Generator(nz=16, ngf=8, nc=3, num_classes=10).eval()
    d = Discriminator(ndf=8, nc=3, num_classes=10)
    z, y = torch.randn(5, 16), torch.tensor([0, 1, 2, 3, 9])
    x = g(z, y)
    assert x.shape == (5, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x, y).shape == (5,)
    assert g(z.view(5, 16, 1, 1), y).shape == (5, 3, 32, 32)  # reference-style (N, nz, 1, 1) latents
    # the label changes the image (conditional) and z too
    assert not torch.allclose(g(z, y), g(z, (y + 1) % 10))
    with pytest.raises(ValueError, match="conditional"):
        g(z)
    with pytest.raises(ValueError, match="shape"):
        g(torch.randn(5, 15), y)

    gu = Generator(nz=16, ngf=8, nc=1, num_classes=0, image_size=28).eval()
    du = Discriminator(ndf=8, nc=1, num_classes=0, image_size=28)
    xu = gu(torch.randn(3, 16))
    assert xu.shape == (3, 1, 28, 28)
    assert du(xu).shape == (3,)
    with pytest.raises(ValueError, match="unconditional"):
        gu(torch.randn(3, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="image_size"):
        Generator(image_size=64)


def test_generator_size_matches_gias_dcgan():
    """nz=100, ngf=64 (unconditional): GIAS's widths; 3.45M parameters at 32x32 (its 64x64 DCGAN: 3.6M)."""
    g = Generator(nz=100, ngf=64, nc=3, num_classes=0)
    n = sum(p.numel() for p in g.parameters())
    assert n == 100 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 3 * 16 + 2 * (512 + 256 + 128)


def test_28x28_is_the_center_crop_of_32x32():
    torch.manual_seed(0)
    g32 = Generator(nz=8, ngf=4, nc=1, num_classes=0, image_size=32).eval()
    g28 = Generator(nz=8, ngf=4, nc=1, num_classes=0, image_size=28).eval()
    g28.load_state_dict(g32.state_dict())
    z = torch.randn(2, 8)
    assert torch.equal(g28(z), g32(z)[..., 2:30, 2:30])


def test_to_attack_space_maps_tanh_range_onto_pixel_box():
    obs = Observation(model=torch.nn.Linear(1, 1), global_params={}, global_buffers={}, update={}, kind="gradient",
                      image_shape=(3, 4, 4), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
    lo, hi = obs.pixel_box()
    ones = torch.ones(2, 3, 4, 4)
    torch.testing.assert_close(to_attack_space(-ones, CIFAR_MEAN, CIFAR_STD), lo.expand(2, 3, 4, 4))
    torch.testing.assert_close(to_attack_space(ones, CIFAR_MEAN, CIFAR_STD), hi.expand(2, 3, 4, 4))
    # 5-D candidates (R, B, C, H, W) broadcast the same way; normalize=False gives [0, 1] pixels
    x5 = torch.zeros(2, 3, 3, 4, 4)
    torch.testing.assert_close(obs.to_pixels(to_attack_space(x5, CIFAR_MEAN, CIFAR_STD)[0]), torch.full((3, 3, 4, 4), 0.5))
    assert torch.equal(to_attack_space(-ones, CIFAR_MEAN, CIFAR_STD, normalize=False), torch.zeros(2, 3, 4, 4))
    assert torch.equal(to_attack_space(ones, CIFAR_MEAN, CIFAR_STD, normalize=False), torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        to_attack_space(ones, (0.5,) * 2, (0.2,) * 2)


# ----------------------------------------------------------------------------- training & checkpoints
def test_training_steps_are_finite_and_recorded(tiny_checkpoint):
    ck = tiny_checkpoint
    assert ck.steps == 8 and ck.epochs == 2.0 and ck.num_samples == 256
    assert ck.classes == [0, 1]
    assert ck.image_shape == (3, 32, 32)
    assert ck.mean == CIFAR_MEAN and ck.std == CIFAR_STD
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert len(ck.history[key]) == 2
        assert all(math.isfinite(v) for v in ck.history[key])
    assert all(0 <= v <= 1 for v in ck.history["d_real"] + ck.history["d_fake"])
    assert ck.seconds > 0 and ck.seconds_per_epoch > 0
    assert not ck.generator.training  # returned in eval mode


def test_checkpoint_roundtrip_weights_only(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint.save_checkpoint(tmp_path / "sub" / "g.pt")
    assert path.exists()
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["classes"] == [0, 1] and raw["image_shape"] == [3, 32, 32]
    assert raw["config"]["generator"]["nz"] == 16 and raw["config"]["conditional"] is True
    assert raw["epochs"] == 2.0 and raw["seconds"] > 0

    generator, info = load_generator(path, device="cpu")
    assert not generator.training
    assert info["image_shape"] == (3, 32, 32) and info["classes"] == [0, 1]
    assert "state_dict" not in info
    z, y = torch.randn(6, 16), torch.tensor([0, 1, 0, 1, 5, 9])
    with torch.no_grad():
        assert torch.equal(generator(z, y), tiny_checkpoint.generator(z, y))


def test_training_is_seeded_and_leaves_global_rng_alone():
    require_data(CIFAR_FILE)
    kw = {"classes": [3], "epochs": 1, "batch_size": 32, "nz": 8, "ngf": 4, "ndf": 4, "max_samples": 64,
          "device": "cpu", "progress": False}
    state = torch.random.get_rng_state()
    a = train_generator("cifar10", seed=1, **kw)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_generator("cifar10", seed=1, **kw)
    for (k, va), (_, vb) in zip(a.generator.state_dict().items(), b.generator.state_dict().items()):
        assert torch.equal(va, vb), k
    with pytest.raises(ValueError, match="class ids"):
        train_generator("cifar10", classes=[10], **{k: v for k, v in kw.items() if k != "classes"})


@needs_mnist
def test_unconditional_mnist_28x28(tmp_path):
    ck = train_generator("mnist", classes=None, epochs=1, batch_size=32, nz=8, ngf=4, ndf=4, max_samples=64,
                         conditional=False, device="cpu", progress=False, max_steps=1)
    assert ck.steps == 1 and ck.epochs == 0.5
    assert ck.image_shape == (1, 28, 28)
    generator, info = load_generator(ck.save_checkpoint(tmp_path / "m.pt"), device="cpu")
    assert generator.num_classes == 0 and info["config"]["conditional"] is False
    assert generator(torch.randn(2, 8)).shape == (2, 1, 28, 28)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl-privacy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_generator_parser(sub)
    return parser


def test_cli_parser_builds_and_needs_out():
    parser = _parser()
    args = parser.parse_args(["train-generator", "--classes", "0,1,2,3,4", "--epochs", "3", "--ngf", "32",
                              "--nz", "64", "--unconditional", "--out", "g.pt"])
    assert args.command == "train-generator" and args.classes == [0, 1, 2, 3, 4]
    assert args.epochs == 3 and args.ngf == 32 and args.nz == 64 and args.unconditional
    assert args.dataset == "cifar10" and args.batch_size == 128 and args.out == "g.pt"
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["train-generator", "--epochs", "1"])  # --out is required
    with pytest.raises(SystemExit):
        parser.parse_args(["train-generator", "--epochs", "0", "--out", "g.pt"])
    assert parse_classes("all") is None and parse_classes("3, 5") == [3, 5]


@needs_cifar
def test_cli_handler_trains_and_saves(tmp_path, capsys):
    out = tmp_path / "g.pt"
    args = _parser().parse_args(["train-generator", "--classes", "0,1", "--epochs", "1", "--batch-size", "32",
                                 "--nz", "8", "--ngf", "4", "--ndf", "4", "--max-samples", "64", "--max-steps", "1",
                                 "--device", "cpu", "--no-progress", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "s/epoch" in printed
    _, info = load_generator(out, device="cpu")
    assert info["classes"] == [0, 1] and info["steps"] == 1
