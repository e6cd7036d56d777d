"""Property tests for the model zoo (fl_privacy.models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from fl_privacy.models import MODEL_NAMES, build_model, count_parameters, model_options
from fl_privacy.models.resnet import BasicBlock

CIFAR = (3, 32)
MNIST = (1, 28)
SECOND_ORDER_MODELS = ("lenet", "convnet", "small_cnn", "fedavg_cnn")
# Narrow variants for tests whose property does not depend on width (keeps tests fast).
NARROW: dict[str, dict[str, object]] = {
    "lenet": {},
    "convnet": {"width": 8},
    "resnet18": {"width": 8},
    "resnet34": {"width": 8},
    "small_cnn": {"width": 8},
    "googlenet": {"width": 8},
    "densenet43": {"width": 8, "growth_rate": 4},
    "densenet53": {"width": 8, "growth_rate": 4},
    "mlp": {"width": 8},
    "fedavg_cnn": {"width": 8},
}


def make(
    name: str,
    shape: tuple[int, int] = CIFAR,
    num_classes: int = 10,
    seed: int = 0,
    **options: object,
) -> nn.Module:
    torch.manual_seed(seed)
    channels, size = shape
    return build_model(
        name, num_classes=num_classes, in_channels=channels, image_size=size, **options
    )


def batch(shape: tuple[int, int], n: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    channels, size = shape
    return torch.rand(n, channels, size, size, generator=gen)


def of_type(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


# -------------------- all models


def test_model_names() -> None:
    assert MODEL_NAMES == ("lenet", "convnet", "resnet18", "resnet34", "small_cnn", "googlenet", "densenet43",
                           "densenet53", "mlp", "fedavg_cnn")


@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(name: str, shape: tuple[int, int]) -> None:
    num_classes = 7
    model = make(name, shape, num_classes=num_classes)
    out = model(batch(shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()

    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), (
            f"{name}: non-finite gradient for {pname}"
        )


@pytest.mark.parametrize("name", SECOND_ORDER_MODELS)
def test_double_backward_through_parameter_gradients(name: str) -> None:
    """Gradient inversion differentiates the gradient-matching loss w.r.t. the input."""
    model = make(name)
    x = batch(CIFAR).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 2]))
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    grad_norm = sum((g**2).sum() for g in grads)
    (dx,) = torch.autograd.grad(grad_norm, x)
    assert dx.shape == x.shape
    assert torch.isfinite(dx).all()
    assert dx.abs().sum() > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_functional_call_matches_module(name: str) -> None:
    model = make(name, MNIST, **NARROW[name]).eval()
    x = batch(MNIST)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        torch.testing.assert_close(functional_call(model, state, (x,)), model(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_parameters(name: str) -> None:
    a = make(name, MNIST, seed=3, **NARROW[name]).state_dict()
    b = make(name, MNIST, seed=3, **NARROW[name]).state_dict()
    c = make(name, MNIST, seed=4, **NARROW[name]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_construction_leaves_batchnorm_statistics_untouched() -> None:
    """The dummy forward that sizes the classifier must not update running stats."""
    model = make("convnet")
    for bn in of_type(model, nn.BatchNorm2d):
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert model.training


def test_model_options_and_count_parameters() -> None:
    opts = model_options("convnet")
    assert (
        opts["width"] == 32 and opts["activation"] == "relu" and opts["dropout"] == 0.0
    )
    opts["width"] = 1  # a copy: mutating it does not change the defaults
    assert model_options("convnet")["width"] == 32
    assert set(model_options("lenet")) == {"activation", "dlg_init", "bias"}
    assert set(model_options("resnet18")) == {"cut_skips", "width"}
    assert set(model_options("small_cnn")) == {"width"}

    model = nn.Linear(4, 3)
    assert count_parameters(model) == 15
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 15
    assert count_parameters(model, trainable_only=True) == 12


# -------------------- errors


def test_unknown_model_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError) as err:
        build_model("vgg16", num_classes=10, in_channels=3, image_size=32)
    assert "vgg16" in str(err.value)
    assert all(name in str(err.value) for name in MODEL_NAMES)
    with pytest.raises(ValueError, match="vgg16"):
        model_options("vgg16")


def test_unknown_option_lists_accepted_options() -> None:
    with pytest.raises(ValueError) as err:
        make("lenet", depth=3)
    message = str(err.value)
    assert "depth" in message and "lenet" in message
    assert all(option in message for option in ("activation", "dlg_init", "bias"))


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("lenet", {"activation": "gelu"}, "sigmoid"),
        ("convnet", {"activation": "gelu"}, "leaky_relu"),
        ("convnet", {"width": -4}, "width"),
        ("convnet", {"dropout": 1.5}, "dropout"),
        ("convnet", {"bias": "no"}, "True"),
        ("small_cnn", {"width": 0}, "width"),
        ("resnet18", {"width": 2.5}, "width"),
    ],
)
def test_bad_option_values_raise(
    name: str, options: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        make(name, **options)


def test_bad_shape_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("lenet", num_classes=0, in_channels=3, image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        build_model("small_cnn", num_classes=10, in_channels=3, image_size=8)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_none_options_are_ignored(name: str) -> None:
    all_none = {option: None for option in model_options(name)}
    a = make(name, MNIST, **{**all_none, **NARROW[name]}).state_dict()
    b = make(name, MNIST, **NARROW[name]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -------------------- LeNet


def test_lenet_structure_matches_dlg() -> None:
    model = make("lenet")
    convs = of_type(model, nn.Conv2d)
    assert len(convs) == 4
    assert [c.out_channels for c in convs] == [12] * 4
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert len(of_type(model, nn.Sigmoid)) == 4
    (linear,) = of_type(model, nn.Linear)
    assert linear.in_features == 768
    assert of_type(make("lenet", MNIST), nn.Linear)[0].in_features == 12 * 7 * 7


def test_lenet_dlg_init_range() -> None:
    params = list(make("lenet").parameters())
    assert all(p.min() >= -0.5 and p.max() <= 0.5 for p in params)
    # The conv weights span nearly the whole interval (default init would not).
    assert params[0].max() > 0.45 and params[0].min() < -0.45
    default_init = next(make("lenet", dlg_init=False).parameters())
    assert default_init.abs().max() < 0.2


def test_lenet_options() -> None:
    model = make("lenet", activation="relu", bias=False)
    assert len(of_type(model, nn.ReLU)) == 4 and not of_type(model, nn.Sigmoid)
    assert all(
        m.bias is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    assert len(of_type(make("lenet", activation="tanh"), nn.Tanh)) == 4


# -------------------- ConvNet


def test_convnet_default_structure() -> None:
    model = make("convnet", width=8)
    convs = of_type(model, nn.Conv2d)
    assert [c.out_channels for c in convs] == [8, 16, 16, 32, 32, 32, 32, 32]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert len(of_type(model, nn.BatchNorm2d)) == 8
    assert len(of_type(model, nn.ReLU)) == 8
    assert len(of_type(model, nn.MaxPool2d)) == 2
    assert not of_type(model, nn.Dropout)
    # 32 -> pool(3) -> 10 -> pool(3) -> 3: 4w * 3 * 3 features.
    assert of_type(model, nn.Linear)[0].in_features == 32 * 9


@pytest.mark.parametrize(
    ("options", "check"),
    [
        ({"bias": False}, lambda m: all(c.bias is None for c in of_type(m, nn.Conv2d))),
        ({"activation": "none"}, lambda m: not of_type(m, nn.ReLU)),
        ({"activation": "sigmoid"}, lambda m: len(of_type(m, nn.Sigmoid)) == 8),
        ({"activation": "leaky_relu"}, lambda m: len(of_type(m, nn.LeakyReLU)) == 8),
        ({"maxpool": False}, lambda m: not of_type(m, nn.MaxPool2d)),
        ({"batchnorm": False}, lambda m: not of_type(m, nn.BatchNorm2d)),
        (
            {"dropout": 0.5},
            lambda m: [d.p for d in of_type(m, nn.Dropout)] == [0.5],
        ),
        (
            {"kernel_size": 5, "padding": 2},
            lambda m: all(c.kernel_size == (5, 5) for c in of_type(m, nn.Conv2d)),
        ),
        (
            {"padding": 2},
            lambda m: all(c.padding == (2, 2) for c in of_type(m, nn.Conv2d)),
        ),
        ({"width": 16}, lambda m: of_type(m, nn.Conv2d)[0].out_channels == 16),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else "",
)
def test_convnet_switches_change_structure(options: dict[str, object], check) -> None:
    for shape in (CIFAR, MNIST):
        model = make("convnet", shape, **{**NARROW["convnet"], **options})
        assert check(model)
        assert model.eval()(batch(shape)).shape == (2, 10)


def test_convnet_bias_false_also_removes_linear_bias() -> None:
    assert of_type(make("convnet", bias=False), nn.Linear)[0].bias is None


def test_convnet_rejects_shapes_that_collapse() -> None:
    with pytest.raises(ValueError, match="less than 1 pixel") as err:
        make("convnet", kernel_size=5, padding=1)
    assert "padding=2" in str(err.value)
    # Without pooling the same kernel/padding combination fits.
    make("convnet", kernel_size=5, padding=1, maxpool=False)


# -------------------- ResNet


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out


def _resnet_param_count(
    blocks: tuple[int, ...], c_in: int, classes: int, w: int = 64
) -> int:
    """Analytic count: bias-free convs, 2 affine params per BN channel, linear+bias."""
    total = _conv_bn(c_in, w, 3)
    channels = w
    for stage, n in enumerate(blocks):
        out = w * 2**stage
        for j in range(n):
            total += _conv_bn(channels, out, 3) + _conv_bn(out, out, 3)
            if j == 0 and channels != out:
                total += _conv_bn(channels, out, 1)
            channels = out
    return total + channels * classes + classes


def test_resnet_block_counts_and_parameters() -> None:
    r18 = make("resnet18")
    assert len(r18.blocks()) == 8
    assert all(b.skip for b in r18.blocks())
    assert (
        count_parameters(r18) == _resnet_param_count((2, 2, 2, 2), 3, 10) == 11_173_962
    )
    r34 = make("resnet34", MNIST, width=16)
    assert len(r34.blocks()) == 16
    assert count_parameters(r34) == _resnet_param_count((3, 4, 6, 3), 1, 10, w=16)
    assert not of_type(r18, nn.MaxPool2d)
    stem = of_type(r18, nn.Conv2d)[0]
    assert (
        stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 64
    )


def _zero_convs(block: BasicBlock) -> None:
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv2.weight.zero_()


def test_resnet_cut_skip_removes_the_skip_path() -> None:
    """With both convs zeroed (BN in eval: running mean 0, beta 0) the residual branch
    outputs exactly 0, so a block's output is relu(skip(x)), and 0 once the skip is cut.
    """
    x = torch.randn(2, 64, 8, 8)
    intact = make("resnet18", width=64).eval().blocks()[0]
    cut = make("resnet18", width=64, cut_skips=[0]).eval().blocks()[0]
    assert intact.skip and not cut.skip
    for block in (intact, cut):
        _zero_convs(block)
    with torch.no_grad():
        torch.testing.assert_close(intact(x), torch.relu(x))
        assert torch.equal(cut(x), torch.zeros_like(x))
        # Once the convs are zero a cut block's output does not depend on its input.
        assert torch.equal(cut(x), cut(torch.randn_like(x)))


def test_resnet_cut_projection_shortcut() -> None:
    width = 8
    model = make("resnet18", width=width, cut_skips="0, 2")
    assert [i for i, b in enumerate(model.blocks()) if not b.skip] == [0, 2]
    assert model.cut_skips == (0, 2)
    # Block 2 opens stage 2 (projection shortcut): its 1x1 conv + BN must be gone.
    full = make("resnet18", width=width)
    assert count_parameters(full) - count_parameters(model) == _conv_bn(
        width, 2 * width, 1
    )
    block = model.eval().blocks()[2]
    _zero_convs(block)
    with torch.no_grad():
        assert torch.equal(
            block(torch.randn(1, width, 8, 8)), torch.zeros(1, 2 * width, 4, 4)
        )
    assert model(batch(CIFAR)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "cut", "valid"),
    [
        ("resnet18", [8], "0..7"),
        ("resnet34", (16,), "0..15"),
        ("resnet18", "-1", "0..7"),
    ],
)
def test_resnet_cut_skip_out_of_range(name: str, cut: object, valid: str) -> None:
    with pytest.raises(ValueError, match=valid):
        make(name, MNIST, width=4, cut_skips=cut)


def test_resnet_cut_skips_accepts_all_formats() -> None:
    for cut in ([1, 3], (3, 1), "1,3", "3, 1,", [3, 1, 3]):
        assert make("resnet18", MNIST, width=4, cut_skips=cut).cut_skips == (1, 3)
    assert make("resnet18", MNIST, width=4, cut_skips="").cut_skips == ()
    with pytest.raises(ValueError, match="comma-separated"):
        make("resnet18", MNIST, width=4, cut_skips="a,b")


# -------------------- GoogLeNet (SoK Table III)


def test_googlenet_blocks_are_named_and_width_scales() -> None:
    from fl_privacy.models.googlenet import BLOCK_NAMES

    full = build_model("googlenet", num_classes=10, in_channels=3, image_size=32)
    thin = build_model("googlenet", num_classes=10, in_channels=3, image_size=32, width=8)
    names = [n for n, _ in full.named_parameters()]
    assert all(any(n.startswith(b + ".") for n in names) for b in BLOCK_NAMES)
    assert len(BLOCK_NAMES) == 9 and "features.stem.0.weight" in names
    total = count_parameters(full)
    assert 6.0e6 < total < 6.3e6  # the common CIFAR GoogLeNet (6.2M parameters)
    first = sum(p.numel() for n, p in full.named_parameters() if n.startswith(BLOCK_NAMES[0]))
    assert abs(first / total - 0.027) < 0.002  # the SoK's Table III: block #1 holds 2.72% of GoogLeNet
    assert count_parameters(thin) < total / 30
    assert thin(batch(CIFAR)).shape == (2, 10) and isinstance(thin.classifier[-1], nn.Linear)
