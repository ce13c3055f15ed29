r"""1-D ConvNeXt-V2 encoder and decoder of the spectrum codec (Woo et al. 2023, https://arxiv.org/abs/2301.00808).

A block maps a (B, C, N) sequence ``x`` to ``x + f(x)`` with

.. math::

    f(x) = W_2\, \mathrm{GRN}\bigl(\mathrm{GELU}(W_1\, \mathrm{LN}(\mathrm{DWConv}_7(x)) + b_1)\bigr) + b_2,

a depth-wise convolution of width 7, a LayerNorm over channels, and an inverted bottleneck of width 4C around Global
Response Normalisation. For a (B, N, D) activation ``h``,

.. math::

    G_{b,d} = \lVert h_{b,:,d} \rVert_2, \qquad
    \mathrm{GRN}(h) = \gamma \odot \bigl(h \odot G / (\overline{G}_{b} + 10^{-6})\bigr) + \beta + h,

with :math:`\overline{G}_b` the mean of :math:`G_{b,:}` over the D channels. The encoder interleaves stages of blocks
with down-sampling (a stride-4 convolution stem, then LayerNorm + stride-2 convolutions) and ends with a LayerNorm;
the decoder mirrors it with transposed convolutions (stride 2, and stride 4 for the last one).

Every floating-point operation, and the memory layout it sees, is the one of the reference implementation, so the
outputs are bit-identical to it (the spectrum tokens are sign bits of these outputs). On a CPU the two pointwise
linears are ~2/3 of the time and already run near the FP32 peak, so the savings are in the rest: without autograd,
GELU and the GRN arithmetic work in place on tensors the block itself allocated (never on its input), and the two
linears and the GRN write into a per-forward :class:`Workspace` instead of fresh 27 MB tensors (page faults of fresh
memory cost more than the arithmetic). Results do not change: the same kernels run, IEEE multiplication and
addition are commutative, and the association order is kept. Tried and rejected: a channels-last residual stream
(bit-identical, but the depth-wise convolution converts it back and gets slower) and recomputing the GRN norm as
``sqrt(sum(h**2))`` or any other accumulation order (faster, but bits change).

Inside ``precision_context("fast")`` the blocks take the fast path (:mod:`aion_fast.codecs.nn.fast`): the
residual stream of a stage is kept channels-last (B, N, C), where oneDNN's depth-wise convolution needs no layout
conversions (it runs on packed weights as a height-1 2-D convolution) and the LayerNorm no transpose; the two
linears run through oneDNN with packed weights and GELU fused into the first; the GRN's affine map and residual are
one pass, :math:`h \odot (\gamma \odot G / (\overline{G} + 10^{-6}) + 1) + \beta`. Float32 throughout; roundings
differ from the exact path's (agreement: bench/RESULTS.md).

Module and parameter names match the reference's checkpoints: ``downsample_layers.{i}.{0,1}``, ``stages.{i}.{j}``
(``dwconv``, ``norm``, ``pwconv1``, ``grn.gamma``/``grn.beta`` of shape (1, 1, 4C), ``pwconv2``), ``norm``;
``upsample_layers.{i}.{0,1}`` in the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.codecs.nn import fast
from aion_fast.tensor_utils import linear_into

__all__ = ["LayerNorm1d", "ConvNeXtBlock1d", "ConvNeXtDecoder1d", "ConvNeXtEncoder1d", "GlobalResponseNorm"]


class LayerNorm1d(nn.Module):
    """LayerNorm over the channel axis of (B, C, N) sequences (``channels_first``) or (B, N, C) ones.

    Args:
        dim: number of channels C.
        eps: variance floor.
        channels_first: True for (B, C, N) inputs (normalised over axis 1, returned as a (B, C, N) view of a
            channels-last result), False for (B, N, C).

    State dict: ``weight`` (C,), ``bias`` (C,).
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.channels_first = channels_first

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_first:
            return F.layer_norm(x.transpose(1, 2), self.weight.shape, self.weight, self.bias, self.eps).transpose(1, 2)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, channels_first={self.channels_first}"


class GlobalResponseNorm(nn.Module):
    """Global Response Normalisation of (B, N, D) activations (norm over the sequence axis N).

    Args:
        dim: number of channels D.

    State dict: ``gamma`` (1, 1, D), ``beta`` (1, 1, D).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, h: Tensor, out: Tensor | None = None) -> Tensor:
        """(B, N, D) -> (B, N, D); ``h`` itself is never modified.

        Args:
            h: activations.
            out: optional contiguous (B, N, D) buffer for the result (used only when gradients are off).
        """
        g = torch.linalg.vector_norm(h, ord=2, dim=1, keepdim=True)
        scale = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        if torch.is_grad_enabled():
            return self.gamma * (h * scale) + self.beta + h
        out = torch.mul(h, scale, out=out) if out is not None else h * scale
        return out.mul_(self.gamma).add_(self.beta).add_(h)

    def forward_fast(self, h: Tensor) -> Tensor:
        """The fast path (module docstring): ``h * (gamma * G / (mean G + eps) + 1) + beta`` in one pass."""
        g = torch.linalg.vector_norm(h, ord=2, dim=1, keepdim=True)
        factor = (g / (g.mean(dim=-1, keepdim=True) + 1e-6)).mul_(self.gamma).add_(1.0)
        return torch.addcmul(self.beta, h, factor)


class Workspace:
    """Output buffers reused by the blocks of one inference forward pass.

    Writing large intermediates into buffers that already exist avoids the page faults of fresh allocations (a
    fresh 27 MB tensor costs more to fault in than an element-wise pass over it). A workspace belongs to a single
    forward call, so concurrent calls never share buffers, and blocks never return a view of it.
    """

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A contiguous tensor of ``shape`` (dtype and device of ``like``) backed by the buffer ``name``."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel].view(shape)


def _linear(layer: nn.Linear, x: Tensor, out: Tensor | None) -> Tensor:
    """``layer(x)`` for contiguous (B, N, C_in) ``x``, written into ``out`` when given (the same addmm call)."""
    if out is None:
        return layer(x)
    b, n, c = x.shape
    linear_into(x.view(b * n, c), layer, out.view(b * n, -1))
    return out


class ConvNeXtBlock1d(nn.Module):
    """One ConvNeXt-V2 block on (B, C, N) sequences (see the module docstring).

    Args:
        dim: number of channels C.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm1d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor, workspace: Workspace | None = None) -> Tensor:
        """(B, C, N) -> (B, C, N); ``x`` itself is never modified.

        Args:
            x: input sequence.
            workspace: buffers for the intermediates, used only when gradients are off.
        """
        h = self.norm(self.dwconv(x).transpose(1, 2))  # (B, N, C), contiguous
        if torch.is_grad_enabled() or workspace is None:
            wide = grn_out = narrow = None
        else:
            b, n, c = h.shape
            wide = workspace.get("wide", (b, n, 4 * c), h)
            grn_out = workspace.get("grn", (b, n, 4 * c), h)
            narrow = workspace.get("narrow", (b, n, c), h)
        h = _linear(self.pwconv1, h, wide)  # (B, N, 4C)
        h = F.gelu(h) if torch.is_grad_enabled() else torch.ops.aten.gelu_(h)
        h = _linear(self.pwconv2, self.grn(h, grn_out), narrow)  # (B, N, C)
        return x + h.transpose(1, 2)

    def forward_fast(self, x: Tensor) -> Tensor:
        """The fast path's forward (module docstring) on a channels-last stream: (B, N, C) -> (B, N, C)."""
        h = self.norm(fast.conv1d_channels_last(self.dwconv, x))  # (B, N, C)
        h = fast.linear(self.pwconv1, h, activation="gelu")  # (B, N, 4C)
        h = fast.linear(self.pwconv2, self.grn.forward_fast(h))  # (B, N, C), a fresh tensor
        return h.add_(x)


def _stage(dim: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*(ConvNeXtBlock1d(dim) for _ in range(depth)))


def _run_stage(stage: nn.Sequential, x: Tensor, workspace: Workspace) -> Tensor:
    if fast.usable(x):  # the stream stays channels-last (B, N, C) through the stage
        x = x.transpose(1, 2).contiguous()
        for block in stage:
            x = block.forward_fast(x)
        return x.transpose(1, 2)
    for block in stage:
        x = block(x, workspace)
    return x


def _check_stages(depths: Sequence[int], dims: Sequence[int], what: str) -> None:
    if len(depths) != len(dims) or len(dims) < 2:
        raise ValueError(
            f"{what}: depths {tuple(depths)} and dims {tuple(dims)} must have the same length, at least 2 "
            f"(one entry per stage)."
        )


def _truncated_normal_init(module: nn.Module) -> None:
    """Initialisation of the reference: N(0, 0.02) truncated at +-2 for convolutions and linears, zero biases."""
    if type(module) in (nn.Conv1d, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class ConvNeXtEncoder1d(nn.Module):
    """(B, in_chans, N) -> (B, dims[-1], N / (4 * 2**(S-1))) for S stages.

    Args:
        in_chans: input channels (2 for the spectrum codec: flux and inverse standard deviation).
        depths: blocks per stage.
        dims: channels per stage.
    """

    def __init__(
        self, in_chans: int = 2, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (96, 192, 384, 768)
    ):
        super().__init__()
        _check_stages(depths, dims, "ConvNeXtEncoder1d")
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv1d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm1d(dims[0], 1e-6, True))]
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm1d(dims[i], 1e-6, True), nn.Conv1d(dims[i], dims[i + 1], kernel_size=2, stride=2)
                )
            )
        self.stages = nn.ModuleList(_stage(dim, depth) for dim, depth in zip(dims, depths))
        self.norm = LayerNorm1d(dims[-1], 1e-6, True)
        self.apply(_truncated_normal_init)

    @property
    def downsampling(self) -> int:
        """Total length reduction factor."""
        return 4 * 2 ** (len(self.stages) - 1)

    def forward(self, x: Tensor) -> Tensor:
        workspace = Workspace()
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = _run_stage(stage, downsample(x), workspace)
        return self.norm(x)


class ConvNeXtDecoder1d(nn.Module):
    """(B, in_chans, T) -> (B, dims[-1], T * 2**(S-1) * 4) for S stages, mirroring the encoder.

    Args:
        in_chans: latent channels.
        depths: blocks per stage.
        dims: channels per stage; the last entry is the number of output channels (1: flux, 2: flux and mask).
    """

    def __init__(
        self, in_chans: int = 768, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (384, 192, 96, 2)
    ):
        super().__init__()
        _check_stages(depths, dims, "ConvNeXtDecoder1d")
        last = len(dims) - 2
        self.upsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose1d(in_chans, dims[0], kernel_size=2, stride=2), LayerNorm1d(dims[0], 1e-6, True)
                )
            ]
        )
        for i in range(len(dims) - 1):
            width = 4 if i == last else 2
            self.upsample_layers.append(
                nn.Sequential(
                    LayerNorm1d(dims[i], 1e-6, True),
                    nn.ConvTranspose1d(dims[i], dims[i + 1], kernel_size=width, stride=width),
                )
            )
        self.stages = nn.ModuleList(_stage(dim, depth) for dim, depth in zip(dims, depths))
        self.apply(_truncated_normal_init)

    @property
    def upsampling(self) -> int:
        """Total length expansion factor."""
        return 2 ** (len(self.stages) - 1) * 4

    def forward(self, z: Tensor) -> Tensor:
        workspace = Workspace()
        for upsample, stage in zip(self.upsample_layers, self.stages):
            z = _run_stage(stage, upsample(z), workspace)
        return z
