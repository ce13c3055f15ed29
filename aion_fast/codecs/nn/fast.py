"""Primitives of the codec networks' fast CPU path (``precision="fast"``, :mod:`aion_fast.precision`).

The exact path pins every convolution to the reference's call, layout and weight format so that tokens are
bit-identical. The fast path keeps float32 arithmetic but chooses the kernels:

* convolutions through oneDNN with weights reordered once into its blocked format (:func:`conv2d`); the exact path
  pays that reorder, a copy of the weight, on every call;
* the stride-1 3x3 and 7x7 convolutions with at least :data:`WINOGRAD_MIN_CHANNELS` channels in and out by Winograd
  (:mod:`aion_fast.ops.winograd_conv2d`, F(4x4, 3x3) and F(2x2, 7x7)): 4x and 3x fewer multiplications, the
  transformed weights cached like the packed ones;
* activations fused into the convolution where oneDNN has the post-op (SiLU, GELU);
* 1-D convolutions on channels-last sequences (:func:`conv1d_channels_last`), so that ConvNeXt's depth-wise
  convolutions skip the two layout conversions per call of the (B, C, N) path;
* linears through oneDNN with the packed weight and a fused GELU (:func:`linear`).

The oneDNN entry points are PyTorch's ``torch.ops.mkldnn`` operators (those ``torch.compile``'s CPU backend emits
for frozen weights); they have no public Python wrapper.

Packed weights live in a per-module cache (a weak mapping, so modules are not changed and their state dicts stay
the checkpoint's), keyed by the input's shape and invalidated when the parameter is modified in place. The fast
path runs only without autograd, on float32 CPU tensors with oneDNN available (:func:`usable`); anywhere else the
callers run the exact modules.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.ops.winograd_conv2d import DEFAULT_TILE, winograd_conv2d, winograd_weight
from aion_fast.precision import fast_path_enabled

__all__ = ["WINOGRAD_MIN_CHANNELS", "conv1d_channels_last", "conv2d", "linear", "usable"]

#: Narrower convolutions stay direct: with few channels the transforms, not the products, take the time.
WINOGRAD_MIN_CHANNELS = 32

_PACKED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
#: Input shapes remembered per module (batch sizes of one job; a new shape packs again).
_MAX_SHAPES = 8


def usable(x: Tensor) -> bool:
    """Whether the fast path applies to ``x``: inside ``precision_context("fast")``, no autograd, float32 on a CPU
    with oneDNN."""
    return (
        fast_path_enabled()
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )


def _packed(module: nn.Module, key: tuple, pack) -> Tensor:
    """``pack()`` cached for ``module`` under ``key`` and the weight's identity and version."""
    weight = module.weight
    # in-place updates (load_state_dict, optimiser steps) bump the version; inference tensors (a module built under
    # torch.inference_mode) have none and can only change inside inference mode, by explicit copies
    version = -1 if weight.is_inference() else weight._version
    stamp = (weight.data_ptr(), version)
    cache = _PACKED.get(module)
    if cache is None or cache.get("stamp") != stamp:
        cache = _PACKED[module] = {"stamp": stamp}
    found = cache.get(key)
    if found is None:
        if len(cache) > _MAX_SHAPES:
            cache.clear()
            cache["stamp"] = stamp
        found = cache[key] = pack()
    return found


def conv2d(conv: nn.Conv2d, x: Tensor, activation: str = "none") -> Tensor:
    """``act(conv(x))`` with the weight packed for oneDNN; ``x`` (B, C, H, W) is made channels-last if it is not.

    Args:
        conv: a zero-padded ``nn.Conv2d`` with a bias.
        x: float32 input.
        activation: ``"none"``, ``"swish"`` (SiLU) or ``"gelu"``, applied by oneDNN as a post-op.

    Returns:
        (B, C_out, H', W') in channels-last memory.
    """
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.bias is None:
        out = conv(x)
        return {"none": out, "swish": F.silu(out), "gelu": F.gelu(out)}[activation]
    x = x.contiguous(memory_format=torch.channels_last)
    if activation == "none" and _winograd_applies(conv):
        m = DEFAULT_TILE[conv.kernel_size[0]]
        transformed = _packed(conv, ("winograd", m), lambda: winograd_weight(conv.weight, m))
        return winograd_conv2d(x, conv.weight, conv.bias, m, transformed)
    padding, stride, dilation = list(conv.padding), list(conv.stride), list(conv.dilation)

    def pack() -> Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            conv.weight.detach(), padding, stride, dilation, conv.groups, list(x.shape)
        )

    weight = _packed(conv, ("conv", tuple(x.shape)), pack)
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, conv.bias, padding, stride, dilation, conv.groups, activation, [], ""
    )


def _winograd_applies(conv: nn.Conv2d) -> bool:
    r = conv.kernel_size[0]
    return (
        r in DEFAULT_TILE
        and conv.kernel_size == (r, r)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == (r // 2, r // 2)
        and conv.groups == 1
        and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS
    )


def conv1d_channels_last(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` (stride 1, zero padding) applied to a channels-last sequence: (B, N, C_in) -> (B, N', C_out).

    Run as a 2-D convolution of height 1 in oneDNN's channels-last layout, with the packed weight: for the
    depth-wise convolutions of ConvNeXt this avoids the two layout conversions the (B, C, N) path pays per call.
    """
    b, n, c = x.shape
    x4 = x.contiguous().view(b, 1, n, c).permute(0, 3, 1, 2)  # (B, C, 1, N) with channels-last strides
    padding, dilation = [0, conv.padding[0]], [1, conv.dilation[0]]

    def pack() -> Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            conv.weight.detach().unsqueeze(2), padding, [1, 1], dilation, conv.groups, list(x4.shape)
        )

    weight = _packed(conv, ("conv1d", tuple(x4.shape)), pack)
    out = torch.ops.mkldnn._convolution_pointwise(
        x4, weight, conv.bias, padding, [1, 1], dilation, conv.groups, "none", [], ""
    )  # (B, C_out, 1, N'), channels-last
    return out.permute(0, 2, 3, 1).reshape(b, out.shape[-1], out.shape[1])


def linear(layer: nn.Linear, x: Tensor, activation: str = "none") -> Tensor:
    """``act(layer(x))`` for (..., C_in) ``x`` through oneDNN with the packed weight; ``activation`` is ``"none"``
    or ``"gelu"`` (exact erf GELU, a oneDNN post-op)."""
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    if not rows.is_contiguous():
        rows = rows.contiguous()

    def pack() -> Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows.shape[0])

    weight = _packed(layer, ("linear", rows.shape[0]), pack)
    algorithm = "none" if activation == "gelu" else ""
    out = torch.ops.mkldnn._linear_pointwise(rows, weight, layer.bias, activation, [], algorithm)
    return out.view(*lead, out.shape[-1])
