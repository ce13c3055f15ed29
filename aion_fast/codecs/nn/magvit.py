r"""The convolutional MagViT autoencoder of the image codec (AION-1 paper §4.1.2; Yu et al. 2023, transformer-free).

Architecture for ``hidden_dims = D``, ``n_compressions = n`` and ``num_consecutive = k`` (``d_0 = D / 2^n``)::

    encode: conv7x7(bands -> d_0) -> Res(d_0)
            -> n x [ Down2x(d_i -> 2 d_i), k x Res(2 d_i) ]
            -> conv7x7(D -> D) -> k x Res(D) -> LayerNorm over channels          (B, D, H / 2^n, W / 2^n)
    decode: k x Res(D) -> conv3x3(D -> D)
            -> n x [ k x Res(d_i), Up2x(d_i -> d_i / 2) ] -> Res(d_0) -> conv3x3(d_0 -> bands)

with the residual unit :math:`\mathrm{Res}(x) = x + \mathrm{SE}(\mathrm{ELU}(W_{1\times1}\,
\mathrm{ELU}(W_{3\times3} x)))` and a global-context squeeze-excite gate (Cao et al. 2019, arXiv:2012.13375)

.. math::

    a = \mathrm{softmax}_{hw}(w_k^\top x_{:,hw} + b_k), \qquad
    c = \sum_{hw} a_{hw} x_{:,hw}, \qquad
    \mathrm{SE}(x) = \sigma(W_2\,\mathrm{LeakyReLU}_{0.1}(W_1 c + b_1) + b_2) \odot x.

Module names and the positions inside the ``nn.Sequential`` containers are fixed by the released checkpoints (keys
such as ``model.encoder_layers.2.0.net.4.to_k.weight``); the forward passes are written out so that every
elementwise step runs in place on activations this module owns, while each floating-point operation (and the
memory layout each convolution sees, which decides oneDNN's kernel and hence the rounding) stays that of the
reference, so tokens are bit-identical. In-place steps are taken only when autograd is off (``torch.no_grad`` /
``torch.inference_mode``, as in the codecs' ``encode``/``decode``); with gradients on, the same maths runs out of
place so that training still works.

Inside ``precision_context("fast")`` :meth:`MagVitAE.encode` and :meth:`MagVitAE.decode` take the fast path instead
(:mod:`aion_fast.codecs.nn.fast`): the same layers with packed oneDNN weights, activations channels-last
throughout, the squeeze-excite key and MLP as matrix products rather than 1x1 convolutions of one pixel or one
output channel, SiLU fused into the upsampling convolution and the gate and residual applied in one pass
(``x + h * gates``). Float32 throughout; roundings differ from the exact path's (agreement: bench/RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.codecs.nn import fast

__all__ = [
    "ChannelLayerNorm",
    "MagVitAE",
    "ResidualUnit",
    "SameConv2d",
    "SpatialDownsample2x",
    "SpatialUpsample2x",
    "SqueezeExcite",
]


def _inplace() -> bool:
    """Whether activations may be overwritten (autograd would need the originals for the backward pass)."""
    return not torch.is_grad_enabled()


class SameConv2d(nn.Module):
    """Stride-1 convolution with ``kernel_size // 2`` zero padding: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SqueezeExcite(nn.Module):
    """Global-context channel gate (see the module docstring).

    The last 1x1 convolution starts at weight 0 and bias ``init_bias`` so that a fresh gate is ~0.

    Args:
        dim: channels C.
        dim_hidden_min: lower bound of the hidden width ``max(dim_hidden_min, C // 2)``.
        init_bias: initial bias of the gate logits.
    """

    def __init__(self, dim: int, dim_hidden_min: int = 16, init_bias: float = -10.0):
        super().__init__()
        dim_hidden = max(dim_hidden_min, dim // 2)
        self.to_k = nn.Conv2d(dim, 1, 1)
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim_hidden, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(dim_hidden, dim, 1),
            nn.Sigmoid(),
        )
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, init_bias)

    def gates(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> per-channel gates (B, C, 1, 1) in (0, 1)."""
        b, c = x.shape[:2]
        attention = self.to_k(x).reshape(b, 1, -1).softmax(dim=-1)  # (B, 1, HW)
        context = torch.matmul(attention, x.reshape(b, c, -1).transpose(1, 2))  # (B, 1, C)
        # as (B, C, 1, 1) with channels-last strides: the layout in which the reference runs these 1x1 convolutions
        return self.net(context.view(b, 1, 1, c).permute(0, 3, 1, 2))

    def gates_fast(self, x: Tensor) -> Tensor:
        """:meth:`gates` for channels-last ``x`` as matrix products: (B, C, H, W) -> (B, C, 1, 1) channels-last."""
        b, c = x.shape[:2]
        rows = x.permute(0, 2, 3, 1).reshape(b, -1, c)  # (B, HW, C), a view of channels-last memory
        keys = torch.matmul(rows, self.to_k.weight.view(c, 1)).add_(self.to_k.bias)  # (B, HW, 1)
        context = torch.matmul(keys.softmax(dim=1).transpose(1, 2), rows).view(b, c)  # (B, C)
        hidden, _, gate, _ = self.net
        h = F.leaky_relu_(F.linear(context, hidden.weight.flatten(1), hidden.bias), 0.1)
        return torch.sigmoid_(F.linear(h, gate.weight.flatten(1), gate.bias)).view(b, 1, 1, c).permute(0, 3, 1, 2)

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        """Gated ``x``, (B, C, H, W); ``inplace`` multiplies ``x`` itself."""
        gates = self.gates(x)
        return x.mul_(gates) if inplace else x * gates


class ResidualUnit(nn.Module):
    """``x + SE(ELU(conv1x1(ELU(conv_kxk(x)))))``, shape-preserving (B, C, H, W).

    ``net`` keeps the checkpoint positions: 0 = kxk conv, 2 = 1x1 conv, 4 = squeeze-excite (1, 3 = ELU).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            SameConv2d(dim, dim, kernel_size),
            nn.ELU(),
            nn.Conv2d(dim, dim, 1),
            nn.ELU(),
            SqueezeExcite(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv_kxk, _, conv_1x1, _, excite = self.net
        inplace = _inplace()
        h = F.elu(conv_kxk(x), inplace=inplace)
        h = F.elu(conv_1x1(h), inplace=inplace)
        h = excite(h, inplace=inplace)
        return h.add_(x) if inplace else h + x

    def forward_fast(self, x: Tensor) -> Tensor:
        """The fast path's forward (module docstring) for channels-last ``x``."""
        conv_kxk, _, conv_1x1, _, excite = self.net
        h = F.elu_(fast.conv2d(conv_kxk.conv, x))
        h = F.elu_(fast.conv2d(conv_1x1, h))
        return torch.addcmul(x, h, excite.gates_fast(h))


class SpatialDownsample2x(nn.Module):
    """Stride-2 convolution: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, dim: int, dim_out: int | None = None, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out or dim, kernel_size, stride=2, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialUpsample2x(nn.Module):
    r"""Sub-pixel upsampling: 1x1 conv to :math:`4 C_{out}` channels, SiLU, then depth-to-space.

    (B, C_in, H, W) -> (B, C_out, 2H, 2W); output channel ``c`` at pixel ``(2h + i, 2w + j)`` is conv channel
    ``4c + 2i + j``. The conv starts with the four sub-pixels of each output channel sharing one Kaiming-uniform
    filter (nearest-neighbour upsampling at initialisation). ``net`` positions: 0 = conv (1 = SiLU).
    """

    def __init__(self, dim: int, dim_out: int | None = None):
        super().__init__()
        dim_out = dim_out or dim
        conv = nn.Conv2d(dim, dim_out * 4, 1)
        self.net = nn.Sequential(conv, nn.SiLU())
        shared = torch.empty(dim_out, dim, 1, 1)
        nn.init.kaiming_uniform_(shared)
        with torch.no_grad():
            conv.weight.copy_(shared.repeat_interleave(4, dim=0))
            conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.net[0](x), inplace=_inplace())
        b, c4, height, width = h.shape
        # depth-to-space as one copy into a fresh NCHW-contiguous tensor (the layout the next convolutions expect)
        h = h.reshape(b, c4 // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        return h.reshape(b, c4 // 4, 2 * height, 2 * width)

    def forward_fast(self, x: Tensor) -> Tensor:
        """The fast path's forward: SiLU fused into the convolution, depth-to-space into channels-last memory."""
        h = fast.conv2d(self.net[0], x, activation="swish")  # (B, 4C, H, W) channels-last: memory (B, H, W, 4C)
        b, c4, height, width = h.shape
        h = h.permute(0, 2, 3, 1).reshape(b, height, width, c4 // 4, 2, 2).permute(0, 1, 4, 2, 5, 3)
        return h.reshape(b, 2 * height, 2 * width, c4 // 4).permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.Sequential):
    """LayerNorm over the channel axis of (B, C, H, W); the LayerNorm sits at position 1 (checkpoint key ``1.*``)."""

    def __init__(self, dim: int):
        super().__init__(nn.Identity(), nn.LayerNorm(dim), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self[1](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _layer_fast(layer: nn.Module, x: Tensor) -> Tensor:
    """One encoder/decoder entry on the fast path (channels-last in and out)."""
    if isinstance(layer, nn.Sequential) and not isinstance(layer, ChannelLayerNorm):
        for unit in layer:
            x = _layer_fast(unit, x)
        return x
    if isinstance(layer, (ResidualUnit, SpatialUpsample2x)):
        return layer.forward_fast(x)
    if isinstance(layer, (SameConv2d, SpatialDownsample2x)):
        return fast.conv2d(layer.conv, x)
    return layer(x)


def _residual_stack(dim: int, count: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualUnit(dim, kernel_size) for _ in range(count)))


class MagVitAE(nn.Module):
    """Encoder/decoder pair of the image codec (see the module docstring for the layer list).

    Args:
        n_bands: channels of the autoencoder's input and output (the multi-survey projection width, 54).
        hidden_dims: channels D of the latent grid; must be divisible by ``2 ** n_compressions``.
        residual_conv_kernel_size: kernel of the residual units' first convolution.
        n_compressions: number of 2x downsamplings (the latent grid is ``H / 2**n_compressions`` wide).
        num_consecutive: residual units after each downsampling and at the bottleneck.
    """

    def __init__(
        self,
        n_bands: int = 3,
        hidden_dims: int = 512,
        residual_conv_kernel_size: int = 3,
        n_compressions: int = 2,
        num_consecutive: int = 2,
    ):
        super().__init__()
        if hidden_dims % 2**n_compressions:
            raise ValueError(
                f"hidden_dims ({hidden_dims}) must be divisible by 2**n_compressions ({2**n_compressions})."
            )
        k = residual_conv_kernel_size
        dims = [hidden_dims // 2 ** (n_compressions - i) for i in range(n_compressions + 1)]  # d_0, ..., D

        self.conv_in = SameConv2d(n_bands, dims[0], 7)
        self.conv_out = SameConv2d(dims[0], n_bands, 3)

        encoder: list[nn.Module] = [ResidualUnit(dims[0], k)]
        decoder: list[nn.Module] = [ResidualUnit(dims[0], k)]  # built output-first, reversed below
        for dim_lo, dim_hi in zip(dims[:-1], dims[1:]):
            encoder += [SpatialDownsample2x(dim_lo, dim_hi), _residual_stack(dim_hi, num_consecutive, k)]
            decoder += [SpatialUpsample2x(dim_hi, dim_lo), _residual_stack(dim_hi, num_consecutive, k)]
        encoder += [
            SameConv2d(hidden_dims, hidden_dims, 7),
            _residual_stack(hidden_dims, num_consecutive, k),
            ChannelLayerNorm(hidden_dims),
        ]
        decoder += [SameConv2d(hidden_dims, hidden_dims, 3), _residual_stack(hidden_dims, num_consecutive, k)]
        self.encoder_layers = nn.ModuleList(encoder)
        self.decoder_layers = nn.ModuleList(decoder[::-1])

    def encode(self, x: Tensor) -> Tensor:
        """(B, n_bands, H, W) -> (B, hidden_dims, H / 2^n, W / 2^n), layer-normalised over channels."""
        if fast.usable(x):
            x = fast.conv2d(self.conv_in.conv, x)
            for layer in self.encoder_layers:
                x = _layer_fast(layer, x)
            return x
        x = self.conv_in(x)
        for layer in self.encoder_layers:
            x = layer(x)
        return x

    def decode(self, x: Tensor) -> Tensor:
        """(B, hidden_dims, h, w) -> (B, n_bands, h 2^n, w 2^n)."""
        if fast.usable(x):
            for layer in self.decoder_layers:
                x = _layer_fast(layer, x)
            return fast.conv2d(self.conv_out.conv, x)
        for layer in self.decoder_layers:
            x = layer(x)
        return self.conv_out(x)
