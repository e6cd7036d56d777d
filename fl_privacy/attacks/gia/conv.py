"""2-D convolutions whose double backward computes only the gradients the attack needs.

A gradient-inversion iteration differentiates the parameter gradient w.r.t. the images (a double
backward). PyTorch's double backward of a convolution computes, besides what the images need,
the gradient of the input-gradient term w.r.t. the weight even when the weight does not require
it; in an attack it never does (the model is fixed). That is one wasted convolution per layer and
iteration (1/8 of ConvNet-64's FLOPs per iteration), and on ResNet-18's 4x4 and 8x8 layers it
runs as a slow, badly shaped convolution. These Functions compute each gradient only when
``ctx.needs_input_grad`` asks for it and give the same values as ``F.conv2d``. They work under
``torch.func.grad``/``vmap`` (``generate_vmap_rule``) and in CUDA graphs.

``use_lean_convolutions(model)`` switches every zero-padded ``nn.Conv2d`` of a (private) model.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

Conf = tuple  # (stride, padding, dilation, groups)


class _Conv(torch.autograd.Function):
    """y = conv2d(x, w, b); its backward is ``_ConvBackward`` (native, fused), differentiable leanly."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, conf):
        stride, padding, dilation, groups = conf
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, w, b, conf = inputs
        ctx.save_for_backward(x, w)
        ctx.conf, ctx.has_bias = conf, b is not None

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx, gw = _ConvBackward.apply(gy, x, w, ctx.conf, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        gb = gy.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class _ConvBackward(torch.autograd.Function):
    """(gx, gw) of a convolution in one native call; its own backward skips what is not needed."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gy, x, w, conf, want_gx, want_gw):
        stride, padding, dilation, groups = conf
        gx, gw, _ = torch.ops.aten.convolution_backward(
            gy, x, w, None, list(stride), list(padding), list(dilation), False, [0, 0], groups,
            [want_gx, want_gw, False])
        return gx, gw

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        gy, x, w, conf, want_gx, want_gw = inputs
        ctx.save_for_backward(gy, x, w)
        ctx.conf = conf

    @staticmethod
    def backward(ctx, ggx, ggw):
        gy, x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_gy, need_x, need_w = ctx.needs_input_grad[:3]
        g_gy = g_x = g_w = None
        if need_gy:  # gx = convT(gy, w) and gw = corr(x, gy) are linear in gy
            if ggx is not None:
                g_gy = _Conv.apply(ggx, w, None, ctx.conf)
            if ggw is not None:
                term = _Conv.apply(x, ggw, None, ctx.conf)
                g_gy = term if g_gy is None else g_gy + term
        if need_x and ggw is not None:  # gw = corr(x, gy) is linear in x
            g_x = torch.ops.aten.convolution_backward(gy, x, ggw, None, list(stride), list(padding), list(dilation),
                                                      False, [0, 0], groups, [True, False, False])[0]
        if need_w and ggx is not None:  # gx = convT(gy, w) is linear in w: only when the weight needs it
            g_w = conv2d_weight(ggx, tuple(w.shape), gy, stride, padding, dilation, groups)
        return g_gy, g_x, g_w, None, None, None


def _lean_conv_forward(self: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor | None) -> torch.Tensor:
    return _Conv.apply(x, weight, bias, (self.stride, self.padding, self.dilation, self.groups))


def use_lean_convolutions(model: nn.Module) -> int:
    """Switch the model's zero-padded, numerically padded ``nn.Conv2d`` layers; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            module._conv_forward = types.MethodType(_lean_conv_forward, module)  # type: ignore[method-assign]
            count += 1
    return count
